"""The webhook request's watchdog: it ends a blocked read at the deadline, and only then."""

from __future__ import annotations

import socket
import time

from app.delivery.webhook_transport import request_deadline


def test_the_watchdog_wakes_a_read_blocked_at_the_deadline() -> None:
    ours, peer = socket.socketpair()
    with ours, peer, request_deadline(0.2) as deadline:
        assert deadline.watch(ours)
        started = time.monotonic()
        assert ours.recv(1) == b""  # the peer never sends: only the watchdog ends it
        assert 0.15 < time.monotonic() - started < 1.0
        assert deadline.expired


def test_a_socket_opened_after_the_deadline_is_refused() -> None:
    ours, peer = socket.socketpair()
    with ours, peer, request_deadline(0.05) as deadline:
        time.sleep(0.2)
        assert deadline.expired
        assert not deadline.watch(ours)


def test_leaving_the_block_disarms_the_watchdog_and_leaves_the_socket_usable() -> None:
    ours, peer = socket.socketpair()
    with ours, peer:
        with request_deadline(0.1) as deadline:
            assert deadline.watch(ours)
        time.sleep(0.3)
        assert not deadline.expired
        peer.sendall(b"x")
        assert ours.recv(1) == b"x"
