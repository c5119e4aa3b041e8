"""The json_schema validator: JSON pointers, format checks, schema errors at submit."""

from __future__ import annotations

from typing import Any

import pytest

from producers.submit import ChunkBuilder, numbered
from schemas.config import parse_config
from schemas.gmn.examples import EXPLORER
from schemas.request import LLMRequest
from workers.gmn_review import gmn_pointer
from workers.protocol.keys import Keys
from workers.structured import refine_request
from workers.validators import UnknownValidator, check_schema, json_schema, pointer, validator

SCHEMA = {
    "type": "object",
    "properties": {"a/b": {"type": "array", "items": {"type": "string", "format": "date"}}},
}


def request(schema: dict[str, Any]) -> LLMRequest:
    fmt = {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}
    return LLMRequest.chat("c", [{"role": "user", "content": "q"}], response_format=fmt)


def test_errors_point_into_the_answer_with_escaped_pointers_and_formats_checked() -> None:
    verdict = json_schema('{"a/b": ["2026-12-04", "yesterday", 3]}', request(SCHEMA), {})
    assert not verdict.valid
    assert [(e.pointer, e.code) for e in verdict.errors] == [
        ("/a~1b/1", "format"),
        ("/a~1b/2", "type"),
    ]
    assert pointer(["x~y", 0]) == "/x~0y/0"


def test_unparsable_answers_and_unknown_validators_say_why() -> None:
    [issue] = json_schema("{", request(SCHEMA), {}).errors
    assert issue.pointer == "" and issue.message.startswith("not valid JSON")
    with pytest.raises(UnknownValidator, match="no validator 'nope' is installed"):
        validator("nope")
    assert check_schema({"type": "objekt"}) is not None and check_schema(SCHEMA) is None


def test_refine_keeps_the_users_turns_and_only_the_last_answer() -> None:
    first = LLMRequest.chat(
        "c", [{"role": "system", "content": "s"}, {"role": "user", "content": "q"}]
    )
    second = refine_request(first, 2, "a1", [])
    third = refine_request(second, 2, "a2", [])
    assert [m["content"] for m in third.body["messages"][:3]] == ["s", "q", "a2"]
    assert len(third.body["messages"]) == 4


def test_submit_names_line_and_field_of_an_unknown_validator() -> None:
    config = parse_config({"endpoints": {"m": {"provider": "mock"}}})
    line = {"custom_id": "x", "body": {"messages": [{"role": "user", "content": "q"}],
            "batchyard": {"validator": "nope"}}}  # fmt: skip
    chunk = ChunkBuilder("batch_x", Keys(), config).build(list(numbered([line])))
    [(_, result)] = chunk.errors
    assert result.error is not None
    assert result.error.message.startswith("line 1: body.batchyard.validator: no validator 'nope'")


def test_gmn_is_a_validator_with_its_own_codes_at_json_pointers() -> None:
    check = validator("gmn")
    plain = LLMRequest.chat("g", [{"role": "user", "content": "an explorer"}])
    assert check(EXPLORER, plain, {}).valid
    verdict = check('{"name": "x", "nodes": []}', plain, {})
    assert not verdict.valid
    assert ("/edges", "GMN010") in {(e.pointer, e.code) for e in verdict.errors}
    assert gmn_pointer("$.nodes[2].id") == "/nodes/2/id" and gmn_pointer("line 3") == ""


def test_the_gmn_entry_points_earlier_value_still_loads_the_plugin() -> None:
    # An install whose entry points predate the plugin names `workers.gmn_review:validate`.
    from importlib.metadata import EntryPoint

    from workers.gmn_review import GMNValidator

    old = EntryPoint("gmn", "workers.gmn_review:validate", "batchyard.validators").load()
    assert isinstance(old, GMNValidator)
