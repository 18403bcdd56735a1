"""What ``aws cognito-idp admin-list-user-auth-events`` prints: ``{"AuthEvents": [...], "NextToken": "..."}``.

Example (pretty-printed as the CLI prints it)::

    {
        "AuthEvents": [
            {
                "EventId": "1b2c...",
                "EventType": "SignIn",
                "CreationDate": "2024-07-17T17:25:55.123000+00:00",
                "EventResponse": "Pass",
                "EventRisk": {"RiskDecision": "NoRisk", "CompromisedCredentialsDetected": false},
                "ChallengeResponses": [{"ChallengeName": "Password", "ChallengeResponse": "Success"}],
                "EventContextData": {"IpAddress": "192.0.2.1", "DeviceName": "Chrome 126, Windows 10",
                                     "Timezone": "+02:00", "City": "Paris", "Country": "France"}
            }
        ],
        "NextToken": "..."
    }

The document names no user: give it with ``--username`` (required). Several
documents may follow one another (pages saved by a paging loop, pretty-printed
or one per line). ``CreationDate`` is an ISO 8601 string or epoch seconds (older
CLIs). Each AuthEvents item is a row whose line is the line where the item
starts.

Mapping: EventId -> event_id (derived from the item and the username when
absent), EventType, EventResponse, CreationDate -> creation_date,
ChallengeResponses -> challenge_responses, EventContextData.IpAddress ->
ip_address (has_context_data: EventContextData is present), DeviceName ->
source_device_name, City -> source_city, Country -> source_country,
EventRisk.CompromisedCredentialsDetected -> compromised_credentials. ``extra``
keeps EventRisk and EventFeedback whole, EventContextData's other fields
(Timezone) and any field we do not know, under their own names.

EventFeedback (the feedback in force when the page was listed) is also given
beside the events (``ReadBatch.feedback``), for ``riskgate ingest`` to record
as the feedback given: FeedbackValue ``Valid`` or ``Invalid`` and Provider
``Admin`` or ``User`` (both required, as in the API; any case, recorded in
Cognito's), FeedbackDate an ISO 8601 time or epoch seconds (optional in the
API: without it, the event's CreationDate, the earliest the feedback can have
been given, so that it never outranks feedback given later). An item whose
EventFeedback breaks one of these rules is quarantined, the reason naming the
field, like any other bad field: its sign-in is then no part of the user's
known history, which is also what an unread ``Invalid`` would have meant.

The format is small (at most 60 events a page), so items are checked one by one
in Python; the file is still read in bounded pieces, never whole: a document's
items are read a batch at a time (a page of millions of ``[]`` items fits in a
60 KB gzip file), a broken region is let go as it is read past, and an item
nested more than ``MAX_JSON_DEPTH`` levels deep (Python's parser recurses) is
quarantined alone.
"""

from __future__ import annotations

import codecs
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from json.decoder import JSONDecodeError, scanstring

import pyarrow as pa

from ingest.errors import InputFormatError, malformed_json
from ingest.schema import (
    FEEDBACK_PROVIDERS,
    FEEDBACK_VALUES,
    MAX_FUTURE,
    MIN_TIME,
    SOURCE_FEEDBACK_SCHEMA,
    SOURCE_SCHEMA,
    short_digest,
)
from ingest.sources.base import (
    MAX_RAW_CHARS,
    RAW_COLUMN,
    QuarantineBuilder,
    ReadBatch,
    ReaderOptions,
    deeper_than,
    json_value_end,
    nested_too_deeply,
    open_binary,
)

NAME = "cognito-auth-events"
EXPECTED = "the JSON document that `aws cognito-idp admin-list-user-auth-events` prints ({\"AuthEvents\": [...]})"
_COLUMNS = ["event_id", "user_pool_id", "username", "event_type", "event_response", "creation_date",
            "challenge_responses", "ip_address", "has_context_data", "compromised_credentials", "source_country",
            "source_city", "source_device_name", "extra"]
