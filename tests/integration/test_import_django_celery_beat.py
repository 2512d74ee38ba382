"""``cronbeat import django-celery-beat``: a real django-celery-beat database, made by
Django with the package's own migrations and ORM (tests.support.django_beat, in a process
of its own), planned, applied, applied again, and left as it was; and each way the source
cannot be read fails with one line and exit status 2, never showing the password."""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import MetaData, create_engine, func, insert, make_url, select
from sqlalchemy.orm import Session, sessionmaker

from app.errors import ConfigError
from app.importing.django_source import read_only, source_url
from app.models import Invocation, Trigger
from tests.conftest import Services

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
OPERATOR = {"CRONBEAT_TASK_QUEUES": "celery,reports"}


@dataclasses.dataclass(frozen=True)
class Source:
    url: str
    password: str
    #: The URL as the CLI shows it: postgresql://, the password as ***.
    shown: str
    future: dt.datetime
    past: dt.datetime


@pytest.fixture(scope="module")
def source(test_services: Services) -> Iterator[Source]:
    """A database of its own holding django-celery-beat's schema and the seeded tasks;
    the URL carries a password (any one does on a trust server)."""
    name = test_services.new_database(empty=True)
    url = make_url(test_services.url(name))
    password = url.password or "s3cret-pw-9f2"
    url = url.set(drivername="postgresql", password=password)
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    future = now + dt.timedelta(days=30)
    past = now - dt.timedelta(days=10) + dt.timedelta(microseconds=250_000)
    seeded = subprocess.run(
        [sys.executable, "-m", "tests.support.django_beat",
         url.render_as_string(hide_password=False), future.isoformat(), past.isoformat()],
        cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert seeded.returncode == 0, seeded.stderr
    yield Source(url.render_as_string(hide_password=False), password,
                 url.render_as_string(hide_password=True), future, past)


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cli", "import", "django-celery-beat", *args], cwd=ROOT,
        env={**os.environ, **OPERATOR}, capture_output=True, text=True, timeout=120)


def _import(source: Source, *extra: str) -> str:
    done = _cli("--database-url", source.url, "--tenant", "t1", "--project", "dj", *extra)
    assert (done.returncode, done.stderr) == (0, ""), done.stderr
    assert source.password not in done.stdout
    return done.stdout


