"""LoopWorker and AckBatcher against a real redis-server: concurrency bound, retries, drain,
and acks sent in groups."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from queue import PriorityQueue
from typing import Any

import dramatiq
import pytest
import redis
from dramatiq.asyncio import get_event_loop_thread
from dramatiq.message import Message

from schemas.settings import Settings
from tests.conftest import wait_for_aof, wakeups
from workers.broker import build_broker
from workers.dramatiq_ext import BatchAckConsumer, LaneBroker, LoopWorker, Waker
from workers.redis_server import RedisServer


@pytest.fixture
def broker(redis_server: RedisServer) -> Iterator[LaneBroker]:
    b = build_broker(Settings(redis_url=redis_server.url), retries=3)
    assert isinstance(b, LaneBroker)
    yield b


def enqueue(broker: LaneBroker, n: int, actor: str = "t", queue: str = "q") -> None:
    for i in range(n):
        broker.enqueue(Message(queue, actor, ({"i": i},), {}, {}))


def run_jobs(
    broker: LaneBroker, fn: Callable[[dict[str, Any]], Any], *, jobs: int, concurrency: int
) -> LoopWorker:
    """`fn` as actor "t" of queue "q", `jobs` messages queued, and a LoopWorker running them."""
    dramatiq.Actor(fn, broker=broker, actor_name="t", queue_name="q", priority=0, options={})
    enqueue(broker, jobs)
    worker = LoopWorker(broker, fn, concurrency=concurrency, worker_timeout=100)
    worker.start()
    return worker


def wait_for(cond: Callable[[], bool], timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def leftovers(broker: LaneBroker, queue: str = "q") -> tuple[int, int, int]:
    """(queued ids, stored message bodies, ids still waiting for an ack) in Redis."""
    client: redis.Redis = broker.client
    ns = broker.namespace
    acks = sum(client.scard(k) for k in client.scan_iter(f"{ns}:__acks__.*"))
    return client.llen(f"{ns}:{queue}"), client.hlen(f"{ns}:{queue}.msgs"), acks


class Gated:
    """A job that holds its slot until `open()`, counting how many run at once."""

    def __init__(self) -> None:
        self.now = self.peak = 0
        self.done: list[int] = []
        self.gate: asyncio.Event | None = None

    async def __call__(self, payload: dict[str, Any]) -> None:
        self.now += 1
        self.peak = max(self.peak, self.now)
        if self.gate is None:
            self.gate = asyncio.Event()  # made on the loop that waits for it
        await self.gate.wait()
        self.now -= 1
        self.done.append(payload["i"])

    def open(self) -> None:
        loop = get_event_loop_thread()
        assert loop is not None and self.gate is not None
        loop.loop.call_soon_threadsafe(self.gate.set)


def test_runs_every_message_on_the_loop_never_more_than_concurrency(broker: LaneBroker) -> None:
    jobs = Gated()
    done = jobs.done
    worker = run_jobs(broker, jobs, jobs=300, concurrency=7)
    try:
        # Given 300 queued jobs that block, 7 run at once and no more start,
        wait_for(lambda: jobs.now >= 7)
        wait_for(lambda: leftovers(broker)[0] < 300 - 7)  # more than 7 are fetched
        assert (jobs.now, jobs.peak) == (7, 7)
        assert done == []
        # and once they may finish, all 300 run, still at most 7 at a time.
        jobs.open()
        wait_for(lambda: len(done) == 300)
        assert broker.acks.flush(10)
        # A finished job's task is not kept (each task drops its own entry as it ends).
        feeder = worker.workers[0]
        wait_for(lambda: feeder.running_count == 0)
        assert feeder._tasks == {}
    finally:
        worker.stop(timeout=10_000)
        broker.close()
    assert sorted(done) == list(range(300))
    assert jobs.peak == 7
    assert leftovers(broker) == (0, 0, 0)


def test_slots_that_end_go_to_waiting_messages_from_the_loop(
    broker: LaneBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    from workers.dramatiq_ext.loop_worker import LoopFeeder

    fed: list[int] = []
    take = LoopFeeder._take

    def counted(feeder: LoopFeeder) -> list[Any]:
        burst = take(feeder)
        fed.append(len(burst))
        return burst

    monkeypatch.setattr(LoopFeeder, "_take", counted)
    jobs = Gated()
    done = jobs.done
    # Given 300 queued jobs, 5 slots, and the work queue filled while the first 5 hold them,
    worker = run_jobs(broker, jobs, jobs=300, concurrency=5)
    try:
        wait_for(lambda: jobs.now >= 5)
        wait_for(lambda: worker.work_queue.qsize() >= 5)
        # when the jobs may finish,
        jobs.open()
        wait_for(lambda: len(done) == 300)
    finally:
        worker.stop(timeout=10_000)
        broker.close()
    # then all 300 ran, never more than 5 at a time, and the loop started most of them as
    # slots ended: the feeder thread handed over only those it found slots for (the first
    # ones, and any that arrived while the work queue was empty).
    assert sorted(done) == list(range(300))
    assert jobs.peak == 5
    assert sum(fed) < 300
    assert leftovers(broker) == (0, 0, 0)


def test_acks_piling_up_during_a_send_go_to_redis_in_one_call(
    broker: LaneBroker, redis_server: RedisServer
) -> None:
    # Given 300 fetched messages and Redis holding the ack thread's first call,
    enqueue(broker, 300)
    consumer = broker.consume("q", prefetch=300, timeout=100)
    messages = [next(consumer) for _ in range(300)]
    assert all(m is not None for m in messages)
    admin = redis.Redis.from_url(redis_server.url)
    admin.execute_command("CLIENT", "PAUSE", 30_000, "WRITE")
    try:
        # when 300 acks arrive one by one meanwhile,
        for m in messages:
            consumer.ack(m)
    finally:
        admin.execute_command("CLIENT", "UNPAUSE")
        admin.close()
    # then the ones that piled up behind the held call go in one more call, not one each.
    assert broker.acks.flush(10)
    assert broker.acks.sent == 300
    assert 1 <= broker.acks.calls <= 2
    assert leftovers(broker) == (0, 0, 0)
    broker.close()


def test_acks_added_in_a_group_reach_redis_together_after_it(broker: LaneBroker) -> None:
    # Given 50 fetched messages,
    enqueue(broker, 50)
    consumer = broker.consume("q", prefetch=50, timeout=100)
    messages = [next(consumer) for _ in range(50)]
    assert all(m is not None for m in messages)
    # when they are acked in one group, nothing is sent while the group is open,
    with broker.acks.group():
        for m in messages:
            consumer.ack(m)
        assert (broker.acks.sent, broker.acks.calls) == (0, 0)
    # and the whole group goes in one call once it is closed.
    assert broker.acks.flush(10)
    assert (broker.acks.sent, broker.acks.calls) == (50, 1)
    assert leftovers(broker) == (0, 0, 0)
    broker.close()


def test_a_full_consumer_fetches_again_once_a_quarter_of_its_prefetch_is_acked(
    broker: LaneBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    from workers.dramatiq_ext import consumer as consumer_module

    monkeypatch.setattr(consumer_module, "FULL_WAIT_MS", 60_000)
    # Given 20 queued messages and a consumer holding its whole prefetch of 8,
    enqueue(broker, 20)
    consumer = broker.consume("q", prefetch=8, timeout=100)
    held = [next(consumer) for _ in range(8)]
    assert all(m is not None for m in held)
    assert leftovers(broker)[0] == 12
    assert consumer.refill_at == 6
    # when one is acked, it does not fetch for that one free place (a fetch per ack was
    # dramatiq's way) ...
    consumer.ack(held[0])
    assert not consumer.wake.is_set()
    # ... and when a second is, the quarter is free: the ack wakes a waiting consumer at
    # once (its full wait here is a minute), which fetches 2 messages in one call.
    fetched: list[object] = []
    waiting = threading.Thread(target=lambda: fetched.append(next(consumer)), daemon=True)
    waiting.start()
    consumer.ack(held[1])
    waiting.join(timeout=10)
    assert not waiting.is_alive(), "the ack did not wake the full consumer"
    assert fetched == [None]
    assert next(consumer) is not None
    assert leftovers(broker)[0] == 10
    broker.close()


def test_acks_wait_briefly_for_more_unless_enough_are_queued_or_a_flush_asks(
    broker: LaneBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    from workers.dramatiq_ext import acks as acks_module

    monkeypatch.setattr(acks_module, "LINGER_S", 60.0)
    monkeypatch.setattr(acks_module, "LINGER_UNTIL", 10)
    enqueue(broker, 15)
    consumer = broker.consume("q", prefetch=15, timeout=100)
    messages = [next(consumer) for _ in range(15)]
    assert all(m is not None for m in messages)
    # Given acks that wait up to a minute for 10 to go together: 10 go at once,
    for m in messages[:10]:
        consumer.ack(m)
    wait_for(lambda: broker.acks.sent == 10)
    assert broker.acks.calls == 1
    # and 5 more, which would wait for 5 others, are sent when a flush asks.
    for m in messages[10:]:
        consumer.ack(m)
    assert broker.acks.flush(10), "the flush waited out the linger"
    assert (broker.acks.sent, broker.acks.calls) == (15, 2)
    assert leftovers(broker) == (0, 0, 0)
    broker.close()


def test_an_ack_that_fails_neither_blocks_its_slot_nor_the_others_acks(
    broker: LaneBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    ran: list[int] = []
    ack = BatchAckConsumer.ack

    def flaky(consumer: BatchAckConsumer, message: Any) -> None:
        if message.args[0]["i"] == 0:
            raise RuntimeError("ack lost")
        ack(consumer, message)

    monkeypatch.setattr(BatchAckConsumer, "ack", flaky)

    async def fn(payload: dict[str, Any]) -> None:
        ran.append(payload["i"])

    # Given one slot and five messages, the first of which cannot be acked,
    worker = run_jobs(broker, fn, jobs=5, concurrency=1)
    try:
        # then all five still run one after the other (the failed ack freed its slot),
        wait_for(lambda: len(ran) == 5)
        assert broker.acks.flush(10)
        wait_for(lambda: worker.workers[0].running_count == 0)
    finally:
        worker.stop(timeout=10_000)
        broker.close()
    assert sorted(ran) == [0, 1, 2, 3, 4]
    # and only the unacked one is left in the ack set (redelivered after a restart).
    assert leftovers(broker) == (0, 1, 1)


def test_a_failing_message_goes_through_dramatiq_retries(broker: LaneBroker) -> None:
    calls: dict[int, int] = {}

    async def fn(payload: dict[str, Any]) -> None:
        i = payload["i"]
        calls[i] = calls.get(i, 0) + 1
        if i == 3 and calls[i] == 1:
            raise RuntimeError("first try fails")

    worker = run_jobs(broker, fn, jobs=5, concurrency=4)
    try:
        wait_for(lambda: calls.get(3) == 2)
        wait_for(lambda: leftovers(broker)[1] == 0)
    finally:
        worker.stop(timeout=10_000)
        broker.close()
    assert calls == {0: 1, 1: 1, 2: 1, 3: 2, 4: 1}
    assert leftovers(broker) == (0, 0, 0)


def test_stop_lets_running_jobs_finish_and_puts_the_rest_back(broker: LaneBroker) -> None:
    started: list[int] = []
    finished: list[int] = []

    async def fn(payload: dict[str, Any]) -> None:
        started.append(payload["i"])
        await asyncio.sleep(0.3)
        finished.append(payload["i"])

    worker = run_jobs(broker, fn, jobs=20, concurrency=3)
    wait_for(lambda: len(started) == 3)
    worker.stop(timeout=10_000)
    broker.close()
    assert sorted(finished) == sorted(started)  # nothing in flight was dropped
    queued, bodies, unacked = leftovers(broker)
    # The prefetched but unstarted messages are back on the queue; nothing is left unacked.
    assert (queued, bodies, unacked) == (20 - len(finished), 20 - len(finished), 0)


def test_a_feeder_with_every_slot_taken_sleeps_until_stopped(broker: LaneBroker) -> None:
    release = threading.Event()
    started: list[int] = []

    async def fn(payload: dict[str, Any]) -> None:
        started.append(payload["i"])
        await asyncio.to_thread(release.wait, 30)

    worker = run_jobs(broker, fn, jobs=3, concurrency=1)
    worker.worker_timeout = 60_000
    feeder = worker.workers[0]
    feeder.timeout = 60.0  # its longest wait for a slot
    stopper = threading.Thread(target=lambda: worker.stop(timeout=30_000), daemon=True)
    try:
        # Given a feeder whose only slot is taken by a running job, with messages waiting,
        wait_for(lambda: started == [0])
        # it sleeps: no wake-ups while the slot is taken (it woke every 20 ms, each time
        # taking the GIL from the event loop),
        time.sleep(0.1)  # past the wait it may have been in
        before = wakeups(feeder)
        time.sleep(0.5)
        assert wakeups(feeder) - before <= 2
        # and when the worker stops, the feeder ends its wait at once, lets the running job
        # finish and starts no other.
        stopper.start()
        wait_for(lambda: not feeder.running)
        release.set()
        stopper.join(timeout=10)
        assert not stopper.is_alive(), "stop waited out the feeder's wait for a slot"
        assert started == [0]
    finally:
        release.set()
        if stopper.ident is None:
            worker.stop(timeout=10_000)
        broker.close()


def test_stop_ends_the_wakers_wait_for_a_notice_at_once(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(Waker, "POLL_S", 60.0)
    broker = build_broker(Settings(redis_url=redis_server.url))
    assert isinstance(broker, LaneBroker)
    try:
        # Given a waker subscribed and waiting for a notice (up to a minute),
        broker.consume("q")
        waker = broker.waker
        assert waker is not None
        wait_for(lambda: broker.client.pubsub_numsub(waker.channel)[0][1] >= 1)
        # when it is stopped, it ends at once, and quietly.
        waker.stop()
        waker.join(timeout=10)
        assert not waker.is_alive(), "the waker slept out its wait"
    finally:
        broker.close()


def test_acks_queued_while_redis_is_down_land_when_it_is_back() -> None:
    with RedisServer(appendonly=True) as server:
        broker = build_broker(Settings(redis_url=server.url))
        assert isinstance(broker, LaneBroker)
        broker.acks.retry_s = 0.1
        enqueue(broker, 10)
        consumer = broker.consume("q", prefetch=10, timeout=100)
        messages = [next(consumer) for _ in range(10)]
        assert all(m is not None for m in messages)
        assert leftovers(broker) == (0, 10, 10)
        wait_for_aof(server.url)  # the fetch survives the crash
        server.crash()
        for m in messages:
            consumer.ack(m)
        assert not broker.acks.flush(0.5)  # nothing can land yet, and nothing is dropped
        server.start()
        assert broker.acks.flush(20)
        assert broker.acks.sent == 10
        assert leftovers(broker) == (0, 0, 0)
        broker.close()


def test_a_wake_notice_ends_an_idle_consumers_longest_wait(redis_server: RedisServer) -> None:
    broker = build_broker(Settings(redis_url=redis_server.url, idle_poll_ms=60_000))
    assert isinstance(broker, LaneBroker)
    # Given an idle consumer backed off to its longest wait (30 to 60 s),
    consumer = broker.consume("q")
    consumer.misses = 40
    fetched: list[object] = []
    waiting = threading.Thread(target=lambda: fetched.append(next(consumer)), daemon=True)
    waiting.start()
    try:
        assert broker.waker is not None
        channel = broker.waker.channel
        wait_for(lambda: broker.client.pubsub_numsub(channel)[0][1] >= 1)
        # when a producer announces it filled the consumer's queue,
        broker.client.publish(channel, "q")
        # then the consumer stops waiting at once, ready to fetch.
        waiting.join(timeout=10)
        assert not waiting.is_alive(), "the consumer slept through the wake-up"
        assert fetched == [None] and consumer.misses == 0
    finally:
        broker.close()


def test_stop_ends_an_idle_consumers_longest_wait(redis_server: RedisServer) -> None:
    broker = build_broker(Settings(redis_url=redis_server.url, idle_poll_ms=60_000))
    assert isinstance(broker, LaneBroker)

    async def fn(payload: dict[str, Any]) -> None:
        return None

    dramatiq.Actor(fn, broker=broker, actor_name="t", queue_name="q", priority=0, options={})
    worker = LoopWorker(broker, fn, concurrency=1, worker_timeout=60_000)
    worker.start()
    stopper = threading.Thread(target=lambda: worker.stop(timeout=30_000), daemon=True)
    try:
        # Given an idle consumer backed off to its longest wait (30 to 60 s),
        consumers = [t for t in worker.consumers.values() if t.queue_name == "q"]
        wait_for(lambda: getattr(consumers[0], "consumer", None) is not None)
        consumer = consumers[0].consumer
        consumer.misses = 40
        wait_for(lambda: consumer.misses == 41)  # it went back to sleep with that backoff
        # when the worker stops,
        stopper.start()
        # then the consumer ends at once instead of sleeping out its backoff.
        stopper.join(timeout=10)
        assert not stopper.is_alive(), "stop waited for the idle consumer's backoff"
    finally:
        if stopper.ident is None:
            worker.stop(timeout=10_000)
        broker.close()


def idle_wait(broker: LaneBroker, queue: str) -> tuple[threading.Thread, list[object]]:
    """A consumer of `queue` backed off to its longest wait (30 to 60 s), waiting in a thread."""
    consumer = broker.consume(queue)
    consumer.misses = 40
    fetched: list[object] = []
    waiting = threading.Thread(target=lambda: fetched.append(next(consumer)), daemon=True)
    waiting.start()
    wait_for(lambda: consumer.misses > 40)  # its fetch found nothing: it waits (or is set)
    return waiting, fetched


def next_notice(listener: redis.client.PubSub, timeout_s: float = 10) -> object:
    """The data of the next message on `listener`'s channel (None: none within timeout_s)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        notice = listener.get_message(timeout=0.5)
        if notice is not None:
            return notice["data"]
    return None


