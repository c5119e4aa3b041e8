"""LaneBroker: a RedisBroker whose idle consumers wake on a producer's notice and ack in groups."""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
from collections.abc import Callable
from queue import PriorityQueue
from typing import TYPE_CHECKING, Any

import redis
from dramatiq.brokers.redis import RedisBroker
from dramatiq.message import Message
from dramatiq.middleware import Middleware, MiddlewareError

from workers.dramatiq_ext.acks import AckBatcher
from workers.dramatiq_ext.consumer import BatchAckConsumer

if TYPE_CHECKING:
    from redis.client import PubSub

log = logging.getLogger("batchyard.broker")


class Waker(threading.Thread):
    """Wakes the idle consumers of a queue when a producer announces it has filled it.

    One pub/sub connection per process, on the broker's `wake_channel`. A notice lost while
    reconnecting costs at most one idle poll, never a message.
    """

    #: Longest wait for a notice. `stop` ends the wait at once (it shuts the connection's
    #: socket down); this bounds it only where it cannot. A wait of 20 ms, which a worker's
    #: exit waited out, woke this thread 50 times a second, each time taking the GIL from a
    #: busy worker's event loop (#22).
    POLL_S = 1.0

    def __init__(self, broker: LaneBroker) -> None:
        super().__init__(name="batchyard-waker", daemon=True)
        self.broker = broker
        self.channel = broker.wake_channel
        self.stopped = threading.Event()
        self._pubsub: PubSub | None = None

    def run(self) -> None:
        while not self.stopped.is_set():
            pubsub = self._pubsub = self.broker.client.pubsub(ignore_subscribe_messages=True)
            try:
                pubsub.subscribe(self.channel)
                while not self.stopped.is_set():
                    notice = pubsub.get_message(timeout=self.POLL_S)
                    if notice is not None:
                        self.wake(notice["data"])
            except (redis.RedisError, OSError) as exc:
                if not self.stopped.is_set():
                    log.debug("wake-up channel lost (%s); resubscribing", exc)
                self.stopped.wait(1.0)
            finally:
                with contextlib.suppress(redis.RedisError, OSError):
                    pubsub.close()

    def wake(self, queue: bytes | str) -> None:
        """Set the wake event of every consumer of `queue`."""
        self.broker.wake_local(queue.decode() if isinstance(queue, bytes) else queue)

    def stop(self) -> None:
        """Stop now: the thread's wait for a notice ends as its socket is shut down (a
        worker's exit waits for this thread)."""
        self.stopped.set()
        pubsub = self._pubsub
        sock = getattr(getattr(pubsub, "connection", None), "_sock", None)
        if isinstance(sock, socket.socket):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)  # not close: the thread still owns it


