import re

import pytest

from ingest.context import ProxyPolicy, normalise_ip, resolve_client_ip
from ingest.errors import ConfigurationError

DEFAULT = ProxyPolicy.from_cidrs(["10.0.0.0/8", "127.0.0.0/8", "fc00::/7"])  # (header: X-Forwarded-For)
FWD = ProxyPolicy.from_cidrs(["10.0.0.0/8", "127.0.0.0/8", "fc00::/7"], header="Forwarded")
XRI = ProxyPolicy.from_cidrs(["10.0.0.0/8", "127.0.0.0/8", "fc00::/7"], header="X-Real-IP")
POLICIES = {"X-Forwarded-For": DEFAULT, "Forwarded": FWD, "X-Real-IP": XRI}


@pytest.mark.parametrize(
    "header, ip, fwd, xff, xri, want, source",
    [
        # a public IpAddress is the client: headers are never believed
        ("X-Forwarded-For", "81.2.69.160", None, "203.0.113.7", None, "81.2.69.160", "IpAddress"),
        ("Forwarded", "81.2.69.160", "for=203.0.113.7", None, None, "81.2.69.160", "IpAddress"),
        # the app server forwarded its proxy's address: the chain names the client
        ("X-Forwarded-For", "10.0.0.5", None, "203.0.113.7", None, "203.0.113.7", "X-Forwarded-For"),
        # walk from the right, skipping trusted proxies; a spoofed left entry is ignored
        ("X-Forwarded-For", "10.0.0.5", None, "1.1.1.1, 203.0.113.7, 10.0.0.9", None, "203.0.113.7", "X-Forwarded-For"),
        # garbage on the walk keeps IpAddress
        ("X-Forwarded-For", "10.0.0.5", None, "203.0.113.7, not-an-ip", None, "10.0.0.5", "IpAddress"),
        ("X-Forwarded-For", "10.0.0.5", None, "' OR 1=1 --", None, "10.0.0.5", "IpAddress"),
        # a chain of trusted proxies only keeps IpAddress
        ("X-Forwarded-For", "10.0.0.5", None, "10.1.1.1, 127.0.0.1", None, "10.0.0.5", "IpAddress"),
        # only the header the proxies write is read: a Forwarded (or X-Real-IP) the end user typed, which the
        # proxy passed through, is ignored, beside X-Forwarded-For or alone
        ("X-Forwarded-For", "10.0.0.5", "for=203.0.113.77", "81.2.69.160", None, "81.2.69.160", "X-Forwarded-For"),
        ("X-Forwarded-For", "10.0.0.5", "for=203.0.113.77", None, "203.0.113.78", "10.0.0.5", "IpAddress"),
        ("X-Forwarded-For", "10.0.0.5", "for=unknown", "198.51.100.1", None, "198.51.100.1", "X-Forwarded-For"),
        ("X-Forwarded-For", "10.0.0.5", None, None, "198.51.100.2", "10.0.0.5", "IpAddress"),
        ("X-Forwarded-For", "10.0.0.5", None, "198.51.100.1:8080", None, "198.51.100.1", "X-Forwarded-For"),  # port
        # RFC 7239 Forwarded when the proxies write that: IPv6 with brackets and port; X-Forwarded-For ignored
        ("Forwarded", "10.0.0.5", 'for="[2001:db8:cafe::17]:4711";proto=https', "198.51.100.1", None,
         "2001:db8:cafe::17", "Forwarded"),
        ("Forwarded", "10.0.0.5", "for=192.0.2.60;proto=http;by=203.0.113.43", None, None, "192.0.2.60", "Forwarded"),
        ("Forwarded", "10.0.0.5", "for=203.0.113.9, for=10.0.0.8", None, None, "203.0.113.9", "Forwarded"),
        ("Forwarded", "10.0.0.5", "for=unknown", "198.51.100.1", None, "10.0.0.5", "IpAddress"),  # malformed: kept
        ("Forwarded", "10.0.0.5", None, "81.2.69.160", "198.51.100.2", "10.0.0.5", "IpAddress"),
        # X-Real-IP when the proxies write that: one address, the others ignored
        ("X-Real-IP", "10.0.0.5", "for=203.0.113.77", "81.2.69.160", "198.51.100.2", "198.51.100.2", "X-Real-IP"),
        ("X-Real-IP", "10.0.0.5", None, "81.2.69.160", None, "10.0.0.5", "IpAddress"),
        ("X-Real-IP", "10.0.0.5", None, None, "198.51.100.2, 198.51.100.3", "10.0.0.5", "IpAddress"),  # not one
        ("X-Real-IP", "10.0.0.5", None, None, "10.0.0.6", "10.0.0.5", "IpAddress"),  # a trusted proxy: kept
        # IPv4-mapped IPv6 and IPv6 spelling are normalised
        ("X-Forwarded-For", "::ffff:81.2.69.160", None, None, None, "81.2.69.160", "IpAddress"),
        ("X-Forwarded-For", "2001:DB8:0:0::1", None, None, None, "2001:db8::1", "IpAddress"),
        ("X-Forwarded-For", "fd00::1", None, "2001:db8::99", None, "2001:db8::99", "X-Forwarded-For"),
        ("X-Forwarded-For", "fd00::1", "for=\"[2001:db8::98]\"", None, None, "fd00::1", "IpAddress"),
    ],
)
def test_client_ip(header, ip, fwd, xff, xri, want, source):
    r = resolve_client_ip(ip, fwd, xff, xri, POLICIES[header])
    assert (r.ip, r.source) == (want, source)
    assert r.ip_address_valid


