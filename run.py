#!/usr/bin/env python3
"""casework's command line.

Cases: open, fire, show, timeline. Definitions: validate, diagram, migrate. The
scheduler: serve, recompute-deadlines. Operators: report, verify, export, import,
db upgrade / db current. The project: demo, test, bench.

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
import json
from collections.abc import Sequence
from typing import Any

import click

DEFAULT_CONFIG = ROOT / "config" / "casework.toml"


def _engine(ctx: click.Context) -> Any:
    from casework import Engine, configure_logging

    configure_logging(ctx.obj["log_level"])
    overrides: dict[str, Any] = {}
    if ctx.obj["db"]:
        overrides["database_url"] = ctx.obj["db"]
    return Engine.from_settings(ctx.obj["config"], **overrides)


def _parse_data(pairs: Sequence[str], json_text: str | None) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(json_text) if json_text else {}
    for pair in pairs:
        if "=" not in pair:
            raise click.BadParameter(f"{pair!r} is not KEY=VALUE", param_hint="-d")
        k, v = pair.split("=", 1)
        try:
            data[k] = json.loads(v)
        except json.JSONDecodeError:
            data[k] = v
    return data


class _Errors(click.Group):
    """Show the engine's errors as one clear line and exit 1, without a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        from casework import CaseworkError

        try:
            return super().invoke(ctx)
        except CaseworkError as e:
            click.echo(f"error: {e}", err=True)
            ctx.exit(1)


@click.group(cls=_Errors)
@click.option("--config", type=click.Path(dir_okay=False, path_type=Path), default=DEFAULT_CONFIG,
              show_default=True, help="settings file (TOML)")
@click.option("--db", default=None, help="database URL, overriding the settings")
@click.option("--log-level", default="WARNING", show_default=True,
              type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False))
@click.pass_context
def cli(ctx: click.Context, config: Path, db: str | None, log_level: str) -> None:
    """casework: case lifecycles as declarative, durable state machines."""
    ctx.ensure_object(dict)
    ctx.obj.update(config=config, db=db, log_level=log_level)


@cli.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
def validate(files: tuple[Path, ...]) -> None:
    """Check workflow definitions; list every problem with file and line."""
    from casework import DefinitionError, load_definition

    bad = 0
    for f in files:
        try:
            d = load_definition(f)
        except DefinitionError as e:
            bad += 1
            for p in e.problems:
                click.echo(str(p), err=True)
            continue
        click.echo(f"ok   {f}: workflow {d.spec.workflow!r} version {d.version} "
                   f"({len(d.spec.transitions)} transitions, {len(d.spec.activities)} activities)")
    if bad:
        raise SystemExit(1)


def _spec_of(ctx: click.Context, workflow: str) -> Any:
    from casework import load_definition
    from casework.settings import load_settings

    p = Path(workflow)
    if p.suffix in {".yaml", ".yml"}:
        return load_definition(p).spec
    for f in load_settings(ctx.obj["config"]).workflow_files():
        d = load_definition(f)
        if d.spec.workflow == workflow:
            return d.spec
    raise click.BadParameter(f"no workflow named {workflow!r} in the settings", param_hint="WORKFLOW")


@cli.command()
@click.argument("workflow")
@click.option("--format", "fmt", type=click.Choice(["mermaid", "png", "svg"]), default=None,
              help="mermaid (the default), or png with --counts")
@click.option("--counts", is_flag=True,
              help="show each state's open and overdue cases, from the database (png or svg)")
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="output file (default: stdout for mermaid, var/WORKFLOW[-counts].FORMAT otherwise)")
@click.pass_context
def diagram(ctx: click.Context, workflow: str, fmt: str | None, counts: bool, out: Path | None) -> None:
    """Draw WORKFLOW (a name from the settings, or a YAML file)."""
    from casework.diagrams import mermaid, render, render_with_counts

    spec = _spec_of(ctx, workflow)
    fmt = fmt or ("png" if counts else "mermaid")
    if fmt == "mermaid":
        if counts:
            raise click.UsageError("--counts draws a picture: use --format png or svg")
        text = mermaid(spec)
        if out is None:
            click.echo(text)
        else:
            out.write_text(text, encoding="utf-8")
            click.echo(f"wrote {out}")
        return
    if not counts:
        target = out or ROOT / "var" / f"{spec.workflow}.{fmt}"
        click.echo(f"wrote {render(spec, target, fmt)}")
        return
    with _engine(ctx) as engine:
        by_state = engine.state_counts(spec.workflow)
    target = out or ROOT / "var" / f"{spec.workflow}-counts.{fmt}"
    click.echo(f"wrote {render_with_counts(spec, by_state, target, fmt)}")


