"""The console over plain HTTP: what a browser test need not drive (cookies, odd input)."""

from __future__ import annotations

import re

from flask.testing import FlaskClient
from sqlalchemy.orm import Session, sessionmaker

from tests.integration.api.conftest import Caller, mint_key

TOKEN = re.compile(rb'name="csrf_token" value="([^"]+)"')


def _signed_in(client: FlaskClient, key: str) -> str:
    page = client.get("/console/sign-in")
    token = TOKEN.search(page.data).group(1).decode()
    answer = client.post("/console/sign-in", data={"csrf_token": token, "api_key": key})
    assert answer.status_code == 302 and answer.headers["Location"].endswith("/console/triggers")
    # Signing in starts a new session, with a new form token (no fixation).
    fresh = TOKEN.search(client.get("/console/triggers").data).group(1).decode()
    assert fresh != token
    return fresh


def test_the_cookie_is_http_only_strict_and_scoped_and_the_api_sets_none(
    client: FlaskClient, api: Caller, db: sessionmaker[Session],
) -> None:
    assert client.get("/console/triggers").headers["Location"].endswith("/console/sign-in")
    page = client.get("/console/sign-in")
    cookie = page.headers["Set-Cookie"]
    assert cookie.startswith("cronbeat_console=")
    assert {"HttpOnly", "SameSite=Strict", "Path=/console"} <= {
        part.strip() for part in cookie.split(";")}
    api.create()
    assert "Set-Cookie" not in api.get("/triggers").headers
    wrong = client.post("/console/sign-in", data={
        "csrf_token": TOKEN.search(page.data).group(1).decode(), "api_key": "cb_nope"})
    assert wrong.status_code == 401 and b"unknown or revoked" in wrong.data


def test_odd_input_is_a_page_not_a_500(
    client: FlaskClient, api: Caller, db: sessionmaker[Session],
) -> None:
    trigger = api.create(name="odd")
    token = _signed_in(client, mint_key(db, "acme", "console"))
    for query in ("q=%00x", "after_project=%00&after_name=%00", "state=bogus&failing=maybe"):
        assert client.get(f"/console/triggers?{query}").status_code == 200, query
    url = f"/console/projects/proj-1/triggers/{trigger['id']}"
    assert client.post(f"{url}/pause", data={"csrf_token": token,
                                             "note": "a\x00b" + "x" * 600}).status_code == 302
    assert api.get(f"/triggers/{trigger['id']}").json["pause_note"] == "ab" + "x" * 498
    assert client.post(f"{url}/pause", data={"note": "no token"}).status_code == 400
    assert client.get("/console/projects/proj-1/triggers/not-a-uuid").status_code == 404
    assert client.post("/console/projects/proj-1/invocations/"
                       "00000000-0000-0000-0000-000000000000/cancel",
                       data={"csrf_token": token}).status_code == 404


def test_an_interval_trigger_shows_its_period_anchor_and_next_runs(
    client: FlaskClient, api: Caller, db: sessionmaker[Session],
) -> None:
    created = api.post("/triggers", json={
        "name": "every-90", "interval_s": 90, "start_at": "2099-01-01T00:00:00Z",
        "timezone": "Europe/Berlin", "target": {"kind": "webhook",
                                                "url": "https://example.com/hook"}}).json
    _signed_in(client, mint_key(db, "acme", "console"))
    listing = client.get("/console/triggers").get_data(as_text=True)
    assert "every 90 s" in listing and "Every 90 seconds" in listing
    page = client.get(f"/console/projects/proj-1/triggers/{created['id']}").get_data(
        as_text=True)
    assert "every 90 s from 2099-01-01T00:00:00+00:00" in page
    assert "Every 90 seconds" in page
    # The next runs, in UTC and Berlin time: the anchor, then every 90 s.
    next_runs = re.findall(r'<tr class="next-run"><td><time datetime="([^"]+)">.*?'
                           r'<time datetime="([^"]+)">', page)
    assert next_runs[:3] == [
        ("2099-01-01T01:00:00+01:00", "2099-01-01T00:00:00+00:00"),
        ("2099-01-01T01:01:30+01:00", "2099-01-01T00:01:30+00:00"),
        ("2099-01-01T01:03:00+01:00", "2099-01-01T00:03:00+00:00")]
