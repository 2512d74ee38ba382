"""Glue between the dispatcher core and this process's Celery app and database."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from kombu.exceptions import OperationalError as KombuOperationalError
from redis.exceptions import RedisError

from app.errors import TransientError
from app.firing.dispatch import HOLD_MARGIN_S, DispatchOptions, dispatch_tick
from app.models import InvocationKey
from messaging.backlog import broker_epoch, oldest_waiting_run
from messaging.publisher import publish_runs
from tasks.celery_app import celery_app
from tasks.runtime import get_runtime


class BrokerUnavailable(TransientError):
    """The broker refused or dropped the connection while publishing."""


def publish(invocation_ids: Sequence[InvocationKey], eta: dt.datetime | None = None) -> int:
    """Publish run_trigger messages (held by the worker until ``eta``, if given); broker
    failures become :class:`BrokerUnavailable`."""
    try:
        return publish_runs(celery_app, invocation_ids, eta=eta)
    except (KombuOperationalError, RedisError, OSError) as exc:
        raise BrokerUnavailable() from exc


def run_tick(now: dt.datetime | None = None) -> dict[str, Any]:
    """Run one dispatcher tick in this process; returns its report as a dict."""
    runtime = get_runtime()
    options = DispatchOptions(
        batch_size=runtime.settings.dispatch_batch_size,
        republish_after_s=runtime.settings.republish_after_s,
        deployment_id=runtime.settings.deployment_id,
        min_grace_s=runtime.settings.min_misfire_grace_s,
        public_url=runtime.settings.public_url,
        hold_s=runtime.settings.tick_seconds + HOLD_MARGIN_S,
    )
    return dispatch_tick(
        runtime.sessions, publish, options, now=now,
        oldest_waiting=lambda: oldest_waiting_run(celery_app),
        broker_epoch=lambda: broker_epoch(celery_app),
    ).as_dict()