_TYPES = {f.name: f.type for f in SOURCE_SCHEMA}
OUT_SCHEMA = pa.schema([pa.field(c, _TYPES[c]) for c in _COLUMNS]
                       + [pa.field(RAW_COLUMN, pa.string()), pa.field("source_line", pa.int64())])
KNOWN_ITEM_KEYS = ("EventId", "EventType", "CreationDate", "EventResponse", "EventRisk", "ChallengeResponses",
                   "EventContextData", "EventFeedback")
CONTEXT_MAPPED = ("IpAddress", "DeviceName", "City", "Country")
#: A document may not grow beyond this many characters while we look for its end.
MAX_DOCUMENT_CHARS = 64 << 20
_CHUNK = 1 << 20
_WS = re.compile(r"[ \t\n\r]*")
_NOT_UTF8 = re.compile("[\udc80-\udcff]")
_NEXT_DOC = re.compile(r"\n(?=[{\[])")  # a line opening a value: the start of the next document
_scan_once = json.JSONDecoder().scan_once


class _Malformed(Exception):
    def __init__(self, pos: int, msg: str):
        super().__init__(msg)
        self.pos = pos
        self.msg = msg


@dataclass
class _Document:
    start: int  # where this part of the document starts (a document with many items is read in parts)
    end: int
    items: list[tuple[int, int, object]] = field(default_factory=list)  # (start, end, value) of AuthEvents items
    has_auth_events: bool = False
    top: str = "object"  # the JSON type of the document
    error: _Malformed | None = None  # where the document stopped being JSON (items before it are kept)
    resume: int | None = None  # the next item, when the part ended after as many items as it may hold
    before: int = 0  # the items of the document's earlier parts


def _ws(s: str, i: int) -> int:
    return _WS.match(s, i).end()


class _TooDeep:
    """A value nested too deeply for Python's parser (RecursionError), stepped over by its brackets."""

    def __init__(self, kind: str):
        self.kind = kind  # "an array" or "an object"


def _value(s: str, i: int) -> tuple[object, int]:
    try:
        return _scan_once(s, i)
    except StopIteration as exc:
        raise _Malformed(exc.value, "Expecting value") from None
    except JSONDecodeError as exc:
        raise _Malformed(exc.pos, exc.msg) from None
    except RecursionError:  # one value too deep must not end the run: its row is quarantined (``_items``)
        end = json_value_end(s, i)
        if end is None:  # cut off (read on) or never closed
            raise _Malformed(len(s), "Expecting ',' delimiter") from None
        return _TooDeep("an array" if s[i] == "[" else "an object"), end


