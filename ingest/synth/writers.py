"""One writer per input format ``riskgate ingest`` reads, plus the users and labels files written beside.

Writers receive time-ordered views of events, a bounded block at a time, and
stream them out (all but ``cognito-auth-events``, whose per-user documents are
newest-first and so are held per user until the end; it is meant for small
data sets). Output ending in ``.gz`` is gzip-compressed with a zero mtime, so
the same seed gives the same bytes; a format that cannot be (Parquet, a folder)
is refused such a name (:func:`check_out`). Every file is written as
``<name>.partial`` and renamed when the whole run is done
(:class:`ingest.outputs.PartialOutputs`).

Beside the output (``<stem>`` is its name without ``.gz`` and the format's
extension; for ``cognito-auth-events`` the folder's name):

* ``<stem>.users.json``: the users as ``ListUsers`` output, plus the
  ``AdminGetUser`` fields ``UserMFASettingList`` and ``PreferredMfaSetting``;
* ``<stem>.labels.csv``: ``event_id,label,value,source`` ground truth for every
  event written;
* ``<stem>.mapping.yaml``: for ``csv`` and ``parquet``, the column mapping
  their reader needs.
"""

from __future__ import annotations

import gzip
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import numpy as np

from ingest.errors import ConfigurationError
from ingest.outputs import PartialOutputs
from ingest.synth import events as ev
from ingest.synth.config import ATTACK_TYPES
from ingest.synth.population import USER_POOL_ID
from ingest.synth.render import SERVER_PATHS, View, challenges_json, iso_with_offset, proxied_headers
from ingest.synth.world import World

LABEL_SOURCE = "synth"
RBA_HEADER = (
    "index,Login Timestamp,User ID,Round-Trip Time [ms],IP Address,Country,Region,City,ASN,User Agent String,"
    "Browser Name and Version,OS Name and Version,Device Type,Login Successful,Is Attack IP,Is Account Takeover"
)
TABULAR_COLUMNS = ("event_id", "username", "user_sub", "user_pool_id", "client_id", "event_type", "event_response",
                   "creation_date", "ip_address", "user_agent")
#: canonical field -> column of the csv / parquet output
TABULAR_MAPPING = {c: c for c in TABULAR_COLUMNS if c != "user_agent"} | {"user_agent_source": "user_agent"}
_EXTENSIONS = (".jsonl", ".ndjson", ".json", ".log", ".csv", ".parquet", ".txt")


def stem_of(out: Path) -> Path:
    """``data/synth.jsonl.gz`` -> ``data/synth``; the side files are named after it."""
    name = out.name
    if name.endswith(".gz"):
        name = name[:-3]
    for ext in _EXTENSIONS:
        if name.endswith(ext) and len(name) > len(ext):
            name = name[: -len(ext)]
            break
    return out.with_name(name)


def open_text(path: Path, outputs: PartialOutputs) -> "IO[str] | _GzipText":
    """The text file ``path`` for writing (as ``outputs`` says: under its partial name until the run is done), gzip
    when the name ends in ``.gz`` (mtime 0: reproducible bytes)."""
    where = outputs.path(path)
    if path.name.endswith(".gz"):
        return _GzipText(where)
    return open(where, "w", encoding="utf-8", newline="\n")


class _GzipText:
    """Text written through gzip with no name and no time in its header; closing closes the file too."""

    def __init__(self, path: str | Path):
        self.raw = open(path, "wb")
        self.gz = gzip.GzipFile(filename="", fileobj=self.raw, mode="wb", mtime=0, compresslevel=6)
        self.text = io.TextIOWrapper(self.gz, encoding="utf-8", newline="\n")

    def write(self, s: str) -> int:
        return self.text.write(s)

    def close(self) -> None:
        self.text.close()
        self.raw.close()


def _bools(a: np.ndarray, true: str = "true", false: str = "false") -> np.ndarray:
    return np.where(a, true, false).astype(object)


@dataclass
class Writer:
    """Base: ``write`` a view, ``close`` and say which files were written (their names: ``outputs`` says where
    they are written until the run is done)."""

    out: Path
    world: World
    outputs: PartialOutputs
    files: list[Path] = field(default_factory=list)
    rows: int = 0

    name = ""
    description = ""
    #: whether an ``--out`` ending in ``.gz`` is written gzip-compressed, as ``--out``'s help promises ...
    gzip_by_name = False
    #: ... and if not, why (such a name is refused before anything is written)
    no_gzip = ""

    def __post_init__(self) -> None:
        """Open the output (subclasses); called by the dataclass ``__init__``."""

    def keep(self, b: ev.Block) -> np.ndarray | None:
        """Indices of the events this format can hold (None: all)."""
        return None

    def event_ids(self, view: View) -> list[str]:
        """The event ids this format's reader will give the events (for the labels file)."""
        return view.event_id

    def write(self, view: View) -> None:
        raise NotImplementedError

    def close(self) -> list[Path]:
        return self.files


