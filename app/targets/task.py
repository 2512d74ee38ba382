"""The task target: a Celery task of the user's own code, on one of the operator's queues."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from app.delivery.send import DEFAULT_TASK_QUEUE, DeliveryResult, send_task_message
from app.enums import TargetKind
from app.errors import InvalidTrigger, PermanentError
from app.targets.base import Delivery, Target


class Task(Target):
    kind: ClassVar[TargetKind] = TargetKind.TASK
    columns: ClassVar[dict[str, Any]] = {"task_name": None, "task_queue": None}

    def check(self, row: dict[str, Any]) -> None:
        if not row["task_name"]:
            raise InvalidTrigger("target", "a task target needs a task_name")

    def deliver(self, delivery: Delivery) -> DeliveryResult:
        row = delivery.row
        assert row.task_name is not None, "ck_triggers_target_complete"
        queue = row.task_queue or DEFAULT_TASK_QUEUE
        if queue not in delivery.settings.task_queues:
            # The API refuses such a queue at save; this catches rows saved before it
            # did, or before the operator narrowed CRONBEAT_TASK_QUEUES. Our own queues
            # and kombu's keys are never in it (app.config), so a tenant cannot reach them.
            raise PermanentError(f"the task queue {queue!r} is not one of the operator's queues")
        return send_task_message(delivery.send_task, name=row.task_name, queue=queue,
                                 body=delivery.body)

    def view(self, trigger: Any) -> dict[str, Any]:
        return {"kind": "task", "task_name": trigger.task_name, "queue": trigger.task_queue}

    def columns_of(self, given: Mapping[str, Any]) -> dict[str, Any]:
        return {"target_kind": self.kind.value, "task_name": given["task_name"],
                "task_queue": given["queue"]}

    def describe(self, trigger: Any) -> str:
        return f"task {trigger.task_name} on {trigger.task_queue or DEFAULT_TASK_QUEUE}"
