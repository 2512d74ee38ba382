"""Schedules as code, the user's side (cronbeat.declarations) and its mapping to trigger
definitions (app.importing.code): pure, no server."""

from __future__ import annotations

import datetime as dt
import inspect
import subprocess
import sys
from typing import Any

import pytest
from celery import Celery

from app.importing.code import map_declarations
from app.importing.entries import Mapped
from cronbeat.declarations import Declared, Registry, Schedule, ScheduleError, declared_in

MODULE = __name__


def _plain() -> None:
    """A function that is no task."""


def _task(app: Celery, name: str, **options: Any) -> Any:
    def run() -> None:
        """A task of the app's."""

    return app.task(name=name, **options)(run)


def test_the_decorator_returns_the_task_unchanged_and_leaves_a_lazy_task_unevaluated() -> None:
    registry = Registry()
    app = Celery("unit-lazy")

    @app.task(name="shop.report")
    def report() -> None: ...

    assert registry.schedule("0 9 * * 1-5", name="daily")(report) is report
    # Declaring evaluates nothing: the app is neither configured nor finalized by it.
    assert (report.__evaluated__(), app.configured, app.finalized) == (False, False, False)
    assert [(d.task_name, d.schedule.cron, d.schedule.name, d.schedule.origin)
            for d in registry.collect(app)] == [("shop.report", "0 9 * * 1-5", "daily", MODULE)]


def test_collect_keeps_the_app_s_tasks_and_plain_functions_in_declaration_order() -> None:
    registry = Registry()
    app, other = Celery("unit-one"), Celery("unit-other")
    report = registry.schedule(every=60)(_task(app, "shop.report"))
    registry.schedule("0 0 * * *")(_task(other, "other.job"))
    registry.schedule("30 2 * * *", name="plain")(_plain)
    registry.schedule(every=dt.timedelta(hours=1), name="report-hourly")(report)
    assert [(d.task_name, d.schedule.name) for d in registry.collect(app)] == [
        ("shop.report", None), (f"{MODULE}._plain", "plain"),
        ("shop.report", "report-hourly")]
    assert [d.task_name for d in registry.collect(other)] == [
        "other.job", f"{MODULE}._plain"]


def test_a_definition_is_the_api_s_json_with_only_the_options_given() -> None:
    full = Schedule("shop.report", "0 9 * * 1-5", timezone="Europe/Berlin", args=(1, "a"),
                    kwargs={"scale": 3}, queue="reports", outcome=True, overlap="skip",
                    misfire="run_all", misfire_grace_s=60, max_attempts=5, timeout_s=10,
                    backoff_base_s=1, backoff_cap_s=30, description="the report")
    assert full.definition("shop.report", "daily") == {
        "name": "daily", "timezone": "Europe/Berlin", "cron_expression": "0 9 * * 1-5",
        "target": {"kind": "task", "task_name": "shop.report", "args": [1, "a"],
                   "kwargs": {"scale": 3}, "queue": "reports", "outcome": True},
        "description": "the report", "overlap_policy": "skip", "misfire_policy": "run_all",
        "misfire_grace_s": 60, "max_attempts": 5, "timeout_s": 10, "backoff_base_s": 1,
        "backoff_cap_s": 30}
    every = Schedule("shop.sum", every=dt.timedelta(minutes=15), origin="shop.tasks")
    assert every.definition("shop.sum", "sum") == {
        "name": "sum", "timezone": "UTC", "interval_s": 900,
        "target": {"kind": "task", "task_name": "shop.sum"},
        "description": "declared in shop.tasks"}
    once = Schedule("shop.greet", run_at=dt.datetime(2031, 1, 1, 9, 0, tzinfo=dt.UTC))
    assert once.definition("shop.greet", "greet") == {
        "name": "greet", "timezone": "UTC", "run_at": "2031-01-01T09:00:00+00:00",
        "target": {"kind": "task", "task_name": "shop.greet"}}


