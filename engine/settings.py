"""Operator settings, read from TOML and checked by pydantic.

Relative paths (workflow files, a SQLite file) are taken relative to the
settings file, so the same file works from any working directory.
"""

from __future__ import annotations

import glob
import tomllib
from datetime import date, time, timedelta
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from .calendars import DeclaredYear
from .documents import DEFAULT_TYPES, DocumentLimits
from .errors import SettingsError


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DatabaseSettings(_Section):
    url: str = "sqlite:///casework.db"
    sqlite_synchronous: Literal["NORMAL", "FULL", "EXTRA"] = "FULL"
    busy_timeout_ms: int = Field(default=10_000, ge=0)
    pool_size: int = Field(default=5, ge=1, le=200)

    @field_validator("url")
    @classmethod
    def _a_url(cls, v: str) -> str:
        try:
            make_url(v)
        except ArgumentError:
            raise ValueError(f"{v!r} is not a database URL (e.g. sqlite:///cases.db)") from None
        return v


class WorkflowSettings(_Section):
    paths: tuple[str, ...] = ("../workflows/*.yaml",)


class LoggingSettings(_Section):
    level: Literal["TRACE", "DEBUG", "INFO", "SUCCESS", "WARNING", "ERROR"] = "INFO"
    sql_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "WARNING"


class SchedulerSettings(_Section):
    interval_seconds: float = Field(default=30.0, gt=0)
    batch_size: int = Field(default=200, ge=1, le=10_000)
    lease_seconds: float = Field(default=60.0, gt=0)
    # How long a claim on outbox notices (the scheduler's, and every notice with durable
    # notices, as the HTTP service runs) holds: the notices a process claimed and did not
    # hand over before it died go out again, from any process, once this has passed.
    notice_lease_seconds: float = Field(default=60.0, gt=0)


def _days(items: tuple[str, ...], year: int, what: str) -> frozenset[date]:
    """Dates and ranges (``2027-02-10..2027-02-17``) of one year."""
    out: set[date] = set()
    for item in items:
        lo_text, _, hi_text = str(item).partition("..")
        try:
            lo = date.fromisoformat(lo_text.strip())
            hi = date.fromisoformat(hi_text.strip()) if hi_text else lo
        except ValueError:
            raise ValueError(f"{what}: {item!r} is not a date or a range of dates "
                             "(2027-02-10 or 2027-02-10..2027-02-17)") from None
        if hi < lo or lo.year != year or hi.year != year:
            raise ValueError(f"{what}: {item!r} is not a range of days within {year}")
        while lo <= hi:
            out.add(lo)
            lo += timedelta(days=1)
    return frozenset(out)


class DeclaredYearSettings(_Section):
    """A year's official schedule, copied from the State Council's notice: the days off
    and the make-up working days (調休上班)."""

    days_off: tuple[str, ...] = ()
    workdays: tuple[str, ...] = ()


class CalendarSettings(_Section):
    strict: bool = False
    workflows: dict[str, Literal["cn_workdays", "weekdays", "calendar"]] = Field(default_factory=dict)
    # The office's closing time per workflow: a statutory period's last day ends then.
    closing: dict[str, time] = Field(default_factory=dict)
    # Years the holiday package does not know yet: [calendars.years.2027]
    years: dict[int, DeclaredYearSettings] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _years_hold_their_days(self) -> CalendarSettings:
        for year, y in self.years.items():
            off = _days(y.days_off, year, f"calendars.years.{year}.days_off")
            on = _days(y.workdays, year, f"calendars.years.{year}.workdays")
            both = sorted(off & on)
            if both:
                raise ValueError(f"calendars.years.{year}: {both[0].isoformat()} is both a day "
                                 "off and a working day")
        return self

    def declared(self) -> dict[int, DeclaredYear]:
        """The declared years as the calendars use them."""
        return {year: DeclaredYear(year, _days(y.days_off, year, ""), _days(y.workdays, year, ""))
                for year, y in self.years.items()}


class IntegritySettings(_Section):
    """Where the office's keys are (relative to the settings file). None: beside a SQLite
    database (``<database>.key``), or ``./casework.key`` for a server database."""

    key_file: str | None = None


class DocumentSettings(_Section):
    """The case file's documents: where their content is kept, how large, which types."""

    folder: str | None = None          # relative to the settings file; none: in the database
    max_bytes: int = Field(default=20_000_000, ge=1, le=2_000_000_000)
    max_count: int = Field(default=20, ge=0, le=1000)
    types: tuple[str, ...] = tuple(sorted(DEFAULT_TYPES))


class SensitivePeriodSettings(_Section):
    name: str
    start: date
    end: date
    warn_factor: float = Field(default=0.8, gt=0, le=1)

    @model_validator(mode="after")
    def _ordered(self) -> SensitivePeriodSettings:
        if self.end < self.start:
            raise ValueError(f"sensitive period {self.name!r} ends before it starts")
        return self


