"""Output lines: the provider's body unchanged, vectors as they were received, and the
formats built from normalised fields when a result has no OpenAI body."""

from __future__ import annotations

import orjson

from schemas import vectors
from schemas.batch_output import native_line, to_anthropic_line, to_openai_line
from schemas.result import ErrorInfo, LLMResult, Timings, Usage

CALLS = [
    {
        "id": "call_1",
        "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
    }
]


def test_a_body_goes_out_unchanged() -> None:
    body = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": None, "tool_calls": CALLS}},
            {"index": 1, "message": {"role": "assistant", "content": "x"}, "logprobs": {"c": []}},
        ],
        "system_fingerprint": "fp_1",
        "vendor_extra": {"k": 1},
    }
    result = LLMResult(
        custom_id="r1", batch_id="b", status="succeeded", body=body, request_id="req_9"
    )
    out = to_openai_line(result, "r1")
    assert out["response"] == {"status_code": 200, "request_id": "req_9", "body": body}
    assert out["id"].startswith("batch_req_") and out["error"] is None
    assert to_openai_line(result, "r1")["id"] == out["id"], "ids must be stable across exports"


def test_float_vectors_are_stored_packed_and_written_as_floats() -> None:
    floats = [0.5, -0.25, 0.125]
    received = {"object": "list", "data": [{"index": 0, "embedding": floats}], "model": "e"}
    packed, fmt = vectors.pack(received)
    assert fmt == "float" and isinstance(packed["data"][0]["embedding"], str)
    result = LLMResult(
        custom_id="e", batch_id="b", status="succeeded", kind="embeddings", body=packed, vectors=fmt
    )
    stored = LLMResult.model_validate_json(result.model_dump_json())
    assert to_openai_line(stored, "e")["response"]["body"] == received
    assert native_line(stored)["body"] == received


def test_base64_vectors_stay_base64() -> None:
    received = {"object": "list", "data": [{"index": 0, "embedding": vectors.encode([1.0])}]}
    packed, fmt = vectors.pack(received)
    assert fmt == "base64" and packed == received
    result = LLMResult(
        custom_id="e", batch_id="b", status="succeeded", kind="embeddings", body=packed, vectors=fmt
    )
    assert to_openai_line(result, "e")["response"]["body"] == received


def test_float32_round_trip_is_exact_for_float32_values() -> None:
    values = [0.1, -3.5, 1e-7, 123456.789]
    once = vectors.decode(vectors.encode(values))
    assert vectors.decode(vectors.encode(once)) == once
    assert all(abs(a - b) <= abs(a) * 1e-7 for a, b in zip(values, once, strict=True))


def test_without_a_body_the_chat_completion_is_built_from_normalised_fields() -> None:
    result = LLMResult(
        custom_id="r1",
        batch_id="batch_1",
        status="succeeded",
        output=None,
        tool_calls=CALLS,
        model="gpt",
        finish_reason="tool_calls",
        usage=Usage(input_tokens=3, output_tokens=4, cached_tokens=2, reasoning_tokens=1),
        timings=Timings(finished_at=1700000000.5),
        request_id="req_9",
    )
    body = to_openai_line(result, "r1")["response"]["body"]
    assert body["object"] == "chat.completion" and body["created"] == 1700000000
    assert body["choices"][0]["message"]["tool_calls"] == CALLS
    assert body["choices"][0]["finish_reason"] == "tool_calls"
    assert body["usage"]["prompt_tokens_details"] == {"cached_tokens": 2}
    assert body["usage"]["completion_tokens_details"] == {"reasoning_tokens": 1}


def test_anthropic_lines_keep_an_anthropic_body_and_build_one_otherwise() -> None:
    message = {"id": "msg_1", "type": "message", "content": [{"type": "thinking"}]}
    native = LLMResult(
        custom_id="a", batch_id="b", status="succeeded", kind="messages", body=message
    )
    assert to_anthropic_line(native)["result"] == {"type": "succeeded", "message": message}
    chat = LLMResult(
        custom_id="c",
        batch_id="b",
        status="succeeded",
        output="Checking.",
        tool_calls=CALLS,
        finish_reason="tool_calls",
    )
    built = to_anthropic_line(chat)["result"]["message"]
    assert built["stop_reason"] == "tool_use"
    assert built["content"] == [
        {"type": "text", "text": "Checking."},
        {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Paris"}},
    ]
    # An Anthropic answer asked for in OpenAI's format is built from its normalised fields.
    as_openai = to_openai_line(native.model_copy(update={"output": "x"}), "a")
    assert as_openai["response"]["body"]["object"] == "chat.completion"


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
    assert orjson.loads(orjson.dumps(out)) == out


def test_a_stored_result_is_written_as_its_model_would_be_in_every_format() -> None:
    # Given stored results of every shape the collector meets (the fast path takes only
    # OpenAI-format successes with a body as received; the rest go through the model),
    from producers.collect import render, render_stored

    floats = {"object": "list", "data": [{"index": 0, "embedding": [0.5, -0.25]}]}
    packed, fmt = vectors.pack(floats)
    body = {"id": "chatcmpl-1", "object": "chat.completion", "choices": [], "x": {"y": [1]}}
    results = [
        LLMResult(custom_id="a", batch_id="b", status="succeeded", body=body, request_id="r"),
        LLMResult(custom_id=None, batch_id="b", status="succeeded", body=body),
        LLMResult(custom_id="c", batch_id="b", status="succeeded", output="hi", model="m"),
        LLMResult(
            custom_id="d", batch_id="b", status="succeeded", kind="messages", body={"id": "m"}
        ),
        LLMResult(
            custom_id="e",
            batch_id="b",
            status="succeeded",
            kind="embeddings",
            body=packed,
            vectors=fmt,
        ),
        LLMResult(
            custom_id="f",
            batch_id="b",
            status="errored",
            error=ErrorInfo(code="bad", message="no", status=400, body={"error": {"m": 1}}),
        ),
        LLMResult(custom_id="g", batch_id="b", status="cancelled"),
    ]
    for result in results:
        raw = result.model_dump_json().encode()
        for out_fmt in ("openai", "anthropic", "native"):
            # when it is written from its stored JSON,
            line, ok = render_stored(raw, "key-1", out_fmt)  # type: ignore[arg-type]
            # the line and its file are those of the parsed model.
            stored = LLMResult.model_validate_json(raw)
            assert orjson.loads(line) == render(stored, "key-1", out_fmt)  # type: ignore[arg-type]
            assert line.endswith(b"\n") and line.count(b"\n") == 1
            assert ok == (result.status == "succeeded" or out_fmt == "anthropic")