def test_the_default_header_is_x_forwarded_for_and_names_compare_in_any_case():
    assert ProxyPolicy().header == DEFAULT.header == "X-Forwarded-For"
    for name, want in (("forwarded", "Forwarded"), ("X-REAL-IP", "X-Real-IP"),
                       (" x-forwarded-for ", "X-Forwarded-For")):
        assert ProxyPolicy(header=name).header == want
    with pytest.raises(ConfigurationError, match=r"client IP header: 'X-Client-IP' is not one of X-Forwarded-For, "
                                                 r"Forwarded, X-Real-IP"):
        ProxyPolicy(header="X-Client-IP")


def test_prefixes_are_slash_24_and_slash_48():
    assert resolve_client_ip("81.2.69.160", None, None, None, DEFAULT).prefix == "81.2.69.0/24"
    assert resolve_client_ip("2001:db8:1:2:3::1", None, None, None, DEFAULT).prefix == "2001:db8:1::/48"


def test_invalid_ip_address_is_flagged_and_never_replaced_by_headers():
    for policy in POLICIES.values():
        r = resolve_client_ip("999.1.1.1", "for=203.0.113.7", "203.0.113.7", "203.0.113.7", policy)
        assert r.ip is None and not r.ip_address_valid
        assert resolve_client_ip(None, "for=203.0.113.7", "203.0.113.7", "203.0.113.7", policy).ip is None


def test_untrusted_policy_never_uses_headers():
    for header in POLICIES:
        none = ProxyPolicy.from_cidrs([], header=header)
        assert resolve_client_ip("10.0.0.5", "for=203.0.113.7", "203.0.113.7", "203.0.113.7", none).ip == "10.0.0.5"


def test_policy_from_environment_and_bad_cidr(monkeypatch):
    monkeypatch.delenv("RISKGATE_CLIENT_IP_HEADER", raising=False)
    monkeypatch.setenv("RISKGATE_TRUSTED_PROXIES", "192.0.2.0/24, 2001:db8::/32")
    p = ProxyPolicy.default()
    assert p.header == "X-Forwarded-For"
    assert resolve_client_ip("192.0.2.10", None, "81.2.69.160", None, p).ip == "81.2.69.160"
    assert resolve_client_ip("10.0.0.5", None, "81.2.69.160", None, p).ip == "10.0.0.5"  # 10/8 no longer trusted
    with pytest.raises(ConfigurationError, match=r"--trusted-proxy\[1\]: '10.0.0.0/33'"):
        ProxyPolicy.from_cidrs(["10.0.0.0/8", "10.0.0.0/33"], where="--trusted-proxy")


