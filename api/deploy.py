"""The deploy step: CI tells Cronbeat which deployment's scheduler is the only active one.

``POST /api/deploy/restart-scheduler`` with ``Authorization: Bearer
<CRONBEAT_DEPLOY_TOKEN>``. The token is compared over fixed-length digests in constant
time; every refusal is the same 401 with the same body, whether the token was missing,
wrong, of another length, or no token is configured at all. Every call is logged with
the caller's address and the outcome, never the token.
"""

from __future__ import annotations

import logging
from typing import Any

import marshmallow as ma
from flask import request
from marshmallow import fields, validate
from webargs.flaskparser import abort

from api.auth import bearer_token
from api.errors import UNAUTHORIZED_HEADERS
from api.parser import Blueprint
from api.schemas.fields import Str
from api.state import state
from app import apikeys
from tasks.deploying import DEPLOYMENT_ID_PATTERN, activate_deployment

log = logging.getLogger(__name__)

blp = Blueprint("deploy", __name__, url_prefix="/api/deploy",
                description="The deploy step, called by CI; CRONBEAT_DEPLOY_TOKEN.")
DEPLOY_ONLY = [{"deployToken": []}]


class RestartSchema(ma.Schema):
    deployment_id = Str(
        required=True,
        validate=validate.Regexp(f"^{DEPLOYMENT_ID_PATTERN.pattern}$",
                                 error="must be 1-100 of A-Z a-z 0-9 . _ : + -"),
    )


class ActivationSchema(ma.Schema):
    deployment_id = fields.String(required=True)
    generation = fields.Integer(required=True)
    changed = fields.Boolean(
        required=True, metadata={"description": "False when it was already the active one."})


def _caller() -> str:
    # The proxy's address when there is one; we do not trust X-Forwarded-For here.
    return request.remote_addr or "unknown"


@blp.before_request
def require_deploy_token() -> None:
    """Refuse the call unless it carries CRONBEAT_DEPLOY_TOKEN; log it either way."""
    token = bearer_token()
    expected = state().settings.deploy_token
    # Compared even when the token is missing or unconfigured, so timing tells nothing.
    matches = apikeys.tokens_equal(token or "", expected or "")
    if token is None or expected is None or not matches:
        log.warning("deploy call refused", extra={
            "action": "deploy.restart", "outcome": "unauthorized", "caller": _caller()})
        abort(401, headers=UNAUTHORIZED_HEADERS)


@blp.route("/restart-scheduler", methods=["POST"])
@blp.arguments(RestartSchema)
@blp.response(200, ActivationSchema)
@blp.doc(security=DEPLOY_ONLY)
def restart_scheduler(body: dict[str, Any]) -> Any:
    """Make a deployment the only active scheduler, then run a tick at once.

    Calling it again with the active deployment is a no-op that returns the same
    generation; of two calls with different ids, the last one wins.
    """
    api = state()
    activation = activate_deployment(api.sessions, api.celery, body["deployment_id"])
    log.warning("deploy call done", extra={
        "action": "deploy.restart", "outcome": "activated" if activation.changed else "unchanged",
        "caller": _caller(), "deployment_id": activation.deployment_id,
        "generation": activation.generation})
    return {"deployment_id": activation.deployment_id, "generation": activation.generation,
            "changed": activation.changed}
