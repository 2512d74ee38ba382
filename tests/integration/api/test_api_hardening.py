"""Input and output hardening (issue 12): each case was reproduced against a live server."""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from zoneinfo import ZoneInfo

import pytest
from flask.testing import FlaskClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from app.config import Settings
from app.errors import ConfigError
from app.models import ApiKey, Trigger
from app.schedule import scheduling
from tests.conftest import ROOT
from tests.integration.api.conftest import ADMIN_TOKEN, Caller, assert_error, mint_key

UTC = dt.UTC


def _triggers(db: sessionmaker[Session]) -> int:
    with db.begin() as session:
        return session.execute(select(func.count()).select_from(Trigger)).scalar_one()


# 1. What is stored and served is bounded, not what was typed.

def test_a_payload_of_big_floats_is_bounded_as_stored_not_as_typed(
    api: Caller, db: sessionmaker[Session]
) -> None:
    typed = json.dumps([1e308] * 9000)  # 63 KB typed; 2.79 MB as JSONB renders it
    response = api.post("/triggers", data=f'{{"name": "big", "cron_expression": "@daily", '
                        f'"target": {{"kind": "webhook", "url": "https://example.com/h"}}, '
                        f'"payload": {typed}}}', content_type="application/json")
    body = assert_error(response, 422, "payload")
    assert "as stored" in body["errors"]["payload"][0]
    assert _triggers(db) == 0
    # 200 of them (62 KB as stored) are within the bound, and are served at that size.
    created = api.create(name="near", payload=[1e308] * 200)
    served = api.get(f"/triggers/{created['id']}").json["payload"]
    assert served == [10**308] * 200
    assert len(json.dumps(served, separators=(",", ":"))) <= 64 * 1024


def test_the_stored_size_counts_numbers_in_positional_notation() -> None:
    from api.schemas.fields import stored_json_bytes

    assert stored_json_bytes([1e308]) == 2 + 309
    assert stored_json_bytes({"a": 1.5e-7}) == len('{"a":0.00000015}')
    assert stored_json_bytes({"a": 0.5, "b": [1, "x"]}) == len('{"a":0.5,"b":[1,"x"]}')


# 3 and 10. Full-string patterns; no "." or ".." project.

@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/api/v1/admin/api-keys", {"tenant_id": "t1\n", "name": "k"}, "tenant_id"),
        ("/api/v1/admin/api-keys", {"tenant_id": "t1", "name": "k\n"}, "name"),
    ],
)
def test_a_trailing_newline_is_a_422_not_a_500(
    client: FlaskClient, db: sessionmaker[Session], path: str, body: dict[str, str],
    field: str,
) -> None:
    response = client.post(path, json=body, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert_error(response, 422, field)
    with db.begin() as session:
        assert session.execute(select(func.count()).select_from(ApiKey)).scalar_one() == 0


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"name": "nightly\n"}, "name"),
        ({"ref": "deploy-1\n"}, "ref"),
        ({"target": {"kind": "task", "task_name": "jobs.report\n"}}, "target"),
    ],
)
def test_trigger_names_refs_and_task_names_match_whole(
    api: Caller, db: sessionmaker[Session], overrides: dict[str, object], field: str
) -> None:
    body = {"name": "nightly", "cron_expression": "@daily",
            "target": {"kind": "webhook", "url": "https://example.com/h"}, **overrides}
    assert_error(api.post("/triggers", json=body), 422, field)
    assert api.get("/triggers?ref=deploy-1%0A").status_code == 422
    assert _triggers(db) == 0


@pytest.mark.parametrize("project", [".", ".."])
def test_dot_project_ids_are_refused(api: Caller, project: str) -> None:
    # Encoded, so the client does not resolve them away before sending.
    encoded = project.replace(".", "%2E")
    body = assert_error(api.get(f"/api/v1/projects/{encoded}/triggers"), 422, "project_id")
    assert body["errors"]["project_id"] == ["must be 1-64 of A-Z a-z 0-9 . _ -, and not . or .."]
    assert api.get("/api/v1/projects/.a/triggers").status_code == 200
    assert api.get("/api/v1/projects/...%2E/triggers").status_code == 200


# 4. A forged cursor is a 422 on cursor.

