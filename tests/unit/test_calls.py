"""In-place retries on one endpoint (`workers.calls`): tenacity decides, the policy says
which classes are retried; a real redis-server holds the breaker and the limiter."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis

from providers import errors
from providers.base import CALLER_BOUNDS_TIME, Provider, ProviderResponse
from providers.fake_server import FakeServer
from providers.mock import MockProvider
from providers.openai import OpenAIProvider
from providers.registry import endpoint_options
from schemas.config import EndpointConfig, PolicyConfig
from schemas.job import Job
from schemas.request import LLMRequest, RouteHop
from schemas.result import Attempt
from schemas.tokens import request_tokens
from workers import metrics
from workers.calls import call_endpoint
from workers.health import EndpointHealth
from workers.ratelimit import Lease, Limiter
from workers.redis_server import RedisServer


@pytest.fixture(autouse=True)
def recorded() -> Iterator[None]:
    """Metrics are read here in-process, as a worker's served /metrics would read them."""
    before = metrics.RECORDING
    metrics.record(True)
    yield
    metrics.record(before)


@pytest.fixture
async def client(redis_server: RedisServer) -> AsyncIterator[aioredis.Redis]:
    r = aioredis.Redis.from_url(redis_server.url)
    yield r
    await r.aclose()


async def call(
    client: aioredis.Redis, steps: list[str], deadline: float | None = None, **policy: Any
) -> tuple[Job, str | BaseException]:
    """Run one request whose provider answers `steps` in turn; the job and text or error."""
    settings = EndpointConfig.model_validate({"provider": "mock", "script": {"r-1": steps}})
    provider = MockProvider("m", settings, endpoint_options("m", settings))
    job = new_job("m", deadline)
    try:
        resp = await call_with(client, provider, job, "mock-1", backoff_base_s=0.001, **policy)
    except errors.ProviderError as exc:
        return job, exc
    return job, resp.text


def new_job(endpoint: str, deadline: float | None = None) -> Job:
    """A job of one request, `r-1`, routed to `endpoint`."""
    request = LLMRequest.model_validate(
        {"custom_id": "r-1", "messages": [{"role": "user", "content": "hi"}]}
    )
    return Job(
        batch_id="b",
        key="r-1",
        request=request,
        route=[RouteHop(endpoint=endpoint)],
        enqueued_at=time.time(),
        deadline=deadline,
    )


async def call_with(
    client: aioredis.Redis, provider: Provider, job: Job, model: str, **policy: Any
) -> ProviderResponse:
    """`call_endpoint` of the job's request on `provider`, breaker and limiter in Redis."""
    name, settings = provider.endpoint, provider.settings
    return await call_endpoint(
        job,
        provider,
        model,
        job.request,
        health=EndpointHealth(client, "t", name, settings.breaker),
        limiter=Limiter(client, "t", name, settings),
        policy=PolicyConfig.model_validate(policy),
    )


def tried(job: Job) -> list[str | None]:
    return [a.error for a in job.attempts]


def retries_counted() -> float:
    return metrics.labeled(metrics.RETRIES, "m")._value.get()  # type: ignore[attr-defined,no-any-return]


async def test_retryable_errors_are_retried_in_place_until_one_succeeds(
    client: aioredis.Redis,
) -> None:
    before = retries_counted()
    job, outcome = await call(client, ["server_error", "protocol_error", "ok"])
    assert outcome == "hi"
    assert tried(job) == ["server_error", "protocol_error", None]
    assert retries_counted() - before == 2


async def test_retries_per_endpoint_bounds_the_calls(client: aioredis.Redis) -> None:
    before = retries_counted()
    job, outcome = await call(client, ["server_error"] * 5, retries_per_endpoint=2)
    assert isinstance(outcome, errors.ServerError)
    assert tried(job) == ["server_error"] * 3
    assert retries_counted() - before == 2, "the call that was not retried is not a retry"
    job, outcome = await call(client, ["server_error", "ok"], retries_per_endpoint=0)
    assert isinstance(outcome, errors.ServerError) and len(job.attempts) == 1


@pytest.mark.parametrize("code", ["rate_limited:0.01", "overloaded", "timeout"])
async def test_backpressure_is_not_retried_in_place_but_handed_back_to_wait(
    client: aioredis.Redis, code: str
) -> None:
    # (the executor requeues it with a delay, without using up its attempts: test_backpressure)
    job, outcome = await call(client, [code, "ok"], retries_per_endpoint=5)
    assert isinstance(outcome, errors.ProviderError) and code.startswith(outcome.code)
    assert len(job.attempts) == 1


@pytest.mark.parametrize("code", ["invalid_request", "auth_error", "context_too_long"])
async def test_classes_the_policy_does_not_retry_are_tried_once(
    client: aioredis.Redis, code: str
) -> None:
    job, outcome = await call(client, [code, "ok"])
    assert isinstance(outcome, errors.ProviderError) and outcome.code == code
    assert tried(job) == [code]


