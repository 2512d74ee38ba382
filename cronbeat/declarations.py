"""Schedules as code: a Cronbeat trigger declared next to the task it runs.

    import cronbeat

    @cronbeat.schedule("0 9 * * 1-5", timezone="Europe/Berlin", name="daily-report")
    @app.task(name="shop.daily_report")
    def daily_report(): ...

or a list in a module of its own (a task as its name, a Celery task or a function)::

    SCHEDULES = [cronbeat.Schedule("shop.cleanup", every=timedelta(hours=1))]

A deploy job runs ``cronbeat sync shop.celery:app --tenant T --project P --apply`` (or
``shop.schedules:SCHEDULES``): it imports the code, collects the declarations, checks
each as the API checks a trigger, and makes the project hold exactly these triggers,
marked as managed by that code (docs/SCHEDULES_AS_CODE.md).

Declaring sends nothing and imports nothing but the standard library (your worker
imports it too). What can be checked here is checked when the module is imported: a
wrong declaration raises :class:`ScheduleError` naming the task and the field. The rest
(a cron expression's fields, the operator's queues and limits) is checked by the API's
own schema when ``cronbeat sync`` runs.

The decorator records the task object as it is: a Celery task is read (its name, its
app) only when ``cronbeat sync`` collects, so declaring never evaluates a lazy task
before its app is configured. Declarations live in a registry of this process, not on
the app: ``cronbeat sync MODULE:APP`` keeps those of APP's tasks, and those on plain
functions and task names (which belong to no app).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import inspect
import json
import re
import types
import zoneinfo
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

_NAME = re.compile(r"[A-Za-z0-9._-]{1,200}")
_OVERLAP = ("allow", "skip", "buffer_one")
_MISFIRE = ("run_once", "run_all", "skip")
#: The whole-number options, as the API names them.
_COUNTS = ("misfire_grace_s", "max_attempts", "timeout_s", "backoff_base_s",
           "backoff_cap_s")


class ScheduleError(ValueError):
    """A declaration is wrong; the message names the task and the field."""


def task_label(task: Any) -> str:
    """How an error names ``task`` without evaluating a lazy Celery task."""
    if type(task) is str:
        return task
    if type(task) is types.FunctionType:
        return f"{task.__module__}.{task.__name__}"
    # An evaluated Celery task's class holds its name; a lazy proxy's class has none.
    name = getattr(type(task), "name", None)
    return name if type(name) is str else "a Celery task"


@dataclasses.dataclass(frozen=True)
class Schedule:
    """One trigger of a task: exactly one of ``cron`` (in ``timezone``), ``every`` (a
    ``timedelta`` or seconds) or ``run_at`` (a ``datetime``; naive: in ``timezone``).

    ``args``, ``kwargs``, ``queue`` and ``outcome`` are the task target's; ``overlap``
    and ``misfire`` the trigger's policies (``overlap_policy``, ``misfire_policy``);
    ``name`` defaults to the task's name. Options left None take the API's defaults.

    Raises:
        ScheduleError: a field is wrong (see the module doc).
    """

    task: Any
    cron: str | None = None
    every: dt.timedelta | int | None = None
    run_at: dt.datetime | None = None
    timezone: str = "UTC"
    name: str | None = None
    args: Sequence[Any] = ()
    kwargs: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    queue: str | None = None
    outcome: bool = False
    overlap: str | None = None
    misfire: str | None = None
    misfire_grace_s: int | None = None
    max_attempts: int | None = None
    timeout_s: int | None = None
    backoff_base_s: int | None = None
    backoff_cap_s: int | None = None
    description: str | None = None
    #: Where it was declared (a module), for the trigger's description.
    origin: str | None = dataclasses.field(default=None, compare=False)
    #: How errors name the task when it cannot tell its name yet (a lazy Celery task).
    where: str | None = dataclasses.field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        label = task_label(self.task)
        if label == "a Celery task" and self.where:
            label = f"the task at {self.where}"
        for field, problem in _problems(self):
            raise ScheduleError(f"schedule of {label}: {field}: {problem}")

    def definition(self, task_name: str, trigger_name: str) -> dict[str, Any]:
        """The trigger as the API takes it (``POST .../triggers``)."""
        target: dict[str, Any] = {"kind": "task", "task_name": task_name}
        if self.args:
            target["args"] = list(self.args)
        if self.kwargs:
            target["kwargs"] = dict(self.kwargs)
        if self.queue is not None:
            target["queue"] = self.queue
        if self.outcome:
            target["outcome"] = True
        found: dict[str, Any] = {"name": trigger_name, "timezone": self.timezone}
        if self.cron is not None:
            found["cron_expression"] = self.cron
        elif self.every is not None:
            found["interval_s"] = _seconds(self.every)
        else:
            assert self.run_at is not None
            found["run_at"] = self.run_at.isoformat()
        found["target"] = target
        description = self.description
        if description is None and self.origin:
            description = f"declared in {self.origin}"
        if description is not None:
            found["description"] = description
        for option, field in (("overlap", "overlap_policy"), ("misfire", "misfire_policy")):
            if getattr(self, option) is not None:
                found[field] = getattr(self, option)
        found.update({field: getattr(self, field) for field in _COUNTS
                      if getattr(self, field) is not None})
        return found


def _seconds(every: dt.timedelta | int) -> int:
    return int(every.total_seconds()) if isinstance(every, dt.timedelta) else every


def _is_json(value: Any) -> bool:
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError):
        return False
    return True


def _problems(s: Schedule) -> Iterable[tuple[str, str]]:
    """(field, what is wrong) for each wrong field of ``s``, in the fields' order."""
    if not (type(s.task) is str and s.task) and not callable(s.task):
        yield "task", "must be a task name, a Celery task or a function"
    given = [kind for kind in ("cron", "every", "run_at") if getattr(s, kind) is not None]
    if len(given) != 1:
        yield (given or ["cron"])[-1], ("give exactly one of cron, every or run_at (got "
                                        f"{' and '.join(given) or 'none'})")
    if s.cron is not None and not (isinstance(s.cron, str) and s.cron.strip()):
        yield "cron", "must be a cron expression (a string such as '0 9 * * 1-5')"
    if s.every is not None:
        seconds = (s.every.total_seconds() if isinstance(s.every, dt.timedelta)
                   else s.every if type(s.every) is int else None)
        if seconds is None or seconds != int(seconds) or seconds < 1:
            yield "every", ("must be a whole number of seconds (an int or a timedelta), at"
                            f" least 1, not {s.every!r}")
    if s.run_at is not None and type(s.run_at) is not dt.datetime:
        yield "run_at", f"must be a datetime, not {type(s.run_at).__name__}"
    yield from _zone_problem(s.timezone)
    if s.name is not None and not (isinstance(s.name, str) and _NAME.fullmatch(s.name)):
        yield "name", f"must be 1-200 of A-Z a-z 0-9 . _ -, not {s.name!r}"
    if not isinstance(s.args, list | tuple):
        yield "args", "must be a list or a tuple"
    elif not _is_json(list(s.args)):
        yield "args", "must be JSON (numbers, strings, booleans, None, lists, dicts)"
    if not (isinstance(s.kwargs, Mapping) and all(type(k) is str for k in s.kwargs)):
        yield "kwargs", "must be a dict with string keys"
    elif not _is_json(dict(s.kwargs)):
        yield "kwargs", "must be JSON (numbers, strings, booleans, None, lists, dicts)"
    if s.queue is not None and not (isinstance(s.queue, str) and s.queue):
        yield "queue", "must be a queue's name"
    if type(s.outcome) is not bool:
        yield "outcome", "must be True or False"
    for field, allowed in (("overlap", _OVERLAP), ("misfire", _MISFIRE)):
        if getattr(s, field) not in (None, *allowed):
            yield field, f"must be one of {', '.join(allowed)}, not {getattr(s, field)!r}"
    for field in _COUNTS:
        value = getattr(s, field)
        if value is not None and (type(value) is not int or value < 0):
            yield field, f"must be a whole number, at least 0, not {value!r}"
    if s.description is not None and not isinstance(s.description, str):
        yield "description", "must be a string"


