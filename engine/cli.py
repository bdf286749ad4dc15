"""casework's command line: the console script ``casework``.

Cases: open, fire, show, timeline. Definitions: validate, schema, diagram, migrate.
The scheduler: serve, recompute-deadlines. The HTTP API: serve-http. Operators: report,
rebuild-figures, verify, export, import, db upgrade / db current. And the demo.

Settings come from ``--config``, else the file named by ``$CASEWORK_CONFIG``, else
the caller's default (the repository's ``run.py`` passes ``config/casework.toml``),
else the settings shipped in the package with the database moved to
``./var/casework.db`` under the working directory (never inside the installed
package). ``--db URL`` overrides the database in every case. Pictures and the
demo's database go to ``var/`` (the working directory's, or the repository's
under ``run.py``) unless told otherwise.

Every error of the engine is printed as one line ``error: ...`` with exit status 1;
a usage error (an unknown option, a malformed value) exits with status 2.
"""

from __future__ import annotations

import json
import math
import os
import re
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from .log import case_tag

if TYPE_CHECKING:
    from . import Engine
    from .definition import FieldSpec, WorkflowSpec

__all__ = ["CONFIG_ENV", "Defaults", "cli", "main", "packaged_settings", "parse_values"]

CONFIG_ENV = "CASEWORK_CONFIG"
_F = TypeVar("_F", bound=Callable[..., Any])


def packaged_settings() -> Path:
    """The default settings shipped in the package (``casework/config/casework.toml``)."""
    return Path(str(resources.files("casework.config") / "casework.toml"))


@dataclass(frozen=True)
class Defaults:
    """What the command line uses when it is not told.

    ``config``: the settings file (None: the packaged settings, with the database in the
    working directory); ``var``: where pictures and the demo's database go.
    """

    config: Path | None = None
    var: Path = Path("var")


@dataclass(frozen=True)
class Options:
    """The options of one invocation, as every command sees them."""

    config: Path
    db: str | None
    log_level: str
    var: Path
    packaged: bool = False

    def database_url(self) -> str:
        """The database: ``--db``, the packaged default's ``./var/casework.db`` or the settings'."""
        if self.db:
            return self.db
        if self.packaged:
            return f"sqlite:///{Path.cwd() / 'var' / 'casework.db'}"
        from .settings import load_settings

        return load_settings(self.config).database_url()


def _options(ctx: click.Context) -> Options:
    opts = ctx.find_object(Options)
    if opts is None:  # a command invoked without the group (not through ``cli``)
        raise click.UsageError("run the command through the casework group")
    return opts


def _engine(ctx: click.Context) -> Engine:
    from . import Engine, configure_logging

    opts = _options(ctx)
    configure_logging(opts.log_level)
    overrides: dict[str, Any] = {}
    if opts.db or opts.packaged:
        overrides["database_url"] = opts.database_url()
    return Engine.from_settings(opts.config, **overrides)


# -- values of -d KEY=VALUE, typed by the workflow's fields ---------------------------
def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number")


def _typed(key: str, text: str, spec: FieldSpec | None, option: str) -> Any:
    """``text`` as the type of field ``key`` declares; a value that does not parse is passed
    on as text, so that the engine refuses it naming the field."""
    kind = spec.type.value if spec is not None else "string"
    if kind in {"int", "number"}:
        try:
            n = json.loads(text, parse_constant=_no_constant)
        except ValueError:
            return text
        ok = isinstance(n, int) if kind == "int" else isinstance(n, int | float) and math.isfinite(n)
        return n if ok and not isinstance(n, bool) else text
    if kind == "bool":
        word = text.strip().lower()
        if word in {"true", "yes", "on", "1"}:
            return True
        if word in {"false", "no", "off", "0"}:
            return False
        return text
    if kind == "list":
        try:
            value = json.loads(text)
        except ValueError:
            value = None
        if not isinstance(value, list):
            raise click.BadParameter(
                f"{key} is a list: write it as JSON, e.g. {key}='[\"a\", \"b\"]'", param_hint=option)
        return value
    return text  # string, text, enum, date, datetime, and fields the workflow does not have


