"""What `batchyard run` imports: only the modules a run uses (#22). Its start-up is on the
critical path of a small batch, so the other commands' modules stay out of it."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import ROOT

#: Modules, with their submodules, a run does not use: the other commands, GMN, the gateway,
#: OTLP exporters, redis-py's unused metrics SDK.
NOT_FOR_RUN = (
    "producers.cli",
    "producers.gmn",
    "producers.gmn_cli",
    "producers.gateway",
    "producers.structured_report",
    "schemas.gmn",
    "opentelemetry.exporter",
    "opentelemetry.sdk.metrics",
)


def test_the_run_command_imports_none_of_the_other_commands() -> None:
    code = (
        "import sys, workers.lean_redis\n"
        "from producers.run_cli import run_app\n"
        "run_app()\n"
        f"names = {NOT_FOR_RUN!r}\n"
        "subs = tuple(n + '.' for n in names)\n"
        "print(sorted(m for m in sys.modules if m in names or m.startswith(subs)))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
