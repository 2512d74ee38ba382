"""Liveness and readiness probes: unauthenticated, and they say nothing but ok or not."""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import Any

import redis
from alembic.script import ScriptDirectory
from sqlalchemy import text

import migrations
from api.parser import Blueprint
from api.schemas.common import HealthSchema
from api.state import state

log = logging.getLogger(__name__)
# A probe must answer quickly even when a dependency hangs.
PROBE_TIMEOUT_S = 2.0

blp = Blueprint("health", __name__, description="Probes for the orchestrator.")
PUBLIC: list[dict[str, list[str]]] = []


@functools.cache
def migration_heads() -> frozenset[str]:
    """Return the head revisions of the migrations shipped with this code."""
    return frozenset(ScriptDirectory(str(Path(migrations.__file__).parent)).get_heads())


def _database_ready() -> bool:
    with state().engine.connect() as conn:
        conn.execute(text(f"SET LOCAL statement_timeout = {int(PROBE_TIMEOUT_S * 1000)}"))
        current = set(conn.execute(text("SELECT version_num FROM alembic_version")).scalars())
    return current == set(migration_heads())


def _broker_ready() -> bool:
    client = redis.Redis.from_url(state().settings.redis_url,
                                  socket_connect_timeout=PROBE_TIMEOUT_S,
                                  socket_timeout=PROBE_TIMEOUT_S)
    try:
        return bool(client.ping())
    finally:
        client.close()


@blp.route("/healthz", methods=["GET"])
@blp.response(200, HealthSchema)
@blp.doc(security=PUBLIC)
def healthz() -> Any:
    """The process is up."""
    return {"status": "ok"}


@blp.route("/readyz", methods=["GET"])
@blp.response(200, HealthSchema)
@blp.alt_response(503, schema=HealthSchema, description="A dependency is not ready.")
@blp.doc(security=PUBLIC)
def readyz() -> Any:
    """The database and the broker answer, and the schema is at the migrations' head."""
    for name, check in (("database", _database_ready), ("broker", _broker_ready)):
        try:
            ready = check()
        except Exception as exc:  # any failure means "not ready"
            log.warning("not ready", extra={"action": "readyz", "check": name,
                                            "error": type(exc).__name__})
            ready = False
        if not ready:
            return {"status": "unavailable"}, 503
    return {"status": "ok"}
