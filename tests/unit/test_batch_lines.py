"""Input lines in the formats users already have: bodies kept as written, bad lines named."""

from __future__ import annotations

import copy
from typing import Any

import orjson
import pytest

from schemas.batch_lines import LineError, parse_line, plain_line
from schemas.job import Job
from tests.conftest import openai_line

IMAGE = (
    "data:image/png;base64,"
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8/5+hHgAHggJ/"
    + "PchI7wAAAABJRU5ErkJggg=="
)


def line(obj: object) -> bytes:
    return orjson.dumps(obj)


def batch_line(custom_id: str, url: str, body: dict[str, Any]) -> dict[str, Any]:
    return {"custom_id": custom_id, "method": "POST", "url": url, "body": body}


#: One line of each kind a real batch file holds (the issue's acceptance file).
REASONING = {
    "model": "o3-mini",
    "messages": [
        {"role": "developer", "content": "Answer in one word."},
        {"role": "user", "content": "Capital of France?"},
    ],
    "max_completion_tokens": 2000,
    "reasoning_effort": "low",
    "seed": 7,
    "store": False,
    "metadata": {"team": "geo"},
    "service_tier": "flex",
    "future_vendor_key": {"anything": [1, 2]},
}
VISION = {
    "model": "gpt-4o",
    "messages": [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is in this image?"},
                {"type": "image_url", "image_url": {"url": IMAGE, "detail": "low"}},
                {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
            ],
        }
    ],
    "logprobs": True,
    "top_logprobs": 2,
    "n": 2,
}
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather for a city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
            "strict": True,
        },
    }
]
CONVERSATION = {
    "model": "gpt-4o",
    "messages": [
        {"role": "user", "content": "Weather in Paris?", "name": "ann"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "18C, sunny"},
    ],
    "tools": TOOLS,
    "tool_choice": "required",
    "parallel_tool_calls": False,
    "response_format": {
        "type": "json_schema",
        "json_schema": {"name": "w", "schema": {"type": "object"}, "strict": True},
    },
    "prediction": {"type": "content", "content": "18C"},
}


@pytest.mark.parametrize(
    "body", [REASONING, VISION, CONVERSATION], ids=["reasoning", "vision", "tools"]
)
def test_chat_bodies_are_kept_exactly_as_written(body: dict[str, Any]) -> None:
    written = copy.deepcopy(body)
    req = parse_line(line(batch_line("c-1", "/v1/chat/completions", body)), 1)
    assert (req.kind, req.custom_id, req.model) == ("chat", "c-1", body["model"])
    assert req.body == written, "nothing renamed, dropped or added"


@pytest.mark.parametrize(
    ("url", "kind", "body"),
    [
        ("/v1/embeddings", "embeddings", {"model": "e", "input": "one text"}),
        (
            "/v1/embeddings",
            "embeddings",
            {"model": "e", "input": ["a", "b"], "encoding_format": "base64", "dimensions": 64},
        ),
        ("/v1/embeddings", "embeddings", {"model": "e", "input": [[1, 2], [3]]}),
        ("/v1/responses", "responses", {"model": "r", "input": "hi", "instructions": "be kind"}),
        ("/v1/completions", "completions", {"model": "c", "prompt": "Once", "max_tokens": 5}),
        ("/v1/moderations", "moderations", {"model": "m", "input": ["x", "y"]}),
    ],
)
def test_every_openai_batch_endpoint_is_a_kind(url: str, kind: str, body: dict[str, Any]) -> None:
    req = parse_line(line(batch_line("k", url, body)), 1)
    assert req.kind == kind
    assert req.body == body


def test_batchyard_extensions_leave_the_body() -> None:
    raw = openai_line("a", "hi", tier="advanced", route=[{"endpoint": "e1", "model": "x"}])
    req = parse_line(line(raw), 1)
    assert req.tier == "advanced"
    assert req.route is not None and req.route[0].endpoint == "e1"
    assert "tier" not in req.body and "route" not in req.body
    assert raw["body"]["tier"] == "advanced", "the caller's line is not modified"


