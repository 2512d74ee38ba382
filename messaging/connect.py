"""Connecting to the broker: kombu's tries, given up at once when this process stops.

kombu connects a connection that is not connected on first use, trying again for up to
its connect timeout (at 0, 2 and 6 s). A worker's warm shutdown waits for its running
tasks, so a tick that meets a dead broker would hold the shutdown that long for each
publish and each read. Once :func:`stop_waiting` was called (the worker entry point
calls it as the shutdown begins), a wait for the broker ends within a second.
"""

from __future__ import annotations

import threading

from kombu import Connection
from kombu.exceptions import OperationalError

_stopping = threading.Event()


class ProcessStopping(OperationalError):
    """The broker was unreachable and this process is shutting down: not waited for."""


def stop_waiting() -> None:
    """From now on, waits for an unreachable broker in this process end at once."""
    _stopping.set()


def _give_up_if_stopping() -> None:
    # kombu calls this before each try and every second between tries.
    if _stopping.is_set():
        raise ProcessStopping("not waiting for the broker: this process is shutting down")


def ensure_connected(connection: Connection) -> Connection:
    """``connection``, connected (kombu's tries and timeout), unless this process stops.

    Raises:
        kombu.exceptions.OperationalError: the broker is unreachable, or this process is
            shutting down and it was not reachable at the first try.
    """
    return connection.ensure_connection(
        callback=_give_up_if_stopping, timeout=connection.connect_timeout)
