"""The petition demo: several cases driven through the workflow on a fresh SQLite file.

One case is archived after a satisfied return visit; one petitioner is not
satisfied at first, the work continues, a second visit finds them satisfied
and the case is archived; one petitioner asks for a review after the reply.
The demo shows the refusals along the way (archiving while not satisfied,
an extension by someone who is not the case's leader) and prints every
case's path and history. Time is simulated with a frozen clock.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from engine import CommandRefused, Engine, FrozenClock
from engine.display import format_case

ROOT = Path(__file__).resolve().parent
WORKFLOWS = [ROOT / "workflows" / "petition.yaml", ROOT / "workflows" / "complaint.yaml"]

CLERK, TRIAGE, ARCHIVIST = "clerk:li", "triage:zhao", "archivist:chen"
REVIEWER = "reviewer:city_committee"


def _fresh(db: Path) -> None:
    db.parent.mkdir(parents=True, exist_ok=True)
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)


def run_demo(db: Path, echo: Callable[[str], Any] = print) -> dict[str, str]:
    """Run the demo on a fresh SQLite file at ``db``; return the case ids by name."""
    _fresh(db)
    clock = FrozenClock(datetime(2026, 3, 2, 9, 0, tzinfo=UTC))
    engine = Engine(f"sqlite:///{db}", WORKFLOWS, clock=clock)
    echo(f"casework demo on {db}\n")

    def step(case_id: str, trigger: str, actor: str, days: float = 0, **data: Any) -> None:
        if days:
            clock.advance(days=days)
        engine.fire(case_id, trigger, actor=actor, data=data)

    def refused(case_id: str, trigger: str, actor: str, **data: Any) -> None:
        try:
            engine.fire(case_id, trigger, actor=actor, data=data)
        except CommandRefused as e:
            echo(f"  refused as it should be: {e}")
        else:  # pragma: no cover - the demo would be wrong
            raise AssertionError(f"{trigger} should have been refused")

    def open_petition(name: str, unit: str, leader: str, summary: str) -> str:
        case = engine.open_case("petition", {
            "petitioner_name": name, "petitioner_phone": "138-0000-0000", "channel": "visit",
            "source": "city", "concerns": "court", "summary": summary,
        }, actor=CLERK)
        step(case.id, "accept", TRIAGE, days=3)
        step(case.id, "assign", f"leader:{leader}", days=1, leader=leader, handler=f"{unit}_officer",
             unit=unit, due_date="2026-05-05", target="resolve the claim lawfully")
        return case.id

    ids: dict[str, str] = {}

    echo("1. A wage claim: decided, answered, satisfied at the first visit, archived.")
    c1 = open_petition("Wang Daming", "labour_court", "wang", "unpaid wages after a judgment")
    ids["satisfied"] = c1
    step(c1, "home_visit", "leader:wang", days=5, visitor="wang", notes="visited at home")
    step(c1, "coordination_meeting", "leader:wang", days=4,
         attendees=["court", "labour_bureau", "township"], agreed="enforce the judgment")
    step(c1, "decide", "handler:labour_court_officer", days=10, outcome="full_correction",
         decision_summary="the judgment is enforced")
    step(c1, "reply", "handler:labour_court_officer", days=2, reply_summary="written reply sent")
    step(c1, "return_visit", "handler:labour_court_officer", days=7, satisfaction="satisfied")
    step(c1, "archive", ARCHIVIST, days=1)

    echo("2. A land dispute: not satisfied at the first visit, work continues, then archived.")
    c2 = open_petition("Li Xiuying", "township_court", "zhou", "compensation for requisitioned land")
    ids["visited_twice"] = c2
    refused(c2, "extend", "leader:sun", extension_days=20, extension_reason="complex")
    step(c2, "extend", "leader:zhou", days=20, extension_days=30,
         extension_reason="valuation by a second surveyor")
    refused(c2, "extend", "leader:zhou", extension_days=10, extension_reason="again")
    step(c2, "funds_raised", "leader:zhou", days=15, amount=120000.0, funded_by="county fund")
    step(c2, "decide", "leader:zhou", days=20, outcome="partial_correction",
         decision_summary="compensation raised to the county standard")
    step(c2, "reply", "handler:township_court_officer", days=3, reply_summary="written reply")
    step(c2, "return_visit", "handler:township_court_officer", days=10, satisfaction="unsatisfied")
    refused(c2, "archive", ARCHIVIST)
    step(c2, "continue_work", "handler:township_court_officer", days=1)
    step(c2, "thought_work", "leader:zhou", days=5, notes="explained the valuation rules")
    step(c2, "return_visit", "leader:zhou", days=14, satisfaction="satisfied")
    step(c2, "archive", ARCHIVIST, days=1)

    echo("3. A sentencing complaint: the petitioner rejects the reply and asks for a review.")
    c3 = open_petition("Zhang Wei", "intermediate_court", "liu", "disputes the sentence")
    ids["in_review"] = c3
    step(c3, "decide", "leader:liu", days=25, outcome="maintained",
         decision_summary="the original ruling was correct")
    step(c3, "reply", "handler:intermediate_court_officer", days=2, reply_summary="explained")
    step(c3, "request_review", CLERK, days=12)
    step(c3, "answer_review", REVIEWER, days=20, review_result="upheld")

    echo("4. A complaint of another kind, on its own workflow.")
    c4 = engine.open_case("complaint", {"citizen_name": "Chen Jing", "topic": "noise",
                                        "description": "night construction"}, actor="desk:ma")
    ids["complaint"] = c4.id
    step(c4.id, "take", "officer:he", days=1, officer="he")
    step(c4.id, "answer", "officer:he", days=2, answer="permit checked; work stopped at 22:00")
    step(c4.id, "confirm", "desk:ma", days=1)

    echo("")
    for cid in ids.values():
        echo(format_case(engine, cid))
        echo("")
    problems = engine.verify()
    echo(f"hash chains: {problems if problems else 'all intact'}")
    engine.close()
    return ids