def test_anthropic_line_keeps_every_params_field() -> None:
    params = {
        "model": "claude",
        "max_tokens": 100,
        "system": [{"type": "text", "text": "sys", "cache_control": {"type": "ephemeral"}}],
        "thinking": {"type": "enabled", "budget_tokens": 1024},
        "stop_sequences": ["END"],
        "tools": [{"name": "t", "input_schema": {"type": "object"}}],
        "tool_choice": {"type": "any"},
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "q"},
                    {
                        "type": "image",
                        "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"},
                    },
                ],
            }
        ],
    }
    req = parse_line(line({"custom_id": "c", "params": params}), 1)
    assert (req.kind, req.body) == ("messages", params)


def test_native_lines_new_and_flat() -> None:
    native = {"custom_id": "n", "kind": "embeddings", "body": {"input": "x"}, "tier": "basic"}
    req = parse_line(line(native), 1)
    assert (req.kind, req.body, req.tier) == ("embeddings", {"input": "x"}, "basic")
    flat = {
        "custom_id": "f",
        "messages": [{"role": "user", "content": "x"}],
        "max_tokens": 9,
        "tier": "advanced",
    }
    req = parse_line(line(flat), 1)
    assert req.kind == "chat" and req.tier == "advanced"
    assert req.body == {"messages": [{"role": "user", "content": "x"}], "max_tokens": 9}


def test_a_batch_endpoint_limits_the_lines() -> None:
    raw = batch_line("e", "/v1/embeddings", {"model": "e", "input": "x"})
    with pytest.raises(LineError) as info:
        parse_line(line(raw), 5, kinds={"chat"})
    assert info.value.field == "url"
    assert "/v1/chat/completions" in str(info.value) and "/v1/embeddings" in str(info.value)
    anthropic = {"custom_id": "a", "params": {"messages": [{"role": "user", "content": "x"}]}}
    with pytest.raises(LineError, match="Anthropic"):
        parse_line(line(anthropic), 6, kinds={"chat"})
    assert parse_line(line(raw), 7, kinds={"embeddings"}).kind == "embeddings"


def chat(*messages: dict[str, Any], **extra: Any) -> bytes:
    return line(
        batch_line("x", "/v1/chat/completions", {"model": "m", "messages": list(messages), **extra})
    )


USER = {"role": "user", "content": "hi"}


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
        (line({**openai_line("x", "y"), "url": "/v1/images"}), "url", "/v1/embeddings"),
        (line({**openai_line("x", "y"), "method": "GET"}), "method", "POST"),
        (line({**openai_line("x", "y"), "body": [1]}), "body", "JSON object"),
        (line({**openai_line("x", "y"), "extra": 1}), "extra", "unknown field"),
        (chat({"role": "robot", "content": "c"}), "body.messages.0.role", "unknown role 'robot'"),
        (chat(), "body.messages", "at least 1"),
        (
            chat({"role": "user", "content": [{"type": "video", "video": {}}]}),
            "body.messages.0.content.0.type",
            "unknown content part type 'video'",
        ),
        (
            chat({"role": "system", "content": [{"type": "image_url", "image_url": {"url": "u"}}]}),
            "body.messages.0.content.0.type",
            "system message cannot carry 'image_url'",
        ),
        (
            chat(USER, {"role": "tool", "content": "18C"}),
            "body.messages.1.tool_call_id",
            "field required for a tool message",
        ),
        (
            chat(USER, {"role": "assistant", "content": None}),
            "body.messages.1.content",
            "unless the message has tool_calls",
        ),
        (
            chat(USER, {"role": "assistant", "tool_calls": [{"type": "function"}]}),
            "body.messages.1.tool_calls.0.id",
            "field required",
        ),
        (chat(USER, max_completion_tokens="many"), "body.max_completion_tokens", ">= 1"),
        (chat(USER, stream=True), "body.stream", "must be false"),
        (chat(USER, response_format={"type": "yaml"}), "body.response_format.type", "json_schema"),
        (
            line(batch_line("x", "/v1/embeddings", {"model": "e"})),
            "body.input",
            "field required",
        ),
        (line(batch_line("x", "/v1/embeddings", {"input": ["a", 3]})), "body.input", "token"),
        (line(batch_line("x", "/v1/completions", {"model": "c"})), "body.prompt", "required"),
        (line(batch_line("x", "/v1/responses", {"model": "r"})), "body.input", "required"),
        (
            line({"custom_id": "a", "params": {"messages": [{"role": "tool", "content": "x"}]}}),
            "params.messages.0.role",
            "unknown role",
        ),
        (
            line(
                {
                    "custom_id": "a",
                    "params": {"messages": [{"role": "user", "content": [{"type": "video"}]}]},
                }
            ),
            "params.messages.0.content.0.type",
            "unknown content block",
        ),
        (
            line(openai_line("x", "y", route=[{"endpoint": "bad name!"}])),
            "body.route.0.endpoint",
            "pattern",
        ),
        (line({"custom_id": "n", "kind": "images", "body": {}}), "kind", "unknown kind"),
        (line(openai_line("x" * 513, "y")), "custom_id", "at most 512 characters"),
        (line(openai_line("a\tb", "y")), "custom_id", "printable characters only"),
    ],
)
def test_bad_lines_name_the_line_and_the_field(
    raw: bytes, field: str | None, fragment: str
) -> None:
    assert plain_line(raw) is None  # the short way leaves every bad line to parse_line
    with pytest.raises(LineError) as info:
        parse_line(raw, 42)
    err = info.value
    assert err.line == 42
    assert err.field == field
    assert fragment in str(err)
    assert str(err).startswith("line 42: ")


