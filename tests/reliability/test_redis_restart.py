"""Redis crashes and restarts mid-batch (AOF, everysec); Redis absent when a producer starts."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis

from producers.client import Client
from schemas.config import load_config
from tests.conftest import (
    WorkerPool,
    cli_env,
    openai_line,
    read_jsonl,
    wait_for_aof,
    write_jsonl,
)
from tests.reliability.conftest import Figures
from workers.protocol.keys import Keys
from workers.redis_server import RedisServer, free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]

N = 2000
#: Worker slots in the outage test (2 processes x 20): a call in flight at the crash is at most
#: one per slot, whenever the count is taken (the test's own count races calls starting with
#: messages fetched before the crash). Messages fetched but not started are not repeated: their
#: old worker id keeps beating after the restart (workers/dramatiq_ext/heartbeat.py); before
#: that, a 30 s outage repeated 53-61 calls.
SLOTS = 2 * 20


def poll(
    client: Client, batch_id: str, until: Callable[[int, bool], bool], timeout_s: float
) -> None:
    """Poll the batch through Redis outages (a ConnectionError is one failed poll, no more)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            batch = client.batch(batch_id)
            if until(batch.counts.done, batch.finished):
                return
        except redis.ConnectionError:
            pass
        time.sleep(0.1)
    pytest.fail(f"batch {batch_id} did not get there in {timeout_s}s: {where(client, batch_id)}")


def where(client: Client, batch_id: str) -> dict[str, object]:
    """Where the batch's messages are: counts, queue lengths, unacked sets, heartbeats."""
    r, keys = client.redis, client.keys
    state: dict[str, object] = {"batch": client.batch(batch_id).counts}
    for name in r.scan_iter(f"{keys.dramatiq_ns}:*"):
        kind = r.type(name).decode()
        size = {"list": r.llen, "set": r.scard, "zset": r.zcard, "hash": r.hlen}.get(kind)
        state[name.decode()] = size(name) if size else kind
    state["heartbeats"] = r.zrange(f"{keys.dramatiq_ns}:__heartbeats__", 0, -1, withscores=True)
    state["now_ms"] = time.time() * 1000
    return state


