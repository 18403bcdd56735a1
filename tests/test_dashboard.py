"""The dashboard: risk.insights on a store with known answers, every page through Streamlit's AppTest, auth, the CLI.

Pages are driven like a person would (widgets set, buttons clicked) and what they show is
checked against the store's known answers and against the library functions.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from streamlit import config as st_config
from streamlit.testing.v1 import AppTest
from typer.testing import CliRunner

import risk.store
from dashboards import common
from risk import insights, levels, tuning
from risk.auth_events import list_user_auth_events
from risk.config import POOL_ENV
from tests import dashboard_store as known
from tests.storedb import q

APP = str(Path(__file__).resolve().parent.parent / "dashboards" / "app.py")
TIMEOUT = 30


@pytest.fixture(scope="module")
def base_store(tmp_path_factory):
    path = tmp_path_factory.mktemp("dash") / "known.duckdb"
    known.build(path)
    return path


@pytest.fixture
def db(base_store, tmp_path, monkeypatch):
    """A fresh copy of the known store; RISKGATE_DB points at it; no password, no pool variable; served on
    loopback."""
    path = tmp_path / "known.duckdb"
    shutil.copy(base_store, path)
    monkeypatch.setenv("RISKGATE_DB", str(path))
    monkeypatch.delenv("RISKGATE_DASHBOARD_PASSWORD", raising=False)
    monkeypatch.delenv(POOL_ENV, raising=False)
    monkeypatch.setattr(common, "PREFETCH", False)  # no background reads in these tests (one test turns it on)
    old = st_config.get_option("server.address")
    st_config.set_option("server.address", "127.0.0.1")
    yield path
    st_config.set_option("server.address", old)



def app(page: str | None = None) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    if page:
        at.switch_page(f"views/{page}.py").run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def metrics(at) -> dict:
    return {m.label: m.value for m in at.metric}


def texts(at) -> str:
    return "\n".join([m.value for m in at.markdown] + [c.value for c in at.caption])


def assert_suggests(at, challenged: float, blocked: float, want) -> None:
    """The Tuning page's Suggest, for targets in percent, sets the sliders to ``want`` (a ``tuning.tune``
    result) and says whether its targets are met."""
    at.number_input(key="tn_target_challenged").set_value(challenged).run()
    at.number_input(key="tn_target_blocked").set_value(blocked).run()
    at.button(key="tn_suggest").click().run()
    assert not at.exception
    assert {name: at.slider(key=f"tn_{name}").value for name in ("low", "medium", "high")} == \
        want.thresholds.to_dict()  # exact: rounded to the sliders' 4 decimals, a suggestion met could miss its targets
    shown = [m.value for m in list(at.success) + list(at.error)]
    assert any(m.startswith("Targets met: " if want.met else "Targets not met: ") for m in shown), shown


# -- risk.insights on the known store ------------------------------------------------------------


@pytest.fixture
def con(db):
    c = risk.store.connect(db, read_only=True)
    yield c
    c.close()


def test_overview_metrics_count_the_known_store(con):
    m = insights.overview_metrics(con)
    assert (m["events"], m["sign_ins"], m["assessed"], m["risky"]) == (11, 9, 10, 4)
    assert m["by_level"] == {"High": 2, "Medium": 1, "Low": 1, "No risk": 6, "Not evaluated": 0, "Not assessed": 1}
    assert m["by_decision"] == {"NoRisk": 4, "AccountTakeover": 3, "Block": 3}
    assert m["by_outcome"] == {"Allow": 5, "MfaChallenge": 2, "Block": 3}
    assert (m["override_block"], m["compromised_credentials"]) == (1, 1)
    app2 = insights.overview_metrics(con, client="app2")
    assert (app2["events"], app2["sign_ins"], app2["by_level"]["High"]) == (5, 4, 1)
    from datetime import datetime, timezone

    day2 = insights.overview_metrics(con, since=datetime(2026, 3, 2, tzinfo=timezone.utc),
                                     until=datetime(2026, 3, 3, tzinfo=timezone.utc))
    assert day2["events"] == 3  # e02, e05, e08
    assert insights.metric_series(con, "OverrideBlock", by="event_type")[["group", "count"]].values.tolist() == [
        ["SignIn", 1]]
    risk_by_level = insights.metric_series(con, "Risk").groupby("group")["count"].sum().to_dict()
    assert risk_by_level == {"High": 2, "Medium": 1, "Low": 1, "No level": 2}  # + compromised e06, override e09


@pytest.mark.parametrize("text, expected", [
    ("203.0.113.0/24", {"e03", "e04"}),
    ("203.0.113.9/24", {"e03", "e04"}),  # host bits ignored
    ("::ffff:203.0.113.0/120", {"e03", "e04"}),  # IPv4-mapped: the store keeps IPv4
    ("81.2.69.160/31", {"e01", "e02"}),
    ("81.2.69.161", {"e02"}),
    ("2001:db8::/32", {"e07", "e08"}),  # not 2001:db9::1
    ("2001:db8:1::/48", {"e07"}),
    ("2001:0db8:0002:0000::7", {"e08"}),  # written uncompressed
    ("0.0.0.0/0", {"e01", "e02", "e03", "e04", "e05", "e06", "e09", "e10"}),
    ("::/0", {"e07", "e08", "e11"}),
])
def test_ip_and_cidr_filters_match_ipv4_and_ipv6_exactly(con, text, expected):
    rows, total = insights.search_events(con, insights.EventFilters(ip=text))
    assert set(rows["event_id"]) == expected and total == len(expected)


def test_other_filters_and_bad_input(con):
    def ids(**kw):
        return set(insights.search_events(con, insights.EventFilters(**kw))[0]["event_id"])

    assert ids(country="fr") == {"e07", "e08", "e11"} == ids(country="France")
    assert ids(asn=3320) == {"e05", "e06"}
    assert ids(level="High") == {"e03", "e08"}
    assert ids(level="No risk") == {"e01", "e02", "e06", "e07", "e09", "e11"}
    assert ids(level="Not assessed") == {"e10"}
    assert ids(decision="Block", event_type="SignIn") == {"e08", "e09"}
    assert ids(username="a*") == {"e01", "e02", "e03"} == ids(username=" alice ")
    rows, total = insights.search_events(con, insights.EventFilters(), limit=3, offset=3)
    assert total == 11 and rows["event_id"].tolist() == ["e06", "e03", "e08"]  # newest first
    with pytest.raises(insights.InsightsError, match="not an IP address or a CIDR"):
        insights.search_events(con, insights.EventFilters(ip="10.0.0.0/33"))


def test_event_detail_reasons_in_words_and_previous_signins(con):
    d = insights.event_detail(con, "e03")
    assert (d["risk_level"], d["risk_decision"], d["outcome"]) == ("High", "AccountTakeover", "MfaChallenge")
    assert [r["code"] for r in d["reasons"]] == ["new_device", "travel_distance"]
    assert d["reasons"][0]["words"].startswith("First time the user signs in with this device fingerprint: yes")
    assert "5,900 km" in d["reasons"][1]["words"] and "+1.50" in d["reasons"][1]["words"]
    assert d["labels"] == [("attack_type", "naive_takeover", "test")]
    assert insights.previous_signins(con, "e03", 5)["event_id"].tolist() == ["e02", "e01"]
    assert insights.event_detail(con, "nope") is None
    assert "could not be computed" in insights.reason_in_words("travel_distance", None, 0.3)
    assert d["feedback"] is None


def test_event_detail_shows_the_feedback_in_force(db):
    from datetime import datetime, timezone

    from risk.feedback import set_feedback

    rw = risk.store.connect(db)
    try:
        set_feedback(rw, "e03", "Invalid", "Admin", when=datetime(2026, 3, 2, 9, 0, tzinfo=timezone.utc))
        set_feedback(rw, "e03", "Valid", "User", when=datetime(2026, 3, 1, 9, 0, tzinfo=timezone.utc))  # older
        d = insights.event_detail(rw, "e03")
    finally:
        rw.close()
    assert (d["feedback"]["value"], d["feedback"]["provider"]) == ("Invalid", "Admin")
    assert d["feedback"]["date"] == datetime(2026, 3, 2, 9, 0, tzinfo=timezone.utc)


def test_top_risky_locations_and_jobs(con):
    users = insights.top_risky(con, "user")
    assert users["username"].tolist() == ["alice", "carol", "bob"]  # High first, then Medium, Low
    assert users.set_index("username").loc["bob", ["risky", "medium", "low"]].tolist() == [2, 1, 1]
    assert insights.top_risky(con, "network")["network"].tolist()[:2] == ["203.0.113.0/24", "2001:db8:2::/48"]
    places = insights.locations(con).set_index("city")
    assert places.loc["Ashburn", "top_level"] == "High" and places.loc["Ashburn", "events"] == 2
    assert places.loc["London", "top_level"] == "No risk"
    assert insights.quarantine_reasons(con)[["reason", "rows"]].values.tolist()[0] == [
        "malformed JSON: Expecting value", 2]
    assert insights.quarantine_examples(con, "malformed JSON: Expecting value")["raw"].tolist() == [
        "{not json", "{also not json"]
    assert insights.score_runs(con)["events_scored"].tolist() == [10]
    assert insights.ingest_runs(con)["events_added"].tolist() == [11]


def test_a_place_with_no_assessed_event_is_not_assessed_on_the_map(db):
    """Amsterdam's events: e09 assessed without a level, e10 never assessed: "No risk" while e09 is assessed,
    "Not assessed" (not "No risk"'s green) once no event there is."""
    rw = risk.store.connect(db)
    try:
        assert insights.locations(rw).set_index("city").loc["Amsterdam", "top_level"] == insights.NO_RISK
        rw.execute("DELETE FROM assessments WHERE event_id = 'e09'")
        assert insights.locations(rw).set_index("city").loc["Amsterdam", "top_level"] == insights.NOT_ASSESSED
    finally:
        rw.close()


def test_tuning_snapshot_gives_what_risk_tuning_gives(con):
    snap = insights.tuning_snapshot(con)
    for t in (levels.DEFAULT_THRESHOLDS, levels.Thresholds(0.5, 0.5, 0.5), levels.Thresholds(0.02, 0.7, 0.93)):
        mine = insights.tradeoff_from(snap, t)
        assert mine.pop("current_outcomes") == tuning.tradeoff(con)["outcomes"]
        assert mine == tuning.tradeoff(con, t)
        w, ref = insights.whatif_from(snap, t), tuning.whatif(con, None, t)
        assert {k: w[k] for k in ("outcomes", "current", "changed", "by_label")} == {
            k: ref[k] for k in ("outcomes", "current", "changed", "by_label")}
    cv, ref = insights.curves_from(snap), tuning.curves(con)
    assert cv["roc_auc"] == ref.roc_auc and cv["average_precision"] == ref.average_precision


def test_configuration_form_document_and_diff(con):
    from risk import config as rc

    base = rc.describe(con, known.POOL)["RiskConfiguration"]
    doc = insights.form_document(base, actions={"Low": ("NO_ACTION", False), "Medium": ("MFA_REQUIRED", True),
                                                "High": ("BLOCK", True)},
                                 cc_action="NO_ACTION", cc_filter=None, blocked=["10.0.0.0/8"], skipped=[])
    cfg = rc.validate_document(doc)
    assert cfg.RiskExceptionConfiguration.BlockedIPRangeList == ["10.0.0.0/8"]
    assert cfg.CompromisedCredentialsRiskConfiguration.EventFilter is None
    assert cfg.AccountTakeoverRiskConfiguration.NotifyConfiguration.BlockEmail is not None  # templates kept
    assert insights.problem_field("RiskExceptionConfiguration.BlockedIPRangeList[0]") == "blocked"
    assert insights.problem_field("AccountTakeoverRiskConfiguration.Actions.HighAction.EventAction") == "ato_High"
    assert insights.problem_field("UserPoolId") == "general"
    assert insights.config_diff(con, 0, 0) == ""


# -- the pages through AppTest -------------------------------------------------------------------------


def test_overview_shows_the_periods_counts_and_follows_the_client_filter(db):
    at = app()
    m = metrics(at)
    assert (m["Sign-ins"], m["Risky events"], m["High risk"], m["MFA challenges"], m["Blocked"],
            m["OverrideBlock"], m["Compromised credentials"]) == ("9", "4", "2", "2", "3", "1", "1")
    levels_table = at.dataframe[0].value
    assert dict(zip(levels_table["level"], levels_table["events"])) == {
        "High": 2, "Medium": 1, "Low": 1, "No risk": 6, "Not evaluated": 0, "Not assessed": 1}
    top_users = [d.value for d in at.dataframe if "username" in d.value.columns][0]
    assert top_users["username"].tolist() == ["alice", "carol", "bob"]
    at.sidebar.selectbox(key="scope_client").select("app2").run()
    assert metrics(at)["Sign-ins"] == "4" and metrics(at)["High risk"] == "1"
    at.selectbox(key="ov_metric").select("OverrideBlock")
    at.radio(key="ov_by").set_value("event type").run()
    assert not at.exception and not at.error


def test_events_page_filters_by_cidr_and_explains_the_event(db):
    at = app("events")
    assert "**11 events** match" in texts(at)
    at.text_input(key="ev_ip").input("203.0.113.0/24")
    at.form_submit_button[0].click().run()
    assert "**2 events** match" in texts(at)
    at.selectbox(key="ev_pick").select("e03").run()
    assert at.header[0].value.startswith("SignIn by `alice` at 2026-03-03 03:00:00")  # a stored value: literal
    why = texts(at)
    assert (f"**{common.md('new_device')}** — "
            + common.md("First time the user signs in with this device fingerprint: yes")) in why
    assert "known decision of e03" in why
    assert metrics(at)["Risk level"] == "High" and metrics(at)["Score"] == "0.950"
    previous = [d.value for d in at.dataframe if "event_id" in d.value.columns][-1]
    assert previous["event_id"].tolist() == ["e02", "e01"]
    at.text_input(key="ev_ip").input("2001:db8::/32")
    at.selectbox(key="ev_level").select("High")
    at.form_submit_button[0].click().run()
    assert "**1 event** matches" in texts(at)
    at.text_input(key="ev_ip").input("10.0.0.0/33")
    at.form_submit_button[0].click().run()
    assert any("not an IP address or a CIDR" in e.value for e in at.error)
    assert not at.dataframe  # nothing listed while a filter is wrong
    at.text_input(key="ev_ip").input("")
    for bad in ("²", "AS١٢", "4294967296"):  # digits to str.isdigit, not to int() / not 32 bits: a traceback
        at.text_input(key="ev_asn").input(bad)
        at.form_submit_button[0].click().run()
        assert not at.exception, (bad, at.exception)
        assert any("is not an AS number" in e.value for e in at.error), bad
    at.text_input(key="ev_asn").input("AS4294967295")
    at.form_submit_button[0].click().run()
    assert not at.exception and not at.error and "**0 events** match" in texts(at)


def test_user_page_counts_one_event_in_the_singular(db):
    at = app("user")
    at.text_input(key="user_name").input("erin").run()
    assert not at.exception
    assert "AdminListUserAuthEvents: newest first · page 1 · 1 event" in texts(at).splitlines()


def test_user_page_feedback_buttons_write_at_once(db):
    at = app("user")
    at.text_input(key="user_name").input("alice").run()
    assert not at.exception
    assert "AdminListUserAuthEvents: newest first · page 1 · 3 events" in texts(at)
    assert q(db, "SELECT count(*) FROM feedback") == [(0,)]
    at.button(key="fb_invalid_e03").click().run()
    assert q(db, "SELECT event_id, feedback_value, provider FROM feedback") == [("e03", "Invalid", "Admin")]
    assert any("Invalid recorded for event `e03`" in s.value for s in at.success)
    assert "**Invalid** (Admin)" in texts(at)
    assert "none" in texts(at)  # the events without feedback
    con = risk.store.connect(db, read_only=True)
    try:
        ev = {e["EventId"]: e for e in list_user_auth_events(con, "alice")["AuthEvents"]}
    finally:
        con.close()
    assert ev["e03"]["EventFeedback"]["FeedbackValue"] == "Invalid" and "EventFeedback" not in ev["e01"]
    at.button(key="fb_valid_e03").click().run()
    assert q(db, "SELECT feedback_value FROM feedback ORDER BY seq") == [("Invalid",), ("Valid",)]
    at.text_input(key="user_name").input("nobody").run()
    assert any("not found" in w.value for w in at.warning)


def test_tuning_page_applies_thresholds_only_after_confirmation(db):
    at = app("tuning")
    con = risk.store.connect(db, read_only=True)
    try:
        expected = tuning.tradeoff(con, levels.Thresholds(0.5, 0.5, 0.8))["outcomes"]
    finally:
        con.close()
    at.slider(key="tn_low").set_value(0.5).run()
    assert not at.exception
    assert metrics(at)["Attacks stopped"] == f"{expected['attacks_stopped']['rate']:.2%}"
    assert metrics(at)["Legitimate challenged or blocked"] == (
        f"{expected['legitimate_challenged_or_blocked']['rate']:.2%}")
    at.button(key="tn_apply").click().run()
    assert any("version 1?" in w.value for w in at.warning)
    assert q(db, "SELECT count(*) FROM risk_thresholds") == [(0,)]  # nothing written before confirming
    at.button(key="tn_confirm").click().run()
    assert q(db, "SELECT version, low, medium, high, source FROM risk_thresholds") == [(1, 0.5, 0.5, 0.8, "dashboard")]
    assert any("thresholds version 1 stored" in s.value for s in at.success)
    at.slider(key="tn_high").set_value(0.4).run()  # below Medium: refused on the page
    assert any("ordered" in e.value for e in at.error)


def test_the_tuning_history_and_curves_are_prepared_in_the_background_after_a_page(db, monkeypatch):
    import threading

    monkeypatch.setattr(common, "PREFETCH", True)
    monkeypatch.setattr(common, "_prefetched", {})
    common._snapshot.clear()
    common._curves.clear()
    at = app()  # the overview; once it is drawn the prefetch starts
    workers = [t for t in threading.enumerate() if t.name == "riskgate-tuning-prefetch"]
    assert workers
    for t in workers:
        t.join(timeout=30)
    scope = at.session_state["_rg_scope"]

    def not_again(*a, **k):
        raise AssertionError("the snapshot and its curves should have been prepared already")

    monkeypatch.setattr(insights, "tuning_snapshot", not_again)
    monkeypatch.setattr(insights, "curves_from", not_again)
    try:
        snap = common.tuning_snapshot(scope["since"], scope["until"])  # as a page asks (the store unchanged)
    finally:
        common.end_run()
    assert len(snap.history.df) == 10
    at.switch_page("views/tuning.py").run()
    assert not at.exception and metrics(at)["Attacks stopped"]


def test_tuning_suggests_what_tune_proposes(db):
    at = app("tuning")
    con = risk.store.connect(db, read_only=True)
    try:
        want = tuning.tune(con, tuning.Targets(max_challenged=0.2, max_blocked=0.1))
    finally:
        con.close()
    before = {name: at.slider(key=f"tn_{name}").value for name in ("low", "medium", "high")}
    assert before != {name: round(value, 4) for name, value in want.thresholds.to_dict().items()}  # it moves them
    assert_suggests(at, 20.0, 10.0, want)


def test_tuning_cancel_writes_nothing(db):
    at = app("tuning")
    at.slider(key="tn_high").set_value(0.9).run()
    at.button(key="tn_apply").click().run()
    at.button(key="tn_cancel").click().run()
    assert q(db, "SELECT count(*) FROM risk_thresholds") == [(0,)]


def _cfg_key(at, suffix):
    return next(w.key for w in list(at.text_area) + list(at.selectbox) + list(at.checkbox)
                if w.key and w.key.startswith(f"cfg_{known.POOL}|") and w.key.endswith(suffix))


def _shown(markdown: str) -> str:
    """The text a Markdown body escaped with ``common.md`` shows (its backslash escapes undone)."""
    import re

    return re.sub(r"\\(.)", r"\1", markdown)


def test_configuration_invalid_value_shows_the_error_beside_the_field_and_changes_nothing(db):
    at = app("configuration")
    at.text_area(key=_cfg_key(at, "_blocked")).input("10.0.0.1/24")
    at.form_submit_button[0].click().run()
    assert any("BlockedIPRangeList[0]" in _shown(e.value) and "10.0.0.0/24" in _shown(e.value) for e in at.error)
    assert q(db, "SELECT count(*) FROM risk_config_versions") == [(0,)]
    at.selectbox(key=_cfg_key(at, "_ato_High")).select("NO_ACTION")
    at.text_area(key=_cfg_key(at, "_blocked")).input("10.0.0.0/24")
    at.form_submit_button[0].click().run()
    assert any("less restrictive" in _shown(e.value) for e in at.error)
    assert not any("BlockedIPRangeList" in _shown(e.value) for e in at.error)
    assert q(db, "SELECT count(*) FROM risk_config_versions") == [(0,)]
    # the error quotes what was typed: shown literally, never as Markdown (an image would be fetched)
    at.text_area(key=_cfg_key(at, "_blocked")).input("![x](http://127.0.0.1:9/raw.png)")
    at.form_submit_button[0].click().run()
    quoted = [e.value for e in at.error if "raw.png" in _shown(e.value)]
    assert quoted and all("\\!\\[x\\]\\(http" in v for v in quoted), quoted
    assert q(db, "SELECT count(*) FROM risk_config_versions") == [(0,)]


def test_configuration_saves_a_valid_edit_after_confirmation_and_diffs_versions(db):
    at = app("configuration")
    at.text_area(key=_cfg_key(at, "_blocked")).input("10.0.0.0/24\n2001:db8::/32")
    at.form_submit_button[0].click().run()
    assert not at.error
    assert q(db, "SELECT count(*) FROM risk_config_versions") == [(0,)]
    at.button(key="cfg_save_confirm").click().run()
    assert q(db, "SELECT version, user_pool_id, client_id, kind, source FROM risk_config_versions") == [
        (1, known.POOL, None, "set", "dashboard")]
    con = risk.store.connect(db, read_only=True)
    try:
        from risk import config as rc

        cfg, version = rc.resolve(con, known.POOL)
    finally:
        con.close()
    assert version == 1 and cfg.RiskExceptionConfiguration.BlockedIPRangeList == ["10.0.0.0/24", "2001:db8::/32"]
    diff = next(c.value for c in at.code if "version" in c.value)
    assert '+    "BlockedIPRangeList": [' in diff and "--- version 0" in diff and "+++ version 1" in diff


def test_a_clients_own_configuration_is_edited_apart_from_the_pools(db):
    at = app("configuration")
    at.selectbox(key="cfg_client").select("app1").run()
    assert any("the shipped defaults" in c.value for c in at.caption)
    key = next(w.key for w in at.selectbox if w.key and w.key.startswith(f"cfg_{known.POOL}|app1_")
               and w.key.endswith("_ato_High"))
    at.selectbox(key=key).select("BLOCK")
    at.form_submit_button[0].click().run()
    at.button(key="cfg_save_confirm").click().run()
    assert q(db, "SELECT client_id, kind FROM risk_config_versions") == [("app1", "set")]
    assert any("the client's own configuration, version 1" in c.value for c in at.caption)
    con = risk.store.connect(db, read_only=True)
    try:
        from risk import config as rc

        assert str(rc.resolve(con, known.POOL, "app1")[0].action_for("High").EventAction) == "BLOCK"
        assert rc.resolve(con, known.POOL, "app2")[1] == 0  # the other client still uses the pool's (defaults)
    finally:
        con.close()


def test_mode_switch_needs_confirmation(db):
    at = app("configuration")
    at.selectbox(key=f"cfg_mode_new_{known.POOL}").select("ENFORCED")
    at.button(key="cfg_mode_ask").click().run()
    assert any("to **ENFORCED**" in w.value for w in at.warning)
    assert q(db, "SELECT count(*) FROM risk_config_versions") == [(0,)]
    at.button(key="cfg_mode_confirm").click().run()
    assert q(db, "SELECT kind, mode FROM risk_config_versions") == [("mode", "ENFORCED")]
    assert metrics(at)[f"Mode of `{known.POOL}`"] == "ENFORCED"


def test_jobs_page_lists_runs_and_quarantine_examples(db):
    at = app("jobs")
    frames = [d.value for d in at.dataframe]
    assert frames[0]["events_added"].tolist() == [11] and frames[0]["quarantined"].tolist() == [3]
    assert frames[1]["events_scored"].tolist() == [10]
    assert frames[2]["rows"].tolist() == [2, 1]
    assert [c.value for c in at.code] == ["{not json", "{also not json"]
    at.selectbox(key="jobs_reason").select('IpAddress "x" is not an IPv4 or IPv6 address').run()
    assert [c.value for c in at.code] == ['{"IpAddress": "x"}']


# -- authentication ----------------------------------------------------------------------------------


def test_with_a_password_nothing_is_shown_before_login(db, monkeypatch):
    monkeypatch.setenv("RISKGATE_DASHBOARD_PASSWORD", "correct horse battery")
    at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    assert not at.metric and not at.dataframe and not at.sidebar.selectbox
    assert "known.duckdb" not in texts(at)
    at.text_input(key="_rg_password").input("wrong")
    at.form_submit_button[0].click().run()
    assert any("Wrong password" in w.value for w in at.warning) and not at.metric
    at.text_input(key="_rg_password").input("correct horse battery")
    at.form_submit_button[0].click().run()
    assert metrics(at)["Sign-ins"] == "9"
    at.switch_page("views/jobs.py").run()
    assert at.dataframe  # signed in for the session
    at.sidebar.button(key="_rg_sign_out").click().run()
    assert not at.metric and not at.dataframe


def test_without_auth_a_non_loopback_address_shows_nothing(db):
    st_config.set_option("server.address", "0.0.0.0")
    at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    assert any("without authentication" in e.value for e in at.error)
    assert not at.metric and not at.dataframe


def test_the_auth_helpers():
    from dashboards import auth

    assert auth.is_loopback("127.0.0.1") and auth.is_loopback("::1") and auth.is_loopback("localhost")
    assert not auth.is_loopback("0.0.0.0") and not auth.is_loopback("") and not auth.is_loopback("10.1.2.3")
    assert auth.password_ok("s3cret", "s3cret") and not auth.password_ok("s3cre", "s3cret")


def test_oidc_secrets_are_recognised(tmp_path):
    from dashboards import auth

    f = tmp_path / "secrets.toml"
    f.write_text('[auth]\nredirect_uri = "https://x.example/oauth2callback"\ncookie_secret = "abc"\n')
    assert auth.oidc_configured_in_files([f])
    f.write_text('[auth]\nredirect_uri = "https://x.example/oauth2callback"\n')
    assert not auth.oidc_configured_in_files([f, tmp_path / "missing.toml"])


# -- the command -----------------------------------------------------------------------------------------


def test_dashboard_command_refuses_a_public_address_without_authentication(tmp_path, monkeypatch):
    from cli import app as cli_app

    monkeypatch.delenv("RISKGATE_DASHBOARD_PASSWORD", raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path))
    res = CliRunner().invoke(cli_app, ["dashboard", "--host", "0.0.0.0", "--db", str(tmp_path / "s.duckdb")])
    assert res.exit_code == 2 and "without authentication" in res.output
    assert not (tmp_path / "s.duckdb").exists()


