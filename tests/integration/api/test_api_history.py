"""A project's history across triggers (deleted ones too), and a trigger's daily stats."""

from __future__ import annotations

import datetime as dt
import uuid

from sqlalchemy import Engine, insert
from sqlalchemy.orm import Session, sessionmaker

from app.enums import InvocationStatus
from app.history import partitions
from app.history.retention import maintain
from app.models import Invocation, InvocationAttempt
from tests.integration.api.conftest import Caller, assert_error

UTC = dt.UTC
T0 = dt.datetime(2026, 1, 1, 9, 0, tzinfo=UTC)
S = InvocationStatus


def _run(db: sessionmaker[Session], trigger_id: str, at: dt.datetime,
         status: InvocationStatus = S.SUCCEEDED, late_s: float | None = None) -> str:
    with db.begin() as session:
        invocation_id = session.execute(insert(Invocation).values(
            trigger_id=uuid.UUID(trigger_id), tenant_id="acme", project_id="proj-1",
            scheduled_for=at, status=status,
        ).returning(Invocation.id)).scalar_one()
        if late_s is not None:
            session.execute(insert(InvocationAttempt).values(
                invocation_id=invocation_id, scheduled_for=at, number=1,
                started_at=at + dt.timedelta(seconds=late_s)))
    return str(invocation_id)


def _all_pages(api: Caller, url: str) -> list[dict]:
    items: list[dict] = []
    while url:
        page = api.get(url)
        assert page.status_code == 200, page.json
        items += page.json["items"]
        url = page.json["next"]
    return items


def test_the_project_history_spans_triggers_deleted_ones_too_newest_first(
    api: Caller, other: Caller, db: sessionmaker[Session],
) -> None:
    kept, gone = api.create(name="kept"), api.create(name="gone")
    ids = {
        (name, minute): _run(db, trigger["id"], T0 + dt.timedelta(minutes=minute),
                             S.FAILED if minute == 3 else S.SUCCEEDED)
        for name, trigger, minutes in (("kept", kept, (0, 2, 4)), ("gone", gone, (1, 3, 5)))
        for minute in minutes
    }
    assert api.delete(f"/triggers/{gone['id']}").status_code == 204

    newest_first = [ids[key] for key in sorted(ids, key=lambda k: -k[1])]
    assert [item["id"] for item in _all_pages(api, "/invocations?limit=2")] == newest_first
    of_gone = _all_pages(api, f"/invocations?trigger_id={gone['id']}")
    assert [item["id"] for item in of_gone] == [ids["gone", m] for m in (5, 3, 1)]
    assert {item["trigger_id"] for item in of_gone} == {gone["id"]}
    failed = _all_pages(api, "/invocations?status=failed")
    assert [item["id"] for item in failed] == [ids["gone", 3]]
    window = _all_pages(api, "/invocations?since=2026-01-01T09:01:00Z"
                             "&until=2026-01-01T10:04:00%2B01:00&limit=1")
    assert [item["id"] for item in window] == [ids["gone", 3], ids["kept", 2], ids["gone", 1]]

    assert other.get("/invocations").json["items"] == []
    assert_error(api.get("/invocations?since=2026-01-01T09:00:00Z&until=2026-01-01T09:00:00Z"),
                 422, "until")
    assert_error(api.get("/invocations?since=2026-01-01T09:00:00"), 422, "since")
    assert_error(api.get("/invocations?trigger_id=nope"), 422, "trigger_id")
    assert_error(api.get("/invocations?cursor=x"), 422, "cursor")


