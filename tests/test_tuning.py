"""Threshold tuning, trade-offs, curves and what-if on a hand-made store whose answers are known.

The store: alice (no MFA) has 100 legitimate sign-ins scored 0.00, 0.01, ..., 0.99 and 10 attacks;
bob (MFA of his own) has 20 legitimate sign-ins scored 0.5. Default configuration: Low NO_ACTION,
Medium MFA_IF_CONFIGURED, High MFA_REQUIRED (a user without MFA is blocked), so the risk level can
only block alice at High; bob is challenged whatever his level (Cognito semantics).
"""

import json
from datetime import datetime, timedelta, timezone

import pyarrow as pa
import pytest
from typer.testing import CliRunner

from cli import app
from ingest import store as ingest_store
from ingest.schema import EVENT_SCHEMA, conform
from risk import levels, store, tuning
from risk.levels import Thresholds

runner = CliRunner()
T0 = datetime(2026, 3, 1, tzinfo=timezone.utc)
ATTACK_SCORES = [0.3, 0.6, 0.95, 0.96, 0.97, 0.98, 0.99, 0.995, 0.999, 1.0]
ATTACK_TYPES = ["credential_stuffing"] * 5 + ["naive_takeover"] * 5


def build(path):
    rows = []  # (event_id, username, score, label, attack_type)
    for i in range(100):
        rows.append((f"a{i:03d}", "alice", i / 100, "false", None))
    for i in range(20):
        rows.append((f"b{i:03d}", "bob", 0.5, "false", None))
    for i, (s, t) in enumerate(zip(ATTACK_SCORES, ATTACK_TYPES)):
        rows.append((f"x{i:03d}", "alice", s, "true", t))
    n = len(rows)
    events = conform(pa.table({
        "event_id": [r[0] for r in rows],
        "user_pool_id": ["us-east-1_Test01"] * n,
        "username": [r[1] for r in rows],
        "event_type": ["SignIn"] * n,
        "event_response": ["Pass"] * n,
        "creation_date": pa.array([T0 + timedelta(minutes=k) for k in range(n)], pa.timestamp("us", tz="UTC")),
        "client_ip": [f"203.0.113.{k % 250}" for k in range(n)],
    }), EVENT_SCHEMA)
    with store.connect(path) as con:
        ingest_store.insert_events(con, events, "test")
        labels = [(r[0], "is_account_takeover", r[3], "test") for r in rows]
        labels += [(r[0], "attack_type", r[4], "test") for r in rows if r[4]]
        ingest_store.insert_labels(con, pa.table({k: [x[j] for x in labels] for j, k in
                                                  enumerate(("event_id", "label", "value", "source"))}))
        con.execute("INSERT INTO users (username, user_pool_id, mfa_settings, pool_key) VALUES "
                    "('alice', 'us-east-1_Test01', [], 'us-east-1_Test01'), "
                    "('bob', 'us-east-1_Test01', ['SOFTWARE_TOKEN_MFA'], 'us-east-1_Test01')")
        con.executemany("INSERT INTO assessments (event_id, score, scored_at) VALUES (?, ?, ?)",
                        [(r[0], r[2], T0) for r in rows])
    return path


@pytest.fixture
def db(tmp_path):
    return build(tmp_path / "t.duckdb")


