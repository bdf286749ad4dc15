"""casework: a workflow engine for case lifecycles.

The public API is what this module exports (``__all__``); every other module of the
package is internal and may change::

    from casework import Engine
    engine = Engine("sqlite:///cases.db", ["petition"])     # a shipped workflow, or a path
    case = engine.open_case("petition", {...}, actor="clerk:li")
    case = engine.fire(case.id, "accept", actor="triage:zhao")

Presentation (diagrams, timelines, charts, text tables) is in :mod:`casework.views`
(the ``pictures`` extra for the pictures) and the command line in :mod:`casework.cli`.
"""

from typing import TYPE_CHECKING, Any

from loguru import logger

from .clock import Clock, FrozenClock, SystemClock
from .definition import FieldSpec, FieldType, WorkflowSpec
from .errors import (
    CaseAltered,
    CaseExists,
    CaseNotFound,
    CaseworkError,
    CommandRefused,
    ConflictError,
    DefinitionError,
    GuardRefused,
    IdempotencyKeyReused,
    InvalidInput,
    InvalidQuery,
    InvalidTrigger,
    LedgerRefused,
    MissingExtra,
    MissingFields,
    Problem,
    RoleRefused,
    ScopeRefused,
    SettingsError,
    StoreError,
    UnknownCalendarYear,
    UnknownWorkflow,
    WindowClosed,
    WrongState,
)
from .loader import LoadedDefinition, load_definition, load_definitions, parse_definition
from .types import (
    Actor,
    Case,
    Deadline,
    Event,
    EventKind,
    GuardContext,
    Timer,
    TimerKind,
    TimerStatus,
    TriggerOption,
)
from .workflow import Workflow

if TYPE_CHECKING:
    from .calendars import DeclaredYear
    from .documents import Document, DocumentLimits
    from .engine import Engine
    from .events import (
        ActivityRecorded,
        Assigned,
        CaseOpened,
        CycleCame,
        DeadlineWarned,
        Delegated,
        Escalated,
        FlaggedAtRisk,
        Notice,
        ReportReady,
        TransitionApplied,
    )
    from .log import configure_logging
    from .migration import MigrationItem, MigrationResult
    from .persistence.ledger import ImportResult
    from .persistence.rekey import RekeyResult
    from .registry import shipped_workflows
    from .reports import Report
    from .scheduler import RunResult, SchedulerService
    from .search import CasePage, CaseSummary
    from .settings import Settings, load_settings
    from .timers import SensitivePeriod
    from .whatif import Outcome, Proposal, WhatIf

# The runtime (the database layer, the scheduler) is imported on first use, so that a
# command such as ``casework validate`` starts without it.
_LAZY = {
    "DeclaredYear": ".calendars", "Document": ".documents", "DocumentLimits": ".documents",
    "Engine": ".engine", "ActivityRecorded": ".events", "Assigned": ".events", "Delegated":
    ".events", "CaseOpened": ".events", "CycleCame": ".events", "DeadlineWarned": ".events",
    "Escalated": ".events", "FlaggedAtRisk": ".events", "Notice": ".events", "ReportReady":
    ".events", "TransitionApplied": ".events", "configure_logging": ".log", "MigrationItem":
    ".migration", "MigrationResult": ".migration", "ImportResult": ".persistence.ledger",
    "RekeyResult": ".persistence.rekey", "shipped_workflows": ".registry", "Report": ".reports",
    "RunResult": ".scheduler", "CasePage": ".search", "CaseSummary": ".search",
    "SchedulerService": ".scheduler", "Settings": ".settings", "load_settings": ".settings",
    "SensitivePeriod": ".timers", "Outcome": ".whatif", "Proposal": ".whatif", "WhatIf":
    ".whatif",
}


def _public(value: Any) -> Any:
    """Report a re-exported class or function as ``casework.<name>``."""
    if getattr(value, "__module__", "").startswith(__name__):
        try:
            value.__module__ = __name__
        except (AttributeError, TypeError):
            pass
    return value


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        value = _public(getattr(importlib.import_module(_LAZY[name], __name__), name))
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


logger.disable("casework")

__all__ = [
    "ActivityRecorded", "Actor", "Assigned", "Case", "CaseAltered", "CaseExists",
    "CaseNotFound", "CaseOpened", "CasePage", "CaseSummary", "CaseworkError", "Clock",
    "CommandRefused", "ConflictError", "CycleCame", "Deadline", "DeadlineWarned", "DeclaredYear",
    "DefinitionError", "Delegated", "Document", "DocumentLimits", "Engine", "Escalated",
    "Event", "EventKind", "FieldSpec", "FieldType", "FlaggedAtRisk", "FrozenClock",
    "GuardContext", "GuardRefused", "IdempotencyKeyReused", "ImportResult", "InvalidInput",
    "InvalidQuery", "InvalidTrigger", "LedgerRefused", "LoadedDefinition", "MigrationItem",
    "MigrationResult", "MissingExtra", "MissingFields", "Notice", "Outcome", "Problem",
    "Proposal", "RekeyResult", "Report", "ReportReady", "RoleRefused", "RunResult",
    "SchedulerService", "ScopeRefused", "SensitivePeriod", "Settings", "SettingsError",
    "StoreError", "SystemClock", "Timer", "TimerKind", "TimerStatus", "TransitionApplied",
    "TriggerOption", "UnknownCalendarYear", "UnknownWorkflow", "WhatIf", "WindowClosed",
    "Workflow", "WorkflowSpec", "WrongState", "configure_logging", "load_definition",
    "load_definitions", "load_settings", "parse_definition", "shipped_workflows",
]

for _name in __all__:
    if _name in globals():
        _public(globals()[_name])
del _name
