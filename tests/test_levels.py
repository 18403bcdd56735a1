"""risk.levels: thresholds -> levels, versioned in the store."""

from __future__ import annotations

import math
from datetime import datetime, timezone

import numpy as np
import pytest

import risk.store
from ingest.errors import RiskgateError
from risk.levels import DEFAULT_THRESHOLDS, Thresholds, ThresholdsError, current_thresholds, history, levels, \
    set_thresholds, thresholds_at


@pytest.fixture
def con(tmp_path):
    c = risk.store.connect(tmp_path / "s.duckdb")
    yield c
    c.close()


def test_levels_at_and_around_each_threshold():
    t = Thresholds(low=0.2, medium=0.5, high=0.8)
    scores = np.array([0.0, 0.1999, 0.2, 0.4999, 0.5, 0.7999, 0.8, 1.0])
    assert levels(scores, t).tolist() == [None, None, "Low", "Low", "Medium", "Medium", "High", "High"]
    assert levels([], t).tolist() == []
    assert levels([0.9], Thresholds(0.5, 0.5, 0.5)).tolist() == ["High"]  # equal thresholds: the highest wins


def test_nan_score_is_an_error_not_no_risk():
    with pytest.raises(RiskgateError, match="score 1 of 3 is NaN"):
        levels([0.1, math.nan, 0.9], DEFAULT_THRESHOLDS)


@pytest.mark.parametrize("args, message", [
    ((0.5, 0.4, 0.9), "ordered low <= medium <= high, got low=0.5, medium=0.4"),
    ((-0.1, 0.4, 0.9), "threshold low must be a number in \\[0, 1\\], got -0.1"),
    ((0.1, 0.4, math.inf), "threshold high must be a number in \\[0, 1\\], got inf"),
    ((0.1, "0.4", 0.9), "threshold medium must be a number in \\[0, 1\\], got '0.4'"),
    ((0.1, True, 0.9), "threshold medium must be a number"),
])
def test_bad_thresholds_say_what_is_wrong(args, message):
    with pytest.raises(ThresholdsError, match=message):
        Thresholds(*args)


def test_defaults_until_set_then_each_change_is_a_new_version(con):
    assert current_thresholds(con) == (DEFAULT_THRESHOLDS, 0)
    assert DEFAULT_THRESHOLDS.to_dict() == {"low": 0.2, "medium": 0.5, "high": 0.8}
    v1 = set_thresholds(con, Thresholds(0.1, 0.3, 0.6), source="test")
    v2 = set_thresholds(con, Thresholds(0.15, 0.35, 0.7), now=datetime(2026, 5, 1, tzinfo=timezone.utc))
    assert (v1, v2) == (1, 2)
    assert current_thresholds(con) == (Thresholds(0.15, 0.35, 0.7), 2)
    assert thresholds_at(con, 1) == Thresholds(0.1, 0.3, 0.6) and thresholds_at(con, 0) == DEFAULT_THRESHOLDS
    h = history(con)
    assert [r["version"] for r in h] == [1, 2] and h[0]["source"] == "test"
    assert h[1]["changed_at"].startswith("2026-05-01")
    with pytest.raises(RiskgateError, match="no thresholds version 7"):
        thresholds_at(con, 7)


def test_thresholds_equal_to_those_in_force_are_not_stored_again(con):
    assert set_thresholds(con, DEFAULT_THRESHOLDS, source="same as the defaults") == 0
    assert history(con) == []
    assert set_thresholds(con, Thresholds(0.1, 0.3, 0.6)) == 1
    assert set_thresholds(con, Thresholds(0.1, 0.3, 0.6), source="again") == 1
    assert [r["version"] for r in history(con)] == [1]
    assert set_thresholds(con, DEFAULT_THRESHOLDS) == 2, "back to the defaults is a change"
    assert set_thresholds(con, Thresholds(0.1, 0.3, 0.6000001)) == 3


def test_versions_survive_reopening(tmp_path):
    path = tmp_path / "s.duckdb"
    c = risk.store.connect(path)
    set_thresholds(c, Thresholds(0.3, 0.6, 0.9))
    c.close()
    c = risk.store.connect(path)
    assert current_thresholds(c) == (Thresholds(0.3, 0.6, 0.9), 1)
    c.close()
