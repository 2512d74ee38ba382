"""API fixtures, layered as in the Flask tutorial: ``app`` -> ``client`` -> ``api``.

The app is built once per run from the suite's ``settings`` (real PostgreSQL and Redis);
``db`` empties the tables before each test that asks for a client.
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy.orm import Session, sessionmaker
from werkzeug.serving import make_server
from werkzeug.test import TestResponse

from api import create_app
from app.config import Settings
from app.editing import apikeys

ADMIN_TOKEN = "test-admin-token-0123456789"  # the suite's settings (tests/conftest.py)
PROJECT = "proj-1"
# The queues the suite's operator lets task targets use (CRONBEAT_TASK_QUEUES).
TASK_QUEUES = frozenset({"celery", "reports"})


@pytest.fixture(scope="session")
def app(settings: Settings) -> Iterator[Flask]:
    app = create_app(dataclasses.replace(settings, task_queues=TASK_QUEUES))
    app.config["TESTING"] = True
    yield app
    app.extensions["cronbeat"].engine.dispose()


@contextlib.contextmanager
def operator_queues(app: Flask, *names: str) -> Iterator[None]:
    """Run the block as if the operator had set CRONBEAT_TASK_QUEUES to ``names``."""
    state = app.extensions["cronbeat"]
    settings = dataclasses.replace(state.settings, task_queues=frozenset(names))
    app.extensions["cronbeat"] = dataclasses.replace(state, settings=settings)
    try:
        yield
    finally:
        app.extensions["cronbeat"] = state


@pytest.fixture
def client(app: Flask, db: sessionmaker[Session]) -> FlaskClient:
    return app.test_client()


def mint_key(db: sessionmaker[Session], tenant_id: str, name: str = "test") -> str:
    with db.begin() as session:
        return apikeys.create_api_key(session, tenant_id, name).key


class Caller:
    """A tenant's view of the API: its key on every request, paths under one project."""

    def __init__(self, client: FlaskClient, key: str, project: str = PROJECT) -> None:
        self.client = client
        self.key = key
        self.project = project

    def url(self, path: str) -> str:
        return path if path.startswith("/api/") else f"/api/v1/projects/{self.project}{path}"

    def call(self, method: str, path: str, **kwargs: Any) -> TestResponse:
        headers = {"Authorization": f"Bearer {self.key}", **kwargs.pop("headers", {})}
        return self.client.open(self.url(path), method=method, headers=headers, **kwargs)

    def get(self, path: str, **kwargs: Any) -> TestResponse:
        return self.call("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> TestResponse:
        return self.call("POST", path, **kwargs)

    def put(self, path: str, **kwargs: Any) -> TestResponse:
        return self.call("PUT", path, **kwargs)

    def patch(self, path: str, **kwargs: Any) -> TestResponse:
        return self.call("PATCH", path, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> TestResponse:
        return self.call("DELETE", path, **kwargs)

    def create(self, **overrides: Any) -> dict[str, Any]:
        """Create a trigger (a nightly webhook unless overridden); return its JSON."""
        response = self.post("/triggers", json=trigger_body(**overrides))
        assert response.status_code == 201, response.json
        return response.json


def trigger_body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": "nightly",
        "cron_expression": "30 2 * * *",
        "timezone": "Europe/Paris",
        "target": {"kind": "webhook", "url": "https://example.com/hook"},
    }
    body.update(overrides)
    return {key: value for key, value in body.items() if value is not None}


@pytest.fixture
def api(client: FlaskClient, db: sessionmaker[Session]) -> Caller:
    """Tenant ``acme``'s caller."""
    return Caller(client, mint_key(db, "acme"))


@pytest.fixture
def other(client: FlaskClient, db: sessionmaker[Session]) -> Caller:
    """Tenant ``globex``'s caller, same project id."""
    return Caller(client, mint_key(db, "globex"))


def assert_error(response: TestResponse, status: int, *fields: str) -> dict[str, Any]:
    """Check the one error shape, and that ``fields`` are named in it."""
    assert response.status_code == status, (response.status_code, response.get_data(True))
    body = response.json
    assert set(body) == {"code", "status", "message", "errors"}, body
    assert body["status"] == status and isinstance(body["code"], str)
    for field in fields:
        node: Any = body["errors"]
        for part in field.split("."):
            assert part in node, (field, body)
            node = node[part]
    return body


@pytest.fixture
def live_url(app: Flask) -> Iterator[str]:
    """The app served over HTTP on loopback (a real server, in a thread)."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.port}"
    server.shutdown()
    thread.join(10)
