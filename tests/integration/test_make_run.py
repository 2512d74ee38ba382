"""``make run`` end to end, and the Procfile / docker-compose.yml agreement.

The smoke test runs the real launcher (``python -m devrun``) with DATABASE_URL and
REDIS_URL removed, so it starts the embedded PostgreSQL and Redis in a temporary data
folder, then gunicorn, a Celery worker, a dispatcher and beat through honcho. It interrupts it as a
terminal's Ctrl-C would (SIGINT to the whole process group), checks nothing of that folder
keeps running, and starts it again on the same folder to see the data kept.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kombu
import psutil
import pytest
from sqlalchemy import create_engine, text

from tests.support.receiver import Receiver

ROOT = Path(__file__).resolve().parents[2]

START_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 30.0


class DevRun:
    """A running ``python -m devrun``; a thread collects its output lines."""

    def __init__(self, data_dir: Path, port: int, extra_env: dict[str, str] | None = None):
        env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
        env.update(CRONBEAT_DATA_DIR=str(data_dir), PORT=str(port), PYTHONUNBUFFERED="1")
        env.update(extra_env or {})
        self.env = env
        self.port = port
        self.lines: list[str] = []
        self._changed = threading.Condition()
        # Its own process group, as a shell gives a foreground job: SIGINT to the group is
        # what Ctrl-C sends.
        self.process = subprocess.Popen(
            [sys.executable, "-m", "devrun"],
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            process_group=0,
        )
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()

    def wait_for(self, pattern: str, deadline: float) -> str:
        """Return the first output line matching ``pattern``; fail at ``deadline``."""
        regex = re.compile(pattern)
        seen = 0
        with self._changed:
            while True:
                for line in self.lines[seen:]:
                    if regex.search(line):
                        return line
                seen = len(self.lines)
                if self.process.poll() is not None and seen == len(self.lines):
                    pytest.fail(f"devrun exited ({self.process.returncode}):\n{self.output()}")
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    pytest.fail(f"no line matching {pattern!r}:\n{self.output()}")
                self._changed.wait(min(remaining, 0.5))

    def interrupt(self) -> int:
        """Ctrl-C: SIGINT to the process group; returns the exit status."""
        os.killpg(self.process.pid, signal.SIGINT)
        try:
            return self.process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            pytest.fail(
                f"devrun still running {STOP_TIMEOUT_S:.0f} s after SIGINT:\n{self.output()}"
            )

    def output(self, last: int = 80) -> str:
        return "\n".join(self.lines[-last:])


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def healthz_status(port: int) -> int | None:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(f"http://127.0.0.1:{port}/healthz", timeout=2) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return None


def processes_of(data_dir: Path) -> list[psutil.Process]:
    """Processes whose command line or environment names ``data_dir`` (servers, beat, ...)."""
    needle = str(data_dir)
    found = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        if proc.pid == os.getpid():
            continue
        try:
            mentions = needle in " ".join(proc.info["cmdline"] or ()) or (
                proc.environ().get("CRONBEAT_DATA_DIR") == needle
            )
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
        if mentions:
            found.append(proc)
    return found


def database_url(data_dir: Path) -> str:
    # The embedded server's socket directory is line 5 of postmaster.pid.
    socket_dir = (data_dir / "pg" / "postmaster.pid").read_text().splitlines()[4].strip()
    return f"postgresql+psycopg2://postgres@/cronbeat?host={socket_dir}"


@contextlib.contextmanager
def running(
    data_dir: Path, port: int, extra_env: dict[str, str] | None = None
) -> Iterator[DevRun]:
    """Start devrun; whatever happens, leave nothing of ``data_dir`` running."""
    run = DevRun(data_dir, port, extra_env)
    try:
        yield run
    finally:
        if run.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(run.process.pid, signal.SIGINT)
            try:
                run.process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                run.process.kill()
        for proc in processes_of(data_dir):
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.kill()


def wait_until_up(run: DevRun) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    run.wait_for(rf"API listening on http://127\.0\.0\.1:{run.port}\b", deadline)
    run.wait_for(rf"console: http://127\.0\.0\.1:{run.port}/console/", deadline)
    assert healthz_status(run.port) == 200
    run.wait_for(r"^\S+ worker\.1 +\| .*ready\.", deadline)
    run.wait_for(r"^\S+ dispatcher\.1 +\| .*ready\.", deadline)
    run.wait_for(r"^\S+ beat\.1 +\| .*beat: Starting", deadline)


def assert_stopped_cleanly(run: DevRun, data_dir: Path) -> None:
    assert run.interrupt() == 0, run.output()
    assert healthz_status(run.port) is None
    leftovers = [(p.pid, p.info["cmdline"]) for p in processes_of(data_dir)]
    assert leftovers == [], run.output()
    assert not (data_dir / "pg" / "postmaster.pid").exists(), "PostgreSQL still running"


def cli_env(data_dir: Path) -> dict[str, str]:
    """The environment a second terminal gets from ``source .cronbeat/env``."""
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    for line in (data_dir / "env").read_text().splitlines():
        name, _, value = line.removeprefix("export ").partition("=")
        env[name] = shlex.split(value)[0]
    return env


def fire_one_trigger_through_the_api(
    run: DevRun, data_dir: Path, receiver: Receiver, name: str = "smoke"
) -> None:
    """Key from the CLI, a one-time trigger over HTTP, fired by beat's tick to ``receiver``."""
    key = subprocess.run(
        [sys.executable, "-m", "cli", "api-key", "create", "--tenant", "smoke",
         "--name", f"make-run-{name}"],
        cwd=ROOT, env=cli_env(data_dir), capture_output=True, text=True, timeout=60,
        check=True,
    ).stdout.strip()
    run_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 3))
    body = json.dumps({"name": name, "run_at": run_at,
                       "target": {"kind": "webhook", "url": receiver.url()}}).encode()
    request = urllib.request.Request(
        f"http://127.0.0.1:{run.port}/api/v1/projects/smoke/triggers", data=body,
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
    )
    before = receiver.count
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 201
    deliveries = receiver.wait_for(before + 1, timeout_s=60)
    assert len(deliveries) == before + 1
    assert json.loads(deliveries[-1].body)["trigger"]["name"] == name


