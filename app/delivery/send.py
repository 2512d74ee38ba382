"""Delivering one attempt: a signed webhook over HTTP, or a message to a Celery task.

Nothing here touches the database; the runner calls these outside any transaction. A
delivery that reached the target returns a :class:`DeliveryResult` saying whether it
succeeded, may be retried, or failed for good; one that could not reach it raises
:class:`~app.errors.TargetUnavailable` (transient) or a :class:`~app.errors.PermanentError`
such as :class:`~app.errors.TargetRefused`.
"""

from __future__ import annotations

import binascii
import codecs
import dataclasses
import datetime as dt
import enum
import json
import logging
import re
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

import requests
import urllib3
from standardwebhooks.webhooks import EmptyWebhookSecretError, Webhook

from app.delivery.netguard import DNS_TIMEOUT_S, check_host
from app.delivery.webhook_transport import RequestDeadline, http_session, request_deadline
from app.errors import PermanentError, TargetRefused, TargetUnavailable
from app.firing.backoff import retry_after_s

log = logging.getLogger(__name__)

USER_AGENT = "Cronbeat/0.1"
EXCERPT_CHARS = 1024
# UTF-8 spends at most 4 bytes on a character; more than this is never needed for the
# excerpt, and a huge response body is not downloaded.
_EXCERPT_BYTES = 4 * EXCERPT_CHARS
# Connecting takes at most this (or the trigger's timeout_s if smaller), so the lease's
# grace bounds it; waiting for the response is what timeout_s is for.
CONNECT_TIMEOUT_S = 10.0
# A task target without a queue goes to Celery's default queue name, where a user's
# plain `celery worker` listens. Not our task_default_queue: that is cronbeat.runs, and
# our workers would receive a task they do not know.
DEFAULT_TASK_QUEUE = "celery"
# Ours, whatever the trigger's headers say (lower case; the API refuses them too):
# framing and hop-by-hop headers, which only the HTTP client may set; the ones we set on
# every request; and the Standard Webhooks headers a receiver verifies.
RESERVED_HEADERS = frozenset({
    "host", "content-length", "transfer-encoding", "connection", "keep-alive", "upgrade",
    "te", "trailer", "proxy-authorization", "proxy-connection",
    "content-type", "user-agent",
    "webhook-id", "webhook-timestamp", "webhook-signature",
})
# The name this set had before it was public.
_RESERVED_HEADERS = RESERVED_HEADERS
# RFC 9110 field-name token.
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
# http.client sends header values as latin-1; CR, LF and NUL would split or end the line.
_HEADER_VALUE_FORBIDDEN = re.compile(r"[\r\n\x00]")

SendTask = Callable[[str, Any, str], None]


class Verdict(enum.StrEnum):
    """How an attempt that reached the target ended; the values are attempt outcomes."""

    #: The target accepted it (2xx, or the task message is in the broker).
    SUCCEEDED = "succeeded"
    #: Worth another attempt: 5xx, 408, 429.
    TRANSIENT = "error"
    #: Retrying cannot help: other 4xx, a redirect we do not follow.
    PERMANENT = "failed"


@dataclasses.dataclass(frozen=True)
class DeliveryResult:
    """The target's answer to one attempt."""

    verdict: Verdict
    response_status: int | None = None
    response_excerpt: str | None = None
    error: str | None = None
    # The target's Retry-After, in seconds from the attempt's start, if it sent one.
    retry_after_s: float | None = None


def classify_status(status: int) -> Verdict:
    """Return what an HTTP status means for the attempt (redirects are not followed)."""
    if 200 <= status < 300:
        return Verdict.SUCCEEDED
    if status in (408, 429) or status >= 500:
        return Verdict.TRANSIENT
    return Verdict.PERMANENT


def encode_body(body: Mapping[str, Any]) -> str:
    """Return the JSON text sent (and signed) for ``body``, compact and UTF-8 friendly."""
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False)


