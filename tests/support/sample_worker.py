"""The worker of a user's own Celery app (tests.sample_app), as a shop runs it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import redis

from tests.sample_app.tasks import CALLS
from tests.support.runs import DEADLINE_S

ROOT = Path(__file__).resolve().parents[2]


class SampleWorker:
    """``celery -A tests.sample_app.tasks worker -Q sample`` on the test broker."""

    def __init__(self, redis_url: str, log_dir: Path, **env: str) -> None:
        self.redis_url = redis_url
        self.log_dir = log_dir
        self.env = env
        self.client = redis.Redis.from_url(redis_url)
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        self.starts += 1
        log = self.log_dir / f"sample-worker-{self.starts}.log"
        celery = str(Path(sys.executable).parent / "celery")
        env = {**os.environ, "SAMPLE_BROKER_URL": self.redis_url, "PYTHONUNBUFFERED": "1",
               **self.env}
        with log.open("wb") as out:
            self.process = subprocess.Popen(
                [celery, "-A", "tests.sample_app.tasks", "worker", "-Q", "sample", "-P",
                 "threads", "-c", "4", "-n", f"sample-{os.getpid()}-{self.starts}@%h",
                 "--loglevel", "INFO"],
                cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True)
        self.log_path = log
        deadline = time.monotonic() + 30
        while " ready." not in self.log_text():
            assert self.process.poll() is None and time.monotonic() < deadline, self.log_text()
            time.sleep(0.1)

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def kill(self) -> None:
        """SIGKILL, as a lost machine: nothing is acknowledged or handed back."""
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(20)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(20)

    def calls(self, count: int) -> list[dict[str, Any]]:
        """The calls its tasks recorded, once there are at least ``count``."""
        deadline = time.monotonic() + DEADLINE_S
        while self.client.llen(CALLS) < count:
            assert time.monotonic() < deadline, f"{self.client.llen(CALLS)} of {count} calls"
            time.sleep(0.05)
        return [json.loads(raw) for raw in self.client.lrange(CALLS, 0, -1)]

    def clear(self) -> None:
        self.client.delete(CALLS, "sample")
