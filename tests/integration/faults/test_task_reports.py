"""The worker's reader of task outcome reports (tasks.reports) on a redis-server of its
own: it reads on after Redis restarts."""

from __future__ import annotations

import json
import time

import redis

from tasks.reports import Reports
from tests.support.fleet import PrivateRedis


def test_reports_are_read_again_after_redis_restarts(redis_server: PrivateRedis) -> None:
    reports = Reports(redis_server.url)
    client = redis.Redis.from_url(redis_server.url)
    try:
        token = reports.expect("inv-1", 1)
        redis_server.kill()
        time.sleep(1.0)  # down for a second, as in the broker-fault test
        redis_server.start()
        client.rpush(reports.key, json.dumps({
            "invocation": "inv-1", "attempt": 1, "token": token, "event": "finished",
            "ok": True, "duration_s": 0.25}))
        report = reports.wait("inv-1", 1, timeout_s=20)
        assert report is not None and (report.ok, report.duration_s) == (True, 0.25)
    finally:
        reports.close()
        client.close()
