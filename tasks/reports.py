"""Outcome reports of users' tasks (cronbeat.celery in their worker), for the worker
that sent each task.

A task target with ``outcome`` tracking on is sent with a header naming this worker
process's report key (``cronbeat:reports:<random id>``) and a token: an HMAC of the
attempt (invocation id and attempt number) under a secret that only this process knows.
The delivery thread that sent the task waits here, up to the trigger's ``timeout_s``, for
the task's ``finished`` report, as a webhook's waits for its answer; the run then ends
with the task's real outcome (app.targets.task). A report whose token does not match
its attempt (another tenant's worker guessing ids, a copy of an old report) is refused
and changes nothing. One thread per worker process reads the key (``BLPOP``); it goes
on through a Redis restart, and a report lost with Redis leaves its attempt to time out
and be retried.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import logging
import secrets
import threading
from typing import Any

import redis

from app.delivery.send import TaskReport

log = logging.getLogger(__name__)

#: How long one BLPOP waits before the thread looks again (seconds).
POLL_S = 1
#: The longest pause between tries while Redis is unreachable.
RECONNECT_MAX_S = 5.0


@dataclasses.dataclass
class _Waiter:
    token: str
    done: threading.Event = dataclasses.field(default_factory=threading.Event)
    report: TaskReport | None = None


class Reports:
    """This process's report key and its reader; :meth:`expect` before the task is sent,
    :meth:`wait` after."""

    def __init__(self, redis_url: str, *, read: bool = True) -> None:
        """``read``: start the thread that reads the key (off: :meth:`take` only)."""
        self._redis_url = redis_url
        self._read_key = read
        self._secret = secrets.token_bytes(32)
        self.key = f"cronbeat:reports:{secrets.token_hex(8)}"
        self._lock = threading.Lock()
        self._waiters: dict[tuple[str, int], _Waiter] = {}
        self._thread: threading.Thread | None = None
        self._closed = threading.Event()
        #: Reports refused (a token that does not match its attempt), for the tests.
        self.refused = 0

    def token(self, invocation_id: str, attempt: int) -> str:
        return hmac.new(self._secret, f"{invocation_id}:{attempt}".encode(),
                        hashlib.sha256).hexdigest()

    def expect(self, invocation_id: str, attempt: int) -> str:
        """Wait for this attempt's report from now on; returns its token."""
        self._start()
        token = self.token(invocation_id, attempt)
        with self._lock:
            self._waiters[(invocation_id, attempt)] = _Waiter(token)
        return token

    def wait(self, invocation_id: str, attempt: int, timeout_s: float) -> TaskReport | None:
        """The attempt's report, or None when none came within ``timeout_s``."""
        with self._lock:
            waiter = self._waiters.get((invocation_id, attempt))
        try:
            if waiter is not None:
                waiter.done.wait(timeout_s)
                return waiter.report
            return None
        finally:
            with self._lock:
                self._waiters.pop((invocation_id, attempt), None)

    def forget(self, invocation_id: str, attempt: int) -> None:
        """Stop expecting the attempt's report (its task was never sent)."""
        with self._lock:
            self._waiters.pop((invocation_id, attempt), None)

    def take(self, raw: bytes | str) -> None:
        """Hand one report to its waiter, if its token is the attempt's."""
        try:
            body = json.loads(raw)
            key = (str(body["invocation"]), int(body["attempt"]))
            token = str(body["token"])
            event = body["event"]
        except (ValueError, KeyError, TypeError):
            log.warning("task report: unreadable, dropped", extra={"action": "report.bad"})
            return
        if not hmac.compare_digest(token, self.token(*key)):
            self.refused += 1
            log.warning("task report: refused (its token is not its attempt's)",
                        extra={"action": "report.refused", "invocation_id": key[0]})
            return
        if event != "finished":
            return
        with self._lock:
            waiter = self._waiters.get(key)
        if waiter is None:
            return  # its delivery gave up waiting (timed out): the attempt is retried
        error = body.get("error")
        duration = body.get("duration_s")
        waiter.report = TaskReport(
            ok=body.get("ok") is True, error=str(error)[:1000] if error else None,
            duration_s=float(duration) if isinstance(duration, int | float) else None)
        waiter.done.set()

    def close(self) -> None:
        """Stop reading (within a BLPOP's wait)."""
        self._closed.set()

    def _start(self) -> None:
        with self._lock:
            if self._thread is None and self._read_key:
                self._thread = threading.Thread(target=self._read, name="task-reports",
                                                daemon=True)
                self._thread.start()

    def _read(self) -> None:
        wait_s = 0.5
        while not self._closed.is_set():
            client = redis.Redis.from_url(self._redis_url)
            try:
                while not self._closed.is_set():
                    found = client.blpop([self.key], timeout=POLL_S)
                    wait_s = 0.5
                    if found is not None:
                        self.take(found[1])
            except Exception as exc:  # Redis is gone: read again once it is back
                log.warning("task reports: Redis unreachable (%s); reading again in %.1f s",
                            type(exc).__name__, wait_s, extra={"action": "report.broker_lost"})
            finally:
                client.close()
            if self._closed.wait(wait_s):
                return
            wait_s = min(wait_s * 2, RECONNECT_MAX_S)


_reports: Reports | None = None
_reports_lock = threading.Lock()


def reports(redis_url: str) -> Reports:
    """This process's :class:`Reports` (made on first use)."""
    global _reports
    with _reports_lock:
        if _reports is None:
            _reports = Reports(redis_url)
        return _reports


def report_header(reports_: Reports, invocation_id: str, attempt: int) -> dict[str, Any]:
    """The header fields that ask the task for its reports (after :meth:`Reports.expect`)."""
    return {"report_to": reports_.key, "token": reports_.token(invocation_id, attempt)}
