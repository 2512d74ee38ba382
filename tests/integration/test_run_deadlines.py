"""An attempt ends well inside its lease, whatever the target or the broker does.

A delivery that outlives its lease is taken back by the sweep and delivered again, so
every phase is bounded by a wall clock: the whole webhook request (headers and body
trickled a byte at a time included) by the trigger's ``timeout_s``, a user task's
publish by ``tasks.run.PUBLISH_TIMEOUT_S``. The slow peers are real servers on loopback.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import socket
import threading
import time
from collections.abc import Iterator

import pytest
from celery import Celery

from app.config import Settings
from app.delivery.send import Verdict, send_webhook
from app.enums import InvocationStatus
from app.errors import TargetUnavailable
from app.queries.leases import LEASE_GRACE_S
from tasks.celery_app import configure
from tasks.run import publish_user_task
from tests.support.receiver import Receiver, Reply
from tests.support.runs import add_invocation, add_trigger, attempts, run
from tests.support.worker import DEFAULT_DEPLOYMENT_ID

pytestmark = pytest.mark.slow


@contextlib.contextmanager
def mute_server() -> Iterator[int]:
    """Yield the port of a loopback server that accepts connections and never answers."""
    server = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                accepted.append(server.accept()[0])

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1]
    finally:
        stop.set()
        thread.join(5)
        for conn in accepted:
            conn.close()
        server.close()


def closed_port() -> int:
    with socket.create_server(("127.0.0.1", 0)) as probe:
        return probe.getsockname()[1]


def app_on(settings: Settings, port: int) -> Celery:
    on_port = dataclasses.replace(settings, redis_url=f"redis://127.0.0.1:{port}/0")
    return configure(Celery("test-publisher", set_as_current=False), on_port)


def publish_within(app: Celery, limit_s: float) -> tuple[BaseException | None, float]:
    """Publish a user task in a thread; return what it raised and how long it took."""
    raised: list[BaseException | None] = []

    def publish() -> None:
        try:
            publish_user_task(app, "tests.user_task", [{"x": 1}], {}, "celery", {})
            raised.append(None)
        except BaseException as exc:  # handed to the test to judge
            raised.append(exc)

    started = time.monotonic()
    thread = threading.Thread(target=publish, daemon=True)
    thread.start()
    thread.join(limit_s)
    assert not thread.is_alive(), f"the publish still hangs after {limit_s} s"
    return raised[0], time.monotonic() - started


NOW = dt.datetime(2026, 3, 7, 5, 0, tzinfo=dt.UTC)
# How far past timeout_s a cut-short request may end: the watchdog's wake-up, closing.
SLACK_S = 1.0


def send(receiver: Receiver, timeout_s: float):
    return send_webhook(method="POST", url=receiver.url(), headers={}, body="{}",
                        timeout_s=timeout_s, allow_private=True, now=NOW)


# --- the webhook request --------------------------------------------------------------


def test_a_target_trickling_its_status_line_and_headers_is_cut_off_at_timeout_s(
    receiver: Receiver,
) -> None:
    # One byte every 0.5 s never trips a 1 s read timeout: before the deadline this
    # request took a minute, past timeout_s + LEASE_GRACE_S, and the sweep ran it again.
    receiver.script(Reply(200, trickle_s=0.5))
    started = time.monotonic()

    with pytest.raises(TargetUnavailable) as caught:
        send(receiver, timeout_s=1.0)

    assert time.monotonic() - started < 1.0 + SLACK_S
    assert caught.value.message == "timed out after 1 s"


def test_a_target_trickling_its_body_keeps_its_status_and_what_arrived_by_timeout_s(
    receiver: Receiver,
) -> None:
    receiver.script(Reply(200, body="abcdefghij" * 10, trickle_s=0.3, trickle="body"))
    started = time.monotonic()

    result = send(receiver, timeout_s=1.0)

    assert time.monotonic() - started < 1.0 + SLACK_S
    assert (result.verdict, result.response_status) == (Verdict.SUCCEEDED, 200)
    assert result.response_excerpt
    assert ("abcdefghij" * 10).startswith(result.response_excerpt)


def test_a_prompt_target_is_not_cut_short_by_the_watchdog(receiver: Receiver) -> None:
    receiver.script(Reply(200, body="ok"), Reply(200, body="ok"))
    assert send(receiver, timeout_s=0.5).response_excerpt == "ok"
    # The first request's watchdog is gone: nothing fires into the second.
    time.sleep(0.6)
    assert send(receiver, timeout_s=5.0).response_excerpt == "ok"


def test_through_the_worker_a_trickling_target_fails_the_attempt_at_timeout_s(
    db, celery_worker, celery_client, receiver: Receiver
) -> None:
    invocation_id = add_invocation(db, add_trigger(db, receiver, timeout_s=1, max_attempts=1))
    receiver.script(Reply(200, trickle_s=0.5))
    started = time.monotonic()

    invocation = run(celery_client, db, invocation_id)

    assert time.monotonic() - started < 1.0 + 5.0
    error = "timed out after 1 s"
    assert (invocation.status, invocation.last_error) == (
        InvocationStatus.FAILED, f"gave up after 1 attempts: {error}"
    )
    assert attempts(db, invocation_id) == [
        (1, "error", None, error, DEFAULT_DEPLOYMENT_ID, True)
    ]
    assert invocation.finished_at - invocation.started_at < dt.timedelta(seconds=1 + SLACK_S)


# --- the broker -----------------------------------------------------------------------


def test_a_hung_broker_fails_the_publish_well_inside_the_lease_s_grace(
    settings: Settings,
) -> None:
    with mute_server() as port:
        error, took_s = publish_within(app_on(settings, port), LEASE_GRACE_S / 2)

    assert isinstance(error, TargetUnavailable)
    assert took_s < LEASE_GRACE_S / 2


def test_an_unreachable_broker_is_named_by_the_error_s_type_only(settings: Settings) -> None:
    # The exception's text is "Error 111 connecting to 127.0.0.1:PORT": the operator's
    # broker address, which must not reach the tenant's last_error.
    port = closed_port()
    error, _ = publish_within(app_on(settings, port), LEASE_GRACE_S / 2)

    assert isinstance(error, TargetUnavailable)
    assert error.message == "broker unavailable: OperationalError"
    assert str(port) not in error.message and "127.0.0.1" not in error.message
