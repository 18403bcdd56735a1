"""Users: loading Cognito ``ListUsers`` output or a CSV, and every SQL statement on the ``users`` table.

Inputs ``riskgate users load`` reads:

* Cognito ``ListUsers`` JSON: one page ``{"Users": [...], "PaginationToken": ...}``,
  several pages written one after the other, or a JSON list of pages (a list of
  user objects is accepted too). ``sub``, ``email`` and the other attributes come
  from ``Attributes``; MFA from ``UserMFASettingList`` / ``PreferredMfaSetting``
  (``AdminGetUser`` fields, which riskgate's own users files carry) and from the
  legacy ``MFAOptions`` (an SMS entry means ``SMS_MFA``). A gzip file is fine.
* CSV with the header ``username,sub,status,enabled,mfa_settings,preferred_mfa,email``
  (``mfa_settings`` separated by ``;``, ``enabled`` true/false; an empty cell is unknown, but for the MFA cells:
  empty there is no MFA, see below).

Loading upserts by username: loading again updates a user, never duplicates
one; a field the input does not give (empty or absent) keeps its stored value.
The MFA state is one value: an entry that states it (a ``UserMFASettingList``,
an empty one included, a ``PreferredMfaSetting`` or an SMS ``MFAOptions``
entry; a CSV row always does, empty cells meaning no MFA) replaces the stored
settings and preferred method together; one that does not keeps both.
A bad entry (unknown ``UserStatus``, unknown MFA name, a ``Username`` missing or
one ingest would quarantine, a ``UserPoolId`` the risk configuration would
refuse, a value of the wrong type) is rejected with its position and reason,
and the rest is loaded. A ``--user-pool-id`` the configuration would refuse is
refused before anything is read.

The file is read whole, so at most ``MAX_USERS_FILE_BYTES`` of it once decompressed: beyond that it is refused
before anything more is read (a small gzip file can hold gigabytes). A JSON document nested too deeply for
Python's parser is refused too, naming where, and one holding a number longer than it reads (4,300 digits);
nothing of a refused file is loaded. A date out of the years 1..9999 (an epoch number too large, NaN, ...) is a
bad entry.
"""

from __future__ import annotations

import csv
import json
import re
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import duckdb
import pyarrow as pa

from ingest.errors import ConfigurationError, InputFormatError, RiskgateError, malformed_json
from ingest.schema import user_pool_id_problem, username_problem
from ingest.sources.base import MAX_JSON_DEPTH, line_column, open_binary, too_deep_at

#: UserStatus values (COGNITO_REFERENCE.md)
USER_STATUSES = (
    "UNCONFIRMED",
    "CONFIRMED",
    "ARCHIVED",
    "COMPROMISED",
    "UNKNOWN",
    "RESET_REQUIRED",
    "FORCE_CHANGE_PASSWORD",
)
#: the MFA kinds of UserMFASettingList / PreferredMfaSetting: SMS, a software token, and Cognito's email codes
#: (EMAIL_OTP, since 2024; COGNITO_REFERENCE.md lists the first two)
MFA_SETTINGS = ("SMS_MFA", "SOFTWARE_TOKEN_MFA", "EMAIL_OTP")
#: The MFA kinds that count as a user's own MFA (:func:`has_mfa_configured`): every kind a load accepts
MFA_KINDS = MFA_SETTINGS
CSV_HEADER = ("username", "sub", "status", "enabled", "mfa_settings", "preferred_mfa", "email")
#: A users file is read whole: one larger than this (decompressed) is refused with a message, and never read further.
MAX_USERS_FILE_BYTES = 2 * 1024**3
#: read in pieces of this size, so that a gzip file is decompressed no further than the limit
_READ_PIECE = 1 << 20
_TRUE = ("true", "1", "yes")
_FALSE = ("false", "0", "no")

USER_COLUMNS = ("username", "user_pool_id", "user_sub", "user_status", "enabled", "mfa_settings", "preferred_mfa",
                "email", "created_at", "modified_at", "attributes")
#: a user's MFA state: stated (``mfa_settings`` not NULL, an empty list being "no MFA") or not, always as a whole;
#: a load never writes a preferred method without a list, but a row holding one states it (:func:`has_mfa_configured`)
MFA_COLUMNS = ("mfa_settings", "preferred_mfa")
_USERS_SCHEMA = pa.schema([
    ("username", pa.string()),
    ("user_pool_id", pa.string()),
    ("user_sub", pa.string()),
    ("user_status", pa.string()),
    ("enabled", pa.bool_()),
    ("mfa_settings", pa.list_(pa.string())),
    ("preferred_mfa", pa.string()),
    ("email", pa.string()),
    ("created_at", pa.timestamp("us", tz="UTC")),
    ("modified_at", pa.timestamp("us", tz="UTC")),
    ("attributes", pa.string()),
])