def _walk(s: str, pos: int, max_items: int, part: _Document | None = None) -> _Document:
    """Parse the JSON document at ``s[pos]``, noting where each AuthEvents item starts. After ``max_items`` items
    the part ends with ``resume`` set; ``_walk(s, doc.resume, max_items, doc)`` reads the next part (a document of
    millions of items is never held whole: a small gzip file can hold one)."""
    if part is not None:  # inside the AuthEvents array, at an item
        doc = replace(part, start=pos, end=pos, items=[], error=None, resume=None,
                      before=part.before + len(part.items))
        i, in_items = pos, True
    else:
        doc = _Document(start=pos, end=pos)
        if s[pos] != "{":
            value, end = _value(s, pos)
            doc.top = _json_type(value)
            doc.end = end
            return doc
        i = _ws(s, pos + 1)
        if i < len(s) and s[i] == "}":
            doc.end = i + 1
            return doc
        in_items = False
    try:
        while True:
            if not in_items:
                if i >= len(s) or s[i] != '"':
                    raise _Malformed(i, "Expecting property name enclosed in double quotes")
                try:
                    key, i = scanstring(s, i + 1)
                except JSONDecodeError as exc:
                    raise _Malformed(exc.pos, exc.msg) from None
                i = _ws(s, i)
                if i >= len(s) or s[i] != ":":
                    raise _Malformed(i, "Expecting ':' delimiter")
                i = _ws(s, i + 1)
                if key == "AuthEvents" and i < len(s) and s[i] == "[":
                    doc.has_auth_events = True
                    i = _ws(s, i + 1)
                    if i < len(s) and s[i] == "]":
                        i += 1
                    else:
                        in_items = True
                else:
                    value, i = _value(s, i)
                    if key == "AuthEvents":
                        doc.top = "AuthEvents is " + _json_type(value)
            if in_items:
                while True:
                    if len(doc.items) >= max_items:
                        doc.resume = i
                        return doc
                    start = i
                    value, i = _value(s, i)
                    doc.items.append((start, i, value))
                    i = _ws(s, i)
                    if i < len(s) and s[i] == ",":
                        i = _ws(s, i + 1)
                        continue
                    if i < len(s) and s[i] == "]":
                        i += 1
                        break
                    raise _Malformed(i, "Expecting ',' delimiter")
                in_items = False
            i = _ws(s, i)
            if i < len(s) and s[i] == ",":
                i = _ws(s, i + 1)
                continue
            if i < len(s) and s[i] == "}":
                doc.end = i + 1
                return doc
            raise _Malformed(i, "Expecting ',' delimiter")
    except _Malformed as exc:
        doc.error = exc
        return doc


def _snippet(s: str, pos: int) -> str:
    """The start of what was found at ``pos``, up to the end of its line."""
    return s[pos:pos + 30].split("\n", 1)[0].rstrip("\r")


def _json_type(v: object) -> str:
    if isinstance(v, _TooDeep):
        return v.kind
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "a boolean"
    if isinstance(v, int | float):
        return "a number"
    if isinstance(v, str):
        return "a string"
    if isinstance(v, list):
        return "an array"
    return "an object"


class _Text:
    """The decoded file, read in pieces; positions map to physical line numbers."""

    def __init__(self, fh):
        self.fh = fh
        self.dec = codecs.getincrementaldecoder("utf-8")("surrogateescape")
        self.buf = ""
        self.base_line = 1  # line number of buf[0]
        self.eof = False
        self._cur = (0, 1)  # (position, its line): line lookups move forward from here

    def more(self, n: int | None = None) -> bool:
        if self.eof:
            return False
        n = _CHUNK if n is None else n
        data = self.fh.read(n)
        if not data:
            self.buf += self.dec.decode(b"", final=True)
            self.eof = True
            return False
        self.buf += self.dec.decode(data)
        return True

    def line_of(self, pos: int) -> int:
        p, line = self._cur
        if pos < p:
            p, line = 0, self.base_line
        line += self.buf.count("\n", p, pos)
        self._cur = (pos, line)
        return line

    def drop_before(self, pos: int) -> None:
        """Forget text before ``pos`` (positions shift down by ``pos``)."""
        if pos <= 0:
            return
        self.base_line = self.line_of(pos)
        self.buf = self.buf[pos:]
        self._cur = (0, self.base_line)


def _parse_time(v: object) -> datetime | None:
    if isinstance(v, bool):
        return None
    if isinstance(v, int | float):
        x = float(v)
        if x > 1e11:
            x /= 1000.0
        try:
            return datetime.fromtimestamp(x, tz=timezone.utc)
        except (OverflowError, OSError, ValueError):
            return None
    if isinstance(v, str):
        s = v.strip()
        try:
            t = datetime.fromisoformat(s)
        except ValueError:
            if re.fullmatch(r"-?\d{9,16}(\.\d+)?", s):
                return _parse_time(float(s))
            return None
        return t.replace(tzinfo=timezone.utc) if t.tzinfo is None else t.astimezone(timezone.utc)
    return None


def _spelled(value: object, allowed: tuple[str, ...]) -> str | None:
    """``value`` in the spelling of the one of ``allowed`` it is in any case (``invalid`` -> ``Invalid``), else None."""
    if isinstance(value, str):
        for a in allowed:
            if value.lower() == a.lower():
                return a
    return None


