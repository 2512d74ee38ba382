"""The HTTP transport of webhooks: libcurl (pycurl) through its public options only.

Why libcurl: one attempt needs a wall-clock deadline over the whole request (connect,
TLS, a status line and body trickled a byte at a time), a say in which address every
socket connects to, and cheap reuse of connections from many threads. libcurl has all
three as documented options: ``TIMEOUT_MS`` bounds the transfer as a whole,
``RESOLVE`` pins the names to addresses we looked up and checked, and
``OPENSOCKETFUNCTION`` sees the address of every socket before it is opened, so a
refused address never gets a TCP handshake. The transfer runs in C with the GIL
released, so a thread waiting on a slow receiver costs no CPU, and each thread's handle
keeps its connections open for the next request to the same origin.

:func:`perform` is the only entry point; it knows nothing of invocations, signatures or
retries (:mod:`app.delivery.send`).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import socket
import threading
from collections.abc import Mapping, Sequence

import certifi
import pycurl

from app.delivery.netguard import refusal

#: Connections each thread's handle keeps open for reuse (libcurl's MAXCONNECTS).
MAX_CACHED_CONNECTIONS = 8

_PROTOCOLS = pycurl.PROTO_HTTP | pycurl.PROTO_HTTPS
# libcurl error codes (curl/curl.h) that ended a transfer after the status line arrived
# without spoiling its answer: our excerpt limit stopped the body (WRITE_ERROR), or the
# deadline or the peer cut the body short.
_BODY_CUT_SHORT = frozenset({
    pycurl.E_WRITE_ERROR, pycurl.E_OPERATION_TIMEDOUT, pycurl.E_RECV_ERROR,
    pycurl.E_PARTIAL_FILE, pycurl.E_BAD_CONTENT_ENCODING,
})
# CURLE_WEIRD_SERVER_REPLY (8): pycurl still names it E_FTP_WEIRD_SERVER_REPLY.
_WEIRD_SERVER_REPLY = pycurl.E_FTP_WEIRD_SERVER_REPLY
_TLS_ERRORS = frozenset({
    pycurl.E_SSL_CONNECT_ERROR, pycurl.E_PEER_FAILED_VERIFICATION,
    pycurl.E_SSL_CACERT_BADFILE, pycurl.E_SSL_CERTPROBLEM, pycurl.E_SSL_CIPHER,
})


class TransportError(Exception):
    """The request got no HTTP answer; ``kind`` says why, ``detail`` in words."""

    def __init__(self, kind: str, detail: str = "") -> None:
        super().__init__(kind, detail)
        #: "timeout", "connect", "refused", "tls", "protocol" or "url".
        self.kind = kind
        self.detail = detail


@dataclasses.dataclass(frozen=True)
class Response:
    """What arrived: the status, the first bytes of the body, and two headers."""

    status: int
    body: bytes
    content_type: str | None
    retry_after: str | None


@dataclasses.dataclass(frozen=True)
class Pin:
    """Connect ``host:port`` to these addresses only (looked up and checked by the caller)."""

    host: str
    port: int
    addresses: Sequence[str]

    def resolve_entry(self) -> str:
        listed = ",".join(f"[{a}]" if ":" in a else a for a in self.addresses)
        return f"{self.host}:{self.port}:{listed}"


class _Handles(threading.local):
    def __init__(self) -> None:
        # One handle per guard mode: a connection opened while private targets were
        # allowed is never reused by a guarded request.
        self.by_guard: dict[bool, pycurl.Curl] = {}


_HANDLES = _Handles()


def _handle(guarded: bool) -> pycurl.Curl:
    handle = _HANDLES.by_guard.get(guarded)
    if handle is None:
        handle = _HANDLES.by_guard[guarded] = pycurl.Curl()
    else:
        # Back to defaults; the connection cache and the pinned names stay.
        handle.reset()
    return handle


class _Exchange:
    """The callbacks of one transfer: the excerpt, two headers, the guard's verdicts."""

    def __init__(self, excerpt_bytes: int, guarded: bool) -> None:
        self.excerpt_bytes = excerpt_bytes
        self.guarded = guarded
        self.chunks: list[bytes] = []
        self.size = 0
        self.retry_after: str | None = None
        self.refused = False

    def write(self, data: bytes) -> int | None:
        room = self.excerpt_bytes - self.size
        if room > 0:
            self.chunks.append(data[:room])
            self.size += min(room, len(data))
        # Returning a different count ends the transfer (E_WRITE_ERROR): the rest of a
        # large body is never downloaded.
        return None if self.size < self.excerpt_bytes else 0

    def header(self, line: bytes) -> None:
        if line[:5] == b"HTTP/":
            # A new response (after a 100 Continue, say): its headers replace any before.
            self.retry_after = None
        name, sep, value = line.partition(b":")
        if sep and name.strip().lower() == b"retry-after":
            self.retry_after = value.strip().decode("latin-1")

    def open_socket(self, purpose: int, address: tuple[int, int, int, tuple]) -> object:
        family, kind, protocol, sockaddr = address
        if self.guarded:
            try:
                refused = refusal(str(sockaddr[0])) is not None
            except ValueError:
                refused = True
            if refused:
                # Before any packet is sent: an internal address gets no handshake, and
                # whether its port is open or closed cannot show in the error.
                self.refused = True
                return pycurl.SOCKET_BAD
        return socket.socket(family, kind, protocol)