def test_an_enqueue_wakes_the_idle_consumers_of_its_queue_here_and_in_other_workers(
    redis_server: RedisServer,
) -> None:
    broker = build_broker(Settings(redis_url=redis_server.url, idle_poll_ms=60_000))
    assert isinstance(broker, LaneBroker)
    listener = broker.client.pubsub(ignore_subscribe_messages=True)
    listener.subscribe(broker.wake_channel)
    # Given an idle consumer of "q" at its longest wait, and another worker listening,
    waiting, fetched = idle_wait(broker, "q")
    try:
        # when dramatiq enqueues on "q" (a delayed message falling due, a Retries re-run),
        broker.enqueue(Message("q", "t", ({"i": 0},), {}, {}))
        # then the consumer stops waiting at once, ready to fetch it,
        waiting.join(timeout=10)
        assert not waiting.is_alive(), "the consumer slept through the enqueue"
        assert fetched == [None]
        # and the other workers hear of it.
        assert next_notice(listener) == b"q"
    finally:
        listener.close()
        broker.close()


def test_an_idle_consumer_holding_a_delayed_message_wakes_when_it_falls_due(
    redis_server: RedisServer,
) -> None:
    from dramatiq.worker import _WorkQueueItem

    broker = build_broker(Settings(redis_url=redis_server.url, idle_poll_ms=60_000))
    assert isinstance(broker, LaneBroker)
    # Given a delay queue's consumer at its longest wait whose thread holds a message due
    # in 0.3 s (dramatiq moves it to its queue when the consumer's wait ends),
    held: PriorityQueue[Any] = PriorityQueue()
    due = int(time.time() * 1000) + 300
    held.put(_WorkQueueItem(due, Message("q.DQ", "t", (), {}, {"eta": due})))
    broker.held_delayed["q.DQ"] = held
    waiting, fetched = idle_wait(broker, "q.DQ")
    try:
        # then its wait ends when the message is due, not 30-60 s later.
        waiting.join(timeout=10)
        assert not waiting.is_alive(), "the consumer slept past a due delayed message"
        assert fetched == [None]
        assert time.time() * 1000 >= due - 5  # and not (much) before
    finally:
        broker.close()


