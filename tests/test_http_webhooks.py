"""Webhooks and the scheduler over HTTP: a receiver that fails then recovers gets every
notice at least once with a valid signature; a killed server loses no notice; a
subscription is in force for every notice recorded after its POST answered, and a deleted
one for none after its DELETE answered, in this process and in another; two uvicorn
workers on one PostgreSQL share the scheduler and fire each timer once."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from casework import Engine, FrozenClock
from casework.http import verify_signature
from casework.http.notices import NoticeStore
from casework.http.testing import ServerProcess, free_port
from sqlalchemy import event

from tests.petition_steps import CLERK, OPEN_DATA, STANDARD
from tests.test_http_support import auth, live, write_config

WAIT = 30.0


class Receiver:
    """A webhook receiver on 127.0.0.1: answers 500 to the first ``fail`` posts, then 200;
    keeps every post. ``wait_for(n)`` waits (on a condition, bounded) for ``n`` distinct
    notices."""

    def __init__(self, fail: int = 0, port: int | None = None) -> None:
        self.fail = fail
        self.posts: list[tuple[dict[str, str], bytes]] = []
        self.cond = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with receiver.cond:
                    receiver.posts.append(({k.lower(): v for k, v in self.headers.items()}, body))
                    failing = len(receiver.posts) <= receiver.fail
                    receiver.cond.notify_all()
                self.send_response(500 if failing else 204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port or free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def notice_ids(self) -> set[int]:
        return {json.loads(b)["id"] for _, b in self.posts[self.fail:]}

    def wait_for(self, n: int, timeout: float = WAIT) -> bool:
        with self.cond:
            return self.cond.wait_for(lambda: len(self.notice_ids()) >= n, timeout)

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def subscribe(client: httpx.Client, url: str, **extra: Any) -> dict[str, Any]:
    r = client.post("/webhooks", json={"url": url, **extra}, headers=auth(CLERK))
    assert r.status_code == 201, r.text
    return dict(r.json())


def settled(client: httpx.Client, hook_id: str, n: int,
            timeout: float = WAIT) -> list[dict[str, Any]]:
    """The subscription's deliveries once ``n`` of them are recorded and none is pending
    (what the server has recorded of its posts, within ``timeout``)."""
    deadline = time.monotonic() + timeout
    while True:
        r = client.get(f"/webhooks/{hook_id}/deliveries", headers=auth(CLERK))
        assert r.status_code == 200, r.text
        got: list[dict[str, Any]] = r.json()
        if (len(got) >= n and all(d["status"] != "pending" for d in got)) \
                or time.monotonic() > deadline:
            return got
        time.sleep(0.05)


def test_a_receiver_that_fails_then_recovers_gets_each_notice_signed(db_url: str,
                                                                     clock: FrozenClock) -> None:
    with Receiver(fail=3) as rx, live(db_url, clock) as h:
        hook = subscribe(h.client, rx.url, notices=["opened", "transition"], workflow="petition")
        assert "secret" in hook and "secret" not in h.client.get(
            f"/webhooks/{hook['id']}", headers=auth(CLERK)).json()
        ids = []
        for _ in range(2):
            case = h.client.post("/workflows/petition/cases", json={"data": OPEN_DATA},
                                 headers=auth(CLERK)).json()
            ids.append(case["id"])
            cmd = STANDARD["accept"]
            assert h.client.post(f"/cases/{case['id']}/triggers/accept",
                                 headers=auth(cmd.actor)).status_code == 200
        assert rx.wait_for(4), rx.posts
        # The receiver holds a post before it answers, and the server records the answer
        # after that: wait (bounded) for the server's record of all four.
        deliveries = settled(h.client, hook["id"], 4)
        seen: dict[tuple[str, str], dict[str, Any]] = {}
        for headers, body in rx.posts:
            assert verify_signature(hook["secret"], headers["casework-signature"], body)
            assert not verify_signature("whsec_wrong", headers["casework-signature"], body)
            note = json.loads(body)
            assert note["case"]["data"]["petitioner_name"] == "***"
            assert "Wang Fang" not in body.decode()
            seen[(note["case_id"], note["event"]["name"])] = note
        assert set(seen) == {(c, n) for c in ids for n in ("open", "accept")}
        assert len(deliveries) == 4 and all(d["status"] == "delivered" for d in deliveries)
        assert sum(d["attempts"] for d in deliveries) == 4 + 3  # each failure recorded
        # Another actor neither sees nor removes the subscription.
        assert h.client.get(f"/webhooks/{hook['id']}", headers=auth("clerk:wu")).status_code == 404
        assert h.client.delete(f"/webhooks/{hook['id']}", headers=auth("clerk:wu")).status_code == 404
        assert h.client.delete(f"/webhooks/{hook['id']}", headers=auth(CLERK)).status_code == 204
        # A host not allowed by the settings is refused.
        r = h.client.post("/webhooks", json={"url": "http://example.org/x"}, headers=auth(CLERK))
        assert r.status_code == 422


@contextmanager
def a_read_held(store: NoticeStore) -> Iterator[None]:
    """A read of the subscriptions (``store.webhooks()``, in a thread) that has run its query
    and is held there until the block ends: whatever the block commits, that read began
    before it. On leaving, the read is let go and has finished (both waits bounded)."""
    held, release = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def hold(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if threading.current_thread() is reader and "FROM http_webhooks" in statement \
                and not held.is_set():
            held.set()
            release.wait(WAIT)

    def read() -> None:
        try:
            store.webhooks()
        except BaseException as e:  # shown by the test
            errors.append(e)

    reader = threading.Thread(target=read, name="held-read", daemon=True)
    event.listen(store.engine, "after_cursor_execute", hold)
    try:
        reader.start()
        assert held.wait(WAIT), "the read of the subscriptions never ran"
        yield
    finally:
        release.set()
        reader.join(WAIT)
        event.remove(store.engine, "after_cursor_execute", hold)
    assert not reader.is_alive() and not errors, errors


def store_of(h: Any) -> NoticeStore:
    store: NoticeStore = h.server.server.config.app.state.casework.store
    return store


def open_case(client: httpx.Client) -> str:
    r = client.post("/workflows/petition/cases", json={"data": OPEN_DATA}, headers=auth(CLERK))
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def test_a_subscription_gets_the_next_notice_though_a_read_began_before_it(
        db_url: str, clock: FrozenClock) -> None:
    # A read of the subscriptions that began before the POST committed, and finished after
    # it, must not leave this process recording the next notices without the new one.
    with Receiver() as rx, live(db_url, clock) as h:
        with a_read_held(store_of(h)):
            hook = subscribe(h.client, rx.url)
        cid = open_case(h.client)  # recorded before the answer (no outbox in this engine)
        r = h.client.get(f"/webhooks/{hook['id']}/deliveries", headers=auth(CLERK))
        assert [d["case_id"] for d in r.json()] == [cid], r.json()
        assert rx.wait_for(1), rx.posts


def test_a_deleted_subscription_gets_nothing_new_though_a_read_began_before(
        db_url: str, clock: FrozenClock) -> None:
    with Receiver() as kept_rx, Receiver() as gone_rx, live(db_url, clock) as h:
        kept, gone = subscribe(h.client, kept_rx.url), subscribe(h.client, gone_rx.url)
        store = store_of(h)
        with a_read_held(store):
            assert h.client.delete(f"/webhooks/{gone['id']}", headers=auth(CLERK)).status_code == 204
        cid = open_case(h.client)
        r = h.client.get(f"/webhooks/{kept['id']}/deliveries", headers=auth(CLERK))
        assert [d["case_id"] for d in r.json()] == [cid], r.json()
        assert store.deliveries(gone["id"]) == []
        assert kept_rx.wait_for(1), kept_rx.posts


def test_a_killed_server_loses_no_notice(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'cases.db'}"
    # The receiver is down for the whole first life of the server, whose deliveries must
    # not run out of attempts meanwhile (one that has is given up: failed, on record).
    # The killed server's claims (notices taken from the outbox, deliveries being posted)
    # lapse after the settings' leases (5 s each), well within WAIT after the restart.
    cfg = write_config(tmp_path, db, extra="max_attempts = 100")
    port, rx_port = free_port(), free_port()
    ids: list[str] = []
    with ServerProcess(cfg, port=port) as srv, httpx.Client(base_url=srv.url, timeout=30) as c:
        hook = subscribe(c, f"http://127.0.0.1:{rx_port}/hook")
        for _ in range(3):  # no receiver listens yet: every delivery fails and is retried
            r = c.post("/workflows/petition/cases", json={"data": OPEN_DATA}, headers=auth(CLERK))
            assert r.status_code == 201
            ids.append(r.json()["id"])
        srv.kill()  # SIGKILL: nothing is flushed, nothing is said goodbye to
    with Receiver(port=rx_port) as rx, ServerProcess(cfg, port=port):
        assert rx.wait_for(3), (rx.posts, ids)
        got = {json.loads(b)["case_id"] for _, b in rx.posts}
        assert got == set(ids)
        for headers, body in rx.posts:
            assert verify_signature(hook["secret"], headers["casework-signature"], body)


QUICK = """
workflow: quick
title: A case with a deadline of seconds
roles: [clerk]
fields:
  name: {type: string, pii: true}
