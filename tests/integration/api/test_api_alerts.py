"""The alerts API: channels and their test delivery, rules, history; bad input, tenants."""

from __future__ import annotations

import dataclasses
import json
import logging

import pytest
from flask import Flask
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker
from standardwebhooks.webhooks import Webhook

from app.delivery.netguard import REFUSED_MESSAGE
from app.editing.alerts import MAX_CHANNELS_PER_PROJECT
from app.models import Alert, AlertChannel, AlertRule
from tests.integration.api.conftest import Caller, assert_error
from tests.support.receiver import Receiver, Reply
from tests.support.runs import new_secret

DEFAULT_RULE = {"on_failure": True, "failures_in_a_row": 1, "on_missed": True,
                "late_after_s": None, "on_recovery": True, "on_didnt_run": True}


def _count(db: sessionmaker[Session], model: type) -> int:
    with db.begin() as session:
        return session.scalar(select(func.count()).select_from(model)) or 0


def test_channels_are_created_listed_changed_and_deleted_with_the_secret_shown_once(
    api: Caller, db: sessionmaker[Session],
) -> None:
    created = api.post("/alerts/channels", json={
        "name": "ops", "url": "https://bot:hunter2@example.com/alerts"})
    assert created.status_code == 201, created.json
    channel = created.json
    secret = channel["signing_secret"]
    assert secret.startswith("whsec_") and len(secret) == 38
    assert channel["url"] == "https://bot:<redacted>@example.com/alerts"
    assert (channel["name"], channel["enabled"], channel["project_id"]) == ("ops", True,
                                                                            "proj-1")
    listed = api.get("/alerts/channels").json["items"]
    assert [(c["id"], c["signing_secret"]) for c in listed] == [(channel["id"], None)]
    path = f"/alerts/channels/{channel['id']}"
    assert api.get(path).json["signing_secret"] is None
    changed = api.patch(path, json={"name": "pager", "enabled": False, "rotate_secret": True})
    assert changed.status_code == 200, changed.json
    assert (changed.json["name"], changed.json["enabled"]) == ("pager", False)
    assert changed.json["signing_secret"] not in (None, secret)
    own = new_secret()
    assert api.patch(path, json={"signing_secret": own}).json["signing_secret"] == own
    assert api.patch(path, json={"url": "https://example.org/a"}).json["signing_secret"] is None
    with db.begin() as session:
        stored = session.execute(select(AlertChannel)).scalar_one()
    assert (stored.signing_secret, stored.url, stored.enabled) == (own, "https://example.org/a",
                                                                  False)
    assert api.delete(path).status_code == 204
    assert_error(api.get(path), 404)
    assert _count(db, AlertChannel) == 0


def test_a_taken_name_and_the_channel_cap_are_409s(api: Caller, db: sessionmaker[Session]) -> None:
    for n in range(MAX_CHANNELS_PER_PROJECT):
        assert api.post("/alerts/channels", json={
            "name": f"c{n}", "url": "https://example.com/a"}).status_code == 201
    assert_error(api.post("/alerts/channels", json={"name": "c0", "url": "https://e.com/a"}),
                 409, "name")
    body = assert_error(api.post("/alerts/channels", json={
        "name": "one-more", "url": "https://example.com/a"}), 409)
    assert body["message"] == f"a project has at most {MAX_CHANNELS_PER_PROJECT} alert channels"
    first = api.get("/alerts/channels").json["items"][0]["id"]
    assert_error(api.patch(f"/alerts/channels/{first}", json={"name": "c1"}), 409, "name")
    assert _count(db, AlertChannel) == MAX_CHANNELS_PER_PROJECT


