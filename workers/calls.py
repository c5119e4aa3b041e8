"""One endpoint, one request: breaker, rate limit, provider call, retries in place, spans.

Retrying has three layers, each for what only it can do:
- here, tenacity retries a provider error *on the same endpoint*, in place, for waits short
  enough to hold the job (backoff with full jitter, or a Retry-After up to
  `policy.max_retry_wait_s`); whether a class is retried at all is the policy's call
  (`PolicyConfig.action`);
- `workers.execute` turns what cannot be served here into a `Move` that `workers.requeue`
  puts back on a queue: the next endpoint of the route (failover), or the same one later
  (a rate-limit wait past `max_inline_wait_s`, an open breaker), so a long wait holds no slot;
- dramatiq's `Retries` middleware (`workers.broker`) re-runs a job that raised something
  else: infrastructure failures such as Redis going away mid-write. Provider errors never
  reach it.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from opentelemetry.trace import SpanKind, StatusCode
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception

from providers.base import CALLER_BOUNDS_TIME, Provider, ProviderResponse
from providers.errors import ProviderError, RateLimited, Timeout
from schemas.config import PolicyConfig
from schemas.job import Job
from schemas.request import LLMRequest
from schemas.result import Attempt
from schemas.tokens import request_tokens
from schemas.trusted import assign, trusted
from workers import metrics
from workers.deadlines import deadline
from workers.health import Decision, EndpointHealth
from workers.outcomes import (
    NOTHING_OBSERVED,
    BatchCancelled,
    CircuitOpen,
    learned_limits,
    observed,
    record_success,
)
from workers.policy import BACKPRESSURE, ENDPOINT_FAULTS, NEUTRAL, backoff_s, charged, retry_fits
from workers.ratelimit import Limiter
from workers.tracing import genai_request, genai_response, operation_name, span

#: The fields of an attempt as it starts: `model_fields_set` as `Attempt(endpoint=, model=)`.
_STARTED = frozenset({"endpoint", "model"})


def _started(endpoint: str, model: str) -> Attempt:
    """An attempt as it starts: `Attempt(endpoint=endpoint, model=model)` of values validated
    already (the endpoint's name, a model name), built without validating them (~1 us, #22)."""
    fields = {"endpoint": endpoint, "model": model, "error": None, "latency_ms": 0.0}
    return trusted(Attempt, fields, set(_STARTED))


async def call_endpoint(
    job: Job,
    provider: Provider,
    model: str,
    req: LLMRequest,
    *,
    health: EndpointHealth,
    limiter: Limiter,
    policy: PolicyConfig,
    cancelled: Callable[[], bool] | None = None,
    tokens: int | None = None,
) -> ProviderResponse:
    """Call one endpoint, retrying in place per policy; every call is an Attempt.

    `cancelled` is asked right before each call, once the rate limiter has admitted it (a
    wait there can be long): True raises `BatchCancelled` and nothing is sent. `tokens` is
    `request_tokens(req)` when the caller has counted them already.
    """
    probe = False
    estimate = request_tokens(req) if tokens is None else tokens
    timeout_s = provider.settings.timeout_s
    lease_ttl_s = timeout_s + 5

    async def once() -> ProviderResponse:
        nonlocal probe
        if health.allows():  # most calls: no coroutine to ask
            probe = False
        else:
            admission = await health.admit()
            if admission.decision is Decision.deny:
                raise CircuitOpen(provider.endpoint, admission.retry_in_s)
            probe = admission.decision is Decision.probe
        lease = await limiter.acquire(model, estimate, lease_ttl_s)
        if cancelled is not None and cancelled():  # no call: its tokens go back
            await limiter.release(lease, 0, (0, 0), answered=False, refunded=True)
            raise BatchCancelled(job.batch_id)
        attempt = _started(provider.endpoint, model)
        job.attempts.append(attempt)
        t0 = time.perf_counter()
        in_flight = metrics.labeled(metrics.IN_FLIGHT, provider.endpoint)
        with span(
            f"{operation_name(req)} {model}",
            kind=SpanKind.CLIENT,
            attributes=lambda: genai_request(provider, model, req),
        ) as call_span:
            bounded = CALLER_BOUNDS_TIME.set(True)
            try:
                # The gauge is counted down however the call ends: a cancelled one (batch
                # cancel, shutdown) left it one higher for good. The endpoint's `timeout_s` is
                # bounded here (TimeoutError past it; the adapter, told so, arms no timer of
                # its own), on one loop timer for all calls of that length (`workers.deadlines`).
                with in_flight.track_inprogress(), deadline(timeout_s):
                    resp = await provider.generate(req, model)
            except TimeoutError:
                exc: ProviderError = Timeout(f"no answer within {timeout_s:g}s")
            except ProviderError as err:
                exc = err
            else:
                if call_span is not None:
                    genai_response(call_span, resp)
                latency_ms = (time.perf_counter() - t0) * 1000
                assign(attempt, latency_ms=latency_ms, model=resp.model)
                used = resp.usage.input_tokens + resp.usage.output_tokens
                seen = observed(resp.rate_limits)
                await limiter.release(lease, used or None, learned_limits(resp), seen)
                record_success(provider, resp, latency_ms)
                if probe:
                    await health.success(latency_ms, probe=True, tokens=used)
                else:
                    health.counted(latency_ms, used)
                return resp
            finally:
                CALLER_BOUNDS_TIME.reset(bounded)
            if call_span is not None:
                call_span.set_attribute("error.type", exc.code)
                call_span.set_status(StatusCode.ERROR, exc.code)
        attempt.latency_ms = (time.perf_counter() - t0) * 1000
        attempt.error = exc.code
        refused = exc.code in BACKPRESSURE
        limited = isinstance(exc, RateLimited)
        seen = observed(exc.limits) if isinstance(exc, RateLimited) else NOTHING_OBSERVED
        await limiter.release(lease, 0, (0, 0), seen, answered=not refused, refunded=limited)
        metrics.labeled(metrics.LATENCY, provider.endpoint).observe(attempt.latency_ms / 1000)
        if isinstance(exc, RateLimited):
            metrics.labeled(metrics.RATE_LIMITED, provider.endpoint).inc()
            await limiter.pause(exc.retry_after_s or 1.0)
        if exc.code in ENDPOINT_FAULTS:
            await health.failure(attempt.latency_ms)
        elif exc.code not in NEUTRAL:
            await health.success(attempt.latency_ms, probe=probe)  # it answered: it is up
        raise exc

    # Most calls succeed first time, and a call through tenacity costs tens of microseconds
    # of set-up: without this bare first call the worker ran ~20% fewer 0 ms mock jobs a
    # second (bench/throughput.py). Its failure is replayed as tenacity's first attempt, so
    # tenacity alone decides what follows.
    try:
        return await once()
    except ProviderError as exc:
        first_failure: ProviderError | None = exc

    def worth_retrying(exc: BaseException) -> bool:
        """The policy retries this class, the breaker let us call, and Retry-After is short.
        Backpressure (429, overload, timeout) is not retried here: it waits through a queue
        (`workers.execute`), so a paused endpoint holds no worker slot."""
        return (
            isinstance(exc, ProviderError)
            and exc.code not in BACKPRESSURE
            and not isinstance(exc, CircuitOpen)
            and not probe
            and retry_fits(policy, exc)
        )

    def give_up(state: RetryCallState) -> bool:
        """Retries on this endpoint, the request's attempts (across every endpoint) or its
        batch's window are used up."""
        return (
            state.attempt_number > policy.retries_per_endpoint
            or charged(job.attempts) >= policy.max_attempts
            or (job.deadline is not None and time.time() >= job.deadline)
        )

    def wait_s(state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome is not None else None
        return backoff_s(policy, state.attempt_number, exc)

    def count_retry(_: RetryCallState) -> None:
        metrics.labeled(metrics.RETRIES, provider.endpoint).inc()

    async def attempt() -> ProviderResponse:
        nonlocal first_failure
        if first_failure is not None:
            exc, first_failure = first_failure, None
            raise exc
        return await once()

    retrying = AsyncRetrying(
        retry=retry_if_exception(worth_retrying),
        stop=give_up,
        wait=wait_s,
        before_sleep=count_retry,
        reraise=True,
    )
    result: ProviderResponse = await retrying(attempt)
    return result
