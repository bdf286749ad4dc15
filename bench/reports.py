"""``reports``: reports and chain verification over a large history (``bench/README.md``).

100,000 petitions with exactly 10 events each, made up in six courses (:data:`COURSES`:
archived, archived after an escalation or a review, in follow-up, overdue, in review) with
the data the engine would have written, bulk-loaded on SQLite and on PostgreSQL; then
``engine.report`` (all time, by unit, one month) and ``engine.verify`` are timed, and every
report is checked against the figures counted while generating (:class:`Oracle`): a wrong
query cannot look fast.
"""

from __future__ import annotations

import math
import random
import statistics
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from datetime import time as dtime
from pathlib import Path
from typing import Any, Protocol

from casework import Engine, FrozenClock, StoreError
from casework.persistence import DatabaseUnavailable, Keyring, Store, reporting
from sqlalchemy import exc as sa_exc

from .base import Ctx, Progress, Table, patched, rotated, spread, target, timed
from .db import (
    PETITION,
    Throwaway,
    chain,
    connect,
    dumps,
    insert_sql,
    keyring,
    pg_one,
    remove_db,
    sealed,
    server_started,
    server_version,
    wait_for_server,
)
from .workload import EVENT_COLS

NOW = datetime(2026, 11, 1, 1, 0, tzinfo=UTC)  # the engine's frozen clock
FIRST_OPEN = datetime(2025, 1, 1)  # cases open between these (naive UTC) ...
LAST_OPEN = datetime(2026, 7, 1)  # ... and every course ends within 130 days, before NOW
MONTH = (date(2026, 3, 1), date(2026, 4, 1))  # the period report: March 2026
EVENTS_PER_CASE = 10
BATCH_CASES = 5_000
BACKENDS = ("sqlite", "postgresql")
FIGURES = ("report, all figures", "report by unit", "report, one month", "verify, all cases",
           "events: all figures", "events: by unit", "events: one month")
# The reports read from the maintained figures (after one rebuild from the bulk-loaded
# events), then the same reports counted from the events, the floor they used to be.

UNITS = ("enforcement bureau", "civil division 1", "civil division 2", "criminal division",
         "administrative division", "case filing division", "petition office",
         "state compensation office", "juvenile division", "trial supervision division")
SOURCES = ("central", "province", "city", "direct", "carried_over")
SOURCE_WEIGHTS = (5, 15, 25, 45, 10)
HANDED_DOWN = {"central", "province", "city"}
CHANNELS = ("visit", "letter", "phone", "online")
CONCERNS = ("police", "procuratorate", "court", "justice_bureau", "township", "other")
LEADERS = ("wang", "liu", "zhang", "chen", "yang", "zhao", "huang", "zhou")
HANDLERS = tuple(f"{s}{g}" for s in ("chen", "li", "wu", "xu", "sun", "ma")
                 for g in ("", "jun", "min", "hua", "lei"))
CLERKS = ("li", "he", "guo", "lin")
SURNAMES = ("Zhang", "Wang", "Li", "Zhao", "Liu", "Chen", "Yang", "Huang", "Zhou", "Wu", "Xu",
            "Sun", "Hu", "Zhu", "Gao", "Lin", "He", "Guo", "Ma", "Luo")
GIVEN = ("Wei", "Fang", "Na", "Min", "Jing", "Li", "Qiang", "Lei", "Jun", "Yang", "Yong", "Yan",
         "Jie", "Tao", "Ming", "Chao", "Xiu", "Hua", "Ping", "Gang")
SUMMARIES = (
    "Asks for the enforcement of a civil judgment that has not been carried out.",
    "Disputes the compensation awarded for land requisitioned by the township.",
    "Complains that a criminal complaint was not filed by the police station.",
    "Asks for a retrial of a labour dispute decided against the petitioner.",
    "Says the court delayed the hearing of a loan dispute for over a year.",
    "Objects to the seizure of a house during the enforcement of a debt.",
)
ACTIVITIES = ("home_visit", "coordination_meeting", "funds_raised", "thought_work")
IN_REVIEW = ("home_visit", "coordination_meeting", "thought_work")  # funds_raised is not allowed
COURSES = (("archived", 50), ("archived_escalated", 10), ("archived_after_review", 5),
           ("follow_up", 15), ("overdue", 10), ("review", 10))
FINAL_STATES = {"archived"}
DAY = 86_400.0


def _z(t: datetime) -> str:
    return f"{t:%Y-%m-%dT%H:%M:%S}Z"


def _aware(t: datetime) -> str:
    return t.replace(tzinfo=UTC).isoformat()


# -- generation --------------------------------------------------------------------------------

CASE_COLS = ("id", "workflow", "version", "state", "final", "data", "escalation_level", "opened_at",
             "updated_at", "row_version", "last_seq", "last_hash", "clocks", "at_risk",
             "overdue_since", "party_key", "closed_at", "seal")