def _check_feedback(fb: dict, max_time: datetime) -> list[str]:
    """The problems of an EventFeedback object (the module docstring's rules), each naming the field."""
    bad = []
    for key, allowed in (("FeedbackValue", FEEDBACK_VALUES), ("Provider", FEEDBACK_PROVIDERS)):
        v = fb.get(key)
        want = " or ".join(allowed)
        if v is None:
            bad.append(f"EventFeedback.{key} is required ({want})")
        elif _spelled(v, allowed) is None:
            got = json.dumps(v, ensure_ascii=False)[:40]
            bad.append(f"EventFeedback.{key} must be {want}, got "
                       + (got if isinstance(v, str) else f"{_json_type(v)} {got}"))
    date = fb.get("FeedbackDate")
    if date is not None:
        when = _parse_time(date)
        if when is None:
            bad.append(f"EventFeedback.FeedbackDate must be an ISO 8601 time or epoch seconds, got "
                       f"{json.dumps(date)[:60]}")
        elif when < MIN_TIME or when > max_time:
            bad.append(f"EventFeedback.FeedbackDate {when:%Y-%m-%dT%H:%M:%SZ} is "
                       + ("in the future" if when > max_time else "before 2000-01-01"))
    return bad


def _check_item(item: object, max_time: datetime | None = None) -> list[str]:
    """Type and presence problems of one AuthEvents item, each naming the field and what it holds. ``max_time``:
    the latest FeedbackDate taken (default: a day from now)."""
    if not isinstance(item, dict):
        return [f"an AuthEvents item must be an object, got {_json_type(item)}"]
    bad: list[str] = []

    def want_str(d: dict, key: str, where: str, required: bool = False) -> None:
        v = d.get(key)
        if v is None:
            if required:
                bad.append(f"{where} is required")
        elif not isinstance(v, str):
            bad.append(f"{where} must be a string, got {_json_type(v)} {json.dumps(v)[:40]}")
        elif required and not v:
            bad.append(f"{where} is required (got an empty string)")

    def want_obj(key: str) -> dict | None:
        v = item.get(key)
        if v is None:
            return None
        if not isinstance(v, dict):
            bad.append(f"{key} must be an object, got {_json_type(v)}")
            return None
        return v

    want_str(item, "EventId", "EventId")
    want_str(item, "EventType", "EventType", required=True)
    want_str(item, "EventResponse", "EventResponse", required=True)
    cd = item.get("CreationDate")
    if cd is None:
        bad.append("CreationDate is required")
    elif _parse_time(cd) is None:
        bad.append(f"CreationDate must be an ISO 8601 time or epoch seconds, got {json.dumps(cd)[:60]}")
    risk = want_obj("EventRisk")
    if risk is not None:
        want_str(risk, "RiskDecision", "EventRisk.RiskDecision")
        want_str(risk, "RiskLevel", "EventRisk.RiskLevel")
        ccd = risk.get("CompromisedCredentialsDetected")
        if ccd is not None and not isinstance(ccd, bool):
            bad.append(f"EventRisk.CompromisedCredentialsDetected must be true or false, got {json.dumps(ccd)[:40]}")
    ch = item.get("ChallengeResponses")
    if ch is not None:
        if not isinstance(ch, list):
            bad.append(f"ChallengeResponses must be an array, got {_json_type(ch)}")
        elif any(not isinstance(c, dict) or not isinstance(c.get("ChallengeName"), str)
                 or not isinstance(c.get("ChallengeResponse"), str) for c in ch):
            bad.append("ChallengeResponses items must be objects with string ChallengeName and ChallengeResponse")
    ctx = want_obj("EventContextData")
    if ctx is not None:
        for k in ("IpAddress", "DeviceName", "Timezone", "City", "Country"):
            want_str(ctx, k, f"EventContextData.{k}")
    fb = want_obj("EventFeedback")
    if fb is not None:
        bad.extend(_check_feedback(fb, max_time or datetime.now(timezone.utc) + MAX_FUTURE))
    return bad


