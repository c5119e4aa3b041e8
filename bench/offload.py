"""Issue #21 benchmark: requests through a `mode: batch` endpoint (vendor Batch API offload).

Runs redis-server, the fake server (OpenAI Batch API, vendor delay `--delay-s`) in a thread and
one worker process; submits `--n` requests routed [vendor-batch, live] and reports:

- time until every request is in a vendor batch (submit start -> pending list empty);
- Redis memory while the vendor batches are open;
- time from vendor completion (the last vendor batch's created + delay) to all results stored.

Run: python bench/offload.py [--n 100000] [--delay-s 30] [--max-requests 50000]
(the issue's figure is --n 100000; the default is smaller so a quick run stays short).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import threading
import time
from pathlib import Path

import orjson
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import lines, start_worker
from producers.client import Client
from providers.fake_server import FakeServer
from providers.fake_server.batch_state import BatchKnobs
from schemas.config import parse_config
from workers.redis_server import RedisServer


def wait(predicate: object, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(0.05)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=10_000)
    p.add_argument("--delay-s", type=float, default=30.0)
    p.add_argument("--max-requests", type=int, default=50_000)
    p.add_argument("--timeout-s", type=float, default=900.0)
    args = p.parse_args()

    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    fake = FakeServer(batches=BatchKnobs(delay_s=args.delay_s), max_log=1000)
    asyncio.run_coroutine_threadsafe(fake.start(), loop).result(10)
    with tempfile.TemporaryDirectory() as tmp_dir, RedisServer() as server:
        live = {"provider": "openai", "base_url": fake.openai_url, "model": "m"}
        batch = {"max_requests": args.max_requests, "max_wait_s": 1.0, "poll_s": 1.0}
        config_data = {
            "endpoints": {"live": live, "vendor-batch": {**live, "mode": "batch", "batch": batch}},
            "routes": {"default": ["vendor-batch", "live"]},
        }
        config = Path(tmp_dir) / "offload.yaml"
        config.write_text(yaml.safe_dump(config_data))
        worker = start_worker(server.url, 50, config)
        try:
            with Client(server.url, config=parse_config(config_data)) as client:
                rows = [orjson.loads(raw) for raw in lines(args.n, "o")]
                t0 = time.monotonic()
                batch_id = client.submit_many(rows, completion_window_s=86_400).batch_id
                submitted = time.monotonic() - t0
                pending = f"{client.keys.ns}:offload:vendor-batch:pending"
                expected = -(-args.n // args.max_requests)

                def all_sent() -> bool:
                    sent = len(fake.batches.batches) >= expected
                    return sent and client.redis.llen(pending) == 0

                wait(all_sent, args.timeout_s, "every request in a vendor batch")
                in_batches = time.monotonic() - t0
                memory_mb = client.redis.info("memory")["used_memory"] / 1024**2
                wait(lambda: client.batch(batch_id).finished, args.timeout_s, "all results")
                finished = time.time()
                vendor_done = max(b.created for b in fake.batches.batches.values()) + args.delay_s
                live_calls = len(fake.calls(path="/v1/chat/completions"))
        finally:
            worker.terminate()
            worker.wait(30)
    asyncio.run_coroutine_threadsafe(fake.stop(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)
    print(f"requests                         {args.n}")
    print(f"vendor batches                   {len(fake.batches.batches)}")
    print(f"submit (client)                  {submitted:.2f} s")
    print(f"all in vendor batches            {in_batches:.2f} s")
    print(f"Redis memory, batches open       {memory_mb:.1f} MB")
    print(f"vendor done -> all results       {finished - vendor_done:.2f} s")
    print(f"live calls                       {live_calls}")


if __name__ == "__main__":
    main()