def test_tradeoff_counts_and_intervals(db):
    with store.connect(db, read_only=True) as con:
        t = tuning.tradeoff(con, Thresholds(0.2, 0.5, 0.9))
    assert (t["events"], t["legitimate"], t["attacks"]) == (130, 120, 10)
    low, medium, high = t["levels"]
    assert low["legitimate_at_or_above"]["count"] == 80 + 20  # alice 0.20..0.99, and bob
    assert medium["legitimate_at_or_above"]["count"] == 50 + 20
    assert high["legitimate_at_or_above"]["count"] == 10
    assert high["attacks_at_or_above"]["count"] == 8
    assert high["attacks_by_type"]["credential_stuffing"]["count"] == 3
    assert high["actions"] == ["MFA_REQUIRED"] and medium["actions"] == ["MFA_IF_CONFIGURED"]
    lo, hi = high["legitimate_at_or_above"]["ci"]
    assert lo < 10 / 120 < hi and hi - lo < 0.15
    o = t["outcomes"]
    # alice at High is blocked (no MFA); bob is challenged anyway: not "by risk"
    assert o["legitimate_blocked"]["count"] == 10 and o["legitimate_challenged"]["count"] == 0
    assert o["legitimate_challenged_total"]["count"] == 20
    assert o["attacks_stopped"]["count"] == 8 and o["precision"]["count"] == 8 and o["precision"]["of"] == 18
    assert "only 5 labelled attacks of type naive_takeover: too few to trust its catch rate" in t["warnings"]


def test_the_warning_about_few_attacks_agrees_with_their_count(db):
    with store.connect(db) as con:
        assert "only 10 labelled attacks: rates are rough, see the intervals" in tuning.history(con).warnings
        # one attack left labelled (the others' labels removed, so they count as unknown)
        con.execute("DELETE FROM labels WHERE event_id LIKE 'x%' AND event_id <> 'x009'")
        assert "only 1 labelled attack: rates are rough, see the intervals" in tuning.history(con).warnings


def test_the_warning_about_few_attacks_of_a_type_agrees_with_its_count():
    import numpy as np
    import pandas as pd

    from risk.tuning import History, _type_warnings

    df = pd.DataFrame({"attack_type": ["brute_force", "vpn_takeover", "vpn_takeover", None]})
    attack = np.array([True, True, True, False])
    assert _type_warnings(History(df, ~attack, attack)) == [
        "only 1 labelled attack of type brute_force: too few to trust its catch rate",
        "only 2 labelled attacks of type vpn_takeover: too few to trust its catch rate",
    ]


def test_tune_finds_the_lowest_threshold_meeting_the_block_target(db):
    with store.connect(db) as con:
        r = tuning.tune(con, tuning.Targets(max_blocked=0.05))
        # at most 6 of 120 legitimate blocked: alice's 0.94..0.99
        assert r.thresholds == Thresholds(0.2, 0.5, 0.94)
        assert r.met
        assert r.tradeoff["outcomes"]["legitimate_blocked"]["count"] == 6
        assert r.tradeoff["outcomes"]["attacks_stopped_by_type"]["credential_stuffing"]["count"] == 3
        assert any(n.startswith("Medium: no target depends on it") for n in r.notes)
        assert levels.current_thresholds(con)[1] == 0  # nothing written
        version = tuning.apply(con, r)
        assert levels.current_thresholds(con) == (Thresholds(0.2, 0.5, 0.94), version)


def test_tune_for_precision_and_for_level_shares(db):
    with store.connect(db, read_only=True) as con:
        r = tuning.tune(con, tuning.Targets(min_precision=1.0))
        assert r.thresholds.high == 0.995 and r.met
        # Low rated for at most 10% of legitimate sign-ins: 12 of 120 -> alice's 0.88..0.99;
        # Medium is moved up to stay above Low
        r = tuning.tune(con, tuning.Targets(max_at_level={"Low": 0.10}))
        assert r.thresholds == Thresholds(0.88, 0.88, 0.88) and r.met
        assert any("moved to keep the levels ordered" in n for n in r.notes)
        r = tuning.tune(con, tuning.Targets(max_blocked=0.0, min_precision=1.0, max_at_level={"High": 0.0}))
        assert r.thresholds.high == 0.995 and r.met


