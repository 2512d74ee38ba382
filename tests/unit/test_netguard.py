"""The SSRF guard refuses every non-public address class, in IPv4 and IPv6 spellings."""

from __future__ import annotations

import re
import socket
import threading
import time

import pytest

from app.delivery.netguard import (
    REFUSED_MESSAGE,
    check_address,
    check_host,
    refusal,
    resolve_within,
)
from app.errors import TargetRefused, TargetUnavailable


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        # IPv4
        ("0.0.0.0", "unspecified"),
        ("127.0.0.1", "loopback"),
        ("127.255.255.254", "loopback"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("172.31.255.255", "private"),
        ("192.168.0.1", "private"),
        ("169.254.169.254", "link-local"),
        ("224.0.0.1", "multicast"),
        ("239.255.255.250", "multicast"),
        ("240.0.0.1", "reserved"),
        ("255.255.255.255", "reserved"),
        ("100.64.0.1", "not globally routable"),
        ("192.0.2.10", "private"),
        # IPv6
        ("::", "unspecified"),
        ("::1", "loopback"),
        ("fe80::1", "link-local"),
        ("fe80::1%2", "link-local"),
        ("fc00::1", "private"),
        ("fd12:3456::1", "private"),
        ("ff02::1", "multicast"),
        ("fec0::1", "site-local"),
        ("::7f00:1", "reserved"),
        ("2001:db8::1", "private"),
        # IPv6 that leads to an IPv4 address is judged by that address.
        ("::ffff:127.0.0.1", "loopback (embedded in ::ffff:7f00:1)"),
        ("::ffff:10.0.0.1", "private (embedded in ::ffff:a00:1)"),
        ("::ffff:169.254.169.254", "link-local (embedded in ::ffff:a9fe:a9fe)"),
        ("2002:7f00:1::1", "loopback (embedded in 2002:7f00:1::1)"),
        ("64:ff9b::a00:1", "private (embedded in 64:ff9b::a00:1)"),
    ],
)
def test_a_non_public_address_is_refused_with_its_class(address: str, reason: str) -> None:
    assert refusal(address) == reason
    with pytest.raises(TargetRefused) as caught:
        check_address(address)
    assert caught.value.message == REFUSED_MESSAGE


def test_the_refusal_message_names_no_address_and_no_class() -> None:
    # The tenant reads it; the addresses a name resolves to map the operator's network.
    assert REFUSED_MESSAGE == (
        "refused to deliver: the target resolves to a private, loopback, link-local or "
        "otherwise non-public address"
    )


def test_the_refused_address_and_class_go_to_the_debug_log(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level("DEBUG", logger="app.delivery.netguard"), pytest.raises(TargetRefused):
        check_address("10.1.2.3")
    [record] = caplog.records
    assert record.levelname == "DEBUG"
    assert (record.action, record.address, record.reason) == (
        "netguard.refused", "10.1.2.3", "private"
    )


@pytest.mark.parametrize(
    "address",
    ["8.8.8.8", "1.1.1.1", "93.184.216.34", "2606:4700:4700::1111", "::ffff:8.8.8.8",
     "64:ff9b::808:808", "2002:808:808::1"],
)
def test_a_public_address_is_allowed(address: str) -> None:
    assert refusal(address) is None
    check_address(address)


def test_refusal_rejects_a_non_address_as_a_value_error() -> None:
    with pytest.raises(ValueError):
        refusal("example.com")


def resolver(*addresses: str):
    """A fake getaddrinfo answering ``addresses`` for any host."""

    def resolve(host: str, port: int, **_: object):
        return [
            (socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_STREAM, 6, "",
             (a, port))
            for a in addresses
        ]

    return resolve


def test_a_host_resolving_to_public_addresses_is_allowed() -> None:
    addresses = check_host("hooks.example", 443, resolve=resolver("93.184.216.34", "8.8.8.8"))
    assert addresses == ["8.8.8.8", "93.184.216.34"]


def test_a_host_is_refused_when_any_of_its_addresses_is_private() -> None:
    # An attacker's DNS answers one public and one internal address together.
    with pytest.raises(TargetRefused) as caught:
        check_host("db.internal", 443, resolve=resolver("93.184.216.34", "10.0.0.5"))
    assert caught.value.message == REFUSED_MESSAGE
    assert "10.0.0.5" not in caught.value.message


def test_a_host_resolving_to_a_mapped_loopback_is_refused() -> None:
    with pytest.raises(TargetRefused, match=re.escape(REFUSED_MESSAGE)):
        check_host("evil.example", 80, resolve=resolver("::ffff:127.0.0.1"))


def test_localhost_is_refused_through_the_real_resolver() -> None:
    with pytest.raises(TargetRefused, match=re.escape(REFUSED_MESSAGE)):
        check_host("localhost", 80)


def test_a_numeric_shorthand_for_loopback_is_refused_through_the_real_resolver() -> None:
    # "127.1" and "2130706433" are 127.0.0.1 to getaddrinfo; only resolving catches them.
    with pytest.raises(TargetRefused, match=re.escape(REFUSED_MESSAGE)):
        check_host("2130706433", 80)


def test_an_unresolvable_name_is_transient() -> None:
    def fail(host: str, port: int, **_: object):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    with pytest.raises(TargetUnavailable, match=re.escape("cannot resolve nowhere.invalid")):
        check_host("nowhere.invalid", 443, resolve=fail)


def test_an_empty_host_is_refused() -> None:
    with pytest.raises(TargetRefused, match="no host"):
        check_host("", 443, resolve=resolver("8.8.8.8"))


def test_a_lookup_that_does_not_answer_in_time_is_transient_and_returns_promptly() -> None:
    # getaddrinfo has no timeout; a mute nameserver held it for the resolver's retries.
    release = threading.Event()

    def mute(host: str, port: int, **_: object):
        release.wait(10)
        return []

    started = time.monotonic()
    try:
        with pytest.raises(TargetUnavailable) as caught:
            check_host("slow.example", 443, resolve=mute, timeout_s=0.2)
    finally:
        release.set()
    assert time.monotonic() - started < 1.0
    assert caught.value.message == "cannot resolve slow.example: no answer within 0.2 s"


def test_the_lookup_s_own_errors_reach_the_caller() -> None:
    def broken(host: str, port: int, **_: object):
        raise RuntimeError("resolver bug")

    with pytest.raises(RuntimeError, match="resolver bug"):
        resolve_within("h.example", 80, 1.0, resolve=broken)
