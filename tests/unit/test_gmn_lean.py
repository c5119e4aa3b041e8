"""The lean profile: a skeleton decoding schema whose every instance is a valid GMN document
(when its ids resolve), sizes bounded by the prompt, copies of the lean example flagged."""

from __future__ import annotations

import itertools
from typing import Any

import orjson
import pytest
from jsonschema import Draft202012Validator

from schemas.gmn import validate_gmn
from schemas.gmn.examples import EXAMPLES, LEAN_SYNTAX_ONLY
from schemas.gmn.lean import (
    LEAN_MAX_SIZE,
    LEAN_RULES,
    SKELETONS,
    lean_document,
    lean_json_schema,
    skeletons_for,
)
from schemas.gmn.prompts import AGENT_TYPES, GMNConstraints, GMNPrompt
from schemas.gmn.rounds import check_answer, first_round, fresh_note
from schemas.gmn.stated import StatedSize
from schemas.gmn.task import gmn_options
from workers.gmn_review import GMN

CONSTRAINTS = [
    GMNConstraints(),
    GMNConstraints(max_states=3, max_observations=2, max_actions=1),
    GMNConstraints(max_nodes=7, require_preferences=True),
]


def instance(name: str, sizes: dict[str, int]) -> dict[str, Any]:
    """The skeleton filled in as a model would: ids = prefix + a word, sizes from `sizes`."""
    slots, edges = SKELETONS[name]
    ids = [f"{prefix}_thing" for _, prefix in slots]
    nodes: list[dict[str, Any]] = []
    for (kind, _), node_id in zip(slots, ids, strict=True):
        node: dict[str, Any] = {"id": node_id, "type": kind}
        if kind in ("state", "observation", "action"):
            key = {"state": "num_states", "observation": "num_observations"}.get(
                kind, "num_actions"
            )
            node["properties"] = {key: sizes[kind]}
        if kind == "llm_query":
            node["properties"] = {"prompt_template": "What next?"}
        nodes.append(node)
    wires = [{"source": ids[s], "target": ids[t], "type": k} for s, t, k in edges]
    return {"name": name, "nodes": nodes, "edges": wires}


def schema_minimum(schema: dict[str, Any], kind: str) -> int:
    """The smallest size the schema allows a node type in its first skeleton."""
    doc = schema["anyOf"][0] if "anyOf" in schema else schema
    for node in doc["properties"]["nodes"]["prefixItems"]:
        if node["properties"]["type"]["const"] == kind:
            (dim,) = node["properties"]["properties"]["properties"].values()
            return int(dim["minimum"])
    raise AssertionError(kind)


@pytest.mark.parametrize(
    ("agent_type", "constraints"), list(itertools.product(AGENT_TYPES, CONSTRAINTS))
)
def test_every_schema_instance_with_resolving_ids_is_a_valid_document(
    agent_type: str, constraints: GMNConstraints
) -> None:
    schema = lean_json_schema(agent_type, constraints)
    Draft202012Validator.check_schema(schema)
    check = Draft202012Validator(schema)
    sizes = {kind: schema_minimum(schema, kind) for kind in ("state", "observation", "action")}
    spec = GMNPrompt(
        custom_id="c",
        prompt="model some agent please",
        agent_type=agent_type,  # type: ignore[arg-type]
    )
    spec.constraints = constraints
    _, data = first_round(spec, profile="lean", example="none")
    for name in skeletons_for(constraints):
        doc = instance(name, sizes)
        assert list(check.iter_errors(doc)) == [], name
        assert validate_gmn(orjson.dumps(doc)).valid, name
        assert check_answer(orjson.dumps(doc).decode(), data).codes == [], (name, agent_type)


def test_sizes_are_bounded_by_the_constraints_and_raised_by_the_agent_type() -> None:
    check = Draft202012Validator(lean_json_schema("trader", GMNConstraints(max_states=9)))
    assert not list(
        check.iter_errors(instance("core", {"state": 9, "observation": 3, "action": 3}))
    )
    too_many = instance("core", {"state": 10, "observation": 3, "action": 3})
    one_action = instance("core", {"state": 3, "observation": 3, "action": 1})
    huge = instance("core", {"state": 3, "observation": LEAN_MAX_SIZE + 1, "action": 3})
    for doc in (too_many, one_action, huge):
        assert list(check.iter_errors(doc))
    general = Draft202012Validator(lean_json_schema("general", GMNConstraints()))
    assert not list(general.iter_errors(one_action))
    # a coordinator hearing one yes/no report is not enough (GMN095): 3 values, or two sensors
    coordinator = Draft202012Validator(lean_json_schema("coordinator", GMNConstraints()))
    two = {"state": 3, "observation": 2, "action": 3}
    assert list(coordinator.iter_errors(instance("belief", two)))
    assert not list(coordinator.iter_errors(instance("two_sensors", two)))


