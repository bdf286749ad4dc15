"""The HTTP API against a real uvicorn on 127.0.0.1, on SQLite and PostgreSQL: credentials,
the petition lifecycle beside the Python API, problems for every refusal, bounded input,
masking, ETags, idempotency, reports, pictures, Server-Sent Events, metrics."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import httpx
import jwt
import pytest
from casework import Engine, FrozenClock

from tests.petition_steps import (
    CLERK,
    HANDLER,
    LEADER,
    OPEN_DATA,
    STANDARD,
    TRIAGE,
)
from tests.test_http_support import SERVICE_TOKEN, Live, auth, live, token_for

PROBLEM = "application/problem+json"


@pytest.fixture
def http(db_url: str, clock: FrozenClock) -> Iterator[Live]:
    """uvicorn on 127.0.0.1 serving an engine on each backend."""
    with live(db_url, clock) as got:
        yield got


def opened(http: Live, actor: str = CLERK, **headers: str) -> dict[str, Any]:
    r = http.client.post("/workflows/petition/cases", json={"data": OPEN_DATA},
                         headers={**auth(actor), **headers})
    assert r.status_code == 201, r.text
    return dict(r.json())


def fire(http: Live, case_id: str, step: str, **extra: Any) -> httpx.Response:
    cmd = STANDARD[step]
    return http.client.post(f"/cases/{case_id}/triggers/{cmd.trigger}",
                            json={"data": {**cmd.data, **extra}}, headers=auth(cmd.actor))


def stored(engine: Engine) -> tuple[int, int]:
    return engine.stored_counts()


# -- credentials ------------------------------------------------------------------------------
def test_every_resource_needs_a_credential_and_bad_ones_write_nothing(http: Live) -> None:
    case = opened(http)
    before = stored(http.engine)
    url = f"/cases/{case['id']}/triggers/accept"
    expired = token_for(TRIAGE, expires_in=-60)
    forged = token_for(TRIAGE, secret="another-secret-of-at-least-32-bytes!!")
    for headers in ({}, {"Authorization": "Bearer"}, {"Authorization": "Basic dXNlcjpwdw=="},
                    {"Authorization": f"Bearer {expired}"}, {"Authorization": f"Bearer {forged}"},
                    {"Authorization": "Bearer not-a-known-token"},
                    {"Authorization": "Bearer a.b.c"}):
        r = http.client.post(url, json={"data": {}}, headers=headers)
        assert r.status_code == 401, (headers, r.text)
        assert r.headers["content-type"] == PROBLEM
        assert r.headers["www-authenticate"].startswith("Bearer")
        assert r.json()["rule"] == "authentication"
    assert "expired" in http.client.post(url, headers={"Authorization": f"Bearer {expired}"}).text
    # A body naming another actor is refused, whoever sends it.
    r = http.client.post(url, json={"actor": "triage:zhao", "data": {}}, headers=auth(CLERK))
    assert r.status_code == 422 and r.json()["rule"] == "actor"
    r = http.client.post(url, json={"data": {"actor": "triage:zhao"}}, headers=auth(CLERK))
    assert r.status_code == 422 and r.json()["rule"] == "input"
    r = http.client.post("/workflows/petition/cases", headers=auth(CLERK),
                         json={"actor": "leader:wang", "data": OPEN_DATA})
    assert r.status_code == 422 and r.json()["rule"] == "actor"
    for path in ("/workflows", f"/cases/{case['id']}", f"/cases/{case['id']}/history",
                 "/verify", "/webhooks", "/metrics", "/whoami"):
        assert http.client.get(path).status_code == 401, path
    assert stored(http.engine) == before
    assert http.engine.get_case(case["id"]).state == "registered"
    # The open operations.
    assert http.client.get("/healthz").status_code == 200
    assert http.client.get("/readyz").json()["status"] == "ready"
    assert http.client.get("/openapi.json").json()["openapi"].startswith("3.1")


def test_the_actor_is_the_credentials(http: Live) -> None:
    r = http.client.get("/whoami", headers={"Authorization": f"Bearer {SERVICE_TOKEN}"})
    assert r.json() == {"id": "intake", "roles": ["clerk"], "unit": "county_court"}
    case = opened(http, actor="clerk:li")
    assert http.engine.history(case["id"])[0].actor == "li"
    r = http.client.get(f"/cases/{case['id']}/triggers", headers=auth(TRIAGE))
    allowed = {o["name"] for o in r.json() if o["allowed"]}
    assert "accept" in allowed
    r = http.client.get(f"/cases/{case['id']}/triggers", headers=auth(CLERK))
    refused = {o["name"]: o["reason"] for o in r.json() if not o["allowed"]}
    assert refused["accept"].startswith("[role]")


def test_a_jwks_file_and_mapped_claims(tmp_path: Any) -> None:
    from cryptography.hazmat.primitives.asymmetric import rsa
    from jwt.algorithms import RSAAlgorithm

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(RSAAlgorithm.to_jwk(key.public_key()))
    jwk.update(kid="k1", alg="RS256", use="sig")
    (tmp_path / "jwks.json").write_text(json.dumps({"keys": [jwk]}))
    from casework.http import Authenticator, HttpJwtSettings

    cfg = HttpJwtSettings(algorithms=("RS256",), jwks_file="jwks.json", actor_claim="preferred",
                          roles_claim="realm.roles", unit_claim="org", audience="casework")
    authn = Authenticator(cfg, base_dir=tmp_path)
    good = jwt.encode({"preferred": "zhao", "realm": {"roles": ["triage"]}, "org": "court",
                       "aud": "casework", "exp": int(time.time()) + 60}, key, algorithm="RS256",
                      headers={"kid": "k1"})
    who = authn.actor(f"Bearer {good}")
    assert (who.id, sorted(who.roles), who.unit) == ("zhao", ["triage"], "court")
    from casework.http import AuthError

    wrong_aud = jwt.encode({"preferred": "zhao", "aud": "other", "exp": int(time.time()) + 60},
                           key, algorithm="RS256", headers={"kid": "k1"})
    with pytest.raises(AuthError):
        authn.actor(f"Bearer {wrong_aud}")
    hs = jwt.encode({"preferred": "zhao", "aud": "casework", "exp": int(time.time()) + 60},
                    "x" * 32, algorithm="HS256", headers={"kid": "k1"})
    with pytest.raises(AuthError):  # an HS256 token signed with the public key's bytes, etc.
        authn.actor(f"Bearer {hs}")


# -- the lifecycle ------------------------------------------------------------------------------
LIFECYCLE = ["accept", "assign", "decide", "reply", "visit_unsatisfied", "archive",
             "continue_work", "visit_satisfied", "archive"]


def _comparable(events: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return [(e["seq"], e["kind"], e["name"], e["from_state"], e["to_state"], e["actor"], e["role"],
             json.dumps(e["changes"], sort_keys=True), json.dumps(e["details"], sort_keys=True))
            for e in events]


def test_the_petition_lifecycle_over_http_matches_the_python_api(http: Live) -> None:
    case = opened(http)
    refused = None
    for step in LIFECYCLE:
        r = fire(http, case["id"], step)
        if step == "archive" and refused is None:
            assert r.status_code == 409, r.text
            refused = r.json()
            continue
        assert r.status_code == 200, (step, r.text)
        assert r.headers["etag"] == f'"{r.json()["row_version"]}"'
    assert refused is not None
    assert refused["rule"] == "guard" and refused["trigger"] == "archive"
    assert refused["state"] == "follow_up.visited"
    assert refused["type"].endswith("guard-refused")
    assert "Wang Fang" not in json.dumps(refused)
    final = http.client.get(f"/cases/{case['id']}", headers=auth(LEADER)).json()
    assert final["state"] == "archived" and final["final"]
    over_http = http.client.get(f"/cases/{case['id']}/history", headers=auth(LEADER)).json()

    # The same commands through the Python API, on the same engine and clock.
    py = http.engine.open_case("petition", OPEN_DATA, actor=CLERK)
    for step in LIFECYCLE:
        cmd = STANDARD[step]
        try:
            http.engine.fire(py.id, cmd.trigger, actor=cmd.actor, data=cmd.data)
        except Exception as e:
            assert step == "archive" and type(e).__name__ == "GuardRefused"
    in_python = [e.to_dict() for e in http.engine.history(py.id)]
    assert _comparable(over_http) == _comparable(in_python)
    assert http.client.get(f"/cases/{case['id']}/verify", headers=auth(CLERK)).json() == {
        "ok": True, "problems": []}
    assert http.client.get("/verify", headers=auth(CLERK)).json()["ok"]


def test_refusals_map_to_their_status_and_name_their_rule(http: Live) -> None:
    case = opened(http)
    cid = case["id"]
    cases = [
        (http.client.get("/cases/nope", headers=auth(CLERK)), 404, "case-not-found"),
        (http.client.get("/workflows/nope", headers=auth(CLERK)), 404, "unknown-workflow"),
        (http.client.post(f"/cases/{cid}/triggers/fly", headers=auth(TRIAGE)), 404, "unknown-trigger"),
        (http.client.post(f"/cases/{cid}/triggers/reply", headers=auth(HANDLER),
                          json={"data": {"reply_summary": "x"}}), 409, "wrong-state"),
        (http.client.post(f"/cases/{cid}/triggers/accept", headers=auth(HANDLER)), 403, "role-refused"),
        (http.client.post(f"/cases/{cid}/triggers/refer", headers=auth(TRIAGE)), 422, "missing-fields"),
        (http.client.post(f"/cases/{cid}/triggers/accept", headers=auth(TRIAGE),
                          json={"data": {"petition_count": "many"}}), 422, "invalid-input"),
        (http.client.post("/workflows/petition/cases", headers=auth(CLERK),
                          json={"data": {**OPEN_DATA, "channel": "pigeon"}}), 422, "invalid-input"),
        (http.client.get("/workflows/petition/report?by=petitioner_name", headers=auth(CLERK)),
         422, "invalid-query"),
        (http.client.post(f"/cases/{cid}/triggers/accept", headers={**auth(TRIAGE), "If-Match": '"7"'}),
         412, "precondition-failed"),
        (http.client.post(f"/cases/{cid}/triggers/accept", headers={**auth(TRIAGE), "If-Match": "x"}),
         422, "invalid-input"),
        (http.client.get("/cases?cursor=nonsense", headers=auth(CLERK)), 422, "invalid-query"),
        (http.client.get("/nowhere", headers=auth(CLERK)), 404, "not-found"),
        (http.client.put("/workflows", headers=auth(CLERK)), 405, "method-not-allowed"),
    ]
    for r, status, slug in cases:
        assert r.status_code == status, (slug, r.status_code, r.text)
        assert r.headers["content-type"] == PROBLEM, slug
        body = r.json()
        assert body["status"] == status and body["type"] == f"urn:casework:problem:{slug}", body
        assert "Wang Fang" not in r.text and "13800000000" not in r.text
    assert http.engine.get_case(cid).row_version == 1  # nothing of it was written
    ok = http.client.post(f"/cases/{cid}/triggers/accept", headers={**auth(TRIAGE), "If-Match": '"1"'})
    assert ok.status_code == 200 and ok.headers["etag"] == '"2"'


def test_idempotency_keys_apply_a_command_once_per_actor(http: Live) -> None:
    a = opened(http, **{"Idempotency-Key": "open-1"})
    b = opened(http, **{"Idempotency-Key": "open-1"})
    assert a["id"] == b["id"]
    other = opened(http, actor="clerk:wu", **{"Idempotency-Key": "open-1"})
    assert other["id"] != a["id"]  # another actor's key is another key
    h = {**auth(TRIAGE), "Idempotency-Key": "acc-1"}
    r1 = http.client.post(f"/cases/{a['id']}/triggers/accept", headers=h)
    r2 = http.client.post(f"/cases/{a['id']}/triggers/accept", headers=h)
    assert r1.status_code == r2.status_code == 200
    # The replay is the first result (the engine rebuilds it from the history).
    assert [r1.json()[k] for k in ("id", "state", "row_version")] == [
        r2.json()[k] for k in ("id", "state", "row_version")]
    assert len(http.engine.history(a["id"])) == 2
    r3 = http.client.post(f"/cases/{other['id']}/triggers/accept", headers=h)
    assert r3.status_code == 422 and r3.json()["rule"] == "idempotency-key-reused"


def test_personal_fields_are_masked_unless_the_role_reads_them(http: Live) -> None:
    case = opened(http)
    assert case["data"]["petitioner_name"] == "***"
    for actor, shown in ((CLERK, "***"), (TRIAGE, "***"), (LEADER, "Wang Fang")):
        got = http.client.get(f"/cases/{case['id']}", headers=auth(actor)).json()
        assert got["data"]["petitioner_name"] == shown
        hist = http.client.get(f"/cases/{case['id']}/history", headers=auth(actor)).json()
        assert hist[0]["changes"]["petitioner_name"] == shown
    assert "Wang Fang" not in http.client.get(f"/cases/{case['id']}/timers", headers=auth(CLERK)).text


def test_no_input_ends_in_a_server_error_and_the_server_keeps_serving(http: Live) -> None:
    case = opened(http)
    url = f"/cases/{case['id']}/triggers/accept"
    h = {**auth(TRIAGE), "content-type": "application/json"}
    bodies = [b"{", b"[" * 5000 + b"]" * 5000, b'{"data": {"x": NaN}}', b'{"data": {"x": 1e999}}',
              b'{"data": {"petition_count": ' + b"9" * 5000 + b"}}",
              b'{"data": {"petition_count": 12345678901234567890}}', b"\xff\xfe", b"[]",
              b'"text"', b'{"data": []}', b'{"data": {"summary": "\\ud800"}}',
              b'{"data": {"summary": "' + b"x" * 2_000_000 + b'"}}']
    for body in bodies:
        r = http.client.post(url, content=body, headers=h)
        assert 400 <= r.status_code < 500, (body[:40], r.status_code, r.text[:200])
        assert r.headers["content-type"] == PROBLEM
    r = http.client.post(url, content=b"data=1", headers={**auth(TRIAGE),
                                                          "content-type": "text/plain"})
    assert 400 <= r.status_code < 500
    assert http.client.get("/cases/" + "x" * 5000, headers=auth(CLERK)).status_code in (404, 422)
    assert http.client.get("/workflows/petition/report?start=not-a-date",
                           headers=auth(CLERK)).status_code == 422
    assert http.engine.get_case(case["id"]).row_version == 1
    assert http.client.get("/healthz").status_code == 200
    assert http.client.post(url, headers=auth(TRIAGE)).status_code == 200


def test_reports_diagrams_timelines_deadlines_and_what_if(http: Live) -> None:
    case = opened(http)
    for step in ("accept", "assign"):
        assert fire(http, case["id"], step).status_code == 200
    r = http.client.get("/workflows/petition/report", headers=auth(CLERK),
                        params={"by": "unit", "where": ["source=received_directly"]})
    assert r.status_code == 200, r.text
    rep = r.json()
    assert rep["figures"]["received"]["value"] == 1 and rep == http.engine.report(
        "petition", by="unit", where={"source": "received_directly"}).as_dict()
    csv = http.client.get("/workflows/petition/report?format=csv", headers=auth(CLERK))
    assert csv.headers["content-type"].startswith("text/csv") and csv.text.startswith("figure,")
    d = http.client.get("/workflows/petition/diagram", headers=auth(CLERK)).json()
    assert d["mermaid"].lstrip().startswith("---") and d["counts"]["handling.investigating"] == {
        "open": 1, "overdue": 0}
    v = http.client.get("/workflows/petition/versions", headers=auth(CLERK)).json()
    assert v["latest"] in v["versions"]
    pic = http.client.get(f"/cases/{case['id']}/timeline?format=svg", headers=auth(CLERK))
    assert pic.status_code in (200, 501)
    if pic.status_code == 200:
        assert pic.headers["content-type"] == "image/svg+xml" and "Wang Fang" not in pic.text
    else:
        assert pic.json()["extra"] == "pictures"
    dl = http.client.get(f"/cases/{case['id']}/deadlines", headers=auth(CLERK)).json()
    assert "handling" in [x["name"] for x in dl]
    until = (http.clock.now() + timedelta(days=80)).isoformat()
    w = http.client.post(f"/cases/{case['id']}/what-if", headers=auth(LEADER), json={
        "proposals": [{"trigger": "extend", "data": {"extension_days": 20,
                                                     "extension_reason": "complex"}}],
        "until": until})
    assert w.status_code == 200, w.text
    body = w.json()
    assert body["proposed"]["refused"] is None
    assert len(body["unchanged"]["case"]["data"]) > 0
    assert len(http.engine.history(case["id"])) == 3  # nothing written


def test_server_sent_events_carry_each_notice_masked(http: Live) -> None:
    case = opened(http)
    got: list[tuple[str, dict[str, Any]]] = []
    ready = threading.Event()

    def listen() -> None:
        with httpx.Client(base_url=http.url, timeout=20) as c, c.stream(
                "GET", "/events", params={"timeout": 10}, headers=auth(CLERK)) as r:
            assert r.headers["content-type"].startswith("text/event-stream")
            event = None
            for line in r.iter_lines():
                if line.startswith("retry:"):
                    ready.set()
                elif line.startswith("event: "):
                    event = line[7:]
                elif line.startswith("data: "):
                    got.append((event or "", json.loads(line[6:])))
                    if len(got) >= 2:
                        return

    t = threading.Thread(target=listen, daemon=True)
    t.start()
    assert ready.wait(10)
    assert fire(http, case["id"], "accept").status_code == 200
    assert fire(http, case["id"], "assign").status_code == 200
    t.join(15)
    assert [n for n, _ in got] == ["transition", "transition"]
    assert got[0][1]["event"]["name"] == "accept" and got[0][1]["case"]["data"][
        "petitioner_name"] == "***"
    first = got[0][1]["id"]
    # Resuming after the first gives the second again.
    with http.client.stream("GET", "/events", params={"timeout": 1},
                            headers={**auth(CLERK), "Last-Event-ID": str(first)}) as r:
        data = [json.loads(x[6:]) for x in r.iter_lines() if x.startswith("data: ")]
    assert [d["event"]["name"] for d in data] == ["assign"]


def test_metrics_count_commands_refusals_and_requests(http: Live) -> None:
    case = opened(http)
    fire(http, case["id"], "archive")
    text = http.client.get("/metrics", headers=auth(CLERK)).text
    assert 'casework_commands_total{command="open",outcome="ok"} 1.0' in text
    assert 'casework_refusals_total{rule="state"} 1.0' in text or \
        'casework_refusals_total{rule="role"} 1.0' in text
    assert "casework_timers_due " in text and "casework_outbox_backlog " in text
    assert 'route="/workflows/{workflow}/cases"' in text


def test_a_missing_pictures_extra_is_a_501_naming_it(http: Live, monkeypatch: Any) -> None:
    import casework.views as views
    from casework import MissingExtra

    def missing(*a: Any, **k: Any) -> Any:
        raise MissingExtra("timeline pictures", "pictures", "matplotlib")

    monkeypatch.setattr(views, "render_timeline", missing)
    case = opened(http)
    r = http.client.get(f"/cases/{case['id']}/timeline", headers=auth(CLERK))
    assert r.status_code == 501 and r.json()["extra"] == "pictures"
    assert "pip install" in r.json()["detail"]
