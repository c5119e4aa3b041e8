"""Heartbeat: drives dramatiq's maintenance on a fixed interval and renews the worker id."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import uuid

import redis
from dramatiq.brokers.redis import RedisBroker
from dramatiq.common import current_millis, dq_name

from workers.crashes import RunningMarks
from workers.dramatiq_ext.dispatch import Dispatch, heartbeats_key
from workers.dramatiq_ext.outage import OUTAGE, is_outage

log = logging.getLogger("batchyard.broker")


class Heartbeat(threading.Thread):
    """Keeps this worker's heartbeat fresh and requeues messages of dead workers.

    dramatiq refreshes heartbeats only when a consumer talks to Redis, and runs maintenance
    on a random 0.1% of commands: a worker busy with long calls can look dead, and a dead
    worker's messages can wait many minutes. This thread does both on a fixed interval.
    """

    def __init__(self, broker: RedisBroker, interval_s: float) -> None:
        super().__init__(name="batchyard-heartbeat", daemon=True)
        self.broker = broker
        self.dispatch = Dispatch(broker)
        self.interval_s = interval_s
        self.stopped = threading.Event()
        self.redis_run_id: str | None = None
        #: After a Redis restart, no maintenance before this (monotonic s): every live
        #: worker must first renew the old ids it still holds messages under.
        self.hold_until = 0.0
        #: Where this process notes the worker ids it holds messages under, for its
        #: supervisor to expire if it dies (`workers.crashes`).
        self.marks: RunningMarks | None = None
        # Read before the consumers' first fetch, so a restart after it is noticed.
        with contextlib.suppress(redis.RedisError):
            self.redis_run_id = self._run_id()

    def run(self) -> None:
        while not self.stopped.wait(self.interval_s):
            try:
                self.beat()
            except redis.RedisError as exc:
                if is_outage(exc):
                    OUTAGE.down(exc)
                else:
                    log.warning("heartbeat failed (%s); retrying in %.0fs", exc, self.interval_s)
            else:
                OUTAGE.up()

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
            # dramatiq reads broker_id on every dispatch call, so this takes effect at once.
            self.broker.broker_id = str(uuid.uuid4())
            self.hold_until = time.monotonic() + self.broker.heartbeat_timeout / 1000
            log.warning(
                "Redis restarted: worker id %s -> %s; messages fetched before the restart "
                "and not acked return to their queues after the heartbeat timeout",
                old,
                self.broker.broker_id,
            )
        self.redis_run_id = run_id

    def held_ids(self) -> set[str]:
        """Earlier worker ids this process still holds fetched, unacked messages under."""
        owners: dict[str, dict[str, str]] = getattr(self.broker, "ack_owners", {})
        ids: set[str] = set()
        for held in list(owners.values()):  # list(): consumers add and pop as we read
            ids.update(list(held.values()))
        ids.discard(self.broker.broker_id)
        return ids

    def beat(self) -> None:
        """One round: notice a Redis restart, refresh this worker's heartbeat (and those of
        earlier ids it still holds messages under) and run maintenance on every queue.

        A restored Redis holds heartbeats as old as the outage: maintenance right away would
        hand out again the messages live workers fetched before it and still hold, and both
        copies would be called. So old ids with held messages keep beating until those are
        acked, and for one heartbeat timeout after a restart no maintenance runs, which gives
        every live worker the time to renew its own. What an old id held and no longer holds
        (an ack the crash lost) returns to its queue once that id stops beating."""
        self.check_restart()
        held = self.held_ids()
        self.note_owners(held)
        if held:
            now = current_millis()
            beats = heartbeats_key(self.broker.namespace)
            self.broker.client.zadd(beats, dict.fromkeys(held, now))
        maintain = time.monotonic() >= self.hold_until
        for queue in sorted(self.broker.get_declared_queues()):
            for name in (queue, dq_name(queue)):
                self.dispatch.qsize(name, maintain=maintain)

    def note_owners(self, held: set[str]) -> None:
        """Note this worker's ids (its own, and `held`: earlier ones it holds messages
        under) where its supervisor reads them if it dies."""
        if self.marks is not None:
            beats = heartbeats_key(self.broker.namespace)
            self.marks.owners(beats, [self.broker.broker_id, *sorted(held)])

    def stop(self) -> None:
        """Stop after the current round."""
        self.stopped.set()
