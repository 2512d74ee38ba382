"""Real PostgreSQL and Redis for the test suite.

The servers on 127.0.0.1:5432 / 6379 are used when they answer (developer machines and
CI have them); otherwise embedded ones are started. Each run gets its own database and
its own Redis db index, and removes them afterwards.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
from collections.abc import Iterator
from pathlib import Path

import redis
from sqlalchemy import create_engine, make_url, text
from sqlalchemy.exc import OperationalError

from app.db import create_database, drop_database
from devrun.embedded import start_postgres, start_redis

_CLAIM_KEY = "cronbeat:test-run-claim"
_CLAIM_TTL_S = 3 * 3600


def _listening(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


@contextlib.contextmanager
def postgres_admin_url(tmp: Path) -> Iterator[str]:
    """Yield a superuser URL of a real PostgreSQL server."""
    override = os.environ.get("CRONBEAT_TEST_PG_ADMIN_URL")
    if override:
        yield override
        return
    if _listening("127.0.0.1", 5432):
        for user in ("postgres", "root"):
            url = f"postgresql+psycopg2://{user}@127.0.0.1:5432/postgres"
            engine = create_engine(url)
            try:
                with engine.connect() as conn:
                    conn.execute(text("SELECT 1"))
            except OperationalError:
                continue
            finally:
                engine.dispose()
            yield url
            return
    server = start_postgres(tmp / "pg")
    try:
        yield server.admin_url
    finally:
        server.stop()


@contextlib.contextmanager
def redis_base_url(tmp: Path) -> Iterator[str]:
    """Yield a redis-py URL (without a db index) of a real Redis server."""
    override = os.environ.get("CRONBEAT_TEST_REDIS_URL")
    if override:
        yield override
        return
    if _listening("127.0.0.1", 6379):
        yield "redis://127.0.0.1:6379"
        return
    server = start_redis(tmp / "redis", persistent=False)
    try:
        yield f"unix://{server.socket_path}"
    finally:
        server.stop()


def _with_db(base_url: str, index: int) -> str:
    if base_url.startswith("unix://"):
        return f"{base_url}?db={index}"
    return f"{base_url}/{index}"


@contextlib.contextmanager
def claimed_redis_db(base_url: str) -> Iterator[str]:
    """Claim a Redis db index no other concurrent run uses; flush it before and after."""
    token = secrets.token_hex(8)
    for index in range(1, 16):
        url = _with_db(base_url, index)
        client = redis.Redis.from_url(url)
        if client.set(_CLAIM_KEY, token, nx=True, ex=_CLAIM_TTL_S):
            try:
                for key in client.scan_iter():
                    if key != _CLAIM_KEY.encode():
                        client.delete(key)
                yield url
            finally:
                client.flushdb()
                client.close()
            return
        client.close()
    raise RuntimeError("all Redis db indexes 1-15 are claimed by other test runs")


@contextlib.contextmanager
def run_database(admin_url: str) -> Iterator[tuple[str, str]]:
    """Create this run's database name; yield (admin_url, name); drop it afterwards."""
    name = f"cronbeat_test_{os.getpid()}_{secrets.token_hex(3)}"
    try:
        yield admin_url, name
    finally:
        drop_database(admin_url, name)


def database_url(admin_url: str, name: str) -> str:
    """Return the URL of database ``name`` on the server of ``admin_url``."""
    return make_url(admin_url).set(database=name).render_as_string(hide_password=False)


__all__ = [
    "claimed_redis_db",
    "create_database",
    "database_url",
    "drop_database",
    "postgres_admin_url",
    "redis_base_url",
    "run_database",
]
