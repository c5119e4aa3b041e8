"""The GMN JSON Schema: every valid example passes it; it already rejects what a schema can see."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from jsonschema import Draft202012Validator

from schemas.gmn import validate_gmn
from schemas.gmn.examples import EXAMPLES
from schemas.gmn.json_schema import gmn_json_schema, schema_errors
from tests.unit.test_gmn_honesty import DATA

VALID = sorted((DATA / "examples").glob("*.json"))
INVALID = sorted((DATA / "examples" / "invalid").glob("*.json"))
#: Invalid examples the schema rejects by itself; the rest need the validator (sums, shapes
#: against linked sizes, references, cycles).
SCHEMA_REJECTS = {"flat_attribute_dialect", "missing_action_node"}


def test_the_example_files_are_there() -> None:
    assert len(VALID) >= 6 and len(INVALID) >= 6


@pytest.mark.parametrize("decoding", [False, True])
def test_the_schema_is_valid_draft_2020_12(decoding: bool) -> None:
    Draft202012Validator.check_schema(gmn_json_schema(decoding))


@pytest.mark.parametrize("path", VALID, ids=lambda p: p.stem)
def test_every_valid_example_validates_against_the_schema(path: Path) -> None:
    doc = orjson.loads(path.read_bytes())
    assert schema_errors(doc) == []
    assert schema_errors(doc, decoding=True) == []


def test_the_prompt_examples_validate_against_the_schema() -> None:
    for _, text in EXAMPLES.values():
        assert schema_errors(orjson.loads(text)) == []


def test_which_invalid_examples_the_schema_already_rejects() -> None:
    rejected = {p.stem for p in INVALID if schema_errors(orjson.loads(p.read_bytes()))}
    assert rejected == SCHEMA_REJECTS
    assert all(not validate_gmn(p.read_bytes()).valid for p in INVALID)


def test_what_the_schema_states() -> None:
    base = orjson.loads(EXAMPLES["explorer"][1])

    def errors(**change: object) -> list[str]:
        doc = orjson.loads(orjson.dumps(base))
        for where, value in change.items():
            index, key = where.split("__")
            if index == "top":
                doc[key] = value
            else:
                doc["nodes"][int(index[1:])][key] = value
        return schema_errors(doc)

    assert errors(top__extra=1)[0].startswith("/: Additional properties")
    assert errors(n0__id="2x") and errors(n0__type="State")
    assert errors(n0__properties={"num_states": 0}), "a size is >= 1"
    assert errors(n0__properties={"num_states": 4, "matrix": [[1.0]]}), "reserved on a state"
    assert errors(n0__properties={"num_states": 4, "matrix": None}) == [], "null is absent"
    assert errors(n3__properties={"matrix": [[-0.1]]}), "probabilities are >= 0"
    assert errors(n3__properties={"matrix": [0.5, 0.5]}), "a likelihood matrix is 2-D"
    assert errors(top__edges=[{"source": "cell", "target": "goal", "type": "causes"}])
    assert errors(top__name=" ") and not schema_errors({**base, "name": " "}, decoding=True), (
        "decoding leaves the blank-name pattern to the validator"
    )


def test_decoding_bounds_every_array_so_a_repeating_model_must_close_it() -> None:
    from schemas.gmn.json_schema import DECODED_ITEMS, DECODED_NODES

    base = orjson.loads(EXAMPLES["explorer"][1])
    looping = {**base, "nodes": base["nodes"] + [base["nodes"][0]] * DECODED_NODES}
    assert any(e.startswith("/nodes: ") for e in schema_errors(looping, decoding=True))
    assert not any(e.startswith("/nodes: ") for e in schema_errors(looping)), (
        "the validation schema leaves sizes to the validator"
    )

    def arrays(schema: object) -> list[dict[str, object]]:
        if isinstance(schema, dict):
            own = [schema] if schema.get("type") == "array" else []
            return own + [a for value in schema.values() for a in arrays(value)]
        if isinstance(schema, list):
            return [a for value in schema for a in arrays(value)]
        return []

    decoded = arrays(gmn_json_schema(decoding=True))
    assert decoded and all("maxItems" in a for a in decoded)
    assert not any("maxItems" in a for a in arrays(gmn_json_schema()))
    assert DECODED_ITEMS >= 25, "a prompt asks for up to 25 states"
