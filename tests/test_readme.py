"""The README's Python examples run, so that they cannot rot.

Every ```python block of README.md is run in order, in one namespace (a later block may use
what an earlier one made), in a fresh temporary directory: a database the examples name by
a relative path (``sqlite:///cases.db``) is a new SQLite file there.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from casework import Engine

from tests.conftest import ROOT

README = ROOT / "README.md"
BLOCKS = re.findall(r"^```python\n(.*?)^```", README.read_text(encoding="utf-8"), re.S | re.M)


def test_the_readme_has_python_examples() -> None:
    assert BLOCKS


def test_the_readme_python_examples_run_on_a_fresh_sqlite_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {"__name__": "readme_example"}
    try:
        for n, block in enumerate(BLOCKS, 1):
            exec(compile(block, f"README.md, Python example {n}", "exec"), namespace)
    finally:
        for value in namespace.values():
            if isinstance(value, Engine):
                value.close()
    assert (tmp_path / "cases.db").exists()
