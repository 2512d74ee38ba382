"""Log lines: JSON lines carry the action, the ids and the deployment on every line."""

from __future__ import annotations

import json
import logging
import sys

import pytest

from app.config import Settings
from app.logs import (
    CELERY_TASK_LOGGERS,
    JsonFormatter,
    Redactor,
    TextFormatter,
    configure_logging,
)


def _record(**extra: object) -> logging.LogRecord:
    logger = logging.getLogger("cronbeat.test")
    return logger.makeRecord("cronbeat.test", logging.INFO, __file__, 1, "run: attempt %s",
                             ("claimed",), None, extra=extra)


def test_a_json_line_carries_action_ids_and_the_process_deployment() -> None:
    record = _record(action="run.claimed", tenant_id="t1", project_id="p1",
                     trigger_id="tr", invocation_id="inv", scheduled_for="2026-06-01T12:00:00Z",
                     attempt=2)
    line = json.loads(JsonFormatter("v2").format(record))
    assert {k: line[k] for k in ("level", "logger", "message", "action", "deployment_id",
                                 "tenant_id", "project_id", "trigger_id", "invocation_id",
                                 "scheduled_for", "attempt")} == {
        "level": "info", "logger": "cronbeat.test", "message": "run: attempt claimed",
        "action": "run.claimed", "deployment_id": "v2", "tenant_id": "t1",
        "project_id": "p1", "trigger_id": "tr", "invocation_id": "inv",
        "scheduled_for": "2026-06-01T12:00:00Z", "attempt": 2,
    }


def _failed(exc: BaseException, logger: str = "x", **extra: object) -> logging.LogRecord:
    try:
        raise exc
    except BaseException:
        return logging.getLogger(logger).makeRecord(logger, logging.ERROR, __file__, 1,
                                                    "failed", (), sys.exc_info(), extra=extra)


def test_a_json_line_keeps_the_exception_s_type_message_and_traceback_redacted() -> None:
    record = _failed(ValueError("connect failed: password=hunter2 user=app"))
    line = json.loads(JsonFormatter(None).format(record))
    assert line["error"] == "ValueError"
    assert line["error_message"] == "connect failed: password=*** user=app"
    assert line["traceback"].startswith("Traceback (most recent call last):")
    assert line["traceback"].endswith("ValueError: connect failed: password=*** user=app")
    assert "_failed" in line["traceback"]  # the frame that raised
    assert "hunter2" not in json.dumps(line)


def test_a_text_line_appends_the_extras() -> None:
    text = TextFormatter().format(_record(action="dispatch.tick", claimed=3))
    assert text.endswith("cronbeat.test: run: attempt claimed [action=dispatch.tick claimed=3]")


def test_a_text_line_names_the_exception_and_shows_its_traceback_redacted() -> None:
    record = _failed(ConnectionError("GET https://hooks.example/x?token=s3cr3t failed"),
                     "app.firing.runner", action="run.delivery_error")
    first, *rest = TextFormatter().format(record).split("\n")
    assert first.endswith(
        "app.firing.runner: failed [action=run.delivery_error error=ConnectionError]")
    assert rest[0] == "Traceback (most recent call last):"
    assert rest[-1] == "ConnectionError: GET https://hooks.example/x?token=*** failed"
    assert any("_failed" in line for line in rest)
    # The record is left as it was for any other handler.
    assert record.exc_info is not None and record.exc_info[0] is ConnectionError


@pytest.mark.parametrize(("text", "expected"), [
    ("key cb_AbCdEfGhIjKlMnOpQrStUvWxYz0123456789 refused",
     "key cb_*** refused"),
    ("secret whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw used",
     "secret whsec_*** used"),
    ("Authorization: Bearer abcdefghijklmnop", "Authorization: Bearer ***"),
    ("header bearer abcdefghijklmnop", "header bearer ***"),
    ("postgresql://app:pa55word@db:5432/cronbeat", "postgresql://app:***@db:5432/cronbeat"),
    ("redis://:hunter2@cache:6379/0", "redis://:***@cache:6379/0"),
    ("{'api_key': 'k-123456789'}", "{'api_key': '***'}"),
    ("nothing to hide here: 42 runs", "nothing to hide here: 42 runs"),
])
def test_a_line_loses_what_is_shaped_like_a_secret(text: str, expected: str) -> None:
    assert Redactor()(text) == expected


def test_the_process_s_own_secrets_are_replaced_wherever_they_appear() -> None:
    settings = Settings.from_env({
        "DATABASE_URL": "postgresql://app:longdbpassword1@db/cronbeat",
        "REDIS_URL": "redis://h/0",
        "CRONBEAT_DEPLOY_TOKEN": "deploy-token-0123456789",
        "CRONBEAT_ADMIN_TOKEN": "admin\"token\\0123456789"})
    redact = Redactor.for_settings(settings)
    record = _failed(RuntimeError("sent deploy-token-0123456789 and longdbpassword1"))
    text = TextFormatter(redact).format(record)
    assert "deploy-token-0123456789" not in text and "longdbpassword1" not in text
    assert "sent *** and ***" in text
    line = JsonFormatter(None, redact).format(
        _failed(RuntimeError('saw admin"token\\0123456789')))
    assert "0123456789" not in line and json.loads(line)["error_message"] == "saw ***"


def test_a_text_line_leaves_out_celery_s_task_data_dict() -> None:
    record = logging.getLogger("celery.app.trace").makeRecord(
        "celery.app.trace", logging.INFO, __file__, 1, "Task %s succeeded", ("t",), None,
        extra={"data": {"id": "x" * 700, "args": "()"}})
    assert TextFormatter().format(record).endswith("celery.app.trace: Task t succeeded")
    ours = TextFormatter().format(_record(data="kept"))
    assert ours.endswith("[data=kept]")


@pytest.mark.parametrize(("level", "expected"), [("INFO", logging.WARNING),
                                                 ("DEBUG", logging.DEBUG)])
def test_celery_s_per_task_lines_are_debug_lines(level: str, expected: int) -> None:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        configure_logging(Settings.from_env({
            "DATABASE_URL": "postgresql://u@h/d", "REDIS_URL": "redis://h/0",
            "CRONBEAT_LOG_LEVEL": level.lower()}))
        assert {logging.getLogger(name).getEffectiveLevel()
                for name in CELERY_TASK_LOGGERS} == {expected}
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
        for name in CELERY_TASK_LOGGERS:
            logging.getLogger(name).setLevel(logging.NOTSET)
