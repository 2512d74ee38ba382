"""Interval triggers over HTTP: create, read, preview, change kind, sync, and every way
to get one wrong (a 422 naming the field, nothing written)."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from flask import Flask
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from api import publishing
from app.models import Trigger
from messaging.config import DISPATCH_QUEUE
from tests.integration.api.conftest import Caller, assert_error, trigger_body

ANCHOR = "2099-01-01T00:00:00+00:00"


def interval_body(**overrides: Any) -> dict[str, Any]:
    return trigger_body(**{"cron_expression": None, "interval_s": 90, **overrides})


def create(api: Caller, **overrides: Any) -> dict[str, Any]:
    response = api.post("/triggers", json=interval_body(**overrides))
    assert response.status_code == 201, response.json
    return response.json


def _db_now(db: sessionmaker[Session]) -> Any:
    with db.begin() as session:
        return session.execute(select(func.now())).scalar_one()


def _count(db: sessionmaker[Session]) -> int:
    with db.begin() as session:
        return session.execute(select(func.count()).select_from(Trigger)).scalar_one()


@contextlib.contextmanager
def operator_floor(app: Flask, seconds: int) -> Iterator[None]:
    """Run the block as if the operator had set CRONBEAT_MIN_INTERVAL_S."""
    state = app.extensions["cronbeat"]
    settings = dataclasses.replace(state.settings, min_interval_s=seconds)
    app.extensions["cronbeat"] = dataclasses.replace(state, settings=settings)
    try:
        yield
    finally:
        app.extensions["cronbeat"] = state


def test_an_interval_trigger_is_created_read_and_previewed_at_exact_instants(api: Caller):
    body = create(api, start_at="2099-01-01T01:00:00+01:00")
    assert (body["interval_s"], body["start_at"]) == (90, ANCHOR)
    assert (body["cron_expression"], body["run_at"]) == (None, None)
    assert body["next_run_at"] == ANCHOR
    assert body["schedule_description"] == "Every 90 seconds"
    preview = api.get(f"/triggers/{body['id']}/preview?count=3").json
    assert (preview["interval_s"], preview["start_at"]) == (90, ANCHOR)
    assert preview["next_run_times"] == [
        {"utc": "2099-01-01T00:00:00+00:00", "local": "2099-01-01T01:00:00+01:00"},
        {"utc": "2099-01-01T00:01:30+00:00", "local": "2099-01-01T01:01:30+01:00"},
        {"utc": "2099-01-01T00:03:00+00:00", "local": "2099-01-01T01:03:00+01:00"},
    ]
    assert api.get(f"/triggers/{body['id']}").json["interval_s"] == 90


def test_without_start_at_an_interval_starts_when_it_is_saved(
    api: Caller, db: sessionmaker[Session],
):
    before = _db_now(db).replace(microsecond=0)
    body = create(api)
    after = _db_now(db)
    start = Trigger.__table__.c.start_at.type.python_type.fromisoformat(body["start_at"])
    assert before <= start <= after and start.microsecond == 0
    next_run = start.fromisoformat(body["next_run_at"])
    assert (next_run - start).total_seconds() == 90


def test_changing_the_kind_clears_the_other_kind_and_keeps_the_anchor_of_an_edit(
    api: Caller,
):
    created = create(api, start_at=ANCHOR)
    path = f"/triggers/{created['id']}"
    # A new period keeps the anchor: occurrences stay on the anchor's grid.
    edited = api.patch(path, json={"interval_s": 120}).json
    assert (edited["interval_s"], edited["start_at"], edited["next_run_at"]) == (
        120, ANCHOR, ANCHOR)
    as_cron = api.patch(path, json={"cron_expression": "0 * * * *"}).json
    assert (as_cron["cron_expression"], as_cron["interval_s"], as_cron["start_at"]) == (
        "0 * * * *", None, None)
    again = api.patch(path, json={"interval_s": 60, "start_at": "2099-06-01T00:00:00Z"}).json
    assert (again["cron_expression"], again["interval_s"], again["start_at"]) == (
        None, 60, "2099-06-01T00:00:00+00:00")
    assert again["next_run_at"] == "2099-06-01T00:00:00+00:00"
    once = api.patch(path, json={"run_at": "2099-07-01T00:00:00Z"}).json
    assert (once["run_at"], once["interval_s"], once["start_at"]) == (
        "2099-07-01T00:00:00+00:00", None, None)


def test_a_sync_that_leaves_start_at_out_keeps_the_stored_anchor(api: Caller):
    desired = [interval_body(name="every-90")]
    first = api.put("/triggers", json={"triggers": desired}).json
    assert first["created"] == ["every-90"]
    stored = api.get("/triggers").json["items"][0]
    again = api.put("/triggers", json={"triggers": desired}).json
    assert again["unchanged"] == ["every-90"]
    assert api.get("/triggers").json["items"][0]["start_at"] == stored["start_at"]
    moved = api.put("/triggers", json={"triggers": [
        interval_body(name="every-90", start_at=ANCHOR)]}).json
    assert moved["updated"] == ["every-90"]
    assert api.get("/triggers").json["items"][0]["next_run_at"] == ANCHOR


def test_every_wrong_interval_is_a_422_naming_its_field_and_writes_nothing(
    api: Caller, app: Flask, db: sessionmaker[Session],
):
    cases: list[tuple[dict[str, Any], tuple[str, ...], str]] = [
        (trigger_body(interval_s=90), ("cron_expression", "interval_s"),
         "give exactly one of cron_expression, run_at or interval_s"),
        (interval_body(run_at=ANCHOR), ("run_at", "interval_s"),
         "give exactly one of cron_expression, run_at or interval_s"),
        (trigger_body(start_at=ANCHOR), ("start_at",),
         "is the anchor of an interval_s schedule only"),
        (interval_body(interval_s=0), ("interval_s",), "Must be greater than or equal to 1"),
        (interval_body(interval_s=366 * 86_400 + 1), ("interval_s",), "less than or equal"),
        (interval_body(interval_s="90"), ("interval_s",), "Not a valid integer."),
        (interval_body(interval_s=1.5), ("interval_s",), "Not a valid integer."),
        (interval_body(start_at="2099-01-01T00:00:00.5Z"), ("start_at",),
         "must be a whole second"),
        (interval_body(start_at="2099-01-01T00:00:00"), ("start_at",),
         "Not a valid aware datetime."),
        (interval_body(start_at="9000-01-01T00:00:00Z"), ("start_at",),
         "must be before 9000-01-01"),
    ]
    for body, fields, text in cases:
        answer = assert_error(api.post("/triggers", json=body), 422, *fields)
        assert text in str(answer["errors"]), (body, answer)
    with operator_floor(app, 60):
        answer = assert_error(api.post("/triggers", json=interval_body(interval_s=59)),
                              422, "interval_s")
        assert answer["errors"]["interval_s"] == [
            "must be at least 60 seconds on this installation (CRONBEAT_MIN_INTERVAL_S)"]
        assert api.post("/triggers", json=interval_body(interval_s=60)).status_code == 201
    assert _count(db) == 1
    cron = api.create(name="cron")
    answer = assert_error(api.patch(f"/triggers/{cron['id']}", json={"start_at": ANCHOR}),
                          422, "start_at")
    assert "anchor of an interval_s schedule" in str(answer["errors"])
    assert api.get(f"/triggers/{cron['id']}").json["version"] == 1


def test_saving_a_trigger_due_before_the_next_tick_sends_a_tick_at_most_once_a_second(
    api: Caller, db: sessionmaker[Session], broker: redis.Redis,
    monkeypatch: pytest.MonkeyPatch,
):
    monkeypatch.setattr(publishing, "_kicks", publishing._Kicks())
    broker.delete(DISPATCH_QUEUE)
    soon = (_db_now(db) + dt.timedelta(seconds=30)).isoformat()

    def ticks() -> list[str | None]:
        return [json.loads(raw)["headers"]["eta"] for raw in broker.lrange(DISPATCH_QUEUE, 0, -1)]

    create(api, name="a", cron_expression=None, interval_s=None, run_at=soon)
    assert ticks() == [None]  # now: the last tick did not take it
    create(api, name="b", interval_s=20)
    assert len(ticks()) == 2 and ticks()[0] is not None  # a second later (LPUSH: newest first)
    create(api, name="c", cron_expression=None, interval_s=None, run_at=soon)
    api.create(name="cron", cron_expression="* * * * *")
    create(api, name="far", cron_expression=None, interval_s=None,
           run_at="2099-01-01T00:00:00Z")
    assert len(ticks()) == 2  # the delayed one sees c; cron and far need none
    broker.delete(DISPATCH_QUEUE)
