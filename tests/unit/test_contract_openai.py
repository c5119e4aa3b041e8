"""Contract: the OpenAI adapter against the fake server — success, every error, retry hints."""

from __future__ import annotations

import re
import socket

import aiohttp
import orjson
import pytest
from multidict import CIMultiDict, CIMultiDictProxy
from pydantic import ValidationError

from providers.base import CALLER_BOUNDS_TIME, ProviderResponse
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
from providers.http_response import HTTPResponse
from providers.openai import OpenAIProvider, _usage
from schemas.config import EndpointConfig
from schemas.request import LLMRequest
from schemas.result import Usage

KEY = "sk-test-SECRET-1234"
PATH = "/v1/chat/completions"


def make(
    base_url: str,
    session: aiohttp.ClientSession | None,
    *,
    timeout_s: float = 5.0,
    key: str | None = KEY,
    **options: object,
) -> OpenAIProvider:
    settings = EndpointConfig.model_validate(
        {"provider": "openai", "base_url": base_url, "api_key": key, "timeout_s": timeout_s}
    )
    return OpenAIProvider(
        "oa",
        settings,
        OpenAIProvider.Config.model_validate({"base_url": base_url, **options}),
        session,
    )


def request(custom_id: str = "req-1", **fields: object) -> LLMRequest:
    messages = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Say hello to the contract suite"},
    ]
    return LLMRequest.chat(custom_id, messages, **fields)


async def test_success_maps_text_usage_model_and_request_id(
    server: FakeServer, session: aiohttp.ClientSession
) -> None:
    # Given a server that reports cached prompt tokens
    server.faults.push(Fault(text="Hello!", input_tokens=120, output_tokens=7, cached_tokens=64))
    provider = make(server.openai_url, session)

    # When the adapter runs a request
    resp = await provider.generate(request(max_tokens=50), "gpt-4o-mini")

    # Then every field of the wire answer lands in the neutral response
    assert resp.text == "Hello!"
    assert resp.finish_reason == "stop"
    assert (resp.usage.input_tokens, resp.usage.output_tokens) == (120, 7)
    assert resp.usage.cached_tokens == 64
    assert resp.model == "gpt-4o-mini"
    assert resp.request_id is not None and resp.request_id.startswith("req_")
    assert resp.rate_limits is None, "no limit headers, nothing announced"
    [call] = server.calls(path=PATH)
    assert (call.custom_id, call.model, call.status) == ("req-1", "gpt-4o-mini", 200)


async def test_length_finish_reason_passes_through(
    server: FakeServer, session: aiohttp.ClientSession
) -> None:
    server.faults.push(Fault(finish_reason="length"))
    resp = await make(server.openai_url, session).generate(request(), "m")
    assert resp.finish_reason == "length"


def test_the_body_goes_as_written_with_the_chosen_model() -> None:
    schema = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}}
    req = request(
        model="the-users-model",
        max_completion_tokens=64,
        reasoning_effort="high",
        temperature=0.2,
        stop=["END"],
        response_format=schema,
        seed=7,
        logprobs=True,
        some_future_key={"a": 1},
    )
    body = make("http://127.0.0.1:1/v1", None).body(req, "gpt-4o")
    assert body == {**req.body, "model": "gpt-4o"}
    assert req.body["model"] == "the-users-model", "the request itself is not modified"


def test_max_tokens_field_renames_the_budget_only_when_configured() -> None:
    renaming = make("http://127.0.0.1:1/v1", None, max_tokens_field="max_completion_tokens")
    body = renaming.body(request(max_tokens=64), "o3")
    assert body["max_completion_tokens"] == 64 and "max_tokens" not in body
    legacy = make("http://127.0.0.1:1/v1", None, max_tokens_field="max_tokens")
    body = legacy.body(request(max_completion_tokens=32), "llama")
    assert body["max_tokens"] == 32 and "max_completion_tokens" not in body


def test_headers_carry_bearer_organization_and_extra_headers() -> None:
    provider = make(
        "http://127.0.0.1:1/v1", None, organization="org-1", extra_headers={"x-gw": "gw-key"}
    )
    headers = provider.headers("id/ü")
    assert headers["authorization"] == f"Bearer {KEY}"
    assert headers["openai-organization"] == "org-1"
    assert headers["x-gw"] == "gw-key"
    assert headers["x-batchyard-custom-id"] == "id/%C3%BC"
    assert "authorization" not in make("http://127.0.0.1:1/v1", None, key=None).headers()


