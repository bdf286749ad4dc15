"""What several test modules share: running the command line."""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

from casework.cli import Defaults, cli
from click.testing import CliRunner


class CliResult(NamedTuple):
    """A finished command: its exit status, what it wrote to stdout and to stderr."""

    code: int
    out: str
    err: str

    @property
    def output(self) -> str:
        """stdout and stderr together."""
        return self.out + self.err


def run_cli(*args: str | Path, defaults: Defaults | None = None) -> CliResult:
    """Run ``casework ARGS`` in this process, as the console script would.

    Without ``defaults``: the packaged settings, pictures under ``./var``. An exception
    that escapes the command (a traceback for the user) fails the test.
    """
    result = CliRunner().invoke(cli, [str(a) for a in args], obj=defaults or Defaults(),
                                catch_exceptions=False)
    return CliResult(result.exit_code, result.stdout, result.stderr)