@pytest.mark.parametrize(("body", "field"), [
    ({"url": "https://example.com/a"}, "name"),
    ({"name": "ops"}, "url"),
    ({"name": "ops", "url": "ftp://example.com/a"}, "url"),
    ({"name": "ops", "url": "https://example.com:99999/a"}, "url"),
    ({"name": "has space", "url": "https://example.com/a"}, "name"),
    ({"name": "ops", "url": "https://example.com/a", "signing_secret": "whsec_short"},
     "signing_secret"),
    ({"name": "ops", "url": "https://example.com/a", "enabled": "yes"}, "enabled"),
    ({"name": "ops", "url": "https://example.com/a", "colour": "red"}, "colour"),
])
def test_a_bad_channel_is_a_422_naming_the_field_and_writes_nothing(
    api: Caller, db: sessionmaker[Session], body: dict[str, object], field: str,
) -> None:
    assert_error(api.post("/alerts/channels", json=body), 422, field)
    assert _count(db, AlertChannel) == 0


def test_rules_inherit_trigger_from_project_from_the_default(
    api: Caller, db: sessionmaker[Session],
) -> None:
    trigger = api.create()
    trigger_rule = f"/triggers/{trigger['id']}/alerts/rule"
    assert api.get("/alerts/rule").json == {**DEFAULT_RULE, "source": "default"}
    assert api.get(trigger_rule).json == {**DEFAULT_RULE, "source": "default"}
    project = api.put("/alerts/rule", json={"failures_in_a_row": 3, "late_after_s": 120})
    assert project.status_code == 200, project.json
    assert project.json == {**DEFAULT_RULE, "failures_in_a_row": 3, "late_after_s": 120,
                            "source": "project"}
    assert api.get(trigger_rule).json["source"] == "project"
    own = api.put(trigger_rule, json={"on_recovery": False})
    assert own.json == {**DEFAULT_RULE, "on_recovery": False, "source": "trigger"}
    assert api.get(trigger_rule).json == own.json
    assert api.get("/alerts/rule").json["failures_in_a_row"] == 3
    assert api.delete(trigger_rule).status_code == 204
    assert api.get(trigger_rule).json["source"] == "project"
    assert_error(api.delete(trigger_rule), 404)
    assert api.delete("/alerts/rule").status_code == 204
    assert api.get(trigger_rule).json["source"] == "default"
    assert _count(db, AlertRule) == 0


@pytest.mark.parametrize(("body", "field"), [
    ({"failures_in_a_row": 0}, "failures_in_a_row"),
    ({"failures_in_a_row": 1001}, "failures_in_a_row"),
    ({"late_after_s": 0}, "late_after_s"),
    ({"late_after_s": "soon"}, "late_after_s"),
    ({"on_failure": "yes"}, "on_failure"),
    ({"on_everything": True}, "on_everything"),
])
def test_a_bad_rule_is_a_422_naming_the_field_and_writes_nothing(
    api: Caller, db: sessionmaker[Session], body: dict[str, object], field: str,
) -> None:
    trigger = api.create()
    assert_error(api.put("/alerts/rule", json=body), 422, field)
    assert_error(api.put(f"/triggers/{trigger['id']}/alerts/rule", json=body), 422, field)
    assert _count(db, AlertRule) == 0


