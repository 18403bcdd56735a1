"""The dashboard's fixes of a review: stored values shown literally (AppTest and a real Chromium), a 0 % tuning
target, the configuration saved where the page says, one user per pool, quarantine totals, the thresholds in
force on the Tuning page, its wording, and a store only `riskgate ingest` wrote.

Built on the known store of ``tests/dashboard_store.py`` with a few rows added per test.
"""

from __future__ import annotations

import http.server
import json
import re
import threading
from datetime import datetime, timezone

import pyarrow as pa
import pytest
from streamlit.testing.v1 import AppTest

import risk.store
from dashboards import common
from ingest.schema import EVENT_SCHEMA, QUARANTINE_SCHEMA, conform
from ingest.store import finish_run, insert_events, insert_labels, insert_quarantine, start_run
from risk import config as rc
from risk import insights, levels, tuning
from tests import dashboard_store as known
from tests.storedb import q
from tests.test_dashboard import (  # noqa: F401 (base_store and db: the known store's fixtures)
    APP, TIMEOUT, _shown, app, assert_suggests, base_store, db, texts)

OTHER_POOL = "eu-west-1_O"


def _event(event_id: str, when: datetime, **fields) -> dict:
    """An event like the known store's (alice's London sign-in), with ``fields`` changed."""
    row = {"event_id": event_id, "user_pool_id": known.POOL, "client_id": "app1", "username": "alice",
           "event_type": "SignIn", "event_response": "Pass", "creation_date": when, "ip_address": "81.2.69.160",
           "client_ip": "81.2.69.160", "client_ip_source": "IpAddress", "ip_version": 4, "ip_prefix": "81.2.69.0/24",
           "has_context_data": True, "server_name": "auth.example.com", "server_path": "/login",
           "device_name": "Chrome 126, Windows 10", "device_type": "Desktop", "country_iso": "GB",
           "country_name": "United Kingdom", "city": "London", "latitude": 51.5, "longitude": -0.12, "asn": 20712,
           "as_org": "Andrews & Arnold", "geo_source": "lookup", "compromised_credentials": False,
           "challenge_responses": [{"challenge_name": "Password", "challenge_response": "Success"}],
           "source_format": "test", "source_file": "extra.jsonl", "source_line": 1}
    row.update(fields)
    return row


def add_rows(path, events=(), quarantine=(), labels=()) -> None:
    """Add events, quarantined rows (file, reason) and labels (event, label, value) to the store at ``path``."""
    con = risk.store.connect(path)
    try:
        start_run(con, "ingest-extra", ["extra.jsonl"], "riskgate-jsonl")
        if events:
            insert_events(con, conform(pa.Table.from_pylist(list(events)), EVENT_SCHEMA), "ingest-extra")
        if quarantine:
            t = conform(pa.Table.from_pylist([
                {"source_format": "riskgate-jsonl", "source_file": f, "source_line": i + 1, "reason": r, "raw": "{"}
                for i, (f, r) in enumerate(quarantine)]), QUARANTINE_SCHEMA)
            t = t.append_column("quarantine_id", pa.array([f"qx{i}" for i in range(len(quarantine))]))
            insert_quarantine(con, t, "ingest-extra")
        finish_run(con, "ingest-extra", status="completed", rows_read=len(events) + len(quarantine),
                   events_added=len(events), duplicates=0, quarantined=len(quarantine), reasons={})
        if labels:
            insert_labels(con, pa.table({"event_id": [e for e, _, _ in labels], "label": [k for _, k, _ in labels],
                                         "value": [v for _, _, v in labels], "source": ["test"] * len(labels)}))
    finally:
        con.close()


# -- 1. stored values are shown as written: never Markdown, HTML, math or a fetched image ----------------------

_CODE_SPAN = re.compile(r"(?<!`)(`+)(?!`)(.+?)(?<!`)\1(?!`)", re.S)


def evil_values(base: str) -> dict:
    """Stored values crafted to be rendered: images of ``base`` (which a browser would fetch), links, bold, math,
    code, colour directives, HTML."""
    return {
        "username": f"![u]({base}/u.png)",
        "city": f'![c]({base}/c.png) <b>BOLDCITY</b><a href="{base}/x">EVILLINK</a>',
        "region": "$x^2$ :red[RED]",
        "device_name": "**bold** [clk](javascript:alert(1)) tick`x`<b>b</b>",
        "server_path": f"/![p]({base}/p.png)",
        "as_org": f"![o]({base}/o.png)",
        "country_name": '<i>Evilland</i>',
    }


