"""One worker process: dramatiq consumers feeding up to M concurrent jobs to one asyncio loop.

Run by the supervisor as `python -m workers.process --concurrency M`.
"""

from __future__ import annotations

import gc

if __name__ == "__main__":
    gc.disable()  # a worker process starting: see `imports_done`, called once they are done

# First: redis-py without the OTel SDK. aiohttp is imported only if a session is made
# (`Executor._shared_session`), and then without reading CA certificates at import.
import workers.lean_redis  # noqa: F401

# isort: split
import argparse
import contextlib
import logging
import os
import signal
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, NoReturn

import dramatiq
import orjson
from dramatiq.brokers.redis import RedisBroker

from providers.registry import check_config
from schemas.config import AppConfig, ConfigError, load_config
from schemas.settings import Settings
from workers.broker import build_broker, declare
from workers.crashes import RunningMarks
from workers.dramatiq_ext import Heartbeat, LoopWorker
from workers.dramatiq_ext.outage import QuietConsumerErrors
from workers.execute import Executor, ExecutorLifecycle
from workers.lifetime import (
    PARENT_PID_ENV,
    SignalLatch,
    exit_after,
    exit_now,
    imports_done,
    set_parent_death_signal,
    watch_parent,
)
from workers.logs import setup_logging
from workers.protocol.connection import wait_for_redis
from workers.protocol.lanes import LANES
from workers.results import FetchCheck
from workers.supervisor import preflight
from workers.tracing import setup_tracing, shutdown_tracing
from workers.warm import FAILED, HANDOFF_FLAG, PASSED

log = logging.getLogger("batchyard.worker")

#: Drain time of a worker whose supervisor died (it must be gone within 10 s of that).
ORPHAN_GRACE_S = 5.0

#: Longest wait for a worker that did not boot to close what it had opened.
START_FAILED_GRACE_S = 2.0

#: Net container allocations between young-generation collections (CPython's default: 700).
#: With hundreds of jobs in flight, each holding a few hundred live objects, a collection
#: every 700 found them alive and promoted them, so full collections kept walking them: GC
#: was ~17 % of a worker's CPU at 0 ms (#22). Cyclic garbage still goes, 50,000 allocations
#: later instead of 700.
GC_THRESHOLD = 50_000


def quiet_gc() -> None:
    """Collect less often, and never walk again what exists once the worker has started
    (modules, config, adapters: `gc.freeze`)."""
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(GC_THRESHOLD, older, oldest)


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
        marks = getattr(self.worker, "marks", None)
        if marks is not None:
            marks.close()


def start(settings: Settings, config: AppConfig, concurrency: int) -> RunningWorker:
    """Start consuming every endpoint queue in this process (threads + one event loop)."""
    check_config(config)
    setup_tracing("batchyard-worker")
    # Fetches, acks and failure hooks share this pool; size it for the consumers and more.
    consumers = len(config.endpoints) * len(LANES) * 2  # a queue and its delay queue per lane
    broker = build_broker(settings, pool_size=consumers + 16)
    executor = Executor(settings, config, concurrency, broker)
    # Results are checked as messages are fetched, in the consumer threads (`FetchCheck`).
    executor.fetch_check = FetchCheck(broker.client, executor.keys)
    broker.on_fetch = executor.fetch_check.fetched

    # The actors' body is the executor's `run` itself: a wrapper coroutine was one more frame
    # every suspension of every job passed through (2.4 % of the event loop's CPU, #22).
    execute = executor.run
    declare(broker, config, execute)
    broker.add_middleware(ExecutorLifecycle(executor))
    # dramatiq logs each consumer's connection error every second of an outage: once is enough.
    logging.getLogger("dramatiq.worker.ConsumerThread").addFilter(QuietConsumerErrors())
    worker = LoopWorker(broker, execute, concurrency=concurrency, worker_timeout=1000)
    # What it runs, for its supervisor to count if this process dies (`workers.crashes`).
    worker.marks = RunningMarks.for_supervised(concurrency)
    heartbeat = Heartbeat(broker, settings.maintenance_interval_s)
    heartbeat.marks = worker.marks
    heartbeat.note_owners(set())  # before the first fetch: a job may end this process at once
    # The executor starts at the worker's boot, before any consumer (`ExecutorLifecycle`).
    try:
        worker.start()
    except BaseException:
        # It did not boot (`LoopWorker._add_consumer`): end the loop and close what the
        # executor opened, or their threads keep this process from exiting with the error.
        worker.stop(timeout=int(START_FAILED_GRACE_S * 1000))
        raise
    heartbeat.start()
    return RunningWorker(worker, broker, heartbeat)


