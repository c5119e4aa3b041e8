"""Contract: OpenAI chat and embeddings requests through Ollama's native API, and back."""

from __future__ import annotations

import aiohttp
import orjson
import pytest

from providers.fake_server import FakeServer, Fault
from providers.ollama import OllamaProvider
from schemas.config import EndpointConfig
from schemas.request import LLMRequest

PNG = "iVBORw0KGgoAAAANSUhEUg=="
SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": SCHEMA}}]


@pytest.fixture
def server(server: FakeServer) -> FakeServer:
    """The shared fake server, keeping bodies and replies: these tests assert the wire."""
    server.record_bodies = True
    return server


def ollama(server: FakeServer, session: aiohttp.ClientSession | None) -> OllamaProvider:
    url = server.url if session is not None else "http://127.0.0.1:1"
    settings = EndpointConfig.model_validate({"provider": "ollama", "base_url": url})
    return OllamaProvider("local", settings, OllamaProvider.Config(base_url=url), session)


async def test_images_tools_and_tool_results_reach_api_chat_and_tool_calls_come_back(
    server: FakeServer, session: aiohttp.ClientSession
) -> None:
    body = {
        "model": "gpt-4o",
        "messages": [
            {"role": "developer", "content": "Use tools."},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Weather here?"},
                    {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
                ],
            },
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "-3C"},
        ],
        "tools": TOOLS,
        "response_format": {"type": "json_schema", "json_schema": {"name": "w", "schema": SCHEMA}},
        "max_tokens": 50,
        "seed": 1,
    }
    server.faults.push(Fault(tool_calls=[{"name": "get_weather", "arguments": {"city": "Oslo"}}]))
    request = LLMRequest(custom_id="o-1", kind="chat", body=body)
    answer = await ollama(server, session).generate(request, "llava")
    [sent] = server.bodies("/api/chat")
    assert sent == {
        "model": "llava",
        "messages": [
            {"role": "system", "content": "Use tools."},
            {"role": "user", "content": "Weather here?", "images": [PNG]},
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [
                    {
                        "id": "call_1",
                        "function": {"name": "get_weather", "arguments": {"city": "Oslo"}},
                    }
                ],
            },
            {
                "role": "tool",
                "content": "-3C",
                "tool_call_id": "call_1",
                "tool_name": "get_weather",
            },
        ],
        "stream": False,
        "format": SCHEMA,
        "tools": TOOLS,
        "options": {"seed": 1, "num_predict": 50},
    }
    [call] = answer.tool_calls or []
    assert call["function"] == {"name": "get_weather", "arguments": '{"city":"Oslo"}'}
    assert answer.finish_reason == "tool_calls"
    assert answer.body is not None and answer.body["choices"][0]["message"]["tool_calls"] == [call]


async def test_embeddings_go_to_api_embed_and_come_back_as_an_openai_list(
    server: FakeServer, session: aiohttp.ClientSession
) -> None:
    body = {"model": "text-embedding-3-small", "input": ["a", "b"], "dimensions": 4}
    request = LLMRequest(custom_id="e-1", kind="embeddings", body=body)
    answer = await ollama(server, session).generate(request, "nomic-embed-text")
    assert server.bodies("/api/embed") == [
        {"model": "nomic-embed-text", "input": ["a", "b"], "dimensions": 4}
    ]
    [record] = server.calls(path="/api/embed")
    sent = orjson.loads(record.reply or b"")
    assert answer.body is not None and answer.body["object"] == "list"
    assert [d["embedding"] for d in answer.body["data"]] == sent["embeddings"]
    assert [d["index"] for d in answer.body["data"]] == [0, 1]
    assert answer.usage.input_tokens == sent["prompt_eval_count"] > 0
    base64 = {**body, "encoding_format": "base64"}
    coded = await ollama(server, session).generate(
        LLMRequest(custom_id="e-2", kind="embeddings", body=base64), "nomic-embed-text"
    )
    assert coded.body is not None and isinstance(coded.body["data"][0]["embedding"], str)


def test_what_ollama_cannot_take_is_unsupported_before_a_call(server: FakeServer) -> None:
    provider = ollama(server, None)
    url_image = {
        "messages": [
            {
                "role": "user",
                "content": [{"type": "image_url", "image_url": {"url": "https://x/y.png"}}],
            }
        ]
    }
    why = provider.unsupported(LLMRequest(custom_id="i", body=url_image))
    assert why is not None and "inline base64 images only" in why
    tokens = LLMRequest(custom_id="t", kind="embeddings", body={"input": [[1, 2]]})
    assert "token-array" in (provider.unsupported(tokens) or "")
    responses = LLMRequest(custom_id="r", kind="responses", body={"input": "x"})
    assert "responses requests" in (provider.unsupported(responses) or "")


async def test_reasoning_effort_thinks_where_the_model_can_and_is_dropped_where_it_cannot(
    server: FakeServer, session: aiohttp.ClientSession
) -> None:
    body = {"messages": [{"role": "user", "content": "q"}], "reasoning_effort": "high"}
    request = LLMRequest(custom_id="th", kind="chat", body=body)
    # A thinking model gets the effort as `think`;
    answer = await ollama(server, session).generate(request, "gpt-oss:20b")
    assert server.bodies("/api/chat")[-1]["think"] == "high" and answer.text
    # a model that cannot think is refused it by Ollama (400), and is asked again without.
    answer = await ollama(server, session).generate(request, "llama3.2")
    statuses = [r.status for r in server.calls(path="/api/chat")]
    assert statuses[-2:] == [400, 200] and answer.text
    assert "think" not in server.bodies("/api/chat")[-1]