def add_evil(path, base: str) -> dict:
    """An event of the evil values (the newest in the store, so the Events page shows it first), a label and a
    quarantined file with such values."""
    v = evil_values(base)
    add_rows(path, events=[_event("evil-1", datetime(2026, 3, 6, 12, tzinfo=timezone.utc), **v)],
             quarantine=[(f"x`![f]({base}/f.png)`y", "evil reason")] * 5,
             labels=[("evil-1", "attack_type", f"![l]({base}/l.png)")])
    return {**v, "label": f"![l]({base}/l.png)", "file": f"x`![f]({base}/f.png)`y"}


def outside_code_spans(markdown: str) -> str:
    return _CODE_SPAN.sub("", markdown)


def assert_literal(sources: list[str], values: dict) -> None:
    """Each value is in some Markdown source only as an inline code span (literal), never as Markdown."""
    joined = "\n".join(sources)
    for name, value in values.items():
        assert common.code(value) in joined, f"{name} is not shown as a literal code span"
    bare = outside_code_spans(joined)
    for name, value in values.items():
        assert value not in bare, f"{name} is rendered as Markdown somewhere: {value!r}"
    for marker in ("![", "](http", "](javascript", "<b>", "$x^2$", ":red["):
        assert marker not in bare, f"{marker!r} outside a code span"


def test_the_markdown_helpers_show_any_value_as_written():
    assert common.md("a*b_$x$ [l](u) :smile: <b> #") == r"a\*b\_\$x\$ \[l\]\(u\) \:smile\: \<b\> \#"
    assert common.code("plain") == "`plain`"
    assert common.code("a`b") == "``a`b``" and common.code("`x`") == "`` `x` ``"  # a longer fence, padded
    assert common.code(" a ") == "`  a  `"  # CommonMark strips one space each side: the value keeps its own
    assert common.code("line\n\nbreak") == "`line  break`"  # a blank line would end the span's paragraph
    assert common.code(None) == "-" and common.code("", "none") == "none"


def test_event_page_shows_stored_values_literally(db):
    values = add_evil(db, "http://127.0.0.1:9")
    at = app("events")
    assert at.selectbox(key="ev_pick").value == "evil-1"
    header = at.header[0].value
    assert header.startswith(f"SignIn by {common.code(values['username'])} at 2026-03-06 12:00:00")
    button = next(b for b in at.button if b.key == "ev_open_user")
    shown = {k: values[k] for k in ("username", "city", "region", "device_name", "as_org", "label", "country_name")}
    shown["server"] = "auth.example.com" + values["server_path"]  # ServerName and ServerPath, as one value
    assert_literal([header, button.label, texts(at)], shown)


def test_user_page_shows_stored_values_literally(db):
    values = add_evil(db, "http://127.0.0.1:9")
    at = app("user")
    at.text_input(key="user_name").input(values["username"]).run()
    assert not at.exception
    assert "fb_valid_evil-1" in [b.key for b in at.button]
    assert_literal([texts(at)], {k: values[k] for k in ("city", "device_name", "country_name")})
    at.text_input(key="user_name").input("![u](nobody)").run()  # not found: names starting alike are listed
    assert any("Users with a similar name" in m for m in [m.value for m in at.markdown])
    assert_literal([texts(at)], {"username": values["username"]})


def test_jobs_page_shows_a_quarantined_files_name_literally(db):
    values = add_evil(db, "http://127.0.0.1:9")
    at = app("jobs")
    assert at.selectbox(key="jobs_reason").value == "evil reason"
    assert_literal([texts(at)], {"file": values["file"]})


def test_overview_map_escapes_place_names_for_plotly(db):
    values = add_evil(db, "http://127.0.0.1:9")
    at = app()
    figures = [json.loads(c.proto.spec) for c in at.get("plotly_chart") if c.proto.id.endswith("ov_map")
               or "scattergeo" in c.proto.spec]
    assert figures, "no map drawn"
    spec = json.dumps(figures[0])
    assert "<b>BOLDCITY" not in spec and "<a href" not in spec and "<i>Evilland" not in spec  # no HTML for plotly
    traces = figures[0]["data"]
    shown = {t for tr in traces for t in (tr.get("text") or []) + (tr.get("hovertext") or [])}
    assert "&lt;b&gt;BOLDCITY&lt;/b&gt;" in "".join(shown)  # plotly displays the entities as the characters
    assert any("&lt;i&gt;Evilland&lt;/i&gt;" in json.dumps(tr.get("customdata")) for tr in traces)


# -- 1, in a real browser: what the evil values point to (the check: test_dashboard_browser.py) ------------------------

