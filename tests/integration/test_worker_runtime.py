"""A threads worker's database settings: statements and idle transactions are bounded."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from app.config import Settings
from app.db import make_engine


def test_a_statement_past_the_statement_timeout_is_cancelled(settings: Settings) -> None:
    engine = make_engine(settings, pool_size=1, pre_ping=False, statement_timeout_s=1)
    try:
        with engine.connect() as conn:
            assert conn.execute(text("SHOW idle_in_transaction_session_timeout")).scalar() == "1s"
            with pytest.raises(OperationalError, match="statement timeout"):
                conn.execute(text("SELECT pg_sleep(3)"))
    finally:
        engine.dispose()