def parse_values(pairs: Iterable[str], fields: Mapping[str, FieldSpec], *,
                 json_text: str | None = None, option: str = "-d") -> dict[str, Any]:
    """``KEY=VALUE`` pairs (over the object in ``json_text``), each value typed by ``fields``."""
    data: dict[str, Any] = {}
    if json_text is not None:
        try:
            loaded = json.loads(json_text, parse_constant=_no_constant)
        except ValueError as e:
            raise click.BadParameter(f"not valid JSON: {e}", param_hint="--json") from None
        if not isinstance(loaded, dict):
            raise click.BadParameter("must be a JSON object ({...})", param_hint="--json")
        data.update(loaded)
    for pair in pairs:
        key, eq, text = pair.partition("=")
        if not eq or not key:
            raise click.BadParameter(f"{pair!r} is not KEY=VALUE", param_hint=option)
        data[key] = _typed(key, text, fields.get(key), option)
    return data


# -- the group --------------------------------------------------------------------------
class _Group(click.Group):
    """Shows the engine's errors as one clear line and exits 1, without a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        from . import CaseworkError

        try:
            return super().invoke(ctx)
        except CaseworkError as e:
            click.echo(f"error: {e}", err=True)
            ctx.exit(1)
        except BrokenPipeError:  # the reader went away (``casework show ... | head``)
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            ctx.exit(1)
        except OSError as e:
            where = f"{e.filename}: " if e.filename else ""
            click.echo(f"error: {where}{e.strerror or e}", err=True)
            ctx.exit(1)

    def with_commands(self, commands: Iterable[click.Command]) -> _Group:
        """A copy of this group with more commands (the repository's ``run.py`` adds its own)."""
        extra = {c.name: c for c in commands if c.name}
        return _Group(name=self.name, commands={**self.commands, **extra},
                      params=self.params, callback=self.callback, help=self.help,
                      context_settings=self.context_settings)


@click.group(cls=_Group)
@click.option("--config", type=click.Path(dir_okay=False, path_type=Path), envvar=CONFIG_ENV,
              default=None, show_envvar=True, help="settings file (TOML); default: see above")
@click.option("--db", default=None, help="database URL, overriding the settings")
@click.option("--log-level", default="WARNING", show_default=True,
              type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False))
@click.pass_context
def cli(ctx: click.Context, config: Path | None, db: str | None, log_level: str) -> None:
    """casework: case lifecycles as declarative, durable state machines.

    Settings: --config, else $CASEWORK_CONFIG, else the default settings: installed,
    those shipped in the package, with the database ./var/casework.db in the working
    directory; in the repository (run.py), config/casework.toml.
    """
    if db is not None:
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError

        try:
            make_url(db)
        except ArgumentError:
            raise click.BadParameter(f"{db!r} is not a database URL (e.g. sqlite:///cases.db, "
                                     "postgresql+psycopg://user@host/db)", param_hint="--db") from None
    defaults = ctx.obj if isinstance(ctx.obj, Defaults) else Defaults()
    chosen = config or defaults.config
    ctx.obj = Options(config=chosen or packaged_settings(), db=db, log_level=log_level,
                      var=defaults.var, packaged=chosen is None)


def main(args: Sequence[str] | None = None, *, defaults: Defaults | None = None,
         commands: Iterable[click.Command] = ()) -> None:
    """Run the command line (the console script ``casework``)."""
    group = cli.with_commands(commands) if commands else cli
    group.main(args=list(args) if args is not None else None, obj=defaults or Defaults())


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _write(out: Path, text: str) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text + ("" if text.endswith("\n") else "\n"), encoding="utf-8")
    click.echo(f"wrote {out}")


def _width() -> int:
    import shutil

    return max(shutil.get_terminal_size((120, 24)).columns, 80)


# -- definitions ------------------------------------------------------------------------
@cli.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
def validate(files: tuple[Path, ...]) -> None:
    """Check workflow definitions; list every problem with file and line."""
    from . import DefinitionError, load_definition

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


@cli.command()
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="the file to write (default: stdout)")
def schema(out: Path | None) -> None:
    """Write the JSON Schema of workflow definitions, for editors (yaml-language-server)."""
    from .definition import definition_schema

    text = json.dumps(definition_schema(), indent=2, ensure_ascii=False)
    if out is None:
        click.echo(text)
    else:
        _write(out, text)


