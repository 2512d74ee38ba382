"""A real Celery worker subprocess for integration tests.

The worker is the production entry point (``celery -A tasks.worker worker``) on both
Cronbeat queues, with the environment of the test process (``test_services`` put
DATABASE_URL and REDIS_URL there) plus private webhook targets allowed (the test
receiver is on loopback) and a deployment id. It runs in its own process group, so
:meth:`WorkerProcess.kill` takes the pool children down with the main process, as a
lost machine would.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_DEPLOYMENT_ID = "test-worker"
QUEUES = "cronbeat.dispatch,cronbeat.runs,cronbeat.alerts"
READY_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 20.0


class WorkerProcess:
    """One worker at a time, restartable: start, kill (SIGKILL), stop (SIGTERM), restart."""

    def __init__(self, log_dir: Path, *, queues: str = QUEUES, concurrency: int = 4,
                 pool: str = "threads", heartbeat: bool = False, **env: str) -> None:
        self.log_dir = log_dir
        self.queues = queues
        self.concurrency = concurrency
        self.pool = pool
        #: Heartbeats and gossip on, as the Procfile's worker runs (Flower can then turn
        #: its task events on); off by default, to keep the tests' broker quiet.
        self.heartbeat = heartbeat
        self.default_env = {
            "CRONBEAT_ALLOW_PRIVATE_TARGETS": "true",
            "CRONBEAT_DEPLOYMENT_ID": DEFAULT_DEPLOYMENT_ID,
            # Celery's "Task ... succeeded" lines, which tests wait for, are debug lines.
            "CRONBEAT_LOG_LEVEL": "debug",
            **env,
        }
        self.env: dict[str, str] = {}
        self.name = ""
        self.log_path: Path | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._starts = 0

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    @property
    def node(self) -> str:
        """The worker's Celery node name (``name@host``), as events and Flower show it."""
        return f"{self.name}@{socket.gethostname()}"

    @property
    def alive(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def is_default(self) -> bool:
        """Whether it runs, and with the default environment (no per-test overrides)."""
        return self.alive and self.env == self.default_env

    def start(self, **env: str) -> None:
        """Start a worker with the default environment plus ``env``; wait until ready.

        Raises:
            RuntimeError: a worker is already running, or it exited or did not get
                ready within READY_TIMEOUT_S (the message carries its log's tail).
        """
        if self.alive:
            raise RuntimeError("the worker is already running; stop or kill it first")
        self._starts += 1
        self.env = {**self.default_env, **env}
        self.name = f"test-{secrets.token_hex(4)}"
        self.log_path = self.log_dir / f"worker-{self._starts}-{self.name}.log"
        command = [
            sys.executable, "-m", "celery", "-A", "tasks.worker", "worker",
            "-Q", self.queues, "-c", str(self.concurrency), "--pool", self.pool,
            *(() if self.heartbeat else ("--without-heartbeat", "--without-gossip")),
            "--without-mingle",
            "-n", f"{self.name}@%h", "--loglevel", "INFO",
        ]
        with self.log_path.open("wb") as log:
            self._process = subprocess.Popen(
                command,
                cwd=ROOT,
                env={**os.environ, **self.env},
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self._wait_ready()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if re.search(rf"{re.escape(self.name)}@\S+ ready\.", self.log_text()):
                return
            if not self.alive:
                raise RuntimeError(f"the worker exited at start:\n{self.log_text()[-3000:]}")
            time.sleep(0.1)
        self.kill()
        raise RuntimeError(f"the worker was not ready in time:\n{self.log_text()[-3000:]}")

    def log_text(self) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")

    def wait_for_log(self, pattern: str, count: int = 1, timeout_s: float = 20.0) -> None:
        """Wait until regex ``pattern`` occurs ``count`` times in the current log.

        Raises:
            TimeoutError: it did not within ``timeout_s``.
        """
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if len(re.findall(pattern, self.log_text())) >= count:
                return
            time.sleep(0.05)
        raise TimeoutError(f"{pattern!r} not seen {count} times:\n{self.log_text()[-3000:]}")

    def _signal_group(self, signum: int) -> None:
        assert self._process is not None
        with contextlib.suppress(ProcessLookupError):  # already gone
            os.killpg(self._process.pid, signum)

    def kill(self) -> None:
        """SIGKILL the worker and its pool children at once (a crash; nothing acks)."""
        if self._process is None:
            return
        self._signal_group(signal.SIGKILL)
        self._process.wait()

    def stop(self) -> None:
        """SIGTERM (warm shutdown); SIGKILL whatever is left after STOP_TIMEOUT_S."""
        if self._process is None:
            return
        if self.alive:
            self._signal_group(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._process.wait(STOP_TIMEOUT_S)
        # Pool children that outlived their parent go too.
        self._signal_group(signal.SIGKILL)
        self._process.wait()

    def restart(self, **env: str) -> None:
        """Stop the worker if it runs (SIGTERM), then start a new one with ``env``."""
        self.stop()
        self.start(**env)
