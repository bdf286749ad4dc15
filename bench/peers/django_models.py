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


class Base(ConcurrentTransitionMixin, models.Model):
    """A petition: its state and the ``@transition`` method of each trigger, the guards as
    ``conditions``; each method returns the values it computed (for the history row)."""

    id = models.CharField(primary_key=True, max_length=32)
    state = FSMField(default=INITIAL, max_length=64)
    opened_at = models.DateTimeField()
    updated_at = models.DateTimeField()
    last_seq = models.IntegerField(default=0)

    class Meta:
        abstract = True
        app_label = APP_LABEL

    def values(self) -> dict[str, Any]:
        """The case's values that the guards read."""
        raise NotImplementedError

    def computed(self, trigger: str, now: datetime) -> dict[str, Any]:
        """The values the definition sets on ``trigger``, put on the case and returned."""
        raise NotImplementedError

    @transition(field=state, source="registered", target="accepted")
    def accept(self, now: datetime) -> dict[str, Any]:
        return self.computed("accept", now)

    @transition(field=state, source="accepted", target="handling.investigating",
                conditions=[lambda p: four_fixes_set(p.values())])
    def assign(self, now: datetime) -> dict[str, Any]:
        return {}

    @transition(field=state, source="handling.investigating", target="handling.decided")
    def decide(self, now: datetime) -> dict[str, Any]:
        return {}

    @transition(field=state, source="handling.decided", target="replied")
    def reply(self, now: datetime) -> dict[str, Any]:
        return self.computed("reply", now)

    @transition(field=state, source=["replied", "follow_up.continued_work"],
                target="follow_up.visited")
    def return_visit(self, now: datetime) -> dict[str, Any]:
        return self.computed("return_visit", now)

    @transition(field=state, source="follow_up.visited", target="follow_up.continued_work",
                conditions=[lambda p: not is_satisfied(p.values())])
    def continue_work(self, now: datetime) -> dict[str, Any]:
        return {}

    @transition(field=state, source="follow_up.visited", target="archived",
                conditions=[lambda p: is_satisfied(p.values())])
    def archive(self, now: datetime) -> dict[str, Any]:
        return self.computed("archive", now)


class Petition(Base):
    data = models.JSONField()

    def values(self) -> dict[str, Any]:
        return self.data

    def computed(self, trigger: str, now: datetime) -> dict[str, Any]:
        values = computed(trigger, self.data, "", now.isoformat())
        self.data.update(values)
        return values


class EventBase(models.Model):
    """One history row per step."""

    seq = models.IntegerField()
    name = models.CharField(max_length=64)
    from_state = models.CharField(max_length=64, null=True)
    to_state = models.CharField(max_length=64)
    actor = models.CharField(max_length=64)
    role = models.CharField(max_length=32, null=True)
    at = models.DateTimeField()
    changes = models.JSONField()

    class Meta:
        abstract = True
        app_label = APP_LABEL
        constraints = [models.UniqueConstraint(fields=["petition", "seq"], name="%(class)s_seq")]


class PetitionEvent(EventBase):
    petition = models.ForeignKey(Petition, on_delete=models.CASCADE, related_name="events")


# -- one column per field ----------------------------------------------------------------------

class WidePetition(Base):
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

    def values(self) -> dict[str, Any]:
        return {**{f: getattr(self, f) for f in FOUR_FIXES}, "satisfaction": self.satisfaction}

    def computed(self, trigger: str, now: datetime) -> dict[str, Any]:
        values = computed(trigger, {"visit_count": self.visit_count}, "", now.isoformat())
        for k, v in values.items():
            setattr(self, k, now if k.endswith("_at") else v)  # times as times in their columns
        return values


class WidePetitionEvent(EventBase):
    petition = models.ForeignKey(WidePetition, on_delete=models.CASCADE, related_name="wide_events")
