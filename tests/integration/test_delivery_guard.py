"""The SSRF guard holds at the socket: a refused address never gets a TCP handshake.

A loopback listener stands in for the operator's internal service and counts the
connections it accepts; every case below must leave it at zero.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import socket
import threading
from collections.abc import Iterator

import pytest

from app.delivery.netguard import REFUSED_MESSAGE
from app.delivery.send import send_webhook
from app.delivery.webhook_transport import Pin, TransportError, perform
from app.errors import TargetRefused, TargetUnavailable

NOW = dt.datetime(2026, 3, 7, 5, 0, tzinfo=dt.UTC)
# TEST-NET addresses are refused themselves; this one is public, and unreachable from
# the test machine or not, it is never loopback.
PUBLIC = "93.184.216.34"


class Listener:
    """A loopback TCP server that counts accepted connections and answers none."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.server.settimeout(0.05)
        self.port = int(self.server.getsockname()[1])
        self.accepted = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)

    def _accept(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                conn, _ = self.server.accept()
                self.accepted += 1
                conn.close()

    def __enter__(self) -> Listener:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self.server.close()


@pytest.fixture
def internal() -> Iterator[Listener]:
    with Listener() as listener:
        yield listener


def rebinding(*answers: str):
    """A resolver answering each lookup with the next address (the last one repeats)."""
    calls: list[str] = []

    def resolve(host: str, port: int, **_: object):
        address = answers[min(len(calls), len(answers) - 1)]
        calls.append(address)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port))]

    resolve.calls = calls  # type: ignore[attr-defined]
    return resolve


def send(url: str, *, resolve, timeout_s: float = 1.0):
    return send_webhook(method="POST", url=url, headers={}, body="{}", timeout_s=timeout_s,
                        allow_private=False, now=NOW, resolve=resolve)


def test_a_name_resolving_public_then_loopback_never_connects_to_loopback(
    internal: Listener,
) -> None:
    resolve = rebinding(PUBLIC, "127.0.0.1")
    # The public address is unreachable from here (or answers nothing on this port):
    # the attempt fails as unavailable, and the second answer is never asked for.
    with pytest.raises(TargetUnavailable):
        send(f"http://rebind.example:{internal.port}/hook", resolve=resolve)
    assert resolve.calls == [PUBLIC]
    assert internal.accepted == 0


def test_an_internal_target_is_refused_alike_whether_its_port_is_open_or_closed(
    internal: Listener,
) -> None:
    with socket.create_server(("127.0.0.1", 0)) as probe:
        closed = int(probe.getsockname()[1])
    messages = []
    for port in (internal.port, closed):
        for url in (f"http://127.0.0.1:{port}/", f"http://db.internal:{port}/"):
            with pytest.raises(TargetRefused) as caught:
                send(url, resolve=rebinding("127.0.0.1"))
            messages.append(caught.value.message)
    assert messages == [REFUSED_MESSAGE] * 4
    assert internal.accepted == 0


def test_the_transport_checks_every_socket_s_address_before_opening_it(
    internal: Listener,
) -> None:
    # Even pinned to loopback by mistake, the guarded transport opens no socket there.
    pin = Pin(host="pinned.example", port=internal.port, addresses=["127.0.0.1"])
    with pytest.raises(TransportError) as caught:
        perform("POST", f"http://pinned.example:{internal.port}/", {}, b"{}",
                timeout_s=1.0, connect_timeout_s=1.0, pin=pin, guarded=True,
                excerpt_bytes=100)
    assert caught.value.kind == "refused"
    assert internal.accepted == 0


def test_without_the_guard_the_same_pin_connects(internal: Listener) -> None:
    # The control for the test above: the listener does count a connection when allowed.
    pin = Pin(host="pinned.example", port=internal.port, addresses=["127.0.0.1"])
    with pytest.raises(TransportError):
        perform("POST", f"http://pinned.example:{internal.port}/", {}, b"{}",
                timeout_s=0.5, connect_timeout_s=0.5, pin=pin, guarded=False,
                excerpt_bytes=100)
    assert internal.accepted == 1
