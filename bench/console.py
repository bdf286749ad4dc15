"""``console``: the operator console's pages in a headless browser over a large store
(``bench/README.md``).

100,000 petitions with 10 events each (the ``reports`` suite's generator, bulk-loaded on
SQLite, with the lead unit, next deadline and holders the engine keeps for search derived
from them), and 1,000 new petitions opened through the engine (an office's arrivals: the
generated cases are all past their assignment, and a leader's worklist also looks for the
cases in the states a leader acts on by role alone), served by the HTTP service with its
console (uvicorn on 127.0.0.1, in a thread of this process). Debian's headless Chromium,
driven by selenium, signs in as a unit's leader and loads the worklist, a case page and
the report page, each ``--repeat`` times after a warm-up, in rotating order. From the
browser's Navigation Timing: the time to the first byte of the page (``responseStart``)
and the full page load (``loadEventEnd``: every style, script and image in the page
loaded). Beside them: the time to the first byte without a browser (httpx, the same
session cookie), a case page's first view (its timeline not drawn yet), the report
before anybody asked for it (its page comes back at once saying it is being computed; the
figures appear when the report is done), and ``engine.worklist`` itself.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from casework import Engine, FrozenClock

from .base import Ctx, Table, rotated, spread, target
from .db import PETITION, keyring, remove_db
from .reports import NOW, UNITS, Oracle, Scope, SQLiteTarget, generate

TOKEN = "bench-console-token"
UNIT = UNITS[0]
ACTOR = f"leader:wang@{UNIT}"
TARGET_MS = 200.0
PAGES = ("worklist", "case", "report")


@dataclass
class Config:
    cases: int = 100_000
    arrivals: int = 1_000   # opened through the engine after the fill, one in 5 accepted
    repeat: int = 10
    warmup: int = 2
    first_views: int = 5


def _engine_worklist_ms(engine: Engine, n: int = 5) -> list[float]:
    out = []
    for _ in range(n):
        t = time.perf_counter()
        engine.worklist(ACTOR, of="mine", limit=50)
        out.append((time.perf_counter() - t) * 1000)
    return out


def _arrivals(engine: Engine, n: int) -> None:
    """New petitions, as an office has every day: opened (and one in five accepted) through
    the engine, so some open cases wait in the states a leader acts on by role alone."""
    from tests.petition_steps import CLERK, OPEN_DATA, TRIAGE

    for i in range(n):
        case = engine.open_case("petition", {**OPEN_DATA, "petitioner_name": f"Arrival {i}"},
                                actor=CLERK)
        if i % 5 == 0:
            engine.fire(case.id, "accept", actor=TRIAGE)


def _derive(db: Path, progress: Any) -> None:
    """What the engine keeps beside each case for search and worklists, which the
    ``reports`` generator leaves out: the lead unit, the next deadline (a running handling
    clock's due; none otherwise) and who holds the case (its leader, handler and unit)."""
    import json

    from casework.persistence.sql import FAR_DT

    from .db import connect

    conn = connect(db, "OFF", foreign_keys=False)
    try:
        rows = conn.execute("SELECT id, data, clocks, final FROM cases").fetchall()
        updates, holders = [], []
        for cid, data_text, clocks_text, final in rows:
            data, clocks = json.loads(data_text), json.loads(clocks_text)
            handling = clocks.get("handling") or {}
            due, name = FAR_DT, None
            if not final and handling.get("status") == "running" and handling.get("due"):
                due = datetime.fromisoformat(handling["due"]).astimezone(UTC).replace(tzinfo=None)
                name = "handling"
            updates.append((data.get("unit"), due.isoformat(sep=" ", timespec="microseconds"),
                            name, cid))
            for slot, who, kind in (("leader", data.get("leader"), "person"),
                                    ("handler", data.get("handler"), "person"),
                                    ("lead_unit", f"@{data['unit']}" if data.get("unit") else None,
                                     "unit")):
                if who:
                    holders.append((cid, slot, who, kind))
        conn.execute("BEGIN")
        conn.executemany("UPDATE cases SET unit = ?, next_due_at = ?, next_deadline = ? "
                         "WHERE id = ?", updates)
        conn.executemany("INSERT INTO assignments (case_id, slot, who, kind, until) "
                         "VALUES (?, ?, ?, ?, NULL)", holders)
        conn.execute("COMMIT")
        conn.execute("ANALYZE")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()
    progress(f"  lead units, next deadlines and {len(holders):,} holders derived")


def _sign_in(b: Any, url: str) -> None:
    b.get(f"{url}/console/sign-in")
    b.fill("#credential", TOKEN)
    b.submit("#sign-in", "#worklist")


def _ttfb_http(url: str, cookie: str, path: str, n: int) -> list[float]:
    import httpx

    out = []
    with httpx.Client(base_url=url, cookies={"casework_session": cookie}, timeout=120) as c:
        for _ in range(n):
            t = time.perf_counter()
            with c.stream("GET", path) as r:
                out.append((time.perf_counter() - t) * 1000)
                r.read()
                if r.status_code != 200:
                    raise RuntimeError(f"{path}: HTTP {r.status_code}")
    return out


def run(ctx: Ctx) -> dict[str, Any]:
    from casework.http import HttpSettings, HttpTokenSettings, create_app, hash_token
    from casework.http.console.browser import Browser
    from casework.http.testing import ServerThread

    cfg = Config(cases=ctx.cases(100_000, 10_000), repeat=ctx.repeat(10, 3))
    if ctx.quick:
        cfg.warmup, cfg.first_views, cfg.arrivals = 1, 2, 100
    db = ctx.work / "console.db"
    remove_db(db)
    key_file = ctx.work / "bench.key"
    keys = keyring(key_file)
    url = f"sqlite:///{db}"
    engine = Engine(url, [PETITION], clock=FrozenClock(NOW), key_file=key_file)
    version = engine.workflow("petition").version
    ctx.progress(f"generating {cfg.cases:,} cases / {cfg.cases * 10:,} events into SQLite")
    load = generate(cfg.cases, version, [SQLiteTarget(db)], Oracle([Scope("all", None, None)]),
                    ctx.progress, keys)
    _derive(db, ctx.progress)
    bare = _engine_worklist_ms(engine)
    _arrivals(engine, cfg.arrivals)
    with_arrivals = _engine_worklist_ms(engine)
    ctx.progress(f"  {cfg.arrivals:,} arrivals opened; engine.worklist {min(bare):.0f} ms before, "
                 f"{min(with_arrivals):.0f} ms after")
    settings = HttpSettings(scheduler=False, pii_readers={"petition": ("leader", "supervisor")},
                            tokens=(HttpTokenSettings(name="bench", sha256=hash_token(TOKEN),
                                                      actor=ACTOR),))
    app = create_app(engine, settings, scheduler=False, webhooks=False)
    # The CJK font's slice is made once per machine (the browser here has no CJK font of its
    # own, so it uses the console's); made before the measurements, as a server that runs has.
    sliced = app.state.console.font_slice.wait(600)
    open_ids = [c.id for c in engine.cases(workflow="petition", unit=UNIT, limit=50).items]
    case_id = open_ids[0]
    paths = {"worklist": "/console/worklist", "case": f"/console/cases/{case_id}",
             "report": "/console/reports"}
    browser: dict[str, dict[str, list[float]]] = {p: {"ttfb": [], "load": []} for p in PAGES}
    try:
        with ServerThread(app, timeout=60) as srv, Browser(timeout=60) as b:
            _sign_in(b, srv.url)
            # The report nobody has asked for yet: its page at once, the figures when done.
            t0 = time.perf_counter()
            b.get(srv.url + paths["report"])
            cold = b.timing()
            b.wait("#report", timeout=900)
            computed = time.perf_counter() - t0
            ctx.progress(f"report computed in {computed:.1f} s after the first request")
            first_views = []
            for cid in open_ids[1:1 + cfg.first_views]:
                b.get(f"{srv.url}/console/cases/{cid}")
                first_views.append(b.timing())
            for _ in range(cfg.warmup):
                for p in PAGES:
                    b.get(srv.url + paths[p])
                    b.timing()
            for i in range(cfg.repeat):
                for p in rotated(list(PAGES), i):
                    b.get(srv.url + paths[p])
                    tm = b.timing()
                    browser[p]["ttfb"].append(tm["ttfb"])
                    browser[p]["load"].append(tm["load"])
            cookie = b.driver.get_cookie("casework_session")["value"]
            http = {p: _ttfb_http(srv.url, cookie, paths[p], cfg.repeat) for p in PAGES}
            b.get(srv.url + paths["worklist"])
            rows = len(b.all("#worklist tr.case-row"))
            b.get(srv.url + paths["case"])
            events = len(b.all("#events tr.event"))
    finally:
        app.state.casework.close()
        engine.close()
    stats = {p: {k: spread(v) for k, v in m.items()} for p, m in browser.items()}
    targets = []
    for p in PAGES:
        for k in ("ttfb", "load"):
            v = stats[p][k]["median"]
            targets.append(target(f"{p} {k}", v, f"< {TARGET_MS:g} ms", v < TARGET_MS))
    return {
        "config": {"cases": cfg.cases, "events": cfg.cases * 10, "repeat": cfg.repeat,
                   "arrivals": cfg.arrivals, "font_slice": sliced,
                   "warmup": cfg.warmup, "actor": ACTOR, "paths": paths,
                   "worklist_rows": rows, "case_events": events},
        "load_s": load, "db_mb": db.stat().st_size / 1e6,
        "engine_worklist_ms": {"no_arrivals": spread(bare), "arrivals": spread(with_arrivals)},
        "browser": stats, "http_ttfb": {p: spread(v) for p, v in http.items()},
        "first_view": {k: spread([t[k] for t in first_views]) for k in ("ttfb", "load")},
        "report_cold": {"ttfb": cold.get("ttfb"), "load": cold.get("load"),
                        "computed_s": computed},
        "targets": targets,
    }


def table(res: dict[str, Any]) -> Table:
    cfg = res["config"]
    t = Table([f"{cfg['cases']:,} petition cases, {cfg['events']:,} events on SQLite "
               f"({res['db_mb']:.0f} MB) and {cfg['arrivals']:,} new ones opened through the "
               f"engine; headless Chromium signed in as {cfg['actor']}; "
               f"{cfg['repeat']} loads of each page after {cfg['warmup']} warm-up, rotating; "
               f"the worklist shows {cfg['worklist_rows']} rows, the case {cfg['case_events']} "
               "events"], fine=True)
    names = {"worklist": "worklist (mine)", "case": "case page", "report": "report page"}
    for p in PAGES:
        t.add(f"{names[p]}: {cfg['paths'][p]}")
        t.add("  time to first byte (browser)", res["browser"][p]["ttfb"], "ms", f"{p} ttfb")
        t.add("  full page load (browser)", res["browser"][p]["load"], "ms", f"{p} load")
        t.add("  time to first byte (httpx, no browser)", res["http_ttfb"][p], "ms")
    t.add("a case page's first view (its timeline drawn then)")
    t.add("  time to first byte", res["first_view"]["ttfb"], "ms")
    t.add("  full page load", res["first_view"]["load"], "ms")
    rc = res["report_cold"]
    t.add("the report page before the report was ever computed")
    t.add("  time to first byte (the page says it is computing)", rc["ttfb"], "ms")
    t.add("  full page load", rc["load"], "ms")
    t.add("  the figures shown after", rc["computed_s"] * 1000, "ms")
    ew = res["engine_worklist_ms"]
    t.add("engine.worklist in-process, the page's own query (mine, 50 rows)")
    t.add("  with no open case in registered or accepted", ew["no_arrivals"], "ms")
    t.add("  with the new arrivals", ew["arrivals"], "ms")
    t.notes.append("the browser has no CJK font of its own: it uses the console's, a 2 MB "
                   "slice of the packaged Noto Sans SC" + ("" if cfg.get("font_slice") else
                                                            " (not made: the whole 8 MB font)"))
    t.notes.append("the report page shows a computed report (kept 10 minutes, then computed again "
                   "in the background while the last one is shown); the case page's timeline "
                   "is drawn once per case version and kept")
    return t
