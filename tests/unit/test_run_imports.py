"""What `batchyard run` imports: only the modules a run uses (#22). Its start-up is on the
critical path of a small batch, so the other commands' modules stay out of it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT

#: Modules, with their submodules, a run does not use: the other commands, GMN, the gateway,
#: OpenTelemetry's SDK (imported where tracing is set up: `workers.tracing`), and dramatiq
#: (the workers are other processes; a resumed run imports it to requeue orphans).
NOT_FOR_RUN = (
    "producers.cli",
    "producers.gmn",
    "producers.gmn_cli",
    "producers.gateway",
    "producers.structured_report",
    "schemas.gmn",
    "opentelemetry.exporter",
    "opentelemetry.sdk",
    "dramatiq",
)


def _unused(setup: str, names: tuple[str, ...]) -> str:
    """The modules of `names` a fresh interpreter holds after running `setup`."""
    code = (
        f"import sys\n{setup}\n"
        f"names = {names!r}\n"
        "subs = tuple(n + '.' for n in names)\n"
        "print(sorted(m for m in sys.modules if m in names or m.startswith(subs)))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_the_run_command_imports_none_of_the_other_commands() -> None:
    setup = "import workers.lean_redis\nfrom producers.run_cli import run_app\nrun_app()"
    assert _unused(setup, NOT_FOR_RUN) == "[]"


def test_a_worker_that_does_not_trace_imports_no_tracing_sdk() -> None:
    assert _unused("import workers.process", ("opentelemetry.sdk", "psutil")) == "[]"


def test_a_worker_imports_batch_offload_only_for_an_endpoint_in_batch_mode() -> None:
    # The Executor imports it when its config has a `mode: batch` endpoint (test_offload).
    offload = ("workers.offload", "workers.offload_vendor", "providers.anthropic")
    assert _unused("import workers.process", offload) == "[]"


def test_a_run_with_a_prestarted_worker_leaves_the_adapters_imports_to_it(tmp_path: Path) -> None:
    # The config check needs every adapter of the config imported (aiohttp with them): the
    # prestarted worker, which imports them anyway, checks it for the run.
    config = tmp_path / "config.yaml"
    config.write_text(
        "endpoints:\n  fake:\n    provider: openai\n"
        "    base_url: http://127.0.0.1:9\n    api_key: sk-test\n"
    )
    setup = (
        "from workers import warm\nwarm.prestart()\nimport workers.lean_redis\n"
        "from pathlib import Path\nfrom producers.run_cli import run_app\nrun_app()\n"
        f"assert warm.check(Path({str(config)!r}))\nwarm.discard_all()"
    )
    assert _unused(setup, ("aiohttp", "providers.http", "providers.openai")) == "[]"


def test_the_default_endpoint_is_checked_without_gmn() -> None:
    # `batchyard run` without a config runs on the mock, which the prestarted worker checks on
    # the run's critical path: only the mock's GMN mode needs `schemas.gmn`.
    setup = "import workers.process\nassert workers.process.passes(None)"
    assert _unused(setup, ("schemas.gmn", "providers.mock_gmn")) == "[]"


def test_the_default_config_is_read_without_a_parser() -> None:
    # PyYAML and tomllib are imported by the first config file that needs one.
    setup = (
        "import workers.process\nassert workers.process.passes(None)\n"
        "from schemas.config import load_config\nload_config(None)"
    )
    assert _unused(setup, ("yaml", "tomllib")) == "[]"


def test_the_entry_point_starts_the_worker_before_the_heavier_imports() -> None:
    # `batchyard run` starts its first worker once `batchyard.launch` is imported: what that
    # imports delays the worker, whose start-up is the critical path of a small batch.
    heavy = ("orjson", "logging", "ctypes", "dataclasses")
    assert _unused("import batchyard.launch", heavy) == "[]"
