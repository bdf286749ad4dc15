"""``http``: the HTTP API (``bench/README.md``): requests per second and p50/p99 latency
of one command (``POST /cases/{id}/triggers/thought_work``, an activity) from 1, 4 and 16
concurrent clients (httpx, each its own keep-alive connection and its own case), served by
``casework serve-http`` (one uvicorn worker, a process of its own), beside the same command
sent to the Python API in-process from as many threads (the floor for the service): on
SQLite (synchronous FULL, as shipped) and on PostgreSQL (skipped, with a note, when no
server answers). The HTTP side includes what the service adds to each command: the
credential check (an API token), masking, the notice log that feeds events and webhooks.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from casework import Engine

from tests.petition_steps import CLERK, FOUR_FIXES, LEADER, OPEN_DATA, TRIAGE

from .base import Ctx, Table, percentile, ratios, spread, target
from .db import PETITION, Throwaway

TOKEN = "bench-token"
ACTOR = "leader,handler:wu"
RATIO_TARGET = 0.5
P99_TARGET_MS = 20.0


@dataclass
class Config:
    clients: tuple[int, ...] = (1, 4, 16)
    requests: int = 480  # per run, shared among the clients
    warmup: int = 20
    repeat: int = 3


def _prepare(url: str, n: int) -> list[str]:
    """``n`` petitions being handled by wu, one per client (an activity may be recorded on
    each)."""
    with Engine(url, [PETITION], sqlite_synchronous="FULL") as engine:
        ids = []
        for _ in range(n):
            case = engine.open_case("petition", OPEN_DATA, actor=CLERK)
            engine.fire(case.id, "accept", actor=TRIAGE)
            engine.fire(case.id, "assign", actor=LEADER, data=FOUR_FIXES)  # wu handles it
            ids.append(case.id)
    return ids


def _config(work: Path, url: str) -> Path:
    from casework.http import hash_token

    cfg = work / "bench-http.toml"
    cfg.write_text(f"""
[database]
url = "{url}"
sqlite_synchronous = "FULL"
pool_size = 20

[workflows]
paths = ["{PETITION}"]

[http]
scheduler = false