def test_requests_queued_by_earlier_versions_still_validate() -> None:
    # Given a job envelope's request as an earlier version wrote it (flat chat fields)
    old = {
        "custom_id": "old-1",
        "messages": [{"role": "user", "content": "hi"}],
        "model": "m",
        "max_tokens": 5,
        "metadata": {"k": "v"},
        "tier": "basic",
        "params": {"seed": 3},
    }
    job = Job.model_validate(
        {
            "batch_id": "b",
            "key": "old-1",
            "request": old,
            "route": [{"endpoint": "e"}],
            "enqueued_at": 1.0,
        }
    )
    # then it is the same chat request in today's shape (metadata was never sent upstream)
    assert (job.request.kind, job.request.tier) == ("chat", "basic")
    assert job.request.body == {
        "model": "m",
        "max_tokens": 5,
        "messages": [{"role": "user", "content": "hi"}],
        "seed": 3,
    }


def test_chunk_prefixes_are_unique_in_a_process_and_across_a_fork() -> None:
    import os

    from producers.submit import chunk_prefix

    first, second = chunk_prefix(), chunk_prefix()
    assert first != second and len(first) == len(second) == 24
    int(first, 16)  # hex digits only
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child draws its own random part, not the parent's next counter value
        os.write(write, chunk_prefix().encode())
        os._exit(0)
    os.close(write)
    child = os.read(read, 64).decode()
    os.close(read)
    os.waitpid(pid, 0)
    assert child[:16] != first[:16]


@pytest.mark.parametrize(
    "obj",
    [
        openai_line("x", "hi"),
        openai_line("x\u00e9 y", "hi", max_tokens=3, response_format={"type": "json_object"}),
        batch_line("e", "/v1/embeddings", {"model": "e", "input": ["a", "b"]}),
        batch_line("c", "/v1/completions", {"model": "c", "prompt": "p", "x-vendor": [1]}),
        batch_line("r", "/v1/responses", {"model": "r", "input": "i"}),
        batch_line("m", "/v1/moderations", {"input": "i"}),
    ],
)
def test_a_plain_line_is_the_request_parse_line_makes(obj: dict[str, Any]) -> None:
    request = parse_line(line(obj), 1)
    assert plain_line(line(obj)) == (request.custom_id, request.kind, request.body)


@pytest.mark.parametrize(
    "obj",
    [
        openai_line("x", "hi", tier="basic"),
        openai_line("x", "hi", route=[{"endpoint": "a"}]),
        openai_line("x", "hi", batchyard={"validator": "v"}),
        {"custom_id": "x", "url": "/v1/chat/completions", "body": {"messages": [USER]}},
        {"custom_id": "a", "params": {"messages": [USER]}},
        {"custom_id": "n", "kind": "chat", "body": {"messages": [USER]}},
        {"custom_id": "f", "messages": [USER]},
    ],
)
def test_any_other_good_line_goes_the_long_way(obj: dict[str, Any]) -> None:
    parse_line(line(obj), 1)  # good
    assert plain_line(line(obj)) is None


def test_a_plain_line_for_another_endpoint_goes_the_long_way() -> None:
    raw = line(openai_line("x", "hi"))
    assert plain_line(raw, kinds={"chat", "messages"}) is not None
    assert plain_line(raw, kinds={"embeddings"}) is None
