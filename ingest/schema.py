"""The canonical sign-in event: one definition, as an Arrow schema.

Every reader produces tables with (a subset of) the *source* columns below; the
enrichment step fills the *derived* columns; the store keeps exactly this
schema in its ``events`` table. Names are snake_case versions of the Cognito
API's PascalCase fields where one exists.
"""

from __future__ import annotations

import hashlib
import json
import re
from datetime import datetime, timedelta, timezone

import pyarrow as pa

# -- Cognito enumerations (COGNITO_REFERENCE.md) ----------------------------
EVENT_TYPES = ("SignIn", "SignUp", "ForgotPassword", "PasswordChange", "ResendCode")
EVENT_RESPONSES = ("Pass", "Fail", "InProgress")
#: Spellings accepted on input and what they mean (pre-2022 names included).
EVENT_RESPONSE_ALIASES = {
    "Pass": "Pass",
    "Success": "Pass",
    "Fail": "Fail",
    "Failure": "Fail",
    "InProgress": "InProgress",
}
CHALLENGE_NAMES = ("Password", "Mfa")
CHALLENGE_RESPONSES = ("Success", "Failure")
#: EventFeedback's FeedbackValue and the Provider of the feedback riskgate keeps (AdminUpdateAuthEventFeedback:
#: ``Admin``, UpdateAuthEventFeedback: ``User``), as Cognito spells them (``risk.feedback`` records them).
FEEDBACK_VALUES = ("Valid", "Invalid")
FEEDBACK_PROVIDERS = ("Admin", "User")
#: The times an event (its CreationDate) or a feedback read from a source (its FeedbackDate) may have: not
#: before 2000-01-01, at most a day ahead of the clock (``ingest.enrich`` checks events; the readers feedback).
MIN_TIME = datetime(2000, 1, 1, tzinfo=timezone.utc)
MAX_FUTURE = timedelta(days=1)
#: Cognito's limits of a UserPoolId and of a Username, in characters (COGNITO_REFERENCE.md)
MAX_USER_POOL_ID = 55
MAX_USERNAME = 128
#: Cognito's event ids (COGNITO_REFERENCE.md: 1..50 characters of ``[\w+-]``), for Python (``re.ASCII``) and for
#: DuckDB (RE2, whose ``\w`` is ASCII too: ``ingest.enrich``)
EVENT_ID_PATTERN = r"[\w+-]{1,50}"
#: what an event id must be, in the words of every refusal
EVENT_ID_RULE = "must be 1 to 50 characters of letters, digits, _, + or -"
_EVENT_ID = re.compile(EVENT_ID_PATTERN, re.ASCII)
#: the largest AS number (32 bits, RFC 6793): a source's ASN (rba-csv's ASN column, a mapping's ``source_asn``
#: column or constant) outside 0..MAX_ASN is no AS number (:func:`as_number_sql`), and its row is quarantined
#: (the mapping refused): it would have stood for the address's ASN over the GeoIP lookup's
MAX_ASN = 2**32 - 1


def as_number_sql(value: str) -> str:
    """SQL: the BIGINT ``value`` when it is an AS number (0..``MAX_ASN``), else NULL."""
    return f"CASE WHEN {value} BETWEEN 0 AND {MAX_ASN} THEN {value} END"


#: what counts as blank in a Username (``ingest.enrich`` checks the same in SQL: ``BLANK_SQL``), an IpAddress or a
#: User-Agent: every character ``str.isspace`` takes, ASCII's (spaces, tabs, line breaks) and Unicode's (a
#: no-break space U+00A0, an em space U+2003, the ideographic space U+3000, ...). A Username of only U+00A0 and
#: U+2003 was taken for a user
BLANK = ("\t\n\v\f\r\x1c\x1d\x1e\x1f \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008"
         "\u2009\u200a\u2028\u2029\u202f\u205f\u3000")
#: a text of only :data:`BLANK` characters (or none), as a DuckDB (RE2) regular expression
BLANK_SQL = "[" + "".join(f"\\x{{{ord(c):x}}}" for c in BLANK) + "]*"


