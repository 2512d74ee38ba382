"""A run's two records: an attempt started by a claim, and what a call of the run path did.

Shared by the single-run path (:mod:`app.firing.runner`), the batch path
(:mod:`app.firing.batch`) and the outcome rules (:mod:`app.firing.outcome`).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import math
import time
import uuid
from typing import Any

from app.alerting import observe
from app.config import Settings
from app.enums import InvocationStatus
from app.queries.attempt_sql import Claimed, TargetRow
from app.queries.leases import LEASE_GRACE_S

# The run path's one logger (app.firing.outcome says why).
log = logging.getLogger("app.firing.runner")


@dataclasses.dataclass(frozen=True)
class RunOutcome:
    """What one call did: the status it left the invocation in, and whether to retry."""

    #: None when the call changed nothing (duplicate, early, or finished elsewhere).
    status: InvocationStatus | None
    attempt: int | None = None
    #: Publish run_trigger again after this many seconds (the row is pending until then).
    retry_in_s: float | None = None
    #: Alerts the outcome raised (app.alerting), to publish after the call.
    alert_ids: tuple[uuid.UUID, ...] = ()
    #: How the attempt's delivery failed, when it did (its attempt row's error): for the
    #: task event, not part of what the call did.
    error: str | None = dataclasses.field(default=None, compare=False)


@dataclasses.dataclass(frozen=True)
class StartedRun:
    """A claimed attempt and everything its delivery needs, read in the start transaction."""

    invocation_id: uuid.UUID
    attempt: int
    started_at: dt.datetime
    scheduled_for: dt.datetime
    trigger_id: uuid.UUID
    target: TargetRow
    log_ids: dict[str, Any]
    #: The occurrence's time the body carries (a replay's original's).
    occurrence_at: dt.datetime
    tenant_id: str
    project_id: str
    manual: bool
    #: The project has an enabled alert channel: the outcome is observed (app.alerting).
    watched: bool
    #: When the attempt's lease ends, on this process's monotonic clock (an estimate a
    #: little late: taken after the claim committed); recording the outcome is tried
    #: until then.
    lease_ends_at: float = math.inf


def log_ids(
    tenant_id: str, project_id: str, trigger_id: uuid.UUID | None, invocation_id: uuid.UUID,
    scheduled_for: dt.datetime,
) -> dict[str, Any]:
    return {
        "tenant_id": tenant_id,
        "project_id": project_id,
        "trigger_id": str(trigger_id) if trigger_id else None,
        "invocation_id": str(invocation_id),
        "scheduled_for": observe.iso_utc(scheduled_for),
    }


def started_run(claimed: Claimed, settings: Settings) -> StartedRun:
    ids = log_ids(claimed.tenant_id, claimed.project_id, claimed.trigger_id,
                   claimed.invocation_id, claimed.scheduled_for)
    ids["attempt"] = claimed.attempt
    log.debug("run: attempt claimed", extra={"action": "run.claimed",
                                             "deployment_id": settings.deployment_id, **ids})
    return StartedRun(
        invocation_id=claimed.invocation_id,
        attempt=claimed.attempt,
        started_at=claimed.started_at,
        scheduled_for=claimed.scheduled_for,
        occurrence_at=claimed.occurrence_at or claimed.scheduled_for,
        tenant_id=claimed.tenant_id,
        project_id=claimed.project_id,
        manual=claimed.manual,
        watched=claimed.watched,
        trigger_id=claimed.trigger_id,
        target=claimed.target,
        log_ids=ids,
        lease_ends_at=time.monotonic() + claimed.target.timeout_s + LEASE_GRACE_S,
    )
