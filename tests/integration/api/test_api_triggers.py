"""Triggers over HTTP: create, read, list, change, delete, pause, preview."""

from __future__ import annotations

import datetime as dt
import uuid
from urllib.parse import parse_qs, urlsplit

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from app.editing import triggers as editing
from app.models import Trigger
from tests.integration.api.conftest import Caller, assert_error, trigger_body


def test_create_returns_the_trigger_its_secret_once_and_an_etag(api: Caller):
    response = api.post("/triggers", json=trigger_body(payload={"report": "daily"}))
    assert response.status_code == 201
    body = response.json
    assert response.headers["ETag"] == '"1"'
    assert body["name"] == "nightly" and body["version"] == 1
    assert body["schedule_description"] == "At 02:30 AM"
    assert body["signing_secret"].startswith("whsec_")
    assert body["target"] == {"kind": "webhook", "url": "https://example.com/hook",
                              "method": "POST", "headers": {}, "has_signing_secret": True}
    assert body["next_run_at"] is not None and body["last_invocation"] is None

    again = api.get(f"/triggers/{body['id']}")
    assert again.status_code == 200 and again.headers["ETag"] == '"1"'
    assert "signing_secret" not in again.json
    assert again.json["target"]["has_signing_secret"] is True


def test_a_given_signing_secret_is_kept(api: Caller):
    secret = "whsec_" + "A" * 32
    body = api.create(target={"kind": "webhook", "url": "http://example.com/x",
                              "signing_secret": secret})
    assert body["signing_secret"] == secret


def test_a_task_target_has_no_secret(api: Caller):
    body = api.create(target={"kind": "task", "task_name": "reports.nightly", "queue": "reports"})
    assert body["target"] == {"kind": "task", "task_name": "reports.nightly", "queue": "reports",
                              "args": [], "kwargs": {}, "envelope": False, "outcome": False}
    assert body["signing_secret"] is None


def test_a_one_time_trigger_may_be_given_in_its_zone(api: Caller):
    body = api.create(cron_expression=None, run_at="2099-07-01T09:00:00",
                      timezone="Europe/Paris")
    assert body["run_at"] == "2099-07-01T07:00:00+00:00"
    assert body["next_run_at"] == body["run_at"]
    assert body["schedule_description"] == "Once, at 2099-07-01T09:00:00+02:00"


def test_a_duplicate_name_is_a_409_naming_name(api: Caller):
    api.create()
    assert_error(api.post("/triggers", json=trigger_body()), 409, "name")


def test_list_pages_by_id_with_a_next_link_and_filters(api: Caller):
    for number in range(5):
        api.create(name=f"job-{number}", ref="deploy-1" if number % 2 else None,
                   enabled=number != 4)
    api.create(name="other")
    seen = []
    url = "/triggers?limit=2&name_prefix=job-"
    while url:
        page = api.get(url)
        assert page.status_code == 200
        seen += [item["name"] for item in page.json["items"]]
        url = page.json["next"]
        assert url is None or url.startswith("/api/v1/projects/proj-1/triggers?")
    assert sorted(seen) == [f"job-{n}" for n in range(5)] and len(seen) == 5
    ids = [item["id"] for item in api.get("/triggers?limit=200").json["items"]]
    assert ids == sorted(ids)
    by_ref = api.get("/triggers?ref=deploy-1").json["items"]
    assert sorted(t["name"] for t in by_ref) == ["job-1", "job-3"]
    disabled = api.get("/triggers?enabled=false").json["items"]
    assert [t["name"] for t in disabled] == ["job-4"]
    assert api.get("/triggers?name_prefix=%25").json["items"] == []


def test_a_bad_cursor_or_limit_is_a_422_naming_it(api: Caller):
    assert_error(api.get("/triggers?cursor=nonsense"), 422, "cursor")
    assert_error(api.get("/triggers?limit=201"), 422, "limit")
    assert_error(api.get("/triggers?limit=0"), 422, "limit")


def test_patch_bumps_the_version_and_honours_if_match(api: Caller):
    created = api.create()
    path = f"/triggers/{created['id']}"
    changed = api.patch(path, json={"description": "nightly export"},
                        headers={"If-Match": '"1"'})
    assert changed.status_code == 200
    assert changed.json["version"] == 2 and changed.headers["ETag"] == '"2"'
    assert changed.json["next_run_at"] == created["next_run_at"]
    stale = api.patch(path, json={"description": "lost update"}, headers={"If-Match": '"1"'})
    assert_error(stale, 412)
    assert api.get(path).json["description"] == "nightly export"
    assert_error(api.delete(path, headers={"If-Match": '"1"'}), 412)
    for garbage in ("garbage", "5", 'W/"5"'):
        told = assert_error(api.patch(path, json={"description": "x"},
                                      headers={"If-Match": garbage}), 412)
        assert told["message"] == ('If-Match must be the ETag as the ETag header gives it,'
                                   ' a version in double quotes such as "5", or *')
    assert api.get(path).json["description"] == "nightly export"
    assert api.patch(path, json={}, headers={"If-Match": "*"}).status_code == 200


