"""``cronbeat sync`` as a deploy job runs it (a subprocess) against a user's code that
declares its schedules (tests.sample_app.scheduled): the plan, --apply, a second
--apply, the next deploy, a paused trigger, refusals, another owner, and bad input."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from app.editing import triggers as editing
from app.models import Trigger
from tests.support.sample_worker import ROOT

pytestmark = pytest.mark.slow

APP = "tests.sample_app.scheduled:app"
LIST = "tests.sample_app.scheduled:SCHEDULES"
HEADER = ("schedules declared in {source} into tenant t1, project code, which holds exactly"
          " these: {state}")
PLAN_STATE = "plan, nothing written (--apply writes it)"
PLAN = [
    "  create     daily-report  cron '0 9 * * 1-5' in Europe/Berlin: sample.report(1, 2)"
    " on sample",
    "  create     sample.sum  every 900 s: sample.sum(scale=3)",
    "  create     sum-often  cron '*/5 * * * *' in UTC: sample.sum()",
    "  create     new-year  once at 2031-01-01T09:00:00 (Europe/Berlin): sample:greet()",
]
#: The columns a declaration sets, and what sync derives (paused state, owner, version).
COLUMNS = ("cron_expression", "timezone", "interval_s", "run_at", "task_name", "task_args",
           "task_kwargs", "task_queue", "task_outcome", "overlap_policy", "misfire_policy",
           "misfire_grace_s", "max_attempts", "description", "enabled", "managed_by",
           "version")
DAILY = ("0 9 * * 1-5", "Europe/Berlin", None, None, "sample.report", [1, 2], None,
         "sample", True, "allow", "run_once", 300, 3, "declared in tests.sample_app.scheduled",
         True, APP, 1)
ROWS = {
    "daily-report": DAILY,
    "sample.sum": (None, "UTC", 900, None, "sample.sum", None, {"scale": 3}, None, False,
                   "skip", "skip", 60, 3, "declared in tests.sample_app.scheduled", True, APP,
                   1),
    "sum-often": ("*/5 * * * *", "UTC", None, None, "sample.sum", None, None, None, False,
                  "allow", "run_once", 300, 1, "declared in tests.sample_app.scheduled",
                  True, APP, 1),
    "new-year": (None, "Europe/Berlin", None, dt.datetime(2031, 1, 1, 8, 0, tzinfo=dt.UTC),
                 "sample:greet", None, None, None, False, "allow", "run_once", 300, 3,
                 "once, in 2031", True, APP, 1),
}


@pytest.fixture(autouse=True)
def _services(db: sessionmaker[Session]) -> None:
    """Empty tables; the test services' URLs are in the environment (the CLI reads them)."""


def _cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cli", "sync", *args], cwd=ROOT, capture_output=True,
        text=True, timeout=120,
        env={**os.environ, "CRONBEAT_TASK_QUEUES": "celery,sample", **env})


def _sync(source: str = APP, *flags: str, **env: str) -> subprocess.CompletedProcess[str]:
    return _cli(source, "--tenant", "t1", "--project", "code", *flags, **env)


def _rows(db: sessionmaker[Session]) -> dict[str, tuple[Any, ...]]:
    with db.begin() as session:
        return {t.name: tuple(getattr(t, column) for column in COLUMNS)
                for t in session.execute(select(Trigger)).scalars()}


def _lines(done: subprocess.CompletedProcess[str]) -> list[str]:
    return done.stdout.splitlines()


