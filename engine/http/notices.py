"""Notices for HTTP clients: a durable notice log (read by the Server-Sent Events stream)
and webhooks (subscriptions, deliveries and every attempt), in tables of this package.

Every notice the engine hands to this process's subscribers (after a command commits, and
from the outbox for what the scheduler caused, which the outbox redelivers until it is
handed over) is written to ``http_notices`` once (keyed by what it is: ``transition:<case>:
<seq>``), with personal fields masked, and a ``http_deliveries`` row for each matching
webhook, in one transaction. The subscriptions it records deliveries for are the ones in
the database when it does (a cached list is used only while ``http_webhook_generation``,
read in that transaction, still says what it was read at; adding or deleting a
subscription counts it up in its own transaction, and on PostgreSQL the two exclude each
other by an advisory lock): a notice recorded after ``POST /webhooks`` answered, in any
process, is delivered to the new subscriber, and none recorded after a ``DELETE`` answered
is queued for the deleted one. The dispatcher claims due deliveries (an owner and a lease,
``FOR UPDATE SKIP LOCKED`` on PostgreSQL, so several server processes share the work) and
posts them, signed: ``Casework-Signature: t=<unix time>,v1=<hex HMAC-SHA256 of
"<t>.<body>" under the subscription's secret>``. A failure is recorded and retried with
exponential backoff until ``max_attempts``; a delivery claimed by a process that died is
taken up again when its lease runs out. So each notice reaches each subscriber at least
once (a receiver dedups on ``Casework-Delivery`` or the notice's ``id``).

On PostgreSQL the tables live in the engine's database (its schema); beside a SQLite file
they live in a file of their own (``<name>.http.db``), so that writing them never waits
for the engine's write lock.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import secrets
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
from loguru import logger
from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    and_,
    create_engine,
    delete,
    func,
    insert,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Engine as SAEngine
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.pool import StaticPool

from ..errors import StoreError
from ..settings import HttpWebhookSettings

__all__ = ["Dispatcher", "NoticeStore", "sign", "verify_signature"]

_ID = BigInteger().with_variant(Integer, "sqlite")
meta = MetaData()

notices_t = Table(
    "http_notices", meta,
    Column("id", _ID, primary_key=True, autoincrement=True),
    Column("key", String(200), nullable=False, unique=True),
    Column("name", String(32), nullable=False),
    Column("workflow", String(200), nullable=False),
    Column("case_id", String(64), nullable=True),
    Column("at", DateTime, nullable=False),
    Column("payload", Text, nullable=False),
)

webhooks_t = Table(
    "http_webhooks", meta,
    Column("id", String(32), primary_key=True),
    Column("url", Text, nullable=False),
    Column("notices", Text, nullable=False),
    Column("workflow", String(200), nullable=True),
    Column("description", Text, nullable=True),
    Column("owner", String(200), nullable=False),
    Column("secret", String(128), nullable=False),
    Column("active", Boolean, nullable=False, default=True),
    Column("created_at", DateTime, nullable=False),
)

deliveries_t = Table(
    "http_deliveries", meta,
    Column("id", _ID, primary_key=True, autoincrement=True),
    Column("webhook_id", String(32), nullable=False),
    Column("notice_id", BigInteger, nullable=False),
    Column("notice", String(32), nullable=False),
    Column("case_id", String(64), nullable=True),
    Column("status", String(16), nullable=False, default="pending"),
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_at", DateTime, nullable=True),
    Column("lease_until", DateTime, nullable=True),
    Column("owner", String(200), nullable=True),
    Column("delivered_at", DateTime, nullable=True),
    Column("last_status", Integer, nullable=True),
    Column("last_error", Text, nullable=True),
    UniqueConstraint("webhook_id", "notice_id", name="uq_http_deliveries_once"),
    Index("ix_http_deliveries_due", "status", "next_at"),
    Index("ix_http_deliveries_webhook", "webhook_id", "id"),
)

# One row (id 1): counted up by every change of the subscriptions, in its transaction, so
# that a process's cached list of them is known current by one read of a primary key.
generation_t = Table(
    "http_webhook_generation", meta,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("generation", BigInteger, nullable=False),
)

# PostgreSQL advisory lock: held shared by each notice's transaction, exclusively by a
# change of the subscriptions (7244081 is the tables' creator, 7244082 the console's).
SUBSCRIPTIONS_LOCK = 7244083
_SHARED = text(f"SELECT pg_advisory_xact_lock_shared({SUBSCRIPTIONS_LOCK})")
_EXCLUSIVE = text(f"SELECT pg_advisory_xact_lock({SUBSCRIPTIONS_LOCK})")
_GENERATION = select(generation_t.c.generation).where(generation_t.c.id == 1).scalar_subquery()
# A notice, returning its id and the generation (built once: its cache key too).
_RECORD = insert(notices_t).returning(notices_t.c.id, _GENERATION.label("generation"))

attempts_t = Table(
    "http_delivery_attempts", meta,
    Column("id", _ID, primary_key=True, autoincrement=True),
    Column("delivery_id", BigInteger, nullable=False, index=True),
    Column("attempt", Integer, nullable=False),
    Column("at", DateTime, nullable=False),
    Column("status_code", Integer, nullable=True),
    Column("error", Text, nullable=True),
    Column("seconds", Float, nullable=False),
)


def utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def aware(v: datetime | None) -> datetime | None:
    return None if v is None else v.replace(tzinfo=UTC)


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The ``Casework-Signature`` header of a body sent at ``timestamp`` (unix seconds)."""
    mac = hmac.new(secret.encode("utf-8"), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def verify_signature(secret: str, header: str, body: bytes, *, tolerance: float = 300.0,
                     now: float | None = None) -> bool:
    """Whether ``header`` signs ``body`` under ``secret`` within ``tolerance`` seconds (what a
    receiver runs; the timestamp is inside the MAC, so a replayed old body is refused)."""
    try:
        parts = dict(p.split("=", 1) for p in header.split(","))
        t = int(parts["t"])
    except (ValueError, KeyError):
        return False
    if abs((now if now is not None else time.time()) - t) > tolerance:
        return False
    want = sign(secret, t, body).split("v1=", 1)[1]
    return hmac.compare_digest(want, parts.get("v1", ""))


def with_id(payload: str, notice_id: int) -> str:
    """A stored payload (a JSON object) with the notice's id added."""
    return payload[:-1] + f',"id":{notice_id}}}' if payload.endswith("}") else payload


def store_url(database_url: str) -> str:
    """Where this package's tables live: the engine's PostgreSQL, or a SQLite file beside
    the engine's."""
    url = make_url(database_url)
    if url.get_backend_name() != "sqlite":
        return database_url
    db = url.database or ""
    if db in ("", ":memory:"):
        return "sqlite://"
    p = Path(db)
    return f"sqlite:///{p.with_name(p.stem + '.http.db')}"


@dataclass(frozen=True)
class Webhook:
    id: str
    url: str
    notices: tuple[str, ...]
    workflow: str | None
    description: str | None
    owner: str
    secret: str
    active: bool
    created_at: datetime

    def public(self) -> dict[str, Any]:
        return {"id": self.id, "url": self.url, "notices": list(self.notices),
                "workflow": self.workflow, "description": self.description, "owner": self.owner,
                "active": self.active, "created_at": aware(self.created_at)}

    def wants(self, notice: str, workflow: str) -> bool:
        return (("*" in self.notices or notice in self.notices)
                and (self.workflow is None or self.workflow == workflow))


def _webhook(row: Any) -> Webhook:
    return Webhook(row.id, row.url, tuple(orjson.loads(row.notices)), row.workflow,
                   row.description, row.owner, row.secret, bool(row.active), row.created_at)


class NoticeStore:
    """The notice log, the subscriptions and their deliveries."""

    def __init__(self, database_url: str) -> None:
        self.url = store_url(database_url)
        kwargs: dict[str, Any] = {"pool_pre_ping": True}
        backend = make_url(self.url).get_backend_name()
        self.backend = backend
        if backend == "sqlite":
            if self.url == "sqlite://":
                kwargs = {"poolclass": StaticPool, "connect_args": {"check_same_thread": False}}
            else:
                kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
        else:
            kwargs.update(pool_size=4, max_overflow=16)
        self.engine: SAEngine = create_engine(self.url, **kwargs)
        if backend == "postgresql":
            from sqlalchemy import event

            @event.listens_for(self.engine, "connect")
            def _async_commit(dbapi_conn: Any, _: Any) -> None:
                # The log's commits do not wait for the WAL flush: a killed casework process
                # loses nothing (the row is in the server); only a crash of PostgreSQL itself
                # within a fraction of a second could, and then the outbox's own notices are
                # given again. This halves what a command costs over HTTP.
                cur = dbapi_conn.cursor()
                cur.execute("SET synchronous_commit TO off")
                cur.close()
                dbapi_conn.commit()
        if backend == "sqlite":
            from sqlalchemy import event

            @event.listens_for(self.engine, "connect")
            def _pragmas(dbapi_conn: Any, _: Any) -> None:
                cur = dbapi_conn.cursor()
                cur.execute("PRAGMA journal_mode=WAL")
                cur.execute("PRAGMA synchronous=NORMAL")
                cur.execute("PRAGMA busy_timeout=30000")
                cur.close()
        self._listeners: list[Callable[[], None]] = []
        self._lock = threading.Lock()
        # (generation, the subscriptions at it): current while the database's generation
        # is the same number.
        self._webhooks: tuple[int, list[Webhook]] | None = None
        self._create()

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except IntegrityError:
            raise
        except SQLAlchemyError as e:
            logger.bind(case_id="-", workflow="-").warning(
                "http store: {}", str(getattr(e, "orig", e)).splitlines()[0][:200])
            raise StoreError("the notice store is unavailable; try again") from None

    def _create(self) -> None:
        with self._errors(), self.engine.begin() as conn:
            if self.backend == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(7244081)"))  # one creator
            meta.create_all(conn, checkfirst=True)
            ins = (pg_insert if self.backend == "postgresql" else sqlite_insert)(generation_t)
            conn.execute(ins.values(id=1, generation=0).on_conflict_do_nothing())

    def close(self) -> None:
        self.engine.dispose()

    def on_new(self, fn: Callable[[], None]) -> None:
        """Call ``fn`` (from any thread) after each new notice this process records."""
        with self._lock:
            self._listeners.append(fn)

    def off_new(self, fn: Callable[[], None]) -> None:
        with self._lock, contextlib.suppress(ValueError):
            self._listeners.remove(fn)

    # -- the notice log ------------------------------------------------------------------
    def record(self, key: str, name: str, workflow: str, case_id: str | None, at: datetime,
               payload: dict[str, Any]) -> int | None:
        """Write a notice and its deliveries once; its id (None if it was there already)."""
        at_db = at.astimezone(UTC).replace(tzinfo=None)
        try:
            with self._errors(), self.engine.begin() as conn:
                if self.backend == "postgresql":
                    # No change of the subscriptions commits while this notice is written
                    # (and the insert below, a statement of its own, sees every one before).
                    conn.execute(_SHARED)
                # The generation is read by the insert itself (one round trip): on SQLite
                # the statement holds the write lock by then, so it reads the latest state,
                # which nothing changes before the commit (the subscriptions are in this file).
                nid, gen = conn.execute(_RECORD, {
                    "key": key, "name": name, "workflow": workflow, "case_id": case_id,
                    "at": at_db, "payload": orjson.dumps(payload).decode()}).one()
                hooks = [w for w in self._current(conn, gen) if w.active and w.wants(name, workflow)]
                if hooks:
                    now = utcnow()
                    conn.execute(insert(deliveries_t), [
                        {"webhook_id": w.id, "notice_id": nid, "notice": name,
                         "case_id": case_id, "status": "pending", "attempts": 0, "next_at": now}
                        for w in hooks])
        except IntegrityError:
            return None  # the outbox handed it over again: recorded already
        with self._lock:
            listeners = list(self._listeners)
        for fn in listeners:
            try:
                fn()
            except Exception:  # a listener's loop closed
                pass
        return int(nid)

    def notices_after(self, after: int, limit: int = 100) -> list[tuple[int, str, str, str]]:
        """(id, name, workflow, payload JSON) of the notices after ``after``, oldest first."""
        with self._errors(), self.engine.connect() as conn:
            rows = conn.execute(select(notices_t.c.id, notices_t.c.name, notices_t.c.workflow,
                                       notices_t.c.payload)
                                .where(notices_t.c.id > after).order_by(notices_t.c.id)
                                .limit(limit)).all()
        return [(int(r.id), r.name, r.workflow, r.payload) for r in rows]

    def last_notice_id(self) -> int:
        with self._errors(), self.engine.connect() as conn:
            return int(conn.execute(select(func.max(notices_t.c.id))).scalar() or 0)

    # -- subscriptions -------------------------------------------------------------------
    def add_webhook(self, url: str, notices: Sequence[str], workflow: str | None,
                    description: str | None, owner: str) -> Webhook:
        w = Webhook(secrets.token_hex(8), url, tuple(dict.fromkeys(notices)), workflow,
                    description, owner, "whsec_" + secrets.token_urlsafe(32), True, utcnow())
        with self._errors(), self.engine.begin() as conn:
            self._changing(conn)
            conn.execute(insert(webhooks_t).values(
                id=w.id, url=w.url, notices=orjson.dumps(list(w.notices)).decode(),
                workflow=w.workflow, description=w.description, owner=w.owner, secret=w.secret,
                active=True, created_at=w.created_at))
        return w

    def _changing(self, conn: Any) -> None:
        """In a transaction that changes the subscriptions: wait for the notices being
        written (PostgreSQL), and count the generation up (which, on SQLite, takes the
        write lock first)."""
        if self.backend == "postgresql":
            conn.execute(_EXCLUSIVE)
        conn.execute(update(generation_t).where(generation_t.c.id == 1)
                     .values(generation=generation_t.c.generation + 1))

    def _current(self, conn: Any, gen: int | None = None) -> list[Webhook]:
        """The subscriptions as the database has them now: the cached list if the generation
        (read now, or just read by the caller's statement) is the one it was read at, else
        read again (after the generation, so that the list is at least as new as the number
        it is kept under)."""
        if gen is None:
            gen = conn.execute(select(_GENERATION)).scalar()
        cached = self._webhooks
        if gen is not None and cached is not None and cached[0] == gen:
            return cached[1]
        rows = conn.execute(select(webhooks_t).order_by(webhooks_t.c.created_at)).all()
        hooks = [_webhook(r) for r in rows]
        if gen is not None:
            with self._lock:
                if self._webhooks is None or self._webhooks[0] < gen:
                    self._webhooks = (int(gen), hooks)
        return hooks

    def webhooks(self, *, owner: str | None = None, active_only: bool = False) -> list[Webhook]:
        with self._errors(), self.engine.connect() as conn:
            hooks = self._current(conn)
        return [w for w in hooks if (owner is None or w.owner == owner)
                and (w.active or not active_only)]

    def webhook(self, wid: str) -> Webhook | None:
        with self._errors(), self.engine.connect() as conn:
            row = conn.execute(select(webhooks_t).where(webhooks_t.c.id == wid)).first()
        return _webhook(row) if row is not None else None

    def remove_webhook(self, wid: str) -> bool:
        with self._errors(), self.engine.begin() as conn:
            self._changing(conn)
            n = conn.execute(delete(webhooks_t).where(webhooks_t.c.id == wid)).rowcount
            # Every notice written before holds no lock now: its deliveries are all here.
            conn.execute(update(deliveries_t).where(and_(deliveries_t.c.webhook_id == wid,
                                                         deliveries_t.c.status == "pending"))
                         .values(status="failed", last_error="subscription removed"))
        return bool(n)

    def deliveries(self, wid: str, limit: int = 100, status: str | None = None) -> list[dict[str, Any]]:
        q = select(deliveries_t).where(deliveries_t.c.webhook_id == wid)
        if status is not None:
            q = q.where(deliveries_t.c.status == status)
        with self._errors(), self.engine.connect() as conn:
            rows = conn.execute(q.order_by(deliveries_t.c.id.desc()).limit(limit)).all()
        return [{"id": int(r.id), "notice_id": int(r.notice_id), "notice": r.notice,
                 "case_id": r.case_id, "status": r.status, "attempts": r.attempts,
                 "next_attempt_at": aware(r.next_at) if r.status == "pending" else None,
                 "delivered_at": aware(r.delivered_at), "last_status": r.last_status,
                 "last_error": r.last_error} for r in rows]

    def delivery_counts(self) -> dict[str, int]:
        with self._errors(), self.engine.connect() as conn:
            rows = conn.execute(select(deliveries_t.c.status, func.count())
                                .group_by(deliveries_t.c.status)).all()
        return {r[0]: int(r[1]) for r in rows}

    # -- the dispatcher's side -----------------------------------------------------------
    def claim(self, owner: str, lease: timedelta, limit: int) -> list[tuple[Any, Webhook, str]]:
        """Claim due deliveries: (delivery row, its webhook, the notice's payload)."""
        now = utcnow()
        due = and_(deliveries_t.c.status == "pending", deliveries_t.c.next_at <= now,
                   or_(deliveries_t.c.lease_until.is_(None), deliveries_t.c.lease_until < now))
        with self._errors(), self.engine.begin() as conn:
            q = select(deliveries_t.c.id).where(due).order_by(deliveries_t.c.next_at,
                                                              deliveries_t.c.id).limit(limit)
            if self.backend == "postgresql":
                q = q.with_for_update(skip_locked=True)
            ids = [r[0] for r in conn.execute(q).all()]
            if not ids:
                return []
            conn.execute(update(deliveries_t).where(deliveries_t.c.id.in_(ids))
                         .values(owner=owner, lease_until=now + lease))
            rows = conn.execute(
                select(deliveries_t, notices_t.c.payload.label("payload"))
                .join(notices_t, notices_t.c.id == deliveries_t.c.notice_id)
                .where(deliveries_t.c.id.in_(ids)).order_by(deliveries_t.c.id)).all()
            hooks = {r.id: _webhook(r) for r in conn.execute(
                select(webhooks_t).where(webhooks_t.c.id.in_({r.webhook_id for r in rows}))).all()}
        out = []
        for r in rows:
            w = hooks.get(r.webhook_id)
            if w is None:
                self.finish(r.id, owner, ok=False, attempt=r.attempts, status_code=None,
                            error="subscription removed", seconds=0.0, retry_at=None)
                continue
            out.append((r, w, r.payload))
        return out

    def finish(self, delivery_id: int, owner: str, *, ok: bool, attempt: int,
               status_code: int | None, error: str | None, seconds: float,
               retry_at: datetime | None) -> None:
        """Record one attempt and the delivery's new status."""
        now = utcnow()
        values: dict[str, Any] = {"attempts": attempt, "last_status": status_code,
                                  "last_error": error, "lease_until": None, "owner": None}
        if ok:
            values.update(status="delivered", delivered_at=now, next_at=None)
        elif retry_at is None:
            values.update(status="failed", next_at=None)
        else:
            values.update(next_at=retry_at)
        with self._errors(), self.engine.begin() as conn:
            conn.execute(insert(attempts_t).values(delivery_id=delivery_id, attempt=attempt, at=now,
                                                   status_code=status_code, error=error,
                                                   seconds=seconds))
            conn.execute(update(deliveries_t).where(and_(deliveries_t.c.id == delivery_id,
                                                         deliveries_t.c.owner == owner))
                         .values(**values))

    def attempts(self, delivery_id: int) -> list[dict[str, Any]]:
        with self._errors(), self.engine.connect() as conn:
            rows = conn.execute(select(attempts_t).where(attempts_t.c.delivery_id == delivery_id)
                                .order_by(attempts_t.c.attempt)).all()
        return [{"attempt": r.attempt, "at": aware(r.at), "status_code": r.status_code,
                 "error": r.error, "seconds": r.seconds} for r in rows]


class Dispatcher:
    """A thread that posts due deliveries, retrying with exponential backoff."""

    def __init__(self, store: NoticeStore, settings: HttpWebhookSettings, owner: str, *,
                 on_result: Callable[[bool], None] | None = None,
                 span: Callable[[str, dict[str, Any]], Any] | None = None) -> None:
        self.store = store
        self.settings = settings
        self.owner = owner
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._on_result = on_result
        self._span = span
        store.on_new(self._wake.set)

    def start(self) -> None:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="casework-webhooks",
                                            daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        self.store.off_new(self._wake.set)

    def _run(self) -> None:
        import httpx

        with httpx.Client(timeout=self.settings.timeout_seconds, follow_redirects=False,
                          headers={"User-Agent": "casework-webhooks"}) as client:
            while not self._stop.is_set():
                try:
                    n = self.run_once(client)
                except Exception as e:  # the store is down: try again later
                    logger.bind(case_id="-", workflow="-").warning(
                        "webhook dispatcher: {}", type(e).__name__)
                    n = 0
                if n == 0:
                    self._wake.wait(self.settings.poll_seconds)
                    self._wake.clear()

    def backoff(self, attempt: int) -> float:
        s = self.settings
        return float(min(s.max_backoff_seconds, s.backoff_seconds * 2 ** max(0, attempt - 1)))

    def run_once(self, client: Any, limit: int = 20) -> int:
        """Post what is due now; how many deliveries were tried."""
        lease = timedelta(seconds=self.settings.lease_seconds)
        claimed = self.store.claim(self.owner, lease, limit)
        for row, hook, payload in claimed:
            if self._stop.is_set():
                break
            self._deliver(client, row, hook, payload)
        return len(claimed)

    def _deliver(self, client: Any, row: Any, hook: Webhook, payload: str) -> None:
        attempt = int(row.attempts) + 1
        body = with_id(payload, int(row.notice_id)).encode("utf-8")
        ts = int(time.time())
        headers = {"Content-Type": "application/json", "Casework-Signature": sign(hook.secret, ts, body),
                   "Casework-Delivery": str(row.id), "Casework-Notice": row.notice,
                   "Casework-Attempt": str(attempt), "Casework-Webhook": hook.id}
        started = time.perf_counter()
        status_code: int | None = None
        error: str | None = None
        span = self._span("casework.webhook.deliver", {"casework.webhook": hook.id,
                                                       "casework.notice": row.notice,
                                                       "casework.attempt": attempt}) \
            if self._span else contextlib.nullcontext()
        with span:
            try:
                r = client.post(hook.url, content=body, headers=headers)
                status_code = r.status_code
                ok = 200 <= r.status_code < 300
                if not ok:
                    error = f"HTTP {r.status_code}"
            except Exception as e:  # connection refused, timeout, a bad URL
                ok = False
                error = type(e).__name__
        seconds = time.perf_counter() - started
        retry_at = None
        if not ok and attempt < self.settings.max_attempts:
            retry_at = utcnow() + timedelta(seconds=self.backoff(attempt))
        self.store.finish(row.id, self.owner, ok=ok, attempt=attempt, status_code=status_code,
                          error=error, seconds=seconds, retry_at=retry_at)
        if self._on_result is not None:
            self._on_result(ok)
