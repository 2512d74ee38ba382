"""Probes ``make run`` uses: is the port free, and is it our API that answers."""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request

_HEALTH_TIMEOUT_S = 1.0

# Bypass any http_proxy from the environment: the probe is for our own loopback server.
_no_proxy_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def health_status(api_url: str) -> int | None:
    """Return 200 if ``GET /healthz`` answers as Cronbeat's does, else its status or None.

    Cronbeat answers ``{"status": "ok"}`` as JSON; any other 200 is reported as 0.
    """
    try:
        with _no_proxy_opener.open(f"{api_url}/healthz", timeout=_HEALTH_TIMEOUT_S) as response:
            status = int(response.status)
            body = response.read(256)
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:  # URLError, refused, reset, timeout: not up yet
        return None
    try:
        ours = json.loads(body) == {"status": "ok"}
    except ValueError:
        ours = False
    return status if ours or status != 200 else 0


def port_free(host: str, port: int) -> bool:
    """Whether nothing listens on ``host:port`` (bound as gunicorn binds, with reuse)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True
