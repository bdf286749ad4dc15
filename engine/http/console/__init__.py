"""The operator console: server-rendered pages over the engine, in the HTTP service's app.

``create_app`` mounts it at ``/console`` (see :class:`ConsoleOptions`): the same process,
the same engine, the same credentials as the API. Pages are Jinja2 templates rendered on
the server; htmx (vendored in ``static/``, no build step, no CDN) fetches the parts that
update in place: search results, more rows of a worklist, a report while it is computed,
a retried timer. Every asset is package data, so the console works on an office network
with no way out.

The pages:

    /console/sign-in                 an API token or a JWT, as for the API
    /console/worklist?of=mine|unit|overdue
    /console/search?...              the filters of engine.cases
    /console/open/{workflow}         open a case (the form of the definition's `open`)
    /console/cases/{id}              data, history, deadlines, timeline, actions
    /console/workflows[/{name}]      diagram with live counts, versions, cases per version
    /console/reports?...             the definition's figures for a period and a unit,
                                     charts, CSV (/console/reports.csv)
    /console/supervision?...         escalations by rung, overdue per unit, failed timers

See :mod:`casework.http.console.sessions` for sign-in, sessions and CSRF.
"""

from __future__ import annotations

from .options import ConsoleOptions

__all__ = ["ConsoleOptions", "mount_console"]


def mount_console(app: object, service: object, options: ConsoleOptions | None = None) -> object:
    """Mount the console on ``app`` (the FastAPI app of :func:`casework.http.create_app`)
    over its service; the console's own app."""
    from .pages import Console

    console = Console(service, options or ConsoleOptions())  # type: ignore[arg-type]
    sub = console.app()
    sub.state.console = console
    app.state.console = console  # type: ignore[attr-defined]
    app.mount(console.options.prefix, sub, name="console")  # type: ignore[attr-defined]
    return sub
