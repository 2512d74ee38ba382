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


def managed_by_code(owners: dict[str, str]) -> tuple[str, str]:
    """"trigger 'a' is managed by code in X" (or "triggers 'a', 'b' are ..."), and the
    pronoun that refers to them ("it", "them"), for triggers' owners by name."""
    names = sorted(owners)
    places = " and ".join(sorted(set(owners.values())))
    if len(names) == 1:
        return f"trigger {names[0]!r} is managed by code in {places}", "it"
    return f"triggers {', '.join(map(repr, names))} are managed by code in {places}", "them"


class CodeManaged(Conflict):
    """A change to triggers whose definitions belong to code (``cronbeat sync``); the API
    answers 409 with code ``code_managed``."""

    def __init__(self, owners: dict[str, str], *, by_name: bool = False) -> None:
        phrase, it = managed_by_code(owners)
        super().__init__(f"{phrase}; change {it} there and run cronbeat sync, or pass"
                         " force=true")
        #: The owner ("MODULE:APP") of each trigger refused, by name.
        self.owners = owners
        #: Whether the API keys its field errors by trigger name (a sync, a bulk delete).
        self.by_name = by_name


class StaleVersion(Conflict):
    """The trigger changed since the version the caller read (the API: 412)."""


class InvalidTemplate(PermanentError):
    """The message template could not be rendered."""


class TargetRefused(PermanentError):
    """The delivery target is not allowed."""


class TargetUnavailable(TransientError):
    """The delivery target could not be reached; a later attempt may succeed."""