def test_a_test_alert_is_delivered_signed_and_recorded_and_a_failure_is_reported(
    api: Caller, receiver: Receiver, db: sessionmaker[Session], caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    channel = api.post("/alerts/channels", json={"name": "ops", "url": receiver.url("/a")}).json
    secret = channel["signing_secret"]
    receiver.script(Reply(200), Reply(500, body="down"))
    sent = api.post(f"/alerts/channels/{channel['id']}/test")
    assert sent.status_code == 200, sent.json
    assert (sent.json["kind"], sent.json["status"], sent.json["attempts"],
            sent.json["response_status"], sent.json["last_error"]) == (
        "test", "delivered", 1, 200, None)
    [request] = receiver.wait_for(1)
    headers = {name.lower(): value for name, value in request.headers.items()}
    Webhook(secret).verify(request.body, headers)
    body = json.loads(request.body)
    assert headers["webhook-id"] == body["alert_id"] == sent.json["id"]
    assert body == sent.json["body"]
    assert (body["type"], body["tenant_id"], body["project_id"], body["link"]) == (
        "test", "acme", "proj-1", "/console/projects/proj-1")
    failed = api.post(f"/alerts/channels/{channel['id']}/test").json
    assert (failed["status"], failed["response_status"], failed["last_error"]) == (
        "failed", 500, "HTTP 500")
    history = api.get("/alerts").json["items"]
    assert [(a["id"], a["status"]) for a in history] == [
        (failed["id"], "failed"), (sent.json["id"], "delivered")]
    assert secret not in caplog.text


def test_a_test_alert_to_a_private_address_is_refused_unless_the_operator_allows_it(
    api: Caller, app: Flask, receiver: Receiver,
) -> None:
    channel = api.post("/alerts/channels", json={"name": "ops", "url": receiver.url()}).json
    state = app.extensions["cronbeat"]
    app.extensions["cronbeat"] = dataclasses.replace(
        state, settings=dataclasses.replace(state.settings, allow_private_targets=False))
    try:
        refused = api.post(f"/alerts/channels/{channel['id']}/test").json
    finally:
        app.extensions["cronbeat"] = state
    assert (refused["status"], refused["last_error"]) == ("failed", REFUSED_MESSAGE)
    assert receiver.count == 0


def test_the_alert_history_pages_and_filters(api: Caller, receiver: Receiver) -> None:
    channel = api.post("/alerts/channels", json={"name": "ops", "url": receiver.url()}).json
    receiver.script(Reply(200), Reply(500), Reply(200))
    ids = [api.post(f"/alerts/channels/{channel['id']}/test").json["id"] for _ in range(3)]
    first = api.get("/alerts", query_string={"limit": 2}).json
    assert [a["id"] for a in first["items"]] == [ids[2], ids[1]]
    rest = api.get(first["next"]).json
    assert ([a["id"] for a in rest["items"]], rest["next"]) == ([ids[0]], None)
    failed = api.get("/alerts", query_string={"status": "failed", "kind": "test"}).json
    assert [a["id"] for a in failed["items"]] == [ids[1]]
    assert api.get("/alerts", query_string={"kind": "missed"}).json["items"] == []
    assert_error(api.get("/alerts", query_string={"kind": "loud"}), 422, "kind")
    assert_error(api.get("/alerts", query_string={"cursor": "nope"}), 422, "cursor")


def test_another_tenant_sees_and_touches_none_of_it(
    api: Caller, other: Caller, db: sessionmaker[Session], receiver: Receiver,
) -> None:
    channel = api.post("/alerts/channels", json={"name": "ops", "url": receiver.url()}).json
    trigger = api.create()
    api.put("/alerts/rule", json={"failures_in_a_row": 2})
    api.post(f"/alerts/channels/{channel['id']}/test")
    path = f"/alerts/channels/{channel['id']}"
    assert other.get("/alerts/channels").json == {"items": []}
    assert other.get("/alerts").json["items"] == []
    assert other.get("/alerts/rule").json["source"] == "default"
    assert_error(other.get(path), 404)
    assert_error(other.patch(path, json={"enabled": False}), 404)
    assert_error(other.delete(path), 404)
    assert_error(other.post(f"{path}/test"), 404)
    assert_error(other.get(f"/triggers/{trigger['id']}/alerts/rule"), 404)
    assert_error(other.put(f"/triggers/{trigger['id']}/alerts/rule", json={}), 404)
    assert receiver.count == 1
    with db.begin() as session:
        assert session.scalar(select(AlertChannel.enabled)) is True
        assert session.scalar(select(func.count()).select_from(AlertRule)) == 1
        assert session.scalar(select(func.count()).select_from(Alert)) == 1


def test_alerts_need_an_api_key(client, db: sessionmaker[Session]) -> None:
    assert_error(client.get("/api/v1/projects/proj-1/alerts/channels"), 401)
    assert_error(client.post("/api/v1/projects/proj-1/alerts/channels",
                             json={"name": "ops", "url": "https://example.com/a"}), 401)
    assert _count(db, AlertChannel) == 0
