"""The deploy step: CI tells Cronbeat which deployment's processes are the only active ones.

``POST /api/deploy/restart-scheduler`` with ``Authorization: Bearer
<CRONBEAT_DEPLOY_TOKEN>``. The token is compared over fixed-length digests in constant
time; every refusal is the same 401 with the same body, whether the token was missing,
wrong, of another length, or no token is configured at all. Every call is logged with
the caller's address and the outcome, never the token. An id with no live worker and
beat or dispatcher is refused with 409 unless ``force`` is true.

``GET /api/deploy/status`` with ``CRONBEAT_ADMIN_TOKEN``: the active deployment and the
live processes of each deployment.
"""

from __future__ import annotations

import logging
from typing import Any

import marshmallow as ma
from flask import request
from marshmallow import fields

from api import auth
from api.auth import bearer_token
from api.parser import Blueprint
from api.schemas.fields import FullMatch, Str, StrictBool
from api.state import state
from app.deploys import deploy
from app.deploys.deploy import DEPLOYMENT_ID_PATTERN, DEPLOYMENT_ID_RULE
from app.deploys.deploy_report import status_json
from app.deploys.deploying import activate_deployment
from app.editing import apikeys
from messaging.publisher import kick_tick

log = logging.getLogger(__name__)

blp = Blueprint("deploy", __name__, url_prefix="/api/deploy",
                description="The deploy step, called by CI; CRONBEAT_DEPLOY_TOKEN.")
DEPLOY_ONLY = [{"deployToken": []}]
ADMIN_ONLY = [{"adminToken": []}]


class RestartSchema(ma.Schema):
    deployment_id = Str(
        required=True,
        validate=FullMatch(f"^{DEPLOYMENT_ID_PATTERN.pattern}$",
                                 error=f"must be {DEPLOYMENT_ID_RULE}"),
    )
    # true or false only: a lax "yes" must not force an activation by accident.
    force = StrictBool(
        load_default=False,
        metadata={"description": "Activate even when no worker, beat or dispatcher of that "
                                 "id is live (they would start as standbys later)."},
    )


class ActivationSchema(ma.Schema):
    deployment_id = fields.String(required=True)
    generation = fields.Integer(required=True)
    changed = fields.Boolean(
        required=True, metadata={"description": "False when it was already the active one."})


def _caller() -> str:
    # The proxy's address when there is one; we do not trust X-Forwarded-For here.
    return request.remote_addr or "unknown"


class ProcessSchema(ma.Schema):
    id = fields.String(required=True)
    kind = fields.String(required=True, metadata={"description": "worker, dispatcher or beat"})
    hostname = fields.String(required=True)
    pid = fields.Integer(required=True)
    queues = fields.List(fields.String(), required=True)
    role = fields.String(required=True,
                         metadata={"description": "active, standby or superseded"})
    consuming = fields.Boolean(allow_none=True, required=True)
    problem = fields.String(allow_none=True, required=True)
    started_at = fields.String(required=True)
    last_seen_at = fields.String(required=True)
    seen_s_ago = fields.Float(required=True)


class DeploymentGroupSchema(ma.Schema):
    deployment_id = fields.String(allow_none=True, required=True)
    standing = fields.String(required=True,
                             metadata={"description": "active, superseded or standby"})
    last_activated_at = fields.String(allow_none=True, required=True)
    processes = fields.List(fields.Nested(ProcessSchema), required=True)


class DeployStatusSchema(ma.Schema):
    active_deployment_id = fields.String(allow_none=True, required=True)
    generation = fields.Integer(required=True)
    gating = fields.Boolean(required=True,
                            metadata={"description": "False until a deployment is activated."})
    deployments = fields.List(fields.Nested(DeploymentGroupSchema), required=True)


@blp.before_request
def require_token() -> None:
    """The status needs CRONBEAT_ADMIN_TOKEN; every other call CRONBEAT_DEPLOY_TOKEN."""
    if request.endpoint == f"{blp.name}.status":
        auth.require_admin()
        return
    token = bearer_token()
    expected = state().settings.deploy_token
    # Compared even when the token is missing or unconfigured, so timing tells nothing.
    matches = apikeys.tokens_equal(token or "", expected or "")
    if token is None or expected is None or not matches:
        log.warning("deploy call refused", extra={
            "action": "deploy.restart", "outcome": "unauthorized", "caller": _caller()})
        auth.unauthorized(auth.DEPLOY_TOKEN_REQUIRED)


@blp.route("/restart-scheduler", methods=["POST"])
@blp.arguments(RestartSchema)
@blp.response(200, ActivationSchema)
@blp.alt_response(409, description="No live worker, or no live beat or dispatcher, of that "
                                   "deployment, and force is false; nothing changed.")
@blp.doc(security=DEPLOY_ONLY)
def restart_scheduler(body: dict[str, Any]) -> Any:
    """Make a deployment the only active one, then run a tick at once.

    Its processes, started beforehand, wait as standbys and take over at once; the
    other deployments' processes stop taking work. Refused (409) when the deployment
    has no live worker or no live beat or dispatcher, unless `force` is true. Calling
    it again with the active deployment is a no-op that returns the same generation;
    of two calls with different ids, the last one wins.
    """
    api = state()
    try:
        activation = activate_deployment(api.sessions, lambda: kick_tick(api.celery),
                                         body["deployment_id"], force=body["force"])
    except deploy.ActivationRefused:
        log.warning("deploy call refused", extra={
            "action": "deploy.restart", "outcome": "refused", "caller": _caller(),
            "deployment_id": body["deployment_id"]})
        raise
    log.warning("deploy call done", extra={
        "action": "deploy.restart", "outcome": "activated" if activation.changed else "unchanged",
        "caller": _caller(), "deployment_id": activation.deployment_id,
        "generation": activation.generation})
    return {"deployment_id": activation.deployment_id, "generation": activation.generation,
            "changed": activation.changed}


@blp.route("/status", methods=["GET"])
@blp.response(200, DeployStatusSchema)
@blp.doc(security=ADMIN_ONLY)
def status() -> Any:
    """The active deployment and generation, and the live processes of each deployment."""
    with state().sessions.begin() as session:
        return status_json(deploy.status(session))
