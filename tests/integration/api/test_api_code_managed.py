"""Code-managed triggers (written by cronbeat sync) through the API: reads show the owner;
PATCH, DELETE, the bulk delete by ref and the project's sync refuse to change them (409
code_managed, naming the code) unless forced; pause, resume and run now are operations."""

from __future__ import annotations

from typing import Any

import pytest
import redis
from flask import Flask
from sqlalchemy.orm import Session, sessionmaker

from app.editing.sync import SyncResult
from tests.integration.api.conftest import PROJECT, Caller, assert_error
from tests.integration.api.test_api_runs import broker  # noqa: F401 - a fixture
from tests.support.code_sync import OWNER, code_sync

DAILY = {"name": "daily-report", "cron_expression": "0 9 * * 1-5",
         "timezone": "Europe/Berlin", "target": {"kind": "task", "task_name": "shop.report"}}
HOURLY = {"name": "hourly", "interval_s": 3600,
          "target": {"kind": "task", "task_name": "shop.sum"}}
REFUSED = {
    "code": "code_managed", "status": 409,
    "message": "trigger 'daily-report' is managed by code in shop.celery:app; change it"
               " there and run cronbeat sync, or pass force=true",
    "errors": {"managed_by": [OWNER]},
}


def _code_sync(app: Flask, db: sessionmaker[Session], *bodies: dict[str, Any]) -> SyncResult:
    return code_sync(app, db, "acme", PROJECT, *bodies)


@pytest.fixture
def daily(app: Flask, db: sessionmaker[Session], api: Caller) -> dict[str, Any]:
    """The code-managed trigger, as the API reads it."""
    assert _code_sync(app, db, DAILY).created == ["daily-report"]
    [found] = api.get("/triggers").json["items"]
    return found


def _read(api: Caller, trigger: dict[str, Any]) -> dict[str, Any]:
    response = api.get(f"/triggers/{trigger['id']}")
    assert response.status_code == 200
    return response.json


def test_reads_name_the_code_that_manages_a_trigger(daily: dict[str, Any], api: Caller,
                                                    ) -> None:
    mine = api.create()
    assert (daily["managed_by"], _read(api, daily)["managed_by"]) == (OWNER, OWNER)
    assert mine["managed_by"] is None
    assert {t["name"]: t["managed_by"] for t in api.get("/triggers").json["items"]} == {
        "daily-report": OWNER, "nightly": None}


def test_a_patch_of_its_definition_is_refused_and_changes_nothing(
    daily: dict[str, Any], api: Caller,
) -> None:
    for changes in ({"cron_expression": "0 8 * * 1-5"}, {"description": "mine now"},
                    {"target": {"kind": "task", "task_name": "shop.other"}}):
        response = api.patch(f"/triggers/{daily['id']}", json=changes)
        assert (response.status_code, response.json) == (409, REFUSED)
    assert _read(api, daily)["version"] == 1
    # A patch that changes nothing edits nothing: it is not refused.
    same = api.patch(f"/triggers/{daily['id']}", json={"timezone": "Europe/Berlin"})
    assert (same.status_code, same.json["version"]) == (200, 1)


