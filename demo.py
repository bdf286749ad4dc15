"""The petition demo, from the repository: ``python3 demo.py [--db FILE]``.

The same as ``python3 run.py demo`` (it sets up ``.venv`` on its first run). The demo
itself is part of the package, :mod:`casework.demo`, so that an installed ``casework
demo`` runs it too.
"""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

if __name__ == "__main__":
    sys.argv = [sys.argv[0], "demo", *sys.argv[1:]]
    runpy.run_path(str(Path(__file__).resolve().with_name("run.py")), run_name="__main__")
