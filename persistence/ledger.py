"""The ledger of cases (個案臺帳): whole cases as JSON lines, to move them between databases.

A ledger file is UTF-8 text, one JSON object per line:

1. the header: ``{"format": "casework-ledger", "version": 2, "exported_at": ..., "cases": N,
   "schema": ..., "source": ..., "filters": {...}}``;
2. one line per workflow version the cases were opened under:
   ``{"workflow_version": {"name", "version", "definition", "source", "created_at"}}``;
3. one line per case: ``{"case": {...}, "events": [...], "timers": [...]}``: the case row with
   every column of the ``cases`` table, its events with every column but the database's own
   row id, and its pending timers.

Version 2 (this code writes it) holds a deadline's warnings and breach as one chained timer
(``payload.then``, see :func:`engine.timers.chained`): code that reads only version 1 would
fire the first instant and lose the rest, so it refuses the file. Version 1 files (one row
per instant) are still read.

Rows are exactly as stored: JSON columns as their stored text (the hash chain is computed
over that text), times as naive UTC in ISO form with microseconds, flags as JSON booleans.

:func:`import_cases` reads and checks the whole file before it writes anything, and refuses
it whole (:class:`~persistence.errors.LedgerError`, listing every problem) if anything is
wrong: the header, a row's fields, a case's hash chain recomputed from the stored text, its
numbering, its head, its row version, state and data against its events, a case or an
idempotency key already in the target, a workflow version neither in the file nor in the
target. Otherwise everything is written in one transaction. (The file is held in memory
until then: a unit's ledger, not a whole province's.)

The scheduler's idempotency keys name the case, the timer and its due instant, never a
row id, so the keys in an imported history cannot collide with what the target's own
timers will write; imported pending timers simply get new row ids in the target.

This module is storage-level: it knows the tables, not the engine.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from types import SimpleNamespace
from typing import Any, TextIO

import orjson
from sqlalchemy import Boolean, Column, DateTime, Integer, String
from sqlalchemy.types import TypeDecorator

from .chain import seal, verify_chain
from .errors import DuplicateKey, LedgerError
from .migrate import head_revision
from .sql import FAR_DT
from .store import Store
from .tx import ReadTx, WriteTx

FORMAT = "casework-ledger"
VERSION = 2
READS = (1, 2)  # ledger versions this code imports

JSON_COLUMNS = {"data", "clocks", "changes", "details", "payload", "definition"}


@dataclass
class ImportResult:
    """What an import wrote."""

    cases: int = 0
    events: int = 0
    timers: int = 0
    workflow_versions: int = 0  # versions the target did not have yet
    case_ids: list[str] = field(default_factory=list)


def _utc_now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def _line(obj: Any) -> str:
    return orjson.dumps(obj).decode() + "\n"


# -- export ----------------------------------------------------------------------------
def _as_stored(tx: ReadTx, cols: Sequence[Column[Any]], row: Sequence[Any]) -> dict[str, Any]:
    """A row as a JSON object: times in ISO with microseconds, flags as booleans."""
    out: dict[str, Any] = {}
    for col, v in zip(cols, row, strict=True):
        if v is not None and isinstance(col.type, DateTime):
            v = tx.datetime_out(v).isoformat(timespec="microseconds")
        elif v is not None and isinstance(col.type, Boolean):
            v = bool(v)
        out[col.name] = v
    return out


Masker = Callable[[dict[str, Any], list[dict[str, Any]]], None]  # (case row, events), in place
# A document's content by its digest (None: not kept), for an export.
DocumentReader = Callable[[ReadTx, str], bytes | None]
# Keep a document of an import: (transaction, digest, media type, content).
DocumentKeeper = Callable[[WriteTx, str, str, bytes], None]
HistoryCheck = Callable[[dict[str, Any], list[dict[str, Any]],
                         Callable[[str, str], str | None]], list[str]]


def export_cases(store: Store, out: TextIO, *, workflow: str | None = None, unit: str | None = None,
                 case_ids: Iterable[str] | None = None, now: datetime | None = None,
                 mask: Masker | None = None, read_document: DocumentReader | None = None) -> int:
    """Write the ledger of the chosen cases to ``out``; how many cases it holds.

    ``workflow`` keeps the cases of one workflow, ``unit`` those whose data field ``unit`` has
    that value, ``case_ids`` the named cases (one missing: :class:`LookupError` naming it). Everything
    is read from one snapshot of the database. With ``mask``, each case row and its events
    pass through it (personal values masked) and the header says ``"masked": true``: such a
    ledger is for reading outside the office; it cannot be imported.
    """
    L = store.sql.ledger
    with store.read() as tx:
        tx.snapshot()
        if case_ids is not None:
            rows = []
            for cid in dict.fromkeys(case_ids):
                found = tx.fetch(L.case_row, {"id": cid})
                if not found:
                    raise LookupError(cid)
                rows.extend(found)
            cases = [_as_stored(tx, L.case_cols, r) for r in rows]
            cases = [c for c in cases if (workflow is None or c["workflow"] == workflow)
                     and (unit is None or orjson.loads(c["data"]).get("unit") == unit)]
        else:
            st = L.select_cases(workflow is not None, unit is not None)
            cases = [_as_stored(tx, L.case_cols, r)
                     for r in tx.fetch(st, {"workflow": workflow, "unit": unit})]
        filters: dict[str, Any] = {k: v for k, v in (("workflow", workflow), ("unit", unit))
                                   if v is not None}
        if case_ids is not None:
            filters["case_ids"] = [c["id"] for c in cases]
        out.write(_line({
            "format": FORMAT, "version": VERSION,
            "exported_at": (now or _utc_now()).replace(tzinfo=UTC).isoformat(timespec="microseconds"),
            "cases": len(cases), "schema": head_revision(), "source": store.backend,
            "filters": filters, **({"masked": True} if mask is not None else {}),
        }))
        for name, version in dict.fromkeys((c["workflow"], c["version"]) for c in cases):
            for r in tx.fetch(L.wf_row, {"name": name, "version": version}):
                out.write(_line({"workflow_version": _as_stored(tx, L.wf_cols, r)}))
        written: set[str] = set()
        for c in cases:
            events = [_as_stored(tx, L.event_cols, r) for r in tx.fetch(L.event_rows, {"id": c["id"]})]
            timers = [_as_stored(tx, L.timer_cols, r) for r in tx.fetch(L.timer_rows, {"id": c["id"]})]
            if mask is not None:
                mask(c, events)
            elif read_document is not None:
                _write_documents(tx, out, events, read_document, written)
            out.write(_line({"case": c, "events": events, "timers": timers}))
    return len(cases)


def _write_documents(tx: ReadTx, out: TextIO, events: list[dict[str, Any]],
                     read: DocumentReader, written: set[str]) -> None:
    """The documents the events carry, each once in the file, before the case that uses
    them."""
    for e in events:
        for ref in orjson.loads(e["details"]).get("documents") or []:
            sha = ref.get("sha256") if isinstance(ref, dict) else None
            if not isinstance(sha, str) or sha in written:
                continue
            content = read(tx, sha)
            if content is None:
                continue  # missing here: the import names it
            written.add(sha)
            out.write(_line({"document": {"sha256": sha, "media_type": ref.get("media_type"),
                                          "size": len(content),
                                          "content": base64.b64encode(content).decode()}}))


# -- import: reading and checking the file -----------------------------------------------
@dataclass
class _Case:
    line: int
    row: dict[str, Any]
    events: list[dict[str, Any]]
    timers: list[dict[str, Any]]

    @property
    def id(self) -> str:
        return str(self.row["id"])


@dataclass
class _Ledger:
    versions: dict[tuple[str, str], tuple[int, dict[str, Any]]] = field(default_factory=dict)
    documents: dict[str, tuple[str, bytes]] = field(default_factory=dict)  # digest -> (type, bytes)
    cases: list[_Case] = field(default_factory=list)
    keys: dict[str, tuple[str, int]] = field(default_factory=dict)  # key -> (case, seq)


_Check = Callable[[str, Any], tuple[Any, str | None]]  # (column, value) -> (value, problem)


def _check_time(name: str, v: Any) -> tuple[Any, str | None]:
    try:
        t = datetime.fromisoformat(v) if isinstance(v, str) else None
    except ValueError:
        t = None
    if t is None:
        return v, f"{name} {v!r} is not an ISO time"
    if t.tzinfo is not None:
        return v, f"{name} {v!r} is not naive UTC as stored"
    return t, None


def _check_bool(name: str, v: Any) -> tuple[Any, str | None]:
    return v, None if isinstance(v, bool) else f"{name} {v!r} is not true or false"


def _check_int(name: str, v: Any) -> tuple[Any, str | None]:
    ok = isinstance(v, int) and not isinstance(v, bool)
    return v, None if ok else f"{name} {v!r} is not a whole number"


def _check_text(length: int | None, json_object: bool) -> _Check:
    def check(name: str, v: Any) -> tuple[Any, str | None]:
        if not isinstance(v, str):
            return v, f"{name} {v!r} is not text"
        if length is not None and len(v) > length:
            return v, f"{name} is longer than {length} characters"
        if json_object:
            try:
                parsed = orjson.loads(v)
            except orjson.JSONDecodeError:
                parsed = None
            if not isinstance(parsed, dict):
                return v, f"{name} is not the text of a JSON object"
        return v, None
    return check


def _no_check(name: str, v: Any) -> tuple[Any, str | None]:
    return v, None


@lru_cache(maxsize=16)
def _row_shape(cols: tuple[Column[Any], ...]) -> tuple[frozenset[str],
                                                      tuple[tuple[str, bool, _Check], ...]]:
    """Each column's name, nullability and check, worked out once per set of columns."""
    shape = []
    for col in cols:
        t = col.type
        if isinstance(t, TypeDecorator):  # SQLModel's AutoString wraps a String
            t = t.impl_instance
        check: _Check
        if isinstance(t, DateTime):
            check = _check_time
        elif isinstance(t, Boolean):
            check = _check_bool
        elif isinstance(t, Integer):
            check = _check_int
        elif isinstance(t, String):
            check = _check_text(t.length, col.name in JSON_COLUMNS)
        else:
            check = _no_check
        shape.append((col.name, bool(col.nullable), check))
    return frozenset(c.name for c in cols), tuple(shape)


