"""Shared fixtures: a private redis-server per test, config files, worker processes."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
import pytest
import redis
import yaml

from workers.lifetime import die_with_parent_preexec
from workers.redis_server import RedisServer

if TYPE_CHECKING:
    from producers.client import Client
    from producers.gmn import GMNOutcome

ROOT = Path(__file__).resolve().parents[1]


def fixture_redis(*, appendonly: bool = False) -> RedisServer:
    """A started redis-server on a free port that ends with this process however it ends: a
    pytest killed by SIGTERM or SIGKILL runs no teardown, and its Redis would outlive it."""
    return RedisServer(appendonly=appendonly, die_with_parent=True).start()


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """A fresh redis-server on a free port, killed after the test."""
    server = fixture_redis()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    return redis_server.url


@pytest.fixture
def write_config(tmp_path: Path) -> Callable[[dict[str, object]], Path]:
    """Write a batchyard.yaml into the test's directory and return its path."""

    def write(data: dict[str, object]) -> Path:
        path = tmp_path / "batchyard.yaml"
        path.write_text(yaml.safe_dump(data))
        return path

    return write


def openai_line(custom_id: str, text: str, **body: object) -> dict[str, object]:
    """One OpenAI batch input line."""
    return {
        "custom_id": custom_id,
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {"model": "m", "messages": [{"role": "user", "content": text}], **body},
    }


def write_jsonl(path: Path, rows: list[dict[str, object]] | list[bytes]) -> Path:
    with path.open("wb") as f:
        for row in rows:
            f.write((row if isinstance(row, bytes) else orjson.dumps(row)) + b"\n")
    return path


def read_jsonl(path: Path) -> list[dict[str, object]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]


def cli_env(redis_url: str | None = None, **extra: str) -> dict[str, str]:
    """Environment for CLI/worker subprocesses: this checkout first on the path, fast heartbeat."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BATCHYARD_", "REDIS_URL"))}
    env["PYTHONPATH"] = str(ROOT)
    env["BATCHYARD_HEARTBEAT_TIMEOUT_MS"] = "3000"
    env["BATCHYARD_MAINTENANCE_INTERVAL_S"] = "0.5"
    if redis_url:
        env["REDIS_URL"] = redis_url
    env.update(extra)
    return env


def batchyard(*args: str, env: dict[str, str], cwd: Path, timeout_s: float = 120) -> str:
    """Run the CLI to completion; fail the test with its stderr if it fails. Its stdout."""
    return batchyard_done(*args, env=env, cwd=cwd, timeout_s=timeout_s).stdout


def batchyard_done(
    *args: str, env: dict[str, str], cwd: Path, timeout_s: float = 120
) -> subprocess.CompletedProcess[str]:
    """`batchyard`, returning the finished process (its stdout and stderr)."""
    proc = subprocess.run(
        [sys.executable, "-m", "batchyard", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )
    assert proc.returncode == 0, f"batchyard {' '.join(args)} failed:\n{proc.stderr}"
    return proc


class WorkerPool:
    """`batchyard worker` as a real subprocess, stopped with SIGTERM at the end (or, when the
    test process is killed before its teardown, by the parent-death signal)."""

    def __init__(self, env: dict[str, str], cwd: Path, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "batchyard", "worker", *args],
            env=env,
            cwd=cwd,
            start_new_session=True,
            preexec_fn=die_with_parent_preexec(),
        )

    def children(self) -> list[int]:
        """PIDs of the supervised worker processes."""
        out = subprocess.run(
            ["pgrep", "-P", str(self.proc.pid)], capture_output=True, text=True, check=False
        ).stdout
        return [int(p) for p in out.split()]

    def stop(self, timeout_s: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        return self.proc.returncode


@pytest.fixture
def worker_pool(tmp_path: Path) -> Iterator[Callable[..., WorkerPool]]:
    pools: list[WorkerPool] = []

    def start(env: dict[str, str], *args: str) -> WorkerPool:
        pool = WorkerPool(env, tmp_path, *args)
        pools.append(pool)
        return pool

    yield start
    for pool in pools:
        pool.stop()


def wait_until(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    """Poll a condition with a deadline; fail with `what` when it never holds."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(0.05)


def wait_for_aof(url: str, timeout_s: float = 10) -> None:
    """Wait until Redis has written everything it answered to its AOF, with no fsync pending:
    a SIGKILL of redis-server cannot lose it then (`appendfsync everysec` may hold a write
    back while an fsync is slow)."""
    client = redis.Redis.from_url(url)
    try:

        def written() -> bool:
            info = client.info("persistence")
            return info["aof_buffer_length"] == 0 and info["aof_pending_bio_fsync"] == 0

        wait_until(written, timeout_s, "Redis to write its AOF")
    finally:
        client.close()


class ServerThread:
    """A FakeServer on its own event loop thread, so sync tests can read its request log."""

    def __init__(self, **kwargs: Any) -> None:
        from providers.fake_server import FakeServer

        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server = FakeServer(**kwargs)
        asyncio.run_coroutine_threadsafe(self.server.start(), self.loop).result(10)

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.server.stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture
def fake_server() -> Iterator[Callable[..., Any]]:
    """Start fault-injecting fake provider servers on 127.0.0.1; stopped after the test."""
    started: list[ServerThread] = []

    def start(**kwargs: Any) -> Any:
        thread = ServerThread(**kwargs)
        started.append(thread)
        return thread.server

    yield start
    for thread in started:
        thread.stop()


@pytest.fixture
def run_workers(
    redis_url: str,
    worker_pool: Callable[..., WorkerPool],
    write_config: Callable[[dict[str, object]], Path],
    monkeypatch: pytest.MonkeyPatch,
) -> Callable[..., WorkerPool]:
    """Start `batchyard worker` on a config; the test's own Client reads the same config
    (producers need its routes)."""

    def start(
        config: dict[str, Any], concurrency: int = 20, processes: int = 1, **env: str
    ) -> WorkerPool:
        path = write_config(config)
        monkeypatch.setenv("BATCHYARD_CONFIG", str(path))
        environ = cli_env(redis_url, BATCHYARD_CONFIG=str(path), **env)
        return worker_pool(environ, "-p", str(processes), "--concurrency", str(concurrency))

    return start


def gmn_outcomes(client: Client, rows: list[dict[str, Any]], **opts: Any) -> dict[str, GMNOutcome]:
    """Run a GMN batch of `rows` (3 rounds) to the end; its outcomes by custom_id."""
    batch_id = client.generate_gmn_batch(rows, rounds=3, **opts)
    deadline = time.monotonic() + 60
    found: dict[str, GMNOutcome] = {}
    for _done, _total, items in client.follow_gmn(batch_id):
        found.update((o.custom_id or "", o) for o in items)
        assert time.monotonic() < deadline, f"batch {batch_id} not finished in 60s"
    assert len(found) == len(rows)
    return found


def wakeups(thread: threading.Thread) -> int:
    """How many times `thread` has gone to sleep and woken so far (Linux's count of its
    voluntary context switches): a thread that polls adds one per poll."""
    status = Path(f"/proc/self/task/{thread.native_id}/status").read_text()
    return int(status.split("voluntary_ctxt_switches:")[1].split()[0])
