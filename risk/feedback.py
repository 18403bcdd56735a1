"""Event feedback (Cognito AdminUpdateAuthEventFeedback / UpdateAuthEventFeedback), minimal.

The ``feedback`` table keeps every feedback given, never overwriting: the
latest one per event (by ``feedback_date``, then insertion order) is the one
in force. ``Invalid`` means "this was not me": the event then stops counting
as part of the user's known history in ``risk.features`` (a later sign-in
from the same IP or device is new again). SQL for ``feedback`` lives here.

Feedback comes from an administrator (``riskgate feedback``, the service's
AdminUpdateAuthEventFeedback, the dashboard: Provider ``Admin``), from the
user (a notification link's token: ``User``), and from the exports
``riskgate ingest`` reads (:func:`record_imported`: the EventFeedback of
AdminListUserAuthEvents output, the user-activity export's ``eventFeedback*``,
with their own provider and date). All are rows of the one table, and the
latest by date is in force whichever way it came.

The ``prevented_events`` table holds the sign-ins the inline service blocked
(its answer's ``Action`` was ``Block``: the application refused them). Such a
sign-in did not happen: it joins no user's known history and counts as a
failed attempt, whatever response the application reported (it reports
``Pass`` once the password is right, before it asks). Otherwise every block
would teach the user's history the attacker's IP, network and device, and
the attacker's next try would pass. Feedback ``Valid`` ("this was me") on it
makes it the user's sign-in again. Batch scoring records none: the stored
events it assesses have already happened, their response says how.
:func:`known_sql` and :func:`failed_sql` are the one definition every reader
of the history uses (``risk.features``, ``risk.online``).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timezone

import duckdb
import pyarrow as pa

from ingest.errors import RiskgateError
from ingest.labels import FALSE_VALUES, TRUE_VALUES
from ingest.schema import FEEDBACK_PROVIDERS, FEEDBACK_VALUES
from ingest.store import Migration

PROVIDERS = FEEDBACK_PROVIDERS


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
    Migration(
        "risk_feedback_0002_prevented_events",
        ("""CREATE TABLE IF NOT EXISTS prevented_events (
                 event_id VARCHAR PRIMARY KEY,
                 prevented_at TIMESTAMPTZ NOT NULL
               )""",),
    ),
)


def feedback_value(text: str) -> str:
    """``valid`` / ``Invalid`` / ``INVALID``... -> the Cognito spelling (Valid | Invalid); for people and links."""
    for v in FEEDBACK_VALUES:
        if isinstance(text, str) and text.strip().lower() == v.lower():
            return v
    raise FeedbackError(f"FeedbackValue must be one of {', '.join(FEEDBACK_VALUES)}, got {text!r}")


def set_feedback(
    con: duckdb.DuckDBPyConnection,
    event_id: str,
    value: str,
    provider: str = "Admin",
    *,
    when: datetime | None = None,
) -> None:
    """Record ``value`` (exactly Valid | Invalid, as Cognito's API) for ``event_id`` from ``provider`` (Admin | User).
    An id no event can have (``ingest.schema.event_id_problem``) is refused as such."""
    from ingest.schema import event_id_problem

    problem = event_id_problem(event_id)
    if problem:
        raise FeedbackError(problem)
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


def record_imported(con: duckdb.DuckDBPyConnection, table: pa.Table) -> int:
    """Record the feedback an ingested export carries (``ingest.schema.FEEDBACK_SCHEMA``: event_id, feedback_value,
    provider, feedback_date), set-wise; return how many rows were recorded. ``riskgate ingest`` passes it to
    ``ingest.pipeline.ingest_paths`` (``FeedbackSink``): it runs in each batch's transaction, after the batch's
    events are stored, with the feedback of the batch's rows that are stored (added, or duplicates of a stored
    event).

    Each row is feedback given, with its own provider and date, recorded unless the event already has that very
    feedback (same value, provider and date): ingesting the same export again adds nothing, and an export whose
    feedback changed since adds the newer one. Nothing is overwritten; the latest by date is in force, as
    always, so an export never outranks feedback given after its FeedbackDate, in riskgate or in Cognito. Rows
    of events not in the store, or whose value or provider is not Cognito's (the readers quarantine those), are
    left out.
    """
    if table is None or not table.num_rows:
        return 0
    con.register("_rg_imported_feedback", table)
    try:
        res = con.execute(
            """INSERT INTO feedback (event_id, feedback_value, provider, feedback_date)
               SELECT DISTINCT n.event_id, n.feedback_value, n.provider, n.feedback_date
               FROM _rg_imported_feedback n
               -- the stored events among the batch's (the store's ids probed against the batch's, not hashed)
               JOIN (SELECT DISTINCT event_id FROM events
                     WHERE event_id IN (SELECT event_id FROM _rg_imported_feedback)) e ON e.event_id = n.event_id
               WHERE list_contains($values, n.feedback_value) AND list_contains($providers, n.provider)
                 AND n.feedback_date IS NOT NULL
                 AND NOT EXISTS (SELECT 1 FROM feedback f
                                 WHERE f.event_id = n.event_id AND f.feedback_value = n.feedback_value
                                   AND f.provider = n.provider AND f.feedback_date = n.feedback_date)
               ORDER BY n.feedback_date""",
            {"values": list(FEEDBACK_VALUES), "providers": list(PROVIDERS)},
        ).fetchall()
    finally:
        con.unregister("_rg_imported_feedback")
    return int(res[0][0]) if res else 0


def check_feedback_token(
    con: duckdb.DuckDBPyConnection,
    token: str,
    value: str,
    *,
    username: str | None = None,
    event_id: str | None = None,
    now: datetime | None = None,
) -> dict:
    """What :func:`feedback_from_token` would record, checked and not recorded: the event id, its user, the value
    in Cognito's spelling, and the event's time and client IP (None when the store lacks them). Raises as it does.

    The one-click links' page shows this first and records only when the user confirms (a POST): mail scanners
    and link previews fetch every link of an email, and a GET that recorded would answer for the user.
    """
    from risk.notify import verify_token

    value = feedback_value(value)
    claims = verify_token(token, now=now)
    if username is not None and username != claims.username:
        raise FeedbackError("the feedback token was issued for another user")
    if event_id is not None and event_id != claims.event_id:
        raise FeedbackError("the feedback token was issued for another event")
    rows = con.execute("SELECT username, creation_date, client_ip FROM events WHERE event_id = ?",
                       [claims.event_id]).fetchall()
    if not rows:
        raise FeedbackError(f"no event with EventId {claims.event_id!r} in the store")
    owner, created, ip = rows[0]
    if owner != claims.username:
        raise FeedbackError("the feedback token's user does not own its event")
    return {"event_id": claims.event_id, "username": claims.username, "feedback_value": value,
            "creation_date": created, "client_ip": ip}


def feedback_from_token(
    con: duckdb.DuckDBPyConnection,
    token: str,
    value: str,
    *,
    username: str | None = None,
    event_id: str | None = None,
    now: datetime | None = None,
) -> dict:
    """The user's own feedback (Provider ``User``) through the signed token of a notification link.

    ``value`` in any case (the links say ``valid`` / ``invalid``).
    The token (``risk.notify.make_token``) names the event and the user;
    ``username`` / ``event_id``, when the caller has them (Cognito's
    UpdateAuthEventFeedback sends both), must match it. Returns what was
    recorded. Raises ``FeedbackError`` (or ``risk.notify.FeedbackTokenError``,
    a subclass of ``RiskgateError``) for a bad, expired or foreign token.
    """
    checked = check_feedback_token(con, token, value, username=username, event_id=event_id, now=now)
    when = now or datetime.now(timezone.utc)
    set_feedback(con, checked["event_id"], checked["feedback_value"], "User", when=when)
    return {"event_id": checked["event_id"], "username": checked["username"],
            "feedback_value": checked["feedback_value"], "provider": "User", "feedback_date": when}


def event_summary(con: duckdb.DuckDBPyConnection, event_id: str) -> dict:
    """What feedback on ``event_id`` touches: its user, time, IP, response, and how many later events of the user
    (the username in the event's pool, as the features count history) are already assessed."""
    from risk.config import unpooled_pool

    rows = con.execute(
        """SELECT e.username, e.creation_date, e.client_ip, e.device_name, e.country_iso, e.event_response,
                  (SELECT count(*) FROM events l JOIN assessments a USING (event_id)
                   WHERE l.username = e.username AND l.creation_date > e.creation_date
                     AND coalesce(l.user_pool_id, $unpooled) IS NOT DISTINCT FROM coalesce(e.user_pool_id, $unpooled))
           FROM events e WHERE e.event_id = $event_id""",
        {"event_id": event_id, "unpooled": unpooled_pool(con)},
    ).fetchall()
    if not rows:
        raise FeedbackError(f"no event with EventId {event_id!r} in the store")
    username, created, ip, device, country, response, later = rows[0]
    return {"event_id": event_id, "username": username, "creation_date": created, "client_ip": ip,
            "device_name": device, "country_iso": country, "event_response": response, "later_assessed": later}


#: SQL of the feedback in force per event (for modules that read it set-wise, e.g. risk.features).
LATEST_FEEDBACK_SQL = """
    SELECT event_id, feedback_value, provider, feedback_date
    FROM feedback
    QUALIFY row_number() OVER (PARTITION BY event_id ORDER BY feedback_date DESC, seq DESC) = 1
"""

#: SQL of what, besides its response, says whether an event is part of its user's known history: per event with
#: feedback in force or prevented by the service, ``invalid`` / ``valid`` (the feedback in force) and
#: ``prevented``. Readers LEFT JOIN it on event_id and use :func:`known_sql` / :func:`failed_sql`.
HISTORY_FLAGS_SQL = f"""
SELECT event_id, bool_or(feedback_value = 'Invalid') AS invalid, bool_or(feedback_value = 'Valid') AS valid,
       bool_or(prevented) AS prevented
FROM (SELECT event_id, feedback_value, false AS prevented FROM ({LATEST_FEEDBACK_SQL})
      UNION ALL SELECT event_id, NULL, true FROM prevented_events)
GROUP BY event_id"""


def known_sql(event: str = "e", flags: str = "fl") -> str:
    """SQL: the event joins its user's known history -- a success (``Pass``) that the feedback in force does not
    call Invalid and the service did not prevent (unless the feedback in force calls it Valid)."""
    return (f"({event}.event_response = 'Pass' AND {flags}.invalid IS NOT TRUE "
            f"AND ({flags}.prevented IS NOT TRUE OR {flags}.valid IS TRUE))")


def failed_sql(event: str = "e", flags: str = "fl") -> str:
    """SQL: the event counts as a failed attempt -- a ``Fail``, or a sign-in the service prevented that the feedback
    in force does not call Valid."""
    return f"({event}.event_response = 'Fail' OR ({flags}.prevented IS TRUE AND {flags}.valid IS NOT TRUE))"


def shown_response_sql(event: str = "e") -> str:
    """SQL: the EventResponse an event is shown with (AdminListUserAuthEvents, the dashboard): ``Fail`` for a
    sign-in the service prevented (it did not happen, whatever the application reported), else the stored one."""
    return (f"(CASE WHEN {event}.event_id IN (SELECT event_id FROM prevented_events) THEN 'Fail' "
            f"ELSE {event}.event_response END)")


def is_known(event_response: str | None, prevented: bool = False) -> bool:
    """:func:`known_sql` for a new event, which has no feedback yet."""
    return event_response == "Pass" and not prevented


def is_failed(event_response: str | None, prevented: bool = False) -> bool:
    """:func:`failed_sql` for a new event, which has no feedback yet."""
    return event_response == "Fail" or prevented


def record_prevented(con: duckdb.DuckDBPyConnection, table: str, when: datetime) -> None:
    """Record as prevented the events of the registered ``table`` (an assessments table) whose ``blocked`` is true:
    the service's answer was Block (see the module docstring). Part of the caller's transaction."""
    con.execute(f"""INSERT INTO prevented_events (event_id, prevented_at)
                    SELECT DISTINCT event_id, ?::TIMESTAMPTZ FROM {table} WHERE blocked
                    ON CONFLICT DO NOTHING""", [when]).fetchall()


#: An ``attack_type`` label with one of these values (in any case, blanks around it ignored; or empty) says
#: "no attack": ``None`` (a pandas or Python export of a missing value) is no attack type.
_NOT_AN_ATTACK = "('', 'none', 'legitimate', 'benign')"

#: SQL condition on a ``labels`` row: an ``attack_type`` label naming an attack.
ATTACK_LABEL_SQL = f"label = 'attack_type' AND lower(trim(coalesce(value, ''))) NOT IN {_NOT_AN_ATTACK}"

#: SQL of the data set's attacks: event_id, attack_type (one per event), for everything that counts attacks.
ATTACK_TYPES_SQL = f"SELECT event_id, max(value) AS attack_type FROM labels WHERE {ATTACK_LABEL_SQL} GROUP BY event_id"

def _sql_list(values) -> str:
    return "(" + ", ".join(f"'{v}'" for v in values) + ")"


#: the spellings of a yes / no in an ``is_account_takeover`` label: ``labels load`` stores ``true`` / ``false``,
#: but a store loaded before it normalised them (or written by other means) may hold ``1``, `` Yes``...
_ATO_VALUE_SQL = "lower(trim(value))"
ATO_TRUE_SQL = f"label = 'is_account_takeover' AND {_ATO_VALUE_SQL} IN {_sql_list(TRUE_VALUES)}"
ATO_FALSE_SQL = f"label = 'is_account_takeover' AND {_ATO_VALUE_SQL} IN {_sql_list(FALSE_VALUES)}"

_LABELS_SQL = f"""
SELECT event_id,
       bool_or({ATO_TRUE_SQL}) AS ato,
       bool_or({ATO_FALSE_SQL}) AS not_ato,
       max(CASE WHEN {ATTACK_LABEL_SQL} THEN value END) AS attack_type
FROM labels
GROUP BY event_id
"""


#: Per event with a label or feedback: event_id, y (1 attack / 0 legitimate / NULL) and attack_type. Feedback
#: outranks the data set's labels: Invalid is an attack (of the labelled type, else ``feedback_invalid``),
#: Valid is legitimate. The one definition, for training (``risk.model.training.load_labels``) and tuning
#: (``risk.tuning``); kept here, away from scikit-learn, so that tuning and the dashboard do not import it.
LABELS_IN_FORCE_SQL = f"""
WITH lab AS ({_LABELS_SQL}),
fb AS ({LATEST_FEEDBACK_SQL})
SELECT coalesce(lab.event_id, fb.event_id) AS event_id,
       CAST(CASE WHEN fb.event_id IS NOT NULL THEN CASE WHEN fb.feedback_value = 'Invalid' THEN 1 ELSE 0 END
                 WHEN lab.ato OR lab.attack_type IS NOT NULL THEN 1
                 WHEN lab.not_ato THEN 0 END AS DOUBLE) AS y,
       CASE WHEN fb.event_id IS NOT NULL AND fb.feedback_value = 'Valid' THEN NULL
            WHEN fb.event_id IS NOT NULL OR lab.ato OR lab.attack_type IS NOT NULL
              THEN coalesce(lab.attack_type, CASE WHEN lab.ato THEN 'account_takeover' END, 'feedback_invalid')
       END AS attack_type
FROM lab FULL OUTER JOIN fb ON fb.event_id = lab.event_id
"""


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