[[http.tokens]]
name = "bench"
sha256 = "{hash_token(TOKEN)}"
actor = "{ACTOR}"
""", encoding="utf-8")
    return cfg


def _drive(clients: int, requests: int, call: Callable[[int, int], None]) -> dict[str, Any]:
    """``clients`` threads, each sending its share of ``requests``; rate and latencies."""
    per = max(1, requests // clients)
    lat: list[list[float]] = [[] for _ in range(clients)]
    errors: list[BaseException] = []
    go = threading.Barrier(clients + 1)

    def worker(slot: int) -> None:
        go.wait()
        try:
            for i in range(per):
                t = time.perf_counter()
                call(slot, i)
                lat[slot].append(time.perf_counter() - t)
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(s,)) for s in range(clients)]
    for t in threads:
        t.start()
    go.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    if errors:
        raise RuntimeError(f"{len(errors)} requests failed; first: {errors[0]!r}")
    flat = sorted(x for xs in lat for x in xs)
    return {"rps": len(flat) / wall, "p50_ms": percentile(flat, 50) * 1000,
            "p99_ms": percentile(flat, 99) * 1000}


def _backend(ctx: Ctx, name: str, url: str, cfg: Config) -> dict[str, Any]:
    import httpx
    from casework.http.testing import ServerProcess

    n = max(cfg.clients)
    ids = _prepare(url, n)
    body = {"data": {"notes": "explained the enforcement ruling again"}}
    out: dict[str, Any] = {}
    engine = Engine(url, [PETITION], sqlite_synchronous="FULL", pool_size=20)
    try:
        with ServerProcess(_config(ctx.work, url), scheduler=False) as srv:
            for clients in cfg.clients:
                pool = [httpx.Client(base_url=srv.url, timeout=30,
                                     headers={"Authorization": f"Bearer {TOKEN}"})
                        for _ in range(clients)]

                def over_http(slot: int, _: int, pool: list[httpx.Client] = pool) -> None:
                    r = pool[slot].post(f"/cases/{ids[slot]}/triggers/thought_work", json=body)
                    if r.status_code != 200:
                        raise RuntimeError(f"HTTP {r.status_code}: {r.text[:200]}")

                def in_process(slot: int, _: int) -> None:
                    engine.fire(ids[slot], "thought_work", actor=ACTOR, data=body["data"])

                _drive(clients, cfg.warmup * clients, over_http)
                _drive(clients, cfg.warmup * clients, in_process)
                runs: dict[str, list[dict[str, Any]]] = {"http": [], "python": []}
                for rep in range(cfg.repeat):
                    order = [("http", over_http), ("python", in_process)]
                    for kind, fn in (order if rep % 2 == 0 else order[::-1]):
                        runs[kind].append(_drive(clients, cfg.requests, fn))
                for c in pool:
                    c.close()
                res = {kind: {k: spread([r[k] for r in rs]) for k in ("rps", "p50_ms", "p99_ms")}
                       for kind, rs in runs.items()}
                res["ratio"] = ratios([r["rps"] for r in runs["http"]],
                                      [r["rps"] for r in runs["python"]])
                out[str(clients)] = res
                ctx.progress(f"{name}, {clients} clients: http {res['http']['rps']['median']:.0f}/s "
                             f"p99 {res['http']['p99_ms']['median']:.1f} ms; python "
                             f"{res['python']['rps']['median']:.0f}/s")
    finally:
        engine.close()
    return out


def run(ctx: Ctx) -> dict[str, Any]:
    cfg = Config(requests=ctx.cases(480, 64), repeat=ctx.repeat(3, 1))
    if ctx.quick:
        cfg.warmup = 5
    results: dict[str, Any] = {}
    notes: list[str] = []
    results["sqlite"] = _backend(ctx, "sqlite", f"sqlite:///{ctx.work / 'http.db'}", cfg)
    try:
        pg = Throwaway(ctx.args.admin_url, "casework_bench_http")
    except Exception as e:  # no server
        notes.append(f"PostgreSQL skipped: {type(e).__name__}: {str(e).splitlines()[0][:120]}")
    else:
        try:
            results["postgresql"] = _backend(ctx, "postgresql", pg.schema(), cfg)
        finally:
            pg.drop()
    targets = []
    for backend, by in results.items():
        for clients, r in by.items():
            ratio = r["ratio"]["median"]
            targets.append(target(f"{backend} {clients} http/python", ratio,
                                  f">= {RATIO_TARGET:g}", ratio >= RATIO_TARGET))
    if "4" in results["sqlite"]:
        p99 = results["sqlite"]["4"]["http"]["p99_ms"]["median"]
        targets.append(target("sqlite 4 p99", p99, f"< {P99_TARGET_MS:g} ms", p99 < P99_TARGET_MS))
    return {"config": {"clients": list(cfg.clients), "requests": cfg.requests,
                       "warmup": cfg.warmup, "repeat": cfg.repeat},
            "results": results, "notes": notes, "targets": targets}


def table(res: dict[str, Any]) -> Table:
    cfg = res["config"]
    t = Table([f"POST /cases/{{id}}/triggers/thought_work: {cfg['requests']} requests per run "
               f"shared by the clients, each client its own case; {cfg['repeat']} runs each; "
               "one uvicorn worker (its own process) beside Engine.fire in-process"], fine=True)
    for backend, by in res["results"].items():
        for clients, r in by.items():
            t.add(f"{backend}, {clients} client{'s' if clients != '1' else ''}")
            t.add("  http requests/s", r["http"]["rps"], "/s")
            t.add("  http p50", r["http"]["p50_ms"], "ms")
            t.add("  http p99", r["http"]["p99_ms"], "ms",
                  f"{backend} {clients} p99" if backend == "sqlite" and clients == "4" else "")
            t.add("  python in-process commands/s", r["python"]["rps"], "/s")
            t.add("  python p50", r["python"]["p50_ms"], "ms")
            t.add("  python p99", r["python"]["p99_ms"], "ms")
            t.add("  http / python", r["ratio"], "", f"{backend} {clients} http/python")
    t.notes.extend(res.get("notes", []))
    return t
