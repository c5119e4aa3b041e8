"""Worker processes under stop signals and a Redis that is not there yet."""

from __future__ import annotations

import signal
import socket
from collections.abc import Callable
from pathlib import Path

import pytest

from producers.client import Client
from tests.conftest import WorkerPool, cli_env, openai_line, wait_until
from workers.redis_server import RedisServer, free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_sigterm_drains_in_flight_calls_and_loses_nothing(
    redis_url: str,
    worker_pool: Callable[..., WorkerPool],
    write_config: Callable[..., Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    path = write_config({"endpoints": {"mock": {"provider": "mock", "latency_ms": 1500}}})
    monkeypatch.setenv("BATCHYARD_CONFIG", str(path))
    env = cli_env(redis_url, BATCHYARD_CONFIG=str(path))
    pool = worker_pool(env, "--concurrency", "5", "--grace", "10")
    with Client(redis_url) as client:
        batch_id = client.submit_many([openai_line(f"g-{i}", "x") for i in range(40)]).batch_id
        wait_until(lambda: client.batch(batch_id).counts.done >= 5, 30, "the first calls")
        # When the worker gets SIGTERM while calls are in flight,
        pool.proc.send_signal(signal.SIGTERM)
        pool.proc.wait(timeout=30)
        after_stop = client.batch(batch_id).counts.done
        # then it exits cleanly, with the calls it had started finished and acked (a child
        # killed at the end of its grace period would leave its messages unacked),
        assert pool.proc.returncode == 0
        assert unacked(client) == 0
        assert after_stop < 40, "it must not have drained the whole queue on the way out"
        # in-flight calls completed rather than being cut off:
        assert all(r.status == "succeeded" for _, _, r in client.iter_results(batch_id))
        # and nothing is lost: a new worker finishes the rest, every result exactly once.
        worker_pool(env, "--concurrency", "10")
        wait_until(lambda: client.batch(batch_id).finished, 60, "the rest of the batch")
        keys = [k for _, k, _ in client.iter_results(batch_id)]
    assert sorted(keys) == sorted(f"g-{i}" for i in range(40))


def unacked(client: Client) -> int:
    """Messages fetched by some worker and not acked."""
    pattern = f"{client.keys.dramatiq_ns}:__acks__.*"
    return sum(int(client.redis.scard(k)) for k in client.redis.scan_iter(pattern))


def test_a_worker_started_before_redis_waits_for_it(
    tmp_path: Path, worker_pool: Callable[..., WorkerPool]
) -> None:
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    # Given a worker whose Redis is not up yet (its port answers, then hangs up at once),
    with socket.create_server(("127.0.0.1", port)) as impostor:
        impostor.settimeout(30)
        pool = worker_pool(cli_env(url), "--concurrency", "4")
        for _ in range(3):  # more connections than children: one failed and tried again
            conn, _addr = impostor.accept()
            conn.close()
    assert pool.proc.poll() is None, "the supervisor keeps going while Redis is away"
    # when Redis comes up, the worker connects and serves a batch.
    with RedisServer(port=port) as server, Client(server.url) as client:
        batch_id = client.submit_many([openai_line(f"w-{i}", "x") for i in range(20)]).batch_id
        wait_until(lambda: client.batch(batch_id).finished, 60, "the batch")
        assert client.batch(batch_id).counts.completed == 20
