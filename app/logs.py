"""Logging for every Cronbeat process: text for people, JSON lines for machines.

Log calls pass a stable ``action`` key and the ids they concern through ``extra=``
(``tenant_id``, ``project_id``, ``trigger_id``, ``invocation_id``, ``scheduled_for``,
``attempt``). With ``CRONBEAT_LOG_FORMAT=json`` each record is one JSON object per line
carrying those keys, plus the process's ``deployment_id`` on every line.

An exception keeps its evidence in both formats: its type, its message and its
traceback (JSON: ``error``, ``error_message`` and ``traceback``). Secrets never reach a
log call on purpose, but an exception's message is somebody else's text (a driver's, an
HTTP library's), so every line goes through :class:`Redactor` last: the process's own
secrets (tokens, the database and broker passwords) are replaced wherever they appear,
and so is anything shaped like one (an API key, a signing secret, a bearer token, a
URL's password, the value of a ``token=`` or ``password=`` pair).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
import sys
import traceback
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

from app.config import Settings

# Attributes every LogRecord has; anything else on a record came from ``extra=``.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


#: What a secret looks like wherever it appears, and what is kept of it (group 1).
_SECRET_SHAPES = (
    # Cronbeat's API keys and Standard Webhooks signing secrets.
    re.compile(r"\b(cb_)[A-Za-z0-9_-]{16,}"),
    re.compile(r"\b(whsec_)[A-Za-z0-9+/=]{8,}"),
    # An Authorization header's credentials.
    re.compile(r"(?i)\b((?:bearer|basic)\s+)[A-Za-z0-9._~+/=-]{8,}"),
    # A URL's password: scheme://user:password@host.
    re.compile(r"([a-z][a-z0-9+.-]*://[^\s:/@]*:)[^\s@/]+(?=@)"),
    # name=value / name: value pairs whose name says secret (query strings, DSNs, dicts).
    re.compile(r"(?i)((?:password|passwd|pwd|secret|token|api[_-]?key|signature|"
               r"authorization|credentials?)['\"]?\s*[=:]\s*['\"]?)"
               r"(?!(?i:bearer|basic)\s)[^\s&'\",;)}]+"),
)
_HIDDEN = "***"
#: The shortest configured secret replaced wherever it appears.
MIN_LITERAL_CHARS = 8


class Redactor:
    """Replaces secrets in a log line: the process's own, and anything shaped like one."""

    def __init__(self, secrets: Iterable[str | None] = ()) -> None:
        # Short ones would blank ordinary words; a URL's short password is still caught
        # by its shape. A literal is also looked for as JSON writes it.
        found = {s for s in secrets if s and len(s) >= MIN_LITERAL_CHARS}
        found |= {json.dumps(s)[1:-1] for s in found}
        self._literals = sorted(found, key=len, reverse=True)

    @classmethod
    def for_settings(cls, settings: Settings) -> Redactor:
        """The settings' tokens and the passwords of its database and broker URLs."""
        passwords = []
        for url in (settings.database_url, settings.redis_url):
            try:
                passwords.append(urlsplit(url).password)
            except ValueError:
                continue
        return cls([settings.deploy_token, settings.admin_token, settings.metrics_token,
                    settings.console_secret, *passwords])

    def __call__(self, text: str) -> str:
        for literal in self._literals:
            text = text.replace(literal, _HIDDEN)
        for shape in _SECRET_SHAPES:
            text = shape.sub(lambda m: m.group(1) + _HIDDEN, text)
        return text


def _exception_text(record: logging.LogRecord) -> str | None:
    if not record.exc_info or record.exc_info[0] is None:
        return None
    return "".join(traceback.format_exception(*record.exc_info)).rstrip()


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, action, ids, extras;
    with an exception, its type, message and traceback."""

    def __init__(self, deployment_id: str | None, redact: Redactor | None = None) -> None:
        super().__init__()
        self.deployment_id = deployment_id
        self.redact = redact or Redactor()

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
        trace = _exception_text(record)
        if trace is not None and record.exc_info is not None:
            line["error"] = record.exc_info[0].__name__  # type: ignore[union-attr]
            line["error_message"] = str(record.exc_info[1])
            line["traceback"] = trace
        return self.redact(json.dumps(line, default=str))


# Celery passes its whole task context as ``extra={"data": {...}}`` (ids, arguments,
# return values: hundreds of characters a line, repeating what the message says).
_CELERY_DATA = "data"


class TextFormatter(logging.Formatter):
    """``time level logger: message [action key=value ... error=Type]``, then, with an
    exception, its traceback on the lines below (redacted like the rest)."""

    def __init__(self, redact: Redactor | None = None) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")
        self.redact = redact or Redactor()

    def format(self, record: logging.LogRecord) -> str:
        error = record.exc_info[0] if record.exc_info else None
        trace = _exception_text(record)
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
        if trace is not None:
            text += "\n" + trace
        return self.redact(text)


#: Celery's loggers of a line per task received and per task done.
CELERY_TASK_LOGGERS = ("celery.app.trace", "celery.worker.strategy")


def configure_logging(settings: Settings) -> None:
    """Send this process's logs to stderr in the configured format and level."""
    handler = logging.StreamHandler(sys.stderr)
    redact = Redactor.for_settings(settings)
    if settings.log_format == "json":
        handler.setFormatter(JsonFormatter(settings.deployment_id, redact))
    else:
        handler.setFormatter(TextFormatter(redact))
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