def perform(
    method: str,
    url: str,
    headers: Mapping[str, str],
    body: bytes,
    *,
    timeout_s: float,
    connect_timeout_s: float,
    pin: Pin | None,
    guarded: bool,
    excerpt_bytes: int,
) -> Response:
    """Send one request and return its answer within ``timeout_s`` of wall clock.

    Redirects are not followed, no proxy from the environment is used, and only http and
    https are spoken. With ``guarded``, every address a socket would connect to is
    checked by :func:`app.delivery.netguard.refusal` first.

    Raises:
        TransportError: no answer (its ``kind`` says which failure).
    """
    handle = _handle(guarded)
    exchange = _Exchange(excerpt_bytes, guarded)
    handle.setopt(pycurl.URL, url)
    handle.setopt(pycurl.PROTOCOLS, _PROTOCOLS)
    handle.setopt(pycurl.NOSIGNAL, 1)
    handle.setopt(pycurl.PROXY, "")
    handle.setopt(pycurl.NOPROXY, "*")
    handle.setopt(pycurl.MAXCONNECTS, MAX_CACHED_CONNECTIONS)
    handle.setopt(pycurl.HTTP_VERSION, pycurl.CURL_HTTP_VERSION_1_1)
    handle.setopt(pycurl.CAINFO, certifi.where())
    handle.setopt(pycurl.TIMEOUT_MS, max(1, int(timeout_s * 1000)))
    handle.setopt(pycurl.CONNECTTIMEOUT_MS, max(1, int(connect_timeout_s * 1000)))
    handle.setopt(pycurl.ACCEPT_ENCODING, "")
    if pin is not None:
        handle.setopt(pycurl.RESOLVE, [pin.resolve_entry()])
    # "Expect:" stops libcurl waiting up to a second for a 100 Continue on large bodies.
    lines = [f"{name}: {value}" if value else f"{name};" for name, value in headers.items()]
    handle.setopt(pycurl.HTTPHEADER, [*lines, "Expect:"])
    handle.setopt(pycurl.CUSTOMREQUEST, method)
    if method == "HEAD":
        handle.setopt(pycurl.NOBODY, 1)
    else:
        handle.setopt(pycurl.POSTFIELDS, body)
    handle.setopt(pycurl.WRITEFUNCTION, exchange.write)
    handle.setopt(pycurl.HEADERFUNCTION, exchange.header)
    handle.setopt(pycurl.OPENSOCKETFUNCTION, exchange.open_socket)
    try:
        handle.perform()
    except pycurl.error as exc:
        code = exc.args[0]
        status = int(handle.getinfo(pycurl.RESPONSE_CODE) or 0)
        if not (status and code in _BODY_CUT_SHORT):
            raise _failure(handle, exchange, code) from None
    else:
        status = int(handle.getinfo(pycurl.RESPONSE_CODE))
    return Response(
        status=status,
        body=b"".join(exchange.chunks),
        content_type=handle.getinfo(pycurl.CONTENT_TYPE),
        retry_after=exchange.retry_after,
    )


def _failure(handle: pycurl.Curl, exchange: _Exchange, code: int) -> TransportError:
    # libcurl's own message names the host and port; the tenant's error does not need
    # them, so it is built from the error code and the socket's errno.
    if exchange.refused:
        return TransportError("refused")
    if code == pycurl.E_OPERATION_TIMEDOUT:
        return TransportError("timeout")
    if code in _TLS_ERRORS:
        verify = code == pycurl.E_PEER_FAILED_VERIFICATION
        return TransportError("tls", "certificate verification failed" if verify
                              else "TLS handshake failed")
    if code in (pycurl.E_URL_MALFORMAT, pycurl.E_UNSUPPORTED_PROTOCOL):
        return TransportError("url")
    if code == pycurl.E_GOT_NOTHING:
        return TransportError("connect", "the server closed the connection without answering")
    if code == _WEIRD_SERVER_REPLY:
        return TransportError("protocol", "the answer is not HTTP")
    os_errno = os_errno_of(handle)
    if code == pycurl.E_COULDNT_RESOLVE_HOST:
        return TransportError("connect", "the name does not resolve")
    if os_errno:
        return TransportError("connect", os.strerror(os_errno))
    if code == pycurl.E_COULDNT_CONNECT:
        return TransportError("connect", "could not connect")
    return TransportError("connect", "the connection broke")


def os_errno_of(handle: pycurl.Curl) -> int:
    """The errno of the socket call that failed the transfer, 0 if none did."""
    return int(handle.getinfo(pycurl.OS_ERRNO) or 0)


def is_ip_literal(host: str) -> bool:
    """Whether ``host`` (as in a URL, IPv6 without brackets) is an address, not a name."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
