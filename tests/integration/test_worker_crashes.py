"""A request that kills every worker process running it: the batch still ends."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.conftest import cli_env, openai_line, read_jsonl, write_jsonl

pytestmark = pytest.mark.integration

#: A third-party plugin whose hook ends its process (as the OOM killer or a crash in native
#: code would) when it sees one request: the request is redelivered, and ran again each time.
POISON = """\
import os, signal
from workers.plugins import Plugin


class Poison(Plugin):
    name = "poison"

    def __init__(self, config, redis, namespace):
        pass

    async def before_call(self, ctx):
        if ctx.request.custom_id == "r3":
            os.kill(os.getpid(), signal.SIGKILL)
        return None
"""


def _plugin_site(root: Path) -> Path:
    site = root / "site"
    meta = site / "poison_plugin-0.1.dist-info"
    meta.mkdir(parents=True)
    (meta / "METADATA").write_text("Metadata-Version: 2.1\nName: poison-plugin\nVersion: 0.1\n")
    (meta / "entry_points.txt").write_text("[batchyard.plugins]\npoison = poison_plugin:Poison\n")
    (site / "poison_plugin.py").write_text(POISON)
    return site


def test_a_request_that_kills_its_worker_fails_alone_and_the_batch_ends(tmp_path: Path) -> None:
    # Given ten requests, one of which kills the worker process that runs it,
    # (a heartbeat timeout of 5 minutes: a dead worker's messages must come back before it,
    # at the next maintenance, as its supervisor expires its heartbeat)
    env = cli_env(BATCHYARD_HEARTBEAT_TIMEOUT_MS="300000")
    env["PYTHONPATH"] += os.pathsep + str(_plugin_site(tmp_path))
    (tmp_path / "c.yaml").write_text(
        "endpoints:\n  m:\n    provider: mock\n    model: m\nplugins:\n  poison: {}\n"
    )
    write_jsonl(tmp_path / "in.jsonl", [openai_line(f"r{i}", "hi") for i in range(10)])
    args = ["-m", "batchyard", "run", "in.jsonl", "-o", "out.jsonl", "-c", "c.yaml"]
    args += ["--timeout", "90"]
    with subprocess.Popen(
        [sys.executable, *args],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        _, stderr = proc.communicate(timeout=150)
    # the run ends (it restarted workers for ever, and no request ever got a result),
    assert proc.returncode == 0, stderr
    assert "died with" in stderr and "request(s) running" in stderr
    # every other request succeeds (run alone after two deaths, they were not blamed),
    ok = sorted(str(row["custom_id"]) for row in read_jsonl(tmp_path / "out.jsonl"))
    assert ok == [f"r{i}" for i in range(10) if i != 3]
    # and the one that killed its worker three times fails, named, without a fourth run.
    errors = read_jsonl(tmp_path / "out.errors.jsonl")
    assert [row["custom_id"] for row in errors] == ["r3"]
    error = errors[0]["error"]
    assert isinstance(error, dict) and error["code"] == "worker_crashed"
    assert "died 3 times" in str(error["message"])
    # Its supervisor (the run) leaves no marks behind.
    assert not (
        Path(tempfile.gettempdir()) / f"batchyard-running-{os.getuid()}-{proc.pid}"
    ).exists()