@pytest.mark.parametrize("delay_ms", [0, 500])
def test_a_requeued_job_wakes_the_idle_consumers_of_its_queue(
    redis_server: RedisServer, delay_ms: int
) -> None:
    import redis.asyncio as aioredis

    from schemas.job import Job
    from workers.requeue import Requeuer

    broker = build_broker(Settings(redis_url=redis_server.url, idle_poll_ms=60_000))
    assert isinstance(broker, LaneBroker)
    listener = broker.client.pubsub(ignore_subscribe_messages=True)
    listener.subscribe(broker.wake_channel)
    job = Job.model_validate(
        {
            "batch_id": "b",
            "key": "k",
            "request": {"custom_id": "k", "messages": [{"role": "user", "content": "hi"}]},
            "route": [{"endpoint": "a"}, {"endpoint": "next"}],
            "hop": 1,
            "enqueued_at": 1.0,
        }
    )
    queue = "llm.next" + (".DQ" if delay_ms else "")
    # Given an idle consumer at its longest wait on the queue a failover hop or a delayed
    # retry of this job goes to, and another worker listening,
    waiting, fetched = idle_wait(broker, queue)

    async def requeue() -> None:
        client = aioredis.Redis.from_url(redis_server.url)
        try:
            await Requeuer(client, broker).enqueue(job, delay_ms=delay_ms)
        finally:
            await client.aclose()

    try:
        # when the job is queued again,
        asyncio.run(requeue())
        # then the consumer stops waiting at once, and the other workers hear of it.
        waiting.join(timeout=10)
        assert not waiting.is_alive(), "the consumer slept through the requeue"
        assert fetched == [None]
        assert next_notice(listener) == queue.encode()
    finally:
        listener.close()
        broker.close()


