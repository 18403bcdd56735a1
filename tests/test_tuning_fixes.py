"""Tuning and what-if, the cases that once went wrong: every level's share target checked, the exact boundary
found among many scores, scores of a model no longer active, thresholds files, few legitimate sign-ins and a
proposal for a pool / client that no assessed sign-in belongs to.

Stores are built as in ``tests/test_tuning.py`` (alice without MFA, bob with MFA of his own; the default
configuration blocks alice at High and challenges bob whatever his level).
"""

import itertools
import json
from datetime import datetime, timedelta, timezone

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from typer.testing import CliRunner

from cli import app
from ingest import store as ingest_store
from ingest.schema import EVENT_SCHEMA, conform
from risk import levels, store, tuning
from risk.levels import Thresholds, ThresholdsError
from tests.test_tuning import build

runner = CliRunner()
T0 = datetime(2026, 3, 1, tzinfo=timezone.utc)


def invoke(*args):
    return runner.invoke(app, [*map(str, args)])


@pytest.fixture
def db(tmp_path):
    return build(tmp_path / "t.duckdb")


def build_scores(path, legit, attacks, *, model_version=None):
    """A store of alice's sign-ins: ``legit`` scores labelled legitimate, ``attacks`` scores labelled attacks."""
    rows = [(f"a{i:05d}", s, "false") for i, s in enumerate(legit)] + [(f"x{i:05d}", s, "true")
                                                                        for i, s in enumerate(attacks)]
    n = len(rows)
    events = conform(pa.table({
        "event_id": [r[0] for r in rows], "user_pool_id": ["us-east-1_Test01"] * n, "username": ["alice"] * n,
        "event_type": ["SignIn"] * n, "event_response": ["Pass"] * n,
        "creation_date": pa.array([T0 + timedelta(minutes=k) for k in range(n)], pa.timestamp("us", tz="UTC")),
    }), EVENT_SCHEMA)
    with store.connect(path) as con:
        ingest_store.insert_events(con, events, "test")
        ingest_store.insert_labels(con, pa.table({"event_id": [r[0] for r in rows],
                                                  "label": ["is_account_takeover"] * n, "value": [r[2] for r in rows],
                                                  "source": ["test"] * n}))
        con.execute("INSERT INTO users (username, user_pool_id, mfa_settings, pool_key) "
                    "VALUES ('alice', 'us-east-1_Test01', [], 'us-east-1_Test01')")
        con.executemany("INSERT INTO assessments (event_id, score, scored_at, model_version) VALUES (?, ?, ?, ?)",
                        [(r[0], r[1], T0, model_version) for r in rows])
    return path


# -- 1. every level's share target holds for the thresholds proposed ------------------------------------------


def test_a_lower_levels_share_target_is_met_when_a_higher_level_is_chosen_first(db):
    with store.connect(db, read_only=True) as con:
        # High alone could go down to 0.50 (60 of 120 legitimate at or above it); Low, at most High, cannot
        # then stay under 10 %: the proposal must put them all where Low's target holds, 0.88 (12 of 120)
        r = tuning.tune(con, tuning.Targets(max_at_level={"Low": 0.10, "High": 0.5}))
        assert r.met and r.thresholds == Thresholds(0.88, 0.88, 0.88), r.notes
        # an outcome target that High alone meets low down, and a share target for Low: 6 of 120 = 5 % at 0.94
        r = tuning.tune(con, tuning.Targets(max_blocked=0.5, max_at_level={"Low": 0.05}))
        assert r.met and r.thresholds.low == r.thresholds.high == 0.94, r.notes
        assert not any("no threshold meets" in n for n in r.notes)
    res = invoke("tune", "--max-low", "10%", "--max-high", "50%", "--apply", "--db", db)
    assert res.exit_code == 0, res.output
    assert "targets met" in res.output and "written as thresholds version 1" in res.output


# -- 3. the exact boundary, whatever the number of distinct scores ------------------------------------------------


