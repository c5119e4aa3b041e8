"""Decoding (strict JSON, text form) and extraction of GMN documents from LLM replies."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.gmn import (
    StrictJSONError,
    TextFormError,
    extract_document,
    loads_strict,
    parse_text_form,
    validate_gmn,
    validate_reply,
)

MINIMAL: dict[str, Any] = {
    "nodes": [
        {"id": "s", "type": "state", "properties": {"num_states": 2}},
        {"id": "o", "type": "observation", "properties": {"num_observations": 2}},
        {"id": "a", "type": "action", "properties": {"num_actions": 2}},
        {"id": "b", "type": "transition"},
    ],
    "edges": [
        {"source": "s", "target": "o", "type": "generates"},
        {"source": "s", "target": "b", "type": "depends_on"},
        {"source": "a", "target": "b", "type": "depends_on"},
    ],
}
MINIMAL_JSON = json.dumps(MINIMAL)

SPEC_TEXT = """\
# whole-line comments start with '#' (no trailing comments); blank lines are ignored
[nodes]
cell: state {"num_states": 4}
seen: observation {num_observations: 4, description: "which cell"}
step: action {num_actions: 5}
move_model: transition
[edges]
cell -> seen: generates
cell -> move_model: depends_on
step -> move_model: depends_on
"""


def codes(data: Any) -> set[str]:
    return set(validate_gmn(data).codes)


def text_doc(node_lines: list[str], edge_lines: list[str] | None = None) -> str:
    edges = edge_lines if edge_lines is not None else ["s -> o: generates"]
    return "\n".join(["[nodes]", *node_lines, "[edges]", *edges])


# --- strict JSON ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        '{"nodes": [], "edges": [], "x": NaN}',
        '{"nodes": [{"id": "s", "type": "state", "properties": {"num_states": Infinity}}]}',
        '{"nodes": [], "edges": [-Infinity]}',
        '{"nodes": [], "nodes": [], "edges": []}',
        '{"nodes": [{"id": "a", "id": "b"}], "edges": []}',
        '{"nodes": [], "edges": []} trailing',
        '{"nodes": [], "edges": [],}',
        '{"nodes": [1, 2,], "edges": []}',
        "{'nodes': [], 'edges': []}",
        "{",
        "",
        " \r\n\t",
    ],
)
def test_undecodable_json_is_gmn001(text: str) -> None:
    report = validate_gmn(text)
    assert report.codes == ["GMN001"]
    assert report.errors[0].path == "$"


def test_non_utf8_and_lone_surrogates_are_gmn001() -> None:
    assert codes(MINIMAL_JSON.encode("utf-16")) == {"GMN001"}
    assert codes(b'{"nodes": [], "edges": [], "name": "\xe9"}') == {"GMN001"}
    assert codes('{"nodes": [], "name": "\ud800"}') == {"GMN001"}


def test_loads_strict_messages() -> None:
    with pytest.raises(StrictJSONError, match="trailing comma"):
        loads_strict('{"a": [1, 2,]}')
    with pytest.raises(StrictJSONError, match="trailing comma"):
        loads_strict('{"a": 1,\n}')
    with pytest.raises(StrictJSONError, match="duplicate object key"):
        loads_strict('{"a": {"b": 1, "b": 1}}')
    with pytest.raises(StrictJSONError, match="NaN"):
        loads_strict("[NaN]")
    assert loads_strict(' {"a": [1, 2.5, "x", null, true]} \n') == {"a": [1, 2.5, "x", None, True]}


def test_non_object_top_level_is_gmn003() -> None:
    assert codes("[" + MINIMAL_JSON + "]") == {"GMN003"}
    assert codes("42") == {"GMN003"}
    assert codes(' "text"') == {"GMN003"}
    assert codes("null") == {"GMN003"}
    assert codes([MINIMAL]) == {"GMN003"}


def _nested_metadata(depth: int) -> dict[str, Any]:
    """A valid document whose deepest value sits at exactly `depth` levels."""
    doc = copy.deepcopy(MINIMAL)
    value: Any = []
    for _ in range(depth - 3):  # top-level object = 1, metadata object = 2, list levels follow
        value = [value]
    doc["metadata"] = {"deep": value}
    return doc


def test_nesting_depth_limit() -> None:
    assert validate_gmn(json.dumps(_nested_metadata(64))).valid
    assert codes(json.dumps(_nested_metadata(65))) == {"GMN001"}
    assert codes(_nested_metadata(65)) == {"GMN001"}
    assert codes("[" * 100_000 + "]" * 100_000) == {"GMN001"}
    assert codes('{"a": ' * 100_000 + "1" + "}" * 100_000) == {"GMN001"}


def test_overflowing_numbers_are_not_finite() -> None:
    doc = json.loads(MINIMAL_JSON)
    doc["nodes"][3]["properties"] = {"matrix": [[[1, 1], [1, 1]], [[0, 0], [0, 0]]]}
    text = json.dumps(doc)
    assert validate_gmn(text).valid
    assert codes(text.replace("[[[1, 1]", "[[[1e400, 1]")) == {"GMN044"}
    assert codes(text.replace("[[[1, 1]", "[[[" + "9" * 400 + ", 1]")) == {"GMN044"}
    huge = MINIMAL_JSON.replace('"num_states": 2', '"num_states": ' + "9" * 5000)
    assert codes(huge) == {"GMN042"}
    assert codes(MINIMAL_JSON.replace('"num_states": 2', '"num_states": 1e400')) == {"GMN041"}
    assert validate_gmn(MINIMAL_JSON[:-1] + ', "metadata": {"big": 1e400}}').valid


def test_python_inputs() -> None:
    assert validate_gmn(MINIMAL).valid
    bad = copy.deepcopy(MINIMAL)
    bad["metadata"] = {"x": float("nan")}
    assert codes(bad) == {"GMN001"}
    assert codes({"nodes": [object()], "edges": []}) == {"GMN001"}


@settings(max_examples=150, deadline=None, database=None)
@given(st.one_of(st.binary(max_size=200), st.text(max_size=200)))
def test_validator_never_raises(data: bytes | str) -> None:
    report = validate_gmn(data)
    assert report.valid is False or isinstance(report.document, dict)


# --- text form -----------------------------------------------------------------------------


def test_spec_text_form_converts_to_json_model() -> None:
    assert parse_text_form(SPEC_TEXT) == {
        "nodes": [
            {"id": "cell", "type": "state", "properties": {"num_states": 4}},
            {
                "id": "seen",
                "type": "observation",
                "properties": {"num_observations": 4, "description": "which cell"},
            },
            {"id": "step", "type": "action", "properties": {"num_actions": 5}},
            {"id": "move_model", "type": "transition", "properties": {}},
        ],
        "edges": [
            {"source": "cell", "target": "seen", "type": "generates"},
            {"source": "cell", "target": "move_model", "type": "depends_on"},
            {"source": "step", "target": "move_model", "type": "depends_on"},
        ],
    }
    assert validate_gmn(SPEC_TEXT).valid
    assert validate_gmn(SPEC_TEXT.encode()).valid


def test_text_form_whitespace_comments_and_repeated_sections() -> None:
    text = (
        "\r\n  # comment\r\n[edges]\r\n\ts  ->\to :\tgenerates \r\n"
        "[nodes]\n  s :state   {num_states: 2}\n o: observation{num_observations : 2}\n\n"
        "[edges]\ns->b:depends_on\na -> b: depends_on\n"
        '[nodes]\na: action {"num_actions": 2, "action_names": ["l", "r"]}\nb: transition {}\n'
    )
    doc = parse_text_form(text)
    assert [n["id"] for n in doc["nodes"]] == ["s", "o", "a", "b"]
    assert [e["target"] for e in doc["edges"]] == ["o", "b", "b"]
    assert doc["nodes"][2]["properties"]["action_names"] == ["l", "r"]
    assert validate_gmn(text).valid


def test_simple_pair_values() -> None:
    doc = parse_text_form(
        '[nodes]\nx: policy {a: 1, b: -2, c: 0.5, d: -3.25, e: "some text", f: ""}\ny: policy { }'
    )
    assert doc["nodes"][0]["properties"] == {
        "a": 1,
        "b": -2,
        "c": 0.5,
        "d": -3.25,
        "e": "some text",
        "f": "",
    }
    assert doc["nodes"][1]["properties"] == {}
    assert doc["edges"] == []


def test_text_form_values_are_then_checked_by_normal_rules() -> None:
    base = ["o: observation {num_observations: 2}", "a: action {num_actions: 2}", "b: transition"]
    edges = ["s -> o: generates", "s -> b: depends_on", "a -> b: depends_on"]
    assert validate_gmn(text_doc(["s: state {num_states: 2}", *base], edges)).valid
    assert codes(text_doc(["s: state {num_states: 2.0}", *base], edges)) == {"GMN041"}
    assert codes(text_doc(['s: state {num_states: "2"}', *base], edges)) == {"GMN041"}
    assert codes(text_doc(["s: State {num_states: 2}", *base], edges)) == {"GMN025"}
    report = validate_gmn(text_doc(["2x: state {num_states: 2}", *base], edges))
    assert report.codes == ["GMN022"]
    assert report.errors[0].path == "$.nodes[0].id"
    report = validate_gmn(text_doc(["s: state {num_states: 2}", *base], [*edges, "s -> b: Feeds"]))
    assert report.codes == ["GMN032"]
    assert report.errors[0].path == "$.edges[3].type"


@pytest.mark.parametrize(
    ("text", "bad_lines"),
    [
        ("s: state\n[nodes]\nt: state", [1]),
        ("[Nodes]\ns: state", [1, 2]),
        ("[nodes]\n[node]\ns: state", [2]),
        ("[nodes]\nétat: state", [2]),
        ("[nodes]\ns state", [2]),
        ("[nodes]\ns: state extra", [2]),
        ("[nodes]\ns: state {num_states: 2} trailing", [2]),
        ("[nodes]\ns: state {num_states: 2,}", [2]),
        ("[nodes]\ns: state {num_states: 2, num_states: 3}", [2]),
        ('[nodes]\ns: state {"num_states": 2, "num_states": 3}', [2]),
        ("[nodes]\ns: state {names: [a, b]}", [2]),
        ('[nodes]\ns: state {label: "a,b"}', [2]),
        ("[nodes]\ns: state {num_states: NaN}", [2]),
        ('[nodes]\ns: state {"num_states": NaN}', [2]),
        ("[nodes]\ns: state {1x: 2}", [2]),
        ("[nodes]\ns: state {num_states: 2", [2]),
        ("[edges]\ns -> o: generates extra", [2]),
        ("[edges]\ns -> o", [2]),
        ("[edges]\ns -> o -> p: generates", [2]),
        ("[edges]\ns: state", [2]),
        ("[nodes]\ns -> o: generates", [2]),
        ("# ok\n\nfoo\n[nodes]\nbar baz\n[edges]\nqux", [3, 5, 7]),
    ],
)
def test_text_form_syntax_errors(text: str, bad_lines: list[int]) -> None:
    report = validate_gmn(text)
    assert report.codes == ["GMN002"]
    assert [e.path for e in report.errors] == [f"line {n}" for n in bad_lines]
    with pytest.raises(TextFormError) as info:
        parse_text_form(text)
    assert len(info.value.errors) == len(bad_lines)


def test_text_form_depth_limit_applies() -> None:
    deep = "[" * 61 + "]" * 61
    assert codes(text_doc([f'x: policy {{"deep": {deep}}}'])) == {"GMN001"}


def test_text_form_without_sections_yields_empty_document() -> None:
    assert codes("# only a comment") == {"GMN012"}


def test_bom_is_not_silently_accepted() -> None:
    assert not validate_gmn(b"\xef\xbb\xbf" + MINIMAL_JSON.encode()).valid


# --- extraction from LLM replies ----------------------------------------------------------------


def test_extract_whole_reply() -> None:
    extraction = extract_document("\n  " + MINIMAL_JSON + "\n")
    assert extraction.method == "whole"
    assert extraction.document == MINIMAL
    assert validate_reply(MINIMAL_JSON).valid


def test_extract_fenced_json_block() -> None:
    reply = f"Here is the model:\n\n```json\n{MINIMAL_JSON}\n```\n\nIt has four nodes."
    extraction = extract_document(reply)
    assert extraction.method == "fenced"
    assert extraction.document == MINIMAL
    assert validate_reply(reply).valid


def test_json_tagged_blocks_win_over_earlier_untagged_blocks() -> None:
    other = json.dumps({"nodes": [], "edges": []})
    reply = f"```\n{other}\n```\nand the real one\n```JSON\n{MINIMAL_JSON}\n```"
    assert extract_document(reply).document == MINIMAL
    reply = f"```python\nprint(1)\n```\n```\n{MINIMAL_JSON}\n```"
    assert extract_document(reply).document == MINIMAL


def test_first_parsable_fenced_block_wins() -> None:
    reply = f"```json\n{{not json}}\n```\n```json\n{MINIMAL_JSON}\n```"
    extraction = extract_document(reply)
    assert extraction.method == "fenced"
    assert extraction.document == MINIMAL
    assert extraction.problems  # the broken first block is reported


def test_extract_bare_object_from_prose() -> None:
    doc = copy.deepcopy(MINIMAL)
    doc["description"] = 'uses {braces} and "quotes" and a \\ backslash }'
    reply = "Sure! The form {like this} is common.\nHere: " + json.dumps(doc) + "\nDone {end}."
    extraction = extract_document(reply)
    assert extraction.method == "scan"
    assert extraction.document == doc
    assert validate_reply(reply).valid


def test_unbalanced_brace_in_prose_is_skipped() -> None:
    reply = "Use { to open. " + MINIMAL_JSON
    assert extract_document(reply).document == MINIMAL


def test_trailing_comma_in_fenced_block_is_reported_not_fixed() -> None:
    broken = MINIMAL_JSON[:-1] + ",}"
    reply = f"Here you go:\n```json\n{broken}\n```"
    extraction = extract_document(reply)
    assert extraction.method == "fallback"
    assert extraction.document is None
    assert extraction.text.strip() == broken
    assert any("trailing comma" in p for p in extraction.problems)
    report = validate_reply(reply)
    assert report.codes == ["GMN001"]
    assert "trailing comma" in report.errors[0].message


def test_trailing_comma_in_prose_object_is_reported() -> None:
    broken = MINIMAL_JSON.replace('"type": "depends_on"}]', '"type": "depends_on"},]')
    reply = "Model follows.\n" + broken + "\nThanks."
    extraction = extract_document(reply)
    assert extraction.method == "fallback"
    assert extraction.text == reply
    assert any("trailing comma" in p for p in extraction.problems)
    report = validate_reply(reply)
    assert not report.valid
    assert any("trailing comma" in w for w in report.warnings)


def test_duplicate_keys_and_nan_in_replies_are_not_accepted() -> None:
    dup = '```json\n{"nodes": [], "nodes": [], "edges": []}\n```'
    assert extract_document(dup).document is None
    assert validate_reply(dup).codes == ["GMN001"]
    nan = "Result: " + MINIMAL_JSON[:-1] + ', "metadata": {"x": NaN}}'
    extraction = extract_document(nan)
    assert extraction.document is None or "x" not in extraction.document.get("metadata", {})
    assert not validate_reply(nan).valid


def test_reply_without_json() -> None:
    reply = "I cannot build that model, sorry."
    extraction = extract_document(reply)
    assert extraction.method == "fallback"
    assert extraction.text == reply
    assert validate_reply(reply).codes == ["GMN002"]
    assert validate_reply("").codes == ["GMN001"]


def test_text_form_answers_are_not_mistaken_for_their_property_blocks() -> None:
    """SPEC §2's own example has a JSON property block; the scan must not pick that block."""
    for reply in (f"Text form:\n```\n{SPEC_TEXT}```\n", SPEC_TEXT):
        extraction = extract_document(reply)
        assert extraction.method == "text"
        assert extraction.text.strip() == SPEC_TEXT.strip()
        assert extraction.document == parse_text_form(SPEC_TEXT)
        assert validate_reply(reply).valid
    # Prose around an unfenced text form is neither JSON nor clean text form.
    report = validate_reply("Here it is:\n" + SPEC_TEXT)
    assert not report.valid
