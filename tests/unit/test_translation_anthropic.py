"""Contract: OpenAI chat <-> Anthropic Messages, both ways, against the fake server's wire.

The expected wire bodies are written out by hand from the two vendors' documentation, so a
translation that drifts from either format fails here."""

from __future__ import annotations

from typing import Any

import aiohttp
import orjson
import pytest

from providers.anthropic import AnthropicProvider
from providers.errors import InvalidRequest
from providers.fake_server import FakeServer, Fault
from providers.openai import OpenAIProvider
from schemas.config import EndpointConfig
from schemas.request import LLMRequest

KEY = "sk-ant-test-1234"
PNG = (
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8/5+hHgAHggJ/"
    + "PchI7wAAAABJRU5ErkJggg=="
)
WEATHER = {
    "type": "object",
    "properties": {"city": {"type": "string"}},
    "required": ["city"],
}
TOOLS = [
    {
        "type": "function",
        "function": {"name": "get_weather", "description": "Weather", "parameters": WEATHER},
    }
]


@pytest.fixture
def server(server: FakeServer) -> FakeServer:
    """The shared fake server, keeping bodies and replies: these tests assert the wire."""
    server.record_bodies = True
    return server


def claude(server: FakeServer, session: aiohttp.ClientSession) -> AnthropicProvider:
    settings = EndpointConfig.model_validate(
        {"provider": "anthropic", "base_url": server.url, "api_key": KEY}
    )
    options = AnthropicProvider.Config.model_validate({"base_url": server.url})
    return AnthropicProvider("claude", settings, options, session)


def openai(server: FakeServer, session: aiohttp.ClientSession) -> OpenAIProvider:
    url = server.openai_url
    settings = EndpointConfig.model_validate({"provider": "openai", "base_url": url})
    return OpenAIProvider("oa", settings, OpenAIProvider.Config(base_url=url), session)


def chat(custom_id: str, body: dict[str, Any]) -> LLMRequest:
    return LLMRequest(custom_id=custom_id, kind="chat", body=body)


async def test_a_tool_conversation_with_images_is_translated_and_answered_back(
    server: FakeServer, session: aiohttp.ClientSession
) -> None:
    # Given an OpenAI chat body with every translated feature
    body = {
        "model": "gpt-4o",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "developer", "content": [{"type": "text", "text": "Use tools."}]},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Weather where this photo is?"},
                    {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
                    {"type": "image_url", "image_url": {"url": "https://example.com/a.jpg"}},
                ],
            },
            {
                "role": "assistant",
                "content": "Let me check.",
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "18C"},
            {"role": "user", "content": "And tomorrow?"},
        ],
        "tools": TOOLS,
        "tool_choice": "required",
        "parallel_tool_calls": False,
        "max_completion_tokens": 300,
        "temperature": 1.5,
        "stop": "END",
        "seed": 3,
        "user": "u-42",
    }
    # When the Anthropic adapter sends it
    answer = await claude(server, session).generate(chat("t-1", body), "claude-x")

    # Then the wire body is the Messages API's own shape
    [sent] = server.bodies("/v1/messages")
    assert sent == {
        "model": "claude-x",
        "max_tokens": 300,
        "system": "Be brief.\n\nUse tools.",
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Weather where this photo is?"},
                    {
                        "type": "image",
                        "source": {"type": "base64", "media_type": "image/png", "data": PNG},
                    },
                    {
                        "type": "image",
                        "source": {"type": "url", "url": "https://example.com/a.jpg"},
                    },
                ],
            },
            {
                "role": "assistant",
                "content": [
                    {"type": "text", "text": "Let me check."},
                    {
                        "type": "tool_use",
                        "id": "call_1",
                        "name": "get_weather",
                        "input": {"city": "Paris"},
                    },
                ],
            },
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "call_1", "content": "18C"},
                    {"type": "text", "text": "And tomorrow?"},
                ],
            },
        ],
        "temperature": 1.0,
        "stop_sequences": ["END"],
        "tools": [{"name": "get_weather", "description": "Weather", "input_schema": WEATHER}],
        "tool_choice": {"type": "any", "disable_parallel_tool_use": True},
        "metadata": {"user_id": "u-42"},
    }
    # and the forced tool_use comes back as OpenAI tool_calls, in the normalised fields and
    # in the chat.completion body the result keeps.
    [call] = answer.tool_calls or []
    assert call["type"] == "function" and call["function"]["name"] == "get_weather"
    assert orjson.loads(call["function"]["arguments"]) == {"city": "x"}
    assert call["id"].startswith("toolu_")
    assert answer.finish_reason == "tool_calls"
    assert answer.body is not None
    choice = answer.body["choices"][0]
    assert choice["message"]["tool_calls"] == [call] and choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] is None
    assert answer.body["object"] == "chat.completion"


