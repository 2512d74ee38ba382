"""Beat's scheduler, fenced by deployment: a superseded beat logs it and exits cleanly.

Run as ``celery -A tasks.worker beat --scheduler tasks.beat:FencedScheduler``. Several
beats (of the active deployment, on different machines) may run at once: each sends its
own ticks, and the dispatcher's SKIP LOCKED claims make the duplicates find nothing.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from celery.beat import PersistentScheduler
from sqlalchemy.exc import SQLAlchemyError

from app.deploy import may_run, read_state
from tasks.runtime import get_runtime

log = logging.getLogger(__name__)

#: How often beat asks the database whether its deployment is still the active one.
#: Between checks a superseded beat may send a few more ticks; they are harmless, since
#: the dispatcher itself is fenced.
FENCE_CHECK_INTERVAL_S = 5.0


class FencedScheduler(PersistentScheduler):
    """PersistentScheduler that stops beat once another deployment is activated."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._next_fence_check = 0.0
        super().__init__(*args, **kwargs)

    def tick(self, *args: Any, **kwargs: Any) -> float:
        now = time.monotonic()
        if now >= self._next_fence_check:
            self._next_fence_check = now + FENCE_CHECK_INTERVAL_S
            self._exit_if_superseded()
        interval = super().tick(*args, **kwargs)
        return min(interval, FENCE_CHECK_INTERVAL_S)

    def _exit_if_superseded(self) -> None:
        runtime = get_runtime()
        deployment_id = runtime.settings.deployment_id
        try:
            with runtime.sessions.begin() as session:
                state = read_state(session)
        except SQLAlchemyError as exc:
            # Keep ticking: a dispatcher that cannot reach the database does nothing
            # anyway, and beat should not die of a database blip.
            log.warning("beat: could not read the scheduler state (%s)", type(exc).__name__,
                        extra={"action": "beat.fence_unknown"})
            return
        if not may_run(state.active_deployment_id, deployment_id):
            log.warning(
                "beat: deployment %s is superseded by %s (generation %d); exiting",
                deployment_id or "(unversioned)", state.active_deployment_id, state.generation,
                extra={"action": "beat.superseded", "deployment_id": deployment_id,
                       "active_deployment_id": state.active_deployment_id,
                       "generation": state.generation},
            )
            # Beat's service loop treats SystemExit as a clean shutdown: it syncs the
            # schedule file and returns, and the process exits 0.
            raise SystemExit(0)
