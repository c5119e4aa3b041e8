"""A real batch end to end: real redis-server, real worker processes, the real CLI."""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest

from producers.client import Client
from producers.collect import collect
from schemas.result import LLMResult
from tests.conftest import (
    ROOT,
    WorkerPool,
    batchyard,
    batchyard_done,
    cli_env,
    openai_line,
    read_jsonl,
    wait_until,
    write_jsonl,
)
from workers.protocol.results import write_call
from workers.protocol.scripts import Lua, register

pytestmark = pytest.mark.integration


def test_readme_example_runs_with_embedded_redis(tmp_path: Path) -> None:
    # Given no REDIS_URL and no config file, when the README's command runs the example,
    stdout = batchyard(
        "run",
        str(ROOT / "examples" / "hello.jsonl"),
        "-o",
        "out.jsonl",
        env=cli_env(),
        cwd=tmp_path,
    )
    # then every request succeeded and the output is in the OpenAI batch output format.
    inputs = read_jsonl(ROOT / "examples" / "hello.jsonl")
    rows = read_jsonl(tmp_path / "out.jsonl")
    assert sorted(r["custom_id"] for r in rows) == sorted(r["custom_id"] for r in inputs)
    for row in rows:
        assert row["error"] is None
        assert row["response"]["status_code"] == 200
        assert row["response"]["body"]["choices"][0]["message"]["content"]
    assert read_jsonl(tmp_path / "out.errors.jsonl") == []
    assert f"{len(inputs)} succeeded, 0 failed" in stdout
    # A finished run leaves its output and error files, and nothing of its own state.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.errors.jsonl", "out.jsonl"]


def test_a_finished_run_ends_its_workers_without_a_drain_unless_it_keeps_its_state(
    tmp_path: Path,
) -> None:
    # Workers log their start and their drain at INFO.
    env = cli_env(BATCHYARD_LOG_LEVEL="INFO")
    hello = str(ROOT / "examples" / "hello.jsonl")
    inputs = read_jsonl(ROOT / "examples" / "hello.jsonl")

    def run(*extra: str) -> str:
        proc = batchyard_done("run", hello, "-o", "out.jsonl", *extra, env=env, cwd=tmp_path)
        assert len(read_jsonl(tmp_path / "out.jsonl")) == len(inputs)
        assert "worker ready" in proc.stderr
        return proc.stderr

    # A finished run throws its embedded Redis away: its workers end at once, undrained.
    assert "draining" not in run()
    # One that keeps that Redis (its state) lets them drain into it, as before.
    assert "draining" in run("--keep-state")


@pytest.mark.slow
def test_ten_thousand_lines_give_ten_thousand_results(
    tmp_path: Path, write_config: Callable[[dict[str, object]], Path]
) -> None:
    config = write_config({"endpoints": {"mock": {"provider": "mock", "latency_ms": 20}}})
    write_jsonl(tmp_path / "big.jsonl", [openai_line(f"r-{i}", f"p{i}") for i in range(10_000)])
    batchyard(
        "run",
        "big.jsonl",
        "-o",
        "out.jsonl",
        "--config",
        str(config),
        "--processes",
        "2",
        "--concurrency",
        "200",
        env=cli_env(),
        cwd=tmp_path,
    )
    ids = [r["custom_id"] for r in read_jsonl(tmp_path / "out.jsonl")]
    assert len(ids) == 10_000
    assert len(set(ids)) == 10_000
    assert read_jsonl(tmp_path / "out.errors.jsonl") == []


def test_malformed_lines_are_reported_and_good_lines_succeed(tmp_path: Path) -> None:
    good = [orjson.dumps(openai_line(f"ok-{i}", "hello")) for i in range(5)]
    rows: list[bytes] = [
        good[0],
        b'{"custom_id": "broken", "body": ',  # line 2: bad JSON
        orjson.dumps({"method": "POST", "url": "/v1/chat/completions", "body": {}}),  # 3
        good[1],
        orjson.dumps(openai_line("ok-0", "again")),  # line 5: duplicate custom_id
        orjson.dumps({**openai_line("wrong-url", "x"), "url": "/v1/images/generations"}),  # 6
        orjson.dumps({**openai_line("not-object", "x"), "body": "hello"}),  # 7
        *good[2:],
    ]
    write_jsonl(tmp_path / "mixed.jsonl", rows)
    batchyard("run", "mixed.jsonl", "-o", "out.jsonl", env=cli_env(), cwd=tmp_path)
    ok = read_jsonl(tmp_path / "out.jsonl")
    assert sorted(r["custom_id"] for r in ok) == [f"ok-{i}" for i in range(5)]
    errors = {e["error"]["line"]: e for e in read_jsonl(tmp_path / "out.errors.jsonl")}
    assert sorted(errors) == [2, 3, 5, 6, 7]
    assert "not valid JSON" in errors[2]["error"]["message"]
    assert errors[3]["error"]["message"] == "line 3: custom_id: field required"
    assert "duplicate custom_id 'ok-0'" in errors[5]["error"]["message"]
    assert errors[5]["custom_id"] == "ok-0"
    assert "line 6: url: must be one of /v1/chat/completions" in errors[6]["error"]["message"]
    assert errors[7]["error"]["message"] == "line 7: body: must be a JSON object"
    assert all(e["error"]["code"] == "invalid_line" for e in errors.values())


