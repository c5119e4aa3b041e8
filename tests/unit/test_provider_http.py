"""The shared HTTP helpers: durations, Retry-After, limit headers, error translation, secrets."""

from __future__ import annotations

from email.utils import formatdate

import aiohttp
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from multidict import CIMultiDict, CIMultiDictProxy

from providers.anthropic import AnthropicProvider
from providers.errors import (
    AuthError,
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
from providers.fake_server.faults import go_duration
from providers.headers import parse_duration_s, rate_limits, retry_after_s
from providers.http import HTTPProvider
from providers.http_response import HTTPResponse, error_for_status, translate_errors, vendor_error
from providers.ollama import OllamaProvider
from providers.openai import OpenAIProvider
from providers.registry import endpoint_options
from schemas.config import ConfigError, EndpointConfig
from schemas.request import LLMRequest

NOW = 1_700_000_000.0
SECRET = "sk-test-SECRET-1234"
GATEWAY_SECRET = "gw-SECRET-5678"


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("1s", 1.0),
        ("6m0s", 360.0),
        ("20ms", 0.02),
        ("1h2m3.5s", 3723.5),
        ("1.5", 1.5),
        ("0", 0.0),
        ("250us", 0.00025),
        (" 2s ", 2.0),
    ],
)
def test_go_durations(text: str, seconds: float) -> None:
    assert parse_duration_s(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "soon", "1x", "-1s", "s", "1s2", "nan", "inf", "-3"])
def test_garbage_durations_are_none(text: str) -> None:
    assert parse_duration_s(text) is None


@given(st.floats(min_value=0, max_value=10 * 3600, allow_nan=False))
def test_fake_server_durations_round_trip(seconds: float) -> None:
    parsed = parse_duration_s(go_duration(seconds))
    assert parsed is not None
    assert parsed == pytest.approx(seconds, abs=0.001)


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"retry-after": "3"}, 3.0),
        ({"Retry-After": "0.5"}, 0.5),
        ({"retry-after-ms": "1500", "retry-after": "9"}, 1.5),
        ({"retry-after": formatdate(NOW + 42, usegmt=True)}, 42.0),
        ({"retry-after": formatdate(NOW - 42, usegmt=True)}, 0.0),
        ({"retry-after": "whenever"}, None),
        ({}, None),
        ({"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "6m0s"}, 360.0),
        (
            {
                "x-ratelimit-remaining-requests": "10",
                "x-ratelimit-reset-requests": "6m0s",
                "x-ratelimit-remaining-tokens": "0",
                "x-ratelimit-reset-tokens": "20ms",
            },
            0.02,
        ),
        ({"x-ratelimit-reset-requests": "1s", "x-ratelimit-reset-tokens": "2s"}, 2.0),
        (
            {
                "anthropic-ratelimit-requests-remaining": "0",
                "anthropic-ratelimit-requests-reset": "2023-11-14T22:14:00Z",
            },
            40.0,
        ),
    ],
)
def test_retry_after(headers: dict[str, str], expected: float | None) -> None:
    got = retry_after_s(headers, now_s=NOW)
    assert got == (pytest.approx(expected) if expected is not None else None)


def test_openai_limit_headers() -> None:
    limits = rate_limits(
        CIMultiDictProxy(
            CIMultiDict(
                {
                    "x-ratelimit-limit-requests": "5000",
                    "x-ratelimit-limit-tokens": "160000",
                    "x-ratelimit-remaining-requests": "4999",
                    "x-ratelimit-remaining-tokens": "159976",
                    "x-ratelimit-reset-requests": "12ms",
                    "x-ratelimit-reset-tokens": "9ms",
                }
            )
        )
    )
    assert (limits.requests.limit, limits.tokens.limit) == (5000, 160000)
    assert (limits.requests.remaining, limits.tokens.remaining) == (4999, 159976)
    assert limits.requests.reset_s == pytest.approx(0.012)
    assert limits.tokens.reset_s == pytest.approx(0.009)
    assert limits


def test_anthropic_limit_headers_and_absent_ones() -> None:
    limits = rate_limits(
        {
            "anthropic-ratelimit-requests-limit": "50",
            "anthropic-ratelimit-requests-remaining": "49",
            "anthropic-ratelimit-requests-reset": "2023-11-14T22:13:30Z",
            "anthropic-ratelimit-input-tokens-limit": "40000",
            "anthropic-ratelimit-input-tokens-remaining": "39000",
        },
        now_s=NOW,
    )
    assert (limits.requests.limit, limits.requests.remaining) == (50, 49)
    assert limits.requests.reset_s == pytest.approx(10.0)
    assert (limits.tokens.limit, limits.tokens.remaining) == (40000, 39000)
    assert not rate_limits({"content-type": "application/json"})