def test_patch_can_switch_schedule_kind_and_target(api: Caller):
    created = api.create(target={"kind": "task", "task_name": "a.b"})
    path = f"/triggers/{created['id']}"
    one_time = api.patch(path, json={"run_at": "2099-01-01T00:00:00Z"})
    assert one_time.status_code == 200, one_time.json
    assert one_time.json["cron_expression"] is None
    assert one_time.json["next_run_at"] == "2099-01-01T00:00:00+00:00"
    webhook = api.patch(path, json={"target": {"kind": "webhook", "url": "https://x.example/"}})
    assert webhook.json["signing_secret"].startswith("whsec_")
    kept = api.patch(path, json={"target": {"kind": "webhook", "url": "https://y.example/"}})
    assert kept.json["signing_secret"] is None and kept.json["target"]["has_signing_secret"]


def test_pause_and_resume_through_their_endpoints_and_through_patch(api: Caller):
    created = api.create(cron_expression="* * * * *", timezone="UTC")
    path = f"/triggers/{created['id']}"
    paused = api.post(f"{path}/pause")
    assert paused.status_code == 200
    assert paused.json["enabled"] is False and paused.json["next_run_at"] is None
    resumed = api.post(f"{path}/resume")
    assert resumed.json["enabled"] is True
    next_run = dt.datetime.fromisoformat(resumed.json["next_run_at"])
    assert dt.timedelta(0) < next_run - dt.datetime.now(dt.UTC) <= dt.timedelta(minutes=1)
    assert api.patch(path, json={"enabled": False}).json["next_run_at"] is None
    assert resumed.json["version"] == 3


def test_delete_one_and_delete_by_ref(api: Caller, db: sessionmaker[Session]):
    first = api.create(name="a", ref="r1")
    api.create(name="b", ref="r1")
    api.create(name="c", ref="r2")
    assert api.delete(f"/triggers/{first['id']}").status_code == 204
    assert_error(api.get(f"/triggers/{first['id']}"), 404)
    assert api.delete("/triggers?ref=r1").json == {"deleted": 1}
    assert api.delete("/triggers?ref=r1").json == {"deleted": 0}
    assert_error(api.delete("/triggers"), 422, "ref")
    with db.begin() as session:
        assert session.scalar(select(func.count()).select_from(Trigger)) == 1


def test_preview_lists_the_next_fire_times_in_utc_and_local(api: Caller):
    created = api.create()
    preview = api.get(f"/triggers/{created['id']}/preview?count=3")
    assert preview.status_code == 200
    body = preview.json
    assert body["description"] == "At 02:30 AM" and len(body["next_run_times"]) == 3
    for moment in body["next_run_times"]:
        assert moment["local"][11:16] == "02:30"
        assert dt.datetime.fromisoformat(moment["utc"]) == dt.datetime.fromisoformat(
            moment["local"])
    assert len(api.get(f"/triggers/{created['id']}/preview").json["next_run_times"]) == 10
    assert_error(api.get(f"/triggers/{created['id']}/preview?count=101"), 422, "count")
    assert_error(api.get(f"/triggers/{created['id']}/preview?count=0"), 422, "count")


def test_renaming_onto_a_taken_name_is_a_409_naming_name(api: Caller):
    api.create(name="a")
    second = api.create(name="b")
    assert_error(api.patch(f"/triggers/{second['id']}", json={"name": "a"}), 409, "name")
    assert api.get(f"/triggers/{second['id']}").json["name"] == "b"


def test_next_links_carry_only_the_documented_query_values(api: Caller):
    for number in range(3):
        api.create(name=f"job-{number}", enabled=number != 1)
    first = api.get("/triggers?limit=1&enabled=true&name_prefix=job-")
    assert first.status_code == 200
    link = first.json["next"]
    assert link.startswith("/api/v1/projects/proj-1/triggers?")
    query = parse_qs(urlsplit(link).query)
    assert set(query) == {"enabled", "name_prefix", "limit", "cursor"}
    assert (query["enabled"], query["name_prefix"], query["limit"]) == (["true"], ["job-"],
                                                                         ["1"])
    second = api.get(link)
    assert second.status_code == 200 and second.json["next"] is None
    names = [t["name"] for t in first.json["items"] + second.json["items"]]
    assert sorted(names) == ["job-0", "job-2"]


