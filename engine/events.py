"""Typed notifications for subscribers, and the registry that delivers them.

A subscriber is called after the command's transaction has committed. One
that raises does not undo the command and does not stop the others; the
failure is logged with the case id.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from loguru import logger

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


Subscriber = Callable[[Any], None]
NOTICE_NAMES = frozenset({"opened", "transition", "activity", "warned", "escalated", "cycle",
                          "report", "*"})


class Subscribers:
    """Who listens to which notice name (``"*"`` hears them all)."""

    def __init__(self) -> None:
        self._subs: dict[str, list[Subscriber]] = defaultdict(list)
        self._lock = threading.Lock()

    def add(self, name: str, fn: Subscriber) -> None:
        if name not in NOTICE_NAMES:
            raise ValueError(f"unknown notice {name!r}; one of {sorted(NOTICE_NAMES)}")
        with self._lock:
            self._subs[name].append(fn)

    def publish(self, notice: Notice) -> None:
        fns = self._subs.get(notice.name, []) + self._subs.get("*", [])
        for fn in fns:
            try:
                fn(notice)
            except Exception:
                logger.bind(case_id=notice.case.id, workflow=notice.case.workflow).opt(
                    exception=True
                ).error("subscriber {} failed on {}", getattr(fn, "__name__", fn), notice.name)
