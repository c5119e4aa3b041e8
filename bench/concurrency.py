"""Issue #5: one worker process holding hundreds of slow calls in flight; and scaling.

- provider latency 2 s (the fake server over real HTTP), --concurrency 500: jobs/s
  (target >= 200), requests in flight at the server (target >= 400), peak RSS (<= 300 MB);
- mock at 0 ms with 1, 2 and 4 processes: jobs/s each.
Run: python bench/concurrency.py [--n 6000] [--scale-n 20000]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import env, lines, measure, peak_rss_mb, start_worker, write_config
from producers.client import Client
from schemas.config import load_config
from tests.conftest import ServerThread
from workers.redis_server import RedisServer
from workers.supervisor import Supervisor


def slow_provider(n: int, concurrency: int) -> None:
    fake = ServerThread(latency_ms=2000)
    server = fake.server
    peak_in_flight = 0
    try:
        with RedisServer() as rs, tempfile.TemporaryDirectory() as d:
            config = Path(d) / "c.yaml"
            config.write_text(
                yaml.safe_dump(
                    {
                        "endpoints": {
                            "fake": {
                                "provider": "openai",
                                "base_url": server.openai_url,
                                "model": "m",
                            }
                        }
                    }
                )
            )
            with Client(rs.url, config=load_config(config)) as client:
                batch_id = client.submit_many(lines(n)).batch_id
                proc = start_worker(rs.url, concurrency, config)
                done = threading.Event()

                def sample() -> None:
                    nonlocal peak_in_flight
                    while not done.is_set():
                        in_flight = server.requests_arrived - len(server.requests)
                        peak_in_flight = max(peak_in_flight, in_flight)
                        time.sleep(0.05)

                sampler = threading.Thread(target=sample, daemon=True)
                sampler.start()
                seconds = measure(lambda: client.batch(batch_id).counts.done, n, 600)
                done.set()
                rss = peak_rss_mb(proc.pid)
                proc.terminate()
                proc.wait()
    finally:
        fake.stop()
    print(f"provider latency 2 s, 1 process, concurrency {concurrency}, {n} jobs:")
    print(
        f"  {n / seconds:.0f} jobs/s (target >= 200), peak in flight at the server "
        f"{peak_in_flight} (target >= 400), peak RSS {rss:.0f} MB (target <= 300)"
    )


def scaling(n: int, processes: int, tmp: Path) -> float:
    config = write_config(tmp / "mock.yaml", latency_ms=0)
    with RedisServer() as rs, Client(rs.url, config=load_config(config)) as client:
        batch_id = client.submit_many(lines(n)).batch_id
        sup = Supervisor(processes, 64, config=config, env=env(rs.url))
        sup.start()
        try:
            seconds = measure(lambda: client.batch(batch_id).counts.done, n, 600)
        finally:
            sup.stop()
            sup.shutdown()
    return n / seconds


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=6000)
    parser.add_argument("--concurrency", type=int, default=500)
    parser.add_argument("--scale-n", type=int, default=20_000)
    args = parser.parse_args()
    slow_provider(args.n, args.concurrency)
    with tempfile.TemporaryDirectory() as d:
        for processes in (1, 2, 4):
            rate = scaling(args.scale_n, processes, Path(d))
            print(f"mock 0 ms, {processes} process(es) x concurrency 64: {rate:.0f} jobs/s")


if __name__ == "__main__":
    main()
