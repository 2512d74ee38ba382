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
import socket
import time
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

from standardwebhooks.webhooks import EmptyWebhookSecretError, Webhook

from app.delivery.netguard import (
    DNS_TIMEOUT_S,
    REFUSED_MESSAGE,
    Resolver,
    check_address,
    check_host,
    resolve_within,
)
from app.delivery.retry_after import retry_after_s
from app.delivery.webhook_transport import Pin, TransportError, is_ip_literal, perform
from app.errors import PermanentError, TargetRefused, TargetUnavailable

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

@dataclasses.dataclass(frozen=True)
class TaskReport:
    """How a user's task ended, as its worker reported it (cronbeat.celery)."""

    ok: bool
    error: str | None
    duration_s: float | None


#: Publishes a Celery task message: (name, args, kwargs, queue, headers, wait_s). With
#: ``wait_s``, it asks the task for its outcome and returns the report that came within
#: that many seconds (None: none came); without, it returns None once published.
SendTask = Callable[[str, list[Any], dict[str, Any], str, dict[str, Any], float | None],
                    TaskReport | None]


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
    # HTTP clients refuse a value that starts with it.
    return name, value.strip(" \t")


def _codec(content_type: str | None) -> str:
    """The receiver's charset if Python knows it, else UTF-8 (with replacement).

    A 2xx with ``charset=bogus`` (or ``utf8mb4``, ``binary``, ``none``) was delivered;
    reading its excerpt must not turn it into a failure.
    """
    charset = _charset(content_type)
    if charset:
        try:
            return codecs.lookup(charset).name
        except (LookupError, ValueError):
            pass
    return "utf-8"


def _charset(content_type: str | None) -> str | None:
    for part in (content_type or "").split(";")[1:]:
        name, _, value = part.partition("=")
        if name.strip().lower() == "charset":
            return value.strip().strip('"') or None
    return None


def _pin(host: str, port: int, timeout_s: float, allow_private: bool,
         resolve: Resolver) -> Pin | None:
    """Look ``host`` up once, check every address, and pin the connection to them.

    The transport connects only to the addresses returned here (and checks each socket's
    address again before opening it), so a second lookup that answers differently (DNS
    rebinding) is never made.
    """
    if is_ip_literal(host):
        if not allow_private:
            check_address(host)
        return None
    if allow_private:
        infos = resolve_within(host, port, timeout_s, resolve=resolve, type=socket.SOCK_STREAM)
        addresses = sorted({str(info[4][0]) for info in infos})
        if not addresses:
            raise TargetUnavailable(f"{host} resolves to no address")
    else:
        addresses = check_host(host, port, resolve=resolve, timeout_s=timeout_s)
    return Pin(host=host, port=port, addresses=addresses)


#: send_webhook's shape, for callers that take another (a test's receiver).
SendWebhook = Callable[..., DeliveryResult]


def send_webhook(
    *,
    method: str,
    url: str,
    headers: Mapping[str, str],
    body: str,
    timeout_s: float,
    allow_private: bool,
    now: dt.datetime,
    resolve: Resolver = socket.getaddrinfo,
) -> DeliveryResult:
    """Send one webhook request; never follow a redirect.

    ``now`` is the attempt's start, the reference for an HTTP-date ``Retry-After``;
    ``resolve`` looks names up (``getaddrinfo``; tests answer for a name of their own).

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
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        # Out of range (":99999") or not a number. The URL stays out of the message: its
        # path may hold a token.
        raise PermanentError("the webhook URL has an invalid port") from None
    host = parts.hostname or ""
    if not host:
        raise TargetRefused("the webhook URL has no host")
    # One wall clock for the whole attempt, the name lookup included.
    started = time.monotonic()
    pin = _pin(host, port, min(DNS_TIMEOUT_S, timeout_s), allow_private, resolve)
    remaining_s = timeout_s - (time.monotonic() - started)
    if remaining_s <= 0:
        raise TargetUnavailable(f"timed out after {timeout_s:g} s")
    try:
        response = perform(
            method.upper(), url, headers, body.encode("utf-8"),
            timeout_s=remaining_s, connect_timeout_s=min(CONNECT_TIMEOUT_S, remaining_s),
            pin=pin, guarded=not allow_private, excerpt_bytes=_EXCERPT_BYTES,
        )
    except TransportError as exc:
        if exc.kind == "refused":
            raise TargetRefused(REFUSED_MESSAGE) from None
        if exc.kind == "timeout":
            raise TargetUnavailable(f"timed out after {timeout_s:g} s") from None
        if exc.kind == "url":
            # The URL stays out of the message: its path may hold a token.
            raise PermanentError("invalid webhook request: the URL is not valid") from None
        if exc.kind == "tls":
            raise TargetUnavailable(f"TLS failed: {exc.detail}") from None
        if exc.kind == "protocol":
            raise TargetUnavailable(f"bad answer: {exc.detail}") from None
        raise TargetUnavailable(f"connection failed: {exc.detail}") from None
    status = response.status
    verdict = classify_status(status)
    error = None
    if verdict is not Verdict.SUCCEEDED:
        error = f"HTTP {status}"
        if 300 <= status < 400:
            error += " (redirects are not followed)"
    excerpt = response.body.decode(_codec(response.content_type), errors="replace")
    # PostgreSQL text holds no NUL: a receiver's NUL becomes the replacement character,
    # as undecodable bytes do, or recording the outcome would fail.
    excerpt = excerpt.replace("\x00", "\ufffd")
    return DeliveryResult(
        verdict=verdict,
        response_status=status,
        response_excerpt=excerpt[:EXCERPT_CHARS],
        error=error,
        retry_after_s=retry_after_s(response.retry_after, now),
    )


def send_task_message(
    send_task: SendTask, *, name: str, queue: str | None, args: list[Any],
    kwargs: dict[str, Any], headers: dict[str, Any], outcome_within_s: float | None = None,
) -> DeliveryResult:
    """Publish Celery task ``name`` on ``queue`` with ``args``, ``kwargs`` and ``headers``.

    Returns:
        Without ``outcome_within_s``: SUCCEEDED once the broker has the message (what the
        task then does is the user's worker's business). With it: the task's own outcome,
        as its worker reported it within that many seconds (cronbeat.celery): SUCCEEDED
        with its duration, or TRANSIENT (retried with backoff) with its exception, or
        with "did not report" when no report came.

    Raises:
        TargetUnavailable: the broker is unreachable (``send_task`` raises it).
    """
    report = send_task(name, args, kwargs, queue or DEFAULT_TASK_QUEUE, headers,
                       outcome_within_s)
    if outcome_within_s is None:
        return DeliveryResult(verdict=Verdict.SUCCEEDED)
    if report is None:
        return DeliveryResult(
            verdict=Verdict.TRANSIENT,
            error=f"the task did not report its end within timeout_s ({outcome_within_s:g} s)")
    duration = ("" if report.duration_s is None
                else f" in {report.duration_s:.3f} s")
    if report.ok:
        return DeliveryResult(verdict=Verdict.SUCCEEDED,
                              response_excerpt=f"the task succeeded{duration}")
    return DeliveryResult(verdict=Verdict.TRANSIENT,
                          error=report.error or "the task failed",
                          response_excerpt=f"the task failed{duration}")
