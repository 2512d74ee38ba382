"""Recording the occurrences an edit took away, as ``missed`` rows."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.orm import Session

from app.models import Invocation


def record_missed(session: Session, rows: Sequence[dict[str, Any]]) -> None:
    """Insert ``rows`` (from :func:`app.schedule.occurrences.missed_rows`), batched; a key already
    taken is kept."""
    if not rows:
        return
    # ON CONFLICT DO NOTHING on UNIQUE (trigger_id, scheduled_for), as the dispatcher's
    # own insert. The editor holds the trigger's row lock, and a dispatcher records
    # occurrences and advances next_run_at in one transaction under that same lock, so
    # normally no row exists yet; should one exist all the same (a replayed or
    # hand-repaired occurrence), the row already there, perhaps running, wins.
    statement = pg_insert(Invocation.__table__).on_conflict_do_nothing(
        constraint="uq_invocations_trigger_id_scheduled_for"
    )
    session.execute(statement, list(rows))
