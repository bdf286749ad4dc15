"""The case file (一案一檔): documents a command brings are kept by their digest, covered
by the chain, checked by verify, carried by a ledger, and bounded by the settings."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import pytest
from casework import Document, DocumentLimits, Engine, FrozenClock, InvalidInput

from tests.conftest import PETITION
from tests.helpers import sql
from tests.petition_steps import STANDARD, case_in, snapshot

REPLY = Document("reply-2026-001.pdf", "application/pdf", b"%PDF-1.7 written reply ...")
MINUTES = Document("minutes.txt", "text/plain", "協調會紀要 法院、司法局出席".encode())


def db_execute(engine: Engine, statement: str, **params: object) -> None:
    """Change the database behind the engine's back, as someone with database access would."""
    sql(engine, statement, **params)


def _replied(engine: Engine) -> str:
    case = case_in(engine, "handling.decided")
    cmd = STANDARD["reply"]
    engine.fire(case.id, cmd.trigger, actor=cmd.actor, data=cmd.data, documents=[REPLY])
    return case.id


def test_a_document_is_kept_by_its_digest_and_named_in_the_event(any_engine: Engine) -> None:
    cid = _replied(any_engine)
    (ref,) = any_engine.history(cid)[-1].details["documents"]
    assert ref == {"name": REPLY.name, "media_type": "application/pdf",
                   "size": len(REPLY.content), "sha256": hashlib.sha256(REPLY.content).hexdigest()}
    assert any_engine.document(ref["sha256"]) == ("application/pdf", REPLY.content)
    assert any_engine.verify() == []


def test_an_altered_document_is_named_by_verify(any_engine: Engine) -> None:
    cid = _replied(any_engine)
    db_execute(any_engine, "UPDATE documents SET content = :c", c=b"%PDF-1.7 another reply")
    problems = any_engine.verify()
    assert any(cid in p and REPLY.name in p and "altered" in p for p in problems)


def test_a_ledger_carries_the_documents_of_its_cases(
        any_engine: Engine, tmp_path: Path, clock: FrozenClock) -> None:
    cid = _replied(any_engine)
    any_engine.fire(cid, "return_visit", actor="handler:wu", data={"satisfaction": "unsatisfied"})
    buf = io.StringIO()
    any_engine.export_cases(buf, case_ids=[cid])
    key = tmp_path / "office.key"
    src_key = (Path(any_engine.database_url.removeprefix("sqlite:///") + ".key")
               if any_engine.backend == "sqlite" else Path("casework.key"))
    key.write_bytes(src_key.read_bytes())
    with Engine(f"sqlite:///{tmp_path / 'other.db'}", [PETITION], clock=clock,
                key_file=key) as other:
        other.import_cases(io.StringIO(buf.getvalue()))
        ref = other.history(cid)[-2].details["documents"][0]
        assert other.document(ref["sha256"])[1] == REPLY.content
        assert other.verify() == []


@pytest.mark.parametrize(("doc", "says"), [
    (Document("virus.exe", "application/x-msdownload", b"MZ"), "media type"),
    (Document("../../etc/passwd", "text/plain", b"x"), "without a path"),
    (Document("", "text/plain", b"x"), "file name"),
    (Document("big.pdf", "application/pdf", b"0" * 2_000_001), "at most 2,000,000"),
])
def test_a_document_past_the_limits_is_refused_and_nothing_is_written(
        tmp_path: Path, clock: FrozenClock, doc: Document, says: str) -> None:
    limits = DocumentLimits(max_bytes=2_000_000, types=frozenset({"application/pdf",
                                                                  "text/plain"}))
    with Engine(f"sqlite:///{tmp_path / 'c.db'}", [PETITION], clock=clock,
                documents=limits) as e:
        case = case_in(e, "handling.decided")
        before = snapshot(e, case.id)
        with pytest.raises(InvalidInput, match=says):
            e.fire(case.id, "reply", actor="handler:wu", data=STANDARD["reply"].data,
                   documents=[doc])
        assert snapshot(e, case.id) == before


def test_documents_can_live_in_a_folder_of_the_offices_choosing(
        tmp_path: Path, clock: FrozenClock) -> None:
    folder = tmp_path / "case-files"
    with Engine(f"sqlite:///{tmp_path / 'c.db'}", [PETITION], clock=clock,
                documents=DocumentLimits(folder=folder)) as e:
        case = case_in(e, "handling.investigating")
        e.fire(case.id, "coordination_meeting", actor="leader:chen",
               data={"attendees": ["court", "justice_bureau"], "agreed": "meet again"},
               documents=[MINUTES])
        sha = hashlib.sha256(MINUTES.content).hexdigest()
        assert (folder / sha[:2] / sha).read_bytes() == MINUTES.content
        assert e.document(sha) == ("text/plain", MINUTES.content)
        (folder / sha[:2] / sha).write_bytes(b"rewritten")
        assert any("altered" in p for p in e.verify())
