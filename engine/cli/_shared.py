"""What the command line's modules share: the invocation's options and the engine they open,
values of ``-d KEY=VALUE`` typed by the workflow's fields, and the pieces of output.

Kept apart from the package's ``__init__`` (the group) so that the commands' modules
import it without importing the group that registers them.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from .. import Engine
    from ..definition import FieldSpec


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
        from ..settings import load_settings

        return load_settings(self.config).database_url()


def options_of(ctx: click.Context) -> Options:
    """The invocation's options, set by the group."""
    opts = ctx.find_object(Options)
    if opts is None:  # a command invoked without the group (not through ``cli``)
        raise click.UsageError("run the command through the casework group")
    return opts


def open_engine(ctx: click.Context) -> Engine:
    """The engine on the invocation's settings and database, logging at its level."""
    from .. import Engine, configure_logging

    opts = options_of(ctx)
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


# -- output -----------------------------------------------------------------------------
FORMAT = click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]),
                      default="table", show_default=True)
"""The ``--format`` of the commands that print a table, CSV or JSON."""


def plural(count: int, noun: str) -> str:
    """``1 case``, ``2 cases``."""
    return f"{count} {noun}{'' if count == 1 else 's'}"


def write_out(out: Path, text: str) -> None:
    """Write ``text`` (ending in one newline) to ``out``, making its folder; say so."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text + ("" if text.endswith("\n") else "\n"), encoding="utf-8")
    click.echo(f"wrote {out}")


def terminal_width() -> int:
    """The terminal's width for tables, at least 80 (120 when there is no terminal)."""
    import shutil

    return max(shutil.get_terminal_size((120, 24)).columns, 80)
