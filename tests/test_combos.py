"""decide()'s inputs as codes (risk.combos): every form of column gives codes that map back to its values."""

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from risk import combos

VALUES = ["web1", None, "web2", "web1", None, "web3"] * 20


@pytest.mark.parametrize("form", [
    "few", "list", "arrow", "chunked", "pandas object", "pandas str", "pandas categorical", "pandas NaN",
])
def test_factorize_gives_codes_that_map_back_to_each_value(form):
    values = VALUES[:5] if form == "few" else VALUES
    column = {
        "few": lambda: list(values),
        "list": lambda: list(values),
        "arrow": lambda: pa.array(values),
        "chunked": lambda: pa.chunked_array([pa.array(values[:7]), pa.array(values[7:])]),
        "pandas object": lambda: pd.Series(values, dtype=object),
        "pandas str": lambda: pd.Series(values, dtype="string[pyarrow]"),
        "pandas categorical": lambda: pd.Series(values, dtype="category"),
        "pandas NaN": lambda: pd.Series([np.nan if v is None else v for v in values], dtype=object),
    }[form]()
    codes, distinct = combos.factorize(column)
    assert codes.dtype == np.int64 and len(codes) == len(values)
    assert [distinct[c] for c in codes] == values  # missing values come back as None
    assert len(distinct) == len(set(values)) and sorted(set(codes.tolist())) == list(range(len(distinct)))


@pytest.mark.parametrize("n", [10, 1000])  # the Python path for a few rows, numpy's beyond
def test_combinations_number_each_distinct_combination_once(n):
    rng = np.random.default_rng(n)
    a, b, c = rng.integers(0, 3, n), rng.integers(0, 5, n), rng.integers(0, 2, n)
    index, first = combos.combinations((a, 3), (b, 5), (c, 2))
    keys = list(zip(a.tolist(), b.tolist(), c.tolist()))
    assert len(first) == len(set(keys)) and sorted(set(index.tolist())) == list(range(len(first)))
    for i, key in enumerate(keys):  # same combination, same index; the first item of each is its first
        assert keys[first[index[i]]] == key
    assert all(first[k] == min(i for i in range(n) if index[i] == k) for k in range(len(first)))
