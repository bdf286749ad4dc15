"""The console in a real headless Chromium (Debian's chromium and chromium-driver, driven by
selenium) against a real uvicorn on 127.0.0.1: a petition from registration to the
archive, each step by its own role through the pages' forms, the refused archive shown
with its rule, the history on the page the same as ``engine.history``; what a viewer
without permission to read personal data sees; the Chinese labels.

Without Chromium these tests fail under ``CI=true`` and are skipped otherwise
(``python3 run.py test`` installs it where the machine allows). When one fails, a
screenshot of the page is saved under ``var/console-failures/``. Every wait is on an
event (the old page going stale, an element appearing) and bounded.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from casework import Engine, FrozenClock

from tests.conftest import ROOT
from tests.petition_steps import OPEN_DATA
from tests.test_http_support import Live, live, token_for

SHOTS = ROOT / "var" / "console-failures"
CLERK, TRIAGE, LEADER, HANDLER = "clerk:li", "triage:zhao", "leader:chen", "handler:wu"
NAME, PHONE, ID_NUMBER = "Zhao Min", "13912345678", "110101198807120033"


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    from casework.http.console.browser import Browser, BrowserMissing

    try:
        b = Browser(timeout=15.0)
    except BrowserMissing as e:
        if os.environ.get("CI") == "true":
            pytest.fail(f"the console's browser tests need Chromium under CI: {e}")
        pytest.skip(str(e))
    try:
        yield b
    finally:
        b.close()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Live]:
    with live(f"sqlite:///{tmp_path / 'console.db'}", FrozenClock()) as got:
        yield got


@contextmanager
def shots(browser: object, name: str) -> Iterator[None]:
    """On a failure, a screenshot of the page and its HTML under var/console-failures/."""
    try:
        yield
    except BaseException:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        try:
            path = browser.screenshot(SHOTS / f"{name}-{stamp}.png")  # type: ignore[attr-defined]
            (SHOTS / f"{name}-{stamp}.html").write_text(browser.html(),  # type: ignore[attr-defined]
                                                        encoding="utf-8")
            print(f"screenshot: {path}")
        except Exception as e:  # the browser itself is gone
            print(f"no screenshot: {e}")
        raise


def sign_in(b: object, url: str, actor: str) -> None:
    b.get(f"{url}/console/sign-in")  # type: ignore[attr-defined]
    if b.all("#sign-out"):  # type: ignore[attr-defined]
        b.submit("#sign-out", "#sign-in")  # type: ignore[attr-defined]
    b.fill("#credential", token_for(actor))  # type: ignore[attr-defined]
    b.submit("#sign-in", "#worklist")  # type: ignore[attr-defined]
    assert b.find("#who").get_attribute("data-actor") == actor.split(":")[1]  # type: ignore[attr-defined]


def do(b: object, trigger: str, **fields: str) -> None:
    """Fill the case page's form for ``trigger`` and send it; wait for the page after."""
    form = f"#do-{trigger}"
    b.wait(form)  # type: ignore[attr-defined]
    for name, value in fields.items():
        b.fill(f"{form} [name='f.{name}']", value)  # type: ignore[attr-defined]
    b.submit(form, f"#done[data-trigger='{trigger}']")  # type: ignore[attr-defined]


def history_on_page(b: object) -> list[tuple[int, str, str]]:
    return [(int(r.get_attribute("data-seq")), r.get_attribute("data-kind"),
             r.get_attribute("data-name")) for r in b.all("#events tr.event")]  # type: ignore[attr-defined]


def in_engine(engine: Engine, case_id: str) -> list[tuple[int, str, str]]:
    return [(e.seq, str(e.kind), e.name) for e in engine.history(case_id)]


