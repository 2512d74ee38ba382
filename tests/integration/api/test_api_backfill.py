"""Backfill: the occurrences of a past range without an invocation, recorded once."""

from __future__ import annotations

import datetime as dt
import json
import uuid

import pytest
import redis
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from app.editing import backfill
from app.enums import InvocationStatus
from app.errors import InvalidTrigger
from app.models import Invocation
from tests.integration.api.conftest import Caller, assert_error

UTC = dt.UTC
RUN_QUEUE = "cronbeat.runs"


def _at(day: int, hour: int, minute: int = 0) -> dt.datetime:
    return dt.datetime(2026, 3, day, hour, minute, tzinfo=UTC)


def test_a_backfill_across_the_spring_gap_follows_the_schedule_s_dst_rule(
    api: Caller, db: sessionmaker[Session],
) -> None:
    # 02:30 Berlin, daily: on 2026-03-29 that wall time does not exist and the run is at
    # the transition, 03:00 CEST = 01:00 UTC (the fixed-time rule).
    trigger = api.create(name="nightly", cron_expression="30 2 * * *",
                         timezone="Europe/Berlin")
    now = _at(31, 12)
    with db.begin() as session:
        session.add(Invocation(trigger_id=uuid.UUID(trigger["id"]), tenant_id="acme",
                               project_id="proj-1", scheduled_for=_at(28, 1, 30),
                               status=InvocationStatus.SUCCEEDED))
    with db.begin() as session:
        planned = backfill.backfill(session, "acme", "proj-1", uuid.UUID(trigger["id"]),
                                    start=_at(27, 0), end=_at(31, 0), now=now,
                                    retention_days=30, dry_run=True)
    assert (planned.missing, planned.recorded, planned.created) == (
        [_at(27, 1, 30), _at(29, 1), _at(30, 0, 30)], 1, [])
    for _ in range(2):  # the second call finds them all recorded
        with db.begin() as session:
            done = backfill.backfill(session, "acme", "proj-1", uuid.UUID(trigger["id"]),
                                     start=_at(27, 0), end=_at(31, 0), now=now,
                                     retention_days=30, dry_run=False)
    assert (done.missing, done.recorded, done.created) == ([], 4, [])
    with db.begin() as session:
        rows = session.execute(select(Invocation.scheduled_for, Invocation.status)
                               .order_by(Invocation.scheduled_for)).all()
    assert [tuple(r) for r in rows] == [
        (_at(27, 1, 30), InvocationStatus.PENDING), (_at(28, 1, 30), InvocationStatus.SUCCEEDED),
        (_at(29, 1), InvocationStatus.PENDING), (_at(30, 0, 30), InvocationStatus.PENDING)]


def test_a_long_range_is_capped_and_says_where_to_go_on(
    api: Caller, db: sessionmaker[Session],
) -> None:
    trigger = api.create(name="minutely", cron_expression="* * * * *", timezone="UTC")
    with db.begin() as session:
        first = backfill.backfill(session, "acme", "proj-1", uuid.UUID(trigger["id"]),
                                  start=_at(2, 0), end=_at(3, 0), now=_at(3, 0),
                                  retention_days=30, dry_run=True)
    assert len(first.missing) == backfill.MAX_OCCURRENCES
    assert first.missing[-1] == _at(2, 16, 39) and first.capped_at == _at(2, 16, 40)


def test_the_api_lists_records_publishes_and_refuses_what_it_cannot_do(
    api: Caller, other: Caller, db: sessionmaker[Session], settings,
) -> None:
    broker = redis.Redis.from_url(settings.redis_url)
    broker.delete(RUN_QUEUE)
    trigger = api.create(name="hourly", cron_expression="0 * * * *", timezone="UTC")
    now = dt.datetime.now(UTC)
    end = now.replace(minute=0, second=0, microsecond=0)
    start = end - dt.timedelta(hours=3)
    url = f"/triggers/{trigger['id']}/backfill"
    body = {"from": start.isoformat(), "to": end.isoformat()}

    listed = api.post(url, json={**body, "dry_run": True})
    assert listed.status_code == 200, listed.json
    expected = [(start + dt.timedelta(hours=n)).isoformat() for n in range(3)]
    assert listed.json == {"dry_run": True, "occurrences": expected, "already_recorded": 0,
                           "capped_at": None, "invocation_ids": []}
    assert broker.llen(RUN_QUEUE) == 0
    done = api.post(url, json=body).json
    assert done["occurrences"] == expected and len(done["invocation_ids"]) == 3
    published = sorted(json.loads(m)["headers"]["id"] for m in broker.lrange(RUN_QUEUE, 0, -1))
    assert published == sorted(done["invocation_ids"])
    # Backfilled runs are manual runs (no alert, no lateness figure) of origin "backfill".
    history = api.get(f"/triggers/{trigger['id']}/invocations").json["items"]
    assert sorted((row["scheduled_for"], row["origin"], row["manual"]) for row in history) == [
        (moment, "backfill", True) for moment in expected]
    assert api.post(url, json=body).json["already_recorded"] == 3
    broker.delete(RUN_QUEUE)
    broker.close()

    # An offset beyond PostgreSQL's +-15:59 is the same instant, read as UTC: the same
    # three occurrences, recorded already.
    at_plus_18 = start.astimezone(dt.timezone(dt.timedelta(hours=18, minutes=29)))
    shifted = api.post(url, json={"from": at_plus_18.isoformat(), "to": end.isoformat(),
                                  "dry_run": True})
    assert (shifted.status_code, shifted.json["already_recorded"]) == (200, 3)
    assert_error(api.post(url, json={"from": body["to"], "to": body["from"]}), 422, "to")
    assert_error(api.post(url, json={"from": body["from"],
                                     "to": (now + dt.timedelta(hours=1)).isoformat()}), 422, "to")
    assert_error(api.post(url, json={"from": (now - dt.timedelta(days=31)).isoformat(),
                                     "to": body["to"]}), 422, "from")
    assert_error(api.post(url, json={"from": "2026-01-01T00:00:00", "to": body["to"]}),
                 422, "from")
    assert_error(other.post(url, json=body), 404)


def test_the_core_refuses_an_empty_range_naming_it(db: sessionmaker[Session],
                                                   api: Caller) -> None:
    trigger = api.create()
    with pytest.raises(InvalidTrigger) as refused, db.begin() as session:
        backfill.backfill(session, "acme", "proj-1", uuid.UUID(trigger["id"]),
                          start=_at(2, 0), end=_at(2, 0), now=_at(3, 0), retention_days=30,
                          dry_run=True)
    assert refused.value.field == "to"
