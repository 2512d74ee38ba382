"""``GET /metrics``: the operator's numbers in the Prometheus text format, from the database."""

from __future__ import annotations

from flask import Response

from api import auth
from api.auth import bearer_token
from api.parser import Blueprint
from api.state import state
from app.editing import apikeys
from app.metrics import collect, render

blp = Blueprint("metrics", __name__, description="Prometheus metrics for operators.")
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


@blp.before_request
def require_metrics_token() -> None:
    """When CRONBEAT_METRICS_TOKEN is set, the scraper must send it as a bearer token."""
    expected = state().settings.metrics_token
    if expected is None:
        return
    token = bearer_token()
    if not apikeys.tokens_equal(token or "", expected) or token is None:
        auth.unauthorized(auth.METRICS_TOKEN_REQUIRED)


@blp.route("/metrics", methods=["GET"])
@blp.doc(security=[], responses={"200": {
    "description": "Prometheus text exposition format.",
    "content": {"text/plain": {"schema": {"type": "string"}}}}})
def metrics() -> Response:
    """Scheduler metrics computed from the database (the same from every web process).

    Open unless CRONBEAT_METRICS_TOKEN is set; then send it as a bearer token.
    """
    # Read-only: a snapshot at one instant, in one transaction.
    with state().sessions.begin() as session:
        snapshot = collect(session)
    return Response(render(snapshot), mimetype=None, content_type=CONTENT_TYPE)
