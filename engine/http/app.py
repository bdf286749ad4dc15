"""The ASGI application: :func:`create_app`.

Resources (every one behind a credential: see :mod:`casework.http.auth`):

    GET  /whoami                               the actor the credential names
    GET  /workflows                            the loaded workflows
    GET  /workflows/{workflow}                 one version (default: the newest) with its definition
    GET  /workflows/{workflow}/versions        the versions stored in the database
    GET  /workflows/{workflow}/diagram         Mermaid text with open/overdue counts per state
                                               (format=svg|png: a picture, the pictures extra)
    GET  /workflows/{workflow}/report          the figures of engine.report (format=csv: CSV)
    POST /workflows/{workflow}/cases           open a case                      Idempotency-Key
    GET  /cases                                search (501 until the engine has engine.cases)
    GET  /worklist                             the actor's worklist (501 until engine.worklist)
    GET  /cases/{id}                           the case (ETag: its row version)
    GET  /cases/{id}/history                   its events, oldest first
    GET  /cases/{id}/triggers                  what the actor may do now, and why not
    POST /cases/{id}/triggers/{trigger}        fire a trigger or an activity  Idempotency-Key, If-Match
    GET  /cases/{id}/deadlines                 its deadline clocks
    GET  /cases/{id}/timers                    its pending timer instants
    GET  /cases/{id}/timeline                  its timeline picture (png|svg, the pictures extra)
    POST /cases/{id}/what-if                   proposed commands and time, nothing written
    GET  /cases/{id}/verify, GET /verify       hash-chain problems (empty: intact)
    GET  /events                               notices as Server-Sent Events (Last-Event-ID resumes)
    POST/GET /webhooks, GET/DELETE /webhooks/{id}, GET /webhooks/{id}/deliveries

Operations: ``/healthz`` and ``/readyz`` (no credential, for probes), ``/metrics``
(a credential unless ``metrics_public``), ``/openapi.json`` and ``/docs`` (the schema, no
data: no credential).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import tempfile
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import orjson
from fastapi import Body, Depends, FastAPI, Header, Query, Request, Response
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse
from fastapi.security import HTTPBearer
from loguru import logger
from starlette.exceptions import HTTPException as StarletteHTTPException

from .. import CaseworkError, InvalidInput, MissingExtra, Proposal
from ..settings import HttpSettings
from ..types import Actor, Case
from .auth import Authenticator, AuthError
from .docs import docs_page
from .guard import Guard
from .models import (
    ActorOut,
    CaseOut,
    CasePageOut,
    DeadlineOut,
    DeliveryOut,
    DiagramOut,
    EventOut,
    Fire,
    HealthOut,
    NoticeOut,
    OpenCase,
    ProblemOut,
    ReportOut,
    TimerOut,
    TriggerOptionOut,
    VerifyOut,
    VersionsOut,
    WebhookCreated,
    WebhookIn,
    WebhookOut,
    WhatIfIn,
    WhatIfOut,
    WorkflowOut,
    WorkflowSummary,
)
from .notices import with_id
from .problems import PROBLEM_JSON, from_error, problem, validation_errors
from .service import Service

__all__ = ["create_app"]

_bearer = HTTPBearer(auto_error=False, description="a JWT or an API token")
Name = Annotated[str, PathParam(min_length=1, max_length=200)]
CaseId = Annotated[str, PathParam(min_length=1, max_length=200)]
IdemKey = Annotated[str | None, Header(alias="Idempotency-Key", min_length=1, max_length=200,
                                       description="the command is applied once for this key")]
IfMatch = Annotated[str | None, Header(alias="If-Match", max_length=100,
                                       description="the case's ETag as last read: a case that "
                                                   "moved on answers 412")]
WebhookId = Annotated[str, PathParam(min_length=1, max_length=64)]


def _actor(request: Request, _: Any = Depends(_bearer)) -> Actor:
    """The actor the request's credential names (401 without a valid one)."""
    svc: Service = request.app.state.casework
    return svc.auth.actor(request.headers.get("authorization"))


Who = Annotated[Actor, Depends(_actor)]


class JSON(JSONResponse):
    """JSON by orjson."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_NON_STR_KEYS, default=str)


class ProblemResponse(JSON):
    media_type = PROBLEM_JSON


class Refusal(Exception):
    """An engine error with the request's If-Match context, answered as a problem."""

    def __init__(self, error: CaseworkError, if_match: bool) -> None:
        self.error = error
        self.if_match = if_match