def test_max_nodes_leaves_out_the_skeletons_that_are_too_big() -> None:
    assert skeletons_for(GMNConstraints(max_nodes=8)) == ["core", "belief"]
    assert skeletons_for(GMNConstraints(max_nodes=2)) == ["core"]
    assert skeletons_for(GMNConstraints()) == list(SKELETONS)
    one = lean_json_schema("general", GMNConstraints(max_nodes=6))
    assert "anyOf" not in one and len(one["properties"]["nodes"]["prefixItems"]) == 6


def test_the_schema_pins_the_edges_to_the_slots_they_join() -> None:
    check = Draft202012Validator(lean_json_schema("explorer", GMNConstraints()))
    doc = instance("core", {"state": 4, "observation": 4, "action": 3})
    doc["edges"][1]["type"] = "depends_on"  # lik -> obs must be generates (GMN052)
    assert list(check.iter_errors(doc))
    doc = instance("core", {"state": 4, "observation": 4, "action": 3})
    doc["edges"][0]["source"] = "act_thing"  # the state's edge from an action (GMN052/056)
    assert list(check.iter_errors(doc))
    doc = instance("core", {"state": 4, "observation": 4, "action": 3})
    doc["nodes"][3]["properties"] = {"matrix": [[1.0]]}  # no matrices in the lean form
    assert list(check.iter_errors(doc))


@pytest.mark.parametrize("key", sorted(EXAMPLES))
def test_the_lean_examples_fit_their_skeleton_and_are_valid(key: str) -> None:
    doc = lean_document(orjson.loads(EXAMPLES[key][1]))
    assert validate_gmn(orjson.dumps(doc)).valid
    agent = {"explorer": "explorer", "trader": "trader", "coordinator": "coordinator"}[key]
    assert not list(
        Draft202012Validator(lean_json_schema(agent, GMNConstraints())).iter_errors(doc)
    )


def test_the_lean_prompt_shows_the_lean_example_and_a_copy_of_it_is_gmn091() -> None:
    spec = GMNPrompt(
        custom_id="t", prompt="A trader that buys or sells for profit.", agent_type="trader"
    )
    request, data = first_round(spec, profile="lean", example="contrast")
    system = request.messages[0].text
    assert system.startswith(LEAN_RULES) and "matrix" not in system.split("Example")[1]
    assert data.profile == "lean" and data.examples == ["lean:coordinator"]
    copy = lean_document(orjson.loads(EXAMPLES["coordinator"][1]))
    assert check_answer(orjson.dumps(copy).decode(), data).codes == ["GMN091"]
    renamed = orjson.loads(orjson.dumps(copy).replace(b"planner", b"advisor"))
    assert check_answer(orjson.dumps(renamed).decode(), data).codes == ["GMN091"]
    other = instance("llm_advice", {"state": 5, "observation": 3, "action": 4})
    assert check_answer(orjson.dumps(other).decode(), data).codes == []


def test_the_validator_sends_the_lean_schema_only_for_the_lean_profile() -> None:
    spec = GMNPrompt(
        custom_id="t", prompt="A trader that buys or sells for profit.", agent_type="trader"
    )
    spec.constraints = GMNConstraints(max_states=4)
    _, lean = first_round(spec, profile="lean")
    _, full = first_round(spec)
    schema = GMN.wire_schema(gmn_options(lean))
    assert lean.layouts is not None  # a grounded request: layouts the prompt suggests
    assert schema == lean_json_schema(
        "trader", GMNConstraints(max_states=4), lean.stated, lean.layouts
    )
    full_schema = GMN.wire_schema(gmn_options(full))
    assert full_schema is not None and "anyOf" not in full_schema
    assert full_schema["properties"]["nodes"]["items"]["anyOf"]
    assert GMN.wire_schema({"agent_type": "nobody"}) is None


def test_without_an_example_the_lean_prompt_shows_the_lean_syntax() -> None:
    spec = GMNPrompt(
        custom_id="t", prompt="A trader that buys or sells for profit.", agent_type="trader"
    )
    request, data = first_round(spec, profile="lean", example="none")
    assert LEAN_SYNTAX_ONLY in request.messages[0].text and data.examples == []


