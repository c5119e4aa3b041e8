"""dramatiq broker wiring: Redis from REDIS_URL, orjson, tuned heartbeats, one async actor."""

from __future__ import annotations

import contextlib
import logging
import threading
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import dramatiq
import redis
from dramatiq.asyncio import EventLoopThread, get_event_loop_thread, set_event_loop_thread
from dramatiq.broker import Broker, MessageProxy
from dramatiq.brokers.redis import RedisBroker
from dramatiq.common import current_millis, dq_name
from dramatiq.middleware import Middleware, Retries

from schemas.config import AppConfig
from schemas.settings import Settings
from workers import encoder
from workers.acks import AckBatcher, BatchAckConsumer
from workers.protocol.connection import wait_for_redis
from workers.protocol.keys import WAKE_CHANNEL, Keys
from workers.protocol.lanes import ACTORS, LANES, queue_name

log = logging.getLogger("batchyard.broker")


class AsyncIOLoop(Middleware):
    """The event loop thread `LoopWorker` runs jobs on (dramatiq's AsyncIO middleware with a
    5 s start timeout instead of 1 s, which a loaded machine can miss, and a shutdown that
    tolerates a loop that never started)."""

    def before_worker_boot(self, broker: Broker, worker: dramatiq.Worker) -> None:
        thread = EventLoopThread(log)
        thread.start(timeout=5.0)
        set_event_loop_thread(thread)

    def after_worker_shutdown(self, broker: Broker, worker: dramatiq.Worker) -> None:
        thread = get_event_loop_thread()
        if thread is not None:
            thread.stop()  # type: ignore[no-untyped-call]
            thread.join()
            set_event_loop_thread(None)


class Waker(threading.Thread):
    """Wakes the idle consumers of a queue when a producer announces it has filled it.

    One pub/sub connection per process, on the channel the enqueue scripts publish to. A
    notice lost while reconnecting costs at most one idle poll, never a message.
    """

    def __init__(self, broker: LaneBroker) -> None:
        super().__init__(name="batchyard-waker", daemon=True)
        self.broker = broker
        self.channel = f"{broker.namespace}:{WAKE_CHANNEL}"
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.is_set():
            pubsub = self.broker.client.pubsub(ignore_subscribe_messages=True)
            try:
                pubsub.subscribe(self.channel)
                while not self.stopped.is_set():
                    notice = pubsub.get_message(timeout=0.5)
                    if notice is not None:
                        self.wake(notice["data"])
            except redis.RedisError as exc:
                log.debug("wake-up channel lost (%s); resubscribing", exc)
                self.stopped.wait(1.0)
            finally:
                with contextlib.suppress(redis.RedisError):
                    pubsub.close()

    def wake(self, queue: bytes | str) -> None:
        """Set the wake event of every consumer of `queue`."""
        name = queue.decode() if isinstance(queue, bytes) else queue
        for event in self.broker.wake_events.get(name, ()):
            event.set()

    def stop(self) -> None:
        """Stop within half a second."""
        self.stopped.set()