def test_impossible_targets_are_reported_not_met(db):
    with store.connect(db) as con:  # a legitimate sign-in as risky as the riskiest attack
        ingest_store.insert_events(con, conform(pa.table({
            "event_id": ["a999"], "user_pool_id": ["us-east-1_Test01"], "username": ["alice"], "event_type": ["SignIn"],
            "creation_date": pa.array([T0 - timedelta(days=1)], pa.timestamp("us", tz="UTC"))}), EVENT_SCHEMA), "t")
        con.execute("INSERT INTO labels VALUES ('a999', 'is_account_takeover', 'false', 'test')")
        con.execute("INSERT INTO assessments (event_id, score, scored_at) VALUES ('a999', 1.0, ?)", [T0])
        r = tuning.tune(con, tuning.Targets(min_precision=1.0))
        assert not r.met and r.thresholds.high == 1.0
        assert any("High: no threshold meets the targets" in n for n in r.notes)
    res = invoke("tune", "--min-precision", "1", "--apply", "--db", db)
    assert res.exit_code == 2 and "nothing written" in res.output
    with pytest.raises(tuning.TuningError, match="at least one target"):
        tuning.Targets()
    with pytest.raises(tuning.TuningError, match="max_blocked must be a share"):
        tuning.Targets(max_blocked=5)


def test_curves_have_the_known_auc(db):
    with store.connect(db, read_only=True) as con:
        c = tuning.curves(con)
    # AUC = P(attack score > legit score) + ties/2, computed by hand over the 10 x 120 pairs
    legit = [i / 100 for i in range(100)] + [0.5] * 20
    pairs = sum((a > g) + 0.5 * (a == g) for a in ATTACK_SCORES for g in legit)
    assert c.roc_auc == pytest.approx(pairs / 1200)
    assert (c.legitimate, c.attacks) == (120, 10)
    assert c.fpr[0] == 0 and c.tpr[-1] == 1


def test_whatif_splits_by_label_mfa_and_event_type(db, tmp_path):
    with store.connect(db, read_only=True) as con:
        w = tuning.whatif(con, None, Thresholds(0.2, 0.5, 0.9))
    assert w["outcomes"]["Block"] == 10 + 8 and w["outcomes"]["MfaChallenge"] == 20
    assert w["by_label"]["legitimate"]["Block"] == 10 and w["by_label"]["attack"]["Allow"] == 2
    assert w["by_mfa"]["with MFA"] == {"total": 20, "Allow": 0, "MfaChallenge": 20, "Block": 0,
                                       "share": {"Allow": 0.0, "MfaChallenge": 1.0, "Block": 0.0}}
    assert w["by_event_type"]["SignIn"]["total"] == 130
    # in force: default thresholds 0.2/0.5/0.8 block alice's 0.8..0.99 (20) and 8 attacks
    assert w["current"]["Block"] == 20 + 8 and w["changed"] == 10
    # a proposed configuration: High only notifies -> nobody is blocked by risk
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({"UserPoolId": "us-east-1_Test01", "AccountTakeoverRiskConfiguration": {"Actions": {
        "LowAction": {"Notify": False, "EventAction": "NO_ACTION"},
        "MediumAction": {"Notify": False, "EventAction": "NO_ACTION"},
        "HighAction": {"Notify": True, "EventAction": "NO_ACTION"}}}}))
    from risk import config as rc

    with store.connect(db, read_only=True) as con:
        w = tuning.whatif(con, rc.load_file(cfg), None)
    assert w["configuration"] == "proposed" and w["outcomes"]["Block"] == 0 and w["changed"] == 28


