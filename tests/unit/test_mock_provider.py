"""The scripted mock: replies, per-request scripts, seeded fault rates, usage and latency."""

from __future__ import annotations

import asyncio
import statistics
from typing import Any, get_args

import pytest
from pydantic import ValidationError

from providers import errors
from providers.mock import ERRORS, ErrorCode, MockProvider
from providers.registry import endpoint_options
from schemas.config import ConfigError, EndpointConfig
from schemas.request import LLMRequest


def mock(**options: Any) -> MockProvider:
    settings = EndpointConfig.model_validate({"provider": "mock", **options})
    return MockProvider("m", settings, endpoint_options("m", settings))


def request(prompt: str = "hello", custom_id: str = "req-1") -> LLMRequest:
    messages = [{"role": "system", "content": "sys"}, {"role": "user", "content": prompt}]
    return LLMRequest.chat(custom_id, messages)


async def test_echo_is_still_the_default() -> None:
    resp = await mock().generate(request("ping"), "mock-1")
    assert resp.text == "ping"
    assert resp.model == "mock-1"
    assert resp.request_id is not None and resp.request_id.startswith("mock-")
    assert (resp.usage.input_tokens, resp.usage.output_tokens) == (2, 1)


async def test_fixed_mode_still_answers_its_reply() -> None:
    assert (await mock(mode="fixed", reply="FIXED").generate(request(), "m")).text == "FIXED"


async def test_first_matching_regex_reply_wins_else_the_mode() -> None:
    provider = mock(
        mode="fixed",
        reply="fallback",
        replies=[
            {"pattern": r"(?i)\bgmn\b", "reply": "GMN doc"},
            {"pattern": r"^sum \d+", "reply": "42"},
            {"pattern": "gmn", "reply": "never reached for GMN prompts"},
        ],
    )
    assert (await provider.generate(request("Write a GMN model"), "m")).text == "GMN doc"
    assert (await provider.generate(request("sum 40 2"), "m")).text == "42"
    assert (await provider.generate(request("other"), "m")).text == "fallback"


async def test_script_runs_per_custom_id_then_answers_normally() -> None:
    # Given a script for req-1 only
    provider = mock(script={"req-1": ["server_error", "rate_limited:2.5", "ok", "timeout"]})

    # When req-1 is called five times, and req-2 in between
    with pytest.raises(errors.ServerError, match=r"scripted server_error \(call 1 of 'req-1'\)"):
        await provider.generate(request(), "m")
    assert (await provider.generate(request(custom_id="req-2"), "m")).text == "hello"
    with pytest.raises(errors.RateLimited) as limited:
        await provider.generate(request(), "m")
    ok = await provider.generate(request(), "m")
    with pytest.raises(errors.Timeout):
        await provider.generate(request(), "m")
    after = await provider.generate(request(), "m")

    # Then each call got its step, and the script's end means plain success
    assert limited.value.retry_after_s == 2.5
    assert ok.text == after.text == "hello"
    assert provider.calls == {"req-1": 5}, "only scripted ids are counted"


@pytest.mark.parametrize("code", sorted(ERRORS))
async def test_every_error_code_raises_the_real_class(code: str) -> None:
    provider = mock(script={"req-1": [code]})
    with pytest.raises(errors.ProviderError) as caught:
        await provider.generate(request(), "m")
    assert type(caught.value) is ERRORS[code]
    assert caught.value.code == code


def test_error_codes_and_their_config_type_agree() -> None:
    assert set(get_args(ErrorCode)) == set(ERRORS)
    assert ERRORS["insufficient_quota"] is errors.QuotaExceeded


async def test_fault_rates_replay_with_the_same_seed() -> None:
    rates = {"server_error": 0.2, "rate_limited": 0.1, "timeout": 0.05}

    async def outcomes(seed: int) -> list[str]:
        provider = mock(fault_rates=rates, seed=seed, fault_retry_after_s=1.5)
        seen = []
        for i in range(400):
            try:
                await provider.generate(request(custom_id=f"r{i}"), "m")
                seen.append("ok")
            except errors.ProviderError as exc:
                seen.append(exc.code)
                if isinstance(exc, errors.RateLimited):
                    assert exc.retry_after_s == 1.5
        return seen

    first, again, other = await outcomes(7), await outcomes(7), await outcomes(8)
    assert first == again
    assert first != other
    share = {code: first.count(code) / len(first) for code in set(first)}
    assert share["server_error"] == pytest.approx(0.2, abs=0.06)
    assert share["rate_limited"] == pytest.approx(0.1, abs=0.05)
    assert share["timeout"] == pytest.approx(0.05, abs=0.04)


async def test_usage_override_is_reported_as_is() -> None:
    provider = mock(usage={"input_tokens": 1000, "output_tokens": 250})
    usage = (await provider.generate(request(), "m")).usage
    assert (usage.input_tokens, usage.output_tokens) == (1000, 250)
    partial = mock(usage={"output_tokens": 9})
    assert (await partial.generate(request(), "m")).usage.input_tokens == 3  # estimated


def test_exponential_latency_has_the_configured_mean() -> None:
    provider = mock(latency_ms=10, latency_exponential_mean_ms=50, seed=1)
    samples = [provider.delay_ms() for _ in range(4000)]
    assert min(samples) >= 10
    assert statistics.fmean(samples) == pytest.approx(60, rel=0.1)


def test_jitter_stays_within_its_band() -> None:
    provider = mock(latency_ms=100, latency_jitter_ms=20, seed=3)
    samples = [provider.delay_ms() for _ in range(500)]
    assert min(samples) >= 80 and max(samples) <= 120


async def test_latency_is_really_slept(monkeypatch: pytest.MonkeyPatch) -> None:
    slept = record_sleeps(monkeypatch)
    await mock(latency_ms=50).generate(request(), "m")
    assert 0.05 in slept


def record_sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Every asyncio.sleep from now on (still slept), by its delay in seconds."""
    slept: list[float] = []
    real_sleep = asyncio.sleep

    async def sleep(delay: float, result: Any = None) -> Any:
        slept.append(delay)
        return await real_sleep(delay, result)

    monkeypatch.setattr(asyncio, "sleep", sleep)
    return slept


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"replies": [{"pattern": "(", "reply": "x"}]}, "replies"),
        ({"script": {"a": ["explode"]}}, "script"),
        ({"script": {"a": ["server_error:3"]}}, "script"),
        ({"script": {"a": ["rate_limited:soon"]}}, "script"),
        ({"fault_rates": {"server_error": 0.7, "timeout": 0.5}}, "fault_rates"),
        ({"fault_rates": {"gremlins": 0.1}}, "fault_rates"),
        ({"usage": {"input_tokens": -1}}, "usage"),
        ({"latency_exponential_mean_ms": -5}, "latency_exponential_mean_ms"),
        ({"bogus": 1}, "bogus"),
    ],
)
def test_bad_mock_config_is_a_clear_config_error(options: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError, match=rf"endpoint 'm', field '{field}"):
        mock(**options)


def test_config_class_rejects_what_registry_rejects() -> None:
    with pytest.raises(ValidationError):
        MockProvider.Config.model_validate({"script": {"a": ["nope"]}})
