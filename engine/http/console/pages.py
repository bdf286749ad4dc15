"""The console's routes: :class:`Console` builds the app mounted at ``/console``.

Every page needs a signed-in viewer (else: the sign-in page, or for a POST a 401 page
saying nothing was written); every POST also needs the session's CSRF token (else 403,
nothing run). What a page shows of a case is masked unless the viewer holds a role
``[http.pii_readers]`` names for its workflow, and no page, error pages included, echoes
a personal value back: a refused form is shown again without what was typed into its
personal fields. Work is the engine's: the console calls its public API only.
"""

from __future__ import annotations

import hmac
import secrets
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from datetime import UTC, date, datetime
from datetime import time as dtime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode
from zoneinfo import ZoneInfo

import jinja2
from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse
from loguru import logger
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from ... import CaseNotFound, CaseworkError, CommandRefused, InvalidQuery, MissingExtra
from ...types import MASK, Actor, Case, Event
from ...views.fonts import cjk_font_file
from ...views.labels import Labels
from ..auth import AuthError
from ..problems import from_error, rule_of
from ..service import Service
from .cache import Answer, SlowCache
from .fontslice import FontSlice
from .forms import Input, field_input, opening_inputs, parse, step_inputs
from .options import ConsoleOptions
from .present import local, span, urgency, value_text
from .sessions import Session, SessionStore, digest

COOKIE = "casework_session"
SIGNIN_COOKIE = "casework_signin"
STATIC = Path(__file__).parent / "static"
_STATIC_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8",
                 ".txt": "text/plain; charset=utf-8"}
_NOT_TRIED = {"role", "scope"}  # refusals a viewer cannot get past by trying: no button


class SignedOut(Exception):
    """No live session."""


class CsrfRefused(Exception):
    """A POST without the session's CSRF token (or from another origin)."""


class _Pictures:
    """Recently drawn pictures, by what they show (a case's row version, the counts)."""

    def __init__(self, size: int = 128) -> None:
        self._items: OrderedDict[Any, bytes] = OrderedDict()
        self._lock = threading.Lock()
        self.size = size

    def get(self, key: Any, draw: Callable[[], bytes]) -> bytes:
        with self._lock:
            got = self._items.get(key)
            if got is not None:
                self._items.move_to_end(key)
                return got
        data = draw()
        with self._lock:
            self._items[key] = data
            while len(self._items) > self.size:
                self._items.popitem(last=False)
        return data