def test_a_forced_patch_changes_it_keeps_it_code_managed_and_the_next_sync_restores_it(
    app: Flask, db: sessionmaker[Session], daily: dict[str, Any], api: Caller,
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level("WARNING", logger="app.editing"):
        forced = api.patch(f"/triggers/{daily['id']}?force=true",
                           json={"cron_expression": "0 8 * * 1-5"})
        api.patch(f"/triggers/{daily['id']}?force=true", json={"enabled": False})
        api.patch(f"/triggers/{daily['id']}?force=true", json={"enabled": True})
    assert forced.status_code == 200
    # Logged, once: pausing and resuming are operations, not edits.
    assert [(r.getMessage(), r.action, r.edit, r.trigger_name, r.managed_by)
            for r in caplog.records if getattr(r, "action", None) == "trigger.forced_edit"
            ] == [("a code-managed trigger was changed by force", "trigger.forced_edit",
                   "update", "daily-report", OWNER)]
    assert (forced.json["cron_expression"], forced.json["managed_by"],
            forced.json["version"]) == ("0 8 * * 1-5", OWNER, 2)
    assert _code_sync(app, db, DAILY).updated == ["daily-report"]
    restored = _read(api, daily)
    # Versions: 2 the forced edit, 3-4 the pause and resume, 5 the sync.
    assert (restored["cron_expression"], restored["managed_by"], restored["version"]) == (
        "0 9 * * 1-5", OWNER, 5)


def test_pause_resume_and_run_now_are_operations_and_a_sync_keeps_it_paused(
    app: Flask, db: sessionmaker[Session], daily: dict[str, Any], api: Caller,
    broker: redis.Redis,  # noqa: F811 - the fixture
) -> None:
    paused = api.post(f"/triggers/{daily['id']}/pause")
    assert (paused.status_code, paused.json["enabled"]) == (200, False)
    resumed = api.post(f"/triggers/{daily['id']}/resume")
    assert (resumed.status_code, resumed.json["enabled"]) == (200, True)
    run = api.post(f"/triggers/{daily['id']}/run")
    assert (run.status_code, run.json["manual"]) == (202, True)
    patched = api.patch(f"/triggers/{daily['id']}", json={"enabled": False})
    assert (patched.status_code, patched.json["enabled"], patched.json["version"]) == (
        200, False, 4)
    result = _code_sync(app, db, DAILY)
    assert (result.updated, result.unchanged) == ([], ["daily-report"])
    after = _read(api, daily)
    assert (after["enabled"], after["next_run_at"], after["version"]) == (False, None, 4)


def test_a_delete_is_refused_unless_forced(daily: dict[str, Any], api: Caller) -> None:
    response = api.delete(f"/triggers/{daily['id']}")
    assert (response.status_code, response.json) == (409, REFUSED)
    assert _read(api, daily)["version"] == 1
    assert api.delete(f"/triggers/{daily['id']}?force=true").status_code == 204
    assert api.get(f"/triggers/{daily['id']}").status_code == 404


def test_a_bulk_delete_by_ref_is_refused_by_name_unless_forced(
    daily: dict[str, Any], api: Caller,
) -> None:
    api.create(ref="v1")
    assert api.patch(f"/triggers/{daily['id']}?force=true",
                     json={"ref": "v1"}).status_code == 200
    response = api.delete("/triggers?ref=v1")
    assert (response.status_code, response.json) == (409, {
        **REFUSED, "errors": {"triggers": {"daily-report": {"managed_by": [OWNER]}}}})
    assert len(api.get("/triggers").json["items"]) == 2
    forced = api.delete("/triggers?ref=v1&force=true")
    assert (forced.status_code, forced.json) == (200, {"deleted": 2})


def test_the_project_s_sync_is_refused_when_it_would_change_or_delete_them(
    app: Flask, db: sessionmaker[Session], api: Caller,
) -> None:
    _code_sync(app, db, DAILY, HOURLY)
    both = {
        "code": "code_managed", "status": 409,
        "message": "triggers 'daily-report', 'hourly' are managed by code in"
                   " shop.celery:app; change them there and run cronbeat sync, or pass"
                   " force=true",
        "errors": {"triggers": {"daily-report": {"managed_by": [OWNER]},
                                "hourly": {"managed_by": [OWNER]}}},
    }
    changed = {"triggers": [{**DAILY, "cron_expression": "0 8 * * *"}]}  # hourly: deleted
    for query in ("", "?dry_run=true"):
        response = api.put(f"/triggers{query}", json=changed)
        assert (response.status_code, response.json) == (409, both)
    assert {t["name"]: t["version"] for t in api.get("/triggers").json["items"]} == {
        "daily-report": 1, "hourly": 1}
    # The code's own definitions, a pause and a trigger of the API's own: all fine.
    same = api.put("/triggers", json={"triggers": [
        {**DAILY, "enabled": False}, HOURLY, {**HOURLY, "name": "mine"}]})
    assert (same.status_code, same.json["created"], same.json["updated"],
            same.json["unchanged"]) == (200, ["mine"], ["daily-report"], ["hourly"])
    forced = api.put("/triggers?force=true", json=changed)
    assert (forced.status_code, forced.json["updated"], forced.json["deleted"]) == (
        200, ["daily-report"], ["hourly", "mine"])
    [left] = api.get("/triggers").json["items"]
    assert (left["cron_expression"], left["managed_by"]) == ("0 8 * * *", OWNER)


@pytest.mark.parametrize(("method", "path"), [
    ("PATCH", "/triggers/{id}?force=yes"), ("DELETE", "/triggers/{id}?force=1"),
    ("DELETE", "/triggers?ref=v1&force=on"), ("PUT", "/triggers?force=TRUE"),
])
def test_force_is_true_or_false(daily: dict[str, Any], api: Caller, method: str, path: str,
                                ) -> None:
    body = {"triggers": []} if method == "PUT" else {}
    response = api.call(method, path.format(id=daily["id"]), json=body)
    assert assert_error(response, 422, "force")["errors"]["force"] == ["Not a valid boolean."]
    assert _read(api, daily)["version"] == 1