@pytest.mark.parametrize("offset", ["+16:00", "-16:30", "+23:59"])
def test_a_forged_cursor_with_an_impossible_offset_is_a_422(api: Caller, offset: str) -> None:
    trigger = api.create()
    forged = json.dumps([f"2026-06-01T12:00:00{offset}",
                         "00000000-0000-0000-0000-000000000000"], separators=(",", ":"))
    cursor = base64.urlsafe_b64encode(forged.encode()).decode().rstrip("=")
    response = api.get(f"/triggers/{trigger['id']}/invocations?cursor={cursor}")
    assert_error(response, 422, "cursor")
    ok = base64.urlsafe_b64encode(forged.replace(offset, "+15:59").encode()).decode()
    assert api.get(f"/triggers/{trigger['id']}/invocations?cursor={ok.rstrip('=')}"
                   ).status_code == 200


# 6. Strict JSON: no duplicate keys, booleans are booleans.

def test_a_key_given_twice_is_a_422_naming_it(api: Caller, db: sessionmaker[Session]) -> None:
    raw = ('{"name": "dup", "cron_expression": "@daily",'
           ' "target": {"kind": "webhook", "url": "https://a.example/h"},'
           ' "target": {"kind": "webhook", "url": "https://b.example/h"}}')
    body = assert_error(api.post("/triggers", data=raw, content_type="application/json"),
                        422, "target")
    assert body["errors"]["target"] == ["is given more than once; give each key once"]
    nested = '{"name": "dup", "target": {"kind": "webhook", "url": "u", "url": "v"}}'
    assert_error(api.post("/triggers", data=nested, content_type="application/json"), 422,
                 "url")
    assert _triggers(db) == 0


@pytest.mark.parametrize("value", ["yes", "on", "1", 1, 0, "true", None])
def test_enabled_must_be_a_json_boolean(api: Caller, value: object) -> None:
    trigger = api.create()
    body = assert_error(api.patch(f"/triggers/{trigger['id']}", json={"enabled": value}),
                        422, "enabled")
    assert body["errors"]["enabled"] in (["Not a valid boolean."], ["Field may not be null."])
    assert api.get(f"/triggers/{trigger['id']}").json["enabled"] is True


def test_query_booleans_are_true_or_false(api: Caller) -> None:
    api.create()
    assert [t["name"] for t in api.get("/triggers?enabled=true").json["items"]] == ["nightly"]
    assert_error(api.get("/triggers?enabled=yes"), 422, "enabled")


# 13. Error texts a new user meets.

def test_invalid_json_says_where_and_a_non_object_body_says_so(api: Caller) -> None:
    broken = api.post("/triggers", data='{"name": "x",\n "cron_expression": }',
                      content_type="application/json")
    body = assert_error(broken, 400, "body")
    assert body["message"] == ("The body is not valid JSON. Expecting value at line 2 "
                               "column 21.")
    for raw in ("[1, 2]", '"text"', "3"):
        body = assert_error(api.post("/triggers", data=raw, content_type="application/json"),
                            422, "body")
        assert body["message"] == "The body must be a JSON object."


@pytest.mark.parametrize(
    ("path", "headers", "wanted"),
    [
        ("/api/v1/projects/p/triggers", {}, "A valid API key is required"),
        ("/api/v1/admin/api-keys", {"Authorization": "Bearer nope-nope-nope-nope"},
         "The admin token is required (Authorization: Bearer <CRONBEAT_ADMIN_TOKEN>)."),
        ("/api/deploy/restart-scheduler", {},
         "The deploy token is required (Authorization: Bearer <CRONBEAT_DEPLOY_TOKEN>)."),
        ("/api/deploy/status", {}, "The admin token is required"),
    ],
)
def test_every_401_names_the_credential_its_route_wants(
    client: FlaskClient, path: str, headers: dict[str, str], wanted: str
) -> None:
    method = client.get if path.endswith(("triggers", "status")) else client.post
    response = method(path, headers=headers, json={} if method == client.post else None)
    body = assert_error(response, 401)
    assert body["message"].startswith(wanted)


# 11. No answer under /api/ is cached; one carrying a secret above all.