class _Counter(http.server.BaseHTTPRequestHandler):
    hits: list[str] = []

    def do_GET(self):  # noqa: N802 (http.server's name)
        type(self).hits.append(self.path)
        self.send_response(404)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def tracker():
    """A loopback HTTP server counting the requests it gets (the address the evil values point to)."""
    _Counter.hits = []
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Counter)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}", _Counter.hits
    finally:
        srv.shutdown()
        srv.server_close()


# The check itself runs in tests/test_dashboard_browser.py, on the server and browser of its every-page check
# (one dashboard process and one Chromium for both): test_every_page_renders_then_no_stored_value_is_rendered_...


# -- 2. a 0 % target is a target --------------------------------------------------------------------------------


def test_tuning_suggest_takes_a_zero_percent_target(db):
    con = risk.store.connect(db, read_only=True)
    try:
        want = tuning.tune(con, tuning.Targets(max_challenged=1.0, max_blocked=0.0))
        no_target = tuning.tune(con, tuning.Targets(max_challenged=1.0))
    finally:
        con.close()
    assert want.thresholds != no_target.thresholds  # the known store tells them apart
    assert_suggests(app("tuning"), 100.0, 0.0, want)


# -- 3. the configuration is saved where the page says, and the page says what is saved -------------------------


def _raw_validate(at, text: str):
    raw = next(t for t in at.text_area if t.key.endswith("_raw"))
    raw.input(text)
    at.button(key=raw.key + "_validate").click().run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def _has_save(at) -> bool:
    return any(b.key == "cfg_save_confirm" for b in at.button)


def test_a_document_naming_a_client_is_refused_at_pool_level(db):
    at = _raw_validate(app("configuration"), json.dumps(
        {"ClientId": "app1", "AccountTakeoverRiskConfiguration": {
            "Actions": {"HighAction": {"EventAction": "BLOCK", "Notify": False}}}}))
    assert not _has_save(at)
    assert any("ClientId 'app1'" in _shown(e.value) and "pool's own configuration" in _shown(e.value)
               for e in at.error)
    assert q(db, "SELECT count(*) FROM risk_config_versions") == [(0,)]


def test_a_document_naming_another_pool_is_refused_before_save(db):
    at = _raw_validate(app("configuration"), json.dumps(
        {"UserPoolId": "us-east-1_Other", "AccountTakeoverRiskConfiguration": {
            "Actions": {"HighAction": {"EventAction": "BLOCK", "Notify": False}}}}))
    assert not _has_save(at)
    problems = [_shown(e.value) for e in at.error]
    assert any("UserPoolId 'us-east-1_Other' is not the pool this page edits" in e for e in problems), problems
    assert not any("--user-pool-id" in e for e in problems)  # not the command line's wording
    assert q(db, "SELECT count(*) FROM risk_config_versions") == [(0,)]


def test_an_empty_document_is_shown_as_the_reset_it_is(db):
    at = _raw_validate(app("configuration"), "{}")
    defaults = rc.summarize(rc.default_configuration().with_scope(known.POOL, None))
    shown = texts(at)
    assert f"resets pool `{known.POOL}` to the shipped default configuration" in shown
    assert common.code(defaults) in shown and "not configured (NO_ACTION)" not in shown
    at.button(key="cfg_save_confirm").click().run()
    assert q(db, "SELECT user_pool_id, client_id, kind FROM risk_config_versions") == [(known.POOL, None, "reset")]


def test_a_clients_document_names_the_client_and_what_will_apply(db):
    at = app("configuration")
    at.selectbox(key="cfg_client").select("app1").run()
    at = _raw_validate(at, json.dumps({"ClientId": "app1", "AccountTakeoverRiskConfiguration": {
        "Actions": {"HighAction": {"EventAction": "BLOCK", "Notify": False}}}}))
    assert "Save as a new version of the configuration of app client `app1` of pool" in texts(at)
    assert "High=BLOCK" in texts(at)
    at.button(key="cfg_save_confirm").click().run()
    assert q(db, "SELECT client_id, kind FROM risk_config_versions") == [("app1", "set")]
    at = _raw_validate(at, "{}")
    assert "resets app client `app1`" in texts(at) and "uses the pool's again" in texts(at)


# -- 4. one user per pool ----------------------------------------------------------------------------------------


def _add_other_pools_alice(db) -> None:
    """alice of another pool (o01) and an alice event without a pool id (n01), both before e03."""
    add_rows(db, events=[
        _event("o01", datetime(2026, 3, 2, 12, tzinfo=timezone.utc), user_pool_id=OTHER_POOL),
        _event("n01", datetime(2026, 3, 2, 13, tzinfo=timezone.utc), user_pool_id=None),
    ])


