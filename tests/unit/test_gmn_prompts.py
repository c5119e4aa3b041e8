"""Prompt lines are accepted or rejected per SPEC §7; the prompts sent carry rules and limits."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import orjson
import pytest

from producers.gmn import check
from schemas.batch_lines import LineError
from schemas.gmn import GMNError, validate_gmn, validator_benchmark_document
from schemas.gmn.prompts import (
    AGENT_TYPES,
    MAX_LISTED_ERRORS,
    GMNConstraints,
    check_constraints,
    first_request,
    parse_prompt_line,
    read_system_prompt,
    refine_request,
    system_prompt,
)

#: A copy of the brief's gmn/ (SPEC.md, examples, prompts), so every clone runs these tests.
GMN_DATA = Path(__file__).resolve().parents[1] / "data" / "gmn"


def line(**fields: Any) -> bytes:
    return orjson.dumps({"custom_id": "p1", "prompt": "An agent that walks a grid.", **fields})


def rejected(raw: Any, number: int = 7) -> LineError:
    with pytest.raises(LineError) as caught:
        parse_prompt_line(raw, number)
    return caught.value


def test_a_good_line_is_trimmed_and_gets_defaults() -> None:
    spec = parse_prompt_line(line(prompt="  An agent that walks a grid.\n"), 1)
    assert spec.prompt == "An agent that walks a grid."
    assert spec.agent_type == "general"
    assert spec.constraints == GMNConstraints()
    assert parse_prompt_line({"prompt": "walk the grid please"}, 12).custom_id == "line-12"


@pytest.mark.parametrize(
    ("prompt", "message"),
    [
        ("", "line 7: prompt: must not be empty"),
        ("   \t  \n ", "line 7: prompt: must not be only whitespace"),
        ("coordinator", "line 7: prompt: must have at least 3 words (got 1)"),
        ("walk the", "line 7: prompt: must have at least 3 words (got 2)"),
        ("a b c", "line 7: prompt: must be at least 10 characters long (got 5)"),
        ("word " * 500, "line 7: prompt: must be at most 2000 characters long (got 2499)"),
    ],
)
def test_unacceptable_prompts_name_the_line_and_the_rule(prompt: str, message: str) -> None:
    error = rejected(line(prompt=prompt))
    assert str(error) == message
    assert (error.line, error.field, error.custom_id) == (7, "prompt", "p1")


@pytest.mark.parametrize(
    ("fields", "field", "fragment"),
    [
        ({"agent_type": "pirate"}, "agent_type", "must be one of explorer, trader, coordinator"),
        ({"constraints": {"max_states": 0}}, "constraints.max_states", "greater than or equal"),
        ({"constraints": {"max_states": True}}, "constraints.max_states", "valid integer"),
        ({"constraints": {"max_state": 3}}, "constraints.max_state", "unknown field (known: max_"),
        ({"colour": "red"}, "colour", "unknown field (known: custom_id, prompt"),
        ({"custom_id": ""}, "custom_id", "at least 1 character"),
    ],
)
def test_bad_fields_are_named(fields: dict[str, Any], field: str, fragment: str) -> None:
    error = rejected(line(**fields))
    assert error.field == field
    assert fragment in error.reason


def test_lines_that_are_not_json_objects_are_rejected() -> None:
    assert "not valid JSON" in str(rejected(b'{"prompt": '))
    assert str(rejected(b"[1, 2]")) == "line 7: must be a JSON object, got list"


def test_the_spec_prompts_file_has_three_bad_lines() -> None:
    errors = {}
    for number, raw in enumerate((GMN_DATA / "prompts.jsonl").read_bytes().splitlines(), start=1):
        try:
            parse_prompt_line(raw, number)
        except LineError as err:
            errors[err.custom_id] = err.reason
    assert errors == {
        "edge-empty": "must not be empty",
        "edge-whitespace": "must not be only whitespace",
        "edge-one-word": "must have at least 3 words (got 1)",
    }


def test_system_prompt_has_rules_example_hint_constraints_and_the_json_only_instruction() -> None:
    limits = GMNConstraints(max_states=25, max_actions=5, require_preferences=True)
    text = system_prompt("trader", limits)
    assert "A[observation][state]" in text and "B[next_state][state][action]" in text
    assert "state -> likelihood" in text and "No cycles" in text
    assert "buy/sell/hold" in text
    assert "- max_states: 25 (no state node may have more than 25 states)" in text
    assert "- require_preferences: true" in text
    assert "max_observations" not in text
    assert text.endswith("No prose, no comments, no markdown fences.")
    # The embedded example is itself a valid document.
    example = re.search(r"^Example \(an explorer\):\n(\{.*\})$", text, re.M)
    assert example is not None
    assert validate_gmn(example.group(1)).valid


@pytest.mark.parametrize("agent_type", AGENT_TYPES)
@pytest.mark.parametrize(
    "limits",
    [
        GMNConstraints(),
        GMNConstraints(max_states=3, max_observations=4, max_actions=2, max_nodes=8),
        GMNConstraints(require_preferences=True, max_nodes=5),
    ],
)
def test_agent_type_and_constraints_read_back_from_the_prompt(
    agent_type: str, limits: GMNConstraints
) -> None:
    assert read_system_prompt(system_prompt(agent_type, limits)) == (agent_type, limits)


def test_first_request_is_low_temperature_without_fence_stops() -> None:
    spec = parse_prompt_line(line(agent_type="explorer"), 1)
    plain = first_request(spec)
    assert [m.role for m in plain.messages] == ["system", "user"]
    assert plain.messages[1].content == spec.prompt
    assert plain.body["temperature"] <= 0.3
    assert "stop" not in plain.body and plain.response_format is None
    json_mode = first_request(spec, json_mode=True, max_tokens=900, temperature=0.0)
    assert json_mode.response_format == {"type": "json_object"}
    assert (json_mode.body["max_tokens"], json_mode.body["temperature"]) == (900, 0.0)


def test_refinement_lists_every_error_and_keeps_only_the_latest_answer() -> None:
    spec = parse_prompt_line(line(), 1)
    errors = [
        GMNError(code="GMN046", path="$.nodes[3].properties.matrix", node="A", message="bad sum"),
        GMNError(code="GMN050", path="$.edges[0].target", message="dangling"),
    ]
    second = refine_request(first_request(spec), "answer one", errors)
    third = refine_request(second, "answer two", errors[1:], feedback="add a policy")
    assert [m.role for m in second.messages] == ["system", "user", "assistant", "user"]
    assert [m.role for m in third.messages] == ["system", "user", "assistant", "user"]
    assert third.messages[2].content == "answer two"
    ask = second.messages[3].content
    assert "- GMN046 at $.nodes[3].properties.matrix (node A): bad sum" in ask
    assert "- GMN050 at $.edges[0].target: dangling" in ask
    assert "Change requested: add a policy" in third.messages[3].content
    assert third.custom_id == spec.custom_id
    assert third.body["temperature"] == second.body["temperature"]


def test_refinement_of_many_errors_lists_the_first_ones_and_counts_the_rest() -> None:
    errors = [GMNError(code="GMN046", path=f"$.x[{i}]", message="m") for i in range(55)]
    ask = refine_request(first_request(parse_prompt_line(line(), 1)), "a", errors).messages[3]
    assert ask.content.count("- GMN046") == MAX_LISTED_ERRORS
    assert f"... and {55 - MAX_LISTED_ERRORS} more errors" in ask.content


def test_constraints_are_checked_as_gmn090_with_the_offending_path() -> None:
    doc = validator_benchmark_document(8, size=4)  # act (3 actions), s0 (4 states), o0 (4 obs)
    limits = GMNConstraints(max_states=3, max_actions=2, max_nodes=5, require_preferences=True)
    found = {(e.path, e.node): e.message for e in check_constraints(doc, limits)}
    assert found[("$.nodes[1].properties.num_states", "s0")] == (
        "num_states is 4; the max_states constraint allows at most 3"
    )
    assert ("$.nodes[0].properties.num_actions", "act") in found
    assert ("$.nodes", None) in found  # too many nodes
    assert all(e.code == "GMN090" for e in check_constraints(doc, limits))
    doc["nodes"] = [n for n in doc["nodes"] if n["type"] != "preference"]
    messages = [e.message for e in check_constraints(doc, GMNConstraints(require_preferences=True))]
    assert messages == ["require_preferences is set but the document has no preference node"]


@pytest.mark.parametrize("junk", [None, [], "text", {"nodes": 3}, {"edges": []}])
def test_constraints_of_undecodable_documents_are_left_to_the_validator(junk: Any) -> None:
    assert check_constraints(junk, GMNConstraints(max_states=1, max_nodes=1)) == []


def test_constraint_check_skips_malformed_nodes() -> None:
    nodes = [1, {"type": "state"}, {"type": "state", "properties": {"num_states": "9"}}]
    errors = check_constraints({"nodes": nodes}, GMNConstraints(max_states=1, max_nodes=3))
    assert errors == []


def test_client_side_check_merges_validator_and_constraint_errors() -> None:
    doc = validator_benchmark_document(8)
    assert check(doc, None).valid
    report = check(orjson.dumps(doc), {"max_states": 2})
    assert not report.valid and report.codes == ["GMN090"]
    reply = "Sure:\n```json\n" + orjson.dumps(doc).decode() + "\n```"
    assert check(reply, GMNConstraints()).valid
    assert check("no document here", None).codes in (["GMN001"], ["GMN002"])
