"""``GET /metrics``: the operator's numbers in the Prometheus text format, from the database."""

from __future__ import annotations

from flask import Response

from api.parser import Blueprint
from api.state import state
from app.metrics import collect, render

blp = Blueprint("metrics", __name__, description="Prometheus metrics for operators.")
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


@blp.route("/metrics", methods=["GET"])
@blp.doc(security=[], responses={"200": {
    "description": "Prometheus text exposition format.",
    "content": {"text/plain": {"schema": {"type": "string"}}}}})
def metrics() -> Response:
    """Scheduler metrics computed from the database (the same from every web process)."""
    # Read-only: a snapshot at one instant, in one transaction.
    with state().sessions.begin() as session:
        snapshot = collect(session)
    return Response(render(snapshot), mimetype=None, content_type=CONTENT_TYPE)
