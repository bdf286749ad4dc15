"""The demo command: the petition demo on a fresh SQLite file, and then, with --console, the
operator console on it."""

from __future__ import annotations

from pathlib import Path

import click

from ._shared import options_of, terminal_width


@click.command()
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
    from ..demo import run_demo
    from ..views import format_case, report_table

    if console:
        from .. import MissingExtra

        try:
            from ..http.console.demo import serve
        except ImportError as e:
            raise MissingExtra("the console", "server", e.name or "fastapi") from None
    width = terminal_width()
    db = db_path or options_of(ctx).var / "demo.db"
    run_demo(db, echo=click.echo,
             show_case=lambda engine, case_id: format_case(engine, case_id, width=width),
             show_report=lambda report: report_table(report, width))
    if console:
        serve(db, port=port, echo=click.echo)


COMMANDS = (demo,)