def _pairs(items: list[str], fields: dict[str, Any]) -> dict[str, Any]:
    """``FIELD=VALUE`` query parameters, each value read by its field's type."""
    out: dict[str, Any] = {}
    for item in items:
        field, eq, value = item.partition("=")
        if not eq or not field:
            raise Refusal(InvalidInput(f"where: {item[:80]!r} is not FIELD=VALUE"), False)
        spec = fields.get(field)
        out[field] = _typed(value, spec.type.value) if spec is not None else value
    return out


class Unsupported(Exception):
    """A route the engine cannot serve yet (501)."""

    def __init__(self, detail: str) -> None:
        self.detail = detail


def _problems(*codes: int) -> dict[int | str, dict[str, Any]]:
    text = {400: "malformed request", 401: "no valid credential", 403: "a role or scope refused it",
            404: "no such case, workflow or trigger", 409: "refused by a rule, or a conflict",
            412: "If-Match names a version the case is not at", 413: "body too large",
            422: "invalid input, query or key", 501: "needs an optional part or a later engine",
            503: "the database is unavailable (see Retry-After)"}
    return {c: {"description": text[c],
                "content": {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}}}
            for c in codes}


READ = _problems(400, 401, 404, 413, 422, 503)
COMMAND = _problems(400, 401, 403, 404, 409, 412, 413, 422, 503)
ETAG = {"ETag": {"description": "the case's row version", "schema": {"type": "string"}}}


def _etag(case: Case) -> str:
    return f'"{case.row_version}"'


def _if_match(value: str | None) -> int | None:
    """The row version an If-Match names (None for ``*`` or no header)."""
    if value is None or value.strip() == "*":
        return None
    m = re.fullmatch(r'\s*(?:W/)?"?(\d{1,12})"?\s*', value)
    if m is None:
        raise Refusal(InvalidInput("If-Match must be the case's ETag, e.g. \"3\""), False)
    return int(m.group(1))


def _typed(text: str, kind: str) -> Any:
    if kind == "int":
        with contextlib.suppress(ValueError):
            return int(text)
    elif kind == "number":
        with contextlib.suppress(ValueError):
            return float(text)
    elif kind == "bool":
        word = text.strip().lower()
        if word in {"true", "yes", "1"}:
            return True
        if word in {"false", "no", "0"}:
            return False
    return text


