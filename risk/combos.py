"""decide()'s inputs as codes: what batch scoring and tuning share to call it once per distinct combination.

``risk.decide.decide`` is a pure function of a handful of categorical inputs
(level, IP-range exception, credentials check, event type, pool, app client,
MFA). Over many events, each input column becomes integer codes of its
distinct values (:func:`factorize`, by Arrow), the columns' codes become one
code per combination (:func:`combinations`, by numpy), decide() runs once per
combination, and every event takes its combination's result. The work per
event is Arrow's and numpy's, not Python's; a few rows (the service) take a
Python path, which is quicker there than setting up Arrow's kernels.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

#: the IP-range exception of each code of ``risk.exceptions.ExceptionMatches.codes``, as stored
EXCEPTION_NAMES = ("none", "skipped", "blocked")
#: at most this many rows: codes are found in Python
FEW_ROWS = 64


def factorize(values) -> tuple[np.ndarray, list]:
    """Per item the index of its value among the distinct values, and those values (None among them when
    present). ``values``: a list, an Arrow (chunked) array or a pandas Series (NaN counts as None)."""
    if isinstance(values, list) and len(values) <= FEW_ROWS:
        seen: dict = {}
        return np.array([seen.setdefault(v, len(seen)) for v in values], dtype=np.int64), list(seen)
    if isinstance(values, (pa.Array, pa.ChunkedArray)):
        arr = values
    elif isinstance(values, list):
        arr = pa.array(values)
    else:  # a pandas Series
        arr = pa.array(values, from_pandas=True)
    if pa.types.is_dictionary(arr.type):  # categorical: the values themselves
        arr = arr.cast(arr.type.value_type)
    distinct = pc.unique(arr)
    index = pc.index_in(arr, value_set=distinct, skip_nulls=False)
    return np.asarray(index.to_numpy(zero_copy_only=False), dtype=np.int64), distinct.to_pylist()


def combinations(*codes: tuple[np.ndarray, int]) -> tuple[np.ndarray, np.ndarray]:
    """(index of each item's combination, first item of each combination, in index order) for per-item codes,
    each given with how many values it takes."""
    n = len(codes[0][0])
    if n <= FEW_ROWS:  # numpy's sort costs more than it saves here
        seen: dict = {}
        inverse, first = [], []
        for i, key in enumerate(zip(*(c.tolist() for c, _ in codes))):
            code = seen.setdefault(key, len(seen))
            if code == len(first):
                first.append(i)
            inverse.append(code)
        return np.array(inverse, dtype=np.int64), np.array(first, dtype=np.int64)
    key = np.zeros(n, dtype=np.int64)
    for c, size in codes:
        key = key * max(size, 1) + c
    _, first, inverse = np.unique(key, return_index=True, return_inverse=True)
    return inverse.reshape(-1), first


def pool_codes(values, pool_of: Callable) -> tuple[np.ndarray, list]:
    """:func:`factorize` of the events' pool ids, each first mapped by ``pool_of`` (events without a pool id
    are assessed under the store's pool: ``risk.config.choose_pool``)."""
    raw, raw_pools = factorize(values)
    mapped = [pool_of(p) for p in raw_pools]
    pools = list(dict.fromkeys(mapped))
    return np.array([pools.index(p) for p in mapped], dtype=np.int64)[raw], pools


def exception_codes(ips, pool: np.ndarray, pools: list, client: np.ndarray, clients: list,
                    ranges_of: Callable) -> np.ndarray:
    """Per event the code (``EXCEPTION_NAMES``) of its address under the IP-range exceptions
    ``ranges_of(pool, client)`` (a ``risk.exceptions.IPRangeExceptions``) of its pool and app client.

    ``ips``: the addresses as a list, an Arrow (chunked) array or a pandas Series. Addresses are parsed only
    for the pools and clients whose configuration has ranges."""
    exc = np.zeros(len(pool), dtype=np.int8)
    group, firsts = combinations((pool, len(pools)), (client, len(clients)))
    for g, i in enumerate(firsts.tolist()):
        ranges = ranges_of(pools[pool[i]], clients[client[i]])
        if ranges.empty:  # the usual configuration
            continue
        rows = np.flatnonzero(group == g)
        if isinstance(ips, (pa.Array, pa.ChunkedArray)):
            some = ips.take(pa.array(rows))
        elif isinstance(ips, list):
            some = [ips[j] for j in rows]
        else:  # a pandas Series
            some = ips.iloc[rows]
        exc[rows] = ranges.check_many(some).codes
    return exc
