"""Run now, invocation history, one invocation with its attempts, and cancel."""

from __future__ import annotations

import base64
import datetime as dt
import json
import uuid

import pytest
import redis
from flask import Flask
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from app.config import Settings
from app.enums import InvocationStatus
from app.models import Invocation, InvocationAttempt
from tasks.celery_app import RUN_QUEUE, RUN_TASK
from tests.integration.api.conftest import Caller, assert_error

UTC = dt.UTC


@pytest.fixture
def broker(settings: Settings):
    client = redis.Redis.from_url(settings.redis_url)
    client.delete(RUN_QUEUE)
    yield client
    client.delete(RUN_QUEUE)
    client.close()


def _messages(broker: redis.Redis) -> list[dict]:
    return [json.loads(raw) for raw in broker.lrange(RUN_QUEUE, 0, -1)]


def test_run_now_records_one_manual_invocation_and_publishes_it(
    api: Caller, db: sessionmaker[Session], broker: redis.Redis,
):
    trigger = api.create()
    response = api.post(f"/triggers/{trigger['id']}/run")
    assert response.status_code == 202
    body = response.json
    assert body["manual"] is True and body["status"] == "pending"
    assert body["trigger_id"] == trigger["id"] and body["enqueued_at"] is not None
    with db.begin() as session:
        rows = session.scalars(select(Invocation)).all()
        assert len(rows) == 1
        assert rows[0].manual and rows[0].enqueued_at is not None
        assert str(rows[0].id) == body["id"]
    messages = _messages(broker)
    assert len(messages) == 1
    assert messages[0]["headers"]["task"] == RUN_TASK
    assert messages[0]["headers"]["id"] == body["id"]
    # The message names the invocation's full key: its id and its day's instant.
    message_id, scheduled_for = json.loads(base64.b64decode(messages[0]["body"]))[0]
    assert (message_id, dt.datetime.fromisoformat(scheduled_for)) == (
        body["id"], dt.datetime.fromisoformat(body["scheduled_for"]))
    # The schedule is untouched.
    assert api.get(f"/triggers/{trigger['id']}").json["next_run_at"] == trigger["next_run_at"]
    last = api.get(f"/triggers/{trigger['id']}").json["last_invocation"]
    assert last["id"] == body["id"] and last["status"] == "pending" and last["manual"]


def test_run_now_survives_a_broker_outage_and_leaves_the_row_for_the_sweep(
    app: Flask, api: Caller, db: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch,
):
    trigger = api.create()

    def broker_down(*_: object, **__: object) -> int:
        raise ConnectionError("broker down")

    monkeypatch.setattr("api.publishing.publish_runs", broker_down)
    response = api.post(f"/triggers/{trigger['id']}/run")
    assert response.status_code == 202
    assert response.json["enqueued_at"] is None
    with db.begin() as session:
        row = session.scalars(select(Invocation)).one()
        assert row.status is InvocationStatus.PENDING and row.enqueued_at is None


def _invocation(db: sessionmaker[Session], trigger_id: str, minutes_ago: int,
                status: InvocationStatus = InvocationStatus.SUCCEEDED) -> Invocation:
    with db.begin() as session:
        row = Invocation(trigger_id=uuid.UUID(trigger_id), tenant_id="acme",
                         project_id="proj-1",
                         scheduled_for=dt.datetime(2026, 1, 1, tzinfo=UTC)
                         + dt.timedelta(minutes=1000 - minutes_ago),
                         status=status)
        session.add(row)
        session.flush()
        return row


def test_history_is_newest_first_paged_and_filterable(api: Caller, db: sessionmaker[Session]):
    trigger = api.create()
    for minutes_ago in range(5):
        _invocation(db, trigger["id"], minutes_ago,
                    InvocationStatus.FAILED if minutes_ago == 2 else InvocationStatus.SUCCEEDED)
    seen: list[str] = []
    url = f"/triggers/{trigger['id']}/invocations?limit=2"
    while url:
        page = api.get(url)
        assert page.status_code == 200, page.json
        seen += [item["scheduled_for"] for item in page.json["items"]]
        url = page.json["next"]
    assert len(seen) == 5 and seen == sorted(seen, reverse=True)
    failed = api.get(f"/triggers/{trigger['id']}/invocations?status=failed").json["items"]
    assert len(failed) == 1 and failed[0]["status"] == "failed"
    assert_error(api.get(f"/triggers/{trigger['id']}/invocations?status=bogus"), 422, "status")
    assert_error(api.get(f"/triggers/{trigger['id']}/invocations?cursor=x"), 422, "cursor")
    assert_error(api.get(f"/triggers/{uuid.uuid4()}/invocations"), 404)


