"""What one ``make run`` starts, decided from the environment alone (pure but for paths)."""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Mapping
from pathlib import Path

from app.config import Settings
from app.errors import ConfigError
from devrun.recovery import MARK

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PORT = 8000
DEFAULT_WEB_HOST = "127.0.0.1"
PROCESSES = ("web", "worker", "dispatcher", "beat")
OPTIONAL_PROCESSES = ("flower",)

# Stand-ins for the URLs of servers not started yet, so that every other variable is
# validated before seconds are spent starting PostgreSQL.
_PLACEHOLDER_DATABASE_URL = "postgresql://embedded/cronbeat"
_PLACEHOLDER_REDIS_URL = "unix:///embedded/redis.sock"
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


@dataclasses.dataclass(frozen=True)
class Plan:
    """What one ``make run`` starts, decided from the environment alone."""

    data_dir: Path
    port: int
    web_host: str
    processes: tuple[str, ...]
    embedded_postgres: bool
    embedded_redis: bool

    @property
    def api_url(self) -> str:
        # A wildcard is where gunicorn binds, not an address a browser can open.
        host = "127.0.0.1" if self.web_host in {"0.0.0.0", "::"} else self.web_host  # noqa: S104
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}"


def plan_from_env(environ: Mapping[str, str]) -> Plan:
    """Validate ``environ`` and decide what to start.

    Raises:
        ConfigError: a variable is malformed; the message names it.
    """
    embedded_postgres = not environ.get("DATABASE_URL", "").strip()
    embedded_redis = not environ.get("REDIS_URL", "").strip()
    probe = dict(environ)
    if embedded_postgres:
        probe["DATABASE_URL"] = _PLACEHOLDER_DATABASE_URL
    if embedded_redis:
        probe["REDIS_URL"] = _PLACEHOLDER_REDIS_URL
    Settings.from_env(probe)

    raw_dir = environ.get("CRONBEAT_DATA_DIR", "").strip()
    data_dir = Path(raw_dir).expanduser().resolve() if raw_dir else ROOT / ".cronbeat"
    processes = PROCESSES + (OPTIONAL_PROCESSES if _flag(environ, "CRONBEAT_FLOWER") else ())
    return Plan(
        data_dir=data_dir,
        port=_port(environ),
        web_host=environ.get("CRONBEAT_WEB_HOST", "").strip() or DEFAULT_WEB_HOST,
        processes=processes,
        embedded_postgres=embedded_postgres,
        embedded_redis=embedded_redis,
    )


def _port(environ: Mapping[str, str]) -> int:
    raw = environ.get("PORT", "").strip()
    if not raw:
        return DEFAULT_PORT
    try:
        port = int(raw)
    except ValueError:
        raise ConfigError(f"PORT must be a port number, got {raw!r}") from None
    if not 1 <= port <= 65535:
        raise ConfigError(f"PORT must be between 1 and 65535, got {port}")
    return port


def _flag(environ: Mapping[str, str], name: str) -> bool:
    raw = environ.get(name, "").strip().lower()
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    raise ConfigError(f"{name} must be true or false, got {raw!r}")


def child_environment(
    plan: Plan, environ: Mapping[str, str], database_url: str, redis_url: str
) -> dict[str, str]:
    """Return the environment of the Procfile processes: ``environ`` plus what devrun decided."""
    env = dict(environ)
    env["DATABASE_URL"] = database_url
    env["REDIS_URL"] = redis_url
    # Absolute, so every process finds the same folder whatever its working directory.
    env["CRONBEAT_DATA_DIR"] = str(plan.data_dir)
    env[MARK] = str(plan.data_dir)
    env["PORT"] = str(plan.port)
    env["CRONBEAT_WEB_HOST"] = plan.web_host
    if plan.embedded_postgres or plan.embedded_redis:
        # Embedded servers mean a laptop, where a webhook to localhost is the usual test.
        env.setdefault("CRONBEAT_ALLOW_PRIVATE_TARGETS", "true")
    # Through honcho's pipe, a block-buffered log line would show up minutes late.
    env.setdefault("PYTHONUNBUFFERED", "1")
    # gunicorn and celery are the venv's scripts, next to this interpreter (not resolved:
    # the venv's python is a symlink to the base interpreter).
    bin_dir = str(Path(sys.executable).parent)
    env["PATH"] = os.pathsep.join(p for p in (bin_dir, env.get("PATH", "")) if p)
    return env