@dataclass
class Facts:
    """What the reports should count for one case (kept only as counters, see Oracle)."""

    opened: datetime
    unit: str
    source: str
    by_head: bool
    state: str
    closed: datetime | None
    overdue_since: datetime | None
    review: bool
    events: list[tuple[str, str, datetime, float]] = field(default_factory=list)  # kind, name, at, amount
    stays: list[tuple[str, datetime, datetime]] = field(default_factory=list)  # state, entered, left


class _Case:
    """Builds one case's events and its data the way the engine writes them."""

    def __init__(self, rng: random.Random, cid: str, opened: datetime) -> None:
        self.rng = rng
        self.id = cid
        self.t = opened
        self.state: str | None = None
        self.entered: datetime = opened
        self.data: dict[str, Any] = {}
        self.rows: list[dict[str, Any]] = []
        self.stays: list[tuple[str, datetime, datetime]] = []
        self.events: list[tuple[str, str, datetime, float]] = []

    def later(self, lo_days: float, hi_days: float) -> datetime:
        self.t += timedelta(seconds=self.rng.uniform(lo_days * DAY, hi_days * DAY))
        self.t = self.t.replace(microsecond=self.rng.randrange(1_000_000))
        return self.t

    def event(self, kind: str, name: str, to_state: str | None, actor: str | None, role: str | None,
              changes: dict[str, Any], details: dict[str, Any], key: str | None = None,
              amount: float = 0.0) -> None:
        at = self.t
        from_state = self.state
        to = to_state or from_state
        self.rows.append({"seq": len(self.rows) + 1, "kind": kind, "name": name,
                          "from_state": from_state, "to_state": to, "actor": actor, "role": role,
                          "at": at, "changes": dumps(changes), "details": dumps(details),
                          "idempotency_key": key})
        self.data.update(changes)
        if kind in ("open", "transition") and (from_state is None or from_state != to):
            if from_state is not None:
                self.stays.append((from_state, self.entered, at))
            self.entered = at
        self.state = to
        self.events.append((kind, name, at, amount))


def _activity(c: _Case, name: str, leader: str, handler: str) -> None:
    rng = c.rng
    if name == "home_visit":
        c.event("activity", name, None, leader, "leader", {},
                {"visitor": leader, "notes": "Visited the petitioner at home with the handler."})
    elif name == "coordination_meeting":
        who = rng.sample(("court", "procuratorate", "police", "township", "justice bureau",
                          "human resources bureau"), 3)
        c.event("activity", name, None, leader, "leader", {},
                {"attendees": who, "agreed": "Each body answers in writing within 15 days."})
    elif name == "funds_raised":
        amount = float(rng.randrange(1, 200) * 500)
        total = float(c.data.get("funds_total") or 0) + amount
        c.event("activity", name, None, leader, "leader", {"funds_total": total},
                {"amount": amount, "funded_by": rng.choice(("county", "township", "relief fund"))},
                amount=amount)
    else:
        c.event("activity", "thought_work", None, handler, "handler", {},
                {"notes": "Explained the law and the judgment; the petitioner listened."})


