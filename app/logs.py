"""Logging for every Cronbeat process: text for people, JSON lines for machines.

Log calls pass a stable ``action`` key and the ids they concern through ``extra=``
(``tenant_id``, ``project_id``, ``trigger_id``, ``invocation_id``, ``scheduled_for``,
``attempt``). With ``CRONBEAT_LOG_FORMAT=json`` each record is one JSON object per line
carrying those keys, plus the process's ``deployment_id`` on every line. Secrets never
reach a log call; nothing here has to filter them.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys
from typing import Any

from app.config import Settings

# Attributes every LogRecord has; anything else on a record came from ``extra=``.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, action, ids, extras."""

    def __init__(self, deployment_id: str | None) -> None:
        super().__init__()
        self.deployment_id = deployment_id

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "action": getattr(record, "action", None),
            "deployment_id": self.deployment_id,
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and key not in line:
                line[key] = value
        if record.exc_info and record.exc_info[0] is not None:
            # The exception's type only: messages of driver errors may quote parameters.
            line["error"] = record.exc_info[0].__name__
        return json.dumps(line, default=str)


# Celery passes its whole task context as ``extra={"data": {...}}`` (ids, arguments,
# return values: hundreds of characters a line, repeating what the message says).
_CELERY_DATA = "data"


class TextFormatter(logging.Formatter):
    """``time level logger: message [action key=value ... error=Type]``.

    Like the JSON format, an exception is shown by its type only, never its message or
    traceback: messages of driver and HTTP errors can quote parameters, header values
    or URL tokens.
    """

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        error = record.exc_info[0] if record.exc_info else None
        saved = record.exc_info, record.exc_text, record.stack_info
        record.exc_info, record.exc_text, record.stack_info = None, None, None
        try:
            text = super().format(record)
        finally:
            record.exc_info, record.exc_text, record.stack_info = saved
        extras = {k: v for k, v in vars(record).items()
                  if k not in _STANDARD and not (k == _CELERY_DATA
                                                 and record.name.startswith("celery"))}
        if error is not None:
            extras.setdefault("error", error.__name__)
        if extras:
            text += " [" + " ".join(f"{k}={v}" for k, v in extras.items()) + "]"
        return text


#: Celery's loggers of a line per task received and per task done.
CELERY_TASK_LOGGERS = ("celery.app.trace", "celery.worker.strategy")


def configure_logging(settings: Settings) -> None:
    """Send this process's logs to stderr in the configured format and level."""
    handler = logging.StreamHandler(sys.stderr)
    if settings.log_format == "json":
        handler.setFormatter(JsonFormatter(settings.deployment_id))
    else:
        handler.setFormatter(TextFormatter())
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(settings.log_level)
    # One line per attempt at INFO (app.firing.runner's finish): Celery's own two per
    # task ("received", "succeeded in") come back at debug.
    quiet = logging.WARNING if root.getEffectiveLevel() > logging.DEBUG else logging.NOTSET
    for name in CELERY_TASK_LOGGERS:
        logging.getLogger(name).setLevel(quiet)
