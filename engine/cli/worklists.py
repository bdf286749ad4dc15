"""The commands that list cases: cases (the search) and worklist, a page of them printed
as a table, CSV or JSON."""

from __future__ import annotations

from typing import Any

import click

from ._shared import FORMAT, open_engine, parse_values, plural, terminal_width


def _page_out(page: Any, fmt: str) -> None:
    """Print a page of cases in ``fmt``; a table ends with the total and the next cursor."""
    import json

    from ..views.tables import Column, make_table, render

    if fmt == "json":
        click.echo(json.dumps(page.to_dict(), ensure_ascii=False, indent=2))
        return
    cols = ["id", "workflow", "state", "next deadline", "due", "level", "flags", "summary",
            "may do now"]
    rows = []
    for c in page.items:
        flags = ",".join(f for f, on in (("overdue", c.overdue), ("at risk", c.at_risk)) if on)
        summary = " ".join(f"{k}={v}" for k, v in c.summary.items() if v not in (None, ""))
        allowed = " ".join(o.name for o in c.options if o.allowed)
        rows.append([c.id, c.workflow, c.state, c.next_deadline or "",
                     c.next_due_at.isoformat(timespec="minutes") if c.next_due_at else "",
                     c.escalation_level, flags, summary, allowed])
    if fmt == "csv":
        import csv
        import io

        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(cols)
        w.writerows(rows)
        click.echo(buf.getvalue().rstrip("\n"))
        return
    kinds = ["name", "name", "name", "name", "name", "number", "name", "text", "text"]
    table = make_table([Column(h, k) for h, k in zip(cols, kinds, strict=True)], rows)
    tail = [] if page.cursor is None else [f"more: --cursor {page.cursor}"]
    total = [] if page.total is None else [f"{plural(page.total, 'case')} in all"]
    click.echo(render([table, *total, *tail], terminal_width()).rstrip("\n"))


@click.command()
@click.option("--workflow", default=None)
@click.option("--state", default=None, help="a state (a compound state: all its children)")
@click.option("--unit", default=None, help="the lead unit")
@click.option("--assignee", default=None, help="a person's id, or @unit")
@click.option("--source", default=None)
@click.option("--due-before", default=None, help="the next deadline before (ISO date or time)")
@click.option("--due-after", default=None)
@click.option("--overdue/--not-overdue", default=None)
@click.option("--at-risk/--not-at-risk", default=None)
@click.option("--min-escalation", type=click.IntRange(0, 100), default=None)
@click.option("--where", "filters", multiple=True, help="FIELD=VALUE of a searchable field")
@click.option("--closed", is_flag=True, help="closed cases too")
@click.option("--sort", type=click.Choice(["due", "opened", "updated"]), default="due",
              show_default=True)
@click.option("--limit", type=click.IntRange(1, 500), default=50, show_default=True)
@click.option("--cursor", default=None, help="the next page (printed under a full page)")
@FORMAT
@click.pass_context
def cases(ctx: click.Context, workflow: str | None, state: str | None, unit: str | None,
          assignee: str | None, source: str | None, due_before: str | None,
          due_after: str | None, overdue: bool | None, at_risk: bool | None,
          min_escalation: int | None, filters: tuple[str, ...], closed: bool, sort: str,
          limit: int, cursor: str | None, fmt: str) -> None:
    """Search the cases (open ones unless --closed), most urgent first."""
    with open_engine(ctx) as engine:
        fields: dict[str, Any] = {}
        if filters:
            wf = engine.workflow(workflow) if workflow else None
            known = dict(wf.fields) if wf is not None else {
                k: v for w in engine.workflows.values() for k, v in w.fields.items()}
            fields = parse_values(filters, known, option="--where")
        page = engine.cases(workflow=workflow, state=state, unit=unit, assignee=assignee,
                            source=source, due_before=due_before, due_after=due_after,
                            overdue=overdue, at_risk=at_risk, min_escalation=min_escalation,
                            fields=fields, include_closed=closed, sort=sort, limit=limit,
                            cursor=cursor, count=cursor is None)
    _page_out(page, fmt)


@click.command()
@click.option("--actor", required=True, help="role[,role]:id[@unit], e.g. handler:wu@court")
@click.option("--of", "of", type=click.Choice(["mine", "unit", "supervised"]), default="mine",
              show_default=True)
@click.option("--unit", "units", multiple=True, help="with --of supervised: these units only")
@click.option("--limit", type=click.IntRange(1, 500), default=50, show_default=True)
@click.option("--cursor", default=None)
@FORMAT
@click.pass_context
def worklist(ctx: click.Context, actor: str, of: str, units: tuple[str, ...], limit: int,
             cursor: str | None, fmt: str) -> None:
    """What ACTOR can act on now, most urgent first, with the steps each case allows."""
    with open_engine(ctx) as engine:
        page = engine.worklist(actor, of=of, units=units or None, limit=limit, cursor=cursor)
    _page_out(page, fmt)


COMMANDS = (cases, worklist)