def _row(item: dict, username: str, pool: str | None, raw: str, line: int) -> dict:
    ctx = item.get("EventContextData")
    risk = item.get("EventRisk") or {}
    extra: dict = {}
    for k in ("EventRisk", "EventFeedback"):
        if item.get(k) is not None:
            extra[k] = item[k]
    if isinstance(ctx, dict):
        rest = {k: v for k, v in ctx.items() if k not in CONTEXT_MAPPED and v is not None}
        if rest:
            extra["EventContextData"] = rest
    for k, v in item.items():
        if k not in KNOWN_ITEM_KEYS:
            extra[k] = v
    # (an id derived from the item leaves out its EventFeedback, which changes once feedback is given: the event
    # listed again with it is the same event, which the feedback is about)
    event_id = item.get("EventId") or "ae-" + short_digest(username + "\x1f" + json.dumps(
        {k: v for k, v in item.items() if k != "EventFeedback"}, sort_keys=True, ensure_ascii=False))
    ctx = ctx if isinstance(ctx, dict) else {}
    created = _parse_time(item["CreationDate"])
    fb = item.get("EventFeedback")
    if isinstance(fb, dict):  # (checked: _check_feedback) the columns of SOURCE_FEEDBACK_SCHEMA, for _batch
        feedback = {"feedback_value": _spelled(fb["FeedbackValue"], FEEDBACK_VALUES),
                    "provider": _spelled(fb["Provider"], FEEDBACK_PROVIDERS),
                    "feedback_date": created if fb.get("FeedbackDate") is None else _parse_time(fb["FeedbackDate"])}
    else:
        feedback = {}
    return {
        "event_id": event_id,
        "user_pool_id": pool,
        "username": username,
        "event_type": item["EventType"],
        "event_response": item["EventResponse"],
        "creation_date": created,
        "challenge_responses": None if item.get("ChallengeResponses") is None else [
            {"challenge_name": c["ChallengeName"], "challenge_response": c["ChallengeResponse"]}
            for c in item["ChallengeResponses"]],
        "ip_address": ctx.get("IpAddress"),
        "has_context_data": isinstance(item.get("EventContextData"), dict),
        "compromised_credentials": risk.get("CompromisedCredentialsDetected"),
        "source_country": ctx.get("Country"),
        "source_city": ctx.get("City"),
        "source_device_name": ctx.get("DeviceName"),
        "extra": json.dumps(extra, ensure_ascii=False, separators=(",", ":")) if extra else None,
        RAW_COLUMN: raw,
        "source_line": line,
        **feedback,
    }


def username_of_file(path: str) -> str:
    """The user a file of AdminListUserAuthEvents output is named after: its name without ``.gz`` and then
    ``.json`` or ``.jsonl`` (``chidi.bell.json.gz`` -> ``chidi.bell``), as ``riskgate synth`` writes them and
    ``aws cognito-idp admin-list-user-auth-events --username alice > alice.json`` does. The suffixes in any case
    (``BOB.JSON`` -> ``BOB``: it was user ``BOB.JSON``); the name keeps its own."""
    name = os.path.basename(path)
    name = name[:-3] if name.lower().endswith(".gz") else name
    for ext in (".json", ".jsonl"):
        if name.lower().endswith(ext):
            name = name[: -len(ext)]
            break
    if not name:
        raise InputFormatError("the file name holds no username (--username-from-file-name)", source=str(path))
    return name


