"""IP-range exceptions of a risk configuration (RiskExceptionConfiguration).

* SkippedIPRangeList: "risk detection is not performed" -- the event gets no
  risk level and the decision is NoRisk.
* BlockedIPRangeList: "always block, overrides the risk decision" -- the event
  is blocked, RiskDecision Block, counted as OverrideBlock.
* An address in both lists is **blocked**: blocking is what "always" and
  "overrides" promise, and it is the fail-safe side. (``config validate``
  warns about overlapping lists.)

Addresses are compared as numbers: IPv4 and IPv6 live in separate spaces
(``::/0`` does not match IPv4 clients), except that an IPv4-mapped IPv6
address (``::ffff:192.0.2.1``) is the IPv4 address it maps, as in
``ingest.context``. A missing or unparsable address matches no range (it is
evaluated as usual, never silently skipped); batch results say which were
invalid.

Implementation: each list becomes merged, sorted intervals of 17-byte keys
(one tag byte 4/6, then the 128-bit address, IPv4 mapped into the low 32
bits), so ordering the bytes orders the addresses. One address is looked up
with ``bisect`` over precompiled keys; a batch is dictionary-encoded (each
distinct address parsed once with ``socket.inet_pton``) and matched with one
``numpy.searchsorted`` per list. ``bench/exceptions.py`` measures it.
"""

from __future__ import annotations

import bisect
import ipaddress
import math
import socket
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ingest.context import unmapped
from risk.config import RiskConfiguration, RiskExceptionConfigurationType, check_cidr

KEY_BYTES = 17
_TAG4 = b"\x04"
_TAG6 = b"\x06"
_ZERO12 = bytes(12)
_MAPPED_PREFIX = bytes(10) + b"\xff\xff"
_INVALID_KEY = bytes(KEY_BYTES)


class ExceptionResult(StrEnum):
    """What the IP-range exceptions say about one event."""

    NONE = "none"
    SKIPPED = "skipped"
    BLOCKED = "blocked"


#: Codes of :attr:`ExceptionMatches.codes`.
CODE_NONE, CODE_SKIPPED, CODE_BLOCKED = 0, 1, 2
_RESULT_BY_CODE = (ExceptionResult.NONE, ExceptionResult.SKIPPED, ExceptionResult.BLOCKED)


