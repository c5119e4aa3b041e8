"""Honest GMN validity (#23): copies of the prompt's example, agent-type rules, cut-off and
JSON-less replies, and feedback grouped by rule with the allowed alternatives."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import orjson
import pytest

from providers.mock_gmn import build_document
from schemas.gmn import validate_gmn
from schemas.gmn.copies import StructureIndex, canonical, check_copy, copy_of
from schemas.gmn.examples import (
    COORDINATOR,
    EXAMPLES,
    EXPLORER,
    TRADER,
    example_block,
    example_documents,
    examples_for,
)
from schemas.gmn.feedback import RULES, allowed_edge_types, group_errors, render_groups
from schemas.gmn.grounding import check_agent_type
from schemas.gmn.prompts import AGENT_TYPES, GMNConstraints, GMNTaskData, system_prompt
from schemas.gmn.reply import read_reply
from schemas.gmn.rounds import check_answer

#: The GMN spec and examples, vendored from shared/gmn.
DATA = Path(__file__).resolve().parents[1] / "data" / "gmn"
EXAMPLE_FILES = sorted((DATA / "examples").glob("*.json"))
#: Which agent type each shared valid example models (minimal_agent is a bare skeleton).
AGENT_OF = {
    "coordinator_crew": "coordinator",
    "explorer_treasure_grid": "explorer",
    "forager_two_factors": "explorer",
    "minimal_agent": "general",
    "sentry_patrol": "explorer",
    "trader_regime": "trader",
}


def doc(text: str = EXPLORER) -> dict[str, Any]:
    return orjson.loads(text)


def renamed(text: str, names: dict[str, str]) -> dict[str, Any]:
    """The example with every id (and its name) replaced, and its nodes and edges reordered."""
    data = doc(text)
    for node in data["nodes"]:
        node["id"] = names[node["id"]]
    for edge in data["edges"]:
        edge["source"], edge["target"] = names[edge["source"]], names[edge["target"]]
    data["name"] = "my_own_trader"
    data["description"] = "Buys low and sells high."
    data["nodes"].reverse()
    data["edges"] = data["edges"][1:] + data["edges"][:1]
    return data


EXPLORER_NAMES = {
    "cell": "holding",
    "seen_cell": "pnl",
    "step": "order",
    "cell_sensor": "pnl_model",
    "cell_dynamics": "book",
    "start_belief": "prior",
    "goal": "likes_profit",
}


def test_the_examples_are_valid_and_the_explorer_is_what_prompts_always_showed() -> None:
    for _, text in EXAMPLES.values():
        assert validate_gmn(text).valid
    assert f"Example (an explorer):\n{EXPLORER}" in system_prompt("trader", GMNConstraints())


def test_an_answer_identical_to_the_prompts_example_is_flagged() -> None:
    # Given a trader prompt that showed the explorer example, and the model answering with it,
    data = GMNTaskData(agent_type="trader")
    for answer in (EXPLORER, orjson.dumps(doc(), option=orjson.OPT_INDENT_2).decode()):
        checked = check_answer(answer, data)
        # then the answer is a copy (GMN091), not a success.
        assert checked.codes == ["GMN091"]
        assert "'grid_explorer_2x2'" in checked.errors[0].message
        assert "copied" in checked.errors[0].message


def test_an_answer_that_only_renames_the_examples_ids_is_flagged() -> None:
    data = GMNTaskData(agent_type="trader")
    copy = renamed(EXPLORER, EXPLORER_NAMES)
    assert validate_gmn(copy).valid and canonical(copy) != canonical(doc())
    checked = check_answer(orjson.dumps(copy).decode(), data)
    assert checked.codes == ["GMN091"]
    assert "only names changed" in checked.errors[0].message


def test_a_real_answer_is_not_a_copy() -> None:
    examples = example_documents(["explorer"])
    # The same notation with other sizes, other wiring or other nodes is the model's own.
    bigger = doc()
    bigger["nodes"][0]["properties"]["num_states"] = 5
    assert copy_of(bigger, examples) is None
    rewired = doc()
    rewired["edges"] = [e for e in rewired["edges"] if e["source"] != "start_belief"]
    assert copy_of(rewired, examples) is None
    assert copy_of(doc(TRADER), examples) is None
    # An example the prompt did not show is not checked against.
    assert check_copy(doc(TRADER), example_documents(["explorer"])) == []
    assert check_copy(doc(), []) == []
    # Every mock answer for the shared-style prompts is its own.
    for agent in AGENT_TYPES:
        made = build_document("walks a 2x2 grid", agent, GMNConstraints(), random.Random(0))
        assert copy_of(made, example_documents(["explorer", "trader", "coordinator"])) is None


def test_structure_ignores_names_but_not_wiring() -> None:
    # Two nodes of the same label swapped in one edge only: same label counts, other graph.
    a = {
        "nodes": [{"id": i, "type": "state", "properties": {"num_states": 2}} for i in "xyz"],
        "edges": [
            {"source": "x", "target": "y", "type": "influences"},
            {"source": "y", "target": "z", "type": "depends_on"},
        ],
    }
    b = orjson.loads(orjson.dumps(a))
    b["edges"][1] = {"source": "x", "target": "z", "type": "depends_on"}
    index = StructureIndex()
    assert index.add(a, 2) and index.add(b, 3)
    c = orjson.loads(orjson.dumps(a).replace(b'"x"', b'"q"'))
    assert not index.add(c, 1), "renaming is not a new structure"
    assert (index.distinct, index.distinct_by(1), index.distinct_by(2)) == (2, 1, 1)


def test_the_example_choice_shows_one_unlike_the_agent_type_or_none() -> None:
    assert examples_for("trader", "explorer") == ["explorer"]
    assert examples_for("explorer", "contrast") == ["trader"]
    assert examples_for("trader", "contrast") == ["coordinator"]
    assert examples_for("coordinator", "contrast") == ["explorer"]
    assert examples_for("general", "none") == []
    text = system_prompt("explorer", GMNConstraints(), "contrast")
    assert f"Example (a trader):\n{TRADER}" in text and EXPLORER not in text
    bare = system_prompt("coordinator", GMNConstraints(), "none")
    assert EXPLORER not in bare and COORDINATOR not in bare and example_block([]) in bare
    # The trader example shown to an explorer prompt is caught when copied back.
    data = GMNTaskData(agent_type="explorer", examples=["trader"])
    assert check_answer(TRADER, data).codes == ["GMN091"]


@pytest.mark.parametrize("path", EXAMPLE_FILES, ids=lambda p: p.stem)
def test_every_valid_shared_example_meets_its_agent_types_rules(path: Path) -> None:
    assert check_agent_type(orjson.loads(path.read_bytes()), AGENT_OF[path.stem]) == []


def test_the_agent_type_rules_each_have_a_code() -> None:
    # Given a document that is valid but generic: 1 state value, 1 action, no transition,
    generic = {
        "nodes": [
            {"id": "s", "type": "state", "properties": {"num_states": 1}},
            {"id": "o", "type": "observation", "properties": {"num_observations": 1}},
            {"id": "a", "type": "action", "properties": {"num_actions": 1}},
        ],
        "edges": [
            {"source": "s", "target": "o", "type": "generates"},
            {"source": "a", "target": "s", "type": "influences"},
        ],
    }
    assert validate_gmn(generic).valid
    codes = lambda agent, **c: [  # noqa: E731
        e.code for e in check_agent_type(generic, agent, GMNConstraints(**c))
    ]
    # then each agent type says what it misses, with its own code,
    assert codes("trader") == ["GMN096", "GMN092", "GMN094", "GMN093"]
    assert codes("coordinator") == ["GMN096", "GMN092", "GMN094", "GMN093", "GMN095"]
    assert codes("general") == []
    # and a stated constraint that rules a requirement out wins over it.
    assert codes("trader", max_actions=1, max_states=1, max_nodes=4) == []
    errors = check_agent_type(generic, "trader")
    assert errors[1].path == "$.nodes[2].properties.num_actions" and errors[1].node == "a"
    assert "buy/sell/hold" in errors[1].message


def test_a_cut_off_reply_is_reported_as_truncated_not_as_its_fragment() -> None:
    # Given an answer cut off by max_tokens in the middle of the nodes,
    cut = EXPLORER[: int(len(EXPLORER) * 0.6)]
    reading = read_reply(cut, "length", max_tokens=300, output_tokens=300)
    # then it is one GMN080 naming the budget, not GMN010 about a node-object fragment.
    assert reading.fault == "truncated" and [e.code for e in reading.errors] == ["GMN080"]
    assert "cut off after 300 tokens (limit 300 tokens)" in reading.errors[0].message
    assert reading.document is None
    # Without a finish_reason, an object that never closes is cut off all the same,
    assert read_reply(f"Here you go:\n```json\n{cut}", "stop").fault == "truncated"
    assert read_reply("I think the agent needs", "length").fault == "truncated"
    # while a complete document that ends at the limit is judged on its merits.
    assert read_reply(EXPLORER, "length").errors == []


def test_a_reply_without_json_says_so() -> None:
    for text, what in (("", "empty"), ("I would model it with three states.", "prose")):
        reading = read_reply(text)
        assert reading.fault == "no_json" and [e.code for e in reading.errors] == ["GMN081"]
        assert what in reading.errors[0].message
    # Text-form answers and broken JSON keep the validator's own codes.
    assert read_reply("[nodes]\ns: state {num_states: 2}\n").errors[0].code != "GMN081"
    assert read_reply('{"nodes": [}').errors[0].code == "GMN001"


def test_feedback_puts_structural_errors_first_with_rules_and_alternatives() -> None:
    # Given a document without an action node whose preference and sensor edges are wrong,
    data = doc()
    data["nodes"] = [n for n in data["nodes"] if n["type"] != "action"]
    data["edges"] = [e for e in data["edges"] if e["source"] != "step"]
    data["edges"][1] = {"source": "seen_cell", "target": "cell", "type": "generates"}
    errors = validate_gmn(data).errors
    assert {"GMN052", "GMN053", "GMN056"} <= {e.code for e in errors}
    groups = group_errors(errors, data)
    # then missing node types come first, then disallowed edges, each with its rule,
    assert [g.code for g in groups][:2] == ["GMN053", "GMN052"]
    assert groups[0].rule == RULES["GMN053"]
    [edge] = groups[1].items
    # and a disallowed edge says what may run between those node types.
    assert edge.startswith("- GMN052 at $.edges[1].type (node seen_cell): ")
    assert edge.endswith(
        "; allowed from observation to state: influences "
        "(or reverse it: state to observation allows generates)"
    )
    lines = render_groups(groups, limit=1)
    assert lines[0] == f"GMN053: {RULES['GMN053']}"
    assert lines[-1] == f"- ... and {len(errors) - 1} more errors"
    assert allowed_edge_types("preference", "observation") == ["depends_on", "influences"]


def test_every_code_the_checks_can_emit_has_a_rule_line() -> None:
    spec = (DATA / "SPEC.md").read_text(encoding="utf-8")
    codes = {f"GMN0{n:02d}" for n in range(100)}
    documented = {c for c in codes if f"**{c}**" in spec}
    assert len(documented) >= 40
    assert documented <= set(RULES), sorted(documented - set(RULES))
    assert {"GMN080", "GMN081", "GMN090", "GMN091", "GMN092", "GMN096"} <= set(RULES)