def _checked_row(cols: tuple[Column[Any], ...], obj: Any, where: str,
                 problems: list[str]) -> dict[str, Any] | None:
    """The row's values for the database (times as datetimes), or None with its problems said."""
    if not isinstance(obj, dict):
        problems.append(f"{where}: not a JSON object")
        return None
    names, shape = _row_shape(cols)
    found: list[str] = []
    if len(obj) != len(names) or not names.issuperset(obj):
        unknown = sorted(set(obj) - names)
        if unknown:
            found.append(f"unknown field{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}")
    values: dict[str, Any] = {}
    for name, nullable, check in shape:
        if name not in obj:
            found.append(f"no field {name!r}")
            continue
        v = obj[name]
        if v is None:
            if not nullable:
                found.append(f"{name} is null")
        else:
            v, problem = check(name, v)
            if problem is not None:
                found.append(problem)
        values[name] = v
    if found:
        problems.extend(f"{where}: {p}" for p in found)
        return None
    return values


def _check_case(store: Store, n: int, obj: dict[str, Any], ledger: _Ledger,
                first_line: dict[str, int], problems: list[str],
                check_history: HistoryCheck | None) -> None:
    L = store.sql.ledger
    raw = obj["case"]
    cid = raw.get("id") if isinstance(raw, dict) else None
    where = f"line {n}, case {cid}" if isinstance(cid, str) else f"line {n}"
    extra = sorted(set(obj) - {"case", "events", "timers"})
    if extra:
        problems.append(f"{where}: unknown field{'s' if len(extra) > 1 else ''} {', '.join(extra)}")
    row = _checked_row(L.case_cols, raw, where, problems)
    raw_events, raw_timers = obj.get("events"), obj.get("timers")
    if not isinstance(raw_events, list) or not raw_events:
        problems.append(f"{where}: no events (a case has at least the event that opened it)")
        raw_events = []
    if not isinstance(raw_timers, list):
        problems.append(f"{where}: no list of timers")
        raw_timers = []
    events = [_checked_row(L.event_cols, e, f"{where}, event {e.get('seq') if isinstance(e, dict) else i}",
                           problems) for i, e in enumerate(raw_events, 1)]
    timers = [_checked_row(L.timer_cols, t, f"{where}, timer {i}", problems)
              for i, t in enumerate(raw_timers, 1)]
    if row is None:
        return
    if row["id"] in first_line:
        problems.append(f"{where}: the case appears again (first on line {first_line[row['id']]})")
        return
    first_line[row["id"]] = n
    good_events = [e for e in events if e is not None]
    for e in good_events:
        if e["case_id"] != row["id"]:
            problems.append(f"{where}: event {e['seq']} belongs to case {e['case_id']}")
        key = e["idempotency_key"]
        if key is not None:
            if key in ledger.keys:
                other, seq = ledger.keys[key]
                problems.append(f"{where}: event {e['seq']} has the idempotency key {key!r} of "
                                f"case {other} event {seq}")
            else:
                ledger.keys[key] = (row["id"], e["seq"])
    for i, t in enumerate(timers, 1):
        if t is not None and t["status"] != "pending":
            problems.append(f"{where}, timer {i}: status {t['status']!r} (only pending timers move)")
        if t is not None and t["workflow"] != row["workflow"]:
            problems.append(f"{where}, timer {i}: workflow {t['workflow']!r}, not the case's")
    if len(good_events) == len(events) and good_events:
        chain = verify_chain(row["id"], [SimpleNamespace(**e) for e in good_events],
                             head=(row["last_seq"], row["last_hash"]), keyring=store.keyring)
        problems.extend(f"line {n}: {p}" for p in chain)
        if not chain:
            _check_head(where, row, good_events, problems)
        if not chain and check_history is not None:
            problems.extend(f"line {n}: {p}" for p in check_history(
                row, good_events, lambda name, version: _definition(ledger, store, name, version)))
    ledger.cases.append(_Case(n, row, good_events, [t for t in timers if t is not None]))


