"""Baseline: a bare dramatiq worker with a no-op actor on the same Redis (bench/throughput.py)."""

from __future__ import annotations

import signal
import sys
import threading

import dramatiq
from dramatiq.brokers.redis import RedisBroker

url, queue, threads = sys.argv[1], sys.argv[2], int(sys.argv[3])
broker = RedisBroker(url=url, namespace="bench")
dramatiq.set_broker(broker)


@dramatiq.actor(queue_name=queue, actor_name="noop")
def noop(payload: dict[str, object]) -> None:
    return None


worker = dramatiq.Worker(broker, worker_threads=threads, worker_timeout=100)
stop = threading.Event()
signal.signal(signal.SIGTERM, lambda *_: stop.set())
worker.start()
stop.wait()
worker.stop()
