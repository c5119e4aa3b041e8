"""The mock's GMN mode: valid documents sized from the prompt, named invalid answers, refinement."""

from __future__ import annotations

import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from providers.mock import INVALID_KINDS, MockProvider
from providers.mock_gmn import build_document, corrupt, render, shape_for
from providers.registry import endpoint_options
from schemas.config import ConfigError, EndpointConfig
from schemas.gmn import GMNError, validate_gmn, validate_reply
from schemas.gmn.prompts import (
    AGENT_TYPES,
    GMNConstraints,
    check_constraints,
    first_request,
    parse_prompt_line,
    refine_request,
)
from schemas.request import LLMRequest

#: The rule each invalid kind is built to break (other codes may come with it).
EXPECTED_CODE = {
    "unnormalized_likelihood": "GMN046",
    "dangling_edge": "GMN050",
    "missing_action": "GMN053",
    "trailing_comma": "GMN001",
    "prose_only": "GMN002",
    "cycle": "GMN055",
    "unknown_node_type": "GMN025",
    "flat_properties": "GMN027",
    "wrong_belief_length": "GMN062",
    "isolated_node": "GMN054",
}


def mock(**options: Any) -> MockProvider:
    settings = EndpointConfig.model_validate({"provider": "mock", "mode": "gmn", **options})
    return MockProvider("m", settings, endpoint_options("m", settings))


def request(
    custom_id: str = "g-1",
    prompt: str = "An explorer searches a 3x3 grid for a key.",
    agent_type: str = "explorer",
    **limits: Any,
) -> LLMRequest:
    line = {"custom_id": custom_id, "prompt": prompt, "agent_type": agent_type}
    return first_request(parse_prompt_line({**line, "constraints": limits}, 1))


def test_sizes_come_from_the_prompt_and_are_capped_by_constraints() -> None:
    free = GMNConstraints()
    assert shape_for("a 5x5 grid with walls", "explorer", free).states == 25
    assert shape_for("five food patches to visit", "explorer", free).states == 5
    assert shape_for("a 5x5 grid", "explorer", GMNConstraints(max_states=16)).states == 16
    crew = shape_for("a team of three workers", "coordinator", GMNConstraints(max_actions=3))
    assert crew.action_names == ["assign_w1", "assign_w2", "assign_w3"]
    assert shape_for("buy low sell high", "trader", free).action_names == ["buy", "sell", "hold"]


@pytest.mark.parametrize("agent_type", AGENT_TYPES)
def test_every_agent_type_gets_a_complete_valid_document(agent_type: str) -> None:
    prompt = "An agent for a 4x4 world that may ask a language model for advice."
    doc = build_document(prompt, agent_type, GMNConstraints(), random.Random(1))
    assert validate_gmn(doc).valid, validate_gmn(doc).errors
    types = {n["type"] for n in doc["nodes"]}
    assert {"state", "observation", "action", "likelihood", "transition"} <= types
    assert {"belief", "preference", "llm_query", "policy"} <= types


@settings(max_examples=150, deadline=None)
@given(
    agent_type=st.sampled_from(AGENT_TYPES),
    words=st.lists(
        st.sampled_from(["a", "3x4", "grid", "five", "llm", "twelve", "team"]),
        min_size=3,
        max_size=12,
    ),
    limits=st.fixed_dictionaries(
        {},
        optional={
            "max_states": st.integers(1, 40),
            "max_observations": st.integers(1, 40),
            "max_actions": st.integers(1, 6),
            "max_nodes": st.integers(4, 12),
            "require_preferences": st.booleans(),
        },
    ),
    seed=st.integers(0, 1000),
)
def test_documents_are_valid_and_within_constraints(
    agent_type: str, words: list[str], limits: dict[str, Any], seed: int
) -> None:
    constraints = GMNConstraints.model_validate(limits)
    doc = build_document(" ".join(words), agent_type, constraints, random.Random(seed))
    report = validate_gmn(doc)
    assert report.valid, report.errors
    assert check_constraints(doc, constraints) == []