def test_the_plan_writes_nothing_apply_writes_the_declarations_and_again_is_unchanged(
    db: sessionmaker[Session],
) -> None:
    plan = _sync()
    assert (plan.returncode, plan.stderr) == (0, "")
    assert _lines(plan) == [
        HEADER.format(source=APP, state=PLAN_STATE), *PLAN,
        "4 declarations: 4 to create, 0 to update, 0 unchanged, 0 refused; 0 other"
        " triggers to delete"]
    assert _rows(db) == {}

    applied = _sync(APP, "--apply")
    assert (applied.returncode, applied.stderr) == (0, "")
    assert _lines(applied) == [
        HEADER.format(source=APP, state="applied"),
        *(line.replace("  create    ", "  created   ") for line in PLAN),
        "4 declarations: 4 created, 0 updated, 0 unchanged, 0 refused; 0 other triggers"
        " deleted"]
    assert _rows(db) == ROWS

    again = _sync(APP, "--apply")
    assert _lines(again)[-1] == ("4 declarations: 0 created, 0 updated, 4 unchanged, 0"
                                 " refused; 0 other triggers deleted")
    assert _rows(db) == ROWS


def test_the_next_deploy_updates_what_changed_and_deletes_what_is_no_longer_declared(
    db: sessionmaker[Session],
) -> None:
    assert _sync(APP, "--apply").returncode == 0
    plan = _sync(SAMPLE_DEPLOY="2")
    assert _lines(plan) == [
        HEADER.format(source=APP, state=PLAN_STATE),
        "  update     daily-report  cron '0 10 * * 1-5' in Europe/Berlin:"
        " sample.report(1, 2) on sample",
        "  unchanged  sample.sum  every 900 s: sample.sum(scale=3)",
        "  unchanged  new-year  once at 2031-01-01T09:00:00 (Europe/Berlin): sample:greet()",
        f"  delete     sum-often  (not declared in {APP})",
        "3 declarations: 0 to create, 1 to update, 2 unchanged, 0 refused; 1 other triggers"
        " to delete"]
    assert _rows(db) == ROWS
    applied = _sync(APP, "--apply", SAMPLE_DEPLOY="2")
    assert applied.returncode == 0, applied.stderr
    assert _lines(applied)[-2:] == [
        f"  deleted    sum-often  (not declared in {APP})",
        "3 declarations: 0 created, 1 updated, 2 unchanged, 0 refused; 1 other triggers"
        " deleted"]
    expected = {name: row for name, row in ROWS.items() if name != "sum-often"}
    expected["daily-report"] = ("0 10 * * 1-5", *DAILY[1:-1], 2)
    assert _rows(db) == expected


def test_a_trigger_paused_by_an_operator_stays_paused_through_syncs(
    db: sessionmaker[Session],
) -> None:
    assert _sync(APP, "--apply").returncode == 0
    with db.begin() as session:
        daily = session.execute(select(Trigger).where(Trigger.name == "daily-report")
                                ).scalar_one()
        # Versions 2 and 3: paused, then its note.
        editing.pause_trigger(session, "t1", "code", daily.id, note="holiday",
                              now=dt.datetime.now(dt.UTC))
    assert _lines(_sync(APP, "--apply"))[-1] == (
        "4 declarations: 0 created, 0 updated, 4 unchanged, 0 refused; 0 other triggers"
        " deleted")
    assert _sync(APP, "--apply", SAMPLE_DEPLOY="2").returncode == 0
    with db.begin() as session:
        daily = session.execute(select(Trigger).where(Trigger.name == "daily-report")
                                ).scalar_one()
        assert (daily.cron_expression, daily.enabled, daily.next_run_at, daily.pause_note,
                daily.version) == ("0 10 * * 1-5", False, None, "holiday", 4)


def test_a_declaration_the_api_refuses_fails_the_sync_and_apply_writes_nothing(
    db: sessionmaker[Session],
) -> None:
    refused = ("  refused    'bad-minute': refused as the API would: {'cron_expression':"
               " ['bad minute field: 61 (minute is 0-59)']}")
    counts = ("5 declarations: 4 to create, 0 to update, 0 unchanged, 1 refused; 0 other"
              " triggers to delete")
    plan = _sync(SAMPLE_DEPLOY="typo")
    assert (plan.returncode, _lines(plan)) == (
        1, [HEADER.format(source=APP, state=PLAN_STATE), *PLAN, refused, counts])
    applied = _sync(APP, "--apply", SAMPLE_DEPLOY="typo")
    assert (applied.returncode, _lines(applied)) == (1, [
        HEADER.format(source=APP, state="nothing written: 1 refused (fix them, then"
                      " --apply)"), *PLAN, refused, counts])
    assert _rows(db) == {}


