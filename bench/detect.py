"""Detection benchmark: riskgate's model against the Freeman et al. (NDSS 2016) baseline on labelled synthetic data.

    .venv/bin/python bench/detect.py [--users 50000] [--days 30] [--train-days 20] [--seed 7[,11,3...]]
                                     [--inject 0] [--dir DIR] [--json-out FILE]

Builds its data itself from the seed (nothing generated is kept unless
``--dir`` is given): ``riskgate synth`` (riskgate-jsonl with inline labels),
``riskgate ingest`` into a fresh store, then point-in-time features
(``risk.features.compute_features``) for every event. The models are fitted on
the first ``--train-days`` days and evaluated on the later, held-out days:

* riskgate, supervised: ``RiskModel`` learning from the data set's labels
  (plus ``--inject N`` attacks injected into real histories, Freeman-style);
* riskgate, unlabeled: ``RiskModel`` fitted without labels (the fallback);
* Freeman baseline: ``FreemanBaseline`` (sum of the per-level log likelihood ratios).

Per attack type: the true-positive rate over that type's sign-in attempts
(successful or not) at the threshold that challenges 1 % of the legitimate
successful sign-ins of the held-out period, with the count behind it and its
95 % Wilson interval, and the ROC AUC of those attempts against those
legitimate sign-ins. Targets (issue 4): riskgate >= 99 % on naive takeover
and credential stuffing, >= 95 % on VPN/hosting takeover, >= 90 % on targeted
takeover, and above the baseline on every type.

Some types have few attempts in one data set (about 90 targeted takeovers:
one attempt is 1.1 %, and the interval is about 13 points wide). ``--seed
7,11,3`` builds and evaluates one data set per seed, each with its own models
and thresholds, prints each, then the attempts of all of them pooled per type
(caught / attempts over the seeds, and the interval of that).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from risk import store  # noqa: E402
from risk.model import FreemanBaseline, RiskModel  # noqa: E402
from risk.model.training import (  # noqa: E402
    CHALLENGE_RATE,
    TrainingSet,
    _feature_columns,
    evaluate,
    inject_attacks,
    labelled,
    load_labels,
)
from risk.tuning import wilson  # noqa: E402

TARGETS = {"naive_takeover": 0.99, "credential_stuffing": 0.99, "vpn_takeover": 0.95, "targeted_takeover": 0.90}


def run(cmd: list[str]) -> None:
    r = subprocess.run([sys.executable, "-m", "cli", *cmd], cwd=ROOT, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{r.stdout}\n{r.stderr}")


def seeds(text: str) -> list[int]:
    """``7`` or ``7,11,3``: the seeds of the data sets, each once."""
    try:
        out = [int(x) for x in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a seed or seeds separated by commas, got {text!r}") from None
    if len(set(out)) != len(out):
        raise argparse.ArgumentTypeError(f"a seed is given twice in {text!r}")
    return out


def caught(entry: dict) -> int:
    """How many of a type's attempts were above the threshold (``evaluate`` gives the rate and the count)."""
    return round(entry["tpr"] * entry["events"])


def interval(k: int, n: int) -> str:
    ci = wilson(k, n)
    return f"[{ci[0]:.2%}-{ci[1]:.2%}]" if ci else "-"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--users", type=int, default=50_000)
    ap.add_argument("--days", type=int, default=30)
    ap.add_argument("--train-days", type=int, default=20)
    ap.add_argument("--seed", type=seeds, default=[7], help="the data set's seed, or several separated by commas")
    ap.add_argument("--inject", type=int, default=0, help="attacks injected into real histories for training")
    ap.add_argument("--dir", help="keep the generated data and store here (default: a temporary folder)")
    ap.add_argument("--json-out", help="also write the figures as JSON to this file")
    args = ap.parse_args()
    if not 0 < args.train_days < args.days:
        sys.exit("--train-days must be between 0 and --days")
    if args.dir and len(args.seed) > 1:
        sys.exit("--dir keeps one data set: give one --seed with it")

    runs = []
    for i, seed in enumerate(args.seed):
        if i:
            print("\n")
        runs.append(one_seed(args, seed))
    if len(runs) > 1:
        pooled(runs)
    if args.json_out:
        Path(args.json_out).write_text(json.dumps({"args": vars(args), "runs": runs,
                                                   "run_at": datetime.now(timezone.utc).isoformat()},
                                                  indent=2, default=str))


def pooled(runs: list[dict]) -> None:
    """Every seed's attempts per type together: caught / attempts, the rate and its interval, for each model."""
    print(f"\n\nall {len(runs)} data sets (seeds {', '.join(str(r['seed']) for r in runs)}) pooled: "
          "attempts caught at each data set's own 1 % threshold")
    hdr = f"{'attack type':<22}{'sign-ins':>9}  {'riskgate':>22} {'95% interval':>18}  {'Freeman':>17}  {'target':>6}  verdict"
    print(hdr)
    print("-" * len(hdr))
    types = sorted({t for r in runs for t in r["results"]["riskgate"].get("per_attack_type", {})})
    for t in types:
        n = k = kf = 0
        for r in runs:
            e = r["results"]["riskgate"]["per_attack_type"].get(t)
            if e:
                n, k = n + e["events"], k + caught(e)
                kf += caught(r["results"]["freeman"]["per_attack_type"][t])
        target = TARGETS.get(t)
        verdict = "" if target is None else ("meets target" if k / n >= target else "MISSES target")
        ci = wilson(k, n)
        if target is not None and ci and ci[0] < target <= ci[1]:
            verdict += " (the target is inside the interval)"
        print(f"{t:<22}{n:>9,}  {f'{k / n:.2%} ({k}/{n})':>22} {interval(k, n):>18}  "
              f"{f'{kf / n:.2%} ({kf})':>17}  {f'{target:.0%}' if target else '-':>6}  {verdict}")


