"""The model registry: table ``models`` in the store (this module owns its SQL, STYLE.md habit 7).

Each row is one trained model: ``version`` (1, 2, ...), ``created_at``,
``kind`` (``RiskModel/supervised``, ``RiskModel/unlabeled``, ...), the feature
columns, the training window, metrics (JSON), free metadata (JSON), the
pickled estimator (``model`` BLOB, with its SHA-256) and an ``active`` flag:
exactly one row is active after any save or activation, and scoring uses it.

The store is trusted: a pickled model is code, so a store from someone you do
not trust must not be loaded. The SHA-256 guards against a damaged blob, not
against a malicious one.
"""

from __future__ import annotations

import hashlib
import json
import math
import pickle
from dataclasses import dataclass, field
from datetime import datetime, timezone

import duckdb

from ingest.store import Migration, rollback
from risk.model.errors import ModelError, NoModelError


def _sklearn_version() -> str:
    import sklearn  # not at import: the store's migrations import this module, and most commands never need it

    return sklearn.__version__


MIGRATIONS = (
    Migration(
        "risk_model_001_models",
        (
            """CREATE TABLE IF NOT EXISTS models (
                 version INTEGER PRIMARY KEY,
                 created_at TIMESTAMPTZ NOT NULL,
                 kind VARCHAR NOT NULL,
                 features VARCHAR NOT NULL,
                 train_since TIMESTAMPTZ,
                 train_until TIMESTAMPTZ,
                 metrics VARCHAR,
                 metadata VARCHAR,
                 sklearn_version VARCHAR,
                 sha256 VARCHAR NOT NULL,
                 model BLOB NOT NULL,
                 active BOOLEAN NOT NULL DEFAULT FALSE
               )""",
        ),
    ),
)


@dataclass(frozen=True)
class ModelMetadata:
    """What is recorded next to a model: its training window, metrics and anything else worth keeping."""

    train_since: datetime | None = None
    train_until: datetime | None = None
    metrics: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)


@dataclass(frozen=True)
class ModelRecord:
    """One registry row without the blob."""

    version: int
    created_at: datetime
    kind: str
    features: list[str]
    train_since: datetime | None
    train_until: datetime | None
    metrics: dict
    metadata: dict
    sklearn_version: str
    active: bool


def model_kind(model) -> str:
    mode = getattr(model, "mode_", None)
    return type(model).__name__ + (f"/{mode}" if mode else "")


def json_safe(obj):
    """``obj`` with every NaN or infinite float made None: JSON has no NaN (``json.dumps`` would write the
    invalid token ``NaN``), and metrics stored before this may hold one."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


def _json(obj) -> str:
    return json.dumps(json_safe(obj), sort_keys=True, default=str, allow_nan=False)


def save_model(con: duckdb.DuckDBPyConnection, model, metadata: ModelMetadata | None = None, *,
               activate: bool = True) -> int:
    """Store a fitted model with its metadata as the next version (active unless ``activate=False``); return the version."""
    if not hasattr(model, "feature_names_in_") or not hasattr(model, "score_samples"):
        raise ModelError(f"only a fitted estimator with score_samples can be saved; got {type(model).__name__}")
    metadata = metadata or ModelMetadata()
    blob = pickle.dumps(model, protocol=pickle.HIGHEST_PROTOCOL)
    digest = hashlib.sha256(blob).hexdigest()
    features = [str(c) for c in model.feature_names_in_]
    con.execute("BEGIN TRANSACTION")
    try:
        version = int(con.execute("SELECT coalesce(max(version), 0) + 1 FROM models").fetchall()[0][0])
        if activate:
            con.execute("UPDATE models SET active = FALSE WHERE active")
        con.execute(
            """INSERT INTO models (version, created_at, kind, features, train_since, train_until, metrics,
                                   metadata, sklearn_version, sha256, model, active)
               VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
            [version, datetime.now(timezone.utc), model_kind(model), _json(features), metadata.train_since,
             metadata.train_until, _json(metadata.metrics), _json(metadata.extra), _sklearn_version(), digest,
             blob, activate],
        )
        con.execute("COMMIT")
    except BaseException:
        rollback(con)
        raise
    return version


def _record(row) -> ModelRecord:
    return ModelRecord(version=row[0], created_at=row[1], kind=row[2], features=json.loads(row[3]),
                       train_since=row[4], train_until=row[5], metrics=json_safe(json.loads(row[6] or "{}")),
                       metadata=json_safe(json.loads(row[7] or "{}")), sklearn_version=row[8], active=bool(row[9]))


_RECORD_COLS = "version, created_at, kind, features, train_since, train_until, metrics, metadata, sklearn_version, active"


def list_models(con: duckdb.DuckDBPyConnection) -> list[ModelRecord]:
    """Every registered model, oldest first."""
    return [_record(r) for r in con.execute(f"SELECT {_RECORD_COLS} FROM models ORDER BY version").fetchall()]


def load_model(con: duckdb.DuckDBPyConnection, version: int):
    """(model, ModelRecord) of one version; a clear error when it does not exist or its blob is damaged."""
    rows = con.execute(f"SELECT {_RECORD_COLS}, sha256, model FROM models WHERE version = ?", [version]).fetchall()
    if not rows:
        raise ModelError(f"model version {version!r} is not in the registry")
    row = rows[0]
    blob = bytes(row[-1])
    if hashlib.sha256(blob).hexdigest() != row[-2]:
        raise ModelError(f"model version {version}: stored model does not match its SHA-256; retrain with `riskgate train`")
    try:
        model = pickle.loads(blob)
    except Exception as exc:  # noqa: BLE001 - a blob from another library version: say so
        raise ModelError(f"model version {version} cannot be loaded (trained with scikit-learn {row[8]}, "
                         f"running {_sklearn_version()}): {exc}; retrain with `riskgate train`") from None
    return model, _record(row[:-2])


def active_version(con: duckdb.DuckDBPyConnection) -> int | None:
    rows = con.execute("SELECT version FROM models WHERE active ORDER BY version DESC LIMIT 1").fetchall()
    return int(rows[0][0]) if rows else None


def load_active(con: duckdb.DuckDBPyConnection, *, fit_if_missing: bool = False):
    """(model, version) of the active model.

    With none trained: a :class:`NoModelError` telling the user to run
    ``riskgate train``; or, with ``fit_if_missing=True``, the unlabeled
    statistical model is fitted on every event in the store, saved as the
    next version and returned.
    """
    version = active_version(con)
    if version is None:
        if not fit_if_missing:
            raise NoModelError("no trained model in the store; run `riskgate train` first")
        from risk.model.training import train

        result = train(con, use_labels=False, inject_attacks=0)
        return result.model, result.version
    model, _ = load_model(con, version)
    return model, version


def activate(con: duckdb.DuckDBPyConnection, version: int) -> None:
    """Make ``version`` the active model (e.g. to roll back)."""
    if not con.execute("SELECT 1 FROM models WHERE version = ?", [version]).fetchall():
        raise ModelError(f"model version {version!r} is not in the registry")
    con.execute("BEGIN TRANSACTION")
    try:
        con.execute("UPDATE models SET active = (version = ?)", [version])
        con.execute("COMMIT")
    except BaseException:
        rollback(con)
        raise
