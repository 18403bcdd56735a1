"""Opening the store for the risk stages: ingest's tables plus the tables risk owns.

Each risk module that owns tables exposes ``MIGRATIONS`` (a tuple of
``ingest.store.Migration`` with names prefixed ``risk_<module>_``) and keeps
its SQL to itself. They are applied in the order of ``MIGRATION_MODULES``.
"""

from __future__ import annotations

import importlib
import os

from ingest import store as ingest_store
from ingest.store import Migration

#: Modules whose MIGRATIONS are applied, in this order (append new owners at the end).
MIGRATION_MODULES = (
    "risk.config",
    "risk.credentials",
    "risk.notify",
    "risk.feedback",
    "risk.levels",
    "risk.model",
    "risk.score",
)


def risk_migrations() -> list[Migration]:
    out: list[Migration] = []
    for name in MIGRATION_MODULES:
        try:
            mod = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:
                continue
            raise
        out.extend(getattr(mod, "MIGRATIONS", ()))
    return out


def connect(
    db: str | os.PathLike | None = None, *, read_only: bool | None = False, wait: float | None = None,
    settings: tuple[str, ...] = (),
) -> ingest_store.Store:
    """Open the store with every ingest and risk table migrated (see ``ingest.store.connect``)."""
    return ingest_store.connect(
        db, read_only=read_only, wait=wait, migrations=(*ingest_store.MIGRATIONS, *risk_migrations()),
        settings=settings,
    )