@pytest.mark.timeout(150)
def test_a_redis_crash_mid_batch_loses_no_request_and_duplicates_no_result(
    tmp_path: Path,
    aof_redis: RedisServer,
    worker_pool: Callable[..., WorkerPool],
    write_config: Callable[..., Path],
    figures: Figures,
) -> None:
    config = write_config({"endpoints": {"mock": {"provider": "mock", "latency_ms": 50}}})
    env = cli_env(aof_redis.url, BATCHYARD_CONFIG=str(config))
    write_jsonl(tmp_path / "in.jsonl", [openai_line(f"r-{i}", f"q{i}") for i in range(N)])
    with Client(aof_redis.url) as client:
        batch_id = client.submit_file(tmp_path / "in.jsonl").batch_id
        worker_pool(env, "-p", "2", "--concurrency", "30")
        # A collector follows the batch across the crash (a producer-side reader).
        collector = subprocess.Popen(
            [sys.executable, "-m", "batchyard", "collect", batch_id, "-o", "out.jsonl", "--follow"],
            env=env,
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        poll(client, batch_id, lambda done, _: done >= N // 3, 60)
        # When Redis is SIGKILLed mid-batch (up to a second of writes never reach the AOF)
        # and comes back on the same port with the same data directory,
        aof_redis.crash()
        time.sleep(1.0)  # Redis stays down a moment: workers and collector see the outage
        aof_redis.start()
        # then the workers reconnect and the batch completes,
        poll(client, batch_id, lambda _, finished: finished, 100)
        batch = client.batch(batch_id)
    r = redis.Redis.from_url(aof_redis.url)
    stream = r.xrange(Keys().stream(batch_id))
    r.close()
    # with every request's result stored exactly once.
    written = Counter(fields[b"k"].decode() for _, fields in stream)
    assert sum(n - 1 for n in written.values()) == 0
    assert sorted(written) == sorted(f"r-{i}" for i in range(N))
    assert batch.counts.completed == N and batch.counts.failed == 0
    # The collector that followed the batch across the crash reconnected by itself and
    # wrote each result once, with no second run.
    try:
        _, err = collector.communicate(timeout=60)
    finally:
        collector.kill()
    assert collector.returncode == 0, err
    assert "Traceback" not in err
    ids = [row["custom_id"] for row in read_jsonl(tmp_path / "out.jsonl")]
    assert sorted(ids) == sorted(f"r-{i}" for i in range(N))
    figures.add("redis_restarts", 1)


@pytest.mark.timeout(90)
def test_a_fetch_whose_ack_and_result_a_crash_lost_is_run_again(
    aof_redis: RedisServer,
    worker_pool: Callable[..., WorkerPool],
    write_config: Callable[..., Path],
) -> None:
    """The worst case of an AOF `everysec` crash: a worker's fetch reached the disk, but its
    result and ack did not. The message sits in a live worker's ack set; before the worker
    took a new id on a Redis restart, nothing ran it again until that worker restarted."""
    config = write_config({"endpoints": {"mock": {"provider": "mock"}}})
    env = cli_env(aof_redis.url, BATCHYARD_CONFIG=str(config))
    keys = Keys()
    r = redis.Redis.from_url(aof_redis.url)
    try:
        with Client(aof_redis.url) as client:
            batch_id = client.submit_many([openai_line("ghost", "boo")]).batch_id
        [queue] = [
            k.decode() for k in r.scan_iter(f"{keys.dramatiq_ns}:llm.*") if r.type(k) == b"list"
        ]
        message_id = r.lpop(queue)
        assert message_id is not None
        worker_pool(env, "-p", "1", "--concurrency", "4")
        deadline = time.monotonic() + 30
        while not (beats := r.zrange(f"{keys.dramatiq_ns}:__heartbeats__", 0, -1)):
            assert time.monotonic() < deadline, "the worker never beat"
            time.sleep(0.1)
        [worker_id] = [b.decode() for b in beats]
        # The state the crash leaves: fetched into the live worker's ack set, no result.
        name = queue.removeprefix(f"{keys.dramatiq_ns}:")
        r.sadd(f"{keys.dramatiq_ns}:__acks__.{worker_id}.{name}", message_id)
        wait_for_aof(aof_redis.url)
        aof_redis.crash()
        aof_redis.start()
        with Client(aof_redis.url) as client:
            poll(client, batch_id, lambda _, finished: finished, 40)
            assert client.batch(batch_id).counts.completed == 1
    finally:
        r.close()


def test_a_producer_without_redis_says_so_in_one_line(tmp_path: Path) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    write_jsonl(tmp_path / "in.jsonl", [openai_line("a", "x")])
    proc = subprocess.run(
        [sys.executable, "-m", "batchyard", "submit", "in.jsonl"],
        env=cli_env(url),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "cannot reach Redis" in proc.stderr and "REDIS_URL" in proc.stderr


@pytest.mark.timeout(240)
@pytest.mark.parametrize("down_s", [3, 30])
def test_a_long_redis_outage_pays_no_finished_request_twice_and_logs_it_once(
    tmp_path: Path,
    aof_redis: RedisServer,
    write_config: Callable[..., Path],
    fake_server: Callable[..., Any],
    figures: Figures,
    down_s: int,
) -> None:
    """Issue #18: after a ~30 s outage, messages whose results were stored ran again (acks
    went to the wrong worker id's set), and the logs filled with a traceback per message."""
    n = 1000
    server = fake_server(latency_ms=150)
    endpoint = {
        "provider": "openai",
        "base_url": server.openai_url,
        "api_key": "sk-test",
        "model": "gpt-test",
    }
    config = write_config({"endpoints": {"fake": endpoint}})
    env = cli_env(aof_redis.url, BATCHYARD_CONFIG=str(config))
    log_path = tmp_path / "worker.log"
    with log_path.open("wb") as log_file:
        pool = subprocess.Popen(
            [sys.executable, "-m", "batchyard", "worker", "-p", "2", "--concurrency", "20"],
            env=env,
            cwd=tmp_path,
            stderr=log_file,
            start_new_session=True,
        )
    try:
        with Client(aof_redis.url, config=load_config(config)) as client:
            batch_id = client.submit_many([openai_line(f"o-{i}", f"q{i}") for i in range(n)])
            bid = batch_id.batch_id
            poll(client, bid, lambda done, _: done >= n // 3, 60)
            # When Redis is SIGKILLed mid-batch and stays down for `down_s`,
            aof_redis.crash()
            in_flight = server.requests_arrived - server.requests_seen
            deadline = time.monotonic() + down_s
            while time.monotonic() < deadline:  # the outage itself is what is under test
                time.sleep(0.2)
            aof_redis.start()
            # then the batch completes,
            poll(client, bid, lambda _, finished: finished, 150)
            batch = client.batch(bid)
            keys = client.keys
            r = client.redis
            stream = r.xrange(keys.stream(bid))
            # with every result exactly once,
            written = Counter(fields[b"k"].decode() for _, fields in stream)
            assert sorted(written) == sorted(f"o-{i}" for i in range(n))
            assert max(written.values()) == 1
            assert batch.counts.completed == n

            # and nothing left unacked (no old worker id's set to redeliver later).
            def unacked() -> int:
                names = r.scan_iter(f"{keys.dramatiq_ns}:__acks__.*")
                return sum(int(r.scard(k)) for k in names)

            poll(client, bid, lambda *_: unacked() == 0, 10)
    finally:
        pool.send_signal(signal.SIGTERM)
        try:
            pool.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(pool.pid, signal.SIGKILL)
            pool.wait()
    # The provider was called at most once more per request in flight at the crash
    # (their results could not be stored), never for a request whose result was.
    extra = server.requests_arrived - n
    figures.add("repeated_calls", max(extra, 0))
    print(f"outage {down_s}s: {extra} repeated calls, {in_flight} in flight at the crash")
    assert extra <= SLOTS, f"{extra} repeated, {in_flight} in flight, {SLOTS} slots"
    # One warning when Redis went and one when it came back, per worker process.
    text = log_path.read_text()
    assert "Task exception was never retrieved" not in text
    assert "failed to process message" not in text
    assert text.count("Redis unreachable") <= 2, text[-3000:]
    assert text.count("Redis is back") <= 2, text[-3000:]
    figures.add("redis_restarts", 1)