def test_previous_signins_are_those_of_the_events_own_user(db, monkeypatch):
    _add_other_pools_alice(db)
    con = risk.store.connect(db, read_only=True)
    try:
        assert rc.unpooled_pool(con) is None  # two pools: an event without a pool id is no pool's
        assert insights.previous_signins(con, "e03")["event_id"].tolist() == ["e02", "e01"]
        assert insights.previous_signins(con, "n01")["event_id"].tolist() == []
        monkeypatch.setenv(rc.POOL_ENV, known.POOL)  # now pool-less events are this pool's
        assert insights.previous_signins(con, "e03")["event_id"].tolist() == ["n01", "e02", "e01"]
        monkeypatch.setenv(rc.POOL_ENV, OTHER_POOL)
        assert insights.previous_signins(con, "n01")["event_id"].tolist() == ["o01"]
    finally:
        con.close()
    monkeypatch.delenv(rc.POOL_ENV)
    at = app("events")
    at.selectbox(key="ev_pick").select("e03").run()
    previous = [d.value for d in at.dataframe if "event_id" in d.value.columns][-1]
    assert previous["event_id"].tolist() == ["e02", "e01"]


def test_user_page_shows_the_user_of_the_chosen_pool(db):
    _add_other_pools_alice(db)
    at = app("user")
    at.sidebar.selectbox(key="scope_pool").select(OTHER_POOL).run()
    at.text_input(key="user_name").input("alice").run()
    assert not at.exception
    listed = {b.key.removeprefix("fb_valid_") for b in at.button if b.key and b.key.startswith("fb_valid_")}
    assert "o01" in listed and not listed & {"e01", "e02", "e03"}
    at.sidebar.selectbox(key="scope_pool").select("All pools").run()  # every pool: the name across pools
    listed = {b.key.removeprefix("fb_valid_") for b in at.button if b.key and b.key.startswith("fb_valid_")}
    assert listed == {"o01", "n01", "e01", "e02", "e03"}


# -- 5. quarantine totals ----------------------------------------------------------------------------------------


def test_jobs_page_counts_the_whole_quarantine(db):
    add_rows(db, quarantine=[("many.jsonl", f"reason {i:02d}") for i in range(60)])
    at = app("jobs")
    assert "**63 rows** quarantined for 62 distinct reasons (the 50 most frequent shown)." in texts(at)
    assert len(at.dataframe[-1].value) == 50


def test_jobs_page_says_nothing_of_a_top_50_when_all_reasons_are_shown(db):
    at = app("jobs")
    assert "**3 rows** quarantined for 2 distinct reasons." in texts(at)


# -- 6, 7. the Tuning page: the thresholds in force as the header says; events, not sign-ins ---------------------


def test_tuning_page_compares_with_the_thresholds_in_force_it_shows(db):
    at = app("tuning")
    assert "**Thresholds in force** (version 0)" in texts(at)
    new = levels.Thresholds(0.05, 0.1, 0.15)
    con = risk.store.connect(db)
    try:
        levels.set_thresholds(con, new, source="cli")  # outside the dashboard
    finally:
        con.close()
    at.run()  # at once: the page reads the store's signature, which the write moved
    assert not at.exception
    assert "**Thresholds in force** (version 1): Low 0.05 · Medium 0.1 · High 0.15" in texts(at)
    proposed = levels.Thresholds(*(at.slider(key=f"tn_{n}").value for n in ("low", "medium", "high")))
    con = risk.store.connect(db, read_only=True)
    try:
        want = tuning.whatif(con, None, proposed)
        trade = tuning.tradeoff(con, proposed)["outcomes"]
        in_force = tuning.tradeoff(con)["outcomes"]
    finally:
        con.close()
    assert want["current"] != want["outcomes"]  # the known store tells the two apart
    table = next(d.value for d in at.dataframe if "MfaChallenge" in d.value.columns)
    table = table.set_index(table.columns[0])
    assert table.loc["all, in force", ["Allow", "MfaChallenge", "Block"]].tolist() == [
        want["current"][k] for k in ("Allow", "MfaChallenge", "Block")]
    delta = (trade["attacks_stopped"]["rate"] - in_force["attacks_stopped"]["rate"]) * 100
    metric = next(m for m in at.metric if m.label == "Attacks stopped")
    assert metric.delta == (f"{delta:+.2f} pts" if abs(delta) >= 5e-3 else None)


def test_tuning_caption_counts_events_not_sign_ins(db):
    at = app("tuning")
    captions = [c.value for c in at.caption]
    assert any(c.startswith("10 assessed events") for c in captions), captions  # e06 is a PasswordChange
    assert not any("assessed sign-in" in c for c in captions)


