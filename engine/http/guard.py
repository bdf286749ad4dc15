"""The ASGI layer in front of the routes: bounded bodies, JSON checked before FastAPI reads
it, every request counted.

A body longer than ``max_body_bytes`` is refused with 413 before it is read whole; a JSON
body that is malformed, nests deeper than ``max_json_depth``, or holds NaN, infinity or a
number too large for a double is refused with 400 (FastAPI's own parser would accept NaN
and could fail on deep nesting or huge integers). Whatever a request holds, the answer is a
problem document, never a 500, and the server goes on serving.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import orjson

from .metrics import Metrics
from .problems import PROBLEM_JSON, problem

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def depth_of(value: Any, limit: int) -> int:
    """How deep ``value`` nests (stops counting past ``limit``)."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        v, d = stack.pop()
        if d > deepest:
            deepest = d
            if deepest > limit:
                return deepest
        if isinstance(v, dict):
            stack.extend((x, d + 1) for x in v.values())
        elif isinstance(v, list):
            stack.extend((x, d + 1) for x in v)
    return deepest


async def send_problem(send: Send, status: int, body: dict[str, Any],
                       headers: dict[str, str] | None = None) -> None:
    data = orjson.dumps(body)
    raw = [(b"content-type", PROBLEM_JSON.encode()), (b"content-length", str(len(data)).encode())]
    raw += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": data})


class Guard:
    """Pure ASGI middleware (no buffering of responses, so event streams flow)."""

    def __init__(self, app: ASGIApp, *, max_body: int, max_depth: int, metrics: Metrics) -> None:
        self.app = app
        self.max_body = max_body
        self.max_depth = max_depth
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status_seen = [500]

        async def counting_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                status_seen[0] = int(message["status"])
            await send(message)

        try:
            await self._handle(scope, receive, counting_send)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", None) or "unmatched"
            method = scope.get("method", "")
            self.metrics.requests.labels(method, path, str(status_seen[0])).inc()
            self.metrics.latency.labels(method, path).observe(time.perf_counter() - started)

    async def _handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        instance = scope.get("path")
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None:
            try:
                n = int(declared)
            except ValueError:
                await send_problem(send, 400, problem(400, "bad-request", "Malformed request",
                                                      "Content-Length is not a number",
                                                      instance=instance))
                return
            if n > self.max_body:
                await send_problem(send, 413, problem(
                    413, "body-too-large", "The request body is too large",
                    f"the body may hold at most {self.max_body} bytes", instance=instance))
                return
        method = scope.get("method", "GET")
        if method in ("GET", "HEAD", "DELETE", "OPTIONS") and declared in (None, b"0"):
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                await send_problem(send, 413, problem(
                    413, "body-too-large", "The request body is too large",
                    f"the body may hold at most {self.max_body} bytes", instance=instance))
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        ctype = headers.get(b"content-type", b"").split(b";", 1)[0].strip().lower()
        if body.strip() and (ctype == b"application/json" or ctype.endswith(b"+json")):
            why = self._json_problem(body)
            if why is not None:
                await send_problem(send, 400, problem(400, "malformed-json",
                                                      "The body is not acceptable JSON", why,
                                                      instance=instance))
                return
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    def _json_problem(self, body: bytes) -> str | None:
        try:
            value = orjson.loads(body)
        except orjson.JSONDecodeError as e:
            msg = str(e).split(":", 1)[0]
            return f"not valid JSON ({msg}); NaN, infinity and numbers beyond a double are refused"
        if depth_of(value, self.max_depth) > self.max_depth:
            return f"the JSON nests deeper than {self.max_depth} levels"
        return None
