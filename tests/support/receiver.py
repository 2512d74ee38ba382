"""A real HTTP webhook receiver on loopback, for integration tests.

It runs a ``ThreadingHTTPServer`` in a thread, answers with scripted replies (one per
request, in order; ``200 ok`` once the script is used up), can hold a request open
until the test releases it or trickle its answer a byte at a time, and records every
request it received with the time it arrived.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections import deque
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# A held request never waits longer than this, so a failing test cannot wedge the
# server thread (or the worker waiting on it) forever.
MAX_HOLD_S = 60.0


@dataclasses.dataclass
class Reply:
    """How the receiver answers one request."""

    status: int = 200
    body: str = "ok"
    headers: dict[str, str] = dataclasses.field(default_factory=dict)
    #: Wait for this event (or :meth:`Receiver.release`) before answering.
    hold: threading.Event | None = None
    #: Send the answer one byte every this many seconds: from the status line on
    #: (``trickle="all"``) or only the body, after the headers (``trickle="body"``).
    trickle_s: float | None = None
    trickle: str = "all"
    #: Wait this long before answering (a slow receiver).
    delay_s: float = 0.0


@dataclasses.dataclass(frozen=True)
class Received:
    """One request as it arrived."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    #: ``time.monotonic()`` when the request's body had been read.
    at: float


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # The listen backlog: hundreds of connections may arrive at once (a burst).
    request_queue_size = 1024


class Receiver:
    """The receiver's handle: its URL, its script, and what it received."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)
        self._script: deque[Reply] = deque()
        self._received: list[Received] = []
        self._holds: list[threading.Event] = []
        #: How requests are answered once the script is used up.
        self.default = Reply()
        self._server = _Server(("127.0.0.1", 0), self._handler_class())
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="webhook-receiver", daemon=True
        )
        self._thread.start()

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def url(self, path: str = "/hook") -> str:
        """Return the URL of ``path`` on this receiver."""
        return self.base_url + path

    def script(self, *replies: Reply) -> None:
        """Answer the next requests with ``replies``, in order."""
        with self._lock:
            self._script.extend(replies)

    def hold_next(self) -> threading.Event:
        """Hold the next request open until the returned event is set; return it."""
        event = threading.Event()
        self.script(Reply(hold=event))
        return event

    @property
    def requests(self) -> list[Received]:
        with self._lock:
            return list(self._received)

    @property
    def count(self) -> int:
        with self._lock:
            return len(self._received)

    def wait_for(self, count: int, timeout_s: float = 20.0) -> list[Received]:
        """Wait until at least ``count`` requests arrived; return all of them.

        Raises:
            TimeoutError: fewer arrived within ``timeout_s``.
        """
        with self._arrived:
            if not self._arrived.wait_for(lambda: len(self._received) >= count, timeout_s):
                raise TimeoutError(
                    f"receiver got {len(self._received)} requests, expected {count}"
                )
            return list(self._received)

    def release(self) -> None:
        """Answer every held request now."""
        with self._lock:
            for event in self._holds:
                event.set()

    def close(self) -> None:
        self.release()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def _next_reply(self) -> Reply:
        with self._lock:
            reply = self._script.popleft() if self._script else self.default
            if reply.hold is not None:
                self._holds.append(reply.hold)
            return reply

    def _record(self, received: Received) -> None:
        with self._arrived:
            self._received.append(received)
            self._arrived.notify_all()

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                receiver._record(
                    Received(
                        method=self.command,
                        path=self.path,
                        headers=dict(self.headers.items()),
                        body=body,
                        at=time.monotonic(),
                    )
                )
                reply = receiver._next_reply()
                if reply.hold is not None:
                    reply.hold.wait(MAX_HOLD_S)
                if reply.delay_s:
                    time.sleep(reply.delay_s)
                payload = reply.body.encode()
                try:
                    self.send_response(reply.status)
                    for name, value in reply.headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", str(len(payload)))
                    if reply.trickle_s is None:
                        self.end_headers()
                        self.wfile.write(payload)
                    elif reply.trickle == "body":
                        self.end_headers()
                        self._trickle(payload, reply.trickle_s)
                    else:
                        # end_headers() would send the buffered head at once.
                        self._headers_buffer.append(b"\r\n")
                        head = b"".join(self._headers_buffer)
                        self._headers_buffer = []
                        self._trickle(head + payload, reply.trickle_s)
                except OSError:
                    pass  # the client went away (a killed worker): nothing to answer

            def _trickle(self, data: bytes, every_s: float) -> None:
                for index in range(len(data)):
                    self.wfile.write(data[index:index + 1])
                    self.wfile.flush()
                    time.sleep(every_s)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle

            def log_message(self, format: str, *args: object) -> None:
                pass

        return Handler


def running_receiver() -> Iterator[Receiver]:
    """Yield a started receiver and close it afterwards (the body of a pytest fixture)."""
    receiver = Receiver()
    try:
        yield receiver
    finally:
        receiver.close()
