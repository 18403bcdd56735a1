"""The risk estimators: :class:`RiskModel` and the published baseline :class:`FreemanBaseline`.

Both follow the scikit-learn contract (STYLE.md, habit 2): ``__init__`` only
stores parameters, ``fit`` validates and returns ``self``, learned attributes
end in ``_`` and ``random_state`` is stored unmodified. They emit a score in
[0, 1] (higher = riskier); thresholds (``risk.levels``) turn it into a level
(habit 3): ``decision_function(X) == score_samples(X) - offset_``, where
``offset_`` is the score above which a share ``contamination`` of the training
events lies.

**RiskModel without labels** (``mode_ == "unlabeled"``) is a statistical
score in the spirit of Freeman et al.: each signal column gets a *surprise*
``-log P(value at least this risky)`` under the training distribution
(add-one smoothed tail probability; a NULL value gets ``-log P(NULL)``, so a
rarely missing signal being missing is itself suspicious: fail secure), and
the surprises are added with one documented set of weights,
``prior_weights`` (signal code or column -> weight; every weight defaults to
1.0, see :data:`DEFAULT_PRIOR_WEIGHTS`). The sum ``S`` is in nats, like
Freeman's log likelihood ratio, and the score is ``expit(S - c_)`` with
``c_`` the (1 - contamination) quantile of ``S`` on the training events.
Contributions to ``S`` are exact, which makes the explanations exact.

**RiskModel with labels** (``mode_ == "supervised"``, when ``y`` has at
least ``min_labels`` attacks and ``min_labels`` legitimate events) trains a
gradient-boosted tree model (``HistGradientBoostingClassifier``, which takes
NULLs natively) on the signals (plus the statistical surprise ``S`` with
``stack_statistical``), calibrated on a held-out stratified split
(``calibration_fraction``) by Platt scaling (default: monotone, so it keeps the
tree model's ranking and adds no ties at the top) or isotonic regression; one
tree model keeps scoring fast. When the trees find no split at all (too few
or uninformative labels), a constant score would follow: the model falls back
to the statistical score and says why in ``fallback_``. A signal NULL in every
training event (``absent_features_``: e.g. the device without a User-Agent)
takes no part in the score or its reasons in either mode. Labels may be partial: ``NaN`` in ``y`` means
"unknown" (used for the statistical part only). The trees learn where a
NULL goes in a column whose training rows hold NULLs; in a column whose
training rows never do, a NULL is read as the riskiest value the column held
in training (``null_fill_``), not sent down the trees' majority branch, which
is the familiar side: fail secure there too.

Explanations are additive and exact in both modes: see
:meth:`RiskModel.contributions`. X is a pandas DataFrame or an Arrow table
with the feature columns (``risk.signals.FEATURE_COLUMNS``, or the columns the
model was fitted with); extra columns (keys) are ignored.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from scipy.special import expit
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.utils.validation import check_is_fitted
from threadpoolctl import ThreadpoolController, threadpool_limits

from risk import signals
from risk.model.errors import ModelError

#: Freeman et al.'s hierarchy levels (IP and agent hierarchies, top level first): each
#: column is the smoothed log likelihood ratio contribution of that level (risk.features).
FREEMAN_COLUMNS = signals.FREEMAN_COLUMNS

#: The unlabeled model's documented prior: weight of each signal's surprise
#: (by signal code or column name). Signals not listed weigh 1.0: without
#: labels there is no evidence to rank one signal's surprise above another's,
#: and surprises are already on one scale (nats).
DEFAULT_PRIOR_WEIGHTS: Mapping[str, float] = {}

#: Most values kept per signal to estimate tail probabilities (a random sample
#: above this; the resolution of a tail probability is 1 / this).
MAX_REFERENCE_VALUES = 50_000

#: The trees' leaves hold at least ``min_samples_leaf`` events, and at most one per this many labelled events
#: (but never fewer than :data:`MIN_LEAF_FLOOR`): a leaf of 100 needs 200 events to split, so with a few dozen
#: labels the trees would all be one leaf. From 2,000 labelled events on, ``min_samples_leaf`` itself.
LABELS_PER_LEAF = 20
MIN_LEAF_FLOOR = 5

#: Below this many rows the tree model fits and predicts on one thread.
SMALL_BATCH = 20_000

#: up to this many rows, a fitted tree model predicts through :meth:`_TreePaths.decision_function`
FLAT_ROWS = 256
#: Rows per call of the tree model's prediction on a large batch. scikit-learn walks each tree over all the
#: rows it is given, so on a whole chunk (500,000 rows of 28 floats, 112 MB) every one of the trees reads the
#: matrix from memory again; blocks of this many rows stay in the cache across the trees. Each row's value
#: does not depend on the others: the same result (500,000 rows: 1.70 s in one call, 1.00 s in blocks).
PREDICT_BLOCK = 65_536
#: up to this many rows, the surprise terms are looked up in Python (:meth:`_Surprise._matrix_few`)
SMALL_ROWS = 32
_controller: ThreadpoolController | None = None


def openmp_limited():
    """One OpenMP thread (scikit-learn's tree model) in a ``with`` block: for a small call, or while the other
    core is busy. The controller (which lists the loaded libraries, milliseconds of work) is made once:
    ``threadpool_limits`` would list them again on every call."""
    global _controller
    if _controller is None:
        _controller = ThreadpoolController()
    return _controller.limit(limits=1, user_api="openmp")


# -- input --------------------------------------------------------------------


def _signal_info(columns: Sequence[str]) -> tuple[list[str], np.ndarray]:
    """(signal code per column, +1/-1 direction per column) from risk.signals' registry.

    A column no signal names keeps its own name as code and counts as higher-is-riskier.
    """
    by_column = {s.column: s for s in signals.SIGNALS.values()}
    codes, directions = [], []
    for c in columns:
        s = by_column.get(c)
        codes.append(s.code if s is not None else c)
        directions.append(1.0 if s is None or s.higher_is_riskier else -1.0)
    return codes, np.asarray(directions, dtype=float)


def to_frame(X) -> pd.DataFrame:
    """A pandas DataFrame from a DataFrame or an Arrow table (anything else: a clear error)."""
    if isinstance(X, pd.DataFrame):
        return X
    if isinstance(X, (pa.Table, pa.RecordBatch)):
        return X.to_pandas()
    raise ModelError("X must be a pandas DataFrame, a pyarrow Table or a list of dicts with the feature columns; "
                     f"got {type(X).__name__}" + (" of " + type(X[0]).__name__ if isinstance(X, list) and X else ""))


def _matrix(X, columns: Sequence[str] | None) -> tuple[np.ndarray, list[str]]:
    """float64 matrix of ``columns`` (default: ``risk.signals.FEATURE_COLUMNS``), NULL -> NaN.

    X: an Arrow table, a pandas DataFrame, or a list of dicts (rows) holding the columns.
    Only the named columns are read: keys, labels or anything else in X never reach the model.
    """
    if columns is None:
        columns = list(signals.FEATURE_COLUMNS)
    if isinstance(X, (pa.Table, pa.RecordBatch)):  # straight from Arrow: no DataFrame on the way
        names = set(X.schema.names)
        missing = [c for c in columns if c not in names]
        if missing:
            raise ModelError(f"X lacks the feature column(s) {', '.join(missing)}")
        # filled column by column into a (columns, rows) array and handed on as its transpose, a column-major
        # (Fortran-order) matrix: no copy. Writing each column into a row-major matrix strides through all of it
        # (0.51 s for 500,000 rows of 28 columns), and transposing into rows took 0.12-0.19 s of a chunk's
        # assessment. The trees predict as fast from either layout and bit for bit the same (each value is read,
        # never summed across the row); the surprise terms, which are, come out row-major (_Surprise.matrix).
        by_column = np.empty((len(columns), X.num_rows), dtype=float)
        for j, c in enumerate(columns):
            col = X.column(c)
            if not (pa.types.is_floating(col.type) or pa.types.is_integer(col.type) or pa.types.is_null(col.type)
                    or pa.types.is_boolean(col.type)):
                raise ModelError(f"feature column {c!r} must be numeric (float, NULL allowed): it is {col.type}")
            if pa.types.is_float64(col.type):  # the usual case: nulls come out as NaN
                by_column[j] = col.to_numpy()
            else:
                by_column[j] = pc.fill_null(col.cast(pa.float64()), np.nan).to_numpy()
        out = by_column.T
    elif isinstance(X, list) and all(isinstance(row, Mapping) for row in X):  # rows (the service): no table
        for i, row in enumerate(X):
            missing = [c for c in columns if c not in row]
            if missing:
                raise ModelError(f"X lacks the feature column(s) {', '.join(missing)} (row {i})")
        out = np.empty((len(X), len(columns)), dtype=float)
        for i, row in enumerate(X):
            values = [row[c] for c in columns]
            for c, v in zip(columns, values):
                if v is not None and not isinstance(v, (int, float, np.number, np.bool_)):  # bool is an int
                    raise ModelError(f"feature column {c!r} must be numeric (float, NULL allowed): row {i} holds {v!r}")
            out[i] = np.array(values, dtype=float)  # None -> NaN
    else:
        df = to_frame(X)
        missing = [c for c in columns if c not in df.columns]
        if missing:
            raise ModelError(f"X lacks the feature column(s) {', '.join(missing)}")
        out = np.empty((len(df), len(columns)), dtype=float)
        for j, c in enumerate(columns):
            try:
                out[:, j] = pd.to_numeric(df[c], errors="raise").to_numpy(dtype=float, na_value=np.nan)
            except (TypeError, ValueError) as exc:
                raise ModelError(f"feature column {c!r} must be numeric (float, NULL allowed): {exc}") from None
    if np.isinf(out).any():
        j = int(np.where(np.isinf(out).any(axis=0))[0][0])
        raise ModelError(f"feature column {columns[j]!r} holds an infinite value; use NULL for 'cannot be computed'")
    return out, list(columns)


def _riskiest_where_never_null(M: np.ndarray, directions: np.ndarray) -> np.ndarray:
    """Per column: NaN where the training rows hold a NULL (the trees learn where a NULL goes), else the riskiest
    value they hold (the largest, or the smallest for a signal where lower is riskier).

    A tree model that never saw a NULL in a column sends one down the branch that had more training rows,
    which is usually the familiar, safe side: an address without a location would then look like home. The
    features promise that NULL means unknown, never safe (``risk.features``), so such a NULL is read as the
    riskiest value the column had in training instead.
    """
    fill = np.full(M.shape[1], np.nan)
    for j in range(M.shape[1]):
        col = M[:, j]
        if len(col) and not np.isnan(col).any():
            fill[j] = col.max() if directions[j] > 0 else col.min()
    return fill


def _labels(y, n: int) -> np.ndarray:
    """y -> float array of 0/1 with NaN for unknown (booleans, 0/1, 'true'/'false' accepted)."""
    arr = np.asarray(y)
    if arr.dtype.kind in "biuf":  # numeric: no per-element work
        arr = arr.astype(float)
        if len(arr) != n:
            raise ModelError(f"y has {len(arr)} labels for {n} rows of X")
        bad = ~np.isnan(arr) & (arr != 0) & (arr != 1)
        if bad.any():
            raise ModelError(f"y must hold 0/1 labels; got {arr[bad][0]!r} at row {int(np.where(bad)[0][0])}")
        return arr
    arr = np.asarray(pd.Series(y).map(
        lambda v: np.nan if v is None or (isinstance(v, float) and math.isnan(v))
        else {"true": 1.0, "false": 0.0}.get(str(v).lower(), v)).to_numpy(dtype=object))
    if len(arr) != n:
        raise ModelError(f"y has {len(arr)} labels for {n} rows of X")
    try:
        out = arr.astype(float)
    except (TypeError, ValueError):
        raise ModelError("y must hold 0/1 (or true/false) labels, NaN/None for unknown") from None
    bad = ~np.isnan(out) & (out != 0) & (out != 1)
    if bad.any():
        raise ModelError(f"y must hold 0/1 labels; got {arr[bad][0]!r} at row {int(np.where(bad)[0][0])}")
    return out


# -- the statistical part ----------------------------------------------------


class _Surprise:
    """Per-column add-one smoothed tail probabilities, learned from one matrix (plain object, pickled with the model)."""

    def __init__(self, M: np.ndarray, directions: np.ndarray, rng: np.random.Generator):
        self.values: list[np.ndarray] = []  # sorted unique reference values, in "riskier = larger" orientation
        self.at_least: list[np.ndarray] = []  # how many reference values are >= each unique value
        self.n: list[int] = []
        self.null_surprise = np.zeros(M.shape[1])
        for j in range(M.shape[1]):
            col = M[:, j] * directions[j]
            ok = ~np.isnan(col)
            v = col[ok]
            if len(v) > MAX_REFERENCE_VALUES:
                v = rng.choice(v, MAX_REFERENCE_VALUES, replace=False)
            u, counts = np.unique(v, return_counts=True)
            self.values.append(u)
            self.at_least.append(np.cumsum(counts[::-1])[::-1])
            self.n.append(len(v))
            p_null = ((~ok).sum() + 1) / (len(col) + 2)
            self.null_surprise[j] = -math.log(p_null)
        #: columns NULL in every training row (a signal the source cannot give, e.g. the device where events
        #: carry no User-Agent): they tell nothing, so their surprise is 0 and no reason ever names them
        self.absent = np.asarray([n == 0 for n in self.n], dtype=bool)
        self.null_surprise[self.absent] = 0.0
        self.directions = directions

    def matrix(self, M: np.ndarray) -> np.ndarray:
        if len(M) <= SMALL_ROWS:
            return np.ascontiguousarray(self._matrix_few(M))
        # row-major whatever M's layout (an Arrow table's matrix is column-major): callers add the terms across a
        # row (``sum(axis=1)``), and numpy adds a column-major row in another order, so the last bits would differ
        out = np.empty(M.shape)
        for j in range(M.shape[1]):
            col = M[:, j] * self.directions[j]
            u, ge, n = self.values[j], self.at_least[j], self.n[j]
            idx = np.searchsorted(u, np.nan_to_num(col, nan=-np.inf), side="left")
            count = np.where(idx < len(u), ge[np.minimum(idx, len(u) - 1)] if len(u) else 0, 0)
            s = -np.log((count + 1.0) / (n + 2.0))
            out[:, j] = np.where(np.isnan(col), self.null_surprise[j], s)
        return self._without_absent(out)

    def _without_absent(self, out: np.ndarray) -> np.ndarray:
        absent = self.__dict__.get("absent")  # None: a model saved before it existed keeps its terms
        if absent is not None and absent.any():
            out[:, absent] = 0.0
        return out


    def _matrix_few(self, M: np.ndarray) -> np.ndarray:
        """:meth:`matrix` for a few rows: the lookups in Python (numpy's per-call cost dominates there), the
        arithmetic in numpy over the whole matrix -- the same operations on the same values, so the same result."""
        import bisect

        lists = self.__dict__.get("_lists")
        if lists is None:
            lists = self.__dict__["_lists"] = [u.tolist() for u in self.values]
        n_rows, n_cols = M.shape
        counts = np.zeros((n_rows, n_cols))
        scaled = M * self.directions  # the same product as M[:, j] * directions[j], column by column
        for j in range(n_cols):
            u, ge = lists[j], self.at_least[j]
            for i in range(n_rows):
                x = scaled[i, j]
                if x == x:  # not NaN (NaN rows take the null surprise below)
                    k = bisect.bisect_left(u, x)
                    if k < len(u):
                        counts[i, j] = ge[k]
        s = -np.log((counts + 1.0) / (np.asarray(self.n, dtype=float) + 2.0))
        return self._without_absent(np.where(np.isnan(scaled), self.null_surprise, s))

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state.pop("_lists", None)  # a cache, not part of the model
        return state


# -- additive explanations of the tree model ----------------------------------------


class _TreePaths:
    """The tree model's trees as flat arrays, with each node's expected output (plain object, pickled with the model).

    A node's expected output is the count-weighted mean of the leaf values
    below it; walking an event down a tree, each split's feature is credited
    with the change of expected output it causes (Saabas' path attribution).
    Summed over trees, the credits plus ``bias`` equal the tree model's log
    odds exactly.
    """

    def __init__(self, hgb: HistGradientBoostingClassifier):
        trees = [it[0].nodes for it in hgb._predictors]
        sizes = np.array([len(t) for t in trees])
        self.roots = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.intp)
        nodes = np.concatenate(trees)
        off = np.repeat(self.roots, sizes)
        self.leaf = nodes["is_leaf"].astype(bool)
        self.feature = nodes["feature_idx"].astype(np.intp)
        self.threshold = nodes["num_threshold"].astype(float)
        self.missing_left = nodes["missing_go_to_left"].astype(bool)
        self.left = np.where(self.leaf, 0, nodes["left"].astype(np.intp) + off).astype(np.intp)
        self.right = np.where(self.leaf, 0, nodes["right"].astype(np.intp) + off).astype(np.intp)
        value = nodes["value"].astype(float)
        count = nodes["count"].astype(float)
        expected = np.where(self.leaf, value, 0.0)
        for i in range(len(nodes) - 1, -1, -1):  # children come after their parent
            if not self.leaf[i]:
                l, r = self.left[i], self.right[i]
                w = count[l] + count[r]
                expected[i] = (count[l] * expected[l] + count[r] * expected[r]) / w if w else 0.5 * (expected[l] + expected[r])
        self.expected = expected
        self.gain_left = np.where(self.leaf, 0.0, expected[self.left] - expected)
        self.gain_right = np.where(self.leaf, 0.0, expected[self.right] - expected)
        self.bias = float(np.ravel(hgb._baseline_prediction)[0] + expected[self.roots].sum())

    def decision_function(self, X: np.ndarray, baseline) -> np.ndarray:
        """The tree model's raw prediction (``decision_function``) for a few rows, bit for bit scikit-learn's.

        scikit-learn predicts tree by tree (one call per tree: 150 calls for
        one sign-in). Here every tree of every row walks down at once, one
        numpy step per level, with scikit-learn's own rule (a missing value
        follows ``missing_go_to_left``, otherwise ``x <= threshold`` goes
        left), and the leaf values (a leaf's ``expected`` is its value) are
        added to ``baseline`` (the classifier's ``_baseline_prediction``) tree
        by tree in scikit-learn's order: the same floating-point result
        (``tests/test_model.py`` checks it).
        """
        X = np.asarray(X, dtype=np.float64)
        n, t = len(X), len(self.roots)
        idx = np.broadcast_to(self.roots, (n, t)).copy()
        rows = np.arange(n)[:, None]
        while True:
            leaf = self.leaf[idx]
            if leaf.all():
                break
            x = X[rows, self.feature[idx]]
            go_left = np.where(np.isnan(x), self.missing_left[idx], x <= self.threshold[idx])
            idx = np.where(leaf, idx, np.where(go_left, self.left[idx], self.right[idx]))
        values = self.expected[idx]
        out = np.zeros(n, dtype=np.float64)
        out += np.asarray(baseline, dtype=np.float64).ravel()[0]
        for j in range(t):  # tree by tree, as scikit-learn adds them
            out += values[:, j]
        return out

    def contributions(self, M: np.ndarray, chunk: int = 8192) -> np.ndarray:
        n, k = M.shape
        out = np.zeros((n, k))
        roots = self.roots[~self.leaf[self.roots]]  # a tree that is one leaf credits nothing
        for a in range(0, n, chunk):
            X = M[a:a + chunk]
            m = len(X)
            node = np.tile(roots, m)  # (row, tree) pairs still inside a tree
            row = np.repeat(np.arange(m, dtype=np.intp), len(roots))
            acc = np.zeros(m * k)
            while len(node):
                f = self.feature[node]
                x = X[row, f]
                go_left = np.where(np.isnan(x), self.missing_left[node], x <= self.threshold[node])
                acc += np.bincount(row * k + f, weights=np.where(go_left, self.gain_left[node], self.gain_right[node]),
                                   minlength=m * k)
                child = np.where(go_left, self.left[node], self.right[node])
                inside = ~self.leaf[child]
                node, row = child[inside], row[inside]
            out[a:a + m] = acc.reshape(m, k)
        return out


# -- RiskModel ----------------------------------------------------------------


class _ScoreClassifier(ClassifierMixin, BaseEstimator):
    """What both estimators derive from ``score_samples`` and the learned ``offset_`` (STYLE.md, habit 3)."""

    def decision_function(self, X) -> np.ndarray:
        """score_samples(X) - offset_: positive for the riskiest ``contamination`` share of training events."""
        return self.score_samples(X) - self.offset_

    def predict_proba(self, X) -> np.ndarray:
        p = self.score_samples(X)
        return np.column_stack([1 - p, p])

    def predict(self, X) -> np.ndarray:
        return (self.decision_function(X) > 0).astype(int)


class RiskModel(_ScoreClassifier):
    """Account-takeover risk from the signal columns: statistical without labels, learned and calibrated with them.

    Parameters
    ----------
    prior_weights : mapping or None
        Weight of each signal's surprise in the statistical score, by signal
        code or column (None: :data:`DEFAULT_PRIOR_WEIGHTS`; unlisted = 1.0).
    contamination : float
        Share of training events expected to be challenged; sets ``offset_``
        (and the statistical score's midpoint ``c_``).
    min_labels : int
        Fewest attacks and fewest legitimate labelled events for the supervised model.
    calibration : {"sigmoid", "isotonic"}
        How the tree model's log odds become probabilities, fitted on a held-out split.
    calibration_fraction : float
        Share of the labelled events held out (stratified) for calibration.
    max_iter, learning_rate, max_leaf_nodes, min_samples_leaf, l2_regularization, max_features :
        Passed to HistGradientBoostingClassifier. Leaves of at least 100 events
        and half the signals per split regularise the trees, whose labelled
        attacks are dominated by a few high-volume campaigns (bench/detect.py).
        With fewer than 2,000 labelled events the leaves shrink to one per
        :data:`LABELS_PER_LEAF` labelled events (at least :data:`MIN_LEAF_FLOOR`;
        ``min_samples_leaf_``), so that a few dozen labels can still split.
    stack_statistical : bool
        Also give the tree model the statistical surprise S as an input.
    random_state : int or None
        Seed for sampling and for the tree model (stored unmodified).
    """

    def __init__(self, prior_weights: Mapping[str, float] | None = None, contamination: float = 0.01,
                 min_labels: int = 20, calibration: str = "sigmoid", calibration_fraction: float = 0.25,
                 max_iter: int = 150,
                 learning_rate: float = 0.1, max_leaf_nodes: int = 31, min_samples_leaf: int = 100,
                 l2_regularization: float = 1.0, max_features: float = 0.5, stack_statistical: bool = False,
                 random_state: int | None = 0):
        self.prior_weights = prior_weights
        self.contamination = contamination
        self.min_labels = min_labels
        self.calibration = calibration
        self.calibration_fraction = calibration_fraction
        self.max_iter = max_iter
        self.learning_rate = learning_rate
        self.max_leaf_nodes = max_leaf_nodes
        self.min_samples_leaf = min_samples_leaf
        self.l2_regularization = l2_regularization
        self.max_features = max_features
        self.stack_statistical = stack_statistical
        self.random_state = random_state

    # contract checks
    def _validate_params(self) -> None:
        if not (isinstance(self.contamination, (int, float)) and 0 < self.contamination < 0.5):
            raise ModelError(f"The 'contamination' parameter of RiskModel must be a float in (0, 0.5). Got {self.contamination!r} instead.")
        if not (isinstance(self.min_labels, int) and self.min_labels >= 2):
            raise ModelError(f"The 'min_labels' parameter of RiskModel must be an int >= 2. Got {self.min_labels!r} instead.")
        if self.calibration not in ("sigmoid", "isotonic"):
            raise ModelError(f"The 'calibration' parameter of RiskModel must be 'sigmoid' or 'isotonic'. Got {self.calibration!r} instead.")
        if not (isinstance(self.calibration_fraction, float) and 0.05 <= self.calibration_fraction <= 0.5):
            raise ModelError(f"The 'calibration_fraction' parameter of RiskModel must be a float in [0.05, 0.5]. Got {self.calibration_fraction!r} instead.")
        if self.prior_weights is not None and not isinstance(self.prior_weights, Mapping):
            raise ModelError(f"The 'prior_weights' parameter of RiskModel must be a mapping of signal code to weight or None. Got {self.prior_weights!r} instead.")

    def fit(self, X, y=None, feature_names: Sequence[str] | None = None, sample_weight=None):
        """Learn the statistical score from X, and the calibrated classifier from y when it has enough labels.

        ``feature_names``: the input columns (default ``risk.signals.FEATURE_COLUMNS``).
        ``sample_weight``: weights of the events for the tree model;
        calibration is fitted unweighted, so probabilities stay probabilities.
        """
        self._validate_params()
        M, cols = _matrix(X, feature_names)
        if len(M) < 2:
            raise ModelError(f"RiskModel needs at least 2 events to fit; got {len(M)}")
        rng = np.random.default_rng(self.random_state)
        self.feature_names_in_ = np.asarray(cols, dtype=object)
        self.n_features_in_ = len(cols)
        codes, directions = _signal_info(cols)
        self.codes_ = list(codes)
        weights = dict(DEFAULT_PRIOR_WEIGHTS if self.prior_weights is None else self.prior_weights)
        unknown = set(weights) - set(codes) - set(cols)
        if unknown:
            raise ModelError(f"prior_weights names signal(s) not among the features: {', '.join(sorted(unknown))}")
        self.weights_ = np.array([float(weights.get(c, weights.get(col, 1.0))) for c, col in zip(codes, cols)])
        self.surprise_ = _Surprise(M, directions, rng)
        S = self._total(M)
        self.c_ = float(np.quantile(S, 1 - self.contamination))
        self.classes_ = np.array([0, 1])

        labels = None if y is None else _labels(y, len(M))
        weight = None
        if sample_weight is not None:
            weight = np.asarray(sample_weight, dtype=float)
            if weight.shape != (len(M),) or not np.isfinite(weight).all() or (weight < 0).any():
                raise ModelError(f"sample_weight must hold one finite, non-negative weight per row of X ({len(M)})")
        known = np.zeros(len(M), bool) if labels is None else ~np.isnan(labels)
        n_pos = int((labels[known] == 1).sum()) if labels is not None else 0
        n_neg = int((labels[known] == 0).sum()) if labels is not None else 0
        self.n_labels_ = {"attack": n_pos, "legitimate": n_neg}
        # signals NULL in every training event (the source cannot give them): no score or reason counts them
        self.absent_features_ = [cols[j] for j in np.flatnonzero(np.isnan(M).all(axis=0))]
        self.min_samples_leaf_ = None
        self.fallback_ = None
        supervised = n_pos >= self.min_labels and n_neg >= self.min_labels
        if supervised:
            self.mode_ = "supervised"
            idx = np.where(known)[0]
            yk = labels[idx].astype(int)
            fit_rows, cal_rows = train_test_split(idx, test_size=self.calibration_fraction, stratify=yk,
                                                  random_state=self.random_state)
            self.null_fill_ = _riskiest_where_never_null(M[fit_rows], directions)
            Z = np.column_stack([M, S]) if self.stack_statistical else M
            Z_fit = Z[fit_rows]  # a copy
            # a column NULL in every row the trees learn from (no User-Agent in Cognito's exports: the device
            # and agent levels) cannot be binned; given to the trees as one constant it is never split on, so
            # it takes no part in a score or a reason, and the model keeps every feature column
            Z_fit[:, np.flatnonzero(np.isnan(M[fit_rows]).all(axis=0))] = 0.0
            # leaves of min_samples_leaf events need twice that many to split: with few labels the trees would
            # all be one leaf (one score for every event), so leaves shrink with the labelled count
            self.min_samples_leaf_ = int(min(self.min_samples_leaf,
                                             max(MIN_LEAF_FLOOR, (n_pos + n_neg) // LABELS_PER_LEAF)))
            hgb = HistGradientBoostingClassifier(
                max_iter=self.max_iter, learning_rate=self.learning_rate, max_leaf_nodes=self.max_leaf_nodes,
                min_samples_leaf=self.min_samples_leaf_, l2_regularization=self.l2_regularization,
                max_features=self.max_features, early_stopping=False, random_state=self.random_state)
            with threadpool_limits(1 if len(fit_rows) < SMALL_BATCH else None, "openmp"):
                self.classifier_ = hgb.fit(Z_fit, labels[fit_rows].astype(int),
                                           sample_weight=None if weight is None else weight[fit_rows])
            del Z_fit
            self.paths_ = _TreePaths(self.classifier_)
            if self.paths_.leaf[self.paths_.roots].all():  # not one split: every event would get one score
                supervised = False
                self.fallback_ = (
                    f"the tree model found no split in the {n_pos + n_neg:,} labelled events ({n_pos:,} attacks, "
                    f"{n_neg:,} legitimate) and would give every event the same score: the statistical "
                    "(unlabeled) score is used instead; label more events")
            else:
                raw = self.classifier_.decision_function(self._tree_input(M[cal_rows]))  # what prediction reads
                if self.calibration == "sigmoid":
                    self.calibrator_ = LogisticRegression(C=1e6).fit(raw.reshape(-1, 1),
                                                                     labels[cal_rows].astype(int))
                else:
                    self.calibrator_ = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0).fit(
                        raw, labels[cal_rows])
        elif n_pos or n_neg:  # labels, too few of one kind: said, not silently unlabeled
            self.fallback_ = (
                f"the labelled events ({n_pos:,} attack{'s' if n_pos != 1 else ''}, {n_neg:,} legitimate) are fewer "
                f"than the {self.min_labels:,} of each kind the tree model needs: the statistical (unlabeled) score "
                "is used instead; label more events (or add attacks with --inject-attacks)")
        if not supervised:
            self.mode_ = "unlabeled"
            self.classifier_ = None
            self.calibrator_ = None
            self.paths_ = None
            self.null_fill_ = None
        self.offset_ = float(np.quantile(self._score_matrix(M), 1 - self.contamination))
        return self

    # scoring
    def _total(self, M: np.ndarray) -> np.ndarray:
        # added column by column, not ``@``: BLAS adds a row's terms in an order that depends on how many rows
        # there are, and an event must get the same score alone (the service) as in a chunk of 100,000 (batch)
        terms = self.surprise_.matrix(M)
        total = terms[:, 0] * self.weights_[0]
        for j in range(1, terms.shape[1]):  # column after column: the same order for every row
            total += terms[:, j] * self.weights_[j]
        return total

    def _tree_input(self, M: np.ndarray) -> np.ndarray:
        """What the trees read: M with NULLs they never met in training made the riskiest training value
        (``null_fill_``; M itself is left alone), and the statistical score S (of M as it is) when stacked."""
        Z = M
        fill = getattr(self, "null_fill_", None)  # None: unlabeled, or a model saved before it existed
        if fill is not None and len(M):
            todo = np.flatnonzero(~np.isnan(fill) & np.isnan(M).any(axis=0))
            if len(todo):
                Z = M.copy()
                for j in todo:
                    Z[np.isnan(Z[:, j]), j] = fill[j]
        # the statistical score only when the trees take it as an input (a third of a batch's model time)
        return np.column_stack([Z, self._total(M)]) if self.stack_statistical else Z

    def _log_odds(self, M: np.ndarray) -> np.ndarray:
        """Uncalibrated log odds: S - c_ without labels, the tree model's decision function with them."""
        if self.classifier_ is None:
            return self._total(M) - self.c_
        Z = self._tree_input(M)
        if len(Z) <= FLAT_ROWS and self.paths_ is not None:  # a few rows (the service): all trees at once
            return self.paths_.decision_function(Z, self.classifier_._baseline_prediction)
        if len(Z) < SMALL_BATCH:  # OpenMP start-up dominates small calls (and thrashes on a busy machine)
            with openmp_limited():
                return self.classifier_.decision_function(Z)
        if len(Z) <= PREDICT_BLOCK:
            return self.classifier_.decision_function(Z)
        return np.concatenate([self.classifier_.decision_function(Z[i:i + PREDICT_BLOCK])
                               for i in range(0, len(Z), PREDICT_BLOCK)])

    def _calibrate(self, raw: np.ndarray) -> np.ndarray:
        if self.calibrator_ is None:
            return expit(raw)
        if isinstance(self.calibrator_, LogisticRegression):
            if len(raw) <= FLAT_ROWS and self.calibrator_.coef_.shape == (1, 1):
                # what predict_proba computes for one feature and two classes, without its input checks
                # (a third of a millisecond per call): expit(x * coef + intercept), the same operations
                return expit(raw * self.calibrator_.coef_[0, 0] + self.calibrator_.intercept_[0])
            return self.calibrator_.predict_proba(raw.reshape(-1, 1))[:, 1]
        return self.calibrator_.predict(raw)

    def _score_matrix(self, M: np.ndarray) -> np.ndarray:
        return self._calibrate(self._log_odds(M))

    def _checked(self, X) -> np.ndarray:
        check_is_fitted(self, "offset_")
        M, _ = _matrix(X, list(self.feature_names_in_))
        return M

    def statistical_score(self, X) -> np.ndarray:
        """The label-free surprise S (nats) per event."""
        return self._total(self._checked(X))

    def score_samples(self, X) -> np.ndarray:
        """Risk score in [0, 1] per event (higher = riskier; a probability once fitted with labels)."""
        return self._score_matrix(self._checked(X))


    # explanations
    def contributions(self, X) -> np.ndarray:
        """(n, features) additive contributions to each event's log odds.

        Without labels: the surprise terms; they add up to the statistical
        score S (the log odds are S - c_). With labels: each signal's share of
        the tree model's log odds by path attribution (:class:`_TreePaths`);
        they add up to the log odds minus ``paths_.bias``. With
        ``stack_statistical`` the share of the S input is split over the
        signals in proportion to their surprise terms. Both are exact and cost
        about one prediction.
        """
        return self._contributions(self._checked(X))

    def _contributions(self, M: np.ndarray) -> np.ndarray:
        if self.classifier_ is None:
            return self.surprise_.matrix(M) * self.weights_
        C = self.paths_.contributions(self._tree_input(M))
        if self.stack_statistical:
            terms = self.surprise_.matrix(M) * self.weights_
            tot = terms.sum(axis=1, keepdims=True)
            share = np.divide(terms, tot, out=np.full_like(terms, 1.0 / terms.shape[1]), where=tot > 0)
            C = C[:, :-1] + C[:, -1:] * share
        return C

    def _reasons(self, M: np.ndarray, C: np.ndarray, top: int) -> list[list[tuple[str, float | None, float]]]:
        if not (isinstance(top, int) and not isinstance(top, bool) and top >= 1):
            raise ModelError(f"top must be a positive integer; got {top!r}")
        k = min(top, C.shape[1])
        idx = np.argsort(-C, axis=1, kind="stable")[:, :k]
        w = np.take_along_axis(C, idx, axis=1)
        v = np.take_along_axis(M, idx, axis=1)
        values = np.where(np.isnan(v), None, v).tolist()
        codes = np.asarray(self.codes_, dtype=object)[idx].tolist()
        return [[(c, x, float(cw)) for c, x, cw in zip(cr, vr, wr) if cw > 0]
                for cr, vr, wr in zip(codes, values, w.tolist())]

    def explain(self, X, top: int = 3) -> list[list[tuple[str, float | None, float]]]:
        """Per event, up to ``top`` (signal code, value, contribution) raising its risk, largest first.

        Contributions are in log odds (see :meth:`contributions`); an event
        with no signal raising its risk gets an empty list.
        """
        M = self._checked(X)
        return self._reasons(M, self._contributions(M), top)

    def score_and_explain(self, X, top: int = 3) -> tuple[np.ndarray, list[list[tuple[str, float | None, float]]]]:
        """``(score_samples(X), explain(X, top))`` from one pass over the model (faster than the two calls).

        The scores are rebuilt from the additive contributions, so they may
        differ from ``score_samples`` in the last bits (well below 1e-9).
        """
        M = self._checked(X)
        C = self._contributions(M)
        raw = C.sum(axis=1) - self.c_ if self.classifier_ is None else C.sum(axis=1) + self.paths_.bias
        return self._calibrate(raw), self._reasons(M, C, top)


# -- FreemanBaseline ----------------------------------------------------------


class FreemanBaseline(_ScoreClassifier):
    """Freeman et al. (NDSS 2016), "Who are you? A statistical approach to measuring user authenticity".

    The score of an event is the product of the likelihood ratios
    p(x | attack) / p(x | user) over the IP and user-agent hierarchies; its
    log, the sum of the ``columns`` (each level's smoothed log likelihood ratio,
    computed by risk.features), is mapped to [0, 1] by ``expit(total - c_)``,
    ``c_`` the (1 - contamination) quantile on the training events (a
    monotone map: ranking is Freeman's). A NULL level (nothing to compute it
    from) contributes the training median of that level.
    """

    def __init__(self, columns: Sequence[str] = FREEMAN_COLUMNS, contamination: float = 0.01):
        self.columns = columns
        self.contamination = contamination

    def fit(self, X, y=None):
        if not (isinstance(self.contamination, (int, float)) and 0 < self.contamination < 0.5):
            raise ModelError(f"The 'contamination' parameter of FreemanBaseline must be a float in (0, 0.5). Got {self.contamination!r} instead.")
        if isinstance(self.columns, str) or not len(self.columns):
            raise ModelError(f"The 'columns' parameter of FreemanBaseline must be a non-empty list of column names. Got {self.columns!r} instead.")
        M, cols = _matrix(X, list(self.columns))
        if len(M) < 2:
            raise ModelError(f"FreemanBaseline needs at least 2 events to fit; got {len(M)}")
        self.feature_names_in_ = np.asarray(cols, dtype=object)
        self.n_features_in_ = len(cols)
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # "All-NaN slice": a level no event has (filled with 0)
            med = np.nanmedian(M, axis=0)
        self.fill_ = np.where(np.isnan(med), 0.0, med)
        total = self._total(M)
        self.c_ = float(np.quantile(total, 1 - self.contamination))
        self.classes_ = np.array([0, 1])
        self.offset_ = float(np.quantile(expit(total - self.c_), 1 - self.contamination))
        return self

    def _total(self, M: np.ndarray) -> np.ndarray:
        return np.where(np.isnan(M), self.fill_, M).sum(axis=1)

    def log_likelihood_ratio(self, X) -> np.ndarray:
        check_is_fitted(self, "offset_")
        return self._total(_matrix(X, list(self.feature_names_in_))[0])

    def score_samples(self, X) -> np.ndarray:
        return expit(self.log_likelihood_ratio(X) - self.c_)

