"""Settings: read once from the environment; a bad value names its variable."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from app.config import Settings, broker_url_for, normalize_database_url
from app.errors import ConfigError

BASE = {"DATABASE_URL": "postgresql://u@db:5432/cronbeat", "REDIS_URL": "redis://r:6379/0"}


def test_defaults_for_a_minimal_environment() -> None:
    settings = Settings.from_env(BASE)
    assert settings == Settings(
        database_url="postgresql+psycopg2://u@db:5432/cronbeat",
        redis_url="redis://r:6379/0",
        tick_seconds=60,
        deployment_id=None,
        deploy_token=None,
        admin_token=None,
        data_dir=Path(".cronbeat"),
        allow_private_targets=False,
        dispatch_batch_size=5000,
        republish_after_s=300,
        tenant_max_running=0,
        history_retention_days=30,
        log_format="text",
        log_level="INFO",
        task_queues=frozenset({"celery"}),
        metrics_token=None,
        console_secret=None,
        console_secure_cookies=False,
        public_url=None,
        alert_watch_interval_s=15,
    )


def test_every_setting_is_read_from_its_variable() -> None:
    settings = Settings.from_env({
        **BASE,
        "CRONBEAT_TICK_SECONDS": "15",
        "CRONBEAT_DEPLOYMENT_ID": "3f2c1ab",
        "CRONBEAT_DEPLOY_TOKEN": "d" * 16,
        "CRONBEAT_ADMIN_TOKEN": "a" * 20,
        "CRONBEAT_DATA_DIR": "/var/lib/cronbeat",
        "CRONBEAT_ALLOW_PRIVATE_TARGETS": "yes",
        "CRONBEAT_DISPATCH_BATCH_SIZE": "100",
        "CRONBEAT_REPUBLISH_AFTER_S": "60",
        "CRONBEAT_TENANT_MAX_RUNNING": "4",
        "CRONBEAT_HISTORY_RETENTION_DAYS": "7",
        "CRONBEAT_LOG_FORMAT": "JSON",
        "CRONBEAT_LOG_LEVEL": "warning",
        "CRONBEAT_TASK_QUEUES": "celery, reports,billing.jobs",
        "CRONBEAT_METRICS_TOKEN": "m" * 16,
        "CRONBEAT_CONSOLE_SECRET": "c" * 32,
        "CRONBEAT_CONSOLE_SECURE_COOKIES": "true",
        "CRONBEAT_PUBLIC_URL": "https://cronbeat.example.com/",
        "CRONBEAT_ALERT_WATCH_INTERVAL_S": "5",
        "CRONBEAT_RUN_CONCURRENCY": "384",
        "CRONBEAT_WORKER_DB_POOL": "12",
        "CRONBEAT_MIN_INTERVAL_S": "30",
    })
    assert dataclasses.asdict(settings) == {
        "database_url": "postgresql+psycopg2://u@db:5432/cronbeat",
        "redis_url": "redis://r:6379/0",
        "tick_seconds": 15,
        "deployment_id": "3f2c1ab",
        "deploy_token": "d" * 16,
        "admin_token": "a" * 20,
        "data_dir": Path("/var/lib/cronbeat"),
        "allow_private_targets": True,
        "dispatch_batch_size": 100,
        "republish_after_s": 60,
        "tenant_max_running": 4,
        "history_retention_days": 7,
        "log_format": "json",
        "log_level": "WARNING",
        "task_queues": frozenset({"celery", "reports", "billing.jobs"}),
        "metrics_token": "m" * 16,
        "console_secret": "c" * 32,
        "console_secure_cookies": True,
        "public_url": "https://cronbeat.example.com",
        "alert_watch_interval_s": 5,
        "min_interval_s": 30,
        "run_concurrency": 384,
        "worker_db_pool": 12,
    }


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"DATABASE_URL": ""}, "DATABASE_URL is not set"),
        ({"DATABASE_URL": "mysql://x/y"}, "DATABASE_URL must be a postgresql:// URL"),
        ({"REDIS_URL": ""}, "REDIS_URL is not set"),
        ({"REDIS_URL": "http://r"}, "REDIS_URL must be a redis://"),
        ({"CRONBEAT_PUBLIC_URL": "cronbeat.example.com"}, "CRONBEAT_PUBLIC_URL must be an"),
        ({"CRONBEAT_PUBLIC_URL": "https://x.example/?a=1"}, "CRONBEAT_PUBLIC_URL must be an"),
        ({"CRONBEAT_WORKER_DB_POOL": "1"}, "CRONBEAT_WORKER_DB_POOL must be between 2 and 200"),
        ({"CRONBEAT_ALERT_WATCH_INTERVAL_S": "0"},
         "CRONBEAT_ALERT_WATCH_INTERVAL_S must be between 1 and 3600"),
        ({"CRONBEAT_RUN_CONCURRENCY": "0"}, "CRONBEAT_RUN_CONCURRENCY must be between 1 and 4096"),
        ({"CRONBEAT_RUN_CONCURRENCY": "4097"},
         "CRONBEAT_RUN_CONCURRENCY must be between 1 and 4096"),
        ({"CRONBEAT_TICK_SECONDS": "soon"}, "CRONBEAT_TICK_SECONDS must be a whole number"),
        ({"CRONBEAT_TICK_SECONDS": "0"}, "CRONBEAT_TICK_SECONDS must be between 1 and 3600"),
        ({"CRONBEAT_ALLOW_PRIVATE_TARGETS": "maybe"}, "CRONBEAT_ALLOW_PRIVATE_TARGETS must be"),
        ({"CRONBEAT_DISPATCH_BATCH_SIZE": "0"}, "CRONBEAT_DISPATCH_BATCH_SIZE must be between"),
        ({"CRONBEAT_REPUBLISH_AFTER_S": "1"}, "CRONBEAT_REPUBLISH_AFTER_S must be between"),
        ({"CRONBEAT_LOG_FORMAT": "xml"}, "CRONBEAT_LOG_FORMAT must be one of text, json"),
        ({"CRONBEAT_DEPLOYMENT_ID": "x" * 101}, "CRONBEAT_DEPLOYMENT_ID must be at most 100"),
        ({"CRONBEAT_DEPLOY_TOKEN": "short"}, "CRONBEAT_DEPLOY_TOKEN must be at least 16"),
        ({"CRONBEAT_ADMIN_TOKEN": "short"}, "CRONBEAT_ADMIN_TOKEN must be at least 16"),
        ({"CRONBEAT_METRICS_TOKEN": "short"}, "CRONBEAT_METRICS_TOKEN must be at least 16"),
        ({"CRONBEAT_TASK_QUEUES": "celery,unacked"}, "CRONBEAT_TASK_QUEUES has a name"),
        ({"CRONBEAT_TASK_QUEUES": "cronbeat.runs"}, "CRONBEAT_TASK_QUEUES has a name"),
        ({"CRONBEAT_TASK_QUEUES": "bad name"}, "CRONBEAT_TASK_QUEUES has a name"),
    ],
)
def test_a_bad_value_fails_naming_the_variable(overrides: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message) as raised:
        Settings.from_env({**BASE, **overrides})
    for secret_name in ("CRONBEAT_DEPLOY_TOKEN", "CRONBEAT_ADMIN_TOKEN"):
        if secret_name in overrides:
            assert overrides[secret_name] not in str(raised.value)


def test_tokens_never_appear_in_the_settings_repr() -> None:
    settings = Settings.from_env({**BASE, "CRONBEAT_DEPLOY_TOKEN": "deploy-secret-12345",
                                  "CRONBEAT_ADMIN_TOKEN": "admin-secret-123456"})
    assert "secret" not in repr(settings)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgres://u@h/db", "postgresql+psycopg2://u@h/db"),
        ("postgresql://u@h/db", "postgresql+psycopg2://u@h/db"),
        ("postgresql+psycopg2://u@/db?host=/s", "postgresql+psycopg2://u@/db?host=/s"),
    ],
)
def test_database_urls_name_the_driver(url: str, expected: str) -> None:
    assert normalize_database_url(url) == expected


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis://r:6379/3", "redis://r:6379/3"),
        ("unix:///d/redis.sock?db=4", "redis+socket:///d/redis.sock?virtual_host=4"),
        ("unix:///d/redis.sock", "redis+socket:///d/redis.sock?virtual_host=0"),
    ],
)
def test_the_broker_url_reaches_a_unix_socket_redis(url: str, expected: str) -> None:
    assert broker_url_for(url) == expected
