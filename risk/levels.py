"""Risk levels: thresholds on the model's score -> High / Medium / Low / no risk.

Kept apart from the model (STYLE.md, habit 3): tuning writes thresholds, not
models. ``Thresholds`` are on the score of ``risk.model.RiskModel.score_samples``,
a calibrated probability of account takeover in [0, 1]:

* score >= ``high``   -> ``"High"``
* score >= ``medium`` -> ``"Medium"``
* score >= ``low``    -> ``"Low"``
* otherwise           -> ``None`` (no risk)

Each change is a new version in the ``risk_thresholds`` table (the SQL for it
lives here). With no version stored, ``DEFAULT_THRESHOLDS`` apply, reported as
version 0. The defaults (0.2 / 0.5 / 0.8) are deliberately round: Low marks a
sign-in that is more likely than not legitimate but worth recording, Medium one
the model thinks at least as likely an attack as not, High a near-certain
attack. A later issue tunes them against a target challenge rate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timezone

import duckdb
import numpy as np

from ingest.errors import ConfigurationError, RiskgateError
from ingest.store import Migration

LEVELS = ("Low", "Medium", "High")


class ThresholdsError(ConfigurationError):
    """Thresholds that are not three finite, ordered numbers in [0, 1]."""


@dataclass(frozen=True)
class Thresholds:
    """Score thresholds of the three risk levels: 0 <= low <= medium <= high <= 1."""

    low: float
    medium: float
    high: float

    def __post_init__(self) -> None:
        for name in ("low", "medium", "high"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or not 0.0 <= v <= 1.0:
                raise ThresholdsError(f"threshold {name} must be a number in [0, 1], got {v!r}")
        if not self.low <= self.medium <= self.high:
            raise ThresholdsError(
                f"thresholds must be ordered low <= medium <= high, got low={self.low}, "
                f"medium={self.medium}, high={self.high}"
            )

    def to_dict(self) -> dict[str, float]:
        return {"low": float(self.low), "medium": float(self.medium), "high": float(self.high)}


DEFAULT_THRESHOLDS = Thresholds(low=0.2, medium=0.5, high=0.8)

MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        "risk_levels_0001_thresholds",
        (
            """CREATE TABLE IF NOT EXISTS risk_thresholds (
                 version BIGINT PRIMARY KEY,
                 changed_at TIMESTAMPTZ NOT NULL,
                 low DOUBLE NOT NULL,
                 medium DOUBLE NOT NULL,
                 high DOUBLE NOT NULL,
                 source VARCHAR
               )""",
        ),
    ),
)


def set_thresholds(
    con: duckdb.DuckDBPyConnection, t: Thresholds, *, source: str | None = None, now: datetime | None = None
) -> int:
    """Store ``t`` as a new version and return its number (previous maximum + 1).

    Thresholds equal to those in force (the defaults, version 0, when none is stored) are not stored again:
    their version is returned, and nothing is written (a second identical version would only make the
    history and the assessments' ``thresholds_version`` say that something changed)."""
    if not isinstance(t, Thresholds):
        raise ThresholdsError(f"expected a Thresholds, got {type(t).__name__}")
    in_force, version = current_thresholds(con)
    if t.to_dict() == in_force.to_dict():
        return version
    rows = con.execute(
        """INSERT INTO risk_thresholds (version, changed_at, low, medium, high, source)
           SELECT coalesce(max(version), 0) + 1, ?, ?, ?, ?, ? FROM risk_thresholds
           RETURNING version""",
        [now or datetime.now(timezone.utc), t.low, t.medium, t.high, source],
    ).fetchall()
    return int(rows[0][0])


def current_thresholds(con: duckdb.DuckDBPyConnection) -> tuple[Thresholds, int]:
    """The thresholds in force and their version (``DEFAULT_THRESHOLDS``, 0, when none is stored)."""
    rows = con.execute(
        "SELECT low, medium, high, version FROM risk_thresholds ORDER BY version DESC LIMIT 1"
    ).fetchall()
    if not rows:
        return DEFAULT_THRESHOLDS, 0
    low, medium, high, version = rows[0]
    return Thresholds(low, medium, high), int(version)


def thresholds_at(con: duckdb.DuckDBPyConnection, version: int) -> Thresholds:
    """The thresholds of ``version`` (0 = the defaults)."""
    if version == 0:
        return DEFAULT_THRESHOLDS
    rows = con.execute("SELECT low, medium, high FROM risk_thresholds WHERE version = ?", [version]).fetchall()
    if not rows:
        raise RiskgateError(f"no thresholds version {version} in the store")
    return Thresholds(*rows[0])


def history(con: duckdb.DuckDBPyConnection) -> list[dict]:
    """Every stored version, oldest first."""
    rows = con.execute(
        "SELECT version, changed_at, low, medium, high, source FROM risk_thresholds ORDER BY version"
    ).fetchall()
    return [
        {"version": int(v), "changed_at": c.astimezone(timezone.utc).isoformat(), "low": lo, "medium": me,
         "high": hi, "source": s}
        for v, c, lo, me, hi, s in rows
    ]


def level_index(scores, t: Thresholds) -> np.ndarray:
    """0 (no risk), 1 (Low), 2 (Medium), 3 (High) per score, as int8 (``LEVEL_NAMES`` names them).

    A NaN score is below every threshold here; :func:`levels` refuses it.
    """
    s = np.asarray(scores, dtype=float).reshape(-1)
    return (s >= t.low).astype(np.int8) + (s >= t.medium) + (s >= t.high)


#: the level of each :func:`level_index`
LEVEL_NAMES = (None, *LEVELS)


def levels(scores, t: Thresholds) -> np.ndarray:
    """Vectorised level of each score: an object array of "High" / "Medium" / "Low" / None.

    A NaN score (the model could not score an event) is an error naming the
    first such position: it must not pass silently as "no risk".
    """
    return np.array(LEVEL_NAMES, dtype=object)[checked_level_index(scores, t)]


def checked_level_index(scores, t: Thresholds) -> np.ndarray:
    """:func:`level_index`, refusing a NaN score with the first such position."""
    s = np.asarray(scores, dtype=float).reshape(-1)
    bad = np.flatnonzero(np.isnan(s))
    if bad.size:
        raise RiskgateError(f"score {int(bad[0])} of {s.size} is NaN; a risk level needs a number")
    return level_index(s, t)
