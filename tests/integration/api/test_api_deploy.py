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
from sqlalchemy.orm import Session, sessionmaker

from api import create_app
from app import apikeys
from app.config import Settings
from app.deploy import read_state
from tasks.celery_app import DISPATCH_QUEUE
from tests.integration.api.conftest import assert_error

DEPLOY_TOKEN = "test-deploy-token-0123456789"  # the suite's settings (tests/conftest.py)
URL = "/api/deploy/restart-scheduler"


def _restart(client: FlaskClient, deployment_id: str, token: str | None = DEPLOY_TOKEN):
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    return client.post(URL, json={"deployment_id": deployment_id}, headers=headers)


def test_restart_activates_once_kicks_a_tick_and_a_retry_returns_the_same_generation(
    client: FlaskClient, db: sessionmaker[Session], settings: Settings
) -> None:
    broker = redis.Redis.from_url(settings.redis_url)
    broker.delete(DISPATCH_QUEUE)
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
    assert body["errors"] == {"deployment_id": ["must be 1-100 of A-Z a-z 0-9 . _ : + -"]}
    with db.begin() as session:
        assert read_state(session).generation == 0


def test_metrics_are_public_prometheus_text(client: FlaskClient, db: sessionmaker[Session]) -> None:
    _restart(client, "v9")
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