class LaneBroker(RedisBroker):
    """RedisBroker whose consumers poll idle queues at most `idle_poll_ms` apart, wake when a
    producer fills their queue, and hand their acks to one `AckBatcher` (`workers.acks`).

    dramatiq would back idle consumers off to the worker timeout (1 s here): a batch arriving
    on an idle lane would wait that long, which priority and fairness must not cost. The
    default and its reasons are `Settings.idle_poll_ms`.
    """

    def __init__(self, *args: Any, idle_poll_ms: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[no-untyped-call]
        self.idle_poll_ms = idle_poll_ms
        self.acks = AckBatcher(self)
        self.wake_events: dict[str, list[threading.Event]] = {}
        self.waker: Waker | None = None

    def consume(self, queue_name: str, prefetch: int = 1, timeout: int = 5000) -> Any:
        """A consumer of `queue_name` that backs off no longer than `idle_poll_ms` (in place
        of dramatiq's worker timeout)."""
        consumer = BatchAckConsumer(self, queue_name, prefetch, self.idle_poll_ms, self.acks)
        self.wake_events.setdefault(queue_name, []).append(consumer.wake)
        if self.waker is None:
            self.waker = Waker(self)
            self.waker.start()
        return consumer

    def close(self) -> None:
        """Stop the waker, send queued acks, then close the connection pool."""
        if self.waker is not None:
            self.waker.stop()
            self.waker.join(timeout=2)
        self.acks.close()
        super().close()


class WaitForRedis(Middleware):
    """Holds a job that failed because Redis went away until Redis answers again.

    On such a failure dramatiq's Retries re-enqueues the message and the worker then acks the
    original. With Redis still down the re-enqueue fails (dramatiq logs and swallows it) while
    the ack is retried until Redis is back: the request was lost. Waiting here first (this
    hook runs before Retries') lets the re-enqueue succeed.
    """

    def __init__(self, url: str, give_up_s: float) -> None:
        self.url = url
        self.give_up_s = give_up_s

    def after_process_message(
        self,
        broker: Broker,
        message: MessageProxy,
        *,
        result: Any = None,
        exception: BaseException | None = None,
    ) -> None:
        if isinstance(exception, redis.ConnectionError | redis.TimeoutError):
            wait_for_redis(self.url, give_up_s=self.give_up_s)


def build_broker(settings: Settings, *, pool_size: int = 32, retries: int = 20) -> RedisBroker:
    """A RedisBroker whose dead-worker recovery takes seconds, not dramatiq's ~15 minutes."""
    if settings.redis_url is None:
        raise ValueError("REDIS_URL is not set")
    encoder.install()
    pool = redis.BlockingConnectionPool.from_url(
        settings.redis_url, max_connections=pool_size, timeout=30, health_check_interval=30
    )
    broker = LaneBroker(
        idle_poll_ms=settings.idle_poll_ms,
        client=redis.Redis(connection_pool=pool),
        namespace=Keys(settings.namespace).dramatiq_ns,
        heartbeat_timeout=settings.heartbeat_timeout_ms,
        # Maintenance is driven by `Heartbeat` below; the random trigger stays as a backstop.
        maintenance_chance=10_000,
        middleware=[
            AsyncIOLoop(),
            # Only infrastructure failures (Redis down mid-write) reach dramatiq's retries:
            # provider errors are handled by batchyard's own policy inside the actor.
            Retries(max_retries=retries, min_backoff=500, max_backoff=30_000),
            WaitForRedis(settings.redis_url, settings.redis_wait_s),
        ],
    )
    return broker


def declare(
    broker: RedisBroker, config: AppConfig, fn: Callable[[dict[str, Any]], Awaitable[None]]
) -> list[dramatiq.Actor[[dict[str, Any]], Awaitable[None]]]:
    """Register the execute actor of each priority and every lane queue of every endpoint.

    The actors share one body; their dramatiq priorities make a worker take prefetched
    high-priority messages before normal ones, and normal ones before low ones.
    """
    first = next(iter(config.endpoints))
    actors: list[dramatiq.Actor[[dict[str, Any]], Awaitable[None]]] = [
        dramatiq.Actor(
            fn,
            broker=broker,
            actor_name=name,
            queue_name=queue_name(first, "" if level == "normal" else f"@{level}"),
            priority=priority,
            options={},
        )
        for level, (name, priority) in ACTORS.items()
    ]
    for endpoint in config.endpoints:
        for lane in LANES:
            broker.declare_queue(queue_name(endpoint, lane))
    return actors


class Heartbeat(threading.Thread):
    """Keeps this worker's heartbeat fresh and requeues messages of dead workers.

    dramatiq refreshes heartbeats only when a consumer talks to Redis, and runs maintenance
    on a random 0.1% of commands: a worker busy with long calls can look dead, and a dead
    worker's messages can wait many minutes. This thread does both on a fixed interval.
    """

    def __init__(self, broker: RedisBroker, interval_s: float) -> None:
        super().__init__(name="batchyard-heartbeat", daemon=True)
        self.broker = broker
        self.interval_s = interval_s
        self.stopped = threading.Event()
        self.redis_run_id: str | None = None
        # Read before the consumers' first fetch, so a restart after it is noticed.
        with contextlib.suppress(redis.RedisError):
            self.redis_run_id = self._run_id()

    def run(self) -> None:
        while not self.stopped.wait(self.interval_s):
            try:
                self.beat()
            except redis.RedisError as exc:
                log.warning("heartbeat failed (%s); retrying in %.0fs", exc, self.interval_s)

    def _run_id(self) -> str:
        return str(self.broker.client.info("server")["run_id"])

    def check_restart(self) -> None:
        """Take a new worker id when Redis has restarted (its run_id changed).

        A crash loses up to a second of writes. If it lost a result and the message's ack
        but not the fetch before them, the message sits in this live worker's ack set and
        nothing would ever run it again. Under a new id the old set belongs to a worker whose
        heartbeat stops: maintenance puts its messages back on their queues after the
        heartbeat timeout. Messages still in flight are acked in the set they came from.
        """
        run_id = self._run_id()
        if self.redis_run_id is not None and run_id != self.redis_run_id:
            old = self.broker.broker_id
            self.broker.broker_id = str(uuid.uuid4())
            log.warning(
                "Redis restarted: worker id %s -> %s; messages fetched before the restart "
                "and not acked return to their queues after the heartbeat timeout",
                old,
                self.broker.broker_id,
            )
        self.redis_run_id = run_id

    def beat(self) -> None:
        """One round: notice a Redis restart, refresh this worker's heartbeat and run
        maintenance on every queue."""
        self.check_restart()
        script = self.broker.scripts["dispatch"]
        unpack = self.broker._max_unpack_size()  # type: ignore[no-untyped-call]
        for queue in sorted(self.broker.get_declared_queues()):
            for name in (queue, dq_name(queue)):
                args = [
                    "qsize",
                    current_millis(),
                    name,
                    self.broker.broker_id,
                    self.broker.heartbeat_timeout,
                    self.broker.dead_message_ttl,
                    1,
                    unpack,
                ]
                script(args=args, keys=[self.broker.namespace])

    def stop(self) -> None:
        """Stop after the current round."""
        self.stopped.set()
