"""casework's command line: the console script ``casework``.

Cases: open, fire, show, timeline, assign, delegate, what-if; lists of them: cases,
worklist. Definitions: validate, schema, diagram, migrate. The scheduler: serve,
recompute-deadlines. The HTTP API: serve-http. Operators: report, rebuild-figures, verify,
export, import, rekey, keys, calendar-check, db upgrade / db current. And the demo.

Settings come from ``--config``, else the file named by ``$CASEWORK_CONFIG``, else
the caller's default (the repository's ``run.py`` passes ``config/casework.toml``),
else the settings shipped in the package with the database moved to
``./var/casework.db`` under the working directory (never inside the installed
package). ``--db URL`` overrides the database in every case. Pictures and the
demo's database go to ``var/`` (the working directory's, or the repository's
under ``run.py``) unless told otherwise.

Every error of the engine is printed as one line ``error: ...`` with exit status 1;
a usage error (an unknown option, a malformed value) exits with status 2.

This package holds the group and its options; the commands live in a module per area
(``cases``, ``worklists``, ``definitions``, ``scheduler``, ``operators``, ``demo``), and
what they share (the invocation's options, the engine, typed values, output) in
``_shared``, which never imports the group.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import click

from . import cases, definitions, demo, operators, scheduler, worklists
from ._shared import Options, parse_values

__all__ = ["CONFIG_ENV", "Defaults", "cli", "main", "packaged_settings", "parse_values"]

CONFIG_ENV = "CASEWORK_CONFIG"


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


# -- the group --------------------------------------------------------------------------
class _Group(click.Group):
    """Shows the engine's errors as one clear line and exits 1, without a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        from .. import CaseworkError

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


for _module in (cases, worklists, definitions, scheduler, operators, demo):
    for _command in _module.COMMANDS:
        cli.add_command(_command)
