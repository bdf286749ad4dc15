"""Running the app with uvicorn: ``casework serve-http``.

With one worker the app is built in this process around the engine given. With several,
uvicorn starts that many processes, each building its own engine from the settings named
in the environment (:func:`app_from_environment`); they share the database, so the timers
and notices they claim are each fired and delivered once.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

ENV_CONFIG = "CASEWORK_HTTP_CONFIG"
READY = "casework-http: ready"
ENV_DB = "CASEWORK_HTTP_DB"


def build(config: Path, database_url: str | None = None) -> Any:
    """The app of the settings file ``config`` (its ``[http]`` section), on its engine."""
    from .. import Engine
    from ..settings import load_settings
    from .app import create_app

    settings = load_settings(config)
    http = settings.http
    flag = os.environ.get("CASEWORK_HTTP_SCHEDULER")
    if flag in ("0", "1"):
        http = http.model_copy(update={"scheduler": flag == "1"})
    overrides: dict[str, Any] = {"database_url": database_url} if database_url else {}
    # Every notice through the outbox, written with its event: webhooks lose none.
    engine = Engine.from_settings(config, durable_notices=True, **overrides)
    app = create_app(engine, http, base_dir=settings.base_dir)
    app.state.engine_owned = engine
    return app


class Announce:
    """Says on stderr when the app has started (its lifespan is done), so that whoever started
    the process can wait for that line: ``casework-http: ready pid=<pid>``."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.state = app.state

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return

        async def announcing(message: Any) -> None:
            await send(message)
            if message.get("type") == "lifespan.startup.complete":
                import sys

                print(f"{READY} pid={os.getpid()}", file=sys.stderr, flush=True)

        await self.app(scope, receive, announcing)


def app_from_environment() -> Any:
    """uvicorn's factory in each worker process: the settings from ``$CASEWORK_HTTP_CONFIG``,
    the database from ``$CASEWORK_HTTP_DB`` if set."""
    return Announce(build(Path(os.environ[ENV_CONFIG]), os.environ.get(ENV_DB) or None))


def serve(config: Path, database_url: str | None = None, *, host: str | None = None,
          port: int | None = None, workers: int | None = None, scheduler: bool | None = None,
          log_level: str = "warning") -> None:
    """Serve until SIGTERM or SIGINT (uvicorn's own handling: requests in hand finish)."""
    import uvicorn

    from ..settings import load_settings

    http = load_settings(config).http
    if scheduler is not None and scheduler != http.scheduler:
        http = http.model_copy(update={"scheduler": scheduler})
    host = host or http.host
    port = http.port if port is None else port
    workers = workers or http.workers
    if workers > 1:
        os.environ[ENV_CONFIG] = str(Path(config).resolve())
        if database_url:
            os.environ[ENV_DB] = database_url
        if scheduler is not None:
            os.environ["CASEWORK_HTTP_SCHEDULER"] = "1" if scheduler else "0"
        uvicorn.run("casework.http.server:app_from_environment", factory=True, host=host,
                    port=port, workers=workers, log_level=log_level, timeout_graceful_shutdown=10)
        return
    from .. import Engine
    from .app import create_app

    overrides: dict[str, Any] = {"database_url": database_url} if database_url else {}
    engine = Engine.from_settings(config, durable_notices=True, **overrides)
    try:
        app = create_app(engine, http, base_dir=load_settings(config).base_dir)
        uvicorn.run(Announce(app), host=host, port=port, log_level=log_level, timeout_graceful_shutdown=10)
    finally:
        app.state.casework.close()
        engine.close()