def _read_document(n: int, obj: dict[str, Any], ledger: _Ledger, problems: list[str]) -> None:
    d = obj["document"]
    try:
        sha, media, content = d["sha256"], d["media_type"], base64.b64decode(d["content"],
                                                                               validate=True)
    except (KeyError, TypeError, ValueError, binascii.Error):
        problems.append(f"line {n}: a document line needs sha256, media_type and base64 content")
        return
    if not isinstance(media, str) or hashlib.sha256(content).hexdigest() != sha:
        problems.append(f"line {n}: document {sha!r}: its content does not match its digest")
        return
    ledger.documents[sha] = (media, content)


def _definition(ledger: _Ledger, store: Store, name: str, version: str) -> str | None:
    """A workflow version's definition: from the file, or else from the target database."""
    found = ledger.versions.get((name, version))
    if found is not None:
        return str(found[1]["definition"])
    with store.read() as tx:
        return tx.workflow_definition(name, version)


def _check_head(where: str, row: dict[str, Any], events: list[dict[str, Any]],
                problems: list[str]) -> None:
    """The case row against its (intact) events: what the chain does not cover."""
    if row["row_version"] != len(events):
        problems.append(f"{where}: row version {row['row_version']} does not match its "
                        f"{len(events)} events (each event is one row version)")
    if row["state"] != events[-1]["to_state"]:
        problems.append(f"{where}: state {row['state']!r} is not the state its last event "
                        f"({events[-1]['seq']}) left it in ({events[-1]['to_state']!r})")
    data: dict[str, Any] = {}
    for e in events:
        data.update(orjson.loads(e["changes"]))
    stored = orjson.loads(row["data"])
    if stored != data:
        fields = sorted(k for k in set(stored) | set(data) if stored.get(k, ...) != data.get(k, ...))
        problems.append(f"{where}: its data does not match the changes its events recorded "
                        f"({', '.join(fields)})")