async def test_reasoning_effort_becomes_a_thinking_budget_and_thinking_is_not_text(
    server: FakeServer, session: aiohttp.ClientSession
) -> None:
    body = {
        "model": "o3",
        "messages": [{"role": "developer", "content": "d"}, {"role": "user", "content": "q"}],
        "max_completion_tokens": 2000,
        "reasoning_effort": "low",
    }
    server.faults.push(Fault(text="answer", input_tokens=10, output_tokens=5, cached_tokens=4))
    answer = await claude(server, session).generate(chat("r-1", body), "claude-x")
    [sent] = server.bodies("/v1/messages")
    assert sent["thinking"] == {"type": "enabled", "budget_tokens": 1024}
    assert (sent["system"], sent["max_tokens"]) == ("d", 2000)
    assert answer.text == "answer", "thinking blocks are not part of the answer's text"
    assert (answer.usage.input_tokens, answer.usage.cached_tokens) == (10, 4)
    assert answer.body is not None
    assert answer.body["usage"] == {
        "prompt_tokens": 10,
        "completion_tokens": 5,
        "total_tokens": 15,
        "prompt_tokens_details": {"cached_tokens": 4},
    }


THINKING_CONFLICTS: dict[str, dict[str, Any]] = {
    "forced tool": {"tools": TOOLS, "tool_choice": "required"},
    "named tool": {
        "tools": TOOLS,
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
    },
    "temperature": {"temperature": 0.2},
    "top_p": {"top_p": 0.5},
    "tool loop": {
        "tools": TOOLS,
        "messages": [
            {"role": "user", "content": "Weather in Paris?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "18C"},
        ],
    },
}


@pytest.mark.parametrize("conflict", sorted(THINKING_CONFLICTS))
async def test_reasoning_effort_gives_way_to_what_anthropic_cannot_combine_with_thinking(
    conflict: str, server: FakeServer, session: aiohttp.ClientSession
) -> None:
    # A forced tool, sampling other than the default, or an open tool loop (whose assistant
    # turn has no thinking block to send back): Anthropic rejects each with thinking on, so
    # the reasoning_effort hint is left out and the user's explicit fields are kept.
    body = {
        "messages": [{"role": "user", "content": "q"}],
        "max_completion_tokens": 8000,
        "reasoning_effort": "medium",
        **THINKING_CONFLICTS[conflict],
    }
    answer = await claude(server, session).generate(chat("t-1", body), "claude-x")
    [sent] = server.bodies("/v1/messages")
    assert "thinking" not in sent and answer.body is not None
    # The same body with thinking forced on is what the fake server, like Anthropic, refuses.
    with pytest.raises(InvalidRequest):
        params = {**sent, "thinking": {"type": "enabled", "budget_tokens": 4096}}
        await claude(server, session).generate(
            LLMRequest(custom_id="t-2", kind="messages", body=params), "claude-x"
        )


async def test_reasoning_effort_thinks_beside_tools_the_model_may_choose(
    server: FakeServer, session: aiohttp.ClientSession
) -> None:
    body = {
        "messages": [{"role": "user", "content": "Weather in Paris?"}],
        "tools": TOOLS,
        "tool_choice": "auto",
        "temperature": 1,
        "max_completion_tokens": 8000,
        "reasoning_effort": "medium",
    }
    await claude(server, session).generate(chat("t-3", body), "claude-x")
    [sent] = server.bodies("/v1/messages")
    assert sent["thinking"] == {"type": "enabled", "budget_tokens": 4096}
    assert sent["tool_choice"] == {"type": "auto"}


async def test_anthropic_lines_go_as_written_to_anthropic(
    server: FakeServer, session: aiohttp.ClientSession
) -> None:
    params = {
        "model": "claude-line",
        "max_tokens": 2048,
        "system": [{"type": "text", "text": "s", "cache_control": {"type": "ephemeral"}}],
        "messages": [{"role": "user", "content": "hello"}],
        "thinking": {"type": "enabled", "budget_tokens": 1024},
    }
    request = LLMRequest(custom_id="a-1", kind="messages", body=params)
    answer = await claude(server, session).generate(request, "claude-line")
    assert server.bodies("/v1/messages") == [params]
    [record] = server.calls(path="/v1/messages")
    assert answer.body == orjson.loads(record.reply or b""), "the message, as received"


async def test_anthropic_lines_are_translated_for_openai_endpoints_and_answered_back(
    server: FakeServer, session: aiohttp.ClientSession
) -> None:
    params = {
        "model": "claude-line",
        "max_tokens": 64,
        "system": "Be brief.",
        "stop_sequences": ["END"],
        "thinking": {"type": "enabled", "budget_tokens": 1024},
        "tools": [{"name": "get_weather", "input_schema": WEATHER}],
        "tool_choice": {"type": "tool", "name": "get_weather"},
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Photo?"},
                    {
                        "type": "image",
                        "source": {"type": "base64", "media_type": "image/png", "data": PNG},
                    },
                ],
            },
            {
                "role": "assistant",
                "content": [
                    {"type": "thinking", "thinking": "hmm", "signature": "s"},
                    {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {}},
                ],
            },
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "ok"}],
            },
        ],
    }
    request = LLMRequest(custom_id="a-2", kind="messages", body=params)
    answer = await openai(server, session).generate(request, "gpt-4o")
    [sent] = server.bodies("/v1/chat/completions")
    assert sent == {
        "model": "gpt-4o",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Photo?"},
                    {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
                ],
            },
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "toolu_1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": "{}"},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "toolu_1", "content": "ok"},
        ],
        "max_tokens": 64,
        "stop": ["END"],
        "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": WEATHER}}],
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
    }
    # The forced call comes back as an Anthropic message with a tool_use block.
    assert answer.body is not None and answer.body["type"] == "message"
    assert answer.body["stop_reason"] == "tool_use"
    [block] = answer.body["content"]
    assert (block["type"], block["name"], block["input"]) == (
        "tool_use",
        "get_weather",
        {"city": "x"},
    )


def test_what_cannot_be_translated_is_named() -> None:
    settings = EndpointConfig.model_validate({"provider": "openai", "base_url": "http://x"})
    oa = OpenAIProvider("oa", settings, OpenAIProvider.Config(base_url="http://x"), None)
    document = {
        "model": "c",
        "messages": [{"role": "user", "content": [{"type": "document", "source": {}}]}],
    }
    why = oa.unsupported(LLMRequest(custom_id="d", kind="messages", body=document))
    assert why is not None and "'document' blocks" in why
    audio = {
        "messages": [
            {
                "role": "user",
                "content": [{"type": "input_audio", "input_audio": {"data": "", "format": "wav"}}],
            }
        ]
    }
    cl_settings = EndpointConfig.model_validate({"provider": "anthropic", "api_key": KEY})
    cl = AnthropicProvider("c", cl_settings, AnthropicProvider.Config(), None)
    assert "audio" in (cl.unsupported(chat("a", audio)) or "")
    text = {"messages": [{"role": "user", "content": "q"}], "logprobs": True}
    assert "logprobs" in (cl.unsupported(chat("l", text)) or "")
