"""risk.model: the estimators (contract, ranking, calibration, NULLs, explanations), the baseline and the registry."""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from scipy.special import expit
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.metrics import brier_score_loss, roc_auc_score

from risk import store
from risk.model import (
    FREEMAN_COLUMNS,
    FreemanBaseline,
    ModelError,
    ModelMetadata,
    NoModelError,
    RiskModel,
    activate,
    list_models,
    load_active,
    load_model,
    save_model,
)
from risk.signals import FEATURE_COLUMNS, SIGNALS

NOVELTY = ("new_ip", "new_ip_prefix", "new_asn", "new_country", "new_city", "new_device")
FAST = dict(max_iter=40, random_state=0)


def _rows(rng: np.random.Generator, n: int, attack: bool) -> pd.DataFrame:
    """Feature rows with a known structure: attacks are novel, far, foreign, on hosting networks."""
    d = {c: np.zeros(n) for c in FEATURE_COLUMNS}
    d["history_size"] = rng.integers(1, 200, n).astype(float)
    base = {"new_ip": 0.2, "new_ip_prefix": 0.1, "new_asn": 0.05, "new_country": 0.01, "new_city": 0.03,
            "new_device": 0.05}
    for c in NOVELTY:
        d[c] = (rng.random(n) < (0.95 if attack else base[c])).astype(float)
    d["travel_distance_km"] = rng.exponential(3000 if attack else 20, n)
    d["travel_speed_kmh"] = rng.exponential(2000 if attack else 5, n)
    d["hours_since_last_success"] = rng.exponential(30, n)
    d["unusual_hour"] = rng.normal(1.5 if attack else 0.0, 0.5, n)
    d["hosting_network"] = (rng.random(n) < (0.5 if attack else 0.01)).astype(float)
    for c in FREEMAN_COLUMNS:
        d[c] = rng.normal(2.0 if attack else 0.0, 1.0, n)
    return pd.DataFrame(d)


