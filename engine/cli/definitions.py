"""The commands on workflow definitions: validate, schema, diagram, and migrate (running
cases moved to another version)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import click

from ._shared import open_engine, options_of, write_out

if TYPE_CHECKING:
    from ..definition import WorkflowSpec


@click.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
def validate(files: tuple[Path, ...]) -> None:
    """Check workflow definitions; list every problem with file and line."""
    from .. import DefinitionError, load_definition

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


@click.command()
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="the file to write (default: stdout)")
def schema(out: Path | None) -> None:
    """Write the JSON Schema of workflow definitions, for editors (yaml-language-server)."""
    from ..definition import definition_schema

    text = json.dumps(definition_schema(), indent=2, ensure_ascii=False)
    if out is None:
        click.echo(text)
    else:
        write_out(out, text)


def _spec_of(ctx: click.Context, workflow: str) -> WorkflowSpec:
    """WORKFLOW's definition: a YAML file, or the workflow of that name in the settings."""
    from .. import load_definition
    from ..settings import load_settings

    p = Path(workflow)
    if p.suffix in {".yaml", ".yml"}:
        return load_definition(p).spec
    for f in load_settings(options_of(ctx).config).workflow_files():
        d = load_definition(f)
        if d.spec.workflow == workflow:
            return d.spec
    raise click.BadParameter(f"no workflow named {workflow!r} in the settings", param_hint="WORKFLOW")


@click.command()
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
    from ..views import mermaid, render, render_with_counts

    spec = _spec_of(ctx, workflow)
    fmt = fmt or ("png" if counts else "mermaid")
    var = options_of(ctx).var
    if fmt == "mermaid":
        if counts:
            raise click.UsageError("--counts draws a picture: use --format png or svg")
        text = mermaid(spec)
        if out is None:
            click.echo(text)
        else:
            write_out(out, text)
        return
    if not counts:
        click.echo(f"wrote {render(spec, out or var / f'{spec.workflow}.{fmt}', fmt)}")
        return
    with open_engine(ctx) as engine:
        by_state = engine.state_counts(spec.workflow)
    target = out or var / f"{spec.workflow}-counts.{fmt}"
    click.echo(f"wrote {render_with_counts(spec, by_state, target, fmt)}")


@click.command()
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
        mapping.update(_read_map(map_file))
    for m in maps:
        old, eq, new = m.partition("=")
        if not eq or not old or not new:
            raise click.BadParameter(f"{m!r} is not OLD=NEW", param_hint="--map")
        mapping[old] = new
    with open_engine(ctx) as engine:
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


def _read_map(path: Path) -> dict[str, str]:
    """A mapping of old states to new ones from a YAML (or JSON) file."""
    from ruamel.yaml import YAML
    from ruamel.yaml.error import YAMLError

    try:
        loaded = YAML(typ="safe").load(path.read_text(encoding="utf-8"))
    except YAMLError as e:
        raise click.BadParameter(f"{path}: not valid YAML: {e}", param_hint="--map-file") from None
    if not isinstance(loaded, dict):
        raise click.BadParameter(f"{path}: must map old states to new ones", param_hint="--map-file")
    return {str(k): str(v) for k, v in loaded.items()}


COMMANDS = (validate, schema, diagram, migrate)
