"""Contract: every OpenAI endpoint kind through the OpenAI adapter (body as written, the answer
as received), and the mock answering each kind in its vendor's format."""

from __future__ import annotations

from typing import Any

import aiohttp
import orjson
import pytest

from providers.errors import ContentFiltered, ProtocolError
from providers.fake_server import FakeServer, Fault
from providers.mock import MockProvider
from providers.openai import OpenAIProvider
from providers.registry import endpoint_options
from schemas.config import EndpointConfig
from schemas.request import EndpointKind, LLMRequest


@pytest.fixture
def server(server: FakeServer) -> FakeServer:
    """The shared fake server, keeping bodies and replies: these tests assert the wire."""
    server.record_bodies = True
    return server


def openai(server: FakeServer, session: aiohttp.ClientSession) -> OpenAIProvider:
    url = server.openai_url
    settings = EndpointConfig.model_validate({"provider": "openai", "base_url": url})
    return OpenAIProvider("oa", settings, OpenAIProvider.Config(base_url=url), session)


def request(kind: EndpointKind, body: dict[str, Any]) -> LLMRequest:
    return LLMRequest(custom_id=f"{kind}-1", kind=kind, body=body)


CASES: list[tuple[EndpointKind, str, dict[str, Any]]] = [
    (
        "embeddings",
        "/v1/embeddings",
        {"model": "e", "input": ["alpha", "beta"], "dimensions": 8, "user": "u"},
    ),
    ("embeddings", "/v1/embeddings", {"model": "e", "input": "x", "encoding_format": "base64"}),
    ("responses", "/v1/responses", {"model": "r", "input": "hi", "instructions": "be kind"}),
    ("completions", "/v1/completions", {"model": "c", "prompt": "Once upon", "max_tokens": 9}),
    ("moderations", "/v1/moderations", {"model": "m", "input": ["hello", "attack now"]}),
]


@pytest.mark.parametrize(("kind", "path", "body"), CASES)
async def test_each_kind_goes_as_written_and_comes_back_as_received(
    kind: EndpointKind,
    path: str,
    body: dict[str, Any],
    server: FakeServer,
    session: aiohttp.ClientSession,
) -> None:
    answer = await openai(server, session).generate(request(kind, body), "chosen")
    assert server.bodies(path) == [{**body, "model": "chosen"}]
    [record] = server.calls(path=path)
    assert answer.body == orjson.loads(record.reply or b"")
    assert answer.model == "chosen"


async def test_normalised_fields_of_each_kind(
    server: FakeServer, session: aiohttp.ClientSession
) -> None:
    adapter = openai(server, session)
    vectors = await adapter.generate(request("embeddings", {"input": ["a", "bb"]}), "e")
    assert vectors.usage.input_tokens == 2 and vectors.usage.output_tokens == 0
    assert vectors.finish_reason is None and vectors.text == ""
    server.faults.push(Fault(text="done", input_tokens=5, output_tokens=3))
    response = await adapter.generate(request("responses", {"input": "x"}), "r")
    assert (response.text, response.finish_reason) == ("done", "stop")
    assert (response.usage.input_tokens, response.usage.output_tokens) == (5, 3)
    server.faults.push(Fault(finish_reason="length"))
    cut = await adapter.generate(request("responses", {"input": "x"}), "r")
    assert cut.finish_reason == "length" and cut.body is not None
    assert cut.body["status"] == "incomplete"
    server.faults.push(Fault(text="upon a time", finish_reason="length"))
    completion = await adapter.generate(request("completions", {"prompt": "Once"}), "c")
    assert (completion.text, completion.finish_reason) == ("upon a time", "length")
    moderation = await adapter.generate(request("moderations", {"input": "attack"}), "m")
    assert moderation.body is not None and moderation.body["results"][0]["flagged"] is True


