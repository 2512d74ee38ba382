"""The restart endpoint and /metrics, over HTTP."""

from __future__ import annotations

import dataclasses
import hmac
import logging

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from api import create_app
from app.config import Settings
from app.deploys import deploy
from app.deploys.deploy import read_state
from app.deploys.processes import RUN_QUEUE
from app.editing import apikeys
from app.enums import ProcessKind, ProcessRole
from app.models import Deployment
from tasks.celery_app import DISPATCH_QUEUE
from tests.integration.api.conftest import ADMIN_TOKEN, assert_error
from tests.support.processes import register, register_fleet

DEPLOY_TOKEN = "test-deploy-token-0123456789"  # the suite's settings (tests/conftest.py)
URL = "/api/deploy/restart-scheduler"


def _restart(client: FlaskClient, deployment_id: str, token: str | None = DEPLOY_TOKEN,
             **extra: object):
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    return client.post(URL, json={"deployment_id": deployment_id, **extra}, headers=headers)


def test_restart_activates_once_kicks_a_tick_and_a_retry_returns_the_same_generation(
    client: FlaskClient, db: sessionmaker[Session], settings: Settings
) -> None:
    broker = redis.Redis.from_url(settings.redis_url)
    broker.delete(DISPATCH_QUEUE)
    register_fleet(db, "3f2c1ab")
    register_fleet(db, "9e8d7c6")
    first = _restart(client, "3f2c1ab")
    again = _restart(client, "3f2c1ab")
    other = _restart(client, "9e8d7c6")
    assert (first.status_code, first.json) == (
        200, {"deployment_id": "3f2c1ab", "generation": 1, "changed": True})
    assert (again.status_code, again.json) == (
        200, {"deployment_id": "3f2c1ab", "generation": 1, "changed": False})
    assert other.json == {"deployment_id": "9e8d7c6", "generation": 2, "changed": True}
    with db.begin() as session:
        state = read_state(session)
    assert (state.active_deployment_id, state.generation) == ("9e8d7c6", 2)
    # Each call kicked one immediate dispatch tick.
    assert broker.llen(DISPATCH_QUEUE) == 3
    broker.delete(DISPATCH_QUEUE)
    broker.close()


@pytest.mark.parametrize(
    "token",
    [None, "wrong-token-of-the-same-len0", "short", DEPLOY_TOKEN + "x", "x" * 500],
    ids=["missing", "wrong", "shorter", "longer", "much-longer"],
)
def test_a_bad_deploy_token_gets_the_same_generic_401_and_changes_nothing(
    client: FlaskClient, db: sessionmaker[Session], token: str | None,
    caplog: pytest.LogCaptureFixture,
) -> None:
    reference = _restart(client, "v1", token="definitely-not-it")
    with caplog.at_level(logging.WARNING, logger="api.deploy"):
        response = _restart(client, "v1", token=token)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == reference.headers["WWW-Authenticate"]
    assert response.get_data() == reference.get_data()
    assert set(response.json) == {"code", "status", "message", "errors"}
    with db.begin() as session:
        assert read_state(session).generation == 0
    # Logged with the caller's address and the outcome, never the token.
    record = next(r for r in caplog.records if getattr(r, "action", "") == "deploy.restart")
    assert (record.outcome, record.caller) == ("unauthorized", "127.0.0.1")
    assert token is None or token not in caplog.text


def test_an_unconfigured_deploy_token_refuses_every_call_alike(
    settings: Settings, db: sessionmaker[Session]
) -> None:
    app: Flask = create_app(dataclasses.replace(settings, deploy_token=None))
    client = app.test_client()
    try:
        for token in (None, "", DEPLOY_TOKEN):
            response = _restart(client, "v1", token=token)
            assert (response.status_code, response.json["code"]) == (401, "unauthorized")
    finally:
        app.extensions["cronbeat"].engine.dispose()
    with db.begin() as session:
        assert read_state(session).generation == 0


def test_the_token_comparison_runs_over_two_fixed_length_digests_whatever_the_input(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    compared: list[tuple[int, int]] = []
    real = hmac.compare_digest

    def recording(a: bytes, b: bytes) -> bool:
        compared.append((len(a), len(b)))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", recording)
    for presented in ("", "s", DEPLOY_TOKEN, DEPLOY_TOKEN[:-1], "x" * 500):
        apikeys.tokens_equal(presented, DEPLOY_TOKEN)
    assert compared == [(32, 32)] * 5


def test_a_malformed_deployment_id_is_a_422_naming_the_field(
    client: FlaskClient, db: sessionmaker[Session]
) -> None:
    response = _restart(client, "has spaces")
    body = assert_error(response, 422, "deployment_id")
    assert body["errors"] == {"deployment_id": [
        "must be 1-100 of A-Z a-z 0-9 . _ : + -, starting with a letter or digit"]}
    with db.begin() as session:
        assert read_state(session).generation == 0


def test_metrics_are_public_prometheus_text(client: FlaskClient, db: sessionmaker[Session]) -> None:
    _restart(client, "v9", force=True)
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.content_type.startswith("text/plain; version=0.0.4")
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(response.get_data(as_text=True))
        for s in family.samples
    }
    assert samples[("cronbeat_scheduler_generation", ())] == 1
    assert samples[("cronbeat_active_deployment_info", (("deployment_id", "v9"),))] == 1
    assert samples[("cronbeat_due_backlog", ())] == 0


