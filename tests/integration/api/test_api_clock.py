"""The API's clock is the database's, read once per request, as the dispatcher's is."""

from __future__ import annotations

import datetime as dt
import re
import sys
import types
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from flask import Flask
from sqlalchemy import event, func, select
from sqlalchemy.orm import Session, sessionmaker

from app.config import Settings
from tasks.celery_app import RUN_QUEUE
from tests.integration.api.conftest import Caller

SKEW = dt.timedelta(hours=6)


class _BehindDatetime(dt.datetime):
    @classmethod
    def now(cls, tz: dt.tzinfo | None = None) -> Any:
        return dt.datetime.now(tz) - SKEW


@pytest.fixture
def host_clock_behind(monkeypatch: pytest.MonkeyPatch) -> None:
    """The web host's clock six hours behind the database's, in every API module."""
    behind = types.SimpleNamespace(
        **{name: getattr(dt, name) for name in dir(dt) if not name.startswith("__")})
    behind.datetime = _BehindDatetime
    for name, module in list(sys.modules.items()):
        if (name == "api" or name.startswith("api.")) and getattr(module, "dt", None) is dt:
            monkeypatch.setattr(module, "dt", behind)


@pytest.fixture
def clock_reads(app: Flask) -> Iterator[list[str]]:
    """The statements of the app's engine that read the database's clock."""
    seen: list[str] = []
    engine = app.extensions["cronbeat"].engine

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if re.search(r"\bnow\(\)", statement):
            seen.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    yield seen
    event.remove(engine, "before_cursor_execute", record)


@pytest.fixture(autouse=True)
def _no_messages_left(settings: Settings) -> Iterator[None]:
    # The manual runs here publish to the real broker; no later test should find them.
    yield
    client = redis.Redis.from_url(settings.redis_url)
    client.delete(RUN_QUEUE)
    client.close()


def _db_now(db: sessionmaker[Session]) -> dt.datetime:
    with db.begin() as session:
        return session.execute(select(func.now())).scalar_one()


def _at(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text)


def test_times_the_api_writes_come_from_the_databases_clock(
    api: Caller, db: sessionmaker[Session], host_clock_behind: None,
):
    before = _db_now(db)
    trigger = api.create(cron_expression="* * * * *", timezone="UTC")
    run = api.post(f"/triggers/{trigger['id']}/run").json
    cancelled = api.post(f"/invocations/{run['id']}/cancel").json
    patched = api.patch(f"/triggers/{trigger['id']}", json={"description": "x"}).json
    after = _db_now(db)

    def within(moment: str) -> bool:
        return before <= _at(moment) <= after + dt.timedelta(microseconds=1)

    assert within(trigger["created_at"]) and within(patched["updated_at"])
    assert before < _at(trigger["next_run_at"]) <= after + dt.timedelta(minutes=1)
    assert within(run["scheduled_for"]) and within(run["created_at"])
    assert run["enqueued_at"] is None or within(run["enqueued_at"])
    assert within(cancelled["finished_at"])
    preview = api.get(f"/triggers/{trigger['id']}/preview?count=1").json
    assert _at(preview["next_run_times"][0]["utc"]) > before


def test_each_request_reads_the_clock_once(api: Caller, clock_reads: list[str]):
    trigger = api.create(cron_expression="* * * * *", timezone="UTC")
    assert len(clock_reads) == 1
    requests = [
        ("PATCH", f"/triggers/{trigger['id']}", {"json": {"description": "x"}}),
        ("POST", f"/triggers/{trigger['id']}/run", {}),
        ("POST", f"/triggers/{trigger['id']}/pause", {}),
        ("DELETE", f"/triggers/{trigger['id']}", {}),
    ]
    for method, path, kwargs in requests:
        clock_reads.clear()
        response = api.call(method, path, **kwargs)
        assert response.status_code < 300, response.json
        assert len(clock_reads) == 1, (method, path, clock_reads)
