"""Input lines in the formats users already have, and the OpenAI output format."""

from __future__ import annotations

import orjson
import pytest

from schemas.batch_lines import LineError, parse_line, to_openai_line
from schemas.result import ErrorInfo, LLMResult, Timings, Usage
from tests.conftest import openai_line


def line(obj: object) -> bytes:
    return orjson.dumps(obj)


def test_openai_line_maps_known_fields_and_passes_the_rest_through() -> None:
    raw = openai_line("a-1", "hi", max_tokens=50, temperature=0.2, seed=7, n=1)
    req = parse_line(line(raw), 1)
    assert req.custom_id == "a-1"
    assert req.model == "m"
    assert req.max_tokens == 50
    assert req.temperature == 0.2
    assert req.params == {"seed": 7, "n": 1}
    assert [(m.role, m.content) for m in req.messages] == [("user", "hi")]


def test_openai_content_parts_and_developer_role_are_understood() -> None:
    raw = openai_line("a", "x")
    raw["body"] = {
        "model": "m",
        "max_completion_tokens": 9,
        "messages": [
            {"role": "developer", "content": "be brief"},
            {
                "role": "user",
                "content": [{"type": "text", "text": "he"}, {"type": "text", "text": "y"}],
            },
        ],
    }
    req = parse_line(line(raw), 3)
    assert [(m.role, m.content) for m in req.messages] == [("system", "be brief"), ("user", "hey")]
    assert req.max_tokens == 9


def test_anthropic_line_separates_system_and_maps_stop_sequences() -> None:
    raw = {
        "custom_id": "c",
        "params": {
            "model": "claude",
            "max_tokens": 100,
            "system": "sys",
            "stop_sequences": ["END"],
            "messages": [{"role": "user", "content": "q"}],
        },
    }
    req = parse_line(line(raw), 1)
    assert [(m.role, m.content) for m in req.messages] == [("system", "sys"), ("user", "q")]
    assert req.stop == ["END"]
    assert req.max_tokens == 100


def test_native_line_is_an_llm_request() -> None:
    req = parse_line(
        line(
            {"custom_id": "n", "messages": [{"role": "user", "content": "x"}], "tier": "advanced"}
        ),
        1,
    )
    assert req.tier == "advanced"


@pytest.mark.parametrize(
    ("raw", "field", "fragment"),
    [
        (b"{not json", None, "not valid JSON"),
        (b"[1, 2]", None, "must be a JSON object"),
        (
            line({"method": "POST", "url": "/v1/chat/completions", "body": {}}),
            "custom_id",
            "required",
        ),
        (line({"custom_id": "", "body": {}}), "custom_id", "non-empty string"),
        (line({**openai_line("x", "y"), "url": "/v1/embeddings"}), "url", "/v1/embeddings"),
        (line({**openai_line("x", "y"), "method": "GET"}), "method", "POST"),
        (line({**openai_line("x", "y"), "body": [1]}), "body", "JSON object"),
        (line(openai_line("x", "y", temperature=9)), "body.temperature", "less than or equal"),
        (
            line(
                {**openai_line("x", "y"), "body": {"messages": [{"role": "robot", "content": "c"}]}}
            ),
            "body.messages.0.role",
            "'system'",
        ),
        (line({**openai_line("x", "y"), "body": {"messages": []}}), "body.messages", "at least 1"),
        (line({**openai_line("x", "y"), "extra": 1}), "extra", "unknown field"),
    ],
)
def test_bad_lines_name_the_line_and_the_field(
    raw: bytes, field: str | None, fragment: str
) -> None:
    with pytest.raises(LineError) as info:
        parse_line(raw, 42)
    err = info.value
    assert err.line == 42
    assert err.field == field
    assert fragment in str(err)
    assert str(err).startswith("line 42: ")


def test_success_maps_to_openai_batch_output_line() -> None:
    result = LLMResult(
        custom_id="r1",
        batch_id="batch_1",
        status="succeeded",
        output="hello",
        model="gpt",
        finish_reason="length",
        usage=Usage(input_tokens=3, output_tokens=4),
        timings=Timings(finished_at=1700000000.5),
        request_id="req_9",
    )
    out = to_openai_line(result, "r1")
    assert out["custom_id"] == "r1" and out["error"] is None
    assert out["id"].startswith("batch_req_")
    response = out["response"]
    assert response["status_code"] == 200 and response["request_id"] == "req_9"
    body = response["body"]
    assert body["object"] == "chat.completion" and body["created"] == 1700000000
    assert body["choices"][0]["message"] == {
        "role": "assistant",
        "content": "hello",
        "refusal": None,
    }
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["usage"] == {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}
    assert to_openai_line(result, "r1")["id"] == out["id"], "ids must be stable across exports"


def test_error_maps_to_openai_error_line_with_line_number() -> None:
    result = LLMResult(
        custom_id=None,
        batch_id="b",
        status="errored",
        error=ErrorInfo(code="invalid_line", message="line 3: boom", line=3),
    )
    out = to_openai_line(result, "#line:3")
    assert out["response"] is None
    assert out["error"] == {"code": "invalid_line", "message": "line 3: boom", "line": 3}
