"""Event feedback (Cognito AdminUpdateAuthEventFeedback / UpdateAuthEventFeedback), minimal.

The ``feedback`` table keeps every feedback given, never overwriting: the
latest one per event (by ``feedback_date``, then insertion order) is the one
in force. ``Invalid`` means "this was not me": the event then stops counting
as part of the user's known history in ``risk.features`` (a later sign-in
from the same IP or device is new again). SQL for ``feedback`` lives here.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timezone

import duckdb
import pyarrow as pa

from ingest.errors import RiskgateError
from ingest.store import Migration

FEEDBACK_VALUES = ("Valid", "Invalid")
PROVIDERS = ("Admin", "User")


class FeedbackError(RiskgateError):
    """Feedback that cannot be recorded (unknown event, bad value or provider)."""


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        "risk_feedback_0001_table",
        (
            "CREATE SEQUENCE IF NOT EXISTS feedback_seq",
            """CREATE TABLE IF NOT EXISTS feedback (
                 event_id VARCHAR NOT NULL,
                 feedback_value VARCHAR NOT NULL,
                 provider VARCHAR NOT NULL,
                 feedback_date TIMESTAMPTZ NOT NULL,
                 seq BIGINT DEFAULT nextval('feedback_seq')
               )""",
        ),
    ),
)


def set_feedback(
    con: duckdb.DuckDBPyConnection,
    event_id: str,
    value: str,
    provider: str = "Admin",
    *,
    when: datetime | None = None,
) -> None:
    """Record ``value`` (Valid | Invalid) for ``event_id`` from ``provider`` (Admin | User)."""
    if value not in FEEDBACK_VALUES:
        raise FeedbackError(f"FeedbackValue must be one of {', '.join(FEEDBACK_VALUES)}, got {value!r}")
    if provider not in PROVIDERS:
        raise FeedbackError(f"provider must be one of {', '.join(PROVIDERS)}, got {provider!r}")
    found = con.execute("SELECT count(*) FROM events WHERE event_id = ?", [event_id]).fetchall()
    if not found or found[0][0] == 0:
        raise FeedbackError(f"no event with EventId {event_id!r} in the store")
    con.execute(
        "INSERT INTO feedback (event_id, feedback_value, provider, feedback_date) VALUES (?, ?, ?, ?)",
        [event_id, value, provider, when or datetime.now(timezone.utc)],
    ).fetchall()


#: SQL of the feedback in force per event (for modules that read it set-wise, e.g. risk.features).
LATEST_FEEDBACK_SQL = """
    SELECT event_id, feedback_value, provider, feedback_date
    FROM feedback
    QUALIFY row_number() OVER (PARTITION BY event_id ORDER BY feedback_date DESC, seq DESC) = 1
"""

#: SQL of the event ids whose feedback in force is Invalid.
INVALID_EVENTS_SQL = f"SELECT event_id FROM ({LATEST_FEEDBACK_SQL}) WHERE feedback_value = 'Invalid'"


def latest_feedback(con: duckdb.DuckDBPyConnection, event_ids: Sequence[str] | None = None) -> pa.Table:
    """The feedback in force (event_id, feedback_value, provider, feedback_date), for ``event_ids`` or all."""
    if event_ids is None:
        return con.sql(LATEST_FEEDBACK_SQL + " ORDER BY event_id").to_arrow_table()
    con.register("_rg_feedback_q", pa.table({"event_id": pa.array(list(event_ids), pa.string())}))
    try:
        return con.sql(
            f"SELECT l.* FROM ({LATEST_FEEDBACK_SQL}) l SEMI JOIN _rg_feedback_q q USING (event_id) ORDER BY event_id"
        ).to_arrow_table()
    finally:
        con.unregister("_rg_feedback_q")
