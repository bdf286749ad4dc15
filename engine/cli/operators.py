"""The operators' commands: report and rebuild-figures; verify, export, import; rekey,
keys and calendar-check (the office's keys and calendar); db upgrade / db current."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import click

from ._shared import FORMAT, open_engine, options_of, parse_values, plural, terminal_width, write_out


# -- reports ----------------------------------------------------------------------------
@click.command()
@click.option("--workflow", default="petition", show_default=True)
@click.option("--from", "start", default=None, help="first day (YYYY-MM-DD), in the workflow's zone")
@click.option("--to", "end", default=None, help="day after the last (YYYY-MM-DD)")
@click.option("--by", default=None, help="break down by a case field (unit, source, leader...)")
@click.option("--where", "filters", multiple=True,
              help="FIELD=VALUE (a value or a declared group, e.g. source=handed_down)")
@FORMAT
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="write to a file")
@click.option("--chart", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="also draw per-unit open/overdue bars (PNG or SVG by the file's suffix)")
@click.option("--source", type=click.Choice(["auto", "figures", "events"]), default="auto",
              show_default=True,
              help="the maintained figures, or a count from the events (auto: the figures "
                   "wherever they can answer)")
@click.pass_context
def report(ctx: click.Context, workflow: str, start: str | None, end: str | None, by: str | None,
           filters: tuple[str, ...], fmt: str, out: Path | None, chart: Path | None,
           source: str) -> None:
    """Print a workflow's report (the figures its definition declares)."""
    from ..views import report_table

    with open_engine(ctx) as engine:
        where = parse_values(filters, engine.workflow(workflow).fields, option="--where")
        rep = engine.report(workflow, start=start, end=end, by=by, where=where, source=source)
        render: dict[str, Callable[[], str]] = {
            "table": lambda: report_table(rep, terminal_width()), "csv": rep.to_csv,
            "json": rep.to_json}
        text = render[fmt]()
        if out is None:
            click.echo(text.rstrip("\n"))
        else:
            write_out(out, text)
        if chart is not None:
            from ..views import render_unit_chart

            per_unit = engine.report(workflow, start=start, end=end, by="unit", where=where)
            rows = [(u, int(r.get("in_progress") or 0), int(r.get("overdue") or 0))
                    for u, r in per_unit.rows.items()]
            click.echo(f"wrote {render_unit_chart(rows, chart, chart.suffix.lstrip('.') or 'png')}")


@click.command("rebuild-figures")
@click.option("--workflow", default=None, help="one workflow (default: every one with a report)")
@click.option("--check", is_flag=True,
              help="recompute from the events and name every difference; change nothing")
@click.pass_context
def rebuild_figures(ctx: click.Context, workflow: str | None, check: bool) -> None:
    """Rebuild the maintained report figures from the cases and events (or check them)."""
    with open_engine(ctx) as engine:
        results = engine.rebuild_figures(workflow, check=check)
        for r in results:
            what = "checked" if check else "rebuilt"
            click.echo(f"{r.workflow}: {what} {r.cells} figure cell(s) and {r.stays} stay(s) "
                       f"from {r.cases} case(s) in {r.seconds:.1f} s")
            for d in r.differences:
                click.echo(f"  differs: {d}")
        if not results:
            click.echo("no loaded workflow declares report figures")
        if any(r.differences for r in results):
            raise SystemExit(1)


# -- the histories: verify, export, import ----------------------------------------------
@click.command()
@click.option("--case", "case_id", default=None, help="check this case only")
@click.pass_context
def verify(ctx: click.Context, case_id: str | None) -> None:
    """Check the hash chains: print each event altered, missing or inserted, and exit 1;
    or say that all chains are intact."""
    with open_engine(ctx) as engine:
        if case_id is not None:
            cases, events = 1, len(engine.history(case_id))  # an unknown case: error, exit 1
        else:
            cases, events = engine.stored_counts()
        problems = engine.verify(case_id)
        if problems:
            for p in problems:
                click.echo(p)
            hit = {p.split(":", 1)[0] for p in problems}
            click.echo(f"{plural(len(problems), 'problem')} in {len(hit)} of {plural(cases, 'case')}",
                       err=True)
            ctx.exit(1)
        click.echo(f"{plural(cases, 'case')}, {plural(events, 'event')}: all chains intact")


@click.command()
@click.option("--workflow", default=None, help="only the cases of this workflow")
@click.option("--unit", default=None, help="only the cases of this unit (the case field 'unit')")
@click.option("--case", "case_ids", multiple=True, help="only this case (repeat for more)")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="the file to write (default: stdout)")
@click.option("--masked", is_flag=True,
              help="personal data masked, for readers outside the office (cannot be imported)")
