"""A password is never stored, in the labels table either (README: "A password is never stored by ingest").

``"Labels": {"password": "…"}`` on a riskgate JSON line was stored as the label ``password`` with the password as
its value; so was a password member inside a label's object value, a mapping's label named password or reading a
password column, and a ``riskgate labels load`` row naming the label password."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from cli import app
from ingest.errors import ConfigurationError
from ingest.sources.tabular import load_mapping
from tests.storedb import q as rows
from tests.test_docs import README
from tests.test_ingest import env  # noqa: F401 (the fixture: the test GeoIP databases, a store in tmp_path)
from tests.test_ingest_fixes import counts, ingest

runner = CliRunner()
SECRET = "S3cretLabelMarker!77"
ROW = '{"EventId":"%s","Username":"alice","EventType":"SignIn","EventResponse":"Pass","CreationDate":"2026-03-01T08:1%d:02Z"%s}'


def test_a_label_named_password_is_left_out_and_its_event_stored(env):
    f = env / "pw.jsonl"
    f.write_text("\n".join([
        ROW % ("t1", 1, ',"Labels":{"password":"%s","is_account_takeover":true}' % SECRET),
        ROW % ("t2", 2, ',"Labels":{" PassWord ":"%s"}' % SECRET),
        ROW % ("t3", 3, ',"Labels":{"Pass\\u0077ord":"%s","attack_type":"x"}' % SECRET),
        ROW % ("t4", 4, ',"Labels":{"note":{"Password":"%s","k":1},"list":["a",{"password":"%s"}]}' % (SECRET, SECRET)),
        ROW.replace('"EventId":"%s",', "") % (5, ',"Labels":{"password":"%s"}' % SECRET),  # a derived id
    ]) + "\n")
    out, _ = ingest(f)
    assert counts(out) == (5, 5, 0, 0)
    db = env / "store.duckdb"
    assert rows(db, "SELECT event_id, label, value FROM labels ORDER BY event_id, label") == [
        ("t1", "is_account_takeover", "true"), ("t3", "attack_type", "x"),
        ("t4", "list", '["a", {}]'), ("t4", "note", '{"k": 1}')]
    assert SECRET.encode() not in db.read_bytes()


@pytest.mark.parametrize("labels, message", [
    ("{password: note}", "labels.password: a label named password is never stored"),
    ("{' Password ': note}", "labels. Password : a label named password is never stored"),
    ("{note: Password}", "a password column is never stored, not read for labels.note ('Password')"),
])
def test_a_mapping_label_named_password_or_reading_a_password_column_is_refused(tmp_path, labels, message):
    path = tmp_path / "m.yaml"
    path.write_text("columns: {username: user, creation_date: ts, event_response: ok}\n"
                    f"constants: {{event_type: SignIn}}\nlabels: {labels}\n")
    with pytest.raises(ConfigurationError) as info:
        load_mapping(str(path), "csv")
    assert str(info.value) == f"{path}: invalid column mapping: {message}"


def test_a_mapping_reading_a_password_column_for_a_field_or_header_is_refused(tmp_path):
    path = tmp_path / "m.yaml"
    path.write_text("columns: {username: user, creation_date: ts, event_response: ok, user_sub: PASSWORD}\n"
                    "constants: {event_type: SignIn}\nheaders: {X-Secret: password}\n")
    with pytest.raises(ConfigurationError) as info:
        load_mapping(str(path), "csv")
    assert str(info.value).endswith("a password column is never stored, not read for columns.user_sub ('PASSWORD'), "
                                    "headers.X-Secret ('password')")


def test_ingest_with_such_a_mapping_stores_nothing(env):
    data = env / "t.csv"
    data.write_text(f"user,ts,ok,Password\nalice,2026-03-01T08:00:00Z,Pass,{SECRET}\n")
    mapping = env / "m.yaml"
    mapping.write_text("columns: {username: user, creation_date: ts, event_response: ok}\n"
                       "constants: {event_type: SignIn}\nlabels: {note: Password}\n")
    res = runner.invoke(app, ["ingest", str(data), "--mapping", str(mapping)])
    assert res.exit_code == 2, res.output
    assert not (env / "store.duckdb").exists()


def test_labels_load_rejects_a_label_named_password_by_line(env):
    f = env / "l.csv"
    f.write_text(f"event_id,label,value,source\ne1,password,{SECRET},x\ne1, PASSWORD ,{SECRET},x\n"
                 "e1,is_account_takeover,1,x\n")
    res = runner.invoke(app, ["labels", "load", str(f), "--json"])
    assert res.exit_code == 0, res.output
    db = env / "store.duckdb"
    assert rows(db, "SELECT event_id, label, value FROM labels") == [("e1", "is_account_takeover", "true")]
    out = json.loads(res.stdout)
    assert (out["read"], out["added"], out["rejected"]) == (3, 1, 2)
    assert out["rejections"] == [
        {"line": 2, "reason": "a label named 'password' is not stored: a password is never stored"},
        {"line": 3, "reason": "a label named 'PASSWORD' is not stored: a password is never stored"}]
    assert SECRET not in res.output and SECRET.encode() not in db.read_bytes()


def test_the_readme_says_so():
    text = " ".join(README.split())
    assert "Nor is it a label: a label named `password`" in text
    assert "A label named `password` (any case) is a bad row too" in text