class _LineWriter(Writer):
    gzip_by_name = True

    def __post_init__(self) -> None:
        self.fh = open_text(self.out, self.outputs)
        self.files.append(self.out)

    def lines(self, view: View) -> list[str]:
        raise NotImplementedError

    def write(self, view: View) -> None:
        lines = self.lines(view)
        if lines:
            self.fh.write("\n".join(lines))
            self.fh.write("\n")
        self.rows += len(lines)

    def close(self) -> list[Path]:
        self.fh.close()
        return self.files


class RiskgateJsonlWriter(_LineWriter):
    name = "riskgate-jsonl"
    description = "riskgate JSON lines (the default): Cognito-shaped events with ContextData"

    def __post_init__(self) -> None:
        super().__post_init__()
        from ingest.synth.population import CLIENTS
        from ingest.schema import EVENT_TYPES

        self.server = np.array(
            [[f'"ServerName":"{c[2]}","ServerPath":"{SERVER_PATHS[c[0]][e]}"' for e in range(len(EVENT_TYPES))]
             for c in CLIENTS],
            dtype=object,
        )
        # events with no challenge leave ChallengeResponses out (the field is optional)
        self.chal = np.array([f',"ChallengeResponses":{c}' if c != "[]" else "" for c in challenges_json("api")],
                             dtype=object)
        self.user_json = np.array(
            [f'"Username":{json.dumps(u)},"UserSub":"{s}"' for u, s in zip(self.world.pop.usernames,
                                                                          self.world.pop.subs)],
            dtype=object,
        )
        self.inline_labels = self.world.config.inline_labels

    def lines(self, v: View) -> list[str]:
        b = v.b
        n = len(b)
        if n == 0:
            return []
        enc = v.r.encoded_part()[b.dev]
        xff = np.full(n, "", dtype=object)
        for i in np.nonzero(b.proxied)[0].tolist():
            xff[i] = proxied_headers(v.client_ip[i], int(b.t[i]))
        rtt = b.rtt.astype(str)
        labels = self._labels(b) if self.inline_labels else np.full(n, "", dtype=object)
        pool = USER_POOL_ID
        return [
            f'{{"EventId":"{e}","UserPoolId":"{pool}","ClientId":"{c}",{u},"EventType":"{et}",'
            f'"EventResponse":"{er}","CreationDate":"{ts}Z"{ch},'
            f'"ContextData":{{"IpAddress":"{ip}",{srv},"HttpHeaders":{ho}{xf}]{en}}},"RoundTripTimeMs":{rt}{lb}}}'
            for e, c, u, et, er, ts, ch, ip, srv, ho, xf, en, rt, lb in zip(
                v.event_id, v.client_id, self.user_json[b.user], v.event_type, v.event_response, v.iso_ms.tolist(),
                self.chal[b.chal], v.ip_address, self.server[v.client, b.etype], v.headers_open, xff, enc,
                rtt.tolist(), labels,
            )
        ]

    @staticmethod
    def _labels(b: ev.Block) -> np.ndarray:
        ato = _bools(b.ato)
        aip = _bools(b.atk_ip)
        types = np.array([""] + [f',"attack_type":"{a}"' for a in ATTACK_TYPES], dtype=object)[b.attack]
        return np.array(
            [f',"Labels":{{"is_account_takeover":{a},"is_attack_ip":{i}{t}}}' for a, i, t in zip(ato, aip, types)],
            dtype=object,
        )


