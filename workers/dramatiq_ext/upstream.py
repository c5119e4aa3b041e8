"""The dramatiq code the fence copies or depends on, with a digest of each as it was read.

tests/unit/test_dramatiq_hooks.py recomputes every digest from the installed dramatiq and fails,
naming the hook and what to re-check, when one differs. After an upgrade: read the upstream
change, port it into `ours` (a copy) or re-check the assumption (a dependency), then record the
new digests printed by `python -m workers.dramatiq_ext.upstream`.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

#: The dramatiq release every entry below was read from.
READ_FROM = "2.2.1"


@dataclass(frozen=True)
class Hook:
    """One piece of dramatiq that batchyard copies (`copy`) or relies on (`relies`)."""

    upstream: str  # "module:qualname", or "module:file.lua" for a script next to the module
    ours: str  # where batchyard's copy, or the code relying on it, lives
    kind: Literal["copy", "relies"]
    digest: str  # sha256 (first 16 hex digits) of the upstream source in READ_FROM
    why: str


HOOKS: tuple[Hook, ...] = (
    Hook(
        "dramatiq.brokers.redis:_RedisConsumer.__next__",
        "workers.dramatiq_ext.consumer:BatchAckConsumer.__next__",
        "copy",
        "bc405a9576218e8f",
        "fetches through dispatch.Fetch and decodes each message once (jobs to on_fetch), "
        "once a quarter of the prefetch is free; idle and full consumers sleep on a wake "
        "event; each message remembers its fetch-time worker id",
    ),
    Hook(
        "dramatiq.brokers.redis:_RedisConsumer.ack",
        "workers.dramatiq_ext.consumer:BatchAckConsumer.ack",
        "copy",
        "a4d9d90a0e16a60f",
        "acks go to the AckBatcher, on the consumer's queue as upstream does; the ack that "
        "frees a quarter of the prefetch wakes the full consumer",
    ),
    Hook(
        "dramatiq.brokers.redis:_RedisConsumer.__init__",
        "workers.dramatiq_ext.consumer:BatchAckConsumer",
        "relies",
        "586fdbf2d48ff544",
        "the copied __next__ uses message_cache, queued_message_ids, misses, prefetch, timeout",
    ),
    Hook(
        "dramatiq.broker:MessageProxy",
        "workers.dramatiq_ext.consumer:FetchedMessage",
        "relies",
        "cc402f18708ac074",
        "__init__ sets failed, _message, _exception; the message's fields are reached through "
        "__getattr__, so instance attributes of the same names stand in for it",
    ),
    Hook(
        "dramatiq.message:Message",
        "workers.dramatiq_ext.consumer:FetchedMessage",
        "relies",
        "02a5f9d1eb9d377d",
        "a frozen dataclass without slots: its __dict__ is exactly its fields, never changed",
    ),
    Hook(
        "dramatiq.brokers.redis:dispatch.lua",
        "workers.dramatiq_ext.dispatch:ARGV, workers/dramatiq_ext/ack_many.lua, "
        "workers/dramatiq_ext/fetch_many.lua",
        "copy",
        "ba4d872e4fb204eb",
        "ARGV order and commands of Dispatch; ack_many.lua repeats its `ack` and fetch_many.lua "
        "its `fetch` (without maintenance) on its key layout",
    ),
    Hook(
        "dramatiq.brokers.redis:RedisBroker._dispatch",
        "workers.dramatiq_ext.dispatch:argv",
        "copy",
        "85dea313fc43749e",
        "argv() builds the same ARGV; broker_id is read per call, so Heartbeat can renew it",
    ),
    Hook(
        "dramatiq.brokers.redis:RedisBroker._max_unpack_size",
        "workers.dramatiq_ext.dispatch:max_unpack_size",
        "relies",
        "824d80def7187917",
        "the max_unpack_size ARGV value every dispatch call carries",
    ),
    Hook(
        "dramatiq.brokers.redis:RedisBroker._should_do_maintenance",
        "workers.dramatiq_ext.dispatch:Fetch",
        "relies",
        "1cf510009c987611",
        "(command) -> 0/1, dramatiq's random maintenance draw: a fetch that draws 1 goes "
        "through dispatch.lua with do_maintenance=1, as dramatiq's own fetch does",
    ),
    Hook(
        "dramatiq.brokers.redis:RedisBroker.enqueue",
        "workers.protocol.envelope:encode, workers.requeue:Requeuer.enqueue, "
        "workers.dramatiq_ext.broker:LaneBroker.enqueue",
        "copy",
        "48de91b5ef2e15a8",
        "a fresh redis_message_id per enqueue; a delay goes to the .DQ queue with an eta; it "
        "returns the message it stored, whose queue_name (the .DQ one when delayed) is announced",
    ),
    Hook(
        "dramatiq.worker:WorkerThread.process_message",
        "workers.dramatiq_ext.loop_worker:LoopFeeder._process",
        "copy",
        "5e72e77165b3eb3a",
        "awaits the actor on the event loop instead of blocking a thread per message",
    ),
    Hook(
        "dramatiq.worker:WorkerThread.run",
        "workers.dramatiq_ext.loop_worker:LoopFeeder.run",
        "copy",
        "21e2fae36dda4557",
        "one feeder takes bursts off the work queue; same boot/shutdown signals and pause",
    ),
    Hook(
        "dramatiq.worker:WorkerThread.__init__",
        "workers.dramatiq_ext.loop_worker:LoopFeeder",
        "relies",
        "6eec787ff82e2bec",
        "running, paused, paused_event, broker, consumers, work_queue, timeout",
    ),
    Hook(
        "dramatiq.worker:Worker.__init__",
        "workers.dramatiq_ext.loop_worker:LoopWorker",
        "relies",
        "a55b6969c3a8307d",
        "queue_prefetch, delay_prefetch, consumers, work_queue, workers, worker_timeout",
    ),
    Hook(
        "dramatiq.worker:Worker.start",
        "workers.dramatiq_ext.loop_worker:LoopWorker._add_worker",
        "relies",
        "a38966ec10625619",
        "start() calls _add_worker() once per worker thread: LoopWorker adds its one feeder",
    ),
    Hook(
        "dramatiq.worker:Worker.stop",
        "workers.dramatiq_ext.loop_worker:LoopWorker.stop",
        "relies",
        "828e9d76a1b6c270",
        "stop() calls stop() on each thread in self.consumers; LoopWorker wraps it to wake them",
    ),
    Hook(
        "dramatiq.worker:ConsumerThread.stop",
        "workers.dramatiq_ext.loop_worker:LoopWorker.stop",
        "relies",
        "c59d813e360bb8de",
        "stop() only clears running; the thread's .consumer (ours) then waits out its wake event",
    ),
    Hook(
        "dramatiq.worker:ConsumerThread.run",
        "workers.dramatiq_ext.broker:LaneBroker.consume",
        "relies",
        "81230263041a9692",
        "consume(queue_name=, prefetch=, timeout=) per (re)connect; a reconnect replaces it",
    ),
    Hook(
        "dramatiq.worker:ConsumerThread.post_process_message",
        "workers.dramatiq_ext.loop_worker:LoopFeeder._end_group",
        "relies",
        "6825a135ce61973f",
        "the feeder acks or nacks through it, like a WorkerThread; for a message that did not "
        "fail it is emit_before('ack'), consumer.ack, emit_after('ack'): with no ack hooks and "
        "a consumer whose ack only queues, _end_group calls the consumer's ack directly",
    ),
    Hook(
        "dramatiq.worker:Worker._add_consumer",
        "workers.dramatiq_ext.loop_worker:LoopWorker._add_consumer",
        "relies",
        "e8eb96f10bd1a24d",
        "it makes (and starts) the ConsumerThread of a queue as self.consumers[queue_name], "
        "which LoopWorker then gives its delay-queue fast path",
    ),
    Hook(
        "dramatiq.worker:ConsumerThread.handle_delayed_messages",
        "workers.dramatiq_ext.loop_worker:_delayed_if_any",
        "relies",
        "9b27ee97868e2f0f",
        "it only moves items of self.delay_queue whose eta passed, so an empty delay queue "
        "means nothing to do; only the consumer thread itself puts into that queue; it runs "
        "after each of the consumer's __next__, idle or not (BatchAckConsumer._until_due)",
    ),
    Hook(
        "dramatiq.message:Message.decode",
        "workers.dramatiq_ext.consumer:decode",
        "copy",
        "16e6b6943c3fc9dc",
        "fields = the encoder's decode(data), args made a tuple, cls(**fields), any error a "
        "DecodeError; the copy fills a Message's __dict__ when data has exactly its fields",
    ),
    Hook(
        "dramatiq.middleware.asyncio:AsyncIO",
        "workers.dramatiq_ext.middleware:AsyncIOLoop",
        "copy",
        "2d5915161fb973aa",
        "a 5 s loop start timeout, and a shutdown that tolerates a loop that never started",
    ),
    Hook(
        "dramatiq.broker:Broker.emit_before",
        "workers.dramatiq_ext.broker:LaneBroker.emit_before",
        "copy",
        "ed466cf18c1273ac",
        "same order and error handling, calling only the middleware that implement the hook",
    ),
    Hook(
        "dramatiq.broker:Broker.emit_after",
        "workers.dramatiq_ext.broker:LaneBroker.emit_after, "
        "workers.dramatiq_ext.middleware:WaitForRedis",
        "copy",
        "ce7f062f618b1c95",
        "after_* hooks run in reverse order (WaitForRedis, added after Retries, runs first) "
        "and their errors are logged; the copy calls only the middleware implementing the hook",
    ),
    Hook(
        "dramatiq.broker:Broker.add_middleware",
        "workers.dramatiq_ext.broker:LaneBroker.add_middleware",
        "relies",
        "e97023b9289a4a34",
        "every middleware (those given to __init__ too) is added through it: the emitters' "
        "cached lists are cleared there",
    ),
    Hook(
        "dramatiq.middleware.middleware:Middleware",
        "workers.dramatiq_ext.broker:implements",
        "relies",
        "454fa5c0dc604c2d",
        "its before_*/after_* methods are empty: a middleware inheriting one need not be called",
    ),
    Hook(
        "dramatiq.middleware.retries:Retries.after_process_message",
        "workers.dramatiq_ext.middleware:WaitForRedis",
        "relies",
        "89048cf1d81b4581",
        "Retries re-enqueues on failure and emit_after swallows that enqueue's error",
    ),
    Hook(
        "dramatiq.worker:_WorkQueueItem",
        "workers.dramatiq_ext.loop_worker:LoopFeeder._take, "
        "workers.dramatiq_ext.consumer:BatchAckConsumer._until_due",
        "relies",
        "42aadef56603649d",
        "work queue items carry the MessageProxy as `.message`; a delay queue's item has its "
        "eta (ms) as `.priority`, so the heap's first is the next due",
    ),
    Hook(
        "dramatiq.worker:ConsumerThread.handle_message",
        "workers.dramatiq_ext.work_queue:LaneQueue",
        "relies",
        "2847d6772b413e5f",
        "a message without eta goes to `work_queue.put(_WorkQueueItem(actor.priority, message))`",
    ),
    Hook(
        "dramatiq.asyncio:EventLoopThread",
        "workers.dramatiq_ext.middleware:AsyncIOLoop",
        "relies",
        "1ff80b8db0b67655",
        "start(timeout=), stop(), .loop (set before start): the loop LoopFeeder hands messages to",
    ),
    Hook(
        "dramatiq.common:compute_backoff",
        "workers.dramatiq_ext.consumer:BatchAckConsumer.__next__",
        "relies",
        "d236dbb2e4313c16",
        "(misses, max_backoff=) -> (misses + 1, backoff_ms): the idle poll's wait",
    ),
    Hook(
        "dramatiq.common:dq_name",
        "workers.protocol.lanes:delay_queue, workers.dramatiq_ext.heartbeat:Heartbeat.beat",
        "relies",
        "4b62771aca29830b",
        "a queue's delay queue is `<queue>.DQ` (the protocol's envelope and Heartbeat use it)",
    ),
)


def resolve(target: str) -> Any:
    """The object named "module:qualname" (for the tests: no private name is imported)."""
    module_name, _, name = target.partition(":")
    obj: Any = importlib.import_module(module_name)
    for part in name.split("."):
        obj = getattr(obj, part)
    return obj


def upstream_source(upstream: str) -> str:
    """The installed dramatiq's source of `upstream` ("module:qualname" or "module:x.lua")."""
    module_name, _, name = upstream.partition(":")
    if name.endswith(".lua"):  # dramatiq keeps its scripts in a folder named like the module
        module = importlib.import_module(module_name)
        return (Path(inspect.getfile(module)).with_suffix("") / name).read_text()
    return textwrap.dedent(inspect.getsource(resolve(upstream)))


def digest(upstream: str) -> str:
    """sha256 (first 16 hex digits) of the installed source of `upstream`."""
    return hashlib.sha256(upstream_source(upstream).encode()).hexdigest()[:16]


def main() -> None:
    """Print each hook's recorded and installed digest (to update HOOKS after a port)."""
    import dramatiq

    print(f"recorded from dramatiq {READ_FROM}; installed {dramatiq.__version__}")
    for hook in HOOKS:
        now = digest(hook.upstream)
        mark = "same   " if now == hook.digest else "CHANGED"
        print(f"{mark} {hook.kind:7} {hook.upstream:60} {hook.digest} -> {now}")


if __name__ == "__main__":
    main()
