"""A tick's sweep: send again what lost its message, what waited unsent, and what
outlived its lease.

Runs after the tick's dispatching, whatever became of it (a broker outage, a database
blip): it repairs what earlier ticks left.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from app.alerting import observe
from app.deploys import deploy
from app.firing.reap import failed_events
from app.models import InvocationKey
from app.queries import claims
from app.queries import sweep as queries

log = logging.getLogger("app.firing.dispatch")

#: How far out of order two publishers' messages may reach the queue (see
#: sweep.lost_before).
REORDER_MARGIN = dt.timedelta(seconds=5)

#: A wiped broker may leave a large backlog to re-publish; one tick sweeps at most this
#: many batches, so it still ends in bounded time, and the next tick goes on.
MAX_SWEEP_BATCHES_PER_TICK = 20


@dataclasses.dataclass
class SweepCounts:
    retries: int = 0  # unsent runs published: retries whose wait ended, failed publishes
    republished: int = 0  # pending invocations whose lost message was published again
    leases_expired: int = 0  # running invocations taken back after their lease ran out


def _broker_was_wiped(sessions: sessionmaker[Session],
                      broker_epoch: Callable[[], str | None] | None) -> bool:
    """Whether the broker's epoch changed since the last tick recorded it."""
    epoch = broker_epoch() if broker_epoch is not None else None
    if epoch is None:
        return False
    with sessions.begin() as session:
        return claims.note_broker_epoch(session, epoch)


def sweep(
    sessions: sessionmaker[Session],
    publish: Callable[[Sequence[InvocationKey]], int],
    now: dt.datetime,
    *,
    batch_size: int,
    republish_after_s: int,
    deployment_id: str | None,
    public_url: str | None,
    oldest_waiting: Callable[[], uuid.UUID | None] | None,
    broker_epoch: Callable[[], str | None] | None,
) -> SweepCounts:
    """Publish due retries, and again what lost its message, while batches come back full."""
    counts = SweepCounts()
    stale_before = now - dt.timedelta(seconds=republish_after_s)
    waiting = oldest_waiting() if oldest_waiting is not None else None
    if _broker_was_wiped(sessions, broker_epoch):
        # Every message queued before the broker came back is gone, and when it came
        # back is unknown: send every pending run sent before this tick again. A run
        # whose message went out after the broker's return gets a second one, and
        # whichever comes first claims it; the other does nothing. Parked runs have no
        # message to lose.
        log.warning("the broker lost its queued messages (restarted empty?); every pending"
                    " run is published again", extra={"action": "dispatch.broker_wiped"})
        stale_before, waiting = now, None
    lost_before = queries.lost_before(stale_before, waiting, REORDER_MARGIN)
    for _ in range(MAX_SWEEP_BATCHES_PER_TICK):
        # Atomic so that the rows this sweeper marks are exactly the rows it publishes;
        # if it dies after the commit, the marks age and a later sweep publishes them.
        with sessions.begin() as session:
            deploy.fence(session, deployment_id)
            retries = queries.take_unpublished(session, now, batch_size,
                                               settle=REORDER_MARGIN)
            lost = queries.take_stale_pending(session, now, lost_before, batch_size)
            failed: list[Any] = []
            expired = queries.take_expired_leases(session, now, batch_size, failed=failed)
            events = failed_events(failed, queries.LEASE_LOST_ERROR)
            if events:
                observe.observe_watched(session, events, now, public_url=public_url)
        if retries:
            publish(retries)
        again = lost + expired
        if again:
            publish(again)
            log.warning(
                "published lost messages again",
                extra={"action": "dispatch.sweep",
                       "sweep": {"republished": len(lost), "leases_expired": len(expired)}},
            )
        counts.retries += len(retries)
        counts.republished += len(lost)
        counts.leases_expired += len(expired)
        if max(len(retries), len(lost), len(expired)) < batch_size:
            break
    return counts
