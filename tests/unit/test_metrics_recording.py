"""A worker records metrics only where they are served (#22): through a supervisor's
multiprocess directory. Elsewhere nobody can read them, and updating them cost every request."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator

import pytest

from providers.base import ProviderResponse
from providers.mock import MockProvider
from providers.registry import endpoint_options
from schemas.config import EndpointConfig
from schemas.result import Usage
from tests.unit.test_lean_redis import ROOT
from workers import metrics
from workers.outcomes import record_success


def recording_in_a_process(env: dict[str, str]) -> str:
    code = "import workers.metrics as m; print(m.RECORDING)"
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True
    )
    return done.stdout.strip()


def test_a_process_records_only_with_a_multiprocess_directory() -> None:
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    assert recording_in_a_process(env) == "False"
    with tempfile.TemporaryDirectory() as served:  # what a supervisor with --metrics-port sets
        assert recording_in_a_process({**env, "PROMETHEUS_MULTIPROC_DIR": served}) == "True"


@pytest.fixture
def restore() -> Iterator[None]:
    before = metrics.RECORDING
    yield
    metrics.record(before)


def tokens(endpoint: str) -> float:
    return metrics.TOKENS.labels(endpoint, "input")._value.get()  # type: ignore[attr-defined,no-any-return]


def answer_of(endpoint: str) -> tuple[MockProvider, ProviderResponse]:
    settings = EndpointConfig.model_validate(
        {"provider": "mock", "prices": {"*": {"input": 1.0, "output": 0.0}}}
    )
    provider = MockProvider(endpoint, settings, endpoint_options(endpoint, settings))
    return provider, ProviderResponse(model="m", usage=Usage(input_tokens=5, output_tokens=2))


def test_unserved_metrics_record_nothing_and_served_ones_count(restore: None) -> None:
    provider, resp = answer_of("rec")
    # Not served: every update is a no-op, in-flight blocks included
    metrics.record(False)
    record_success(provider, resp, 12.0)
    with metrics.labeled(metrics.IN_FLIGHT, "rec").track_inprogress():
        metrics.labeled(metrics.JOBS, "rec", "succeeded").inc()
        metrics.labeled(metrics.LATENCY, "rec").observe(0.1)
    assert tokens("rec") == 0
    assert metrics.JOBS.labels("rec", "succeeded")._value.get() == 0  # type: ignore[attr-defined]
    # Served: the same calls count
    metrics.record(True)
    record_success(provider, resp, 12.0)
    gauge = metrics.labeled(metrics.IN_FLIGHT, "rec")
    with gauge.track_inprogress():
        assert gauge._value.get() == 1
    assert gauge._value.get() == 0
    assert tokens("rec") == 5
    assert metrics.COST.labels("rec")._value.get() == pytest.approx(5e-6)  # type: ignore[attr-defined]


def test_a_worker_imports_prometheus_client_only_once_it_records() -> None:
    code = (
        "import sys, workers.process\n"
        "from workers import metrics\n"
        "print('prometheus_client' in sys.modules)\n"
        "metrics.labeled(metrics.JOBS, 'e', 'succeeded').inc()\n"
        "print('prometheus_client' in sys.modules)\n"
        "metrics.record(True)\n"
        "metrics.labeled(metrics.JOBS, 'e', 'succeeded').inc()\n"
        "from prometheus_client import REGISTRY\n"
        "labels = {'endpoint': 'e', 'status': 'succeeded'}\n"
        "print(REGISTRY.get_sample_value('batchyard_jobs_total', labels))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True
    )
    assert done.stdout.split() == ["False", "False", "1.0"]
