"""The Django models of the django-fsm-2 peers (import only after ``django_peer.setup()``).

``Petition``: the case as casework and the other peers store it: its state in an
``FSMField``, its data in a ``JSONField``; one ``@transition`` method per trigger, the
guards as ``conditions``. ``ConcurrentTransitionMixin`` makes ``save()`` an ``UPDATE ...
WHERE id = ? AND state = <the state it was loaded in>`` (the optimistic check).
``PetitionEvent``: one history row per step.

``WidePetition`` / ``WidePetitionEvent``: the same with one column per field of the
petition (35 columns), as many Django teams would model it; Django builds its SQL for
every query, and a wide model costs it about twice the time per step (the variant
``django-fsm-2-columns``, not in the default run).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.db import models
from django_fsm import ConcurrentTransitionMixin, FSMField, transition

from .common import FOUR_FIXES, INITIAL, computed, four_fixes_set, is_satisfied

APP_LABEL = "bench_petitions"

CHANNELS = [(v, v) for v in ("visit", "letter", "phone", "online")]
SOURCES = [(v, v) for v in ("central", "province", "city", "direct", "carried_over")]
CONCERNS = [(v, v) for v in ("police", "procuratorate", "court", "justice_bureau", "township",
                             "other")]
OUTCOMES = [(v, v) for v in ("full_correction", "partial_correction", "explanation",
                             "maintained")]
SATISFACTION = [("satisfied", "satisfied"), ("unsatisfied", "unsatisfied")]


def has_four_fixes(p: Petition) -> bool:
    return four_fixes_set(p.data)


def satisfied(p: Petition) -> bool:
    return is_satisfied(p.data)


def not_satisfied(p: Petition) -> bool:
    return not is_satisfied(p.data)


class Petition(ConcurrentTransitionMixin, models.Model):
    id = models.CharField(primary_key=True, max_length=32)
    state = FSMField(default=INITIAL, max_length=64)
    data = models.JSONField()
    opened_at = models.DateTimeField()
    updated_at = models.DateTimeField()
    last_seq = models.IntegerField(default=0)

    class Meta:
        app_label = APP_LABEL

    def _set(self, trigger: str, now: datetime) -> dict[str, Any]:
        """The values the definition sets on ``trigger``, put in the data and returned."""
        values = computed(trigger, self.data, "", now.isoformat())
        self.data.update(values)
        return values

    # One method per trigger; each returns the values it computed (for the history row).
    @transition(field=state, source="registered", target="accepted")
    def accept(self, now: datetime) -> dict[str, Any]:
        return self._set("accept", now)

    @transition(field=state, source="accepted", target="handling.investigating",
                conditions=[has_four_fixes])
    def assign(self, now: datetime) -> dict[str, Any]:
        return {}

    @transition(field=state, source="handling.investigating", target="handling.decided")
    def decide(self, now: datetime) -> dict[str, Any]:
        return {}

    @transition(field=state, source="handling.decided", target="replied")
    def reply(self, now: datetime) -> dict[str, Any]:
        return self._set("reply", now)

    @transition(field=state, source=["replied", "follow_up.continued_work"],
                target="follow_up.visited")
    def return_visit(self, now: datetime) -> dict[str, Any]:
        return self._set("return_visit", now)

    @transition(field=state, source="follow_up.visited", target="follow_up.continued_work",
                conditions=[not_satisfied])
    def continue_work(self, now: datetime) -> dict[str, Any]:
        return {}

    @transition(field=state, source="follow_up.visited", target="archived",
                conditions=[satisfied])
    def archive(self, now: datetime) -> dict[str, Any]:
        return self._set("archive", now)


class PetitionEvent(models.Model):
    petition = models.ForeignKey(Petition, on_delete=models.CASCADE, related_name="events")
    seq = models.IntegerField()
    name = models.CharField(max_length=64)
    from_state = models.CharField(max_length=64, null=True)
    to_state = models.CharField(max_length=64)
    actor = models.CharField(max_length=64)
    role = models.CharField(max_length=32, null=True)
    at = models.DateTimeField()
    changes = models.JSONField()

    class Meta:
        app_label = APP_LABEL
        constraints = [models.UniqueConstraint(fields=["petition", "seq"],
                                               name="petition_event_seq")]


# -- one column per field ----------------------------------------------------------------------

def wide_has_four_fixes(p: WidePetition) -> bool:
    return four_fixes_set({f: getattr(p, f) for f in FOUR_FIXES})


def wide_satisfied(p: WidePetition) -> bool:
    return is_satisfied({"satisfaction": p.satisfaction})


def wide_not_satisfied(p: WidePetition) -> bool:
    return not wide_satisfied(p)


class WidePetition(ConcurrentTransitionMixin, models.Model):
    id = models.CharField(primary_key=True, max_length=32)
    state = FSMField(default=INITIAL, max_length=64)
    # Registration.
    petitioner_name = models.CharField(max_length=200)
    petitioner_id_number = models.CharField(max_length=32, blank=True, default="")
    petitioner_phone = models.CharField(max_length=32, blank=True, default="")
    petitioner_address = models.CharField(max_length=200, blank=True, default="")
    channel = models.CharField(max_length=16, choices=CHANNELS)
    source = models.CharField(max_length=16, choices=SOURCES)
    concerns = models.CharField(max_length=16, choices=CONCERNS, blank=True, default="")
    summary = models.TextField()
    received_by_head = models.BooleanField(null=True)
    receiving_leader = models.CharField(max_length=64, blank=True, default="")
    first_handler = models.CharField(max_length=64)
    group_petition = models.BooleanField(null=True)
    petition_count = models.IntegerField(default=1)
    threatens_higher_visit = models.BooleanField(null=True)
    # Triage and the four fixes.
    accepted_at = models.DateTimeField(null=True)
    leader = models.CharField(max_length=64, blank=True, default="")
    handler = models.CharField(max_length=64, blank=True, default="")
    unit = models.CharField(max_length=200, blank=True, default="")
    assisting_units = models.JSONField(null=True)
    due_date = models.DateField(null=True)
    target = models.TextField(blank=True, default="")
    # Handling, reply, return visits, archive.
    outcome = models.CharField(max_length=32, choices=OUTCOMES, blank=True, default="")
    decision_summary = models.TextField(blank=True, default="")
    state_compensation = models.FloatField(null=True)
    replied_at = models.DateTimeField(null=True)
    reply_summary = models.TextField(blank=True, default="")
    satisfaction = models.CharField(max_length=16, choices=SATISFACTION, blank=True, default="")
    visit_count = models.IntegerField(default=0)
    last_visit_at = models.DateTimeField(null=True)
    archived_at = models.DateTimeField(null=True)
    # Bookkeeping.
    opened_at = models.DateTimeField()
    updated_at = models.DateTimeField()
    last_seq = models.IntegerField(default=0)

    class Meta:
        app_label = APP_LABEL

    # One method per trigger; each returns the values it computed (for the history row).
    @transition(field=state, source="registered", target="accepted")
    def accept(self, now: datetime) -> dict[str, Any]:
        self.accepted_at = now
        return {"accepted_at": now.isoformat()}

    @transition(field=state, source="accepted", target="handling.investigating",
                conditions=[wide_has_four_fixes])
    def assign(self, now: datetime) -> dict[str, Any]:
        return {}

    @transition(field=state, source="handling.investigating", target="handling.decided")
    def decide(self, now: datetime) -> dict[str, Any]:
        return {}

    @transition(field=state, source="handling.decided", target="replied")
    def reply(self, now: datetime) -> dict[str, Any]:
        self.replied_at = now
        return {"replied_at": now.isoformat()}

    @transition(field=state, source=["replied", "follow_up.continued_work"],
                target="follow_up.visited")
    def return_visit(self, now: datetime) -> dict[str, Any]:
        self.visit_count = (self.visit_count or 0) + 1
        self.last_visit_at = now
        return {"visit_count": self.visit_count, "last_visit_at": now.isoformat()}

    @transition(field=state, source="follow_up.visited", target="follow_up.continued_work",
                conditions=[wide_not_satisfied])
    def continue_work(self, now: datetime) -> dict[str, Any]:
        return {}

    @transition(field=state, source="follow_up.visited", target="archived",
                conditions=[wide_satisfied])
    def archive(self, now: datetime) -> dict[str, Any]:
        self.archived_at = now
        return {"archived_at": now.isoformat()}


class WidePetitionEvent(models.Model):
    petition = models.ForeignKey(WidePetition, on_delete=models.CASCADE, related_name="wide_events")
    seq = models.IntegerField()
    name = models.CharField(max_length=64)
    from_state = models.CharField(max_length=64, null=True)
    to_state = models.CharField(max_length=64)
    actor = models.CharField(max_length=64)
    role = models.CharField(max_length=32, null=True)
    at = models.DateTimeField()
    changes = models.JSONField()

    class Meta:
        app_label = APP_LABEL
        constraints = [models.UniqueConstraint(fields=["petition", "seq"],
                                               name="wide_petition_event_seq")]
