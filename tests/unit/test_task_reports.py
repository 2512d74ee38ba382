"""Task outcome reports (tasks.reports): only the attempt's own token is taken."""

from __future__ import annotations

import json

from app.delivery.send import TaskReport
from tasks.reports import Reports


def _report(**fields: object) -> str:
    return json.dumps({"invocation": "inv-1", "attempt": 2, "event": "finished",
                       "ok": False, "error": "ValueError: boom", "duration_s": 1.5,
                       **fields})


def test_a_report_with_its_attempt_s_token_reaches_its_waiter() -> None:
    reports = Reports("redis://127.0.0.1:1/0", read=False)  # reports handed to take()
    token = reports.expect("inv-1", 2)
    reports.take(_report(token=token))
    assert reports.wait("inv-1", 2, timeout_s=0) == TaskReport(
        ok=False, error="ValueError: boom", duration_s=1.5)


def test_a_report_with_another_attempt_s_token_or_garbage_is_refused() -> None:
    reports = Reports("redis://127.0.0.1:1/0", read=False)
    reports.expect("inv-1", 2)
    reports.take(_report(token=reports.token("inv-1", 1)))  # attempt 1's token
    reports.take(_report(token=reports.token("inv-9", 2)))  # another run's
    other_worker = Reports("redis://x", read=False)
    reports.take(_report(token=other_worker.token("inv-1", 2)))  # another worker's
    reports.take("not json")
    reports.take(json.dumps({"invocation": "inv-1"}))
    assert reports.refused == 3
    assert reports.wait("inv-1", 2, timeout_s=0) is None