class UserDataError(RiskgateError):
    """A user value is not what Cognito allows (status, MFA name, ...)."""


@dataclass(frozen=True)
class UserRecord:
    """One user as loaded; ``None`` means "not given by this input" (the stored value is kept)."""

    username: str
    user_pool_id: str | None = None
    user_sub: str | None = None
    user_status: str | None = None
    enabled: bool | None = None
    mfa_settings: tuple[str, ...] | None = None
    preferred_mfa: str | None = None
    email: str | None = None
    created_at: datetime | None = None
    modified_at: datetime | None = None
    attributes: dict[str, str] | None = None


@dataclass(frozen=True)
class Rejected:
    position: str  # "line 12" (CSV) or "page 2 (line 40), Users[5]" (JSON)
    reason: str


@dataclass
class LoadResult:
    source: str
    read: int = 0
    added: int = 0
    updated: int = 0
    rejected: list[Rejected] = field(default_factory=list)

    @property
    def reasons(self) -> Counter:
        return Counter(r.reason.split(": ", 1)[0] if ": " in r.reason else r.reason for r in self.rejected)

    def as_dict(self) -> dict:
        return {
            "source": self.source,
            "read": self.read,
            "added": self.added,
            "updated": self.updated,
            "rejected": len(self.rejected),
            "rejections": [{"position": r.position, "reason": r.reason} for r in self.rejected],
        }


# -- validation shared by both inputs --------------------------------------------


def check_status(status: str) -> str:
    if status not in USER_STATUSES:
        raise UserDataError(f"UserStatus {status!r} is not one of: {', '.join(USER_STATUSES)}")
    return status


def check_username(name: str) -> str:
    """A Username as ingest takes it (``ingest.schema.username_problem``: 1..128 characters, not blank)."""
    problem = username_problem(name)
    if problem:
        raise UserDataError(problem)
    return name


def pool_id_refusal(value: str, what: str = "UserPoolId") -> str | None:
    """Why ``value`` cannot be a pool id, in words naming ``what`` and the value; None when it can (the risk
    configuration's rule: ``ingest.schema.user_pool_id_problem``)."""
    problem = user_pool_id_problem(value)
    if problem is None:
        return None
    shown = repr(value) if len(value) <= 60 else repr(value[:60] + "…") + f" ({len(value):,} characters)"
    return f"{what} {shown} {problem}"


def check_mfa(name: str, what: str) -> str:
    if name not in MFA_SETTINGS:
        raise UserDataError(f"unknown MFA name in {what}: {name!r}; expected one of: {', '.join(MFA_SETTINGS)}")
    return name


def _mfa(settings: list[str] | None, preferred: str | None) -> tuple[tuple[str, ...] | None, str | None]:
    """Settings in a stable order; a preferred method is always among the enabled ones."""
    if settings is None and preferred is None:
        return None, None
    out = list(dict.fromkeys(settings or []))
    if preferred and preferred not in out:
        out.append(preferred)
    return tuple(sorted(out, key=MFA_SETTINGS.index)), preferred


