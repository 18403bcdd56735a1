"""Training's degenerate cases: formats without a User-Agent, few labels, the evaluated model's mode, no
legitimate labels (no NaN in JSON), a held-out split too small, injected attacks' donors and window, and the
report's thresholds versions."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from cli import app
from risk import store
from risk.feedback import set_feedback
from risk.model import ModelError, RiskModel, list_models
from risk.model import training
from risk.signals import FEATURE_COLUMNS
from tests.events_gen import event, write_jsonl

runner = CliRunner()
ATTACK_LABEL = "label = 'attack_type' OR (label = 'is_account_takeover' AND lower(value) = 'true')"


def rg(*args, db=None, code=0):
    res = runner.invoke(app, [*map(str, args)] + (["--db", str(db)] if db else []))
    assert res.exit_code == code, res.output
    return res


def text(res) -> str:
    return " ".join(res.output.split())


def strict_json(s: str):
    """json.loads that refuses NaN and Infinity (not JSON)."""
    def refuse(token):
        raise ValueError(f"not JSON: {token}")
    return json.loads(s, parse_constant=refuse)


@pytest.fixture(scope="module")
def synth_db(tmp_path_factory):
    d = tmp_path_factory.mktemp("fixes")
    rg("synth", "--users", 60, "--days", 10, "--seed", 2, "--out", d / "ev.jsonl", "--inline-labels")
    rg("ingest", d / "ev.jsonl", db=d / "rg.duckdb")
    return d / "rg.duckdb"


@pytest.fixture
def db(synth_db, tmp_path):
    path = tmp_path / "copy.duckdb"
    shutil.copy(synth_db, path)
    return path


def sql(db, query, params=None):
    con = store.connect(db)
    try:
        return con.execute(query, params or []).fetchall()
    finally:
        con.close()


# -- 1. formats without a User-Agent -------------------------------------------------------------


def test_labelled_training_works_on_a_cognito_user_activity_store(tmp_path):
    """No User-Agent: the device and agent columns are NULL in every event; the trees still train, and no
    reason names a signal that was never there."""
    rg("synth", "--users", 60, "--days", 10, "--seed", 2, "--format", "cognito-user-activity",
       "--out", tmp_path / "ua.jsonl")
    db = tmp_path / "ua.duckdb"
    rg("ingest", tmp_path / "ua.jsonl", db=db)
    rg("labels", "load", tmp_path / "ua.labels.csv", db=db)
    res = rg("train", "--db", db)
    assert "trained RiskModel/supervised" in res.output and "ROC AUC" in res.output
    absent = ["new_device", "freeman_device_type", "freeman_os", "freeman_browser", "freeman_ua"]
    assert f"signals missing from every event (no part in scores or reasons): {', '.join(absent)}" in text(res)
    con = store.connect(db)
    try:
        from risk.features import compute_features
        from risk.model import load_active

        model, _ = load_active(con)
        assert model.mode_ == "supervised" and model.absent_features_ == absent
        X = compute_features(con).to_pandas()[FEATURE_COLUMNS]
        codes = {c for reasons in model.explain(X, top=len(FEATURE_COLUMNS)) for c, _v, _w in reasons}
        assert codes and not codes & set(absent)
        assert (model.contributions(X)[:, [FEATURE_COLUMNS.index(c) for c in absent]] == 0).all()
    finally:
        con.close()


def informative(n_attacks: int, n_legit: int, n_unlabelled: int = 200, seed: int = 0):
    """Feature rows where attacks come from new networks; some columns NULL in every row."""
    rng = np.random.default_rng(seed)
    n = n_attacks + n_legit + n_unlabelled
    X = pd.DataFrame({c: rng.random(n) for c in FEATURE_COLUMNS})
    attack = np.r_[np.ones(n_attacks, bool), np.zeros(n - n_attacks, bool)]
    for c in ("new_ip", "new_ip_prefix", "new_asn", "new_country"):
        X[c] = np.where(attack, 1.0, 0.0)
    X["new_device"] = np.nan
    X["freeman_ua"] = np.nan
    y = np.r_[np.ones(n_attacks), np.zeros(n_legit), np.full(n_unlabelled, np.nan)]
    return X, y, attack


def test_a_column_null_in_every_training_event_is_left_out_of_scores_and_reasons_in_both_modes():
    X, y, attack = informative(300, 300)
    for labels in (y, None):
        m = RiskModel(max_iter=20).fit(X, labels)
        assert m.absent_features_ == ["new_device", "freeman_ua"]
        for reasons in m.explain(X, top=len(FEATURE_COLUMNS)):
            assert not {c for c, _v, _w in reasons} & {"new_device", "freeman_ua"}
        # the feature contract is kept: the columns are inputs; a value there later changes nothing
        assert list(m.feature_names_in_) == FEATURE_COLUMNS
        np.testing.assert_allclose(m.score_samples(X.assign(new_device=1.0, freeman_ua=5.0)), m.score_samples(X))
    assert RiskModel(max_iter=20).fit(X, y).mode_ == "supervised"


# -- 2. few labels ----------------------------------------------------------------------------------


def test_a_few_dozen_labels_train_trees_that_split():
    """25 attacks and 25 legitimate events: leaves of 100 would forbid any split (one score for all)."""
    X, y, attack = informative(25, 25)
    m = RiskModel().fit(X, y)
    assert m.mode_ == "supervised" and m.fallback_ is None and m.min_samples_leaf_ == 5
    s = m.score_samples(X)
    assert len(np.unique(s)) > 1
    assert s[attack].min() > s[~attack].max()
    assert m.explain(X.iloc[:1])[0]  # an attack gets reasons
    # large label sets keep the configured leaves (the benchmark's model)
    big = RiskModel(max_iter=5).fit(*informative(1000, 1000, 0)[:2])
    assert big.min_samples_leaf_ == 100
    assert RiskModel(max_iter=5, min_samples_leaf=20).fit(*informative(1000, 1000, 0)[:2]).min_samples_leaf_ == 20


# -- 3. the evaluated model's mode ------------------------------------------------------------------


def test_held_out_metrics_name_the_mode_of_the_model_evaluated(db):
    """The earlier part has no attack (its model is unlabeled), the whole window has enough: say so."""
    (cut,) = sql(db, "SELECT quantile_cont(epoch_us(creation_date), 0.8) FROM events")[0]
    cut = pd.Timestamp(int(cut), unit="us", tz="UTC").to_pydatetime()
    sql(db, f"DELETE FROM labels WHERE ({ATTACK_LABEL}) AND event_id IN "
            "(SELECT event_id FROM events WHERE creation_date < ?)", [cut])
    con = store.connect(db)
    try:
        late = [r[0] for r in con.execute(
            "SELECT event_id FROM events WHERE creation_date >= ? ORDER BY creation_date LIMIT 25", [cut]).fetchall()]
        for e in late:
            set_feedback(con, e, "Invalid", "Admin")
    finally:
        con.close()
    res = rg("train", "--db", db)
    assert "trained RiskModel/supervised" in res.output
    assert ("note: the held-out metrics are of a RiskModel/unlabeled fitted on the earlier part (the labelled "
            "events (0 attacks, ") in text(res)
    assert "are fewer than the 20 of each kind the tree model needs" in text(res)
    assert "the registered model, fitted on the whole window, is RiskModel/supervised" in text(res)
    con = store.connect(db)
    try:
        m = list_models(con)[-1].metrics
    finally:
        con.close()
    assert m["holdout_mode"] == "unlabeled" and m["mode"] == "supervised"
    assert m["holdout_labels"]["attack"] == 0


# -- 4. no legitimate labels: null, never NaN ----------------------------------------------------------


def test_no_legitimate_labels_give_valid_json_and_the_explanation(db):
    sql(db, "DELETE FROM labels WHERE label = 'is_account_takeover' AND lower(value) = 'false'")
    out = strict_json(rg("train", "--json", db=db).stdout)
    per = out["metrics"]["per_attack_type"]
    assert per and all(e["tpr"] is None for e in per.values())
    strict_json(rg("models", "--json", db=db).stdout)
    res = rg("train", db=db)
    assert "labelled events are all attacks: no metrics (load labels of legitimate sign-ins or give Valid feedback" \
        in text(res)
    assert "TPR" not in res.output and "ROC AUC" not in res.output
    # a NaN stored before this is read back as null
    sql(db, """UPDATE models SET metrics = '{"roc_auc": NaN, "per_attack_type": {"x": {"tpr": NaN}}}'""")
    listed = strict_json(rg("models", "--json", db=db).stdout)
    assert listed[0]["metrics"] == {"roc_auc": None, "per_attack_type": {"x": {"tpr": None}}}


def test_without_labels_the_hint_does_not_offer_injected_attacks_alone(db):
    sql(db, "DELETE FROM labels")
    res = rg("train", db=db)
    assert "no labelled events in the training window: no metrics" in text(res)
    assert "--inject-attacks adds attacks only, and the metrics also need legitimate labels" in text(res)
    res = rg("train", "--inject-attacks", 40, db=db)
    assert "labelled events are all attacks: no metrics" in text(res)


# -- 5. a held-out split too small --------------------------------------------------------------------


def hand_made(tmp_path, n: int, *, same_time: bool):
    evs = []
    for i in range(n):
        ev = event(i, Username=f"user{i % 3}", UserSub=f"sub-{i % 3}",
                   Labels={"is_account_takeover": i % 2 == 0})
        if same_time:
            ev["CreationDate"] = "2026-01-01T00:00:00Z"
        evs.append(ev)
    write_jsonl(tmp_path / "ev.jsonl", evs)
    db = tmp_path / "hand.duckdb"
    rg("ingest", tmp_path / "ev.jsonl", db=db)
    return db


def test_events_all_at_one_time_say_nothing_comes_before_the_held_out_period(tmp_path):
    res = rg("train", db=hand_made(tmp_path, 30, same_time=True))
    out = text(res)
    assert "no event comes before the held-out period (from 2026-01-01 00:00:00+00:00, the window's first time" in out
    assert "no labelled events" not in out


def test_a_held_out_period_too_small_says_so(tmp_path):
    db = hand_made(tmp_path, 30, same_time=False)
    out = text(rg("train", db=db))
    assert "the held-out period (from 2026-01-01 00:24:00+00:00) has only 6 events, at least 10 are needed: no " \
           "metrics (use a larger --holdout or widen the window)" in out
    assert "no labelled events" not in out
    out = text(rg("train", "--holdout", "0.8", db=db))
    assert "only 6 events before the held-out period" in out and "use a smaller --holdout" in out


# -- 6. injected attacks never copy the victim ----------------------------------------------------------


def test_an_injected_attack_never_takes_the_victims_own_sign_in_as_donor(tmp_path, monkeypatch):
    # user0 signs in from one network only (its country's pool holds no one else); user1 from another
    evs = [event(i, Username="user0", UserSub="s0", ContextData={**event(i)["ContextData"],
                                                                 "IpAddress": "81.2.69.160"}) for i in range(40)]
    evs += [event(100 + i, Username="user1", UserSub="s1", ContextData={**event(i)["ContextData"],
                                                                        "IpAddress": "203.0.113.9"})
            for i in range(6)]
    write_jsonl(tmp_path / "ev.jsonl", evs)
    db = tmp_path / "two.duckdb"
    rg("ingest", tmp_path / "ev.jsonl", db=db)
    pairs = []
    real = training._injected_events
    monkeypatch.setattr(training, "_injected_events", lambda con, p: (pairs.append(p.copy()), real(con, p))[1])
    con = store.connect(db)
    try:
        from risk.features import compute_features

        feats = compute_features(con).to_pandas()
        training.inject_attacks(con, 50, feats, seed=3)
        user = dict(con.execute("SELECT event_id, username FROM events").fetchall())
    finally:
        con.close()
    (p,) = pairs
    assert len(p) == 50
    assert all(user[v] != user[d] for v, d in zip(p["victim_id"], p["donor_id"]))


def test_injecting_into_a_one_user_store_is_refused(tmp_path):
    write_jsonl(tmp_path / "ev.jsonl", [event(i, Username="solo", UserSub="s") for i in range(30)])
    db = tmp_path / "one.duckdb"
    rg("ingest", tmp_path / "ev.jsonl", db=db)
    con = store.connect(db)
    try:
        with pytest.raises(ModelError, match="candidate sign-ins are all of one user .'solo'.; an injected attack "
                                             "takes its network and device from another user"):
            training.train(con, inject_attacks=20, save=False)
    finally:
        con.close()
    res = rg("train", "--inject-attacks", 20, db=db, code=2)
    assert "all of one user" in text(res)


# -- 7. the training window is the real events' ------------------------------------------------------


def test_the_training_window_and_counts_are_the_real_events(db, monkeypatch):
    seen = []
    split = training._split_by_time
    monkeypatch.setattr(training, "_split_by_time", lambda ts, h: (seen.append(ts), split(ts, h))[1])
    (n_real, last), = sql(db, "SELECT count(*), max(creation_date) FROM events")
    con = store.connect(db)
    try:
        r = training.train(con, inject_attacks=300, seed=1)
        rec = list_models(con)[-1]
        assert rec.train_until == last and r.rows == n_real == rec.metadata["rows"]
        assert 0 < r.injected <= 300 and rec.metadata["injected_rows"] == r.injected
        when = pd.to_datetime(seen[-1].features["creation_date"], utc=True)
        assert len(seen[-1]) == n_real + r.injected and when.max() <= pd.Timestamp(last)
        # with --until: nothing injected at or after it is trained on
        until = (pd.Timestamp(last) - pd.Timedelta(days=3)).to_pydatetime()
        (n_window,), = con.execute("SELECT count(*) FROM events WHERE creation_date < ?", [until]).fetchall()
        r = training.train(con, until=until, inject_attacks=300, seed=1)
        when = pd.to_datetime(seen[-1].features["creation_date"], utc=True)
        assert when.max() < pd.Timestamp(until) and r.rows == n_window
        assert len(seen[-1]) == n_window + r.injected
        assert list_models(con)[-1].train_until == until
    finally:
        con.close()
    out = text(rg("train", "--inject-attacks", 300, "--seed", 1, db=db))
    injected = 300 - int(out.split(" of the 300 injected attacks")[0].rsplit(" ", 1)[-1]) \
        if "of the 300 injected attacks came after" in out else 300
    assert f"on {n_real:,} events + {injected:,} injected attacks" in out


# -- 8. the report names the thresholds the assessments used ---------------------------------------------


def test_the_report_names_the_thresholds_versions_of_the_assessments(db):
    from risk.levels import Thresholds, set_thresholds

    rg("train", db=db)
    rg("score", db=db)
    out = text(rg("report", db=db))
    assert "attacks caught (challenged or blocked) at the current thresholds (version 0)" in out
    assert "riskgate score --rescore" not in out
    con = store.connect(db)
    try:
        set_thresholds(con, Thresholds(0.2, 0.5, 0.9), source="test")
    finally:
        con.close()
    (n,), = sql(db, "SELECT count(*) FROM assessments")
    out = text(rg("report", db=db))
    assert "attacks caught (challenged or blocked) at the thresholds assessed with (version 0)" in out
    assert (f"note: {n:,} assessments of the period used thresholds other than the current version 1 "
            f"(version 0: {n:,})") in out
    assert "run `riskgate score --rescore` (with --since/--until for a period)" in out
    rep = json.loads(rg("report", "--json", db=db).stdout)
    assert rep["thresholds_versions"] == [[0, n]] and rep["current_thresholds_version"] == 1
    rg("score", "--rescore", db=db)
    out = text(rg("report", db=db))
    assert "at the current thresholds (version 1)" in out and "note:" not in out
