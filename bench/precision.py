"""Precision benchmark (not a test): how late one-time and interval runs start.

What it measures, in one run: 20 one-time triggers at odd whole seconds spread over
about 80 s (so some fall after the next minute's tick), and 5 interval triggers of 7 s
(anchors one second apart), all webhooks to a loopback receiver, created through the
API as a user would, run by the Procfile's web, worker, dispatcher and beat on default
settings (a tick a minute). The baseline, in the same run and over the same seconds: a
plain Celery task doing ``requests.post`` (bench/baseline_tasks.py) published with
``apply_async(eta=instant)`` for each of the same instants, on a threads worker.

For each side it prints the lateness of each delivery (its arrival at the receiver
minus its instant): p50, p99 and max, and how many of the expected deliveries came,
each once.

    make bench-precision     # or: .venv/bin/python -m bench.precision

It uses its own database (cronbeat_bench_precision, dropped at the end) on the server
of BENCH_PG_ADMIN_URL (default: postgres on 127.0.0.1:5432) and Redis db 13 of
BENCH_REDIS_URL's server (default 127.0.0.1:6379). A run takes about two minutes.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import socket
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import redis
from sqlalchemy import Engine, func, select

from app.config import Settings
from app.db import create_database, drop_database, make_engine, make_session_factory
from app.editing.apikeys import create_api_key
from app.models import Invocation
from bench.e2e import (
    Fleet,
    ReceiverClient,
    _celery_env,
    _interruptible,
    migrate,
    percentile,
)

DB_NAME = "cronbeat_bench_precision"
DEPLOYMENT_ID = "bench-precision"
ONE_TIME = 20
INTERVALS = 5
INTERVAL_S = 7
#: The first instant is this far after the triggers are created.
LEAD_S = 6
#: One-time instants are this far apart (odd seconds stay odd).
ONE_TIME_STEP_S = 4
#: How long after the first instant the interval runs are counted.
WINDOW_S = 84
#: After the window, how long deliveries may still arrive.
SETTLE_S = 5


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _post(url: str, key: str, body: dict[str, Any]) -> dict[str, Any]:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), method="POST",
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return dict(json.loads(response.read()))


def _wait_http(url: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{url} did not answer in {timeout_s:.0f} s") from None
            time.sleep(0.2)


def _lateness(arrivals: dict[str, list[float]], instants: dict[str, float],
              ) -> tuple[list[float], int, int]:
    """Lateness in seconds of each expected delivery that came; how many came twice and
    how many never came."""
    late = [arrivals[key][0] - at for key, at in instants.items() if key in arrivals]
    twice = sum(1 for key in instants if len(arrivals.get(key, ())) > 1)
    return late, twice, sum(1 for key in instants if key not in arrivals)


def _line(side: str, late: list[float], expected: int, twice: int, missing: int) -> str:
    if not late:
        return f"  {side:9} no delivery arrived ({expected} expected)"
    ms = [value * 1000 for value in late]
    return (f"  {side:9} {len(late):3}/{expected} delivered, {twice} twice, {missing} missing;"
            f" lateness p50 {percentile(ms, 0.5):7.1f} ms, p99 {percentile(ms, 0.99):7.1f} ms,"
            f" max {max(ms):7.1f} ms, earliest {min(ms):7.1f} ms")


def main() -> None:
    admin = os.environ.get("BENCH_PG_ADMIN_URL",
                           "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres")
    redis_url = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/14").rsplit(
        "/", 1)[0] + "/13"
    database_url = admin.rsplit("/", 1)[0] + "/" + DB_NAME
    log_dir = Path(tempfile.mkdtemp(prefix="cronbeat-bench-precision-"))
    print(f"cronbeat precision benchmark: {ONE_TIME} one-time triggers, {INTERVALS} "
          f"intervals of {INTERVAL_S} s; logs in {log_dir}")
    drop_database(admin, DB_NAME)
    create_database(admin, DB_NAME)
    fleet = Fleet(log_dir)
    engine: Engine | None = None
    try:
        with _interruptible():
            migrate(database_url)
            settings = Settings.from_env({"DATABASE_URL": database_url, "REDIS_URL": redis_url,
                                          "CRONBEAT_DEPLOYMENT_ID": DEPLOYMENT_ID})
            engine = make_engine(settings, pool_size=2)
            sessions = make_session_factory(engine)
            with sessions.begin() as session:
                key = create_api_key(session, "bench", "precision").key
            redis.Redis.from_url(redis_url).flushdb()
            late = _run(fleet, log_dir, settings, sessions, key, database_url, redis_url)
            print("lateness (arrival at the receiver - the run's instant):")
            for line in late:
                print(line)
            print(f"\nlogs: {log_dir}")
    except KeyboardInterrupt:
        print(f"\ninterrupted (logs: {log_dir})", file=sys.stderr)
        raise SystemExit(130) from None
    finally:
        fleet.stop_all()
        if engine is not None:
            engine.dispose()
        drop_database(admin, DB_NAME)


def _run(fleet: Fleet, log_dir: Path, settings: Settings, sessions: Any, key: str,
         database_url: str, redis_url: str) -> list[str]:
    python = sys.executable
    bin_dir = Path(python).parent
    port_file = log_dir / "receiver.port"
    receiver = fleet.start("receiver", [python, "-m", "bench.receiver", "--port", "0",
                                        "--port-file", str(port_file)], dict(os.environ), {})
    web_port = _free_port()
    env, shown = _celery_env(
        dict(os.environ), DATABASE_URL=database_url, REDIS_URL=redis_url,
        CRONBEAT_DEPLOYMENT_ID=DEPLOYMENT_ID, CRONBEAT_ALLOW_PRIVATE_TARGETS="true",
        CRONBEAT_DATA_DIR=str(log_dir))
    # The Procfile's lines (PORT and the data directory set).
    fleet.start("web", [str(bin_dir / "gunicorn"), "--bind", f"127.0.0.1:{web_port}",
                        "--workers", "2", "--no-control-socket", "api.wsgi:app"], env, shown)
    celery = str(bin_dir / "celery")
    worker = fleet.start("worker", [
        celery, "-A", "tasks.worker", "worker", "-Q", "cronbeat.runs,cronbeat.alerts",
        "-n", "worker@%h", "-P", "threads", "--concurrency", "64", "--loglevel", "INFO"],
        env, shown)
    dispatcher = fleet.start("dispatcher", [
        celery, "-A", "tasks.worker", "worker", "-Q", "cronbeat.dispatch", "-n",
        "dispatcher@%h", "-P", "threads", "--concurrency", "2", "--loglevel", "INFO"],
        env, shown)
    fleet.start("beat", [celery, "-A", "tasks.worker", "beat", "--loglevel", "INFO",
                         "--schedule", str(log_dir / "celerybeat-schedule")], env, shown)
    baseline_env, baseline_shown = _celery_env(dict(os.environ),
                                               BENCH_BASELINE_BROKER_URL=redis_url)
    baseline = fleet.start("baseline", [
        celery, "-A", "bench.baseline_tasks", "worker", "-Q", "bench.baseline", "-n",
        "baseline@%h", "-P", "threads", "--concurrency", "64", "--loglevel", "INFO"],
        baseline_env, baseline_shown)
    for spawned in (worker, dispatcher, baseline):
        fleet.wait_for_log(spawned, rf"{spawned.name}@\S+ ready\.")
    while not port_file.exists():
        if receiver.process.poll() is not None:
            raise RuntimeError(f"the receiver did not start:\n{receiver.log_since(0)}")
        time.sleep(0.05)
    hook = ReceiverClient(int(port_file.read_text()))
    api = f"http://127.0.0.1:{web_port}/api/v1/projects/bench"
    _wait_http(f"http://127.0.0.1:{web_port}/healthz")
    hook.reset(0)

    from bench import baseline_tasks
    baseline_tasks.app.conf.broker_url = redis_url
    with sessions.begin() as session:
        now = session.execute(select(func.now())).scalar_one()
    first = now.replace(microsecond=0) + dt.timedelta(seconds=LEAD_S)
    if first.second % 2 == 0:
        first += dt.timedelta(seconds=1)
    one_time = [first + dt.timedelta(seconds=ONE_TIME_STEP_S * k) for k in range(ONE_TIME)]
    anchors = [first + dt.timedelta(seconds=k) for k in range(INTERVALS)]
    end = first + dt.timedelta(seconds=WINDOW_S)
    # A future anchor is the interval's first occurrence.
    series = [[anchor + dt.timedelta(seconds=INTERVAL_S * n)
               for n in range(WINDOW_S // INTERVAL_S + 1)
               if anchor + dt.timedelta(seconds=INTERVAL_S * n) <= end] for anchor in anchors]
    print(f"instants: {len(one_time)} one-time from {first.isoformat()}, "
          f"{sum(map(len, series))} interval runs up to {end.isoformat()}", flush=True)
    # The baseline's messages first (apply_async(eta=...) holds them in its worker), then
    # the triggers, through the API.
    baseline_instants: dict[str, float] = {}
    for instant in [*one_time, *(at for runs in series for at in runs)]:
        ident = f"b-{uuid.uuid4()}"
        baseline_tasks.post.apply_async((hook.url, {"invocation": ident}), eta=instant)
        baseline_instants[ident] = instant.timestamp()
    target = {"kind": "webhook", "url": hook.url}
    for k, instant in enumerate(one_time):
        _post(f"{api}/triggers", key, {"name": f"once-{k}", "run_at": instant.isoformat(),
                                       "target": target})
    interval_ids = [_post(f"{api}/triggers", key, {
        "name": f"every-{k}", "interval_s": INTERVAL_S, "start_at": anchor.isoformat(),
        "target": target})["id"] for k, anchor in enumerate(anchors)]
    time.sleep(max(0.0, (end - now).total_seconds() - (time.time() - now.timestamp())
                   + SETTLE_S))
    for trigger_id in interval_ids:
        _post(f"{api}/triggers/{trigger_id}/pause", key, {})
    records = hook.records()["records"]
    arrivals: dict[str, list[float]] = {}
    for arrived, ident in records:
        arrivals.setdefault(ident, []).append(arrived)
    with sessions.begin() as session:
        rows = session.execute(select(Invocation.id, Invocation.scheduled_for).where(
            Invocation.scheduled_for <= end)).all()
    cronbeat_instants = {str(row.id): row.scheduled_for.timestamp() for row in rows}
    expected = ONE_TIME + sum(map(len, series))
    cronbeat = _lateness(arrivals, cronbeat_instants)
    base = _lateness(arrivals, baseline_instants)
    lines = [_line("cronbeat", cronbeat[0], expected, *cronbeat[1:]),
             _line("baseline", base[0], expected, *base[1:])]
    if len(cronbeat_instants) != expected:
        lines.append(f"  cronbeat recorded {len(cronbeat_instants)} runs in the window, "
                     f"{expected} expected")
    return lines


if __name__ == "__main__":
    main()
