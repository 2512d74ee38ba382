"""PUT on the collection: the declarative sync of a project's whole trigger set."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import func, select, text, update
from sqlalchemy.orm import Session, sessionmaker

from app.models import Invocation, Trigger
from tests.integration.api.conftest import Caller, assert_error, trigger_body


def _counts(db: sessionmaker[Session]) -> tuple[int, int, str]:
    with db.begin() as session:
        triggers = session.scalar(select(func.count()).select_from(Trigger))
        invocations = session.scalar(select(func.count()).select_from(Invocation))
        # A digest of every row, so a dry run that rewrote a value in place is caught too.
        digest = session.scalar(text(
            "SELECT md5(coalesce(string_agg(t::text, '|' ORDER BY id), '')) FROM triggers t"))
    return triggers, invocations, digest


def test_sync_reports_created_updated_deleted_and_unchanged(api: Caller):
    api.create(name="keep")
    changed = api.create(name="change")
    api.create(name="gone")
    desired = [
        trigger_body(name="keep"),
        trigger_body(name="change", cron_expression="*/5 * * * *"),
        trigger_body(name="new", target={"kind": "task", "task_name": "jobs.new"}),
        trigger_body(name="hook"),
    ]
    response = api.put("/triggers", json={"triggers": desired})
    assert response.status_code == 200, response.json
    body = response.json
    assert body["dry_run"] is False
    assert (body["created"], body["updated"], body["deleted"], body["unchanged"]) == (
        ["hook", "new"], ["change"], ["gone"], ["keep"])
    assert list(body["signing_secrets"]) == ["hook"]
    listed = {t["name"]: t for t in api.get("/triggers").json["items"]}
    assert set(listed) == {"keep", "change", "new", "hook"}
    assert all(t["next_run_at"] is not None for t in listed.values())
    assert listed["change"]["version"] == 2 and listed["keep"]["version"] == 1
    assert listed["change"]["next_run_at"] != changed["next_run_at"]
    again = api.put("/triggers", json={"triggers": desired}).json
    assert again["unchanged"] == ["change", "hook", "keep", "new"] and again["updated"] == []


def test_a_dry_run_reports_the_changes_and_writes_nothing(
    api: Caller, db: sessionmaker[Session],
):
    api.create(name="keep")
    api.create(name="gone")
    before = _counts(db)
    response = api.put("/triggers?dry_run=true", json={"triggers": [
        trigger_body(name="keep", description="changed"), trigger_body(name="new")]})
    assert response.status_code == 200
    body = response.json
    assert body["dry_run"] is True and body["signing_secrets"] == {}
    assert (body["created"], body["updated"], body["deleted"]) == (["new"], ["keep"], ["gone"])
    assert _counts(db) == before


def test_an_invalid_sync_writes_nothing_and_names_the_item(
    api: Caller, db: sessionmaker[Session],
):
    api.create(name="gone")
    before = _counts(db)
    bad_schedule = api.put("/triggers", json={"triggers": [
        trigger_body(name="ok"), trigger_body(name="bad", cron_expression="61 * * * *")]})
    body = assert_error(bad_schedule, 422, "triggers.bad.cron_expression")
    assert body["errors"]["triggers"] == {
        "bad": {"cron_expression": ["bad minute field: 61 (minute is 0-59)"]}}
    duplicate = api.put("/triggers", json={"triggers": [trigger_body(), trigger_body()]})
    assert_error(duplicate, 422, "triggers")
    past = api.put("/triggers", json={"triggers": [
        trigger_body(name="once", cron_expression=None, run_at="2001-01-01T00:00:00Z")]})
    assert_error(past, 422, "triggers.once.run_at")
    assert_error(api.put("/triggers", json={}), 422, "triggers")
    assert_error(api.put("/triggers", json={"triggers": [{"name": "x"}] * 1001}), 422,
                 "triggers")
    assert _counts(db) == before


def test_a_fired_one_time_trigger_syncs_as_unchanged_and_stays_finished(
    api: Caller, db: sessionmaker[Session],
):
    once = trigger_body(name="once", cron_expression=None, run_at="2099-01-01T00:00:00Z")
    assert api.put("/triggers", json={"triggers": [once]}).json["created"] == ["once"]
    # What the dispatcher leaves once it fired it (run_at moved back: the clock is real).
    fired_at = dt.datetime(2001, 1, 1, tzinfo=dt.UTC)
    with db.begin() as session:
        session.execute(update(Trigger).values(run_at=fired_at, next_run_at=None,
                                               enabled=False, last_scheduled_for=fired_at))
    fired = dict(once, run_at="2001-01-01T00:00:00Z")
    for definition in (fired, dict(fired, enabled=True), dict(fired, enabled=False)):
        again = api.put("/triggers", json={"triggers": [definition]})
        assert again.status_code == 200, again.json
        assert again.json["unchanged"] == ["once"]
    described = api.put("/triggers", json={"triggers": [dict(fired, description="done")]})
    assert described.json["updated"] == ["once"]
    finished = api.get("/triggers").json["items"][0]
    assert (finished["enabled"], finished["next_run_at"], finished["description"]) == (
        False, None, "done")
    moved = api.put("/triggers", json={"triggers": [dict(once, run_at="2002-01-01T00:00:00Z")]})
    assert_error(moved, 422, "triggers.once.run_at")
    rearmed = api.put("/triggers", json={"triggers": [once]})
    assert rearmed.json["updated"] == ["once"]
    armed = api.get("/triggers").json["items"][0]
    assert (armed["enabled"], armed["next_run_at"]) == (True, "2099-01-01T00:00:00+00:00")
