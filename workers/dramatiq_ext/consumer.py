"""BatchAckConsumer: dramatiq's Redis consumer with woken idle polls and batched acks."""

from __future__ import annotations

import dataclasses
import logging
import threading
from typing import Any

import orjson
import redis
from dramatiq.broker import MessageProxy
from dramatiq.brokers.redis import RedisBroker, _RedisConsumer
from dramatiq.common import compute_backoff, current_millis
from dramatiq.errors import ConnectionClosed, DecodeError
from dramatiq.message import Message

from workers.dramatiq_ext.acks import AckBatcher
from workers.dramatiq_ext.dispatch import Fetch

log = logging.getLogger("batchyard.consumer")

#: Longest wait of a full consumer for `ack`'s wake-up (a nack does not wake it).
FULL_WAIT_MS = 50


class FetchedMessage(MessageProxy):
    """dramatiq's `MessageProxy` with its message's fields (a frozen dataclass's, so they never
    change) copied into the proxy. dramatiq reads them through `MessageProxy.__getattr__`,
    which Python calls only after the normal look-up has failed and raised AttributeError:
    ~0.85 us per read, against ~0.08 for an instance attribute, and a message's fields are
    read about a dozen times between its fetch and its ack (#22)."""

    def __init__(self, message: Message[Any]) -> None:
        super().__init__(message)
        self.__dict__.update(message.__dict__)


#: The fields of a dramatiq `Message`, all of which its encoding has.
FIELDS = frozenset(f.name for f in dataclasses.fields(Message))


def decode(data: bytes) -> Message[Any]:
    """`Message.decode(data)`, without the frozen dataclass's `__init__` when `data` has
    exactly a message's fields: its `object.__setattr__` per field and the keyword call were
    ~2 us of a consumer thread's ~12 us per message (#22). Anything else goes through
    `Message.decode`, which raises its `DecodeError` as before."""
    try:
        fields = orjson.loads(data)
    except orjson.JSONDecodeError:
        fields = None
    if type(fields) is not dict or fields.keys() != FIELDS or type(fields["args"]) is not list:
        return Message.decode(data)
    fields["args"] = tuple(fields["args"])
    message: Message[Any] = object.__new__(Message)
    message.__dict__.update(fields)
    return message


class BatchAckConsumer(_RedisConsumer):
    """dramatiq's Redis consumer with acks handed to an `AckBatcher`, each in the ack set of
    the worker id the message was fetched under (the id changes when Redis restarts: see
    `workers.dramatiq_ext.heartbeat.Heartbeat`)."""

    def __init__(
        self, broker: RedisBroker, queue_name: str, prefetch: int, timeout: int, acks: AckBatcher
    ) -> None:
        super().__init__(broker, queue_name, prefetch, timeout)  # type: ignore[no-untyped-call]
        self.acks = acks
        #: Set (by `Waker`) when a producer has just filled this consumer's queue.
        self.wake = threading.Event()
        self._cache_owner = broker.broker_id
        # Kept by the broker, not this object: after a connection error dramatiq replaces the
        # consumer, and messages fetched by the old one are acked through the new one. A
        # private map died with the old consumer, their acks went to the current worker id's
        # set (changed if Redis restarted), missed, and the messages ran a second time.
        owners: dict[str, dict[str, str]] = getattr(broker, "ack_owners", {})
        self._owner = owners.setdefault(queue_name, {})
        self._fetch = Fetch(broker, queue_name)
        #: Fetch again once this few messages are outstanding (fetched, not yet acked): a
        #: quarter of the prefetch free, not every message acked (see `__next__`).
        self.refill_at = prefetch - max(1, prefetch // 4)

    def __next__(self) -> MessageProxy | None:
        """dramatiq's `_RedisConsumer.__next__`, except that messages are fetched and decoded
        by `fetch` (once each), that an idle consumer sleeps on `wake` (set when a producer
        fills this queue) and that each message remembers the worker id it was fetched under."""
        try:
            while True:
                if self.message_cache:
                    message = self.message_cache.pop(0)
                    if message is None:  # dramatiq #266; dramatiq skips these too
                        continue
                    self.misses = 0
                    if not isinstance(message, Message):  # raises its DecodeError now
                        message = Message.decode(message)
                    self.queued_message_ids.add(message.message_id)
                    self._owner[message.options["redis_message_id"]] = self._cache_owner
                    return FetchedMessage(message)
                outstanding = len(self.queued_message_ids)
                if outstanding > self.refill_at:
                    # Full: `ack` sets `wake` when a quarter of the prefetch is free. dramatiq
                    # fetched whatever had been acked since the last fetch: 231 fetches (two
                    # round trips each, the results check included) per 10,000 requests at
                    # 0 ms, each waking this thread to take the GIL from the event loop; by
                    # quarters, 160 (#22). A quarter free still leaves three quarters of the
                    # prefetch (the concurrency and more) fetched for the loop to run.
                    if self.wake.wait(self._until_due(FULL_WAIT_MS) / 1000):
                        self.wake.clear()
                    return None
                self.message_cache = messages = self.fetch(self.prefetch - outstanding)
                if not messages:
                    self.misses, backoff_ms = compute_backoff(self.misses, max_backoff=self.timeout)
                    if self.wake.wait(self._until_due(backoff_ms) / 1000):
                        self.wake.clear()
                        self.misses = 0
                    return None
        except redis.ConnectionError as e:
            raise ConnectionClosed(e) from None  # type: ignore[no-untyped-call]

    def _until_due(self, wait_ms: int) -> float:
        """`wait_ms`, or less: until the next delayed message this consumer's thread holds is
        due (dramatiq moves it to its queue after this wait), so an idle poll as long as
        `idle_poll_ms` never makes a retry late. Read in that thread, the heap's owner."""
        held = getattr(self.broker, "held_delayed", {}).get(self.queue_name)
        if held is None or not held.queue:
            return wait_ms
        due: float = held.queue[0].priority
        return max(0.0, min(wait_ms, due - current_millis()))

    def fetch(self, n: int) -> list[Message[Any] | bytes | None]:
        """Up to `n` messages, each decoded once (one that does not decode stays bytes, and
        `__next__` raises its DecodeError when its turn comes, as dramatiq's does); their
        jobs go to the broker's `on_fetch` (the results' `FetchCheck`) first."""
        self._cache_owner = self.broker.broker_id
        fetched: list[Message[Any] | bytes | None] = []
        jobs = []
        for data in self._fetch(self._cache_owner, n):
            if data is None:
                fetched.append(None)
                continue
            try:
                message = decode(data)
            except DecodeError:
                fetched.append(data)
                continue
            fetched.append(message)
            if message.args:
                jobs.append(message.args[0])
        on_fetch = getattr(self.broker, "on_fetch", None)
        if jobs and on_fetch is not None:
            try:
                on_fetch(jobs)
            except Exception:  # a hint only: never lose fetched messages over it
                log.warning("fetch hook failed", exc_info=True)
        return fetched

    def ack(self, message: MessageProxy) -> None:
        """Queue the ack (on the queue this consumer read it from, as dramatiq does)."""
        rid = message.options["redis_message_id"]
        self.acks.add(self._owner.pop(rid, self.broker.broker_id), self.queue_name, rid)
        ids = self.queued_message_ids
        ids.discard(message.message_id)
        if len(ids) == self.refill_at:  # room for a fetch: wake the thread if it waits
            self.wake.set()

    def nack(self, message: MessageProxy) -> None:
        """dramatiq's nack (rare: a message that failed for good)."""
        self._owner.pop(message.options["redis_message_id"], None)
        super().nack(message)  # type: ignore[no-untyped-call]