def test_submit_worker_collect_as_separate_processes(
    tmp_path: Path, redis_url: str, worker_pool: Callable[..., WorkerPool]
) -> None:
    env = cli_env(redis_url)
    write_jsonl(tmp_path / "in.jsonl", [openai_line(f"s-{i}", f"q{i}") for i in range(300)])
    batch_id = batchyard("submit", "in.jsonl", env=env, cwd=tmp_path).strip()
    assert batch_id.startswith("batch_")
    worker_pool(env, "--processes", "2", "--concurrency", "20")
    with Client(redis_url) as client:
        wait_until(lambda: client.batch(batch_id).finished, 60, "the batch to finish")
    assert "succeeded 300" in batchyard("status", batch_id, env=env, cwd=tmp_path)
    batchyard("collect", batch_id, "-o", "out.jsonl", env=env, cwd=tmp_path)
    first = (tmp_path / "out.jsonl").read_bytes()
    # A second collect finds nothing new: each result is written exactly once.
    assert "wrote 0 results" in batchyard(
        "collect", batch_id, "-o", "out.jsonl", env=env, cwd=tmp_path
    )
    assert (tmp_path / "out.jsonl").read_bytes() == first
    ids = [r["custom_id"] for r in read_jsonl(tmp_path / "out.jsonl")]
    assert sorted(ids) == sorted(f"s-{i}" for i in range(300))


def test_collect_resumes_after_a_crash_mid_write(tmp_path: Path, redis_url: str) -> None:
    with Client(redis_url) as client:
        report = client.submit_many([openai_line(f"c-{i}", "x") for i in range(10)])
        write = register(client.redis, Lua.WRITE_RESULTS)
        for i in range(10):
            result = LLMResult(
                custom_id=f"c-{i}", batch_id=report.batch_id, status="succeeded", output=str(i)
            )
            write(**write_call(client.keys, 60, [(f"c-{i}", result, False, b"")]))
        out = tmp_path / "out.jsonl"
        collect(client, report.batch_id, out)
        # Simulate a crash after a half-written line that the cursor never recorded.
        with out.open("ab") as f:
            f.write(b'{"half": ')
        collect(client, report.batch_id, out)
    ids = Counter(r["custom_id"] for r in read_jsonl(out))
    assert ids == Counter(f"c-{i}" for i in range(10))


@pytest.mark.slow
def test_killed_worker_child_is_restarted_and_nothing_is_lost(
    tmp_path: Path,
    redis_url: str,
    worker_pool: Callable[..., WorkerPool],
    write_config: Callable[[dict[str, object]], Path],
) -> None:
    config = write_config({"endpoints": {"mock": {"provider": "mock", "latency_ms": 50}}})
    env = cli_env(redis_url, BATCHYARD_CONFIG=str(config))
    n = 3000
    with Client(redis_url) as client:
        batch_id = client.submit_many([openai_line(f"k-{i}", "x") for i in range(n)]).batch_id
        pool = worker_pool(env, "--processes", "2", "--concurrency", "50")
        wait_until(lambda: len(pool.children()) == 2, 30, "two worker children")
        wait_until(lambda: client.batch(batch_id).counts.done > 300, 60, "progress")
        # When one child is SIGKILLed mid-batch,
        victim = pool.children()[0]
        os.kill(victim, signal.SIGKILL)
        # then the supervisor starts a replacement,
        wait_until(
            lambda: len(pool.children()) == 2 and victim not in pool.children(),
            30,
            "the killed child to be replaced",
        )
        # and the batch completes with every result exactly once.
        wait_until(lambda: client.batch(batch_id).finished, 90, "the batch to finish")
        batch = client.batch(batch_id)
        keys = [k for _, k, _ in client.iter_results(batch_id)]
    assert batch.counts.completed == n and batch.counts.failed == 0
    assert len(keys) == n and len(set(keys)) == n


def test_the_batch_index_forgets_batches_older_than_the_result_ttl(redis_url: str) -> None:
    with Client(redis_url) as client:
        ttl = client.settings.result_ttl_s
        client.redis.zadd(client.keys.batches, {"batch_ancient": time.time() - ttl - 60})
        report = client.submit_many([openai_line("t-1", "x")])
        members = {m.decode() for m in client.redis.zrange(client.keys.batches, 0, -1)}
    assert members == {report.batch_id}