def _time(value, what: str) -> datetime | None:
    """ISO 8601 text (the AWS CLI) or epoch seconds (older CLIs / SDK dumps)."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise UserDataError(f"{what} must be a date, got {value!r}")
    if isinstance(value, (int, float)):
        try:  # NaN, infinities and numbers beyond the years 1..9999 (ValueError, OverflowError, OSError EOVERFLOW)
            return datetime.fromtimestamp(value / 1000 if value > 1e11 else value, tz=timezone.utc)
        except (ValueError, OverflowError, OSError):
            raise UserDataError(f"{what} is out of range: {_shown_number(value)} is not a date of the years "
                                "1..9999 in epoch seconds or milliseconds") from None
    if isinstance(value, str):
        try:
            t = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            raise UserDataError(f"{what} is not an ISO 8601 date: {value!r}") from None
        try:  # in UTC, as stored: 0001-01-01T00:00+01:00 is of the year 0
            return t.astimezone(timezone.utc) if t.tzinfo else t.replace(tzinfo=timezone.utc)
        except OverflowError:
            raise UserDataError(f"{what} is out of range: {value!r} is not of the years 1..9999 in UTC") from None
    raise UserDataError(f"{what} must be a date, got {type(value).__name__}")


def _shown_number(value: int | float) -> str:
    text = repr(value)
    return text if len(text) <= 40 else f"a number of {len(text):,} digits"


# -- ListUsers JSON ---------------------------------------------------------------


def user_from_cognito(obj, user_pool_id: str | None = None) -> UserRecord:
    """One ``ListUsers`` / ``AdminGetUser`` user object -> :class:`UserRecord` (raises UserDataError)."""
    if not isinstance(obj, dict):
        raise UserDataError(f"a user must be a JSON object, got {type(obj).__name__}")
    name = obj.get("Username")
    if name is None or (isinstance(name, str) and not name.strip()):
        raise UserDataError("Username is missing")
    if not isinstance(name, str):
        raise UserDataError(f"Username must be a string, got {name!r}")
    check_username(name)
    attrs: dict[str, str] = {}
    raw_attrs = obj.get("Attributes", obj.get("UserAttributes"))
    if raw_attrs is not None:
        if not isinstance(raw_attrs, list):
            raise UserDataError("Attributes must be a list of {Name, Value}")
        for i, a in enumerate(raw_attrs):
            if not isinstance(a, dict) or not isinstance(a.get("Name"), str):
                raise UserDataError(f"Attributes[{i}] must be an object with a string Name")
            v = a.get("Value")
            attrs[a["Name"]] = v if isinstance(v, str) or v is None else json.dumps(v)
    status = obj.get("UserStatus")
    if status is not None:
        if not isinstance(status, str):
            raise UserDataError(f"UserStatus must be a string, got {status!r}")
        check_status(status)
    enabled = obj.get("Enabled")
    if enabled is not None and not isinstance(enabled, bool):
        raise UserDataError(f"Enabled must be true or false, got {enabled!r}")
    settings: list[str] | None = None
    if obj.get("UserMFASettingList") is not None:
        lst = obj["UserMFASettingList"]
        if not isinstance(lst, list):
            raise UserDataError("UserMFASettingList must be a list")
        for x in lst:
            if not isinstance(x, str):
                raise UserDataError(f"UserMFASettingList items must be strings, got {x!r}")
            check_mfa(x, "UserMFASettingList")
        settings = list(lst)
    if obj.get("MFAOptions") is not None:
        opts = obj["MFAOptions"]
        if not isinstance(opts, list):
            raise UserDataError("MFAOptions must be a list")
        for i, o in enumerate(opts):
            medium = o.get("DeliveryMedium") if isinstance(o, dict) else None
            if medium != "SMS":
                raise UserDataError(f"unknown MFA name in MFAOptions[{i}].DeliveryMedium: {medium!r}; expected 'SMS'")
            settings = (settings or []) + ["SMS_MFA"]
    preferred = obj.get("PreferredMfaSetting")
    if preferred in ("", None):
        preferred = None
    elif not isinstance(preferred, str):
        raise UserDataError(f"PreferredMfaSetting must be a string, got {preferred!r}")
    else:
        check_mfa(preferred, "PreferredMfaSetting")
    mfa, preferred = _mfa(settings, preferred)
    pool = obj.get("UserPoolId") if user_pool_id is None else user_pool_id
    if pool is not None and not isinstance(pool, str):
        raise UserDataError(f"UserPoolId must be a string, got {pool!r}")
    if pool:
        refusal = pool_id_refusal(pool)
        if refusal:
            raise UserDataError(refusal)
    return UserRecord(
        username=name,
        user_pool_id=pool or None,
        user_sub=attrs.get("sub"),
        user_status=status,
        enabled=enabled,
        mfa_settings=mfa,
        preferred_mfa=preferred,
        email=attrs.get("email"),
        created_at=_time(obj.get("UserCreateDate"), "UserCreateDate"),
        modified_at=_time(obj.get("UserLastModifiedDate"), "UserLastModifiedDate"),
        attributes=attrs if raw_attrs is not None else None,
    )


def _json_documents(text: str, source: str):
    """Yield (document, line) of each JSON document in ``text`` (one, or several back to back).

    A document nesting arrays and objects too deeply for Python's parser (RecursionError, at about 1,000 levels)
    is refused, naming where it nests more than ``MAX_JSON_DEPTH`` levels deep."""
    dec = json.JSONDecoder()
    pos, n = 0, len(text)
    while True:
        while pos < n and text[pos] in " \t\r\n,":
            pos += 1
        if pos >= n:
            return
        line = text.count("\n", 0, pos) + 1
        try:
            doc, end = dec.raw_decode(text, pos)
        except json.JSONDecodeError as exc:
            raise InputFormatError(
                malformed_json(exc.msg, f"line {exc.lineno} column {exc.colno}"), source=source
            ) from None
        except RecursionError:
            raise _too_deep(f"the document of line {line}", source, text, pos) from None
        except ValueError:  # not a JSONDecodeError: a number of more digits than Python converts
            raise InputFormatError(f"the document of line {line} holds a number of more than "
                                   f"{sys.get_int_max_str_digits():,} digits, which Python's JSON parser does not "
                                   "read; expected ListUsers output", source=source) from None
        yield doc, line
        pos = end


def _too_deep(what: str, source: str, text: str | None = None, pos: int = 0) -> InputFormatError:
    """The refusal of JSON nested too deeply for Python's parser (or for repr / json.dumps of a value of it)."""
    at = too_deep_at(text, pos) if text is not None else None
    where = ""
    if at is not None:
        line, column = line_column(text, at)
        where = f": more than {MAX_JSON_DEPTH:,} levels from line {line} column {column}"
    return InputFormatError(f"{what} nests arrays and objects too deeply for the JSON parser{where}; "
                            "expected ListUsers output", source=source)


