"""What tracing costs a worker, and whether every span arrives.

One worker process, 0 ms mock, jobs from a producer that did not trace: without any OTEL
variable, then exporting to an OTLP/HTTP receiver (decoding protobuf in this process).
Prints jobs/s of each and the spans received (2 per job: consumer + GenAI client).

Run: python bench/tracing.py [--n 20000] [--concurrency 64]
"""

from __future__ import annotations

import argparse
import signal
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import lines, measure, start_worker, write_config
from producers.client import Client
from tests.otlp_receiver import Receiver
from workers.redis_server import RedisServer


def run(url: str, n: int, concurrency: int, config: Path, **otel: str) -> float:
    """jobs/s of one worker over n fresh jobs; the worker is stopped with SIGTERM after."""
    with Client(url) as client:
        batch_id = client.submit_many(lines(n, f"t{len(otel)}")).batch_id
        worker = start_worker(url, concurrency, config, **otel)
        try:
            seconds = measure(lambda: client.batch(batch_id).counts.done, n, 300)
        finally:
            worker.send_signal(signal.SIGTERM)
            worker.wait(60)
    return n / seconds


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=64)
    args = parser.parse_args()
    receiver = Receiver()
    try:
        with RedisServer() as server, tempfile.TemporaryDirectory() as d:
            config = write_config(Path(d) / "c.yaml")
            off = run(server.url, args.n, args.concurrency, config)
            on = run(
                server.url,
                args.n,
                args.concurrency,
                config,
                OTEL_EXPORTER_OTLP_ENDPOINT=receiver.url,
            )
        spans = receiver.received()
        print(f"0 ms mock, 1 worker process, concurrency {args.concurrency}, {args.n} jobs:")
        print(f"  no OTEL variables:        {off:8.0f} jobs/s")
        print(f"  exporting over OTLP/HTTP: {on:8.0f} jobs/s ({on / off:.2f} of untraced)")
        print(f"  spans received: {len(spans)} of {2 * args.n} (consumer + client per job)")
    finally:
        receiver.stop()


if __name__ == "__main__":
    main()
