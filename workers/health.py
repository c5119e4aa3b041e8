"""Endpoint health and circuit breaker, shared by every worker through Redis.

The happy path must not cost a round trip per request: successes are counted locally and
flushed at most once per `flush_s`; failures (and any outcome of a probe) are written at once,
since they are what moves the breaker. The breaker opens on a failure *rate* over a window,
so a flaky-but-working endpoint stays closed even while successes wait for their flush.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from dataclasses import dataclass
from enum import StrEnum

import redis
import redis.asyncio as aioredis

from schemas.config import BreakerConfig
from workers.protocol.keys import Keys
from workers.protocol.scripts import Lua, register

log = logging.getLogger("batchyard.health")


class Decision(StrEnum):
    """What the breaker says about sending one request now."""

    allow = "allow"
    probe = "probe"
    deny = "deny"


@dataclass(frozen=True, slots=True)
class Admission:
    """A breaker decision; `retry_in_s` says when a denied endpoint may be tried again."""

    decision: Decision
    state: str
    retry_in_s: float = 0.0


#: The answer of a closed breaker read recently: most calls get it, so it is built once.
_ALLOWED = Admission(Decision.allow, "closed")


class EndpointHealth:
    """One endpoint's breaker as seen by one worker process."""

    def __init__(
        self,
        client: aioredis.Redis,
        namespace: str,
        endpoint: str,
        config: BreakerConfig,
        *,
        flush_s: float = 1.0,
        state_ttl_s: float = 1.0,
    ) -> None:
        self.endpoint = endpoint
        self.config = config
        self.flush_s = flush_s
        self.state_ttl_s = state_ttl_s
        keys = Keys(namespace)
        self._keys = [keys.health(endpoint), keys.latency(endpoint), keys.probe(endpoint)]
        self._client = client
        self._record = register(client, Lua.HEALTH_RECORD)
        self._admit = register(client, Lua.HEALTH_ADMIT)
        self._worker_id = uuid.uuid4().hex
        self._state = "closed"
        self._open_until = 0.0
        self._checked_at = 0.0
        self._ok = 0
        self._tokens = 0
        self._latencies: list[float] = []
        self._flushed_at = time.monotonic()
        self._flush_task: asyncio.Task[None] | None = None
        self._reading: asyncio.Future[Admission] | None = None

    def allows(self) -> bool:
        """Whether `admit` would allow at once, without a Redis read: the closed state, read
        within `state_ttl_s`. Most calls are told here, without a coroutine (#22)."""
        return self._state == "closed" and time.monotonic() - self._checked_at < self.state_ttl_s

    async def warm(self) -> None:
        """Read the breaker's state (no probe is taken), as `admit` would: done at a worker's
        start, it spares the first request a round trip before its call (#22). A request
        that asks meanwhile waits for this read, as for any read in flight."""
        if self._reading is None or self._reading.done():
            self._reading = asyncio.ensure_future(self._read())
        await asyncio.shield(self._reading)

    async def _read(self) -> Admission:
        state, open_until = await self._client.hmget(self._keys[0], ["state", "open_until"])
        self._remember(state or "closed", open_until or "0")
        return _ALLOWED  # not read: its waiters decide again on the state it remembered

    async def admit(self) -> Admission:
        """May a request be sent now? Reads Redis at most once per `state_ttl_s` when closed."""
        if self.allows():
            return _ALLOWED
        now = time.time()
        if self._state == "open" and now < self._open_until:
            return Admission(Decision.deny, "open", self._open_until - now)
        if self._state == "closed":
            # One read for all the requests that find the closed state stale at once (they
            # were a script call each, hundreds a second at 0 ms latency: #22); they then
            # decide on what it read.
            reading = self._reading
            if reading is not None and not reading.done():
                await asyncio.shield(reading)
                return await self.admit()
            self._reading = asyncio.ensure_future(self._ask(now))
            return await asyncio.shield(self._reading)
        return await self._ask(now)

    async def _ask(self, now: float) -> Admission:
        """The shared breaker's decision for one request (`health_admit.lua`)."""
        ttl_ms = int(self.config.probe_timeout_s * 1000)
        decision, state, open_until = await self._admit(
            keys=[self._keys[0], self._keys[2]], args=[now, ttl_ms, self._worker_id]
        )
        self._remember(state, open_until)
        decision = Decision(decision.decode() if isinstance(decision, bytes) else decision)
        retry_in = max(self._open_until - now, 0.0) if decision is Decision.deny else 0.0
        if decision is Decision.deny and retry_in == 0.0:
            retry_in = min(self.config.probe_timeout_s, 1.0)  # someone else is probing
        return Admission(decision, self._state, retry_in)

    async def success(self, latency_ms: float, *, probe: bool = False, tokens: int = 0) -> None:
        """Count a call that shows the endpoint works (including the caller's own 4xx), and
        the tokens it used (for the tokens-per-minute figure operators see)."""
        if probe:
            self._count(latency_ms, tokens)
            await self.flush()
        else:
            self.counted(latency_ms, tokens)

    def counted(self, latency_ms: float, tokens: int = 0) -> None:
        """`success` of a call that was no probe: counted here and flushed in the background,
        so it needs no coroutine (#22)."""
        self._count(latency_ms, tokens)
        if time.monotonic() - self._flushed_at >= self.flush_s and self._flush_task is None:
            self._flush_task = asyncio.create_task(self._background_flush())

    def _count(self, latency_ms: float, tokens: int) -> None:
        self._ok += 1
        self._tokens += tokens
        self._latencies.append(latency_ms)

    async def failure(self, latency_ms: float) -> None:
        """Count a call that suggests the endpoint is down; may open the breaker."""
        self._latencies.append(latency_ms)
        await self.flush(failures=1)

    async def flush(self, failures: int = 0) -> None:
        """Send locally counted outcomes to Redis and learn the shared state."""
        ok, tokens, samples = self._ok, self._tokens, self._latencies
        self._ok, self._tokens, self._latencies = 0, 0, []
        self._flushed_at = time.monotonic()
        if not ok and not failures and not samples:
            return
        c = self.config
        args = [
            time.time(),
            c.window_s,
            c.min_failures,
            c.failure_rate,
            c.open_s,
            ok,
            failures,
            c.min_calls,
            tokens,
            *(round(x, 1) for x in samples[-100:]),
        ]
        try:
            state, open_until = await self._record(keys=self._keys, args=args)
        except BaseException:
            self._ok += ok  # not lost: retried with the next flush
            self._tokens += tokens
            raise
        self._remember(state, open_until)

    async def _background_flush(self) -> None:
        try:
            await self.flush()
        except redis.RedisError as exc:
            # The counts stay for the next flush; a Redis outage is reported once, by the
            # worker (`workers.dramatiq_ext.outage`), not by every task that met it.
            log.debug("health flush of %s deferred: %s", self.endpoint, exc)
        finally:
            self._flush_task = None

    def _remember(self, state: bytes | str, open_until: bytes | str) -> None:
        self._state = state.decode() if isinstance(state, bytes) else state
        self._open_until = float(open_until)
        self._checked_at = time.monotonic()