def test_dashboard_command_runs_streamlit_with_the_store(tmp_path, monkeypatch):
    from cli import app as cli_app

    from cli import dashboard_cmd

    calls = []
    monkeypatch.setattr(dashboard_cmd, "run_forwarding_signals", lambda cmd, env: calls.append((cmd, env)) or 0)
    monkeypatch.setenv("RISKGATE_DASHBOARD_PASSWORD", "abcd efgh ijkl mnop")  # 16 characters besides the blanks
    res = CliRunner().invoke(cli_app, ["dashboard", "--host", "0.0.0.0", "--port", "8765",
                                       "--db", str(tmp_path / "s.duckdb")])
    assert res.exit_code == 0, res.output
    (cmd, env), = calls
    assert cmd[1:4] == ["-m", "dashboards.launch", "run"] and cmd[4].endswith("dashboards/app.py")
    opts = dict(zip(cmd[5::2], cmd[6::2]))
    assert opts["--server.address"] == "0.0.0.0" and opts["--server.port"] == "8765"
    assert opts["--server.headless"] == "true" and opts["--browser.gatherUsageStats"] == "false"
    assert opts["--logger.hideWelcomeMessage"] == "true"  # (its External URL was looked up on the internet)
    assert env["RISKGATE_DB"] == str(tmp_path / "s.duckdb")
    assert (tmp_path / "s.duckdb").exists()  # created and migrated before the pages read it


