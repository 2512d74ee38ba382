"""cronbeat.client against a live web server on loopback: every method, its errors, and
its retries (503 and 429 only)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from flask import Flask
from sqlalchemy.orm import Session, sessionmaker

from cronbeat.client import Cronbeat, CronbeatError
from tests.integration.api.conftest import mint_key
from tests.support.code_sync import code_sync
from tests.support.receiver import Receiver, Reply, running_receiver

HOOK = {"kind": "webhook", "url": "https://example.com/hook"}


@pytest.fixture
def cronbeat(live_url: str, db: sessionmaker[Session]) -> Cronbeat:
    return Cronbeat(live_url, mint_key(db, "acme"), project="shop")


def test_triggers_from_create_to_delete(cronbeat: Cronbeat) -> None:
    created = cronbeat.create_trigger({"name": "nightly", "cron_expression": "30 2 * * *",
                                       "timezone": "Europe/Berlin", "target": HOOK})
    assert created["signing_secret"].startswith("whsec_") and created["version"] == 1
    trigger_id = created["id"]
    assert cronbeat.get_trigger(trigger_id)["schedule_description"] == "At 02:30 AM"
    for n in range(3):
        cronbeat.create_trigger({"name": f"more-{n}", "interval_s": 60, "target": HOOK})
    assert sorted(t["name"] for t in cronbeat.list_triggers(limit=2)) == [
        "more-0", "more-1", "more-2", "nightly"]  # three pages, followed
    updated = cronbeat.update_trigger(trigger_id, {"description": "the report"},
                                      if_version=1)
    assert (updated["description"], updated["version"]) == ("the report", 2)
    with pytest.raises(CronbeatError) as stale:
        cronbeat.update_trigger(trigger_id, {"description": "lost"}, if_version=1)
    assert stale.value.status == 412
    assert cronbeat.pause(trigger_id)["enabled"] is False
    assert cronbeat.resume(trigger_id)["enabled"] is True
    assert len(cronbeat.preview(trigger_id, count=3)["next_run_times"]) == 3
    run = cronbeat.run_now(trigger_id)
    assert run["manual"] is True and run["status"] == "pending"
    assert [i["id"] for i in cronbeat.invocations(trigger_id)] == [run["id"]]
    assert [i["id"] for i in cronbeat.invocations()] == [run["id"]]
    assert cronbeat.get_invocation(run["id"])["attempts"] == []
    assert cronbeat.cancel_invocation(run["id"])["status"] == "cancelled"
    cronbeat.delete_trigger(trigger_id, if_version=cronbeat.get_trigger(trigger_id)["version"])
    with pytest.raises(CronbeatError) as gone:
        cronbeat.get_trigger(trigger_id)
    assert gone.value.status == 404


def test_code_managed_triggers_are_refused_unless_forced(
    cronbeat: Cronbeat, app: Flask, db: sessionmaker[Session],
) -> None:
    code_sync(app, db, "acme", "shop", {"name": "daily", "interval_s": 60, "target": HOOK})
    [daily] = cronbeat.list_triggers()
    refused = []
    for call in (lambda: cronbeat.update_trigger(daily["id"], {"interval_s": 120}),
                 lambda: cronbeat.sync([]), lambda: cronbeat.delete_trigger(daily["id"])):
        with pytest.raises(CronbeatError) as error:
            call()
        refused.append((error.value.status, error.value.code))
    assert refused == [(409, "code_managed")] * 3
    assert cronbeat.update_trigger(daily["id"], {"interval_s": 120}, force=True)[
        "interval_s"] == 120
    cronbeat.delete_trigger(daily["id"], force=True)
    code_sync(app, db, "acme", "shop", {"name": "daily", "interval_s": 60, "target": HOOK})
    assert cronbeat.sync([], force=True)["deleted"] == ["daily"]
    assert list(cronbeat.list_triggers()) == []


def test_sync_with_a_dry_run_and_alert_channels_and_rules(cronbeat: Cronbeat) -> None:
    desired = [{"name": "a", "interval_s": 30, "target": HOOK},
               {"name": "b", "cron_expression": "0 9 * * 1-5", "target": HOOK}]
    plan = cronbeat.sync(desired, dry_run=True)
    assert (plan["dry_run"], plan["created"]) == (True, ["a", "b"])
    assert list(cronbeat.list_triggers()) == []
    assert cronbeat.sync(desired)["created"] == ["a", "b"]
    assert cronbeat.sync(desired)["unchanged"] == ["a", "b"]
    channel = cronbeat.create_alert_channel({"name": "ops", "url": "https://example.com/ops"})
    assert channel["signing_secret"].startswith("whsec_")
    assert [c["name"] for c in cronbeat.alert_channels()] == ["ops"]
    rule = cronbeat.set_alert_rule({"failures_in_a_row": 3})
    assert (rule["failures_in_a_row"], rule["source"]) == (3, "project")
    trigger_id = next(t["id"] for t in cronbeat.list_triggers() if t["name"] == "a")
    assert cronbeat.alert_rule(trigger_id)["source"] == "project"
    cronbeat.clear_alert_rule()
    cronbeat.delete_alert_channel(channel["id"])
    assert cronbeat.alert_channels() == []


def test_a_422_raises_with_the_field_errors_and_writes_nothing(cronbeat: Cronbeat) -> None:
    with pytest.raises(CronbeatError) as refused:
        cronbeat.create_trigger({"name": "bad", "cron_expression": "0 * * * *",
                                 "interval_s": 5, "target": HOOK})
    assert (refused.value.status, refused.value.code) == (422, "validation_error")
    one_kind = ["give exactly one of cron_expression, run_at or interval_s"]
    assert refused.value.errors == {"cron_expression": one_kind, "interval_s": one_kind}
    with pytest.raises(CronbeatError) as in_sync:
        cronbeat.sync([{"name": "x", "cron_expression": "nope", "target": HOOK}])
    assert "x" in in_sync.value.errors["triggers"]
    assert list(cronbeat.list_triggers()) == []


@pytest.fixture
def flaky() -> Iterator[Receiver]:
    yield from running_receiver()


def test_only_503_and_429_are_tried_again(flaky: Receiver) -> None:
    ok = Reply(200, body='{"id": "t", "name": "n"}', headers={"Content-Type": "application/json"})
    flaky.script(Reply(503), Reply(429, headers={"Retry-After": "0"}), ok)
    client = Cronbeat(flaky.url("").rstrip("/"), "cb_key", project="p", retries=3)
    assert client.get_trigger("t") == {"id": "t", "name": "n"}
    assert flaky.count == 3
    flaky.script(Reply(500, body='{"code": "server_error", "message": "boom", "errors": {}}'))
    with pytest.raises(CronbeatError) as failed:
        client.get_trigger("t")
    assert (failed.value.status, failed.value.code, flaky.count) == (500, "server_error", 4)
    assert flaky.requests[0].headers["Authorization"] == "Bearer cb_key"