class UserActivityWriter(_LineWriter):
    name = "cognito-user-activity"
    description = "Cognito user-activity log export lines (all values strings)"

    def __post_init__(self) -> None:
        super().__post_init__()
        cat = self.world.cat
        self.city = np.array([json.dumps(c, ensure_ascii=False) for c in cat.city_name], dtype=object)
        self.country = np.array([json.dumps(c, ensure_ascii=False) for c in cat.country_name], dtype=object)
        self.chal = np.array(challenges_json("export"), dtype=object)
        self.users = np.array([json.dumps(u) for u in self.world.pop.usernames], dtype=object)

    def lines(self, v: View) -> list[str]:
        b = v.b
        if len(b) == 0:
            return []
        pool = USER_POOL_ID
        return [
            f'{{"eventTimestamp":"{t}","eventSource":"USER_ACTIVITY","logLevel":"INFO","message":{{"version":"1",'
            f'"eventId":"{e}","eventType":"{et}","userSub":"{sub}","userName":{un},"userPoolId":"{pool}",'
            f'"clientId":"{c}","creationDate":"{jd}","eventResponse":"{er}","riskLevel":"","riskDecision":"PASS",'
            f'"challenges":{ch},"deviceName":{dn},"ipAddress":"{ip}","requestId":"{rq}","idpName":"",'
            f'"compromisedCredentialDetected":"false","city":{city},"country":{country},"eventFeedbackValue":"",'
            f'"eventFeedbackDate":"","eventFeedbackProvider":"","hasContextData":"true"}},'
            f'"logSourceId":{{"userPoolId":"{pool}"}}}}'
            for t, e, et, sub, un, c, jd, er, ch, dn, ip, rq, city, country in zip(
                b.t.tolist(), v.event_id, v.event_type, v.user_sub, self.users[b.user], v.client_id, v.java_date,
                v.event_response, self.chal[b.chal], [json.dumps(x) for x in v.device_name], v.client_ip,
                v.request_id, self.city[b.net], self.country[b.net],
            )
        ]


class AuthEventsWriter(Writer):
    """One ``AdminListUserAuthEvents`` document per user, newest first, in ``<out>/<username>.json``."""

    name = "cognito-auth-events"
    description = "one AdminListUserAuthEvents JSON document per user, as the AWS CLI prints it, in a folder"
    no_gzip = "it writes a folder of uncompressed <username>.json files"

    def __post_init__(self) -> None:
        if self.out.exists() and not self.out.is_dir():
            raise ConfigurationError("cognito-auth-events writes a folder (one file per user); "
                                     "--out names an existing file", source=str(self.out))
        if self.out.is_dir() and any(self.out.iterdir()):
            raise ConfigurationError("cognito-auth-events writes one file per user into a new or empty folder; "
                                     "this folder is not empty", source=str(self.out))
        self.folder = Path(self.outputs.path(self.out, folder=True))
        self.by_user: dict[int, list[dict]] = {}
        self.chal = [[{"ChallengeName": n, "ChallengeResponse": r} for n, r in p] for p in ev.CHALLENGES]

    def write(self, v: View) -> None:
        b = v.b
        cat = self.world.cat
        for i, (u, e, et, er, ch, ip, dn, tz, net, t) in enumerate(zip(
            b.user.tolist(), v.event_id, v.event_type, v.event_response, b.chal.tolist(), v.client_ip,
            v.device_name, v.timezone, b.net.tolist(), b.t.tolist(),
        )):
            self.by_user.setdefault(u, []).append({
                "EventId": e,
                "EventType": et,
                "CreationDate": iso_with_offset(t),
                "EventResponse": er,
                "EventRisk": {"RiskDecision": "NoRisk", "CompromisedCredentialsDetected": False},
                "ChallengeResponses": self.chal[ch],
                "EventContextData": {"IpAddress": ip, "DeviceName": dn, "Timezone": tz,
                                     "City": cat.city_name[net], "Country": cat.country_name[net]},
            })
        self.rows += len(b)

    def close(self) -> list[Path]:
        names = self.world.pop.usernames
        for u in sorted(self.by_user):
            path = self.folder / f"{names[u]}.json"
            with open(path, "w", encoding="utf-8", newline="\n") as fh:
                json.dump({"AuthEvents": self.by_user[u][::-1]}, fh, indent=4, ensure_ascii=False)
                fh.write("\n")
        self.files.append(self.out)
        return self.files