def test_another_owner_s_triggers_are_refused_unless_forced_and_api_ones_are_taken_over(
    db: sessionmaker[Session],
) -> None:
    with db.begin() as session:
        for name in ("add-every-minute", "legacy"):
            editing.create_trigger(session, "t1", "code", {
                "name": name, "interval_s": 30, "target_kind": "task",
                "task_name": "sample.add"}, now=dt.datetime.now(dt.UTC))
    listed = _sync(LIST, "--apply")
    assert (listed.returncode, _lines(listed)) == (0, [
        HEADER.format(source=LIST, state="applied"),
        "  updated    add-every-minute  every 60 s: sample.add(1, 1)",
        "  created    tests.sample_app.scheduled._plain  cron '30 2 * * *' in UTC:"
        " tests.sample_app.scheduled._plain()",
        f"  deleted    legacy  (not declared in {LIST})",
        "2 declarations: 1 created, 1 updated, 0 unchanged, 0 refused; 1 other triggers"
        " deleted"])
    owners = {name: row[COLUMNS.index("managed_by")] for name, row in _rows(db).items()}
    assert owners == {"add-every-minute": LIST, "tests.sample_app.scheduled._plain": LIST}

    refused = _sync(APP, "--apply")
    assert (refused.returncode, refused.stdout, refused.stderr) == (1, "", (
        "cronbeat: triggers 'add-every-minute', 'tests.sample_app.scheduled._plain' are"
        f" managed by code in {LIST}, not {APP}: sync them from there, or pass --force to"
        " take them over; nothing written\n"))
    assert {name: row[-2] for name, row in _rows(db).items()} == owners
    forced = _sync(APP, "--apply", "--force")
    assert forced.returncode == 0, forced.stderr
    assert _rows(db) == ROWS


@pytest.mark.parametrize(("source", "error"), [
    ("tests.sample_app.misdeclared:app",
     "cronbeat: cannot import 'tests.sample_app.misdeclared': ScheduleError: schedule of"
     " the task at tests.sample_app.misdeclared line 13: every: must be a whole number of"
     " seconds (an int or a timedelta), at least 1, not 1.5\n"),
    ("tests.sample_app.scheduled", "cronbeat: 'tests.sample_app.scheduled': give it as"
     " MODULE:NAME (shop.celery:app)\n"),
    ("tests.sample_app.nowhere:app", "cronbeat: cannot import 'tests.sample_app.nowhere':"
     " ModuleNotFoundError: No module named 'tests.sample_app.nowhere'\n"),
    ("tests.sample_app.scheduled:apps",
     "cronbeat: 'tests.sample_app.scheduled' has no 'apps'\n"),
    ("tests.sample_app.scheduled:DEPLOY", "cronbeat: 'tests.sample_app.scheduled:DEPLOY' is"
     " neither a Celery app nor a list of cronbeat.Schedule\n"),
])
def test_bad_code_exits_2_with_the_reason_and_writes_nothing(
    db: sessionmaker[Session], source: str, error: str,
) -> None:
    done = _sync(source, "--apply")
    assert (done.returncode, done.stdout, done.stderr) == (2, "", error)
    assert _rows(db) == {}


def test_bad_usage_exits_2_naming_the_option() -> None:
    done = _cli(APP, "--tenant", "t 1", "--project", "code")
    assert done.returncode == 2
    assert done.stderr.splitlines()[-1] == (
        "cronbeat sync: error: argument --tenant: --tenant must be 1-64 of A-Z a-z 0-9 . _ -")
