"""Health probes, schedule validation, and the OpenAPI document."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from pathlib import Path

from flask.testing import FlaskClient

from api import create_app
from api.openapi import spec_text
from app.config import Settings
from tests.integration.api.conftest import Caller, assert_error, trigger_body

ROOT = Path(__file__).resolve().parents[3]


def test_healthz_and_readyz_say_ok_without_authentication(client: FlaskClient):
    assert client.get("/healthz").json == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json == {"status": "ok"}


def test_readyz_is_503_with_no_details_when_the_broker_is_down(settings: Settings):
    app = create_app(dataclasses.replace(settings, redis_url="redis://127.0.0.1:9/0"))
    try:
        response = app.test_client().get("/readyz")
    finally:
        app.extensions["cronbeat"].engine.dispose()
    assert response.status_code == 503 and response.json == {"status": "unavailable"}


def test_readyz_is_503_when_the_database_is_down(settings: Settings):
    app = create_app(dataclasses.replace(
        settings, database_url="postgresql+psycopg2://nobody@127.0.0.1:9/none"))
    try:
        response = app.test_client().get("/readyz")
    finally:
        app.extensions["cronbeat"].engine.dispose()
    assert response.status_code == 503 and response.json == {"status": "unavailable"}


def test_validate_describes_a_valid_schedule_and_its_next_five_times(api: Caller):
    response = api.post("/api/v1/schedules/validate",
                        json={"cron_expression": "30 2 * * *", "timezone": "Europe/Paris"})
    assert response.status_code == 200
    body = response.json
    assert body["valid"] is True and body["error"] is None
    assert body["description"] == "At 02:30 AM"
    times = [dt.datetime.fromisoformat(t) for t in body["next_run_times"]]
    assert len(times) == 5 and times == sorted(times)
    assert all(t.utcoffset() == dt.timedelta(0) for t in times)


def test_validate_answers_200_with_the_reason_when_invalid(api: Caller):
    for expression, zone, error in (("61 * * * *", "UTC", "bad minute field: 61 (minute is 0-59)"),
                                    ("0 0 * * *", "Mars/Olympus",
                                     "unknown time zone: Mars/Olympus"),
                                    ("0 0 30 2 *", "UTC", "never fires: 0 0 30 2 *")):
        response = api.post("/api/v1/schedules/validate",
                            json={"cron_expression": expression, "timezone": zone})
        assert response.status_code == 200
        assert response.json == {"valid": False, "error": error, "description": None,
                                 "next_run_times": []}
    assert_error(api.post("/api/v1/schedules/validate", json={}), 422, "cron_expression")


def test_validate_needs_a_key(client: FlaskClient):
    assert_error(client.post("/api/v1/schedules/validate",
                             json={"cron_expression": "* * * * *"}), 401)


def test_the_spec_and_its_browsable_ui_are_served(client: FlaskClient):
    spec = client.get("/api/v1/openapi.json")
    assert spec.status_code == 200 and spec.json["info"]["title"] == "Cronbeat"
    docs = client.get("/api/v1/docs")
    assert docs.status_code == 200 and b"swagger-ui" in docs.data
    # Its assets come from this app (the swagger-ui-bundle package), not a CDN.
    assert b'src="/api/v1/docs/assets/swagger-ui-bundle.js"' in docs.data
    bundle = client.get("/api/v1/docs/assets/swagger-ui-bundle.js")
    assert bundle.status_code == 200 and b"SwaggerUIBundle" in bundle.data
    # Only what the page loads: not the package's other files, nor a path out of it.
    for other in ("index.html", "swagger-initializer.js", "..%2F__init__.py"):
        assert client.get(f"/api/v1/docs/assets/{other}").status_code == 404


def test_openapi_json_in_the_repository_matches_the_code():
    stored = (ROOT / "openapi.json").read_text()
    assert stored == spec_text(), (
        "openapi.json is stale: run `cronbeat openapi > openapi.json` and commit it")
    assert json.loads(stored)["paths"]


def test_validate_takes_expressions_as_long_as_a_trigger_does(api: Caller):
    longest = "00 0 * * " + ",".join(["1"] * 96)  # 200 characters, a valid expression
    assert len(longest) == 200
    ok = api.post("/api/v1/schedules/validate", json={"cron_expression": longest})
    assert ok.status_code == 200 and ok.json["valid"] is True
    assert api.create(cron_expression=longest)["cron_expression"] == longest
    too_long = longest + ",1"
    assert_error(api.post("/api/v1/schedules/validate", json={"cron_expression": too_long}),
                 422, "cron_expression")
    assert_error(api.post("/triggers", json=trigger_body(name="x", cron_expression=too_long)),
                 422, "cron_expression")
