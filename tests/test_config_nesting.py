"""Configuration files nesting too deeply (ingest.documents): one line naming the file and where, exit 2, from every
reader (risk configuration, thresholds, column mapping) instead of a RecursionError's traceback and exit 1."""

from __future__ import annotations

import pytest
import yaml
from typer.testing import CliRunner

from cli import app
from ingest import documents
from ingest.errors import ConfigurationError
from ingest.sources.base import MAX_JSON_DEPTH
from ingest.sources.tabular import load_mapping
from risk import config as rc
from risk import tuning
from risk.levels import ThresholdsError

DEEP = {  # name -> (text, "line L column C" where it first nests more than 512 levels)
    "d1200.json": ("[" * 1200 + "]" * 1200 + "\n", "line 1 column 513"),
    "flow5000.yaml": ("a: " + "[" * 5000 + "]" * 5000 + "\n", "line 1 column 515"),
    "dashes5000.yaml": ("- " * 5000 + "x\n", "line 1 column 1025"),
    "block5000.yaml": ("a:\n" + "".join("  " * i + "-\n" for i in range(1, 5000)) + "  " * 5000 + "- x\n",
                       "line 513 column 1025"),
    "j600.json": ('{"UserPoolId": ' + "[" * 599 + "]" * 599 + "}\n", "line 1 column 527"),
}


def _what(command: tuple[str, ...]) -> str:
    return {"--thresholds": "thresholds file", "--mapping": "the mapping file"}.get(command[-1], "the document")


COMMANDS = [("config", "validate"), ("config", "set"), ("whatif", "--thresholds"), ("whatif", "--config"),
            ("ingest", "--mapping")]


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
@pytest.mark.parametrize("name", list(DEEP))
def test_every_reader_refuses_deep_nesting_in_one_line_exit_2(tmp_path, monkeypatch, command, name):
    monkeypatch.delenv(rc.POOL_ENV, raising=False)
    text, where = DEEP[name]
    path = tmp_path / name
    path.write_text(text)
    db = str(tmp_path / "store.duckdb")
    if command[0] == "ingest":
        csv = tmp_path / "events.csv"
        csv.write_text("username,event_type\nu,SignIn\n")
        args = ["ingest", str(csv), "--format", "csv", "--mapping", str(path), "--db", db]
    elif command == ("config", "validate"):
        args = [*command, str(path)]
    else:
        args = [*command, str(path), "--db", db]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 2, res.output
    assert res.stderr == (f"error: {path}: {_what(command)} nests arrays and objects more than "
                          f"{MAX_JSON_DEPTH} levels deep ({where})\n")


def test_yaml_too_deep_for_its_reader_below_the_limit_is_one_error_too(tmp_path):
    """PyYAML's composer recurses twice a level: 500 levels are too many for it although not more than 512."""
    path = tmp_path / "l500.yaml"
    path.write_text("a: " + "[" * 499 + "]" * 499 + "\n")
    expected = "nests arrays and objects too deeply for the YAML reader (500 levels, deepest at line 1 column 502)"
    with pytest.raises(ThresholdsError) as info:
        tuning.load_thresholds(str(path))
    assert str(info.value) == f"{path}: thresholds file {expected}"
    with pytest.raises(ConfigurationError) as info:
        load_mapping(str(path), "csv")
    assert str(info.value) == f"{path}: the mapping file {expected}"
    with pytest.raises(ConfigurationError) as info:
        rc.load_file(path)
    assert str(info.value) == f"{path}: the document {expected}"


def test_json_of_500_levels_is_read_as_json(tmp_path):
    path = tmp_path / "l500.json"
    path.write_text("[" * 500 + "]" * 500 + "\n")
    with pytest.raises(ThresholdsError) as info:
        tuning.load_thresholds(str(path))
    assert str(info.value) == f"{path}: thresholds file must hold an object with low, medium and high"
    with pytest.raises(rc.RiskConfigurationError) as info:
        rc.load_file(path)
    assert str(info.value) == (f"{path}: invalid risk configuration (1 problem):\n  expected an object (mapping), "
                               "got a list " + "[" * 60 + "…")


def test_json_up_to_the_limit_is_read_and_its_problems_carry_their_lines(tmp_path):
    deep = "[" * (MAX_JSON_DEPTH - 1) + "]" * (MAX_JSON_DEPTH - 1)
    path = tmp_path / "deep.json"
    path.write_text('{\n  "UserPoolId": "us-east-1_X",\n  "ClientId": ' + deep + "\n}\n")
    with pytest.raises(rc.RiskConfigurationError) as info:
        rc.load_file(path)
    assert [str(p) for p in info.value.problems] == [
        "line 3: ClientId: expected a string, got a list " + "[" * 60 + "…"]
    path.write_text('{"ClientId": [' + deep + "]}")
    with pytest.raises(ConfigurationError, match=r"more than 512 levels deep \(line 1 column 525\)$"):
        rc.load_file(path)


def test_the_helpers_say_where_and_leave_other_errors_to_the_caller():
    assert documents.json_too_deep("[" * 513 + "]" * 513) == (1, 513)
    assert documents.json_too_deep('["' + "[" * 600 + '"]') is None  # brackets in a string are text
    assert documents.yaml_nesting("a:\n  b: [1, {c: 2}]\n") == (4, 2, 10)
    with pytest.raises(yaml.YAMLError):
        documents.load_yaml("a: [\n")
    with pytest.raises(ValueError, match="Expecting value"):
        documents.load_json("[1,]")
