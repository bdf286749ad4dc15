"""What the HTTP tests share: credentials, settings, a live server on an engine.

Not a test module of its own (it holds no test); the HTTP test files import it as
``tests.test_http_support``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jwt
from casework import Actor, Engine, FrozenClock
from casework.http import (
    HttpJwtSettings,
    HttpSettings,
    HttpTokenSettings,
    HttpWebhookSettings,
    create_app,
    hash_token,
)
from casework.http.testing import ServerThread

from tests.conftest import COMPLAINT, PETITION

SECRET = "test-secret-of-at-least-32-bytes-for-hs256!"
SERVICE_TOKEN = "cw_service_token_for_tests"
SERVICE_ACTOR = "clerk:intake@county_court"


def token_for(actor: str, *, secret: str = SECRET, expires_in: float = 600.0,
              **claims: Any) -> str:
    """A signed JWT naming ``actor`` (short form ``role[,role]:id[@unit]``)."""
    a = Actor.parse(actor)
    body: dict[str, Any] = {"sub": a.id, "roles": sorted(a.roles), "exp": int(time.time() + expires_in)}
    if a.unit:
        body["unit"] = a.unit
    body.update(claims)
    return jwt.encode(body, secret, algorithm="HS256")


def auth(actor: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token_for(actor)}"}


def settings(**overrides: Any) -> HttpSettings:
    """Test settings: HS256 JWTs under SECRET, one service token, leaders read PII, webhooks
    only to 127.0.0.1 and retried quickly."""
    base: dict[str, Any] = {
        "jwt": HttpJwtSettings(algorithms=("HS256",), key=SECRET),
        "tokens": (HttpTokenSettings(name="intake", sha256=hash_token(SERVICE_TOKEN),
                                     actor=SERVICE_ACTOR),),
        "pii_readers": {"petition": ("leader",)},
        "scheduler": False,
        "webhooks": HttpWebhookSettings(backoff_seconds=0.2, max_backoff_seconds=1.0,
                                        poll_seconds=0.1, timeout_seconds=3.0,
                                        allowed_hosts=("127.0.0.1",)),
    }
    base.update(overrides)
    return HttpSettings(**base)


@dataclass
class Live:
    """An engine, the app over it, uvicorn serving it, and a client."""

    engine: Engine
    clock: FrozenClock
    server: ServerThread
    client: httpx.Client

    @property
    def url(self) -> str:
        return self.server.url


@contextmanager
def live(db_url: str, clock: FrozenClock | None = None, **overrides: Any) -> Iterator[Live]:
    clock = clock or FrozenClock()
    engine = Engine(db_url, [PETITION, COMPLAINT], clock=clock)
    app = create_app(engine, settings(**overrides))
    try:
        with ServerThread(app) as server, httpx.Client(base_url=server.url, timeout=30) as client:
            yield Live(engine, clock, server, client)
    finally:
        app.state.casework.close()
        engine.close()


def write_config(tmp: Path, db_url: str, extra: str = "", workflows: str | None = None) -> Path:
    """A settings file for ``casework serve-http`` subprocesses."""
    wf = workflows or f'["{PETITION}", "{COMPLAINT}"]'
    cfg = tmp / "casework.toml"
    cfg.write_text(f"""
[database]
url = "{db_url}"
sqlite_synchronous = "NORMAL"

[workflows]
paths = {wf}

[scheduler]
interval_seconds = 0.5
lease_seconds = 30
# A killed server's claimed notices go out again after this: well within the tests' waits.
notice_lease_seconds = 5

[http]
scheduler = true
pii_readers = {{ petition = ["leader"] }}

[http.jwt]
algorithms = ["HS256"]
key = "{SECRET}"

[http.webhooks]
backoff_seconds = 0.2
max_backoff_seconds = 1.0
poll_seconds = 0.1
timeout_seconds = 3
lease_seconds = 5
allowed_hosts = ["127.0.0.1"]
{extra}
""", encoding="utf-8")
    return cfg
