"""End-to-end delivery benchmark (not a test): N webhook triggers due at one minute boundary.

What it measures, in one run, for each receiver delay (default 0 and 200 ms):

* **Cronbeat**: N cron webhook triggers (``* * * * *``, UTC, timeout_s 30, spread
  over ``--tenants`` tenants, 100 by default, so that no tenant reaches
  CRONBEAT_TENANT_MAX_RUNNING) whose next_run_at is the same whole minute B, run by
  the Procfile's processes: the ``worker`` line (threads pool, 64 threads, and its
  delivery engine's CRONBEAT_RUN_CONCURRENCY, 256 by default) and the
  ``dispatcher`` line, which gets one tick at B as beat would send it (or ``--tick
  cli``: ``python -m cli dispatch --once`` started at B). It waits until all N
  invocations are final.
* **Baseline**: plain Celery tasks doing ``requests.post(url, json=body, timeout=30)``
  (bench/baseline_tasks.py) on a worker with the same pool and concurrency, N messages
  published with ``apply_async`` in a loop from B on.

Both deliver to a loopback asyncio receiver in a process of its own (bench/receiver.py)
that records each request's arrival time and id. For both sides, and their ratio, it
prints deliveries/s (N over first -> last delivery, and over B -> last delivery), the
time from B to the last delivery, p50/p99 lateness (arrival - B), duplicates, and CPU
per delivery: the user+system CPU of every process involved (worker, dispatcher or
publisher, PostgreSQL's processes serving this database, Redis), read with psutil
before and after. The receiver's own CPU per request is printed to show it is not the
bottleneck. Rounds alternate Cronbeat, baseline, each from a clean state (invocations
truncated, Redis queues emptied), after one unmeasured warm-up round per side.

    make bench-e2e        # or: .venv/bin/python -m bench.e2e [--count 10000] [--delays 0,200]

It uses its own database (cronbeat_bench_e2e, dropped at the end) on the server of
BENCH_PG_ADMIN_URL (default: postgres on 127.0.0.1:5432) and Redis db 14 of
BENCH_REDIS_URL (default 127.0.0.1:6379). Other databases on the same PostgreSQL
server, and other Redis clients, add noise to the CPU figures; a Cronbeat round waits
for the next whole minute, so a run takes a few minutes. Logs stay in a temporary
directory whose path is printed.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import http.client
import json
import math
import os
import re
import resource
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import redis
from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, text

from app.config import Settings
from app.db import create_database, drop_database, make_engine

ROOT = Path(__file__).resolve().parents[1]
DB_NAME = "cronbeat_bench_e2e"
DEPLOYMENT_ID = "bench-e2e"
READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 15.0
#: A Cronbeat round's boundary is the first whole minute at least this far ahead, so
#: seeding is done before it.
LEAD_S = 4.0
#: The baseline's boundary is this far ahead of the moment its messages are built.
BASELINE_LEAD_S = 1.0
#: The warm-up rounds (not reported) make every delivery thread connect (database,
#: receiver) before the first measured round: long enough replies keep all threads busy.
WARMUP_DELAY_MS = 100
POLL_S = 0.1
#: The CPU readings before a round are taken this long before its boundary.
READING_LEAD_S = 0.3

CpuKey = tuple[int, float]  # (pid, create_time): a pid reused during a round is another key


# --------------------------------------------------------------------------- processes


@dataclasses.dataclass
class Spawned:
    """One subprocess in a process group of its own, logging to a file."""

    name: str
    argv: list[str]
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def log_size(self) -> int:
        return self.log_path.stat().st_size if self.log_path.exists() else 0

    def log_since(self, offset: int) -> str:
        with self.log_path.open("rb") as log:
            log.seek(offset)
            return log.read().decode(errors="replace")

    def signal_group(self, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signum)


class Fleet:
    """The subprocesses of one run; :meth:`stop_all` ends every one of them."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.spawned: list[Spawned] = []

    def start(self, name: str, argv: list[str], env: dict[str, str],
              shown_env: dict[str, str]) -> Spawned:
        log_path = self.log_dir / f"{name}.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True,
            )
        spawned = Spawned(name, argv, process, log_path)
        self.spawned.append(spawned)
        shown = " ".join(f"{key}={shlex.quote(value)}" for key, value in shown_env.items())
        print(f"  {name} (pid {process.pid}): {shown} {shlex.join(argv)}".replace(
            str(ROOT) + "/", ""))
        return spawned

    def wait_for_log(self, spawned: Spawned, pattern: str,
                     timeout_s: float = READY_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if re.search(pattern, spawned.log_since(0)):
                return
            if spawned.process.poll() is not None:
                raise RuntimeError(f"{spawned.name} exited at start:\n"
                                   f"{spawned.log_since(0)[-3000:]}")
            time.sleep(0.1)
        raise RuntimeError(f"{spawned.name} not ready in {timeout_s:.0f} s:\n"
                           f"{spawned.log_since(0)[-3000:]}")

    def stop_all(self) -> None:
        """SIGTERM every group, wait a while, SIGKILL whatever is left (pool children too)."""
        for spawned in self.spawned:
            if spawned.process.poll() is None:
                spawned.signal_group(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for spawned in self.spawned:
            with contextlib.suppress(subprocess.TimeoutExpired):
                spawned.process.wait(max(0.1, deadline - time.monotonic()))
        for spawned in self.spawned:
            spawned.signal_group(signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                spawned.process.wait(5)
        self.spawned.clear()


# --------------------------------------------------------------------------------- CPU


def _cpu_s(times: Any, *, reaped: bool) -> float:
    value = times.user + times.system
    if reaped:
        value += times.children_user + times.children_system
    return float(value)


def tree_cpu(pid: int) -> dict[CpuKey, float]:
    """CPU seconds of process ``pid`` and its descendants (and children they reaped)."""
    found: dict[CpuKey, float] = {}
    try:
        root = psutil.Process(pid)
        processes = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return found
    for process in processes:
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            found[(process.pid, process.create_time())] = _cpu_s(process.cpu_times(),
                                                                 reaped=True)
    return found


def _backend_database(title: str) -> str | None:
    """The database of a backend's process title, or None for the postmaster and helpers.

    Titles read ``postgres: [cluster: ]user database host(port) state``.
    """
    if not title.startswith("postgres: "):
        return None
    words = title[len("postgres: "):].split()
    if words and words[0].endswith(":"):
        words = words[1:]
    if len(words) >= 3 and ("(" in words[2] or words[2] == "[local]"):
        return words[1]
    return None


def postgres_cpu(database: str) -> tuple[dict[CpuKey, float], dict[CpuKey, float]]:
    """(this database's backends plus the shared helpers, every postgres process).

    The first leaves out other databases' backends; neither sees a backend that both
    started and exited between two readings except through the postmaster's reaped
    children, which only the second counts.
    """
    ours: dict[CpuKey, float] = {}
    every: dict[CpuKey, float] = {}
    for process in psutil.process_iter(["name", "cmdline", "create_time"]):
        if process.info["name"] != "postgres":
            continue
        try:
            times = process.cpu_times()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        key = (process.pid, process.info["create_time"])
        every[key] = _cpu_s(times, reaped=True)
        owner = _backend_database(" ".join(process.info["cmdline"] or []))
        if owner is None or owner == database:
            ours[key] = _cpu_s(times, reaped=False)
    return ours, every


def redis_cpu() -> dict[CpuKey, float]:
    found: dict[CpuKey, float] = {}
    for process in psutil.process_iter(["name", "create_time"]):
        if process.info["name"] == "redis-server":
            with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
                found[(process.pid, process.info["create_time"])] = _cpu_s(
                    process.cpu_times(), reaped=False)
    return found


Reading = dict[str, dict[CpuKey, float]]


def read_cpu(groups: dict[str, int]) -> Reading:
    """One reading: each group's process tree, PostgreSQL (ours and all), Redis, this
    driver process, and the whole machine (busy time of all cores)."""
    reading = {label: tree_cpu(pid) for label, pid in groups.items()}
    reading["postgres"], reading["postgres, all processes"] = postgres_cpu(DB_NAME)
    reading["redis"] = redis_cpu()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    reading["driver"] = {(os.getpid(), 0.0): usage.ru_utime + usage.ru_stime}
    machine = psutil.cpu_times()
    reading["machine"] = {(0, 0.0): machine.user + machine.nice + machine.system
                          + machine.irq + machine.softirq}
    reading["wall"] = {(0, 0.0): time.monotonic()}
    every: dict[CpuKey, float] = {}
    for process in psutil.process_iter(["cmdline", "name", "create_time"]):
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            key = (process.pid, process.info["create_time"])
            every[key] = _cpu_s(process.cpu_times(), reaped=False)
            _TITLES[key] = " ".join(process.info["cmdline"] or []) or process.info["name"]
    reading["every process"] = every
    return reading


_TITLES: dict[CpuKey, str] = {}


def busiest_others(before: Reading, after: Reading, own_pids: set[int],
                   limit: int = 3) -> list[tuple[str, float]]:
    """The processes not of this run that used the most CPU between two readings."""
    ours = {key for label, found in after.items() if label in
            ("postgres", "redis") or label not in _SHARED for key in found}
    spent = []
    for key, value in after["every process"].items():
        if key in ours or key[0] in own_pids:
            continue
        used = value - before["every process"].get(key, 0.0)
        if used > 0:
            spent.append((f"{_TITLES.get(key, '?')[:70]} (pid {key[0]})", used))
    return sorted(spent, key=lambda item: -item[1])[:limit]


#: Readings that are not a process group of this run.
_SHARED = ("postgres, all processes", "machine", "wall", "every process", "driver")


def cpu_spent(before: Reading, after: Reading) -> dict[str, float]:
    """CPU seconds per label between two readings, process by process."""
    return {
        label: sum(value - before.get(label, {}).get(key, 0.0) for key, value in now.items())
        for label, now in after.items()
    }


class PeakRss:
    """The peak of the summed resident memory of some process trees, sampled every
    0.1 s on a thread of its own while a round runs."""

    def __init__(self, pids: list[int]) -> None:
        self.pids = pids
        self.peak_bytes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _sample(self) -> None:
        while True:
            total = 0
            for pid in self.pids:
                with contextlib.suppress(psutil.NoSuchProcess):
                    root = psutil.Process(pid)
                    for process in (root, *root.children(recursive=True)):
                        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
                            total += process.memory_info().rss
            self.peak_bytes = max(self.peak_bytes, total)
            if self._stop.wait(0.1):
                return


# ---------------------------------------------------------------------------- receiver


class ReceiverClient:
    """The driver's side of bench/receiver.py's control requests."""

    def __init__(self, port: int) -> None:
        self.port = port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def _call(self, method: str, path: str) -> dict[str, Any]:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            connection.request(method, path, headers={"Connection": "close"})
            response = connection.getresponse()
            data = json.loads(response.read())
            if response.status != 200:
                raise RuntimeError(f"receiver answered {response.status}: {data}")
            return data
        finally:
            connection.close()

    def reset(self, delay_ms: float) -> dict[str, Any]:
        return self._call("POST", f"/_bench/reset?delay_ms={delay_ms:g}")

    def stats(self) -> dict[str, Any]:
        return self._call("GET", "/_bench/stats")

    def records(self) -> dict[str, Any]:
        return self._call("GET", "/_bench/records")


def receiver_cpu_s(stats: dict[str, Any]) -> float:
    return float(stats["cpu_user_s"] + stats["cpu_sys_s"])


# ------------------------------------------------------------------------------ rounds


@dataclasses.dataclass
class Outcome:
    """One measured round of one side."""

    side: str
    delay_ms: int
    count: int
    boundary: float
    #: First arrival of each expected id, sorted.
    arrivals: list[float]
    requests: int
    duplicates: int
    unexpected: int
    cpu_s: dict[str, float]
    #: The labels of cpu_s that make up the side's total.
    counted: tuple[str, ...]
    receiver_cpu_s: float
    receiver: dict[str, Any]
    complete: bool
    notes: list[str] = dataclasses.field(default_factory=list)
    #: The peak of the side's processes' summed RSS during the round, MiB.
    peak_rss_mib: float = 0.0
    #: With --other-tenant: B -> the other tenant's one delivery, s.
    other_s: float | None = None
    #: Each expected id's first arrival.
    first_seen: dict[str, float] = dataclasses.field(default_factory=dict)

    @property
    def delivered(self) -> int:
        return len(self.arrivals)

    def cpu_total_s(self) -> float:
        return sum(self.cpu_s.get(label, 0.0) for label in self.counted)

    def machine_cores(self) -> tuple[float, float]:
        """(cores busy on average over the round, of which processes not of this run)."""
        wall = self.cpu_s["wall"]
        ours = sum(value for label, value in self.cpu_s.items()
                   if label not in ("machine", "wall", "postgres, all processes",
                                    "every process", "publisher"))
        ours += self.receiver_cpu_s
        machine = self.cpu_s["machine"]
        return machine / wall, (machine - ours) / wall

    def metrics(self) -> dict[str, float]:
        if not self.arrivals:
            return {}
        first, last = self.arrivals[0], self.arrivals[-1]
        lateness = [at - self.boundary for at in self.arrivals]
        n = self.delivered
        return {
            "rate_span": n / (last - first) if last > first else math.inf,
            "rate_boundary": n / (last - self.boundary),
            "to_last_s": last - self.boundary,
            "first_s": first - self.boundary,
            "p50_s": percentile(lateness, 0.50),
            "p99_s": percentile(lateness, 0.99),
            "cpu_ms": self.cpu_total_s() / n * 1000,
        }


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile of ``values`` (sorted or not)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


@dataclasses.dataclass
class Bench:
    """What the rounds share: the database, Redis, the receiver and the processes."""

    engine: Engine
    broker: redis.Redis
    receiver: ReceiverClient
    receiver_pid: int
    cronbeat_env: dict[str, str]
    worker: Spawned
    dispatcher: Spawned
    baseline: Spawned
    tick_mode: str
    timeout_s: float
    tenants: int
    #: One run of one more tenant, due at B too, sent after the others (fairness).
    other_tenant: bool = False

    def clean(self) -> None:
        """Invocations, attempts and triggers gone; Redis db emptied (bindings kept)."""
        with self.engine.begin() as conn:
            conn.execute(text("TRUNCATE invocation_attempts, invocations, triggers CASCADE"))
        # FLUSHDB would also drop kombu's exchange bindings, which the running workers
        # declared once at start: messages routed through those exchanges would vanish.
        # Cronbeat's broker epoch stays too: a new one reads as a broker that lost its
        # data, and the next tick would publish every pending run again.
        for key in list(self.broker.scan_iter(count=1000)):
            if not key.startswith((b"_kombu.binding.", b"cronbeat:broker-epoch")):
                self.broker.delete(key)

    def seed(self, count: int, boundary: dt.datetime) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO triggers (tenant_id, project_id, name, cron_expression,"
                    " timezone, next_run_at, target_kind, webhook_url, timeout_s)"
                    " SELECT 'bench-' || (g % :tenants), 'e2e', 'e2e-' || g, '* * * * *',"
                    " 'UTC', :boundary, 'webhook', :url, 30 FROM generate_series(1, :n) AS g"
                ),
                {"boundary": boundary, "url": self.receiver.url, "n": count,
                 "tenants": self.tenants},
            )
            if self.other_tenant:
                conn.execute(text(
                    "INSERT INTO triggers (tenant_id, project_id, name, cron_expression,"
                    " timezone, next_run_at, target_kind, webhook_url, timeout_s)"
                    " VALUES ('bench-other', 'e2e', 'other', '* * * * *', 'UTC', :boundary,"
                    " 'webhook', :url, 30)"), {"boundary": boundary, "url": self.receiver.url})
        with self.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM ANALYZE triggers, invocations"))

    def final_count(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(text(
                "SELECT count(*) FROM invocations WHERE status IN ('succeeded', 'failed')"
            )).scalar_one())

    def run_cronbeat(self, delay_ms: int, count: int, *, warmup: bool = False) -> Outcome:
        self.clean()
        now = dt.datetime.now(dt.UTC)
        if warmup:
            boundary_at = now.replace(second=0, microsecond=0)  # due at once
        else:
            ahead = now + dt.timedelta(seconds=LEAD_S)
            boundary_at = ahead.replace(second=0, microsecond=0) + dt.timedelta(minutes=1)
        self.seed(count, boundary_at)
        count += 1 if self.other_tenant and not warmup else 0
        boundary = boundary_at.timestamp()
        self.receiver.reset(delay_ms)
        groups = {"worker": self.worker.pid, "dispatcher": self.dispatcher.pid}
        offsets = {s.name: s.log_size() for s in (self.worker, self.dispatcher)}
        if not warmup:
            print(f"  cronbeat, delay {delay_ms} ms: {count:,} triggers due at "
                  f"{boundary_at:%H:%M:%S}, waiting {boundary - time.time():.1f} s", flush=True)
        # The readings take a few tens of ms: done just before B, not at it.
        _sleep_until(boundary - READING_LEAD_S)
        receiver_before = self.receiver.stats()
        before = read_cpu(groups)
        children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
        # A hair after B, so the database's now() at the tick is past B.
        _sleep_until(boundary + 0.005)
        notes: list[str] = []
        if self.tick_mode == "cli":
            tick = subprocess.run(
                [sys.executable, "-m", "cli", "dispatch", "--once"], cwd=ROOT,
                env=self.cronbeat_env, capture_output=True, text=True, check=False,
            )
            if tick.returncode != 0:
                notes.append(f"cli tick exited {tick.returncode}: {tick.stderr[-2000:]}")
        else:
            from messaging.publisher import kick_tick
            from tasks.celery_app import celery_app

            kick_tick(celery_app)
        with PeakRss(list(groups.values())) as rss:
            complete = self._wait(count, self.final_count)
        after = read_cpu(groups)
        children_after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = cpu_spent(before, after)
        counted: tuple[str, ...] = ("worker", "dispatcher", "postgres", "redis")
        if self.tick_mode == "cli":
            cpu["tick (cli)"] = (children_after.ru_utime + children_after.ru_stime
                                 - children_before.ru_utime - children_before.ru_stime)
            counted = ("worker", "tick (cli)", "postgres", "redis")
        with self.engine.connect() as conn:
            ids = {str(row[0]) for row in conn.execute(text("SELECT id FROM invocations"))}
            statuses = dict(conn.execute(text(
                "SELECT status, count(*) FROM invocations GROUP BY status")).all())
            outcomes = dict(conn.execute(text(
                "SELECT coalesce(outcome, '(none)'), count(*) FROM invocation_attempts"
                " GROUP BY 1")).all())
            errors = conn.execute(text(
                "SELECT last_error, count(*) FROM invocations WHERE last_error IS NOT NULL"
                " GROUP BY 1 ORDER BY 2 DESC LIMIT 5")).all()
            tick_row = conn.execute(text(
                "SELECT last_tick_report FROM dispatcher_heartbeat")).first()
        notes.append(f"invocations by status {statuses}, attempts by outcome {outcomes}")
        notes.append(self._others(before, after))
        notes.extend(f"last_error x{n}: {error}" for error, n in errors)
        if tick_row is not None and tick_row[0]:
            report = tick_row[0]
            started = dt.datetime.fromisoformat(report["now"]).timestamp()
            notes.append(f"tick: started B+{started - boundary:.3f} s, took "
                         f"{report['duration_ms'] / 1000:.3f} s, created {report['created']:,}"
                         f" in {report['batches']} batches")
        for spawned in (self.worker, self.dispatcher):
            notes.extend(_log_problems(spawned, offsets[spawned.name]))
        outcome = self._outcome("cronbeat", delay_ms, count, boundary, ids, cpu, counted,
                                receiver_before, complete, notes)
        outcome.peak_rss_mib = rss.peak_bytes / 2**20
        if self.other_tenant and not warmup:
            with self.engine.connect() as conn:
                other = str(conn.execute(text(
                    "SELECT i.id FROM invocations i JOIN triggers t ON t.id = i.trigger_id"
                    " WHERE t.tenant_id = 'bench-other'")).scalar_one())
            if other in outcome.first_seen:
                outcome.other_s = outcome.first_seen[other] - boundary
        return outcome

    def run_baseline(self, delay_ms: int, count: int, *, warmup: bool = False) -> Outcome:
        from bench import baseline_tasks

        self.clean()
        self.receiver.reset(delay_ms)
        offset = self.baseline.log_size()
        # The other tenant's one run is published last, as the tick would record it.
        count += 1 if self.other_tenant and not warmup else 0
        ids = [str(uuid.uuid4()) for _ in range(count)]
        boundary = time.time() + (0 if warmup else BASELINE_LEAD_S)
        scheduled_for = dt.datetime.fromtimestamp(boundary, dt.UTC).isoformat()
        # Cronbeat's body, give or take: the receiver reads the id from "invocation".
        bodies = [{"trigger": {"id": ident, "name": f"e2e-{n}"}, "invocation": ident,
                   "scheduled_for": scheduled_for, "attempt": 1, "payload": {},
                   "message": None} for n, ident in enumerate(ids)]
        if not warmup:
            print(f"  baseline, delay {delay_ms} ms: {count:,} messages from "
                  f"{dt.datetime.fromtimestamp(boundary):%H:%M:%S.%f}"[:-3], flush=True)
        groups = {"worker": self.baseline.pid}
        _sleep_until(boundary - READING_LEAD_S)
        receiver_before = self.receiver.stats()
        before = read_cpu(groups)
        usage_before = resource.getrusage(resource.RUSAGE_SELF)
        _sleep_until(boundary)
        started = time.perf_counter()
        for ident, body in zip(ids, bodies, strict=True):
            baseline_tasks.post.apply_async(
                args=(self.receiver.url, body), task_id=ident, queue=baseline_tasks.QUEUE
            )
        published_s = time.perf_counter() - started
        usage_after = resource.getrusage(resource.RUSAGE_SELF)
        done = re.compile(rf"Task {re.escape(baseline_tasks.TASK)}\[[^\]]+\] "
                          r"(succeeded in|raised)")

        def finished() -> int:
            return len(done.findall(self.baseline.log_since(offset)))

        with PeakRss(list(groups.values())) as rss:
            complete = self._wait(count, finished)
        after = read_cpu(groups)
        cpu = cpu_spent(before, after)
        cpu["publisher"] = (usage_after.ru_utime + usage_after.ru_stime
                            - usage_before.ru_utime - usage_before.ru_stime)
        log = self.baseline.log_since(offset)
        notes = [f"publishing {count:,} messages (apply_async loop): {published_s:.3f} s, "
                 f"{count / published_s:,.0f}/s",
                 f"tasks succeeded {log.count('succeeded in'):,}, raised "
                 f"{len(re.findall(r'] raised', log)):,}", self._others(before, after)]
        notes.extend(_log_problems(self.baseline, offset))
        outcome = self._outcome("baseline", delay_ms, count, boundary, set(ids), cpu,
                                ("worker", "publisher", "redis"), receiver_before, complete,
                                notes)
        outcome.peak_rss_mib = rss.peak_bytes / 2**20
        if self.other_tenant and not warmup and ids[-1] in outcome.first_seen:
            outcome.other_s = outcome.first_seen[ids[-1]] - boundary
        return outcome

    def _others(self, before: Reading, after: Reading) -> str:
        busiest = busiest_others(before, after, {os.getpid(), self.receiver_pid})
        listed = "; ".join(f"{title}: {used:.2f} s" for title, used in busiest)
        return f"busiest processes not of this run: {listed or 'none'}"

    def _wait(self, count: int, finished: Any) -> bool:
        """Until ``finished()`` reaches ``count``; asked whenever the receiver has all
        ``count`` requests, and every 2 s otherwise. False on timeout."""
        deadline = time.monotonic() + self.timeout_s
        asked = time.monotonic()
        while time.monotonic() < deadline:
            received = self.receiver.stats()["requests"]
            if received >= count or time.monotonic() - asked >= 2.0:
                asked = time.monotonic()
                if finished() >= count:
                    return True
            time.sleep(POLL_S)
        return False

    def _outcome(self, side: str, delay_ms: int, count: int, boundary: float,
                 expected: set[str], cpu: dict[str, float], counted: tuple[str, ...],
                 receiver_before: dict[str, Any], complete: bool,
                 notes: list[str]) -> Outcome:
        records = self.receiver.records()
        first_seen: dict[str, float] = {}
        unexpected = 0
        for at, ident in records["records"]:
            if ident not in expected:
                unexpected += 1
            elif ident not in first_seen or at < first_seen[ident]:
                first_seen[ident] = at
        requests = len(records["records"])
        if not complete:
            notes.insert(0, f"TIMED OUT after {self.timeout_s:.0f} s")
        return Outcome(
            side=side, delay_ms=delay_ms, count=count, boundary=boundary,
            arrivals=sorted(first_seen.values()), requests=requests,
            duplicates=requests - unexpected - len(first_seen), unexpected=unexpected,
            cpu_s=cpu, counted=counted,
            receiver_cpu_s=receiver_cpu_s(records) - receiver_cpu_s(receiver_before),
            receiver=records | {"records": None}, complete=complete, notes=notes,
            first_seen=first_seen,
        )


def _sleep_until(at: float) -> None:
    while (left := at - time.time()) > 0:
        time.sleep(min(left, 0.5))


_PROBLEM = re.compile(r"\b(ERROR|CRITICAL|Traceback)\b|WARNING/|\bWARNING\b")


def _log_problems(spawned: Spawned, offset: int, limit: int = 5) -> list[str]:
    lines = [line for line in spawned.log_since(offset).splitlines() if _PROBLEM.search(line)]
    shown = [f"{spawned.name} log: {line[:300]}" for line in lines[:limit]]
    if len(lines) > limit:
        shown.append(f"{spawned.name} log: ... {len(lines) - limit} more such lines")
    return shown


# ----------------------------------------------------------------------------- report


def _fmt(value: float | None, digits: int) -> str:
    if value is None or math.isnan(value):
        return "-"
    if math.isinf(value):
        return "inf"
    return f"{value:,.{digits}f}"


def print_pair(cronbeat: Outcome, baseline: Outcome) -> None:
    c, b = cronbeat.metrics(), baseline.metrics()
    print(f"\n== receiver delay {cronbeat.delay_ms} ms, N = {cronbeat.count:,} "
          f"(worker: threads pool, same concurrency on both sides) ==")
    print(f"{'':44}{'cronbeat':>12}{'baseline':>12}{'cronbeat/baseline':>20}")

    def row(label: str, left: float | None, right: float | None, digits: int,
            ratio: bool = True) -> None:
        quotient = None
        if ratio and left is not None and right:
            quotient = left / right
        print(f"{label:44}{_fmt(left, digits):>12}{_fmt(right, digits):>12}"
              f"{_fmt(quotient, 2) if ratio else '':>20}")

    row("delivered (unique ids at the receiver)", cronbeat.delivered, baseline.delivered, 0)
    row("requests received", cronbeat.requests, baseline.requests, 0, ratio=False)
    row("duplicates (same id again)", cronbeat.duplicates, baseline.duplicates, 0,
        ratio=False)
    row("unexpected ids", cronbeat.unexpected, baseline.unexpected, 0, ratio=False)
    row("deliveries/s, N / (last - first delivery)", c.get("rate_span"),
        b.get("rate_span"), 0)
    row("deliveries/s, N / (last delivery - B)", c.get("rate_boundary"),
        b.get("rate_boundary"), 0)
    row("B -> first delivery, s", c.get("first_s"), b.get("first_s"), 3)
    row("B -> last delivery, s", c.get("to_last_s"), b.get("to_last_s"), 2)
    row("lateness p50 (arrival - B), s", c.get("p50_s"), b.get("p50_s"), 3)
    row("lateness p99 (arrival - B), s", c.get("p99_s"), b.get("p99_s"), 3)
    row("CPU per delivery, ms (sum of the rows below)", c.get("cpu_ms"), b.get("cpu_ms"), 3)
    row("peak RSS of the side's processes, MiB", cronbeat.peak_rss_mib,
        baseline.peak_rss_mib, 0)
    if cronbeat.other_s is not None or baseline.other_s is not None:
        row("another tenant's one run: B -> its delivery, s", cronbeat.other_s,
            baseline.other_s, 3)
    for label, left_label, right_label in (
        ("  worker process", "worker", "worker"),
        ("  dispatcher tick / publisher (driver)", _tick_label(cronbeat), "publisher"),
        ("  postgres (this db's backends + helpers)", "postgres", None),
        ("  redis-server", "redis", "redis"),
    ):
        row(label, _per_delivery_ms(cronbeat, left_label),
            _per_delivery_ms(baseline, right_label), 3)
    print("not counted above:")
    row("  postgres, all processes (other dbs too)",
        _per_delivery_ms(cronbeat, "postgres, all processes"),
        _per_delivery_ms(baseline, "postgres, all processes"), 3, ratio=False)
    row("  postgres, this db (baseline: idle cronbeat)", None,
        _per_delivery_ms(baseline, "postgres"), 3, ratio=False)
    row("  receiver CPU per request, ms", _per_request_ms(cronbeat),
        _per_request_ms(baseline), 3, ratio=False)
    row("  receiver: new connections carrying webhooks",
        cronbeat.receiver["webhook_connections"], baseline.receiver["webhook_connections"],
        0, ratio=False)
    row("  receiver: most connections open at once",
        cronbeat.receiver["max_open_connections"], baseline.receiver["max_open_connections"],
        0, ratio=False)
    row("  receiver: most requests in flight at once", cronbeat.receiver["max_in_flight"],
        baseline.receiver["max_in_flight"], 0, ratio=False)
    c_busy, c_other = cronbeat.machine_cores()
    b_busy, b_other = baseline.machine_cores()
    cores = psutil.cpu_count()
    row(f"  machine: cores busy on average (of {cores})", c_busy, b_busy, 2, ratio=False)
    row("  of which other processes (not this run)", c_other, b_other, 2, ratio=False)
    for outcome in (cronbeat, baseline):
        for note in outcome.notes:
            print(f"  [{outcome.side}] {note}")


def _tick_label(outcome: Outcome) -> str:
    return "tick (cli)" if "tick (cli)" in outcome.cpu_s else "dispatcher"


def _per_delivery_ms(outcome: Outcome, label: str | None) -> float | None:
    if label is None or label not in outcome.cpu_s or not outcome.delivered:
        return None
    return outcome.cpu_s[label] / outcome.delivered * 1000


def _per_request_ms(outcome: Outcome) -> float | None:
    if not outcome.requests:
        return None
    return outcome.receiver_cpu_s / outcome.requests * 1000


def _summary(outcome: Outcome, *, warmup: bool = False) -> str:
    m = outcome.metrics()
    if not m:
        return f"    {outcome.side}: nothing delivered"
    if warmup:
        return (f"    {outcome.side}: {outcome.delivered:,}/{outcome.count:,} delivered in "
                f"{outcome.arrivals[-1] - outcome.arrivals[0]:.2f} s"
                + ("" if outcome.complete else "  (TIMED OUT)"))
    return (f"    {outcome.side}: {outcome.delivered:,}/{outcome.count:,} delivered, "
            f"B -> last {m['to_last_s']:.2f} s, {m['rate_span']:,.0f}/s, "
            f"p99 {m['p99_s']:.3f} s, {m['cpu_ms']:.3f} ms CPU/delivery, "
            f"peak RSS {outcome.peak_rss_mib:.0f} MiB"
            + ("" if outcome.complete else "  (TIMED OUT)"))


# -------------------------------------------------------------------------------- main


def migrate(database_url: str) -> None:
    """Bring a benchmark's own database to the head revision."""
    config = Config(str(ROOT / "alembic.ini"))
    config.set_main_option("sqlalchemy.url", database_url)
    command.upgrade(config, "head")


def _celery_env(base: dict[str, str], **extra: str) -> tuple[dict[str, str], dict[str, str]]:
    """(the full environment, the part worth showing): inherited CRONBEAT_* left out."""
    env = {key: value for key, value in base.items() if not key.startswith("CRONBEAT_")}
    env.update(extra)
    env["PYTHONPATH"] = str(ROOT)
    return env, extra


@contextlib.contextmanager
def _interruptible() -> Iterator[None]:
    """Ctrl-C and SIGTERM end the run through the finally blocks (even when the shell
    started it with SIGINT ignored, as in the background)."""

    def stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = {signum: signal.signal(signum, stop) for signum in (signal.SIGINT,
                                                                    signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _start_fleet(fleet: Fleet, args: argparse.Namespace, database_url: str,
                 redis_url: str) -> tuple[Spawned, Spawned, Spawned, Spawned, dict[str, str]]:
    python = sys.executable
    celery_bin = str(Path(python).parent / "celery")
    port_file = fleet.log_dir / "receiver.port"
    receiver = fleet.start(
        "receiver", [python, "-m", "bench.receiver", "--port", "0", "--port-file",
                     str(port_file)], dict(os.environ), {})
    cronbeat_env, shown = _celery_env(
        dict(os.environ), DATABASE_URL=database_url, REDIS_URL=redis_url,
        CRONBEAT_DEPLOYMENT_ID=DEPLOYMENT_ID, CRONBEAT_ALLOW_PRIVATE_TARGETS="true",
        CRONBEAT_DATA_DIR=str(fleet.log_dir), CRONBEAT_WORKER_CONCURRENCY=str(args.concurrency),
        **({"CRONBEAT_RUN_CONCURRENCY": str(args.run_concurrency)} if args.run_concurrency
           else {}),
    )
    concurrency = str(args.concurrency)
    worker = fleet.start("worker", [
        celery_bin, "-A", "tasks.worker", "worker", "-Q", "cronbeat.runs", "-n", "worker@%h",
        "-P", "threads", "--concurrency", concurrency, "--loglevel", "INFO",
    ], cronbeat_env, shown)
    dispatcher = fleet.start("dispatcher", [
        celery_bin, "-A", "tasks.worker", "worker", "-Q", "cronbeat.dispatch",
        "-n", "dispatcher@%h", "-P", "threads", "--concurrency", "2", "--loglevel", "INFO",
    ], cronbeat_env, shown)
    baseline_env, baseline_shown = _celery_env(dict(os.environ),
                                               BENCH_BASELINE_BROKER_URL=redis_url)
    baseline = fleet.start("baseline", [
        celery_bin, "-A", "bench.baseline_tasks", "worker", "-Q", "bench.baseline",
        "-n", "baseline@%h", "-P", "threads", "--concurrency", concurrency,
        "--loglevel", "INFO",
    ], baseline_env, baseline_shown)
    deadline = time.monotonic() + READY_TIMEOUT_S
    while not port_file.exists():
        if receiver.process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the receiver did not start:\n{receiver.log_since(0)}")
        time.sleep(0.05)
    for spawned in (worker, dispatcher, baseline):
        fleet.wait_for_log(spawned, rf"{spawned.name}@\S+ ready\.")
    return receiver, worker, dispatcher, baseline, cronbeat_env


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=10_000, help="deliveries per round")
    parser.add_argument("--delays", default="0,200",
                        help="receiver delays in ms, comma-separated")
    parser.add_argument("--concurrency", type=int, default=64,
                        help="threads of both workers (the Procfile's default)")
    parser.add_argument("--tick", choices=("dispatcher", "cli"), default="dispatcher",
                        help="the dispatcher process gets one tick message at B, or "
                             "`python -m cli dispatch --once` starts at B")
    parser.add_argument("--tenants", type=int, default=100,
                        help="the triggers' tenants, round robin (1: the single-tenant "
                             "installation, on default settings)")
    parser.add_argument("--run-concurrency", type=int, default=0,
                        help="CRONBEAT_RUN_CONCURRENCY of Cronbeat's worker (0: its default)")
    parser.add_argument("--other-tenant", action="store_true",
                        help="one run of one more tenant, due at B too (the baseline "
                             "publishes it last): how long another tenant's run waits "
                             "behind a burst")
    parser.add_argument("--warmup", type=int, default=256,
                        help="deliveries of the unmeasured warm-up round of each side")
    parser.add_argument("--timeout", type=float, default=300.0,
                        help="seconds a round may take to finish")
    args = parser.parse_args()
    delays = [int(part) for part in args.delays.split(",") if part.strip()]

    admin = os.environ.get("BENCH_PG_ADMIN_URL",
                           "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres")
    redis_url = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")
    database_url = admin.rsplit("/", 1)[0] + "/" + DB_NAME
    log_dir = Path(tempfile.mkdtemp(prefix="cronbeat-bench-e2e-"))
    print(f"cronbeat end-to-end benchmark: N = {args.count:,}, delays {delays} ms, "
          f"concurrency {args.concurrency}, tick via {args.tick}, {args.tenants} tenants; "
          f"logs in {log_dir}")
    drop_database(admin, DB_NAME)
    create_database(admin, DB_NAME)
    fleet = Fleet(log_dir)
    engine: Engine | None = None
    outcomes: list[tuple[Outcome, Outcome]] = []
    try:
        with _interruptible():
            migrate(database_url)
            settings = Settings.from_env({"DATABASE_URL": database_url, "REDIS_URL": redis_url,
                                          "CRONBEAT_DEPLOYMENT_ID": DEPLOYMENT_ID})
            from bench import baseline_tasks
            from tasks.celery_app import celery_app, configure

            configure(celery_app, settings)
            baseline_tasks.app.conf.broker_url = redis_url
            engine = make_engine(settings, pool_size=2)
            broker = redis.Redis.from_url(redis_url)
            broker.flushdb()
            print("processes (cwd: the repository root; PYTHONPATH=. for the celery ones):")
            receiver_process, worker, dispatcher, baseline, cronbeat_env = _start_fleet(
                fleet, args, database_url, redis_url)
            port = int((log_dir / "receiver.port").read_text())
            bench = Bench(engine=engine, broker=broker, receiver=ReceiverClient(port),
                          receiver_pid=receiver_process.pid, cronbeat_env=cronbeat_env,
                          worker=worker, dispatcher=dispatcher, baseline=baseline,
                          tick_mode=args.tick, timeout_s=args.timeout,
                          tenants=args.tenants, other_tenant=args.other_tenant)
            if args.tick == "cli":
                shown = " ".join(f"{key}={value}" for key, value in cronbeat_env.items()
                                 if key.startswith(("CRONBEAT_", "DATABASE_URL", "REDIS_URL")))
                print(f"  tick at B: {shown} {sys.executable} -m cli dispatch --once")
            if args.warmup:
                print(f"warm-up: {args.warmup} deliveries per side at {WARMUP_DELAY_MS} ms "
                      "(not reported)", flush=True)
                for run in (bench.run_cronbeat, bench.run_baseline):
                    warm = run(WARMUP_DELAY_MS, args.warmup, warmup=True)
                    print(_summary(warm, warmup=True))
                    if not warm.complete:
                        for note in warm.notes:
                            print(f"      {note}")
                        raise RuntimeError(f"the {warm.side} warm-up did not finish")
            for delay in delays:
                print(f"round: receiver delay {delay} ms", flush=True)
                cronbeat = bench.run_cronbeat(delay, args.count)
                print(_summary(cronbeat), flush=True)
                base = bench.run_baseline(delay, args.count)
                print(_summary(base), flush=True)
                outcomes.append((cronbeat, base))
            for cronbeat, base in outcomes:
                print_pair(cronbeat, base)
            print(f"\nlogs: {log_dir}")
    except KeyboardInterrupt:
        print(f"\ninterrupted: stopping every process it started (logs: {log_dir})",
              file=sys.stderr)
        raise SystemExit(130) from None
    finally:
        fleet.stop_all()
        if engine is not None:
            engine.dispose()
        drop_database(admin, DB_NAME)


if __name__ == "__main__":
    main()