class RbaCsvWriter(_LineWriter):
    """The RBA benchmark's CSV. It holds sign-ins only, so other event types are left out (and unlabelled)."""

    name = "rba-csv"
    description = "the public RBA benchmark CSV (sign-ins only)"

    def __post_init__(self) -> None:
        super().__post_init__()
        self.fh.write(RBA_HEADER + "\n")
        cat = self.world.cat
        self.geo = np.array([
            f"{cc},{_csv(rg)},{_csv(ct)},{asn}"
            for cc, rg, ct, asn in zip(cat.country, cat.region, cat.city_name, cat.asn.tolist())
        ], dtype=object)
        self.uid = self.world.pop.rba_id.astype(str).astype(object)
        self.index = 0
        self._agent_cols: dict[str, str] = {}

    def keep(self, b: ev.Block) -> np.ndarray | None:
        return np.nonzero(b.etype == ev.SIGN_IN)[0]

    def event_ids(self, view: View) -> list[str]:
        n = len(view.b)
        return [str(i) for i in range(self.index, self.index + n)]

    def _agent(self, ua: str) -> str:
        s = self._agent_cols.get(ua)
        if s is None:
            from ingest.synth.agents import describe_agent

            a = describe_agent(ua)
            browser = f"{a.browser_family} {a.browser_version}" if a.browser_version else a.browser_family
            os_ = f"{a.os_family} {a.os_version}" if a.os_version else a.os_family
            dtype = {"Other": "unknown"}.get(a.device_type, a.device_type.lower())
            s = f"{_csv(ua)},{_csv(browser)},{_csv(os_)},{dtype}"
            self._agent_cols[ua] = s
        return s

    def lines(self, v: View) -> list[str]:
        b = v.b
        n = len(b)
        if n == 0:
            return []
        ts = np.char.replace(v.iso_ms.astype(str), "T", " ").tolist()
        # the public data set's round-trip time is mostly empty: keep it for about one event in eight
        rtt = np.where(b.t % 8 == 0, b.rtt.astype(str), "").tolist()
        ok = _bools(b.resp == ev.PASS, "True", "False")
        aip = _bools(b.atk_ip, "True", "False")
        ato = _bools(b.ato, "True", "False")
        first = self.index
        self.index += n
        return [
            f"{first + i},{t},{uid},{r},{ip},{geo},{self._agent(ua)},{o},{a},{k}"
            for i, (t, uid, r, ip, geo, ua, o, a, k) in enumerate(zip(
                ts, self.uid[b.user], rtt, v.client_ip, self.geo[b.net], v.user_agent, ok, aip, ato,
            ))
        ]


def _csv(s: str) -> str:
    if s and any(ch in s for ch in ',"\n\r'):
        return '"' + s.replace('"', '""') + '"'
    return s


class CsvWriter(_LineWriter):
    name = "csv"
    description = "generic CSV (with a column-mapping file beside it)"

    def __post_init__(self) -> None:
        super().__post_init__()
        self.fh.write(",".join(TABULAR_COLUMNS) + "\n")
        write_mapping(stem_of(self.out).with_name(stem_of(self.out).name + ".mapping.yaml"), self.files, self.outputs)

    def lines(self, v: View) -> list[str]:
        b = v.b
        if len(b) == 0:
            return []
        pool = USER_POOL_ID
        return [
            f"{e},{u},{s},{pool},{c},{et},{er},{ts}Z,{ip},{_csv(ua)}"
            for e, u, s, c, et, er, ts, ip, ua in zip(
                v.event_id, v.username, v.user_sub, v.client_id, v.event_type, v.event_response,
                v.iso_ms.tolist(), v.client_ip, v.user_agent,
            )
        ]


class ParquetWriter(Writer):
    name = "parquet"
    description = "generic Parquet (with a column-mapping file beside it)"
    no_gzip = "Parquet compresses its own pages, and `riskgate ingest` reads no gzip-compressed Parquet"

    def __post_init__(self) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        self._pa = pa
        self.schema = pa.schema([(c, pa.string()) for c in TABULAR_COLUMNS])
        self.pw = pq.ParquetWriter(self.outputs.path(self.out), self.schema, compression="zstd")
        self.files.append(self.out)
        write_mapping(stem_of(self.out).with_name(stem_of(self.out).name + ".mapping.yaml"), self.files, self.outputs)

    def write(self, v: View) -> None:
        b = v.b
        if len(b) == 0:
            return
        pa = self._pa
        n = len(b)
        iso = np.char.add(v.iso_ms.astype(str), "Z")
        cols = [v.event_id, v.username.tolist(), v.user_sub.tolist(), [USER_POOL_ID] * n, v.client_id.tolist(),
                v.event_type.tolist(), v.event_response.tolist(), iso.tolist(), v.client_ip.tolist(),
                v.user_agent.tolist()]
        self.pw.write_table(pa.Table.from_arrays([pa.array(c, pa.string()) for c in cols], schema=self.schema))
        self.rows += n

    def close(self) -> list[Path]:
        self.pw.close()
        return self.files


def write_mapping(path: Path, files: list[Path], outputs: PartialOutputs) -> None:
    """The column mapping of the csv / parquet output (the generic readers' ``--mapping``)."""
    lines = ["# column mapping of a riskgate synth csv/parquet file: canonical field -> column",
             "columns:"]
    lines += [f"  {k}: {v}" for k, v in TABULAR_MAPPING.items()]
    lines.append("# creation_date is ISO 8601 with Z; no time_format needed")
    with open(outputs.path(path), "w", encoding="utf-8", newline="\n") as fh:
        fh.write("\n".join(lines) + "\n")
    files.append(path)