def test_the_lowest_threshold_is_the_real_boundary_among_many_scores(tmp_path):
    legit = [i / 2000 for i in range(1000)]  # 0 .. 0.4995: far more distinct scores than a grid would try
    attacks = [0.49961, 0.4997, 0.6, 0.9]
    path = build_scores(tmp_path / "s.duckdb", legit, attacks)
    with store.connect(path) as con:
        r = tuning.tune(con, tuning.Targets(max_blocked=0.0))
        # no legitimate sign-in blocked: High just above 0.4995, i.e. at the first attack, which it stops
        assert r.met and r.thresholds.high == 0.49961
        assert r.tradeoff["outcomes"]["attacks_blocked"]["count"] == 4
        assert r.tradeoff["outcomes"]["legitimate_blocked"]["count"] == 0
        # thresholds in force that rate the same sign-ins are kept, not replaced by an equivalent score
        levels.set_thresholds(con, Thresholds(0.2, 0.3, 0.4996))
        r = tuning.tune(con, tuning.Targets(max_blocked=0.0))
        assert r.thresholds == Thresholds(0.2, 0.3, 0.4996)


def _fake(scores, y, by_level):
    df = pd.DataFrame({"score": np.asarray(scores, float), "y": np.asarray(y, float),
                       "attack_type": np.where(np.asarray(y) == 1, "t", None)})
    oc = tuning.Outcomes.__new__(tuning.Outcomes)  # outcomes per level given, no configuration to resolve
    oc.by_level, oc.configs = np.asarray(by_level, dtype=np.int8), {}
    return tuning.History(df, df["y"].to_numpy() == 0, df["y"].to_numpy() == 1), oc


def _holds(h, oc, t, targets):
    """Every target at ``t``, evaluated directly (the definition ``tune`` must respect)."""
    s, nl = h.scores, max(int(h.legit.sum()), 1)
    o = oc.at(s, t)
    by_risk = o > oc.baseline
    if targets.max_challenged is not None and (by_risk & h.legit).sum() / nl > targets.max_challenged:
        return False
    if targets.max_blocked is not None and ((o == 2) & by_risk & h.legit).sum() / nl > targets.max_blocked:
        return False
    if targets.min_precision is not None:
        acted = by_risk & (h.legit | h.attack)
        if not acted.sum() or (acted & h.attack).sum() / acted.sum() < targets.min_precision:
            return False
    return all(((s >= getattr(t, lvl.lower())) & h.legit).sum() / nl <= cap for lvl, cap in targets.max_at_level.items())


def _reference(h, oc, current, targets):
    """The documented rule, one candidate at a time: from High down, each constrained level the lowest candidate
    (every distinct score, the thresholds in force, 1.0) at which every target holds with the lower levels
    collapsed onto it."""
    s = h.scores
    cands = sorted({*s.tolist(), current.low, current.medium, current.high, 1.0})
    order = ("High", "Medium", "Low")
    outcome = any(v is not None for v in (targets.max_challenged, targets.max_blocked, targets.min_precision))
    chosen, upper = {}, 1.0
    for k, level in enumerate(order):
        i = tuning._LEVEL_INDEX.index(level)
        if level not in targets.max_at_level and not (outcome and (oc.by_level[:, i] != oc.by_level[:, i - 1]).any()):
            chosen[level] = None
            continue

        def make(x):
            th, cap = {}, 1.0
            for j, other in enumerate(order):
                if j < k:  # free: in force, kept above the levels below it
                    floor = max([x, *(chosen[o] for o in order[j + 1:k] if chosen[o] is not None)])
                    th[other] = chosen[other] if chosen[other] is not None else \
                        max(floor, min(getattr(current, other.lower()), cap))
                    cap = th[other]
                else:
                    th[other] = x
            return Thresholds(th["Low"], th["Medium"], th["High"])

        good = [c for c in cands if c <= upper and _holds(h, oc, make(c), targets)]
        chosen[level] = upper = good[0] if good else upper
    return chosen


