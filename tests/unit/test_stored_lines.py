"""Output lines written from a result's stored JSON are the bytes its model would give: the
short way for OpenAI-format successes copies the stored body instead of parsing it (#22)."""

from __future__ import annotations

from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from producers.collect import render, render_stored
from schemas import vectors
from schemas.batch_output import stored_openai_success
from schemas.result import Attempt, ErrorInfo, LLMResult, Timings, Usage

FORMATS = ("openai", "anthropic", "native")

#: Text a splice could trip on: the keys it looks for, quotes, escapes, braces, unicode.
TRAPS = [',"body":{', ',"vectors":', '"}', "\\", '\\",', "{", "}]", "\u2028", "é ü", "\x00\x1f"]
text = st.one_of(st.text(max_size=12), st.sampled_from(TRAPS))
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    text,
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.one_of(text, st.sampled_from(["body", "vectors"])), inner, max_size=4),
    ),
    max_leaves=20,
)
objects = st.dictionaries(st.one_of(text, st.sampled_from(["body", "vectors", "id"])), values)


@st.composite
def results(draw: st.DrawFn) -> LLMResult:
    """Stored results of every shape: any status, kind, body, tool calls and extras."""
    body = draw(st.one_of(st.none(), objects))
    vectors_fmt = draw(st.sampled_from([None, "base64", "float"]))
    if vectors_fmt == "float":
        body, vectors_fmt = vectors.pack({"object": "list", "data": [{"embedding": [0.5]}]})
    return LLMResult(
        custom_id=draw(st.one_of(st.none(), text)),
        batch_id=draw(st.sampled_from(["batch_1", "batch_ü"])),
        status=draw(st.sampled_from(["succeeded", "errored", "expired", "cancelled"])),
        kind=draw(st.sampled_from(["chat", "messages", "embeddings", "responses"])),
        output=draw(st.one_of(st.none(), text)),
        tool_calls=draw(st.one_of(st.none(), st.lists(objects, max_size=2))),
        finish_reason=draw(st.one_of(st.none(), text)),
        body=body,
        vectors=vectors_fmt,
        endpoint="fake",
        model=draw(st.one_of(st.none(), text)),
        request_id=draw(st.one_of(st.none(), text)),
        usage=Usage(input_tokens=3, output_tokens=draw(st.integers(0, 9))),
        cost_usd=draw(st.one_of(st.none(), st.floats(0, 1))),
        attempts=[Attempt(endpoint="fake", model="m", latency_ms=draw(st.floats(0, 1e3)))],
        timings=Timings(enqueued_at=1.5, finished_at=draw(st.floats(0, 2e9))),
        error=draw(st.one_of(st.none(), st.builds(ErrorInfo, code=text, message=text))),
        extra=draw(objects),
    )


def by_model(raw: bytes, key: str, fmt: str) -> bytes:
    """The line the parsed model gives (what collect wrote before the short way)."""
    return orjson.dumps(render(LLMResult.model_validate_json(raw), key, fmt)) + b"\n"  # type: ignore[arg-type]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(result=results(), key=text)
def test_a_stored_result_is_written_byte_for_byte_as_its_model_would_be(
    result: LLMResult, key: str
) -> None:
    # Given a result stored by the worker's writer (orjson) or by pydantic's (its fallback),
    for raw in (result.json_bytes(), result.model_dump_json().encode()):
        for fmt in FORMATS:
            # when it is written from its stored JSON, the line is the model's, byte for byte.
            line, ok = render_stored(raw, key, fmt)  # type: ignore[arg-type]
            assert line == by_model(raw, key, fmt)
            assert ok == (result.status == "succeeded" or fmt == "anthropic")


def success(**fields: Any) -> LLMResult:
    body = {"id": "chatcmpl-1", "choices": [{"message": {"content": 'a \\ "b" ü'}}], "x": 1.5}
    return LLMResult(
        **{"custom_id": "ü 1", "batch_id": "b", "status": "succeeded", "body": body, **fields}
    )


def test_the_short_way_takes_every_success_with_a_body_as_received() -> None:
    # Given successes stored with a body as the provider sent it (tool calls, an extra holding
    # the keys the splice looks for, no custom_id or request_id, an embeddings body),
    traps = {"vectors": "float", "body": {"x": 1}, "t": ',"vectors":'}
    calls = [{"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}]
    cases = [
        success(),
        success(custom_id=None, request_id="req_1", tool_calls=calls),
        success(extra=traps, error=ErrorInfo(code="x", message=',"body":{', body=traps)),
        success(kind="embeddings", vectors="base64", body={"data": [{"embedding": "AAA="}]}),
    ]
    for result in cases:
        raw = result.json_bytes()
        # the short way writes each (the model is not built), as the model would.
        line = stored_openai_success(raw, "k")
        assert line is not None
        assert line == by_model(raw, "k", "openai")


def test_the_short_way_leaves_every_other_document_to_the_model() -> None:
    # Given stored JSON that is not a success with its body as received, or not a document
    # as the writers write it (fields reordered, an unknown field, spaces, a "body" key in
    # the tool calls before the body), or one with the key after the body inside the body,
    plain = orjson.loads(success().json_bytes())
    reordered = {"body": plain["body"], **{k: v for k, v in plain.items() if k != "body"}}
    unknown = {"z": 1, **plain}
    moved = {**{k: v for k, v in plain.items() if k != "request_id"}, "request_id": "r"}
    nested = success(tool_calls=[{"id": "c", "body": {"a": 1}}]).json_bytes()
    others = [
        success(status="errored").json_bytes(),
        success(kind="messages").json_bytes(),
        success(body=None, output="hi").json_bytes(),
        LLMResult(
            custom_id="e",
            batch_id="b",
            status="succeeded",
            body=vectors.pack({"object": "list", "data": [{"embedding": [0.5]}]})[0],
            vectors="float",
        ).json_bytes(),
        orjson.dumps(reordered),
        orjson.dumps(unknown),
        orjson.dumps(moved),
        orjson.dumps(plain, option=orjson.OPT_INDENT_2),
        nested,
        success(body={"a": {"x": 1, "vectors": None}}).json_bytes(),
    ]
    for raw in others:
        # the short way declines it, and the line is still the model's.
        assert stored_openai_success(raw, "k") is None
    for raw in [*others[:4], nested]:
        assert render_stored(raw, "k", "openai")[0] == by_model(raw, "k", "openai")