@pytest.mark.parametrize(
    ("body", "kind", "code", "message"),
    [
        (b'{"error":{"message":"m","type":"t","param":null,"code":"c"}}', "t", "c", "m"),
        (b'{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}',
         "overloaded_error", None, "Overloaded"),
        (b'{"error":{"type":"rate_limit_error","message":"x","details":{"error_code":"e"}}}',
         "rate_limit_error", "e", "x"),
        (b'{"error":"model \'x\' not found"}', None, None, "model 'x' not found"),
        (b'{"object":"error","message":"too long","type":"BadRequestError","code":400}',
         "BadRequestError", "400", "too long"),
        (b"<html><title>502 Bad Gateway</title></html>", None, None, "502 Bad Gateway"),
        (b"", None, None, ""),
        (b"[1, 2]", None, None, "[1, 2]"),
    ],
)  # fmt: skip
def test_vendor_error_reads_every_shape(
    body: bytes, kind: str | None, code: str | None, message: str
) -> None:
    err = vendor_error(body)
    assert (err.type, err.code, err.message) == (kind, code, message)


def response(status: int, headers: dict[str, str] | None = None) -> HTTPResponse:
    return HTTPResponse(status, CIMultiDictProxy(CIMultiDict(headers or {})), b"")


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (400, InvalidRequest),
        (401, AuthError),
        (402, QuotaExceeded),
        (403, AuthError),
        (404, InvalidRequest),
        (408, Timeout),
        (409, ServerError),
        (413, ContextTooLong),
        (422, InvalidRequest),
        (429, RateLimited),
        (500, ServerError),
        (502, ServerError),
        (503, Overloaded),
        (504, ServerError),
        (529, Overloaded),
        (304, ProtocolError),
    ],
)
def test_status_fallback_mapping(status: int, expected: type[ProviderError]) -> None:
    err = error_for_status("x", response(status, {"retry-after": "1"}))
    assert type(err).code == expected.code and isinstance(err, expected)
    assert err.status == status


@pytest.mark.parametrize(
    ("raised", "expected"),
    [
        (TimeoutError(), Timeout),
        (aiohttp.ServerTimeoutError("read"), Timeout),
        (aiohttp.ServerDisconnectedError(), ServerError),
        (aiohttp.ClientPayloadError("cut"), ServerError),
        (aiohttp.ClientConnectionError("reset"), ServerError),
        (ConnectionResetError("reset by peer"), ServerError),
        (aiohttp.ClientError("other"), ServerError),
    ],
)
def test_transport_errors_translate_in_one_place(
    raised: BaseException, expected: type[ProviderError]
) -> None:
    with pytest.raises(expected) as caught, translate_errors("ep", 1.5):
        raise raised
    assert caught.value.code == expected.code
    assert caught.value.__cause__ is None
    assert caught.value.__suppress_context__


def test_decode_failures_are_protocol_errors() -> None:
    with pytest.raises(ProtocolError, match="not valid JSON"), translate_errors("ep"):
        orjson.loads(b"{")


def test_provider_errors_pass_through_untouched() -> None:
    original = QuotaExceeded("no money")
    with pytest.raises(QuotaExceeded) as caught, translate_errors("ep"):
        raise original
    assert caught.value is original


def test_unknown_option_names_the_endpoint_and_allowed_fields() -> None:
    cfg = EndpointConfig.model_validate({"provider": "openai", "base_url": "http://h", "x": 1})
    with pytest.raises(ConfigError, match=r"endpoint 'oa', field 'x'.*allowed here: .*base_url"):
        endpoint_options("oa", cfg)


ADAPTERS: list[type[HTTPProvider]] = [OpenAIProvider, AnthropicProvider, OllamaProvider]


def base_url(cls: type[HTTPProvider], server: FakeServer) -> str:
    return server.openai_url if cls is OpenAIProvider else server.url


@pytest.mark.parametrize("cls", ADAPTERS)
async def test_the_key_never_appears_in_reprs_or_error_messages(
    cls: type[HTTPProvider], server: FakeServer
) -> None:
    # Given an endpoint whose key is recognisable, and a gateway header holding a secret too
    url = base_url(cls, server)
    settings = EndpointConfig.model_validate(
        {"provider": cls.name, "base_url": url, "api_key": SECRET, "timeout_s": 0.3}
    )
    options = cls.validate_options(
        {"base_url": url, "extra_headers": {"x-gateway-key": GATEWAY_SECRET}}
    )
    request = LLMRequest.chat("c", [{"role": "user", "content": "hi"}])
    seen: list[str] = [repr(settings), str(settings), repr(options), str(options)]
    seen.append(str(settings.model_dump()))
    seen.append(str(options.model_dump()))

    # When every kind of failure happens, including a server that echoes the key back
    faults: list[Fault | str] = [
        Fault(kind="auth", message=f"Incorrect API key provided: {SECRET}"),
        Fault(kind="bad_request", message=f"bad header x-gateway-key={GATEWAY_SECRET}"),
        "drop",
        "truncate",
        "slow:2000",
    ]
    async with aiohttp.ClientSession() as session:
        provider = cls("secret-test", settings, options, session)
        seen.append(repr(provider))
        for fault in faults:
            server.faults.push(fault)
            with pytest.raises(ProviderError) as caught:
                await provider.generate(request, "m")
            seen += [caught.value.message, str(caught.value), repr(caught.value)]
        server.faults.push(Fault(kind="forbidden", message=f"key {SECRET} forbidden"))
        seen.append((await provider.health()).detail)

    # Then the key is nowhere
    assert not [text for text in seen if SECRET in text or GATEWAY_SECRET in text]
