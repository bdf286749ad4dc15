"""What the test suite needs beside Python, got where the machine allows.

``python3 run.py test`` calls :func:`prepare` first: it makes sure a PostgreSQL server
answers on 127.0.0.1:5432 (starting the local cluster, or installing Debian's package when
there is none and the machine lets us), that Graphviz's ``dot`` draws the diagrams, and
that Debian's Chromium and ChromeDriver are there for the console's browser tests. What it
could not get is said, each with how to get it; the tests that need it then fail under
``CI=true`` and are skipped otherwise.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

PG_HOST, PG_PORT = "127.0.0.1", 5432


def _say(text: str) -> None:
    print(f"casework test: {text}", file=sys.stderr, flush=True)


def _run(*cmd: str, timeout: float = 600) -> bool:
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                              env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def _can_install() -> bool:
    return shutil.which("apt-get") is not None and os.geteuid() == 0


_updated = False


def _apt(*packages: str) -> bool:
    global _updated
    if not _can_install():
        return False
    if not _updated:
        _run("apt-get", "update", "-q")
        _updated = True
    return _run("apt-get", "install", "-y", "-q", *packages, timeout=1200)


def _pg_up() -> bool:
    if shutil.which("pg_isready") is not None:
        return _run("pg_isready", "-h", PG_HOST, "-p", str(PG_PORT), "-q", timeout=10)
    import socket

    try:
        with socket.create_connection((PG_HOST, PG_PORT), timeout=3):
            return True
    except OSError:
        return False


def _clusters() -> list[str]:
    root = Path("/etc/postgresql")
    return sorted(p.name for p in root.iterdir()) if root.is_dir() else []


def postgresql() -> str | None:
    """Why PostgreSQL is not there (None: it answers, with a database ``test``)."""
    if not _pg_up():
        if not _clusters():
            _say("PostgreSQL is not installed: installing Debian's package")
            if not _apt("postgresql"):
                return ("PostgreSQL is not installed and could not be installed here "
                        "(needs root and apt-get): apt-get install postgresql")
            for version in _clusters():
                hba = Path(f"/etc/postgresql/{version}/main/pg_hba.conf")
                rules = hba.read_text()
                if "127.0.0.1/32 trust" not in rules:
                    hba.write_text("host all all 127.0.0.1/32 trust\n" + rules)
        for version in _clusters():
            _say(f"starting PostgreSQL {version}")
            _run("pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "start", timeout=60)
        for _ in range(30):
            if _pg_up():
                break
            time.sleep(1)
        else:
            return ("PostgreSQL does not answer on 127.0.0.1:5432 and could not be started: "
                    "pg_ctlcluster <version> main start")
    if shutil.which("psql") is None:
        return None  # it answers; the tests create their databases themselves
    ask = ["psql", "-h", PG_HOST, "-U", "postgres", "-tAc"]
    found = subprocess.run([*ask, "SELECT 1 FROM pg_database WHERE datname='test'"],
                           capture_output=True, text=True)
    if found.returncode != 0:
        return f"PostgreSQL answers but refuses user postgres: {found.stderr.strip()[:200]}"
    if found.stdout.strip() != "1":
        _run(*ask, "CREATE DATABASE test", timeout=60)
    return None


def graphviz() -> str | None:
    if shutil.which("dot") is not None:
        return None
    _say("Graphviz is not installed: installing Debian's package")
    if _apt("graphviz") and shutil.which("dot") is not None:
        return None
    return "Graphviz's dot is missing (PNG/SVG diagrams): apt-get install graphviz"


def chromium() -> str | None:
    if shutil.which("chromium") is not None and shutil.which("chromedriver") is not None:
        return None
    _say("Chromium is not installed: installing Debian's chromium and chromium-driver")
    if _apt("chromium", "chromium-driver") and shutil.which("chromedriver") is not None:
        return None
    return ("Chromium and ChromeDriver are missing (the console's browser tests): "
            "apt-get install chromium chromium-driver")


def prepare() -> list[str]:
    """Get what the tests need; what could not be got, each with how to get it."""
    missing = [why for why in (postgresql(), graphviz(), chromium()) if why is not None]
    for why in missing:
        _say(f"could not get: {why}")
    return missing
