"""Publishing run messages after a request's transaction committed."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence

from api.state import state
from app.models import InvocationKey
from app.queries import claims
from messaging.publisher import publish_runs

log = logging.getLogger(__name__)


def publish_after_commit(
    keys: Sequence[InvocationKey], now: dt.datetime
) -> dt.datetime | None:
    """Publish ``run_trigger`` for committed invocations, then mark them published at
    ``now``, the request's time (read once, from the database, in its transaction).

    ``enqueued_at`` may thus be a little earlier than the publish (at most the broker's
    send timeout), which only makes the sweep's "message lost" check start that much
    sooner; a second clock read in the same request would mix two instants instead.

    A broker or database failure here must not fail the request: the invocations are
    committed, and the dispatcher's sweep publishes every pending row whose
    ``enqueued_at`` is still NULL (or stale). So errors are logged, not raised.

    Returns:
        ``now`` once they were marked published, or None if publishing failed.
    """
    current = state()
    invocation_ids = [key.id for key in keys]
    try:
        publish_runs(current.celery, keys)
    except Exception as exc:  # kombu and redis raise many kinds; all mean "later"
        log.warning("publish failed; the sweep will publish", extra={
            "action": "api.publish_failed", "error": type(exc).__name__,
            "invocation_ids": [str(i) for i in invocation_ids]})
        return None
    try:
        with current.sessions.begin() as session:
            claims.mark_published(session, invocation_ids, now)
    except Exception as exc:  # the message is out; a duplicate later is harmless
        log.warning("marking published failed", extra={
            "action": "api.mark_published_failed", "error": type(exc).__name__,
            "invocation_ids": [str(i) for i in invocation_ids]})
        return None
    return now