def _random_case(rng, monotone):
    n = int(rng.integers(5, 60))
    scores = rng.choice(np.round(rng.random(12), 3), n)  # ties on purpose
    y = rng.choice([0.0, 0.0, 1.0, np.nan], n)
    if monotone:  # a riskier level never eases the decision
        base = rng.integers(0, 2, n)
        by_level = np.maximum.accumulate(np.column_stack([base, *(rng.integers(0, 3, (3, n)))]), axis=1)
    else:
        by_level = np.column_stack([rng.integers(0, 2, n), *(rng.integers(0, 3, (3, n)))])
    share = lambda: float(rng.choice([0.0, 0.05, 0.1, 0.3, 0.6]))  # noqa: E731
    targets = dict(max_challenged=share() if rng.random() < 0.5 else None,
                   max_blocked=share() if rng.random() < 0.5 else None,
                   min_precision=(float(rng.choice([0.3, 0.7, 1.0])) if rng.random() < 0.4 and not monotone else None),
                   max_at_level={lvl: share() for lvl in ("Low", "Medium", "High") if rng.random() < 0.4})
    if all(v in (None, {}) for v in targets.values()):
        targets["max_at_level"] = {"Low": share()}
    low, mid, high = sorted(np.round(rng.random(3), 2))
    return (scores, y, by_level), tuning.Targets(**targets), Thresholds(low, mid, high)


def test_tune_is_the_documented_rule_evaluated_for_every_candidate_at_once():
    """``tune`` evaluates each level's candidates vectorised; it must pick what the rule picks one by one."""
    rng = np.random.default_rng(7)
    for case in range(150):
        data, targets, current = _random_case(rng, monotone=bool(case % 2))
        h, oc = _fake(*data)
        r = tuning.tune_of(h, oc, current, 0, targets)
        want = _reference(h, oc, current, targets)
        for level in ("Low", "Medium", "High"):
            if want[level] is not None:
                assert getattr(r.thresholds, level.lower()) == want[level], (case, level, targets)
        assert r.met == _holds(h, oc, r.thresholds, targets), case


def test_targets_that_some_thresholds_meet_are_met():
    """When the decision only grows with the level, a proposal meeting every target is found whenever one exists
    (searched here over every triple of candidates)."""
    rng = np.random.default_rng(11)
    for case in range(80):
        data, targets, current = _random_case(rng, monotone=True)
        h, oc = _fake(*data)
        r = tuning.tune_of(h, oc, current, 0, targets)
        cands = sorted({*h.scores.tolist(), 1.0})
        exists = any(_holds(h, oc, Thresholds(a, b, c), targets)
                     for a, b, c in itertools.combinations_with_replacement(cands, 3))
        assert r.met == exists, (case, targets, r.notes)


# -- 2. scores of a model that is no longer active ----------------------------------------------------------------


def _models(con, active: int):
    for v in (1, 2):
        con.execute("INSERT INTO models (version, created_at, kind, features, sha256, model, active) "
                    "VALUES (?, ?, 'test', '[]', 'x', ''::BLOB, ?)", [v, T0, v == active])


def test_a_history_scored_by_another_model_is_warned_about_and_not_applied(db):
    with store.connect(db) as con:
        con.execute("UPDATE assessments SET model_version = 1")
        _models(con, active=2)
        h = tuning.history(con)
        assert h.model_warning == ("the history was scored by model v1, but the active model is v2: its thresholds "
                                   "would not fit the active model's scores; run `riskgate score --rescore` over "
                                   "the period first")
        assert h.model_warning in h.warnings
        r = tuning.tune(con, tuning.Targets(max_blocked=0.05))
        assert r.model_warning and r.model_warning in r.tradeoff["warnings"]
        with pytest.raises(tuning.TuningError, match="score --rescore"):
            tuning.apply(con, r)
        assert h.model_warning in tuning.whatif(con)["warnings"]
    res = invoke("tune", "--max-blocked", "5%", "--apply", "--db", db)
    assert res.exit_code == 2 and "riskgate score --rescore" in res.output and "nothing written" in res.output
    res = invoke("whatif", "--db", db)
    assert res.exit_code == 0 and "model v1, but the active model is v2" in res.output
    with store.connect(db) as con:
        assert levels.current_thresholds(con)[1] == 0
        con.execute("UPDATE assessments SET model_version = 2 WHERE event_id < 'b'")  # alice's legitimate ones rescored
        assert "several models (model v1: 30 sign-ins, model v2: 100 sign-ins)" in tuning.history(con).model_warning
        con.execute("UPDATE assessments SET model_version = 2")  # all rescored
        assert tuning.history(con).model_warning is None
    res = invoke("tune", "--max-blocked", "5%", "--apply", "--db", db)
    assert res.exit_code == 0 and "written as thresholds version 1" in res.output, res.output