def test_whatif_predicts_what_config_set_would_do_with_client_precedence_and_resets(tmp_path):
    """A proposal is evaluated as ``riskgate config set`` would store it: a pool-level one leaves a client with a
    configuration of its own alone, ids only reset (the pool to its defaults, a client to inheriting the pool),
    and one naming another pool changes nothing. For each, whatif's outcomes equal those of the store where the
    proposal was really set."""
    from risk import config as rc

    pool = "us-east-1_Test01"
    acts = lambda a: {"Actions": {lvl: {"Notify": False, "EventAction": a}  # noqa: E731
                                  for lvl in ("LowAction", "MediumAction", "HighAction")}}
    def prepared(name):
        path = build(tmp_path / f"{name}.duckdb")
        with store.connect(path) as con:  # alice's legitimate sign-ins from web2 half the time, the rest from web1
            con.execute("UPDATE events SET client_id = CASE WHEN event_id < 'a050' OR event_id >= 'x005' "
                        "THEN 'web2' ELSE 'web1' END")
            rc.set_configuration(con, rc.RiskConfiguration.model_validate(
                {"UserPoolId": pool, "ClientId": "web2", "AccountTakeoverRiskConfiguration": acts("BLOCK")}))
        return path

    proposals = {
        "pool_no_action": {"UserPoolId": pool, "AccountTakeoverRiskConfiguration": acts("NO_ACTION")},
        "no_pool_no_action": {"AccountTakeoverRiskConfiguration": acts("NO_ACTION")},
        "pool_reset": {"UserPoolId": pool},
        "client_reset": {"UserPoolId": pool, "ClientId": "web2"},
        "client_web1_block": {"UserPoolId": pool, "ClientId": "web1", "AccountTakeoverRiskConfiguration": acts("BLOCK")},
        "other_pool": {"UserPoolId": "eu-west-1_Other", "AccountTakeoverRiskConfiguration": acts("NO_ACTION")},
    }
    got = {}
    for name, doc in proposals.items():
        proposal = rc.RiskConfiguration.model_validate(doc)
        with store.connect(prepared(f"{name}-whatif")) as con:
            w = tuning.whatif(con, proposal)
        with store.connect(prepared(f"{name}-set")) as con:
            rc.set_configuration(con, proposal)
            really = tuning.whatif(con)
        assert (w["outcomes"], w["by_label"]) == (really["outcomes"], really["by_label"]), name
        got[name] = w
    # web2 keeps its own BLOCK under a pool-level change or reset: its sign-ins with a risk level are blocked
    for name in ("pool_no_action", "no_pool_no_action", "pool_reset"):
        assert got[name]["outcomes"]["Block"] > 0, name
    assert got["pool_no_action"]["outcomes"]["Block"] == got["no_pool_no_action"]["outcomes"]["Block"]
    # back to the pool's (default) configuration: web2 is no longer blocked at Low and Medium
    assert got["client_reset"]["outcomes"]["Block"] < got["pool_reset"]["outcomes"]["Block"]
    assert got["client_web1_block"]["outcomes"]["Block"] > got["pool_reset"]["outcomes"]["Block"]
    assert got["other_pool"]["changed"] == 0


def invoke(*args):
    return runner.invoke(app, [*map(str, args)])


def test_cli_tune_and_whatif(db, tmp_path):
    res = invoke("tune", "--max-blocked", "5%", "--db", db)
    assert res.exit_code == 0, res.output
    assert "0.94" in res.output and "nothing written" in res.output
    res = invoke("tune", "--max-blocked", "0.05", "--json", "--db", db)
    out = json.loads(res.output)
    assert out["thresholds"]["high"] == 0.94 and out["met"] and out["applied_version"] is None
    res = invoke("tune", "--max-blocked", "0.05", "--apply", "--db", db)
    assert res.exit_code == 0 and "written as thresholds version 1" in res.output
    res = invoke("tune", "--max-blocked", "0.05", "--apply", "--db", db)  # the same proposal: already in force
    assert res.exit_code == 0 and "nothing written: the proposal is thresholds version 1, already in force" in res.output
    res = invoke("tune", "--max-blocked", "0.05", "--apply", "--json", "--db", db)
    assert (json.loads(res.output)["applied_version"], json.loads(res.output)["written"]) == (1, False)
    with store.connect(db) as con:
        assert [r["version"] for r in levels.history(con)] == [1]
    res = invoke("tune", "--max-blocked", "half", "--db", db)
    assert res.exit_code == 2 and "--max-blocked" in res.output
    res = invoke("tune", "--db", db)
    assert res.exit_code == 2 and "at least one target" in res.output

    th = tmp_path / "th.yaml"
    th.write_text("low: 0.2\nmedium: 0.5\nhigh: 0.9\n")
    res = invoke("whatif", "--thresholds", th, "--json", "--db", db)
    assert res.exit_code == 0, res.output
    w = json.loads(res.output)
    assert w["outcomes"]["Block"] == 18 and w["current_thresholds"]["version"] == 1
    res = invoke("whatif", "--thresholds", th, "--db", db)
    assert "label: legitimate" in res.output and "would change" in res.output
    th.write_text("low: 0.2\nhigh: 0.9\nextreme: 1\n")
    res = invoke("whatif", "--thresholds", th, "--db", db)
    assert res.exit_code == 2 and "unknown: extreme" in res.output and "missing: medium" in res.output


