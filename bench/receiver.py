"""A fast loopback webhook receiver for bench/e2e.py (a process of its own, not a test helper).

Raw asyncio streams, HTTP/1.1 with keep-alive: every request that is not a control
request is answered ``200 ok`` after the configured delay, and recorded with its arrival
time (``time.time()`` once its head was read) and its id: the ``webhook-id`` header
(Cronbeat's webhooks), else the ``"invocation"`` field of the JSON body (the baseline).

Control requests, under ``/_bench/``, answered with JSON:

* ``POST /_bench/reset?delay_ms=200``: forget every record, set the delay, and return
  this process's CPU time, so the caller can take the receiver's own cost per request;
* ``GET /_bench/stats``: how many requests arrived, the CPU time, connection counts;
* ``GET /_bench/records``: the stats plus every record, ``[[arrived, id], ...]``.

    .venv/bin/python -m bench.receiver --port 0 --port-file /tmp/port
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import resource
import signal
import time
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

_OK = (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n"
       b"Connection: keep-alive\r\n\r\nok")
# The baseline's body comes from requests' json= (json.dumps with ", " and ": ").
_BODY_ID = re.compile(rb'"invocation":\s*"([^"]{1,100})"')
_MAX_HEAD = 64 * 1024


class State:
    """Everything recorded since the last reset."""

    def __init__(self) -> None:
        self.delay_s = 0.0
        self.records: list[tuple[float, bytes]] = []
        self.open = 0
        self.max_open = 0
        self.accepted = 0
        self.webhook_connections = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.bad = 0

    def reset(self, delay_ms: float) -> None:
        self.delay_s = delay_ms / 1000
        self.records = []
        self.max_open = self.open
        self.accepted = 0
        self.webhook_connections = 0
        self.max_in_flight = self.in_flight
        self.bad = 0

    def stats(self) -> dict[str, object]:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return {
            "requests": len(self.records),
            "cpu_user_s": usage.ru_utime,
            "cpu_sys_s": usage.ru_stime,
            "delay_ms": self.delay_s * 1000,
            "open_connections": self.open,
            "max_open_connections": self.max_open,
            "accepted_connections": self.accepted,
            # Connections whose first webhook request arrived since the reset (control
            # requests, one connection each, are not counted).
            "webhook_connections": self.webhook_connections,
            "max_in_flight": self.max_in_flight,
            "bad_requests": self.bad,
        }


def _json_response(status: str, value: object) -> bytes:
    payload = json.dumps(value).encode()
    return (f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(payload)}\r\n\r\n").encode() + payload


def _control(state: State, method: bytes, target: bytes) -> bytes:
    parts = urlsplit(target.decode("latin-1"))
    query = parse_qs(parts.query)
    if parts.path == "/_bench/reset" and method == b"POST":
        state.reset(float(query.get("delay_ms", ["0"])[0]))
        return _json_response("200 OK", state.stats())
    if parts.path == "/_bench/stats":
        return _json_response("200 OK", state.stats())
    if parts.path == "/_bench/records":
        records = [[at, ident.decode("latin-1")] for at, ident in state.records]
        return _json_response("200 OK", {**state.stats(), "records": records})
    return _json_response("404 Not Found", {"error": "no such control request"})


async def _serve(state: State, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter) -> None:
    state.open += 1
    state.accepted += 1
    state.max_open = max(state.max_open, state.open)
    carried_webhook = False
    try:
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
                return
            arrived = time.time()
            request_line, _, header_block = head.partition(b"\r\n")
            method, _, rest = request_line.partition(b" ")
            target, _, version = rest.partition(b" ")
            headers: dict[bytes, bytes] = {}
            for line in header_block.split(b"\r\n"):
                name, sep, value = line.partition(b":")
                if sep:
                    headers[name.strip().lower()] = value.strip()
            if b"transfer-encoding" in headers:
                state.bad += 1
                writer.write(b"HTTP/1.1 411 Length Required\r\nContent-Length: 0\r\n"
                             b"Connection: close\r\n\r\n")
                await writer.drain()
                return
            try:
                length = int(headers.get(b"content-length", b"0"))
                body = await reader.readexactly(length) if length else b""
            except (ValueError, asyncio.IncompleteReadError, ConnectionError):
                state.bad += 1
                return
            if target.startswith(b"/_bench/"):
                writer.write(_control(state, method, target))
            else:
                ident = headers.get(b"webhook-id")
                if ident is None:
                    found = _BODY_ID.search(body)
                    ident = found.group(1) if found else b"?"
                state.records.append((arrived, ident))
                if not carried_webhook:
                    carried_webhook = True
                    state.webhook_connections += 1
                state.in_flight += 1
                state.max_in_flight = max(state.max_in_flight, state.in_flight)
                try:
                    if state.delay_s > 0:
                        await asyncio.sleep(state.delay_s)
                    writer.write(_OK)
                finally:
                    state.in_flight -= 1
            await writer.drain()
            if headers.get(b"connection", b"").lower() == b"close" or version == b"HTTP/1.0":
                return
    except ConnectionError:
        return
    except asyncio.CancelledError:
        # Shutting down: end quietly (asyncio's stream callback would log a cancelled
        # handler as an error).
        return
    finally:
        state.open -= 1
        writer.close()


async def _main(host: str, port: int, port_file: Path | None) -> None:
    state = State()
    server = await asyncio.start_server(
        lambda r, w: _serve(state, r, w), host, port, backlog=4096, limit=_MAX_HEAD,
        reuse_address=True,
    )
    bound = server.sockets[0].getsockname()[1]
    if port_file is not None:
        temporary = port_file.with_suffix(".tmp")
        temporary.write_text(str(bound))
        temporary.replace(port_file)
    print(f"receiver listening on http://{host}:{bound}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    async with server:
        await stop.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--port-file", type=Path, help="write the bound port here")
    args = parser.parse_args()
    # Many concurrent connections: raise the open-files limit as far as allowed.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    asyncio.run(_main(args.host, args.port, args.port_file))


if __name__ == "__main__":
    main()
