"""Every validation rule is a 4xx naming its field; every error has the one shape."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, sessionmaker

from app.models import Trigger
from tests.integration.api.conftest import Caller, assert_error, trigger_body

HOOK = "https://example.com/hook"
DEEP: list = [1]
for _ in range(40):
    DEEP = [DEEP]


def _hook(**fields: object) -> dict[str, object]:
    return {"kind": "webhook", "url": HOOK, **fields}


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"cron_expression": None}, "cron_expression"),
        ({"run_at": "2099-01-01T00:00:00Z"}, "run_at"),
        ({"cron_expression": "61 * * * *"}, "cron_expression"),
        ({"cron_expression": "0 0 30 2 *"}, "cron_expression"),
        ({"cron_expression": "* * *"}, "cron_expression"),
        ({"cron_expression": ""}, "cron_expression"),
        ({"timezone": "Mars/Olympus"}, "timezone"),
        ({"timezone": "localtime"}, "timezone"),
        ({"cron_expression": None, "run_at": "2001-01-01T00:00:00Z"}, "run_at"),
        ({"cron_expression": None, "run_at": "2099-01-01T00:00:00", "timezone": None},
         "run_at"),
        ({"cron_expression": None, "run_at": "tomorrow"}, "run_at"),
        ({"target": None}, "target"),
        ({"target": {"kind": "email"}}, "target.kind"),
        ({"target": "https://example.com"}, "target"),
        ({"target": _hook(url="ftp://example.com/x")}, "target.url"),
        ({"target": _hook(url="javascript:alert(1)")}, "target.url"),
        ({"target": _hook(url="https://example.com/" + "a" * 2048)}, "target.url"),
        ({"target": _hook(method="CONNECT")}, "target.method"),
        ({"target": _hook(headers={f"X-{n}": "v" for n in range(51)})}, "target.headers"),
        ({"target": _hook(headers={"X-Big": "v" * 1025})}, "target.headers"),
        ({"target": _hook(headers={"X-Split": "a\r\nInjected: 1"})}, "target.headers"),
        ({"target": _hook(headers={"Bad Name": "v"})}, "target.headers"),
        ({"target": _hook(headers={"Host": "internal"})}, "target.headers"),
        ({"target": _hook(signing_secret="hunter2")}, "target.signing_secret"),
        ({"target": _hook(extra=1)}, "target.extra"),
        ({"target": {"kind": "task"}}, "target.task_name"),
        ({"target": {"kind": "task", "task_name": "cronbeat.run_trigger"}}, "target.task_name"),
        ({"target": {"kind": "task", "task_name": "celery.backend_cleanup"}},
         "target.task_name"),
        ({"target": {"kind": "task", "task_name": "a.b", "queue": "cronbeat.runs"}},
         "target.queue"),
        ({"payload": {"blob": "x" * (64 * 1024)}}, "payload"),
        ({"payload": DEEP}, "payload"),
        ({"message_template": "x" * (16 * 1024 + 1)}, "message_template"),
        ({"name": ""}, "name"),
        ({"name": "has space"}, "name"),
        ({"name": "x" * 201}, "name"),
        ({"name": None}, "name"),
        ({"description": "x" * 2001}, "description"),
        ({"max_attempts": 0}, "max_attempts"),
        ({"max_attempts": 101}, "max_attempts"),
        ({"max_attempts": 1.5}, "max_attempts"),
        ({"max_attempts": "3"}, "max_attempts"),
        ({"backoff_base_s": -1}, "backoff_base_s"),
        ({"backoff_base_s": 10, "backoff_cap_s": 5}, "backoff_cap_s"),
        ({"timeout_s": 0}, "timeout_s"),
        ({"timeout_s": 3601}, "timeout_s"),
        ({"misfire_grace_s": -1}, "misfire_grace_s"),
        ({"misfire_grace_s": 2**31}, "misfire_grace_s"),
        ({"misfire_policy": "sometimes"}, "misfire_policy"),
        ({"overlap_policy": "queue"}, "overlap_policy"),
        ({"ref": "line\nbreak"}, "ref"),
        ({"enabled": "maybe"}, "enabled"),
        ({"surprise": True}, "surprise"),
        ({"next_run_at": "2099-01-01T00:00:00Z"}, "next_run_at"),
        ({"version": 9}, "version"),
    ],
)
def test_an_invalid_definition_is_a_422_naming_the_field(
    api: Caller, db: sessionmaker[Session], overrides: dict[str, object], field: str,
):
    body = trigger_body(**overrides)
    if "name" in overrides and overrides["name"] is None:
        body.pop("name", None)
    if "target" in overrides and overrides["target"] is None:
        body.pop("target", None)
    response = api.post("/triggers", json=body)
    assert_error(response, 422, field)
    assert "Traceback" not in response.get_data(as_text=True)
    with db.begin() as session:
        assert session.scalar(select(func.count()).select_from(Trigger)) == 0


def test_patch_validates_too_and_names_the_field(api: Caller):
    trigger = api.create()
    path = f"/triggers/{trigger['id']}"
    assert_error(api.patch(path, json={"cron_expression": "* * * * * *"}), 422,
                 "cron_expression")
    assert_error(api.patch(path, json={"cron_expression": "* * * * *",
                                       "run_at": "2099-01-01T00:00:00Z"}), 422, "run_at")
    assert_error(api.patch(path, json={"run_at": "2000-01-01T00:00:00Z"}), 422, "run_at")
    assert_error(api.patch(path, json={"backoff_base_s": 400}), 422, "backoff_cap_s")
    assert_error(api.patch(path, json={"enabled": None}), 422, "enabled")
    assert api.get(path).json["version"] == 1


def test_a_bad_project_id_is_a_422_naming_it(api: Caller):
    assert_error(api.get("/api/v1/projects/bad%20id/triggers"), 422, "project_id")
    assert_error(api.get("/api/v1/projects/" + "p" * 65 + "/triggers"), 422, "project_id")


def test_malformed_json_and_unstorable_values_are_a_400(api: Caller):
    for raw in ('{"name": ', "[1, NaN]", '{"payload": 1e999}', '{"name": "a\\u0000b"}',
                '{"name": "\\ud800"}', "[" * 5000 + "]" * 5000, b"\xff\xfe"):
        response = api.post("/triggers", data=raw, content_type="application/json")
        body = assert_error(response, 400, "body")
        assert body["code"] == "bad_request"


def test_a_body_that_is_not_json_is_a_415(api: Caller):
    response = api.post("/triggers", data="name=x",
                        content_type="application/x-www-form-urlencoded")
    assert_error(response, 415)
    assert_error(api.post("/triggers", data="{}", content_type="text/plain"), 415)


def test_an_empty_body_is_a_422_naming_the_required_fields(api: Caller):
    assert_error(api.post("/triggers", data="", content_type="application/json"), 422,
                 "name", "target")
    assert_error(api.post("/triggers"), 422, "name")


def test_a_too_large_body_is_a_413(api: Caller):
    response = api.post("/triggers", data="x" * (17 * 1024 * 1024),
                        content_type="application/json")
    assert_error(response, 413)


def test_unknown_routes_and_methods_have_the_error_shape(api: Caller):
    assert_error(api.get("/api/v1/nothing-here"), 404)
    assert_error(api.get("/triggers/not-a-uuid"), 404)
    response = api.call("PATCH", "/triggers")
    assert_error(response, 405)
    assert "GET" in response.headers["Allow"]


def test_nul_in_a_query_string_is_a_422(api: Caller):
    assert_error(api.get("/triggers?ref=a%00b"), 422, "ref")
    assert_error(api.get("/triggers?name_prefix=a%00b"), 422, "name_prefix")


@pytest.mark.parametrize("template", ["{{ ", "{{#open}}", "{{ x | no_such_filter }}",
                                      "{{/never_opened}}", "{{ " + "(" * 5000 + " }}"])
def test_a_template_that_does_not_compile_is_a_422_naming_it(
    api: Caller, db: sessionmaker[Session], template: str,
):
    assert_error(api.post("/triggers", json=trigger_body(message_template=template)), 422,
                 "message_template")
    with db.begin() as session:
        assert session.scalar(select(func.count()).select_from(Trigger)) == 0


def test_a_template_is_compiled_on_patch_and_sync_too(api: Caller):
    created = api.create(message_template="{{ trigger.name }} fired")
    path = f"/triggers/{created['id']}"
    assert_error(api.patch(path, json={"message_template": "{{/endif}}"}), 422,
                 "message_template")
    synced = api.put("/triggers", json={"triggers": [trigger_body(message_template="{{ ")]})
    assert_error(synced, 422, "triggers.nightly.message_template")
    assert api.get(path).json["message_template"] == "{{ trigger.name }} fired"


FAR = "9999-12-31T23:00:00+00:00"


def test_a_run_at_past_the_year_9000_is_a_422_wherever_it_comes_from(
    api: Caller, db: sessionmaker[Session],
):
    once = {"cron_expression": None, "run_at": FAR, "timezone": "Etc/GMT-14"}
    assert_error(api.post("/triggers", json=trigger_body(**once)), 422, "run_at")
    assert_error(api.post("/triggers", json=trigger_body(
        cron_expression=None, run_at="9999-12-31T23:00:00", timezone="Etc/GMT+12")),
        422, "run_at")
    assert_error(api.put("/triggers", json={"triggers": [trigger_body(**once)]}), 422,
                 "triggers.nightly.run_at")
    latest = api.create(cron_expression=None, run_at="8999-12-31T23:00:00+00:00")
    path = f"/triggers/{latest['id']}"
    shifted = api.patch(path, json={"timezone": "Etc/GMT-14"})
    assert shifted.status_code == 200, shifted.json
    assert shifted.json["schedule_description"] == "Once, at 9000-01-01T13:00:00+14:00"
    assert_error(api.patch(path, json={"run_at": FAR}), 422, "run_at")
    assert api.get("/triggers").status_code == 200


def test_a_stored_far_future_run_at_still_reads_and_is_refused_on_change(
    api: Caller, db: sessionmaker[Session],
):
    # A row saved before run_at was bounded: reads must not fail on it.
    created = api.create(cron_expression=None, run_at="2099-01-01T00:00:00Z",
                         timezone="Etc/GMT-14")
    far = dt.datetime(9999, 12, 31, 23, tzinfo=dt.UTC)
    with db.begin() as session:
        session.execute(update(Trigger).values(run_at=far, next_run_at=far))
    path = f"/triggers/{created['id']}"
    listed = api.get("/triggers")
    assert listed.status_code == 200, listed.get_data(as_text=True)
    assert listed.json["items"][0]["schedule_description"] == "Once, at 9999-12-31T23:00:00+00:00"
    assert api.get(path).status_code == 200
    preview = api.get(f"{path}/preview")
    assert preview.status_code == 200
    assert preview.json["next_run_times"] == [{"utc": FAR, "local": FAR}]
    assert_error(api.patch(path, json={"timezone": "Etc/GMT-12"}), 422, "run_at")
