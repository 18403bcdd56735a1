"""``riskgate train`` / ``riskgate models`` end to end on a small ingested synthetic store."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from cli import app
from risk import store
from risk.model import list_models, load_active
from risk.model.training import INJECTED


@pytest.fixture(scope="module")
def synth_store(tmp_path_factory):
    d = tmp_path_factory.mktemp("train")
    runner = CliRunner()
    out = d / "ev.jsonl"
    r = runner.invoke(app, ["synth", "--users", "400", "--days", "21", "--seed", "3", "--out", str(out),
                            "--inline-labels"])
    assert r.exit_code == 0, r.output
    db = d / "rg.duckdb"
    r = runner.invoke(app, ["ingest", str(out), "--db", str(db)])
    assert r.exit_code == 0, r.output
    return db


def test_train_prints_metrics_and_registers_version_1_then_2(synth_store, tmp_path):
    db = tmp_path / "copy.duckdb"
    db.write_bytes(synth_store.read_bytes())
    runner = CliRunner()
    r = runner.invoke(app, ["train", "--db", str(db), "--inject-attacks", "60"])
    assert r.exit_code == 0, r.output
    assert "RiskModel/supervised" in r.output
    for text in ("ROC AUC", "PR AUC", "Brier score", "TPR", "injected_foreign", "injected_domestic",
                 "model version 1 registered and active"):
        assert text in r.output, text

    r = runner.invoke(app, ["train", "--db", str(db), "--no-labels", "--holdout", "0.9", "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert out["version"] == 2 and out["kind"] == "RiskModel/unlabeled"
    m = out["metrics"]
    # evaluated against the data set's labels even when not learning from them
    assert 0.5 < m["roc_auc"] <= 1 and 0 <= m["brier"] <= 1
    assert m["per_attack_type"] and all(0 <= e["tpr"] <= 1 for e in m["per_attack_type"].values())
    assert set(m["per_attack_type"]) <= {"credential_stuffing", "password_spray", "brute_force", "naive_takeover",
                                         "vpn_takeover", "targeted_takeover", "impossible_travel"}
    assert "baseline" in m

    con = store.connect(db)
    try:
        recs = list_models(con)
        assert [(r.version, r.kind, r.active) for r in recs] == [
            (1, "RiskModel/supervised", False), (2, "RiskModel/unlabeled", True)]
        assert recs[0].metadata["injected_attacks"] == 60
        assert set(recs[0].metrics["per_attack_type"]) & set(INJECTED)
        model, version = load_active(con)
        assert version == 2 and model.mode_ == "unlabeled"
        # nothing injected stays in the store
        assert con.execute("SELECT count(*) FROM events WHERE source_format = 'injected'").fetchall() == [(0,)]
    finally:
        con.close()

    r = runner.invoke(app, ["models", "--db", str(db), "--activate", "1"])
    assert r.exit_code == 0, r.output
    assert "RiskModel/supervised" in r.output
    con = store.connect(db)
    try:
        assert load_active(con)[1] == 1
    finally:
        con.close()


def test_train_on_an_empty_store_says_what_to_do(tmp_path):
    r = CliRunner().invoke(app, ["train", "--db", str(tmp_path / "empty.duckdb")])
    assert r.exit_code == 2
    assert "too few events to train on: 0 in the store, at least 10 are needed; ingest events first" in " ".join(
        r.output.split())


def test_train_on_a_window_without_events_names_the_window(synth_store):
    r = CliRunner().invoke(app, ["train", "--db", str(synth_store), "--since", "2030-01-01", "--until", "2030-02-01"])
    assert r.exit_code == 2
    assert ("too few events to train on: 0 at or after 2030-01-01T00:00:00+00:00 and before "
            "2030-02-01T00:00:00+00:00, at least 10 are needed; ingest events first or widen --since/--until"
            ) in " ".join(r.output.split())


def test_bad_options_are_named(synth_store, tmp_path):
    r = CliRunner().invoke(app, ["train", "--db", str(synth_store), "--since", "yesterday"])
    assert r.exit_code == 2 and "--since" in r.output
    r = CliRunner().invoke(app, ["train", "--db", str(synth_store), "--chunk-rows", "0"])
    assert r.exit_code == 2 and "--chunk-rows" in r.output
    r = CliRunner().invoke(app, ["models", "--db", str(tmp_path / "x.duckdb"), "--activate", "7"])
    assert r.exit_code == 2 and "version 7" in r.output


def test_the_cli_default_chunk_is_the_library_default():
    # spelled out in the CLI so that its help does not import scikit-learn
    from cli.train_cmd import TRAIN_CHUNK_ROWS
    from risk.model.training import TRAIN_CHUNK_ROWS as TRAINING_DEFAULT

    assert TRAIN_CHUNK_ROWS == TRAINING_DEFAULT


def test_a_held_out_period_of_legitimate_sign_ins_only_is_named_as_such(synth_store, tmp_path):
    """Labelled, but no attack among them: the message says so, instead of "no labelled events"."""
    import shutil

    db = tmp_path / "copy.duckdb"
    shutil.copy(synth_store, db)
    with store.connect(db, read_only=True) as con:
        first_attack = con.execute(
            "SELECT min(creation_date) FROM events WHERE event_id IN (SELECT event_id FROM labels "
            "WHERE label = 'attack_type' OR (label = 'is_account_takeover' AND value = 'true'))").fetchall()[0][0]
    r = CliRunner().invoke(app, ["train", "--db", str(db), "--until", first_attack.isoformat()])
    assert r.exit_code == 0, r.output
    out = " ".join(r.output.split())
    assert "labelled events are all legitimate: no metrics (load attack labels, mark attacks Invalid, or use " \
           "--inject-attacks)" in out, out
    assert "no labelled events" not in out


def test_labels_the_trees_cannot_split_register_the_statistical_model_and_say_why(tmp_path):
    """The no-split fallback through the command line: 100 users' first sign-ins, a week apart at the same hour,
    each from its own address of one network with one browser, have identical features; a quarter of them labelled
    attacks, the trees find no split, and ``riskgate train`` registers the unlabeled model and says why."""
    from datetime import datetime, timedelta, timezone

    from tests.events_gen import event, write_jsonl

    t0 = datetime(2024, 12, 2, 10, 0, tzinfo=timezone.utc)  # the last of them in 2026-11, not in the future
    events = [event(i, Username=f"u{i}", UserSub=f"sub-u{i}",
                    CreationDate=(t0 + timedelta(weeks=i)).isoformat().replace("+00:00", "Z"),
                    ContextData={**event(i)["ContextData"], "IpAddress": f"81.2.69.{i + 1}"}) for i in range(100)]
    write_jsonl(tmp_path / "ev.jsonl", events)
    (tmp_path / "labels.csv").write_text("event_id,label,value,source\n" + "".join(
        f"{e['EventId']},is_account_takeover,{'true' if i % 4 == 0 else 'false'},test\n"
        for i, e in enumerate(events)))
    db = tmp_path / "rg.duckdb"
    runner = CliRunner()
    for args in (["ingest", str(tmp_path / "ev.jsonl")], ["labels", "load", str(tmp_path / "labels.csv")]):
        r = runner.invoke(app, [*args, "--db", str(db)])
        assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["train", "--db", str(db)])
    assert r.exit_code == 0, r.output
    out = " ".join(r.output.split())
    assert "trained RiskModel/unlabeled on 100 events (25 attacks, 75 legitimate labelled)" in out, out
    assert ("note: the tree model found no split in the 100 labelled events (25 attacks, 75 legitimate) and would "
            "give every event the same score: the statistical (unlabeled) score is used instead; label more events"
            ) in out, out
    r = runner.invoke(app, ["train", "--db", str(db), "--json"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["version"] == 2 and doc["kind"] == "RiskModel/unlabeled"
    assert doc["fallback"].startswith("the tree model found no split in the 100 labelled events")
    assert doc["metrics"]["fallback"] == doc["fallback"]
    with store.connect(db, read_only=True) as con:
        assert con.execute("SELECT version, kind FROM models ORDER BY version").fetchall() == [
            (1, "RiskModel/unlabeled"), (2, "RiskModel/unlabeled")]
