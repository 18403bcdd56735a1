"""risk.model.training: labels and feedback, injected attacks (point-in-time, rolled back), metrics."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from cli import app
from risk import store
from risk.feedback import set_feedback
from risk.features import compute_features
from risk.model.training import INJECTED, TrainingSet, evaluate, inject_attacks, labelled, load_labels, tpr_at_challenge_rate


@pytest.fixture(scope="module")
def db(tmp_path_factory):
    d = tmp_path_factory.mktemp("training")
    runner = CliRunner()
    r = runner.invoke(app, ["synth", "--users", "150", "--days", "14", "--seed", "5", "--out", str(d / "ev.jsonl"),
                            "--inline-labels"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["ingest", str(d / "ev.jsonl"), "--db", str(d / "rg.duckdb")])
    assert r.exit_code == 0, r.output
    return d / "rg.duckdb"


@pytest.fixture
def con(db, tmp_path):
    """A connection to a copy of the module's store (tests may write)."""
    path = tmp_path / "copy.duckdb"
    path.write_bytes(db.read_bytes())
    c = store.connect(path)
    yield c
    c.close()


def test_tpr_at_challenge_rate_known_answers():
    legit = np.arange(100.0)  # 0 .. 99: challenging 1 % = 1 event, so the bar is above 98
    assert tpr_at_challenge_rate(np.array([99.0, 98.5, 50.0]), legit, 0.01) == pytest.approx(2 / 3)
    assert tpr_at_challenge_rate(np.array([98.0]), legit, 0.01) == 0.0  # a tie with the 2nd legit score is not caught
    assert tpr_at_challenge_rate(np.full(3, 0.5), np.full(50, 0.5), 0.01) == 0.0  # ties count against the model
    assert np.isnan(tpr_at_challenge_rate(np.array([]), legit))


def test_labels_from_the_data_set_and_feedback(db, tmp_path):
    path = tmp_path / "fb.duckdb"
    path.write_bytes(db.read_bytes())
    con = store.connect(path)
    try:
        lab = load_labels(con).set_index("event_id")
        n_ato = con.execute("SELECT count(*) FROM labels WHERE label = 'is_account_takeover' AND value = 'true'").fetchall()[0][0]
        n_typed = con.execute("SELECT count(DISTINCT event_id) FROM labels WHERE label = 'attack_type'").fetchall()[0][0]
        assert (lab["y"] == 1).sum() >= max(n_ato, n_typed) > 0
        assert lab["y"].notna().all()  # synth labels every event
        assert set(lab.loc[lab["y"] == 1, "attack_type"]) <= {
            "credential_stuffing", "password_spray", "brute_force", "naive_takeover", "vpn_takeover",
            "targeted_takeover", "impossible_travel"}
        attack = lab.index[lab["y"] == 1][0]
        legit = lab.index[lab["y"] == 0][0]
        set_feedback(con, attack, "Valid", "Admin")
        set_feedback(con, legit, "Invalid", "User")
        lab2 = load_labels(con).set_index("event_id")
        assert lab2.loc[attack, "y"] == 0 and pd.isna(lab2.loc[attack, "attack_type"])
        assert lab2.loc[legit, "y"] == 1 and lab2.loc[legit, "attack_type"] == "feedback_invalid"
    finally:
        con.close()


def test_injected_attacks_are_point_in_time_and_leave_nothing_behind(db, tmp_path):
    path = tmp_path / "inj.duckdb"
    path.write_bytes(db.read_bytes())
    con = store.connect(path)
    try:
        before = con.execute("SELECT count(*), max(creation_date) FROM events").fetchall()
        feats = compute_features(con).to_pandas()
        ts = inject_attacks(con, 40, feats, seed=1)
        assert len(ts) == 40 and (ts.y == 1).all()
        assert set(ts.attack_type) <= set(INJECTED) and INJECTED[0] in set(ts.attack_type)
        f = ts.features
        assert f["event_id"].str.startswith("injected-").all()
        assert (f["event_type"] == "SignIn").all() and (f["event_response"] == "Pass").all()
        # another user's network: new to the victim; foreign ones come from a new country
        assert f["new_ip"].mean() > 0.9
        foreign = ts.attack_type == INJECTED[0]
        assert (f.loc[foreign, "new_country"] == 1).mean() > 0.9
        assert (f["history_size"] >= 3).all()  # victims have a history to compare with
        assert con.execute("SELECT count(*), max(creation_date) FROM events").fetchall() == before
        # the same seed injects the same attacks
        again = inject_attacks(con, 40, feats, seed=1)
        pd.testing.assert_frame_equal(again.features, ts.features)
    finally:
        con.close()