async def test_local_server_needs_no_key(
    server: FakeServer, session: aiohttp.ClientSession
) -> None:
    resp = await make(server.openai_url, session, key=None).generate(request(), "llama")
    assert resp.text == "Say hello to the contract suite"


CREDIT_EXHAUSTED = Fault(
    kind="quota", error_type="insufficient_quota", error_code="credit_balance_exhausted"
)
#: vLLM says it in words only.
VLLM_CONTEXT = Fault(
    kind="bad_request",
    error_type="BadRequestError",
    message="This model's maximum context length is 4096 tokens. However, you requested 5000",
)
ERROR_CASES: list[tuple[str | Fault, type[ProviderError], int | None]] = [
    ("rate_limited", RateLimited, 429),
    ("quota", QuotaExceeded, 429),
    (CREDIT_EXHAUSTED, QuotaExceeded, 429),
    ("auth", AuthError, 401),
    ("forbidden", AuthError, 403),
    ("not_found", InvalidRequest, 404),
    ("bad_request", InvalidRequest, 400),
    ("context_length", ContextTooLong, 400),
    (VLLM_CONTEXT, ContextTooLong, 400),
    ("too_large", ContextTooLong, 413),
    ("content_filter", ContentFiltered, None),
    ("server_error", ServerError, 500),
    ("bad_gateway", ServerError, 502),
    ("overloaded", Overloaded, 503),
    ("unavailable", Overloaded, 503),
    ("gateway_timeout", ServerError, 504),
    ("drop", ServerError, None),
    ("cut", ServerError, None),
    ("truncate", ProtocolError, 200),
    ("malformed", ProtocolError, 200),
    (Fault(kind="raw", status=200, body="<html>hello</html>"), ProtocolError, 200),
    (Fault(kind="raw", status=302, headers={"location": "https://elsewhere"}), ProtocolError, 302),
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
        await make(server.openai_url, session).generate(request(), "gpt-4o")
    exc = caught.value
    assert exc.code == expected.code
    assert type(exc) is expected
    assert exc.status == status
    assert "'oa'" in exc.message, "errors name their endpoint"
    assert exc.__cause__ is None, "no aiohttp exception travels upward"


async def test_retry_after_seconds(server: FakeServer, session: aiohttp.ClientSession) -> None:
    server.faults.push("rate_limited:2.5")
    with pytest.raises(RateLimited) as caught:
        await make(server.openai_url, session).generate(request(), "m")
    assert caught.value.retry_after_s == 2.5


async def test_retry_after_ms_wins_over_seconds(
    server: FakeServer, session: aiohttp.ClientSession
) -> None:
    server.faults.push(Fault(kind="rate_limited", retry_after_s=9, retry_after_ms=1500))
    with pytest.raises(RateLimited) as caught:
        await make(server.openai_url, session).generate(request(), "m")
    assert caught.value.retry_after_s == 1.5


async def test_retry_after_http_date(server: FakeServer, session: aiohttp.ClientSession) -> None:
    server.faults.push(Fault(kind="rate_limited", retry_after_s=30, retry_after_date=True))
    with pytest.raises(RateLimited) as caught:
        await make(server.openai_url, session).generate(request(), "m")
    assert caught.value.retry_after_s is not None
    assert 28 <= caught.value.retry_after_s <= 30


@pytest.mark.parametrize(
    ("fault", "wait_s"),
    [
        (Fault(kind="rate_limited", reset_requests_s=360), 360.0),
        (Fault(kind="rate_limited", reset_tokens_s=0.02), 0.02),
        (Fault(kind="rate_limited", reset_requests_s=3723.5, reset_tokens_s=1), 3723.5),
    ],
)
async def test_retry_hint_from_x_ratelimit_reset_headers(
    server: FakeServer, session: aiohttp.ClientSession, fault: Fault, wait_s: float
) -> None:
    server.faults.push(fault)
    with pytest.raises(RateLimited) as caught:
        await make(server.openai_url, session).generate(request(), "m")
    assert caught.value.retry_after_s == pytest.approx(wait_s)
    assert caught.value.limits.requests.remaining == (0 if fault.reset_requests_s else None)


async def test_no_retry_hint_means_none(server: FakeServer, session: aiohttp.ClientSession) -> None:
    server.faults.push("rate_limited")
    with pytest.raises(RateLimited) as caught:
        await make(server.openai_url, session).generate(request(), "m")
    assert caught.value.retry_after_s is None


async def test_enforced_rpm_answers_429_with_limits(session: aiohttp.ClientSession) -> None:
    async with FakeServer(rpm=1) as server:
        provider = make(server.openai_url, session)
        first = await provider.generate(request(), "m")
        assert first.rate_limits is not None and first.rate_limits.requests.limit == 1
        with pytest.raises(RateLimited) as caught:
            await provider.generate(request(), "m")
    exc = caught.value
    assert exc.retry_after_s is not None and 0 < exc.retry_after_s <= 60
    assert exc.limits.requests.remaining == 0
    assert "requests per min" in exc.message


async def test_server_slower_than_timeout_is_timeout(
    server: FakeServer, session: aiohttp.ClientSession
) -> None:
    server.faults.push("slow:3000")
    with pytest.raises(Timeout, match=r"within 0\.2s"):
        await make(server.openai_url, session, timeout_s=0.2).generate(request(), "m")
    # The client gave up before the server answered: the server saw it hang up mid-wait.
    await server.wait_for_requests(1)
    assert server.requests[-1].fault == "abandoned" and server.requests[-1].status is None


async def test_a_caller_that_bounds_the_call_is_the_only_timer(
    server: FakeServer, session: aiohttp.ClientSession
) -> None:
    """Under CALLER_BOUNDS_TIME (workers.calls) the adapter arms no total-time timer: an
    answer later than timeout_s still arrives, since the caller's own timer decides."""
    provider = make(server.openai_url, session, timeout_s=0.2)
    server.faults.push("slow:400")
    bounded = CALLER_BOUNDS_TIME.set(True)
    try:
        answer = await provider.generate(request(), "m")
    finally:
        CALLER_BOUNDS_TIME.reset(bounded)
    assert answer.text
    server.faults.push("slow:400")
    with pytest.raises(Timeout, match=r"within 0\.2s"):
        await provider.generate(request(), "m")


async def test_connection_refused_is_server_error(session: aiohttp.ClientSession) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(ServerError, match="connection failed"):
        await make(f"http://127.0.0.1:{port}/v1", session).generate(request(), "m")


async def test_health_lists_models_and_reports_failures(
    server: FakeServer, session: aiohttp.ClientSession
) -> None:
    provider = make(server.openai_url, session)
    assert (await provider.health()).ok
    server.faults.push("auth")
    status = await provider.health()
    assert not status.ok and "401" in status.detail
    assert server.calls(path="/v1/models")[-1].status == 401


async def test_wrong_key_is_auth_error_and_never_echoed(session: aiohttp.ClientSession) -> None:
    async with FakeServer(api_key="sk-the-right-one") as server:
        with pytest.raises(AuthError) as caught:
            await make(server.openai_url, session).generate(request(), "m")
    assert KEY not in caught.value.message
    assert "1234" in caught.value.message, "OpenAI echoes a masked key"


async def test_no_session_is_a_clear_error() -> None:
    with pytest.raises(RuntimeError, match="shared ClientSession"):
        await make("http://127.0.0.1:1/v1", None).generate(request(), "m")


@pytest.mark.parametrize(
    "url", ["ftp://example.com", "not a url", "http://", "https://user:pw@host/v1", "http://h/?a=1"]
)
def test_bad_base_url_is_a_validation_error(url: str) -> None:
    with pytest.raises(ValidationError, match="base_url"):
        OpenAIProvider.Config(base_url=url)


def test_base_url_loses_its_trailing_slash_and_unknown_keys_fail() -> None:
    assert OpenAIProvider.Config(base_url="http://h:8080/v1/").base_url == "http://h:8080/v1"
    with pytest.raises(ValidationError, match="extra"):
        OpenAIProvider.validate_options({"base_url": "http://h", "bogus": 1})


def test_usage_reads_absent_parts_as_zero() -> None:
    assert _usage(None) == Usage()
    assert _usage({"prompt_tokens": 3, "completion_tokens": 2}) == Usage(
        input_tokens=3, output_tokens=2
    )
    detailed = {
        "prompt_tokens": 3,
        "completion_tokens": 2,
        "prompt_tokens_details": {"cached_tokens": 1},
        "completion_tokens_details": {"reasoning_tokens": 2},
    }
    assert _usage(detailed) == Usage(
        input_tokens=3, output_tokens=2, cached_tokens=1, reasoning_tokens=2
    )
    assert _usage({"prompt_tokens_details": None, "completion_tokens_details": {}}) == Usage()


def test_a_negative_count_reads_as_unknown_and_keeps_the_answer() -> None:
    # A server reporting a negative count: the answer (paid for) stands, the count reads 0.
    assert _usage({"prompt_tokens": -4, "completion_tokens": 2}) == Usage(
        input_tokens=0, output_tokens=2
    )
    assert Usage(input_tokens=-1, cached_tokens=-3) == Usage()
    answer = chat_answer({"choices": [{"message": {"content": "a"}}], "usage": ODD_USAGE})
    assert answer.usage == Usage(input_tokens=7, cached_tokens=2, reasoning_tokens=1)


#: Counts as some servers write them: strings, floats, booleans, negatives, nulls.
ODD_USAGE = {
    "prompt_tokens": "7",
    "completion_tokens": -3,
    "prompt_tokens_details": {"cached_tokens": 2.0},
    "completion_tokens_details": {"reasoning_tokens": True},
}


def chat_answer(body: object, headers: dict[str, str] | None = None) -> ProviderResponse:
    """The adapter's reading of a 200 chat answer with this JSON body."""
    raw = HTTPResponse(200, CIMultiDictProxy(CIMultiDict(headers or {})), orjson.dumps(body))
    return make("http://127.0.0.1:9/v1", None).answer(request(), raw, "asked")


def test_the_answer_is_read_as_validating_it_reads_it() -> None:
    # Given a chat answer with tool calls, an id and a second choice
    call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    body = {
        "id": "chatcmpl-1",
        "model": "served",
        "choices": [
            {"message": {"content": None, "tool_calls": [call]}, "finish_reason": "tool_calls"},
            {"message": {"content": "other"}},
        ],
        "usage": {"prompt_tokens": 5, "completion_tokens": 3},
        "vendor_extra": {"kept": True},
    }
    # When the adapter reads it
    answer = chat_answer(body)
    # Then it holds what a validated ProviderResponse of those fields holds
    fields = {
        "text": "",
        "finish_reason": "tool_calls",
        "tool_calls": [call],
        "usage": Usage(input_tokens=5, output_tokens=3),
        "model": "served",
        "request_id": "chatcmpl-1",
        "body": body,
    }
    validated = ProviderResponse(**fields)
    validated.rate_limits = None
    assert answer == validated
    assert list(answer.__dict__) == list(validated.__dict__)
    assert answer.model_fields_set == validated.model_fields_set
    assert answer.model_dump_json() == validated.model_dump_json()
    # and the tool calls are its own, not the body's
    assert answer.body is not None and answer.tool_calls is not None
    assert answer.tool_calls[0] is not answer.body["choices"][0]["message"]["tool_calls"][0]
    # An answer without the optional fields reads with their defaults
    bare = chat_answer({"choices": [{"message": {}}]}, {"x-request-id": "req_9"})
    assert (bare.text, bare.finish_reason, bare.tool_calls) == ("", "stop", None)
    assert (bare.model, bare.request_id, bare.usage) == ("asked", "req_9", Usage())


@pytest.mark.parametrize(
    ("body", "where"),
    [
        ({}, "choices: Field required"),
        ({"choices": []}, "choices: List should have at least 1 item"),
        ({"choices": "x"}, "choices: Input should be a valid list"),
        ({"choices": [{}]}, "choices.0.message: Field required"),
        ({"choices": [{"message": None}]}, "choices.0.message: Input should be a valid dict"),
        ({"choices": [{"message": {"content": 5}}]}, "choices.0.message.content: Input should"),
        ({"choices": [{"message": {}}, "x"]}, "choices.1: Input should be a valid dictionary"),
        ({"choices": [{"message": {"tool_calls": "no"}}]}, "choices.0.message.tool_calls: "),
        ({"id": 5, "choices": [{"message": {}}]}, "id: Input should be a valid string"),
        ({"choices": [{"message": {}}], "usage": []}, "usage: Input should be a valid dict"),
        (
            {"choices": [{"message": {}}], "usage": {"prompt_tokens": "x"}},
            "usage.prompt_tokens: Input should be a valid integer",
        ),
        (
            {
                "choices": [{"message": {}}],
                "usage": {"prompt_tokens_details": {"cached_tokens": []}},
            },
            "usage.prompt_tokens_details.cached_tokens: Input should be a valid integer",
        ),
    ],
)
def test_an_odd_answer_is_a_protocol_error_naming_its_field(body: object, where: str) -> None:
    with pytest.raises(ProtocolError, match=f"unexpected response shape at {re.escape(where)}"):
        chat_answer(body)
