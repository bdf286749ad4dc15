"""Typed notifications for subscribers, and the registry that delivers them.

A subscriber is called after the command's transaction has committed. One
that raises does not undo the command and does not stop the others; the
failure is logged with the case id.
"""

from __future__ import annotations

import threading
import traceback
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from loguru import logger

from .errors import InvalidQuery
from .log import case_logger
from .types import Case, Event


@dataclass(frozen=True, slots=True)
class Notice:
    """Base of what subscribers receive: the case after the command and its event."""

    case: Case
    event: Event

    name = "notice"


@dataclass(frozen=True, slots=True)
class CaseOpened(Notice):
    name = "opened"


@dataclass(frozen=True, slots=True)
class TransitionApplied(Notice):
    name = "transition"


@dataclass(frozen=True, slots=True)
class ActivityRecorded(Notice):
    name = "activity"


@dataclass(frozen=True, slots=True)
class DeadlineWarned(Notice):
    """A share of a deadline's time has passed (``event.details``: deadline, share, due)."""

    name = "warned"


@dataclass(frozen=True, slots=True)
class Escalated(Notice):
    """A deadline was breached: the case went one rung up (``event.details``: rung, overdue)."""

    name = "escalated"


@dataclass(frozen=True, slots=True)
class CycleCame(Notice):
    """A recurring cycle came round for the case, or a cron check looked at it."""

    name = "cycle"


@dataclass(frozen=True, slots=True)
class FlaggedAtRisk(Notice):
    """An early-warning rule flagged the case (``event.details["flagged_at_risk"]``)."""

    name = "flagged"


@dataclass(frozen=True, slots=True)
class Assigned(Notice):
    """A slot of the case was assigned or reassigned (``event.details``: slot, from, to,
    reason)."""

    name = "assigned"


@dataclass(frozen=True, slots=True)
class Delegated(Notice):
    """A stand-in was named for a slot, or their period ended (``event.details``)."""

    name = "delegated"


@dataclass(frozen=True, slots=True)
class ReportReady:
    """A cron cycle stored a report (e.g. the quarterly supervision report)."""

    report_id: int
    workflow: str
    report: str
    at: datetime
    payload: Mapping[str, Any]

    name = "report"


OUTBOX_NOTICES: dict[str, type[Notice]] = {
    "warned": DeadlineWarned, "escalated": Escalated, "breached": Escalated, "cycle": CycleCame,
    "flagged": FlaggedAtRisk, "delegated": Delegated, "opened": CaseOpened,
    "transition": TransitionApplied, "activity": ActivityRecorded, "assigned": Assigned,
}

Subscriber = Callable[[Any], None]
NOTICE_NAMES = frozenset({"opened", "transition", "activity", "warned", "escalated", "cycle",
                          "flagged", "report", "assigned", "delegated", "*"})


class Subscribers:
    """Who listens to which notice name (``"*"`` hears them all).

    ``pii_of(workflow, version)`` names a case's personal fields, so that a subscriber's
    failure is logged with their values masked.
    """

    def __init__(self, pii_of: Callable[[str, str], frozenset[str]] | None = None) -> None:
        self._subs: dict[str, list[Subscriber]] = defaultdict(list)
        self._durable: set[int] = set()  # ids of subscribers whose failure keeps a notice
        self._lock = threading.Lock()
        self._pii_of = pii_of

    def add(self, name: str, fn: Subscriber, *, durable: bool = False) -> None:
        """Call ``fn`` with each ``name`` notice. A ``durable`` subscriber that raises on a
        notice from the outbox leaves it undelivered, to be handed over again later."""
        if name not in NOTICE_NAMES:
            raise InvalidQuery(f"unknown notice {name!r}; one of {sorted(NOTICE_NAMES)}")
        if not callable(fn):
            raise InvalidQuery(f"a subscriber to {name!r} must be callable")
        with self._lock:
            self._subs[name].append(fn)
            if durable:
                self._durable.add(id(fn))

    def wants(self, name: str) -> bool:
        """Whether anyone listens to notices called ``name``."""
        return bool(self._subs.get(name) or self._subs.get("*"))

    def publish(self, notice: Notice | ReportReady) -> bool:
        """Hand ``notice`` to its subscribers; False if a durable one raised."""
        fns = self._subs.get(notice.name, []) + self._subs.get("*", [])
        handed = True
        for fn in fns:
            try:
                fn(notice)
            except Exception as e:
                self._failed(fn, notice, e)
                if id(fn) in self._durable:
                    handed = False
        return handed

    def _failed(self, fn: Subscriber, notice: Notice | ReportReady, error: Exception) -> None:
        """Log a subscriber's failure: the traceback goes into the message, where the case's
        personal values are masked (a traceback attached to the record would not be)."""
        tb = "".join(traceback.format_exception(type(error), error, error.__traceback__))
        who = getattr(fn, "__qualname__", type(fn).__name__)
        if isinstance(notice, Notice):
            case = notice.case
            pii: frozenset[str] = frozenset()
            if self._pii_of is not None:
                try:
                    pii = self._pii_of(case.workflow, case.version)
                except Exception:
                    pii = frozenset(case.data)  # unknown: mask every value
            case_logger(case.id, case.workflow, case.data, pii).error(
                "subscriber {} failed on {}:\n{}", who, notice.name, tb)
        else:
            logger.bind(case_id="-", workflow=notice.workflow).error(
                "subscriber {} failed on {}: {}", who, notice.name, type(error).__name__)