def test_a_trigger_s_stats_come_from_rollups_past_retention_and_live_after(
    api: Caller, other: Caller, db: sessionmaker[Session], engine: Engine,
) -> None:
    now = dt.datetime.now(UTC)
    today = now.date()
    old_day = today - dt.timedelta(days=5)
    old = partitions.day_start(old_day) + dt.timedelta(hours=8)
    with engine.begin() as conn:
        if old_day not in partitions.existing_days(conn):
            assert partitions.add_day(conn, old_day)
    trigger = api.create()
    for minute, status, late_s in ((0, S.SUCCEEDED, 1.0), (1, S.SUCCEEDED, 3.0),
                                   (2, S.FAILED, 5.0), (3, S.MISSED, None)):
        _run(db, trigger["id"], old + dt.timedelta(minutes=minute), status, late_s)
    _run(db, trigger["id"], partitions.day_start(today), S.SUCCEEDED, 2.0)

    report = maintain(engine, now=now, retention_days=3)
    assert old_day in report.dropped

    body = api.get(f"/triggers/{trigger['id']}/stats?days=10").json
    zero = {status.value: 0 for status in S}
    assert body == {
        "trigger_id": trigger["id"],
        "first_day": (today - dt.timedelta(days=9)).isoformat(),
        "last_day": today.isoformat(),
        "days": [
            {"day": old_day.isoformat(), "total": 4,
             "counts": {**zero, "succeeded": 2, "failed": 1, "missed": 1},
             "lateness_p50_s": 3.0, "lateness_p95_s": 4.8},
            {"day": today.isoformat(), "total": 1, "counts": {**zero, "succeeded": 1},
             "lateness_p50_s": 2.0, "lateness_p95_s": 2.0},
        ],
    }
    assert [d["day"] for d in api.get(
        f"/triggers/{trigger['id']}/stats?days=1").json["days"]] == [today.isoformat()]
    # Another tenant's key cannot read them; a deleted trigger's stay readable.
    assert_error(other.get(f"/triggers/{trigger['id']}/stats"), 404)
    assert api.delete(f"/triggers/{trigger['id']}").status_code == 204
    assert len(api.get(f"/triggers/{trigger['id']}/stats?days=10").json["days"]) == 2
    assert_error(api.get(f"/triggers/{uuid.uuid4()}/stats"), 404)
    assert_error(api.get(f"/triggers/{trigger['id']}/stats?days=0"), 422, "days")


def test_the_last_invocation_is_the_latest_whatever_last_scheduled_for_says(
    api: Caller, db: sessionmaker[Session],
) -> None:
    from sqlalchemy import delete, update

    from app.editing.invocations import last_invocations
    from app.models import Trigger

    ticked, later_manual, stale, never = (api.create(name=n)["id"] for n in (
        "ticked", "later-manual", "stale", "never"))
    at = T0 + dt.timedelta(hours=1)
    expected = {
        ticked: _run(db, ticked, at),
        later_manual: _run(db, later_manual, at + dt.timedelta(minutes=5)),
        stale: _run(db, stale, at - dt.timedelta(days=2)),
        never: _run(db, never, at),
    }
    _run(db, ticked, at - dt.timedelta(minutes=1))
    _run(db, later_manual, at)
    # "stale" says its last occurrence is at `at`, whose row is gone (say, past retention
    # while an older day was kept back): the lookup falls back to every partition.
    gone = _run(db, stale, at)
    with db.begin() as session:
        for trigger_id in (ticked, later_manual, stale):
            session.execute(update(Trigger).where(Trigger.id == uuid.UUID(trigger_id))
                            .values(last_scheduled_for=at))
        session.execute(delete(Invocation).where(Invocation.id == uuid.UUID(gone)))
        found = last_invocations(session, "acme", [uuid.UUID(t) for t in expected])
        elsewhere = last_invocations(session, "other", [uuid.UUID(t) for t in expected])
    assert {str(k): str(v.id) for k, v in found.items()} == expected
    assert elsewhere == {}


def test_any_utc_offset_iso_8601_allows_is_read_as_utc_and_one_out_of_range_is_a_422(
    api: Caller, db: sessionmaker[Session],
) -> None:
    # PostgreSQL refuses offsets beyond +-15:59 (they were 500s): the API converts first.
    trigger = api.create(name="offsets")
    run = _run(db, trigger["id"], T0 + dt.timedelta(minutes=1), S.SUCCEEDED)
    # The run is at 2026-01-01T09:01Z. Since 03:29+18:29 the next day is 09:00Z, until
    # 01:00:30+16:00 is 09:00:30Z: an empty window, and no 500.
    window = _all_pages(api, "/invocations?since=2026-01-02T03:29:00%2B18:29"
                             "&until=2026-01-02T01:00:30%2B16:00")
    assert window == []
    # Until 09:02-23:59 is 09:01Z the next day: the run is in.
    window = _all_pages(api, "/invocations?since=2026-01-02T03:29:00%2B18:29"
                             "&until=2026-01-01T09:02:00-23:59")
    assert [item["id"] for item in window] == [run]
    assert_error(api.get("/invocations?since=0001-01-01T00:00:00%2B01:00"), 422, "since")
