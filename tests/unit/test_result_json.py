"""A result's stored JSON (`LLMResult.json_bytes`) is pydantic's own document, byte for byte,
whatever the result holds: readers of old and new results see the same thing."""

from __future__ import annotations

import dataclasses
import datetime
import enum
import math

import pytest

from schemas.result import Attempt, ErrorInfo, LLMResult, Timings, Usage


class Colour(enum.StrEnum):
    RED = "red"


@dataclasses.dataclass
class Point:
    x: int


def full() -> LLMResult:
    body = {
        "id": "chatcmpl-1",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "é ✓ \u2028 \x00"}}],
        "usage": {"prompt_tokens": 12, "completion_tokens": 7},
        "numbers": [0.1, 1e-7, 1e16, 1.5e300, -0.0, 5e-324, 2**63 - 1, -(2**63), True, None],
        "nested": {"deep": [[{"a": []}]], "empty": {}},
    }
    return LLMResult(
        custom_id="r-1",
        batch_id="batch_x",
        status="succeeded",
        kind="embeddings",
        output="hello",
        tool_calls=[{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}],
        finish_reason="stop",
        body=body,
        vectors="base64",
        endpoint="fake",
        model="gpt-test",
        request_id="req-1",
        usage=Usage(input_tokens=12, output_tokens=7, cached_tokens=3, reasoning_tokens=2),
        cost_usd=1.2e-05,
        attempts=[Attempt(endpoint="a", error="rate_limited", latency_ms=3), Attempt(endpoint="b")],
        timings=Timings(enqueued_at=1765000000.123456, started_at=1765000000.5, finished_at=None),
        trace_id="0af7651916cd43dd8448eb211c80319c",
        error=ErrorInfo(code="x", message="y", line=3, status=500, body={"error": {"code": 1}}),
        extra={"cache": "hit", "gmn": {"valid": True, "rounds": 2}},
    )


def test_every_field_is_written_as_pydantic_writes_it() -> None:
    bare = LLMResult(custom_id=None, batch_id="b", status="errored")
    for result in (full(), bare):
        assert result.json_bytes() == result.model_dump_json().encode()
        assert LLMResult.model_validate_json(result.json_bytes()) == result


def test_fields_set_after_building_are_written() -> None:
    result = LLMResult(custom_id="k", batch_id="b", status="succeeded")
    result.trace_id = "t"
    result.timings = Timings(enqueued_at=1.0, started_at=2.5, finished_at=3.25)
    result.status = "errored"
    assert result.json_bytes() == result.model_dump_json().encode()


@pytest.mark.parametrize(
    "odd",
    [
        datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.UTC),
        Point(1),
        Usage(input_tokens=1),  # a model inside a dict: pydantic infers its fields
        {1, 2},
        (1, "a"),
        b"raw",
        Colour.RED,
        2**70,
        math.nan,
        math.inf,
        {1: "not a string key"},
    ],
)
def test_values_orjson_writes_otherwise_are_written_as_pydantic_writes_them(odd: object) -> None:
    result = LLMResult(custom_id="k", batch_id="b", status="succeeded", extra={"odd": odd})
    assert result.json_bytes() == result.model_dump_json().encode()
