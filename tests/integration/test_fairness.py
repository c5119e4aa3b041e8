"""Batches sharing an endpoint: a small batch is not starved behind a huge one, and batch
priority decides who goes first. Real worker process, real Redis, mock provider.

One process with 2 threads and 20 ms per call runs ~100 jobs/s, so the order in which
messages are taken shows in the batches' counts, polled every few milliseconds.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import pytest
import redis

from producers.client import Client
from producers.progress import describe
from tests.conftest import WorkerPool, openai_line, wait_until
from workers.protocol.lanes import Priority, queue_name

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CONFIG = {"endpoints": {"mock": {"provider": "mock", "latency_ms": 20}}}


def rows(prefix: str, n: int) -> list[dict[str, object]]:
    return [openai_line(f"{prefix}-{i}", "hi") for i in range(n)]


@dataclass
class Race:
    """Counts of two batches at the moments the second one starts and finishes."""

    first_at_start: int
    first_at_finish: int
    first_total: int

    @property
    def first_during(self) -> int:
        """Jobs of the first batch done while the second one ran."""
        return self.first_at_finish - self.first_at_start


def race(
    client: Client, first: str, second: str, timeout_s: float = 60, poll_s: float = 0.005
) -> Race:
    """Poll both batches until the second finishes; where was the first meanwhile?"""
    started_at = None
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        a, b = client.batch(first).counts, client.batch(second).counts
        if started_at is None and b.done > 0:
            started_at = a.done
        if b.total and b.done == b.total:
            return Race(started_at or 0, a.done, a.total)
        time.sleep(poll_s)
    pytest.fail(f"batch {second} did not finish in {timeout_s}s")


def submit(client: Client, prefix: str, n: int, priority: Priority = "normal") -> str:
    return client.submit_many(rows(prefix, n), priority=priority).batch_id


def started(client: Client, batch_id: str) -> None:
    wait_until(lambda: client.batch(batch_id).counts.done > 0, 30, f"{batch_id} to start")


def test_a_small_batch_overtakes_a_huge_one_on_the_same_endpoint(
    redis_url: str, run_workers: Callable[..., WorkerPool]
) -> None:
    # Given a worker busy with a batch of 800 requests,
    run_workers(CONFIG, concurrency=2)
    with Client(redis_url) as client:
        huge = submit(client, "huge", 800)
        started(client, huge)
        # when a batch of 30 arrives behind it,
        small = submit(client, "small", 30)
        got = race(client, huge, small)
        # then the two share the worker (one each, in turn) and the small one finishes long
        # before the huge one: a single FIFO queue would have run all 800 first.
        assert client.batch(small).counts.completed == 30
        assert got.first_during <= 30 * 2 + 10, got
        assert got.first_at_finish < got.first_total / 2, got
        assert client.redis.hget(client.keys.batch(huge), "lane") != client.redis.hget(
            client.keys.batch(small), "lane"
        )


def test_a_high_priority_batch_goes_before_normal_work(
    redis_url: str, run_workers: Callable[..., WorkerPool]
) -> None:
    run_workers(CONFIG, concurrency=2)
    with Client(redis_url) as client:
        normal = submit(client, "normal", 800)
        started(client, normal)
        urgent = submit(client, "urgent", 100, "high")
        got = race(client, normal, urgent)
        # Once the worker sees the urgent batch, few normal messages still run: those already
        # started, and a few while the urgent lane's consumer refetches. Without priority the
        # two would alternate, and about 100 normal ones would run meanwhile.
        assert got.first_during <= 25, got
        assert client.batch(urgent).priority == "high"
        assert "priority high" in describe(client.batch(urgent))
        assert client.batch(urgent).counts.completed == 100


def test_a_low_priority_batch_waits_while_normal_work_runs(
    redis_url: str, run_workers: Callable[..., WorkerPool]
) -> None:
    run_workers(CONFIG, concurrency=2)
    with Client(redis_url) as client:
        background = submit(client, "background", 400, "low")
        started(client, background)
        normal = submit(client, "normal", 100)
        got = race(client, background, normal)
        assert got.first_during <= 25, got
        assert got.first_at_finish < got.first_total
        # and the low batch still completes once the normal one is done.
        wait_until(lambda: client.batch(background).finished, 60, "the low-priority batch")
        assert client.batch(background).counts.completed == 400


def test_each_submit_wakes_the_idle_workers_of_the_queue_it_filled(
    redis_url: str, run_workers: Callable[..., WorkerPool]
) -> None:
    # Given a worker whose idle consumers poll only once a minute, listening for wake-ups,
    run_workers({"endpoints": {"mock": {"provider": "mock"}}}, BATCHYARD_IDLE_POLL_MS="60000")
    with Client(redis_url) as client:
        channel = client.keys.wake
        wait_until(lambda: subscribers(client, channel) >= 1, 30, "the worker to subscribe")
        listener = client.redis.pubsub(ignore_subscribe_messages=True)
        listener.subscribe(channel)
        try:
            for i in range(4):
                # when single requests arrive one by one,
                batch_id = submit(client, f"one{i}", 1)
                # then each submit names the queue it filled on the channel the worker hears
                # (how soon the worker then starts it: bench/fairness.py),
                lane = client.redis.hget(client.keys.batch(batch_id), "lane") or b""
                assert next_notice(listener) == queue_name("mock", lane.decode()).encode()
                wait_until(lambda b=batch_id: client.batch(b).finished, 30, "a single request")
                assert client.batch(batch_id).counts.completed == 1
        finally:
            listener.close()


def subscribers(client: Client, channel: str) -> int:
    """How many connections listen on `channel` (PUBSUB NUMSUB)."""
    return int(client.redis.pubsub_numsub(channel)[0][1])


def next_notice(listener: redis.client.PubSub, timeout_s: float = 10) -> bytes:
    """The next message published on the listener's channel."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        message = listener.get_message(timeout=0.5)
        if message is not None:
            return bytes(message["data"])
    pytest.fail(f"nothing published within {timeout_s}s")
