"""How the console is mounted (its own module, so the pages and the package both use it)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ConsoleOptions:
    """How the console is mounted and how long its sessions last.

    ``prefix``: where it is mounted; ``session_hours``: a session's longest life (a JWT's
    ``exp`` ends it sooner); ``idle_minutes``: how long it lasts without a request;
    ``secure_cookie``: mark the cookie ``Secure`` (None: when the request came over HTTPS,
    as a proxy's ``X-Forwarded-Proto`` does not count unless uvicorn trusts it);
    ``report_ttl``: how long a computed report is shown before it is computed again;
    ``report_wait``: how long a page waits for a report being computed before it shows
    that it is (and fetches it when ready); ``page_size``: rows of a worklist or search.
    """

    prefix: str = "/console"
    session_hours: float = 8.0
    idle_minutes: float = 60.0
    secure_cookie: bool | None = None
    report_ttl: float = 600.0
    report_wait: float = 0.15
    page_size: int = 25
