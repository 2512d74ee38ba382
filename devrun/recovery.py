"""What a killed ``make run`` leaves in its data folder, cleared before the next one starts.

Ctrl-C and SIGTERM stop everything in order (see :mod:`devrun.supervisor`). SIGKILL, the OOM
killer or a crash cannot: the folder may then still have a running honcho with its
processes, a redis-server on its socket, and pgserver's record of a handle whose process
is gone. The next run holds the folder's lock, which proves all of them stale.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path

from app.errors import ConfigError

#: Environment variable devrun gives the Procfile processes: the data folder they serve.
MARK = "CRONBEAT_DEVRUN_DATA_DIR"
_LEFTOVER_STOP_TIMEOUT_S = 10.0
_REDIS_SHUTDOWN_TIMEOUT_S = 10.0

log = logging.getLogger("cronbeat.devrun")


class DataDirBusy(Exception):
    """Another ``make run`` holds the data folder."""


@contextlib.contextmanager
def data_dir_lock(data_dir: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``data_dir``; the kernel releases it even on SIGKILL.

    Two runs on one folder would start two redis-servers appending to one file and two
    beats on one schedule.

    Raises:
        DataDirBusy: another process holds it.
    """
    with (data_dir / "devrun.lock").open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise DataDirBusy(
                f"another `make run` is using {data_dir}; stop it or set CRONBEAT_DATA_DIR"
            ) from None
        yield


def stop_leftover_processes(data_dir: Path) -> None:
    """Stop the Procfile processes (and honcho) a killed run left running on ``data_dir``.

    They are found by :data:`MARK`, which devrun puts in their environment and nobody else
    does. Without this the next run's web could not bind its port, and two beats would tick.
    A leftover honcho is no help stopping them: its output pipe is gone with its reader.
    """
    import psutil  # pgserver's dependency; only this clean-up needs it

    leftovers = []
    for proc in psutil.process_iter():
        if proc.pid == os.getpid():
            continue
        with contextlib.suppress(psutil.Error):
            if proc.environ().get(MARK) == str(data_dir):
                leftovers.append(proc)
    if not leftovers:
        return
    log.warning("stopping %d processes a killed run left on %s", len(leftovers), data_dir)
    for proc in leftovers:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.terminate()
    _, alive = psutil.wait_procs(leftovers, timeout=_LEFTOVER_STOP_TIMEOUT_S)
    for proc in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.kill()


def forget_dead_postgres_handles(pg_dir: Path) -> None:
    """Drop pids of exited processes from pgserver's list of handles on ``pg_dir``.

    pgserver stops the server only when the last process in that list lets go; a run
    killed with SIGKILL leaves its pid behind, and no later run would ever stop the server.
    """
    handles = pg_dir / ".handle_pids.json"
    try:
        pids = json.loads(handles.read_text())
    except (FileNotFoundError, ValueError):
        return
    alive = [pid for pid in pids if _pid_alive(pid)]
    if alive != pids:
        handles.write_text(json.dumps(alive))


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def shut_down_leftover_redis(socket_path: Path) -> None:
    """Shut down a redis-server a killed run left on ``socket_path``.

    start_redis would otherwise start a second server appending to the same file.

    Raises:
        ConfigError: it answers but refuses to shut down.
    """
    import redis  # imported here: only the embedded path needs it

    if not socket_path.exists():
        return
    client = redis.Redis(unix_socket_path=str(socket_path), socket_timeout=2)
    try:
        client.ping()
    except (redis.RedisError, OSError):
        return  # a stale socket file; start_redis removes it
    log.warning("a redis-server from an earlier run serves %s; shutting it down", socket_path)
    try:
        client.shutdown()  # flushes the append-only file, then exits
    except redis.RedisError as exc:
        raise ConfigError(f"could not shut down the leftover redis-server: {exc}") from exc
    finally:
        client.close()
    # The server removes its socket on the way out, after the append-only file is flushed.
    deadline = time.monotonic() + _REDIS_SHUTDOWN_TIMEOUT_S
    while socket_path.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