def make_case(rng: random.Random, version: str,
              keys: Keyring) -> tuple[tuple[Any, ...], list[tuple[Any, ...]], Facts]:
    """One case row (native values), its 10 event rows, and its facts for the oracle."""
    course = rng.choices([c for c, _ in COURSES], weights=[w for _, w in COURSES])[0]
    opened = FIRST_OPEN + timedelta(seconds=rng.uniform(0, (LAST_OPEN - FIRST_OPEN).total_seconds()))
    c = _Case(rng, f"{rng.getrandbits(128):032x}", opened.replace(microsecond=rng.randrange(10**6)))
    unit, source = rng.choice(UNITS), rng.choices(SOURCES, weights=SOURCE_WEIGHTS)[0]
    leader, handler, clerk = rng.choice(LEADERS), rng.choice(HANDLERS), rng.choice(CLERKS)
    opening: dict[str, Any] = {
        "petitioner_name": f"{rng.choice(SURNAMES)} {rng.choice(GIVEN)}",
        "petitioner_phone": f"13{rng.randrange(10**9):09d}",
        "petitioner_id_number": f"{rng.randrange(10**17):017d}X",
        "channel": rng.choice(CHANNELS), "source": source, "concerns": rng.choice(CONCERNS),
        "summary": rng.choice(SUMMARIES), "first_handler": clerk,
        "petition_count": rng.choice((1, 1, 1, 1, 2, 2, 3, 5)),
    }
    by_head = rng.random() < 0.12
    if by_head:
        opening.update(received_by_head=True, receiving_leader=leader)
    elif rng.random() < 0.3:
        opening["received_by_head"] = False
    if rng.random() < 0.05:
        opening["group_petition"] = True
    c.event("open", "open", "registered", clerk, "clerk", opening, {})
    c.later(0.2, 10)
    c.event("transition", "accept", "accepted", rng.choice(("zhao", "qian")), "triage",
            {"accepted_at": _z(c.t)}, {})
    accepted = c.t
    handling_due = accepted + timedelta(days=60)
    c.later(0.5, 5)
    c.event("transition", "assign", "handling.investigating", leader, "leader",
            {"leader": leader, "handler": handler, "unit": unit,
             "due_date": (accepted + timedelta(days=60)).date().isoformat(),
             "target": "resolve the claim lawfully or explain in writing why not"}, {})
    timer = [0]

    def system(kind: str, name: str, details: dict[str, Any]) -> None:
        timer[0] += 1
        c.event(kind, name, None, "scheduler", "system", {},
                {"timer": timer[0], "deadline": "handling", **details},
                key=f"timer:{c.id[:8]}:{timer[0]}")

    def escalate(rung: str, level: int, at: datetime) -> None:
        c.t = max(c.t, at)
        over = (c.t - handling_due).total_seconds()
        system("escalation", rung, {"due": _aware(at), "deadline_due": _aware(handling_due),
                                    "level": level, "rung": rung, "overdue_seconds": over,
                                    "overdue_days": round(over / DAY, 2)})

    def activities(n: int, lo: float = 1, hi: float = 8, allowed: Sequence[str] = ACTIVITIES) -> None:
        for _ in range(n):
            c.later(lo, hi)
            _activity(c, rng.choice(allowed), leader, handler)

    def decide_and_reply() -> None:
        c.later(1, 6)
        c.event("transition", "decide", "handling.decided", handler, "handler",
                {"outcome": rng.choice(("full_correction", "partial_correction", "explanation",
                                        "maintained")),
                 "decision_summary": "Decided after hearing both sides; see the file."}, {})
        c.later(1, 4)
        c.event("transition", "reply", "replied", handler, "handler",
                {"replied_at": _z(c.t), "reply_summary": "Written reply handed over in person."}, {})

    def visit(satisfied: bool, lo: float = 3, hi: float = 12) -> None:
        c.later(lo, hi)
        c.event("transition", "return_visit", "follow_up.visited", handler, "handler",
                {"satisfaction": "satisfied" if satisfied else "unsatisfied",
                 "visit_count": int(c.data.get("visit_count") or 0) + 1, "last_visit_at": _z(c.t)},
                {})

    def archive() -> None:
        c.later(0.5, 5)
        c.event("transition", "archive", "archived", rng.choice(("sun", "he")), "archivist",
                {"archived_at": _z(c.t)}, {})

    def request_review() -> None:
        c.later(1, 10)
        c.event("transition", "request_review", "review.requested", clerk, "clerk",
                {"review_requested_at": _z(c.t)}, {})

    overdue_since: datetime | None = None
    escalation_level = 0
    if course == "archived":
        activities(3)
        decide_and_reply()
        visit(True)
        archive()
    elif course == "archived_escalated":
        activities(1)
        escalate("supervision_notice", 1, handling_due + timedelta(hours=1))
        escalation_level = 1
        activities(1, 0.5, 4)
        decide_and_reply()
        visit(True)
        archive()
    elif course == "archived_after_review":
        activities(1)
        decide_and_reply()
        request_review()
        c.later(5, 25)
        c.event("transition", "answer_review", "review.answered", "review:city", "reviewer",
                {"review_result": rng.choice(("upheld", "changed")),
                 "review_answered_at": _z(c.t)}, {})
        visit(True)
        archive()
    elif course == "follow_up":
        activities(3)
        decide_and_reply()
        visit(False)
        c.later(0.1, 2)
        c.event("transition", "continue_work", "follow_up.continued_work", handler, "handler", {}, {})
    elif course == "overdue":
        activities(1, 1, 9)
        for share in (0.5, 0.8):
            c.t = max(c.t, accepted + timedelta(days=60 * share))
            system("warning", "handling_warning", {"share": share, "deadline_due": _aware(handling_due),
                                                   "due": _aware(c.t)})
        activities(1, 0.5, 3)
        escalate("supervision_notice", 1, handling_due + timedelta(hours=1))
        activities(1, 0.5, 5)
        escalate("public_notice", 2, handling_due + timedelta(days=10, hours=1))
        overdue_since, escalation_level = handling_due, 2
    else:  # review
        activities(2)
        decide_and_reply()
        visit(False)
        request_review()
        activities(1, 1, 8, IN_REVIEW)
    assert len(c.rows) == EVENTS_PER_CASE, (course, len(c.rows))
    assert c.state is not None
    final = c.state in FINAL_STATES
    closed = c.t if final else None
    clocks = _clocks(c, opened, accepted, handling_due, escalation_level)
    chained = chain(c.id, c.rows, keys)
    events = [tuple(e[k] for k in EVENT_COLS) for e in chained]
    unsealed = (c.id, "petition", version, c.state, final, dumps(c.data), escalation_level,
                c.rows[0]["at"], c.t, EVENTS_PER_CASE, EVENTS_PER_CASE, chained[-1]["hash"],
                dumps(clocks), False, overdue_since, None, closed)
    row = (*unsealed, sealed(dict(zip(CASE_COLS, unsealed, strict=False)), keys))
    facts = Facts(c.rows[0]["at"], unit, source, by_head, c.state, closed, overdue_since,
                  any(r["name"] == "request_review" for r in c.rows), c.events, c.stays)
    return row, events, facts