def parse_list_users(text: str, source: str, user_pool_id: str | None = None):
    """Records and rejections from ``ListUsers`` JSON text (see the module docstring for the shapes)."""
    records: list[UserRecord] = []
    rejected: list[Rejected] = []
    read = 0
    pages: list[tuple[object, str]] = []
    for doc, line in _json_documents(text, source):
        if isinstance(doc, list):
            if doc and all(isinstance(d, dict) and "Users" in d for d in doc):
                pages += [(d, f"page {len(pages) + k + 1} (line {line})") for k, d in enumerate(doc)]
            else:
                pages.append(({"Users": doc}, f"list (line {line})"))
        else:
            pages.append((doc, f"page {len(pages) + 1} (line {line})"))
    for page, where in pages:
        if not isinstance(page, dict) or not isinstance(page.get("Users"), list):
            raise InputFormatError(
                f"{where}: expected ListUsers output, an object with a \"Users\" list", source=source
            )
        for i, obj in enumerate(page["Users"]):
            read += 1
            try:
                records.append(user_from_cognito(obj, user_pool_id))
            except UserDataError as exc:
                rejected.append(Rejected(f"{where}, Users[{i}]", str(exc)))
            except RecursionError:  # a value parsed at the parser's limit, then shown or kept (repr, json.dumps)
                raise _too_deep(f"{where}, Users[{i}]", source) from None
    return records, rejected, read


# -- CSV ----------------------------------------------------------------------------


def parse_users_csv(text: str, source: str, user_pool_id: str | None = None):
    """Records and rejections from the users CSV (header ``CSV_HEADER``, any column order)."""
    # the lines of the text as they are (not a StringIO: it would hold the text again, at 4 bytes a character)
    reader = csv.reader(m.group() for m in _LINE.finditer(text))
    try:
        header = [h.strip() for h in next(reader)]
    except StopIteration:
        raise InputFormatError("is empty: expected the header " + ",".join(CSV_HEADER), source=source) from None
    except csv.Error as exc:
        raise InputFormatError(f"cannot read the header: {exc}", source=source, line=1) from None
    missing = [c for c in CSV_HEADER if c not in header]
    unknown = [c for c in header if c not in CSV_HEADER]
    if missing or unknown:
        raise InputFormatError(
            "the header must be " + ",".join(CSV_HEADER)
            + (f"; missing: {', '.join(missing)}" if missing else "")
            + (f"; unknown: {', '.join(unknown)}" if unknown else ""),
            source=source, line=1,
        )
    col = {c: header.index(c) for c in CSV_HEADER}
    records: list[UserRecord] = []
    rejected: list[Rejected] = []
    read = 0
    prev_line = reader.line_num
    while True:
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:  # a field over the csv module's limit (128 KiB), a NUL byte
            raise InputFormatError(f"malformed CSV after line {prev_line}: {exc}", source=source) from None
        line = prev_line + 1
        prev_line = reader.line_num
        if not any(x.strip() for x in row):
            continue
        read += 1
        try:
            if len(row) != len(header):
                raise UserDataError(f"expected {len(header)} fields, found {len(row)}")
            records.append(_user_from_row({c: row[i].strip() for c, i in col.items()}, user_pool_id))
        except UserDataError as exc:
            rejected.append(Rejected(f"line {line}", str(exc)))
    return records, rejected, read