async def test_the_policy_not_the_error_class_decides(client: aioredis.Redis) -> None:
    job, outcome = await call(client, ["server_error", "ok"], on={"server_error": "failover"})
    assert isinstance(outcome, errors.ServerError) and len(job.attempts) == 1
    job, outcome = await call(client, ["content_filtered", "ok"], on={"content_filtered": "retry"})
    assert outcome == "hi" and tried(job) == ["content_filtered", None]


async def test_the_request_budget_and_a_long_retry_after_stop_retrying(
    client: aioredis.Redis,
) -> None:
    job, outcome = await call(client, ["server_error"] * 5, retries_per_endpoint=5, max_attempts=2)
    assert isinstance(outcome, errors.ServerError) and len(job.attempts) == 2
    job, outcome = await call(client, ["server_error", "ok"], deadline=time.time() - 1)
    assert isinstance(outcome, errors.ServerError) and len(job.attempts) == 1
    # (last: the 429 pauses the endpoint for 120 s)
    job, outcome = await call(client, ["rate_limited:120", "ok"], max_retry_wait_s=60)
    assert isinstance(outcome, errors.RateLimited) and len(job.attempts) == 1


async def test_a_slow_http_endpoint_times_out_on_the_callers_timer(
    client: aioredis.Redis, server: FakeServer, session: aiohttp.ClientSession
) -> None:
    """The adapter arms no total timer of its own under call_endpoint: the call's timeout is
    the one `timeout_s` bound, raised as the call's Timeout and recorded on the attempt."""
    url = server.openai_url
    settings = EndpointConfig.model_validate(
        {"provider": "openai", "base_url": url, "timeout_s": 0.2}
    )
    provider = OpenAIProvider("oa", settings, endpoint_options("oa", settings), session)
    job = new_job("oa")
    server.faults.push("slow:3000")
    with pytest.raises(errors.Timeout, match=r"^no answer within 0\.2s$"):
        await call_with(client, provider, job, "m")
    assert tried(job) == ["timeout"]
    assert not CALLER_BOUNDS_TIME.get(), "the bound is the call's only"


def in_flight(endpoint: str) -> float:
    return metrics.labeled(metrics.IN_FLIGHT, endpoint)._value.get()  # type: ignore[attr-defined,no-any-return]


async def test_a_cancelled_call_is_no_longer_counted_in_flight(client: aioredis.Redis) -> None:
    # A call cancelled while it waits for its answer (a batch cancel, a shutdown)
    settings = EndpointConfig.model_validate({"provider": "mock", "latency_ms": 5_000})
    provider = MockProvider("slowm", settings, endpoint_options("slowm", settings))
    before = in_flight("slowm")
    task = asyncio.ensure_future(call_with(client, provider, new_job("slowm"), "mock-1"))
    for _ in range(1000):  # up to 10 s for the call to start
        if in_flight("slowm") != before:
            break
        await asyncio.sleep(0.01)
    assert in_flight("slowm") == before + 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # is counted down like one that ended.
    assert in_flight("slowm") == before


async def test_each_attempt_and_its_lease_are_what_validation_and_counting_give(
    client: aioredis.Redis,
) -> None:
    # Given a limiter that notes the tokens each admission asks for
    asked: list[int] = []

    class Noting(Limiter):
        async def acquire(self, model: str, tokens: int, lease_ttl_s: float) -> Lease:
            asked.append(tokens)
            return await super().acquire(model, tokens, lease_ttl_s)

    settings = EndpointConfig.model_validate({"provider": "mock", "script": {"r-1": ["ok"]}})
    provider = MockProvider("m", settings, endpoint_options("m", settings))
    job = new_job("m")
    health = EndpointHealth(client, "t", "m", settings.breaker)
    limiter = Noting(client, "t", "m", settings)
    policy = PolicyConfig()
    # When the caller has counted the request's tokens, and when it has not
    await call_endpoint(
        job,
        provider,
        "mock-1",
        job.request,
        health=health,
        limiter=limiter,
        policy=policy,
        tokens=7,
    )
    await call_endpoint(
        job, provider, "mock-1", job.request, health=health, limiter=limiter, policy=policy
    )
    # Then its count is used as given, else counted here
    assert asked == [7, request_tokens(job.request)]
    # and each attempt is the one validation builds, its latency and model set after the call
    for attempt in job.attempts:
        built = Attempt(endpoint="m", model="mock-1")
        built.latency_ms, built.model = attempt.latency_ms, attempt.model
        assert attempt == built and list(attempt.__dict__) == list(built.__dict__)
        assert (
            attempt.model_fields_set
            == built.model_fields_set
            == {
                "endpoint",
                "model",
                "latency_ms",
            }
        )
        assert attempt.model_dump_json() == built.model_dump_json()
