"""The commands on one case: open, fire, show, timeline, assign, delegate, what-if."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from ..log import case_tag
from ._shared import FORMAT, open_engine, options_of, parse_values, terminal_width

_F = TypeVar("_F", bound=Callable[..., Any])


def _command_options(actor_example: str, what: str) -> Callable[[_F], _F]:
    """The options of a command on a case: --actor, -d FIELD=VALUE, --json, --key."""
    options = [
        click.option("--actor", required=True, help=f"role[,role]:id[@unit], e.g. {actor_example}"),
        click.option("-d", "--data", "pairs", multiple=True,
                     help="FIELD=VALUE, typed by the field (a list as JSON); repeat for more"),
        click.option("--json", "json_text", default=None, help=f"the {what} as one JSON object"),
        click.option("--key", default=None, help="idempotency key"),
    ]

    def apply(f: _F) -> _F:
        for option in reversed(options):
            f = option(f)
        return f

    return apply


@click.command("open")
@click.argument("workflow")
@_command_options("clerk:li", "data")
@click.pass_context
def open_(ctx: click.Context, workflow: str, actor: str, pairs: tuple[str, ...],
          json_text: str | None, key: str | None) -> None:
    """Open a case of WORKFLOW; print its id."""
    with open_engine(ctx) as engine:
        data = parse_values(pairs, engine.workflow(workflow).fields, json_text=json_text)
        case = engine.open_case(workflow, data, actor=actor, idempotency_key=key)
        click.echo(case.id)


@click.command()
@click.argument("case_id")
@click.argument("trigger")
@_command_options("leader:wang", "input")
@click.option("--expect-version", type=int, default=None, help="refuse if the case moved on")
@click.pass_context
def fire(ctx: click.Context, case_id: str, trigger: str, actor: str, pairs: tuple[str, ...],
         json_text: str | None, key: str | None, expect_version: int | None) -> None:
    """Fire TRIGGER (a transition or an activity) on CASE_ID."""
    with open_engine(ctx) as engine:
        case = engine.get_case(case_id)
        wf = engine.workflow(case.workflow, case.version)
        activity = wf.definition.activities.get(trigger)
        fields = activity.fields if activity is not None else wf.fields
        data = parse_values(pairs, fields, json_text=json_text)
        case = engine.fire(case_id, trigger, actor=actor, data=data, idempotency_key=key,
                           expected_version=expect_version)
        click.echo(f"{case.id}: {case.state} (row version {case.row_version})")


@click.command()
@click.argument("case_id")
@click.option("--actor", default=None, help="also list what this actor may do now")
@FORMAT
@click.pass_context
def show(ctx: click.Context, case_id: str, actor: str | None, fmt: str) -> None:
    """Show a case: state, data (PII masked), history; csv: the history; json: everything."""
    from ..views import CaseView

    with open_engine(ctx) as engine:
        view = CaseView.load(engine, case_id, actor=actor)
    text = {"table": lambda: view.to_text(terminal_width()), "csv": view.to_csv,
            "json": view.to_json}[fmt]()
    click.echo(text.rstrip("\n"))


def _file_tag(case_id: str) -> str:
    """The case's tag, safe as part of a file name."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", case_tag(case_id))


@click.command()
@click.argument("case_id")
@click.option("--format", "fmt", type=click.Choice(["png", "svg"]), default="png", show_default=True)
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="output file (default: var/timeline-TAG.FORMAT, TAG the case's tag in the logs: "
                   "the random end of its id)")
@click.pass_context
def timeline(ctx: click.Context, case_id: str, fmt: str, out: Path | None) -> None:
    """Draw CASE_ID through time: states, deadlines, warnings, escalations, pending timers."""
    from ..views import render_timeline

    with open_engine(ctx) as engine:
        case = engine.get_case(case_id)
        tz = engine.workflow(case.workflow, case.version).tz
        target = out or options_of(ctx).var / f"timeline-{_file_tag(case.id)}.{fmt}"
        path = render_timeline(case, engine.history(case.id), engine.pending_timers(case.id),
                               target, fmt, now=engine.clock.now(), tz=tz)
    click.echo(f"wrote {path}")


