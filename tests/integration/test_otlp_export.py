"""Spans leave every process: real `submit`, `worker`, `run` and `gateway` processes export
over OTLP/HTTP to a receiver started here, which decodes what arrives as a collector would.

One request is one trace: the producer's span (when it traced), a consumer span per hop and
a GenAI client span per provider call, all under the trace id its result carries. A worker
still traces jobs whose producer did not (a fresh sampling decision under the same id).
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import openai
import pytest
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from producers.client import Client
from schemas.config import load_config
from schemas.result import LLMResult
from tests.conftest import WorkerPool, batchyard, cli_env, openai_line, wait_until, write_jsonl
from tests.integration.test_gateway_support import KEY_A, GatewayProcess, gateway_proc, jsonl
from tests.otlp_receiver import Receiver

pytestmark = pytest.mark.integration
__all__ = ["gateway_proc"]  # fixture used by name

#: Only the exporter's flush on shutdown sends what is left of a batch below 512 spans: a
#: process that loses spans on SIGTERM or at exit fails these tests.
NO_TIMED_EXPORT = {"OTEL_BSP_SCHEDULE_DELAY": "600000"}


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    started = Receiver()
    try:
        yield started
    finally:
        started.stop()


def traced_env(redis_url: str | None, receiver: Receiver | None, **extra: str) -> dict[str, str]:
    """A CLI environment exporting to `receiver` (or not tracing at all, when None)."""
    env = {k: v for k, v in cli_env(redis_url).items() if not k.startswith("OTEL_")}
    if receiver is not None:
        env.update(OTEL_EXPORTER_OTLP_ENDPOINT=receiver.url, **NO_TIMED_EXPORT)
    env.update(extra)
    return env


def mock_config(write_config: Callable[[dict[str, object]], Path]) -> Path:
    return write_config(
        {
            "endpoints": {
                "mock": {"provider": "mock", "usage": {"input_tokens": 3, "output_tokens": 2}}
            }
        }
    )


def results_of(redis_url: str, config: Path, batch_id: str, total: int) -> list[LLMResult]:
    """Wait for the batch to finish; its results."""
    with Client(redis_url, config=load_config(config)) as client:
        wait_until(lambda: client.batch(batch_id).finished, 60, f"batch {batch_id} to finish")
        results = [result for _, _, result in client.iter_results(batch_id)]
    assert len(results) == total
    assert {r.status for r in results} == {"succeeded"}
    return results


def assert_one_trace_per_result(receiver: Receiver, results: list[LLMResult]) -> None:
    """Every result's trace has its GenAI client span and consumer span, and nothing the
    workers recorded for a request is in any other trace."""
    by_trace = {r.trace_id: r for r in results}
    assert len(by_trace) == len(results), "two results share a trace id"
    assert None not in by_trace
    calls = receiver.of_kind(Span.SPAN_KIND_CLIENT)
    consumers = receiver.of_kind(Span.SPAN_KIND_CONSUMER)
    call_traces = {s.trace_id for s in calls}
    assert call_traces == set(by_trace), "client spans outside the results' traces, or missing"
    for call in calls:
        assert call.service == "batchyard-worker"
        assert call.name == "chat m"
        assert call.attributes["gen_ai.operation.name"] == "chat"
        assert call.attributes["gen_ai.provider.name"] == "mock"
        assert call.attributes["gen_ai.request.model"] == "m"
        assert call.attributes["gen_ai.usage.input_tokens"] == 3
        assert call.attributes["gen_ai.usage.output_tokens"] == 2
    # one trace id per request: every consumer span of a custom_id is in its result's trace
    traces_of: dict[str, set[str]] = {}
    for span in consumers:
        traces_of.setdefault(span.attributes["batchyard.custom_id"], set()).add(span.trace_id)
    assert traces_of == {r.custom_id: {r.trace_id} for r in results}
    parents = {s.span_id: s for s in consumers}
    for call in calls:
        assert call.parent_id in parents, "a client span outside its job's consumer span"


def wait_for_spans(receiver: Receiver, kind: int, count: int) -> None:
    wait_until(
        lambda: len(receiver.of_kind(kind)) >= count,
        30,
        f"{count} spans of kind {kind} (have {len(receiver.of_kind(kind))})",
    )


@pytest.mark.timeout(180)
def test_submit_and_worker_processes_export_one_trace_per_request(
    tmp_path: Path,
    redis_url: str,
    receiver: Receiver,
    worker_pool: Callable[..., WorkerPool],
    write_config: Callable[[dict[str, object]], Path],
) -> None:
    n = 300
    config = mock_config(write_config)
    env = traced_env(redis_url, receiver, BATCHYARD_CONFIG=str(config))
    # Given a worker and a submit process, each told only where the collector is,
    pool = worker_pool(env, "--concurrency", "32")
    rows = [openai_line(f"r{i}", f"question {i}") for i in range(n)]
    batch_id = batchyard(
        "submit", str(write_jsonl(tmp_path / "in.jsonl", rows)), env=env, cwd=tmp_path
    )
    results = results_of(redis_url, config, batch_id.strip(), n)
    # when the worker is stopped (SIGTERM) once every request is done,
    assert pool.stop() == 0
    wait_for_spans(receiver, Span.SPAN_KIND_CLIENT, n)
    # then the collector holds one trace per request: the submit process's producer span,
    producers = receiver.of_kind(Span.SPAN_KIND_PRODUCER)
    assert {s.service for s in producers} == {"batchyard-submit"}
    assert sorted(s.trace_id for s in producers) == sorted(str(r.trace_id) for r in results)
    # the worker's consumer span under it, and the GenAI client span under that.
    produced = {s.span_id for s in producers}
    assert all(s.parent_id in produced for s in receiver.of_kind(Span.SPAN_KIND_CONSUMER))
    assert_one_trace_per_result(receiver, results)


@pytest.mark.timeout(120)
def test_a_worker_traces_jobs_whose_producer_did_not(
    tmp_path: Path,
    redis_url: str,
    receiver: Receiver,
    worker_pool: Callable[..., WorkerPool],
    write_config: Callable[[dict[str, object]], Path],
) -> None:
    n = 50
    config = mock_config(write_config)
    # Given a submit process without any OTEL variable (its traceparents say "not sampled"),
    quiet = traced_env(redis_url, None, BATCHYARD_CONFIG=str(config))
    rows = [openai_line(f"r{i}", f"question {i}") for i in range(n)]
    batch_id = batchyard(
        "submit", str(write_jsonl(tmp_path / "in.jsonl", rows)), env=quiet, cwd=tmp_path
    ).strip()
    # when a tracing worker runs its jobs,
    pool = worker_pool(traced_env(redis_url, receiver, BATCHYARD_CONFIG=str(config)))
    results = results_of(redis_url, config, batch_id, n)
    assert pool.stop() == 0
    wait_for_spans(receiver, Span.SPAN_KIND_CLIENT, n)
    # then it samples them afresh, under the trace ids the results carry.
    assert receiver.of_kind(Span.SPAN_KIND_PRODUCER) == []
    assert_one_trace_per_result(receiver, results)


@pytest.mark.timeout(120)
def test_a_ratio_sampling_worker_keeps_whole_traces_of_about_that_share(
    tmp_path: Path,
    redis_url: str,
    receiver: Receiver,
    worker_pool: Callable[..., WorkerPool],
    write_config: Callable[[dict[str, object]], Path],
) -> None:
    n = 100
    config = mock_config(write_config)
    quiet = traced_env(redis_url, None, BATCHYARD_CONFIG=str(config))
    rows = [openai_line(f"r{i}", f"question {i}") for i in range(n)]
    batch_id = batchyard(
        "submit", str(write_jsonl(tmp_path / "in.jsonl", rows)), env=quiet, cwd=tmp_path
    ).strip()
    # Given jobs from a producer that did not trace, and a worker sampling half of the traces,
    sampling = traced_env(
        redis_url,
        receiver,
        BATCHYARD_CONFIG=str(config),
        OTEL_TRACES_SAMPLER="parentbased_traceidratio",
        OTEL_TRACES_SAMPLER_ARG="0.5",
    )
    pool = worker_pool(sampling)
    results = results_of(redis_url, config, batch_id, n)
    assert pool.stop() == 0
    # then about half of the requests are traced (P(outside 20..80) < 1e-9), each completely:
    calls = {s.trace_id for s in receiver.of_kind(Span.SPAN_KIND_CLIENT)}
    consumers = {s.trace_id for s in receiver.of_kind(Span.SPAN_KIND_CONSUMER)}
    assert 20 <= len(calls) <= 80
    assert calls == consumers
    assert calls <= {str(r.trace_id) for r in results}


@pytest.mark.timeout(120)
def test_run_exports_from_the_command_and_its_workers(
    tmp_path: Path, receiver: Receiver, write_config: Callable[[dict[str, object]], Path]
) -> None:
    n = 60
    config = mock_config(write_config)
    rows = [openai_line(f"r{i}", f"question {i}") for i in range(n)]
    env = traced_env(
        None, receiver, BATCHYARD_CONFIG=str(config), OTEL_EXPORTER_OTLP_COMPRESSION="gzip"
    )
    # Given `run` (embedded Redis, its own worker processes) told where the collector is
    # (and, through the exporter's own variable, to gzip its exports),
    batchyard(
        "run",
        str(write_jsonl(tmp_path / "in.jsonl", rows)),
        "-o",
        str(tmp_path / "out.jsonl"),
        env=env,
        cwd=tmp_path,
    )
    # when it has returned, then every request is one trace: run's producer span, the
    # worker's consumer span and client span, with no span in a trace of its own.
    wait_for_spans(receiver, Span.SPAN_KIND_CLIENT, n)
    assert receiver.gzipped == receiver.requests
    producers = receiver.of_kind(Span.SPAN_KIND_PRODUCER)
    assert {s.service for s in producers} == {"batchyard-run"}
    assert len({s.trace_id for s in producers}) == n
    calls = receiver.of_kind(Span.SPAN_KIND_CLIENT)
    assert {s.trace_id for s in calls} == {s.trace_id for s in producers}
    assert {s.service for s in calls} == {"batchyard-worker"}
    per_request: dict[str, set[str]] = {}
    for span in receiver.of_kind(Span.SPAN_KIND_CONSUMER):
        per_request.setdefault(span.attributes["batchyard.custom_id"], set()).add(span.trace_id)
    assert sorted(per_request) == sorted(f"r{i}" for i in range(n))
    assert all(len(ids) == 1 for ids in per_request.values())
    assert {s.trace_id for s in receiver.received()} == {s.trace_id for s in producers}


@pytest.mark.timeout(120)
def test_gateway_and_worker_processes_export_one_trace_per_request(
    tmp_path: Path,
    redis_url: str,
    receiver: Receiver,
    worker_pool: Callable[..., WorkerPool],
    write_config: Callable[[dict[str, object]], Path],
    gateway_proc: Callable[..., GatewayProcess],
) -> None:
    n = 60
    config = mock_config(write_config)
    pool = worker_pool(traced_env(redis_url, receiver, BATCHYARD_CONFIG=str(config)))
    # Given the gateway told where the collector is,
    gateway = gateway_proc(
        redis_url,
        "--config",
        str(config),
        OTEL_EXPORTER_OTLP_ENDPOINT=receiver.url,
        **NO_TIMED_EXPORT,
    )
    sdk = openai.OpenAI(api_key=KEY_A, base_url=f"{gateway.url}/v1", max_retries=0, timeout=30)
    # when a batch goes through it,
    rows = [openai_line(f"r{i}", f"question {i}") for i in range(n)]
    uploaded = sdk.files.create(file=("in.jsonl", jsonl(rows)), purpose="batch")
    batch = sdk.batches.create(
        input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    deadline = time.monotonic() + 60
    while batch.status not in ("completed", "failed", "expired", "cancelled"):
        assert time.monotonic() < deadline, f"batch still {batch.status}"
        time.sleep(0.1)
        batch = sdk.batches.retrieve(batch.id)
    assert batch.status == "completed"
    results = results_of(redis_url, config, batch.id, n)
    # and both processes are stopped with SIGTERM,
    assert gateway.stop() == 0 and pool.stop() == 0
    # then the gateway's producer spans and the worker's spans are one trace per request.
    wait_for_spans(receiver, Span.SPAN_KIND_CLIENT, n)
    wait_for_spans(receiver, Span.SPAN_KIND_PRODUCER, n)
    producers = receiver.of_kind(Span.SPAN_KIND_PRODUCER)
    assert {s.service for s in producers} == {"batchyard-gateway"}
    assert sorted(s.trace_id for s in producers) == sorted(str(r.trace_id) for r in results)
    assert_one_trace_per_result(receiver, results)


def test_no_collector_configured_means_no_exporter_loaded(tmp_path: Path) -> None:
    """`run` and friends without OTEL variables import no exporter and install no provider."""
    code = (
        "import sys, producers.cli, workers.process, producers.gateway.app\n"
        "from workers.tracing import setup_tracing, trace_enabled\n"
        "assert setup_tracing('x') is False and not trace_enabled()\n"
        "assert not [m for m in sys.modules if m.startswith('opentelemetry.exporter')]\n"
    )
    env = {k: v for k, v in cli_env().items() if not k.startswith("OTEL_")}
    proc = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=tmp_path, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    # and OTEL_SDK_DISABLED, OTEL_TRACES_EXPORTER=none, or only exporters we do not have,
    # win over an endpoint (no spans recorded for nowhere).
    offs = (
        {"OTEL_SDK_DISABLED": "true"},
        *({"OTEL_TRACES_EXPORTER": e} for e in ("none", "zipkin")),
    )
    for off in offs:
        proc = subprocess.run(
            [sys.executable, "-c", code],
            env={**env, "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9", **off},
            cwd=tmp_path,
            capture_output=True,
            text=True,
        )
        assert proc.returncode == 0, f"{off}: {proc.stderr}"


@pytest.mark.parametrize(
    ("extra", "service"),
    [
        ({}, "batchyard-x"),
        ({"OTEL_SERVICE_NAME": "billing-batch"}, "billing-batch"),
        ({"OTEL_RESOURCE_ATTRIBUTES": "service.name=from-attrs,team=ml"}, "from-attrs"),
    ],
)
def test_the_service_name_is_ours_unless_the_environment_names_one(
    tmp_path: Path, extra: dict[str, str], service: str
) -> None:
    code = (
        "from opentelemetry import trace\n"
        "from workers.tracing import setup_tracing\n"
        "assert setup_tracing('batchyard-x')\n"
        "print(trace.get_tracer_provider().resource.attributes['service.name'])\n"
    )
    env = {k: v for k, v in cli_env().items() if not k.startswith("OTEL_")}
    env.update(OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:9", **extra)
    proc = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=tmp_path, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == service


@pytest.mark.timeout(120)
def test_a_large_submit_loses_no_producer_span(
    tmp_path: Path,
    redis_url: str,
    receiver: Receiver,
    write_config: Callable[[dict[str, object]], Path],
) -> None:
    """20,000 lines make producer spans far faster than one exporter thread ships them: the
    SDK's batch processor dropped about two thirds; a full queue now waits for the exporter."""
    n = 20_000
    config = mock_config(write_config)
    rows = [openai_line(f"r{i}", "q") for i in range(n)]
    env = traced_env(redis_url, receiver, BATCHYARD_CONFIG=str(config))
    batch_id = batchyard(
        "submit", str(write_jsonl(tmp_path / "in.jsonl", rows)), env=env, cwd=tmp_path
    ).strip()
    wait_for_spans(receiver, Span.SPAN_KIND_PRODUCER, n)
    producers = receiver.of_kind(Span.SPAN_KIND_PRODUCER)
    assert len({s.trace_id for s in producers}) == n
    assert {s.attributes["batchyard.batch_id"] for s in producers} == {batch_id}
