"""casework: a workflow engine for case lifecycles.

The public API; everything else in this package is internal::

    from casework import Engine
    engine = Engine("sqlite:///cases.db", ["workflows/petition.yaml"])
    case = engine.open_case("petition", {...}, actor="clerk:li")
    case = engine.fire(case.id, "accept", actor="triage:zhao")
"""

from typing import TYPE_CHECKING, Any

from loguru import logger

from .clock import Clock, FrozenClock, SystemClock
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
from .loader import LoadedDefinition, load_definition, load_definitions, parse_definition
from .types import Actor, Case, Event, GuardContext, TriggerOption

if TYPE_CHECKING:
    from .engine import Engine
    from .events import ActivityRecorded, CaseOpened, Notice, TransitionApplied
    from .log import configure_logging

# The runtime (the database layer, the scheduler) is imported on first use, so that a
# command such as ``run.py validate`` starts without it.
_LAZY = {
    "Engine": ".engine", "ActivityRecorded": ".events", "CaseOpened": ".events",
    "Notice": ".events", "TransitionApplied": ".events", "configure_logging": ".log",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

logger.disable("casework")

__all__ = [
    "ActivityRecorded", "Actor", "Case", "CaseNotFound", "CaseOpened", "CaseworkError", "Clock",
    "CommandRefused", "ConflictError", "DefinitionError", "Engine", "Event", "FrozenClock",
    "GuardContext", "GuardRefused", "IdempotencyKeyReused", "InvalidInput", "InvalidTrigger",
    "LoadedDefinition", "MissingFields", "Notice", "Problem", "RoleRefused", "SettingsError",
    "StoreError", "SystemClock", "TransitionApplied", "TriggerOption", "UnknownWorkflow",
    "WrongState", "configure_logging", "load_definition", "load_definitions", "parse_definition",
]
