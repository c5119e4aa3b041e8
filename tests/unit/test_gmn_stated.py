"""Prompt-grounded sizes: what a prompt states is read (and nothing else), a document that
contradicts it is GMN097/GMN098 with the expected number in the feedback, and the lean
schema decodes it (fixed ids per slot, layouts by request)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
from jsonschema import Draft202012Validator

from producers.gmn import GMNOutcome
from producers.gmn_cli import GMNReport, without_sizes
from providers.mock_gmn import build_document
from schemas.gmn import validate_gmn
from schemas.gmn.lean import layout, layouts_for, lean_json_schema
from schemas.gmn.prompts import GMNConstraints, GMNPrompt
from schemas.gmn.rounds import check_answer, first_round, refine_text
from schemas.gmn.stated import check_stated, grounded, stated_sizes, suggested_layouts

PROMPTS = Path(__file__).parents[1] / "data" / "gmn" / "prompts.jsonl"


def sizes(prompt: str, **limits: Any) -> list[tuple[str, int, int | None]]:
    return [(s.kind, s.least, s.most) for s in stated_sizes(prompt, GMNConstraints(**limits))]


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [
        ("An agent searches a 5x5 grid for treasure.", [("state", 25, 25)]),
        ("An explorer wanders a 4 by 4 world for rewards.", [("state", 16, 16)]),
        ("A forager moves between five food patches.", [("state", 5, 5)]),
        ("A robot patrols 4 corridor segments at night.", [("state", 4, 4)]),
        ("A simple agent moves in four directions on a grid.", [("action", 4, 5)]),
        ("A coordinator assigns tasks to three workers.", [("agents", 3, None)]),
        ("A drone reads two sensors to find its way.", [("sensors", 2, None)]),
        (
            "A thermostat senses whether the room is cold, comfortable or hot and chooses to "
            "heat, cool or idle.",
            [("observation", 3, 3), ("action", 3, 3)],
        ),
        ("A basic agent with one noisy binary sensor can either wait or act.", None),
        ("A trader decides each step to buy, sell or hold in order to grow.", [("action", 3, 3)]),
        ("The market switches between bear, calm and bull regimes daily.", [("state", 3, 3)]),
        ("A buyer chooses when to buy forward contracts, wait, or sell stock.", [("action", 3, 3)]),
        ("It routes tickets to a human, to a bot or back to the queue.", [("action", 3, 3)]),
        ("It learns availability and proposes, confirms or reschedules the slot.", None),
    ],
)
def test_the_sizes_a_prompt_states_are_read(
    prompt: str, expected: list[tuple[str, int, int | None]] | None
) -> None:
    if expected is None:  # the two-kind cases, checked by kind
        got = dict((k, (lo, hi)) for k, lo, hi in sizes(prompt))
        assert got.get("action") in ((2, 2), (3, 3))
        if "binary" in prompt:
            assert got["observation"] == (2, 2)
        return
    assert sizes(prompt) == expected


@pytest.mark.parametrize(
    "prompt",
    [
        "Model a market maker quoting a single asset that wants to end flat.",
        "A coordinator tracks how busy each one is from their status reports.",
        # verbs listed without a cue are not sizes
        "A gardener tracks soil moisture, reads a rain forecast and waters the plants.",
        "Build a cautious scout that prefers to stay next to known safe cells.",
    ],
)
def test_prompts_that_state_no_size_get_no_grounding(prompt: str) -> None:
    assert sizes(prompt) == []


def test_a_constraint_wins_over_a_stated_size_and_the_first_statement_of_a_kind_wins() -> None:
    assert sizes("Search a 5x5 grid for gold.", max_states=10) == []
    assert sizes("Search a 5x5 grid with five food patches.") == [("state", 25, 25)]
    assert sizes("Schedule five people, then decide.", max_observations=3) == []
    assert sizes("A drone reads two sensors.", max_nodes=6) == []


def doc(*nodes: tuple[str, str, int]) -> dict[str, Any]:
    key = {"state": "num_states", "observation": "num_observations", "action": "num_actions"}
    return {
        "nodes": [
            {"id": node_id, "type": kind, "properties": {key[kind]: n}}
            for node_id, kind, n in nodes
        ],
        "edges": [],
    }


def test_a_size_other_than_the_stated_one_is_gmn097_naming_the_expected_number() -> None:
    stated = stated_sizes("An agent searches a 5x5 grid for treasure.")
    five = doc(("cell", "state", 5), ("seen", "observation", 5), ("go", "action", 4))
    [error] = check_stated(five, stated)
    assert (error.code, error.path, error.node) == (
        "GMN097",
        "$.nodes[0].properties.num_states",
        "cell",
    )
    assert "'5x5 grid'" in error.message and "num_states 25" in error.message
    assert "(this one has 5)" in error.message
    assert check_stated(doc(("cell", "state", 25)), stated) == []
    # two state factors whose sizes multiply to the grid: rows x columns
    assert check_stated(doc(("row", "state", 5), ("col", "state", 5)), stated) == []
    assert grounded(five, stated) is False and grounded(None, stated) is None
    assert grounded(five, []) is True


def test_directions_allow_one_more_action_for_staying() -> None:
    stated = stated_sizes("A simple agent moves in four directions on a grid.")
    assert check_stated(doc(("go", "action", 5)), stated) == []
    [error] = check_stated(doc(("go", "action", 3)), stated)
    assert "num_actions 4 or 5" in error.message


def test_agents_and_sensors_the_prompt_names_need_observation_nodes_gmn098() -> None:
    workers = stated_sizes("A coordinator assigns tasks to three workers.")
    one = doc(("phase", "state", 3), ("report", "observation", 2))
    [error] = check_stated(one, workers)
    assert error.code == "GMN098" and "three workers" in error.message
    assert "at least 3 values" in error.message
    assert check_stated(doc(("report", "observation", 3)), workers) == []
    three = doc(*((f"r{i}", "observation", 2) for i in range(3)))
    assert check_stated(three, workers) == []
    sensors = stated_sizes("A drone reads two sensors to find its way.")
    [error] = check_stated(doc(("seen", "observation", 9)), sensors)
    assert error.code == "GMN098" and "give 2 observation nodes" in error.message
    assert check_stated(doc(("a", "observation", 2), ("b", "observation", 2)), sensors) == []


def test_grounding_fails_the_answer_and_its_feedback_names_the_expected_size() -> None:
    spec = GMNPrompt(
        custom_id="g",
        prompt="An agent searches a 5x5 grid for treasure.",
        agent_type="explorer",
    )
    request, data = first_round(spec, example="none")
    assert "'5x5 grid': a state node with num_states 25" in request.messages[0].text
    generic = build_document("an agent on a grid", "explorer", GMNConstraints(), _rng())
    assert generic["nodes"][0]["properties"]["num_states"] != 25
    checked = check_answer(orjson.dumps(generic).decode(), data)
    assert checked.codes == ["GMN097"]
    text = refine_text(checked, None)
    assert "sizes the prompt states are kept" in text and "num_states 25" in text
    grounded_doc = build_document(spec.prompt, "explorer", GMNConstraints(), _rng())
    assert check_answer(orjson.dumps(grounded_doc).decode(), data).codes == []


def _rng() -> Any:
    import random

    return random.Random(0)


def _prompts() -> list[GMNPrompt]:
    rows = [orjson.loads(line) for line in PROMPTS.read_bytes().splitlines() if line.strip()]
    return [GMNPrompt.model_validate(r) for r in rows if len(r["prompt"].split()) >= 3]


def filled(schema: dict[str, Any], which: int) -> dict[str, Any]:
    """The `which`-th document of a grounded schema, filled in at its minimum sizes."""
    branch = schema["anyOf"][which] if "anyOf" in schema else schema
    nodes = []
    for slot in branch["properties"]["nodes"]["prefixItems"]:
        node: dict[str, Any] = {
            "id": slot["properties"]["id"]["const"],
            "type": slot["properties"]["type"]["const"],
        }
        props = slot["properties"].get("properties")
        if props is not None:
            node["properties"] = {
                key: value.get("minimum", "What next?")
                for key, value in props["properties"].items()
            }
        nodes.append(node)
    edges = [
        {k: e["properties"][k]["const"] for k in ("source", "target", "type")}
        for e in branch["properties"]["edges"]["prefixItems"]
    ]
    return {"name": "filled", "nodes": nodes, "edges": edges}


@pytest.mark.parametrize("spec", _prompts(), ids=lambda s: s.custom_id)
def test_every_grounded_lean_schema_decodes_valid_grounded_documents_without_dangling_ids(
    spec: GMNPrompt,
) -> None:
    _, data = first_round(spec, profile="lean", example="none")
    assert data.layouts is not None
    schema = lean_json_schema(spec.agent_type, spec.constraints, data.stated, data.layouts)
    Draft202012Validator.check_schema(schema)
    check = Draft202012Validator(schema)
    branches = len(schema.get("anyOf", [schema]))
    assert branches == len(layouts_for(spec.constraints, data.layouts))
    for which in range(branches):
        document = filled(schema, which)
        assert list(check.iter_errors(document)) == []
        # ids are fixed per slot, so every edge names an existing node (no GMN050)
        ids = {n["id"] for n in document["nodes"]}
        assert all({e["source"], e["target"]} <= ids for e in document["edges"])
        assert validate_gmn(orjson.dumps(document)).valid, (spec.custom_id, which)
        assert check_answer(orjson.dumps(document).decode(), data).codes == [], which


def test_the_grounded_schema_pins_the_stated_size_and_rejects_the_generic_one() -> None:
    spec = GMNPrompt(
        custom_id="g", prompt="An agent searches a 5x5 grid for treasure.", agent_type="explorer"
    )
    _, data = first_round(spec, profile="lean")
    schema = lean_json_schema("explorer", spec.constraints, data.stated, data.layouts)
    document = filled(schema, 0)
    state = next(n for n in document["nodes"] if n["type"] == "state")
    assert state["properties"]["num_states"] == 25
    state["properties"]["num_states"] = 5
    assert list(Draft202012Validator(schema).iter_errors(document))
    document = filled(schema, 0)
    document["edges"][0]["source"] = "state_somewhere"  # not the slot's id
    assert list(Draft202012Validator(schema).iter_errors(document))


def test_layouts_follow_the_request_and_differ_across_the_prompts_file() -> None:
    assert suggested_layouts("It may ask a language model for advice.", "coordinator", []) == [
        "llm_advice"
    ]
    workers = stated_sizes("A coordinator assigns tasks to three workers.")
    assert suggested_layouts("assigns tasks to three workers", "coordinator", workers) == ["team3"]
    team = layout("team3")
    assert team is not None and sum(k == "observation" for k, _ in team[0]) == 3
    assert suggested_layouts("It tracks moisture and reads a forecast.", "general", []) == [
        "two_sensors"
    ]
    assert "two_factor" in suggested_layouts("A forager keeps its energy up.", "explorer", [])
    assert "hierarchical" in suggested_layouts("It navigates to goals.", "explorer", [])
    assert suggested_layouts("A thing that does things.", "general", []) == ["core", "belief"]
    assert layout("team9") is None and layout("nothing") is None
    graphs = set()
    for spec in _prompts():
        _, data = first_round(spec, profile="lean", example="none")
        assert data.layouts is not None
        schema = lean_json_schema(spec.agent_type, spec.constraints, data.stated, data.layouts)
        for which in range(len(schema.get("anyOf", [schema]))):
            graph = without_sizes(filled(schema, which))
            graphs.add(orjson.dumps(graph, option=orjson.OPT_SORT_KEYS))
    assert len(graphs) >= 8  # session 7's lean runs: 3 graphs over 22 documents


def test_the_report_counts_grounded_valid_documents() -> None:
    report = GMNReport()
    base: dict[str, Any] = {"custom_id": "a", "agent_type": "explorer", "document": doc()}
    report.add(GMNOutcome.model_validate({**base, "valid": True, "grounded": True}))
    report.add(GMNOutcome.model_validate({**base, "custom_id": "b", "valid": True}))
    report.add(GMNOutcome.model_validate({**base, "custom_id": "c", "grounded": False}))
    data = report.to_dict()
    assert (data["grounded_valid"], data["grounded_unknown"], data["valid"]) == (1, 1, 2)
    assert data["grounded_validity"] == 0.3333  # rounded like every rate of the report


def test_the_mock_keeps_the_sizes_the_prompt_states() -> None:
    for prompt, agent in [
        ("A drone reads two sensors to reach a 3x3 grid corner.", "explorer"),
        ("A coordinator schedules five people and proposes, confirms or cancels.", "coordinator"),
        ("A simple agent moves in four directions on a grid.", "general"),
    ]:
        document = build_document(prompt, agent, GMNConstraints(), _rng())
        assert validate_gmn(orjson.dumps(document)).valid
        assert check_stated(document, stated_sizes(prompt)) == [], prompt


def test_the_layout_of_the_shown_example_is_not_offered_when_another_fits() -> None:
    # an explorer (belief or core) shown the trader example (core): core would invite a copy
    spec = GMNPrompt(
        custom_id="x", prompt="A scout that prefers safe cells.", agent_type="explorer"
    )
    _, contrast = first_round(spec, profile="lean", example="contrast")
    assert contrast.examples == ["lean:trader"] and contrast.layouts == ["belief"]
    _, bare = first_round(spec, profile="lean", example="none")
    assert bare.layouts == ["belief", "core"]
    # the only layout a prompt suggests stays, even when it is the example's
    talk = GMNPrompt(
        custom_id="y", prompt="It may ask a language model for advice.", agent_type="general"
    )
    _, shown = first_round(talk, profile="lean", example="contrast")
    assert shown.examples == ["lean:coordinator"] and shown.layouts == ["llm_advice"]
    _, full = first_round(spec)
    assert full.layouts is None  # the full notation has no layouts


def test_lean_states_and_observations_have_two_values_unless_a_constraint_says_less() -> None:
    schema = lean_json_schema("general", GMNConstraints(), [], ["core"])
    check = Draft202012Validator(schema)
    document = filled(schema, 0)
    sizes = {n["type"]: n.get("properties") for n in document["nodes"]}
    assert sizes["state"] == {"num_states": 2} and sizes["observation"] == {"num_observations": 2}
    assert sizes["action"] == {"num_actions": 1}  # a general agent may have one action
    next(n for n in document["nodes"] if n["type"] == "state")["properties"]["num_states"] = 1
    assert list(check.iter_errors(document))
    capped = lean_json_schema("general", GMNConstraints(max_states=1), [], ["core"])
    one = filled(capped, 0)
    assert next(n for n in one["nodes"] if n["type"] == "state")["properties"] == {"num_states": 1}