def _read(store: Store, inp: TextIO, problems: list[str],
          check_history: HistoryCheck | None = None) -> _Ledger:
    L = store.sql.ledger
    ledger = _Ledger()
    first_line: dict[str, int] = {}
    header: dict[str, Any] | None = None
    case_lines = 0
    pending: list[tuple[int, dict[str, Any]]] = []
    for n, text in enumerate(inp, 1):
        if not text.strip():
            continue
        try:
            obj = orjson.loads(text)
        except orjson.JSONDecodeError as e:
            problems.append(f"line {n}: not JSON ({e})")
            continue
        if header is None:
            if not isinstance(obj, dict) or obj.get("format") != FORMAT:
                problems.append(f"line {n}: not a casework ledger (the first line must be its "
                                f"header, with \"format\": \"{FORMAT}\")")
                return ledger
            header = obj
            if obj.get("masked"):
                problems.append(f"line {n}: a masked ledger (personal data replaced for reading "
                                "outside the office) cannot be imported: its histories no longer "
                                "verify")
                return ledger
            if obj.get("version") not in READS:
                problems.append(f"line {n}: ledger format version {obj.get('version')!r}; this code "
                                f"reads versions {', '.join(map(str, READS))}")
                return ledger
            if not isinstance(obj.get("cases"), int) or isinstance(obj.get("cases"), bool):
                problems.append(f"line {n}: the header does not say how many cases follow")
            try:
                datetime.fromisoformat(obj.get("exported_at"))  # type: ignore[arg-type]
            except (TypeError, ValueError):
                problems.append(f"line {n}: the header's exported_at is not an ISO time")
            continue
        if not isinstance(obj, dict):
            problems.append(f"line {n}: not a JSON object")
        elif "workflow_version" in obj:
            extra = sorted(set(obj) - {"workflow_version"})
            if extra:
                problems.append(f"line {n}: unknown field{'s' if len(extra) > 1 else ''} "
                                f"{', '.join(extra)}")
            wv = _checked_row(L.wf_cols, obj["workflow_version"], f"line {n}, workflow version",
                              problems)
            if wv is not None:
                key = (wv["name"], wv["version"])
                if key in ledger.versions:
                    problems.append(f"line {n}: workflow {key[0]} version {key[1]} appears again "
                                    f"(first on line {ledger.versions[key][0]})")
                else:
                    ledger.versions[key] = (n, wv)
        elif "document" in obj:
            _read_document(n, obj, ledger, problems)
        elif "case" in obj:
            case_lines += 1
            pending.append((n, obj))
        elif obj.get("format") == FORMAT:
            problems.append(f"line {n}: a second header")
        else:
            problems.append(f"line {n}: neither a workflow version nor a case")
    # Cases after the workflow versions: a case's history is checked against the definitions
    # the file brings, wherever in the file they stand.
    for n, obj in pending:
        _check_case(store, n, obj, ledger, first_line, problems, check_history)
    if header is None:
        problems.append("the file is empty (no ledger header)")
    elif isinstance(header.get("cases"), int) and header["cases"] != case_lines:
        problems.append(f"the header announces {header['cases']} cases, the file holds "
                        f"{case_lines} (case lines were lost or added)")
    return ledger