def test_answers_carrying_a_secret_are_not_stored_by_caches(
    api: Caller, client: FlaskClient
) -> None:
    created = api.post("/triggers", json={
        "name": "signed", "cron_expression": "@daily",
        "target": {"kind": "webhook", "url": "https://example.com/h"}})
    assert created.status_code == 201 and created.json["signing_secret"].startswith("whsec_")
    assert created.headers["Cache-Control"] == "no-store"
    key = client.post("/api/v1/admin/api-keys", json={"tenant_id": "t9", "name": "k"},
                      headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert key.status_code == 201 and key.headers["Cache-Control"] == "no-store"
    assert api.get("/triggers").headers["Cache-Control"] == "no-store"
    assert "Cache-Control" not in client.get("/api/v1/openapi.json").headers


# 8. A token the API could never accept is refused at start.

@pytest.mark.parametrize("name", ["CRONBEAT_ADMIN_TOKEN", "CRONBEAT_DEPLOY_TOKEN",
                                  "CRONBEAT_METRICS_TOKEN"])
def test_a_configured_token_over_512_characters_is_refused_by_name(
    settings: Settings, name: str
) -> None:
    env = {"DATABASE_URL": settings.database_url, "REDIS_URL": settings.redis_url}
    Settings.from_env({**env, name: "x" * 512})
    with pytest.raises(ConfigError) as refused:
        Settings.from_env({**env, name: "x" * 513})
    assert refused.value.message == f"{name} must be at most 512 characters long"
    assert "xxx" not in refused.value.message


# 9. A local run_at follows the fixed-time DST rule, like cron.

BERLIN = "Europe/Berlin"


@pytest.mark.parametrize(
    ("local", "utc"),
    [
        ("2027-03-28T02:30:00", "2027-03-28T01:00:00+00:00"),  # in the gap: the transition
        ("2027-03-28T02:00:00", "2027-03-28T01:00:00+00:00"),
        ("2027-03-28T03:00:00", "2027-03-28T01:00:00+00:00"),  # the same instant
        ("2027-03-28T01:59:00", "2027-03-28T00:59:00+00:00"),
        ("2027-10-31T02:30:00", "2027-10-31T00:30:00+00:00"),  # repeated: the first pass
        ("2027-10-31T03:00:00", "2027-10-31T02:00:00+00:00"),
    ],
)
def test_a_local_run_at_in_a_gap_or_an_overlap_follows_the_fixed_time_rule(
    api: Caller, local: str, utc: str
) -> None:
    trigger = api.create(name="once", cron_expression=None, run_at=local, timezone=BERLIN)
    assert trigger["run_at"] == utc
    assert trigger["next_run_at"] == utc
    wall = dt.datetime.fromisoformat(local)
    assert scheduling.local_instant(wall, ZoneInfo(BERLIN)).isoformat() == utc


def test_a_one_time_and_a_cron_trigger_at_the_same_gap_wall_time_fire_together() -> None:
    cron_next = scheduling.next_run_at("30 2 * * *", BERLIN,
                                       dt.datetime(2027, 3, 27, 12, tzinfo=UTC))
    once = scheduling.local_instant(dt.datetime(2027, 3, 28, 2, 30), ZoneInfo(BERLIN))
    assert cron_next == once == dt.datetime(2027, 3, 28, 1, 0, tzinfo=UTC)


# 5. A chunked body over the limit is a 413 at the real server, and nothing is created.

def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def server(test_services: object) -> Iterator[str]:
    """The API under gunicorn, as the Procfile runs it, on a free loopback port."""
    port = _free_port()
    env = {**os.environ, "CRONBEAT_ADMIN_TOKEN": ADMIN_TOKEN, "PORT": str(port)}
    process = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{port}", "--workers", "1",
         "--no-control-socket", "api.wsgi:app"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.1)
        yield f"127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=20)


def _chunked_post(address: str, key: str, body: bytes, padding: int) -> bytes:
    """POST ``body`` and ``padding`` bytes of whitespace, chunked; return the answer."""
    host, port = address.split(":")
    sock = socket.create_connection((host, int(port)), timeout=30)
    head = (f"POST /api/v1/projects/p1/triggers HTTP/1.1\r\nHost: {address}\r\n"
            f"Authorization: Bearer {key}\r\nContent-Type: application/json\r\n"
            "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n").encode()

    def send() -> None:
        try:
            sock.sendall(head + b"%x\r\n%s\r\n" % (len(body), body))
            left = padding
            piece = b" " * (256 * 1024)
            while left > 0:
                part = piece[:left]
                sock.sendall(b"%x\r\n%s\r\n" % (len(part), part))
                left -= len(part)
            sock.sendall(b"0\r\n\r\n")
        except OSError:
            pass  # the server answered and closed before the end: that is the point

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    answer = b""
    try:
        # Until the head and the Content-Length bytes of body it announces have come.
        while True:
            head, sep, body_part = answer.partition(b"\r\n\r\n")
            if sep:
                length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                               if line.lower().startswith(b"content-length:")), 0)
                if len(body_part) >= length:
                    break
            data = sock.recv(65536)
            if not data:
                break
            answer += data
    except OSError:
        pass
    finally:
        sender.join(timeout=30)
        sock.close()
    return answer