@cli.command()
@click.argument("case_id")
@click.option("--format", "fmt", type=click.Choice(["png", "svg"]), default="png", show_default=True)
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="output file (default: var/timeline-ID8.FORMAT, ID8 the id's first 8 characters)")
@click.pass_context
def timeline(ctx: click.Context, case_id: str, fmt: str, out: Path | None) -> None:
    """Draw CASE_ID through time: states, deadlines, warnings, escalations, pending timers."""
    from casework.pictures import render_timeline

    with _engine(ctx) as engine:
        case = engine.get_case(case_id)
        tz = engine.workflow(case.workflow, case.version).tz
        target = out or ROOT / "var" / f"timeline-{case.id[:8]}.{fmt}"
        path = render_timeline(case, engine.history(case.id), engine.pending_timers(case.id),
                               target, fmt, now=engine.clock.now(), tz=tz)
    click.echo(f"wrote {path}")


@cli.command("open")
@click.argument("workflow")
@click.option("--actor", required=True, help="role[,role]:id[@unit], e.g. clerk:li")
@click.option("-d", "--data", "pairs", multiple=True, help="KEY=VALUE (VALUE may be JSON)")
@click.option("--json", "json_text", default=None, help="the data as one JSON object")
@click.option("--key", default=None, help="idempotency key")
@click.pass_context
def open_(ctx: click.Context, workflow: str, actor: str, pairs: tuple[str, ...],
          json_text: str | None, key: str | None) -> None:
    """Open a case of WORKFLOW; print its id."""
    with _engine(ctx) as engine:
        case = engine.open_case(workflow, _parse_data(pairs, json_text), actor=actor,
                                idempotency_key=key)
        click.echo(case.id)


@cli.command()
@click.argument("case_id")
@click.argument("trigger")
@click.option("--actor", required=True, help="role[,role]:id[@unit], e.g. leader:wang")
@click.option("-d", "--data", "pairs", multiple=True, help="KEY=VALUE (VALUE may be JSON)")
@click.option("--json", "json_text", default=None, help="the input as one JSON object")
@click.option("--key", default=None, help="idempotency key")
@click.option("--expect-version", type=int, default=None, help="refuse if the case moved on")
@click.pass_context
def fire(ctx: click.Context, case_id: str, trigger: str, actor: str, pairs: tuple[str, ...],
         json_text: str | None, key: str | None, expect_version: int | None) -> None:
    """Fire TRIGGER (a transition or an activity) on CASE_ID."""
    with _engine(ctx) as engine:
        case = engine.fire(case_id, trigger, actor=actor, data=_parse_data(pairs, json_text),
                           idempotency_key=key, expected_version=expect_version)
        click.echo(f"{case.id}: {case.state} (row version {case.row_version})")


@cli.command()
@click.argument("case_id")
@click.option("--actor", default=None, help="also list what this actor may do now")
@click.pass_context
def show(ctx: click.Context, case_id: str, actor: str | None) -> None:
    """Show a case: state, data (PII masked) and history."""
    from casework.display import format_case

    with _engine(ctx) as engine:
        click.echo(format_case(engine, case_id, actor=actor))


@cli.command()
@click.option("--db", "db_path", type=click.Path(path_type=Path),
              default=ROOT / "var" / "demo.db", show_default=True)
def demo(db_path: Path) -> None:
    """Run the petition demo on a fresh SQLite file and print what happened."""
    from demo import run_demo

    run_demo(db_path, echo=click.echo)


@cli.group()
def db() -> None:
    """The database schema (Alembic migrations)."""


def _db_url(ctx: click.Context) -> str:
    from casework.settings import load_settings

    root = ctx.find_root()
    url: str = root.obj["db"] or load_settings(root.obj["config"]).database_url()
    return url


@db.command("upgrade")
@click.option("--to", "revision", default="head", show_default=True)
@click.pass_context
def db_upgrade(ctx: click.Context, revision: str) -> None:
    """Create or upgrade the database schema."""
    from casework.persistence.migrate import upgrade

    url = _db_url(ctx)
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    upgrade(url, revision)
    click.echo(f"schema at {revision}")


