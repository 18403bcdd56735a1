"""risk.model: the risk estimators, the Freeman et al. baseline, the model registry and training.

See :mod:`risk.model.estimators` (RiskModel, FreemanBaseline),
:mod:`risk.model.registry` (table ``models``: save_model, load_active) and
:mod:`risk.model.training` (labels, synthetic attack injection, ``train``).
"""

from __future__ import annotations

from risk.model.errors import ModelError, NoModelError
from risk.model.estimators import FREEMAN_COLUMNS, FreemanBaseline, RiskModel
from risk.model.registry import (
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
    "FREEMAN_COLUMNS", "FreemanBaseline", "RiskModel", "ModelError", "NoModelError",
    "MIGRATIONS", "ModelMetadata", "ModelRecord", "activate", "list_models", "load_active", "load_model",
    "save_model",
]
