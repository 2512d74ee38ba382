"""What waits in the run queue, and whether the broker lost everything since the last look.

The oldest run_trigger message not yet taken by a worker:

The dispatcher's sweep re-publishes a pending invocation only when its message is lost,
not when it is waiting behind a backlog (app.queries.sweep.take_stale_pending). Redis
queues are FIFO: kombu LPUSHes and workers BRPOP from the other end, so every message
published before the oldest one still waiting has been taken by some worker. A pending
invocation published well before that one is therefore not in the queue: either a
worker holds it (and claims it in a moment) or its message is gone.
"""

from __future__ import annotations

import json
import logging
import uuid

from celery import Celery
from kombu.exceptions import OperationalError as BrokerError
from redis.exceptions import RedisError

from messaging.config import RUN_QUEUE
from messaging.connect import ensure_connected

log = logging.getLogger(__name__)


def oldest_waiting_run(app: Celery) -> uuid.UUID | None:
    """The invocation id of the oldest message waiting in the run queue; None if empty.

    Also None when the broker cannot be read or the message is not ours: the sweep then
    judges by age alone, as it did before it looked at the queue.
    """
    try:
        with app.connection_for_read() as conn:
            raw = ensure_connected(conn).default_channel.client.lindex(RUN_QUEUE, -1)
    except (BrokerError, RedisError, OSError):
        log.warning("sweep: the run queue could not be read", exc_info=True,
                    extra={"action": "dispatch.backlog_unread"})
        return None
    if raw is None:
        return None
    try:
        return uuid.UUID(json.loads(raw)["headers"]["id"])
    except (ValueError, KeyError, TypeError):
        return None


#: A key Cronbeat keeps in the broker's Redis: a random token, set when missing. A new
#: token means the broker lost its data (a restart without persistence, a flush, a
#: failover to an empty replica) since a dispatcher last looked, and every queued
#: message with it.
EPOCH_KEY = "cronbeat:broker-epoch"


def broker_epoch(app: Celery) -> str | None:
    """The broker's epoch token (set now if missing); None when it cannot be read."""
    try:
        with app.connection_for_read() as conn:
            client = ensure_connected(conn).default_channel.client
            client.set(EPOCH_KEY, uuid.uuid4().hex, nx=True)
            raw = client.get(EPOCH_KEY)
    except (BrokerError, RedisError, OSError):
        log.warning("sweep: the broker's epoch could not be read", exc_info=True,
                    extra={"action": "dispatch.epoch_unread"})
        return None
    return raw.decode() if isinstance(raw, bytes) else raw
