"""Memory and storage: 100k queued requests keep the producer flat; Redis cost per request and
per result is measured; results and streams expire per `result_ttl_s`.

The full 100k execution with worker RSS is `python bench/reliability.py` (too slow for CI).
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from producers.client import Client
from schemas.result import LLMResult
from tests.conftest import cli_env, openai_line, wait_until
from tests.reliability.conftest import Figures
from workers.protocol.keys import Keys
from workers.protocol.lanes import endpoint_queues
from workers.protocol.results import write_call
from workers.protocol.scripts import Lua, register

pytestmark = [pytest.mark.integration, pytest.mark.slow]

N = 100_000
ROOT = Path(__file__).resolve().parents[2]


def rss_mib() -> float:
    with open("/proc/self/status") as f:
        line = next(line for line in f if line.startswith("VmRSS:"))
    return int(line.split()[1]) / 1024


def used_memory(r: redis.Redis) -> int:
    return int(r.info("memory")["used_memory"])


def lines(n: int) -> Iterator[dict[str, object]]:
    return (openai_line(f"m-{i:06d}", f"question number {i}") for i in range(n))


#: Runs in a fresh interpreter: the test process carries whatever earlier tests left behind
#: (an in-memory span exporter keeps every span, for one), which is not the producer's cost.
PRODUCER = """
import sys
from producers.client import Client
from tests.reliability.test_memory import lines, rss_mib

with Client(sys.argv[1]) as client:
    client.submit_many(lines(1000))  # warm up imports and scripts
    before = rss_mib()
    report = client.submit_many(lines(int(sys.argv[2])))
    print(report.enqueued, rss_mib() - before)
"""


@pytest.mark.timeout(120)
def test_100k_queued_requests_keep_the_producer_flat_and_cost_redis_little(
    redis_url: str, figures: Figures
) -> None:
    r = redis.Redis.from_url(redis_url)
    before_mem = used_memory(r)
    # When 100,000 requests are submitted from a generator (no workers running),
    out = subprocess.run(
        [sys.executable, "-c", PRODUCER, redis_url, str(N)],
        env=cli_env(redis_url),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=110,
        check=True,
    ).stdout.split()
    enqueued, grown_mib = int(out[0]), float(out[1])
    per_queued = (used_memory(r) - before_mem) / (N + 1000)
    r.close()
    assert enqueued == N
    # then the producer streams them (its RSS does not grow with the batch)
    assert grown_mib < 60, f"producer RSS grew {grown_mib:.0f} MiB for {N} requests"
    # and each queued request costs Redis well under 2 KiB (message, id list, dedup set).
    assert per_queued < 2048, per_queued
    figures.set("producer_rss_mib", round(grown_mib, 1))
    figures.set("bytes_per_queued", round(per_queued))
    print(f"\nproducer RSS +{grown_mib:.1f} MiB; Redis {per_queued:.0f} B per queued request")


def test_stored_results_cost_and_expire_per_their_ttl(redis_url: str, figures: Figures) -> None:
    r = redis.Redis.from_url(redis_url)
    keys = Keys()
    write = register(r, Lua.WRITE_RESULTS)
    n = 2000
    with Client(redis_url) as client:
        batch_id = client.submit_many(lines(n)).batch_id
        ttl = client.settings.result_ttl_s
    # Results as a worker stores them (output of ~40 characters each).
    results = [
        LLMResult(custom_id=f"m-{i:06d}", batch_id=batch_id, status="succeeded", output="o" * 40)
        for i in range(n)
    ]
    r.delete(*[keys.queue_msgs(q) for q in endpoint_queues("mock")])
    r.delete(*[keys.queue(q) for q in endpoint_queues("mock")])
    before = used_memory(r)
    for start in range(0, n, 500):
        items = [(x.custom_id or "", x, False, b"") for x in results[start : start + 500]]
        write(**write_call(keys, ttl, items))
    per_result = (used_memory(r) - before) / n
    # Every key of the batch carries the result TTL: results, stream, done hash, record, ids.
    batch_keys = [k.decode() for k in r.scan_iter(f"{keys.batch(batch_id)}*")]
    assert len(batch_keys) == 4
    assert all(0 < r.ttl(k) <= ttl for k in batch_keys), {k: r.ttl(k) for k in batch_keys}
    # And they do expire: the same writes with a 2 s TTL are gone after it.
    short = f"{batch_id}-short"
    items = [
        (x.custom_id or "", x.model_copy(update={"batch_id": short}), False, b"")
        for x in results[:10]
    ]
    write(**write_call(keys, 2, items))
    assert r.exists(keys.stream(short), keys.done(short), keys.batch(short)) == 3
    wait_until(
        lambda: r.exists(keys.stream(short), keys.done(short), keys.batch(short)) == 0, 10, "expiry"
    )
    r.close()
    assert per_result < 2048, per_result
    figures.set("bytes_per_result", round(per_result))
    print(f"\nRedis {per_result:.0f} B per stored result; TTL {ttl}s on {sorted(batch_keys)}")