def frame(seed: int = 0, n_legit: int = 2000, n_attack: int = 60) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = pd.concat([_rows(rng, n_legit, False), _rows(rng, n_attack, True)], ignore_index=True)
    y = np.r_[np.zeros(n_legit), np.ones(n_attack)]
    # first sign-ins have no previous location: NULL, explicitly
    X.loc[rng.choice(len(X), len(X) // 20, replace=False), ["travel_speed_kmh", "travel_distance_km"]] = np.nan
    return X, y


def familiar(n: int = 1) -> pd.DataFrame:
    d = {c: [0.0] * n for c in FEATURE_COLUMNS}
    d["history_size"] = [150.0] * n
    d["hours_since_last_success"] = [20.0] * n
    d["travel_distance_km"] = [2.0] * n
    d["travel_speed_kmh"] = [0.5] * n
    for c in FREEMAN_COLUMNS:
        d[c] = [-1.0] * n
    return pd.DataFrame(d)


def obvious_attack() -> pd.DataFrame:
    X = familiar()
    for c in NOVELTY:
        X[c] = 1.0
    X["hosting_network"] = 1.0
    X["travel_distance_km"] = 9000.0
    X["travel_speed_kmh"] = 8000.0
    for c in FREEMAN_COLUMNS:
        X[c] = 4.0
    return X


@pytest.fixture(scope="module")
def data():
    return frame(0), frame(1)


@pytest.fixture(scope="module")
def unlabeled(data):
    (X, _), _ = data
    return RiskModel().fit(X)


@pytest.fixture(scope="module")
def supervised(data):
    (X, y), _ = data
    return RiskModel(**FAST).fit(X, y)


# -- without labels -------------------------------------------------------------


def test_unlabeled_ranks_obvious_attacks_above_familiar_sign_ins(unlabeled, data):
    assert unlabeled.mode_ == "unlabeled"
    familiar_scores = unlabeled.score_samples(familiar())
    attack = unlabeled.score_samples(obvious_attack())
    assert attack[0] > 0.99 and familiar_scores[0] < 0.01
    # each obvious signal on its own raises the score of a familiar sign-in
    for cols, value in (((*NOVELTY,), 1.0), (("hosting_network",), 1.0), (("travel_speed_kmh",), 8000.0)):
        X = familiar()
        X[list(cols)] = value
        assert unlabeled.score_samples(X)[0] > familiar_scores[0], cols
    _, (Xt, yt) = data
    assert roc_auc_score(yt, unlabeled.score_samples(Xt)) > 0.99


def test_unlabeled_score_is_expit_of_surprise_minus_midpoint(unlabeled, data):
    _, (Xt, _) = data
    S = unlabeled.statistical_score(Xt)
    np.testing.assert_allclose(unlabeled.score_samples(Xt), expit(S - unlabeled.c_))
    # the midpoint puts about `contamination` of the training events above 0.5
    (X, _), _ = data
    assert abs((unlabeled.score_samples(X) > 0.5).mean() - unlabeled.contamination) < 0.005


def test_prior_weights_are_one_documented_parameter(data):
    (X, _), _ = data
    m = RiskModel(prior_weights={"hosting_network": 0.0}).fit(X)
    j = FEATURE_COLUMNS.index("hosting_network")
    assert m.weights_[j] == 0.0 and (np.delete(m.weights_, j) == 1.0).all()
    a, b = familiar(), familiar()
    b["hosting_network"] = 1.0
    assert m.statistical_score(a)[0] == m.statistical_score(b)[0]
    with pytest.raises(ModelError, match="not_a_signal"):
        RiskModel(prior_weights={"not_a_signal": 2.0}).fit(X)


# -- with labels ----------------------------------------------------------------


def _subtle(seed: int, n_legit: int = 3000, n_attack: int = 300):
    """Attacks that only a learner can pick out: new device at an odd hour; legitimate noise in other signals."""
    rng = np.random.default_rng(seed)
    X = _rows(rng, n_legit + n_attack, False)
    for c in FREEMAN_COLUMNS + ("travel_speed_kmh",):
        X[c] = rng.standard_t(1.5, len(X)) ** 2  # heavy-tailed noise, the same for both classes
    att = slice(n_legit, None)
    X.loc[n_legit:, "new_device"] = (rng.random(n_attack) < 0.7).astype(float)
    X.loc[n_legit:, "unusual_hour"] = rng.normal(1.0, 0.5, n_attack)
    y = np.r_[np.zeros(n_legit), np.ones(n_attack)]
    del att
    return X, y


def test_supervised_beats_unlabeled_on_held_out_data():
    X, y = _subtle(0)
    Xt, yt = _subtle(1)
    unl = roc_auc_score(yt, RiskModel().fit(X).score_samples(Xt))
    sup_model = RiskModel(**FAST).fit(X, y)
    assert sup_model.mode_ == "supervised"
    sup = roc_auc_score(yt, sup_model.score_samples(Xt))
    assert sup > unl + 0.05, (sup, unl)
    assert sup > 0.85


def test_probabilities_are_calibrated_on_a_known_distribution():
    """P(attack | new_device) = 0.3, P(attack | known device) = 0.02: the model's probabilities match."""
    def draw(seed, n=6000):
        rng = np.random.default_rng(seed)
        X = familiar(n)
        nd = rng.random(n) < 0.2
        X["new_device"] = nd.astype(float)
        p = np.where(nd, 0.3, 0.02)
        return X, (rng.random(n) < p).astype(float), p

    X, y, _ = draw(0)
    Xt, yt, pt = draw(1)
    m = RiskModel(**FAST).fit(X, y)
    proba = m.predict_proba(Xt)[:, 1]
    bayes = float(np.mean(pt * (1 - pt)))  # the Brier score of the true probabilities
    assert brier_score_loss(yt, proba) < bayes + 0.003
    nd = Xt["new_device"].to_numpy() == 1
    assert abs(proba[nd].mean() - 0.3) < 0.05
    assert abs(proba[~nd].mean() - 0.02) < 0.01


def test_partial_and_textual_labels(data):
    (X, y), _ = data
    text = np.where(y == 1, "true", "false").astype(object)
    text[::3] = None  # unknown
    m = RiskModel(**FAST).fit(X, text)
    assert m.mode_ == "supervised"
    assert m.n_labels_ == {"attack": int((y[np.arange(len(y)) % 3 != 0] == 1).sum()),
                           "legitimate": int((y[np.arange(len(y)) % 3 != 0] == 0).sum())}
    few = np.full(len(y), np.nan)
    few[:5] = 0
    few[-5:] = 1
    assert RiskModel().fit(X, few).mode_ == "unlabeled"  # fewer than min_labels: statistical score
    with pytest.raises(ModelError, match="0/1"):
        RiskModel().fit(X, np.full(len(y), 2.0))
    with pytest.raises(ModelError, match="labels for"):
        RiskModel().fit(X, y[:-1])


# -- NULLs ----------------------------------------------------------------------------


@pytest.mark.parametrize("model", ["unlabeled", "supervised"])
def test_null_features_are_handled(model, request, data):
    m = request.getfixturevalue(model)
    X = familiar(3)
    X.loc[0, :] = np.nan  # nothing computable
    X.loc[1, "travel_speed_kmh"] = np.nan
    s = m.score_samples(X)
    assert np.isfinite(s).all() and ((s >= 0) & (s <= 1)).all()
    # Arrow input with real NULLs gives the same scores
    np.testing.assert_allclose(m.score_samples(pa.Table.from_pandas(X, preserve_index=False)), s)


def test_a_rarely_missing_signal_being_missing_is_suspicious(unlabeled):
    """Fail secure: no previous location is rare in training (5 %), so NULL speed scores above a familiar speed."""
    a, b = familiar(), familiar()
    b["travel_speed_kmh"] = np.nan
    j = FEATURE_COLUMNS.index("travel_speed_kmh")
    assert unlabeled.surprise_.null_surprise[j] == pytest.approx(-np.log((103 + 1) / (2060 + 2)), rel=0.01)
    assert unlabeled.score_samples(b)[0] > unlabeled.score_samples(a)[0]


def test_bad_input_is_named(unlabeled):
    X = familiar()
    with pytest.raises(ModelError, match="new_device"):
        unlabeled.score_samples(X.drop(columns=["new_device"]))
    X["new_ip"] = "yes"
    with pytest.raises(ModelError, match="'new_ip' must be numeric"):
        unlabeled.score_samples(X)
    X = familiar()
    X["travel_speed_kmh"] = np.inf
    with pytest.raises(ModelError, match="travel_speed_kmh.*infinite"):
        unlabeled.score_samples(X)
    with pytest.raises(ModelError, match="DataFrame, a pyarrow Table or a list of dicts.*got list of list"):
        unlabeled.score_samples([[0.0] * len(FEATURE_COLUMNS)])
    rows = familiar(3).to_dict("records")
    del rows[1]["new_device"]
    with pytest.raises(ModelError, match=r"lacks the feature column\(s\) new_device \(row 1\)"):
        unlabeled.score_samples(rows)
    rows = familiar().to_dict("records")
    rows[0]["new_ip"] = "yes"
    with pytest.raises(ModelError, match="'new_ip' must be numeric.*row 0 holds 'yes'"):
        unlabeled.score_samples(rows)
    rows = familiar().to_dict("records")
    rows[0]["travel_speed_kmh"] = float("inf")
    with pytest.raises(ModelError, match="travel_speed_kmh.*infinite"):
        unlabeled.score_samples(rows)


@pytest.mark.parametrize("name", ["unlabeled", "supervised"])
def test_rows_score_and_explain_as_the_table(name, request, data):
    """Rows as dicts (the service's path) give the Arrow table's scores and reasons, bit for bit."""
    model = request.getfixturevalue(name)
    _, (X, _) = data
    X = X.iloc[:300].copy()
    X.loc[X.index[::7], "travel_speed_kmh"] = np.nan  # NULLs become NaN in both
    table = pa.Table.from_pandas(X, preserve_index=False)
    rows = [{k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in r.items()}
            for r in X.to_dict("records")]
    assert model.score_samples(rows).tolist() == model.score_samples(table).tolist()
    assert model.explain(rows[:5]) == model.explain(table.slice(0, 5))
    assert model.explain(rows[:5])[0]  # something to compare
    assert model.score_samples([]).shape == (0,)
    numpy_typed = [{k: (np.float32(v) if isinstance(v, float) else v) for k, v in r.items()} for r in rows[:3]]
    numpy_typed[0]["new_ip"] = np.int64(1)
    assert model.score_samples(numpy_typed).shape == (3,)  # numpy scalars are numbers too


# -- the estimator contract (STYLE.md habits 2 and 3) -------------------------------


@pytest.mark.parametrize("est", [RiskModel(contamination=0.02, random_state=np.random.RandomState(7)),
                                 FreemanBaseline(contamination=0.05)])
def test_estimator_contract(est, data):
    (X, y), _ = data
    params = est.get_params()
    with pytest.raises(NotFittedError):
        est.score_samples(X)
    assert not [a for a in vars(est) if a.endswith("_")]  # nothing learned before fit
    assert est.fit(X, y) is est
    after = est.get_params()
    assert after.keys() == params.keys() and all(after[k] is params[k] for k in params)  # stored unmodified
    learned = [a for a in vars(est) if a not in params]
    assert learned and all(a.endswith("_") for a in learned)
    c = clone(est)
    assert c.get_params().keys() == params.keys() and not hasattr(c, "offset_")
    # habit 3: the decision is the score minus a learned offset
    np.testing.assert_array_equal(est.decision_function(X), est.score_samples(X) - est.offset_)
    np.testing.assert_array_equal(est.predict_proba(X)[:, 1], est.score_samples(X))
    np.testing.assert_array_equal(est.predict(X), (est.decision_function(X) > 0).astype(int))


def test_random_state_makes_fits_reproducible(data):
    (X, y), (Xt, _) = data
    a = RiskModel(**FAST).fit(X, y).score_samples(Xt)
    b = RiskModel(**FAST).fit(X, y).score_samples(Xt)
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("params, name", [({"contamination": 0.7}, "contamination"), ({"calibration": "x"}, "calibration"),
                                          ({"min_labels": 1}, "min_labels"), ({"calibration_fraction": 0.9}, "calibration_fraction"),
                                          ({"prior_weights": [1]}, "prior_weights")])
def test_bad_parameters_are_named(params, name, data):
    (X, _), _ = data
    with pytest.raises(ModelError, match=f"'{name}' parameter of RiskModel"):
        RiskModel(**params).fit(X)


# -- explanations -----------------------------------------------------------------------


@pytest.mark.parametrize("model", ["unlabeled", "supervised"])
def test_explain_names_registered_signals_with_their_values(model, request):
    m = request.getfixturevalue(model)
    X = pd.concat([obvious_attack(), familiar()], ignore_index=True)
    reasons = m.explain(X, top=3)
    assert len(reasons) == 2
    top = reasons[0]
    assert 1 <= len(top) <= 3
    for code, value, contribution in top:
        assert code in SIGNALS
        assert value == X.loc[0, SIGNALS[code].column]
        assert contribution > 0
    assert [c for _, _, c in top] == sorted((c for _, _, c in top), reverse=True)
    assert len(m.explain(X, top=1)[0]) == 1


@pytest.mark.parametrize("model", ["unlabeled", "supervised"])
def test_score_and_explain_in_one_pass_matches_the_two_calls(model, request, data):
    m = request.getfixturevalue(model)
    _, (Xt, _) = data
    scores, reasons = m.score_and_explain(Xt, top=2)
    np.testing.assert_allclose(scores, m.score_samples(Xt), rtol=0, atol=1e-12)
    assert reasons == m.explain(Xt, top=2)
    with pytest.raises(ModelError, match="top must be a positive integer"):
        m.explain(Xt, top=0)


def test_unlabeled_contributions_are_exact(unlabeled, data):
    _, (Xt, _) = data
    np.testing.assert_allclose(unlabeled.contributions(Xt).sum(axis=1), unlabeled.statistical_score(Xt))
    X = familiar()
    X["new_country"] = 1.0
    (code, value, c), *_ = unlabeled.explain(X, top=1)[0]
    assert (code, value) == ("new_country", 1.0)
    assert c == pytest.approx(-np.log((1 + unlabeled.surprise_.at_least[FEATURE_COLUMNS.index("new_country")][-1])
                                      / (unlabeled.surprise_.n[FEATURE_COLUMNS.index("new_country")] + 2)))


@pytest.mark.parametrize("stack", [False, True])
def test_supervised_contributions_add_up_to_the_log_odds(stack, data):
    (X, y), (Xt, _) = data
    m = RiskModel(stack_statistical=stack, **FAST).fit(X, y)
    Xt = Xt.copy()
    Xt.loc[::7, "travel_speed_kmh"] = np.nan  # NULL in training too: the trees' missing-value branches
    Xt.loc[::5, "new_device"] = np.nan  # never NULL in training: read as the riskiest training value
    C = m.contributions(Xt)
    Z = Xt[FEATURE_COLUMNS].to_numpy(dtype=float, copy=True)
    assert m.null_fill_[FEATURE_COLUMNS.index("new_device")] == 1.0
    assert np.isnan(m.null_fill_[FEATURE_COLUMNS.index("travel_speed_kmh")])
    Z[np.isnan(Z[:, FEATURE_COLUMNS.index("new_device")]), FEATURE_COLUMNS.index("new_device")] = 1.0
    if stack:
        Z = np.column_stack([Z, m.statistical_score(Xt)])
    np.testing.assert_allclose(C.sum(axis=1) + m.paths_.bias, m.classifier_.decision_function(Z), atol=1e-9)


def test_a_null_the_trees_never_saw_is_read_as_the_riskiest_value_not_as_familiar(supervised):
    """Fail secure: new_asn is never NULL in training (the trees would send a NULL down their majority,
    familiar branch); an event whose network cannot be told scores as a new network, not as a known one, in
    a batch and alone, and its reason still shows the value as unknown."""
    assert supervised.null_fill_[FEATURE_COLUMNS.index("new_asn")] == 1.0
    home, new, unknown = obvious_attack(), obvious_attack(), obvious_attack()
    home["new_asn"], new["new_asn"], unknown["new_asn"] = 0.0, 1.0, np.nan
    s_home, s_new = supervised.score_samples(home)[0], supervised.score_samples(new)[0]
    assert s_new > s_home
    batch = pd.concat([unknown] * 300 + [home], ignore_index=True)  # above FLAT_ROWS: the batch path too
    assert supervised.score_samples(unknown)[0] == pytest.approx(s_new, abs=1e-12)
    assert supervised.score_samples(batch)[0] == pytest.approx(s_new, abs=1e-9)
    assert supervised.score_samples(batch)[-1] == pytest.approx(s_home, abs=1e-9)
    reasons = dict((c, v) for c, v, _ in supervised.explain(unknown, top=len(FEATURE_COLUMNS))[0])
    assert "new_asn" in reasons and reasons["new_asn"] is None
    assert unknown["new_asn"].isna().all()  # the caller's frame is not changed
    # a model saved before null_fill_ existed scores as it did: the trees' own NULL branch
    old = copy.copy(supervised)
    del old.null_fill_
    assert old.score_samples(unknown)[0] != pytest.approx(s_new, abs=1e-6)


def test_supervised_explanation_names_the_learned_signal():
    X, y = _subtle(0)
    m = RiskModel(**FAST).fit(X, y)
    x = familiar()
    x["new_device"] = 1.0
    x["unusual_hour"] = 1.5
    codes = [c for c, _, _ in m.explain(x, top=2)[0]]
    assert set(codes) == {"new_device", "unusual_hour"}


# -- the Freeman baseline -------------------------------------------------------------


def test_freeman_baseline_is_the_sum_of_log_likelihood_ratios(data):
    (X, _), (Xt, yt) = data
    f = FreemanBaseline().fit(X)
    total = Xt[list(FREEMAN_COLUMNS)].sum(axis=1).to_numpy()
    np.testing.assert_allclose(f.log_likelihood_ratio(Xt), total)
    np.testing.assert_allclose(f.score_samples(Xt), expit(total - f.c_))
    assert roc_auc_score(yt, f.score_samples(Xt)) > 0.95
    # a NULL level contributes the training median of that level
    x = Xt.iloc[:1].copy()
    x["freeman_ip"] = np.nan
    expected = total[0] - Xt["freeman_ip"].iloc[0] + np.median(X["freeman_ip"])
    assert f.log_likelihood_ratio(x)[0] == pytest.approx(expected)
    with pytest.raises(ModelError, match="freeman_ua"):
        FreemanBaseline().fit(X.drop(columns=["freeman_ua"]))


# -- the registry ------------------------------------------------------------------------


def test_registry_round_trip_versions_and_activation(tmp_path, unlabeled, supervised, data):
    _, (Xt, _) = data
    db = tmp_path / "rg.duckdb"
    con = store.connect(db)
    with pytest.raises(NoModelError, match="riskgate train"):
        load_active(con)
    meta = ModelMetadata(metrics={"roc_auc": 0.97}, extra={"note": "test"})
    assert save_model(con, unlabeled, meta) == 1
    assert save_model(con, supervised, ModelMetadata(metrics={"brier": 0.01})) == 2
    con.close()

    con = store.connect(db)  # a fresh process would see the same
    model, version = load_active(con)
    assert version == 2
    np.testing.assert_array_equal(model.score_samples(Xt), supervised.score_samples(Xt))
    assert model.explain(Xt.iloc[:5]) == supervised.explain(Xt.iloc[:5])
    recs = list_models(con)
    assert [(r.version, r.kind, r.active) for r in recs] == [
        (1, "RiskModel/unlabeled", False), (2, "RiskModel/supervised", True)]
    assert recs[0].metrics == {"roc_auc": 0.97} and recs[0].metadata == {"note": "test"}
    assert recs[0].features == FEATURE_COLUMNS
    activate(con, 1)
    model, version = load_active(con)
    assert version == 1
    np.testing.assert_array_equal(model.score_samples(Xt), unlabeled.score_samples(Xt))
    with pytest.raises(ModelError, match="version 9"):
        activate(con, 9)
    with pytest.raises(ModelError, match="only a fitted estimator"):
        save_model(con, RiskModel())
    con.close()


def test_registry_refuses_a_damaged_model(tmp_path, unlabeled):
    con = store.connect(tmp_path / "rg.duckdb")
    v = save_model(con, unlabeled)
    con.execute("UPDATE models SET model = ?::BLOB WHERE version = ?", [b"not a pickle", v])
    with pytest.raises(ModelError, match="SHA-256"):
        load_model(con, v)
    con.close()


def test_trees_that_are_a_single_leaf_credit_nothing():
    """Labels unrelated to any input: every tree is one leaf, and its path attribution credits nothing."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    from risk.model.estimators import _TreePaths

    X = familiar(400).to_numpy()
    y = np.r_[np.zeros(300), np.ones(100)]
    paths = _TreePaths(HistGradientBoostingClassifier(max_iter=5).fit(X, y))
    assert paths.leaf[paths.roots].all()
    assert (paths.contributions(X) == 0).all()


def test_trees_without_a_split_fall_back_to_the_statistical_score():
    """Every tree one leaf would give every event one score (the base rate): the model is the unlabeled one
    instead, and says why."""
    X = familiar(400)
    y = np.r_[np.zeros(300), np.ones(100)]
    m = RiskModel(max_iter=5).fit(X, y)
    assert m.mode_ == "unlabeled" and m.classifier_ is None and m.paths_ is None
    assert "found no split in the 400 labelled events (100 attacks, 300 legitimate)" in m.fallback_
    assert "statistical (unlabeled) score is used instead" in m.fallback_
    unlabeled = RiskModel().fit(X)
    np.testing.assert_array_equal(m.score_samples(X), unlabeled.score_samples(X))
    assert RiskModel(max_iter=5).fit(X, np.r_[np.zeros(200), np.ones(200)]).n_labels_ == {"attack": 200,
                                                                                           "legitimate": 200}


def test_only_feature_columns_are_inputs(data):
    """A label or key column in X is never a model input; other columns can be named explicitly."""
    (X, y), (Xt, _) = data
    leaky = X.assign(is_account_takeover=y, event_id=[str(i) for i in range(len(X))])
    m = RiskModel(**FAST).fit(leaky, y)
    assert list(m.feature_names_in_) == FEATURE_COLUMNS
    np.testing.assert_array_equal(m.score_samples(Xt.assign(is_account_takeover=0.0)), m.score_samples(Xt))
    two = RiskModel().fit(X, feature_names=["new_ip", "new_device"])
    assert two.n_features_in_ == 2 and two.codes_ == ["new_ip", "new_device"]
    with pytest.raises(ModelError, match="lacks the feature column.*freeman_ua"):
        RiskModel().fit(X.drop(columns=["freeman_ua"]))


def test_sample_weight_reaches_the_trees_and_is_checked(data):
    (X, y), (Xt, _) = data
    w = np.where(y == 1, 5.0, 1.0)
    a = RiskModel(**FAST).fit(X, y).score_samples(Xt)
    b = RiskModel(**FAST).fit(X, y, sample_weight=w).score_samples(Xt)
    assert not np.allclose(a, b)
    with pytest.raises(ModelError, match="sample_weight"):
        RiskModel(**FAST).fit(X, y, sample_weight=w[:-1])
    with pytest.raises(ModelError, match="sample_weight"):
        RiskModel(**FAST).fit(X, y, sample_weight=-w)


def test_tree_paths_predict_exactly_what_scikit_learn_predicts(supervised, data):
    from risk.model.estimators import _matrix

    _, (X2, _) = data
    M, _ = _matrix(X2, list(supervised.feature_names_in_))
    rng = np.random.default_rng(3)
    M = M.copy()
    M[rng.random(M.shape) < 0.15] = np.nan  # missing values take each node's learned side
    Z = np.column_stack([M, supervised._total(M)]) if supervised.stack_statistical else M
    paths = supervised.paths_
    assert paths is not None and len(paths.roots) == supervised.classifier_.n_iter_
    expected = supervised.classifier_.decision_function(Z)
    got = paths.decision_function(Z, supervised.classifier_._baseline_prediction)
    assert np.array_equal(got, expected)  # bit for bit, not approximately
    # and the scores of a few rows (the service's path) equal those of the same rows in a large call
    big = supervised.score_samples(X2)
    assert np.array_equal(supervised.score_samples(X2.iloc[:5]), big[:5])


def test_surprise_terms_of_a_few_rows_equal_those_of_a_large_call(unlabeled, data):
    from risk.model.estimators import SMALL_ROWS, _matrix

    _, (X2, _) = data
    M, _ = _matrix(X2, list(unlabeled.feature_names_in_))
    M = M.copy()
    M[np.random.default_rng(5).random(M.shape) < 0.1] = np.nan
    assert len(M) > SMALL_ROWS
    whole = unlabeled.surprise_.matrix(M)
    few = np.vstack([unlabeled.surprise_.matrix(M[i:i + 7]) for i in range(0, 140, 7)])
    assert np.array_equal(few, whole[:140])  # bit for bit
    assert np.array_equal(unlabeled.statistical_score(X2.iloc[:3]), unlabeled.statistical_score(X2)[:3])


def test_sigmoid_calibration_of_a_few_rows_equals_predict_proba(data):
    (X, y), (X2, _) = data
    model = RiskModel(**{**FAST, "calibration": "sigmoid"}).fit(X, y)
    from sklearn.linear_model import LogisticRegression

    assert isinstance(model.calibrator_, LogisticRegression)
    raw = np.linspace(-30, 30, 241)
    expected = model.calibrator_.predict_proba(raw.reshape(-1, 1))[:, 1]
    assert np.array_equal(model._calibrate(raw), expected)
    assert np.array_equal(model.score_samples(X2.iloc[:4]), model.score_samples(X2)[:4])


def test_a_large_batch_is_predicted_in_blocks_with_the_result_of_one_call(supervised, data, monkeypatch):
    """Rows are predicted PREDICT_BLOCK at a time (the trees' memory traffic); every row keeps its own value."""
    from risk.model import estimators

    _, (X2, _) = data
    M, _ = estimators._matrix(X2, list(supervised.feature_names_in_))
    M = M.copy()
    M[np.random.default_rng(9).random(M.shape) < 0.15] = np.nan
    expected = supervised.classifier_.decision_function(supervised._tree_input(M))  # one call over every row
    calls = []
    real = supervised.classifier_.decision_function
    monkeypatch.setattr(supervised.classifier_, "decision_function", lambda Z: calls.append(len(Z)) or real(Z))
    monkeypatch.setattr(estimators, "SMALL_BATCH", 100)
    monkeypatch.setattr(estimators, "PREDICT_BLOCK", 300)
    got = supervised._log_odds(M)
    assert calls == [300] * (len(M) // 300) + ([len(M) % 300] if len(M) % 300 else [])
    assert np.array_equal(got, expected)  # bit for bit, and in order


def test_an_arrow_table_gives_the_matrix_a_data_frame_gives(data):
    """The matrix is filled from Arrow column by column and handed on column-major (no transposing copy): the same
    values as a data frame gives, NULL as NaN."""
    from risk.model.estimators import _matrix

    _, (X2, _) = data
    cols = list(FEATURE_COLUMNS)
    X = X2.iloc[:500].copy()
    X.loc[X.index[::7], "travel_speed_kmh"] = np.nan
    table = pa.Table.from_pandas(X, preserve_index=False)
    # an integer column with NULLs and a boolean column go through the cast
    table = table.set_column(table.schema.get_field_index("new_ip"), "new_ip",
                             pa.array([None if i % 5 == 0 else int(v) for i, v in enumerate(X["new_ip"])], pa.int64()))
    table = table.set_column(table.schema.get_field_index("new_device"), "new_device",
                             pa.array([bool(v) for v in X["new_device"]], pa.bool_()))
    M, names = _matrix(table, cols)
    expected = X[cols].to_numpy(dtype=float, copy=True)
    expected[::5, cols.index("new_ip")] = np.nan
    assert names == cols and M.flags["F_CONTIGUOUS"] and M.shape == (500, len(cols))
    np.testing.assert_array_equal(M, expected)


@pytest.mark.parametrize("model", ["unlabeled", "supervised"])
def test_a_column_major_matrix_scores_and_explains_bit_for_bit_as_a_row_major_one(model, request, data):
    """An Arrow table's matrix is column-major, a data frame's row-major: the scores and the contributions are the
    same to the last bit (more rows than one prediction block, so the blocks of a column-major matrix are read)."""
    from risk.model import estimators

    m = request.getfixturevalue(model)
    _, (X2, _) = data
    X = pd.concat([X2] * (estimators.PREDICT_BLOCK // len(X2) + 1), ignore_index=True)
    X.loc[X.index[::11], "travel_speed_kmh"] = np.nan
    M_rows, _ = estimators._matrix(X, list(FEATURE_COLUMNS))
    M_cols, _ = estimators._matrix(pa.Table.from_pandas(X, preserve_index=False), list(FEATURE_COLUMNS))
    assert M_rows.flags["C_CONTIGUOUS"] and M_cols.flags["F_CONTIGUOUS"] and len(X) > estimators.PREDICT_BLOCK
    np.testing.assert_array_equal(m._score_matrix(M_cols), m._score_matrix(M_rows))
    np.testing.assert_array_equal(m._contributions(M_cols[:3000]), m._contributions(M_rows[:3000]))
    # what adds terms across a row (the surprise terms are row-major whatever the input's layout)
    table, frame = pa.Table.from_pandas(X.iloc[:3000], preserve_index=False), X.iloc[:3000]
    for a, b in zip(m.score_and_explain(table), m.score_and_explain(frame)):
        np.testing.assert_array_equal(np.asarray(a, dtype=object), np.asarray(b, dtype=object))


def test_a_stacked_model_explains_a_table_as_a_frame_and_one_row_as_in_a_chunk(data):
    """With the statistical score stacked as an input, the contributions add the surprise terms across each row:
    a column-major matrix (an Arrow table) gave other last bits, and one event alone other reason values than the
    same event in a chunk."""
    (X, y), (X2, _) = data
    m = RiskModel(stack_statistical=True, random_state=0).fit(X, y)
    table = pa.Table.from_pandas(X2.iloc[:500], preserve_index=False)
    np.testing.assert_array_equal(m.contributions(table), m.contributions(X2.iloc[:500]))
    chunk = m.explain(table)
    assert [m.explain(table.slice(i, 1))[0] for i in range(0, 500, 7)] == chunk[::7]


def test_too_few_labels_of_a_kind_say_why_the_model_is_unlabeled():
    """5 attacks and 5 legitimate labels registered a RiskModel/unlabeled without a word: it says why now."""
    X = familiar(400)
    y = np.full(400, np.nan)
    y[:5], y[5:10] = 1, 0
    m = RiskModel().fit(X, y)
    assert m.mode_ == "unlabeled"
    assert m.fallback_ == ("the labelled events (5 attacks, 5 legitimate) are fewer than the 20 of each kind the "
                           "tree model needs: the statistical (unlabeled) score is used instead; label more events "
                           "(or add attacks with --inject-attacks)")
    assert RiskModel().fit(X).fallback_ is None  # no labels at all: nothing to explain
