"""A key given twice in one object of a configuration file (ingest.documents.StrictYamlLoader / strict_json_pairs):
refused by every reader (risk configuration, thresholds, column mapping) in one line naming the key and its line,
exit 2, before anything is read. A column mapping took the last of two in silence: a second ``username:`` made every
username the note column, a second ``constants:`` block stored every event as SignUp."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from cli import app
from ingest.errors import ConfigurationError
from ingest.sources.tabular import load_mapping
from risk import config as rc
from tests.test_docs import README

CSV = "user,ts,ok,note\nalice,2026-06-01T08:30:09Z,1,n1\nbob,2026-06-01T08:31:09Z,0,n2\n"

MAPPINGS = {  # name -> (text, where the second key is, the message)
    "field.yaml": ("columns:\n  username: user\n  creation_date: ts\n  event_response: ok\n  username: note\n"
                   "constants: {event_type: SignIn}\nvalues: {event_response: {\"1\": Pass, \"0\": Fail}}\n",
                   5, "key 'username' is repeated (first at line 2)"),
    "field.json": ('{"columns": {"username": "user", "creation_date": "ts", "event_response": "ok",\n'
                   '             "username": "note"},\n "constants": {"event_type": "SignIn"},\n'
                   ' "values": {"event_response": {"1": "Pass", "0": "Fail"}}}\n',
                   2, "key 'username' is repeated (first at line 1)"),
    "block.yaml": ("columns:\n  username: user\n  creation_date: ts\n  event_response: ok\n"
                   "constants: {event_type: SignIn}\nvalues: {event_response: {\"1\": Pass, \"0\": Fail}}\n"
                   "constants: {event_type: SignUp}\n",
                   7, "key 'constants' is repeated (first at line 5)"),
    "value.yaml": ("columns: {username: user, creation_date: ts, event_response: ok}\n"
                   "constants: {event_type: SignIn}\n"
                   "values:\n  event_response:\n    1: Pass\n    0: Fail\n    '1': Fail\n",  # '1' and 1: both text
                   7, "key '1' is repeated (first at line 5)"),
}


@pytest.mark.parametrize("name", list(MAPPINGS))
def test_a_mapping_giving_a_key_twice_is_refused_naming_the_key_and_its_line(tmp_path, name):
    text, line, message = MAPPINGS[name]
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ConfigurationError) as info:
        load_mapping(str(path), "csv")
    assert str(info.value) == f"{path}:{line}: invalid column mapping: {message}"


@pytest.mark.parametrize("name", list(MAPPINGS))
def test_ingest_with_such_a_mapping_reads_nothing_exit_2(tmp_path, name):
    text, line, message = MAPPINGS[name]
    path = tmp_path / name
    path.write_text(text)
    data = tmp_path / "events.csv"
    data.write_text(CSV)
    db = tmp_path / "store.duckdb"
    res = CliRunner().invoke(app, ["ingest", str(data), "--format", "csv", "--mapping", str(path), "--db", str(db),
                                   "--geoip-city", "none", "--geoip-asn", "none"])
    assert res.exit_code == 2, res.output
    assert res.stderr == f"error: {path}:{line}: invalid column mapping: {message}\n"
    assert not db.exists()


def test_a_merged_key_given_again_is_no_repeat(tmp_path):
    """YAML's merge key (``<<``) brings in keys that the mapping's own may override, as in risk configurations."""
    path = tmp_path / "ok.yaml"
    path.write_text("columns: {username: user, creation_date: ts, event_response: ok}\n"
                    "constants: {event_type: SignIn}\n"
                    "values: {event_response: {<<: {\"1\": Pass, \"0\": Fail}, \"0\": Fail}}\n")
    m = load_mapping(str(path), "csv")
    assert m.columns == {"username": "user", "creation_date": "ts", "event_response": "ok"}
    assert m.values == {"event_response": {"1": "Pass", "0": "Fail"}}


def test_the_readme_says_so():
    assert "errors name the unknown\n  field, the field mapped twice" in README
    assert "`key 'username' is repeated (first at line 2)`" in README


READERS = [("config", "validate"), ("config", "set"), ("whatif", "--config"), ("whatif", "--thresholds"),
           ("ingest", "--mapping")]
_PREFIX = {"--thresholds": "thresholds file: ", "--mapping": "invalid column mapping: "}


@pytest.mark.parametrize("command", READERS, ids=" ".join)
@pytest.mark.parametrize("suffix", ["yaml", "json"])
def test_every_reader_names_the_repeated_key_and_its_line(tmp_path, monkeypatch, command, suffix):
    monkeypatch.delenv(rc.POOL_ENV, raising=False)
    path = tmp_path / f"doc.{suffix}"
    path.write_text('{"low": 0.2,\n "medium": 0.5,\n "low": 0.3}\n' if suffix == "json"
                    else "low: 0.2\nmedium: 0.5\nlow: 0.3\n")
    db = str(tmp_path / "store.duckdb")
    if command[0] == "ingest":
        data = tmp_path / "events.csv"
        data.write_text(CSV)
        args = ["ingest", str(data), "--format", "csv", "--mapping", str(path), "--db", db]
    elif command == ("config", "validate"):
        args = [*command, str(path)]
    else:
        args = [*command, str(path), "--db", db]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 2, res.output
    assert res.stderr == (f"error: {path}:3: {_PREFIX.get(command[-1], '')}"
                          "key 'low' is repeated (first at line 1)\n")


@pytest.mark.parametrize("command", READERS, ids=" ".join)
def test_a_key_that_is_a_list_is_one_error_not_a_traceback(tmp_path, monkeypatch, command):
    """The strict loader looked an unhashable key up in a dict: TypeError, a traceback and exit 1."""
    monkeypatch.delenv(rc.POOL_ENV, raising=False)
    path = tmp_path / "doc.yaml"
    path.write_text("? [a, b]\n: c\n")
    db = str(tmp_path / "store.duckdb")
    if command[0] == "ingest":
        data = tmp_path / "events.csv"
        data.write_text(CSV)
        args = ["ingest", str(data), "--format", "csv", "--mapping", str(path), "--db", db]
    elif command == ("config", "validate"):
        args = [*command, str(path)]
    else:
        args = [*command, str(path), "--db", db]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 2, res.output
    assert "found unhashable key" in res.stderr and len(res.stderr.splitlines()) == 1


def test_the_strict_pieces_are_ingests_and_risk_config_uses_them():
    """One mechanism: ingest may not import risk, so it lives in ingest.documents."""
    from ingest.documents import StrictYamlLoader, strict_json_pairs

    assert rc.StrictYamlLoader is StrictYamlLoader and rc.strict_json_pairs is strict_json_pairs