def test_the_header_from_the_environment(monkeypatch):
    from ingest.context import DEFAULT_TRUSTED_PROXIES, default_policy

    monkeypatch.delenv("RISKGATE_TRUSTED_PROXIES", raising=False)
    monkeypatch.setenv("RISKGATE_CLIENT_IP_HEADER", "forwarded")
    p = ProxyPolicy.default()
    assert p.header == "Forwarded" and default_policy() == p and p.trusts(DEFAULT.networks[0].network_address)
    assert resolve_client_ip("10.0.0.5", "for=81.2.69.160", "203.0.113.7", None, p).ip == "81.2.69.160"
    # read at each call (the service and every Enricher made after a change get what it now says)
    monkeypatch.setenv("RISKGATE_CLIENT_IP_HEADER", "X-Real-IP")
    assert default_policy().header == "X-Real-IP"
    # options win over the environment, each on its own
    p = ProxyPolicy.from_settings(["192.0.2.0/24"], None)
    assert (p.header, [str(n) for n in p.networks]) == ("X-Real-IP", ["192.0.2.0/24"])
    p = ProxyPolicy.from_settings(None, "x-forwarded-for")
    assert p.header == "X-Forwarded-For" and p.networks == ProxyPolicy.from_cidrs(DEFAULT_TRUSTED_PROXIES).networks


@pytest.mark.parametrize("value", ["X-Client-IP", "", "X-Forwarded-For, Forwarded", "True-Client-IP", "none"])
def test_a_bad_header_is_refused_naming_the_variable_and_the_allowed_values(monkeypatch, value):
    monkeypatch.setenv("RISKGATE_CLIENT_IP_HEADER", value)
    want = re.escape(f"RISKGATE_CLIENT_IP_HEADER: {value!r} is not one of X-Forwarded-For, Forwarded, X-Real-IP")
    with pytest.raises(ConfigurationError, match=want):
        ProxyPolicy.default()
    with pytest.raises(ConfigurationError, match=want):
        ProxyPolicy.from_settings(["10.0.0.0/8"], None)  # (whatever the trusted proxies)
    with pytest.raises(ConfigurationError, match=r"--client-ip-header: 'X-Client-IP' is not one of"):
        ProxyPolicy.from_settings(None, "X-Client-IP")


def test_normalise_ip():
    assert normalise_ip(" [2001:db8::1]:443 ") == "2001:db8::1"
    assert normalise_ip("1.2.3") is None
    assert normalise_ip("x" * 1000) is None


def _reference_normalise(text):
    """normalise_ip as written with the standard library alone (ipaddress parses and prints)."""
    import ipaddress

    s = text.strip().strip('"')
    if s.count(":") == 1 and "." in s:
        s = s.split(":", 1)[0]
    try:
        ip = ipaddress.ip_address(s)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return str(ip)


def test_ipv6_read_and_written_by_the_c_library_exactly_as_ipaddress_does():
    import ipaddress
    import random

    from ingest.context import ip_prefix, parse_ip

    rnd = random.Random(5)
    texts = ["::", "::1", "1::", "1:2:3:4:5:6:7::", "::1:2:3:4:5:6:7", "1:2:3:4:5:6:7:8:9", "1::2::3", ":1::",
             "12345::1", "::ffff:1:2", "::ffff:0:0", "0:0:0:0:0:ffff:102:304", "2001:DB8::A", "fe80::1", "fc00::",
             "1:0:0:1:0:0:0:1", "1:0:0:0:1:0:0:1", "0:0:1::", "::1:0:0", "1:2:3:4:5:6:7:8", ":::", "1:", ":1"]
    for _ in range(20000):
        groups = [rnd.choice([0, 0, 0, 1, 0xFFFF, rnd.randrange(1 << 16)]) for _ in range(8)]
        text = ":".join(rnd.choice(["%x", "%04x", "%X"]) % g for g in groups)
        if rnd.random() < 0.5:
            text = str(ipaddress.IPv6Address(":".join("%x" % g for g in groups)))
        if rnd.random() < 0.05:  # something broken
            k = rnd.randrange(len(text))
            text = text[:k] + rnd.choice([":", "::", "g", "0", ""]) + text[k + 1:]
        texts.append(text)
    for text in texts:
        assert normalise_ip(text) == _reference_normalise(text), text
        ip = parse_ip(text)
        if ip is not None:
            net = ipaddress.ip_network(f"{ip}/{24 if ip.version == 4 else 48}", strict=False)
            assert ip_prefix(ip) == str(net), text


