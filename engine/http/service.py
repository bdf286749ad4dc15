"""What the routes share: the engine, the settings, the credential check, masking, the
notice store and its dispatcher, metrics and spans; started and stopped with the app."""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from loguru import logger

from .. import CaseworkError, CommandRefused, ConflictError, Notice, ReportReady, StoreError
from ..settings import HttpSettings
from ..types import Actor, Case, Event
from .auth import Authenticator
from .metrics import Metrics, Tracer
from .notices import Dispatcher, NoticeStore
from .problems import rule_of


class Service:
    """One app's state. ``start()`` runs the webhook dispatcher (and the engine's scheduler
    when the settings say so); ``stop()`` ends them. A host that mounts the app inside its
    own (where the mounted app's lifespan does not run) calls them itself."""

    def __init__(self, engine: Any, settings: HttpSettings, authenticator: Authenticator, *,
                 base_dir: Path | None = None, scheduler: bool | None = None,
                 webhooks: bool = True) -> None:
        self.engine = engine
        self.settings = settings
        self.auth = authenticator
        self.base_dir = base_dir
        self.run_scheduler = settings.scheduler if scheduler is None else scheduler
        self.tracer = Tracer()
        self.store = NoticeStore(engine.database_url)
        self.metrics = Metrics(engine.database_url, self.store.delivery_counts)
        self.dispatcher = Dispatcher(
            self.store, settings.webhooks, f"{socket.gethostname()}:{os.getpid()}:{id(self):x}",
            on_result=lambda ok: self.metrics.deliveries.labels("ok" if ok else "failed").inc(),
            span=lambda name, attrs: self.tracer.span(name, attrs)) if webhooks else None
        self._pii: dict[tuple[str, str], frozenset[str]] = {}
        self._listening = True
        self._started = False
        self._lock = threading.Lock()
        # Durable: a notice the log could not take stays in the engine's outbox, to come again.
        engine.on("*", self._relay, durable=True)

    # -- life ----------------------------------------------------------------------------
    def start(self) -> None:
        with self._lock:
            if self._started:
                return
            self._started = True
            self._listening = True
            if self.dispatcher is not None:
                self.dispatcher.start()
            if self.run_scheduler:
                self.engine.start_scheduler()

    def stop(self) -> None:
        with self._lock:
            if not self._started:
                self._listening = False
                return
            self._started = False
            if self.run_scheduler:
                self.engine.stop_scheduler()
            if self.dispatcher is not None:
                self.dispatcher.stop()
            self._listening = False

    def close(self) -> None:
        self.stop()
        self.store.close()
        self.metrics.close()

    # -- masking -------------------------------------------------------------------------
    def pii(self, workflow: str, version: str) -> frozenset[str]:
        key = (workflow, version)
        got = self._pii.get(key)
        if got is None:
            got = self.engine.workflow(workflow, version).pii
            self._pii[key] = got
        return got

    def reads_pii(self, actor: Actor | None, workflow: str) -> bool:
        """Whether ``actor`` holds a role the settings name as reading ``workflow``'s
        personal fields."""
        if actor is None:
            return False
        readers = self.settings.pii_readers.get(workflow, ())
        return bool(readers) and not actor.roles.isdisjoint(readers)

    def case_out(self, case: Case, actor: Actor | None) -> dict[str, Any]:
        if not self.reads_pii(actor, case.workflow):
            case = case.masked(self.pii(case.workflow, case.version))
        return case.to_dict()

    def events_out(self, case: Case, events: list[Event], actor: Actor | None) -> list[dict[str, Any]]:
        if self.reads_pii(actor, case.workflow):
            return [e.to_dict() for e in events]
        pii = self.pii(case.workflow, case.version)
        return [e.masked(pii).to_dict() for e in events]

    # -- commands ------------------------------------------------------------------------
    def command(self, kind: str, fn: Callable[[], Case], attrs: dict[str, Any]) -> Case:
        """Run a command with its span and its metrics."""
        with self.tracer.span(f"casework.{kind}", attrs) as span:
            try:
                case = fn()
            except CaseworkError as e:
                outcome = ("refused" if isinstance(e, CommandRefused) else
                           "conflict" if isinstance(e, ConflictError) else
                           "unavailable" if isinstance(e, StoreError) else "invalid")
                self.metrics.commands.labels(kind, outcome).inc()
                if isinstance(e, CommandRefused):
                    self.metrics.refusals.labels(rule_of(e)).inc()
                if span is not None:
                    span.set_attribute("casework.outcome", outcome)
                    span.set_attribute("casework.rule", rule_of(e))
                raise
            self.metrics.commands.labels(kind, "ok").inc()
            if span is not None:
                span.set_attribute("casework.outcome", "ok")
                span.set_attribute("casework.case_id", case.id)
                span.set_attribute("casework.state", case.state)
            return case

    # -- notices -------------------------------------------------------------------------
    def _relay(self, notice: Any) -> None:
        """Record a notice the engine hands over (after commit, or from the outbox)."""
        if not self._listening:
            return
        payload: dict[str, Any]
        if isinstance(notice, ReportReady):
            payload = {"notice": "report", "at": notice.at.isoformat(), "workflow": notice.workflow,
                       "case_id": None, "event": None, "case": None,
                       "report": {"id": notice.report_id, "report": notice.report,
                                  "payload": dict(notice.payload)}}
            key, case_id, at, workflow = f"report:{notice.report_id}", None, notice.at, notice.workflow
        elif isinstance(notice, Notice):
            pii = self.pii(notice.case.workflow, notice.case.version)
            event = notice.event.masked(pii).to_dict()
            payload = {"notice": notice.name, "at": event["at"], "workflow": notice.case.workflow,
                       "case_id": notice.case.id, "event": event,
                       "case": notice.case.masked(pii).to_dict(), "report": None}
            key = f"{notice.name}:{notice.case.id}:{notice.event.seq}"
            case_id, at, workflow = notice.case.id, notice.event.at, notice.case.workflow
        else:
            return
        self.metrics.observe_notice(payload["notice"], payload["event"])
        with self.tracer.span(f"casework.notice.{payload['notice']}", {"casework.case_id": case_id},
                              start=at if payload["event"] and
                              payload["event"].get("actor") == "scheduler" else None):
            try:
                self.store.record(key, payload["notice"], workflow, case_id, at, payload)
            except CaseworkError:
                # The engine keeps it in its outbox and hands it over again after the lease.
                logger.bind(case_id=case_id or "-", workflow=workflow).error(
                    "notice {} not recorded for webhooks: the notice store is unavailable", key)
                raise
