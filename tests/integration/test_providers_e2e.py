"""Every adapter end to end, chosen only by config; start-up errors; secrets never leak."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml

from tests.conftest import ROOT, batchyard, cli_env, openai_line, read_jsonl, write_jsonl

pytestmark = pytest.mark.integration
KEY = "sk-test-SECRET-4242-do-not-print"


def configs(server: Any) -> dict[str, dict[str, Any]]:
    return {
        "mock": {"provider": "mock"},
        "openai": {
            "provider": "openai",
            "base_url": server.openai_url,
            "api_key": KEY,
            "model": "gpt-test",
        },
        "anthropic": {
            "provider": "anthropic",
            "base_url": server.url,
            "api_key": KEY,
            "model": "claude-test",
        },
        # Ollama itself has no auth; behind an authenticating proxy it takes a bearer key.
        "ollama": {
            "provider": "ollama",
            "base_url": server.url,
            "model": "llama-test",
            "api_key": KEY,
        },
    }


@pytest.mark.parametrize("name", ["mock", "openai", "anthropic", "ollama"])
def test_the_same_batch_runs_through_each_provider_chosen_by_config(
    name: str, tmp_path: Path, fake_server: Callable[..., Any]
) -> None:
    server = fake_server(api_key=KEY)
    (tmp_path / "batchyard.yaml").write_text(
        yaml.safe_dump({"endpoints": {name: configs(server)[name]}})
    )
    rows = [openai_line(f"p-{i}", f"question {i}", max_tokens=30) for i in range(20)]
    write_jsonl(tmp_path / "in.jsonl", rows)
    batchyard("run", "in.jsonl", "-o", "out.jsonl", env=cli_env(), cwd=tmp_path)
    out = read_jsonl(tmp_path / "out.jsonl")
    assert sorted(r["custom_id"] for r in out) == sorted(f"p-{i}" for i in range(20))
    for row in out:
        body = row["response"]["body"]
        assert body["choices"][0]["message"]["content"]
        assert body["usage"]["prompt_tokens"] > 0 and body["usage"]["completion_tokens"] > 0
    vendors = {c.vendor for c in server.requests}
    assert vendors == (set() if name == "mock" else {name})
    assert len(server.requests) == (0 if name == "mock" else 20)


@pytest.mark.parametrize(
    ("endpoint", "expected"),
    [
        (
            {"provider": "anthropic", "base_url": "http://127.0.0.1:9"},
            "endpoint 'ep', field 'api_key': required by provider 'anthropic'",
        ),
        ({"provider": "openai-ish"}, "unknown provider 'openai-ish' (known: anthropic, mock,"),
        ({"provider": "mock", "latency": 5}, "endpoint 'ep', field 'latency': unknown field"),
        (
            {"provider": "openai", "base_url": "ftp//nowhere", "api_key": "k"},
            "endpoint 'ep', field 'base_url'",
        ),
        ({"provider": "mock", "rpm": 0}, "endpoint 'ep', field 'rpm': Input should be greater"),
    ],
)
@pytest.mark.parametrize("command", ["run", "worker"])
def test_config_mistakes_are_one_line_at_start_up(
    endpoint: dict[str, Any], expected: str, command: str, tmp_path: Path
) -> None:
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump({"endpoints": {"ep": endpoint}}))
    args = ["run", str(ROOT / "examples" / "hello.jsonl")] if command == "run" else ["worker"]
    proc = subprocess.run(
        [sys.executable, "-m", "batchyard", *args, "--config", "bad.yaml"],
        env=cli_env("redis://127.0.0.1:9/0" if command == "worker" else None),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip() and "INFO" not in line]
    assert len(lines) == 1, proc.stderr
    assert expected in lines[0]
    assert "Traceback" not in proc.stderr


def test_api_keys_appear_in_no_log_result_error_file_or_redis_value(
    tmp_path: Path, fake_server: Callable[..., Any], redis_url: str
) -> None:
    # Given a key the server rejects for half the requests' endpoint and accepts for the other,
    good = fake_server(api_key=KEY)
    bad = fake_server(api_key="another-key")
    cfg = configs(good)
    rejected = {**cfg["openai"], "base_url": bad.openai_url}
    (tmp_path / "batchyard.yaml").write_text(
        yaml.safe_dump(
            {
                "endpoints": {"good": cfg["openai"], "rejected": rejected},
                "routes": {"default": ["good"], "bad": ["rejected"]},
            }
        )
    )
    write_jsonl(tmp_path / "a.jsonl", [openai_line(f"a-{i}", "x") for i in range(10)])
    env = cli_env(redis_url, BATCHYARD_LOG_LEVEL="DEBUG")
    outputs = []
    proc = subprocess.Popen(
        [sys.executable, "-m", "batchyard", "worker", "--concurrency", "4"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        ids = [batchyard("submit", "a.jsonl", env=env, cwd=tmp_path).strip()]
        ids.append(batchyard("submit", "a.jsonl", "--route", "bad", env=env, cwd=tmp_path).strip())
        for batch_id in ids:
            outputs.append(
                batchyard(
                    "collect",
                    batch_id,
                    "-o",
                    f"{batch_id}.jsonl",
                    "--follow",
                    env=env,
                    cwd=tmp_path,
                    timeout_s=60,
                )
            )
            outputs.append(batchyard("status", batch_id, env=env, cwd=tmp_path))
        outputs.append(batchyard("providers", env=env, cwd=tmp_path))
    finally:
        proc.terminate()
        outputs.append(proc.communicate(timeout=60)[0])
    # then the key is nowhere: CLI output, worker logs (debug), result and error files, Redis.
    files = [p.read_text() for p in tmp_path.glob("*.jsonl")]
    r = redis.Redis.from_url(redis_url)
    values = [r.dump(k) or b"" for k in r.scan_iter()]
    # (a provider's refusal is written as OpenAI writes it: its status and its error body)
    assert any('"status_code":401' in f for f in files), "the rejected batch must have failed"
    assert any('"status_code":200' in f for f in files), "the good batch must have succeeded"
    for text in [*outputs, *files]:
        assert KEY not in text
    assert all(KEY.encode() not in v for v in values)