def address_key(text: str | None) -> bytes | None:
    """The 17-byte sort key of an address, or None when it is not one."""
    if text is None:
        return None
    try:
        if ":" in text:
            raw = socket.inet_pton(socket.AF_INET6, text)
            if raw[:12] == _MAPPED_PREFIX:
                return _TAG4 + _ZERO12 + raw[12:]
            return _TAG6 + raw
        return _TAG4 + _ZERO12 + socket.inet_pton(socket.AF_INET, text)
    except (OSError, TypeError, ValueError):
        pass
    # slow path: surrounding spaces, IPv6 zone ids ("fe80::1%eth0"), other spellings ipaddress accepts
    try:
        addr = ipaddress.ip_address(str(text).strip().split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    if addr.version == 4:
        return _TAG4 + _ZERO12 + addr.packed
    return _TAG6 + addr.packed


def _network_interval(cidr: str) -> tuple[int, int]:
    net = unmapped(ipaddress.ip_network(check_cidr(cidr)))
    tag = 4 if net.version == 4 else 6
    base = tag << 128
    return base + int(net.network_address), base + int(net.broadcast_address)


@dataclass(frozen=True)
class _Intervals:
    """Merged, sorted, inclusive intervals of keys."""

    starts: tuple[bytes, ...]
    ends: tuple[bytes, ...]
    starts_np: np.ndarray = field(repr=False)
    ends_np: np.ndarray = field(repr=False)

    @classmethod
    def build(cls, cidrs: Iterable[str]) -> _Intervals:
        spans = sorted(_network_interval(c) for c in cidrs)
        merged: list[list[int]] = []
        for lo, hi in spans:
            if merged and lo <= merged[-1][1] + 1:
                merged[-1][1] = max(merged[-1][1], hi)
            else:
                merged.append([lo, hi])
        starts = tuple(lo.to_bytes(KEY_BYTES, "big") for lo, _ in merged)
        ends = tuple(hi.to_bytes(KEY_BYTES, "big") for _, hi in merged)
        dtype = f"S{KEY_BYTES}"
        return cls(starts, ends, np.array(starts, dtype=dtype), np.array(ends, dtype=dtype))

    def contains(self, key: bytes) -> bool:
        i = bisect.bisect_right(self.starts, key) - 1
        return i >= 0 and key <= self.ends[i]

    def contains_many(self, keys: np.ndarray) -> np.ndarray:
        if not self.starts:
            return np.zeros(len(keys), dtype=bool)
        i = np.searchsorted(self.starts_np, keys, side="right") - 1
        safe = np.clip(i, 0, None)
        return (i >= 0) & (keys <= self.ends_np[safe])


@dataclass(frozen=True)
class ExceptionMatches:
    """Batch result, one entry per input address (numpy arrays of equal length).

    ``blocked``: in BlockedIPRangeList. ``skipped``: in SkippedIPRangeList and
    not blocked (blocked wins). ``valid``: the address parsed. ``codes``:
    0 none, 1 skipped, 2 blocked.
    """

    blocked: np.ndarray
    skipped: np.ndarray
    valid: np.ndarray

    @property
    def codes(self) -> np.ndarray:
        out = np.zeros(len(self.blocked), dtype=np.int8)
        out[self.skipped] = CODE_SKIPPED
        out[self.blocked] = CODE_BLOCKED
        return out

    def result(self, i: int) -> ExceptionResult:
        return _RESULT_BY_CODE[int(self.codes[i])]

    def results(self) -> list[ExceptionResult]:
        return [_RESULT_BY_CODE[c] for c in self.codes.tolist()]

    def __len__(self) -> int:
        return len(self.blocked)


def _as_string_array(ips: Any) -> pa.Array:
    if isinstance(ips, pa.ChunkedArray):
        arr = ips.combine_chunks() if ips.num_chunks != 1 else ips.chunk(0)
    elif isinstance(ips, pa.Array):
        arr = ips
    elif isinstance(ips, np.ndarray):
        arr = pa.array(ips.astype(object) if ips.dtype.kind in "US" else ips, type=pa.string(), from_pandas=True)
    elif hasattr(ips, "to_numpy") and hasattr(ips, "dtype"):  # pandas Series / Index
        arr = pa.array(ips.to_numpy(dtype=object), type=pa.string(), from_pandas=True)
    else:
        arr = pa.array(list(ips), type=pa.string())
    if pa.types.is_dictionary(arr.type):
        arr = arr.cast(arr.type.value_type)
    if pa.types.is_large_string(arr.type) or pa.types.is_string_view(arr.type):
        arr = arr.cast(pa.string())
    if not pa.types.is_string(arr.type):
        raise TypeError(f"expected IP addresses as strings, got an array of {arr.type}")
    return arr


def _mostly_distinct(arr: pa.Array, sample_size: int = 16384) -> bool:
    """Whether most addresses of ``arr`` are distinct, judged from an evenly spread sample.

    With ``d`` distinct among ``s`` sampled, the number of distinct values D solves
    D * (1 - exp(-s / D)) = d; the batch then holds about D * (1 - exp(-n / D)).
    """
    n = len(arr)
    if n <= sample_size:
        return False
    step = n // sample_size
    sample = pc.take(arr, pa.array(range(0, step * sample_size, step)))
    s, d = len(sample), pc.count_distinct(sample, mode="all").as_py()
    if d >= s * 0.995:
        return True
    lo, hi = float(d), 1e15
    for _ in range(100):
        mid = (lo + hi) / 2
        if mid * -math.expm1(-s / mid) < d:
            lo = mid
        else:
            hi = mid
    expected = lo * -math.expm1(-n / lo)
    return expected > 0.4 * n


def keys_for(ips: Any) -> tuple[np.ndarray, np.ndarray]:
    """(17-byte keys, valid mask) for many addresses; each distinct address is parsed once."""
    arr = _as_string_array(ips)
    n = len(arr)
    if n == 0:
        return np.zeros(0, dtype=f"S{KEY_BYTES}"), np.zeros(0, dtype=bool)
    # Addresses usually repeat: parse each distinct one once. When a sample says they
    # mostly do not, hashing them first costs more than it saves, so parse them all.
    if _mostly_distinct(arr):
        uniques = arr.to_pylist()
        indices = None
    else:
        encoded = pc.dictionary_encode(arr)
        uniques = encoded.dictionary.to_pylist()
        indices = encoded.indices
    pton, af4, af6 = socket.inet_pton, socket.AF_INET, socket.AF_INET6
    parts: list[bytes] = []
    ok: list[bool] = []
    for s in uniques:
        if s is None:
            parts.append(_INVALID_KEY)
            ok.append(False)
            continue
        try:
            if ":" in s:
                raw = pton(af6, s)
                parts.append(_TAG4 + _ZERO12 + raw[12:] if raw[:12] == _MAPPED_PREFIX else _TAG6 + raw)
            else:
                parts.append(_TAG4 + _ZERO12 + pton(af4, s))
            ok.append(True)
        except OSError:
            key = address_key(s)
            parts.append(key if key is not None else _INVALID_KEY)
            ok.append(key is not None)
    unique_keys = np.frombuffer(b"".join(parts), dtype=f"S{KEY_BYTES}")
    unique_ok = np.array(ok, dtype=bool)
    if indices is None:
        return unique_keys, unique_ok
    if indices.null_count:
        idx = indices.fill_null(0).to_numpy()
        nulls = indices.is_null().to_numpy(zero_copy_only=False)
        keys = unique_keys[idx] if len(unique_keys) else np.full(n, _INVALID_KEY, dtype=f"S{KEY_BYTES}")
        valid = unique_ok[idx] if len(unique_ok) else np.zeros(n, dtype=bool)
        keys = keys.copy()
        keys[nulls] = _INVALID_KEY
        valid = valid & ~nulls
        return keys, valid
    idx = indices.to_numpy()
    return unique_keys[idx], unique_ok[idx]


@dataclass(frozen=True)
class IPRangeExceptions:
    """The two lists, compiled once; check one address or a batch.

    >>> ex = IPRangeExceptions(blocked=("203.0.113.0/24",), skipped=("10.0.0.0/8",))
    >>> ex.check("203.0.113.9"), ex.check("10.1.2.3"), ex.check("192.0.2.1")
    (<ExceptionResult.BLOCKED: 'blocked'>, <ExceptionResult.SKIPPED: 'skipped'>, <ExceptionResult.NONE: 'none'>)
    """

    blocked: tuple[str, ...] = ()
    skipped: tuple[str, ...] = ()
    _blocked: _Intervals = field(init=False, repr=False, compare=False)
    _skipped: _Intervals = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "blocked", tuple(self.blocked))
        object.__setattr__(self, "skipped", tuple(self.skipped))
        object.__setattr__(self, "_blocked", _Intervals.build(self.blocked))
        object.__setattr__(self, "_skipped", _Intervals.build(self.skipped))

    @classmethod
    def from_configuration(
        cls, config: RiskConfiguration | RiskExceptionConfigurationType | None
    ) -> IPRangeExceptions:
        rec = config.RiskExceptionConfiguration if isinstance(config, RiskConfiguration) else config
        if rec is None:
            return cls()
        return cls(blocked=tuple(rec.BlockedIPRangeList or ()), skipped=tuple(rec.SkippedIPRangeList or ()))

    @property
    def empty(self) -> bool:
        return not self.blocked and not self.skipped

    def check(self, ip: str | None) -> ExceptionResult:
        """One address (text). Blocked wins over skipped; an invalid address matches nothing."""
        key = address_key(ip)
        if key is None:
            return ExceptionResult.NONE
        if self._blocked.contains(key):
            return ExceptionResult.BLOCKED
        if self._skipped.contains(key):
            return ExceptionResult.SKIPPED
        return ExceptionResult.NONE

    def results(self, ips: Sequence[str | None]) -> list[ExceptionResult]:
        """One result per address, as :meth:`check` gives it: none parsed when both lists are empty (the usual
        configuration), a few one by one, more set-wise (:meth:`check_many`)."""
        if self.empty:
            return [ExceptionResult.NONE] * len(ips)
        if len(ips) <= 8:
            return [self.check(ip) for ip in ips]
        return self.check_many(ips).results()

    def check_many(self, ips: Any) -> ExceptionMatches:
        """Many addresses: a pyarrow array / chunked array, numpy array, pandas Series or any sequence of str/None."""
        keys, valid = keys_for(ips)
        blocked = self._blocked.contains_many(keys) & valid
        skipped = self._skipped.contains_many(keys) & valid & ~blocked
        return ExceptionMatches(blocked=blocked, skipped=skipped, valid=valid)


def check_ip(config: RiskConfiguration, ip: str | None) -> ExceptionResult:
    """Convenience for one-off checks; compile an :class:`IPRangeExceptions` once when checking many."""
    return IPRangeExceptions.from_configuration(config).check(ip)