def test_a_worker_whose_event_loop_did_not_start_fetches_nothing(
    broker: LaneBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a loop that cannot start (dramatiq only logs its middleware's failure)
    monkeypatch.setenv("BATCHYARD_EVENT_LOOP", "no-such-loop")

    async def fn(payload: dict[str, Any]) -> None:
        raise AssertionError("no message may run")

    dramatiq.Actor(fn, broker=broker, actor_name="t", queue_name="q", priority=0, options={})
    enqueue(broker, 5)
    worker = LoopWorker(broker, fn, concurrency=2, worker_timeout=100)
    # the worker refuses to start, before any consumer took a message it could never run:
    # they stay queued for a worker that can (it used to hold them, unacked, until killed).
    with pytest.raises(
        ValueError, match="BATCHYARD_EVENT_LOOP='no-such-loop': must be 'uvloop' or 'asyncio'"
    ):
        worker.start()
    assert get_event_loop_thread() is None
    assert not worker.consumers
    assert leftovers(broker) == (5, 5, 0)
    broker.close()


class FailsAtBoot(dramatiq.Middleware):
    """A middleware whose boot fails, as `ExecutorLifecycle`'s does when a plugin cannot be
    built (dramatiq only logs such a failure)."""

    def before_worker_boot(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        raise RuntimeError("no licence server")


def test_a_worker_whose_boot_failed_fetches_nothing(broker: LaneBroker) -> None:
    ran: list[object] = []

    async def fn(payload: dict[str, Any]) -> None:
        ran.append(payload)

    broker.add_middleware(FailsAtBoot())
    dramatiq.Actor(fn, broker=broker, actor_name="t", queue_name="q", priority=0, options={})
    enqueue(broker, 5)
    worker = LoopWorker(broker, fn, concurrency=2, worker_timeout=100)
    # The worker refuses to start, naming the cause, before any consumer took a message
    # (it used to run them all, each failing, or hold them),
    with pytest.raises(RuntimeError, match=r"^no licence server$"):
        worker.start()
    assert not worker.consumers and not ran
    assert leftovers(broker) == (5, 5, 0)
    # and stopping it ends the loop its boot had started.
    worker.stop(timeout=2000)
    assert get_event_loop_thread() is None
    broker.close()
