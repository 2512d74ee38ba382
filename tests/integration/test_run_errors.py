"""What a delivery's failures leave in the history: in words, logged, never a delivered
2xx recorded failed. The run core (app.firing.runner) against real PostgreSQL and a real
loopback receiver."""

from __future__ import annotations

import logging
import socket

import pytest

from app.config import Settings
from app.enums import InvocationStatus
from app.firing.runner import RunOutcome, run_invocation
from tests.support.receiver import Receiver, Reply
from tests.support.runs import add_invocation, add_trigger, attempts, load, no_task

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("charset", ["bogus", "utf8mb4", "binary", "none", ""])
def test_a_2xx_with_a_charset_python_does_not_know_is_recorded_succeeded(
    db, settings: Settings, receiver: Receiver, charset: str
) -> None:
    receiver.script(Reply(status=200, body="d\u00e9livr\u00e9 ok",
                          headers={"Content-Type": f"text/plain; charset={charset}"}))
    invocation_id = add_invocation(db, add_trigger(db, receiver))

    outcome = run_invocation(db, settings, invocation_id, send_task=no_task)

    assert outcome == RunOutcome(status=InvocationStatus.SUCCEEDED, attempt=1)
    invocation = load(db, invocation_id)
    assert (invocation.status, invocation.response_status, invocation.last_error) == (
        InvocationStatus.SUCCEEDED, 200, None)
    # Read as UTF-8 when the charset is unknown.
    assert invocation.response_excerpt == "d\u00e9livr\u00e9 ok"
    assert receiver.count == 1


def test_a_nul_byte_in_a_header_is_a_bad_answer_not_a_crash(
    db, settings: Settings, receiver: Receiver
) -> None:
    # Not HTTP (RFC 9110 5.5): the status cannot be trusted, so the attempt is retried.
    receiver.script(Reply(status=200, body="ok",
                          headers={"Content-Type": "text/plain; charset=utf-8\x00"}))
    invocation_id = add_invocation(db, add_trigger(db, receiver, max_attempts=1))

    outcome = run_invocation(db, settings, invocation_id, send_task=no_task)

    assert outcome == RunOutcome(status=InvocationStatus.FAILED, attempt=1)
    assert load(db, invocation_id).last_error == (
        "gave up after 1 attempts: bad answer: the answer is not HTTP")


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_a_refused_connection_s_error_is_in_words_without_internal_names(
    db, settings: Settings
) -> None:
    url = f"http://127.0.0.1:{_closed_port()}/hook"
    invocation_id = add_invocation(db, add_trigger(db, webhook_url=url, max_attempts=1))

    outcome = run_invocation(db, settings, invocation_id, send_task=no_task)

    assert outcome == RunOutcome(status=InvocationStatus.FAILED, attempt=1)
    invocation = load(db, invocation_id)
    assert invocation.last_error == (
        "gave up after 1 attempts: connection failed: Connection refused")
    assert [a[:4] for a in attempts(db, invocation_id)] == [
        (1, "error", None, "connection failed: Connection refused")]


def test_a_failed_attempt_is_logged_with_its_reason(
    db, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    url = f"http://127.0.0.1:{_closed_port()}/hook?token=s3cret"
    invocation_id = add_invocation(db, add_trigger(db, webhook_url=url, max_attempts=1))
    with caplog.at_level(logging.INFO, logger="app.firing.runner"):
        run_invocation(db, settings, invocation_id, send_task=no_task)
    finished = [r for r in caplog.records if getattr(r, "action", "") == "run.finished"]
    assert [(r.levelname, r.getMessage()) for r in finished] == [
        ("WARNING", "run: attempt failed: connection failed: Connection refused")]
    assert "s3cret" not in caplog.text
