"""Prompt-grounded sizes over real HTTP (#23): the lean schema on the wire pins the size the
prompt states and fixes every node id per slot; a "generic" model that answers the same small
document whatever the prompt says is refined with feedback naming the expected number, and the
report's grounded-valid and distinct-valid figures are exact. Real Redis, a real worker
process, the fake OpenAI server; wire bodies asserted."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
import pytest

from producers.client import Client
from producers.gmn_cli import GMNReport
from providers.fake_server import Call, FakeServer
from schemas.gmn.lean import lean_json_schema
from schemas.gmn.prompts import GMNConstraints
from schemas.gmn.stated import stated_sizes, suggested_layouts
from tests.conftest import WorkerPool, gmn_outcomes

pytestmark = pytest.mark.integration

ROWS = [
    # states a grid: 25 positions
    {
        "custom_id": "grid",
        "prompt": "Model an agent that searches a 5x5 grid for a buried treasure.",
        "agent_type": "explorer",
    },
    # states three actions; the model never listens
    {
        "custom_id": "thermo",
        "prompt": "A thermostat-like agent chooses to heat, cool or idle, preferring comfort.",
        "agent_type": "general",
    },
    # states nothing: the generic answer is fine
    {
        "custom_id": "plain",
        "prompt": "Describe a reader that likes surprising paragraphs a lot.",
        "agent_type": "general",
    },
]
STUBBORN = {"thermo"}


def fill(schema: dict[str, Any], grounded: bool) -> dict[str, Any]:
    """A lean document in the schema's first layout: its fixed ids and edges; sizes at the
    schema's minimum (grounded) or 2 everywhere, as a generic small model answers."""
    branch = schema["anyOf"][0] if "anyOf" in schema else schema
    nodes = []
    for slot in branch["properties"]["nodes"]["prefixItems"]:
        props = slot["properties"]
        node: dict[str, Any] = {"id": props["id"]["const"], "type": props["type"]["const"]}
        if "properties" in props:
            node["properties"] = {
                key: (bound["minimum"] if grounded else 2) if "minimum" in bound else "What next?"
                for key, bound in props["properties"]["properties"].items()
            }
        nodes.append(node)
    edges = [
        {k: edge["properties"][k]["const"] for k in ("source", "target", "type")}
        for edge in branch["properties"]["edges"]["prefixItems"]
    ]
    return {"name": "agent", "nodes": nodes, "edges": edges}


def generic_model(call: Call) -> str:
    """Round 1 (and every round of a stubborn prompt): the generic document; a refine round
    (an answer in the request): the document the schema asks for."""
    schema = call.body["response_format"]["json_schema"]["schema"]
    refined = any(role == "assistant" for role, _ in call.messages)
    stubborn = any(
        row["prompt"] == call.messages[1][1] for row in ROWS if row["custom_id"] in STUBBORN
    )
    return orjson.dumps(fill(schema, grounded=refined and not stubborn)).decode()


def test_a_generic_model_is_grounded_by_the_schema_and_the_feedback(
    redis_url: str, run_workers: Callable[..., WorkerPool], fake_server: Callable[..., Any]
) -> None:
    # Given a llama.cpp-like endpoint (schema decoding, no `n`) behind a model that answers
    # a generic document with 2 of everything in round 1,
    server: FakeServer = fake_server(responder=generic_model, record_bodies=True)
    endpoint = {
        "provider": "openai",
        "base_url": server.openai_url,
        "model": "tiny",
        "structured": {"n_choices": False},
    }
    run_workers({"endpoints": {"llama": endpoint}, "routes": {"default": ["llama"]}})
    with Client(redis_url) as client:
        found = gmn_outcomes(client, ROWS, profile="lean", example="none")
    # then the schema on the wire is the request's grounded lean schema: the grid's 25
    # states pinned (minimum = maximum) and every node id fixed per slot,
    first = server.calls(custom_id="grid")[0].body
    schema = first["response_format"]["json_schema"]["schema"]
    prompt = ROWS[0]["prompt"]
    stated = stated_sizes(prompt)
    layouts = suggested_layouts(prompt, "explorer", stated)
    assert schema == lean_json_schema("explorer", GMNConstraints(), stated, layouts)
    for branch in schema["anyOf"]:
        slots = branch["properties"]["nodes"]["prefixItems"]
        state = next(s for s in slots if s["properties"]["type"]["const"] == "state")
        assert state["properties"]["properties"]["properties"]["num_states"] == {
            "type": "integer",
            "minimum": 25,
            "maximum": 25,
        }
        assert all("const" in s["properties"]["id"] for s in slots)
    # the system message names the stated size,
    assert "'5x5 grid': a state node with num_states 25" in first["messages"][0]["content"]
    # the generic answer (2 states) is refined with feedback naming the expected number,
    refine = server.calls(custom_id="grid")[1].body["messages"]
    assert [m["role"] for m in refine] == ["system", "user", "assistant", "user"]
    feedback = refine[3]["content"]
    assert "GMN097" in feedback and "num_states 25 (this one has 2)" in feedback
    assert "sizes the prompt states are kept" in feedback
    # and the answers end as the report says: grid fixed in round 2, plain valid at once,
    # the stubborn thermostat invalid (GMN097) after 3 rounds.
    grid, thermo, plain = found["grid"], found["thermo"], found["plain"]
    assert [(h.round, h.valid, h.codes) for h in grid.history] == [
        (1, False, ["GMN097"]),
        (2, True, []),
    ]
    assert (grid.valid, grid.grounded) == (True, True)
    assert (plain.valid, plain.grounded, plain.rounds) == (True, True, 1)
    assert (thermo.valid, thermo.grounded, thermo.rounds) == (False, False, 3)
    assert [e.code for e in thermo.errors] == ["GMN097"]
    assert "'chooses to heat, cool or idle': an action node needs num_actions 3" in (
        thermo.errors[0].message
    )
    report = GMNReport()
    for outcome in found.values():
        report.add(outcome)
    data = report.to_dict()
    assert (data["valid"], data["grounded_valid"], data["distinct_valid"]) == (2, 2, 2)
    assert [row["distinct_valid_after_round"] for row in data["by_round"]] == [
        0.3333,
        0.6667,
        0.6667,
    ]
    assert data["violations_final"] == {"GMN097": 1}
