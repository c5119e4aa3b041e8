"""Issue #5 fairness: how long a small batch waits when it arrives behind a huge one.

One worker process (concurrency 32, mock latency 20 ms, ~1,500 jobs/s at best) runs a
big batch; once it is under way, a small batch is submitted at normal, then high priority.
Printed per case: the small batch's time from submit to last result, the same batch's time
on an idle worker (the floor), and how many big-batch jobs ran meanwhile. A single FIFO queue
would make the small batch wait for the whole big one (big / rate seconds).

Then single requests, 1.5 s apart, on an idle worker whose consumers poll only every 5 s:
the time from submit to result shows the producer's wake-up (polling alone would often
leave them waiting for seconds).

Run: python bench/fairness.py [--big 20000] [--small 200] [--singles 8]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import lines, start_worker, write_config
from producers.client import Client
from workers.protocol.lanes import Priority
from workers.redis_server import RedisServer


def wait_done(client: Client, batch_id: str, timeout_s: float = 300) -> float:
    """Seconds until the batch has every result."""
    t0 = time.monotonic()
    while not client.batch(batch_id).finished:
        if time.monotonic() - t0 > timeout_s:
            raise TimeoutError(batch_id)
        time.sleep(0.01)
    return time.monotonic() - t0


def small_batch(client: Client, n: int, tag: str, priority: Priority) -> tuple[float, str]:
    batch_id = client.submit_many(lines(n, tag), priority=priority).batch_id
    return wait_done(client, batch_id), batch_id


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--big", type=int, default=20_000)
    parser.add_argument("--small", type=int, default=200)
    parser.add_argument("--singles", type=int, default=8)
    args = parser.parse_args()
    with RedisServer() as server, tempfile.TemporaryDirectory() as d:
        config = write_config(Path(d) / "mock.yaml", latency_ms=20)
        proc = start_worker(server.url, 32, config)
        try:
            with Client(server.url) as client:
                floor, _ = small_batch(client, args.small, "warm", "normal")
                floor, _ = small_batch(client, args.small, "idle", "normal")
                big = client.submit_many(lines(args.big, "big")).batch_id
                while client.batch(big).counts.done < 500:
                    time.sleep(0.01)
                t0, done0 = time.monotonic(), client.batch(big).counts.done
                rows = []
                for priority in ("normal", "high"):
                    before = client.batch(big).counts.done
                    seconds, _ = small_batch(client, args.small, priority, priority)
                    rows.append((priority, seconds, client.batch(big).counts.done - before))
                rate = (client.batch(big).counts.done - done0) / (time.monotonic() - t0)
                left = args.big - client.batch(big).counts.done
        finally:
            proc.terminate()
            proc.wait()
    print(f"1 worker process, concurrency 32, mock 20 ms; big batch {args.big:,} requests")
    print(f"  small batch of {args.small} on an idle worker: {floor:.2f} s")
    for priority, seconds, ran in rows:
        print(
            f"  small batch ({priority:6}) behind the big one: {seconds:.2f} s "
            f"({ran} big-batch jobs ran meanwhile)"
        )
    fifo = args.big / rate
    print(f"  a single FIFO queue would have made it wait ~{fifo:.0f} s ({rate:.0f} jobs/s)")
    print(f"  big batch left unfinished at the end: {left:,}")
    waits = idle_wake(args.singles)
    print(
        f"single requests on an idle worker polling every 5 s ({len(waits)}, 1.5 s apart): "
        f"median {statistics.median(waits):.3f} s, max {max(waits):.3f} s from submit to result"
    )


def idle_wake(n: int) -> list[float]:
    """Seconds from submit to result of lone requests arriving at an idle worker."""
    with RedisServer() as server, tempfile.TemporaryDirectory() as d:
        config = write_config(Path(d) / "mock.yaml")
        proc = start_worker(server.url, 8, config, BATCHYARD_IDLE_POLL_MS="5000")
        try:
            with Client(server.url) as client:
                small_batch(client, 1, "warm", "normal")
                waits = []
                for i in range(n):
                    time.sleep(1.5)  # the gap between arrivals: the worker goes idle
                    seconds, _ = small_batch(client, 1, f"one{i}", "normal")
                    waits.append(seconds)
        finally:
            proc.terminate()
            proc.wait()
    return waits


if __name__ == "__main__":
    main()
