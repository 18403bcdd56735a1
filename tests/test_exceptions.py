"""risk.exceptions: skipped and blocked IP ranges, one address at a time and in batches."""

from __future__ import annotations

import ipaddress
import random

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from risk import config as rc
from risk import exceptions as rx
from risk.exceptions import ExceptionResult as R
from risk.exceptions import IPRangeExceptions

EX = IPRangeExceptions(
    blocked=("203.0.113.0/24", "2001:db8:bad::/48", "198.51.100.128/25"),
    skipped=("10.0.0.0/8", "198.51.100.0/24", "2001:db8::/32"),
)


@pytest.mark.parametrize(
    "ip, expected",
    [
        ("203.0.113.0", R.BLOCKED),  # first address of the range
        ("203.0.113.255", R.BLOCKED),  # last
        ("203.0.112.255", R.NONE),  # one before
        ("203.0.114.0", R.NONE),  # one after
        ("10.255.255.255", R.SKIPPED),
        ("11.0.0.0", R.NONE),
        ("198.51.100.127", R.SKIPPED),  # skipped half
        ("198.51.100.128", R.BLOCKED),  # in both lists: blocked wins
        ("2001:db8:bad::1", R.BLOCKED),  # IPv6 in both (the /48 is inside the skipped /32): blocked
        ("2001:db8:bad:ffff:ffff:ffff:ffff:ffff", R.BLOCKED),
        ("2001:db8:bae::", R.SKIPPED),
        ("2001:DB8::1", R.SKIPPED),  # upper case
        ("2001:db9::", R.NONE),
        ("::ffff:203.0.113.9", R.BLOCKED),  # IPv4-mapped IPv6 is the IPv4 address
        ("::ffff:10.1.2.3", R.SKIPPED),
        ("fe80::1%eth0", R.NONE),  # zone id parsed, not in a list
        (" 10.0.0.1 ", R.SKIPPED),  # surrounding spaces tolerated
        ("not an ip", R.NONE),
        ("10.0.0", R.NONE),
        ("010.0.0.1", R.NONE),  # leading zeros are not an address
        ("", R.NONE),
        (None, R.NONE),
    ],
)
def test_single_address(ip, expected):
    assert EX.check(ip) is expected


def test_families_are_separate_spaces():
    all_v4 = IPRangeExceptions(blocked=("0.0.0.0/0",))
    assert all_v4.check("255.255.255.255") is R.BLOCKED
    assert all_v4.check("::1") is R.NONE
    all_v6 = IPRangeExceptions(blocked=("::/0",))
    assert all_v6.check("::1") is R.BLOCKED
    assert all_v6.check("1.2.3.4") is R.NONE
    assert all_v6.check("::ffff:1.2.3.4") is R.NONE  # mapped: it is IPv4


def test_ipv4_mapped_range_is_an_ipv4_range():
    ex = IPRangeExceptions(skipped=("::ffff:10.0.0.0/104",))
    assert ex.check("10.200.0.1") is R.SKIPPED
    assert ex.check("11.0.0.1") is R.NONE


def test_overlapping_and_adjacent_ranges_merge():
    ex = IPRangeExceptions(blocked=("10.0.0.0/8", "10.1.0.0/16", "11.0.0.0/8", "9.255.255.255/32"))
    assert ex._blocked.starts == (rx.address_key("9.255.255.255"),)  # one interval
    assert ex._blocked.ends == (rx.address_key("11.255.255.255"),)
    for ip in ("9.255.255.255", "10.0.0.0", "10.1.2.3", "11.255.255.255"):
        assert ex.check(ip) is R.BLOCKED
    assert ex.check("12.0.0.0") is R.NONE


def test_empty_lists_match_nothing():
    ex = IPRangeExceptions()
    assert ex.empty and ex.check("10.0.0.1") is R.NONE
    m = ex.check_many(["10.0.0.1", "::1", None])
    assert m.codes.tolist() == [0, 0, 0] and m.valid.tolist() == [True, True, False]
    assert ex.results(["10.0.0.1", "junk", None] * 10) == [R.NONE] * 30


def test_from_configuration():
    cfg = rc.validate_document(
        {"RiskExceptionConfiguration": {"BlockedIPRangeList": ["192.0.2.0/24"], "SkippedIPRangeList": ["10.0.0.0/8"]}}
    )
    ex = IPRangeExceptions.from_configuration(cfg)
    assert (ex.check("192.0.2.1"), ex.check("10.9.9.9")) == (R.BLOCKED, R.SKIPPED)
    assert IPRangeExceptions.from_configuration(rc.validate_document({})).empty
    assert IPRangeExceptions.from_configuration(None).empty
    assert rx.check_ip(cfg, "192.0.2.200") is R.BLOCKED


def test_invalid_cidr_refused_when_compiling():
    with pytest.raises(ValueError, match="prefix length 33 > 32"):
        IPRangeExceptions(blocked=("10.0.0.0/33",))