# -- 8. a store only `riskgate ingest` wrote ---------------------------------------------------------------------


def test_a_store_only_ingest_wrote_gets_a_clear_message(db, tmp_path, monkeypatch):
    from ingest import store as ingest_store

    path = tmp_path / "ingested.duckdb"
    con = ingest_store.connect(path)  # ingest's tables only, as `riskgate ingest` leaves them
    try:
        insert_events(con, conform(pa.Table.from_pylist([_event("i01", datetime(2026, 3, 1, tzinfo=timezone.utc))]),
                                   EVENT_SCHEMA), "ingest-x")
    finally:
        con.close()
    monkeypatch.setenv("RISKGATE_DB", str(path))
    at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    assert not at.exception
    errors = [e.value for e in at.error]
    assert len(errors) == 1 and "Catalog Error" not in errors[0], errors
    assert common.md(f"riskgate models --db {path}") in errors[0] and "riskgate dashboard" in errors[0]  # literal
    assert not at.metric and not at.dataframe  # no page drawn


def test_tuning_apply_is_refused_when_the_history_was_scored_by_another_model(db):
    # a model trained after the history was scored (v2 active; the assessments are v1's): as `tune --apply`
    con = risk.store.connect(db)
    try:
        con.execute("""INSERT INTO models (version, created_at, kind, features, sha256, model, active)
                       VALUES (2, now(), 'RiskModel/supervised', '[]', 'x', ''::BLOB, true)""")
    finally:
        con.close()
    at = app("tuning")
    at.slider(key="tn_low").set_value(0.5).run()
    at.button(key="tn_apply").click().run()
    at.button(key="tn_confirm").click().run()
    assert q(db, "SELECT count(*) FROM risk_thresholds") == [(0,)]
    assert any("thresholds not stored" in e.value and "model v1" in e.value and "active model is v2" in e.value
               for e in at.error), [e.value for e in at.error]


def test_the_event_picker_says_not_assessed_or_no_risk_never_nan(db):
    # a new event has no assessment (pandas gives NaN for its level); e01 was assessed below Low ("No risk")
    add_rows(db, events=[_event("new-1", datetime(2026, 3, 6, 12, tzinfo=timezone.utc), client_ip=None)])
    at = app("events")
    options = at.selectbox(key="ev_pick").options
    assert not [o for o in options if "nan" in o.split(" · ")], options
    assert any(o.endswith("· - · not assessed") for o in options), options  # new-1: no IP, no score
    assert any(o.endswith("· No risk") for o in options), options


def test_tuning_page_shows_a_labels_attack_type_literally_in_its_warnings(db):
    values = add_evil(db, "http://127.0.0.1:9")
    with risk.store.connect(db) as con:  # the evil event assessed, so its label is part of the tuning history
        con.execute("INSERT INTO assessments (event_id, score, risk_level, model_version, scored_at) "
                    "SELECT 'evil-1', 0.95, 'High', max(model_version), now() FROM assessments")
    at = app("tuning")
    assert not at.exception
    warnings = [w.value for w in at.warning if "labelled attack" in w.value]
    assert warnings and values["label"] not in warnings[0] and common.md(values["label"]) in warnings[0]


def test_a_sigterm_to_riskgate_dashboard_stops_streamlit_too(tmp_path):
    """``kill PID`` (systemd, a container's stop) ended `riskgate dashboard` and left its Streamlit child serving
    the store, re-parented to pid 1: the signal is passed on, and the port is free once it ends."""
    import os
    import signal
    import subprocess
    import sys
    import time
    import urllib.request

    from tests.dashboard_server import free_port
    from tests.service_support import rg

    db = tmp_path / "s.duckdb"
    rg("models", db=db)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "RISKGATE_DASHBOARD_PASSWORD"}
    proc = subprocess.Popen([sys.executable, "-m", "cli", "dashboard", "--db", str(db), "--port", str(port)],
                            cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    url = f"http://127.0.0.1:{port}/_stcore/health"

    def answers() -> bool:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                return r.read() == b"ok"
        except OSError:
            return False

    try:
        deadline = time.monotonic() + 90
        while not answers():
            assert proc.poll() is None and time.monotonic() < deadline, "the dashboard did not start"
            time.sleep(0.2)
        os.kill(proc.pid, signal.SIGTERM)  # this process alone, not its group
        proc.wait(timeout=30)
        deadline = time.monotonic() + 15
        while answers():
            assert time.monotonic() < deadline, "Streamlit still serves after riskgate dashboard ended"
            time.sleep(0.2)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # whatever is left of the group
        except ProcessLookupError:
            pass
