"""Errors of the model stage (one family with every other riskgate error)."""

from __future__ import annotations

from ingest.errors import RiskgateError


class ModelError(RiskgateError):
    """A model cannot be fitted, scored, saved or loaded as asked; the message says what was expected."""


class NoModelError(ModelError):
    """The store holds no trained model yet."""