def test_an_invocation_shows_its_attempts(api: Caller, db: sessionmaker[Session]):
    trigger = api.create()
    invocation = _invocation(db, trigger["id"], 0, InvocationStatus.FAILED)
    with db.begin() as session:
        for number, outcome in ((1, "error"), (2, "failed")):
            session.add(InvocationAttempt(
                invocation_id=invocation.id, scheduled_for=invocation.scheduled_for,
                number=number, outcome=outcome,
                started_at=dt.datetime(2026, 1, 1, tzinfo=UTC), response_status=500))
    body = api.get(f"/invocations/{invocation.id}").json
    assert [a["number"] for a in body["attempts"]] == [1, 2]
    assert body["attempts"][1]["outcome"] == "failed"


def test_cancel_pending_then_running_then_final(api: Caller, db: sessionmaker[Session]):
    trigger = api.create()
    pending = _invocation(db, trigger["id"], 0, InvocationStatus.PENDING)
    running = _invocation(db, trigger["id"], 1, InvocationStatus.RUNNING)
    done = _invocation(db, trigger["id"], 2, InvocationStatus.SUCCEEDED)
    cancelled = api.post(f"/invocations/{pending.id}/cancel")
    assert cancelled.status_code == 200 and cancelled.json["status"] == "cancelled"
    requested = api.post(f"/invocations/{running.id}/cancel")
    assert requested.json["status"] == "running" and requested.json["cancel_requested"]
    assert_error(api.post(f"/invocations/{done.id}/cancel"), 409)
    assert_error(api.post(f"/invocations/{pending.id}/cancel"), 409)


def test_another_tenant_sees_404_everywhere(
    api: Caller, other: Caller, db: sessionmaker[Session], broker: redis.Redis,
):
    trigger = api.create()
    invocation = _invocation(db, trigger["id"], 0, InvocationStatus.PENDING)
    tid, iid = trigger["id"], invocation.id
    attempts = [
        other.get(f"/triggers/{tid}"),
        other.patch(f"/triggers/{tid}", json={"description": "mine now"}),
        other.delete(f"/triggers/{tid}"),
        other.post(f"/triggers/{tid}/run"),
        other.post(f"/triggers/{tid}/pause"),
        other.post(f"/triggers/{tid}/resume"),
        other.get(f"/triggers/{tid}/preview"),
        other.get(f"/triggers/{tid}/invocations"),
        other.get(f"/invocations/{iid}"),
        other.post(f"/invocations/{iid}/cancel"),
    ]
    for response in attempts:
        assert_error(response, 404)
    assert other.get("/triggers").json["items"] == []
    assert other.delete("/triggers?ref=x").json == {"deleted": 0}
    # The same project id in another tenant is another project: its sync deletes nothing here.
    assert other.put("/triggers", json={"triggers": []}).json["deleted"] == []
    assert api.get(f"/triggers/{tid}").json["version"] == 1
    with db.begin() as session:
        assert session.scalar(select(func.count()).select_from(Invocation)) == 1
        assert session.get(Invocation, iid).status is InvocationStatus.PENDING
    assert _messages(broker) == []


def test_run_now_with_an_unreachable_broker_answers_quickly(
    settings: Settings, db: sessionmaker[Session],
):
    import dataclasses
    import time

    from api import create_app
    from tests.integration.api.conftest import mint_key

    app = create_app(dataclasses.replace(settings, redis_url="redis://127.0.0.1:9/0"))
    try:
        caller = Caller(app.test_client(), mint_key(db, "acme"))
        trigger = caller.create()
        started = time.monotonic()
        response = caller.post(f"/triggers/{trigger['id']}/run")
        assert response.status_code == 202 and response.json["enqueued_at"] is None
        assert time.monotonic() - started < 10
    finally:
        app.extensions["cronbeat"].engine.dispose()
