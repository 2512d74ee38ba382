"""Settings, read once from the environment into a frozen object.

Nothing else in Cronbeat reads the environment: processes build one :class:`Settings` at
start and pass it down. A bad value fails at start with the variable's name.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit

from app.errors import ConfigError
from app.limits import INTERVAL_S

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def _int(env: Mapping[str, str], name: str, default: int, minimum: int, maximum: int) -> int:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a whole number, got {raw!r}") from None
    if not minimum <= value <= maximum:
        raise ConfigError(f"{name} must be between {minimum} and {maximum}, got {value}")
    return value


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ConfigError(f"{name} must be true or false, got {raw!r}")


#: The longest bearer token the API reads (longer ones are refused before hashing).
MAX_TOKEN_CHARS = 512


def _public_url(env: Mapping[str, str]) -> str | None:
    raw = env.get("CRONBEAT_PUBLIC_URL", "").strip()
    if not raw:
        return None
    parts = urlsplit(raw)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
        raise ConfigError("CRONBEAT_PUBLIC_URL must be an http(s) URL such as "
                          "https://cronbeat.example.com (no query or fragment)")
    return raw.rstrip("/")


def _secret(env: Mapping[str, str], name: str) -> str | None:
    # The value is never echoed back, not even in the error.
    raw = env.get(name)
    if raw is None or raw == "":
        return None
    if len(raw) < 16:
        raise ConfigError(f"{name} must be at least 16 characters long")
    if len(raw) > MAX_TOKEN_CHARS:
        # Longer than any bearer token the API reads: it could never authenticate.
        raise ConfigError(f"{name} must be at most {MAX_TOKEN_CHARS} characters long")
    return raw


def _choice(env: Mapping[str, str], name: str, default: str, choices: tuple[str, ...]) -> str:
    raw = env.get(name, default).strip().lower() or default
    if raw not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}, got {raw!r}")
    return raw


_QUEUE_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_.:-]{0,99}")
# Our own queues, and the keys kombu's Redis transport keeps beside the queues: a tenant's
# task sent to one of these would corrupt the broker for everyone.
_RESERVED_QUEUES = ("cronbeat.", "unacked", "_kombu", "celeryev", "celery.pidbox")


def _task_queues(env: Mapping[str, str]) -> frozenset[str]:
    raw = env.get("CRONBEAT_TASK_QUEUES", "celery")
    names = frozenset(part.strip() for part in raw.split(",") if part.strip())
    for name in names:
        if not _QUEUE_NAME.fullmatch(name) or name.startswith(_RESERVED_QUEUES):
            raise ConfigError(f"CRONBEAT_TASK_QUEUES has a name that is not allowed: {name!r}")
    return names


def normalize_database_url(url: str, name: str = "DATABASE_URL") -> str:
    """Return ``url`` with the psycopg2 driver named, as SQLAlchemy wants it.

    Raises:
        ConfigError: the URL is not a PostgreSQL URL (the message names it ``name``).
    """
    for prefix in ("postgresql+psycopg2://", "postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg2://" + url[len(prefix) :]
    raise ConfigError(f"{name} must be a postgresql:// URL")


def broker_url_for(redis_url: str) -> str:
    """Return the kombu broker URL for a redis-py URL (a unix socket is spelled differently)."""
    if redis_url.startswith("unix://"):
        path, _, query = redis_url[len("unix://") :].partition("?")
        db = "0"
        for part in query.split("&"):
            key, _, value = part.partition("=")
            if key == "db" and value:
                db = value
        return f"redis+socket://{path}?virtual_host={db}"
    return redis_url


@dataclasses.dataclass(frozen=True)
class Settings:
    """Everything a Cronbeat process is configured with."""

    database_url: str
    redis_url: str
    tick_seconds: int = 60
    deployment_id: str | None = None
    deploy_token: str | None = dataclasses.field(default=None, repr=False)
    admin_token: str | None = dataclasses.field(default=None, repr=False)
    data_dir: Path = Path(".cronbeat")
    # Webhooks to loopback, private and link-local addresses are refused unless this is
    # on: a multi-tenant sender must not let tenants probe the operator's network.
    allow_private_targets: bool = False
    dispatch_batch_size: int = 5000
    # A pending invocation whose message was published this long ago and never started
    # is published again (the broker lost it, e.g. Redis restarted without persistence).
    republish_after_s: int = 300
    #: An optional hard cap: at most this many of one tenant's invocations run at once
    #: across the fleet; a run over it is parked until the tenant is under it (0, the
    #: default: no cap; tenants share the threads fairly without one, app.firing.fairness).
    tenant_max_running: int = 0
    #: Days of run history kept (invocations and attempts, by scheduled_for); older days
    #: are rolled up into trigger_day_stats and dropped (app.history.retention).
    history_retention_days: int = 30
    log_format: str = "text"
    log_level: str = "INFO"
    # The queues a tenant's task target may send to (the operator's own Celery queues).
    task_queues: frozenset[str] = frozenset({"celery"})
    # When set, GET /metrics requires it as a bearer token.
    metrics_token: str | None = dataclasses.field(default=None, repr=False)
    #: Signs the console's session cookies; unset, one is generated once and kept in the
    #: database (table console_secret), so every web process shares it.
    console_secret: str | None = dataclasses.field(default=None, repr=False)
    #: The console's cookie is sent over HTTPS only (set it where the console is HTTPS).
    console_secure_cookies: bool = False
    #: Where users reach the web process (https://cronbeat.example.com): alerts link to
    #: the trigger's console page under it; unset, the link is the page's path.
    public_url: str | None = None
    #: How often a worker's alert watchdog looks for triggers that didn't run and for
    #: alerts to deliver (app.alerting.watch), seconds.
    alert_watch_interval_s: int = 15
    #: The shortest interval_s a trigger may have (the API refuses shorter ones).
    min_interval_s: int = 1
    #: Deliveries a worker process runs at once (tasks.engine): threads that wait on the
    #: network, and the run messages the worker takes from the broker ahead.
    run_concurrency: int = 512
    #: The database connections a worker process's threads share (tasks.runtime); the
    #: process holds two more of its own (its presence, its alert watchdog).
    worker_db_pool: int = 8

    @property
    def min_misfire_grace_s(self) -> int:
        """No trigger's grace is taken below this: one tick, plus the time a tick may
        take to reach a trigger (the dispatcher's misfire rule and the alert watchdog's
        "didn't run" both use it)."""
        return self.tick_seconds + 30

    @property
    def broker_url(self) -> str:
        return broker_url_for(self.redis_url)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read the settings from ``env`` (default: the process environment).

        Raises:
            ConfigError: a variable is missing or malformed; the message names it.
        """
        env = os.environ if env is None else env
        database_url = env.get("DATABASE_URL", "").strip()
        if not database_url:
            raise ConfigError("DATABASE_URL is not set (for the servers `make run` started, "
                              "run `source .cronbeat/env` first)")
        redis_url = env.get("REDIS_URL", "").strip()
        if not redis_url:
            raise ConfigError("REDIS_URL is not set (for the servers `make run` started, "
                              "run `source .cronbeat/env` first)")
        if not redis_url.startswith(("redis://", "rediss://", "unix://")):
            raise ConfigError("REDIS_URL must be a redis://, rediss:// or unix:// URL")
        deployment_id = env.get("CRONBEAT_DEPLOYMENT_ID", "").strip() or None
        if deployment_id is not None and len(deployment_id) > 100:
            raise ConfigError("CRONBEAT_DEPLOYMENT_ID must be at most 100 characters")
        return cls(
            database_url=normalize_database_url(database_url),
            redis_url=redis_url,
            tick_seconds=_int(env, "CRONBEAT_TICK_SECONDS", 60, 1, 3600),
            deployment_id=deployment_id,
            deploy_token=_secret(env, "CRONBEAT_DEPLOY_TOKEN"),
            admin_token=_secret(env, "CRONBEAT_ADMIN_TOKEN"),
            data_dir=Path(env.get("CRONBEAT_DATA_DIR", ".cronbeat") or ".cronbeat"),
            allow_private_targets=_bool(env, "CRONBEAT_ALLOW_PRIVATE_TARGETS", False),
            dispatch_batch_size=_int(env, "CRONBEAT_DISPATCH_BATCH_SIZE", 5000, 1, 100_000),
            republish_after_s=_int(env, "CRONBEAT_REPUBLISH_AFTER_S", 300, 5, 86_400),
            tenant_max_running=_int(env, "CRONBEAT_TENANT_MAX_RUNNING", 0, 0, 100_000),
            min_interval_s=_int(env, "CRONBEAT_MIN_INTERVAL_S", 1, 1, INTERVAL_S[1]),
            run_concurrency=_int(env, "CRONBEAT_RUN_CONCURRENCY", 512, 1, 4096),
            worker_db_pool=_int(env, "CRONBEAT_WORKER_DB_POOL", 8, 2, 200),
            history_retention_days=_int(env, "CRONBEAT_HISTORY_RETENTION_DAYS", 30, 1, 3650),
            log_format=_choice(env, "CRONBEAT_LOG_FORMAT", "text", ("text", "json")),
            log_level=_choice(
                env, "CRONBEAT_LOG_LEVEL", "info", ("debug", "info", "warning", "error")
            ).upper(),
            task_queues=_task_queues(env),
            metrics_token=_secret(env, "CRONBEAT_METRICS_TOKEN"),
            console_secret=_secret(env, "CRONBEAT_CONSOLE_SECRET"),
            console_secure_cookies=_bool(env, "CRONBEAT_CONSOLE_SECURE_COOKIES", False),
            public_url=_public_url(env),
            alert_watch_interval_s=_int(env, "CRONBEAT_ALERT_WATCH_INTERVAL_S", 15, 1, 3600),
        )
