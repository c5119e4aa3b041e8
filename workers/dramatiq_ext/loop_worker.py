"""A dramatiq Worker whose messages run as tasks on the event loop, not one thread each.

dramatiq runs an async actor by parking a worker thread on every message: the thread hands
the coroutine to the event loop and sleeps on a future until it is done. At a few thousand
messages a second those hand-offs (and the GIL convoy of dozens of threads) cost more than
the work. Here at most `concurrency` messages run at a time: the slots of messages that end go,
on the loop itself, to messages waiting in dramatiq's work queue, and one feeder thread moves
messages to the loop in bursts only when slots are free and none were waiting. Everything else
is dramatiq's: its consumer threads
(fetch, prefetch, delayed messages, requeue on shutdown), its priority-ordered work queue
(whose lanes of equal priority take turns: `work_queue.LaneQueue`),
its middleware hooks and its ack/nack path.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from queue import Empty
from typing import Any

import dramatiq
from dramatiq.asyncio import get_event_loop_thread
from dramatiq.broker import Broker, MessageProxy
from dramatiq.middleware import SkipMessage
from dramatiq.worker import ConsumerThread, WorkerThread

from workers.crashes import FAIL_AT, SOLO_AT, RunningMarks, Solo
from workers.dramatiq_ext.acks import AckBatcher
from workers.dramatiq_ext.dispatch import msgs_key
from workers.dramatiq_ext.outage import OUTAGE, is_outage
from workers.dramatiq_ext.work_queue import LaneQueue

log = logging.getLogger("batchyard.worker")

AsyncFn = Callable[..., Awaitable[Any]]

#: Messages handed to the loop per wake-up, at most.
BURST = 64
#: Longest wait of the feeder on an empty work queue or full slots: how late it sees a stop.
#: dramatiq waits the worker timeout (1 s), which every `batchyard run` paid at its end (#22);
#: 0.1 s was still half of an idle worker's stop. An idle feeder wakes 50 times a second.
IDLE_WAIT_S = 0.02


class LoopWorker(dramatiq.Worker):
    """Consumes every declared queue and runs each message's `fn(*args)` on the event loop.

    `fn` is the async body shared by all actors of the broker (they differ only in queue and
    priority). The loop comes from the broker's `AsyncIOLoop` middleware.
    """

    def __init__(
        self, broker: Broker, fn: AsyncFn, *, concurrency: int, worker_timeout: int = 1000
    ) -> None:
        super().__init__(broker, worker_timeout=worker_timeout, worker_threads=1)
        self.fn = fn
        self.concurrency = concurrency
        # dramatiq sizes prefetch from its thread count; ours is the concurrency.
        self.queue_prefetch = min(concurrency * 2, 65535)
        self.delay_prefetch = min(concurrency * 1000, 65535)
        # Lanes of equal priority take turns, not first-fetched-first-served.
        self.work_queue = LaneQueue()
        #: Where the messages running are marked for the supervisor (`workers.crashes`).
        self.marks: RunningMarks | None = None

    def _add_worker(self) -> None:
        feeder = LoopFeeder(self)
        feeder.start()
        self.workers.append(feeder)

    def _add_consumer(self, queue_name: str, *, delay: bool = False) -> None:
        """dramatiq's, then the new consumer thread skips its delay queue's scan while that
        queue is empty (every message of a lane queue, which never holds a delayed one), and
        its consumer, idle, waits no longer than that queue's next message is due.

        Raises before any consumer starts when the worker did not boot (a middleware's
        `before_worker_boot` failed, which dramatiq only logs: no event loop, an executor that
        could not start): such a worker fetched messages it could never run and held them,
        unacked, or failed them one by one, until it was killed."""
        failed = getattr(self.broker, "boot_error", None)
        if failed is not None:
            raise failed  # as its hook raised it: a ConfigError still exits 2
        if get_event_loop_thread() is None:  # a broker that records no boot error
            raise RuntimeError("the event loop did not start (see the error above)")
        super()._add_consumer(queue_name, delay=delay)
        thread = self.consumers.get(queue_name)
        if thread is not None:
            scan = thread.handle_delayed_messages
            thread.handle_delayed_messages = functools.partial(_delayed_if_any, thread, scan)  # type: ignore[method-assign]
            queues = getattr(self.broker, "held_delayed", None)
            if isinstance(queues, dict):
                queues[queue_name] = thread.delay_queue

    def stop(self, timeout: int = 600000) -> None:
        """dramatiq's stop, with each idle consumer woken once it is told to stop.

        dramatiq stops consumer threads by clearing their `running` flag; an idle consumer
        sees it only when its backoff wait ends (up to the worker timeout). That was 0.15-0.23 s
        at the end of every `batchyard run` (#22). The consumer threads' `stop` is wrapped here
        so the wake event is set right after the flag is cleared.
        """
        for thread in self.consumers.values():
            thread.stop = functools.partial(_stop_and_wake, thread, thread.stop)  # type: ignore[method-assign]
        super().stop(timeout)


def _delayed_if_any(thread: ConsumerThread, scan: Callable[[], None]) -> None:
    # dramatiq scans the delay queue after every message it hands out: a generator and an
    # Empty raised per message (~1.2 us, 15 % of a consumer thread's CPU, #22). Only this
    # thread puts into its delay queue (`handle_message`), so an empty heap is empty.
    if thread.delay_queue.queue:
        scan()


def _stop_and_wake(thread: ConsumerThread, stop: Callable[[], None]) -> None:
    stop()
    wake = getattr(getattr(thread, "consumer", None), "wake", None)
    if isinstance(wake, threading.Event):
        wake.set()


class LoopFeeder(WorkerThread):
    """Takes messages off the work queue while fewer than `concurrency` are running."""

    def __init__(self, worker: LoopWorker) -> None:
        super().__init__(
            broker=worker.broker,
            consumers=worker.consumers,
            work_queue=worker.work_queue,
            worker_timeout=worker.worker_timeout,
        )
        self.name = "batchyard-feeder"
        self.fn = worker.fn
        self.slots = threading.Semaphore(worker.concurrency)
        #: Messages handed to the loop and not yet acked or nacked.
        self.running_count = 0
        self._count_lock = threading.Lock()
        #: The running tasks by id of their message: the loop keeps only weak references.
        self._tasks: dict[int, asyncio.Task[None]] = {}
        #: Succeeded messages not yet acked, and messages ended (acked, nacked or failed)
        #: whose slots are not yet free: both wait for `_end_group`.
        self._to_ack: list[MessageProxy] = []
        self._ended = 0
        self.marks = worker.marks
        self._mark_prefix: dict[str, bytes] = {}
        self.solo = Solo()
        acks = getattr(self.broker, "acks", None)
        self._ack_group = acks.group if isinstance(acks, AckBatcher) else contextlib.nullcontext
        # Failure hooks may block (Retries re-enqueues, WaitForRedis waits for Redis).
        self._hooks = ThreadPoolExecutor(4, thread_name_prefix="batchyard-hooks")

    def run(self) -> None:
        """Feed the loop until stopped, then wait for the messages already on it."""
        thread = get_event_loop_thread()
        if thread is None:
            raise RuntimeError("LoopWorker needs the AsyncIOLoop middleware on the broker")
        loop = thread.loop
        self.running = True
        self.broker.emit_after("worker_thread_boot", self)
        while self.running:
            if self.paused:
                self.paused_event.set()
                time.sleep(self.timeout)
                continue
            burst = self._take()
            if burst:
                with self._count_lock:
                    self.running_count += len(burst)
                loop.call_soon_threadsafe(self._start_all, burst)
        while self.running_count:
            time.sleep(0.02)
        self._hooks.shutdown(wait=True)
        self.broker.emit_before("worker_thread_shutdown", self)

    def stop(self) -> None:
        """dramatiq's stop, then the feeder is woken if it waits for a free slot."""
        super().stop()
        self.slots.release()  # never given back: the feeder takes no more messages

    def _take(self) -> list[MessageProxy]:
        """Up to `BURST` messages, one free slot each. Waits up to the worker timeout for a
        slot (`stop` frees one at once) and at most `IDLE_WAIT_S` for a first message."""
        # All slots are taken through a busy worker's whole run: a wait of IDLE_WAIT_S woke
        # this thread 50 times a second, and each time it took the GIL from the loop (#22).
        if not self.slots.acquire(timeout=self.timeout):
            return []
        if not self.running:
            return []
        try:
            burst = [self.work_queue.get(timeout=min(self.timeout, IDLE_WAIT_S)).message]
        except Empty:
            self.slots.release()
            return []
        while len(burst) < BURST and self.slots.acquire(blocking=False):
            try:
                burst.append(self.work_queue.get_nowait().message)
            except Empty:
                self.slots.release()
                break
        return burst

    def _start_all(self, burst: list[MessageProxy]) -> None:
        # Each task drops its own entry as it ends (`_process`): a done callback would cost
        # one more loop callback per message.
        create_task, tasks = asyncio.get_running_loop().create_task, self._tasks
        for message in burst:
            tasks[id(message)] = create_task(self._process(message))

    async def _process(self, message: MessageProxy) -> None:
        """dramatiq's `WorkerThread.process_message`, awaiting the actor instead of blocking."""
        failure: BaseException | None = None
        try:
            self.broker.emit_before("process_message", message)
            result = None
            if not message.failed:
                self.broker.get_actor(message.actor_name)  # ActorNotFound for a stranger
                marks = self.marks
                if marks is None:
                    result = await self.fn(*message.args, **message.kwargs)
                else:  # inline: a wrapper coroutine is a frame every resumption passes (#22)
                    alone = self._alone(message)
                    solo = self.solo
                    if not solo.try_enter(alone):
                        await solo.enter(alone)
                    slot = marks.mark(self._mark_entry(message))
                    try:
                        result = await self.fn(*message.args, **message.kwargs)
                    finally:
                        marks.clear(slot)
                        solo.leave(alone)
            self.broker.emit_after("process_message", message, result=result)
            OUTAGE.up()
        except SkipMessage as exc:
            if message.failed:
                message.stuff_exception(exc)
            log.warning("message %s was skipped", message.message_id)
            self.broker.emit_after("skip_message", message)
        except BaseException as exc:
            message.stuff_exception(exc)
            if is_outage(exc):  # one line per outage, not a traceback per message
                OUTAGE.down(exc, job=True)
            else:
                log.error("failed to process message %s", message.message_id, exc_info=True)
            failure = exc
        loop = asyncio.get_running_loop()
        try:
            if failure is not None or message.failed:
                await loop.run_in_executor(self._hooks, self._finish_failed, message, failure)
            else:
                self._to_ack.append(message)
        finally:
            self._tasks.pop(id(message), None)
            message.clear_exception()
            self._ended += 1
            if self._ended == 1:  # the first of a group: end it once this loop pass is done
                loop.call_soon(self._end_group)

    @staticmethod
    def _alone(message: MessageProxy) -> bool:
        """Whether the job runs alone on this loop: its worker died running it before, and
        more than once (`workers.crashes`), so that a next death is its own. A job that waits
        its turn is not marked running."""
        job = message.args[0] if message.args else None
        deaths = job.get("deaths", 0) if type(job) is dict else 0
        return type(deaths) is int and SOLO_AT <= deaths < FAIL_AT

    def _mark_entry(self, message: MessageProxy) -> bytes:
        """How a running message is marked for the supervisor: its queue's .msgs key and its
        id, where its data is."""
        queue = message.queue_name
        prefix = self._mark_prefix.get(queue)
        if prefix is None:
            key = msgs_key(self.broker.namespace, queue)  # type: ignore[attr-defined]
            prefix = self._mark_prefix[queue] = f"{key}\t".encode()
        rid: str = message.options["redis_message_id"]
        return prefix + rid.encode()

    def _end_group(self) -> None:
        """Ack the messages that succeeded since the last call, then give the slots of all
        that ended to messages waiting, or free them. Per message, the ack thread and the
        feeder were woken once each (and the feeder then woke the loop for one message): per
        group, the ack thread is woken once, and the feeder only when no message waits (#22)."""
        to_ack, self._to_ack = self._to_ack, []
        ended, self._ended = self._ended, 0
        try:
            with self._ack_group():
                direct = self._acks_unhooked()
                for message in to_ack:
                    try:
                        thread = self.consumers[message.queue_name]
                        if direct:  # what post_process_message does for a message that is ok
                            thread.consumer.ack(message)  # type: ignore[union-attr]
                        else:
                            thread.post_process_message(message)
                    except Exception:  # not acked: it runs again after a restart, as before
                        log.error(
                            "failed to acknowledge message %s", message.message_id, exc_info=True
                        )
        finally:
            for _ in range(ended):
                self.work_queue.task_done()
            # A feeder's hand-off costs a wake-up of its thread and then of the loop, each
            # waiting for the GIL the loop holds: ~1,200 of each per 10k requests (#22).
            burst = self._take_now(ended)
            with self._count_lock:
                self.running_count -= ended - len(burst)
            if len(burst) < ended:
                self.slots.release(ended - len(burst))
            if burst:
                self._start_all(burst)

    def _acks_unhooked(self) -> bool:
        """True when no middleware has an ack hook: an ok message is then acked by its
        consumer directly, not through `post_process_message`'s two hook calls, debug log and
        retry loop (~1 us a message on the loop, #22; our consumers' `ack` only queues it)."""
        hooks = getattr(self.broker, "_hooks", None)
        return hooks is not None and not (
            hooks("before_ack", reverse=False) or hooks("after_ack", reverse=True)
        )

    def _take_now(self, n: int) -> list[MessageProxy]:
        """Up to `n` messages the work queue holds now (none once stopping or paused)."""
        burst: list[MessageProxy] = []
        if self.running and not self.paused:
            get = self.work_queue.get_nowait
            with contextlib.suppress(Empty):
                while len(burst) < n:
                    burst.append(get().message)
        return burst

    def _finish_failed(self, message: MessageProxy, failure: BaseException | None) -> None:
        """After-hooks of a failed message (in a thread: they may block), then ack or nack."""
        if failure is not None:
            try:
                raise failure  # Retries records the traceback of the exception being handled
            except BaseException:
                self.broker.emit_after("process_message", message, exception=failure)
        self.consumers[message.queue_name].post_process_message(message)