async def test_chat_answers_keep_tool_calls_reasoning_tokens_and_every_choice_field(
    server: FakeServer, session: aiohttp.ClientSession
) -> None:
    server.faults.push(
        Fault(
            tool_calls=[{"name": "lookup", "arguments": {"q": "x"}}],
            reasoning_tokens=40,
            cached_tokens=8,
            input_tokens=20,
        )
    )
    body = {"messages": [{"role": "user", "content": "find x"}], "reasoning_effort": "high"}
    answer = await openai(server, session).generate(request("chat", body), "o3")
    [record] = server.calls(path="/v1/chat/completions")
    assert answer.body == orjson.loads(record.reply or b"")
    assert answer.tool_calls == answer.body["choices"][0]["message"]["tool_calls"]
    assert answer.finish_reason == "tool_calls" and answer.text == ""
    assert (answer.usage.reasoning_tokens, answer.usage.cached_tokens) == (40, 8)


async def test_malformed_and_refused_answers_of_other_kinds(
    server: FakeServer, session: aiohttp.ClientSession
) -> None:
    adapter = openai(server, session)
    server.faults.push("malformed")
    with pytest.raises(ProtocolError):
        await adapter.generate(request("embeddings", {"input": "x"}), "e")
    refused = {
        "id": "resp_1",
        "object": "response",
        "status": "completed",
        "output": [{"type": "message", "content": [{"type": "refusal", "refusal": "no"}]}],
    }
    server.faults.push(Fault(kind="raw", status=200, body=orjson.dumps(refused).decode()))
    with pytest.raises(ContentFiltered):
        await adapter.generate(request("responses", {"input": "x"}), "r")


def mock(**options: Any) -> MockProvider:
    settings = EndpointConfig.model_validate({"provider": "mock", **options})
    return MockProvider("m", settings, endpoint_options("m", settings))


async def test_the_mock_answers_every_kind_in_its_format() -> None:
    provider = mock(embedding_dimensions=6)
    vectors = await provider.generate(request("embeddings", {"input": ["a", "b", "a"]}), "e")
    assert vectors.body is not None
    data = [d["embedding"] for d in vectors.body["data"]]
    assert len(data) == 3 and all(len(v) == 6 for v in data)
    assert data[0] == data[2] != data[1], "the same text embeds the same way"
    response = await provider.generate(request("responses", {"input": "ping"}), "r")
    assert response.body is not None and response.body["object"] == "response"
    assert response.body["output"][0]["content"][0]["text"] == "ping" == response.text
    completion = await provider.generate(request("completions", {"prompt": "pong"}), "c")
    assert completion.body is not None and completion.body["choices"][0]["text"] == "pong"
    moderation = await provider.generate(request("moderations", {"input": ["ok"]}), "m")
    assert moderation.body is not None and moderation.body["results"][0]["flagged"] is False
    # Chat and Messages answers are their fields: output lines build the body from them.
    messages = request("messages", {"messages": [{"role": "user", "content": "hey"}]})
    message = await provider.generate(messages, "claude")
    assert (message.text, message.body) == ("hey", None)


async def test_the_mock_calls_a_forced_tool() -> None:
    tools = [
        {
            "type": "function",
            "function": {
                "name": "add",
                "parameters": {
                    "type": "object",
                    "properties": {"a": {"type": "integer"}},
                    "required": ["a"],
                },
            },
        }
    ]
    body = {"messages": [{"role": "user", "content": "1+1"}], "tools": tools}
    free = await mock().generate(request("chat", {**body, "tool_choice": "auto"}), "m")
    assert free.tool_calls is None and free.text == "1+1"
    forced = await mock().generate(request("chat", {**body, "tool_choice": "required"}), "m")
    [call] = forced.tool_calls or []
    assert call["function"] == {"name": "add", "arguments": '{"a":1}'}
    assert forced.finish_reason == "tool_calls" and forced.text == ""
    anthropic = {
        "messages": [{"role": "user", "content": "1+1"}],
        "tools": [{"name": "add", "input_schema": tools[0]["function"]["parameters"]}],
        "tool_choice": {"type": "any"},
    }
    claude = await mock().generate(request("messages", anthropic), "m")
    [call] = claude.tool_calls or []
    assert call["function"] == {"name": "add", "arguments": '{"a":1}'}
