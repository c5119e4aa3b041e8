"""Contract: the Anthropic adapter against the fake server — success, every error, retry hints."""

from __future__ import annotations

import aiohttp
import pytest
from pydantic import ValidationError

from providers.anthropic import AnthropicProvider
from providers.errors import (
    AuthError,
    ContentFiltered,
    ContextTooLong,
    InvalidRequest,
    Overloaded,
    ProtocolError,
    ProviderError,
    QuotaExceeded,
    RateLimited,
    ServerError,
    Timeout,
)
from providers.fake_server import FakeServer, Fault
from schemas.config import EndpointConfig
from schemas.request import LLMRequest

KEY = "sk-ant-test-SECRET-1234"
PATH = "/v1/messages"


def make(
    base_url: str,
    session: aiohttp.ClientSession | None,
    *,
    timeout_s: float = 5.0,
    **options: object,
) -> AnthropicProvider:
    settings = EndpointConfig.model_validate(
        {"provider": "anthropic", "base_url": base_url, "api_key": KEY, "timeout_s": timeout_s}
    )
    config = AnthropicProvider.Config.model_validate({"base_url": base_url, **options})
    return AnthropicProvider("claude", settings, config, session)


def request(custom_id: str = "req-1", **fields: object) -> LLMRequest:
    messages = [
        {"role": "system", "content": "You are terse."},
        {"role": "system", "content": "Answer in English."},
        {"role": "user", "content": "Say hello"},
        {"role": "assistant", "content": "Hello"},
        {"role": "user", "content": "Again"},
    ]
    return LLMRequest.chat(custom_id, messages, **fields)


async def test_success_maps_text_usage_model_and_request_id(
    server: FakeServer, session: aiohttp.ClientSession
) -> None:
    # Given a server that read 64 of 120 prompt tokens from its cache
    server.faults.push(Fault(text="Hi again", input_tokens=120, output_tokens=5, cached_tokens=64))

    resp = await make(server.url, session).generate(request(), "claude-sonnet-4-5")

    # Then input counts every prompt token (Anthropic reports the uncached part only)
    assert resp.text == "Hi again"
    assert resp.finish_reason == "stop"
    assert (resp.usage.input_tokens, resp.usage.cached_tokens) == (120, 64)
    assert resp.usage.output_tokens == 5
    assert resp.model == "claude-sonnet-4-5"
    assert resp.request_id is not None and resp.request_id.startswith("req_")
    [call] = server.calls(path=PATH)
    assert (call.custom_id, call.status) == ("req-1", 200)


@pytest.mark.parametrize(
    ("stop_reason", "finish"), [("max_tokens", "length"), ("tool_use", "tool_calls")]
)
async def test_stop_reasons_map_to_finish_reasons(
    server: FakeServer, session: aiohttp.ClientSession, stop_reason: str, finish: str
) -> None:
    server.faults.push(Fault(finish_reason=stop_reason))
    resp = await make(server.url, session).generate(request(), "m")
    assert resp.finish_reason == finish


def test_body_separates_system_and_maps_stop_and_sampling() -> None:
    provider = make("http://127.0.0.1:1", None, default_max_tokens=333)
    body = provider.body(request(stop="END", temperature=0.5, top_p=0.8, top_k=5), "claude")
    assert body["system"] == "You are terse.\n\nAnswer in English."
    assert [m["role"] for m in body["messages"]] == ["user", "assistant", "user"]
    assert body["max_tokens"] == 333, "max_tokens is required: the configured default fills in"
    assert body["stop_sequences"] == ["END"]
    assert (body["temperature"], body["top_p"], body["top_k"]) == (0.5, 0.8, 5)
    assert provider.body(request(max_tokens=12), "c")["max_tokens"] == 12
    assert provider.body(request(max_completion_tokens=13), "c")["max_tokens"] == 13


def test_anthropic_format_requests_go_as_written() -> None:
    params = {
        "model": "claude-x",
        "system": [{"type": "text", "text": "s", "cache_control": {"type": "ephemeral"}}],
        "thinking": {"type": "enabled", "budget_tokens": 1024},
        "messages": [{"role": "user", "content": "q"}],
    }
    written = LLMRequest(custom_id="a", kind="messages", body=params)
    body = make("http://127.0.0.1:1", None, default_max_tokens=2048).body(written, "claude-y")
    assert body == {**params, "model": "claude-y", "max_tokens": 2048}
    assert written.body["model"] == "claude-x", "the request itself is not modified"


def test_headers_carry_key_and_version() -> None:
    headers = make("http://127.0.0.1:1", None, anthropic_version="2099-01-01").headers()
    assert headers["x-api-key"] == KEY
    assert headers["anthropic-version"] == "2099-01-01"
    assert "authorization" not in headers


def test_what_anthropic_cannot_express_is_unsupported_before_the_network() -> None:
    provider = make("http://127.0.0.1:1", None)
    json_mode = request(response_format={"type": "json_object"})
    why = provider.unsupported(json_mode)
    assert why is not None and "response_format json_object" in why
    only_system = LLMRequest.chat("x", [{"role": "system", "content": "s"}])
    assert "only system messages" in (provider.unsupported(only_system) or "")
    assert "n > 1" in (provider.unsupported(request(n=2)) or "")
    embeddings = LLMRequest(custom_id="e", kind="embeddings", body={"input": "x"})
    assert "embeddings requests" in (provider.unsupported(embeddings) or "")
    assert provider.unsupported(request()) is None


