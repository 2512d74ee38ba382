"""A run message as the delivery engine holds it: what it names, and the delivery it
came in (tasks.run_consumer), unacknowledged until its attempt is recorded. A parked
run the engine took from the database is held the same way, with no delivery."""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid

from messaging.publisher import Run
from tasks.run import _scheduled_for
from tasks.run_consumer import Delivery


@dataclasses.dataclass(frozen=True)
class RunMessage:
    """A run message the engine holds, unacknowledged, until its attempt is recorded."""

    invocation_id: str
    scheduled_for: str | None
    key: tuple[uuid.UUID, dt.datetime] | None
    #: None for a parked run taken from the database (nothing to acknowledge).
    delivery: Delivery | None

    @property
    def run(self) -> Run:
        return self.invocation_id if self.key is None else self.key

    @property
    def args(self) -> tuple[str, ...]:
        """The message's arguments, as its task event shows them."""
        return ((self.invocation_id,) if self.scheduled_for is None
                else (self.invocation_id, self.scheduled_for))


def run_message(delivery: Delivery) -> RunMessage | None:
    """The run a ``run_trigger`` message names, None if it names none."""
    try:
        args, kwargs, _ = delivery.message.decode()
        values = dict(zip(("invocation_id", "scheduled_for"), args, strict=False))
        values.update(kwargs)
        invocation_id = str(values["invocation_id"])
        parsed = uuid.UUID(invocation_id)
    except Exception:  # not JSON, not our shape, not a UUID: nothing can ever run it
        return None
    text = values.get("scheduled_for")
    scheduled_for = _scheduled_for(text) if isinstance(text, str) else None
    key = None if scheduled_for is None else (parsed, scheduled_for)
    return RunMessage(invocation_id, text if key else None, key, delivery)


def pulled_message(invocation_id: uuid.UUID, scheduled_for: dt.datetime) -> RunMessage:
    """A parked run taken from the database, held as its message would be."""
    return RunMessage(str(invocation_id), scheduled_for.isoformat(),
                      (invocation_id, scheduled_for), None)