def _clocks(c: _Case, opened: datetime, accepted: datetime, due: datetime,
            breaches: int) -> dict[str, Any]:
    """The SLA clocks the engine keeps on a case (triage stopped; handling as it stands)."""
    triage = (accepted - opened).total_seconds()
    replied = next((r["at"] for r in c.rows if r["name"] == "reply"), None)
    handling: dict[str, Any] = {"breaches": breaches, "due": _aware(due), "start": _aware(accepted),
                                "total": 60 * DAY}
    if replied is not None:
        spent = (replied - accepted).total_seconds()
        handling.update(status="stopped", since=None, stopped_at=_aware(replied), elapsed=spent,
                        actual_elapsed=spent, met=breaches == 0)
    else:
        handling.update(status="running", since=_aware(accepted), elapsed=0.0)
    return {"triage": {"actual_elapsed": triage, "breaches": 0, "due": _aware(opened + timedelta(days=15)),
                       "elapsed": triage, "met": True, "since": None, "start": _aware(opened),
                       "status": "stopped", "stopped_at": _aware(accepted), "total": 15 * DAY},
            "handling": handling}


# -- the oracle: the figures counted while generating ------------------------------------------

@dataclass
class Scope:
    name: str
    start: datetime | None  # naive UTC, as the engine compares
    end: datetime | None
    by_unit: bool = False


class Oracle:
    """Per scope and group: each report figure, escalations per rung, stays per state."""

    def __init__(self, scopes: Sequence[Scope]) -> None:
        self.scopes = list(scopes)
        self.figures: dict[tuple[str, str], dict[str, float]] = defaultdict(lambda: defaultdict(float))
        self.rungs: dict[str, Counter[str]] = defaultdict(Counter)
        self.stays: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(lambda: [0, 0.0]))

    def add(self, f: Facts) -> None:
        for s in self.scopes:
            def inside(t: datetime | None, s: Scope = s) -> bool:
                return t is not None and (s.start is None or t >= s.start) and (s.end is None or t < s.end)

            fig = self.figures[(s.name, f.unit if s.by_unit else "all")]
            if inside(f.opened):
                fig["received"] += 1
                fig["handed_down"] += f.source in HANDED_DOWN
                fig["received_by_head"] += f.by_head
            closed_in = inside(f.closed)
            fig["concluded"] += closed_in
            fig["resolved"] += closed_in and f.state == "archived"
            fig["resolved_first_time"] += closed_in and f.state == "archived" and not f.review
            final = f.closed is not None
            if s.end is None:
                fig["in_progress"] += not final
            else:
                fig["in_progress"] += f.opened < s.end and (f.closed is None or f.closed >= s.end)
            at_end = s.end or NOW.replace(tzinfo=None)
            fig["overdue"] += (not final and f.overdue_since is not None and f.overdue_since < at_end)
            for kind, name, at, amount in f.events:
                if not inside(at):
                    continue
                if name == "accept":
                    fig["accepted"] += 1
                elif name == "home_visit":
                    fig["home_visits"] += 1
                elif name == "coordination_meeting":
                    fig["coordination_meetings"] += 1
                elif name == "funds_raised":
                    fig["funds_raised"] += amount
                if kind == "escalation":
                    fig["escalations"] += 1
                    if not s.by_unit:
                        self.rungs[s.name][name] += 1
            if not s.by_unit:
                for state, entered, left in f.stays:
                    if inside(left):
                        st = self.stays[s.name][state]
                        st[0] += 1
                        st[1] += (left - entered).total_seconds()

    def expected(self, scope: str, group: str = "all") -> dict[str, float | None]:
        fig = self.figures[(scope, group)]
        out: dict[str, float | None] = {k: float(fig.get(k, 0)) for k in (
            "received", "handed_down", "received_by_head", "accepted", "concluded", "resolved",
            "resolved_first_time", "in_progress", "home_visits", "coordination_meetings",
            "funds_raised", "overdue", "escalations")}
        received = out["received"] or 0
        out["closure_rate"] = (out["resolved"] or 0) / received if received else None
        return out

    def groups(self, scope: str) -> list[str]:
        return sorted(g for s, g in self.figures if s == scope)


