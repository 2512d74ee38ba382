"""Log lines: JSON lines carry the action, the ids and the deployment on every line."""

from __future__ import annotations

import json
import logging

import pytest

from app.config import Settings
from app.logs import CELERY_TASK_LOGGERS, JsonFormatter, TextFormatter, configure_logging


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


def test_a_json_line_names_an_exception_by_type_only() -> None:
    try:
        raise ValueError("password=hunter2 in a driver message")
    except ValueError:
        import sys

        record = logging.getLogger("x").makeRecord("x", logging.ERROR, __file__, 1, "failed",
                                                   (), sys.exc_info())
    text = JsonFormatter(None).format(record)
    assert json.loads(text)["error"] == "ValueError"
    assert "hunter2" not in text


def test_a_text_line_appends_the_extras() -> None:
    text = TextFormatter().format(_record(action="dispatch.tick", claimed=3))
    assert text.endswith("cronbeat.test: run: attempt claimed [action=dispatch.tick claimed=3]")


def test_a_text_line_names_an_exception_by_type_only_without_its_traceback() -> None:
    import sys

    try:
        raise ConnectionError("GET https://hooks.example/x?token=s3cr3t failed")
    except ConnectionError:
        record = logging.getLogger("app.firing.runner").makeRecord(
            "app.firing.runner", logging.ERROR, __file__, 1, "delivery failed", (), sys.exc_info(),
            extra={"action": "run.delivery_error"})
    text = TextFormatter().format(record)
    assert text.endswith(
        "app.firing.runner: delivery failed [action=run.delivery_error error=ConnectionError]")
    assert "s3cr3t" not in text and "Traceback" not in text and "\n" not in text
    # The record is left as it was for any other handler.
    assert record.exc_info is not None and record.exc_info[0] is ConnectionError


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