open:
  roles: [clerk]
  required: [name]
initial: waiting
states:
  waiting: {description: the clock runs}
  done: {final: true}
transitions:
  - trigger: finish
    source: waiting
    dest: done
    roles: [clerk]
calendar: calendar
counting: exact
deadlines:
  quick:
    state: waiting
    within: 0.0008h
    warn: [50%]
    breach: {escalate: false}
"""


@contextmanager
def pg_url(pg_database: str) -> Iterator[str]:
    from tests.conftest import new_pg_schema

    yield new_pg_schema(pg_database)


@pytest.mark.postgres
def test_subscriptions_are_in_force_at_once_in_another_worker_process(
        tmp_path: Path, pg_database: str) -> None:
    """Two server processes on one PostgreSQL: a subscription made (or deleted) through one
    is in force for the very next notice the other records, though the other had just read
    the subscriptions."""
    with pg_url(pg_database) as db:
        Engine(db, []).close()  # the schema, made once
        cfg = write_config(tmp_path, db)
        store = NoticeStore(db)  # what the servers have recorded
        with contextlib.closing(store), \
                Receiver() as kept_rx, Receiver() as gone_rx, Receiver() as new_rx, \
                ServerProcess(cfg) as a, ServerProcess(cfg) as b, \
                httpx.Client(base_url=a.url, timeout=30) as ca, \
                httpx.Client(base_url=b.url, timeout=30) as cb:
            kept, gone = subscribe(ca, kept_rx.url), subscribe(ca, gone_rx.url)

            def listed() -> set[str]:  # b reads the subscriptions (and may keep them)
                r = cb.get("/webhooks", headers=auth(CLERK))
                assert r.status_code == 200, r.text
                return {w["id"] for w in r.json()}

            assert listed() == {kept["id"], gone["id"]}
            assert ca.delete(f"/webhooks/{gone['id']}", headers=auth(CLERK)).status_code == 204
            first = open_case(cb)  # b's notice: for kept, not for gone
            assert kept_rx.wait_for(1), kept_rx.posts
            assert store.deliveries(gone["id"]) == []  # recorded with kept's: none queued
            listed()
            new = subscribe(ca, new_rx.url)
            second = open_case(cb)  # b's notice: for kept and for new
            assert new_rx.wait_for(1), new_rx.posts
            assert kept_rx.wait_for(2), kept_rx.posts
            assert {json.loads(body)["case_id"] for _, body in new_rx.posts} == {second}
            assert {json.loads(body)["case_id"] for _, body in kept_rx.posts} == {first, second}
            assert listed() == {kept["id"], new["id"]}
            assert store.deliveries(gone["id"]) == [] and not gone_rx.posts


@pytest.mark.postgres
@pytest.mark.slow
def test_two_workers_on_postgresql_fire_each_timer_once(tmp_path: Path, pg_database: str) -> None:
    (tmp_path / "quick.yaml").write_text(QUICK, encoding="utf-8")
    with pg_url(pg_database) as db:
        Engine(db, [tmp_path / "quick.yaml"]).close()  # the schema, made once
        cfg = write_config(tmp_path, db, workflows=f'["{tmp_path / "quick.yaml"}"]')
        n = 16
        with ServerProcess(cfg, workers=2) as srv, httpx.Client(base_url=srv.url, timeout=30) as c:
            ids = []
            for i in range(n):
                r = c.post("/workflows/quick/cases", json={"data": {"name": f"p{i}"}},
                           headers=auth(CLERK))
                assert r.status_code == 201, r.text
                ids.append(r.json()["id"])
            engine = Engine(db, [tmp_path / "quick.yaml"])
            try:
                deadline = time.monotonic() + 60
                while time.monotonic() < deadline and any(engine.pending_timers(i) for i in ids):
                    time.sleep(0.5)  # the timers fall due in real time (about 3 s)
                assert not any(engine.pending_timers(i) for i in ids)
                for cid in ids:
                    kinds = [e.kind.value for e in engine.history(cid)]
                    assert kinds.count("warning") == 1 and kinds.count("breach") == 1, kinds
                assert engine.verify() == []
            finally:
                engine.close()
            metrics = c.get("/metrics", headers=auth(CLERK)).text
            assert "casework_timer_lag_seconds" in metrics
