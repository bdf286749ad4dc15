"""Running the app on a real uvicorn for tests and benchmarks: in a thread of this process,
or as a ``casework serve-http`` process; both wait for readiness by an event (the server's
own signal), never by polling, and within a bound."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["ServerProcess", "ServerThread", "free_port"]


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class ServerThread:
    """uvicorn serving ``app`` on 127.0.0.1 in a daemon thread: ``with ServerThread(app) as s:
    s.url``. Ready once the app's lifespan has started and the socket listens."""

    def __init__(self, app: Any, *, host: str = "127.0.0.1", port: int | None = None,
                 timeout: float = 30.0, **config: Any) -> None:
        import uvicorn

        self.host = host
        self.port = port or free_port(host)
        self.timeout = timeout
        ready = threading.Event()
        self._ready = ready

        class _Server(uvicorn.Server):
            async def startup(self, sockets: Any = None) -> None:
                await super().startup(sockets)
                ready.set()

        cfg = uvicorn.Config(app, host=host, port=self.port, log_level="warning",
                             lifespan="on", timeout_graceful_shutdown=5, **config)
        self.server = _Server(cfg)
        self._thread = threading.Thread(target=self.server.run, name="uvicorn", daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> ServerThread:
        self._thread.start()
        if not self._ready.wait(self.timeout) or not self._thread.is_alive():
            self.server.should_exit = True
            raise RuntimeError(f"uvicorn did not start within {self.timeout} s")
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self._thread.join(self.timeout)

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class ServerProcess:
    """``casework serve-http`` as a child process; ready when every worker has said so on
    stderr (``casework-http: ready``). ``kill()`` ends it at once (SIGKILL), ``stop()``
    gracefully (SIGTERM)."""

    def __init__(self, config: Path, *, db: str | None = None, port: int | None = None,
                 workers: int = 1, scheduler: bool | None = None, timeout: float = 60.0,
                 env: dict[str, str] | None = None, extra: Sequence[str] = ()) -> None:
        self.port = port or free_port()
        self.workers = workers
        self.timeout = timeout
        args = [sys.executable, "-c", "from casework.cli import main; main()",
                "--config", str(config)]
        if db:
            args += ["--db", db]
        args += ["serve-http", "--port", str(self.port), "--workers", str(workers), *extra]
        if scheduler is not None:
            args.append("--scheduler" if scheduler else "--no-scheduler")
        self.args = args
        self.env = {**os.environ, **(env or {})}
        self.lines: list[str] = []
        self.proc: subprocess.Popen[str] | None = None
        self._ready = threading.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _read(self, stream: Any) -> None:
        from .server import READY

        seen = 0
        for line in stream:
            self.lines.append(line.rstrip("\n"))
            if line.startswith(READY):
                seen += 1
                if seen >= self.workers:
                    self._ready.set()
        self._ready.set()  # the process ended: wake the waiter, which sees it dead

    def start(self) -> ServerProcess:
        self.proc = subprocess.Popen(self.args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True, env=self.env,
                                     start_new_session=True)
        threading.Thread(target=self._read, args=(self.proc.stderr,), daemon=True).start()
        if not self._ready.wait(self.timeout) or self.proc.poll() is not None:
            self.kill()
            raise RuntimeError("casework serve-http did not start:\n" + "\n".join(self.lines[-30:]))
        return self

    def _signal(self, sig: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                pass

    def kill(self) -> None:
        """SIGKILL to the server and its workers (its own process group)."""
        self._signal(signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait(self.timeout)

    def stop(self) -> None:
        self._signal(signal.SIGTERM)
        if self.proc is not None:
            try:
                self.proc.wait(self.timeout)
            except subprocess.TimeoutExpired:
                self.kill()

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
