#!/usr/bin/env python3
"""The repository's bootstrap: sets up ``.venv``, then runs the ``casework`` command line.

Every command of the installed ``casework`` (open, fire, show, report, demo, ...; see
``casework.cli``) runs here with the repository's settings, ``config/casework.toml``,
and writes its pictures and the demo's database to ``var/`` beside this file. Three
more commands are the project's own: test, typecheck, bench.

The first run sets up ``.venv`` beside this file (``pip install -e .[dev]``)
and re-runs itself there; later runs reinstall only when pyproject.toml has
changed. Set CASEWORK_NO_VENV=1 to use the current interpreter as it is.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"


def _bootstrap() -> None:
    """Make sure the project's virtualenv exists and is current, then run inside it."""
    if os.environ.get("CASEWORK_NO_VENV") == "1":
        return
    py = VENV / "bin" / "python"
    stamp = VENV / ".casework-installed"
    want = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    inside = Path(sys.prefix).resolve() == VENV.resolve()
    current = stamp.exists() and stamp.read_text().strip() == want
    if inside and current:
        return
    if not current:
        print("casework: setting up .venv (first run; this takes a minute)...", file=sys.stderr)
        if not py.exists():
            subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        pip = [str(py), "-m", "pip", "install", "--disable-pip-version-check", "-q"]
        subprocess.run([*pip, "-e", f"{ROOT}[dev]"], check=True, cwd=ROOT)
        stamp.write_text(want)
    os.execv(str(py), [str(py), str(Path(__file__).resolve()), *sys.argv[1:]])


if __name__ == "__main__":
    _bootstrap()

# ruff: noqa: E402  (the imports below need the virtualenv set up above)
import click
from casework.cli import Defaults, main

DEFAULTS = Defaults(config=ROOT / "config" / "casework.toml", var=ROOT / "var")


@click.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.pass_context
def bench(ctx: click.Context) -> None:
    """Run the benchmarks (see bench/README.md); extra arguments go to the suite."""
    from bench.harness import main as run_suite

    raise SystemExit(run_suite(list(ctx.args)))


def _typecheck_tree() -> Path:
    """The installed package's layout, as links to the repository's folders, for mypy.

    The package ``casework`` is assembled from several folders (pyproject's
    ``package-dir``); mypy reads a source tree, so it is shown the tree a wheel installs.
    """
    import tomllib

    mapping: dict[str, str] = tomllib.loads((ROOT / "pyproject.toml").read_text())[
        "tool"]["setuptools"]["package-dir"]
    top = ROOT / "var" / "typecheck"
    if top.exists():
        import shutil

        shutil.rmtree(top)
    for package, folder in sorted(mapping.items()):
        target = top.joinpath(*package.split("."))
        target.mkdir(parents=True, exist_ok=True)
        for entry in (ROOT / folder).iterdir():
            link = target / entry.name
            if entry.name == "__pycache__" or link.exists():
                continue  # a mapped subpackage has its own folder of links
            if entry.is_dir() and f"{package}.{entry.name}" in mapping:
                continue
            link.symlink_to(entry)
    return top


@click.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.pass_context
def typecheck(ctx: click.Context) -> None:
    """Run mypy on the package as installed (``casework``), run.py, demo.py and bench/."""
    top = _typecheck_tree()
    os.chdir(ROOT)
    env = {**os.environ, "MYPYPATH": str(top)}
    cmd = [sys.executable, "-m", "mypy", *ctx.args]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    rel = str(top.relative_to(ROOT))
    out = proc.stdout.replace(f"{rel}/casework/persistence/", "persistence/").replace(
        f"{rel}/casework/", "engine/")
    sys.stdout.write(out)
    sys.stderr.write(proc.stderr)
    raise SystemExit(proc.returncode)


@click.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.pass_context
def test(ctx: click.Context) -> None:
    """Get the services the suite needs (PostgreSQL, Graphviz, Chromium) where the machine
    allows, say what could not be got, then run the whole test suite (extra arguments go
    to pytest)."""
    import pytest

    os.chdir(ROOT)
    sys.path.insert(0, str(ROOT))
    from tests.services import prepare

    prepare()
    raise SystemExit(pytest.main(["-q", *ctx.args]))


if __name__ == "__main__":
    main(defaults=DEFAULTS, commands=[bench, test, typecheck])