def orphaned(latch: SignalLatch) -> None:
    """The supervisor is gone (killed, so nobody waits for a drain, and its Redis may be
    going too): stop, and be gone within `ORPHAN_GRACE_S` + 2 s whatever the drain does."""
    exit_after(ORPHAN_GRACE_S + 2)
    latch.trigger(signal.SIGTERM)


def serve(settings: Settings, concurrency: int, grace_s: float) -> None:
    """Consume until SIGTERM/SIGINT (or the supervisor's death), then drain within the grace."""
    latch = SignalLatch().install()
    stop = latch.event
    parent = os.environ.get(PARENT_PID_ENV)
    if parent and parent.isdigit():
        # The parent-death signal, armed now, misses a parent that died before this line:
        # the watchdog catches that case (and kernels without prctl).
        set_parent_death_signal(signal.SIGTERM)
        watch_parent(int(parent), lambda: orphaned(latch))
    config = load_config(settings.config)
    assert settings.redis_url is not None
    wait_for_redis(settings.redis_url, give_up_s=settings.redis_wait_s, stop=stop)
    if stop.is_set():
        return
    running = start(settings, config, concurrency)
    quiet_gc()
    queues = ", ".join(sorted(running.broker.queues))
    log.info("worker ready: concurrency %d on %s", concurrency, queues)
    stop.wait()
    if parent and parent.isdigit() and os.getppid() != int(parent):
        # Orphaned (the supervisor was killed): its Redis may be going too, and nobody waits
        # for this drain. Finish quickly; whatever is not acked is redelivered.
        grace_s = min(grace_s, ORPHAN_GRACE_S)
    log.info("stopping: draining in-flight jobs (grace %.0fs)", grace_s)
    # The drain talks to Redis; if Redis is gone it could wait on it past the grace. A second
    # Ctrl-C ends it at once: unacknowledged jobs are redelivered, stored results stay.
    exit_after(grace_s + 2, now=latch.urgent)
    running.stop(grace_s)
    shutdown_tracing()  # export what the drained jobs recorded before the process exits


def main(argv: list[str] | None = None) -> int:
    """Entry point of a supervised child."""
    parser = argparse.ArgumentParser(prog="batchyard-worker-process")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--grace", type=float, default=30.0)
    parser.add_argument("--config", type=Path, default=None)
    args = parser.parse_args(argv)
    try:
        settings = Settings()
    except ValueError as exc:  # a wrong BATCHYARD_* value (its supervisor checked it too)
        print(f"batchyard worker: {exc}", file=sys.stderr)
        return 2
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


def await_handoff(replies: int, requests: BinaryIO | None = None) -> int:
    """A prestarted worker (`workers.warm`): imports are done; check configs on request
    (answered on the pipe `replies`) until the arguments and environment of a cold start
    arrive on `requests` (stdin by default), then run as one. EOF: nobody needs us, exit.
    A handoff sent with `if_passed` (`warm.hand_early`) is taken only if the last check
    passed: else the asker reports the config's error itself, and this process just exits."""
    source = sys.stdin.buffer if requests is None else requests
    passed = False
    while True:
        line = source.readline()
        if not line.strip():
            return 0
        spec = orjson.loads(line)
        if "check" not in spec:
            break
        passed = passes(spec["check"])
        answer = (PASSED if passed else FAILED) + b"\n"
        with contextlib.suppress(BrokenPipeError):  # the asker gave up waiting
            os.write(replies, answer)
    os.close(replies)
    if spec.get("if_passed") and not passed:
        return 0
    os.environ.clear()
    os.environ.update(spec["env"])
    return main(list(spec["argv"]))


def run_forked(replies: int, requests: BinaryIO) -> NoReturn:
    """A worker forked by `workers.warm.prestart(fork=True)`: what `python -m workers.process
    --await-handoff` runs, with its requests on a pipe of their own. Never returns into the
    code it was forked from."""
    imports_done()
    try:
        exit_now(await_handoff(replies, requests))
    except SystemExit as exc:  # a non-daemon thread is alive: wait, as an interpreter's exit does
        main = threading.main_thread()
        for thread in threading.enumerate():
            if thread is not main and not thread.daemon:
                thread.join()
        exit_now(exc.code if isinstance(exc.code, int) else 1)


def passes(config: str | None) -> bool:
    """Whether `config` passes the supervisor's start-up check (`preflight`)."""
    try:
        preflight(None if config is None else Path(config))
    except Exception:  # any failure: the asker checks again itself and reports it
        return False
    return True


if __name__ == "__main__":
    imports_done()
    handoff = sys.argv[1:2] == [HANDOFF_FLAG]
    exit_now(await_handoff(int(sys.argv[2])) if handoff else main())