class Console:
    """The console over one :class:`~casework.http.service.Service`."""

    def __init__(self, svc: Service, options: ConsoleOptions) -> None:
        self.svc = svc
        self.engine = svc.engine
        self.options = options
        self.prefix = options.prefix.rstrip("/")
        self.sessions = SessionStore(svc.store.engine, svc.store.backend,
                                     hours=options.session_hours,
                                     idle_minutes=options.idle_minutes)
        self.tokens = {t.sha256.lower(): Actor.parse(t.actor) for t in svc.settings.tokens}
        self.reports = SlowCache(ttl=options.report_ttl)
        self.pictures = _Pictures()
        self._labels: dict[tuple[str, str], Labels] = {}
        self._tz: dict[str, ZoneInfo] = {}
        env = jinja2.Environment(
            loader=jinja2.PackageLoader("casework.http.console", "templates"),
            autoescape=jinja2.select_autoescape(["html"]), trim_blocks=True, lstrip_blocks=True,
            undefined=jinja2.StrictUndefined)
        env.globals.update(P=self.prefix, local=local, span=span, urgency=urgency,
                           value_text=value_text, labels_of=self.labels_of, MASK=MASK, tz_of=self.tz,
                           qs=self._qs)
        self.env = env
        self.static_version = str(int(max(p.stat().st_mtime for p in STATIC.iterdir())))
        self.font_slice = FontSlice()

    # -- helpers -------------------------------------------------------------------------
    def labels_of(self, workflow: str, version: str | None = None) -> Labels:
        key = (workflow, version or "")
        got = self._labels.get(key)
        if got is None:
            try:
                got = Labels(self.engine.workflow(workflow, version).definition)
            except CaseworkError:
                got = Labels(None)
            self._labels[key] = got
        return got

    @staticmethod
    def _qs(params: Mapping[str, Any], **changes: Any) -> str:
        merged = {**{k: v for k, v in params.items() if v not in (None, "")}, **changes}
        return urlencode({k: v for k, v in merged.items() if v not in (None, "")})

    def viewer(self, request: Request) -> Session | None:
        s = self.sessions.get(request.cookies.get(COOKIE))
        if s is None:
            return None
        if s.kind == "token" and self.tokens.get(s.credential) != s.actor:
            return None  # the token was taken out of the settings (or now names another)
        return s

    def need(self, request: Request) -> Session:
        s = self.viewer(request)
        if s is None:
            raise SignedOut()
        return s

    def checked(self, request: Request, form: Mapping[str, str]) -> Session:
        """The viewer of a POST, once its session and CSRF token are checked."""
        s = self.need(request)
        origin = request.headers.get("origin")
        # The host the browser says it posts from must be this one (the scheme is left out:
        # behind a proxy that ends TLS, the app sees http).
        if origin is not None and origin != "null" and \
                origin.partition("://")[2].rstrip("/") != request.headers.get("host", ""):
            raise CsrfRefused()
        given = form.get("csrf") or request.headers.get("x-csrf-token")
        if not self.sessions.csrf_ok(s, given):
            raise CsrfRefused()
        return s

    def render(self, request: Request, name: str, viewer: Session | None, status: int = 200,
               headers: Mapping[str, str] | None = None, **ctx: Any) -> HTMLResponse:
        t = self.env.get_template(name)
        html = t.render(request=request, viewer=viewer, actor=viewer.actor if viewer else None,
                        csrf=viewer.csrf if viewer else "", sv=self.static_version,
                        path=request.url.path, **ctx)
        return HTMLResponse(html, status_code=status, headers={
            "Cache-Control": "no-store", "X-Frame-Options": "DENY",
            "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; "
                                       "style-src 'self'; script-src 'self'; "
                                       "frame-ancestors 'none'; form-action 'self'",
            "Referrer-Policy": "same-origin", **(headers or {})})

    def cookie_secure(self, request: Request) -> bool:
        if self.options.secure_cookie is not None:
            return self.options.secure_cookie
        return request.url.scheme == "https"

    def reads_pii(self, actor: Actor, workflow: str) -> bool:
        return self.svc.reads_pii(actor, workflow)

    def now(self) -> datetime:
        now: datetime = self.engine.clock.now()
        return now

    def tz(self, workflow: str | None = None) -> ZoneInfo:
        got = self._tz.get(workflow or "")
        if got is None:
            got = self._tz[workflow or ""] = self._tz_of(workflow)
        return got

    def _tz_of(self, workflow: str | None) -> ZoneInfo:
        try:
            if workflow:
                tz: ZoneInfo = self.engine.workflow(workflow).tz
                return tz
            first = next(iter(self.engine.workflows.values()), None)
            return first.tz if first is not None else ZoneInfo("UTC")
        except CaseworkError:
            return ZoneInfo("UTC")

    # -- the app -------------------------------------------------------------------------
    def app(self) -> FastAPI:
        app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None,
                      title="casework console")
        P = self.prefix

        def to_sign_in(request: Request) -> Response:
            nxt = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            url = f"{P}/sign-in?{urlencode({'next': nxt})}"
            if request.headers.get("hx-request"):
                return Response(status_code=401, headers={"HX-Redirect": url})
            return RedirectResponse(url, status_code=303)

        @app.exception_handler(SignedOut)
        async def _signed_out(request: Request, exc: SignedOut) -> Response:
            if request.method == "GET":
                return to_sign_in(request)
            return self.render(request, "error.html", None, 401, title="已退出 Signed out",
                               message="You are not signed in (or your session ended): nothing "
                                       "was written. Sign in and try again.", rule="session",
                               headers={"HX-Redirect": f"{P}/sign-in"}
                               if request.headers.get("hx-request") else None)

        @app.exception_handler(CsrfRefused)
        async def _csrf(request: Request, exc: CsrfRefused) -> Response:
            return self.render(request, "error.html", None, 403, title="拒绝 Refused",
                               message="The form did not carry this session's token (or came "
                                       "from another site): nothing was written. Reload the "
                                       "page and try again.", rule="csrf")

        @app.exception_handler(CaseworkError)
        async def _engine_error(request: Request, exc: CaseworkError) -> Response:
            status, body, _ = from_error(exc, instance=request.url.path)
            viewer = await run_in_threadpool(self.viewer, request)
            return self.render(request, "error.html", viewer, status, title=body["title"],
                               message=body.get("detail") or "", rule=body.get("rule") or "")

        @app.exception_handler(StarletteHTTPException)
        async def _http(request: Request, exc: StarletteHTTPException) -> Response:
            viewer = await run_in_threadpool(self.viewer, request)
            title = {404: "找不到 Not found", 405: "Method not allowed"}.get(
                exc.status_code, "Error")
            return self.render(request, "error.html", viewer, exc.status_code, title=title,
                               message=str(exc.detail) if exc.status_code != 404 else
                               "There is no such page.", rule="")

        @app.exception_handler(RequestValidationError)
        async def _invalid(request: Request, exc: RequestValidationError) -> Response:
            # Never the values sent: only where the request is wrong.
            where = sorted({".".join(str(x) for x in e.get("loc", ())) for e in exc.errors()})
            return self.render(request, "error.html", None, 422, title="无效请求 Invalid request",
                               message="The request is not valid: " + ", ".join(where)[:300],
                               rule="request")

        @app.exception_handler(Exception)
        async def _bug(request: Request, exc: Exception) -> Response:
            logger.bind(case_id="-", workflow="-").opt(exception=exc).error(
                "console: unexpected error on {} {}", request.method, request.url.path)
            return self.render(request, "error.html", None, 500, title="内部错误 Internal error",
                               message="Something went wrong; the server log says why. "
                                       "Nothing was shown that should not be.", rule="")

        async def form_of(request: Request) -> dict[str, str]:
            ctype = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
            body = await request.body()
            if ctype not in ("application/x-www-form-urlencoded", ""):
                return {}
            form: dict[str, str] = {}
            for k, v in parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True,
                                  max_num_fields=1000):
                form.setdefault(k, v)
            return form

        # -- static ----------------------------------------------------------------------
        @app.get("/static/cjk.otf")
        def font() -> Response:
            path = cjk_font_file()
            if path is None:
                raise StarletteHTTPException(404)
            return FileResponse(path, media_type="font/otf",
                                headers={"Cache-Control": "public, max-age=604800"})

        @app.get("/static/cjk-slice.otf")
        def font_slice() -> Response:
            path = self.font_slice.current()
            if path is None:
                raise StarletteHTTPException(404)
            made = path == self.font_slice.path
            return FileResponse(path, media_type="font/otf", headers={
                "Cache-Control": f"public, max-age={604800 if made else 60}"})

        @app.get("/static/{name}")
        def static(name: str) -> Response:
            path = STATIC / name
            if "/" in name or name.startswith(".") or not path.is_file():
                raise StarletteHTTPException(404)
            return Response(path.read_bytes(), media_type=_STATIC_TYPES.get(
                path.suffix, "application/octet-stream"),
                headers={"Cache-Control": "public, max-age=86400"})

        # -- signing in and out ----------------------------------------------------------
        def safe_next(value: str | None) -> str:
            if value and value.startswith(P + "/") and not value.startswith("//") \
                    and "\\" not in value and "/sign-" not in value:
                return value
            return f"{P}/worklist"

        def sign_in_page(request: Request, status: int = 200, error: str | None = None,
                         nxt: str | None = None) -> Response:
            nonce = secrets.token_urlsafe(18)
            resp = self.render(request, "sign_in.html", None, status, error=error,
                               signin_token=self.sessions.sign("signin:" + nonce),
                               next=safe_next(nxt), jwt=self.svc.settings.jwt is not None)
            resp.set_cookie(SIGNIN_COOKIE, self.sessions.sign(nonce), max_age=1800,
                            path=P, httponly=True, samesite="strict",
                            secure=self.cookie_secure(request))
            return resp

        @app.get("/")
        def home() -> Response:
            return RedirectResponse(f"{P}/worklist", status_code=303)

        @app.get("/sign-in")
        def sign_in(request: Request) -> Response:
            if self.viewer(request) is not None:
                return RedirectResponse(safe_next(request.query_params.get("next")), 303)
            return sign_in_page(request, nxt=request.query_params.get("next"))

        @app.post("/sign-in")
        async def sign_in_post(request: Request) -> Response:
            form = await form_of(request)
            return await run_in_threadpool(do_sign_in, request, form)

        def do_sign_in(request: Request, form: dict[str, str]) -> Response:
            nonce = self.sessions.unsign(request.cookies.get(SIGNIN_COOKIE))
            want = self.sessions.sign("signin:" + nonce) if nonce else None
            if want is None or not hmac.compare_digest(want, form.get("csrf", "")):
                raise CsrfRefused()
            credential = form.get("credential", "").strip()
            try:
                actor = self.svc.auth.actor(f"Bearer {credential}")
            except AuthError as e:
                return sign_in_page(request, 401, e.reason, form.get("next"))
            kind, expires = "token", None
            if credential.count(".") == 2 and self.svc.settings.jwt is not None:
                import jwt as pyjwt

                kind = "jwt"
                claims = pyjwt.decode(credential, options={"verify_signature": False})
                expires = datetime.fromtimestamp(float(claims["exp"]), UTC)
            cookie, _ = self.sessions.open(actor, kind, credential, expires)
            resp = RedirectResponse(safe_next(form.get("next")), status_code=303)
            resp.set_cookie(COOKIE, cookie, max_age=int(self.sessions.lifetime.total_seconds()),
                            path=P, httponly=True, samesite="strict",
                            secure=self.cookie_secure(request))
            resp.delete_cookie(SIGNIN_COOKIE, path=P)
            return resp

        @app.post("/sign-out")
        async def sign_out(request: Request) -> Response:
            form = await form_of(request)

            def run() -> Response:
                s = self.checked(request, form)
                self.sessions.end(s)
                resp = RedirectResponse(f"{P}/sign-in", status_code=303)
                resp.delete_cookie(COOKIE, path=P)
                return resp

            return await run_in_threadpool(run)

        # -- worklists -------------------------------------------------------------------
        @app.get("/worklist")
        def worklist(request: Request) -> Response:
            s = self.need(request)
            q = request.query_params
            of = q.get("of", "mine")
            if of not in ("mine", "unit", "overdue"):
                of = "mine"
            cursor = q.get("cursor") or None
            actor = s.actor
            note = None
            page = None
            limit = self.options.page_size
            if of == "unit" and not actor.unit:
                note = f"{actor.id} belongs to no unit: there is no unit worklist."
            elif of == "overdue":
                page = self.engine.worklist(actor, of="supervised", cursor=cursor, limit=limit,
                                            units=[actor.unit] if actor.unit else None)
            else:
                page = self.engine.worklist(actor, of=of, cursor=cursor, limit=limit)
            ctx: dict[str, Any] = {"of": of, "page": page, "note": note, "now": self.now(),
                                   "worklist": True,
                   "more_url": f"{P}/worklist?{self._qs({'of': of}, cursor=page.cursor)}"
                   if page is not None and page.cursor else None}
            if request.headers.get("hx-request") and q.get("part") == "rows":
                return self.render(request, "_case_rows.html", s, **ctx)
            return self.render(request, "worklist.html", s, **ctx)

        # -- search ----------------------------------------------------------------------
        def search_filters(q: Mapping[str, str]) -> tuple[dict[str, Any], dict[str, str]]:
            """engine.cases keyword arguments from the query, and the query as given."""
            given = {k: v for k, v in q.items() if v != "" and k != "part"}
            wf_name = given.get("workflow") or None
            tz = self.tz(wf_name)
            args: dict[str, Any] = {}
            for key in ("workflow", "state", "unit", "assignee", "source"):
                if given.get(key):
                    args[key] = given[key]
            for key in ("due_after", "due_before", "opened_after", "opened_before"):
                if given.get(key):
                    args[key] = _day(given[key], tz, key)
            for key in ("overdue", "at_risk"):
                if given.get(key) in ("yes", "no"):
                    args[key] = given[key] == "yes"
            if given.get("min_escalation"):
                try:
                    args["min_escalation"] = int(given["min_escalation"])
                except ValueError:
                    raise InvalidQuery("min_escalation: a whole number from 0 to 100") from None
            fields: dict[str, Any] = {}
            for key, v in given.items():
                if key.startswith("w."):
                    fields[key[2:]] = _search_value(self.engine, wf_name, key[2:], v)
            if fields:
                args["fields"] = fields
            args["include_closed"] = given.get("closed") == "on"
            args["sort"] = given.get("sort", "due") if given.get("sort") in (
                "due", "opened", "updated") else "due"
            if given.get("cursor"):
                args["cursor"] = given["cursor"]
            args["limit"] = self.options.page_size
            args["count"] = not given.get("cursor")
            return args, given

        @app.get("/search")
        def search(request: Request) -> Response:
            s = self.need(request)
            q = request.query_params
            args, given = search_filters(dict(q))
            wf_name = given.get("workflow") or None
            page, error = None, None
            asked = any(k != "sort" for k in given) or q.get("go") == "1"
            if asked:
                try:
                    page = self.engine.cases(**args)
                except InvalidQuery as e:
                    error = str(e)
            more = None
            if page is not None and page.cursor:
                more = f"{P}/search?{self._qs(given, cursor=page.cursor)}"
            ctx: dict[str, Any] = {"page": page, "error": error, "given": given, "now": self.now(),
                                   "worklist": False, "more_url": more,
                                   "choices": search_choices(wf_name)}
            if request.headers.get("hx-request") and q.get("part") == "rows":
                return self.render(request, "_case_rows.html", s, **ctx)
            if request.headers.get("hx-request") and q.get("part") == "results":
                return self.render(request, "_search_results.html", s,
                                   status=422 if error else 200, **ctx)
            return self.render(request, "search.html", s, status=422 if error else 200, **ctx)

        def search_choices(wf_name: str | None) -> dict[str, Any]:
            workflows = self.engine.workflows
            wf = workflows.get(wf_name) if wf_name else None
            if wf is None and len(workflows) == 1:
                wf = next(iter(workflows.values()))
            states: list[tuple[str, str]] = []
            where: list[Input] = []
            sources: list[tuple[str, str]] = []
            if wf is not None:
                lab = self.labels_of(wf.name, wf.version)
                paths: list[str] = []
                for leaf in wf.states:
                    parts = leaf.split(".")
                    for i in range(1, len(parts) + 1):
                        p = ".".join(parts[:i])
                        if p not in paths:
                            paths.append(p)
                states = [(p, lab.state_path(p)) for p in paths]
                where = [field_input(f, wf.fields.get(f), False, lab) for f in wf.definition.search
                         if f != "source"]
                src = wf.fields.get("source")
                if src is not None and src.values:
                    sources = [(v, src.value_labels.get(v, v)) for v in src.values]
            return {"workflows": [(w.name, w.title or w.name) for w in workflows.values()],
                    "states": states, "where": where, "sources": sources,
                    "workflow": wf.name if wf is not None else None}

        # -- opening a case --------------------------------------------------------------
        @app.get("/open")
        def open_choose(request: Request) -> Response:
            s = self.need(request)
            mine = [w for w in self.engine.workflows.values()
                    if not w.definition.open.roles or set(w.definition.open.roles) & s.actor.roles]
            if len(mine) == 1:
                return RedirectResponse(f"{P}/open/{mine[0].name}", status_code=303)
            return self.render(request, "open_choose.html", s,
                               workflows=list(self.engine.workflows.values()), mine=mine)

        def open_page(request: Request, s: Session, workflow: str, status: int = 200,
                      refusal: dict[str, Any] | None = None,
                      prefill: Mapping[str, str] | None = None) -> Response:
            wf = self.engine.workflow(workflow)
            return self.render(request, "open.html", s, status, wf=wf,
                               L=self.labels_of(wf.name, wf.version),
                               inputs=opening_inputs(wf.definition), refusal=refusal,
                               prefill=prefill or {}, idem=secrets.token_urlsafe(12))

        @app.get("/open/{workflow}")
        def open_form(request: Request, workflow: str) -> Response:
            s = self.need(request)
            return open_page(request, s, workflow)

        @app.post("/open/{workflow}")
        async def open_post(request: Request, workflow: str) -> Response:
            form = await form_of(request)

            def run() -> Response:
                s = self.checked(request, form)
                wf = self.engine.workflow(workflow)
                inputs = opening_inputs(wf.definition)
                data = parse(inputs, form, wf.tz)
                key = _idem(s.actor, form)
                try:
                    case = self.svc.command("open", lambda: self.engine.open_case(
                        workflow, data, actor=s.actor, idempotency_key=key),
                        {"casework.workflow": workflow, "casework.actor": s.actor.id})
                except CaseworkError as e:
                    status, refusal = _refusal(e, "open")
                    return open_page(request, s, workflow, status, refusal,
                                     _prefill(inputs, form))
                return RedirectResponse(f"{P}/cases/{case.id}?done=open", status_code=303)

            return await run_in_threadpool(run)

        # -- a case ----------------------------------------------------------------------
        def case_page(request: Request, s: Session, case_id: str, status: int = 200,
                      refusal: dict[str, Any] | None = None,
                      prefill: Mapping[str, str] | None = None) -> Response:
            case = self.engine.get_case(case_id)
            wf = self.engine.workflow(case.workflow, case.version)
            reads = self.reads_pii(s.actor, case.workflow)
            shown: Case = case if reads else case.masked(wf.pii)
            events: list[Event] = self.engine.history(case_id)
            if not reads:
                events = [e.masked(wf.pii) for e in events]
            options = self.engine.available_triggers(case_id, s.actor)
            spec = wf.definition
            actions: list[dict[str, Any]] = []
            refused: list[dict[str, Any]] = []
            for o in options:
                inputs = step_inputs(spec, o.kind, o.name, case.state)
                rule = (o.reason or "").partition("]")[0].lstrip("[") if o.reason else ""
                item = {"option": o, "inputs": inputs, "rule": rule,
                        "tryable": o.allowed or rule not in _NOT_TRIED}
                (actions if o.allowed else refused).append(item)
            L = self.labels_of(case.workflow, case.version)
            fields = [(name, f) for name, f in wf.fields.items() if name in shown.data]
            extra = [k for k in shown.data if k not in wf.fields]
            done = request.query_params.get("done")
            return self.render(
                request, "case.html", s, status, case=shown, wf=wf, L=L, events=events,
                deadlines=self.engine.deadlines(case_id), actions=actions, refused=refused,
                fields=fields, extra=extra, reads=reads, now=self.now(), tz=wf.tz,
                refusal=refusal, prefill=prefill or {}, idem=secrets.token_urlsafe(12),
                done=done if done and (done == "open" or done in wf.triggers
                                       or done in wf.activities) else None)

        @app.get("/cases/{case_id}")
        def case_get(request: Request, case_id: str) -> Response:
            s = self.need(request)
            return case_page(request, s, case_id)

        @app.post("/cases/{case_id}/do/{trigger}")
        async def case_do(request: Request, case_id: str, trigger: str) -> Response:
            form = await form_of(request)

            def run() -> Response:
                s = self.checked(request, form)
                case = self.engine.get_case(case_id)
                wf = self.engine.workflow(case.workflow, case.version)
                kind = "activity" if trigger in wf.activities else "transition"
                inputs = step_inputs(wf.definition, kind, trigger, case.state)
                data = parse(inputs, form, wf.tz)
                expected = None
                if form.get("row_version", "").isdigit():
                    expected = int(form["row_version"])
                key = _idem(s.actor, form)
                try:
                    self.svc.command("fire", lambda: self.engine.fire(
                        case_id, trigger, actor=s.actor, data=data, expected_version=expected,
                        idempotency_key=key),
                        {"casework.case_id": case_id, "casework.trigger": trigger,
                         "casework.actor": s.actor.id})
                except CaseNotFound:
                    raise
                except CaseworkError as e:
                    status, refusal = _refusal(e, trigger)
                    return case_page(request, s, case_id, status, refusal,
                                     _prefill(inputs, form))
                return RedirectResponse(f"{P}/cases/{case_id}?done={trigger}#history",
                                        status_code=303)

            return await run_in_threadpool(run)

        @app.get("/cases/{case_id}/timeline.png")
        def timeline(request: Request, case_id: str) -> Response:
            s = self.need(request)
            case = self.engine.get_case(case_id)
            wf = self.engine.workflow(case.workflow, case.version)
            now = self.now()
            shown = case if self.reads_pii(s.actor, case.workflow) else case.masked(wf.pii)

            def draw() -> bytes:
                try:
                    from ...views import render_timeline
                except ImportError:
                    raise MissingExtra("timeline pictures", "pictures", "matplotlib") from None
                with tempfile.TemporaryDirectory(prefix="casework-console-") as tmp:
                    path = render_timeline(
                        shown, self.engine.history(case_id, masked=True),
                        self.engine.pending_timers(case_id), Path(tmp) / "t.png", "png",
                        now=now, tz=wf.tz, definition=wf.definition)
                    return Path(path).read_bytes()

            minute = int(now.timestamp() // 60) if not case.final else 0
            data = self.pictures.get(("timeline", case.id, case.row_version, minute), draw)
            return Response(data, media_type="image/png", headers={"Cache-Control": "private, max-age=60"})

        # -- workflows -------------------------------------------------------------------
        @app.get("/workflows")
        def workflows(request: Request) -> Response:
            s = self.need(request)
            rows = []
            for wf in self.engine.workflows.values():
                counts = self.engine.state_counts(wf.name)
                rows.append({"wf": wf, "open": sum(o for o, _ in counts.values()),
                             "overdue": sum(d for _, d in counts.values())})
            return self.render(request, "workflows.html", s, rows=rows)

        def versions_of(name: str) -> dict[str, Any]:
            wf = self.engine.workflow(name)
            counts = self.engine.state_counts(name)
            total = sum(o for o, _ in counts.values())
            moved = self.engine.migrate(name, "latest", dry_run=True)
            per: dict[str, int] = {}
            older: dict[str, list[str]] = {}
            for item in moved.items:
                per[item.from_version] = per.get(item.from_version, 0) + 1
                older.setdefault(item.from_version, []).append(item.case_id)
            per[wf.version] = total - sum(per.values())
            return {"per": per, "older": {v: ids[:20] for v, ids in older.items()}}

        @app.get("/workflows/{name}")
        def workflow(request: Request, name: str) -> Response:
            s = self.need(request)
            wf = self.engine.workflow(name)
            counts = self.engine.state_counts(name)
            stored = self.engine.workflow_versions(name)
            answer = self.reports.get(("versions", name), lambda: versions_of(name),
                                      wait=self.options.report_wait)
            L = self.labels_of(wf.name, wf.version)
            states = [(st, L.state_path(st), *counts.get(st, (0, 0))) for st in wf.states]
            other = {st: c for st, c in counts.items() if st not in wf.states}
            return self.render(request, "workflow.html", s, wf=wf, L=L, states=states,
                               other=other, stored=stored, versions=answer,
                               total=sum(o for o, _ in counts.values()),
                               overdue=sum(d for _, d in counts.values()))

        @app.get("/workflows/{name}/diagram.png")
        def diagram(request: Request, name: str) -> Response:
            self.need(request)
            wf = self.engine.workflow(name)
            counts = self.engine.state_counts(name)

            def draw() -> bytes:
                from ...views import render_with_counts

                with tempfile.TemporaryDirectory(prefix="casework-console-") as tmp:
                    path = render_with_counts(wf.definition, counts, Path(tmp) / "d.png", "png")
                    return Path(path).read_bytes()

            key = ("diagram", wf.name, wf.version, tuple(sorted(counts.items())))
            return Response(self.pictures.get(key, draw), media_type="image/png",
                            headers={"Cache-Control": "private, max-age=30"})

        # -- reports and supervision -----------------------------------------------------
        def report_query(q: Mapping[str, str]) -> dict[str, Any]:
            names = list(self.engine.workflows)
            workflow = q.get("workflow") if q.get("workflow") in names else (
                "petition" if "petition" in names else names[0])
            wf = self.engine.workflow(workflow)
            by = q.get("by") or None
            if by is not None and by not in wf.definition.report.by:
                by = None
            unit_field = _lead_field(wf)
            unit = (q.get("unit") or "").strip() or None
            start = _date_text(q.get("start"))
            end = _date_text(q.get("end"))
            everything = q.get("all") == "1" or (start is None and end is None and (
                "start" in q or "end" in q))
            if start is None and end is None and not everything:
                year = self.now().astimezone(wf.tz).year  # by default: this year
                start, end = f"{year}-01-01", f"{year + 1}-01-01"
            return {"workflow": workflow, "start": start, "end": end, "by": by,
                    "unit": unit, "unit_field": unit_field, "wf": wf}

        def report_answer(rq: Mapping[str, Any], *, by: str | bool | None = False,
                          period: bool = True, wait: float | None = None,
                          fresh: bool = False) -> Answer:
            use_by = rq["by"] if by is False else by
            where = {rq["unit_field"]: rq["unit"]} if rq["unit"] and rq["unit_field"] else {}
            start, end = (rq["start"], rq["end"]) if period else (None, None)
            key = ("report", rq["workflow"], start, end, use_by, tuple(sorted(where.items())))
            return self.reports.get(key, lambda: self.engine.report(
                rq["workflow"], start=start, end=end, by=use_by, where=where),
                wait=self.options.report_wait if wait is None else wait, fresh=fresh)

        def figures_ctx(rq: Mapping[str, Any], answer: Answer) -> dict[str, Any]:
            rep = answer.value
            error = str(answer.error) if answer.error is not None else None
            return {"rq": rq, "rep": rep, "error": error, "answer": answer,
                    "age": None if answer.computed_at is None else time.time() - answer.computed_at,
                    "params": {**{k: rq[k] or "" for k in ("workflow", "start", "end", "by", "unit")},
                               "all": "1" if rq["start"] is None and rq["end"] is None else ""}}

        @app.get("/reports")
        def reports(request: Request) -> Response:
            s = self.need(request)
            rq = report_query(request.query_params)
            answer = report_answer(rq, fresh=request.query_params.get("fresh") == "1")
            wf = rq["wf"]
            return self.render(request, "reports.html", s, L=self.labels_of(wf.name, wf.version),
                               units=known_units(wf.name), engine_workflows=[
                                   (n, w.title or n) for n, w in self.engine.workflows.items()],
                               **figures_ctx(rq, answer))

        @app.get("/reports/figures")
        def report_figures(request: Request) -> Response:
            s = self.need(request)
            rq = report_query(request.query_params)
            answer = report_answer(rq, wait=0.5)
            return self.render(request, "_figures.html", s, **figures_ctx(rq, answer))

        @app.get("/reports.csv")
        def report_csv(request: Request) -> Response:
            self.need(request)
            rq = report_query(request.query_params)
            answer = report_answer(rq, wait=600.0)
            if answer.error is not None:
                raise answer.error
            name = f"{rq['workflow']}-report-{rq['start'] or 'start'}-{rq['end'] or 'now'}.csv"
            return Response("\ufeff" + answer.value.to_csv(), media_type="text/csv; charset=utf-8",
                            headers={"Content-Disposition": f'attachment; filename="{name}"'})

        @app.get("/reports/chart.png")
        def report_chart(request: Request) -> Response:
            self.need(request)
            rq = report_query(request.query_params)
            kind = request.query_params.get("chart", "figures")
            answer = report_answer(rq, by=rq["unit_field"] if kind == "units" else False,
                                   period=kind != "units", wait=600.0)
            if answer.error is not None:
                raise answer.error
            rep = answer.value

            def draw() -> bytes:
                from ...views import render_figure_chart, render_unit_chart

                with tempfile.TemporaryDirectory(prefix="casework-console-") as tmp:
                    out = Path(tmp) / "c.png"
                    if kind == "units":
                        render_unit_chart(_unit_rows(rep, rq["wf"]), out, "png",
                                          title="各单位在办与超期 Open and overdue per unit")
                    else:
                        counts = {n for n, f in rq["wf"].definition.report.figures.items()
                                  if f.count is not None}
                        render_figure_chart(
                            [(rep.labels[n], v) for n, v in rep.totals.items()
                             if n in counts and v is not None], out, "png",
                            title=f"{rq['start'] or '…'} .. {rq['end'] or '…'}")
                    return out.read_bytes()

            key = ("chart", kind, id(rep))
            return Response(self.pictures.get(key, draw), media_type="image/png",
                            headers={"Cache-Control": "private, max-age=60"})

        def known_units(workflow: str) -> list[str]:
            """The units of the last per-unit report computed (supervision's), if any: a
            list to pick from, never a reason to compute one."""
            field = _lead_field(self.engine.workflow(workflow))
            rep = self.reports.peek(("report", workflow, None, None, field, ()))
            return sorted(g for g in rep.rows if g != "(none)") if rep is not None else []

        def supervision_page(request: Request, s: Session, status: int = 200,
                             message: str | None = None) -> Response:
            rq = report_query(request.query_params)
            overall = report_answer(rq, by=None, period=False)
            per_unit = report_answer(rq, by=rq["unit_field"], period=False) \
                if rq["unit_field"] in rq["wf"].definition.report.by else None
            failed = self.engine.failed_timers()
            wf = rq["wf"]
            return self.render(request, "supervision.html", s, status, rq=rq, overall=overall,
                               per_unit=per_unit, failed=failed, message=message,
                               L=self.labels_of(wf.name, wf.version), now=self.now(),
                               tz=wf.tz, open_figure=figure_of(wf, "open"),
                               overdue_figure=figure_of(wf, "overdue"),
                               may_retry=lambda t: may_retry(s.actor, t),
                               params={k: rq[k] or "" for k in ("workflow", "unit")})

        def may_retry(actor: Actor, timer: Any) -> bool:
            try:
                roles = set(self.engine.workflow(timer.workflow).definition.assignment.roles)
            except CaseworkError:
                return False
            return bool(roles & actor.roles)

        @app.get("/supervision")
        def supervision(request: Request) -> Response:
            s = self.need(request)
            return supervision_page(request, s)

        @app.post("/timers/{timer_id}/retry")
        async def retry(request: Request, timer_id: int) -> Response:
            form = await form_of(request)

            def run() -> Response:
                s = self.checked(request, form)
                timer = next((t for t in self.engine.failed_timers() if t.id == timer_id), None)
                if timer is None:
                    return supervision_page(request, s, 404, f"timer {timer_id} is not set aside "
                                                             "as failed (retried already?)")
                if not may_retry(s.actor, timer):
                    return supervision_page(request, s, 403, "retrying a timer needs one of the "
                                            "roles that may assign the workflow's cases")
                ok = self.engine.retry_timer(timer_id, actor=s.actor)
                msg = (f"timer {timer_id} ({timer.name}) will fire at the next sweep; the retry "
                       "is recorded on its case" if ok else f"timer {timer_id} was not failed")
                if request.headers.get("hx-request"):
                    return self.render(request, "_retried.html", s, timer=timer, ok=ok,
                                       message=msg)
                return RedirectResponse(f"{P}/supervision?retried={timer_id}", status_code=303)

            return await run_in_threadpool(run)

        return app


# -- small helpers --------------------------------------------------------------------------
def _idem(actor: Actor, form: Mapping[str, str]) -> str | None:
    idem = form.get("idem", "")
    if not idem or len(idem) > 64:
        return None
    return f"console:{actor.id}:{idem}"


def _refusal(e: CaseworkError, trigger: str) -> tuple[int, dict[str, Any]]:
    status, body, _ = from_error(e)
    return status, {"trigger": trigger, "rule": body.get("rule") or rule_of(e),
                    "title": body.get("title", ""), "message": body.get("detail") or str(e),
                    "refused": isinstance(e, CommandRefused)}


def _prefill(inputs: list[Input], form: Mapping[str, str]) -> dict[str, str]:
    """What was typed, to show again: never a personal field's value."""
    return {i.form_name: form[i.form_name] for i in inputs
            if not i.pii and i.form_name in form and len(form[i.form_name]) < 20_000}


def _lead_field(wf: Any) -> str | None:
    for slot in wf.definition.assignment.slots.values():
        if slot.lead:
            return str(slot.field) if slot.field else None
    return "unit" if "unit" in wf.fields else None


def _date_text(v: str | None) -> str | None:
    if not v:
        return None
    try:
        return date.fromisoformat(v.strip()).isoformat()
    except ValueError:
        raise InvalidQuery("a period's day is YYYY-MM-DD") from None


def _day(v: str, tz: ZoneInfo, what: str) -> datetime:
    try:
        if "T" in v:
            d = datetime.fromisoformat(v)
            return d if d.tzinfo else d.replace(tzinfo=tz)
        return datetime.combine(date.fromisoformat(v), dtime(0), tz)
    except ValueError:
        raise InvalidQuery(f"{what}: a day (YYYY-MM-DD)") from None


def _search_value(engine: Any, workflow: str | None, field: str, text: str) -> Any:
    known = (dict(engine.workflow(workflow).fields) if workflow else
             {k: v for w in engine.workflows.values() for k, v in w.fields.items()})
    spec = known.get(field)
    if spec is not None and spec.type.value == "bool":
        return {"true": True, "false": False}.get(text, text)
    if spec is not None and spec.type.value == "int":
        try:
            return int(text)
        except ValueError:
            return text
    return text


def figure_of(wf: Any, count: str) -> str | None:
    """The name of the workflow's report figure that counts ``count`` (open, overdue...)."""
    return next((n for n, f in wf.definition.report.figures.items()
                 if f.count == count and not f.where and not f.state), None)


def _unit_rows(rep: Any, wf: Any) -> list[tuple[str | None, int, int]]:
    """(unit, open, overdue) per unit of a report broken down by unit, most open first."""
    opened, overdue = figure_of(wf, "open"), figure_of(wf, "overdue")
    rows = []
    for unit, figures in rep.rows.items():
        rows.append((unit if unit != "(none)" else None,
                     int(figures.get(opened) or 0) if opened else 0,
                     int(figures.get(overdue) or 0) if overdue else 0))
    return sorted(rows, key=lambda r: (-r[1], -r[2], str(r[0])))


__all__ = ["Console", "digest"]
