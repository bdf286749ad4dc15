"""The petition demo: a year of the seed's situation on a fresh SQLite file.

The higher committee hands down a backlog of 12 cases (交辦 12) to five
units. A simulated clock moves day by day through 2026; each day the cases'
scripted work happens (acceptance, the four fixes, home visits, coordination
meetings, funds raised, decisions, written replies, return visits) and then
the scheduler fires what fell due: deadline warnings, escalations of the
cases handled late, return-visit cycles, the quarterly inspection and the
campaign's daily checks. By the end of the year 8 cases are resolved and
archived after satisfied visits and 4 are still in progress (one in review,
one still unsatisfied, two overdue), as the seed reports; the closing
figures are computed from the recorded events. Three cases are printed in
full: archived at the first visit, archived after a second visit, in review.

It runs on the workflows shipped in the package, so ``casework demo`` works from an
installed wheel. How a case and the report are drawn is the caller's: the command
line passes the text views of :mod:`casework.views` (the core never imports them).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import CommandRefused, Engine, FrozenClock, Notice
from .events import ReportReady
from .timers import SensitivePeriod

if TYPE_CHECKING:
    from .reports import Report

# The workflows shipped in the package (casework/workflows/ once installed).
WORKFLOWS = [Path(str(resources.files("casework.workflows") / name))
             for name in ("petition.yaml", "complaint.yaml")]
START = datetime(2026, 1, 5, 1, 0, tzinfo=UTC)  # 09:00 in Beijing, Monday 5 January 2026
DAYS = 360

UNITS = {
    "county_police": "zhao", "county_court": "qian", "procuratorate": "sun",
    "justice_bureau": "li", "xinzhuang_township": "zhou",
}
CLERK, TRIAGE, ARCHIVIST, REVIEWER = "clerk:wu", "triage:zheng", "archivist:wang", "reviewer:city"


@dataclass
class Plan:
    """One handed-down case and the day (from the start) of each step of its work."""

    title: str
    unit: str
    summary: str
    steps: list[tuple[int, str, str, dict[str, Any]]] = field(default_factory=list)
    expect: str = ""

    @property
    def leader(self) -> str:
        return UNITS[self.unit]

    def at(self, day: int, trigger: str, role: str = "leader", **data: Any) -> Plan:
        who = {"leader": f"leader:{self.leader}", "handler": f"handler:{self.unit}_officer"}
        self.steps.append((day, trigger, who.get(role, role), data))
        return self


def _assign(p: Plan, day: int, due_days: int = 60) -> Plan:
    due = (START + timedelta(days=day + due_days)).date().isoformat()
    return (p.at(day - 1, "accept", TRIAGE)
            .at(day, "assign", leader=p.leader, handler=f"{p.unit}_officer", unit=p.unit,
                due_date=due, target="resolve lawfully; the petitioner stops petitioning"))


def _resolve(p: Plan, decide: int, satisfied_after: int = 0) -> Plan:
    """Decide, reply, visit; ``satisfied_after`` unsatisfied visits before the satisfied one."""
    p.at(decide, "decide", outcome="partial_correction", decision_summary="the claim is met in part")
    p.at(decide + 3, "reply", "handler", reply_summary="written reply delivered")
    day = decide + 14
    for _ in range(satisfied_after):
        p.at(day, "return_visit", "handler", satisfaction="unsatisfied")
        p.at(day + 1, "continue_work", "handler")
        p.at(day + 10, "thought_work", notes="explained the law and the decision again")
        day += 32  # the 30-day return-visit cycle comes round first
    p.at(day, "return_visit", "handler", satisfaction="satisfied")
    return p.at(day + 2, "archive", ARCHIVIST)


def plans() -> list[Plan]:
    """The twelve handed-down cases: eight resolved in the year, four still open at its end."""
    ps = [
        Plan("unpaid wages after a judgment", "county_court", "enforcement of a wage judgment"),
        Plan("traffic accident compensation", "county_police", "accident liability disputed"),
        Plan("land requisition compensation", "xinzhuang_township", "compensation for land taken"),
        Plan("detention complaint", "county_police", "says the detention was unlawful"),
        Plan("non-prosecution decision", "procuratorate", "asks why no prosecution followed"),
        Plan("legal aid refused", "justice_bureau", "legal aid application refused"),
        Plan("house demolition", "xinzhuang_township", "demolition without agreement"),
        Plan("property division", "county_court", "disputes a divorce property ruling"),
        Plan("sentencing complaint", "county_court", "disputes the sentence", expect="in review"),
        Plan("lost petitioner", "county_police", "theft case never solved", expect="suspended, overdue"),
        Plan("mediation agreement", "justice_bureau", "mediation not honoured", expect="not satisfied"),
        Plan("group petition over a closed mine", "xinzhuang_township", "unpaid severance of 40 miners",
             expect="overdue, escalated to the top"),
    ]
    a, b, c, d, e, f, g, h, i, j, k, m = ps
    _resolve(_assign(a, 3).at(10, "home_visit", visitor="qian", notes="visited at home")
             .at(18, "coordination_meeting", attendees=["county_court", "labour_bureau"],
                 agreed="enforce the judgment"), 40)
    _resolve(_assign(b, 4).at(30, "coordination_meeting",
                              attendees=["county_police", "insurer", "county_court"],
                              agreed="insurer pays the assessed amount"), 50)
    _resolve(_assign(c, 5).at(25, "funds_raised", amount=180000.0, funded_by="county fund")
             .at(40, "coordination_meeting", attendees=["xinzhuang_township", "land_bureau"],
                 agreed="pay to the county standard"), 55, satisfied_after=1)
    _resolve(_assign(d, 3), 95)  # decided late: escalated
    _resolve(_assign(e, 6).at(20, "thought_work", notes="explained the evidence threshold"), 45)
    _resolve(_assign(f, 7), 38, satisfied_after=1)
    _resolve(_assign(g, 8).at(60, "funds_raised", amount=150000.0, funded_by="township")
             .at(62, "coordination_meeting", attendees=["xinzhuang_township", "county_court",
                                                        "housing_bureau"], agreed="rehouse"),
             88, satisfied_after=1)  # late: escalated, then resolved
    _resolve(_assign(h, 4).at(80, "funds_raised", amount=75000.0, funded_by="court relief fund"), 120)
    # Still in progress at the end of the year.
    (_assign(i, 3).at(50, "decide", outcome="maintained", decision_summary="the ruling was correct")
     .at(52, "reply", "handler", reply_summary="the ruling stands")
     .at(70, "request_review", CLERK).at(110, "answer_review", REVIEWER, review_result="upheld")
     .at(125, "request_rereview", CLERK))
    (_assign(j, 5).at(20, "suspend", "handler", suspension_reason="the petitioner cannot be reached")
     .at(80, "resume", "handler"))
    (_assign(k, 6).at(30, "extend", extension_days=30, extension_reason="second mediation round")
     .at(80, "decide", outcome="explanation", decision_summary="no legal basis for the claim")
     .at(82, "reply", "handler", reply_summary="explained in writing")
     .at(100, "return_visit", "handler", satisfaction="unsatisfied")
     .at(101, "continue_work", "handler"))
    _assign(m, 4).at(15, "home_visit", visitor="zhou", notes="met the miners' representatives")
    return ps


def _fresh(db: Path) -> None:
    db.parent.mkdir(parents=True, exist_ok=True)
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)


def run_demo(db: Path, echo: Callable[[str], Any] = print, *,
             show_case: Callable[[Engine, str], str] | None = None,
             show_report: Callable[[Report], str] | None = None) -> dict[str, Any]:
    """Run the year on a fresh SQLite file at ``db``; return the case ids and the figures.

    What happens is told through ``echo``; ``show_case(engine, case_id)`` and
    ``show_report(report)`` draw the three cases printed in full and the closing
    report (without them, those two parts are left out).
    """
    _fresh(db)
    clock = FrozenClock(START)
    engine = Engine(f"sqlite:///{db}", WORKFLOWS, clock=clock, sqlite_synchronous="NORMAL",
                    sensitive_periods=[SensitivePeriod("national_sessions", START.date().replace(
                        month=3, day=1), START.date().replace(month=3, day=20))])
    heard: Counter[str] = Counter()
    rungs: Counter[str] = Counter()
    reports: list[ReportReady] = []

    def listen(n: Notice | ReportReady) -> None:
        heard[n.name] += 1
        if isinstance(n, ReportReady):
            reports.append(n)
        elif n.name == "escalated":
            rungs[str(n.event.details.get("rung"))] += 1

    for name in ("warned", "escalated", "cycle", "report", "flagged"):
        engine.on(name, listen)

    echo(f"casework demo on {db}: a year of the 12 cases handed down by the committee\n")
    ps = plans()
    ids: list[str] = []
    for n, p in enumerate(ps, 1):
        case = engine.open_case("petition", {
            "petitioner_name": f"Petitioner {n}", "petitioner_id_number": f"3301{n:014d}",
            "petitioner_phone": f"139{n:08d}", "channel": "letter", "source": "province",
            "concerns": "court" if "court" in p.unit else "other", "summary": p.summary,
            "group_petition": "group" in p.title,
        }, actor=CLERK)
        ids.append(case.id)
    agenda: dict[int, list[tuple[int, str, str, dict[str, Any]]]] = {}
    for n, p in enumerate(ps):
        for day, trigger, actor, data in p.steps:
            agenda.setdefault(day, []).append((n, trigger, actor, data))
    refusals = []
    for day in range(1, DAYS + 1):
        clock.set(START + timedelta(days=day))
        for n, trigger, actor, data in agenda.get(day, []):
            try:
                engine.fire(ids[n], trigger, actor=actor, data=data)
            except CommandRefused as e:  # the script is wrong if this happens
                refusals.append(f"day {day}, case {n + 1}: {e}")
        if day == 100:  # the rules refuse what they must, and write nothing
            for n, trigger, actor, data in (
                    (10, "archive", ARCHIVIST, {}),
                    (11, "extend", "leader:qian", {"extension_days": 10, "extension_reason": "x"}),
                    (11, "extend", "leader:zhou", {"extension_days": 45, "extension_reason": "x"})):
                try:
                    engine.fire(ids[n], trigger, actor=actor, data=data)
                except CommandRefused as e:
                    echo(f"day {day}: refused as it should be: {e}")
        engine.run_due()
    if refusals:
        raise AssertionError("the demo's script was refused:\n" + "\n".join(refusals))

    echo("\nWhat the scheduler did over the year:")
    echo(f"  warnings {heard['warned']}, escalations {heard['escalated']} "
         f"({', '.join(f'{k} {v}' for k, v in sorted(rungs.items()))}), return-visit cycles and "
         f"checks {heard['cycle']}, cases flagged at risk {heard['flagged']}, reports {heard['report']}")
    for r in reports:
        units = ", ".join(f"{row['unit']} {row['open']} open/{row['overdue']} overdue"
                          for row in r.payload["rows"])
        echo(f"  {r.payload['due'][:10]} {r.report} report: {units or 'no open cases'}")

    echo("\nThe twelve cases at the end of the year:")
    figures = _closing(engine, ids, ps, echo, show_report)
    for label, n in (("archived at the first visit", 0), ("archived after a second visit", 2),
                     ("in review", 8)):
        if show_case is not None:
            echo(f"\n--- case {n + 1}, {label} ---")
            echo(show_case(engine, ids[n]))
    problems = engine.verify()
    echo(f"\nhash chains: {problems if problems else 'all intact'}")
    engine.close()
    return {"ids": ids, **figures}


def _closing(engine: Engine, ids: list[str], ps: list[Plan], echo: Callable[[str], Any],
             show_report: Callable[[Report], str] | None) -> dict[str, Any]:
    """Per-case lines, then the closing report of the handed-down cases (SQL over the events)."""
    for n, (cid, p) in enumerate(zip(ids, ps, strict=True), 1):
        case = engine.get_case(cid)
        history = engine.history(cid)
        path = " > ".join(dict.fromkeys(ev.to_state or "" for ev in history if ev.kind == "transition"))
        esc = [ev.name for ev in history if ev.kind == "escalation"]
        echo(f"  {n:>2}. {p.title:<34} {p.unit:<19} {case.state:<26} "
             f"escalation {case.escalation_level}{' (' + ', '.join(esc) + ')' if esc else ''}")
        echo(f"      path: registered > {path}")
    report = engine.report("petition", where={"source": "handed_down"})
    t = report.totals
    if show_report is not None:
        echo("\nThe closing report of the handed-down cases (computed from the recorded events):")
        echo(show_report(report))
    echo(f"\nHanded down {t['handed_down']:.0f}; resolved and archived {t['resolved']:.0f}; "
         f"still in progress {t['in_progress']:.0f}; closure rate {t['closure_rate'] or 0:.0%} (息訴率)")
    return {"handed_down": int(t["handed_down"] or 0), "resolved": int(t["resolved"] or 0),
            "in_progress": int(t["in_progress"] or 0), "closure_rate": t["closure_rate"],
            "report": report}