def test_copy_feedback_names_the_sizes_to_change_in_refine_and_fresh_rounds() -> None:
    spec = GMNPrompt(
        custom_id="t", prompt="An explorer that walks a maze to the exit.", agent_type="explorer"
    )
    _, data = first_round(spec, profile="lean", example="contrast")
    copy = lean_document(orjson.loads(EXAMPLES["trader"][1]))
    copy["nodes"][0]["id"] = "state_where"
    for edge in copy["edges"]:
        edge["source"] = "state_where" if edge["source"] == "state_holding" else edge["source"]
    checked = check_answer(orjson.dumps(copy).decode(), data)
    assert checked.codes == ["GMN091"]
    assert "(3 states, 3 observations, 3 actions, as in the example)" in checked.errors[0].message
    note = fresh_note(checked, None)
    assert "3 states, 3 observations, 3 actions" in note


def test_the_report_counts_valid_documents_without_numbers_and_lean_distinct_structures() -> None:
    from producers.gmn import GMNOutcome
    from producers.gmn_cli import GMNReport, has_numbers

    full = orjson.loads(EXAMPLES["explorer"][1])
    lean = instance("core", {"state": 5, "observation": 5, "action": 4})
    same = instance("core", {"state": 5, "observation": 5, "action": 4})
    same["name"] = "another"
    other = instance("core", {"state": 9, "observation": 5, "action": 4})
    assert has_numbers(full) and not has_numbers(lean)
    report = GMNReport()
    for i, doc in enumerate((full, lean, same, other)):
        profile = "full" if doc is full else "lean"
        report.add(
            GMNOutcome(custom_id=str(i), valid=True, rounds=1, document=doc, profile=profile)
        )
    data = report.to_dict()
    assert (data["valid"], data["distinct_valid"], data["valid_without_numbers"]) == (4, 3, 3)
    # the three lean documents are one graph (the core skeleton), whatever their sizes
    assert data["distinct_graphs"] == 2
    assert data["profiles"] == {"full": 1, "lean": 3}


def auto_job(profile: str = "auto") -> Any:
    from schemas.gmn.task import new_state
    from schemas.job import Job, Task
    from schemas.request import RouteHop
    from schemas.structured import TASK_KIND

    spec = GMNPrompt(
        custom_id="a", prompt="A trader that buys or sells for profit.", agent_type="trader"
    )
    request, data = first_round(spec, profile=profile, example="contrast", max_tokens=600)  # type: ignore[arg-type]
    state = new_state(data)
    return Job(
        batch_id="batch_a",
        key="a",
        request=request,
        route=[RouteHop(endpoint="llama")],
        enqueued_at=0.0,
        task=Task(kind=TASK_KIND, max_rounds=3, data=state.model_dump(mode="json")),
    )


def reply(text: str, finish_reason: str | None = "stop") -> Any:
    from schemas.result import LLMResult, Usage

    return LLMResult(
        custom_id="a",
        batch_id="batch_a",
        status="succeeded",
        output=text,
        endpoint="llama",
        model="qwen",
        finish_reason=finish_reason,
        usage=Usage(input_tokens=900, output_tokens=600),
    )


def test_auto_switches_to_lean_after_a_cut_off_answer() -> None:
    from workers import structured
    from workers.execute import Executor

    first = auto_job()
    system = first.request.messages[0].text
    assert "matrix indexed A[observation][state]" in system  # round 1 is the full notation
    cut = '{"name": "t", "nodes": [{"id": "holding", "type": "state", "properties": {"num'
    review = structured.review(first, reply(cut, "length"))
    assert review.result is None and review.next_request is not None
    messages = review.next_request.messages
    # a fresh attempt under the lean rules, told why, without the cut-off answer
    assert [m.role for m in messages] == ["system", "user"]
    assert messages[0].text.startswith(LEAN_RULES)
    assert "Your earlier answer was rejected: it was cut off" in messages[1].text
    assert messages[1].text.startswith("A trader that buys or sells for profit.")
    second = Executor._next_round(first, review.next_request)
    assert second.task is not None
    assert second.task.data["strategy"] == "simplify"
    options = second.task.data["options"]
    assert (options["profile"], options["examples"]) == ("lean", ["lean:coordinator"])
    # the next round decodes under the lean skeleton, and its answer is checked as lean
    stated, layouts = options.get("stated", []), options["layouts"]
    assert GMN.wire_schema(options) == lean_json_schema(
        "trader", GMNConstraints(), [StatedSize.model_validate(s) for s in stated], layouts
    )
    doc = instance("core", {"state": 3, "observation": 2, "action": 3})
    final = structured.review(second, reply(orjson.dumps(doc).decode()))
    assert final.result is not None
    record = final.result.extra["gmn"]
    assert (record["valid"], record["profile"], record["rounds"]) == (True, "lean", 2)
    assert [h["strategy"] for h in record["history"]] == ["first", "simplify"]


