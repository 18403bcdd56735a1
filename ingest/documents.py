"""Reading the configuration files riskgate takes (JSON or YAML) without crashing on deep nesting.

Every reader of a configuration file calls these: the risk configuration (``risk.config.parse_text``: ``riskgate
config validate/set``, ``whatif --config``, the dashboard's editor), thresholds (``risk.tuning.load_thresholds``:
``whatif --thresholds``) and a column mapping (``ingest.sources.tabular.load_mapping``: ``ingest --mapping``).

Python's JSON parser and PyYAML's composer recurse, once or twice a level: a document nesting arrays and objects
(YAML: sequences and mappings, block or flow) about 500 to 1,000 levels deep ended the command with a
RecursionError and its traceback. A document nesting more than ``MAX_JSON_DEPTH`` levels (the limit of event rows,
``ingest.sources.base``) is refused with one error naming where it first does (line and column); so is a document
less deep that the YAML reader still cannot compose (it recurses twice a level, so that is about 480 levels).
No configuration document needs more than a handful of levels.

A key given twice in one object is refused too, naming the key and its line (:class:`StrictYamlLoader`,
:func:`strict_json_pairs`, :func:`repeated_key`): a reader that kept the last value silently took the second
``username:`` of a column mapping, or the second ``constants:`` block, for the first.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import yaml

from ingest.errors import ConfigurationError, RiskgateError
from ingest.sources.base import MAX_JSON_DEPTH, deeper_than, line_column


def json_too_deep(text: str) -> tuple[int, int] | None:
    """(line, column) of the bracket where JSON ``text`` first nests more than ``MAX_JSON_DEPTH`` levels, or None."""
    at = deeper_than(text)
    return None if at is None else line_column(text, at)


def yaml_nesting(text: str, limit: int | None = None) -> tuple[int, int, int]:
    """(depth, line, column): how deeply YAML (or JSON) ``text`` nests sequences and mappings, and where it first
    reaches that depth; the first place deeper than ``limit`` (default ``MAX_JSON_DEPTH``) when it is deeper.

    Read with PyYAML's parser, which does not recurse (its composer does). Text that is not YAML is read as far as
    it is, and the loader then says what is wrong with it."""
    limit = MAX_JSON_DEPTH if limit is None else limit
    depth, deepest, where = 0, 0, (0, 0)
    try:
        for event in yaml.parse(text, Loader=yaml.SafeLoader):
            if isinstance(event, (yaml.SequenceStartEvent, yaml.MappingStartEvent)):
                depth += 1
                if depth > deepest:
                    deepest, where = depth, (event.start_mark.line + 1, event.start_mark.column + 1)
                    if depth > limit:
                        break
            elif isinstance(event, (yaml.SequenceEndEvent, yaml.MappingEndEvent)):
                depth -= 1
    except yaml.YAMLError:
        pass
    return deepest, where[0], where[1]


def too_deep_message(line: int | None, column: int | None, what: str = "the document", reader: str | None = None,
                     depth: int | None = None) -> str:
    """The one-line refusal: more than ``MAX_JSON_DEPTH`` levels, or (``reader``) too deep for that reader."""
    where = f" (line {line} column {column})" if line else ""
    if reader is None:
        return f"{what} nests arrays and objects more than {MAX_JSON_DEPTH:,} levels deep{where}"
    levels = f"{depth:,} levels, deepest" if depth else "deepest"
    where = f" ({levels} at line {line} column {column})" if line else ""
    return f"{what} nests arrays and objects too deeply for the {reader} reader{where}"


def load_json(
    text: str,
    *,
    source: str | None = None,
    what: str = "the document",
    error: type[RiskgateError] = ConfigurationError,
    object_pairs_hook: Callable[[list[tuple[str, Any]]], Any] | None = None,
) -> Any:
    """``json.loads`` that refuses nesting deeper than ``MAX_JSON_DEPTH`` (``error``, naming where) instead of a
    RecursionError; other errors of the parser (``json.JSONDecodeError``, the hook's) are the caller's."""
    try:
        doc = json.loads(text, object_pairs_hook=object_pairs_hook)
    except RecursionError:
        doc = None
    else:  # parsed: the text is JSON, and its brackets say how deep it is
        if deeper_than(text) is None:
            return doc
    where = json_too_deep(text)
    if where is None:  # too deep for the parser, not for the limit (a call already deep): say where it is deepest
        depth, line, column = yaml_nesting(text)
        raise error(too_deep_message(line or None, column, what, "JSON", depth), source=source) from None
    raise error(too_deep_message(*where, what), source=source) from None


def yaml_problem(exc: yaml.YAMLError) -> tuple[str, int | None]:
    """What is wrong with YAML text, in one line (PyYAML's own message spans several, quoting the text twice), and
    the line where (None when PyYAML does not say): ``while parsing a flow mapping: expected ',' or '}', but got
    '<stream end>' (column 1)`` and 2."""
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        text = ": ".join(part for part in (exc.context, exc.problem) if part) or "not valid"
        if mark is not None:
            return f"{text} (column {mark.column + 1})", mark.line + 1
        return text, None
    return " ".join(str(exc).split()), None


def load_yaml(
    text: str,
    *,
    loader: type[yaml.SafeLoader] = yaml.SafeLoader,
    source: str | None = None,
    what: str = "the document",
    error: type[RiskgateError] = ConfigurationError,
) -> Any:
    """``yaml.load`` with ``loader`` that refuses nesting deeper than ``MAX_JSON_DEPTH``, or too deep for PyYAML's
    composer (``error``, naming where) instead of a RecursionError; ``yaml.YAMLError`` is the caller's."""
    depth, line, column = yaml_nesting(text)
    if depth > MAX_JSON_DEPTH:
        raise error(too_deep_message(line, column, what), source=source)
    try:
        return yaml.load(text, Loader=loader)  # noqa: S506 - a SafeLoader (sub)class
    except RecursionError:
        raise error(too_deep_message(line or None, column, what, "YAML", depth), source=source) from None


# -- a key given twice --------------------------------------------------------------


class RepeatedKeyYAMLError(yaml.constructor.ConstructorError):
    """:class:`StrictYamlLoader` met a key given twice in one mapping; ``problem`` says which, and
    ``problem_mark`` where the second one is."""


class StrictYamlLoader(yaml.SafeLoader):
    """SafeLoader that refuses repeated keys instead of keeping the last one (:class:`RepeatedKeyYAMLError`).

    Every reader of a configuration file uses it or a subclass: the risk configuration, thresholds and a column
    mapping (``ingest.sources.tabular.MappingLoader``)."""


def _construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode, deep: bool = False):
    # the mapping's own keys, before merge keys (``<<: *anchor``) bring in theirs: an own key overriding a merged
    # one is standard YAML, not a repeat
    seen: dict = {}
    for key_node, _value in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue
        key = loader.construct_object(key_node, deep=deep)
        try:
            first = seen.get(key)
        except TypeError:  # an unhashable key: SafeLoader's own error says so
            break
        if first is not None:
            raise RepeatedKeyYAMLError(
                None, None, f"key {key!r} is repeated (first at line {first})", key_node.start_mark
            )
        seen[key] = key_node.start_mark.line + 1
    return loader.construct_mapping(node, deep=deep)


StrictYamlLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


class RepeatedKeyError(ConfigurationError):
    """A JSON object gives one key twice (:func:`strict_json_pairs`)."""


def strict_json_pairs(pairs: list[tuple[str, Any]]) -> dict:
    """``object_pairs_hook`` for ``json.loads`` / :func:`load_json` that refuses a key given twice in one object
    (:class:`RepeatedKeyError`; Python's parser gives no position: :func:`repeated_key` finds it)."""
    out: dict = {}
    for key, value in pairs:
        if key in out:
            raise RepeatedKeyError(f"key {key!r} is repeated in one object")
        out[key] = value
    return out


def yaml_refusal(exc: yaml.YAMLError) -> tuple[str, int | None, bool]:
    """(problem, line, whether it is a repeated key) of YAML text refused by a strict loader: the repeated key's
    message (:func:`repeated_key`) or :func:`yaml_problem`'s, for the caller's own words around it (a repeated key
    is not "not valid YAML")."""
    repeated = repeated_key(exc)
    if repeated:
        return repeated[0], repeated[1], True
    return (*yaml_problem(exc), False)


def repeated_key(exc: BaseException | None = None, text: str | None = None,
                 loader: type[yaml.SafeLoader] = StrictYamlLoader) -> tuple[str, int | None] | None:
    """(message, line) of a repeated key: ``("key 'username' is repeated (first at line 2)", 5)``.

    From ``exc`` when it is the strict YAML loader's refusal; else, given ``text`` (JSON, whose parser names no
    line, read again as YAML), where ``loader`` finds the repeat; None when neither says a key is repeated."""
    if isinstance(exc, RepeatedKeyYAMLError) and exc.problem:
        return exc.problem, (exc.problem_mark.line + 1 if exc.problem_mark is not None else None)
    if text is not None:
        try:
            yaml.load(text, Loader=loader)  # noqa: S506 - a SafeLoader subclass
        except RepeatedKeyYAMLError as again:
            return repeated_key(again)
        except (yaml.YAMLError, RecursionError):
            pass
    return None
