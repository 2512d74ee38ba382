"""A threads worker's database settings: statements and idle transactions are bounded,
and a dry pool is waited for."""

from __future__ import annotations

import logging
import os
import threading
import time

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from app import db as db_module
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


def test_a_thread_that_finds_the_pool_dry_waits_for_a_connection_and_says_so(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:
    # One connection, held by another thread for 1.5 s; the wait is logged every 0.5 s
    # (5 s in production) instead of failing the unit of work.
    monkeypatch.setattr(db_module, "POOL_WAIT_LOG_EVERY_S", 0.5)
    engine = make_engine(settings, pool_size=1, max_overflow=0, wait_for_connection=True)
    held = threading.Event()

    def hold() -> None:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
            held.set()
            time.sleep(1.5)

    holder = threading.Thread(target=hold)
    try:
        holder.start()
        held.wait(5)
        with caplog.at_level(logging.WARNING, logger="app.db"), engine.connect() as conn:
            assert conn.execute(text("SELECT application_name FROM pg_stat_activity"
                                     " WHERE pid = pg_backend_pid()")).scalar() == \
                f"cronbeat[{os.getpid()}]"
        waits = [r for r in caplog.records if getattr(r, "action", None) == "db.pool_exhausted"]
        assert 2 <= len(waits) <= 3, [r.getMessage() for r in waits]
        assert waits[0].getMessage().startswith(
            "database: all 1 connections of this process's pool are in use")
    finally:
        holder.join()
        engine.dispose()
