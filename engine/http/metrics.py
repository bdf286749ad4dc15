"""What operations see at ``/metrics`` (Prometheus text format), and spans.

Counters and histograms are this process's (each worker process has its own registry, as
usual with Prometheus; scrape each, or sum them): requests, commands by outcome, refusals by
rule, notices, webhook deliveries, the lag of timer firings (due to fired, from the events
the scheduler writes), breaches and escalations by rung. Gauges read at scrape time from the
database: due timers waiting (and the age of the oldest), notices waiting in the engine's
outbox, webhook deliveries by status.

Spans (OpenTelemetry, the API package only): around each command, each webhook delivery,
and one per timer firing seen; without a tracer provider configured by the host they cost
nothing and go nowhere.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine as SAEngine
from sqlalchemy.exc import SQLAlchemyError

try:
    from opentelemetry import trace as _otel
except ImportError:  # pragma: no cover - opentelemetry-api is part of the server extra
    _otel = None  # type: ignore[assignment]

_LATENCY = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_LAG = (0.1, 0.5, 1, 5, 15, 30, 60, 120, 300, 900, 3600, 6 * 3600, 86400)


class Tracer:
    """Spans through the OpenTelemetry API (no-ops unless the host set a tracer provider)."""

    def __init__(self) -> None:
        self._tracer = _otel.get_tracer("casework.http") if _otel is not None else None

    @contextlib.contextmanager
    def span(self, name: str, attributes: dict[str, Any] | None = None,
             start: datetime | None = None) -> Iterator[Any]:
        if self._tracer is None:
            yield None
            return
        kwargs: dict[str, Any] = {"attributes": {k: v for k, v in (attributes or {}).items()
                                                 if v is not None}}
        if start is not None:
            kwargs["start_time"] = int(start.timestamp() * 1e9)
        with self._tracer.start_as_current_span(name, **kwargs) as s:
            yield s


class Metrics:
    """One app's metrics, in a registry of its own."""

    def __init__(self, database_url: str, notice_counts: Any = None) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter("casework_http_requests", "HTTP requests by route and status",
                                ["method", "route", "status"], registry=r)
        self.latency = Histogram("casework_http_request_seconds", "HTTP request latency",
                                 ["method", "route"], buckets=_LATENCY, registry=r)
        self.commands = Counter("casework_commands", "commands by kind and outcome",
                                ["command", "outcome"], registry=r)
        self.refusals = Counter("casework_refusals", "refused commands by the rule that refused",
                                ["rule"], registry=r)
        self.notices = Counter("casework_notices", "notices heard by this process", ["notice"],
                               registry=r)
        self.timer_lag = Histogram("casework_timer_lag_seconds",
                                   "from a timer's due instant to its firing", ["kind"],
                                   buckets=_LAG, registry=r)
        self.escalations = Counter("casework_escalations", "escalations by rung", ["rung"],
                                   registry=r)
        self.breaches = Counter("casework_breaches", "deadlines breached", ["deadline"],
                                registry=r)
        self.deliveries = Counter("casework_webhook_attempts", "webhook delivery attempts",
                                  ["outcome"], registry=r)
        self._db_url = database_url
        self._db: SAEngine | None = None
        self._notice_counts = notice_counts
        r.register(_Backlog(self))

    def db(self) -> SAEngine:
        if self._db is None:
            self._db = create_engine(self._db_url, pool_size=1, max_overflow=1, pool_pre_ping=True) \
                if not self._db_url.startswith("sqlite") else create_engine(self._db_url)
        return self._db

    def close(self) -> None:
        if self._db is not None:
            self._db.dispose()

    def observe_notice(self, name: str, event: dict[str, Any] | None) -> None:
        """Count a notice; from a scheduler's event, the lag and the rung."""
        self.notices.labels(name).inc()
        if not event or event.get("actor") != "scheduler":
            return
        details = event.get("details") or {}
        due, at = details.get("due"), event.get("at")
        if isinstance(due, str) and isinstance(at, str):
            with contextlib.suppress(ValueError):
                lag = (datetime.fromisoformat(at) - datetime.fromisoformat(due)).total_seconds()
                self.timer_lag.labels(str(event.get("kind"))).observe(max(0.0, lag))
        if event.get("kind") == "escalation":
            self.escalations.labels(str(details.get("rung") or event.get("name"))).inc()
        if event.get("kind") in ("escalation", "breach"):
            self.breaches.labels(str(details.get("deadline") or "")).inc()


class _Backlog:
    """Gauges read from the database at each scrape."""

    def __init__(self, metrics: Metrics) -> None:
        self.m = metrics

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Iterator[Any]:
        due = GaugeMetricFamily("casework_timers_due", "pending timers already due")
        oldest = GaugeMetricFamily("casework_timers_due_oldest_seconds",
                                   "how long the oldest due timer has waited")
        outbox = GaugeMetricFamily("casework_outbox_backlog", "notices not yet delivered")
        up = GaugeMetricFamily("casework_database_up", "the database answered the scrape")
        hooks = GaugeMetricFamily("casework_webhook_deliveries", "webhook deliveries by status",
                                  labels=["status"])
        now = datetime.now(UTC).replace(tzinfo=None)
        try:
            with self.m.db().connect() as conn:
                n, first = conn.execute(text(
                    "SELECT count(*), min(due_at) FROM timers "
                    "WHERE status = 'pending' AND due_at <= :now"), {"now": now}).one()
                backlog = conn.execute(text(
                    "SELECT count(*) FROM outbox WHERE delivered_at IS NULL")).scalar()
            if isinstance(first, str):
                first = datetime.fromisoformat(first)
            due.add_metric([], float(n or 0))
            oldest.add_metric([], max(0.0, (now - first).total_seconds()) if first else 0.0)
            outbox.add_metric([], float(backlog or 0))
            up.add_metric([], 1.0)
        except SQLAlchemyError:
            up.add_metric([], 0.0)
        if self.m._notice_counts is not None:
            with contextlib.suppress(Exception):
                for status, count in self.m._notice_counts().items():
                    hooks.add_metric([status], float(count))
        yield from (due, oldest, outbox, up, hooks)
