"""``cold``: wall time of a fresh ``python run.py validate workflows/petition.yaml`` (the
interpreter the user types, which hands over to the project's ``.venv``), beside a bare
``python -c pass`` in the same run."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from .base import Ctx, Table, spread
from .db import ROOT

VALIDATE = ["run.py", "validate", "workflows/petition.yaml"]


def cold_start(argv: list[str]) -> float:
    """Wall seconds of one fresh process running ``argv`` from the project's folder."""
    t0 = time.perf_counter()
    subprocess.run(argv, cwd=ROOT, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def system_python() -> str:
    """The interpreter a user types (outside the project's .venv), else this one."""
    base = Path(sys.base_prefix) / "bin" / "python3"
    return str(base) if base.exists() else sys.executable


def run(ctx: Ctx) -> dict[str, Any]:
    """Fresh processes, alternating: ``run.py validate`` and a bare interpreter."""
    python, repeat = system_python(), ctx.repeat(5)
    validate: list[float] = []
    bare: list[float] = []
    for rep in range(repeat):
        validate.append(cold_start([python, *VALIDATE]))
        bare.append(cold_start([python, "-c", "pass"]))
        ctx.progress(f"run {rep + 1}/{repeat} cold start validate {validate[-1]:.2f} s, "
                     f"bare python {bare[-1]:.2f} s")
    return {"config": {"repeat": repeat}, "command": " ".join(["python", *VALIDATE]),
            "python": python, "validate_s": spread(validate), "bare_python_s": spread(bare),
            "targets": []}


def table(c: dict[str, Any]) -> Table:
    t = Table([f"fresh processes of {c['python']}, {c['config']['repeat']} runs each"])
    t.add("cold start, run.py validate", c["validate_s"], "s")
    t.add("  bare python -c pass", c["bare_python_s"], "s")
    return t
