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

import contextlib
import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from dramatiq.brokers.redis import RedisBroker
from dramatiq.common import current_millis

from workers.dramatiq_ext.dispatch import acks_key, heartbeats_key, msgs_key
from workers.dramatiq_ext.outage import OUTAGE, is_outage
from workers.results import evalsha_sync

log = logging.getLogger("batchyard.acks")

#: dramatiq's `ack` command for many messages, each in the ack set it was fetched into.
ACK_MANY = Path(__file__).with_name("ack_many.lua").read_bytes()

#: Acks per script call; bounds how long Redis runs one script.
MAX_PER_CALL = 1000
#: The sending thread, woken by a first ack, waits up to `LINGER_S` for `LINGER_UNTIL` acks
#: before it sends: it sent whatever had piled up during its last call, 195 calls per 10,000
#: requests at 0 ms, each waking it to take the GIL from the event loop; lingering, 107
#: (#22). An ack sent later only leaves its message in the ack set longer (its result is
#: stored already; a worker that dies meanwhile has it redelivered and skipped, as before).
LINGER_S = 0.01
LINGER_UNTIL = 128


class AckBatcher:
    """Buffers (fetch-time worker id, queue, message id) acks; one thread sends them in batches."""

    def __init__(self, broker: RedisBroker, *, retry_s: float = 1.0) -> None:
        self.broker = broker
        self.retry_s = retry_s
        self._script: Any = broker.client.register_script(ACK_MANY)
        self._pending: list[tuple[str, str, str]] = []
        self._sending = 0
        self._cond = threading.Condition()
        self._closed = False
        #: `flush` calls waiting: the thread then sends at once.
        self._flushes = 0
        self._thread: threading.Thread | None = None
        self.sent = 0
        self.calls = 0

    def add(self, worker_id: str, queue_name: str, message_id: str) -> None:
        """Queue one ack of a message `worker_id` fetched; it reaches Redis with the thread's
        next call: after its current one, `LINGER_S` at most later (a flush: at once)."""
        with self._cond:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="batchyard-acks", daemon=True
                )
                self._thread.start()
            self._pending.append((worker_id, queue_name, message_id))
            if len(self._pending) in (1, LINGER_UNTIL):
                self._cond.notify_all()

    @contextlib.contextmanager
    def group(self) -> Iterator[None]:
        """Acks added inside reach the sending thread together, after the block: one wake-up
        of it, not one per ack (the thread waits on the lock held here)."""
        with self._cond:
            yield

    def flush(self, timeout_s: float = 30.0) -> bool:
        """Wait until every queued ack is in Redis; False when that took longer than timeout_s."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            self._flushes += 1
            try:
                self._cond.notify_all()
                while self._pending or self._sending:
                    left = deadline - time.monotonic()
                    if left <= 0 or self._thread is None or not self._thread.is_alive():
                        return False
                    self._cond.wait(min(left, 0.1))
            finally:
                self._flushes -= 1
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
                self._linger()
                batch = self._pending[:MAX_PER_CALL]
                del self._pending[:MAX_PER_CALL]
                self._sending = len(batch)
            try:
                self._send(batch)
            except Exception as exc:  # Redis down, or anything else: never drop an ack
                # Keep them: an ack that never lands makes its message run again after a restart.
                if is_outage(exc):
                    OUTAGE.down(exc)
                else:
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

    def _linger(self) -> None:
        """Wait (holding the condition) until `LINGER_UNTIL` acks are queued, `LINGER_S`
        has passed, or a flush or close asks for them."""
        deadline = time.monotonic() + LINGER_S
        while len(self._pending) < LINGER_UNTIL and not self._closed and not self._flushes:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self._cond.wait(left)

    def _send(self, batch: list[tuple[str, str, str]]) -> None:
        """One `ack_many.lua` call, the acks grouped by ack set (most batches are one group:
        the keys go once, not twice per message) and sent by `evalsha_sync`."""
        groups: dict[tuple[str, str], list[str]] = {}
        for worker_id, queue_name, message_id in batch:
            groups.setdefault((worker_id, queue_name), []).append(message_id)
        ns = self.broker.namespace
        keys = [heartbeats_key(ns)]
        args: list[Any] = [current_millis(), self.broker.broker_id]
        for (worker_id, queue_name), ids in groups.items():
            keys += (acks_key(ns, worker_id, queue_name), msgs_key(ns, queue_name))
            args.append(len(ids))
            args += ids
        evalsha_sync(self.broker.client, self._script, keys, args)
