"""Errors as RFC 9457 problem details (``application/problem+json``).

Every :class:`~casework.CaseworkError` maps to one status (the table of
``casework.errors``), with the rule that refused it (``rule``), and the case, state and
trigger when the engine named them. A stale ``If-Match`` answers 412; an unavailable
database 503 with ``Retry-After``. The ``detail`` is the engine's own message, which never
carries the value of a personal field; a malformed request says where it is malformed,
never what it held.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .. import errors as E

PROBLEM_JSON = "application/problem+json"
TYPE_PREFIX = "urn:casework:problem:"

# (error class, status, type slug, title); the first class that matches wins, so
# subclasses come before their bases.
TABLE: tuple[tuple[type[E.CaseworkError], int, str, str], ...] = (
    (E.InvalidTrigger, 404, "unknown-trigger", "No such trigger or activity"),
    (E.WrongState, 409, "wrong-state", "Not allowed in the case's current state"),
    (E.RoleRefused, 403, "role-refused", "The actor holds none of the roles the step allows"),
    (E.ScopeRefused, 403, "scope-refused", "The actor is not whom the step's scope admits"),
    (E.WindowClosed, 409, "window-closed", "The step's window is not open"),
    (E.MissingFields, 422, "missing-fields", "Required input fields are missing"),
    (E.InvalidInput, 422, "invalid-input", "Input is unknown, of the wrong type or out of range"),
    (E.GuardRefused, 409, "guard-refused", "The step's guard refused it"),
    (E.CommandRefused, 409, "refused", "The command was refused"),
    (E.CaseExists, 409, "case-exists", "A case with that id exists already"),
    (E.ConflictError, 409, "conflict", "The case changed since it was read"),
    (E.CaseAltered, 409, "case-altered", "The case was changed outside the engine"),
    (E.DefinitionError, 422, "invalid-definition", "The workflow definition is invalid"),
    (E.SettingsError, 500, "invalid-settings", "The settings are invalid"),
    (E.MissingExtra, 501, "missing-extra", "An optional part of casework is not installed"),
    (E.UnknownWorkflow, 404, "unknown-workflow", "No such workflow"),
    (E.CaseNotFound, 404, "case-not-found", "No such case"),
    (E.IdempotencyKeyReused, 422, "idempotency-key-reused",
     "The idempotency key was used for another command"),
    (E.InvalidQuery, 422, "invalid-query", "The query asks for something the workflow lacks"),
    (E.LedgerRefused, 422, "ledger-refused", "The ledger was refused"),
    (E.UnknownCalendarYear, 422, "unknown-calendar-year", "The calendar does not know that year"),
    (E.StoreError, 503, "database-unavailable", "The database is unavailable"),
    (E.CaseworkError, 500, "error", "The engine failed"),
)

RETRY_AFTER_SECONDS = 2


def problem(status: int, slug: str, title: str, detail: str | None = None, *,
            instance: str | None = None, **extra: Any) -> dict[str, Any]:
    """A problem-details body."""
    body: dict[str, Any] = {"type": TYPE_PREFIX + slug, "title": title, "status": status}
    if detail:
        body["detail"] = detail
    if instance:
        body["instance"] = instance
    body.update({k: v for k, v in extra.items() if v is not None})
    return body


def rule_of(error: E.CaseworkError) -> str:
    """The rule a refusal names: the command's rule, or the error's slug."""
    if isinstance(error, E.CommandRefused):
        return error.rule
    return classify(error)[1]


def classify(error: E.CaseworkError, *, if_match: bool = False) -> tuple[int, str, str]:
    """Status, type slug and title of an engine error (412 for a stale If-Match)."""
    if if_match and isinstance(error, E.ConflictError) and not isinstance(error, E.CaseExists):
        return 412, "precondition-failed", "The case is not at the version If-Match names"
    for cls, status, slug, title in TABLE:
        if isinstance(error, cls):
            return status, slug, title
    return 500, "error", "The engine failed"


def from_error(error: E.CaseworkError, *, instance: str | None = None,
               if_match: bool = False) -> tuple[int, dict[str, Any], dict[str, str]]:
    """Status, problem body and headers for an engine error."""
    status, slug, title = classify(error, if_match=if_match)
    extra: dict[str, Any] = {"rule": rule_of(error)}
    if isinstance(error, E.CommandRefused):
        extra.update(case_id=error.case_id, state=error.state, trigger=error.trigger,
                     reason=error.reason)
    elif isinstance(error, E.ConflictError | E.CaseAltered | E.CaseNotFound):
        extra["case_id"] = getattr(error, "case_id", None)
        if isinstance(error, E.ConflictError) and not isinstance(error, E.CaseExists):
            extra["current_version"] = error.actual
    if isinstance(error, E.MissingExtra):
        extra["extra"] = error.extra
    if isinstance(error, E.DefinitionError | E.LedgerRefused):
        extra["problems"] = [str(p) for p in error.problems][:50]
    headers = {"Retry-After": str(RETRY_AFTER_SECONDS)} if status == 503 else {}
    detail = str(error)
    if status == 500:
        detail = "the engine failed; the server log says why"
    return status, problem(status, slug, title, detail, instance=instance, **extra), headers


def validation_errors(errors: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """FastAPI's validation errors without the input they quote (it may be personal)."""
    out = []
    for err in errors[:50]:
        loc = [x if isinstance(x, int | str) else str(x) for x in err.get("loc", ())]
        out.append({"loc": loc, "msg": str(err.get("msg", ""))[:300],
                    "type": str(err.get("type", ""))})
    return out
