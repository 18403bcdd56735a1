"""Reading a store file from a test: a short read-only connection, closed again (the store's lease is not taken)."""

from __future__ import annotations

import duckdb


def q(db, sql: str, params=()) -> list[tuple]:
    """The rows of ``sql`` (bound ``params``) over the DuckDB file ``db``, opened read-only for this one query."""
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute(sql, list(params)).fetchall()
    finally:
        con.close()
