"""Beat's scheduler, gated by deployment: only the active deployment's beats send ticks.

Run as ``celery -A tasks.worker beat`` (``beat_scheduler`` names this class). A beat
registers itself (:mod:`app.deploys.presence`) and sends ticks only while its role is
``active``; a standby or superseded beat stays up, sending nothing, and starts the
moment its deployment is activated. Several beats of the active deployment may run at
once (on different machines): each sends its own ticks, and the dispatcher's SKIP LOCKED
claims make the duplicates find nothing.
"""

from __future__ import annotations

import time
from typing import Any

from celery.beat import PersistentScheduler

from app.deploys.presence import Presence
from app.enums import ProcessKind
from tasks.runtime import get_settings

#: The longest beat sleeps between looks at its role: how late a newly activated beat's
#: first tick can be.
ROLE_CHECK_INTERVAL_S = 1.0
#: A beat whose loop has not run for this long reports a problem.
LOOP_STALL_S = 30.0


class FencedScheduler(PersistentScheduler):
    """PersistentScheduler that sends nothing unless its deployment is the active one."""

    def __init__(self, *args: Any, lazy: bool = False, **kwargs: Any) -> None:
        self._last_loop = time.monotonic()
        self.presence = Presence(get_settings(), ProcessKind.BEAT, status=self._status)
        # `celery beat` also builds a lazy instance, only to print its banner: that one
        # never ticks and must not register.
        if not lazy:
            self.presence.start()
        super().__init__(*args, lazy=lazy, **kwargs)

    def tick(self, *args: Any, **kwargs: Any) -> float:
        self._last_loop = time.monotonic()
        if not self.presence.active:
            return ROLE_CHECK_INTERVAL_S
        interval = super().tick(*args, **kwargs)
        return min(interval, ROLE_CHECK_INTERVAL_S)

    def close(self) -> None:
        self.presence.stop()
        super().close()

    def _status(self) -> tuple[bool | None, str | None]:
        stalled_s = time.monotonic() - self._last_loop
        if stalled_s > LOOP_STALL_S:
            return None, f"beat's loop has not run for {stalled_s:.0f} s"
        return None, None
