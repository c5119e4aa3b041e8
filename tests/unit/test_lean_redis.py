"""`workers.lean_redis`: batchyard's processes import redis-py without the OpenTelemetry
metrics SDK, and nothing else changes (#22). Each case runs in a fresh interpreter, since the
effect is on what a process has imported."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import ROOT


def _run(code: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_redis_imports_without_the_metrics_sdk_and_the_sdk_still_imports_after() -> None:
    code = (
        "import sys, workers.lean_redis\n"
        "import redis.observability.providers as p\n"
        "print('opentelemetry.sdk.metrics' in sys.modules, p.MeterProvider)\n"
        "from opentelemetry.sdk.metrics import MeterProvider\n"
        "print(MeterProvider.__name__)\n"
    )
    assert _run(code).splitlines() == ["False None", "MeterProvider"]


def test_redis_imports_without_the_metrics_api_and_the_api_still_imports_after() -> None:
    code = (
        "import sys, workers.lean_redis\n"
        "import redis.observability.metrics as m\n"
        "print('opentelemetry.metrics' in sys.modules, m.OTEL_AVAILABLE)\n"
        "from opentelemetry.metrics import Meter\n"
        "print(Meter.__name__)\n"
    )
    assert _run(code).splitlines() == ["False False", "Meter"]


def test_redis_reports_its_version_without_reading_package_metadata() -> None:
    # redis-py sends its version to the server (CLIENT SETINFO): the one `__version__` gives
    # is the one its package metadata records (this breaks loudly on an upgrade where they
    # differ), and a connection made after `lean_redis` reads no metadata for it.
    code = (
        "import importlib.metadata as md, workers.lean_redis, redis.utils\n"
        "from redis.driver_info import DriverInfo\n"
        "recorded = md.version('redis')\n"
        "def refuse(name): raise AssertionError(f'metadata read for {name}')\n"
        "md.version = refuse\n"
        "print(redis.utils.get_lib_version() == recorded, DriverInfo().lib_version == recorded)\n"
    )
    assert _run(code) == "True True"


def test_the_worker_process_imports_it_first() -> None:
    code = (
        "import sys, workers.process\n"
        "print('opentelemetry.sdk.metrics' in sys.modules,"
        " 'opentelemetry.metrics' in sys.modules)\n"
    )
    assert _run(code) == "False False"


def test_the_cli_imports_it_before_its_commands() -> None:
    code = (
        "import atexit, sys\n"
        "atexit.register(lambda: print('redis' in sys.modules,"
        " 'opentelemetry.sdk.metrics' in sys.modules))\n"
        "sys.argv = ['batchyard', 'status', '--help']\n"
        "from batchyard.launch import main\n"
        "main()\n"
    )
    assert _run(code).splitlines()[-1] == "True False"


def test_a_program_that_imported_the_sdk_or_redis_first_is_left_as_it_was() -> None:
    code = (
        "import sys, opentelemetry.sdk.metrics, workers.lean_redis\n"
        "import redis.observability.providers as p\n"
        "print(p.MeterProvider is opentelemetry.sdk.metrics.MeterProvider)\n"
    )
    assert _run(code) == "True"