def _user_from_row(r: dict[str, str], user_pool_id: str | None) -> UserRecord:
    if not r["username"]:
        raise UserDataError("Username is missing")
    check_username(r["username"])
    status = check_status(r["status"]) if r["status"] else None
    enabled = None
    if r["enabled"]:
        low = r["enabled"].lower()
        if low not in _TRUE + _FALSE:
            raise UserDataError(f"enabled must be true or false, got {r['enabled']!r}")
        enabled = low in _TRUE
    settings = [check_mfa(x.strip(), "mfa_settings") for x in r["mfa_settings"].split(";") if x.strip()]
    preferred = check_mfa(r["preferred_mfa"], "preferred_mfa") if r["preferred_mfa"] else None
    mfa, preferred = _mfa(settings, preferred)
    return UserRecord(
        username=r["username"],
        user_pool_id=user_pool_id,
        user_sub=r["sub"] or None,
        user_status=status,
        enabled=enabled,
        mfa_settings=mfa,
        preferred_mfa=preferred,
        email=r["email"] or None,
    )


# -- reading a file ----------------------------------------------------------------------


def read_users_file(path: str | Path, user_pool_id: str | None = None):
    """(records, rejections, entries read) of a ListUsers JSON or users CSV file (gzip accepted).

    A ``user_pool_id`` the risk configuration would refuse raises ConfigurationError before the file is read."""
    refusal = pool_id_refusal(user_pool_id, "--user-pool-id") if user_pool_id is not None else None
    if refusal:
        raise ConfigurationError(refusal)
    source = str(path)
    p = Path(path)
    if p.exists() and p.is_file() and p.stat().st_size > MAX_USERS_FILE_BYTES:
        raise InputFormatError(f"is larger than {_size(MAX_USERS_FILE_BYTES)}; split it into pages", source=source)
    data = _read_at_most(path, MAX_USERS_FILE_BYTES)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputFormatError(f"not UTF-8: invalid byte at position {exc.start}", source=source) from None
    del data
    first = _CONTENT.search(text)
    if first is None:
        raise InputFormatError("is empty: expected ListUsers JSON or a users CSV", source=source)
    if first.group() in "{[":
        return parse_list_users(text, source, user_pool_id)
    return parse_users_csv(text, source, user_pool_id)


_CONTENT = re.compile(r"\S")
_LINE = re.compile(r"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+")  # a line and its end, as csv reads them


def _size(n: int) -> str:
    return f"{n // 1024**3} GiB" if n % 1024**3 == 0 else f"{n:,} bytes"


def _read_at_most(path: str | Path, limit: int) -> bytearray:
    """The (decompressed) bytes of ``path``, read in pieces: InputFormatError as soon as there are more than
    ``limit`` (a small gzip file can hold gigabytes of blanks), before anything more is read."""
    data = bytearray()
    with open_binary(path) as fh:
        while True:
            piece = fh.read(min(_READ_PIECE, limit + 1 - len(data)))
            if not piece:
                return data
            data += piece
            if len(data) > limit:
                raise InputFormatError(
                    f"holds more than {_size(limit)} once decompressed (a users file is read whole); "
                    "split it into pages", source=str(path))


# -- the users table -------------------------------------------------------------------------


def _table(records: list[UserRecord]) -> pa.Table:
    cols: dict[str, list] = {c: [] for c in USER_COLUMNS}
    for r in records:
        cols["username"].append(r.username)
        cols["user_pool_id"].append(r.user_pool_id)
        cols["user_sub"].append(r.user_sub)
        cols["user_status"].append(r.user_status)
        cols["enabled"].append(r.enabled)
        cols["mfa_settings"].append(list(r.mfa_settings) if r.mfa_settings is not None else None)
        cols["preferred_mfa"].append(r.preferred_mfa)
        cols["email"].append(r.email)
        cols["created_at"].append(r.created_at)
        cols["modified_at"].append(r.modified_at)
        cols["attributes"].append(json.dumps(r.attributes, ensure_ascii=False) if r.attributes is not None else None)
    return pa.table(cols, schema=_USERS_SCHEMA)