SHORT_OR_BLANK_ENDED = [
    ("pw5ch", "is shorter than 16 characters (not counting blanks)"),
    (" " * 20, "is shorter than 16 characters (not counting blanks)"),
    ("a long passphrase", "is shorter than 16 characters (not counting blanks)"),  # 15 besides the blanks
    ("é" * 15, "is shorter than 16 characters (not counting blanks)"),  # characters, not bytes (30)
    (" correct horse battery staple", "begins or ends with blanks"),
    ("correct horse battery staple\t", "begins or ends with blanks"),
]


@pytest.mark.parametrize("host", ["0.0.0.0", "127.0.0.1"])
@pytest.mark.parametrize("password, said", SHORT_OR_BLANK_ENDED)
def test_dashboard_command_refuses_a_short_password_before_streamlit_starts(tmp_path, monkeypatch, host, password,
                                                                            said):
    """A 5-character password opened the dashboard on 0.0.0.0: the password must be as long as the service's
    API key (16 characters besides blanks, none at an end), wherever the dashboard listens."""
    from cli import app as cli_app
    from cli import dashboard_cmd

    calls = []
    monkeypatch.setattr(dashboard_cmd, "run_forwarding_signals", lambda cmd, env: calls.append(cmd) or 0)
    monkeypatch.setenv("RISKGATE_DASHBOARD_PASSWORD", password)
    res = CliRunner().invoke(cli_app, ["dashboard", "--host", host, "--db", str(tmp_path / "s.duckdb")])
    assert res.exit_code == 2, res.output
    assert res.output.strip().splitlines() == [f"error: RISKGATE_DASHBOARD_PASSWORD {said}" + (
        "; use a long passphrase" if "shorter" in said else ", which are easily lost when it is typed or pasted; "
        "remove them")]
    assert calls == [] and not (tmp_path / "s.duckdb").exists()  # Streamlit never started, no store made


