"""Keeps web fetches off private networks: only global addresses on ports 80 and 443 by default.

A feed is untrusted input, so a URL in it (or a redirect from it) must not make the worker call a
service on loopback, the LAN or the cloud metadata address. The check runs where the socket is
opened: `GuardedBackend.connect_tcp` resolves the host once, checks every address it got and
connects to a checked address, so a second DNS answer (rebinding) never reaches a socket. TLS
still verifies and sends SNI for the URL's host name, because httpcore takes those from the
request's origin, not from the address connected to. Hosts listed in
`fetch.allowed_private_hosts` ("host" or "host:port") are exempt from both rules.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable

import httpcore

ALLOW_HINT = "allow it with IMGSEARCH_FETCH__ALLOWED_PRIVATE_HOSTS"
PUBLIC_PORTS = frozenset({80, 443})
# Globally routed on paper, but they translate to an embedded IPv4 address we cannot see.
_NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))
_SHARED = ipaddress.ip_network("100.64.0.0/10")

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


class Refused(Exception):
    """A fetch the policy does not allow; the message is the reason a user reads."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _normal_host(host: str) -> str:
    return host.strip().strip("[]").rstrip(".").lower()


def parse_allowed(entries: Iterable[str]) -> frozenset[tuple[str, int | None]]:
    """("host", port or None) pairs from "host", "host:port", "[v6]:port" or a bare IPv6 entry."""
    allowed: set[tuple[str, int | None]] = set()
    for raw in entries:
        entry = raw.strip()
        host, port = entry, None
        if entry.startswith("["):
            host, _, rest = entry[1:].partition("]")
            if rest.startswith(":") and rest[1:].isdigit():
                port = int(rest[1:])
        elif entry.count(":") == 1:
            name, _, digits = entry.partition(":")
            if digits.isdigit():
                host, port = name, int(digits)
        if _normal_host(host):
            allowed.add((_normal_host(host), port))
    return frozenset(allowed)


def address_problem(address: Address) -> str | None:
    """Why this address is off limits ("a loopback address"), or None for a global one."""
    if isinstance(address, ipaddress.IPv6Address):
        mapped = address.ipv4_mapped or address.sixtofour
        if mapped is not None:
            inner = address_problem(mapped)
            return f"{inner} (inside IPv6 {address})" if inner else None
        if any(address in net for net in _NAT64):
            return "a NAT64 address"
    for test, label in (
        (address.is_unspecified, "an unspecified address"),
        (address.is_loopback, "a loopback address"),
        (address.is_link_local, "a link-local address"),
        (address.is_multicast, "a multicast address"),
        (address in _SHARED, "a shared (carrier-grade NAT) address"),
        (address.is_private, "a private address"),
        (address.is_reserved, "a reserved address"),
        (not address.is_global, "a non-global address"),
    ):
        if test:
            return label
    return None


def literal_address(host: str) -> Address | None:
    """The address a numeric host spells, in any form the C resolver accepts (2130706433,
    0177.0.0.1, 0x7f.1, ::1), or None for a name."""
    host = _normal_host(host)
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    try:
        return ipaddress.IPv4Address(socket.inet_aton(host))
    except (OSError, UnicodeError, ValueError):
        return None


class Policy:
    """The rules for one downloader: which host:port pairs may reach which addresses."""

    def __init__(self, allowed_private_hosts: Iterable[str]) -> None:
        self.allowed = parse_allowed(allowed_private_hosts)

    def is_allowed(self, host: str, port: int) -> bool:
        """True when the user listed this host (any port) or this exact host:port."""
        name = _normal_host(host)
        return (name, None) in self.allowed or (name, port) in self.allowed

    def precheck(self, host: str, port: int) -> None:
        """Refuse what can be told without DNS: a port other than 80/443, a private literal."""
        if self.is_allowed(host, port):
            return
        if port not in PUBLIC_PORTS:
            raise Refused(f"refused: port {port} of {host} is not 80 or 443 ({ALLOW_HINT})")
        address = literal_address(host)
        if address is not None:
            self._check(host, address)

    def resolve(self, host: str, port: int) -> list[str]:
        """The addresses to connect to, every one checked; refuses if any of them is private."""
        self.precheck(host, port)
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (socket.gaierror, UnicodeError) as exc:
            raise httpcore.ConnectError(f"cannot resolve {host}: {exc}") from exc
        addresses: list[str] = []
        for info in infos:
            text = str(info[4][0]).split("%", 1)[0]  # drop an IPv6 zone id
            if text not in addresses:
                addresses.append(text)
        if not self.is_allowed(host, port):
            for text in addresses:
                self._check(host, ipaddress.ip_address(text))
        return addresses

    @staticmethod
    def _check(host: str, address: Address) -> None:
        problem = address_problem(address)
        if problem is None:
            return
        if _normal_host(host) == str(address):
            raise Refused(f"refused: {address} is {problem} ({ALLOW_HINT})")
        raise Refused(f"refused: {host} resolves to {address}, {problem} ({ALLOW_HINT})")


class GuardedBackend(httpcore.SyncBackend):
    """httpcore's socket backend, connecting only to addresses the policy has just checked."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        """Resolve once, check every address, then connect to the checked addresses in turn."""
        last: httpcore.ConnectError | httpcore.ConnectTimeout | None = None
        for address in self.policy.resolve(host, port):
            try:
                return super().connect_tcp(address, port, timeout, local_address, socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                last = exc
        if last is None:
            raise httpcore.ConnectError(f"no address for {host}")
        raise last
