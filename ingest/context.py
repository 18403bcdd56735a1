"""The end user's IP address, from ContextData and forwarding headers.

``ContextData.IpAddress`` is what the application server says the user's
address is. When the server forwarded the address of a proxy instead (the most
common cause of false risk: every user seems to come from one IP), the
forwarding headers may name the real client. They are trusted only that far:

* Headers are looked at only when ``IpAddress`` itself lies in a *trusted proxy
  network* (configurable; default: loopback, private, CGNAT, link-local and
  unique-local ranges, which can never be an end user's public address).
* Only the one header the trusted proxies write is read (``ProxyPolicy.header``:
  ``X-Forwarded-For`` by default, or ``Forwarded`` (RFC 7239) or ``X-Real-IP``).
  The others are ignored, whatever they say: a proxy passes a header it does not
  write through untouched, so its value is whatever the end user typed.
  Its chain is walked from the right (the hop nearest to us), skipping trusted
  proxies; the first untrusted address is the client.
* A malformed entry met on that walk stops it, and ``IpAddress`` is kept: a
  malformed or untrusted header never overrides ``IpAddress``.

Addresses are normalised: IPv6 compressed and lower-case, IPv4-mapped IPv6
(``::ffff:192.0.2.1``) given as IPv4, ports and brackets removed.
"""

from __future__ import annotations

import ipaddress
import os
import re
import socket
from dataclasses import dataclass, field
from functools import lru_cache

from ingest.errors import ConfigurationError

DEFAULT_TRUSTED_PROXIES = (
    "127.0.0.0/8",
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "100.64.0.0/10",
    "169.254.0.0/16",
    "::1/128",
    "fc00::/7",
    "fe80::/10",
)
TRUSTED_PROXIES_ENV = "RISKGATE_TRUSTED_PROXIES"
#: the forwarding headers a proxy may write, as they are usually spelled; the trusted proxies write one of them
CLIENT_IP_HEADERS = ("X-Forwarded-For", "Forwarded", "X-Real-IP")
DEFAULT_CLIENT_IP_HEADER = "X-Forwarded-For"
CLIENT_IP_HEADER_ENV = "RISKGATE_CLIENT_IP_HEADER"

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


_MAPPED_NET = ipaddress.ip_network("::ffff:0:0/96")


def unmapped(net: ipaddress.IPv4Network | ipaddress.IPv6Network) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    """An IPv4-mapped IPv6 network (``::ffff:10.0.0.0/120``) as the IPv4 network it maps; any other unchanged."""
    if isinstance(net, ipaddress.IPv6Network) and net.subnet_of(_MAPPED_NET):
        return ipaddress.IPv4Network((int(net.network_address) & 0xFFFFFFFF, net.prefixlen - 96))
    return net


def parse_ip(text: str | None) -> IPAddress | None:
    """An address from text, or None. Accepts brackets, ports and IPv4-mapped IPv6."""
    if text is None:
        return None
    s = text.strip().strip('"')
    if not s or len(s) > 64:
        return None
    if s.startswith("["):  # [v6] or [v6]:port
        end = s.find("]")
        if end < 0:
            return None
        s = s[1:end]
    elif s.count(":") == 1 and "." in s:  # v4:port
        s = s.split(":", 1)[0]
    if "%" in s:  # a zone index (fe80::1%eth0): IPv6's only, an IPv4 address has none (RFC 4007)
        s = s.split("%", 1)[0]
        if ":" not in s:
            return None
    ip = _parse_hex_ipv6(s) if ":" in s else None
    if ip is None:
        try:
            ip = ipaddress.ip_address(s)
        except ValueError:
            return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


_HEX_IPV6 = re.compile(r"[0-9A-Fa-f:]{2,39}")


# spellings where C libraries have been known to differ from ipaddress (single zero groups, ties, ends)
_AGREEMENT_SAMPLES = ("2001:db8::1", "2001:db8:0:1:0:0:0:1", "1:0:0:1:0:0:0:1", "1:0:0:0:1:0:0:1",
                      "2001:db8:0:0:1:0:0:0", "fe80::1:0:0:0", "1:2:3:4:5:6:7:0", "1:0:2:3:4:5:6:7",
                      "ffff:0:0:0:0:0:0:1", "2001:db8:a:b:c:d:e:f")


@lru_cache(maxsize=1)
def _c_library_agrees() -> bool:
    """Whether this platform's inet_pton/inet_ntop read and write IPv6 as ipaddress does (else not used)."""
    try:
        for text in _AGREEMENT_SAMPLES:
            ip = ipaddress.IPv6Address(text)
            if socket.inet_pton(socket.AF_INET6, text) != ip.packed:
                return False
            if socket.inet_ntop(socket.AF_INET6, ip.packed) != str(ip):
                return False
    except (OSError, ValueError, AttributeError):
        return False
    return True