@db.command("current")
@click.pass_context
def db_current(ctx: click.Context) -> None:
    """Print the database's schema revision and the code's."""
    from casework.persistence.migrate import current_revision, head_revision
    from sqlalchemy import create_engine

    eng = create_engine(_db_url(ctx))
    try:
        click.echo(f"database: {current_revision(eng) or 'none'}; code: {head_revision()}")
    finally:
        eng.dispose()


@cli.command()
@click.option("--workflow", default="petition", show_default=True)
@click.option("--from", "start", default=None, help="first day (YYYY-MM-DD), in the workflow's zone")
@click.option("--to", "end", default=None, help="day after the last (YYYY-MM-DD)")
@click.option("--by", default=None, help="break down by a case field (unit, source, leader...)")
@click.option("--where", "filters", multiple=True,
              help="FIELD=VALUE (a value or a declared group, e.g. source=handed_down)")
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table",
              show_default=True)
@click.option("--out", type=click.Path(path_type=Path), default=None, help="write to a file")
@click.option("--chart", type=click.Path(path_type=Path), default=None,
              help="also draw per-unit open/overdue bars (PNG or SVG by the file's suffix)")
@click.pass_context
def report(ctx: click.Context, workflow: str, start: str | None, end: str | None, by: str | None,
           filters: tuple[str, ...], fmt: str, out: Path | None, chart: Path | None) -> None:
    """Print a workflow's report (the figures its definition declares)."""
    where = {k: v for k, v in (_parse_data(filters, None)).items()}
    with _engine(ctx) as engine:
        rep = engine.report(workflow, start=start, end=end, by=by, where=where)
        text = {"table": rep.format_table, "csv": rep.to_csv, "json": rep.to_json}[fmt]()
        if out is None:
            click.echo(text)
        else:
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(text + ("\n" if not text.endswith("\n") else ""), encoding="utf-8")
            click.echo(f"wrote {out}")
        if chart is not None:
            from casework.pictures import render_unit_chart

            per_unit = engine.report(workflow, start=start, end=end, by="unit", where=where)
            rows = [(u, int(r.get("in_progress") or 0), int(r.get("overdue") or 0))
                    for u, r in per_unit.rows.items()]
            click.echo(f"wrote {render_unit_chart(rows, chart, chart.suffix.lstrip('.') or 'png')}")