_UPSERT = (
    "INSERT INTO users (" + ", ".join(USER_COLUMNS) + ", pool_key) SELECT " + ", ".join(USER_COLUMNS)
    + ", coalesce(user_pool_id, '') FROM _rg_new_users "
    "ON CONFLICT (pool_key, username) DO UPDATE SET "
    + ", ".join(f"{c} = coalesce(excluded.{c}, users.{c})" for c in USER_COLUMNS
                if c not in ("username", "user_pool_id", *MFA_COLUMNS))
    # the MFA state is replaced whole by a record that states it (an empty list included: no MFA), else kept whole
    + "".join(f", {c} = CASE WHEN excluded.mfa_settings IS NOT NULL THEN excluded.{c} ELSE users.{c} END"
              for c in MFA_COLUMNS)
)


def has_mfa_configured(mfa_settings: Sequence[str] | None, preferred: str | None = None, *,
                       kinds: Sequence[str] = MFA_KINDS) -> bool:
    """Whether a user has MFA of their own, from the stored ``mfa_settings`` (UserMFASettingList) and
    ``preferred_mfa`` (PreferredMfaSetting): the rule written out, with its truth table. Scoring and tuning
    (``risk.score``, ``risk.tuning``), :func:`get_user`, :func:`list_users` and :func:`pool_users` read it as
    :func:`has_mfa_configured_sql`, the same rule in SQL; a test runs both over one table.

    Stated settings tell, an empty list included: a preferred method not among them is no MFA, as in Cognito.
    Settings not stated (NULL) leave the preferred method alone to tell. Only ``kinds`` count:

    ==================================  =====================  =======
    ``mfa_settings``                    ``preferred_mfa``      has MFA
    ==================================  =====================  =======
    NULL (not stated)                   NULL                   no
    NULL (not stated)                   one of ``kinds``       yes
    NULL (not stated)                   any other              no
    a list holding one of ``kinds``     any (NULL included)    yes
    a list holding none ([] included)   any (NULL included)    no
    ==================================  =====================  =======
    """
    stated = mfa_settings if mfa_settings is not None else ([] if preferred is None else [preferred])
    return any(s in kinds for s in stated)


def has_mfa_configured_sql(kinds: str, table: str | None = None) -> str:
    """:func:`has_mfa_configured` as an SQL expression, BOOLEAN and never NULL, over the columns ``mfa_settings``
    and ``preferred_mfa`` (of ``table``, an alias, when given). ``kinds`` is an SQL expression used once: a bound
    parameter (``?`` or ``$name``) for the kinds that count, ``list(MFA_KINDS)``."""
    t = f"{table}." if table else ""
    stated = (f"coalesce({t}mfa_settings, CASE WHEN {t}preferred_mfa IS NULL THEN []::VARCHAR[] "
              f"ELSE [{t}preferred_mfa] END)")
    return f"coalesce(list_has_any({stated}, CAST({kinds} AS VARCHAR[])), false)"


def users_by_pool_sql(unpooled: str) -> str:
    """The users as events see them, one row per (``pool``, ``username``) with the table's columns after.

    A Cognito username is one user per pool. A user loaded for a pool is that pool's; one loaded without a pool
    id belongs to ``unpooled`` -- an SQL expression (a bound parameter: ``?`` or ``$name``) for the pool that
    events without a pool id belong to (``risk.config.unpooled_pool``). When both rows exist, the pool's own
    values come first and the other fills what it lacks (a RESET_REQUIRED row made for a user not loaded yet,
    then the user loaded without a pool id: status from the first, MFA and email from the second); the MFA state
    (``MFA_COLUMNS``) is one value, the pool row's when it states one (either column set: a preferred method with
    no list is one, as :func:`has_mfa_configured` reads it), else the other's; ``pool_key``
    is the row a change goes to (the pool's own when there is one)."""
    cols = ",\n                   ".join(
        f"CASE WHEN x.mfa_settings IS NOT NULL OR x.preferred_mfa IS NOT NULL THEN x.{c} ELSE n.{c} END AS {c}"
        if c in MFA_COLUMNS
        else f"coalesce(x.{c}, n.{c}) AS {c}" for c in (*USER_COLUMNS, "pool_key"))
    return f"""(WITH rg_u AS (SELECT CASE WHEN pool_key = '' THEN CAST({unpooled} AS VARCHAR) ELSE pool_key END AS pool, *
                             FROM users)
                SELECT coalesce(x.pool, n.pool) AS pool,
                   {cols}
                FROM (SELECT * FROM rg_u WHERE pool_key <> '') x
                FULL JOIN (SELECT * FROM rg_u WHERE pool_key = '') n
                  ON x.pool IS NOT DISTINCT FROM n.pool AND x.username = n.username)"""