def _parse_hex_ipv6(s: str) -> ipaddress.IPv6Address | None:
    """An IPv6 address written in hex and colons only, parsed by the C library (the address
    ``ipaddress`` would give, several times faster); None to let ``ipaddress`` decide."""
    if not _HEX_IPV6.fullmatch(s) or not _c_library_agrees():
        return None
    try:
        return ipaddress.IPv6Address(socket.inet_pton(socket.AF_INET6, s))
    except OSError:
        return None


def ip_text(ip: IPAddress) -> str:
    """``str(ip)``; for IPv6 addresses whose first group is not zero (every global, unique-local and
    link-local one) by the C library, which writes them exactly as ``ipaddress`` does (lower case,
    the first longest run of two or more zero groups as ``::``) and faster."""
    if ip.version == 6 and ip.packed[:2] != b"\0\0" and _c_library_agrees():
        return socket.inet_ntop(socket.AF_INET6, ip.packed)
    return str(ip)


def normalise_ip(text: str | None) -> str | None:
    ip = parse_ip(text)
    return None if ip is None else ip_text(ip)


def ip_prefix(ip: IPAddress) -> str:
    """The /24 network of an IPv4 address, or the /48 of an IPv6 one."""
    if ip.version == 4:
        return f"{ipaddress.IPv4Address(int(ip) & 0xFFFFFF00)}/24"
    return f"{ip_text(ipaddress.IPv6Address(int(ip) & ~((1 << 80) - 1)))}/48"


def client_ip_header(name: str, *, where: str = "client IP header") -> str:
    """The forwarding header ``name`` (any case) as :data:`CLIENT_IP_HEADERS` spells it; a ConfigurationError
    naming ``where`` and the allowed values when it is not one of them."""
    if isinstance(name, str):
        for known in CLIENT_IP_HEADERS:
            if name.strip().lower() == known.lower():
                return known
    raise ConfigurationError(f"{where}: {name!r} is not one of {', '.join(CLIENT_IP_HEADERS)} (the one forwarding "
                             "header your trusted proxies write; the others are never believed)")


@dataclass(frozen=True)
class ProxyPolicy:
    """Which networks are trusted proxies, and the one forwarding header they write (the only one believed)."""

    networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = field(default_factory=tuple)
    header: str = DEFAULT_CLIENT_IP_HEADER  # one of CLIENT_IP_HEADERS, any case (kept as spelled there)

    @classmethod
    def from_cidrs(cls, cidrs: list[str] | tuple[str, ...], *, where: str = "trusted proxies",
                   header: str = DEFAULT_CLIENT_IP_HEADER) -> "ProxyPolicy":
        nets = []
        for i, c in enumerate(cidrs):
            try:
                # an IPv4-mapped range (::ffff:10.0.0.0/104) is the IPv4 one: addresses are read unmapped
                # (parse_ip), as the IP-range exceptions read their ranges
                nets.append(unmapped(ipaddress.ip_network(c.strip(), strict=False)))
            except ValueError as exc:
                raise ConfigurationError(f"{where}[{i}]: {c!r} is not a valid CIDR ({exc})") from None
        return cls(tuple(nets), header)

    @classmethod
    def default(cls) -> "ProxyPolicy":
        """From ``RISKGATE_TRUSTED_PROXIES`` (comma-separated CIDRs; empty = trust none) and
        ``RISKGATE_CLIENT_IP_HEADER``, else the defaults (read at each call; made once per distinct setting)."""
        return _policy_from_env(os.environ.get(TRUSTED_PROXIES_ENV), os.environ.get(CLIENT_IP_HEADER_ENV))

    @classmethod
    def from_settings(cls, cidrs: list[str] | tuple[str, ...] | None = None, header: str | None = None, *,
                      cidrs_where: str = "--trusted-proxy", header_where: str = "--client-ip-header") -> "ProxyPolicy":
        """``cidrs`` and ``header`` where given (``cidrs_where``, ``header_where``: where they were given, for
        the messages), else ``RISKGATE_TRUSTED_PROXIES`` and ``RISKGATE_CLIENT_IP_HEADER``, else the defaults.
        A bad one is a ConfigurationError naming it; the header is checked first."""
        if header is not None:
            header = client_ip_header(header, where=header_where)
        else:
            header = _header_from_env(os.environ.get(CLIENT_IP_HEADER_ENV))
        if cidrs:
            return cls.from_cidrs(cidrs, where=cidrs_where, header=header)
        return _proxies_from_env(os.environ.get(TRUSTED_PROXIES_ENV), header)

    def __post_init__(self) -> None:
        object.__setattr__(self, "header", client_ip_header(self.header))
        # integer intervals per version, for fast membership tests
        ranges = {4: [], 6: []}
        for n in self.networks:
            ranges[n.version].append((int(n.network_address), int(n.broadcast_address)))
        object.__setattr__(self, "_ranges", ranges)

    def trusts(self, ip: IPAddress) -> bool:
        v = int(ip)
        return any(lo <= v <= hi for lo, hi in self._ranges[ip.version])  # type: ignore[attr-defined]

    def v4_ranges(self) -> list[list[int]]:
        """The trusted IPv4 networks as [first, last] integer pairs (for SQL)."""
        return [[lo, hi] for lo, hi in self._ranges[4]] or [[-1, -1]]  # type: ignore[attr-defined]