@pytest.mark.parametrize("kind", INVALID_KINDS)
@pytest.mark.parametrize("agent_type", ["explorer", "general"])
@pytest.mark.parametrize("max_nodes", [None, 3])
def test_every_invalid_kind_is_invalid(kind: str, agent_type: str, max_nodes: int | None) -> None:
    constraints = GMNConstraints(max_nodes=max_nodes)
    doc = build_document("walk a 2x2 grid", agent_type, constraints, random.Random(3))
    report = validate_reply(corrupt(doc, kind, random.Random(3)))
    assert not report.valid
    if kind in EXPECTED_CODE and max_nodes is None:
        assert EXPECTED_CODE[kind] in report.codes, report.codes


def test_valid_answers_are_sometimes_fenced_and_always_extractable() -> None:
    doc = build_document("walk a 2x2 grid", "explorer", GMNConstraints(), random.Random(0))
    replies = [render(doc, random.Random(i)) for i in range(40)]
    assert any(r.startswith("Here is") for r in replies)
    assert any(r.startswith("{") for r in replies)
    assert all(validate_reply(r).valid for r in replies)


async def test_mode_gmn_reads_agent_type_and_constraints_from_the_request() -> None:
    resp = await mock().generate(request(max_states=4, max_actions=2), "mock-1")
    report = validate_reply(resp.text)
    assert report.valid
    doc = report.document
    sizes = {n["type"]: n.get("properties", {}) for n in doc["nodes"]}
    assert sizes["state"]["num_states"] == 4
    assert sizes["action"]["action_names"] == ["north", "south"]
    assert resp.usage.output_tokens > 100


async def test_invalid_first_answers_then_a_valid_refinement() -> None:
    provider = mock(gmn_invalid_rate=1.0, gmn_invalid_kinds=["dangling_edge"])
    first = request()
    answer = (await provider.generate(first, "m")).text
    report = validate_reply(answer)
    assert report.codes[0] == "GMN050"
    # When the refinement request carries the validator's errors,
    refine = refine_request(first, answer, report.errors)
    # then the answer is valid even though every first answer is broken.
    assert validate_reply((await provider.generate(refine, "m")).text).valid
    errors = [GMNError(code="GMN050", path="$.edges[0].target", message="dangling")]
    again = refine_request(refine, "whatever", errors)
    assert validate_reply((await provider.generate(again, "m")).text).valid


async def test_invalid_rate_is_respected_and_seeded_answers_do_not_depend_on_order() -> None:
    ids = [f"g-{i}" for i in range(400)]
    one, two = (mock(gmn_invalid_rate=0.4, seed=11) for _ in range(2))
    forward = {cid: (await one.generate(request(cid), "m")).text for cid in ids}
    backward = {cid: (await two.generate(request(cid), "m")).text for cid in reversed(ids)}
    assert forward == backward
    invalid = sum(not validate_reply(text).valid for text in forward.values())
    assert 0.32 * len(ids) < invalid < 0.48 * len(ids)
    other_seed = mock(gmn_invalid_rate=0.4, seed=12)
    assert [(await other_seed.generate(request(c), "m")).text for c in ids[:20]] != [
        forward[c] for c in ids[:20]
    ]


async def test_unseeded_mock_still_answers_valid_documents() -> None:
    resp = await mock().generate(request(), "m")
    assert validate_reply(resp.text).valid


async def test_replies_still_take_precedence_over_the_mode() -> None:
    provider = mock(replies=[{"pattern": "grid", "reply": "scripted"}])
    assert (await provider.generate(request(), "m")).text == "scripted"


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        ({"gmn_invalid_rate": 1.5}, "gmn_invalid_rate"),
        ({"gmn_invalid_kinds": ["typo"]}, "gmn_invalid_kinds"),
        ({"mode": "poetry"}, "mode"),
    ],
)
def test_bad_gmn_options_are_config_errors(options: dict[str, Any], fragment: str) -> None:
    settings = EndpointConfig.model_validate({"provider": "mock", **options})
    with pytest.raises(ConfigError, match=fragment):
        endpoint_options("m", settings)