# -- 5, 6. thresholds files ------------------------------------------------------------------------------------------


def test_thresholds_files_read_json_as_json_and_yaml_numbers_as_numbers(tmp_path, db):
    p = tmp_path / "t.json"
    p.write_text('{"low": 5e-05, "medium": 0.5, "high": 1E-1}'.replace("1E-1", "0.9"))
    assert tuning.load_thresholds(str(p)) == Thresholds(5e-05, 0.5, 0.9)
    p = tmp_path / "t.yaml"
    p.write_text("low: 5e-05\nmedium: 1e-1\nhigh: 0.9\n")  # YAML 1.1 reads 5e-05 as a string
    assert tuning.load_thresholds(str(p)) == Thresholds(5e-05, 0.1, 0.9)
    p.write_text('{"Low": 5e-05, "Medium": 0.5, "High": 0.9}')  # JSON text in a .yaml file
    assert tuning.load_thresholds(str(p)) == Thresholds(5e-05, 0.5, 0.9)
    p.write_text("low: 'x'\nmedium: 0.5\nhigh: 0.9\n")
    with pytest.raises(ThresholdsError, match="threshold low must be a number in \\[0, 1\\], got 'x'"):
        tuning.load_thresholds(str(p))
    p.write_text("low: 0.9\nmedium: 0.5\nhigh: 0.95\n")  # the error names the file (it did not)
    res = invoke("whatif", "--thresholds", p, "--db", db)
    assert res.exit_code == 2 and f"error: {p}: thresholds must be ordered low <= medium <= high" in res.output
    p = tmp_path / "bad.json"
    p.write_text("low: 0.1\n")
    with pytest.raises(ThresholdsError, match="not JSON"):
        tuning.load_thresholds(str(p))
    p = tmp_path / "t2.json"
    p.write_text('{"low": 5e-05, "medium": 0.5, "high": 0.9}')
    res = invoke("whatif", "--thresholds", p, "--json", "--db", db)
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["thresholds"]["low"] == 5e-05


def test_a_thresholds_file_that_is_not_utf8_is_a_one_line_error(tmp_path, db):
    p = tmp_path / "t.yaml"
    p.write_bytes("low: 0.2\nmedium: 0.5\nhigh: 0.9 # \u00e9t\u00e9\n".encode("latin-1"))
    with pytest.raises(ThresholdsError, match="not UTF-8"):
        tuning.load_thresholds(str(p))
    res = invoke("whatif", "--thresholds", p, "--db", db)
    assert res.exit_code == 2 and "not UTF-8" in res.output and "Traceback" not in res.output


def test_a_thresholds_file_that_is_not_yaml_is_a_one_line_error_naming_the_line(tmp_path, db):
    p = tmp_path / "t.yaml"
    p.write_text("low: 0.2\nmedium: [0.5\n")
    res = invoke("whatif", "--thresholds", p, "--db", db)
    assert res.exit_code == 2, res.output
    assert res.stderr == (f"error: {p}:3: thresholds file is not JSON or YAML: while parsing a flow sequence: "
                          "expected ',' or ']', but got '<stream end>' (column 1)\n")


# -- 7. targets resting on few legitimate sign-ins ------------------------------------------------------------------


def test_every_target_resting_on_few_legitimate_sign_ins_is_warned_about(db):
    with store.connect(db, read_only=True) as con:  # 120 legitimate sign-ins: a share under 1/12 rests on < 10
        r = tuning.tune(con, tuning.Targets(max_challenged=0.05, max_at_level={"Low": 0.05, "High": 0.02,
                                                                              "Medium": 0.5}))
    w = r.tradeoff["warnings"]
    assert "only 120 legitimate sign-ins: a challenge share of 0.05 rests on fewer than 10 of them" in w
    assert "only 120 legitimate sign-ins: a share of 0.05 rated Low or above rests on fewer than 10 of them" in w
    assert "only 120 legitimate sign-ins: a share of 0.02 rated High rests on fewer than 10 of them" in w
    assert not any("rated Medium" in x for x in w)  # 60 of them
    assert not any("rests on" in n for n in r.notes)
    res = invoke("tune", "--max-high", "2%", "--json", "--db", db)
    assert any("a share of 0.02 rated High rests on" in x for x in json.loads(res.output)["tradeoff"]["warnings"])