@pytest.mark.parametrize(("options", "error"), [
    ({}, "cron: give exactly one of cron, every or run_at (got none)"),
    ({"cron": "* * * * *", "every": 60},
     "every: give exactly one of cron, every or run_at (got cron and every)"),
    ({"cron": " "}, "cron: must be a cron expression (a string such as '0 9 * * 1-5')"),
    ({"every": 1.5}, "every: must be a whole number of seconds (an int or a timedelta), at"
                     " least 1, not 1.5"),
    ({"every": dt.timedelta(milliseconds=500)},
     "every: must be a whole number of seconds (an int or a timedelta), at least 1, not"
     " datetime.timedelta(microseconds=500000)"),
    ({"every": 0}, "every: must be a whole number of seconds (an int or a timedelta), at"
                   " least 1, not 0"),
    ({"every": True}, "every: must be a whole number of seconds (an int or a timedelta),"
                      " at least 1, not True"),
    ({"run_at": dt.date(2031, 1, 1)}, "run_at: must be a datetime, not date"),
    ({"every": 60, "timezone": "Europe/Berln"},
     "timezone: unknown zone 'Europe/Berln' (an IANA name, such as 'Europe/Berlin')"),
    ({"every": 60, "name": "daily report"},
     "name: must be 1-200 of A-Z a-z 0-9 . _ -, not 'daily report'"),
    ({"every": 60, "args": {"a": 1}}, "args: must be a list or a tuple"),
    ({"every": 60, "args": [dt.date(2031, 1, 1)]},
     "args: must be JSON (numbers, strings, booleans, None, lists, dicts)"),
    ({"every": 60, "kwargs": {1: "a"}}, "kwargs: must be a dict with string keys"),
    ({"every": 60, "kwargs": {"x": float("nan")}},
     "kwargs: must be JSON (numbers, strings, booleans, None, lists, dicts)"),
    ({"every": 60, "queue": ""}, "queue: must be a queue's name"),
    ({"every": 60, "outcome": "yes"}, "outcome: must be True or False"),
    ({"every": 60, "overlap": "queue"},
     "overlap: must be one of allow, skip, buffer_one, not 'queue'"),
    ({"every": 60, "misfire": "run"},
     "misfire: must be one of run_once, run_all, skip, not 'run'"),
    ({"every": 60, "timeout_s": -1}, "timeout_s: must be a whole number, at least 0, not -1"),
    ({"every": 60, "max_attempts": "3"},
     "max_attempts: must be a whole number, at least 0, not '3'"),
    ({"every": 60, "description": 5}, "description: must be a string"),
])
def test_a_wrong_declaration_raises_naming_the_task_and_the_field(
    options: dict[str, Any], error: str,
) -> None:
    with pytest.raises(ScheduleError) as raised:
        Registry().schedule(**options)(_plain)
    assert str(raised.value) == f"schedule of {MODULE}._plain: {error}"


def test_errors_name_a_celery_task_by_its_name_or_a_lazy_one_by_where_it_is_declared(
) -> None:
    app = Celery("unit-errors")
    lazy = _task(app, "shop.lazy")
    line = inspect.currentframe().f_lineno + 2  # type: ignore[union-attr]
    with pytest.raises(ScheduleError) as raised:
        Registry().schedule(every=0)(lazy)
    assert str(raised.value) == (
        f"schedule of the task at {MODULE} line {line}: every: must be a whole number of"
        " seconds (an int or a timedelta), at least 1, not 0")
    assert not lazy.__evaluated__()
    evaluated = _task(app, "shop.evaluated", lazy=False)
    with pytest.raises(ScheduleError) as raised:
        Registry().schedule("* * * * *", queue=5)(evaluated)
    assert str(raised.value) == "schedule of shop.evaluated: queue: must be a queue's name"
    with pytest.raises(ScheduleError) as raised:
        Schedule(5, every=60)
    assert str(raised.value) == (
        "schedule of a Celery task: task: must be a task name, a Celery task or a function")


def test_a_list_s_schedules_take_its_module_as_origin_and_refuse_anything_else() -> None:
    listed = declared_in([Schedule("shop.add", every=60), Schedule(_plain, cron="0 * * * *")],
                         "shop.schedules")
    assert [(d.task_name, d.schedule.origin) for d in listed] == [
        ("shop.add", "shop.schedules"), (f"{MODULE}._plain", "shop.schedules")]
    with pytest.raises(ScheduleError) as raised:
        declared_in([Schedule("shop.add", every=60), {"task": "shop.add"}], "shop.schedules")
    assert str(raised.value) == "shop.schedules[1]: must be a cronbeat.Schedule, not dict"


def test_declarations_map_to_definitions_named_after_the_task_and_never_twice() -> None:
    mapped = map_declarations([
        Declared(Schedule("shop:report", every=60), "shop:report"),
        Declared(Schedule("shop.sum", every=60), "shop.sum"),
        Declared(Schedule("shop.other", every=120, name="shop.sum"), "shop.other"),
    ])
    assert mapped == [
        Mapped("shop:report", {"name": "shop-report", "timezone": "UTC", "interval_s": 60,
                               "target": {"kind": "task", "task_name": "shop:report"}},
               ("named 'shop-report'",)),
        Mapped("shop.sum", {"name": "shop.sum", "timezone": "UTC", "interval_s": 60,
                            "target": {"kind": "task", "task_name": "shop.sum"}}),
        Mapped("shop.sum", refused="its name 'shop.sum' is another declaration's too"),
    ]


def test_a_shared_task_is_collected_for_the_app_it_binds_to() -> None:
    # In a process of its own: a shared task joins every app created after it.
    code = ("from celery import Celery, shared_task\n"
            "from cronbeat.declarations import Registry\n"
            "registry = Registry()\n"
            "def run():\n"
            "    pass\n"
            "registry.schedule(every=60)(shared_task(name='shop.shared')(run))\n"
            "app = Celery('shop')\n"
            "print(app.configured, [d.task_name for d in registry.collect(app)])\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out == "False ['shop.shared']\n"


def test_importing_cronbeat_imports_neither_celery_nor_the_server() -> None:
    code = ("import sys, cronbeat\n"
            "print(sorted({m.split('.')[0] for m in sys.modules}"
            " & {'celery', 'sqlalchemy', 'flask', 'app', 'api', 'requests'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out == "[]\n"
