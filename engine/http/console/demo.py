"""``casework demo --console``: the demo's year, then the console on its database.

After :func:`casework.demo.run_demo` has run the year on its SQLite file, :func:`serve`
opens the same file and serves the HTTP service with the console, as one sign-in per demo
role (clerk, triage, leader, handler, supervisor): a fresh API token each, printed once
and kept by the service only as its SHA-256, as ``[[http.tokens]]`` are. The clock goes
on from the demo's last day, so what is done in the browser comes after the year.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from ...demo import DAYS, START, UNITS, WORKFLOWS

__all__ = ["ROLES", "DemoClock", "serve", "sign_ins"]

# Who signs in, as the demo's script acts: the county court's leader and handler hold
# three of the year's cases (one archived at the first visit, one still in review).
ROLES: dict[str, str] = {
    "clerk": "clerk:wu",
    "triage": "triage:zheng",
    "leader": f"leader:{UNITS['county_court']}@county_court",
    "handler": "handler:county_court_officer@county_court",
    "supervisor": "supervisor:committee",
}


class DemoClock:
    """The demo's last day, and on from there as real time passes."""

    def __init__(self, start: datetime) -> None:
        self.start = start
        self._t0 = time.monotonic()

    def now(self) -> datetime:
        return self.start + timedelta(seconds=time.monotonic() - self._t0)


def sign_ins() -> dict[str, tuple[str, str]]:
    """A fresh API token per demo role: {role: (actor, token)}."""
    return {role: (actor, f"demo-{role}-{secrets.token_urlsafe(18)}")
            for role, actor in ROLES.items()}


def serve(db: Path, *, host: str = "127.0.0.1", port: int = 8080,
          echo: Callable[[str], Any] = print, ready: Callable[[Any], Any] | None = None) -> None:
    """Serve the console on the demo's database until Ctrl-C (or SIGTERM)."""
    import uvicorn

    from ... import Engine
    from ...settings import HttpSettings, HttpTokenSettings
    from ..app import create_app
    from ..auth import hash_token
    from ..server import Announce

    logins = sign_ins()
    settings = HttpSettings(
        host=host, port=port, scheduler=False, pii_readers={"petition": ("leader", "supervisor")},
        tokens=tuple(HttpTokenSettings(name=f"demo-{role}", sha256=hash_token(token), actor=actor)
                     for role, (actor, token) in logins.items()))
    engine = Engine(f"sqlite:///{db}", WORKFLOWS, clock=DemoClock(START + timedelta(days=DAYS)),
                    sqlite_synchronous="NORMAL")
    app = create_app(engine, settings, scheduler=False, webhooks=False)
    url = f"http://{host}:{port}/console/"
    echo(f"\nThe console on {db}: {url}")
    echo("Sign in with one of these (paste it into the sign-in form; the leader and the "
         "supervisor see the petitioners' personal data, the others see ***):")
    for role, (actor, token) in logins.items():
        echo(f"  {role:<10} {actor:<44} {token}")
    echo("Ctrl-C stops the server.")
    if ready is not None:
        ready(app)
    try:
        uvicorn.run(Announce(app), host=host, port=port, log_level="warning",
                    timeout_graceful_shutdown=5)
    finally:
        app.state.casework.close()
        engine.close()