# -- 8. a proposal for a pool or client that none of the sign-ins belongs to ----------------------------------------


def test_whatif_warns_when_the_proposals_pool_or_client_matches_no_assessed_sign_in(db, tmp_path):
    from risk import config as rc

    actions = {"Actions": {lvl: {"Notify": False, "EventAction": "NO_ACTION"}
                           for lvl in ("LowAction", "MediumAction", "HighAction")}}
    with store.connect(db, read_only=True) as con:
        other = rc.RiskConfiguration.model_validate({"UserPoolId": "eu-west-1_Other",
                                                     "AccountTakeoverRiskConfiguration": actions})
        w = tuning.whatif(con, other)
        assert w["changed"] == 0
        assert ("the proposed configuration's UserPoolId eu-west-1_Other matches none of the 130 assessed "
                "sign-ins: it changes nothing here (check the ids, or the period)") in w["warnings"]
        client = rc.RiskConfiguration.model_validate({"UserPoolId": "us-east-1_Test01", "ClientId": "nope",
                                                      "AccountTakeoverRiskConfiguration": actions})
        assert any("UserPoolId us-east-1_Test01 / ClientId nope matches none" in x
                   for x in tuning.whatif(con, client)["warnings"])
        ours = rc.RiskConfiguration.model_validate({"UserPoolId": "us-east-1_Test01",
                                                    "AccountTakeoverRiskConfiguration": actions})
        assert not any("matches none" in x for x in tuning.whatif(con, ours)["warnings"])
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({"UserPoolId": "eu-west-1_Other", "AccountTakeoverRiskConfiguration": actions}))
    res = invoke("whatif", "--config", cfg, "--db", db)
    assert res.exit_code == 0 and "matches none of the 130 assessed sign-ins" in res.output


@pytest.mark.parametrize("name, text, message", [
    ("t.yaml", "low: 0.2\nmedium: 0.5\nhigh: 0.8\nlow: 0.3\n", "t.yaml:4: thresholds file: key 'low' is repeated (first at line 1)"),
    ("t.json", '{"low": 0.2, "medium": 0.5, "high": 0.8, "low": 0.3}', "t.json:1: thresholds file: key 'low' is repeated (first at line 1)"),
    ("u.yaml", "low: 0.2\nmedium: 0.5\nhigh: 0.8\nLOW: 0.3\n", "u.yaml: thresholds file gives low more than once"),
])
def test_a_thresholds_file_giving_a_key_twice_is_refused_naming_it(tmp_path, db, name, text, message):
    """The last of two values was taken in silence (configuration files refuse repeated keys)."""
    p = tmp_path / name
    p.write_text(text)
    res = invoke("whatif", "--thresholds", p, "--db", db)
    assert res.exit_code == 2 and " ".join(res.output.split()).endswith(message), res.output


def test_a_precision_target_nothing_measures_is_not_met_and_moves_nothing_down():
    """A period of legitimate sign-ins only: the precision risk acts on was 0 of 0, taken as met at every candidate,
    so the lowest one was chosen (every level at 0.2: MFA_REQUIRED for any score over 0.2) and --apply wrote it."""
    h, oc = _fake([0.05, 0.1, 0.15, 0.2], [0, 0, 0, 0], [[0, 1, 1, 2]] * 4)
    current = Thresholds(0.2, 0.5, 0.8)
    r = tuning.tune_of(h, oc, current, 0, tuning.Targets(min_precision=0.99))
    assert not r.met
    assert r.thresholds.high == 1.0, r.thresholds
    assert any(n.startswith("min_precision cannot be measured") for n in r.notes), r.notes
    # with one attack acted on, alone, it is measured and met
    h, oc = _fake([0.05, 0.1, 0.15, 0.9], [0, 0, 0, 1], [[0, 1, 1, 2]] * 4)
    r = tuning.tune_of(h, oc, current, 0, tuning.Targets(min_precision=0.99))
    assert r.met and 0.15 < r.thresholds.high <= 0.9, (r.thresholds, r.notes)  # acting on the attack alone
    assert not any(n.startswith("min_precision cannot be measured") for n in r.notes), r.notes