def one_seed(args, seed: int) -> dict:
    """One data set: build, fit, evaluate and print; returns its figures."""
    timings: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="riskgate-detect-") as tmp:
        work = Path(args.dir) if args.dir else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        events, db = work / "detect.jsonl", work / "detect.duckdb"
        if db.exists():
            db.unlink()
        t0 = time.perf_counter()
        run(["synth", "--users", str(args.users), "--days", str(args.days), "--seed", str(seed),
             "--out", str(events), "--inline-labels"])
        timings["synth_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        run(["ingest", str(events), "--db", str(db)])
        timings["ingest_s"] = time.perf_counter() - t0
        if not args.dir:
            events.unlink()

        from risk.features import compute_features

        con = store.connect(db)
        t0 = time.perf_counter()
        feats = compute_features(con)
        timings["features_s"] = time.perf_counter() - t0
        ts = labelled(feats, load_labels(con))
        del feats
        when = pd.to_datetime(ts.features["creation_date"], utc=True)
        start = when.min().floor("D")
        cut = start + timedelta(days=args.train_days)
        early = (when < cut).to_numpy()
        train, test = ts.select(early), ts.select(~early)
        if args.inject:
            t0 = time.perf_counter()
            inj = inject_attacks(con, args.inject, train.features, seed=seed)
            inj = inj.select((pd.to_datetime(inj.features["creation_date"], utc=True) < cut).to_numpy())
            train = TrainingSet.concat([train, inj])
            timings["inject_s"] = time.perf_counter() - t0
        con.close()
        cols = _feature_columns(train.features)

        results = {}
        t0 = time.perf_counter()
        sup = RiskModel(random_state=seed).fit(train.features[cols], train.y)
        timings["fit_supervised_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        s = sup.score_samples(test.features[cols])
        timings["score_supervised_s"] = time.perf_counter() - t0
        results["riskgate"] = evaluate(s, test)
        t0 = time.perf_counter()
        unl = RiskModel(random_state=seed).fit(train.features[cols])
        timings["fit_unlabeled_s"] = time.perf_counter() - t0
        results["riskgate_unlabeled"] = evaluate(unl.score_samples(test.features[cols]), test)
        base = FreemanBaseline().fit(train.features)
        results["freeman"] = evaluate(base.score_samples(test.features), test)

    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"data: {args.users:,} users, {args.days} days, seed {seed}; {len(ts):,} events "
          f"({int((ts.y == 1).sum()):,} attack events); train = first {args.train_days} days "
          f"({len(train):,} events, {int((train.y == 1).sum()):,} attacks"
          f"{f', {args.inject} injected' if args.inject else ''}), test = the {args.days - args.train_days} days after "
          f"{cut:%Y-%m-%d} ({len(test):,} events)")
    legit = int(((test.y == 0) & (test.features["event_type"] == "SignIn").to_numpy()
                 & (test.features["event_response"] == "Pass").to_numpy()).sum())
    print(f"threshold: each model's score challenging {CHALLENGE_RATE:.0%} of the {legit:,} legitimate successful "
          f"sign-ins of the test period\n")
    hdr = f"{'attack type':<22}{'sign-ins':>9}  {'riskgate TPR':>12} {'caught':>7} {'95% interval':>18} {'AUC':>7}  " \
          f"{'unlabeled TPR':>13} {'AUC':>7}  {'Freeman TPR':>11} {'AUC':>7}  {'target':>6}  verdict"
    print(hdr)
    print("-" * len(hdr))
    types = sorted(results["riskgate"].get("per_attack_type", {}))
    for t in types:
        r, u, f = (results[k]["per_attack_type"].get(t, {}) for k in ("riskgate", "riskgate_unlabeled", "freeman"))
        target = TARGETS.get(t)
        ok = (target is None or r["tpr"] >= target) and (r["tpr"] > f["tpr"] or r["tpr"] == 1.0 == f["tpr"])
        beat = "above baseline" if r["tpr"] > f["tpr"] else ("tie" if r["tpr"] == f["tpr"] else "BELOW baseline")
        print(f"{t:<22}{r['events']:>9,}  {r['tpr']:>12.2%} {caught(r):>7,} {interval(caught(r), r['events']):>18} "
              f"{r.get('roc_auc', float('nan')):>7.4f}  "
              f"{u['tpr']:>13.2%} {u.get('roc_auc', float('nan')):>7.4f}  {f['tpr']:>11.2%} "
              f"{f.get('roc_auc', float('nan')):>7.4f}  {f'{target:.0%}' if target else '-':>6}  "
              f"{'meets target, ' if target and r['tpr'] >= target else ('MISSES target, ' if target else '')}{beat}")
        results.setdefault("verdict", {})[t] = ok
    print()
    for k, name in (("riskgate", "riskgate"), ("riskgate_unlabeled", "riskgate unlabeled"), ("freeman", "Freeman")):
        r = results[k]
        print(f"{name:<20} ROC AUC {r.get('roc_auc', float('nan')):.4f}  PR AUC {r.get('pr_auc', float('nan')):.4f}  "
              f"Brier {r.get('brier', float('nan')):.5f}   (all labelled sign-ins of the test period)")
    print("\ntimings: " + ", ".join(f"{k} {v:.1f}" for k, v in timings.items()) + f"; peak memory of the process so far {peak_mb:,.0f} MB")
    return {"seed": seed, "results": results, "timings": timings, "peak_mb": peak_mb}


if __name__ == "__main__":
    main()
