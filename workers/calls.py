"""One endpoint, one request: breaker, rate limit, provider call, retries in place, spans."""

from __future__ import annotations

import asyncio
import time

from opentelemetry.trace import SpanKind, StatusCode
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt

from providers.base import Provider, ProviderResponse
from providers.errors import ProviderError, RateLimited, Timeout
from providers.mock import estimate_tokens
from schemas.config import PolicyConfig
from schemas.job import Job
from schemas.request import LLMRequest
from schemas.result import Attempt
from workers import metrics
from workers.health import Decision, EndpointHealth
from workers.outcomes import CircuitOpen, learned_limits, record_success
from workers.policy import ENDPOINT_FAULTS, NEUTRAL, backoff_s, retry_fits
from workers.ratelimit import Limiter
from workers.tracing import genai_request, genai_response, span


async def call_endpoint(
    job: Job,
    provider: Provider,
    model: str,
    req: LLMRequest,
    *,
    health: EndpointHealth,
    limiter: Limiter,
    policy: PolicyConfig,
) -> ProviderResponse:
    """Call one endpoint, retrying in place per policy; every call is an Attempt."""
    probe = False
    estimate = sum(estimate_tokens(m.content) for m in req.messages) + (req.max_tokens or 512)
    lease_ttl_s = provider.settings.timeout_s + 5

    async def once() -> ProviderResponse:
        nonlocal probe
        admission = await health.admit()
        if admission.decision is Decision.deny:
            raise CircuitOpen(provider.endpoint, admission.retry_in_s)
        probe = admission.decision is Decision.probe
        lease = await limiter.acquire(model, estimate, lease_ttl_s)
        attempt = Attempt(endpoint=provider.endpoint, model=model)
        job.attempts.append(attempt)
        t0 = time.perf_counter()
        in_flight = metrics.labeled(metrics.IN_FLIGHT, provider.endpoint)
        in_flight.inc()
        with span(
            f"chat {model}",
            kind=SpanKind.CLIENT,
            attributes=lambda: genai_request(provider, model, req),
        ) as call_span:
            try:
                async with asyncio.timeout(provider.settings.timeout_s):
                    resp = await provider.generate(req, model)
            except TimeoutError:
                in_flight.dec()
                timeout_s = provider.settings.timeout_s
                exc: ProviderError = Timeout(f"no answer within {timeout_s:g}s")
            except ProviderError as err:
                in_flight.dec()
                exc = err
            else:
                in_flight.dec()
                if call_span is not None:
                    genai_response(call_span, resp)
                attempt.latency_ms = (time.perf_counter() - t0) * 1000
                attempt.model = resp.model
                used = resp.usage.input_tokens + resp.usage.output_tokens
                await limiter.release(lease, used or None, learned_limits(resp))
                record_success(provider, resp, attempt.latency_ms)
                await health.success(attempt.latency_ms, probe=probe, tokens=used)
                return resp
            if call_span is not None:
                call_span.set_attribute("error.type", exc.code)
                call_span.set_status(StatusCode.ERROR, exc.code)
        attempt.latency_ms = (time.perf_counter() - t0) * 1000
        attempt.error = exc.code
        await limiter.release(lease, 0, (0, 0))
        metrics.labeled(metrics.LATENCY, provider.endpoint).observe(attempt.latency_ms / 1000)
        if isinstance(exc, RateLimited):
            metrics.labeled(metrics.RATE_LIMITED, provider.endpoint).inc()
            await limiter.pause(exc.retry_after_s or 1.0)
        if exc.code in ENDPOINT_FAULTS:
            await health.failure(attempt.latency_ms)
        elif exc.code not in NEUTRAL:
            await health.success(attempt.latency_ms, probe=probe)  # it answered: it is up
        raise exc

    def should_retry(exc: BaseException) -> bool:
        retry = (
            isinstance(exc, ProviderError)
            and not isinstance(exc, CircuitOpen)
            and not probe
            and len(job.attempts) < policy.max_attempts
            and (job.deadline is None or time.time() < job.deadline)
            and retry_fits(policy, exc)
        )
        if retry:
            metrics.labeled(metrics.RETRIES, provider.endpoint).inc()
        return retry

    # Most calls succeed first time: only build tenacity's retrier once one did not.
    try:
        return await once()
    except ProviderError as exc:
        if policy.retries_per_endpoint == 0 or not should_retry(exc):
            raise
        await asyncio.sleep(backoff_s(policy, 1, exc))
    retrying = AsyncRetrying(
        stop=stop_after_attempt(policy.retries_per_endpoint),
        wait=lambda rs: backoff_s(
            policy, rs.attempt_number + 1, rs.outcome.exception() if rs.outcome else None
        ),
        retry=retry_if_exception(should_retry),
        reraise=True,
    )
    result: ProviderResponse = await retrying(once)
    return result
