"""The one error hierarchy of Cronbeat.

Every error the domain raises derives from :class:`CronbeatError`. The split between
:class:`TransientError` (trying again later may succeed) and :class:`PermanentError`
(trying again cannot help) drives retries in tasks and the HTTP status in the API.
"""

from __future__ import annotations


class CronbeatError(Exception):
    """Cronbeat failed."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or "").strip())

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else ""


class TransientError(CronbeatError):
    """A temporary failure; the same operation may succeed later."""


class PermanentError(CronbeatError):
    """A failure that retrying cannot fix."""


class ConfigError(PermanentError):
    """The configuration is invalid."""


class InvalidSchedule(PermanentError, ValueError):
    """The schedule is invalid."""


class NotFound(PermanentError):
    """The resource does not exist."""


class Conflict(PermanentError):
    """The change conflicts with the current state."""


class InvalidTrigger(PermanentError, ValueError):
    """The trigger definition is invalid (the API: 422, naming :attr:`path`)."""

    def __init__(self, field: str, message: str, *, path: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        #: The definition's field the message is about, as the API names it.
        self.field = field
        #: The same as parts, when a part may itself hold a dot (a trigger's name).
        self.path = path or tuple(field.split("."))


class NameTaken(Conflict):
    """A trigger of that name already exists in the project (the API: 409 on ``name``)."""


class StaleVersion(Conflict):
    """The trigger changed since the version the caller read (the API: 412)."""


class InvalidTemplate(PermanentError):
    """The message template could not be rendered."""


class TargetRefused(PermanentError):
    """The delivery target is not allowed."""


class TargetUnavailable(TransientError):
    """The delivery target could not be reached; a later attempt may succeed."""