def test_metrics_require_the_metrics_token_when_one_is_configured(
    settings: Settings, db: sessionmaker[Session]
) -> None:
    token = "metrics-token-0123456789"
    app: Flask = create_app(dataclasses.replace(settings, metrics_token=token))
    client = app.test_client()
    try:
        assert client.get("/metrics").status_code == 401
        assert client.get("/metrics", headers={"Authorization": "Bearer nope"}).status_code == 401
        ok = client.get("/metrics", headers={"Authorization": f"Bearer {token}"})
        assert ok.status_code == 200
        assert "cronbeat_due_backlog 0.0" in ok.get_data(as_text=True)
    finally:
        app.extensions["cronbeat"].engine.dispose()


def _state(db: sessionmaker[Session]) -> tuple[str | None, int]:
    with db.begin() as session:
        state = read_state(session)
    return state.active_deployment_id, state.generation


@pytest.mark.parametrize(
    ("fleet", "missing"),
    [
        ([], "no live worker (a process consuming cronbeat.runs) and no live beat or dispatcher"),
        ([(ProcessKind.WORKER, (RUN_QUEUE,), 0.0)], "no live beat or dispatcher"),
        ([(ProcessKind.BEAT, (), 0.0), (ProcessKind.DISPATCHER, (DISPATCH_QUEUE,), 0.0)],
         "no live worker (a process consuming cronbeat.runs)"),
        # Dead processes (not seen for over LIVE_TTL_S) count for nothing.
        ([(ProcessKind.WORKER, (RUN_QUEUE,), 31.0), (ProcessKind.BEAT, (), 31.0)],
         "no live worker (a process consuming cronbeat.runs) and no live beat or dispatcher"),
    ],
    ids=["nobody", "worker-only", "no-worker", "dead"],
)
def test_activating_an_id_without_live_processes_is_a_409_that_changes_nothing(
    client: FlaskClient, db: sessionmaker[Session], settings: Settings,
    fleet: list[tuple[ProcessKind, tuple[str, ...], float]], missing: str,
) -> None:
    register_fleet(db, "v1")
    assert _restart(client, "v1").status_code == 200
    for kind, queues, age in fleet:
        register(db, "abc123", kind, queues, seen_s_ago=age)
    broker = redis.Redis.from_url(settings.redis_url)
    broker.delete(DISPATCH_QUEUE)
    response = _restart(client, "abc123")
    body = assert_error(response, 409)
    assert body["message"] == (
        f"deployment abc123 has {missing}: start its processes first (they wait as "
        "standbys), or force the activation")
    assert _state(db) == ("v1", 1)
    assert broker.llen(DISPATCH_QUEUE) == 0  # no tick kicked either
    with db.begin() as session:
        assert session.execute(select(func.count()).select_from(Deployment)).scalar_one() == 1
    forced = _restart(client, "abc123", force=True)
    assert (forced.status_code, forced.json) == (
        200, {"deployment_id": "abc123", "generation": 2, "changed": True})
    assert _state(db) == ("abc123", 2)
    broker.delete(DISPATCH_QUEUE)
    broker.close()


@pytest.mark.parametrize("force", ["yes", 1, "true", None])
def test_force_must_be_a_json_boolean(
    client: FlaskClient, db: sessionmaker[Session], force: object
) -> None:
    response = _restart(client, "abc123", force=force)
    expected = "Field may not be null." if force is None else "Not a valid boolean."
    assert assert_error(response, 422, "force")["errors"]["force"] == [expected]
    assert _state(db) == (None, 0)


def test_deploy_status_needs_the_admin_token_and_lists_live_processes_per_deployment(
    client: FlaskClient, db: sessionmaker[Session]
) -> None:
    assert client.get("/api/deploy/status").status_code == 401
    deploy_only = client.get("/api/deploy/status",
                             headers={"Authorization": f"Bearer {DEPLOY_TOKEN}"})
    assert deploy_only.status_code == 401
    register(db, "v2", ProcessKind.WORKER, (RUN_QUEUE,), role=ProcessRole.ACTIVE,
             consuming=True, pid=11)
    register(db, "v2", ProcessKind.BEAT, role=ProcessRole.ACTIVE, pid=12)
    register(db, "v1", ProcessKind.WORKER, (RUN_QUEUE,), role=ProcessRole.SUPERSEDED,
             consuming=False, pid=13)
    register(db, "v1", ProcessKind.BEAT, pid=14, seen_s_ago=120)  # dead: not listed
    with db.begin() as session:
        deploy.activate(session, "v1", force=True)
        deploy.activate(session, "v2")
    response = client.get("/api/deploy/status",
                          headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert response.status_code == 200
    body = response.json
    assert (body["active_deployment_id"], body["generation"], body["gating"]) == ("v2", 2, True)
    assert [(g["deployment_id"], g["standing"]) for g in body["deployments"]] == [
        ("v2", "active"), ("v1", "superseded")]
    shown = [(g["deployment_id"], p["kind"], p["pid"], p["role"], p["consuming"], p["queues"])
             for g in body["deployments"] for p in g["processes"]]
    assert shown == [
        ("v2", "beat", 12, "active", None, []),
        ("v2", "worker", 11, "active", True, ["cronbeat.runs"]),
        ("v1", "worker", 13, "superseded", False, ["cronbeat.runs"]),
    ]