# -- import: checking the target and writing ---------------------------------------------
def _check_target(tx: WriteTx, ledger: _Ledger, problems: list[str]) -> list[dict[str, Any]]:
    """Problems the target database adds; the workflow versions it lacks."""
    L = tx.sql.ledger
    missing_versions: list[dict[str, Any]] = []
    needed = dict.fromkeys((c.row["workflow"], c.row["version"]) for c in ledger.cases)
    for name, version in ledger.versions:
        needed.setdefault((name, version), None)
    for name, version in needed:
        stored = tx.fetch(L.wf_row, {"name": name, "version": version})
        in_file = ledger.versions.get((name, version))
        if stored and in_file is not None:
            definition = dict(zip((col.name for col in L.wf_cols), stored[0], strict=True))["definition"]
            if orjson.loads(definition) != orjson.loads(in_file[1]["definition"]):
                problems.append(f"line {in_file[0]}: workflow {name} version {version} has another "
                                f"definition in the target database")
        elif in_file is not None:
            missing_versions.append(in_file[1])
        elif not stored:
            users = [c for c in ledger.cases if (c.row["workflow"], c.row["version"]) == (name, version)]
            problems.append(f"line {users[0].line}, case {users[0].id}: workflow {name} version "
                            f"{version} is neither in the file nor in the target database"
                            + (f" (nor for {len(users) - 1} more cases)" if len(users) > 1 else ""))
    for c in ledger.cases:
        if tx.fetch(L.case_exists, {"id": c.id}):
            problems.append(f"line {c.line}: case {c.id} already exists in the target database")
    for key, (cid, seq) in ledger.keys.items():
        owner = tx.fetch(L.key_owner, {"key": key})
        if owner and owner[0][0] != cid:  # (the same case already there is said above)
            problems.append(f"line {next(c.line for c in ledger.cases if c.id == cid)}, case {cid}: "
                            f"event {seq}'s idempotency key {key!r} is already used in the target "
                            f"database (case {owner[0][0]} event {owner[0][1]})")
    return missing_versions


def _check_documents(tx: WriteTx, ledger: _Ledger, problems: list[str]) -> None:
    """Every document an imported event names is in the file or in the target already."""
    for c in ledger.cases:
        for e in c.events:
            for ref in orjson.loads(e["details"]).get("documents") or []:
                sha = ref.get("sha256") if isinstance(ref, dict) else None
                if sha not in ledger.documents and (not isinstance(sha, str)
                                                    or tx.document(sha) is None):
                    problems.append(f"line {c.line}, case {c.id}: event {e['seq']}'s document "
                                    f"{ref.get('name') if isinstance(ref, dict) else ref!r} is "
                                    "neither in the file nor in the target database")