def _snapshot(url: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every django-celery-beat table, in id order."""
    engine = create_engine(source_url(url, "the source URL"))
    try:
        with engine.connect() as conn:
            metadata = MetaData()
            metadata.reflect(conn, only=lambda name, _: name.startswith("django_celery_beat_"))
            return {name: [tuple(row) for row in conn.execute(
                        select(table).order_by(*table.primary_key.columns))]
                    for name, table in metadata.tables.items()}
    finally:
        engine.dispose()


def _iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).isoformat()


def _plan(source: Source) -> str:
    future, past = source.future, source.past
    anchor = past.replace(microsecond=0) + dt.timedelta(seconds=1)
    return f"""\
django-celery-beat periodic tasks of {source.shown} into tenant t1, project dj: plan, \
nothing written (--apply writes it)
  refused    'bad-args': its args are not JSON (Expecting ',' delimiter: line 1 column 6 \
(char 5))
  create     every-90-s  every 90 s from {_iso(anchor)}: shop.ping()
               note: expire_seconds 30: a run that cannot start within 30 s is recorded \
missed (misfire_grace_s, skip)
  refused    'expired': it expired at {_iso(past)} (beat runs it no more)
  refused    'friday-13th': day_of_month and day_of_week are both restricted: celery beat \
runs on days that match both, cron on days that match either
  create     hourly-until  every 3600 s: shop.ping()
               note: expires at {_iso(future)} left out: a trigger has no end date (pause \
or delete it then)
               note: options left out: priority
  create     launch  once at {_iso(future)}: shop.launch(product='x')
               note: expires at {_iso(future + dt.timedelta(hours=1))}: a run that cannot \
start within 3600 s is recorded missed (misfire_grace_s, skip)
  refused    'old-launch': its clocked time {_iso(past)} is already past (a one-time \
trigger must lie ahead; nothing fires late)
  refused    'once-daily': one_off with a crontab schedule is not supported: a one-time \
trigger runs at a fixed instant (a clocked schedule)
  create     paused-cleanup  cron '0 3 * * *' in UTC: shop.cleanup() (paused)
  refused    'sunset': solar schedules are not supported
  refused    'tiny': every 0.0005 s: an interval is whole seconds from 1 to 31622400
  create     weekday-report  cron '30 8,11,14,17 * * 1-5' in Europe/Berlin: \
shop.report('daily', fmt='pdf') on reports
               note: named 'weekday-report'
               note: start_time {_iso(future)} left out: it runs from its next match after \
the import
12 entries: 5 to create, 0 to update, 0 unchanged, 7 refused; 0 other triggers to delete
"""


def _triggers(db: sessionmaker[Session]) -> dict[str, Trigger]:
    with db.begin() as session:
        return {t.name: t for t in session.execute(select(Trigger)).scalars()}


def _now(db: sessionmaker[Session]) -> dt.datetime:
    with db.begin() as session:
        return session.execute(select(func.now())).scalar_one()


def test_the_plan_then_apply_then_apply_again_leaves_the_source_as_it_was(
    db: sessionmaker[Session], source: Source,
) -> None:
    before = _snapshot(source.url)
    assert len(before["django_celery_beat_periodictask"]) == 12
    assert _import(source) == _plan(source)
    assert _triggers(db) == {}

    started = _now(db)
    applied = _import(source, "--apply")
    ended = _now(db)
    assert applied == _plan(source).replace("  create     ", "  created    ").replace(
        "plan, nothing written (--apply writes it)", "applied").replace(
        "5 to create, 0 to update, 0 unchanged, 7 refused; 0 other triggers to delete",
        "5 created, 0 updated, 0 unchanged, 7 refused; 0 other triggers deleted")
    triggers = _triggers(db)
    anchor = source.past.replace(microsecond=0) + dt.timedelta(seconds=1)
    assert {name: (t.enabled, t.cron_expression, t.timezone, t.interval_s, t.run_at,
                   t.task_name, t.task_args, t.task_kwargs, t.task_queue,
                   t.misfire_grace_s, t.misfire_policy.value, t.description)
            for name, t in triggers.items()} == {
        "every-90-s": (True, None, "UTC", 90, None, "shop.ping", None, None, None, 30,
                       "skip", "imported from django-celery-beat periodic task 'every-90-s'"),
        "hourly-until": (True, None, "UTC", 3600, None, "shop.ping", None, None, None, 300,
                         "run_once",
                         "imported from django-celery-beat periodic task 'hourly-until'"),
        "launch": (True, None, "UTC", None, source.future, "shop.launch", None,
                   {"product": "x"}, None, 3600, "skip",
                   "imported from django-celery-beat periodic task 'launch'"),
        "paused-cleanup": (False, "0 3 * * *", "UTC", None, None, "shop.cleanup", None, None,
                           None, 300, "run_once",
                           "imported from django-celery-beat periodic task 'paused-cleanup'"),
        "weekday-report": (True, "30 8,11,14,17 * * 1-5", "Europe/Berlin", None, None,
                           "shop.report", ["daily"], {"fmt": "pdf"}, "reports", 300,
                           "run_once", "the sales report"),
    }
    assert {t.task_envelope for t in triggers.values()} == {False}
    # Intervals: the start_time anchors one (rounded up to its second); the other counts
    # from the save. First runs count from the save: nothing fired, nothing is missed.
    every_90, hourly = triggers["every-90-s"], triggers["hourly-until"]
    assert every_90.start_at == anchor
    assert (every_90.next_run_at - anchor) % dt.timedelta(seconds=90) == dt.timedelta(0)
    assert started < every_90.next_run_at <= ended + dt.timedelta(seconds=90)
    assert started.replace(microsecond=0) <= hourly.start_at <= ended
    assert hourly.next_run_at == hourly.start_at + dt.timedelta(hours=1)
    assert triggers["launch"].next_run_at == source.future
    assert triggers["paused-cleanup"].next_run_at is None
    assert started < triggers["weekday-report"].next_run_at
    with db.begin() as session:
        assert session.execute(select(func.count()).select_from(Invocation)).scalar_one() == 0

    again = _import(source, "--apply")
    assert again.splitlines()[-1] == (
        "12 entries: 0 created, 0 updated, 5 unchanged, 7 refused; 0 other triggers deleted")
    assert [line.split()[0] for line in again.splitlines()[1:-1]
            if not line.lstrip().startswith("note:")] == [
        "refused", "unchanged", "refused", "refused", "unchanged", "unchanged", "refused",
        "refused", "unchanged", "refused", "refused", "unchanged"]
    assert {name: t.version for name, t in _triggers(db).items()} == dict.fromkeys(triggers, 1)
    assert _snapshot(source.url) == before


def test_the_source_is_read_in_a_read_only_repeatable_read_transaction(
    source: Source,
) -> None:
    url = source_url(source.url, "--database-url")
    with read_only(url) as connection:
        settings = connection.execute(select(
            func.current_setting("transaction_read_only"),
            func.current_setting("transaction_isolation"))).one()
    assert tuple(settings) == ("on", "repeatable read")
    metadata = MetaData()
    engine = create_engine(source_url(source.url, "the source URL"))
    metadata.reflect(engine, only=["django_celery_beat_periodictasks"])
    engine.dispose()
    table = metadata.tables["django_celery_beat_periodictasks"]
    with pytest.raises(ConfigError) as raised, read_only(url) as connection:
        connection.execute(insert(table).values(ident=2, last_update=func.now()))
    assert raised.value.message == (
        f"cannot read {source.shown}: cannot execute INSERT in a read-only transaction")


def test_a_source_that_cannot_be_read_is_one_line_and_exit_2_without_the_password(
    db: sessionmaker[Session], source: Source, test_services: Services,
) -> None:
    base = make_url(source.url)
    closed = base.set(host="127.0.0.1", port=1, query={})
    missing = base.set(database="no_such_database_dcb")
    cronbeat_db = base.set(database=test_services.run_name)
    cases = [
        (closed, f"cronbeat: cannot read {closed.render_as_string()}: connection to server at"
                 ' "127.0.0.1", port 1 failed: Connection refused'),
        (cronbeat_db, f"cronbeat: {cronbeat_db.render_as_string()} has no django-celery-beat"
                      " tables (django_celery_beat_periodictask): give the database of the"
                      " Django project that runs beat"),
        (base.set(drivername="mysql"), "cronbeat: --database-url must be a postgresql:// URL"),
    ]
    for url, line in cases:
        done = _cli("--database-url", url.render_as_string(hide_password=False),
                    "--tenant", "t1", "--project", "dj")
        assert (done.returncode, done.stdout, done.stderr) == (2, "", line + "\n")
    done = _cli("--database-url", missing.render_as_string(hide_password=False),
                "--tenant", "t1", "--project", "dj")
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr.startswith(f"cronbeat: cannot read {missing.render_as_string()}: ")
    assert done.stderr.endswith('FATAL:  database "no_such_database_dcb" does not exist\n')
    assert done.stderr.count("\n") == 1 and source.password not in done.stderr
    assert _triggers(db) == {}
