"""Console sessions: who is signed in, behind a signed cookie, with a CSRF token each.

Signing in takes the same credentials as the API (an API token or a JWT, checked by the
service's :class:`~casework.http.auth.Authenticator`); the console then keeps a session
row in the service's own database (beside the notice log: the engine's PostgreSQL, or
``<database>.http.db`` beside a SQLite file, so every worker sees every session and a
sign-out ends it everywhere at once). The browser holds only a random session token,
signed with the console's key (HMAC-SHA256), in a cookie that is ``HttpOnly``,
``SameSite=Strict`` and ``Secure`` over HTTPS; the row keeps the token's SHA-256, never
the token, nor the credential (only its SHA-256, so an API token taken out of the
settings ends the sessions it opened).

A session ends when it is signed out, after ``idle_minutes`` without a request, after
``session_hours``, or when the JWT it was opened with expires, whichever comes first.
Each session has its own CSRF token, which every form carries (and htmx sends as the
``X-CSRF-Token`` header); a POST without it, or with another, is refused before anything
runs.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import (
    Column,
    DateTime,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    delete,
    func,
    insert,
    select,
    update,
)
from sqlalchemy import text as sql_text
from sqlalchemy.engine import Engine as SAEngine
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from ...errors import StoreError
from ...types import Actor

__all__ = ["Session", "SessionStore", "digest"]

meta = MetaData()

sessions_t = Table(
    "console_sessions", meta,
    Column("id", String(64), primary_key=True),        # SHA-256 of the session token
    Column("actor", Text, nullable=False),             # role[,role]:id[@unit]
    Column("kind", String(8), nullable=False),         # token | jwt
    Column("credential", String(64), nullable=False),  # SHA-256 of the credential
    Column("csrf", String(64), nullable=False),
    Column("created_at", DateTime, nullable=False),
    Column("expires_at", DateTime, nullable=False),
    Column("seen_at", DateTime, nullable=False),
    Column("ended_at", DateTime, nullable=True),
)

keys_t = Table(
    "console_keys", meta,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("secret", String(128), nullable=False),
    Column("created_at", DateTime, nullable=False),
)

_TOUCH_EVERY = timedelta(seconds=60)


def digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


@dataclass(frozen=True)
class Session:
    """A signed-in viewer: the actor, how they signed in, the form token, the end."""

    key: str               # the stored id (SHA-256 of the token)
    actor: Actor
    kind: str
    credential: str
    csrf: str
    expires_at: datetime   # naive UTC
    seen_at: datetime


class SessionStore:
    """The ``console_sessions`` and ``console_keys`` tables on the service's database."""

    def __init__(self, engine: SAEngine, backend: str, *, hours: float = 8.0,
                 idle_minutes: float = 60.0) -> None:
        self.engine = engine
        self.backend = backend
        self.lifetime = timedelta(hours=hours)
        self.idle = timedelta(minutes=idle_minutes)
        with self._errors(), engine.begin() as conn:
            if backend == "postgresql":
                conn.execute(sql_text("SELECT pg_advisory_xact_lock(7244082)"))  # one creator
            meta.create_all(conn, checkfirst=True)
        self._secret = self._load_secret()

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except IntegrityError:
            raise
        except SQLAlchemyError:
            raise StoreError("the console's session store is unavailable; try again") from None

    def _load_secret(self) -> bytes:
        """The console's signing key: made once, shared by every worker on the database."""
        with self._errors(), self.engine.connect() as conn:
            row = conn.execute(select(keys_t.c.secret).where(keys_t.c.id == 1)).first()
        if row is None:
            try:
                with self._errors(), self.engine.begin() as conn:
                    conn.execute(insert(keys_t).values(id=1, secret=secrets.token_hex(32),
                                                       created_at=_now()))
            except IntegrityError:
                pass  # another worker made it first
            with self._errors(), self.engine.connect() as conn:
                row = conn.execute(select(keys_t.c.secret).where(keys_t.c.id == 1)).first()
        assert row is not None
        return bytes.fromhex(row[0])

    # -- signing ---------------------------------------------------------------------------
    def sign(self, value: str) -> str:
        mac = hmac.new(self._secret, value.encode(), hashlib.sha256).digest()
        return f"{value}.{base64.urlsafe_b64encode(mac[:24]).decode().rstrip('=')}"

    def unsign(self, signed: str | None) -> str | None:
        if not signed or len(signed) > 300 or "." not in signed:
            return None
        value, _, _ = signed.rpartition(".")
        return value if hmac.compare_digest(self.sign(value), signed) else None

    # -- sessions --------------------------------------------------------------------------
    def open(self, actor: Actor, kind: str, credential: str,
             expires: datetime | None = None) -> tuple[str, Session]:
        """A new session for ``actor``; (the signed cookie value, the session)."""
        now = _now()
        end = now + self.lifetime
        if expires is not None:
            end = min(end, expires.astimezone(UTC).replace(tzinfo=None))
        token = secrets.token_urlsafe(32)
        s = Session(digest(token), actor, kind, digest(credential), secrets.token_urlsafe(32),
                    end, now)
        with self._errors(), self.engine.begin() as conn:
            conn.execute(delete(sessions_t).where(sessions_t.c.expires_at < now - self.lifetime))
            conn.execute(insert(sessions_t).values(
                id=s.key, actor=str(actor), kind=kind, credential=s.credential, csrf=s.csrf,
                created_at=now, expires_at=end, seen_at=now, ended_at=None))
        return self.sign(token), s

    def get(self, cookie: str | None) -> Session | None:
        """The live session a cookie names (None: none, forged, ended, idle or expired)."""
        token = self.unsign(cookie)
        if token is None:
            return None
        with self._errors(), self.engine.connect() as conn:
            row = conn.execute(select(sessions_t).where(sessions_t.c.id == digest(token))).first()
        if row is None or row.ended_at is not None:
            return None
        now = _now()
        if row.expires_at <= now or row.seen_at + self.idle <= now:
            return None
        s = Session(row.id, Actor.parse(row.actor), row.kind, row.credential, row.csrf,
                    row.expires_at, row.seen_at)
        if now - row.seen_at >= _TOUCH_EVERY:
            with self._errors(), self.engine.begin() as conn:
                conn.execute(update(sessions_t).where(sessions_t.c.id == s.key).values(seen_at=now))
        return s

    def end(self, session: Session) -> None:
        with self._errors(), self.engine.begin() as conn:
            conn.execute(update(sessions_t).where(sessions_t.c.id == session.key)
                         .values(ended_at=_now()))

    def live(self) -> int:
        """How many sessions are open now."""
        now = _now()
        with self._errors(), self.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(sessions_t).where(
                sessions_t.c.ended_at.is_(None), sessions_t.c.expires_at > now)).scalar() or 0)

    def csrf_ok(self, session: Session, given: Any) -> bool:
        return isinstance(given, str) and 0 < len(given) <= 200 and hmac.compare_digest(
            given, session.csrf)
