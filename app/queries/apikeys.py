"""Locking an API key row."""

from __future__ import annotations

import uuid

from sqlalchemy.orm import Session

from app.models import ApiKey


def api_key_for_update(session: Session, key_id: uuid.UUID) -> ApiKey | None:
    """The key ``key_id``, locked until commit (a revoke), or None."""
    return session.get(ApiKey, key_id, with_for_update=True)