def build_headers(
    custom: Mapping[str, Any] | None,
    *,
    invocation_id: str,
    body: str,
    signing_secret: str | None,
    now: dt.datetime,
) -> dict[str, str]:
    """Return the request headers: the trigger's own, ours, and the signature if any.

    The signature follows the Standard Webhooks spec: ``webhook-id`` is the invocation id
    (stable across attempts, so receivers can deduplicate), ``webhook-timestamp`` is
    ``now`` in Unix seconds.

    Raises:
        PermanentError: the signing secret is not a valid ``whsec_<base64>`` secret, or
            a header cannot be sent (the message names the header, never its value).
    """
    headers = dict(
        _checked_header(str(name), str(value))
        for name, value in (custom or {}).items()
        if str(name).lower() not in RESERVED_HEADERS
    )
    headers["Content-Type"] = "application/json"
    headers["User-Agent"] = USER_AGENT
    # sign() replaces the tzinfo with UTC instead of converting; a database session in
    # another zone hands us e.g. +01:00, which would sign the wrong instant.
    now_utc = now.astimezone(dt.UTC)
    # Sent signed or not: receivers deduplicate on webhook-id.
    headers["webhook-id"] = invocation_id
    headers["webhook-timestamp"] = str(int(now_utc.timestamp()))
    if signing_secret:
        try:
            signer = Webhook(signing_secret)
        except (binascii.Error, ValueError, EmptyWebhookSecretError):
            # The secret itself stays out of the message.
            raise PermanentError("the signing secret is not a valid whsec_ secret") from None
        headers["webhook-signature"] = signer.sign(invocation_id, now_utc, body)
    return headers


def _checked_header(name: str, value: str) -> tuple[str, str]:
    """Return one of the trigger's headers as sent: the value without surrounding spaces.

    Raises:
        PermanentError: the name is not a field name, or the value holds CR, LF, NUL or
            a character outside latin-1. Header values are often credentials, so the
            message names the header and never quotes its value.
    """
    if not _HEADER_NAME.fullmatch(name):
        raise PermanentError(f"webhook header name {name[:100]!r} is not a valid field name")
    if _HEADER_VALUE_FORBIDDEN.search(value):
        raise PermanentError(f"webhook header {name} contains CR, LF or NUL")
    try:
        value.encode("latin-1")
    except UnicodeEncodeError:
        raise PermanentError(
            f"webhook header {name} contains characters outside latin-1"
        ) from None
    # RFC 9110 5.5: leading and trailing whitespace is not part of a field value, and
    # requests refuses a value that starts with it.
    return name, value.strip(" \t")


def _read_excerpt(response: requests.Response, deadline: RequestDeadline) -> str:
    # Stop at the excerpt's size or the deadline, whichever first: a body trickling in a
    # byte per read-timeout must not hold the attempt past its lease. read1 returns what
    # has arrived rather than waiting to fill its size, so when the watchdog ends a read
    # blocked at the deadline, everything that arrived before is kept.
    data = b""
    try:
        while len(data) < _EXCERPT_BYTES and deadline.remaining_s() > 0:
            chunk = response.raw.read1(_EXCERPT_BYTES - len(data), decode_content=True)
            if not chunk:
                break
            data += chunk
    except (requests.RequestException, urllib3.exceptions.HTTPError, OSError):
        pass  # the status already decided the attempt; keep what arrived
    return data.decode(_codec(response.encoding), errors="replace")[:EXCERPT_CHARS]


def _codec(charset: str | None) -> str:
    """The receiver's charset if Python knows it, else UTF-8 (with replacement).

    A 2xx with ``charset=bogus`` (or ``utf8mb4``, ``binary``, ``none``) was delivered;
    reading its excerpt must not turn it into a failure.
    """
    if charset:
        try:
            return codecs.lookup(charset).name
        except (LookupError, ValueError):
            pass
    return "utf-8"


# What urllib3 puts before a connection error's words: the connection object's repr
# ("HTTPConnection(host='...', port=443): " or "<...HTTPConnection object at 0x...>: ").
_CONNECTION_REPR = re.compile(r"^\s*<?[\w.]+(?:\(host=[^)]*\)| object at 0x[0-9a-f]+>)\s*:\s*")
_ERRNO = re.compile(r"\[Errno -?\d+\]\s*")
_ESTABLISH = "Failed to establish a new connection: "


