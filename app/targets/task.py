"""The task target: a Celery task of the user's own code, on one of the operator's queues.

The task is called with its own arguments (``task_args``, ``task_kwargs``), as
``apply_async`` would call it; the occurrence's facts travel in the message's
``cronbeat`` header, which the task reads as ``self.request.cronbeat`` (a bound task).
A trigger with ``task_envelope`` (those saved before arguments existed, or one that asks)
is called with one argument instead: the envelope a webhook's body carries.

With ``task_outcome`` on, the run waits (up to ``timeout_s``) for the task's own outcome,
reported by the user's worker with cronbeat.celery installed (tasks.reports): the run
ends as the task did, and a failure is retried as a webhook's 5xx is.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from app.delivery.send import DEFAULT_TASK_QUEUE, DeliveryResult, send_task_message
from app.enums import TargetKind
from app.errors import InvalidTrigger, PermanentError
from app.targets.base import Delivery, Target


class Task(Target):
    kind: ClassVar[TargetKind] = TargetKind.TASK
    columns: ClassVar[dict[str, Any]] = {
        "task_name": None, "task_queue": None, "task_args": None, "task_kwargs": None,
        "task_envelope": False, "task_outcome": False,
    }

    def check(self, row: dict[str, Any]) -> None:
        if not row["task_name"]:
            raise InvalidTrigger("target", "a task target needs a task_name")
        if row["task_args"] is not None and not isinstance(row["task_args"], list):
            raise InvalidTrigger("target", "args must be a JSON array")
        if row["task_kwargs"] is not None and not isinstance(row["task_kwargs"], dict):
            raise InvalidTrigger("target", "kwargs must be a JSON object")
        if row["task_envelope"] and (row["task_args"] or row["task_kwargs"]):
            raise InvalidTrigger("target", "a task called with the envelope takes no args"
                                 " or kwargs")

    def prepare_save(self, row: dict[str, Any], old: Any, *, generate_secret: bool
                     ) -> str | None:
        if row["task_envelope"] is None:
            # Left out: a task trigger keeps how it is called (one saved before
            # arguments existed keeps its envelope) unless arguments are given; a new
            # one gets its arguments.
            given = row["task_args"] is not None or row["task_kwargs"] is not None
            row["task_envelope"] = bool(not given and old is not None
                                        and old.target_kind == self.kind
                                        and old.task_envelope)
        return None

    def deliver(self, delivery: Delivery) -> DeliveryResult:
        row = delivery.row
        assert row.task_name is not None, "ck_triggers_target_complete"
        queue = row.task_queue or DEFAULT_TASK_QUEUE
        if queue not in delivery.settings.task_queues:
            # The API refuses such a queue at save; this catches rows saved before it
            # did, or before the operator narrowed CRONBEAT_TASK_QUEUES. Our own queues
            # and kombu's keys are never in it (app.config), so a tenant cannot reach them.
            raise PermanentError(f"the task queue {queue!r} is not one of the operator's queues")
        body = delivery.body
        facts = {"invocation": body["invocation"], "trigger": body["trigger"]["id"],
                 "trigger_name": body["trigger"]["name"],
                 "scheduled_for": body["scheduled_for"], "attempt": body["attempt"]}
        if row.task_envelope:
            args, kwargs = [dict(body)], {}
        else:
            args, kwargs = list(row.task_args or []), dict(row.task_kwargs or {})
        return send_task_message(
            delivery.send_task, name=row.task_name, queue=queue, args=args, kwargs=kwargs,
            headers={"cronbeat": facts},
            outcome_within_s=float(row.timeout_s) if row.task_outcome else None)

    def view(self, trigger: Any) -> dict[str, Any]:
        return {"kind": "task", "task_name": trigger.task_name, "queue": trigger.task_queue,
                "args": trigger.task_args or [], "kwargs": trigger.task_kwargs or {},
                "envelope": trigger.task_envelope, "outcome": trigger.task_outcome}

    def columns_of(self, given: Mapping[str, Any]) -> dict[str, Any]:
        return {"target_kind": self.kind.value, "task_name": given["task_name"],
                "task_queue": given["queue"], "task_args": given.get("args"),
                "task_kwargs": given.get("kwargs"), "task_envelope": given.get("envelope"),
                "task_outcome": given.get("outcome", False)}

    def describe(self, trigger: Any) -> str:
        return f"task {trigger.task_name} on {trigger.task_queue or DEFAULT_TASK_QUEUE}"