def _spec_of(ctx: click.Context, workflow: str) -> WorkflowSpec:
    from . import load_definition
    from .settings import load_settings

    p = Path(workflow)
    if p.suffix in {".yaml", ".yml"}:
        return load_definition(p).spec
    for f in load_settings(_options(ctx).config).workflow_files():
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
    from .views import mermaid, render, render_with_counts

    spec = _spec_of(ctx, workflow)
    fmt = fmt or ("png" if counts else "mermaid")
    var = _options(ctx).var
    if fmt == "mermaid":
        if counts:
            raise click.UsageError("--counts draws a picture: use --format png or svg")
        text = mermaid(spec)
        if out is None:
            click.echo(text)
        else:
            _write(out, text)
        return
    if not counts:
        click.echo(f"wrote {render(spec, out or var / f'{spec.workflow}.{fmt}', fmt)}")
        return
    with _engine(ctx) as engine:
        by_state = engine.state_counts(spec.workflow)
    target = out or var / f"{spec.workflow}-counts.{fmt}"
    click.echo(f"wrote {render_with_counts(spec, by_state, target, fmt)}")


# -- cases ------------------------------------------------------------------------------
def _file_tag(case_id: str) -> str:
    """The case's tag, safe as part of a file name."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", case_tag(case_id))


@cli.command()
@click.argument("case_id")
@click.option("--format", "fmt", type=click.Choice(["png", "svg"]), default="png", show_default=True)
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="output file (default: var/timeline-TAG.FORMAT, TAG the case's tag in the logs: "
                   "the random end of its id)")
@click.pass_context
def timeline(ctx: click.Context, case_id: str, fmt: str, out: Path | None) -> None:
    """Draw CASE_ID through time: states, deadlines, warnings, escalations, pending timers."""
    from .views import render_timeline

    with _engine(ctx) as engine:
        case = engine.get_case(case_id)
        tz = engine.workflow(case.workflow, case.version).tz
        target = out or _options(ctx).var / f"timeline-{_file_tag(case.id)}.{fmt}"
        path = render_timeline(case, engine.history(case.id), engine.pending_timers(case.id),
                               target, fmt, now=engine.clock.now(), tz=tz)
    click.echo(f"wrote {path}")


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


@cli.command("open")
@click.argument("workflow")
@_command_options("clerk:li", "data")
@click.pass_context
def open_(ctx: click.Context, workflow: str, actor: str, pairs: tuple[str, ...],
          json_text: str | None, key: str | None) -> None:
    """Open a case of WORKFLOW; print its id."""
    with _engine(ctx) as engine:
        data = parse_values(pairs, engine.workflow(workflow).fields, json_text=json_text)
        case = engine.open_case(workflow, data, actor=actor, idempotency_key=key)
        click.echo(case.id)


@cli.command()
@click.argument("case_id")
@click.argument("trigger")
@_command_options("leader:wang", "input")
@click.option("--expect-version", type=int, default=None, help="refuse if the case moved on")
@click.pass_context
def fire(ctx: click.Context, case_id: str, trigger: str, actor: str, pairs: tuple[str, ...],
         json_text: str | None, key: str | None, expect_version: int | None) -> None:
    """Fire TRIGGER (a transition or an activity) on CASE_ID."""
    with _engine(ctx) as engine:
        case = engine.get_case(case_id)
        wf = engine.workflow(case.workflow, case.version)
        activity = wf.definition.activities.get(trigger)
        fields = activity.fields if activity is not None else wf.fields
        data = parse_values(pairs, fields, json_text=json_text)
        case = engine.fire(case_id, trigger, actor=actor, data=data, idempotency_key=key,
                           expected_version=expect_version)
        click.echo(f"{case.id}: {case.state} (row version {case.row_version})")


_FORMAT = click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]),
                       default="table", show_default=True)


@cli.command()
@click.argument("case_id")
@click.option("--actor", default=None, help="also list what this actor may do now")
@_FORMAT
@click.pass_context
def show(ctx: click.Context, case_id: str, actor: str | None, fmt: str) -> None:
    """Show a case: state, data (PII masked), history; csv: the history; json: everything."""
    from .views import CaseView

    with _engine(ctx) as engine:
        view = CaseView.load(engine, case_id, actor=actor)
    text = {"table": lambda: view.to_text(_width()), "csv": view.to_csv, "json": view.to_json}[fmt]()
    click.echo(text.rstrip("\n"))


# -- the demo ---------------------------------------------------------------------------
@cli.command()
@click.option("--db", "db_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="the SQLite file to run on, made afresh  [default: var/demo.db]")
@click.option("--console", is_flag=True,
              help="then serve the operator console on the demo's database (the server "
                   "extra), printing a sign-in for each demo role")
@click.option("--port", type=click.IntRange(0, 65535), default=8080, show_default=True,
              help="with --console: the port on 127.0.0.1")
@click.pass_context
def demo(ctx: click.Context, db_path: Path | None, console: bool, port: int) -> None:
    """Run the petition demo on a fresh SQLite file and print what happened; with
    --console, then serve it in the browser."""
    from .demo import run_demo
    from .views import format_case, report_table

    if console:
        from . import MissingExtra

        try:
            from .http.console.demo import serve
        except ImportError as e:
            raise MissingExtra("the console", "server", e.name or "fastapi") from None
    width = _width()
    db = db_path or _options(ctx).var / "demo.db"
    run_demo(db, echo=click.echo,
             show_case=lambda engine, case_id: format_case(engine, case_id, width=width),
             show_report=lambda report: report_table(report, width))
    if console:
        serve(db, port=port, echo=click.echo)


# -- the database schema ----------------------------------------------------------------
@cli.group()
def db() -> None:
    """The database schema (Alembic migrations)."""


@db.command("upgrade")
@click.option("--to", "revision", default="head", show_default=True)
@click.pass_context
def db_upgrade(ctx: click.Context, revision: str) -> None:
    """Create or upgrade the database schema."""
    from .persistence.migrate import upgrade

    url = _options(ctx).database_url()
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    upgrade(url, revision)
    click.echo(f"schema at {revision}")


@db.command("current")
@click.pass_context
def db_current(ctx: click.Context) -> None:
    """Print the database's schema revision and the code's."""
    from sqlalchemy import create_engine

    from .persistence.migrate import current_revision, head_revision

    eng = create_engine(_options(ctx).database_url())
    try:
        click.echo(f"database: {current_revision(eng) or 'none'}; code: {head_revision()}")
    finally:
        eng.dispose()


# -- operators --------------------------------------------------------------------------
@cli.command()
@click.option("--workflow", default="petition", show_default=True)
@click.option("--from", "start", default=None, help="first day (YYYY-MM-DD), in the workflow's zone")
@click.option("--to", "end", default=None, help="day after the last (YYYY-MM-DD)")
@click.option("--by", default=None, help="break down by a case field (unit, source, leader...)")
@click.option("--where", "filters", multiple=True,
              help="FIELD=VALUE (a value or a declared group, e.g. source=handed_down)")
@_FORMAT
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
    from .views import report_table

    with _engine(ctx) as engine:
        where = parse_values(filters, engine.workflow(workflow).fields, option="--where")
        rep = engine.report(workflow, start=start, end=end, by=by, where=where, source=source)
        render: dict[str, Callable[[], str]] = {
            "table": lambda: report_table(rep, _width()), "csv": rep.to_csv, "json": rep.to_json}
        text = render[fmt]()
        if out is None:
            click.echo(text.rstrip("\n"))
        else:
            _write(out, text)
        if chart is not None:
            from .views import render_unit_chart

            per_unit = engine.report(workflow, start=start, end=end, by="unit", where=where)
            rows = [(u, int(r.get("in_progress") or 0), int(r.get("overdue") or 0))
                    for u, r in per_unit.rows.items()]
            click.echo(f"wrote {render_unit_chart(rows, chart, chart.suffix.lstrip('.') or 'png')}")


@cli.command("rebuild-figures")
@click.option("--workflow", default=None, help="one workflow (default: every one with a report)")
@click.option("--check", is_flag=True,
              help="recompute from the events and name every difference; change nothing")
@click.pass_context
def rebuild_figures(ctx: click.Context, workflow: str | None, check: bool) -> None:
    """Rebuild the maintained report figures from the cases and events (or check them)."""
    with _engine(ctx) as engine:
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
        mapping.update(_read_map(map_file))
    for m in maps:
        old, eq, new = m.partition("=")
        if not eq or not old or not new:
            raise click.BadParameter(f"{m!r} is not OLD=NEW", param_hint="--map")
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


@cli.command()
@click.option("--once", is_flag=True, help="fire what is due now and exit")
@click.pass_context
def serve(ctx: click.Context, once: bool) -> None:
    """Run the scheduler as a daemon until SIGTERM or SIGINT (the batch in hand is finished)."""
    import signal
    import threading

    engine = _engine(ctx)
    if once:
        try:
            result = engine.run_due()
            click.echo(f"fired {result.fired} timers {dict(result.by_kind)}")
        finally:
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


@cli.command("serve-http")
@click.option("--host", default=None, help="address to bind (default: the settings' http.host, 127.0.0.1)")
@click.option("--port", type=click.IntRange(0, 65535), default=None,
              help="port (default: the settings' http.port, 8080)")
@click.option("--workers", type=click.IntRange(1, 64), default=None,
              help="worker processes (default: the settings' http.workers, 1)")
@click.option("--scheduler/--no-scheduler", default=None,
              help="run the scheduler in the server's process(es) (default: the settings' "
                   "http.scheduler, on)")
@click.pass_context
def serve_http(ctx: click.Context, host: str | None, port: int | None, workers: int | None,
               scheduler: bool | None) -> None:
    """Serve the HTTP API (the server extra) with uvicorn until SIGTERM or Ctrl-C."""
    from . import MissingExtra, configure_logging

    try:
        from .http.server import serve
    except ImportError as e:
        raise MissingExtra("the HTTP service", "server", e.name or "fastapi") from None
    opts = _options(ctx)
    configure_logging(opts.log_level)
    db = opts.database_url() if (opts.db or opts.packaged) else None
    serve(opts.config, db, host=host, port=port, workers=workers, scheduler=scheduler,
          log_level=opts.log_level.lower())


@cli.command("recompute-deadlines")
@click.option("--all", "all_", is_flag=True, help="every running deadline, not only provisional ones")
@click.pass_context
def recompute_deadlines(ctx: click.Context, all_: bool) -> None:
    """Recompute provisional deadlines once the holiday calendar knows the new year."""
    with _engine(ctx) as engine:
        n = engine.recompute_deadlines(provisional_only=not all_)
        click.echo(f"recomputed the deadlines of {n} case(s)")


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
@click.option("--masked", is_flag=True,
              help="personal data masked, for readers outside the office (cannot be imported)")
@click.pass_context
def export(ctx: click.Context, workflow: str | None, unit: str | None, case_ids: tuple[str, ...],
           out: Path | None, masked: bool) -> None:
    """Write a ledger (個案臺帳) of whole cases as JSON lines, for `import` elsewhere. It
    holds personal data in clear unless --masked."""
    ids = case_ids or None
    with _engine(ctx) as engine:
        if out is None:
            n = engine.export_cases(sys.stdout, workflow=workflow, unit=unit, case_ids=ids,
                                    masked=masked)
            sys.stdout.flush()
            click.echo(f"exported {_n(n, 'case')}", err=True)
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
        click.echo(f"wrote {_n(n, 'case')} to {out}")


@cli.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.pass_context
def import_(ctx: click.Context, file: Path) -> None:
    """Import a ledger written by `export`: all of it in one transaction, or nothing
    (every problem is listed)."""
    from . import LedgerRefused

    with _engine(ctx) as engine, file.open(encoding="utf-8") as inp:
        try:
            r = engine.import_cases(inp)
        except LedgerRefused as e:
            click.echo(f"error: {e}", err=True)
            ctx.exit(1)
        click.echo(f"imported {_n(r.cases, 'case')} with {_n(r.events, 'event')} and "
                   f"{_n(r.timers, 'pending timer')}"
                   + (f"; {_n(r.workflow_versions, 'workflow version')} added"
                      if r.workflow_versions else ""))


# -- search and worklists --------------------------------------------------------------
def _page_out(page: Any, fmt: str) -> None:
    import json

    from .views.tables import Column, make_table, render

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
    total = [] if page.total is None else [f"{_n(page.total, 'case')} in all"]
    click.echo(render([table, *total, *tail], _width()).rstrip("\n"))


@cli.command()
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
@_FORMAT
@click.pass_context
def cases(ctx: click.Context, workflow: str | None, state: str | None, unit: str | None,
          assignee: str | None, source: str | None, due_before: str | None,
          due_after: str | None, overdue: bool | None, at_risk: bool | None,
          min_escalation: int | None, filters: tuple[str, ...], closed: bool, sort: str,
          limit: int, cursor: str | None, fmt: str) -> None:
    """Search the cases (open ones unless --closed), most urgent first."""
    with _engine(ctx) as engine:
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


@cli.command()
@click.option("--actor", required=True, help="role[,role]:id[@unit], e.g. handler:wu@court")
@click.option("--of", "of", type=click.Choice(["mine", "unit", "supervised"]), default="mine",
              show_default=True)
@click.option("--unit", "units", multiple=True, help="with --of supervised: these units only")
@click.option("--limit", type=click.IntRange(1, 500), default=50, show_default=True)
@click.option("--cursor", default=None)
@_FORMAT
@click.pass_context
def worklist(ctx: click.Context, actor: str, of: str, units: tuple[str, ...], limit: int,
             cursor: str | None, fmt: str) -> None:
    """What ACTOR can act on now, most urgent first, with the steps each case allows."""
    with _engine(ctx) as engine:
        page = engine.worklist(actor, of=of, units=units or None, limit=limit, cursor=cursor)
    _page_out(page, fmt)


@cli.command()
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
    with _engine(ctx) as engine:
        case = engine.get_case(case_id)
        spec = engine.workflow(case.workflow, case.version).definition.assignment.slots.get(slot)
        held: Any = list(value) if spec is not None and spec.kind.value == "units" else " ".join(value)
        case = engine.assign(case_id, slot, held, actor=actor, reason=reason)
        click.echo(f"{case.id}: {slot} = {held} (row version {case.row_version})")


@cli.command()
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
    with _engine(ctx) as engine:
        engine.delegate(case_id, slot, stand_in, actor=actor, until=end, reason=reason)
        click.echo(f"{case_id}: {stand_in} stands in for {slot} until {end.isoformat()}")


@cli.command("what-if")
@click.argument("case_id")
@click.option("--until", required=True, help="how far to look ahead (ISO date or time)")
@click.option("--fire", "fires", multiple=True,
              help="TRIGGER:ACTOR_ROLE:ACTOR_ID[@unit] with -d values, e.g. extend:leader:chen")
@click.option("-d", "--data", "pairs", multiple=True, help="KEY=VALUE for the proposed commands")
@_FORMAT
@click.pass_context
def what_if(ctx: click.Context, case_id: str, until: str, fires: tuple[str, ...],
            pairs: tuple[str, ...], fmt: str) -> None:
    """What CASE_ID would meet until --until with the proposed commands, and without."""
    import json
    from datetime import UTC, datetime

    from . import Proposal

    try:
        end = datetime.fromisoformat(until)
    except ValueError:
        raise click.BadParameter(f"{until!r} is not an ISO date or time",
                                 param_hint="--until") from None
    end = end if end.tzinfo is not None else end.replace(tzinfo=UTC)
    with _engine(ctx) as engine:
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


# -- the office's keys and calendar -----------------------------------------------------
@cli.command()
@click.pass_context
def rekey(ctx: click.Context) -> None:
    """Re-key every case's history under the current key and seal its row (once after
    upgrading from plain histories, or after `keys rotate`)."""
    with _engine(ctx) as engine:
        r = engine.rekey()
    click.echo(f"re-keyed {_n(r.rekeyed, 'case')}; {r.current} already current")
    for cid, problems in r.refused.items():
        for p in problems:
            click.echo(f"refused {cid}: {p}", err=True)
    if r.refused:
        ctx.exit(1)


@cli.group()
def keys() -> None:
    """The office's integrity keys (a key file beside the database; never inside it)."""


@keys.command("rotate")
@click.argument("key_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def keys_rotate(key_file: Path) -> None:
    """Add a new current key to KEY_FILE; older keys stay to verify what they keyed."""
    from .keys import rotate

    click.echo(f"new current key {rotate(key_file)} in {key_file}; run `casework rekey` to "
               "re-key the existing histories (optional)")


@keys.command("add")
@click.argument("key_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("key_id")
@click.argument("hex_key")
def keys_add(key_file: Path, key_id: str, hex_key: str) -> None:
    """Add another office's key (to verify its ledgers) to KEY_FILE."""
    from .keys import add_key

    add_key(key_file, key_id, hex_key)
    click.echo(f"added key {key_id} to {key_file}")


@cli.command("calendar-check")
@click.pass_context
def calendar_check(ctx: click.Context) -> None:
    """Compare the years declared in the settings with the holiday package's data."""
    with _engine(ctx) as engine:
        problems = engine.calendar_problems()
    for p in problems:
        click.echo(p)
    if problems:
        ctx.exit(1)
    click.echo("the declared years agree with the holiday package (or it does not know them yet)")
