"""Which network addresses a webhook may be delivered to (the SSRF guard).

A multi-tenant sender must not let tenants reach the operator's own network: loopback,
private, link-local (cloud metadata at 169.254.169.254), multicast, reserved and
unspecified addresses are refused unless ``allow_private_targets`` is on. Every address a
host name resolves to is checked, because an attacker controls their DNS and may return a
public and a private address together. IPv6 addresses that embed an IPv4 address
(IPv4-mapped ``::ffff:a.b.c.d``, 6to4, Teredo, NAT64 ``64:ff9b::/96``) are judged by the
IPv4 address they lead to.

Resolving here and connecting later leaves a gap (DNS rebinding); :mod:`app.delivery.send`
closes it by checking the peer address of every socket it opens with :func:`refusal`.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import threading
from collections.abc import Callable, Sequence
from typing import Any

from app.errors import TargetRefused, TargetUnavailable

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[..., Sequence[tuple[Any, ...]]]

log = logging.getLogger(__name__)

#: What a tenant reads when a target is refused, whichever address and class it was.
REFUSED_MESSAGE = (
    "refused to deliver: the target resolves to a private, loopback, link-local or "
    "otherwise non-public address"
)

# A name lookup gives up after this (or the delivery's own deadline, if sooner).
DNS_TIMEOUT_S = 5.0

# Well-known NAT64 prefix (RFC 6052): a NAT64 gateway turns 64:ff9b::a.b.c.d into a.b.c.d.
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def refusal(address: IPAddress | str) -> str | None:
    """Return why a delivery to ``address`` is refused, or None when it is allowed.

    Raises:
        ValueError: ``address`` is not an IP address.
    """
    ip = ipaddress.ip_address(address) if isinstance(address, str) else address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.scope_id is not None:
            # fe80::1%eth0: a zone only exists for link-local and site-scoped addresses.
            return "link-local"
        embedded = _embedded_ipv4(ip)
        if embedded is not None:
            reason = refusal(embedded)
            return None if reason is None else f"{reason} (embedded in {ip})"
    # Order matters: 127.0.0.1 is also "private" for Python, but "loopback" is the
    # clearer word in an error message.
    for reason, flag in (
        ("unspecified", ip.is_unspecified),
        ("loopback", ip.is_loopback),
        ("link-local", ip.is_link_local),
        ("multicast", ip.is_multicast),
        ("reserved", ip.is_reserved),
        ("private", ip.is_private),
        # fec0::/10, deprecated (RFC 3879) but still routed inside some networks.
        ("site-local", isinstance(ip, ipaddress.IPv6Address) and ip.is_site_local),
    ):
        if flag:
            return reason
    if not ip.is_global:
        # Shared (100.64.0.0/10), benchmarking, documentation and other special ranges.
        return "not globally routable"
    return None


def check_address(address: IPAddress | str) -> None:
    """Refuse a delivery to one address.

    Raises:
        TargetRefused: the address is in a refused class. The message is the same for
            every address and class: the tenant sees it, and the addresses a name
            resolves to would map the operator's internal network (``db.internal`` is
            10.x.y.z). The address and its class go to the debug log.
    """
    reason = refusal(address)
    if reason is not None:
        log.debug("netguard: address refused",
                  extra={"action": "netguard.refused", "address": str(address),
                         "reason": reason})
        raise TargetRefused(REFUSED_MESSAGE)


def resolve_within(
    host: str, port: int, timeout_s: float, *, resolve: Resolver = socket.getaddrinfo,
    **options: Any,
) -> Sequence[tuple[Any, ...]]:
    """Return ``resolve(host, port, **options)``, waiting at most ``timeout_s`` for it.

    getaddrinfo takes no timeout, and a mute DNS server holds it for the resolver's
    retries (tens of seconds with several nameservers). The lookup runs in a daemon
    thread, abandoned if it does not answer in time: it ends on its own later, and
    what it finds is dropped.

    Raises:
        TargetUnavailable: the name does not resolve, or not within ``timeout_s``.
    """
    answer: list[Sequence[tuple[Any, ...]]] = []
    failure: list[BaseException] = []
    done = threading.Event()

    def lookup() -> None:
        try:
            answer.append(resolve(host, port, **options))
        except BaseException as exc:  # handed to the waiting thread
            failure.append(exc)
        finally:
            done.set()

    threading.Thread(target=lookup, name="dns-lookup", daemon=True).start()
    if not done.wait(max(timeout_s, 0.0)):
        raise TargetUnavailable(f"cannot resolve {host}: no answer within {timeout_s:g} s")
    if failure:
        exc = failure[0]
        if isinstance(exc, socket.gaierror | UnicodeError):
            raise TargetUnavailable(f"cannot resolve {host}: {exc}") from exc
        raise exc
    return answer[0]


def check_host(
    host: str, port: int, *, resolve: Resolver = socket.getaddrinfo,
    timeout_s: float = DNS_TIMEOUT_S,
) -> list[str]:
    """Resolve ``host`` and refuse it unless every address it resolves to is allowed.

    Returns:
        The addresses ``host`` resolved to.

    Raises:
        TargetRefused: one of the addresses is refused, or the host is empty.
        TargetUnavailable: the name does not resolve within ``timeout_s`` (DNS may
            recover).
    """
    if not host:
        raise TargetRefused("the webhook URL has no host")
    infos = resolve_within(host, port, timeout_s, resolve=resolve, type=socket.SOCK_STREAM)
    addresses = sorted({str(info[4][0]) for info in infos})
    if not addresses:
        raise TargetUnavailable(f"{host} resolves to no address")
    for address in addresses:
        check_address(address)
    return addresses
