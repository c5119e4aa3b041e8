"""Group commit for dramatiq's acks: one Redis round trip acks every message finished meanwhile.

dramatiq's Redis consumer acks each message with its own script call, made by the worker
thread that ran it. With a fast actor that call is a third of a worker's Python time: 64
threads taking turns at the GIL to pack, send and parse one tiny command each. Here a worker
thread only records the id; one thread sends whatever has piled up in a single call.

Delivery stays at-least-once. A message is acked only after its actor returned, and an ack
still in the buffer when the process dies is simply never sent: the message stays in this
worker's ack set and comes back to the queue when maintenance finds the worker dead, exactly
as with an ack lost in flight. The stored result makes the second run a no-op.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import redis
from dramatiq.broker import MessageProxy
from dramatiq.brokers.redis import RedisBroker, _RedisConsumer
from dramatiq.common import compute_backoff, current_millis
from dramatiq.errors import ConnectionClosed
from dramatiq.message import Message

log = logging.getLogger("batchyard.acks")

#: The same effect as dramatiq's `ack` command of its dispatch script, for many messages.
#: KEYS[1] namespace; ARGV: timestamp, current worker id, then (worker id at fetch time,
#: queue name, message id) triples: a message is acked in the set it was fetched into.
ACK_MANY = """
local ns = KEYS[1]
redis.call("zadd", ns .. ":__heartbeats__", ARGV[1], ARGV[2])
local done = 0
for i = 3, #ARGV, 3 do
    local worker, queue, id = ARGV[i], ARGV[i + 1], ARGV[i + 2]
    if redis.call("srem", ns .. ":__acks__." .. worker .. "." .. queue, id) > 0 then
        redis.call("hdel", ns .. ":" .. queue .. ".msgs", id)
        done = done + 1
    end
end
return done
"""

#: Acks per script call; bounds how long Redis runs one script.
MAX_PER_CALL = 1000


class AckBatcher:
    """Buffers (queue, message id) acks and sends them in batches from one thread."""

    def __init__(self, broker: RedisBroker, *, retry_s: float = 1.0) -> None:
        self.broker = broker
        self.retry_s = retry_s
        self._script: Any = broker.client.register_script(ACK_MANY)
        self._pending: list[tuple[str, str, str]] = []
        self._sending = 0
        self._cond = threading.Condition()
        self._closed = False
        self._thread: threading.Thread | None = None
        self.sent = 0
        self.calls = 0

    def add(self, worker_id: str, queue_name: str, message_id: str) -> None:
        """Queue one ack of a message `worker_id` fetched; it reaches Redis within one round
        trip of the thread's current call."""
        with self._cond:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="batchyard-acks", daemon=True
                )
                self._thread.start()
            self._pending.append((worker_id, queue_name, message_id))
            if len(self._pending) == 1:
                self._cond.notify_all()

    def flush(self, timeout_s: float = 30.0) -> bool:
        """Wait until every queued ack is in Redis; False when that took longer than timeout_s."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            self._cond.notify_all()
            while self._pending or self._sending:
                left = deadline - time.monotonic()
                if left <= 0 or self._thread is None or not self._thread.is_alive():
                    return False
                self._cond.wait(min(left, 0.1))
        return True

    def close(self, timeout_s: float = 30.0) -> None:
        """Send what is queued, then stop the thread. Acks left unsent are logged, not lost:
        their messages come back to the queue when this worker's heartbeat expires."""
        sent = self.flush(timeout_s)
        with self._cond:
            self._closed = True
            left = len(self._pending)
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if not sent and left:
            log.warning("%d acks not sent before shutdown; those messages will run again", left)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._closed:
                    self._cond.wait()
                if self._closed and not self._pending:
                    return
                batch = self._pending[:MAX_PER_CALL]
                del self._pending[:MAX_PER_CALL]
                self._sending = len(batch)
            try:
                self._send(batch)
            except Exception as exc:  # Redis down, or anything else: never drop an ack
                # Keep them: an ack that never lands makes its message run again after a restart.
                log.warning("ack of %d messages failed (%s); retrying", len(batch), exc)
                with self._cond:
                    self._pending[:0] = batch
                    self._sending = 0
                    if self._closed:
                        return
                time.sleep(self.retry_s)
                continue
            with self._cond:
                self._sending = 0
                self.sent += len(batch)
                self.calls += 1
                self._cond.notify_all()

    def _send(self, batch: list[tuple[str, str, str]]) -> None:
        args: list[Any] = [current_millis(), self.broker.broker_id]
        for triple in batch:
            args += triple
        self._script(keys=[self.broker.namespace], args=args)


class BatchAckConsumer(_RedisConsumer):
    """dramatiq's Redis consumer with acks handed to an `AckBatcher`, each in the ack set of
    the worker id the message was fetched under (the id changes when Redis restarts: see
    `workers.broker.Heartbeat`)."""

    def __init__(
        self, broker: RedisBroker, queue_name: str, prefetch: int, timeout: int, acks: AckBatcher
    ) -> None:
        super().__init__(broker, queue_name, prefetch, timeout)  # type: ignore[no-untyped-call]
        self.acks = acks
        #: Set (by `Waker`) when a producer has just filled this consumer's queue.
        self.wake = threading.Event()
        self._cache_owner = broker.broker_id
        self._owner: dict[str, str] = {}

    def __next__(self) -> MessageProxy | None:
        """dramatiq's `_RedisConsumer.__next__`, except that an idle consumer sleeps on
        `wake` (set when a producer fills this queue) and that each message remembers the
        worker id it was fetched under."""
        try:
            while True:
                if self.message_cache:
                    data = self.message_cache.pop(0)
                    if data is None:  # dramatiq #266; dramatiq skips these too
                        continue
                    self.misses = 0
                    message = Message.decode(data)
                    self.queued_message_ids.add(message.message_id)
                    self._owner[message.options["redis_message_id"]] = self._cache_owner
                    return MessageProxy(message)
                messages = []
                if self.outstanding_message_count < self.prefetch:
                    self._cache_owner = self.broker.broker_id
                    self.message_cache = messages = self.broker.do_fetch(
                        self.queue_name, self.prefetch - self.outstanding_message_count
                    )
                if not messages:
                    self.misses, backoff_ms = compute_backoff(self.misses, max_backoff=self.timeout)
                    if self.wake.wait(backoff_ms / 1000):
                        self.wake.clear()
                        self.misses = 0
                    return None
        except redis.ConnectionError as e:
            raise ConnectionClosed(e) from None  # type: ignore[no-untyped-call]

    def ack(self, message: MessageProxy) -> None:
        """Queue the ack (on the queue this consumer read it from, as dramatiq does)."""
        rid = message.options["redis_message_id"]
        self.acks.add(self._owner.pop(rid, self.broker.broker_id), self.queue_name, rid)
        self.queued_message_ids.discard(message.message_id)

    def nack(self, message: MessageProxy) -> None:
        """dramatiq's nack (rare: a message that failed for good)."""
        self._owner.pop(message.options["redis_message_id"], None)
        super().nack(message)  # type: ignore[no-untyped-call]
