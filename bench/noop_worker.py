"""Baseline: a bare dramatiq worker with a no-op actor on the same Redis (bench/throughput.py)."""

from __future__ import annotations

import signal
import sys
import threading

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware import AsyncIO

url, queue, threads = sys.argv[1], sys.argv[2], int(sys.argv[3])
use_async = len(sys.argv) > 4 and sys.argv[4] == "async"
broker = RedisBroker(url=url, namespace="bench")
if use_async:  # dramatiq's own async actor path: each message hops thread -> event loop
    broker.add_middleware(AsyncIO())
dramatiq.set_broker(broker)

if use_async:

    @dramatiq.actor(queue_name=queue, actor_name="noop")
    async def noop(payload: dict[str, object]) -> None:
        return None

else:

    @dramatiq.actor(queue_name=queue, actor_name="noop")
    def noop(payload: dict[str, object]) -> None:
        return None


worker = dramatiq.Worker(broker, worker_threads=threads, worker_timeout=100)
stop = threading.Event()
signal.signal(signal.SIGTERM, lambda *_: stop.set())
worker.start()
stop.wait()
worker.stop()