@cli.command()
@click.argument("workflow")
@click.option("--to", "to_version", required=True, help="a stored version, or 'latest'")
@click.option("--map", "maps", multiple=True, help="OLD_STATE=NEW_STATE")
@click.option("--map-file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="a YAML or JSON mapping of old states to new ones")
@click.option("--apply", is_flag=True, help="move the cases (without it: a dry run)")
@click.pass_context
def migrate(ctx: click.Context, workflow: str, to_version: str, maps: tuple[str, ...],
            map_file: Path | None, apply: bool) -> None:
    """Move running cases of WORKFLOW to another version (dry run unless --apply)."""
    mapping: dict[str, str] = {}
    if map_file is not None:
        from ruamel.yaml import YAML

        mapping.update({str(k): str(v) for k, v in (YAML(typ="safe").load(map_file) or {}).items()})
    for m in maps:
        if "=" not in m:
            raise click.BadParameter(f"{m!r} is not OLD=NEW", param_hint="--map")
        old, new = m.split("=", 1)
        mapping[old] = new
    with _engine(ctx) as engine:
        res = engine.migrate(workflow, to_version, mapping, dry_run=not apply)
        verb = "would move" if res.dry_run else "moved"
        for item in res.items:
            if item.refused:
                click.echo(f"  refused {item.case_id}: {item.from_state} ({item.refused})")
            else:
                click.echo(f"  {verb} {item.case_id}: {item.from_version} {item.from_state} -> "
                           f"{res.to_version} {item.to_state}")
        click.echo(f"{len(res.moved)} case(s) {verb}, {len(res.refused)} refused"
                   + ("" if apply else " (dry run: nothing changed; add --apply)"))
        if res.refused:
            raise SystemExit(1)


@cli.command()
@click.option("--once", is_flag=True, help="fire what is due now and exit")
@click.pass_context
def serve(ctx: click.Context, once: bool) -> None:
    """Run the scheduler as a daemon until SIGTERM or SIGINT (the batch in hand is finished)."""
    import signal
    import threading

    engine = _engine(ctx)
    if once:
        result = engine.run_due()
        click.echo(f"fired {result.fired} timers {dict(result.by_kind)}")
        engine.close()
        return
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    service = engine.start_scheduler()
    click.echo(f"casework scheduler running as {service.owner}; SIGTERM or Ctrl-C stops it",
               err=True)
    stop.wait()
    click.echo("stopping: finishing the batch in hand", err=True)
    engine.close()
    click.echo("stopped", err=True)


@cli.command("recompute-deadlines")
@click.option("--all", "all_", is_flag=True, help="every running deadline, not only provisional ones")
@click.pass_context
def recompute_deadlines(ctx: click.Context, all_: bool) -> None:
    """Recompute provisional deadlines once the holiday calendar knows the new year."""
    with _engine(ctx) as engine:
        n = engine.recompute_deadlines(provisional_only=not all_)
        click.echo(f"recomputed the deadlines of {n} case(s)")


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


@cli.command()
@click.option("--case", "case_id", default=None, help="check this case only")
@click.pass_context
def verify(ctx: click.Context, case_id: str | None) -> None:
    """Check the hash chains: print each event altered, missing or inserted, and exit 1;
    or say that all chains are intact."""
    with _engine(ctx) as engine:
        if case_id is not None:
            cases, events = 1, len(engine.history(case_id))  # an unknown case: error, exit 1
        else:
            cases, events = engine.stored_counts()
        problems = engine.verify(case_id)
        if problems:
            for p in problems:
                click.echo(p)
            hit = {p.split(":", 1)[0] for p in problems}
            click.echo(f"{_n(len(problems), 'problem')} in {len(hit)} of {_n(cases, 'case')}",
                       err=True)
            ctx.exit(1)
        click.echo(f"{_n(cases, 'case')}, {_n(events, 'event')}: all chains intact")


@cli.command()
@click.option("--workflow", default=None, help="only the cases of this workflow")
@click.option("--unit", default=None, help="only the cases of this unit (the case field 'unit')")
@click.option("--case", "case_ids", multiple=True, help="only this case (repeat for more)")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="the file to write (default: stdout)")
@click.pass_context
def export(ctx: click.Context, workflow: str | None, unit: str | None, case_ids: tuple[str, ...],
           out: Path | None) -> None:
    """Write a ledger (個案臺帳) of whole cases as JSON lines, for `import` elsewhere."""
    ids = case_ids or None
    with _engine(ctx) as engine:
        if out is None:
            n = engine.export_cases(sys.stdout, workflow=workflow, unit=unit, case_ids=ids)
            sys.stdout.flush()
            click.echo(f"exported {_n(n, 'case')}", err=True)
            return
        out.parent.mkdir(parents=True, exist_ok=True)
        part = out.with_name(out.name + ".part")
        try:
            with part.open("w", encoding="utf-8") as f:
                n = engine.export_cases(f, workflow=workflow, unit=unit, case_ids=ids)
            part.replace(out)
        finally:
            part.unlink(missing_ok=True)
        click.echo(f"wrote {_n(n, 'case')} to {out}")


@cli.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.pass_context
def import_(ctx: click.Context, file: Path) -> None:
    """Import a ledger written by `export`: all of it in one transaction, or nothing
    (every problem is listed)."""
    from casework.persistence.errors import LedgerError

    with _engine(ctx) as engine, file.open(encoding="utf-8") as inp:
        try:
            r = engine.import_cases(inp)
        except LedgerError as e:
            click.echo(f"error: {e}", err=True)
            ctx.exit(1)
        click.echo(f"imported {_n(r.cases, 'case')} with {_n(r.events, 'event')} and "
                   f"{_n(r.timers, 'pending timer')}"
                   + (f"; {_n(r.workflow_versions, 'workflow version')} added"
                      if r.workflow_versions else ""))


@cli.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.pass_context
def bench(ctx: click.Context) -> None:
    """Run the benchmarks (see bench/README.md); extra arguments go to the suite."""
    from bench.harness import main

    raise SystemExit(main(list(ctx.args)))


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


@cli.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
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


@cli.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.pass_context
def test(ctx: click.Context) -> None:
    """Run the whole test suite (extra arguments go to pytest)."""
    import pytest

    os.chdir(ROOT)
    raise SystemExit(pytest.main(["-q", *ctx.args]))


if __name__ == "__main__":
    cli(obj={})
