"""One warning when Redis goes away and one when it is back, not a line per message.

During an outage every job that touches Redis fails, every consumer's fetch fails once a
second, the ack thread and the heartbeat retry. Each used to log on its own (a traceback per
message, a critical line per consumer per second). They now report here; the first report of
an outage logs a warning, the rest are counted, and the first success after it logs how long
it lasted and what it held up.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable

import redis
from dramatiq.errors import BrokerConnectionError

log = logging.getLogger("batchyard.redis")

#: Exceptions that mean "Redis is unreachable", not "this message is bad".
OUTAGE_ERRORS = (redis.ConnectionError, redis.TimeoutError, BrokerConnectionError)


def is_outage(exc: BaseException) -> bool:
    """True when `exc` (or its cause) says Redis could not be reached."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OUTAGE_ERRORS):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


#: An outage that starts within this many seconds of the last one's end is the same outage:
#: a restarted Redis can refuse again while it loads its data (down, up, down within a second
#: or two), and that is one outage to the reader, not two pairs of lines.
FLAP_S = 5.0


class OutageLog:
    """Counts what an outage held up; logs its start and its end once each."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._lock = threading.Lock()
        self._clock = clock
        self.since: float | None = None
        #: Whether the open outage's start was logged (a flap's is not, unless it lasts).
        self.announced = False
        #: When the last logged outage ended.
        self.ended_at = -math.inf
        self.failed_jobs = 0
        self.outages = 0

    def down(self, exc: BaseException, *, job: bool = False) -> None:
        """Something failed because Redis is unreachable (`job`: a message's processing)."""
        with self._lock:
            if job:
                self.failed_jobs += 1
            now = self._clock()
            if self.since is None:
                self.since = now
                self.announced = now - self.ended_at > FLAP_S
            elif self.announced or now - self.since <= FLAP_S:
                return
            else:
                self.announced = True  # a flap that lasted: a real outage after all
            if not self.announced:
                return
            self.outages += 1
        log.warning(
            "Redis unreachable (%s): jobs wait for it and run again when it is back; "
            "one line follows when it is",
            exc,
        )

    def up(self) -> None:
        """Something reached Redis: end the outage, if one is open."""
        if self.since is None:  # the common case, without the lock
            return
        with self._lock:
            if self.since is None:
                return
            now = self._clock()
            lasted = now - self.since
            failed, self.since, self.failed_jobs = self.failed_jobs, None, 0
            if not self.announced:  # a flap right after an outage: that one's line stands
                return
            self.ended_at = now
        log.warning(
            "Redis is back after %.1fs; %d job(s) that failed meanwhile run again",
            lasted,
            failed,
        )


#: The process's one outage log (a worker process has one Redis).
OUTAGE = OutageLog()


class QuietConsumerErrors(logging.Filter):
    """Drops dramatiq's per-consumer, per-second connection error lines during an outage
    (reported once through `OUTAGE`), and lets every other record through."""

    NOISE = ("Consumer encountered a connection error", "Restarting consumer")

    def filter(self, record: logging.LogRecord) -> bool:
        message = str(record.msg)
        if message.startswith(self.NOISE[0]):
            OUTAGE.down(redis.ConnectionError(record.getMessage()))
            return False
        return not message.startswith(self.NOISE[1])
