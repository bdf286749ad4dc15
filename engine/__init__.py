"""casework: a workflow engine for case lifecycles.

The public API; everything else in this package is internal::

    from engine import Engine
    engine = Engine("sqlite:///cases.db", ["workflows/petition.yaml"])
    case = engine.open_case("petition", {...}, actor="clerk:li")
    case = engine.fire(case.id, "accept", actor="triage:zhao")
"""

from loguru import logger

from .clock import Clock, FrozenClock, SystemClock
from .engine import Engine
from .errors import (
    CaseNotFound,
    CaseworkError,
    CommandRefused,
    ConflictError,
    DefinitionError,
    GuardRefused,
    IdempotencyKeyReused,
    InvalidInput,
    InvalidTrigger,
    MissingFields,
    Problem,
    RoleRefused,
    SettingsError,
    StoreError,
    UnknownWorkflow,
    WrongState,
)
from .events import ActivityRecorded, CaseOpened, Notice, TransitionApplied
from .loader import LoadedDefinition, load_definition, load_definitions, parse_definition
from .log import configure_logging
from .types import Actor, Case, Event, GuardContext, TriggerOption

logger.disable("engine")
logger.disable("persistence")

__all__ = [
    "ActivityRecorded", "Actor", "Case", "CaseNotFound", "CaseOpened", "CaseworkError", "Clock",
    "CommandRefused", "ConflictError", "DefinitionError", "Engine", "Event", "FrozenClock",
    "GuardContext", "GuardRefused", "IdempotencyKeyReused", "InvalidInput", "InvalidTrigger",
    "LoadedDefinition", "MissingFields", "Notice", "Problem", "RoleRefused", "SettingsError",
    "StoreError", "SystemClock", "TransitionApplied", "TriggerOption", "UnknownWorkflow",
    "WrongState", "configure_logging", "load_definition", "load_definitions", "parse_definition",
]