class LaneBroker(RedisBroker):
    """RedisBroker whose consumers poll idle queues at most `idle_poll_ms` apart, wake when a
    producer publishes their queue's name on `wake_channel`, and hand their acks to one
    `AckBatcher`.

    dramatiq would back idle consumers off to the worker timeout (1 s here): a batch arriving
    on an idle lane would wait that long, which priority and fairness must not cost. The
    default and its reasons are `Settings.idle_poll_ms`.
    """

    def __init__(self, *args: Any, idle_poll_ms: int, wake_channel: str, **kwargs: Any) -> None:
        #: hook name -> the middleware implementing it, in call order (see `emit_before`).
        #: Set first: dramatiq's `__init__` adds the middleware through `add_middleware`.
        self._implementing: dict[str, tuple[Middleware, ...]] = {}
        super().__init__(*args, **kwargs)  # type: ignore[no-untyped-call]
        self.idle_poll_ms = idle_poll_ms
        self.wake_channel = wake_channel
        self.acks = AckBatcher(self)
        #: queue -> redis message id -> worker id it was fetched under, shared by every
        #: consumer a queue ever has (see `BatchAckConsumer`).
        self.ack_owners: dict[str, dict[str, str]] = {}
        self.wake_events: dict[str, list[threading.Event]] = {}
        #: queue -> its consumer thread's delayed messages (dramatiq's heap, by eta): an idle
        #: consumer wakes when the next falls due (`BatchAckConsumer._until_due`).
        self.held_delayed: dict[str, PriorityQueue[Any]] = {}
        self.waker: Waker | None = None
        #: Called in the consumer thread with the first arguments (jobs) of each non-empty
        #: fetch's messages, before any of them is handed out: `workers.results.FetchCheck`
        #: asks Redis there whether their results are stored, so the executor need not await
        #: that per message.
        self.on_fetch: Callable[[list[Any]], None] | None = None
        #: The first failure of a `before_worker_boot` hook (dramatiq only logs them): a
        #: worker that did not boot starts no consumer (`LoopWorker._add_consumer`).
        self.boot_error: Exception | None = None

    def add_middleware(
        self,
        middleware: Middleware,
        *,
        before: type[Middleware] | None = None,
        after: type[Middleware] | None = None,
    ) -> None:
        """dramatiq's `add_middleware`; the emitters' lists are recomputed after it."""
        super().add_middleware(middleware, before=before, after=after)
        self._implementing.clear()

    def emit_before(self, signal: str, *args: Any, **kwargs: Any) -> None:
        """dramatiq's `emit_before`, calling only the middleware that implement the hook.

        dramatiq calls every middleware's hook, most of them `Middleware`'s empty methods:
        sixteen calls per job (four middleware; before/after process_message and ack), two
        of which do anything, ~3 % of the event loop's CPU (#22). Errors are handled as
        upstream: a `MiddlewareError` (SkipMessage) propagates, anything else is logged.
        """
        hook = "before_" + signal
        for middleware in self._hooks(hook, reverse=False):
            try:
                getattr(middleware, hook)(self, *args, **kwargs)
            except MiddlewareError:
                raise
            except Exception as exc:
                self.logger.critical(
                    "Unexpected failure in %s of %r.", hook, middleware, exc_info=True
                )
                if hook == "before_worker_boot" and self.boot_error is None:
                    self.boot_error = exc

    def emit_after(self, signal: str, *args: Any, **kwargs: Any) -> None:
        """dramatiq's `emit_after` (hooks in reverse order, errors logged), calling only the
        middleware that implement the hook (see `emit_before`)."""
        hook = "after_" + signal
        for middleware in self._hooks(hook, reverse=True):
            try:
                getattr(middleware, hook)(self, *args, **kwargs)
            except Exception:
                self.logger.critical(
                    "Unexpected failure in %s of %r.", hook, middleware, exc_info=True
                )

    def _hooks(self, hook: str, *, reverse: bool) -> tuple[Middleware, ...]:
        """The middleware whose `hook` is not `Middleware`'s empty one, in call order."""
        found = self._implementing.get(hook)
        if found is None:
            found = tuple(m for m in self.middleware if implements(m, hook))
            if reverse:
                found = found[::-1]
            self._implementing[hook] = found
        return found

    def enqueue(self, message: Message[Any], *, delay: int | None = None) -> Message[Any]:
        """dramatiq's `enqueue`, then the idle consumers of the queue it went to are woken
        (`announce`): the delayed messages dramatiq moves as they fall due and its `Retries`
        enqueue through here, unannounced until now; producers' scripts announce their own."""
        sent: Message[Any] = super().enqueue(message, delay=delay)
        self.announce(sent.queue_name)
        return sent

    def announce(self, queue: str) -> None:
        """Wake the idle consumers of `queue`: this process's at once, the others' over
        `wake_channel`. A hint: a lost one costs a wait of at most `idle_poll_ms`."""
        self.wake_local(queue)
        try:
            self.client.publish(self.wake_channel, queue)
        except redis.RedisError as exc:
            log.debug("wake-up of %s not published (%s)", queue, exc)

    def wake_local(self, queue: str) -> None:
        """Set the wake event of this process's consumers of `queue`."""
        for event in self.wake_events.get(queue, ()):
            event.set()

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


def implements(middleware: object, hook: str) -> bool:
    """Whether calling `middleware.<hook>` may do anything: False only for the empty method
    inherited from dramatiq's `Middleware` (a stranger without the hook counts as True, so
    the emitters log its AttributeError as dramatiq does)."""
    if hook in getattr(middleware, "__dict__", {}):  # set on the instance
        return True
    default = getattr(Middleware, hook, None)
    return default is None or getattr(type(middleware), hook, None) is not default