class CognitoAuthEvents:
    name = NAME
    description = ("output of `aws cognito-idp admin-list-user-auth-events` (one or more pages; needs --username "
                   "or --username-from-file-name)")

    def sniff(self, head: bytes) -> bool:
        return re.match(rb'\s*\{\s*"(AuthEvents|NextToken)"\s*:', head.removeprefix(b"\xef\xbb\xbf")) is not None

    def read(self, path: str, options: ReaderOptions) -> Iterator[ReadBatch]:
        if options.username_from_file_name:
            options = replace(options, username=username_of_file(path))
        if not options.username:
            raise InputFormatError(
                "AdminListUserAuthEvents output does not say whose events these are: pass --username USER "
                "(the user the events were listed for), or --username-from-file-name for files named "
                "after their users (alice.json)", source=str(path))
        with open_binary(path) as fh:
            yield from self._read(path, _Text(fh), options)

    def _read(self, path: str, text: _Text, options: ReaderOptions) -> Iterator[ReadBatch]:
        rows: list[dict] = []
        q = QuarantineBuilder(NAME, path)
        pos = 0
        first = True
        part: _Document | None = None  # a document with more items to read: its next part starts at part.resume
        text.more()
        text.buf = text.buf.removeprefix("\ufeff")
        while True:
            if part is not None:
                pos = part.resume
                if pos > _CHUNK:  # the items read already are let go
                    text.drop_before(pos)
                    pos = part.resume = 0
            else:
                pos = _ws(text.buf, pos)
                if pos >= len(text.buf):
                    if text.more():
                        continue
                    break
                if pos > _CHUNK:
                    text.drop_before(pos)
                    pos = 0
                ch = text.buf[pos]
                if ch not in "{[":
                    line = text.line_of(pos)
                    if first:
                        raise InputFormatError(f"is not JSON (it starts with {_snippet(text.buf, pos)!r}); "
                                               f"expected {EXPECTED}", source=str(path), line=line)
                    reason = (f"not JSON: expected another {{\"AuthEvents\": [...]}} document, found "
                              f"{_snippet(text.buf, pos)!r}")
                    pos, raw, length = self._resync(text, pos, pos + 1)
                    q.add(line, reason, raw, length)
                    continue
            doc = _walk(text.buf, pos, max(1, options.batch_rows - len(rows) - len(q)), part)
            if (doc.error is not None and not text.eof and len(text.buf) - pos < MAX_DOCUMENT_CHARS
                    and _NEXT_DOC.search(text.buf, pos + 1) is None):
                text.more(max(_CHUNK, len(text.buf) - pos))  # the document may only be cut off: read on
                continue
            cut = None  # a broken document's break: a line in it that starts another document
            if doc.error is not None:  # (the parser may have read on into the next document before it failed)
                cut = _NEXT_DOC.search(text.buf, doc.start + 1, doc.error.pos + 1)
                if cut is not None:  # the items from that line on are the next document's
                    doc.items = [it for it in doc.items if it[1] <= cut.start()]
            items = doc.before + len(doc.items)
            if first and (doc.error is not None and not items and cut is None
                          or not doc.has_auth_events and doc.error is None):
                what = (malformed_json(doc.error.msg, f"line {text.line_of(doc.error.pos)}") if doc.error
                        else f"the JSON is {doc.top}" if doc.top != "object" else "the object has no AuthEvents")
                raise InputFormatError(f"is not AdminListUserAuthEvents output: {what}; expected {EXPECTED}",
                                       source=str(path), line=text.line_of(pos))
            first = False
            self._items(text, doc, rows, q, options)
            part = None
            if doc.resume is not None:
                part = doc
            elif doc.error is not None:
                err_line = text.line_of(doc.error.pos)
                where = doc.start
                if doc.items:  # the rest starts after the last good item and its comma
                    where = _ws(text.buf, doc.items[-1][1])
                    where = _ws(text.buf, where + 1) if text.buf[where:where + 1] == "," else where
                if cut is not None:  # the broken part ends where the next document starts
                    where = min(where, cut.start())
                    if where == cut.start() and doc.items:  # (only the comma after the last item)
                        where = doc.items[-1][1]
                    reason = (f"malformed JSON: the document breaks off before line {text.line_of(cut.end())}, "
                              "which starts another one")
                else:
                    reason = malformed_json(doc.error.msg, f"line {err_line}")
                line = text.line_of(where)
                reason += f" (after {items} good AuthEvents items of this document)" if items else ""
                pos, raw, length = self._resync(text, where, cut.start() if cut else max(doc.error.pos, where + 1))
                q.add(line, reason, raw, length)
            else:
                if not doc.has_auth_events:
                    q.add(text.line_of(doc.start),
                          f"not an AuthEvents document: the JSON is {doc.top}" if doc.top != "object"
                          else "not an AuthEvents document: the object has no AuthEvents array",
                          text.buf[doc.start:doc.end])
                pos = doc.end
            if len(rows) + len(q) >= options.batch_rows:
                yield self._batch(rows, q)
                rows, q = [], QuarantineBuilder(NAME, path)
        if rows or len(q):
            yield self._batch(rows, q)
        elif first:
            raise InputFormatError(f"is empty: expected {EXPECTED}", source=str(path))

    def _items(self, text: _Text, doc: _Document, rows: list[dict], q: QuarantineBuilder,
               options: ReaderOptions) -> None:
        max_time = datetime.now(timezone.utc) + MAX_FUTURE  # the latest FeedbackDate taken
        for start, end, item in doc.items:
            raw = text.buf[start:end]
            line = text.line_of(start)
            m = _NOT_UTF8.search(raw)
            if m:
                bad_line = text.line_of(start + m.start())
                q.add(line, f"not UTF-8: invalid byte on line {bad_line}",
                      raw.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace"))
                continue
            at = deeper_than(raw) if isinstance(item, (dict, list, _TooDeep)) else None
            if at is not None or isinstance(item, _TooDeep):  # Python's parser, json.dumps and repr recurse
                deep = start + (at or 0)
                column = deep - (text.buf.rfind("\n", 0, deep) + 1) + 1
                q.add(line, nested_too_deeply(f"line {text.line_of(deep)} column {column}"), raw)
                continue
            problems = _check_item(item, max_time)
            if problems:
                q.add(line, "; ".join(problems), raw)
                continue
            rows.append(_row(item, options.username or "", options.user_pool_id, raw, line))  # type: ignore[arg-type]

    @staticmethod
    def _resync(text: _Text, start: int, pos: int) -> tuple[int, str, int | None]:
        """Where reading can start again after a broken document that starts at ``start`` (the next line, from
        ``pos`` on, that opens an object or an array), the broken text and, when that is only its start, its
        whole length. What it reads past beyond a chunk is let go as it goes: a broken region of gigabytes (a small
        gzip file) is never held whole, only its first MAX_RAW_CHARS characters for the quarantine row."""
        head, dropped = "", 0  # the start of what is let go (MAX_RAW_CHARS at most) and how much that is
        while True:
            m = _NEXT_DOC.search(text.buf, pos)
            if m:
                end = m.end()
                break
            pos = max(pos, len(text.buf) - 1)  # search the text read next, from the newline that may precede it
            if pos - start > _CHUNK:
                head += text.buf[start:min(pos, start + MAX_RAW_CHARS - len(head))]
                dropped += pos - start
                text.drop_before(pos)
                start, pos = 0, 0
            if not text.more():
                end = len(text.buf)
                break
        raw = text.buf[start:end].rstrip()
        if not dropped:
            return end, raw, None
        return end, head + raw[:MAX_RAW_CHARS - len(head)], dropped + len(raw)

    @staticmethod
    def _batch(rows: list[dict], q: QuarantineBuilder) -> ReadBatch:
        events = pa.Table.from_pylist(rows, schema=OUT_SCHEMA)
        feedback = (pa.Table.from_pylist(rows, schema=SOURCE_FEEDBACK_SCHEMA)
                    if any("feedback_value" in r for r in rows) else None)
        return ReadBatch(events=events, quarantine=q.table(), feedback=feedback)


READER = CognitoAuthEvents()