@click.command()
@click.argument("case_id")
@click.argument("slot")
@click.argument("value", nargs=-1, required=True)
@click.option("--actor", required=True, help="role:id, e.g. leader:chen")
@click.option("--reason", default=None, help="why (needed to reassign a slot already held)")
@click.pass_context
def assign(ctx: click.Context, case_id: str, slot: str, value: tuple[str, ...], actor: str,
           reason: str | None) -> None:
    """Assign SLOT of CASE_ID to VALUE (a person's id or a unit; several for a list of
    units), or reassign it with --reason."""
    with open_engine(ctx) as engine:
        case = engine.get_case(case_id)
        spec = engine.workflow(case.workflow, case.version).definition.assignment.slots.get(slot)
        held: Any = list(value) if spec is not None and spec.kind.value == "units" else " ".join(value)
        case = engine.assign(case_id, slot, held, actor=actor, reason=reason)
        click.echo(f"{case.id}: {slot} = {held} (row version {case.row_version})")


@click.command()
@click.argument("case_id")
@click.argument("slot")
@click.argument("stand_in")
@click.option("--actor", required=True)
@click.option("--until", required=True, help="when the stand-in's period ends (ISO time with zone)")
@click.option("--reason", default=None)
@click.pass_context
def delegate(ctx: click.Context, case_id: str, slot: str, stand_in: str, actor: str, until: str,
             reason: str | None) -> None:
    """Name STAND_IN for the person in SLOT of CASE_ID until --until (代辦)."""
    from datetime import datetime

    try:
        end = datetime.fromisoformat(until)
    except ValueError:
        raise click.BadParameter(f"{until!r} is not an ISO time", param_hint="--until") from None
    if end.tzinfo is None:
        raise click.BadParameter("give the time zone, e.g. 2026-12-10T18:00+08:00",
                                 param_hint="--until")
    with open_engine(ctx) as engine:
        engine.delegate(case_id, slot, stand_in, actor=actor, until=end, reason=reason)
        click.echo(f"{case_id}: {stand_in} stands in for {slot} until {end.isoformat()}")


@click.command("what-if")
@click.argument("case_id")
@click.option("--until", required=True, help="how far to look ahead (ISO date or time)")
@click.option("--fire", "fires", multiple=True,
              help="TRIGGER:ACTOR_ROLE:ACTOR_ID[@unit] with -d values, e.g. extend:leader:chen")
@click.option("-d", "--data", "pairs", multiple=True, help="KEY=VALUE for the proposed commands")
@FORMAT
@click.pass_context
def what_if(ctx: click.Context, case_id: str, until: str, fires: tuple[str, ...],
            pairs: tuple[str, ...], fmt: str) -> None:
    """What CASE_ID would meet until --until with the proposed commands, and without."""
    import json
    from datetime import UTC, datetime

    from .. import Proposal

    try:
        end = datetime.fromisoformat(until)
    except ValueError:
        raise click.BadParameter(f"{until!r} is not an ISO date or time",
                                 param_hint="--until") from None
    end = end if end.tzinfo is not None else end.replace(tzinfo=UTC)
    with open_engine(ctx) as engine:
        case = engine.get_case(case_id)
        proposals = []
        for f in fires:
            trigger, _, actor = f.partition(":")
            if not actor:
                raise click.BadParameter(f"{f!r} is not TRIGGER:ACTOR", param_hint="--fire")
            fields = dict(engine.workflow(case.workflow, case.version).fields)
            activity = engine.workflow(case.workflow, case.version).definition.activities.get(
                trigger)
            if activity is not None:
                fields.update(activity.fields)
            proposals.append(Proposal(trigger, actor, parse_values(pairs, fields, option="-d")))
        answer = engine.what_if(case_id, proposals, until=end)
    if fmt == "json":
        click.echo(json.dumps({"until": answer.until.isoformat(), **{
            course: {"events": [e.to_dict() for e in o.events],
                     "deadlines": [d.to_dict() for d in o.deadlines],
                     "refused": None if o.refused is None else o.refused[1]}
            for course, o in (("proposed", answer.proposed), ("unchanged", answer.unchanged))}},
            ensure_ascii=False, indent=2))
        return
    for title, o in (("with the proposed commands", answer.proposed),
                     ("if nothing is done", answer.unchanged)):
        click.echo(f"{title}:")
        if o.refused is not None:
            click.echo(f"  refused: {o.refused[1]}")
        for e in o.events:
            click.echo(f"  {e.at.isoformat(timespec='minutes')}  {e.kind:<11} {e.name}")
        for d in o.deadlines:
            due = d.due.isoformat(timespec="minutes") if d.due else "-"
            click.echo(f"  deadline {d.name}: {d.status}, due {due}, breaches {d.breaches}")


COMMANDS = (open_, fire, show, timeline, assign, delegate, what_if)
