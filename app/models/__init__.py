"""SQLAlchemy models: the schema, with the invariants the database itself enforces.

One module per part of the schema; every model is importable from here.
"""

from __future__ import annotations

from app.models.alerts import Alert, AlertChannel, AlertRule, TriggerAlertState
from app.models.base import NAMING_CONVENTION, Base, Timestamp
from app.models.fleet import (
    ApiKey,
    ConsoleSecret,
    Deployment,
    DispatcherHeartbeat,
    ProcessHeartbeat,
    SchedulerState,
)
from app.models.history import (
    CounterTotal,
    HistoryState,
    Invocation,
    InvocationAttempt,
    InvocationKey,
    InvocationReplay,
    TriggerDayStats,
)
from app.models.triggers import Trigger

__all__ = [
    "NAMING_CONVENTION",
    "Alert",
    "AlertChannel",
    "AlertRule",
    "ApiKey",
    "Base",
    "ConsoleSecret",
    "CounterTotal",
    "Deployment",
    "DispatcherHeartbeat",
    "HistoryState",
    "Invocation",
    "InvocationAttempt",
    "InvocationKey",
    "InvocationReplay",
    "ProcessHeartbeat",
    "SchedulerState",
    "Timestamp",
    "Trigger",
    "TriggerAlertState",
    "TriggerDayStats",
]
