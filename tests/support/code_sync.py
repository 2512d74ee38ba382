"""What ``cronbeat sync MODULE:APP --apply`` writes, in the test process: the definitions
loaded by the API's schema, then the project's sync with their owner."""

from __future__ import annotations

from typing import Any

from flask import Flask
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from api.schemas.triggers import TriggerCreateSchema
from app.editing import sync
from app.editing.sync import SyncResult

OWNER = "shop.celery:app"


def code_sync(app: Flask, db: sessionmaker[Session], tenant_id: str, project_id: str,
              *bodies: dict[str, Any], owner: str = OWNER) -> SyncResult:
    """Sync the project to ``bodies`` (API JSON) as code ``owner`` declares them."""
    with app.app_context():
        loaded = [TriggerCreateSchema().load(body) for body in bodies]
    with db.begin() as session:
        now = session.execute(select(func.now())).scalar_one()
        return sync.sync_triggers(session, tenant_id, project_id, loaded, now=now,
                                  owner=owner)
