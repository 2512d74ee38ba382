"""The HTTP transport of webhooks: a wall-clock deadline over the whole request, and the
SSRF guard on every socket it opens.

A webhook attempt must end well inside its lease (the trigger's ``timeout_s`` plus
:data:`app.queries.leases.LEASE_GRACE_S`), or the sweep takes it back and the occurrence is
delivered twice. requests' timeouts do not bound a request: the read timeout applies to
each socket read, so a target sending one byte every half second holds it for as long
as it likes, in the status line and headers as well as the body; a name with many
blackholed addresses costs the connect timeout once per address; and getaddrinfo has no
timeout at all. urllib3's ``Timeout(total=...)`` only shortens the per-read timeout
once, before the response is read, so it does not help either.

:func:`request_deadline` bounds all of it. Under it, connections resolve names with
:func:`app.delivery.netguard.resolve_within` and connect address by address within what is left,
and a watchdog timer shuts down, at the deadline, every socket the request opened: a
read blocked in the status line, the headers, the TLS handshake or the body returns at
once. The watchdog shuts down a duplicate of each socket's descriptor (``dup``), never
the descriptor urllib3 closes, so it cannot reach a number the process has reused.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ConnectTimeoutError, NewConnectionError
from urllib3.util.connection import _set_socket_options, allowed_gai_family

from app.delivery.netguard import DNS_TIMEOUT_S, REFUSED_MESSAGE, refusal, resolve_within
from app.errors import TargetRefused

log = logging.getLogger(__name__)


class RequestDeadline:
    """The instant a request must be over by, and the watchdog that enforces it."""

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self._at = time.monotonic() + timeout_s
        self._lock = threading.Lock()
        self._watched: list[socket.socket] = []
        self._expired = False
        self._over = False
        self._timer = threading.Timer(timeout_s, self._expire)
        self._timer.daemon = True

    @property
    def expired(self) -> bool:
        """Whether the watchdog fired (the request was cut short)."""
        with self._lock:
            return self._expired

    def remaining_s(self) -> float:
        return self._at - time.monotonic()

    def watch(self, sock: socket.socket) -> bool:
        """Shut ``sock`` down at the deadline; False if it has already passed."""
        with self._lock:
            if self._expired or self._over:
                return False
            self._watched.append(sock.dup())
            return True

    def _expire(self) -> None:
        with self._lock:
            if self._over:
                return
            self._expired = True
            for sock in self._watched:
                # Wakes any thread blocked reading it; the connection then looks closed.
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def _start(self) -> None:
        self._timer.start()

    def _end(self) -> None:
        self._timer.cancel()
        with self._lock:
            self._over = True
            for sock in self._watched:
                sock.close()
            self._watched.clear()


_DEADLINE: contextvars.ContextVar[RequestDeadline | None] = contextvars.ContextVar(
    "webhook_request_deadline", default=None
)


@contextlib.contextmanager
def request_deadline(timeout_s: float) -> Iterator[RequestDeadline]:
    """Bound every connection opened in this block (in this thread) by ``timeout_s``."""
    deadline = RequestDeadline(timeout_s)
    token = _DEADLINE.set(deadline)
    deadline._start()
    try:
        yield deadline
    finally:
        deadline._end()
        _DEADLINE.reset(token)


def _connect(conn: HTTPConnection, deadline: RequestDeadline) -> socket.socket:
    # urllib3's create_connection, with the lookup and every address's connect limited
    # to what is left of the deadline.
    host = conn._dns_host.strip("[]")
    infos = resolve_within(
        host, conn.port, min(DNS_TIMEOUT_S, deadline.remaining_s()),
        family=allowed_gai_family(), type=socket.SOCK_STREAM,
    )
    error: OSError | None = None
    for family, kind, proto, _, address in infos:
        remaining_s = deadline.remaining_s()
        if remaining_s <= 0:
            break
        timeout_s = remaining_s if conn.timeout is None else min(conn.timeout, remaining_s)
        sock = socket.socket(family, kind, proto)
        try:
            _set_socket_options(sock, conn.socket_options)
            sock.settimeout(timeout_s)
            if conn.source_address:
                sock.bind(conn.source_address)
            sock.connect(address)
        except OSError as exc:
            sock.close()
            error = exc
            continue
        if not deadline.watch(sock):
            sock.close()
            break
        return sock
    if not infos:
        raise NewConnectionError(conn, f"{host} resolves to no address")
    if error is None or isinstance(error, TimeoutError):
        raise ConnectTimeoutError(conn, f"connecting took longer than {deadline.timeout_s:g} s")
    raise NewConnectionError(conn, f"Failed to establish a new connection: {error}")


class _TimedHTTPConnection(HTTPConnection):
    # _new_conn is urllib3's (private) hook for "open the TCP socket".
    def _new_conn(self) -> socket.socket:
        deadline = _DEADLINE.get()
        if deadline is None:
            return super()._new_conn()
        return _connect(self, deadline)


class _TimedHTTPSConnection(HTTPSConnection):
    def _new_conn(self) -> socket.socket:
        deadline = _DEADLINE.get()
        if deadline is None:
            return super()._new_conn()
        return _connect(self, deadline)


def _refuse_peer(sock: socket.socket) -> None:
    peer = str(sock.getpeername()[0])
    reason = refusal(peer)
    if reason is not None:
        sock.close()
        # The address stays out of the tenant's error: it maps the operator's network.
        log.debug("delivery: connected peer refused",
                  extra={"action": "delivery.peer_refused", "address": peer, "reason": reason})
        raise TargetRefused(REFUSED_MESSAGE)


class _GuardedHTTPConnection(_TimedHTTPConnection):
    # Checking the address of the socket actually connected closes the DNS-rebinding gap
    # between check_host's lookup and the connection's own.
    def _new_conn(self) -> socket.socket:
        sock = super()._new_conn()
        _refuse_peer(sock)
        return sock


class _GuardedHTTPSConnection(_TimedHTTPSConnection):
    def _new_conn(self) -> socket.socket:
        sock = super()._new_conn()
        _refuse_peer(sock)
        return sock


def _pool(base: type[HTTPConnectionPool], connection: type[HTTPConnection]) -> type[Any]:
    return type(f"{connection.__name__}Pool", (base,), {"ConnectionCls": connection})


_POOLS = {
    False: {"http": _pool(HTTPConnectionPool, _TimedHTTPConnection),
            "https": _pool(HTTPSConnectionPool, _TimedHTTPSConnection)},
    True: {"http": _pool(HTTPConnectionPool, _GuardedHTTPConnection),
           "https": _pool(HTTPSConnectionPool, _GuardedHTTPSConnection)},
}


class _Adapter(HTTPAdapter):
    def __init__(self, guarded: bool) -> None:
        self._guarded = guarded
        super().__init__(max_retries=0)

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = dict(_POOLS[self._guarded])


def http_session(allow_private: bool) -> requests.Session:
    """Return a session whose connections keep to the current request_deadline.

    Unless ``allow_private``, every connected peer is checked by the SSRF guard too.
    """
    session = requests.Session()
    # No proxy from the environment: the guard must judge the target, not a proxy.
    session.trust_env = False
    adapter = _Adapter(guarded=not allow_private)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session
