"""Building a webhook request: the reserved headers, the trigger's headers, the URL."""

from __future__ import annotations

import datetime as dt

import pytest

from app.delivery import send as delivery
from app.delivery.send import RESERVED_HEADERS, build_headers, send_webhook
from app.errors import PermanentError

NOW = dt.datetime(2026, 3, 7, 5, 0, 0, tzinfo=dt.UTC)


def headers(custom: dict[str, str]) -> dict[str, str]:
    return build_headers(custom, invocation_id="inv-1", body="{}", signing_secret=None, now=NOW)


def test_the_reserved_headers_are_framing_hop_by_hop_ours_and_the_signature() -> None:
    assert frozenset({
        "host", "content-length", "transfer-encoding", "connection", "keep-alive", "upgrade",
        "te", "trailer", "proxy-authorization", "proxy-connection",
        "content-type", "user-agent",
        "webhook-id", "webhook-timestamp", "webhook-signature",
    }) == RESERVED_HEADERS
    assert all(name == name.lower() for name in RESERVED_HEADERS)


def test_the_old_private_name_still_names_the_same_set() -> None:
    assert delivery._RESERVED_HEADERS is RESERVED_HEADERS


@pytest.mark.parametrize("name", sorted(RESERVED_HEADERS))
def test_a_reserved_header_from_the_trigger_is_never_sent(name: str) -> None:
    sent = headers({name.upper(): "x", name.title(): "y", "X-Kept": "1"})
    assert sent == {
        "X-Kept": "1",
        "Content-Type": "application/json",
        "User-Agent": "Cronbeat/0.1",
        "webhook-id": "inv-1",
        "webhook-timestamp": str(int(NOW.timestamp())),
    }


def test_surrounding_whitespace_is_not_part_of_a_header_value() -> None:
    assert headers({"X-Token": " lead\t"})["X-Token"] == "lead"


@pytest.mark.parametrize(
    ("custom", "error"),
    [
        ({"X-Token": "€uro-s3cret"}, "webhook header X-Token contains characters outside latin-1"),
        ({"X-Token": "s3cret\r\nX-Evil: 1"}, "webhook header X-Token contains CR, LF or NUL"),
        ({"X-Token": "s3cret\x00"}, "webhook header X-Token contains CR, LF or NUL"),
        ({"X Token": "s3cret"}, "webhook header name 'X Token' is not a valid field name"),
        ({"X-€": "s3cret"}, "webhook header name 'X-€' is not a valid field name"),
    ],
)
def test_a_header_that_cannot_be_sent_is_permanent_and_its_value_stays_out(
    custom: dict[str, str], error: str
) -> None:
    with pytest.raises(PermanentError) as caught:
        headers(custom)
    assert caught.value.message == error
    assert "s3cret" not in caught.value.message


def test_a_reserved_header_with_a_value_that_cannot_be_sent_is_just_dropped() -> None:
    assert "Host" not in headers({"Host": "€"})


@pytest.mark.parametrize("allow_private", [False, True])
@pytest.mark.parametrize(
    "url",
    ["http://h.example:99999/hook/t0ken", "https://h.example:-1/t0ken", "http://h.example:x/"],
)
def test_a_url_with_an_invalid_port_is_permanent_and_not_quoted(
    url: str, allow_private: bool
) -> None:
    with pytest.raises(PermanentError) as caught:
        send_webhook(method="POST", url=url, headers={}, body="{}", timeout_s=1.0,
                     allow_private=allow_private, now=NOW)
    assert caught.value.message == "the webhook URL has an invalid port"
