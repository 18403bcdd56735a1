"""risk.model: the risk estimators, the Freeman et al. baseline, the model registry and training.

See :mod:`risk.model.estimators` (RiskModel, FreemanBaseline),
:mod:`risk.model.registry` (table ``models``: save_model, load_active) and
:mod:`risk.model.training` (labels, synthetic attack injection, ``train``).
"""

from __future__ import annotations

#: Columns of compute_features' output that are keys, not model inputs.
KEY_COLUMNS = ("event_id", "username", "creation_date", "event_type", "event_response")

from risk.model.errors import ModelError, NoModelError  # noqa: E402
from risk.model.estimators import FREEMAN_COLUMNS, FreemanBaseline, RiskModel  # noqa: E402
from risk.model.registry import (  # noqa: E402
    MIGRATIONS,
    ModelMetadata,
    ModelRecord,
    activate,
    list_models,
    load_active,
    load_model,
    save_model,
)

__all__ = [
    "KEY_COLUMNS", "FREEMAN_COLUMNS", "FreemanBaseline", "RiskModel", "ModelError", "NoModelError",
    "MIGRATIONS", "ModelMetadata", "ModelRecord", "activate", "list_models", "load_active", "load_model",
    "save_model",
]