def user_pool_id_problem(value: str) -> str | None:
    """Why ``value`` cannot be a UserPoolId (1..``MAX_USER_POOL_ID`` characters), or None; the words that follow
    the value ("'x…' is too long: ...").

    The one rule wherever a pool id enters the store: a risk configuration's ``UserPoolId`` and ``--user-pool-id``
    (``risk.config``), ``riskgate users load`` (the option and the file's ids), and ``riskgate ingest`` (its
    option, and every reader's rows, checked in ``ingest.enrich``). A pool id the configuration would refuse
    could never be configured, and would make the store know one pool more."""
    if len(value) < 1:
        return "is too short: 0 characters, at least 1 required"
    if not value.strip():  # as --user-pool-id "  " (an unset shell variable quoted) is refused
        return f"is blank: give a pool id of 1..{MAX_USER_POOL_ID} characters"
    if len(value) > MAX_USER_POOL_ID:
        return f"is too long: at most {MAX_USER_POOL_ID} characters allowed"
    return None


def event_id_problem(value: str) -> str | None:
    """Why ``value`` cannot be an EventId, or None: the whole reason, in the words ingest quarantines such a row
    with (``ingest.enrich`` checks :data:`EVENT_ID_PATTERN` in SQL), for the feedback operations and
    ``riskgate feedback``: no stored event can have such an id."""
    if _EVENT_ID.fullmatch(value):
        return None
    return f"EventId {json.dumps(value[:80], ensure_ascii=False)} {EVENT_ID_RULE}"


def username_problem(value: str | None) -> str | None:
    """Why ``value`` cannot be a Username, or None: the whole reason, in the words ingest quarantines such a row
    with (``ingest.enrich`` spells the same check in SQL), for ``riskgate users load``."""
    if value is None or not value.strip(BLANK):
        return "Username is missing or empty"
    if len(value) > MAX_USERNAME:
        return f"Username is longer than {MAX_USERNAME} characters ({len(value)})"
    return None

HEADER = pa.struct([("header_name", pa.string()), ("header_value", pa.string())])
CHALLENGE = pa.struct([("challenge_name", pa.string()), ("challenge_response", pa.string())])

#: Columns a reader supplies (all optional except those in REQUIRED).
SOURCE_FIELDS: list[pa.Field] = [
    pa.field("event_id", pa.string(), nullable=False),
    pa.field("user_pool_id", pa.string()),
    pa.field("client_id", pa.string()),
    pa.field("username", pa.string(), nullable=False),
    pa.field("user_sub", pa.string()),
    pa.field("event_type", pa.string(), nullable=False),
    pa.field("event_response", pa.string(), nullable=False),
    pa.field("creation_date", pa.timestamp("us", tz="UTC"), nullable=False),
    pa.field("challenge_responses", pa.list_(CHALLENGE)),
    # ContextData, as the application server forwarded it
    pa.field("ip_address", pa.string()),
    pa.field("server_name", pa.string()),
    pa.field("server_path", pa.string()),
    pa.field("http_headers", pa.list_(HEADER)),
    pa.field("encoded_data", pa.string()),
    pa.field("has_context_data", pa.bool_()),
    # facts some sources carry
    pa.field("user_agent_source", pa.string()),  # a source's own agent column (RBA)
    pa.field("rtt_ms", pa.float64()),
    pa.field("compromised_credentials", pa.bool_()),
    # a source's own geo/device columns, used when no lookup answers (RBA, user-activity export)
    pa.field("source_country", pa.string()),
    pa.field("source_region", pa.string()),
    pa.field("source_city", pa.string()),
    pa.field("source_asn", pa.int64()),
    pa.field("source_device_name", pa.string()),
    pa.field("extra", pa.string()),  # JSON object of fields the canonical event has no column for
    # provenance
    pa.field("source_format", pa.string(), nullable=False),
    pa.field("source_file", pa.string(), nullable=False),
    pa.field("source_line", pa.int64(), nullable=False),
]