@pytest.mark.parametrize(
    ("profile", "fault", "strategy"),
    [
        ("auto", "GMN046", "simplify"),  # a likelihood column that does not sum to 1
        ("auto", "GMN052", "simplify"),  # an edge type not allowed between its node types
        ("auto", "GMN091", "refine"),  # a copy of the example: refined in the full notation
        ("full", "GMN046", "refine"),  # full never switches
    ],
)
def test_auto_switches_on_every_fault_but_a_copy(profile: str, fault: str, strategy: str) -> None:
    from workers import structured
    from workers.execute import Executor

    doc = orjson.loads(EXAMPLES["trader"][1])
    if fault == "GMN046":
        doc["nodes"][3]["properties"]["matrix"][0][0] = 0.9
    elif fault == "GMN052":
        doc["edges"][0]["type"] = "generates"
    else:
        doc = orjson.loads(EXAMPLES["coordinator"][1])  # what the trader prompt shows
    first = auto_job(profile)
    review = structured.review(first, reply(orjson.dumps(doc).decode()))
    assert review.next_request is not None
    second = Executor._next_round(first, review.next_request)
    assert second.task is not None
    assert fault in second.task.data["history"][0]["codes"]
    assert second.task.data["strategy"] == strategy
    lean = second.task.data["options"].get("profile") == "lean"
    assert lean == (strategy == "simplify")


def test_the_full_decoding_schema_carries_the_request_size_bounds() -> None:
    from schemas.gmn.json_schema import grounded_schema

    def sizes(schema: dict[str, Any]) -> dict[str, tuple[int, int]]:
        found = {}
        for node in schema["properties"]["nodes"]["items"]["anyOf"]:
            for key, value in node["properties"]["properties"]["properties"].items():
                if key.startswith("num_"):
                    found[key] = (value["minimum"], value["maximum"])
        return found

    trader = grounded_schema("trader", GMNConstraints(max_states=9, max_actions=1))
    Draft202012Validator.check_schema(trader)
    assert sizes(trader) == {
        "num_states": (2, 9),
        "num_observations": (1, 100_000),
        "num_actions": (1, 1),  # max_actions 1 wins over "a trader chooses"
    }
    assert sizes(grounded_schema("general", GMNConstraints()))["num_states"] == (1, 100_000)
    check = Draft202012Validator(grounded_schema("explorer", GMNConstraints()))
    assert not list(check.iter_errors(orjson.loads(EXAMPLES["explorer"][1])))


def test_a_lean_copy_of_the_example_is_answered_by_rounds_without_the_example() -> None:
    from workers import structured
    from workers.execute import Executor

    first = auto_job("lean")  # a trader shown the coordinator example (contrast)
    assert "Example (a coordinator)" in first.request.messages[0].text
    copy = lean_document(orjson.loads(EXAMPLES["coordinator"][1]))
    review = structured.review(first, reply(orjson.dumps(copy).decode()))
    assert review.next_request is not None
    messages = review.next_request.messages
    assert [m.role for m in messages] == ["system", "user"]
    assert "Example (" not in messages[0].text and LEAN_SYNTAX_ONLY in messages[0].text
    assert "Your earlier answer copied the example from the instructions" in messages[1].text
    second = Executor._next_round(first, review.next_request)
    assert second.task is not None and second.task.data["strategy"] == "no_example"
    options = second.task.data["options"]
    assert options["hidden_examples"] is True and options["examples"] == ["lean:coordinator"]
    # the example is no longer shown, but answering it again is still a copy, refined as usual
    again = structured.review(second, reply(orjson.dumps(copy).decode()))
    assert again.next_request is not None
    third = Executor._next_round(second, again.next_request)
    assert third.task is not None
    assert third.task.data["history"][1]["codes"] == ["GMN091"]
    assert third.task.data["strategy"] == "fresh"  # the same code again
    assert "Example (" not in again.next_request.messages[0].text


def test_a_next_round_does_not_inherit_the_worker_deaths_of_the_last() -> None:
    from workers import structured
    from workers.execute import Executor

    # A round whose worker died twice running it (then run alone, and answered),
    first = auto_job().model_copy(update={"deaths": 2})
    cut = '{"name": "t", "nodes": [{"id": "holding", "type": "state", "properties": {"num'
    review = structured.review(first, reply(cut, "length"))
    assert review.next_request is not None
    # is followed by a new request: it runs with the others, and its own deaths count afresh.
    second = Executor._next_round(first, review.next_request)
    assert (second.deaths, second.hop, second.attempts) == (0, 0, [])
