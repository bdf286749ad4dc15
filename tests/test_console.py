"""The operator console over HTTP (httpx against a real uvicorn on 127.0.0.1): sign-in with
the API's credentials, sessions, CSRF, personal data never shown to those who may not read
it (error pages included), forms generated from the definition, refusals that write
nothing, the Chinese labels, reports, failed timers; and the pictures' CJK glyphs.

The browser drives the same pages in ``tests/test_console_browser.py``.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from casework import Engine, FrozenClock, load_definition
from casework.http.console.forms import opening_inputs, parse, step_inputs
from casework.views import render_figure_chart, render_timeline, render_unit_chart
from casework.views.fonts import cjk_font_file, dot_environment
from sqlalchemy import create_engine, text

from tests.conftest import PETITION
from tests.petition_steps import (
    ARCHIVIST,
    CLERK,
    HANDLER,
    LEADER,
    OPEN_DATA,
    SUPERVISOR,
    TRIAGE,
    drive,
    open_petition,
)
from tests.test_http_support import SERVICE_ACTOR, SERVICE_TOKEN, Live, live, token_for

NAME, PHONE, ID_NUMBER = "Wang Fang", "13800000000", "110101199003070011"
PERSONAL = (NAME, PHONE, ID_NUMBER)


@pytest.fixture
def http(sqlite_url: str, clock: FrozenClock) -> Iterator[Live]:
    with live(sqlite_url, clock) as got:
        yield got


def csrf_of(html: str) -> str:
    m = re.search(r'name="csrf" value="([^"]+)"', html)
    assert m, html[:2000]
    return m.group(1)


def signed_in(http: Live, actor: str | None = None, *, credential: str | None = None) -> httpx.Client:
    """A client of its own, signed in through the sign-in form (a JWT for ``actor``)."""
    c = httpx.Client(base_url=http.url, timeout=30)
    form = c.get("/console/sign-in")
    assert form.status_code == 200
    r = c.post("/console/sign-in", data={"csrf": csrf_of(form.text), "next": "/console/worklist",
                                         "credential": credential or token_for(actor or CLERK)})
    assert r.status_code == 303, r.text
    c.headers["x-test-csrf"] = csrf_of(c.get("/console/worklist").text)
    return c


def post(c: httpx.Client, url: str, data: dict[str, Any] | None = None, *,
         csrf: bool = True) -> httpx.Response:
    body = dict(data or {})
    if csrf:
        body["csrf"] = c.headers["x-test-csrf"]
    return c.post(url, data=body)


def personal_case(engine: Engine) -> str:
    case = open_petition(engine, petitioner_name=NAME, petitioner_phone=PHONE,
                         petitioner_id_number=ID_NUMBER)
    return case.id


def assert_no_personal(html: str, where: str) -> None:
    for value in PERSONAL:
        assert value not in html, f"{value!r} shown on {where}"


# -- sign-in and sessions --------------------------------------------------------------------
def test_sign_in_takes_the_apis_credentials_and_sets_a_strict_cookie(http: Live) -> None:
    c = httpx.Client(base_url=http.url, timeout=30)
    assert c.get("/console/worklist").status_code == 303  # to the sign-in page
    page = c.get("/console/sign-in")
    r = c.post("/console/sign-in", data={"csrf": csrf_of(page.text), "credential": "nonsense"})
    assert r.status_code == 401 and "unknown API token" in r.text
    assert "casework_session" not in r.headers.get("set-cookie", "")
    page = c.get("/console/sign-in")
    r = c.post("/console/sign-in", data={"csrf": csrf_of(page.text), "credential": SERVICE_TOKEN})
    assert r.status_code == 303
    cookie = next(v for k, v in r.headers.multi_items()
                  if k == "set-cookie" and v.startswith("casework_session="))
    attrs = {a.strip().split("=")[0].lower() for a in cookie.split(";")}
    assert {"httponly", "path"} <= attrs and "samesite=strict" in cookie.lower()
    assert "Path=/console" in cookie
    who = c.get("/console/worklist")
    assert who.status_code == 200
    assert 'data-actor="intake"' in who.text  # the API token's actor, as the API sees it
    assert SERVICE_ACTOR.split(":")[0] in who.text
    # An expired JWT, or one signed with another key, opens no session.
    for bad, why in ((token_for(TRIAGE, expires_in=-60), "expired"),
                     (token_for(TRIAGE, secret="another-secret-of-at-least-32-bytes!!"),
                      "signature")):
        fresh = httpx.Client(base_url=http.url, timeout=30)
        page = fresh.get("/console/sign-in")
        r = fresh.post("/console/sign-in", data={"csrf": csrf_of(page.text), "credential": bad})
        assert r.status_code == 401 and why in r.text
        assert "casework_session" not in r.headers.get("set-cookie", "")


def test_sign_in_needs_its_own_form_token(http: Live) -> None:
    c = httpx.Client(base_url=http.url, timeout=30)
    c.get("/console/sign-in")
    r = c.post("/console/sign-in", data={"credential": token_for(CLERK)})
    assert r.status_code == 403 and "casework_session" not in r.headers.get("set-cookie", "")


def test_signing_out_ends_the_session_everywhere(http: Live) -> None:
    c = signed_in(http, TRIAGE)
    case_id = personal_case(http.engine)
    cookie = c.cookies.get("casework_session")
    assert post(c, "/console/sign-out").status_code == 303
    replay = httpx.Client(base_url=http.url, timeout=30, cookies={"casework_session": cookie})
    assert replay.get("/console/worklist").status_code == 303  # back to the sign-in page
    before = http.engine.stored_counts()
    r = replay.post(f"/console/cases/{case_id}/do/accept",
                    data={"csrf": c.headers["x-test-csrf"]})
    assert r.status_code == 401 and "nothing was written" in r.text
    assert http.engine.stored_counts() == before
    assert http.engine.get_case(case_id).state == "registered"
    forged = httpx.Client(base_url=http.url, timeout=30,
                          cookies={"casework_session": cookie[:-4] + "AAAA"})
    assert forged.get("/console/worklist").status_code == 303


def test_sessions_live_in_the_services_database_on_both_backends(
        db_url: str, clock: FrozenClock) -> None:
    with live(db_url, clock) as got:
        case_id = personal_case(got.engine)
        c = signed_in(got, TRIAGE)
        r = post(c, f"/console/cases/{case_id}/do/accept")
        assert r.status_code == 303 and got.engine.get_case(case_id).state == "accepted"
        console = [m for m in got.server.server.config.app.routes if getattr(m, "path", "")
                   == "/console"]
        assert console  # mounted in the API's own app
        assert post(c, "/console/sign-out").status_code == 303
        assert c.get("/console/worklist").status_code == 303


# -- CSRF --------------------------------------------------------------------------------------
def test_a_post_without_the_sessions_token_writes_nothing(http: Live) -> None:
    case_id = personal_case(http.engine)
    c = signed_in(http, TRIAGE)
    before = (http.engine.stored_counts(), http.engine.get_case(case_id).row_version)
    for data, headers in (({}, {}), ({"csrf": "not-the-token"}, {}),
                          ({"csrf": c.headers["x-test-csrf"]}, {"Origin": "http://evil.example"})):
        r = c.post(f"/console/cases/{case_id}/do/accept", data=data, headers=headers)
        assert r.status_code == 403, r.text
        assert 'data-rule="csrf"' in r.text
    other = signed_in(http, TRIAGE)  # another session's token is another token
    r = c.post(f"/console/cases/{case_id}/do/accept", data={"csrf": other.headers["x-test-csrf"]})
    assert r.status_code == 403
    r = post(c, "/console/open/petition", {f"f.{k}": v for k, v in OPEN_DATA.items()}, csrf=False)
    assert r.status_code == 403
    assert (http.engine.stored_counts(), http.engine.get_case(case_id).row_version) == before
    # The htmx header carries it as well as the form field.
    r = c.post(f"/console/cases/{case_id}/do/accept",
               headers={"X-CSRF-Token": c.headers["x-test-csrf"]})
    assert r.status_code == 303
    assert http.engine.get_case(case_id).state == "accepted"


# -- personal data -----------------------------------------------------------------------------
def test_a_viewer_without_pii_permission_never_sees_a_petitioners_data(http: Live) -> None:
    case_id = personal_case(http.engine)
    drive(http.engine, case_id, "accept", "assign")
    for actor in (CLERK, TRIAGE, HANDLER, "handler,clerk:wu@county court"):
        c = signed_in(http, actor)
        pages = ["/console/worklist", "/console/worklist?of=unit", "/console/worklist?of=overdue",
                 "/console/search?go=1", "/console/search?go=1&closed=on&sort=opened",
                 "/console/search?workflow=petition&state=handling&w.channel=visit",
                 "/console/search?w.petitioner_name=Wang+Fang",  # refused: pii is never searched
                 f"/console/cases/{case_id}", "/console/cases/no-such-case",
                 "/console/no-such-page", "/console/workflows", "/console/workflows/petition",
                 "/console/reports?all=1", "/console/reports.csv?all=1",
                 "/console/reports/figures?all=1", "/console/supervision",
                 "/console/open/petition", "/console/search?min_escalation=x"]
        for url in pages:
            r = c.get(url)
            assert r.status_code < 500, (url, r.status_code)
            assert_no_personal(r.text, f"{url} for {actor}")
        # A refused command (a missing field, a wrong state, a guard) shows the case again.
        for trigger, data in (("decide", {"f.outcome": "partial_correction"}),
                              ("accept", {}), ("extend", {"f.extension_days": "99"}),
                              ("no_such_trigger", {})):
            r = post(c, f"/console/cases/{case_id}/do/{trigger}", data)
            assert r.status_code in (403, 404, 409, 422), (trigger, r.status_code)
            assert_no_personal(r.text, f"the refusal of {trigger} for {actor}")
    # Typing a petitioner's details into a form that is refused: not shown back either.
    c = signed_in(http, CLERK)
    r = post(c, "/console/open/petition", {"f.petitioner_name": "Li Lei", "f.petitioner_phone":
                                           "13999999999", "f.channel": "visit"})
    assert r.status_code == 422 and 'data-rule="required fields"' in r.text
    assert "Li Lei" not in r.text and "13999999999" not in r.text
    assert 'value="visit" selected' in r.text  # what is not personal is kept
    # Those the settings name may read it.
    leader = signed_in(http, LEADER)
    page = leader.get(f"/console/cases/{case_id}").text
    assert NAME in page and PHONE in page and ID_NUMBER in page


# -- forms from the definition, refusals -----------------------------------------------------------
def test_forms_are_generated_from_the_declared_input() -> None:
    spec = load_definition(PETITION).spec
    assign = {i.name: i for i in step_inputs(spec, "transition", "assign", "accepted")}
    assert set(assign) == {"leader", "handler", "unit", "due_date", "target", "assisting_units"}
    assert all(assign[f].required for f in ("leader", "handler", "unit", "due_date", "target"))
    assert not assign["assisting_units"].required and assign["assisting_units"].widget == "textarea"
    assert assign["due_date"].widget == "date" and assign["leader"].label == "包案领导"
    assert "承辦人" in assign["handler"].help
    decide = {i.name: i for i in step_inputs(spec, "transition", "decide", "handling.investigating")}
    assert decide["outcome"].widget == "select"
    assert ("partial_correction", "部分纠正") in decide["outcome"].choices
    assert decide["state_compensation"].kind == "number" and not decide["state_compensation"].required
    funds = {i.name: i for i in step_inputs(spec, "activity", "funds_raised", "handling")}
    assert funds["amount"].required and funds["amount"].label.startswith("金额")
    opening = {i.name: i for i in opening_inputs(spec)}
    assert opening["petitioner_name"].pii and opening["received_by_head"].widget == "select"
    from zoneinfo import ZoneInfo

    data = parse(list(opening.values()), {"f.petitioner_name": " Zhang ", "f.petition_count": "3",
                                          "f.received_by_head": "true", "f.concerns": ""},
                 ZoneInfo("Asia/Shanghai"))
    assert data == {"petitioner_name": "Zhang", "petition_count": 3, "received_by_head": True}
    visit = step_inputs(spec, "transition", "return_visit", "follow_up.continued_work")
    assert [i.name for i in visit] == ["satisfaction"]


def test_the_case_page_offers_forms_and_shows_a_refusal_with_its_rule(http: Live) -> None:
    case_id = personal_case(http.engine)
    drive(http.engine, case_id, "accept", "assign", "decide", "reply", "visit_unsatisfied")
    clerk = signed_in(http, CLERK)
    page = clerk.get(f"/console/cases/{case_id}").text
    assert 'id="try-archive"' in page  # refused by its guard: may be tried, and is refused
    assert 'data-trigger="archive" data-rule="guard"' in page
    before = (http.engine.stored_counts(), http.engine.history(case_id))
    r = post(clerk, f"/console/cases/{case_id}/do/archive")
    assert r.status_code == 409
    assert 'id="refusal" data-rule="guard"' in r.text and "Nothing was written" in r.text
    assert (http.engine.stored_counts(), http.engine.history(case_id)) == before
    handler = signed_in(http, HANDLER)
    page = handler.get(f"/console/cases/{case_id}").text
    assert 'id="do-continue_work"' in page and 'id="do-thought_work"' in page
    # A stale form (the case moved on since the page was read) is refused as a conflict.
    r = post(handler, f"/console/cases/{case_id}/do/continue_work", {"row_version": "1"})
    assert r.status_code == 409 and 'id="refusal"' in r.text
    assert http.engine.get_case(case_id).state == "follow_up.visited"
    r = post(handler, f"/console/cases/{case_id}/do/continue_work",
             {"row_version": str(http.engine.get_case(case_id).row_version), "idem": "k1"})
    assert r.status_code == 303 and r.headers["location"].endswith("?done=continue_work#history")
    assert http.engine.get_case(case_id).state == "follow_up.continued_work"
    # The same form sent twice is applied once.
    n = len(http.engine.history(case_id))
    r = post(handler, f"/console/cases/{case_id}/do/thought_work",
             {"f.notes": "explained again", "idem": "k2"})
    r = post(handler, f"/console/cases/{case_id}/do/thought_work",
             {"f.notes": "explained again", "idem": "k2"})
    assert r.status_code == 303 and len(http.engine.history(case_id)) == n + 1


def test_the_pages_render_the_petition_workflows_chinese_labels(http: Live) -> None:
    case_id = personal_case(http.engine)
    triage = signed_in(http, TRIAGE)
    page = triage.get(f"/console/cases/{case_id}").text
    for label in ("已登记", "信访形式", "来访", "案件来源", "直接受理", "涉及单位", "法院", "受理",
                  "转送", "不予受理", "导入法律程序", "信访人姓名"):
        assert label in page, label
    assert "分流理由" in page  # the refer form's required field
    rows = triage.get("/console/worklist").text
    assert "已登记" in rows and "受理" in rows
    wf = triage.get("/console/workflows/petition").text
    for label in ("办理中 / 调查处理", "回访 / 继续做工作", "已归档"):
        assert label in wf, label
    search = triage.get("/console/search?workflow=petition").text
    assert "复查复核 / 申请复核" in search and "中央交办" in search


# -- worklists, search, reports, timers, pictures ------------------------------------------------
def test_worklists_and_search_with_the_filters_of_engine_cases(http: Live, clock: FrozenClock) -> None:
    a = personal_case(http.engine)
    b = open_petition(http.engine, channel="letter").id
    drive(http.engine, a, "accept", "assign")
    clock.advance(days=70)
    http.engine.run_due()
    handler = signed_in(http, "handler:wu@county court")
    mine = handler.get("/console/worklist").text
    assert f'data-case="{a}"' in mine and f'data-case="{b}"' not in mine
    assert 'data-urgency="overdue"' in mine
    unit = handler.get("/console/worklist?of=unit").text
    assert f'data-case="{a}"' in unit
    overdue = handler.get("/console/worklist?of=overdue").text
    assert f'data-case="{a}"' in overdue and "supervision_notice" in overdue
    hits = handler.get("/console/search?workflow=petition&w.channel=letter").text
    assert f'data-case="{b}"' in hits and f'data-case="{a}"' not in hits
    hits = handler.get("/console/search?state=handling&overdue=yes&min_escalation=1").text
    assert f'data-case="{a}"' in hits and "1 件" in hits
    part = handler.get("/console/search?state=registered&part=results",
                       headers={"HX-Request": "true"})
    assert part.status_code == 200 and "<html" not in part.text and f'data-case="{b}"' in part.text
    bad = handler.get("/console/search?state=no_such_state")
    assert bad.status_code == 422 and 'id="search-error"' in bad.text


def test_reports_supervision_csv_and_a_recorded_retry_of_a_failed_timer(
        http: Live, clock: FrozenClock) -> None:
    case_id = personal_case(http.engine)
    (timer,) = {t.id: t for t in http.engine.pending_timers(case_id)}.values()
    raw = create_engine(http.engine.database_url)
    with raw.begin() as conn:
        conn.execute(text("UPDATE timers SET payload = '{\"then\": \"broken\"}' WHERE id = :id"),
                     {"id": timer.id})
    raw.dispose()
    clock.advance(days=30)
    assert http.engine.run_due().failed == 1
    sup = signed_in(http, SUPERVISOR)
    page = sup.get("/console/reports?all=1")
    assert page.status_code == 200 and 'id="report"' in page.text and "接訪" in page.text
    csv = sup.get("/console/reports.csv?all=1")
    assert csv.headers["content-type"].startswith("text/csv") and "received" in csv.text
    assert "attachment" in csv.headers["content-disposition"]
    chart = sup.get("/console/reports/chart.png?all=1&chart=figures")
    assert chart.content[:8] == b"\x89PNG\r\n\x1a\n"
    page = sup.get("/console/supervision").text
    assert f'id="retry-{timer.id}"' in page and 'data-rung="supervision_notice"' in page
    clerk = signed_in(http, CLERK)
    assert f'id="retry-{timer.id}"' not in clerk.get("/console/supervision").text
    r = post(clerk, f"/console/timers/{timer.id}/retry")
    assert r.status_code == 403 and http.engine.failed_timers() != []
    r = post(sup, f"/console/timers/{timer.id}/retry")
    assert r.status_code == 303
    assert http.engine.failed_timers() == []
    last = http.engine.history(case_id)[-1]
    assert last.name == "timer_retried" and last.details["by"].endswith("sun")


def test_a_timeline_and_charts_draw_chinese_labels_without_missing_glyphs(
        tmp_path: Path, clock: FrozenClock) -> None:
    assert cjk_font_file() is not None, "the packaged CJK font is a dependency of the extras"
    engine = Engine(f"sqlite:///{tmp_path / 'c.db'}", [PETITION], clock=clock)
    try:
        case = open_petition(engine)
        drive(engine, case.id, "accept", "assign", "decide")
        wf = engine.workflow("petition")
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            svg = render_timeline(engine.get_case(case.id, masked=True),
                                  engine.history(case.id, masked=True),
                                  engine.pending_timers(case.id), tmp_path / "t.svg", "svg",
                                  now=clock.now(), tz=wf.tz, definition=wf.definition)
            render_timeline(engine.get_case(case.id), engine.history(case.id),
                            engine.pending_timers(case.id), tmp_path / "t.png", "png",
                            now=clock.now(), tz=wf.tz, definition=wf.definition)
            render_unit_chart([("县法院", 3, 1), ("公安局", 1, 0)], tmp_path / "u.png", "png",
                              title="各单位在办与超期")
            render_figure_chart([("接访", 12.0), ("化解", 8.0)], tmp_path / "f.png", "png",
                                title="报表")
        missing = [str(w.message) for w in seen if "missing from" in str(w.message)
                   or "Glyph" in str(w.message)]
        assert missing == []
        drawn = svg.read_text(encoding="utf-8")
        for label in ("已登记", "已受理", "办理中 / 已出具处理意见", "受理", "包案交办"):
            assert label in drawn, label
    finally:
        engine.close()


@pytest.mark.skipif(shutil.which("dot") is None or shutil.which("fc-match") is None,
                    reason="Graphviz's dot and fontconfig's fc-match are needed")
def test_graphviz_draws_the_labels_in_the_packaged_font(tmp_path: Path) -> None:
    from casework.views import render, workflow_graph

    env, font = dot_environment()
    assert font == "Noto Sans SC"
    found = subprocess.run(["fc-match", "-f", "%{file}", f"{font}:lang=zh-cn"], env=env,
                           capture_output=True, text=True, timeout=60)
    assert Path(found.stdout.strip()).resolve() == cjk_font_file().resolve()  # type: ignore[union-attr]
    spec = load_definition(PETITION).spec
    source = workflow_graph(spec, labels=True).source
    assert "已受理" in source and "包案交办" in source and 'fontname="Noto Sans SC"' in source
    svg = render(spec, tmp_path / "d.svg", "svg").read_text(encoding="utf-8")
    assert "已书面答复" in svg and "Noto Sans SC" in svg


def test_demo_console_signs_in_each_demo_role() -> None:
    from casework.http.console.demo import ROLES, DemoClock, sign_ins
    from casework.types import Actor

    logins = sign_ins()
    assert set(logins) == {"clerk", "triage", "leader", "handler", "supervisor"}
    assert len({t for _, t in logins.values()}) == 5
    for role, (actor, _) in logins.items():
        assert role in Actor.parse(actor).roles
    assert ROLES["leader"].endswith("@county_court")
    from datetime import UTC, datetime

    start = datetime(2026, 12, 31, tzinfo=UTC)
    assert DemoClock(start).now() >= start
    from casework.cli import cli
    from click.testing import CliRunner

    out = CliRunner().invoke(cli, ["demo", "--help"])
    assert "--console" in out.output and out.exit_code == 0


def test_static_assets_are_shipped_in_the_package(http: Live) -> None:
    c = httpx.Client(base_url=http.url, timeout=30)
    js = c.get("/console/static/htmx.min.js")
    assert js.status_code == 200 and "htmx" in js.text[:2000]
    assert c.get("/console/static/console.css").status_code == 200
    font = c.get("/console/static/cjk.otf")
    assert font.status_code == 200 and font.content[:4] == b"OTTO"
    assert c.get("/console/static/../pages.py").status_code == 404
    page = signed_in(http, ARCHIVIST).get("/console/worklist").text
    assert "http://" not in re.sub(r'href="http://127\.0\.0\.1[^"]*"', "", page).replace(
        "http://www.w3.org", "")  # nothing from a CDN