def _zone_problem(zone: Any) -> Iterable[tuple[str, str]]:
    if not isinstance(zone, str):
        yield "timezone", "must be an IANA zone's name, such as 'Europe/Berlin'"
        return
    try:
        zoneinfo.ZoneInfo(zone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        yield "timezone", f"unknown zone {zone!r} (an IANA name, such as 'Europe/Berlin')"


@dataclasses.dataclass(frozen=True)
class Declared:
    """A declaration as collected: its task's name resolved."""

    schedule: Schedule
    task_name: str


class Registry:
    """The declarations of one process (the module's :data:`registry`; tests make
    their own)."""

    def __init__(self) -> None:
        self._schedules: list[Schedule] = []

    def schedule(self, cron: str | None = None, **options: Any) -> Callable[[Any], Any]:
        """Declare a trigger of the decorated task (see :class:`Schedule` for the
        options; ``cron`` may be given first, positionally). Returns the task unchanged.

        Raises:
            ScheduleError: when the task is decorated, if a field is wrong.
        """

        def declare(task: Any) -> Any:
            caller = inspect.currentframe()
            module = where = None
            if caller is not None and caller.f_back is not None:
                module = caller.f_back.f_globals.get("__name__")
                where = f"{module} line {caller.f_back.f_lineno}"
            self._schedules.append(Schedule(task, cron, **{
                "origin": module, "where": where, **options}))
            return task

        return declare

    def collect(self, app: Any) -> list[Declared]:
        """The declarations for the Celery ``app``: those of its tasks, and those on
        plain functions (no app's), in the order they were made.

        Raises:
            ScheduleError: a declared object is neither a task nor a function.
        """
        found = []
        for one in self._schedules:
            name, owner = resolve(one.task)
            if owner is None or owner is app:
                found.append(Declared(one, name))
        return found


def resolve(task: Any) -> tuple[str, Any]:
    """The task's name and its Celery app (None for a name or a plain function); a lazy
    Celery task is evaluated here.

    Raises:
        ScheduleError: ``task`` has no name to send it by.
    """
    if isinstance(task, str):
        return task, None
    if isinstance(task, types.FunctionType):
        # Celery's own default name for a function's task: module.function.
        return f"{task.__module__}.{task.__name__}", None
    name = getattr(task, "name", None)
    if not isinstance(name, str) or not name:
        raise ScheduleError(f"schedule of {task!r}: task: has no name (give a Celery task,"
                            " a task name or a function)")
    return name, getattr(task, "app", None)


def declared_in(schedules: Iterable[Any], origin: str) -> list[Declared]:
    """The declarations of a list (``SCHEDULES = [Schedule(...)]``) found in ``origin``.

    Raises:
        ScheduleError: an item is not a :class:`Schedule`.
    """
    found = []
    for position, one in enumerate(schedules):
        if not isinstance(one, Schedule):
            raise ScheduleError(f"{origin}[{position}]: must be a cronbeat.Schedule, not"
                                f" {type(one).__name__}")
        if one.origin is None:
            one = dataclasses.replace(one, origin=origin)
        found.append(Declared(one, resolve(one.task)[0]))
    return found


#: This process's declarations: ``cronbeat.schedule`` adds to it.
registry = Registry()
schedule = registry.schedule
