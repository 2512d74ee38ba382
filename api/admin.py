"""The operator's API: create and revoke tenants' API keys (CRONBEAT_ADMIN_TOKEN)."""

from __future__ import annotations

import logging
import uuid
from typing import Any

from api import auth
from api.parser import Blueprint
from api.schemas.common import ApiKeyCreateSchema, NewApiKeySchema
from api.state import state, transaction
from app.editing import apikeys

log = logging.getLogger(__name__)

blp = Blueprint("admin", __name__, url_prefix="/api/v1/admin",
                description="Operator endpoints; authenticate with CRONBEAT_ADMIN_TOKEN.")
blp.before_request(auth.require_admin)
ADMIN_ONLY = [{"adminToken": []}]


def _key_view(row: Any) -> dict[str, Any]:
    return {"id": row.id, "tenant_id": row.tenant_id, "name": row.name,
            "created_at": row.created_at, "revoked_at": row.revoked_at}


@blp.route("/api-keys", methods=["POST"])
@blp.arguments(ApiKeyCreateSchema)
@blp.response(201, NewApiKeySchema)
@blp.alt_response(409, description="The tenant has a key of that name.")
@blp.doc(security=ADMIN_ONLY)
def create_api_key(body: dict[str, Any]) -> Any:
    """Create an API key for a tenant. The key is in this answer only."""
    with state().sessions.begin() as session:
        created = apikeys.create_api_key(session, body["tenant_id"], body["name"])
        session.refresh(created.api_key)
        view = {**_key_view(created.api_key), "key": created.key}
    log.info("api key created", extra={"action": "api_key.create",
                                       "tenant_id": body["tenant_id"], "key_id": view["id"]})
    return view


@blp.route("/api-keys/<uuid:key_id>", methods=["DELETE"])
@blp.response(204)
@blp.doc(security=ADMIN_ONLY)
def revoke_api_key(key_id: uuid.UUID) -> None:
    """Revoke an API key (again: no change)."""
    with transaction() as (session, now):
        apikeys.revoke_api_key_by_id(session, key_id, now=now)
    log.info("api key revoked", extra={"action": "api_key.revoke", "key_id": str(key_id)})