def check_report(report: Any, oracle: Oracle, scope: str, by_unit_scope: str | None = None
                 ) -> list[str]:
    """Differences between a report and the oracle (empty when they agree)."""
    bad: list[str] = []

    def same(a: float | None, b: float | None, tol: float = 1e-9) -> bool:
        if a is None or b is None:
            return a is b
        return math.isclose(a, b, rel_tol=tol, abs_tol=tol)

    want = oracle.expected(scope)
    for k, v in want.items():
        if not same(report.totals.get(k), v):
            bad.append(f"{scope}: {k} = {report.totals.get(k)}, expected {v}")
    extra = set(report.totals) - set(want)
    if extra:
        bad.append(f"{scope}: figures the bench does not know: {sorted(extra)}")
    if dict(report.escalations) != dict(oracle.rungs[scope]):
        bad.append(f"{scope}: escalations by rung {dict(report.escalations)}, "
                   f"expected {dict(oracle.rungs[scope])}")
    if report.overdue[0] != want["overdue"]:
        bad.append(f"{scope}: overdue section {report.overdue[0]}, expected {want['overdue']}")
    stays = {st: (n, total / n) for st, (n, total) in oracle.stays[scope].items()}
    got = {st: (n, avg) for st, (n, avg, _) in report.time_in_state.items()}
    if set(got) != set(stays):
        bad.append(f"{scope}: time in state for {sorted(got)}, expected {sorted(stays)}")
    for st, (n, avg) in stays.items():
        if st in got and (got[st][0] != n or abs(got[st][1] - avg) > 1.0):
            bad.append(f"{scope}: time in {st}: {got[st]}, expected {(n, avg)}")
    if by_unit_scope is not None:
        groups = oracle.groups(by_unit_scope)
        if sorted(report.rows) != groups:
            bad.append(f"by unit: groups {sorted(report.rows)}, expected {groups}")
        for g in groups:
            for k, v in oracle.expected(by_unit_scope, g).items():
                if g in report.rows and not same(report.rows[g].get(k), v):
                    bad.append(f"by unit {g!r}: {k} = {report.rows[g].get(k)}, expected {v}")
    return bad


# -- loading -----------------------------------------------------------------------------------

class Target(Protocol):
    name: str

    def write(self, cases: list[tuple[Any, ...]], events: list[tuple[Any, ...]]) -> None: ...

    def finish(self) -> None: ...


def _sqlite_dt(v: datetime | None) -> str | None:
    return None if v is None else v.isoformat(sep=" ", timespec="microseconds")


class SQLiteTarget:
    name = "sqlite"

    def __init__(self, db: Path) -> None:
        self.conn = connect(db, "OFF", foreign_keys=False)
        self.conn.execute("BEGIN")
        self.ins_case, self.ins_event = insert_sql("cases", CASE_COLS), insert_sql("events", EVENT_COLS)
        self.case_dt = [CASE_COLS.index(c) for c in ("opened_at", "updated_at", "overdue_since",
                                                      "closed_at")]
        self.case_bool = [CASE_COLS.index(c) for c in ("final", "at_risk")]
        self.event_at = EVENT_COLS.index("at")

    def write(self, cases: list[tuple[Any, ...]], events: list[tuple[Any, ...]]) -> None:
        def case_row(r: tuple[Any, ...]) -> list[Any]:
            out = list(r)
            for i in self.case_dt:
                out[i] = _sqlite_dt(out[i])
            for i in self.case_bool:
                out[i] = int(out[i])
            return out

        a = self.event_at
        self.conn.executemany(self.ins_case, [case_row(r) for r in cases])
        self.conn.executemany(self.ins_event, [(*r[:a], _sqlite_dt(r[a]), *r[a + 1:]) for r in events])

    def finish(self) -> None:
        self.conn.execute("COMMIT")
        self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        self.conn.close()


class PostgresTarget:
    name = "postgresql"

    def __init__(self, url: str) -> None:
        import psycopg

        self.url = url
        self.conn = psycopg.connect(url)
        self.copy_cases = f"COPY cases ({', '.join(CASE_COLS)}) FROM STDIN"
        self.copy_events = f"COPY events ({', '.join(EVENT_COLS)}) FROM STDIN"

    def write(self, cases: list[tuple[Any, ...]], events: list[tuple[Any, ...]]) -> None:
        with self.conn.cursor() as cur:
            with cur.copy(self.copy_cases) as cp:
                for r in cases:
                    cp.write_row(r)
            with cur.copy(self.copy_events) as cp:
                for r in events:
                    cp.write_row(r)

    def finish(self) -> None:
        self.conn.commit()
        self.conn.close()
        pg_one(self.url, "VACUUM ANALYZE")