class HttpTokenSettings(_Section):
    """An API token for a service: its SHA-256 (hex), never the token itself, and the actor
    it stands for (``role[,role]:id[@unit]``)."""

    name: str
    sha256: str = Field(pattern=r"^[0-9a-fA-F]{64}$")
    actor: str


class HttpJwtSettings(_Section):
    """Bearer JWTs: verified against ``key`` (a shared secret for HS*, a PEM public key), a
    ``key_file`` holding one, or a ``jwks_file``; claims mapped onto the actor."""

    algorithms: tuple[str, ...] = ("RS256",)
    key: str | None = None
    key_file: str | None = None
    jwks_file: str | None = None
    issuer: str | None = None
    audience: str | None = None
    leeway_seconds: float = Field(default=0.0, ge=0, le=600)
    actor_claim: str = "sub"
    roles_claim: str = "roles"
    unit_claim: str = "unit"


class HttpWebhookSettings(_Section):
    max_attempts: int = Field(default=12, ge=1, le=100)
    backoff_seconds: float = Field(default=2.0, gt=0)
    max_backoff_seconds: float = Field(default=3600.0, gt=0)
    timeout_seconds: float = Field(default=10.0, gt=0, le=300)
    lease_seconds: float = Field(default=120.0, gt=0)
    poll_seconds: float = Field(default=1.0, gt=0)
    # Hosts a subscription may name; empty: any host.
    allowed_hosts: tuple[str, ...] = ()


class HttpSettings(_Section):
    """The HTTP service (``casework serve-http``, :mod:`casework.http`)."""

    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    workers: int = Field(default=1, ge=1, le=64)
    # Run the scheduler (timers, cycles, the outbox) in the server's process(es).
    scheduler: bool = True
    max_body_bytes: int = Field(default=1_000_000, ge=1024)
    max_json_depth: int = Field(default=32, ge=2, le=256)
    docs: bool = True
    metrics_public: bool = False
    # Roles that may read each workflow's personal (pii) fields in responses.
    pii_readers: dict[str, tuple[str, ...]] = Field(default_factory=dict)
    jwt: HttpJwtSettings | None = None
    tokens: tuple[HttpTokenSettings, ...] = ()
    webhooks: HttpWebhookSettings = Field(default_factory=HttpWebhookSettings)


class Settings(_Section):
    """All settings of one engine."""

    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    workflows: WorkflowSettings = Field(default_factory=WorkflowSettings)
    logging: LoggingSettings = Field(default_factory=LoggingSettings)
    scheduler: SchedulerSettings = Field(default_factory=SchedulerSettings)
    calendars: CalendarSettings = Field(default_factory=CalendarSettings)
    sensitive_periods: tuple[SensitivePeriodSettings, ...] = ()
    documents: DocumentSettings = Field(default_factory=DocumentSettings)
    integrity: IntegritySettings = Field(default_factory=IntegritySettings)
    http: HttpSettings = Field(default_factory=HttpSettings)
    base_dir: Path = Path(".")

    def workflow_files(self) -> list[Path]:
        out: list[Path] = []
        for pattern in self.workflows.paths:
            full = pattern if Path(pattern).is_absolute() else str(self.base_dir / pattern)
            matches = sorted(glob.glob(full))
            if not matches:
                raise SettingsError(f"workflows.paths: {pattern!r} matches no file")
            out.extend(Path(m).resolve() for m in matches)
        return out

    def key_file(self) -> Path | None:
        k = self.integrity.key_file
        if k is None:
            return None
        return Path(k) if Path(k).is_absolute() else (self.base_dir / k).resolve()

    def document_limits(self) -> DocumentLimits:
        d = self.documents
        folder = None
        if d.folder is not None:
            folder = Path(d.folder) if Path(d.folder).is_absolute() else self.base_dir / d.folder
        return DocumentLimits(d.max_bytes, d.max_count, frozenset(d.types), folder)

    def database_url(self) -> str:
        url = make_url(self.database.url)
        if url.get_backend_name() == "sqlite" and url.database and not Path(url.database).is_absolute():
            path = (self.base_dir / url.database).resolve()
            return str(url.set(database=str(path)))
        return self.database.url


def load_settings(path: str | Path) -> Settings:
    """Read settings from a TOML file; every problem is listed in one error."""
    p = Path(path)
    try:
        raw = tomllib.loads(p.read_text(encoding="utf-8"))
    except OSError as e:
        raise SettingsError(f"{p}: cannot read: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise SettingsError(f"{p}: malformed TOML: {e}") from None
    try:
        return Settings.model_validate({**raw, "base_dir": p.resolve().parent})
    except ValidationError as e:
        lines = [f"  {p}: {'.'.join(str(x) for x in err['loc'])}: {err['msg']}" for err in e.errors()]
        raise SettingsError(f"{len(lines)} problem(s) in settings:\n" + "\n".join(lines)) from None
