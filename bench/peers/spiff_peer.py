"""Peer: SpiffWorkflow running ``petition.bpmn``, serialized to SQLite after each step.

The BPMN (beside this file) has one user task per step, lanes for the roles and an
exclusive gateway after the return visit (satisfied: ``archive``; otherwise
``continue_work`` and another ``return_visit``). The spec is parsed once per process.

Per command, one transaction on one SQLAlchemy Core connection: read the workflow row,
restore the workflow with ``BpmnWorkflowSerializer.deserialize_json``, check that the
trigger is the ready user task, put the input and the computed values in the task's
data, run the task and the engine steps after it (the gateway), serialize with
``serialize_json`` and write it back with a version check, insert a history row. The
state column is the ready user task (what the case waits for), ``archived`` at the end.

Not equivalent in one point: a BPMN user task has no precondition, so the ``assign``
guard (the four fixes) is checked by the glue before the task is completed, with the
same helper the other peers' guards call; the return-visit guards are the gateway.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any

from SpiffWorkflow.bpmn import BpmnWorkflow
from SpiffWorkflow.bpmn.parser import BpmnParser
from SpiffWorkflow.bpmn.serializer import BpmnWorkflowSerializer
from SpiffWorkflow.util.task import TaskState

from .common import FINAL, Refused, check_command, computed, four_fixes_set, opening, utcnow
from .sa_glue import SqlStore

BPMN = Path(__file__).resolve().parent / "petition.bpmn"
PROCESS = "petition"


@cache
def petition_spec() -> Any:
    """The parsed process spec (parsed once per process, as an application would)."""
    parser = BpmnParser()
    parser.add_bpmn_file(str(BPMN))
    return parser.get_spec(PROCESS)


def _waiting_for(wf: Any) -> tuple[Any, str]:
    """The ready user task and the state it stands for (``archived`` when completed)."""
    task = wf.get_next_task(state=TaskState.READY, manual=True)
    if task is not None:
        return task, f"waiting:{task.task_spec.bpmn_id}"
    if wf.is_completed():
        return None, FINAL
    raise RuntimeError("the petition workflow stopped without a ready user task")


class SpiffPeer:
    def __init__(self, db: Path, synchronous: str) -> None:
        self.store = SqlStore(db, synchronous, kind="workflows")
        self.spec = petition_spec()
        self.serializer = BpmnWorkflowSerializer()

    def open_case(self, data: Mapping[str, Any], actor: str) -> str:
        role, who, now, values = opening(data, actor)
        wf = BpmnWorkflow(self.spec)
        wf.get_next_task(state=TaskState.READY).data.update(values)
        wf.do_engine_steps()
        _, state = _waiting_for(wf)
        return self.store.add(state, self.serializer.serialize_json(wf), role, who, now, values)

    def fire(self, case_id: str, trigger: str, actor: str, data: Mapping[str, Any]) -> None:
        role, who = check_command(trigger, actor, data)
        s = self.store
        with s.conn.begin():
            row = s.load(case_id)
            wf = self.serializer.deserialize_json(row.serialization)
            task, old_state = _waiting_for(wf)
            if task is None or task.task_spec.bpmn_id != trigger:
                raise Refused(f"{trigger!r} is not allowed in {old_state!r}")
            if trigger == "assign" and not four_fixes_set({**task.data, **data}):
                raise Refused("the guard of 'assign' does not hold")
            now = utcnow()
            changes = {**data, **computed(trigger, task.data, who, now.isoformat())}
            task.data.update(changes)
            task.run()
            wf.do_engine_steps()
            _, state = _waiting_for(wf)
            s.save(row, trigger, old_state, state, self.serializer.serialize_json(wf), role, who,
                   now, changes)

    def check(self) -> dict[str, int]:
        return self.store.check()

    def close(self) -> None:
        self.store.close()


def make(db: Path, synchronous: str) -> SpiffPeer:
    return SpiffPeer(db, synchronous)
