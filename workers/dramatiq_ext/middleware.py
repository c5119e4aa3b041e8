"""Middleware whose correctness depends on how dramatiq runs its hooks (see HOOKS.md)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import dramatiq
import redis
from dramatiq.asyncio import EventLoopThread, get_event_loop_thread, set_event_loop_thread
from dramatiq.broker import Broker, MessageProxy
from dramatiq.middleware import Middleware

from schemas.settings import Settings

log = logging.getLogger("batchyard.broker")


def new_event_loop() -> asyncio.AbstractEventLoop:
    """The loop jobs run on: uvloop's unless `BATCHYARD_EVENT_LOOP=asyncio` or it is not
    installed. Every job's sockets, timers and task switches go through the loop, and
    uvloop's run them in C: ~5 % less worker CPU per request on the 0 ms fake server (#22).
    A value that is neither raises `SettingsError` (the commands check it at their start:
    it is `Settings.event_loop`)."""
    choice = Settings().event_loop
    if choice == "uvloop":
        try:
            import uvloop
        except ImportError:  # an optional speed-up (no wheel for Windows)
            log.debug("uvloop is not installed: jobs run on asyncio's loop")
        else:
            return uvloop.new_event_loop()
    return asyncio.new_event_loop()


class AsyncIOLoop(Middleware):
    """The event loop thread `LoopWorker` runs jobs on (dramatiq's AsyncIO middleware with a
    5 s start timeout instead of 1 s, which a loaded machine can miss, a shutdown that
    tolerates a loop that never started, and uvloop's loop: `new_event_loop`)."""

    def before_worker_boot(self, broker: Broker, worker: dramatiq.Worker) -> None:
        thread = EventLoopThread(log)
        thread.loop.close()  # asyncio's, made by __init__; nothing ran on it
        thread.loop = new_event_loop()
        thread.start(timeout=5.0)
        set_event_loop_thread(thread)

    def after_worker_shutdown(self, broker: Broker, worker: dramatiq.Worker) -> None:
        thread = get_event_loop_thread()
        if thread is not None:
            thread.stop()  # type: ignore[no-untyped-call]
            thread.join()
            set_event_loop_thread(None)


class WaitForRedis(Middleware):
    """Holds a job that failed because Redis went away until Redis answers again.

    On such a failure dramatiq's Retries re-enqueues the message and the worker then acks the
    original. With Redis still down the re-enqueue fails (dramatiq logs and swallows it) while
    the ack is retried until Redis is back: the request was lost. Waiting here first lets the
    re-enqueue succeed. Added after Retries: dramatiq runs `after_*` hooks in reverse order.
    """

    def __init__(self, wait: Callable[[], object]) -> None:
        self.wait = wait

    def after_process_message(
        self,
        broker: Broker,
        message: MessageProxy,
        *,
        result: Any = None,
        exception: BaseException | None = None,
    ) -> None:
        if isinstance(exception, redis.ConnectionError | redis.TimeoutError):
            self.wait()