WRITERS: dict[str, type[Writer]] = {
    w.name: w
    for w in (RiskgateJsonlWriter, UserActivityWriter, AuthEventsWriter, RbaCsvWriter, CsvWriter, ParquetWriter)
}


class LabelsWriter:
    """``<stem>.labels.csv``: is_account_takeover and is_attack_ip for every event, attack_type for attacks."""

    def __init__(self, path: Path, outputs: PartialOutputs):
        self.path = path
        self.fh = open_text(path, outputs)
        self.fh.write("event_id,label,value,source\n")
        self.rows = 0
        self._types = np.array([""] + [f"\n{{}},attack_type,{a},{LABEL_SOURCE}" for a in ATTACK_TYPES], dtype=object)

    def write(self, ids: list[str], b: ev.Block) -> None:
        if not ids:
            return
        ato = _bools(b.ato)
        aip = _bools(b.atk_ip)
        types = self._types[b.attack]
        src = LABEL_SOURCE
        self.fh.write("\n".join(
            f"{e},is_account_takeover,{a},{src}\n{e},is_attack_ip,{i},{src}" + (t.format(e) if t else "")
            for e, a, i, t in zip(ids, ato, aip, types)
        ))
        self.fh.write("\n")
        self.rows += 2 * len(ids) + int(np.count_nonzero(b.attack))

    def close(self) -> None:
        self.fh.close()


def users_document(world: World, rba_names: bool = False) -> dict:
    """The population as ``ListUsers`` output, with ``UserMFASettingList`` and ``PreferredMfaSetting``."""
    pop = world.pop
    users = []
    mfa_lists = ([], ["SOFTWARE_TOKEN_MFA"], ["SMS_MFA"], ["SMS_MFA", "SOFTWARE_TOKEN_MFA"])
    for i in range(pop.n):
        created = iso_with_offset(int(pop.created_ms[i]))
        attrs = [{"Name": "sub", "Value": pop.subs[i]}, {"Name": "email", "Value": pop.emails[i]},
                 {"Name": "email_verified", "Value": "false" if pop.status[i] == "UNCONFIRMED" else "true"}]
        if pop.phones[i]:
            attrs.append({"Name": "phone_number", "Value": pop.phones[i]})
            attrs.append({"Name": "phone_number_verified", "Value": "true"})
        m = int(pop.mfa[i])
        settings = mfa_lists[m]
        users.append({
            "Username": str(pop.rba_id[i]) if rba_names else pop.usernames[i],
            "Attributes": attrs,
            "UserCreateDate": created,
            "UserLastModifiedDate": created,
            "Enabled": bool(pop.enabled[i]),
            "UserStatus": pop.status[i],
            "MFAOptions": [{"DeliveryMedium": "SMS", "AttributeName": "phone_number"}] if m in (2, 3) else [],
            "UserMFASettingList": settings,
        })
        if settings:
            users[-1]["PreferredMfaSetting"] = "SOFTWARE_TOKEN_MFA" if m == 3 else settings[0]
    return {"Users": users}


def write_users(path: Path, world: World, outputs: PartialOutputs, rba_names: bool = False) -> None:
    """One ``ListUsers`` page holding every user, one user per line."""
    users = users_document(world, rba_names)["Users"]
    with open(outputs.path(path), "w", encoding="utf-8", newline="\n") as fh:
        fh.write('{"Users": [\n')
        fh.write(",\n".join(json.dumps(u, ensure_ascii=False) for u in users))
        fh.write("\n]}\n")


def check_out(out: Path, fmt: str) -> None:
    """Refuse, before anything is written, an ``--out`` that ``fmt`` cannot write as named: a ``.gz`` name it would
    not compress (plain Parquet under ``x.parquet.gz`` said it was gzip), or an existing folder for a format that
    writes a file."""
    writer = WRITERS[fmt]
    if out.name.endswith(".gz") and not writer.gzip_by_name:
        raise ConfigurationError(f"--format {fmt} cannot be gzip-compressed ({writer.no_gzip}); name --out "
                                 "without .gz", source=str(out))
    if writer is not AuthEventsWriter and out.is_dir():
        raise ConfigurationError(f"is a folder; --format {fmt} writes a file: --out names it", source=str(out))


def side_paths(out: Path, fmt: str) -> tuple[Path, Path]:
    """(users file, labels file) beside ``out``."""
    stem = out if fmt == AuthEventsWriter.name else stem_of(out)
    return stem.with_name(stem.name + ".users.json"), stem.with_name(stem.name + ".labels.csv")