def test_a_chunked_body_over_the_limit_is_a_413_however_it_arrives(
    server: str, db: sessionmaker[Session]
) -> None:
    key = mint_key(db, "acme")
    trigger = json.dumps({"name": "chunked", "cron_expression": "@daily",
                          "target": {"kind": "webhook", "url": "https://example.com/h"}})
    over = _chunked_post(server, key, trigger.encode(), 17 * 1024 * 1024)
    assert over.startswith(b"HTTP/1.1 413 "), over[:200]
    assert b'"code":"payload_too_large"' in over
    assert _triggers(db) == 0
    within = _chunked_post(server, key, trigger.encode(), 1024 * 1024)
    assert within.startswith(b"HTTP/1.1 201 "), within[:300]
    assert _triggers(db) == 1


# 12. The document says what the API accepts.

def test_the_openapi_document_describes_the_inputs_it_checks() -> None:
    from api.openapi import spec_dict

    spec = spec_dict()
    schemas = spec["components"]["schemas"]
    fields = schemas["TriggerCreate"]["properties"]
    assert fields["cron_expression"]["pattern"].startswith("^(@(yearly|annually|")
    # Zones are a pattern (an enum of ~600 names breaks client generators), which every
    # zone name matches; the validation refuses host-only names such as localtime.
    zone = re.compile(fields["timezone"]["pattern"])
    assert all(zone.fullmatch(name) for name in scheduling.zone_names())
    assert fields["timezone"]["example"] == "Europe/Berlin"
    assert fields["payload"]["anyOf"] == [
        {"type": t, **({"items": {}} if t == "array" else {})}
        for t in ("object", "array", "string", "number", "boolean")]
    url = schemas["WebhookTarget"]["properties"]["url"]
    assert (url["format"], url["pattern"]) == ("uri", "^https?://[^/?#\\s]+")
    paths = spec["paths"]
    for action in ("pause", "resume"):
        operation = paths[f"/api/v1/projects/{{project_id}}/triggers/{{trigger_id}}/{action}"]
        assert "412" in operation["post"]["responses"]


# The same answers through the real server (gunicorn), not only the test client.

def _http(server: str, method: str, path: str, body: bytes | None,
          headers: dict[str, str]) -> tuple[int, dict[str, str], dict[str, object]]:
    import http.client

    connection = http.client.HTTPConnection(server, timeout=30)
    try:
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), json.loads(response.read())
    finally:
        connection.close()


def test_the_real_server_refuses_newlines_duplicates_and_lax_booleans_and_never_caches(
    server: str, db: sessionmaker[Session]
) -> None:
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}", "Content-Type": "application/json"}
    status, headers, body = _http(server, "POST", "/api/v1/admin/api-keys",
                                  b'{"tenant_id": "t1\\n", "name": "k"}', admin)
    assert (status, list(body["errors"])) == (422, ["tenant_id"])
    tenant = {"Authorization": f"Bearer {mint_key(db, 'acme')}",
              "Content-Type": "application/json"}
    status, _, body = _http(
        server, "POST", "/api/v1/projects/p1/triggers",
        b'{"name": "a", "name": "b", "cron_expression": "@daily",'
        b' "target": {"kind": "webhook", "url": "https://example.com/h"}}', tenant)
    assert (status, list(body["errors"])) == (422, ["name"])
    status, _, body = _http(
        server, "POST", "/api/v1/projects/p1/triggers",
        b'{"name": "a", "enabled": "yes", "cron_expression": "@daily",'
        b' "target": {"kind": "webhook", "url": "https://example.com/h"}}', tenant)
    assert (status, list(body["errors"])) == (422, ["enabled"])
    status, headers, body = _http(
        server, "POST", "/api/v1/projects/p1/triggers",
        b'{"name": "a", "cron_expression": "@daily",'
        b' "target": {"kind": "webhook", "url": "https://example.com/h"}}', tenant)
    assert status == 201 and str(body["signing_secret"]).startswith("whsec_")
    assert headers["Cache-Control"] == "no-store"
    assert _triggers(db) == 1


def test_the_metrics_401_names_the_metrics_token(settings: Settings, db: sessionmaker[Session]
                                                 ) -> None:
    import dataclasses

    from api import create_app

    app = create_app(dataclasses.replace(settings, metrics_token="metrics-token-0123456789"))
    try:
        body = assert_error(app.test_client().get("/metrics"), 401)
        assert body["message"] == ("The metrics token is required (Authorization: Bearer "
                                   "<CRONBEAT_METRICS_TOKEN>).")
    finally:
        app.extensions["cronbeat"].engine.dispose()