def upsert_users(con: duckdb.DuckDBPyConnection, records: list[UserRecord]) -> tuple[int, int]:
    """Insert new users and update known ones (last record wins per pool and username); return (added, updated).

    ``updated`` counts records that changed a user already known, in the store or earlier in ``records``.
    """
    if not records:
        return 0, 0
    last: dict[tuple, UserRecord] = {}
    for r in records:
        last[(r.user_pool_id or "", r.username)] = r
    table = _table(list(last.values()))
    con.register("_rg_new_users", table)
    try:
        con.execute("BEGIN TRANSACTION")
        try:
            known = con.execute(
                "SELECT count(*) FROM _rg_new_users n JOIN users u "
                "ON u.username = n.username AND u.pool_key = coalesce(n.user_pool_id, '')"
            ).fetchall()[0][0]
            con.execute(_UPSERT).fetchall()
            con.execute("COMMIT")
        except duckdb.Error:
            from ingest.store import rollback

            rollback(con)
            raise
    finally:
        con.unregister("_rg_new_users")
    added = len(last) - int(known)
    return added, len(records) - added


def load_users(con: duckdb.DuckDBPyConnection, path: str | Path, user_pool_id: str | None = None) -> LoadResult:
    """Read ``path`` and upsert its users; bad entries are reported, the rest loaded."""
    records, rejected, read = read_users_file(path, user_pool_id)
    added, updated = upsert_users(con, records)
    return LoadResult(source=str(path), read=read, added=added, updated=updated, rejected=rejected)


def _row(names: list[str], row: tuple) -> dict:
    d = dict(zip(names, row))
    d["mfa_settings"] = list(d["mfa_settings"] or [])
    d["attributes"] = json.loads(d["attributes"]) if d["attributes"] else {}
    d["mfa_enabled"] = bool(d["mfa_enabled"])
    return d


#: a user's columns and ``mfa_enabled`` (:func:`has_mfa_configured_sql`; its ``?`` bound to ``list(MFA_KINDS)``)
_USER_FIELDS = ", ".join(USER_COLUMNS) + f", {has_mfa_configured_sql('?')} AS mfa_enabled"
_SELECT = f"SELECT {_USER_FIELDS} FROM users"


def _user_select(columns: str) -> str:
    return f"SELECT {columns} FROM {users_by_pool_sql('?')} WHERE username = ? AND pool IS NOT DISTINCT FROM ?"


def get_user(con: duckdb.DuckDBPyConnection, username: str, user_pool_id: str | None = None, *,
             unpooled: str | None = None) -> dict | None:
    """The stored user of ``user_pool_id`` (None: of ``unpooled``, the pool of events without a pool id) by
    :func:`users_by_pool_sql`'s rule (columns of the table, ``attributes`` as a dict, ``mfa_enabled`` by
    :func:`has_mfa_configured`), or None."""
    pool = unpooled if user_pool_id is None else user_pool_id
    cur = con.execute(_user_select(_USER_FIELDS), [list(MFA_KINDS), unpooled, username, pool])
    names = [d[0] for d in cur.description]
    rows = cur.fetchall()
    return _row(names, rows[0]) if rows else None


def set_user_status(con: duckdb.DuckDBPyConnection, username: str, status: str, user_pool_id: str | None = None,
                    *, unpooled: str | None = None) -> str | None:
    """Set the UserStatus of the user of ``user_pool_id`` (None: of ``unpooled``; :func:`get_user`'s rule), e.g.
    RESET_REQUIRED after blocked compromised credentials; return the status before.

    A user not loaded yet gets a row (pool, username and status only; a later ``users load`` fills the rest and,
    as its input says, the status), so the block is not lost: the return value is then None. An unknown status
    raises :class:`UserDataError` and changes nothing. The same name in another pool is another user, untouched.
    """
    check_status(status)
    if not isinstance(username, str) or not username:
        raise UserDataError("set_user_status needs a username")
    pool = unpooled if user_pool_id is None else user_pool_id
    now = datetime.now(timezone.utc)
    before = con.execute(_user_select("pool_key, user_status"), [unpooled, username, pool]).fetchall()
    if before:
        con.execute("UPDATE users SET user_status = ?, modified_at = ? WHERE pool_key = ? AND username = ?",
                    [status, now, before[0][0], username]).fetchall()
        return before[0][1]
    con.execute("INSERT INTO users (username, user_pool_id, user_status, modified_at, pool_key) "
                "VALUES (?, ?, ?, ?, coalesce(CAST(? AS VARCHAR), ''))",
                [username, pool, status, now, pool]).fetchall()
    return None