SPEND_LIMIT = Fault(kind="rate_limited", error_code="enforced_spend_limit_reached")
BILLING = Fault(
    kind="raw", status=402, body='{"type":"error","error":{"type":"billing_error","message":"pay"}}'
)
INPUT_PLUS_MAX = Fault(
    kind="bad_request",
    message="input length and `max_tokens` exceed context limit: 197000 + 8192 > 200000",
)
ERROR_CASES: list[tuple[str | Fault, type[ProviderError], int | None]] = [
    ("rate_limited", RateLimited, 429),
    (SPEND_LIMIT, QuotaExceeded, 429),
    ("quota", QuotaExceeded, 400),
    (BILLING, QuotaExceeded, 402),
    ("auth", AuthError, 401),
    ("forbidden", AuthError, 403),
    ("not_found", InvalidRequest, 404),
    ("bad_request", InvalidRequest, 400),
    ("context_length", ContextTooLong, 400),
    (INPUT_PLUS_MAX, ContextTooLong, 400),
    ("too_large", ContextTooLong, 413),
    ("content_filter", ContentFiltered, None),
    ("server_error", ServerError, 500),
    ("bad_gateway", ServerError, 502),
    ("overloaded", Overloaded, 529),
    ("unavailable", Overloaded, 503),
    ("drop", ServerError, None),
    ("cut", ServerError, None),
    ("truncate", ProtocolError, 200),
    ("malformed", ProtocolError, 200),
]  # fmt: skip


@pytest.mark.parametrize(("fault", "expected", "status"), ERROR_CASES)
async def test_each_failure_maps_to_its_error_class(
    server: FakeServer,
    session: aiohttp.ClientSession,
    fault: str | Fault,
    expected: type[ProviderError],
    status: int | None,
) -> None:
    server.faults.push(fault)
    with pytest.raises(expected) as caught:
        await make(server.url, session).generate(request(), "claude")
    exc = caught.value
    assert exc.code == expected.code
    assert type(exc) is expected
    assert exc.status == status
    assert "'claude'" in exc.message


@pytest.mark.parametrize(
    ("fault", "low", "high"),
    [
        (Fault(kind="rate_limited", retry_after_s=7), 7, 7),
        (Fault(kind="rate_limited", retry_after_ms=250), 0.25, 0.25),
        (Fault(kind="rate_limited", retry_after_s=20, retry_after_date=True), 18, 20),
        (Fault(kind="rate_limited", reset_requests_s=30), 29, 31),
    ],
)
async def test_retry_after_variants(
    server: FakeServer, session: aiohttp.ClientSession, fault: Fault, low: float, high: float
) -> None:
    server.faults.push(fault)
    with pytest.raises(RateLimited) as caught:
        await make(server.url, session).generate(request(), "m")
    wait_s = caught.value.retry_after_s
    assert wait_s is not None and low <= wait_s <= high


async def test_enforced_limit_sends_anthropic_ratelimit_headers(
    session: aiohttp.ClientSession,
) -> None:
    async with FakeServer(rpm=1, tpm=100_000) as server:
        provider = make(server.url, session)
        first = await provider.generate(request(), "m")
        with pytest.raises(RateLimited) as caught:
            await provider.generate(request(), "m")
    assert first.rate_limits is not None
    assert (first.rate_limits.requests.limit, first.rate_limits.tokens.limit) == (1, 100_000)
    limits = caught.value.limits
    assert (limits.requests.limit, limits.requests.remaining) == (1, 0)
    assert limits.tokens.limit == 100_000
    assert caught.value.retry_after_s is not None and 0 < caught.value.retry_after_s <= 60


async def test_server_slower_than_timeout_is_timeout(
    server: FakeServer, session: aiohttp.ClientSession
) -> None:
    server.faults.push("slow:3000")
    with pytest.raises(Timeout):
        await make(server.url, session, timeout_s=0.2).generate(request(), "m")
    # The client gave up before the server answered: the server saw it hang up mid-wait.
    await server.wait_for_requests(1)
    assert server.requests[-1].fault == "abandoned" and server.requests[-1].status is None


async def test_missing_version_header_is_what_the_server_rejects(
    server: FakeServer, session: aiohttp.ClientSession
) -> None:
    # The fake server enforces the documented headers, so the adapter's are checked for real.
    async with session.post(server.url + PATH, json={"model": "m"}) as raw:
        body = await raw.json()
    assert raw.status == 400
    assert body["type"] == "error" and body["error"]["type"] == "invalid_request_error"
    assert "anthropic-version" in body["error"]["message"]


async def test_health(server: FakeServer, session: aiohttp.ClientSession) -> None:
    provider = make(server.url, session)
    assert (await provider.health()).ok
    server.faults.push("overloaded")
    assert not (await provider.health()).ok


def test_bad_version_and_max_tokens_are_config_errors() -> None:
    with pytest.raises(ValidationError):
        AnthropicProvider.Config(default_max_tokens=0)
    with pytest.raises(ValidationError):
        AnthropicProvider.Config(anthropic_version="")