@pytest.mark.parametrize("password", ["abcd efgh ijkl mnop", "correct horse battery staple", "é" * 16])
def test_dashboard_command_takes_a_long_enough_password(tmp_path, monkeypatch, password):
    from cli import app as cli_app
    from cli import dashboard_cmd

    calls = []
    monkeypatch.setattr(dashboard_cmd, "run_forwarding_signals", lambda cmd, env: calls.append(cmd) or 0)
    monkeypatch.setenv("RISKGATE_DASHBOARD_PASSWORD", password)
    res = CliRunner().invoke(cli_app, ["dashboard", "--host", "0.0.0.0", "--db", str(tmp_path / "s.duckdb")])
    assert res.exit_code == 0, res.output
    assert len(calls) == 1


@pytest.mark.parametrize("password, said", SHORT_OR_BLANK_ENDED[::2])
def test_an_app_started_another_way_with_a_short_password_shows_nothing(db, monkeypatch, password, said):
    """`streamlit run dashboards/app.py` with a password `riskgate dashboard` refuses: no password form, no data."""
    monkeypatch.setenv("RISKGATE_DASHBOARD_PASSWORD", password)
    at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    assert any(f"RISKGATE_DASHBOARD_PASSWORD {said}" in e.value for e in at.error), [e.value for e in at.error]
    assert not at.text_input and not at.metric and not at.dataframe and not at.sidebar.selectbox


