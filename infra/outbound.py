"""Where outbound HTTP calls to a tenant-given address may go.

A synthetic dataset's `teacher.base_url` is chosen by the tenant and called from our workers, so
without a guard any tenant could reach (and read) services inside our network: loopback, private
ranges, the cloud metadata address. The rule: such an address must be *public*, unless the operator
allows it with `EDGETUNE_OUTBOUND_ALLOW` (a comma list of CIDRs, IPs and host names).

The check that matters runs at connect time, on the address actually connected to: the guarded
transport resolves the host once, refuses the connection if any resolved address is not allowed,
and connects to exactly that checked IP (TLS still verifies the certificate for the host name), so
a name that resolves to a public address when checked and to 127.0.0.1 a moment later (DNS
rebinding) gains nothing. The request-time check (`check_url`) only gives an early, clear 400 for
literal addresses. Redirects are not followed by the teacher client at all.

The operator's own teacher (EDGETUNE_TEACHER_BASE_URL, or the bundled llama.cpp server on
127.0.0.1) is not tenant-given and is not checked.
"""

from __future__ import annotations

import ipaddress
import socket
import typing
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpcore
import httpx

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str, int], list[str]]

# Never a tenant's teacher: the special-purpose ranges (RFC 6890 and successors), listed here
# rather than left to `ipaddress.is_global`, whose lists differ between Python versions. The cloud
# metadata addresses fall in them: 169.254.169.254 (AWS, GCP, Azure; link-local), 100.100.100.200
# (Alibaba; CGNAT), 192.0.0.192 (Oracle; IETF protocol assignments), fd00:ec2::254 (AWS; ULA).
_BLOCKED = tuple(
    ipaddress.ip_network(n)
    for n in (
        "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12",
        "192.0.0.0/24", "192.0.2.0/24", "192.88.99.0/24", "192.168.0.0/16", "198.18.0.0/15",
        "198.51.100.0/24", "203.0.113.0/24", "224.0.0.0/4", "240.0.0.0/4",
        "::/128", "::1/128", "100::/64", "2001::/23", "2001:db8::/32", "fc00::/7", "fe80::/10",
        "fec0::/10", "ff00::/8",
    )
)  # fmt: skip
# IPv6 forms that carry an IPv4 address (mapped, NAT64, 6to4, Teredo) are judged by that address.
_NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))

REFUSED = (
    "is not allowed: outbound calls go only to public addresses, and this one is (or resolves to) "
    "a private, loopback, link-local or other internal address"
)


class OutboundRefused(Exception):
    """A tenant-given address points where the operator does not allow. The message is safe to
    show the tenant: it never names the address the host resolved to."""


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]  # the client's address
    if any(ip in net for net in _NAT64):
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def is_public(ip: IPAddress) -> bool:
    """Whether `ip` is an ordinary public unicast address (what a tenant's teacher may be at)."""
    if isinstance(ip, ipaddress.IPv6Address) and (v4 := _embedded_ipv4(ip)) is not None:
        return is_public(v4)
    if any(ip in net for net in _BLOCKED if net.version == ip.version):
        return False
    return ip.is_global and not (ip.is_multicast or ip.is_reserved or ip.is_unspecified)


@dataclass(frozen=True)
class OutboundPolicy:
    allow_networks: tuple[IPNetwork, ...] = ()
    allow_hosts: frozenset[str] = frozenset()

    @classmethod
    def parse(cls, value: str) -> OutboundPolicy:
        """From EDGETUNE_OUTBOUND_ALLOW: "127.0.0.1, 10.0.0.0/8, vllm.internal"."""
        networks: list[IPNetwork] = []
        hosts: set[str] = set()
        for item in (part.strip() for part in value.split(",")):
            if not item:
                continue
            try:
                networks.append(ipaddress.ip_network(item, strict=False))
            except ValueError:
                hosts.add(item.lower().rstrip("."))
        return cls(tuple(networks), frozenset(hosts))

    def host_allowed(self, host: str) -> bool:
        return host.lower().rstrip(".") in self.allow_hosts

    def ip_allowed(self, ip: IPAddress) -> bool:
        return is_public(ip) or any(ip in net for net in self.allow_networks if net.version == ip.version)


