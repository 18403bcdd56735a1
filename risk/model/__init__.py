"""risk.model: the risk estimators, the Freeman et al. baseline, the model registry and training.

See :mod:`risk.model.estimators` (RiskModel, FreemanBaseline),
:mod:`risk.model.registry` (table ``models``: save_model, load_active) and
:mod:`risk.model.training` (labels, synthetic attack injection, ``train``).
"""

from __future__ import annotations

from importlib import import_module

from risk.model.errors import ModelError, NoModelError

#: exported name -> the module that defines it, imported on first use (PEP 562): opening the store imports
#: this package for its MIGRATIONS, and importing scikit-learn (about a second) waits until a model is needed
_LAZY = {
    **dict.fromkeys(("FREEMAN_COLUMNS", "FreemanBaseline", "RiskModel"), "risk.model.estimators"),
    **dict.fromkeys(("MIGRATIONS", "ModelMetadata", "ModelRecord", "activate", "list_models", "load_active",
                     "load_model", "save_model"), "risk.model.registry"),
}


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


__all__ = [
    "FREEMAN_COLUMNS", "FreemanBaseline", "RiskModel", "ModelError", "NoModelError",
    "MIGRATIONS", "ModelMetadata", "ModelRecord", "activate", "list_models", "load_active", "load_model",
    "save_model",
]