def _forwarded_fors(value: str) -> list[str] | None:
    """The ``for=`` values of an RFC 7239 Forwarded header, in order; None when malformed."""
    out = []
    for element in value.split(","):
        element = element.strip()
        if not element:
            return None
        found = None
        for pair in element.split(";"):
            if "=" not in pair:
                return None
            k, v = pair.split("=", 1)
            if k.strip().lower() == "for":
                found = v.strip()
        if found is None:
            return None
        out.append(found)
    return out


@dataclass(frozen=True)
class ClientIP:
    ip: str | None  # normalised address, None when IpAddress is missing or invalid
    source: str | None  # IpAddress | Forwarded | X-Forwarded-For | X-Real-IP
    version: int | None
    prefix: str | None
    ip_address_valid: bool  # False when IpAddress was given but is not an address


def resolve_client_ip(
    ip_address: str | None,
    forwarded: str | None,
    x_forwarded_for: str | None,
    x_real_ip: str | None,
    policy: ProxyPolicy,
) -> ClientIP:
    """The end user's address for one request, given every forwarding header's values (see the module docstring
    for the rules): only the one ``policy.header`` names is read, the other two are ignored."""
    value = {"Forwarded": forwarded, "X-Forwarded-For": x_forwarded_for, "X-Real-IP": x_real_ip}[policy.header]
    return resolve_client_ip_from(ip_address, value, policy)


def resolve_client_ip_from(ip_address: str | None, header_value: str | None, policy: ProxyPolicy) -> ClientIP:
    """:func:`resolve_client_ip` given the values of ``policy.header`` alone (every one, in order, joined by ", ";
    None when the request has none)."""
    if not header_value and ip_address is not None and ":" in ip_address:
        plain = _plain_ipv6(ip_address)  # the common IPv6 request, without the general parsing
        if plain is not None:
            return plain
    given = parse_ip(ip_address)
    if given is None:
        return ClientIP(None, None, None, None, ip_address is None or not ip_address.strip())
    chosen, source = given, "IpAddress"
    if header_value and policy.trusts(given):
        name = policy.header
        if name == "Forwarded":
            chain = _forwarded_fors(header_value)
        elif name == "X-Forwarded-For":
            chain = header_value.split(",")
        else:
            chain = [header_value]
        found = _walk(chain, policy) if chain else None  # malformed (or every hop trusted): IpAddress stays
        if found is not None:
            chosen, source = found, name
    return ClientIP(ip_text(chosen), source, chosen.version, ip_prefix(chosen), True)


_V6_ZERO_TAIL = bytes(10)


def _plain_ipv6(text: str) -> ClientIP | None:
    """``resolve_client_ip`` of an IpAddress in IPv6 hex-and-colons, without the policy's header: the address
    itself, written by the C library (the same text ``ip_text`` and ``ip_prefix`` give); None for any
    other case (brackets, zones, IPv4-mapped, a first group of zero, invalid), left to the general path."""
    ip = _parse_hex_ipv6(text)
    if ip is None or ip.packed[:2] == b"\0\0":  # a first group of zero: also every IPv4-mapped address
        return None
    packed = ip.packed
    prefix = socket.inet_ntop(socket.AF_INET6, packed[:6] + _V6_ZERO_TAIL) + "/48"
    return ClientIP(socket.inet_ntop(socket.AF_INET6, packed), "IpAddress", 6, prefix, True)


def _walk(chain: list[str], policy: ProxyPolicy) -> IPAddress | None:
    """Right to left, skipping trusted proxies; the first untrusted address, or None (malformed / all trusted)."""
    for entry in reversed(chain):
        ip = parse_ip(entry)
        if ip is None:
            return None
        if not policy.trusts(ip):
            return ip
    return None


def _header_from_env(value: str | None) -> str:
    return DEFAULT_CLIENT_IP_HEADER if value is None else client_ip_header(value, where=CLIENT_IP_HEADER_ENV)


def _proxies_from_env(value: str | None, header: str) -> ProxyPolicy:
    if value is None:
        return ProxyPolicy.from_cidrs(DEFAULT_TRUSTED_PROXIES, header=header)
    return ProxyPolicy.from_cidrs([c for c in value.split(",") if c.strip()], where=TRUSTED_PROXIES_ENV, header=header)


@lru_cache(maxsize=8)
def _policy_from_env(proxies: str | None, header: str | None) -> ProxyPolicy:
    return _proxies_from_env(proxies, _header_from_env(header))


def default_policy() -> ProxyPolicy:
    """The policy the environment sets (:meth:`ProxyPolicy.default`)."""
    return ProxyPolicy.default()