def generate(n_cases: int, version: str, targets: Sequence[Target], oracle: Oracle,
             progress: Progress, keys: Keyring, seed: int = 20260301) -> dict[str, float]:
    """Make ``n_cases`` cases and write them to every target; seconds spent per target."""
    rng = random.Random(seed)
    spent: dict[str, float] = defaultdict(float)
    spent["generate"] = 0.0
    done = 0
    while done < n_cases:
        t = time.perf_counter()
        cases, events = [], []
        for _ in range(min(BATCH_CASES, n_cases - done)):
            row, evs, facts = make_case(rng, version, keys)
            cases.append(row)
            events.extend(evs)
            oracle.add(facts)
        spent["generate"] += time.perf_counter() - t
        for tg in targets:
            t = time.perf_counter()
            tg.write(cases, events)
            spent[tg.name] += time.perf_counter() - t
        done += len(cases)
        if done % (BATCH_CASES * 4) == 0 or done == n_cases:
            progress(f"  {done:,} cases, {done * EVENTS_PER_CASE:,} events")
    for tg in targets:
        t = time.perf_counter()
        tg.finish()
        spent[tg.name] += time.perf_counter() - t
    return dict(spent)


# -- timing ------------------------------------------------------------------------------------

def month_bounds(engine: Engine) -> tuple[datetime, datetime]:
    """March 2026 as the engine reads two dates: midnights in the workflow's zone, as naive UTC."""
    tz = engine.workflow("petition").tz
    lo, hi = (datetime.combine(d, dtime(0), tz).astimezone(UTC).replace(tzinfo=None) for d in MONTH)
    return lo, hi


QUERY_KINDS = ("cases_opened", "events", "open_at", "closed", "overdue", "escalations",
               "time_in_state")


@contextmanager
def query_log() -> Iterator[dict[str, Any]]:
    """Time each kind of report query and count the rows they hand to Python (the engine's
    behaviour is unchanged: its ``ReportQueries`` methods are wrapped, then put back)."""
    log: dict[str, Any] = {"seconds": defaultdict(float), "rows": 0, "queries": 0}
    cls = reporting.ReportQueries
    run = cls._run

    def counted(self: Any, stmt: Any) -> list[Any]:
        rows: list[Any] = run(self, stmt)
        log["rows"] += len(rows)
        log["queries"] += 1
        return rows

    with patched(cls, _run=counted, **{k: timed(getattr(cls, k), log["seconds"], k)
                                       for k in QUERY_KINDS}):
        yield log


@dataclass
class Figure:
    seconds: list[float] = field(default_factory=list)
    breakdown: list[dict[str, float]] = field(default_factory=list)
    rows: int = 0
    queries: int = 0
    voided: int = 0  # runs thrown away because the server restarted under them


@dataclass
class Backend:
    """One database under test: the engine on it, and a store of the bench's own."""

    name: str
    url: str
    engine: Engine
    store: Store


def time_figures(backends: list[Backend], oracle: Oracle, repeat: int, progress: Progress
                 ) -> tuple[dict[str, dict[str, Figure]], list[str]]:
    """Each figure on each backend, ``repeat`` times; the reports checked every time.

    On PostgreSQL a run under which the server restarted (other tests here restart it)
    is thrown away and measured again after one untimed run to warm the server's cache.
    """
    runs = {b.name: {f: Figure() for f in FIGURES} for b in backends}
    problems: list[str] = []
    calls: dict[str, Callable[[Engine], Any]] = {
        FIGURES[0]: lambda e: e.report("petition"),
        FIGURES[1]: lambda e: e.report("petition", by="unit"),
        FIGURES[2]: lambda e: e.report("petition", start=MONTH[0], end=MONTH[1]),
        FIGURES[3]: lambda e: e.verify(),
        FIGURES[4]: lambda e: e.report("petition", source="events"),
        FIGURES[5]: lambda e: e.report("petition", by="unit", source="events"),
        FIGURES[6]: lambda e: e.report("petition", start=MONTH[0], end=MONTH[1], source="events"),
    }
    for rep in range(repeat):
        for b in rotated(backends, rep):
            pg = b.name == "postgresql"
            for fig in FIGURES:
                rec = runs[b.name][fig]
                for attempt in range(6):
                    started = server_started(b.url) if pg else None
                    try:
                        with query_log() as log:
                            t = time.perf_counter()
                            out = calls[fig](b.engine)
                            seconds = time.perf_counter() - t
                        if not pg or server_started(b.url) == started:
                            break
                        why = "the server restarted during the run"
                    except (StoreError, DatabaseUnavailable, sa_exc.DBAPIError) as e:
                        if not pg or attempt == 5:
                            raise
                        why = f"{type(e).__name__}"
                    rec.voided += 1
                    progress(f"  {b.name} {fig}: {why}; measuring again")
                    wait_for_server(b.url, progress)
                    calls[fig](b.engine)  # untimed: the server's cache is cold after a restart
                else:
                    raise RuntimeError(f"{b.name} {fig}: the server kept restarting")
                rec.seconds.append(seconds)
                rec.breakdown.append(dict(log["seconds"]))
                rec.rows, rec.queries = log["rows"], log["queries"]
                if fig in (FIGURES[0], FIGURES[4]):
                    bad = check_report(out, oracle, "all")
                elif fig in (FIGURES[1], FIGURES[5]):
                    bad = check_report(out, oracle, "all", by_unit_scope="units")
                elif fig in (FIGURES[2], FIGURES[6]):
                    bad = check_report(out, oracle, "month")
                else:
                    bad = [f"verify: {p}" for p in out[:5]]
                if fig in FIGURES[:3] and out.source != "figures":
                    bad.append(f"{fig} was not read from the maintained figures: {out.note}")
                problems += [f"{b.name}: {x}" for x in bad]
                progress(f"run {rep + 1}/{repeat} {b.name:<10} {fig:<20} {seconds:7.2f} s"
                         f"{'' if not bad else f'  WRONG ({len(bad)} differences)'}")
    for b in backends:  # verify must notice an altered event
        problems += [f"{b.name}: {p}" for p in tamper_check(b)]
    return runs, problems