def _describe(exc: requests.RequestException) -> str:
    """The cause of a connection failure in words, for the tenant's last_error.

    urllib3 wraps the real cause in MaxRetryError, whose text repeats the URL path, which
    may hold a token (Slack-style hook URLs); the cause's own text starts with a
    connection object's repr (an internal class name, the host and port). Neither is
    shown: "connection failed: Connection refused".
    """
    inner = exc.args[0] if exc.args else exc
    cause = getattr(inner, "reason", None) or inner
    if isinstance(cause, urllib3.exceptions.ProtocolError) and len(cause.args) > 1:
        # ('Connection aborted.', RemoteDisconnected('Remote end closed ...'))
        cause = cause.args[1]
    text = _ERRNO.sub("", _CONNECTION_REPR.sub("", str(cause))).replace(_ESTABLISH, "")
    return text.strip() or "the connection broke"


def send_webhook(
    *,
    method: str,
    url: str,
    headers: Mapping[str, str],
    body: str,
    timeout_s: float,
    allow_private: bool,
    now: dt.datetime,
) -> DeliveryResult:
    """Send one webhook request; never follow a redirect.

    ``now`` is the attempt's start, the reference for an HTTP-date ``Retry-After``.

    Returns:
        The classified response, its status and the first characters of its body.

    Raises:
        TargetRefused: the URL is not http(s), or a host address is not allowed.
        TargetUnavailable: DNS, connecting, or waiting for the response failed.
        PermanentError: the request cannot be built (a malformed URL or header).
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise TargetRefused(f"the webhook URL must be http or https, not {parts.scheme!r}")
    try:
        port = parts.port
    except ValueError:
        # Out of range (":99999") or not a number. The URL stays out of the message: its
        # path may hold a token.
        raise PermanentError("the webhook URL has an invalid port") from None
    # One wall clock for the whole attempt, the name lookup included: see
    # app.delivery.webhook_transport for why requests' own timeouts do not bound it.
    with request_deadline(timeout_s) as deadline, http_session(allow_private) as session:
        if not allow_private:
            check_host(parts.hostname or "", port or (443 if parts.scheme == "https" else 80),
                       timeout_s=min(DNS_TIMEOUT_S, deadline.remaining_s()))
        try:
            response = session.request(
                method.upper(),
                url,
                data=body.encode("utf-8"),
                headers=dict(headers),
                timeout=(min(CONNECT_TIMEOUT_S, timeout_s), timeout_s),
                allow_redirects=False,
                stream=True,
            )
        except (requests.Timeout, requests.ConnectionError) as exc:
            if deadline.expired or isinstance(exc, requests.Timeout):
                # The cause's text adds nothing once the deadline cut it short.
                cause = "" if deadline.expired else f": {_describe(exc)}"
                raise TargetUnavailable(f"timed out after {timeout_s:g} s{cause}") from exc
            raise TargetUnavailable(f"connection failed: {_describe(exc)}") from exc
        except requests.exceptions.InvalidHeader as exc:
            # Its message quotes the header's value, often a credential.
            raise PermanentError("invalid webhook request: a header is not valid") from exc
        except (requests.exceptions.InvalidURL, requests.exceptions.InvalidSchema,
                requests.exceptions.MissingSchema) as exc:
            # Their messages quote the URL, whose path may hold a token.
            raise PermanentError(
                f"invalid webhook request: {type(exc).__name__}: the URL is not valid"
            ) from exc
        with response:
            status = response.status_code
            excerpt = _read_excerpt(response, deadline)
            verdict = classify_status(status)
            error = None
            if verdict is not Verdict.SUCCEEDED:
                error = f"HTTP {status}"
                if 300 <= status < 400:
                    error += " (redirects are not followed)"
            return DeliveryResult(
                verdict=verdict,
                response_status=status,
                response_excerpt=excerpt,
                error=error,
                retry_after_s=retry_after_s(response.headers.get("Retry-After"), now),
            )


def send_task_message(
    send_task: SendTask, *, name: str, queue: str | None, body: Mapping[str, Any]
) -> DeliveryResult:
    """Publish ``body`` as the single argument of Celery task ``name`` on ``queue``.

    Returns:
        SUCCEEDED once the broker has the message (what the task then does is the
        user's worker's business).

    Raises:
        TargetUnavailable: the broker is unreachable (``send_task`` raises it).
    """
    send_task(name, dict(body), queue or DEFAULT_TASK_QUEUE)
    return DeliveryResult(verdict=Verdict.SUCCEEDED)
