"""The commands that run the office's services: serve (the scheduler), recompute-deadlines,
and serve-http (the HTTP API)."""

from __future__ import annotations

import click

from ._shared import open_engine, options_of


@click.command()
@click.option("--once", is_flag=True, help="fire what is due now and exit")
@click.pass_context
def serve(ctx: click.Context, once: bool) -> None:
    """Run the scheduler as a daemon until SIGTERM or SIGINT (the batch in hand is finished)."""
    import signal
    import threading

    engine = open_engine(ctx)
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


@click.command("serve-http")
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
    from .. import MissingExtra, configure_logging

    try:
        from ..http.server import serve
    except ImportError as e:
        raise MissingExtra("the HTTP service", "server", e.name or "fastapi") from None
    opts = options_of(ctx)
    configure_logging(opts.log_level)
    db = opts.database_url() if (opts.db or opts.packaged) else None
    serve(opts.config, db, host=host, port=port, workers=workers, scheduler=scheduler,
          log_level=opts.log_level.lower())


@click.command("recompute-deadlines")
@click.option("--all", "all_", is_flag=True, help="every running deadline, not only provisional ones")
@click.pass_context
def recompute_deadlines(ctx: click.Context, all_: bool) -> None:
    """Recompute provisional deadlines once the holiday calendar knows the new year."""
    with open_engine(ctx) as engine:
        n = engine.recompute_deadlines(provisional_only=not all_)
        click.echo(f"recomputed the deadlines of {n} case(s)")


COMMANDS = (serve, serve_http, recompute_deadlines)