def current_policy() -> OutboundPolicy:
    from infra.settings import get_settings

    return OutboundPolicy.parse(get_settings().outbound_allow)


def _literal_ip(host: str) -> IPAddress | None:
    """The address a host string names by itself, including the legacy IPv4 spellings
    (`2130706433`, `0x7f.1`, `127.1`) that resolvers accept."""
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        pass
    try:
        return ipaddress.IPv4Address(socket.inet_aton(host))
    except (OSError, ValueError):  # ValueError: a NUL in the host
        return None


def check_url(url: str, policy: OutboundPolicy, what: str = "the address") -> None:
    """Request-time check of a tenant-given URL: an http(s) scheme and a host that is not a literal
    internal address (or `localhost`). Host names are checked when connecting (`GuardedBackend`)."""
    if any(ord(c) <= 32 or ord(c) == 127 for c in url):  # urlsplit drops some (tabs, newlines)
        raise OutboundRefused(f"{what} is not a valid URL: no spaces or control characters")
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        parts.port  # noqa: B018  # a port that is not a number from 0 to 65535 raises here
    except ValueError:  # an unclosed or invalid [IPv6] host, a bad port, characters NFKC turns into '/'
        raise OutboundRefused(f"{what} is not a valid URL") from None
    if parts.scheme.lower() not in ("http", "https"):
        raise OutboundRefused(f"{what} must be an http:// or https:// URL")
    if not host:
        raise OutboundRefused(f"{what} has no host")
    if policy.host_allowed(host):
        return
    ip = _literal_ip(host)
    local_name = host.lower().rstrip(".") == "localhost" or host.lower().rstrip(".").endswith(".localhost")
    if local_name or (ip is not None and not policy.ip_allowed(ip)):
        raise OutboundRefused(f"{what} {REFUSED}")


def _resolve(host: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def resolve_allowed(
    host: str, port: int, policy: OutboundPolicy, resolver: Resolver | None = None
) -> list[str]:
    """The addresses to connect to for `host`, each checked; OutboundRefused if any is not allowed
    (a name that resolves to both a public and an internal address is refused outright)."""
    try:
        addresses = (resolver or _resolve)(host, port)
    except OSError as exc:
        raise httpcore.ConnectError(f"could not resolve the host ({exc.strerror or 'DNS error'})") from None
    if not addresses:
        raise httpcore.ConnectError("could not resolve the host")
    if policy.host_allowed(host):
        return addresses
    for address in addresses:
        if not policy.ip_allowed(ipaddress.ip_address(address.split("%", 1)[0])):
            raise OutboundRefused(f"the address {REFUSED}")
    return addresses


class GuardedBackend(httpcore.NetworkBackend):
    """httpcore's network backend with the outbound check between resolving and connecting."""

    def __init__(
        self,
        policy: OutboundPolicy,
        resolver: Resolver | None = None,
        inner: httpcore.NetworkBackend | None = None,
    ) -> None:
        self.policy, self.resolver = policy, resolver
        self.inner = inner or httpcore.SyncBackend()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[typing.Any] | None = None,
    ) -> httpcore.NetworkStream:
        addresses = resolve_allowed(host, port, self.policy, self.resolver)
        error: Exception | None = None
        for address in addresses:  # connect to the checked addresses only: no second lookup
            try:
                return self.inner.connect_tcp(address, port, timeout, local_address, socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                error = exc
        assert error is not None
        raise error

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[typing.Any] | None = None
    ) -> httpcore.NetworkStream:
        raise OutboundRefused("unix sockets are not an outbound address")

    def sleep(self, seconds: float) -> None:
        self.inner.sleep(seconds)


class GuardedTransport(httpx.HTTPTransport):
    """httpx's own transport (exception mapping, streaming) over a pool whose connections go
    through `GuardedBackend`. httpx does not take a network backend itself (encode/httpx#3749 is
    open), so the pool is rebuilt with one; it is not given proxies: a proxy would connect instead."""

    def __init__(
        self, policy: OutboundPolicy, *, limits: httpx.Limits | None = None, resolver: Resolver | None = None
    ) -> None:
        limits = limits or httpx.Limits()
        super().__init__(limits=limits)
        self._pool = httpcore.ConnectionPool(
            ssl_context=httpx.create_ssl_context(),
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=GuardedBackend(policy, resolver),
        )