def test_no_assessed_events_is_a_clear_error(tmp_path):
    res = invoke("tune", "--max-blocked", "1%", "--db", tmp_path / "empty.duckdb")
    assert res.exit_code == 2 and "the store holds no events (`riskgate ingest`)" in res.output


def test_the_history_reads_only_the_columns_asked_for_and_names_an_unknown_one(db):
    with store.connect(db, read_only=True) as con:
        full = tuning.labelled_scores(con)
        some = tuning.labelled_scores(con, columns=["event_id", "score", "y"])
        h = tuning.history(con)
        with pytest.raises(tuning.TuningError, match="no column 'nope' in the history; it has event_id, username"):
            tuning.labelled_scores(con, columns=["score", "nope"])
    assert len(full.columns) == 16 and list(some.columns) == ["event_id", "score", "y"]
    by_id = lambda df: df.sort_values("event_id").reset_index(drop=True)  # noqa: E731  (no order is promised)
    assert by_id(some).equals(by_id(full[["event_id", "score", "y"]]))
    # tuning and what-if keep only what they use: a period of a million events held 1.5 GiB with every column
    assert list(h.df.columns) == list(tuning.HISTORY_COLUMNS) and len(h.df) == len(full) == 130


def test_labels_in_force_are_those_training_uses_feedback_first(db):
    from risk import feedback
    from risk.model.training import load_labels

    with store.connect(db) as con:
        feedback.set_feedback(con, "a050", "Invalid", "Admin")  # legitimate by the data set: not me
        feedback.set_feedback(con, "x009", "Valid", "User")  # an attack by the data set: it was me
        feedback.set_feedback(con, "x008", "Invalid", "Admin")  # an attack confirmed: keeps its type
        got = tuning.labelled_scores(con).set_index("event_id").sort_index()
        want = load_labels(con).set_index("event_id").reindex(got.index)
    assert got["y"].tolist() == want["y"].tolist()
    assert got["attack_type"].fillna("-").tolist() == want["attack_type"].fillna("-").tolist()
    assert (got.loc["a050", "y"], got.loc["a050", "attack_type"]) == (1.0, "feedback_invalid")
    assert got.loc["x009", "y"] == 0.0 and got.loc["x008", "attack_type"] == "naive_takeover"
    assert got.loc["b000", "has_mfa"] and not got.loc["a000", "has_mfa"]
    with store.connect(db, read_only=True) as con:
        t = tuning.tradeoff(con, Thresholds(0.2, 0.5, 0.9))
    assert (t["legitimate"], t["attacks"]) == (120, 10)  # one moved each way