@pytest.mark.parametrize("extra", ["project_id=x", "endpoint=x", "_external=1", "_anchor=a",
                                   "_scheme=ftp", "_method=POST", "values=1", "surprise=1"])
def test_an_unknown_query_parameter_is_a_422_naming_it(api: Caller, extra: str):
    api.create(name="a")
    api.create(name="b")
    name = extra.split("=")[0]
    assert_error(api.get(f"/triggers?limit=1&{extra}"), 422, name)
    trigger = api.get("/triggers").json["items"][0]
    assert_error(api.get(f"/triggers/{trigger['id']}/invocations?limit=1&{extra}"), 422, name)
    assert_error(api.put(f"/triggers?{extra}", json={"triggers": []}), 422, name)
    assert len(api.get("/triggers").json["items"]) == 2


def test_if_match_compares_the_etag_exactly(api: Caller):
    created = api.create()
    path = f"/triggers/{created['id']}"
    for stale in ('"01"', '"001"', 'W/"1"', '"+1"', "1"):
        assert_error(api.patch(path, json={"description": "x"}, headers={"If-Match": stale}),
                     412)
    assert api.get(path).json["version"] == 1
    assert api.patch(path, json={"description": "x"},
                     headers={"If-Match": '"1"'}).status_code == 200


def test_a_patch_that_changes_nothing_writes_nothing(api: Caller):
    created = api.create(description="same", cron_expression="*/5 * * * *", timezone="UTC",
                         target={"kind": "webhook", "url": "https://example.com/hook",
                                 "headers": {"X-A": "1"}})
    path = f"/triggers/{created['id']}"
    for changes in ({}, {"description": "same"}, {"enabled": True},
                    {"cron_expression": "*/5 * * * *", "timezone": "UTC"},
                    {"target": {"kind": "webhook", "url": "https://example.com/hook",
                                "headers": {"X-A": "1"}}}):
        response = api.patch(path, json=changes, headers={"If-Match": '"1"'})
        assert response.status_code == 200, (changes, response.json)
        assert response.headers["ETag"] == '"1"' and response.json["version"] == 1
        assert response.json["updated_at"] == created["updated_at"]
        assert response.json["next_run_at"] == created["next_run_at"]
        assert response.json["signing_secret"] is None
    assert api.post(f"{path}/resume").json["version"] == 1
    assert api.patch(path, json={"description": "new"}).json["version"] == 2


def test_a_pause_note_shows_in_the_api_until_a_resume(
    api: Caller, db: sessionmaker[Session],
) -> None:
    trigger = api.create()
    with db.begin() as session:
        now = session.execute(select(func.now())).scalar_one()
        editing.pause_trigger(session, "acme", "proj-1", uuid.UUID(trigger["id"]), now=now,
                              note="  vendor outage  ")
    paused = api.get(f"/triggers/{trigger['id']}").json
    assert (paused["enabled"], paused["pause_note"], paused["version"]) == (
        False, "vendor outage", trigger["version"] + 2)
    resumed = api.post(f"/triggers/{trigger['id']}/resume").json
    assert (resumed["enabled"], resumed["pause_note"]) == (True, None)
    assert api.post(f"/triggers/{trigger['id']}/pause").json["pause_note"] is None


def test_a_trailing_slash_is_the_route_without_it(api: Caller):
    created = api.create()
    assert [t["id"] for t in api.get("/triggers/").json["items"]] == [created["id"]]
    assert api.get(f"/triggers/{created['id']}/").json["name"] == "nightly"
    assert api.post("/triggers/", json=trigger_body(name="second")).status_code == 201
    assert api.get("/api/v1/openapi.json/").status_code == 200


def test_a_misfire_grace_below_a_tick_says_the_grace_in_force(api: Caller):
    # The suite's tick is 60 s: no grace is taken below 90 s (one tick + 30 s).
    short = api.create(name="short", misfire_grace_s=0)
    assert (short["misfire_grace_s"], short["effective_misfire_grace_s"]) == (0, 90)
    long = api.create(name="long", misfire_grace_s=600)
    assert (long["misfire_grace_s"], long["effective_misfire_grace_s"]) == (600, 600)
    assert api.get(f"/triggers/{short['id']}").json["effective_misfire_grace_s"] == 90
