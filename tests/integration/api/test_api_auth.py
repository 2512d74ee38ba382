"""Authentication: tenants' API keys, the admin token, and the key endpoints."""

from __future__ import annotations

import hashlib
import uuid

import pytest
from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from app.models import ApiKey
from tests.integration.api.conftest import ADMIN_TOKEN, Caller, assert_error

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@pytest.mark.parametrize(
    "authorization",
    [None, "", "Bearer", "Bearer ", "Basic Y2I6eA==", "Bearer cb_unknown", "Bearer not-ours",
     "Bearer " + "x" * 600, "bearer\tcb_x"],
)
def test_a_missing_or_bad_key_is_a_401_with_www_authenticate(
    client: FlaskClient, authorization: str | None,
):
    headers = {} if authorization is None else {"Authorization": authorization}
    response = client.get("/api/v1/projects/p/triggers", headers=headers)
    body = assert_error(response, 401)
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert body["code"] == "unauthorized"


def test_only_the_digest_of_a_key_is_stored(api: Caller, db: sessionmaker[Session]):
    with db.begin() as session:
        row = session.scalars(select(ApiKey)).one()
    assert row.key_hash == hashlib.sha256(api.key.encode()).hexdigest()
    assert api.key.startswith("cb_") and api.key not in row.key_hash


def test_admin_creates_a_key_that_works_then_revokes_it(client: FlaskClient):
    created = client.post("/api/v1/admin/api-keys", headers=ADMIN,
                          json={"tenant_id": "acme", "name": "ci"})
    assert created.status_code == 201, created.json
    key = created.json["key"]
    assert key.startswith("cb_") and created.json["revoked_at"] is None
    caller = Caller(client, key)
    assert caller.get("/triggers").status_code == 200
    duplicate = client.post("/api/v1/admin/api-keys", headers=ADMIN,
                            json={"tenant_id": "acme", "name": "ci"})
    assert_error(duplicate, 409)
    revoked = client.delete(f"/api/v1/admin/api-keys/{created.json['id']}", headers=ADMIN)
    assert revoked.status_code == 204
    assert_error(caller.get("/triggers"), 401)
    again = client.delete(f"/api/v1/admin/api-keys/{created.json['id']}", headers=ADMIN)
    assert again.status_code == 204
    assert_error(client.delete(f"/api/v1/admin/api-keys/{uuid.uuid4()}", headers=ADMIN), 404)


def test_admin_endpoints_refuse_tenant_keys_and_bad_tokens(client: FlaskClient, api: Caller):
    for headers in ({}, {"Authorization": f"Bearer {api.key}"},
                    {"Authorization": f"Bearer {ADMIN_TOKEN}x"}):
        response = client.post("/api/v1/admin/api-keys", headers=headers,
                               json={"tenant_id": "acme", "name": "x"})
        assert_error(response, 401)


def test_admin_input_is_validated(client: FlaskClient):
    for body, field in (({"tenant_id": "a b", "name": "x"}, "tenant_id"),
                        ({"tenant_id": "a", "name": ""}, "name"),
                        ({"tenant_id": "a", "name": "x", "extra": 1}, "extra")):
        response = client.post("/api/v1/admin/api-keys", headers=ADMIN, json=body)
        assert_error(response, 422, field)


def test_a_tenant_api_key_is_not_an_admin_token(client: FlaskClient, api: Caller):
    response = client.delete(f"/api/v1/admin/api-keys/{uuid.uuid4()}",
                             headers={"Authorization": f"Bearer {api.key}"})
    assert_error(response, 401)