def _user_filters(*, pool: str | None = None, status: str | None = None, mfa_enabled: bool | None = None,
                  enabled: bool | None = None) -> tuple[str, list]:
    """The WHERE clause ('' for none) and its parameters of :func:`pool_users` and :func:`list_users`, over a
    selection naming its MFA state ``mfa_enabled`` (an alias, which DuckDB's WHERE may name)."""
    where, params = [], []
    for cond, value in (("pool = ?", pool), ("user_status = ?", None if status is None else check_status(status)),
                        ("mfa_enabled = ?", mfa_enabled), ("enabled = ?", enabled)):
        if value is not None:
            where.append(cond)
            params.append(value)
    return (" WHERE " + " AND ".join(where) if where else ""), params


def pool_users(
    con: duckdb.DuckDBPyConnection,
    unpooled: str | None,
    *,
    user_pool_id: str | None = None,
    status: str | None = None,
    mfa_enabled: bool | None = None,
    enabled: bool | None = None,
) -> list[dict]:
    """The users as scoring sees them (:func:`users_by_pool_sql`: one per pool and username, those loaded without a
    pool id in ``unpooled``), ordered by pool and username, optionally of one pool and filtered by status, MFA
    (:func:`has_mfa_configured`) and Enabled. Each row: ``pool`` and :data:`USER_COLUMNS` as stored (the MFA list
    NULL when none is stated), ``attributes`` as a dict, ``mfa_enabled``."""
    where, params = _user_filters(pool=user_pool_id, status=status, mfa_enabled=mfa_enabled, enabled=enabled)
    cols = ", ".join(c for c in USER_COLUMNS if c != "user_pool_id")
    cur = con.execute(
        f"""SELECT pool, {cols}, {has_mfa_configured_sql('?')} AS mfa_enabled FROM {users_by_pool_sql('?')}
            {where} ORDER BY pool NULLS FIRST, username""", [list(MFA_KINDS), unpooled, *params])
    names = [d[0] for d in cur.description]
    out = []
    for row in cur.fetchall():
        d = dict(zip(names, row))
        d["attributes"] = json.loads(d["attributes"]) if d["attributes"] else {}
        out.append(d)
    return out


def as_list_users_entry(user: dict) -> dict:
    """A row of :func:`pool_users` as a ``ListUsers`` user object (with its ``UserPoolId``), which ``users load``
    reads back: what is not stored is left out."""
    attrs = dict(user["attributes"] or {})
    for name, col in (("sub", "user_sub"), ("email", "email")):
        if user[col] is not None:
            attrs.setdefault(name, user[col])
    entry = {"Username": user["username"], "UserPoolId": user["pool"],
             "Attributes": [{"Name": k, "Value": v} for k, v in attrs.items()],
             "UserCreateDate": user["created_at"], "UserLastModifiedDate": user["modified_at"],
             "Enabled": user["enabled"], "UserStatus": user["user_status"],
             "UserMFASettingList": None if user["mfa_settings"] is None else list(user["mfa_settings"]),
             "PreferredMfaSetting": user["preferred_mfa"]}
    for k in ("UserCreateDate", "UserLastModifiedDate"):
        if entry[k] is not None:
            entry[k] = entry[k].astimezone(timezone.utc).isoformat()
    return {k: v for k, v in entry.items() if v is not None}


def list_users(
    con: duckdb.DuckDBPyConnection,
    *,
    status: str | None = None,
    mfa_enabled: bool | None = None,
    enabled: bool | None = None,
    limit: int | None = None,
    offset: int = 0,
) -> list[dict]:
    """Users ordered by username, optionally filtered by status, MFA (``mfa_enabled``: :func:`has_mfa_configured`)
    and Enabled."""
    where, params = _user_filters(status=status, mfa_enabled=mfa_enabled, enabled=enabled)
    params = [list(MFA_KINDS), *params]  # the kinds of _SELECT's mfa_enabled first
    sql = _SELECT + where + " ORDER BY username, pool_key"
    if limit is not None:
        sql += " LIMIT ? OFFSET ?"
        params += [int(limit), int(offset)]
    cur = con.execute(sql, params)
    names = [d[0] for d in cur.description]
    return [_row(names, r) for r in cur.fetchall()]