def test_the_first_page_starts_importing_what_later_pages_import_late(db, monkeypatch, tmp_path):
    """The Tuning page's curves import scikit-learn's metrics (about 0.7 s); the first page a process draws
    starts importing them in a background thread, once."""
    import sys
    import threading

    (tmp_path / "rg_warm_probe.py").write_text("LOADED = True\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(common, "WARM_UP", ("rg_warm_probe", "rg_no_such_module"))
    monkeypatch.setattr(common, "_warm_up_started", False)
    monkeypatch.delitem(sys.modules, "rg_warm_probe", raising=False)
    at = app()
    assert not at.exception
    for t in [t for t in threading.enumerate() if t.name == "riskgate-warm-up"]:
        t.join(timeout=30)
    assert sys.modules["rg_warm_probe"].LOADED  # and a module that is not there stops nothing
    assert common.warm_up() is None  # once per process


def test_tuning_suggests_thresholds_finer_than_the_sliders_step_exactly(db):
    """A calibrated model's scores are often tiny: Suggest rounded the proposal to the sliders' 4 decimals (every
    level at 0.0001 for a proposal of 0.000107), so the page's own figures missed the targets it said were met,
    and Apply would have stored the rounded values."""
    con = risk.store.connect(db)
    try:
        con.execute("UPDATE assessments SET score = score * 1e-5")
        want = tuning.tune(con, tuning.Targets(max_challenged=0.2, max_blocked=0.1))
    finally:
        con.close()
    assert any(round(v, 4) != v for v in want.thresholds.to_dict().values()), want.thresholds
    at = app("tuning")
    assert_suggests(at, 20.0, 10.0, want)
    at.button(key="tn_apply").click().run()
    at.button(key="tn_confirm").click().run()
    assert not at.exception
    con = risk.store.connect(db, read_only=True)
    try:
        from risk import levels

        assert levels.current_thresholds(con)[0] == want.thresholds
    finally:
        con.close()
