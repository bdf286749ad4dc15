"""Logging with loguru: case tag and workflow on every line, PII masked.

The library does not configure logging on import (``logger.disable("casework")``
in the package); a host or the command line calls :func:`configure_logging`.
Masking is a patcher, not a habit: every record logged through
:func:`case_logger` has the values of the case's ``pii`` fields replaced in
its message and extras, whatever the code that logged it wrote.

Each line names its case by :func:`case_tag`: a case id is a UUIDv7, whose first
characters are a timestamp shared by every case opened in the same minute, so the
tag is the id's random end (its last 12 hex digits); an id a host chose is shown whole.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterable, Mapping
from typing import Any

from loguru import logger

MASK = "***"
_FORMAT = ("<green>{time:YYYY-MM-DD HH:mm:ss.SSS}</green> <level>{level: <7}</level> "
           "{extra[case_tag]} {extra[workflow]} | {message}")
_UUID = re.compile(r"[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}")
TAG_LENGTH = 12


def case_tag(case_id: str | None) -> str:
    """A short name that tells cases apart: the last 12 hex digits of a UUID (its random
    part; the first ones are the time it was made), any other id whole, ``-`` for none."""
    if not case_id or case_id == "-":
        return "-"
    text = str(case_id)
    if _UUID.fullmatch(text):
        return text.replace("-", "")[-TAG_LENGTH:]
    return text


def _tag_record(record: Any) -> None:
    record["extra"]["case_tag"] = case_tag(record["extra"].get("case_id"))


def mask_data(data: Mapping[str, Any], pii: Iterable[str]) -> dict[str, Any]:
    """A copy of ``data`` with every ``pii`` field's value replaced by a mask."""
    pii = set(pii)
    return {k: (MASK if k in pii and v not in (None, "") else v) for k, v in data.items()}


def _scrub(text: str, values: Iterable[str]) -> str:
    for v in values:
        if v and v in text:
            text = text.replace(v, MASK)
    return text


def _pii_values(data: Mapping[str, Any], pii: Iterable[str]) -> tuple[str, ...]:
    """The case's PII values, longest first (so a value inside another is masked after it)."""
    return tuple(sorted({str(data[k]) for k in pii if data.get(k) not in (None, "")},
                        key=len, reverse=True))


def _mask_record(record: Any) -> None:
    extra = record["extra"]
    data, pii = extra.pop("_pii_source", (None, ()))
    values = _pii_values(data, pii) if data else ()
    if values:
        record["message"] = _scrub(record["message"], values)
        for k, v in list(extra.items()):
            if isinstance(v, str):
                extra[k] = _scrub(v, values)
            elif isinstance(v, Mapping):
                extra[k] = {kk: (_scrub(vv, values) if isinstance(vv, str) else vv)
                            for kk, vv in v.items()}


_masked = logger.patch(_mask_record)


def case_logger(case_id: str | None, workflow: str, data: Mapping[str, Any] | None = None,
                pii: Iterable[str] = ()) -> Any:
    """A logger bound to one case; the case's PII values never reach a sink."""
    # The values to mask are worked out in the patcher, only for records that are emitted.
    return _masked.bind(case_id=case_id or "-", workflow=workflow, _pii_source=(data, pii))


class _InterceptHandler(logging.Handler):
    """Route stdlib logging (SQLAlchemy, APScheduler) into loguru."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            level: str | int = logger.level(record.levelname).name
        except ValueError:
            level = record.levelno
        logger.bind(case_id="-", workflow=record.name).opt(exception=record.exc_info).log(
            level, record.getMessage()
        )


def configure_logging(level: str = "INFO", sink: Any = None, *, sql_level: str = "WARNING") -> None:
    """Enable the engine's logging to ``sink`` (stderr by default) at ``level``."""
    logger.remove()
    logger.configure(extra={"case_id": "-", "workflow": "-"}, patcher=_tag_record)
    # diagnose=False: a traceback must never print local variables (they may hold PII).
    logger.add(sink or sys.stderr, level=level.upper(), format=_FORMAT, diagnose=False,
               backtrace=False, colorize=sink is None and sys.stderr.isatty())
    logger.enable("casework")
    logging.basicConfig(handlers=[_InterceptHandler()], level=0, force=True)
    for name in ("sqlalchemy", "sqlalchemy.engine", "sqlalchemy.pool"):
        logging.getLogger(name).setLevel(sql_level.upper())
    logging.getLogger("apscheduler").setLevel(level.upper())
