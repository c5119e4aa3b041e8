"""The sampler built from OTEL_TRACES_SAMPLER: SDK names and meanings, except that an unsampled
remote parent (a producer that did not trace) gets the root sampler's fresh decision."""

from __future__ import annotations

import logging

import pytest
from opentelemetry.context import Context
from opentelemetry.sdk.trace.sampling import Decision, Sampler
from opentelemetry.trace import (
    NonRecordingSpan,
    SpanContext,
    TraceFlags,
    set_span_in_context,
)

from workers.sampling import env_sampler
from workers.tracing import extract

TRACE_ID = 0x4BF92F3577B34DA6A3CE929D0E0E4736


def remote(sampled: bool, trace_id: int = TRACE_ID) -> Context:
    flags = TraceFlags(TraceFlags.SAMPLED if sampled else TraceFlags.DEFAULT)
    span = NonRecordingSpan(SpanContext(trace_id, 0x00F067AA0BA902B7, True, flags))
    return set_span_in_context(span)


def sampled(sampler: Sampler, context: Context | None, trace_id: int = TRACE_ID) -> bool:
    decision = sampler.should_sample(context, trace_id, "process llm.mock").decision
    return decision is Decision.RECORD_AND_SAMPLE


def sampler_for(
    monkeypatch: pytest.MonkeyPatch, name: str | None, arg: str | None = None
) -> Sampler:
    for var, value in (("OTEL_TRACES_SAMPLER", name), ("OTEL_TRACES_SAMPLER_ARG", arg)):
        if value is None:
            monkeypatch.delenv(var, raising=False)
        else:
            monkeypatch.setenv(var, value)
    sampler = env_sampler()
    assert sampler is not None
    return sampler


def test_default_samples_roots_follows_sampled_parents_and_resamples_unsampled_ones(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sampler = sampler_for(monkeypatch, None)
    assert sampled(sampler, None)
    assert sampled(sampler, remote(True))
    assert sampled(sampler, remote(False)), "a producer that did not trace must not hide jobs"


def test_the_traceparent_a_non_tracing_producer_writes_is_sampled_under_its_trace_id(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    unique = "0123456789abcdef0123456700000001"
    context = extract({"traceparent": f"00-{unique}-{unique[8:24]}-00"})
    sampler = sampler_for(monkeypatch, "parentbased_always_on")
    assert sampled(sampler, context, int(unique, 16))


def test_parentbased_always_off_still_follows_a_sampled_remote_parent(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sampler = sampler_for(monkeypatch, "parentbased_always_off")
    assert not sampled(sampler, None)
    assert not sampled(sampler, remote(False))
    assert sampled(sampler, remote(True))


def test_always_off_turns_tracing_off_and_always_on_ignores_parents(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "always_off")
    assert env_sampler() is None
    sampler = sampler_for(monkeypatch, "always_on")
    assert sampled(sampler, remote(False))


def test_ratio_decisions_are_per_trace_id_and_spread_over_one_chunk(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Ids of one submit chunk share 24 hex digits and differ in a counter: the decision
    must still come out near the ratio over them, and the same for a trace id every time."""
    sampler = sampler_for(monkeypatch, "parentbased_traceidratio", "0.25")
    prefix = "5f0c3a9e21d74b6a8c0e1f2a"
    ids = [int(f"{prefix}{n:08x}", 16) for n in range(2000)]
    kept = [sampled(sampler, remote(False, i), i) for i in ids]
    assert 400 <= sum(kept) <= 600
    assert kept == [sampled(sampler, remote(False, i), i) for i in ids]
    assert all(sampled(sampler, remote(True, i), i) for i in ids[:50]), "sampled parents kept"


def test_unknown_sampler_or_ratio_falls_back_like_the_sdk_with_a_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="batchyard.tracing"):
        assert sampled(sampler_for(monkeypatch, "jaeger_remote"), remote(False))
        assert sampled(sampler_for(monkeypatch, "traceidratio", "lots"), None)
    assert "unknown OTEL_TRACES_SAMPLER 'jaeger_remote'" in caplog.text
    assert "OTEL_TRACES_SAMPLER_ARG='lots'" in caplog.text
