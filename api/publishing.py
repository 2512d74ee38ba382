"""Publishing run messages after a request's transaction committed."""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Iterable, Sequence
from typing import Any

from api.state import state
from app.firing.dispatch import HOLD_MARGIN_S
from app.models import InvocationKey, Trigger
from app.queries import claims
from app.schedule.kinds import schedule_of
from messaging.publisher import kick_tick, publish_runs

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


#: A web process sends at most one tick per this many seconds for saved triggers.
MIN_KICK_GAP_S = 1.0


class _Kicks:
    """Ticks asked for by saves, at most one per :data:`MIN_KICK_GAP_S` from this process:
    one asked for sooner goes out with the rest of the gap as its countdown, and while
    that one waits, further asks add nothing (it will see their triggers too)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last = -MIN_KICK_GAP_S

    def countdown_s(self) -> float | None:
        """None: send a tick now; a number: send one with this countdown; -1: none."""
        with self._lock:
            now = time.monotonic()
            if now >= self._last + MIN_KICK_GAP_S:
                self._last = now
                return None
            if self._last > now:
                return -1.0  # a delayed one is on its way
            self._last += MIN_KICK_GAP_S
            return self._last - now


_kicks = _Kicks()


def held_next_run(trigger: Trigger | dict[str, Any]) -> dt.datetime | None:
    """A saved trigger's next run if a tick must take it ahead (a one-time or interval
    trigger, enabled), else None."""
    schedule = schedule_of(trigger)
    get = trigger.get if isinstance(trigger, dict) else trigger.__getattribute__
    return get("next_run_at") if schedule.held and get("enabled") else None


def tick_if_due_soon(instants: Iterable[dt.datetime | None], now: dt.datetime) -> None:
    """After a commit: send a dispatcher tick if one of ``instants`` (the next runs of
    saved one-time or interval triggers: :func:`held_next_run`) comes before the next
    tick would take it, so it is taken and held in time (second precision,
    app.firing.dispatch). Failures are logged: the next tick then takes it, late."""
    current = state()
    ahead = now + dt.timedelta(seconds=current.settings.tick_seconds + HOLD_MARGIN_S)
    if not any(instant is not None and instant <= ahead for instant in instants):
        return
    countdown_s = _kicks.countdown_s()
    if countdown_s is not None and countdown_s < 0:
        return
    try:
        kick_tick(current.celery, countdown_s)
    except Exception as exc:  # kombu and redis raise many kinds; the next tick comes
        log.warning("could not send a tick for a trigger due soon", extra={
            "action": "api.kick_failed", "error": type(exc).__name__})