def test_outcomes_are_decides_for_each_events_own_inputs_across_pools_clients_exceptions_and_mfa(tmp_path):
    """``Outcomes`` calls decide() once per distinct combination of its inputs, found as codes (risk.combos);
    each event's outcome at every level must be what decide() gives for its own pool, app client, IP-range
    exception, credentials check, event type and MFA, under the configuration in force and under a proposal."""
    import numpy as np
    import pandas as pd

    from risk import config as rc
    from risk.decide import decide
    from risk.exceptions import check_ip

    pool = "us-east-1_Test01"
    actions = lambda medium, high: {"Actions": {  # noqa: E731
        "LowAction": {"Notify": False, "EventAction": "NO_ACTION"},
        "MediumAction": {"Notify": True, "EventAction": medium}, "HighAction": {"Notify": True, "EventAction": high}}}
    with store.connect(build(tmp_path / "t.duckdb")) as con:
        rc.set_configuration(con, rc.RiskConfiguration.model_validate({
            "UserPoolId": pool, "AccountTakeoverRiskConfiguration": actions("MFA_IF_CONFIGURED", "MFA_IF_CONFIGURED"),
            "RiskExceptionConfiguration": {"SkippedIPRangeList": ["203.0.113.0/30"]}}))
        rc.set_configuration(con, rc.RiskConfiguration.model_validate({
            "UserPoolId": pool, "ClientId": "web2", "AccountTakeoverRiskConfiguration": actions("MFA_REQUIRED", "BLOCK"),
            "RiskExceptionConfiguration": {"BlockedIPRangeList": ["203.0.113.2/31"]},
            "CompromisedCredentialsRiskConfiguration": {"Actions": {"EventAction": "BLOCK"}}}))
        proposal = rc.RiskConfiguration.model_validate({
            "ClientId": "web1", "AccountTakeoverRiskConfiguration": actions("BLOCK", "BLOCK"),
            "RiskExceptionConfiguration": {"SkippedIPRangeList": ["203.0.113.4/32"]}})
        rng = np.random.default_rng(5)
        n = 400
        pick = lambda values: [values[i] for i in rng.integers(0, len(values), n)]  # noqa: E731
        df = pd.DataFrame({
            "user_pool_id": pick([pool, None]),
            "client_id": pick(["web1", "web2", None]),
            "client_ip": pick([f"203.0.113.{k}" for k in range(6)] + [None, "not an address"]),
            "compromised_credentials": pd.Series(pick([True, False, None]), dtype=object),
            "event_type": pick(["SignIn", "SignUp", "ForgotPassword"]),
            "has_mfa": pick([True, False]),
        })
        for proposed in (None, proposal):
            got = tuning.Outcomes(con, df, proposed).by_level
            seen = set()
            for i, r in enumerate(df.itertuples(index=False)):
                client, ip = (None if pd.isna(v) else v for v in (r.client_id, r.client_ip))
                cfg, _version = rc.resolve(con, pool, client)
                if proposed is not None and client == "web1":
                    cfg = proposed.with_scope(pool, "web1")
                exception = str(check_ip(cfg, ip))
                want = [tuning.OUTCOMES.index(str(decide(
                    risk_level=level, exception=exception, compromised=r.compromised_credentials,
                    event_type=r.event_type, configuration=cfg, mode="ENFORCED", user_has_mfa=r.has_mfa).outcome))
                    for level in (None, "Low", "Medium", "High")]
                assert got[i].tolist() == want, (proposed is not None, r)
                seen.add(exception)
            assert seen == {"none", "skipped", "blocked"}


def test_tune_and_whatif_do_not_import_scikit_learn(tmp_path):
    """The history's labels in force are SQL (``risk.feedback``), not the training module: ``tune``, ``whatif``
    and the dashboard's prepared history import no scikit-learn (about a second of a first Tuning page)."""
    from tests.test_cli import _imports

    db = build(tmp_path / "t.duckdb")
    for argv in (["whatif"], ["tune", "--max-challenged", "0.2"]):
        code, out, mods = _imports(*argv, "--db", str(db), "--json")
        assert code == 0, out
        assert json.loads(out)  # a whole answer
        assert "risk.tuning" in mods and not {m for m in mods if m.split(".")[0] == "sklearn"}, argv