#: Columns the enrichment step derives.
DERIVED_FIELDS: list[pa.Field] = [
    pa.field("client_ip", pa.string()),
    pa.field("client_ip_source", pa.string()),  # IpAddress | X-Forwarded-For | Forwarded | X-Real-IP
    pa.field("ip_version", pa.int8()),
    pa.field("ip_prefix", pa.string()),  # the /24 (IPv4) or /48 (IPv6) network of client_ip
    pa.field("user_agent", pa.string()),
    pa.field("browser_family", pa.string()),
    pa.field("browser_version", pa.string()),
    pa.field("os_family", pa.string()),
    pa.field("os_version", pa.string()),
    pa.field("device_type", pa.string()),  # Desktop | Mobile | Tablet | Bot | Other
    pa.field("device_name", pa.string()),  # "Chrome 126, Windows 10"
    pa.field("device_fingerprint", pa.string()),
    pa.field("device_fingerprint_source", pa.string()),  # EncodedData | headers
    pa.field("country_iso", pa.string()),
    pa.field("country_name", pa.string()),
    pa.field("region", pa.string()),
    pa.field("city", pa.string()),
    pa.field("latitude", pa.float64()),
    pa.field("longitude", pa.float64()),
    pa.field("time_zone", pa.string()),
    pa.field("asn", pa.int64()),
    pa.field("as_org", pa.string()),
    pa.field("geo_source", pa.string()),  # lookup | source | none
]

EVENT_SCHEMA = pa.schema(SOURCE_FIELDS + DERIVED_FIELDS)
SOURCE_SCHEMA = pa.schema(SOURCE_FIELDS)
SOURCE_COLUMNS = [f.name for f in SOURCE_FIELDS]
EVENT_COLUMNS = [f.name for f in EVENT_SCHEMA]

#: Columns every reader must fill for a row to be an event.
REQUIRED = ("event_id", "username", "event_type", "event_response", "creation_date")

#: The feedback a source row carries (Cognito's EventFeedback: AdminListUserAuthEvents output, the user-activity
#: export's ``eventFeedback*``), as a reader gives it beside its events (``ReadBatch.feedback``, row for row; a
#: row without feedback has none of the three): ``feedback_value`` and ``provider`` in Cognito's spelling
#: (:data:`FEEDBACK_VALUES`, :data:`FEEDBACK_PROVIDERS`), ``feedback_date`` the FeedbackDate, else the event's
#: CreationDate. Ingest owns no feedback table: ``riskgate ingest`` hands each batch's to ``risk.feedback``.
SOURCE_FEEDBACK_SCHEMA = pa.schema(
    [
        pa.field("feedback_value", pa.string()),
        pa.field("provider", pa.string()),
        pa.field("feedback_date", pa.timestamp("us", tz="UTC")),
    ]
)
#: The feedback of a batch's stored rows, as ingest hands it on (``ingest.pipeline.FeedbackSink``).
FEEDBACK_SCHEMA = pa.schema([pa.field("event_id", pa.string(), nullable=False), *SOURCE_FEEDBACK_SCHEMA])

QUARANTINE_SCHEMA = pa.schema(
    [
        pa.field("source_format", pa.string()),
        pa.field("source_file", pa.string()),
        pa.field("source_line", pa.int64()),
        pa.field("reason", pa.string()),
        pa.field("raw", pa.string()),
    ]
)

LABEL_SCHEMA = pa.schema(
    [
        pa.field("event_id", pa.string(), nullable=False),
        pa.field("label", pa.string(), nullable=False),  # e.g. account_takeover, attack_ip, attack_type
        pa.field("value", pa.string()),  # "true"/"false" or a tag such as "credential_stuffing"
        pa.field("source", pa.string()),  # where the label came from (data set name, synth, feedback)
    ]
)


def conform(table: pa.Table, schema: pa.Schema = SOURCE_SCHEMA) -> pa.Table:
    """Return ``table`` with exactly ``schema``'s columns, in order: missing ones null, types cast."""
    n = table.num_rows
    arrays = []
    for field in schema:
        if field.name in table.column_names:
            col = table.column(field.name)
            if col.type != field.type:
                col = col.cast(field.type)
            arrays.append(col)
        else:
            arrays.append(pa.nulls(n, field.type))
    return pa.Table.from_arrays(arrays, schema=pa.schema([f.with_nullable(True) for f in schema]))


def short_digest(text: str) -> str:
    """The first 32 hex digits of the SHA-256 of ``text``'s UTF-8: the content part of derived event ids and
    device fingerprints (the caller adds its prefix)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


def offset_text(minutes: int) -> str:
    """Minutes east of UTC as ``EventContextData.Timezone`` writes them: ``+02:00``, ``-03:30``, ``+00:00``."""
    sign = "-" if minutes < 0 else "+"
    return f"{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"