def test_a_petition_from_registration_to_the_archive_in_the_browser(
        browser: object, server: Live) -> None:
    b, url, engine = browser, server.url, server.engine
    with shots(b, "lifecycle"):
        # The clerk registers the petition through the form the definition makes.
        sign_in(b, url, CLERK)
        b.get(f"{url}/console/open/petition")  # type: ignore[attr-defined]
        b.wait("#open-form")  # type: ignore[attr-defined]
        data = {**OPEN_DATA, "petitioner_name": NAME, "petitioner_phone": PHONE,
                "petitioner_id_number": ID_NUMBER}
        for name, value in data.items():
            b.fill(f"#open-form [name='f.{name}']", value)  # type: ignore[attr-defined]
        b.submit("#open-form", "#done[data-trigger='open']")  # type: ignore[attr-defined]
        case_id = b.find("#case-id").text.strip()  # type: ignore[attr-defined]
        assert engine.get_case(case_id).state == "registered"
        page = b.html()  # type: ignore[attr-defined]
        assert NAME not in page and PHONE not in page and ID_NUMBER not in page
        assert "已登记" in b.text()  # type: ignore[attr-defined]
        case_url = f"{url}/console/cases/{case_id}"

        sign_in(b, url, TRIAGE)
        b.get(case_url)  # type: ignore[attr-defined]
        do(b, "accept")
        assert b.find("#state").get_attribute("data-state") == "accepted"  # type: ignore[attr-defined]

        sign_in(b, url, LEADER)  # a leader reads personal data
        b.get(case_url)  # type: ignore[attr-defined]
        b.wait("#data")  # type: ignore[attr-defined]
        assert NAME in b.text()  # type: ignore[attr-defined]
        do(b, "assign", leader="chen", handler="wu", unit="county court",
           due_date="2026-03-06", target="enforcement completed and the petitioner informed")
        assert engine.get_case(case_id).state == "handling.investigating"

        sign_in(b, url, HANDLER)
        b.get(case_url)  # type: ignore[attr-defined]
        do(b, "decide", outcome="partial_correction", decision_summary="the fee is refunded")
        do(b, "reply", reply_summary="written reply delivered")
        do(b, "return_visit", satisfaction="unsatisfied")
        assert engine.get_case(case_id).data["satisfaction"] == "unsatisfied"

        # The archive button shows the refusal and the rule; nothing is written.
        sign_in(b, url, CLERK)
        b.get(case_url)  # type: ignore[attr-defined]
        before = in_engine(engine, case_id)
        b.submit("#try-archive", "#refusal")  # type: ignore[attr-defined]
        assert b.find("#refusal").get_attribute("data-rule") == "guard"  # type: ignore[attr-defined]
        assert "satisfaction" in b.find("#refusal-message").text  # type: ignore[attr-defined]
        assert in_engine(engine, case_id) == before
        assert engine.get_case(case_id).state == "follow_up.visited"

        sign_in(b, url, HANDLER)
        b.get(case_url)  # type: ignore[attr-defined]
        do(b, "continue_work")
        do(b, "return_visit", satisfaction="satisfied")

        sign_in(b, url, CLERK)
        b.get(case_url)  # type: ignore[attr-defined]
        do(b, "archive")
        assert b.find("#state").get_attribute("data-state") == "archived"  # type: ignore[attr-defined]
        assert engine.get_case(case_id).state == "archived"
        assert history_on_page(b) == in_engine(engine, case_id)
        names = [n for _, _, n in history_on_page(b)]
        assert names == ["open", "accept", "assign", "decide", "reply", "return_visit",
                         "continue_work", "return_visit", "archive"]
        text = b.text()  # type: ignore[attr-defined]
        for label in ("已归档", "受理", "包案交办", "出具处理意见", "书面答复", "回访", "归档", "满意"):
            assert label in text, label
        page = b.html()  # type: ignore[attr-defined]
        assert NAME not in page and PHONE not in page and ID_NUMBER not in page


def test_without_pii_permission_the_browser_shows_no_personal_data(
        browser: object, server: Live) -> None:
    b, url, engine = browser, server.url, server.engine
    case = engine.open_case("petition", {**OPEN_DATA, "petitioner_name": NAME,
                                         "petitioner_phone": PHONE,
                                         "petitioner_id_number": ID_NUMBER}, actor=CLERK)
    engine.fire(case.id, "accept", actor=TRIAGE)
    with shots(b, "pii"):
        sign_in(b, url, HANDLER)
        for path, ready in ((f"/console/cases/{case.id}", "#events"),
                            ("/console/worklist?of=unit", "#tabs"),
                            ("/console/search?go=1&closed=on", "#results"),
                            ("/console/cases/no-such-case", "#error"),
                            ("/console/reports?all=1", "#figures"),
                            (f"/console/workflows/{case.workflow}", "#states")):
            b.get(url + path)  # type: ignore[attr-defined]
            b.wait(ready)  # type: ignore[attr-defined]
            page = b.html()  # type: ignore[attr-defined]
            for value in (NAME, PHONE, ID_NUMBER):
                assert value not in page, (value, path)
        # A refused step re-shows the case, still masked.
        b.get(f"{url}/console/cases/{case.id}")  # type: ignore[attr-defined]
        b.wait("#events")  # type: ignore[attr-defined]
        assert "***" in b.find("#data").text  # type: ignore[attr-defined]
        assert "信访人姓名" in b.text()  # type: ignore[attr-defined]