def test_without_the_c_library_fast_path_addresses_are_the_same(monkeypatch):
    import ingest.context as context

    texts = ["2001:DB8::A", "2001:db8:0:1:0:0:0:1", "fe80::1%eth0", "[2001:db8::1]:443", "::ffff:81.2.69.160", "1::2::3"]
    fast = [normalise_ip(t) for t in texts]
    monkeypatch.setattr(context, "_c_library_agrees", lambda: False)
    assert [normalise_ip(t) for t in texts] == fast == [_reference_normalise(t.split("%")[0].strip("[").split("]")[0])
                                                         for t in texts]


def test_an_ipv6_ip_address_without_forwarding_headers_resolves_as_the_reference_says():
    """resolve_client_ip's shortcut for plain IPv6 (C library only) against ipaddress, on valid, odd and broken
    spellings: the same address, /48, version and source, and invalid text stays invalid."""
    import ipaddress
    import random

    rnd = random.Random(11)
    texts = ["2001:DB8::A", "2001:0db8:0000:0000:0000:0000:0000:0001", "::1", "1::", "::ffff:81.2.69.160",
             "0:0:1::", "fe80::1%eth0", "[2001:db8::1]", "1::2::3", "2001:db8::g", "12345::1", ":::"]
    for _ in range(5000):
        groups = [rnd.choice([0, 0, 1, 0xFFFF, rnd.randrange(1 << 16)]) for _ in range(8)]
        text = ":".join(format(g, rnd.choice(["x", "04x", "X"])) for g in groups)
        if rnd.random() < 0.5:
            text = str(ipaddress.IPv6Address(":".join(f"{g:x}" for g in groups)))
        if rnd.random() < 0.05:
            k = rnd.randrange(len(text))
            text = text[:k] + rnd.choice([":", "::", "g", "0", ""]) + text[k + 1:]
        texts.append(text)
    for text in texts:
        r = resolve_client_ip(text, None, None, None, DEFAULT)
        expected = _reference_normalise(text.split("%")[0].strip("[]"))
        assert r.ip == expected, text
        if expected is None:
            assert (r.source, r.prefix, r.ip_address_valid) == (None, None, False), text
            continue
        ip = ipaddress.ip_address(expected)
        assert r.source == "IpAddress" and r.version == ip.version and r.ip_address_valid, text
        assert r.prefix == str(ipaddress.ip_network(f"{ip}/{24 if ip.version == 4 else 48}", strict=False)), text


def test_an_ipv4_mapped_trusted_proxy_range_trusts_the_ipv4_proxies_and_an_ipv4_zone_is_no_address():
    """``--trusted-proxy ::ffff:203.0.113.0/120`` was accepted and matched no proxy (addresses are read unmapped),
    so the forwarding header was never read; and ``1.1.1.1%eth0`` was read as 1.1.1.1 (zones are IPv6's)."""
    mapped = ProxyPolicy.from_cidrs(["::ffff:203.0.113.0/120"])
    assert [str(n) for n in mapped.networks] == ["203.0.113.0/24"]
    assert resolve_client_ip("203.0.113.5", None, "81.2.69.160", None, mapped).ip == "81.2.69.160"
    assert resolve_client_ip("::ffff:203.0.113.5", None, "81.2.69.160", None, mapped).ip == "81.2.69.160"
    r = resolve_client_ip("1.1.1.1%eth0", None, None, None, DEFAULT)
    assert r.ip is None and not r.ip_address_valid
    assert normalise_ip("fe80::1%eth0") == "fe80::1"  # an IPv6 zone stays allowed (and is left out)