INPUTS = ["203.0.113.5", None, "10.1.1.1", "::ffff:198.51.100.200", "junk", "2001:db8:1::1", "8.8.8.8"]
EXPECTED_CODES = [2, 0, 1, 2, 0, 1, 0]


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(list, id="list"),
        pytest.param(lambda v: np.array(v, dtype=object), id="numpy-object"),
        pytest.param(lambda v: pd.Series(v, dtype="string"), id="pandas-string"),
        pytest.param(lambda v: pd.Series(v, dtype=object), id="pandas-object"),
        pytest.param(lambda v: pa.array(v), id="arrow"),
        pytest.param(lambda v: pa.chunked_array([v[:3], v[3:]]), id="arrow-chunked"),
        pytest.param(lambda v: pa.array(v).dictionary_encode(), id="arrow-dictionary"),
        pytest.param(lambda v: pa.array(v, type=pa.large_string()), id="arrow-large-string"),
    ],
)
def test_batch_accepts_common_containers(make):
    m = EX.check_many(make(INPUTS))
    assert m.codes.tolist() == EXPECTED_CODES
    assert m.valid.tolist() == [True, False, True, True, False, True, True]
    assert m.results()[0] is R.BLOCKED and m.result(2) is R.SKIPPED
    assert not (m.blocked & m.skipped).any()


def test_batch_of_numpy_unicode_strings():
    m = EX.check_many(np.array(["203.0.113.5", "10.0.0.1", "1.1.1.1"]))
    assert m.codes.tolist() == [2, 1, 0]


def test_batch_refuses_non_strings():
    with pytest.raises(TypeError, match="expected IP addresses as strings"):
        EX.check_many(pa.array([1, 2, 3]))


def _random_network(rng: random.Random) -> str:
    if rng.random() < 0.5:
        return str(ipaddress.ip_network((rng.getrandbits(32), rng.randint(6, 32)), strict=False))
    return str(ipaddress.ip_network((rng.getrandbits(128), rng.randint(8, 128)), strict=False))


def _oracle(ip, blocked, skipped) -> R:
    """Independent answer from the standard library, one network at a time."""
    try:
        addr = ipaddress.ip_address(ip)
    except (TypeError, ValueError):
        return R.NONE
    if addr.version == 6 and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    if any(addr.version == n.version and addr in n for n in blocked):
        return R.BLOCKED
    if any(addr.version == n.version and addr in n for n in skipped):
        return R.SKIPPED
    return R.NONE


@pytest.mark.parametrize("distinct", [300, None], ids=["repeating (dictionary path)", "all distinct (direct path)"])
def test_batch_and_single_agree_with_the_standard_library(distinct):
    rng = random.Random(20240717)
    blocked = [_random_network(rng) for _ in range(200)]
    skipped = [_random_network(rng) for _ in range(200)]
    ex = IPRangeExceptions(blocked=tuple(blocked), skipped=tuple(skipped))
    nets_b = [ipaddress.ip_network(x) for x in blocked]
    nets_s = [ipaddress.ip_network(x) for x in skipped]

    def one() -> str | None:
        r = rng.random()
        if r < 0.45:  # inside a listed network, including its edges
            n = rng.choice(nets_b + nets_s)
            off = rng.choice([0, n.num_addresses - 1, rng.randrange(n.num_addresses)])
            return str(n.network_address + off)
        if r < 0.55:  # just outside one
            n = rng.choice(nets_b + nets_s)
            try:
                return str(n.broadcast_address + 1)
            except ipaddress.AddressValueError:
                return str(n.network_address - 1)
        if r < 0.75:
            return str(ipaddress.IPv4Address(rng.getrandbits(32)))
        if r < 0.95:
            return str(ipaddress.IPv6Address(rng.getrandbits(128)))
        return rng.choice([None, "junk", "1.2.3", "::ffff:" + str(ipaddress.IPv4Address(rng.getrandbits(32)))])

    n = 20_000  # above the sample size, so the distinct-ratio estimate is exercised
    if distinct:
        pool = [one() for _ in range(distinct)]
        ips = [rng.choice(pool) for _ in range(n)]
    else:
        ips = [one() for _ in range(n)]
    assert rx._mostly_distinct(pa.array(ips, type=pa.string())) is (distinct is None)

    expected = [_oracle(ip, nets_b, nets_s) for ip in ips]
    assert {R.BLOCKED, R.SKIPPED, R.NONE} <= set(expected)
    assert [ex.check(ip) for ip in ips] == expected
    assert ex.check_many(ips).results() == expected
    assert ex.check_many(pa.array(ips)).results() == expected
    assert ex.results(ips) == expected and ex.results(ips[:5]) == expected[:5]  # set-wise, and one by one


def test_keys_order_like_addresses():
    addrs = ["0.0.0.0", "0.0.0.1", "9.255.255.255", "10.0.0.0", "255.255.255.255", "::", "::1", "2001:db8::", "ffff::"]
    keys = [rx.address_key(a) for a in addrs]
    assert keys == sorted(keys)
    assert all(len(k) == rx.KEY_BYTES for k in keys)
