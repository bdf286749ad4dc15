"""Peer: django-fsm-2 and the Django ORM on SQLite (settings in code, no project files).

Django is configured once per process (``settings.configure``) with one database alias;
each run points it at a fresh SQLite file (closing the connection, changing ``NAME`` and
the ``init_command``) and creates the two tables with the schema editor. The SQLite
settings are casework's: WAL, the ``synchronous`` level under test, a busy timeout (in
``init_command``); Django turns foreign keys on itself; ``transaction_mode="IMMEDIATE"``
makes ``transaction.atomic()`` open with ``BEGIN IMMEDIATE`` as casework does. ``DEBUG``
is off (no query log).

Per command, one ``transaction.atomic()``: ``Petition.objects.get(pk=...)``, put the
input in the case's data (or, in the one-column-per-field variant, on the model's
fields), call the ``@transition`` method (django-fsm checks the source state
and the ``conditions``), ``save()`` (an ``UPDATE`` guarded by the state it was loaded in),
``PetitionEvent.objects.create(...)``.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from django.apps import AppConfig
from django_fsm import TransitionNotAllowed

from .common import FINAL, Refused, check_command, opening, utcnow

BUSY_TIMEOUT_MS = 10_000


class PetitionsConfig(AppConfig):
    """The Django app of the peer's models (``bench.peers.django_models``)."""

    name = "bench.peers"
    label = "bench_petitions"
    default_auto_field = "django.db.models.BigAutoField"


def _database(db: Path, synchronous: str) -> dict[str, Any]:
    return {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": str(db),
        "OPTIONS": {
            "timeout": BUSY_TIMEOUT_MS / 1000,
            "transaction_mode": "IMMEDIATE",
            "init_command": (f"PRAGMA journal_mode=WAL; PRAGMA synchronous={synchronous}; "
                             f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}"),
        },
    }


def setup(db: Path, synchronous: str) -> None:
    """Configure Django (first call in the process) and point it at ``db``."""
    import django
    from django.conf import settings
    from django.db import connections

    if not settings.configured:
        settings.configure(
            DEBUG=False,
            DATABASES={"default": _database(db, synchronous)},
            INSTALLED_APPS=[f"{__name__}.PetitionsConfig"],
            USE_TZ=True,
            TIME_ZONE="UTC",
            LOGGING_CONFIG=None,
        )
        django.setup()
    conn = connections["default"]
    conn.close()
    conn.settings_dict.update(_database(db, synchronous))


class DjangoFsmPeer:
    """The case's data in a ``JSONField`` (as casework and the other peers store it)."""

    def __init__(self, db: Path, synchronous: str) -> None:
        setup(db, synchronous)
        from django.db import connection, transaction

        from . import django_models

        self.models = django_models
        self.Petition, self.PetitionEvent = self.model_classes()
        self.atomic = transaction.atomic
        self.not_allowed = TransitionNotAllowed
        self.connection = connection
        with connection.schema_editor() as editor:
            editor.create_model(self.Petition)
            editor.create_model(self.PetitionEvent)

    def model_classes(self) -> tuple[Any, Any]:
        return self.models.Petition, self.models.PetitionEvent

    def new_case(self, values: dict[str, Any], **kwargs: Any) -> Any:
        return self.Petition(data=values, **kwargs)

    def set_input(self, p: Any, data: Mapping[str, Any]) -> None:
        p.data = {**p.data, **data}

    def open_case(self, data: Mapping[str, Any], actor: str) -> str:
        role, who, now, values = opening(data, actor)
        with self.atomic():
            p = self.new_case(values, id=uuid.uuid4().hex, opened_at=now, updated_at=now,
                              last_seq=1)
            p.save(force_insert=True)
            self.PetitionEvent.objects.create(petition=p, seq=1, name="open", from_state=None,
                                              to_state=p.state, actor=who, role=role, at=now,
                                              changes=values)
        return str(p.id)

    def fire(self, case_id: str, trigger: str, actor: str, data: Mapping[str, Any]) -> None:
        role, who = check_command(trigger, actor, data)
        with self.atomic():
            try:
                p = self.Petition.objects.get(pk=case_id)
            except self.Petition.DoesNotExist:
                raise Refused(f"no case {case_id}") from None
            old_state = p.state
            self.set_input(p, data)
            now = utcnow()
            try:
                computed_now = getattr(p, trigger)(now)
            except self.not_allowed as e:
                raise Refused(str(e)) from None
            p.last_seq += 1
            p.updated_at = now
            p.save()
            self.PetitionEvent.objects.create(petition=p, seq=p.last_seq, name=trigger,
                                              from_state=old_state, to_state=p.state,
                                              actor=who, role=role, at=now,
                                              changes={**data, **computed_now})

    def check(self) -> dict[str, int]:
        return {"cases": self.Petition.objects.count(),
                "final": self.Petition.objects.filter(state=FINAL).count(),
                "history": self.PetitionEvent.objects.count()}

    def close(self) -> None:
        self.connection.close()


class DjangoFsmColumnsPeer(DjangoFsmPeer):
    """The variant with one column per field of the petition (``WidePetition``)."""

    def model_classes(self) -> tuple[Any, Any]:
        return self.models.WidePetition, self.models.WidePetitionEvent

    def new_case(self, values: dict[str, Any], **kwargs: Any) -> Any:
        return self.Petition(**values, **kwargs)

    def set_input(self, p: Any, data: Mapping[str, Any]) -> None:
        for k, v in data.items():
            setattr(p, k, v)


def make(db: Path, synchronous: str) -> DjangoFsmPeer:
    return DjangoFsmPeer(db, synchronous)


def make_columns(db: Path, synchronous: str) -> DjangoFsmColumnsPeer:
    return DjangoFsmColumnsPeer(db, synchronous)