def create_app(engine: Any, settings: HttpSettings | None = None, *,
               authenticator: Authenticator | None = None, base_dir: Path | None = None,
               scheduler: bool | None = None, webhooks: bool = True,
               console: Any = True) -> FastAPI:
    """The HTTP API over ``engine`` (one :class:`casework.Engine`, shared by every request).

    ``settings``: the ``[http]`` section (:class:`casework.settings.HttpSettings`; defaults
    if None); ``authenticator``: how credentials are checked (default: from the settings'
    ``jwt`` and ``tokens``; ``base_dir`` resolves their relative key files). ``scheduler``:
    run the engine's scheduler while the app runs (default: the settings' ``scheduler``);
    ``webhooks``: run the webhook dispatcher. The app starts both in its lifespan; a host that
    mounts it inside its own app calls ``app.state.casework.start()`` and ``.stop()``.
    ``console``: mount the operator console at ``/console`` (True; or a
    :class:`casework.http.console.ConsoleOptions`; False: the API alone).
    """
    settings = settings or HttpSettings()
    auth = authenticator or Authenticator(settings.jwt, settings.tokens, base_dir=base_dir)
    svc = Service(engine, settings, auth, base_dir=base_dir, scheduler=scheduler,
                  webhooks=webhooks)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await asyncio.to_thread(svc.start)
        try:
            yield
        finally:
            await asyncio.to_thread(svc.stop)

    from importlib.metadata import PackageNotFoundError, version

    try:
        app_version = version("casework")
    except PackageNotFoundError:
        app_version = "0"
    app = FastAPI(title="casework", version=app_version, lifespan=lifespan,
                  docs_url=None, redoc_url=None, openapi_url="/openapi.json",
                  default_response_class=JSON,
                  description="Case lifecycles as declarative, durable state machines. The "
                              "actor comes from the credential; refusals are RFC 9457 problems "
                              "naming the rule that refused.")
    app.state.casework = svc

    # -- errors --------------------------------------------------------------------------
    def problem_response(request: Request, status: int, body: dict[str, Any],
                         headers: Mapping[str, str] | None = None) -> Response:
        return ProblemResponse(body, status_code=status, headers=dict(headers or {}))

    @app.exception_handler(Refusal)
    async def _refusal(request: Request, exc: Refusal) -> Response:
        status, body, headers = from_error(exc.error, instance=request.url.path,
                                           if_match=exc.if_match)
        return problem_response(request, status, body, headers)

    @app.exception_handler(CaseworkError)
    async def _engine_error(request: Request, exc: CaseworkError) -> Response:
        status, body, headers = from_error(exc, instance=request.url.path)
        return problem_response(request, status, body, headers)

    @app.exception_handler(AuthError)
    async def _auth_error(request: Request, exc: AuthError) -> Response:
        return problem_response(request, 401, problem(
            401, "unauthenticated", "No valid credential", exc.reason, instance=request.url.path,
            rule="authentication"), {"WWW-Authenticate": 'Bearer realm="casework"'})

    @app.exception_handler(Unsupported)
    async def _unsupported(request: Request, exc: Unsupported) -> Response:
        return problem_response(request, 501, problem(501, "not-implemented", "Not implemented yet",
                                                      exc.detail, instance=request.url.path,
                                                      rule="not implemented"))

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> Response:
        errors = validation_errors(exc.errors())
        actor = any(e["type"] == "extra_forbidden" and e["loc"][:2] == ["body", "actor"]
                    for e in errors)
        if actor:
            return problem_response(request, 422, problem(
                422, "actor-in-body", "The actor comes from the credential",
                "a request body may not name an actor: the credential says who acts",
                instance=request.url.path, rule="actor", errors=errors))
        return problem_response(request, 422, problem(
            422, "invalid-request", "The request does not match the API",
            "; ".join(f"{'.'.join(str(x) for x in e['loc'])}: {e['msg']}" for e in errors)[:1000],
            instance=request.url.path, rule="request", errors=errors))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        slug = {404: "not-found", 405: "method-not-allowed"}.get(exc.status_code, "http-error")
        return problem_response(request, exc.status_code, problem(
            exc.status_code, slug, str(exc.detail), instance=request.url.path),
            getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _bug(request: Request, exc: Exception) -> Response:
        logger.bind(case_id="-", workflow="-").opt(exception=exc).error(
            "unexpected error on {} {}", request.method, request.url.path)
        return problem_response(request, 500, problem(500, "internal", "Internal error",
                                                      "the server log says why",
                                                      instance=request.url.path))

    def case_json(case: Case, who: Actor, status: int = 200,
                  headers: Mapping[str, str] | None = None) -> Response:
        return JSON(svc.case_out(case, who), status_code=status,
                    headers={"ETag": _etag(case), **(headers or {})})

    def call(fn: Any, *args: Any, if_match: bool = False, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except CaseworkError as e:
            raise Refusal(e, if_match) from None

    def key_of(who: Actor, key: str | None) -> str | None:
        """A client's key, scoped to its actor (one client cannot replay, or learn of,
        another's command by guessing its key)."""
        return None if key is None else f"http:{who.id}:{key}"

    # -- operations ----------------------------------------------------------------------
    @app.get("/healthz", response_model=HealthOut, tags=["operations"])
    def healthz() -> Response:
        """The process answers."""
        return JSON({"status": "ok"})

    @app.get("/readyz", response_model=HealthOut, tags=["operations"],
             responses=_problems(503))
    def readyz() -> Response:
        """The database answers and its schema is the code's."""
        from sqlalchemy import text

        from ..persistence.migrate import current_revision, head_revision

        try:
            db = svc.metrics.db()
            with db.connect() as conn:
                conn.execute(text("SELECT 1"))
            current, head = current_revision(db), head_revision()
        except Exception as e:
            return ProblemResponse(problem(503, "not-ready", "Not ready",
                                           f"the database does not answer ({type(e).__name__})",
                                           instance="/readyz"),
                                   status_code=503, headers={"Retry-After": "2"})
        if current != head:
            return ProblemResponse(problem(503, "schema-behind", "Not ready",
                                           f"the database schema is at {current}, the code at "
                                           f"{head}: run casework db upgrade", instance="/readyz"),
                                   status_code=503, headers={"Retry-After": "30"})
        return JSON({"status": "ready", "backend": engine.backend, "schema_revision": current})

    def metrics_text() -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return Response(generate_latest(svc.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    metrics_doc: dict[int | str, dict[str, Any]] = {200: {
        "content": {"text/plain": {"schema": {"type": "string"}}},
        "description": "Prometheus text format"}}
    if settings.metrics_public:
        @app.get("/metrics", tags=["operations"], response_class=Response,
                 responses=metrics_doc)
        def metrics_open() -> Response:
            """Prometheus metrics."""
            return metrics_text()
    else:
        @app.get("/metrics", tags=["operations"], response_class=Response,
                 responses={**metrics_doc, **_problems(401)})
        def metrics_closed(who: Who) -> Response:
            """Prometheus metrics."""
            return metrics_text()

    if settings.docs:
        @app.get("/docs", include_in_schema=False)
        def docs() -> HTMLResponse:
            return HTMLResponse(docs_page(app.openapi()))

    @app.get("/whoami", response_model=ActorOut, tags=["operations"], responses=READ)
    def whoami(who: Who) -> Response:
        """The actor the credential names (id, roles, unit)."""
        return JSON({"id": who.id, "roles": sorted(who.roles), "unit": who.unit})

    # -- workflows -----------------------------------------------------------------------
    @app.get("/workflows", response_model=list[WorkflowSummary], tags=["workflows"],
             responses=READ)
    def workflows(who: Who) -> Response:
        """The newest loaded version of each workflow."""
        return JSON([{"name": w.name, "version": w.version, "title": w.title,
                      "states": list(w.states), "triggers": list(w.triggers),
                      "activities": list(w.activities)} for w in engine.workflows.values()])

    @app.get("/workflows/{workflow}", response_model=WorkflowOut, tags=["workflows"],
             responses=READ)
    def workflow(workflow: Name, who: Who,
                 version: Annotated[str | None, Query(max_length=200)] = None) -> Response:
        """One version of a workflow (the newest unless ``version`` is given), with its
        parsed definition."""
        return JSON(call(engine.workflow, workflow, version).to_dict())

    @app.get("/workflows/{workflow}/versions", response_model=VersionsOut, tags=["workflows"],
             responses=READ)
    def versions(workflow: Name, who: Who) -> Response:
        """The versions of the workflow stored in the database, oldest first."""
        latest = call(engine.workflow, workflow).version
        return JSON({"workflow": workflow, "latest": latest,
                     "versions": call(engine.workflow_versions, workflow)})

    @app.get("/workflows/{workflow}/diagram", response_model=DiagramOut, tags=["workflows"],
             responses={**READ, **_problems(501), 200: {"content": {
                 "application/json": {}, "image/svg+xml": {"schema": {"type": "string"}},
                 "image/png": {"schema": {"type": "string", "format": "binary"}}}}})
    def diagram(workflow: Name, who: Who,
                format: Literal["mermaid", "svg", "png"] = "mermaid",
                counts: bool = True) -> Response:
        """The state diagram with each state's open and overdue cases: Mermaid text (JSON),
        or an SVG or PNG picture (the ``pictures`` extra and Graphviz's ``dot``)."""
        from ..views import mermaid, render, render_with_counts

        wf = call(engine.workflow, workflow)
        by_state = call(engine.state_counts, workflow) if counts else {}
        if format == "mermaid":
            return JSON({"workflow": wf.name, "version": wf.version,
                         "mermaid": call(mermaid, wf.definition),
                         "counts": {s: {"open": o, "overdue": d} for s, (o, d) in by_state.items()}})
        with tempfile.TemporaryDirectory(prefix="casework-http-") as tmp:
            out = Path(tmp) / f"diagram.{format}"
            path = (call(render_with_counts, wf.definition, by_state, out, format) if counts
                    else call(render, wf.definition, out, format))
            data = Path(path).read_bytes()
        return Response(data, media_type="image/svg+xml" if format == "svg" else "image/png")

    @app.get("/workflows/{workflow}/report", response_model=ReportOut, tags=["reports"],
             responses={**READ, 200: {"content": {"application/json": {},
                                                  "text/csv": {"schema": {"type": "string"}}}}})
    def report(workflow: Name, who: Who,
               start: Annotated[str | None, Query(max_length=40, description="YYYY-MM-DD")] = None,
               end: Annotated[str | None, Query(max_length=40)] = None,
               by: Annotated[str | None, Query(max_length=200)] = None,
               where: Annotated[list[str] | None, Query(max_length=20,
                                                        description="FIELD=VALUE")] = None,
               format: Literal["json", "csv"] = "json",
               source: Literal["auto", "figures", "events"] = "auto") -> Response:
        """The figures the workflow declares for [start, end), as ``engine.report`` computes
        them (``where``: FIELD=VALUE, a value or a declared group; ``source``: the
        maintained figures, a count from the events, or ``auto``)."""
        wf = call(engine.workflow, workflow)
        filters = _pairs(where or [], dict(wf.fields))
        rep = call(engine.report, workflow, start=start, end=end, by=by, where=filters,
                   source=source)
        if format == "csv":
            return Response(rep.to_csv(), media_type="text/csv; charset=utf-8")
        return JSON(rep.as_dict())

    # -- cases ---------------------------------------------------------------------------
    @app.post("/workflows/{workflow}/cases", response_model=CaseOut, status_code=201,
              tags=["cases"], responses={**COMMAND, 201: {"headers": {
                  **ETAG, "Location": {"schema": {"type": "string"}}}}})
    def open_case(workflow: Name, who: Who, body: Annotated[OpenCase, Body()],
                  idempotency_key: IdemKey = None) -> Response:
        """Open a case of the workflow, as the credential's actor."""
        case = call(svc.command, "open", lambda: engine.open_case(
            workflow, body.data, actor=who, case_id=body.case_id,
            idempotency_key=key_of(who, idempotency_key)),
            {"casework.workflow": workflow, "casework.actor": who.id})
        return case_json(case, who, 201, {"Location": f"/cases/{case.id}"})

    @app.get("/cases", response_model=CasePageOut, tags=["cases"], responses=READ)
    def search(who: Who,
               workflow: Annotated[str | None, Query(max_length=64)] = None,
               state: Annotated[str | None, Query(max_length=128)] = None,
               unit: Annotated[str | None, Query(max_length=128)] = None,
               assignee: Annotated[str | None, Query(max_length=128)] = None,
               source: Annotated[str | None, Query(max_length=128)] = None,
               due_after: datetime | None = None, due_before: datetime | None = None,
               opened_after: datetime | None = None, opened_before: datetime | None = None,
               overdue: bool | None = None, at_risk: bool | None = None,
               min_escalation: Annotated[int | None, Query(ge=0, le=100)] = None,
               where: Annotated[list[str] | None, Query(max_length=20)] = None,
               include_closed: bool = False,
               sort: Annotated[str, Query(pattern="^(due|opened|updated)$")] = "due",
               cursor: Annotated[str | None, Query(max_length=500)] = None,
               limit: Annotated[int, Query(ge=1, le=500)] = 50,
               count: bool = False) -> Response:
        """Search the cases (open ones unless ``include_closed``), keyset-paged: ``cursor``
        from the page before. ``where=FIELD=VALUE`` filters on a field the definition
        declares searchable; personal fields are never searched by value."""
        known = (dict(call(engine.workflow, workflow).fields) if workflow else
                 {k: v for w in engine.workflows.values() for k, v in w.fields.items()})
        fields = _pairs(where or [], known)
        page = call(lambda: engine.cases(
            workflow=workflow, state=state, unit=unit, assignee=assignee, source=source,
            due_after=due_after, due_before=due_before, opened_after=opened_after,
            opened_before=opened_before, overdue=overdue, at_risk=at_risk,
            min_escalation=min_escalation, fields=fields, include_closed=include_closed,
            sort=sort, cursor=cursor, limit=limit, count=count))
        return JSON(page.to_dict(), headers={"Next-Cursor": page.cursor} if page.cursor else None)

    @app.get("/worklist", response_model=CasePageOut, tags=["cases"], responses=READ)
    def worklist(who: Who,
                 of: Annotated[str, Query(pattern="^(mine|unit|supervised)$")] = "mine",
                 unit: Annotated[list[str] | None, Query(max_length=50)] = None,
                 cursor: Annotated[str | None, Query(max_length=500)] = None,
                 limit: Annotated[int, Query(ge=1, le=500)] = 50) -> Response:
        """What the credential's actor can act on now, most urgent first, each with the
        steps it allows (``of=unit``: the actor's unit; ``of=supervised``: overdue and
        escalated cases of ``unit``)."""
        page = call(lambda: engine.worklist(who, of=of, units=unit, cursor=cursor, limit=limit))
        return JSON(page.to_dict(), headers={"Next-Cursor": page.cursor} if page.cursor else None)

    @app.get("/cases/{case_id}", response_model=CaseOut, tags=["cases"],
             responses={**READ, 200: {"headers": ETAG}})
    def get_case(case_id: CaseId, who: Who) -> Response:
        """The case as stored now; its ETag is its row version."""
        return case_json(call(engine.get_case, case_id), who)

    @app.get("/cases/{case_id}/history", response_model=list[EventOut], tags=["cases"],
             responses=READ)
    def history(case_id: CaseId, who: Who) -> Response:
        """The case's events, oldest first."""
        case = call(engine.get_case, case_id)
        return JSON(svc.events_out(case, call(engine.history, case_id), who))

    @app.get("/cases/{case_id}/triggers", response_model=list[TriggerOptionOut],
             tags=["cases"], responses=READ)
    def triggers(case_id: CaseId, who: Who) -> Response:
        """What the credential's actor may do on the case now, and for each refused option
        the rule that refuses it."""
        return JSON([o.to_dict() for o in call(engine.available_triggers, case_id, who)])

    @app.post("/cases/{case_id}/triggers/{trigger}", response_model=CaseOut, tags=["cases"],
              responses={**COMMAND, 200: {"headers": ETAG}})
    def fire(case_id: CaseId, trigger: Name, who: Who,
             body: Annotated[Fire | None, Body()] = None,
             idempotency_key: IdemKey = None, if_match: IfMatch = None) -> Response:
        """Fire a transition's trigger or an activity on the case, as the credential's actor.
        ``If-Match`` (the ETag as last read) refuses the write with 412 if the case moved on."""
        expected = _if_match(if_match)
        data = body.data if body is not None else {}
        case = call(svc.command, "fire", lambda: engine.fire(
            case_id, trigger, actor=who, data=data, expected_version=expected,
            idempotency_key=key_of(who, idempotency_key)),
            {"casework.case_id": case_id, "casework.trigger": trigger, "casework.actor": who.id},
            if_match=expected is not None)
        return case_json(case, who)

    @app.get("/cases/{case_id}/deadlines", response_model=list[DeadlineOut], tags=["cases"],
             responses=READ)
    def deadlines(case_id: CaseId, who: Who) -> Response:
        """The case's deadline clocks (durations in seconds)."""
        return JSON([d.to_dict() for d in call(engine.deadlines, case_id)])

    @app.get("/cases/{case_id}/timers", response_model=list[TimerOut], tags=["cases"],
             responses=READ)
    def timers(case_id: CaseId, who: Who) -> Response:
        """The case's timer instants that have not fired yet, soonest first."""
        return JSON([t.to_dict() for t in call(engine.pending_timers, case_id)])

    @app.get("/cases/{case_id}/timeline", tags=["cases"], response_class=Response,
             responses={**READ, **_problems(501), 200: {"content": {
                 "image/png": {"schema": {"type": "string", "format": "binary"}},
                 "image/svg+xml": {"schema": {"type": "string"}}},
                 "description": "the picture"}})
    def timeline(case_id: CaseId, who: Who, format: Literal["png", "svg"] = "png") -> Response:
        """The case's path through time (the ``pictures`` extra)."""
        try:
            from ..views import render_timeline
        except ImportError:
            raise Refusal(MissingExtra("timeline pictures", "pictures", "matplotlib"),
                          False) from None
        case = call(engine.get_case, case_id)
        described = call(engine.workflow, case.workflow, case.version)
        tz = described.tz
        pii = svc.pii(case.workflow, case.version)
        shown = case if svc.reads_pii(who, case.workflow) else case.masked(pii)
        with tempfile.TemporaryDirectory(prefix="casework-http-") as tmp:
            path = call(render_timeline, shown, call(engine.history, case_id, masked=True),
                        call(engine.pending_timers, case_id), Path(tmp) / f"timeline.{format}",
                        format, now=engine.clock.now(), tz=tz, definition=described.definition)
            data = Path(path).read_bytes()
        return Response(data, media_type="image/svg+xml" if format == "svg" else "image/png")

    @app.post("/cases/{case_id}/what-if", response_model=WhatIfOut, tags=["cases"],
              responses=COMMAND)
    def what_if(case_id: CaseId, who: Who, body: Annotated[WhatIfIn, Body()]) -> Response:
        """What the case would meet until ``until`` if the proposed commands were sent by the
        credential's actor, beside doing nothing; nothing is written."""
        def at(v: datetime | None) -> datetime | None:
            return None if v is None else (v if v.tzinfo else v.replace(tzinfo=UTC))

        proposals = [Proposal(p.trigger, who, dict(p.data), at(p.at))  # type: ignore[arg-type]
                     for p in body.proposals]
        until = at(body.until)
        assert until is not None
        result = call(engine.what_if, case_id, proposals, until=until)

        def outcome(o: Any) -> dict[str, Any]:
            return {"events": svc.events_out(o.case, list(o.events), who),
                    "case": svc.case_out(o.case, who),
                    "deadlines": [d.to_dict() for d in o.deadlines],
                    "pending": [t.to_dict() for t in o.pending],
                    "refused": None if o.refused is None else
                    {"trigger": o.refused[0].trigger, "reason": o.refused[1]}}

        return JSON({"until": result.until.isoformat(), "proposed": outcome(result.proposed),
                     "unchanged": outcome(result.unchanged)})

    @app.get("/cases/{case_id}/verify", response_model=VerifyOut, tags=["cases"],
             responses=READ)
    def verify_case(case_id: CaseId, who: Who) -> Response:
        """Problems in the case's hash chain (empty: intact)."""
        call(engine.get_case, case_id)
        problems = call(engine.verify, case_id)
        return JSON({"ok": not problems, "problems": problems})

    @app.get("/verify", response_model=VerifyOut, tags=["operations"], responses=READ)
    def verify_all(who: Who) -> Response:
        """Problems in every case's hash chain (empty: intact)."""
        problems = call(engine.verify)
        return JSON({"ok": not problems, "problems": problems})

    # -- notices -------------------------------------------------------------------------
    @app.get("/events", tags=["notices"], response_class=StreamingResponse,
             responses={**READ, 200: {"content": {"text/event-stream": {
                 "schema": {"type": "string"}}},
                 "description": "one message per notice: id, event (the notice's name), data "
                                "(a Notice, personal fields masked)"}})
    async def events(request: Request, who: Who,
                     notices: Annotated[list[str] | None, Query(max_length=9)] = None,
                     workflow: Annotated[str | None, Query(max_length=200)] = None,
                     after: Annotated[int | None, Query(ge=0)] = None,
                     timeout: Annotated[float, Query(gt=0, le=3600)] = 300.0,
                     last_event_id: Annotated[str | None, Header(alias="Last-Event-ID",
                                                                 max_length=30)] = None
                     ) -> StreamingResponse:
        """Notices as Server-Sent Events, from every process of the service. Resume after a
        break with ``Last-Event-ID`` (or ``after``); without either, the stream starts with
        the next notice. The stream ends after ``timeout`` seconds (clients reconnect)."""
        wanted = set(notices or ["*"])
        start = after
        if start is None and last_event_id is not None and last_event_id.strip().isdigit():
            start = int(last_event_id.strip())
        if start is None:
            start = await asyncio.to_thread(svc.store.last_notice_id)
        return StreamingResponse(_stream(request, start, wanted, workflow, timeout),
                                 media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    async def _stream(request: Request, last: int, wanted: set[str], workflow: str | None,
                      timeout: float) -> AsyncIterator[bytes]:
        loop = asyncio.get_running_loop()
        wake = asyncio.Event()

        def poke() -> None:
            loop.call_soon_threadsafe(wake.set)

        svc.store.on_new(poke)
        deadline = loop.time() + timeout
        quiet_since = loop.time()
        try:
            yield b"retry: 2000\n\n"
            while loop.time() < deadline:
                try:
                    rows = await asyncio.to_thread(svc.store.notices_after, last, 100)
                except CaseworkError:
                    rows = []
                for nid, name, wf, payload in rows:
                    last = nid
                    if ("*" in wanted or name in wanted) and (workflow is None or wf == workflow):
                        body = with_id(payload, nid)
                        yield f"id: {nid}\nevent: {name}\ndata: {body}\n\n".encode()
                        quiet_since = loop.time()
                if rows:
                    continue
                if await request.is_disconnected():
                    return
                if loop.time() - quiet_since > 15:
                    yield b": keep-alive\n\n"
                    quiet_since = loop.time()
                wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), min(settings.webhooks.poll_seconds,
                                                           max(0.01, deadline - loop.time())))
        finally:
            svc.store.off_new(poke)

    def _hook_or_404(wid: str, who: Actor) -> Any:
        hook = svc.store.webhook(wid)
        if hook is None or hook.owner != who.id:
            raise StarletteHTTPException(404, f"no webhook {wid!r} of yours")
        return hook

    @app.post("/webhooks", response_model=WebhookCreated, status_code=201, tags=["notices"],
              responses=_problems(400, 401, 413, 422, 503))
    def add_webhook(who: Who, body: Annotated[WebhookIn, Body()]) -> Response:
        """Subscribe a URL to notices; the answer holds the signing secret, shown this once.
        Each delivery is a POST of a Notice, signed ``Casework-Signature: t=<unix>,v1=<hex
        HMAC-SHA256 of "<t>.<body>">``, retried with backoff until the receiver answers 2xx."""
        parts = urlsplit(body.url)
        allowed = settings.webhooks.allowed_hosts
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise Refusal(InvalidInput("the webhook url must be http(s)://host/..."), False)
        if allowed and parts.hostname not in allowed:
            raise Refusal(InvalidInput(f"webhooks may go only to {', '.join(allowed)}"), False)
        if body.workflow is not None:
            call(engine.workflow, body.workflow)
        hook = svc.store.add_webhook(body.url, body.notices, body.workflow, body.description,
                                     who.id)
        return JSON({**hook.public(), "secret": hook.secret}, status_code=201,
                    headers={"Location": f"/webhooks/{hook.id}"})

    @app.get("/webhooks", response_model=list[WebhookOut], tags=["notices"], responses=READ)
    def list_webhooks(who: Who) -> Response:
        """The actor's subscriptions."""
        return JSON([w.public() for w in svc.store.webhooks(owner=who.id)])

    @app.get("/webhooks/{webhook_id}", response_model=WebhookOut, tags=["notices"],
             responses=READ)
    def get_webhook(webhook_id: WebhookId, who: Who) -> Response:
        return JSON(_hook_or_404(webhook_id, who).public())

    @app.delete("/webhooks/{webhook_id}", status_code=204, tags=["notices"],
                response_class=Response, responses=READ)
    def delete_webhook(webhook_id: WebhookId, who: Who) -> Response:
        """Unsubscribe; pending deliveries are dropped (and recorded so)."""
        _hook_or_404(webhook_id, who)
        svc.store.remove_webhook(webhook_id)
        return Response(status_code=204)

    @app.get("/webhooks/{webhook_id}/deliveries", response_model=list[DeliveryOut],
             tags=["notices"], responses=READ)
    def deliveries(webhook_id: WebhookId, who: Who,
                   status: Literal["pending", "delivered", "failed"] | None = None,
                   limit: Annotated[int, Query(ge=1, le=500)] = 100) -> Response:
        """The subscription's deliveries, newest first, with their last attempt."""
        _hook_or_404(webhook_id, who)
        return JSON(svc.store.deliveries(webhook_id, limit, status))

    # -- the schema ----------------------------------------------------------------------
    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version,
                                 openapi_version=app.openapi_version,
                                 description=app.description, routes=app.routes)
            comps = schema.setdefault("components", {}).setdefault("schemas", {})
            comps["Problem"] = ProblemOut.model_json_schema(
                ref_template="#/components/schemas/{model}")
            comps["Notice"] = NoticeOut.model_json_schema(
                ref_template="#/components/schemas/{model}")
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    if console is not False:
        from .console import ConsoleOptions, mount_console

        try:
            mount_console(app, svc, console if isinstance(console, ConsoleOptions) else None)
        except ImportError as e:  # an install of the server extra from before the console
            logger.bind(case_id="-", workflow="-").warning(
                "the console is not served: {} is missing (pip install 'casework[server]')",
                e.name or "jinja2")
    app.add_middleware(Guard, max_body=settings.max_body_bytes,
                       max_depth=settings.max_json_depth, metrics=svc.metrics)
    return app