def _for_db(tx: WriteTx, row: dict[str, Any]) -> dict[str, Any]:
    return {k: tx.datetime_in(v) if isinstance(v, datetime) else v for k, v in row.items()}


def import_cases(store: Store, inp: TextIO, *, now: datetime | None = None,
                 check_history: HistoryCheck | None = None,
                 party_key: Callable[[dict[str, Any]], str | None] | None = None,
                 holders: Callable[[dict[str, Any]], list[tuple[str, str, str, datetime | None]]]
                 | None = None, keep_document: DocumentKeeper | None = None,
                 after_write: Callable[[WriteTx, list[str]], None] | None = None) -> ImportResult:
    """Check the whole ledger in ``inp``, then write it in one transaction; refuse it whole
    with :class:`LedgerError` (nothing written) if anything is wrong.

    ``check_history(row, events, definition_of)`` names the events of a case that its
    workflow's rules could not have produced (the engine replays them); ``party_key(row)``
    gives a case's key for matching the petitioner's other cases under this office's
    secret; ``holders(row)`` who holds it. Each imported row is sealed anew under the
    target's key. ``after_write(tx, case_ids)`` runs in the same transaction once the
    cases are written (the engine adds them to its maintained report figures).
    """
    problems: list[str] = []
    ledger = _read(store, inp, problems, check_history)
    if problems:
        raise LedgerError(problems)
    dbapi = store.engine.dialect.dbapi
    assert dbapi is not None
    try:
        with store.write() as tx:
            missing_versions = _check_target(tx, ledger, problems)
            _check_documents(tx, ledger, problems)
            if problems:
                raise LedgerError(problems)
            if keep_document is not None:
                for sha, (media, content) in ledger.documents.items():
                    keep_document(tx, sha, media, content)
            result = _write(tx, ledger, missing_versions, now, party_key, holders)
            if after_write is not None:
                after_write(tx, result.case_ids)
            return result
    except (DuplicateKey, dbapi.IntegrityError) as e:
        raise LedgerError([f"another process wrote one of these cases or idempotency keys while "
                           f"the file was being imported ({e})"]) from None


def _reseal(tx: WriteTx, row: dict[str, Any],
            party_key: Callable[[dict[str, Any]], str | None] | None) -> dict[str, Any]:
    """The row as the target stores it: its party key and seal under the target's secrets."""
    row = dict(row)
    if party_key is not None:
        row["party_key"] = party_key(row)
    if tx.keyring is not None:
        row["seal"] = seal(tx.keyring, (
            row["id"], row["workflow"], row["version"], row["state"], bool(row["final"]),
            row["data"], row["escalation_level"], row["opened_at"], row["updated_at"],
            row["row_version"], row["last_seq"], row["last_hash"], row["clocks"],
            bool(row["at_risk"]), row["overdue_since"], row["party_key"], row["closed_at"],
            row.get("unit"), _due(row.get("next_due_at")), row.get("next_deadline")))
    return row


def _due(v: Any) -> datetime | None:
    return None if v is None or v == FAR_DT else v


def _write(tx: WriteTx, ledger: _Ledger, missing_versions: list[dict[str, Any]],
           now: datetime | None,
           party_key: Callable[[dict[str, Any]], str | None] | None = None,
           holders: Callable[[dict[str, Any]], list[tuple[str, str, str, datetime | None]]]
           | None = None) -> ImportResult:
    L = tx.sql.ledger
    result = ImportResult()
    for wv in missing_versions:
        tx.save_workflow_version(wv["name"], wv["version"], wv["definition"], wv["source"],
                                 wv["created_at"])
    tx.execute_many(L.insert_case, [_for_db(tx, _reseal(tx, c.row, party_key))
                                    for c in ledger.cases])
    tx.execute_many(L.insert_event, [_for_db(tx, e) for c in ledger.cases for e in c.events])
    if holders is not None:
        for c in ledger.cases:
            rows = holders(c.row)
            if rows:
                tx.set_assignments(c.id, rows)
    timers = [_for_db(tx, {**t, "case_id": c.id}) for c in ledger.cases for t in c.timers]
    tx.execute_many(L.insert_timer, timers)  # new row ids in the target
    result.cases = len(ledger.cases)
    result.events = sum(len(c.events) for c in ledger.cases)
    result.timers = len(timers)
    result.workflow_versions = len(missing_versions)
    result.case_ids = [c.id for c in ledger.cases]
    return result