@click.pass_context
def export(ctx: click.Context, workflow: str | None, unit: str | None, case_ids: tuple[str, ...],
           out: Path | None, masked: bool) -> None:
    """Write a ledger (個案臺帳) of whole cases as JSON lines, for `import` elsewhere. It
    holds personal data in clear unless --masked."""
    ids = case_ids or None
    with open_engine(ctx) as engine:
        if out is None:
            n = engine.export_cases(sys.stdout, workflow=workflow, unit=unit, case_ids=ids,
                                    masked=masked)
            sys.stdout.flush()
            click.echo(f"exported {plural(n, 'case')}", err=True)
            return
        out.parent.mkdir(parents=True, exist_ok=True)
        part = out.with_name(out.name + ".part")
        try:
            with part.open("w", encoding="utf-8") as f:
                n = engine.export_cases(f, workflow=workflow, unit=unit, case_ids=ids,
                                        masked=masked)
            part.replace(out)
        finally:
            part.unlink(missing_ok=True)
        click.echo(f"wrote {plural(n, 'case')} to {out}")


@click.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.pass_context
def import_(ctx: click.Context, file: Path) -> None:
    """Import a ledger written by `export`: all of it in one transaction, or nothing
    (every problem is listed)."""
    from .. import LedgerRefused

    with open_engine(ctx) as engine, file.open(encoding="utf-8") as inp:
        try:
            r = engine.import_cases(inp)
        except LedgerRefused as e:
            click.echo(f"error: {e}", err=True)
            ctx.exit(1)
        click.echo(f"imported {plural(r.cases, 'case')} with {plural(r.events, 'event')} and "
                   f"{plural(r.timers, 'pending timer')}"
                   + (f"; {plural(r.workflow_versions, 'workflow version')} added"
                      if r.workflow_versions else ""))


# -- the office's keys and calendar -----------------------------------------------------
@click.command()
@click.pass_context
def rekey(ctx: click.Context) -> None:
    """Re-key every case's history under the current key and seal its row (once after
    upgrading from plain histories, or after `keys rotate`)."""
    with open_engine(ctx) as engine:
        r = engine.rekey()
    click.echo(f"re-keyed {plural(r.rekeyed, 'case')}; {r.current} already current")
    for cid, problems in r.refused.items():
        for p in problems:
            click.echo(f"refused {cid}: {p}", err=True)
    if r.refused:
        ctx.exit(1)


@click.group()
def keys() -> None:
    """The office's integrity keys (a key file beside the database; never inside it)."""


@keys.command("rotate")
@click.argument("key_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def keys_rotate(key_file: Path) -> None:
    """Add a new current key to KEY_FILE; older keys stay to verify what they keyed."""
    from ..keys import rotate

    click.echo(f"new current key {rotate(key_file)} in {key_file}; run `casework rekey` to "
               "re-key the existing histories (optional)")


@keys.command("add")
@click.argument("key_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("key_id")
@click.argument("hex_key")
def keys_add(key_file: Path, key_id: str, hex_key: str) -> None:
    """Add another office's key (to verify its ledgers) to KEY_FILE."""
    from ..keys import add_key

    add_key(key_file, key_id, hex_key)
    click.echo(f"added key {key_id} to {key_file}")


@click.command("calendar-check")
@click.pass_context
def calendar_check(ctx: click.Context) -> None:
    """Compare the years declared in the settings with the holiday package's data."""
    with open_engine(ctx) as engine:
        problems = engine.calendar_problems()
    for p in problems:
        click.echo(p)
    if problems:
        ctx.exit(1)
    click.echo("the declared years agree with the holiday package (or it does not know them yet)")


# -- the database schema ----------------------------------------------------------------
@click.group()
def db() -> None:
    """The database schema (Alembic migrations)."""


@db.command("upgrade")
@click.option("--to", "revision", default="head", show_default=True)
@click.pass_context
def db_upgrade(ctx: click.Context, revision: str) -> None:
    """Create or upgrade the database schema."""
    from ..persistence.migrate import upgrade

    url = options_of(ctx).database_url()
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    upgrade(url, revision)
    click.echo(f"schema at {revision}")


@db.command("current")
@click.pass_context
def db_current(ctx: click.Context) -> None:
    """Print the database's schema revision and the code's."""
    from sqlalchemy import create_engine

    from ..persistence.migrate import current_revision, head_revision

    eng = create_engine(options_of(ctx).database_url())
    try:
        click.echo(f"database: {current_revision(eng) or 'none'}; code: {head_revision()}")
    finally:
        eng.dispose()


COMMANDS = (report, rebuild_figures, verify, export, import_, rekey, keys, calendar_check, db)