def test_evaluate_reports_per_attack_type_against_legitimate_successful_sign_ins():
    f = pd.DataFrame({
        "event_type": ["SignIn"] * 6 + ["ForgotPassword"],
        "event_response": ["Pass", "Pass", "Pass", "Fail", "Pass", "Fail", "Pass"],
        "creation_date": pd.date_range("2026-06-01", periods=7, freq="h", tz="UTC"),
    })
    y = np.array([0, 0, 0, 0, 1, 1, 1.0])
    types = np.array([None, None, None, None, "naive_takeover", "credential_stuffing", "naive_takeover"], dtype=object)
    scores = np.array([0.1, 0.2, 0.3, 0.9, 0.8, 0.25, 0.99])
    m = evaluate(scores, TrainingSet(f, y, types), rate=0.01)
    # legitimate successful sign-ins: 0.1, 0.2, 0.3 (the failed legit 0.9 does not set the bar)
    assert m["per_attack_type"]["naive_takeover"] == {"events": 1, "tpr": 1.0, "roc_auc": 1.0}
    assert m["per_attack_type"]["credential_stuffing"]["tpr"] == 0.0
    assert m["per_attack_type"]["credential_stuffing"]["roc_auc"] == pytest.approx(2 / 3)
    assert m["attacks"] == 3 and m["labelled"] == 7
    assert 0 < m["brier"] < 1 and 0 < m["roc_auc"] < 1
    unl = labelled(f.assign(event_id=[str(i) for i in range(7)]), None)
    assert np.isnan(unl.y).all() and "roc_auc" not in evaluate(scores, unl)


def test_features_in_chunks_are_the_features_of_one_call_and_report_progress(con):
    from risk.model.training import features_in_chunks
    from risk.score import chunk_bounds

    whole = compute_features(con)
    n = whole.num_rows
    reports = []
    chunked = features_in_chunks(con, chunk_rows=n // 5, progress=lambda done, total: reports.append((done, total)))
    bounds, total = chunk_bounds(con, None, None, chunk_rows=n // 5)
    assert total == n and len(bounds) >= 5
    assert chunked.equals(whole)  # same rows, order and values: the features are point in time
    assert len(reports) == len(bounds) and reports[-1] == (n, n)
    assert all(a[0] < b[0] for a, b in zip(reports, reports[1:]))
    # a period, and a period without events (one empty call, the schema kept)
    since = whole.column("creation_date")[n // 2].as_py()
    part = features_in_chunks(con, since=since, chunk_rows=n // 7)
    assert part.equals(compute_features(con, since=since))
    empty = features_in_chunks(con, until=whole.column("creation_date")[0].as_py(), chunk_rows=10)
    assert empty.num_rows == 0 and empty.schema == whole.schema
    with pytest.raises(Exception, match="chunk_rows must be at least 1"):
        features_in_chunks(con, chunk_rows=0)


def test_training_in_chunks_fits_the_same_model_as_in_one_call(con):
    from risk.model.training import train

    feats = compute_features(con).to_pandas()
    one = train(con, seed=4, save=False, chunk_rows=10**9)
    many = train(con, seed=4, save=False, chunk_rows=len(feats) // 6)
    assert one.rows == many.rows == len(feats)
    cols = list(one.model.feature_names_in_)
    assert np.array_equal(one.model.score_samples(feats[cols]), many.model.score_samples(feats[cols]))
    assert one.model.mode_ == "supervised" and one.model.n_labels_["attack"] > 0
    assert json.dumps(one.metrics, sort_keys=True, default=str) == json.dumps(many.metrics, sort_keys=True,
                                                                              default=str)


def test_training_gives_duckdbs_freed_memory_back_while_fitting_then_leaves_the_setting_as_it_was(con,
                                                                                                   monkeypatch):
    from risk.model import training

    setting = "SELECT current_setting('allocator_background_threads')"
    seen = []
    fail = []
    fit = training.RiskModel.fit

    def spy(self, *a, **k):
        seen.append(con.execute(setting).fetchall()[0][0])
        if fail:
            raise RuntimeError("the fit failed")
        return fit(self, *a, **k)

    monkeypatch.setattr(training.RiskModel, "fit", spy)
    for before in (False, True):
        con.execute(f"SET allocator_background_threads = {str(before).lower()}")
        seen.clear()
        training.train(con, seed=1, save=False)
        assert seen and all(seen)  # on during every fit
        assert con.execute(setting).fetchall()[0][0] is before
    fail.append(True)  # and when a fit fails
    con.execute("SET allocator_background_threads = false")
    with pytest.raises(RuntimeError, match="the fit failed"):
        training.train(con, seed=1, save=False)
    assert seen[-1] is True and con.execute(setting).fetchall()[0][0] is False


def test_train_window_and_first_use_default(db, tmp_path):
    from datetime import datetime, timezone

    from risk.model import list_models, load_active
    from risk.model.training import train

    path = tmp_path / "win.duckdb"
    path.write_bytes(db.read_bytes())
    con = store.connect(path)
    try:
        # with no model trained, load_active can fit the statistical model on the store (once)
        model, version = load_active(con, fit_if_missing=True)
        assert (version, model.mode_) == (1, "unlabeled")
        assert load_active(con, fit_if_missing=True)[1] == 1
        until = datetime(2026, 6, 10, tzinfo=timezone.utc)
        r = train(con, until=until, seed=3)
        assert r.version == 2 and r.model.mode_ == "supervised"
        rec = list_models(con)[-1]
        assert rec.train_until == until and rec.train_since <= datetime(2026, 6, 1, tzinfo=timezone.utc)
        n_window = con.execute("SELECT count(*) FROM events WHERE creation_date < ?", [until]).fetchall()[0][0]
        assert r.rows == n_window == rec.metadata["rows"]
        assert rec.metadata["params"]["random_state"] == 3
        with pytest.raises(Exception, match="holdout"):
            train(con, holdout=1.5)
    finally:
        con.close()