def run_the_readme_s_celery_beat_example(run: DevRun, data_dir: Path) -> None:
    """README's "Coming from celery beat": your own worker (docs/examples/shop.py, with
    the outcome integration) on make run's broker (the env file's CELERY_BROKER_URL), and
    an interval task trigger calling its task with the stored arguments, its outcome in
    the history (every 2 s here, not 30)."""
    env = cli_env(data_dir)
    key = subprocess.run(
        [sys.executable, "-m", "cli", "api-key", "create", "--tenant", "shop",
         "--name", "readme"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
        check=True).stdout.strip()
    log = data_dir.parent / "shop-worker.log"
    celery = str(Path(sys.executable).parent / "celery")
    with log.open("wb") as out:
        worker = subprocess.Popen(
            [celery, "--workdir", "docs/examples", "-A", "shop", "worker", "-Q", "celery",
             "--loglevel", "INFO", "-n", f"shop-{os.getpid()}@%h"],
            cwd=ROOT, env={**env, "PYTHONUNBUFFERED": "1"}, stdout=out,
            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        body = json.dumps({"name": "add-every-2s", "interval_s": 2, "target": {
            "kind": "task", "task_name": "shop.add", "outcome": True, "args": [2, 3],
            "kwargs": {"scale": 10}}}).encode()
        request = urllib.request.Request(
            f"http://127.0.0.1:{run.port}/api/v1/projects/shop/triggers", data=body,
            headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as response:
            trigger_id = json.loads(response.read())["id"]
        deadline = time.monotonic() + 60
        while "add(2, 3, scale=10) = 50 for 20" not in log.read_text(errors="replace"):
            assert worker.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        history = urllib.request.Request(
            f"http://127.0.0.1:{run.port}/api/v1/projects/shop/triggers/{trigger_id}"
            "/invocations", headers={"Authorization": f"Bearer {key}"})
        # The task's line is printed before its outcome reaches Cronbeat's worker and
        # the run's finish: wait for a run recorded succeeded.
        deadline = time.monotonic() + 30
        while True:
            with urllib.request.urlopen(history, timeout=10) as response:
                items = json.loads(response.read())["items"]
            succeeded = [item for item in items if item["status"] == "succeeded"]
            if succeeded:
                break
            assert time.monotonic() < deadline, items
            time.sleep(0.2)
        detail = urllib.request.Request(
            f"http://127.0.0.1:{run.port}/api/v1/projects/shop/invocations/"
            f"{succeeded[0]['id']}", headers={"Authorization": f"Bearer {key}"})
        with urllib.request.urlopen(detail, timeout=10) as response:
            excerpt = json.loads(response.read())["response_excerpt"]
        assert excerpt.startswith("the task succeeded in "), excerpt
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        worker.wait(20)


def deploy_call(run: DevRun, token: str, body: dict[str, object]) -> tuple[int, dict[str, Any]]:
    """POST /api/deploy/restart-scheduler; returns the status and the JSON answer."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{run.port}/api/deploy/restart-scheduler",
        data=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@pytest.fixture
def data_dir() -> Iterator[Path]:
    """A data folder outside pytest's basetemp.

    Run as root, pgserver runs PostgreSQL as the user ``pgserver`` and opens the folder's
    parents to it; a concurrent pytest session resets /tmp/pytest-of-root to 0700 and would
    lock that user out mid-test.
    """
    parent = Path(tempfile.mkdtemp(prefix="cronbeat-make-run-")).resolve()
    yield parent / "data"
    shutil.rmtree(parent, ignore_errors=True)


@pytest.mark.slow
def test_make_run_starts_everything_fires_a_trigger_stops_on_ctrl_c_and_keeps_data(
    data_dir: Path, receiver: Receiver
) -> None:
    port = free_port()

    # Beat ticks every 2 s here, so the trigger fires within the test's patience.
    with running(data_dir, port, {"CRONBEAT_TICK_SECONDS": "2"}) as first:
        wait_until_up(first)
        fire_one_trigger_through_the_api(first, data_dir, receiver)
        # A Celery app of your own reaches the same broker with the env file's URL.
        broker = cli_env(data_dir)["CELERY_BROKER_URL"]
        assert broker.startswith("redis+socket://")
        with kombu.Connection(broker) as connection:
            connection.ensure_connection(max_retries=1)
            assert connection.default_channel.client.ping() is True
        run_the_readme_s_celery_beat_example(first, data_dir)
        second_on_same_folder = subprocess.run(
            [sys.executable, "-m", "devrun"],
            cwd=ROOT,
            env={**first.env, "PORT": str(free_port())},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert second_on_same_folder.returncode == 1
        assert "another `make run` is using" in second_on_same_folder.stderr
        engine = create_engine(database_url(data_dir))
        try:
            with engine.begin() as conn:
                conn.execute(
                    text(
                        "INSERT INTO triggers (tenant_id, project_id, name, enabled, run_at,"
                        " target_kind, webhook_url) VALUES ('devrun', 'test', 'kept',"
                        " false, '2100-01-01T00:00:00Z', 'webhook', 'http://127.0.0.1:9/')"
                    )
                )
        finally:
            engine.dispose()
        assert_stopped_cleanly(first, data_dir)
        assert "stopping Redis" in first.output()

    with running(data_dir, port) as second:
        wait_until_up(second)
        engine = create_engine(database_url(data_dir))
        try:
            with engine.connect() as conn:
                names = conn.execute(
                    text("SELECT name FROM triggers WHERE tenant_id = 'devrun'")
                ).scalars()
                assert list(names) == ["kept"]
        finally:
            engine.dispose()
        assert_stopped_cleanly(second, data_dir)
        assert second.lines[-1].endswith(
            f"devrun | stopped: everything is down; the data is kept in {data_dir}")


@pytest.mark.slow
def test_one_mistaken_deploy_call_cannot_strand_a_make_run_box(
    data_dir: Path, receiver: Receiver
) -> None:
    token = "make-run-deploy-token-0123456789"
    port = free_port()
    env = {"CRONBEAT_TICK_SECONDS": "2", "CRONBEAT_DEPLOY_TOKEN": token}
    with running(data_dir, port, env) as run:
        wait_until_up(run)
        # A deployment id nobody runs (no CRONBEAT_DEPLOYMENT_ID is set here).
        status, body = deploy_call(run, token, {"deployment_id": "abc123"})
        assert status == 409, body
        assert body["message"].startswith("deployment abc123 has no live worker")
        fire_one_trigger_through_the_api(run, data_dir, receiver, name="after-refusal")

        # Forced anyway: the box's processes stand aside but stay up...
        status, body = deploy_call(run, token, {"deployment_id": "abc123", "force": True})
        assert (status, body["changed"]) == (200, True), body
        deadline = time.monotonic() + START_TIMEOUT_S
        for process in ("worker", "dispatcher", "beat"):
            run.wait_for(rf"^\S+ {process}\.1 +\| .*superseded: deployment \(unversioned\) is "
                         r"superseded by abc123", deadline)
        assert run.process.poll() is None, run.output()
        assert_stopped_cleanly(run, data_dir)

    # A plain `make run` on that box says first that it will run nothing, and how to fix
    # it; its processes come up as standbys, and the fleet's health says so.
    with running(data_dir, port, env) as run:
        deadline = time.monotonic() + START_TIMEOUT_S
        run.wait_for(r"devrun \| make run: NOTHING WILL RUN: deployment abc123 is active",
                     deadline)
        command = run.wait_for(r"devrun \| make run: +source ", deadline)
        command = command.split("make run:", 1)[1].strip()
        assert command.endswith("deploy reset"), command
        wait_until_up(run)
        run.wait_for(r"^\S+ worker\.1 +\| .*standby: this worker has no "
                     r"CRONBEAT_DEPLOYMENT_ID while deployment abc123 is active", deadline)
        fleet = subprocess.run(
            [sys.executable, "-m", "cli", "health", "fleet"], cwd=ROOT, env=cli_env(data_dir),
            capture_output=True, text=True, timeout=60, check=False)
        assert fleet.returncode == 1, fleet.stdout
        assert fleet.stderr.startswith("not working: deployment abc123 is active; no active"
                                       " worker is consuming cronbeat.runs"), fleet.stderr
        assert "deployment (unversioned): beat, dispatcher, worker up, running nothing" \
            in fleet.stderr
        # The printed command, typed as printed in a second terminal (no DATABASE_URL).
        second_terminal = {k: v for k, v in os.environ.items()
                           if k not in ("DATABASE_URL", "REDIS_URL")}
        reset = subprocess.run(["bash", "-c", command], cwd=ROOT, env=second_terminal,
                               capture_output=True, text=True, timeout=60, check=False)
        assert reset.returncode == 0, reset.stderr
        assert json.loads(reset.stdout) == {"deployment_id": None, "generation": 2,
                                            "changed": True}
        fire_one_trigger_through_the_api(run, data_dir, receiver, name="after-reset")
        fleet = subprocess.run(
            [sys.executable, "-m", "cli", "health", "fleet"], cwd=ROOT, env=cli_env(data_dir),
            capture_output=True, text=True, timeout=60, check=False)
        assert fleet.returncode == 0, fleet.stderr
        assert fleet.stdout.startswith("working: gating is off; 1 active worker(s)")
        assert_stopped_cleanly(run, data_dir)


@pytest.mark.parametrize(
    ("name", "value"),
    [("PORT", "eighty"), ("PORT", "70000"), ("CRONBEAT_TICK_SECONDS", "0"),
     ("REDIS_URL", "http://redis"), ("CRONBEAT_FLOWER", "maybe")],
)  # fmt: skip
def test_make_run_refuses_a_bad_variable_by_name_before_starting(
    tmp_path: Path, name: str, value: str
) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env.update(CRONBEAT_DATA_DIR=str(tmp_path / "data"), **{name: value})
    result = subprocess.run(
        [sys.executable, "-m", "devrun"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert name in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "data").exists(), "nothing may start before validation"