def tamper_check(b: Backend) -> list[str]:
    """Alter one stored event behind the engine's back; verify of its case must say so."""
    with b.store.read() as tx:
        ids = tx.case_ids("petition")
    cid = ids[len(ids) // 2]
    sql = ("UPDATE events SET details = '{\"notes\":\"rewritten\"}' WHERE case_id = {p} AND seq = 5"
           .replace("{p}", "?" if b.name == "sqlite" else "%s"))
    with b.store.write() as wtx:
        wtx.cur.execute(sql, (cid,))
    if not b.engine.verify(cid):
        return [f"verify did not notice an altered event in case {cid}"]
    return []


def _count(store: Store) -> tuple[int, int]:
    with store.read() as tx:
        n_cases = tx.count_cases()
        tx.cur.execute("SELECT count(*) FROM events")
        n_events = int(tx.cur.fetchone()[0])
    return n_cases, n_events


def run(ctx: Ctx) -> dict[str, Any]:
    cases, repeat = ctx.cases(100_000, 10_000), ctx.repeat(3)
    names = BACKENDS if ctx.args.backend == "both" else (ctx.args.backend,)
    backends: list[Backend] = []
    pg: Throwaway | None = None
    server: str | None = None

    key_file = ctx.work / "bench.key"  # both databases under one office's key
    keys = keyring(key_file)

    def add(name: str, url: str) -> None:
        backends.append(Backend(name, url, Engine(url, [PETITION], clock=FrozenClock(NOW),
                                                  key_file=key_file),
                                Store(url, keyring=keys)))

    try:
        targets: list[Target] = []
        db = ctx.work / "reports.db"
        if "sqlite" in names:
            remove_db(db)
            add("sqlite", f"sqlite:///{db}")
            targets.append(SQLiteTarget(db))
        if "postgresql" in names:
            pg = Throwaway(ctx.args.admin_url, prefix="casework_reports")
            add("postgresql", pg.engine_url)
            targets.append(PostgresTarget(pg.url))
        first = backends[0].engine
        version = first.workflow("petition").version
        lo, hi = month_bounds(first)
        oracle = Oracle([Scope("all", None, None), Scope("units", None, None, by_unit=True),
                         Scope("month", lo, hi)])
        ctx.progress(f"generating {cases:,} cases / {cases * EVENTS_PER_CASE:,} events "
                     f"into {', '.join(names)}")
        load = generate(cases, version, targets, oracle, ctx.progress, keys)
        ctx.progress("load seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in load.items()))
        for b in backends:
            if _count(b.store) != (cases, cases * EVENTS_PER_CASE):
                raise RuntimeError(f"{b.name} holds {_count(b.store)} cases and events")
        rebuild: dict[str, float] = {}
        for b in backends:  # the bulk load wrote no figures: build them once from the events
            [built] = b.engine.rebuild_figures("petition")
            rebuild[b.name] = built.seconds
            ctx.progress(f"{b.name}: figures rebuilt in {built.seconds:.1f} s "
                         f"({built.cells:,} cells, {built.stays:,} stays)")
        runs, problems = time_figures(backends, oracle, repeat, ctx.progress)
        for b in backends:
            [checked] = b.engine.rebuild_figures("petition", check=True)
            problems += [f"{b.name}: figures {d}" for d in checked.differences[:5]]
        db_mb = {"sqlite": db.stat().st_size / 1e6} if "sqlite" in names else {}
        if pg is not None:
            db_mb["postgresql"] = pg_one(pg.url, "SELECT pg_database_size(current_database())")[0] / 1e6
            server = server_version(pg.url)
    finally:
        for b in backends:
            b.engine.close()
            b.store.dispose()
        if pg is not None:
            pg.drop()
    return {
        "config": {"cases": cases, "events": cases * EVENTS_PER_CASE, "repeat": repeat,
                   "backends": list(names), "month": [d.isoformat() for d in MONTH]},
        "postgresql": server, "db_mb": db_mb, "load_s": load, "rebuild_s": rebuild,
        "expected": {"all": oracle.expected("all"), "month": oracle.expected("month"),
                     "units": len(oracle.groups("units")),
                     "escalations_by_rung": dict(oracle.rungs["all"])},
        "seconds": {b: {f: {**spread(r.seconds), "voided": r.voided, "queries": r.queries,
                            "rows_to_python": r.rows,
                            "by_query": {k: statistics.median(d.get(k, 0.0) for d in r.breakdown)
                                         for k in QUERY_KINDS}}
                        for f, r in figs.items()} for b, figs in runs.items()},
        "problems": problems,
        "targets": [target("reports and verify agree with the generated data", len(problems),
                           "no difference", not problems),
                    *(target(f"{fig} from the figures, {b}: median under 1 s",
                             spread(r.seconds)["median"], "< 1 s", spread(r.seconds)["median"] < 1.0)
                      for b, figs in runs.items() for fig, r in figs.items() if fig in FIGURES[:3])],
    }


def table(res: dict[str, Any]) -> Table:
    cfg, exp, secs = res["config"], res["expected"], res["seconds"]
    backends = cfg["backends"]
    t = Table([f"{cfg['cases']:,} petition cases, {cfg['events']:,} events"
               + (f"; PostgreSQL {res['postgresql']}" if res["postgresql"] else "")
               + "; database size: " + ", ".join(f"{b} {mb:.0f} MB" for b, mb in res["db_mb"].items())
               + "; load: " + ", ".join(f"{k} {v:.0f} s" for k, v in res["load_s"].items())
               + "; figures rebuilt from the events: "
               + ", ".join(f"{k} {v:.0f} s" for k, v in res.get("rebuild_s", {}).items()),
               f"seconds, {cfg['repeat']} runs each"])
    for fig in FIGURES:
        for b in backends:
            t.add(f"{fig}: {b}", secs[b][fig], "s",
                  f"{fig} from the figures, {b}: median under 1 s" if fig in FIGURES[:3] else "")
        if len(backends) == 2:
            t.add("  postgresql / sqlite", secs["postgresql"][fig]["median"] / secs["sqlite"][fig]["median"])
    t.add("differences from the generated data (every run, backend)", res["targets"][0]["value"],
          "", res["targets"][0]["name"])
    t.notes.append("report queries (SQL aggregation): queries run and rows handed to Python per "
                   "report; median seconds per kind of query")
    for fig in FIGURES[:3]:
        for b in backends:
            t.add(f"{fig}: {b}, events / figures",
                  secs[b]["events: " + fig.split(", ")[-1].replace("report ", "")]["median"]
                  / secs[b][fig]["median"])
    for fig in FIGURES[4:]:
        for b in backends:
            f = secs[b][fig]
            kinds = sorted(f["by_query"].items(), key=lambda kv: -kv[1])
            t.notes.append(f"  {fig:<20} {b:<10} {f['queries']:>3} queries, {f['rows_to_python']:>4} "
                           "rows; " + ", ".join(f"{k} {v:.2f}" for k, v in kinds if v >= 0.005))
    voided = sum(f["voided"] for figs in secs.values() for f in figs.values())
    if voided:
        t.notes.append(f"  ({voided} run(s) thrown away and measured again: the PostgreSQL "
                       f"server restarted under them)")
    a, m = exp["all"], exp["month"]
    t.notes += [
        f"expected, all time: received {a['received']:,.0f}, handed down {a['handed_down']:,.0f}, "
        f"by the head {a['received_by_head']:,.0f}, accepted {a['accepted']:,.0f}, resolved "
        f"{a['resolved']:,.0f} (first time {a['resolved_first_time']:,.0f}), in progress "
        f"{a['in_progress']:,.0f}, overdue {a['overdue']:,.0f}, escalations {a['escalations']:,.0f} "
        f"{exp['escalations_by_rung']}, funds {a['funds_raised']:,.0f}",
        f"expected, {cfg['month'][0]} .. {cfg['month'][1]}: received {m['received']:,.0f}, accepted "
        f"{m['accepted']:,.0f}, resolved {m['resolved']:,.0f}, escalations {m['escalations']:,.0f}; "
        f"by unit: {exp['units']} units, each checked",
        *(f"  ! {p}" for p in res["problems"][:20]),
    ]
    return t