# -- 10. events not yet assessed are said to be left out, as report and export say ------------------------------


def test_tune_and_whatif_warn_about_events_of_the_period_not_yet_assessed(db):
    """Tune and whatif read assessed sign-ins only: two events ingested after scoring were left out in silence."""
    want = "2 events in the period not yet assessed, not in the history: run `riskgate score` first"
    with store.connect(db) as con:
        assert not any("not yet assessed" in w for w in tuning.history(con).warnings)  # all 130 assessed
        ingest_store.insert_events(con, conform(pa.table({
            "event_id": ["late1", "late2"], "user_pool_id": ["us-east-1_Test01"] * 2, "username": ["alice"] * 2,
            "event_type": ["SignIn"] * 2, "event_response": ["Pass"] * 2,
            "creation_date": pa.array([T0 + timedelta(days=1), T0 + timedelta(days=2)], pa.timestamp("us", tz="UTC")),
        }), EVENT_SCHEMA), "late")
        assert tuning.history(con).warnings[0] == want
        assert want in tuning.tune(con, tuning.Targets(max_blocked=0.05)).tradeoff["warnings"]
        assert want in tuning.whatif(con)["warnings"]
        # a period holding one of them counts that one; a period holding none says nothing
        one = tuning.history(con, until=T0 + timedelta(days=1, hours=1)).warnings
        assert one[0] == "1 event in the period not yet assessed, not in the history: run `riskgate score` first"
        assert not any("not yet assessed" in w for w in tuning.history(con, until=T0 + timedelta(days=1)).warnings)
    for args in (["tune", "--max-blocked", "5%"], ["whatif"]):
        res = invoke(*args, "--db", db)
        assert res.exit_code == 0 and f"warning: {want}" in " ".join(res.output.split()), res.output
        res = invoke(*args, "--json", "--db", db)
        out = json.loads(res.output)
        assert want in (out["tradeoff"] if args[0] == "tune" else out)["warnings"]


def test_tune_says_when_its_proposal_spends_budget_on_no_labelled_attack_more(tmp_path):
    """The thresholds in force stopped every labelled attack and no legitimate sign-in; tune used the whole budget
    all the same (the targets allow it, and it leaves room for attacks no label names) and said nothing of it: a
    report after `--apply` showed legitimate sign-ins blocked for no attack more. It says so now."""
    legit = [i / 100 for i in range(90)]  # 0.00 .. 0.89
    path = build_scores(tmp_path / "s.duckdb", legit, [0.91, 0.95, 0.99])
    with store.connect(path) as con:
        levels.set_thresholds(con, Thresholds(0.2, 0.5, 0.9))
        r = tuning.tune(con, tuning.Targets(max_challenged=0.10))
        assert r.met and r.thresholds.high < 0.9, r.thresholds
        spent = r.tradeoff["outcomes"]["legitimate_challenged_or_blocked"]["count"]
        assert r.tradeoff["current_outcomes"]["legitimate_challenged_or_blocked"]["count"] == 0 and spent > 0
        assert (f"the proposal stops no labelled attack more than the thresholds in force (3 of 3) and challenges "
                f"or blocks {spent} more legitimate sign-ins for their risk") in " ".join(r.notes), r.notes
    # an attack the thresholds in force miss (0.85) and the proposal stops: the budget buys it, nothing to say
    with store.connect(build_scores(tmp_path / "s2.duckdb", [x for x in legit if x != 0.85],
                                    [0.85, 0.91, 0.95, 0.99])) as con:
        levels.set_thresholds(con, Thresholds(0.2, 0.5, 0.9))
        r = tuning.tune(con, tuning.Targets(max_challenged=0.10))
        assert r.met and r.thresholds.high <= 0.85
        assert not any(n.startswith("the proposal stops no labelled attack more") for n in r.notes), r.notes
