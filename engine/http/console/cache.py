"""Slow answers computed once and kept a while: reports, and what needs a scan.

A report over a large history takes seconds (one SQL aggregate per figure over every
event), far longer than a page may take. So a page asks this cache: a fresh answer is
handed over at once; a missing one is computed in a background thread while the page
waits a moment (``wait``), and if it is not done by then the page shows that it is being
computed and fetches it when it is (htmx polls the fragment). An answer older than
``ttl`` is handed over with its age while a new one is computed; ``fresh`` asks for a new
one now. One computation runs at a time, so a burst of pages does not start a burst of
reports.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Any

__all__ = ["Answer", "SlowCache"]


@dataclass(frozen=True)
class Answer:
    """What the cache has for a key: the value (None: not yet), when it was computed (a
    ``time.time()``), whether a computation is running, and the error it ended in."""

    value: Any
    computed_at: float | None
    running: bool
    error: BaseException | None = None

    @property
    def ready(self) -> bool:
        return self.value is not None or self.error is not None


class SlowCache:
    def __init__(self, ttl: float = 60.0, size: int = 64) -> None:
        self.ttl = ttl
        self.size = size
        self._done: dict[Hashable, tuple[float, Any, BaseException | None]] = {}
        self._running: dict[Hashable, Future[Any]] = {}
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="console-cache")

    def get(self, key: Hashable, compute: Callable[[], Any], *, wait: float = 0.0,
            fresh: bool = False) -> Answer:
        with self._lock:
            done = self._done.get(key)
            stale = done is None or fresh or time.time() - done[0] > self.ttl
            job = self._running.get(key)
            if stale and job is None:
                job = self._pool.submit(self._run, key, compute)
                self._running[key] = job
        if job is not None and (done is None or fresh) and wait > 0:
            try:
                job.result(timeout=wait)
            except FutureTimeout:
                pass
            except Exception:
                pass
        with self._lock:
            done = self._done.get(key)
            running = key in self._running
        if done is None:
            return Answer(None, None, running)
        return Answer(done[1], done[0], running, done[2])

    def peek(self, key: Hashable) -> Any:
        """The value computed for ``key``, however old (None: none), computing nothing."""
        with self._lock:
            done = self._done.get(key)
        return None if done is None else done[1]

    def _run(self, key: Hashable, compute: Callable[[], Any]) -> Any:
        try:
            value, error = compute(), None
        except Exception as e:
            value, error = None, e
        with self._lock:
            self._done[key] = (time.time(), value, error)
            self._running.pop(key, None)
            while len(self._done) > self.size:
                self._done.pop(next(iter(self._done)))
        return value

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
