"""Delivering one alert: claim it, send it signed to its channel, record the outcome.

Like a run (app.firing.runner), an attempt is a claim (one statement), a delivery
outside any transaction, and a finish (one statement), and is safe to call any number
of times for one alert: the claim moves ``next_attempt_at`` past the attempt's lease, so
a second message finds nothing to do, and a lost worker's attempt is due again once
the lease ran out. A failed attempt waits RETRY_DELAYS_S before the next one; after
MAX_ATTEMPTS the alert is ``failed``. The alert's ``webhook-id`` is its id, the same
on every attempt, so a receiver can deduplicate.

An alert is delivered by the same client and under the same SSRF guard as every
webhook (app.delivery.send), with the channel's own signing secret.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import uuid
from typing import Any

from sqlalchemy import Float, func, literal, select, update
from sqlalchemy.orm import Session, sessionmaker

from app.delivery.send import (
    DeliveryResult,
    SendWebhook,
    Verdict,
    build_headers,
    encode_body,
    send_webhook,
)
from app.errors import PermanentError, TransientError
from app.models import Alert, AlertChannel

log = logging.getLogger(__name__)

#: One attempt's wall-clock deadline, the name lookup included.
ATTEMPT_TIMEOUT_S = 10.0
#: A claimed attempt holds its alert this long; then it is due again.
LEASE_S = 60.0
#: The wait after each failed attempt: the last one is the sixth.
RETRY_DELAYS_S = (5.0, 30.0, 120.0, 600.0, 1800.0)
MAX_ATTEMPTS = len(RETRY_DELAYS_S) + 1

@dataclasses.dataclass(frozen=True)
class AlertOutcome:
    """What one call did: the alert's status after it, and when to try again."""

    #: None when the call changed nothing (a duplicate or early message, or finished).
    status: str | None
    attempt: int | None = None
    retry_in_s: float | None = None
    error: str | None = None
    response_status: int | None = None


@dataclasses.dataclass(frozen=True)
class _Claimed:
    attempt: int
    body: dict[str, Any]
    url: str | None
    signing_secret: str | None
    channel_enabled: bool | None
    started_at: dt.datetime


def _seconds(value: Any) -> Any:
    return func.make_interval(0, 0, 0, 0, 0, 0, value)


def _channel(column: Any) -> Any:
    return select(column).where(AlertChannel.id == Alert.channel_id).scalar_subquery()


def claim(session: Session, alert_id: uuid.UUID) -> _Claimed | None:
    """Start attempt n+1 of a due, pending alert; None if it is not due or not pending."""
    row = session.execute(
        update(Alert)
        .where(Alert.id == alert_id, Alert.status == "pending",
               Alert.next_attempt_at <= func.now())
        .values(attempts=Alert.attempts + 1,
                next_attempt_at=func.now() + _seconds(literal(LEASE_S, Float)))
        .returning(Alert.attempts, Alert.body, _channel(AlertChannel.url),
                   _channel(AlertChannel.signing_secret), _channel(AlertChannel.enabled),
                   func.now())
        .execution_options(synchronize_session=False)
    ).first()
    if row is None:
        return None
    return _Claimed(attempt=row[0], body=row[1], url=row[2], signing_secret=row[3],
                    channel_enabled=row[4], started_at=row[5])


