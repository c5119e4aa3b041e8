"""One worker process: dramatiq consumers feeding up to M concurrent jobs to one asyncio loop.

Run by the supervisor as `python -m workers.process --concurrency M`.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dramatiq
from dramatiq.brokers.redis import RedisBroker

from providers.registry import check_config
from schemas.config import AppConfig, ConfigError, load_config
from schemas.settings import Settings
from workers.broker import build_broker, declare
from workers.dramatiq_ext import Heartbeat, LoopWorker
from workers.execute import Executor, ExecutorLifecycle
from workers.logs import setup_logging
from workers.protocol.connection import wait_for_redis
from workers.protocol.lanes import LANES
from workers.tracing import setup_tracing, shutdown_tracing

log = logging.getLogger("batchyard.worker")


@dataclass
class RunningWorker:
    """A started dramatiq worker with batchyard's executor, and how to stop it."""

    worker: dramatiq.Worker
    broker: RedisBroker
    heartbeat: Heartbeat

    def stop(self, grace_s: float) -> None:
        """Drain: in-flight jobs finish, prefetched messages go back to their queues."""
        self.heartbeat.stop()
        self.worker.stop(timeout=int(grace_s * 1000))
        self.broker.close()


def start(settings: Settings, config: AppConfig, concurrency: int) -> RunningWorker:
    """Start consuming every endpoint queue in this process (threads + one event loop)."""
    check_config(config)
    setup_tracing("batchyard-worker")
    # Fetches, acks and failure hooks share this pool; size it for the consumers and more.
    consumers = len(config.endpoints) * len(LANES) * 2  # a queue and its delay queue per lane
    broker = build_broker(settings, pool_size=consumers + 16)
    executor = Executor(settings, config, concurrency, broker)

    async def execute(payload: dict[str, Any]) -> None:
        await executor.run(payload)

    declare(broker, config, execute)
    broker.add_middleware(ExecutorLifecycle(executor))
    worker = LoopWorker(broker, execute, concurrency=concurrency, worker_timeout=1000)
    heartbeat = Heartbeat(broker, settings.maintenance_interval_s)
    worker.start()
    heartbeat.start()
    return RunningWorker(worker, broker, heartbeat)


def serve(settings: Settings, concurrency: int, grace_s: float) -> None:
    """Consume until SIGTERM/SIGINT, then drain."""
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    config = load_config(settings.config)
    assert settings.redis_url is not None
    wait_for_redis(settings.redis_url, give_up_s=settings.redis_wait_s, stop=stop)
    if stop.is_set():
        return
    running = start(settings, config, concurrency)
    queues = ", ".join(sorted(running.broker.queues))
    log.info("worker ready: concurrency %d on %s", concurrency, queues)
    stop.wait()
    log.info("stopping: draining in-flight jobs (grace %.0fs)", grace_s)
    running.stop(grace_s)
    shutdown_tracing()  # export what the drained jobs recorded before the process exits


def main(argv: list[str] | None = None) -> int:
    """Entry point of a supervised child."""
    parser = argparse.ArgumentParser(prog="batchyard-worker-process")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--grace", type=float, default=30.0)
    parser.add_argument("--config", type=Path, default=None)
    args = parser.parse_args(argv)
    settings = Settings()
    if args.config is not None:
        settings = settings.model_copy(update={"config": args.config})
    setup_logging(settings)
    try:
        serve(settings, args.concurrency, args.grace)
    except ConfigError as exc:
        print(f"batchyard worker: {exc}", file=sys.stderr)
        return 2
    except ConnectionError as exc:
        print(f"batchyard worker: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
