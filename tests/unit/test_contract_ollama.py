"""Contract: the Ollama adapter against the fake server — success, every error, timeouts."""

from __future__ import annotations

import aiohttp
import pytest
from pydantic import ValidationError

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
from providers.ollama import OllamaProvider
from schemas.config import EndpointConfig
from schemas.request import LLMRequest

PATH = "/api/chat"


def make(
    base_url: str,
    session: aiohttp.ClientSession | None,
    *,
    timeout_s: float = 5.0,
    key: str | None = None,
    **options: object,
) -> OllamaProvider:
    settings = EndpointConfig.model_validate(
        {"provider": "ollama", "base_url": base_url, "api_key": key, "timeout_s": timeout_s}
    )
    config = OllamaProvider.Config.model_validate({"base_url": base_url, **options})
    return OllamaProvider("local", settings, config, session)


def request(custom_id: str = "req-1", **fields: object) -> LLMRequest:
    messages = [{"role": "user", "content": "Why is the sky blue?"}]
    return LLMRequest.chat(custom_id, messages, **fields)


async def test_success_maps_text_usage_and_done_reason(
    server: FakeServer, session: aiohttp.ClientSession
) -> None:
    server.faults.push(Fault(text="Rayleigh.", input_tokens=26, output_tokens=4))
    resp = await make(server.url, session).generate(request(), "llama3.2")
    assert resp.text == "Rayleigh."
    assert resp.finish_reason == "stop"
    assert (resp.usage.input_tokens, resp.usage.output_tokens) == (26, 4)
    assert resp.model == "llama3.2"
    assert resp.request_id is None, "Ollama has no request id"
    [call] = server.calls(path=PATH)
    assert (call.custom_id, call.status) == ("req-1", 200)


async def test_length_done_reason(server: FakeServer, session: aiohttp.ClientSession) -> None:
    server.faults.push(Fault(finish_reason="length"))
    assert (await make(server.url, session).generate(request(), "m")).finish_reason == "length"


def test_body_puts_sampling_and_loading_in_options() -> None:
    provider = make("http://127.0.0.1:1", None, num_ctx=8192, num_gpu=99, keep_alive="10m")
    body = provider.body(
        request(
            max_tokens=100,
            temperature=0.1,
            top_p=0.5,
            stop="###",
            response_format={"type": "json_object"},
            seed=3,
            think=False,
            options={"repeat_penalty": 1.1},
        ),
        "qwen3",
    )
    assert body["stream"] is False
    assert body["keep_alive"] == "10m"
    assert body["format"] == "json"
    assert body["think"] is False
    assert body["options"] == {
        "num_ctx": 8192,
        "num_gpu": 99,
        "temperature": 0.1,
        "top_p": 0.5,
        "num_predict": 100,
        "stop": ["###"],
        "seed": 3,
        "repeat_penalty": 1.1,
    }


def test_json_schema_becomes_the_format() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    fmt = {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}
    body = make("http://127.0.0.1:1", None).body(request(response_format=fmt), "m")
    assert body["format"] == schema
    assert "options" not in make("http://127.0.0.1:1", None).body(request(), "m")


async def test_missing_model_says_how_to_pull_it(session: aiohttp.ClientSession) -> None:
    async with FakeServer(models=["llama3.2:latest"]) as server:
        with pytest.raises(InvalidRequest, match=r"ollama pull qwen3:8b") as caught:
            await make(server.url, session).generate(request(), "qwen3:8b")
    assert caught.value.status == 404


ERROR_CASES: list[tuple[str | Fault, type[ProviderError], int | None]] = [
    ("rate_limited", RateLimited, 429),
    ("quota", QuotaExceeded, 402),
    ("auth", AuthError, 401),
    ("forbidden", AuthError, 403),
    ("not_found", InvalidRequest, 404),
    ("bad_request", InvalidRequest, 400),
    ("context_length", ContextTooLong, 400),
    ("server_error", ServerError, 500),
    ("bad_gateway", ServerError, 502),
    ("overloaded", Overloaded, 503),
    ("gateway_timeout", ServerError, 504),
    ("drop", ServerError, None),
    ("cut", ServerError, None),
    ("truncate", ProtocolError, 200),
    ("malformed", ProtocolError, 200),
    (Fault(kind="raw", status=404, body="404 page not found"), InvalidRequest, 404),
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
        await make(server.url, session).generate(request(), "llama3.2")
    exc = caught.value
    assert exc.code == expected.code
    assert type(exc) is expected
    assert exc.status == status


async def test_retry_after_on_429(server: FakeServer, session: aiohttp.ClientSession) -> None:
    server.faults.push("rate_limited:4")
    with pytest.raises(RateLimited) as caught:
        await make(server.url, session).generate(request(), "m")
    assert caught.value.retry_after_s == 4


async def test_server_slower_than_timeout_is_timeout(
    server: FakeServer, session: aiohttp.ClientSession
) -> None:
    server.faults.push("slow:3000")
    with pytest.raises(Timeout):
        await make(server.url, session, timeout_s=0.2).generate(request(), "m")
    # The client gave up before the server answered: the server saw it hang up mid-wait.
    await server.wait_for_requests(1)
    assert server.requests[-1].fault == "abandoned" and server.requests[-1].status is None


async def test_streaming_answer_would_be_a_protocol_error(
    server: FakeServer, session: aiohttp.ClientSession
) -> None:
    # Ollama streams NDJSON unless told otherwise: the adapter must send stream false.
    async with session.post(server.url + PATH, json={"model": "m", "messages": []}) as raw:
        assert raw.content_type == "application/x-ndjson"
    resp = await make(server.url, session).generate(request(), "m")
    assert resp.text == "Why is the sky blue?"


async def test_bearer_key_is_sent_when_configured(session: aiohttp.ClientSession) -> None:
    async with FakeServer(api_key="ollama-cloud-key") as server:
        with pytest.raises(AuthError):
            await make(server.url, session).generate(request(), "m")
        resp = await make(server.url, session, key="ollama-cloud-key").generate(request(), "m")
    assert resp.text


async def test_health_lists_tags(server: FakeServer, session: aiohttp.ClientSession) -> None:
    provider = make(server.url, session)
    assert (await provider.health()).ok
    server.faults.push("server_error")
    status = await provider.health()
    assert not status.ok and "500" in status.detail


@pytest.mark.parametrize(
    ("field", "value"), [("keep_alive", "forever"), ("num_ctx", 0), ("base_url", "localhost:11434")]
)
def test_bad_options_are_validation_errors(field: str, value: object) -> None:
    with pytest.raises(ValidationError, match=field):
        OllamaProvider.Config.model_validate({field: value})


def test_keep_alive_accepts_durations_and_seconds() -> None:
    for value in ("5m", "-1", "1h30m", 300, -1):
        assert OllamaProvider.Config(keep_alive=value).keep_alive == value