def finish(
    session: Session, alert_id: uuid.UUID, attempt: int, *, status: str,
    retry_in_s: float | None, published: bool, error: str | None,
    response_status: int | None,
) -> bool:
    """Record how attempt ``attempt`` ended; False if another attempt took over since."""
    values: dict[str, Any] = {
        "status": status, "last_error": error, "response_status": response_status,
    }
    if retry_in_s is None:
        values["finished_at"] = func.now()
    else:
        next_at = func.now() + _seconds(literal(retry_in_s, Float))
        values["next_attempt_at"] = next_at
        # A countdown message is live from then on; one left to the watchdog is not.
        values["published_at"] = next_at if published else None
    done = session.execute(
        update(Alert)
        .where(Alert.id == alert_id, Alert.status == "pending", Alert.attempts == attempt)
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    return done.rowcount == 1


def _send(claimed: _Claimed, alert_id: uuid.UUID, allow_private: bool,
          send_webhook_: SendWebhook) -> DeliveryResult:
    if claimed.url is None:
        raise PermanentError("the alert's channel was deleted")
    if not claimed.channel_enabled:
        raise PermanentError("the alert's channel is disabled")
    text = encode_body(claimed.body)
    headers = build_headers(None, invocation_id=str(alert_id), body=text,
                            signing_secret=claimed.signing_secret, now=claimed.started_at)
    return send_webhook_(method="POST", url=claimed.url, headers=headers, body=text,
                         timeout_s=ATTEMPT_TIMEOUT_S, allow_private=allow_private,
                         now=claimed.started_at)


def attempt_delivery(claimed: _Claimed, alert_id: uuid.UUID, allow_private: bool,
                     send_webhook_: SendWebhook = send_webhook) -> DeliveryResult:
    """Send a claimed alert; every failure becomes a result, never an exception."""
    try:
        return _send(claimed, alert_id, allow_private, send_webhook_)
    except TransientError as exc:
        return DeliveryResult(verdict=Verdict.TRANSIENT, error=exc.message)
    except PermanentError as exc:
        return DeliveryResult(verdict=Verdict.PERMANENT, error=exc.message)
    except Exception as exc:
        log.error("alert: delivery raised an unexpected error", exc_info=True,
                  extra={"action": "alert.delivery_crashed", "alert_id": str(alert_id)})
        return DeliveryResult(
            verdict=Verdict.PERMANENT,
            error=f"delivery failed with an internal error ({type(exc).__name__})")


def deliver_test_alert(sessions: sessionmaker[Session], alert_id: uuid.UUID, *,
                       allow_private: bool) -> None:
    """Deliver a test alert just recorded (and committed) once, now: never retried.

    The test endpoint's and the console's: its outcome is in the alert's row.
    """
    with sessions.begin() as session:
        claimed = claim(session, alert_id)
    assert claimed is not None, "a test alert is due when recorded"
    result = attempt_delivery(claimed, alert_id, allow_private)
    with sessions.begin() as session:
        finish(session, alert_id, claimed.attempt,
               status="delivered" if result.verdict is Verdict.SUCCEEDED else "failed",
               retry_in_s=None, published=False, error=result.error,
               response_status=result.response_status)


def deliver_alert(
    sessions: sessionmaker[Session], alert_id: uuid.UUID, *, allow_private: bool,
    max_countdown_s: float, send_webhook_: SendWebhook = send_webhook,
) -> AlertOutcome:
    """Run one attempt of alert ``alert_id`` if it is due; safe to call again at any time.

    Returns:
        What the call did; with ``retry_in_s`` set, the caller publishes the alert's
        message again with that countdown (a longer wait than ``max_countdown_s`` is
        left to the watchdog, which publishes it when due).
    """
    with sessions.begin() as session:
        claimed = claim(session, alert_id)
    if claimed is None:
        return AlertOutcome(status=None)
    result = attempt_delivery(claimed, alert_id, allow_private, send_webhook_)
    retry_in_s = None
    status = "delivered"
    if result.verdict is Verdict.PERMANENT:
        status = "failed"
    elif result.verdict is Verdict.TRANSIENT:
        if claimed.attempt < MAX_ATTEMPTS:
            status = "pending"
            retry_in_s = RETRY_DELAYS_S[claimed.attempt - 1]
        else:
            status = "failed"
    published = retry_in_s is not None and retry_in_s <= max_countdown_s
    error = result.error
    if status == "failed" and result.verdict is Verdict.TRANSIENT:
        error = f"gave up after {claimed.attempt} attempts: {error}"
    with sessions.begin() as session:
        held = finish(session, alert_id, claimed.attempt, status=status,
                      retry_in_s=retry_in_s, published=published, error=error,
                      response_status=result.response_status)
    extra = {"action": "alert.attempt", "alert_id": str(alert_id),
             "attempt": claimed.attempt, "status": status,
             "response_status": result.response_status, "retry_in_s": retry_in_s}
    if result.error:
        log.warning("alert: attempt failed: %s", result.error, extra=extra)
    else:
        log.info("alert: delivered", extra=extra)
    if not held:
        return AlertOutcome(status=None, attempt=claimed.attempt)
    return AlertOutcome(status=status, attempt=claimed.attempt,
                        retry_in_s=retry_in_s if published else None, error=error,
                        response_status=result.response_status)
