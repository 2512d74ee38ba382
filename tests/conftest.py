"""Shared fixtures: real PostgreSQL and Redis, one database and one Redis db per run.

Layers, as in the Flask tutorial: ``services`` -> ``settings`` -> ``engine`` ->
``session_factory`` -> ``db`` (a clean schema per test).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from app.config import Settings
from app.db import create_database, drop_database, make_engine, make_session_factory
from tests.support import services

ROOT = Path(__file__).resolve().parent.parent


def alembic_config(database_url: str) -> Config:
    config = Config(str(ROOT / "alembic.ini"))
    config.set_main_option("script_location", str(ROOT / "migrations"))
    config.set_main_option("sqlalchemy.url", database_url)
    return config


class Services:
    """The real servers of this run and the names of its databases."""

    def __init__(self, admin_url: str, run_name: str, redis_url: str) -> None:
        self.admin_url = admin_url
        self.run_name = run_name
        self.template_name = f"{run_name}_tpl"
        self.redis_url = redis_url
        self._extra = 0

    def url(self, name: str) -> str:
        return services.database_url(self.admin_url, name)

    def new_database(self, *, empty: bool = False) -> str:
        """Create a database from the migrated template (``empty``: with no tables, for
        another application's schema); return its name."""
        self._extra += 1
        name = f"{self.run_name}_{self._extra}"
        create_database(self.admin_url, name,
                        template=None if empty else self.template_name)
        return name


@pytest.fixture(scope="session")
def test_services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Services]:
    tmp = tmp_path_factory.mktemp("services")
    with (
        services.postgres_admin_url(tmp) as admin_url,
        services.redis_base_url(tmp) as redis_base,
        services.claimed_redis_db(redis_base) as redis_url,
        services.run_database(admin_url) as (_, run_name),
    ):
        svc = Services(admin_url, run_name, redis_url)
        # Build the schema once into a template; the run's database and any race
        # test's own database are cheap copies of it.
        create_database(admin_url, svc.template_name)
        try:
            command.upgrade(alembic_config(svc.url(svc.template_name)), "head")
            create_database(admin_url, run_name, template=svc.template_name)
            previous = {k: os.environ.get(k) for k in ("DATABASE_URL", "REDIS_URL")}
            os.environ["DATABASE_URL"] = svc.url(run_name)
            os.environ["REDIS_URL"] = redis_url
            try:
                yield svc
            finally:
                for key, value in previous.items():
                    if value is None:
                        os.environ.pop(key, None)
                    else:
                        os.environ[key] = value
                for extra in range(1, svc._extra + 1):
                    drop_database(admin_url, f"{run_name}_{extra}")
        finally:
            drop_database(admin_url, svc.template_name)


@pytest.fixture(scope="session")
def settings(test_services: Services) -> Settings:
    env = {
        "DATABASE_URL": test_services.url(test_services.run_name),
        "REDIS_URL": test_services.redis_url,
        "CRONBEAT_ALLOW_PRIVATE_TARGETS": "true",
        "CRONBEAT_DEPLOY_TOKEN": "test-deploy-token-0123456789",
        "CRONBEAT_ADMIN_TOKEN": "test-admin-token-0123456789",
    }
    return Settings.from_env(env)


@pytest.fixture(scope="session")
def engine(settings: Settings) -> Iterator[Engine]:
    engine = make_engine(settings)
    yield engine
    engine.dispose()


@pytest.fixture(scope="session")
def session_factory(engine: Engine) -> sessionmaker[Session]:
    return make_session_factory(engine)


TABLES = (
    "invocation_attempts", "invocations", "triggers", "api_keys", "deployments",
    "process_heartbeats", "trigger_day_stats", "alert_channels", "alert_rules",
    "trigger_alert_state", "alerts", "counter_totals",
)


def empty_database(engine: Engine) -> None:
    """Every table of the run's data emptied, and the scheduler's state as new.

    A module's worker still runs meanwhile (its heartbeat, reaper and engine write), and
    TRUNCATE locks its tables one by one: a deadlock between the two is tried again.
    """
    for attempt in range(5):
        try:
            _empty(engine)
            return
        except OperationalError as exc:
            if attempt == 4 or "deadlock detected" not in str(exc):
                raise


def _empty(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {', '.join(TABLES)} CASCADE"))
        conn.execute(
            text("UPDATE scheduler_state SET generation = 0, active_deployment_id = NULL")
        )
        conn.execute(text("UPDATE history_state SET rolled_up_through = NULL,"
                          " partitions_dropped = 0, rows_dropped = 0, last_run_at = NULL,"
                          " counted_before = NULL"))
        # Processes still running (a module's worker) re-read their role and
        # re-register at once instead of at their next heartbeat.
        conn.execute(text("SELECT pg_notify('cronbeat_deploy', '0')"))
        conn.execute(
            text(
                "UPDATE dispatcher_heartbeat SET last_tick_at = NULL, last_tick_duration_ms ="
                " NULL, last_tick_deployment_id = NULL, last_tick_report = NULL,"
                " broker_epoch = NULL"
            )
        )


@pytest.fixture
def db(engine: Engine, session_factory: sessionmaker[Session]) -> sessionmaker[Session]:
    """The run's database, emptied before the test."""
    empty_database(engine)
    return session_factory
