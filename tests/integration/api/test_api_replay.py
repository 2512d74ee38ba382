"""Replay: failed invocations run again as new manual ones, once each."""

from __future__ import annotations

import datetime as dt
import json
import time
import uuid

import pytest
import redis
from sqlalchemy import insert, select
from sqlalchemy.orm import Session, sessionmaker

from app.config import Settings
from app.enums import InvocationStatus
from app.firing.runner import run_invocation
from app.models import Invocation
from tests.integration.api.conftest import Caller, assert_error
from tests.support.receiver import Receiver
from tests.support.runs import no_task
from tests.support.worker import WorkerProcess

UTC = dt.UTC
T0 = dt.datetime(2026, 11, 20, 8, 0, tzinfo=UTC)
RUN_QUEUE = "cronbeat.runs"


def _run(db: sessionmaker[Session], trigger_id: str, minute: int,
         status: InvocationStatus = InvocationStatus.FAILED) -> str:
    with db.begin() as session:
        return str(session.execute(insert(Invocation).values(
            trigger_id=uuid.UUID(trigger_id), tenant_id="acme", project_id="proj-1",
            scheduled_for=T0 + dt.timedelta(minutes=minute), status=status,
            last_error="HTTP 500",
        ).returning(Invocation.id)).scalar_one())


def test_failed_runs_are_replayed_once_each_linked_and_published(
    api: Caller, other: Caller, db: sessionmaker[Session], settings: Settings,
) -> None:
    broker = redis.Redis.from_url(settings.redis_url)
    broker.delete(RUN_QUEUE)
    first, second = api.create(name="first"), api.create(name="second")
    failed = [_run(db, first["id"], 0), _run(db, second["id"], 1), _run(db, first["id"], 2)]
    _run(db, first["id"], 3, InvocationStatus.SUCCEEDED)

    counted = api.post("/invocations/replay", json={"dry_run": True})
    assert counted.status_code == 200, counted.json
    assert counted.json == {"dry_run": True, "matched": 3, "replayed": [], "trigger_deleted": 0}
    only = api.post("/invocations/replay", json={"trigger_ids": [second["id"]]}).json
    assert [r["original_id"] for r in only["replayed"]] == [failed[1]]
    rest = api.post("/invocations/replay", json={"limit": 1}).json
    assert (rest["matched"], [r["original_id"] for r in rest["replayed"]]) == (2, [failed[0]])
    last = api.post("/invocations/replay", json={
        "since": (T0 + dt.timedelta(minutes=2)).isoformat()}).json
    assert [r["original_id"] for r in last["replayed"]] == [failed[2]]
    # Everything is replayed once: a second call finds nothing.
    assert api.post("/invocations/replay", json={}).json["matched"] == 0

    replays = {r["original_id"]: r["invocation_id"]
               for body in (only, rest, last) for r in body["replayed"]}
    with db.begin() as session:
        rows = session.execute(select(Invocation).where(
            Invocation.id.in_([uuid.UUID(i) for i in replays.values()]))).scalars().all()
        originals = {str(r.id): r.scheduled_for for r in session.execute(select(Invocation).where(
            Invocation.id.in_([uuid.UUID(i) for i in replays]))).scalars()}
    assert sorted((str(r.replay_of), str(r.id), r.manual, r.status, r.occurrence_at)
                  for r in rows) == sorted(
        (original, replay_id, True, InvocationStatus.PENDING, originals[original])
        for original, replay_id in replays.items())
    published = sorted(json.loads(m)["headers"]["id"] for m in broker.lrange(RUN_QUEUE, 0, -1))
    assert published == sorted(replays.values())
    view = api.get(f"/invocations/{replays[failed[0]]}").json
    assert view["replay_of"] == failed[0] and view["manual"] is True
    broker.delete(RUN_QUEUE)
    broker.close()

    assert other.post("/invocations/replay", json={}).json["matched"] == 0
    assert_error(api.post("/invocations/replay", json={"status": "succeeded"}), 422, "status")
    assert_error(api.post("/invocations/replay", json={"limit": 0}), 422, "limit")
    assert_error(api.post("/invocations/replay", json={
        "since": T0.isoformat(), "until": T0.isoformat()}), 422, "until")


def test_a_replay_delivers_the_original_occurrence_with_a_new_webhook_id(
    api: Caller, db: sessionmaker[Session], settings: Settings, receiver: Receiver,
) -> None:
    trigger = api.create(target={"kind": "webhook", "url": receiver.url()},
                         payload={"report": "daily"})
    original = _run(db, trigger["id"], 0)
    replayed = api.post("/invocations/replay", json={}).json["replayed"]
    replay_id = replayed[0]["invocation_id"]

    run_invocation(db, settings, replay_id, send_task=no_task)

    (request,) = receiver.wait_for(1)
    body = json.loads(request.body)
    assert request.headers["webhook-id"] == replay_id != original
    assert (body["invocation"], body["scheduled_for"], body["payload"]) == (
        replay_id, "2026-11-20T08:00:00Z", {"report": "daily"})


def test_a_deleted_trigger_s_failures_are_counted_not_replayed(
    api: Caller, db: sessionmaker[Session],
) -> None:
    trigger = api.create()
    _run(db, trigger["id"], 0)
    assert api.delete(f"/triggers/{trigger['id']}").status_code == 204
    assert api.post("/invocations/replay", json={}).json == {
        "dry_run": False, "matched": 1, "replayed": [], "trigger_deleted": 1}


@pytest.mark.slow
def test_replaying_50_failed_runs_twice_delivers_each_once_more_exactly(
    api: Caller, db: sessionmaker[Session], celery_worker: WorkerProcess, receiver: Receiver,
) -> None:
    trigger = api.create(target={"kind": "webhook", "url": receiver.url()})
    originals = [_run(db, trigger["id"], minute) for minute in range(50)]
    first = api.post("/invocations/replay", json={})
    second = api.post("/invocations/replay", json={})
    assert first.status_code == second.status_code == 200, (first.json, second.json)
    assert sorted(r["original_id"] for r in first.json["replayed"]) == sorted(originals)
    assert (second.json["matched"], second.json["replayed"]) == (0, [])

    requests = receiver.wait_for(50, timeout_s=60)
    time.sleep(3)  # anything more would have arrived by now
    assert receiver.count == 50
    replay_ids = {r["invocation_id"] for r in first.json["replayed"]}
    assert {request.headers["webhook-id"] for request in requests} == replay_ids
    occurrences = sorted(json.loads(request.body)["scheduled_for"] for request in requests)
    assert occurrences == [(T0 + dt.timedelta(minutes=m)).isoformat().replace("+00:00", "Z")
                           for m in range(50)]
    with db.begin() as session:
        statuses = session.execute(select(Invocation.status).where(
            Invocation.replay_of.is_not(None))).scalars().all()
    assert statuses == [InvocationStatus.SUCCEEDED] * 50
