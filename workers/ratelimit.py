"""Global rate limits: every worker process shares each endpoint's RPM, TPM and concurrency.

One Lua call admits a request (configured RPM/TPM as exact 60 s sliding windows, the provider's
buckets as its headers describe them, a concurrency lease that expires if its worker dies, and
the endpoint's 429 pause); one Lua call releases the lease and corrects the token counts with
the real usage. Where adaptive concurrency alone limits a scope and has room, the process
admits in its share of it instead, with no call per request (`workers.share`). Waiting is
`asyncio.sleep`, never a blocked loop; a wait longer than `max_inline_wait_s` is handed back
to the caller to requeue.
"""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid
from collections import deque
from dataclasses import dataclass

import redis.asyncio as aioredis

from schemas.config import EndpointConfig
from workers.outcomes import NOTHING_OBSERVED, Observed
from workers.protocol.keys import Keys
from workers.protocol.scripts import Lua, register
from workers.results import ScriptPipe
from workers.share import Share, wait_turn, wake


class MustWait(Exception):
    """Capacity is further away than the inline wait allows: requeue after `delay_s`."""

    def __init__(self, delay_s: float) -> None:
        super().__init__(f"rate limit: capacity in {delay_s:.1f}s")
        self.delay_s = delay_s


@dataclass
class Lease:
    """Admission of one request; give it back with `Limiter.release`."""

    id: str
    tokens: int
    scopes: Scopes
    #: This request probes a scope whose pause has ended; the others wait for its answer.
    probe: bool = False
    #: Epoch ms the lease was granted (adaptive concurrency cuts once per congestion event).
    admitted_ms: float = 0.0
    #: The process's share of adaptive concurrency it was admitted in (no lease of its own).
    share: Share | None = None


#: The limiter scripts' view of a request's scopes: (state, leases, pause, window) keys per
#: scope, and the scopes' (rpm, tpm, max concurrency) as the last words of a call's arguments
#: (`ScriptPipe.call`: each followed by a space).
Scopes = tuple[tuple[str, ...], str]

#: `Observed` words of an answer that said nothing of the provider's buckets.
_NOTHING_SEEN = "-1 " * len(NOTHING_OBSERVED)

#: A refusal at most this long (s) is a full concurrency slot or the first-answer gate (the
#: scripts' 50 ms poll): a release in this process may free it sooner, so it wakes the waiter.
WAKE_S = 0.05
#: Waiters one release wakes: its slot and the slot adaptive concurrency's slow start adds.
WAKES_PER_RELEASE = 2


def _in_share(share: Share, tokens: int, scopes: Scopes) -> Lease:
    """The lease of a call admitted in the process's share: no lease of its own in Redis."""
    return Lease("", tokens, scopes, admitted_ms=time.time() * 1000, share=share)


class Limiter:
    """The limits of one endpoint, as seen by one worker process."""

    def __init__(
        self,
        client: aioredis.Redis,
        namespace: str,
        endpoint: str,
        cfg: EndpointConfig,
        *,
        learning: bool = False,
    ) -> None:
        self.endpoint = endpoint
        self.cfg = cfg
        self.keys = Keys(namespace)
        self.pause_key = self.keys.limit(endpoint).pause
        self._pause = register(client, Lua.LIMIT_PAUSE)
        self._client = client
        #: Admits and releases of concurrent requests share one round trip per loop turn
        #: (releases first, then shares, then admits: each sees what the earlier gave back).
        self._pipe = ScriptPipe(client, (Lua.LIMIT_RELEASE, Lua.LIMIT_RESERVE, Lua.LIMIT_ADMIT))
        #: Lease ids: unique per process by a random prefix, then a counter (a uuid4 per
        #: request cost an os.urandom call each).
        self._lease_prefix = uuid.uuid4().hex[:16]
        self._lease_ids = itertools.count()
        self._base = (
            tuple(self.keys.limit(endpoint)),
            (cfg.rpm or 0, cfg.tpm or 0, cfg.max_concurrency or 0),
        )
        self.limited = bool(cfg.rpm or cfg.tpm or cfg.max_concurrency or cfg.model_limits)
        #: The provider announced limits (to this process): every request goes through Redis.
        self.learning = learning
        self.announces = learning
        self._pause_value: bytes | str | None = None
        self._pause_checked = 0.0
        self._scope_cache: dict[str, Scopes] = {}
        #: Requests refused for a slot (`WAKE_S`), oldest first: a release wakes the next.
        self._waiting: deque[asyncio.Future[None]] = deque()
        #: This process's shares of adaptive concurrency, by scope keys (`workers.share`).
        self._shares: dict[tuple[str, ...], Share] = {}
        self._ttl_ms = 0
        #: Requests sleeping until a pause (or a far slot) ends, and whether the worker is
        #: stopping: then no request waits here (`drain`).
        self._napping: deque[asyncio.Future[None]] = deque()
        self.draining = False
        #: Calls in `acquire` that found no slot of a share at once: what a share asks for.
        self._asking = 0

    def _scopes(self, model: str) -> Scopes:
        """The endpoint's scope, then the model's: configured model limits, and the limits
        the provider announces (learned per model, as OpenAI and Anthropic set them).

        Built once per model (nothing changes them; the scripts only read them): every
        request asks, limited endpoint or not."""
        scopes = self._scope_cache.get(model)
        if scopes is None:
            if len(self._scope_cache) >= 1024:  # bounded whatever models requests name
                self._scope_cache.clear()
            scopes = self._scope_cache[model] = self._build_scopes(model)
        return scopes

    def _build_scopes(self, model: str) -> Scopes:
        extra = self.cfg.model_limits.get(model)
        keys, limits = self._base
        caps = (extra.rpm or 0, extra.tpm or 0, extra.max_concurrency or 0) if extra else (0, 0, 0)
        words = "".join(f"{n} " for n in (*limits, *caps))
        return (*keys, *self.keys.limit(self.endpoint, model)), words

    async def acquire(self, model: str, tokens: int, lease_ttl_s: float) -> Lease:
        """Wait (asynchronously, bounded) for capacity; raise `MustWait` if it is far off."""
        scopes = self._scopes(model)
        if not (self.limited or self.learning) and not await self._pause_set():
            return Lease("", tokens, scopes)
        share = self._shares.get(scopes[0]) if self._shares else None
        if share is not None and self._pause_value is None and share.take():
            # the process's share of adaptive concurrency had a slot: no round trip at all
            return _in_share(share, tokens, scopes)
        self._asking += 1
        try:
            return await self._admit(scopes, tokens, lease_ttl_s)
        finally:
            self._asking -= 1

    async def _admit(self, scopes: Scopes, tokens: int, lease_ttl_s: float) -> Lease:
        """`acquire` where the process's share had no slot: wait for one of it, or (no share
        granted) admit through `limit_admit.lua`."""
        deadline = time.monotonic() + self.cfg.max_inline_wait_s
        lease = Lease(f"{self._lease_prefix}{next(self._lease_ids)}", tokens, scopes)
        ttl_ms, gate = int(lease_ttl_s * 1000), int(self.announces)
        self._ttl_ms = ttl_ms
        while True:
            share = self._shares.get(scopes[0]) if self._shares else None
            if share is not None and share.granted and self._pause_value is None:
                if share.take():
                    return _in_share(share, tokens, scopes)
                left = deadline - time.monotonic()
                if left <= 0 or self.draining:
                    raise MustWait(WAKE_S)
                await share.wait(left)
                continue
            # Whole ms: formatting a float's repr here cost ~1 us a word (three per request),
            # and the scripts read digits and write the lease's expiry back for less (#22).
            now_ms = int(time.time() * 1000)
            words = f"{now_ms} {lease.id} {ttl_ms} {tokens} {gate} {scopes[1]}"
            ok, wait_ms, probe = await self._pipe.call(Lua.LIMIT_ADMIT, scopes[0], words)
            if int(ok):
                lease.probe = bool(int(probe))
                lease.admitted_ms = now_ms
                return lease
            wait_s = float(wait_ms) / 1000
            if time.monotonic() + wait_s > deadline or self.draining:
                raise MustWait(wait_s)
            if wait_s <= WAKE_S:
                await self._slot(wait_s)
            else:
                await self._nap(wait_s)

    def drain(self) -> None:
        """The worker is stopping: requests waiting here for a slot or a pause to end wake
        now and go back to their queue unsent (`MustWait`), as a wait past
        `max_inline_wait_s` does, instead of holding the drain (and a Ctrl-C) until then.
        Calls already admitted go on."""
        self.draining = True
        for line in (self._waiting, self._napping):
            while line:
                wake(line.popleft())
        for share in self._shares.values():
            share.wake_all()

    async def _nap(self, wait_s: float) -> None:
        """Sleep `wait_s` (a pause, a far slot), or less if the worker starts stopping."""
        if len(self._napping) >= 4096:  # naps that timed out stay in the line: drop them
            self._napping = deque(w for w in self._napping if not w.done())
        await wait_turn(self._napping, wait_s)

    async def _slot(self, wait_s: float) -> None:
        """Wait `wait_s`, or less when a release in this process frees a slot first.

        The scripts answer a full slot with a 50 ms poll: as adaptive concurrency grew at a
        batch's start, each step of its slow start waited one whole poll (~0.15 s of a
        12-line batch, ~0.5 s before 256 were in flight). A release is sent before any
        admission asked after it (`ScriptPipe.post`), so the woken request sees its slot."""
        if len(self._waiting) >= 4096:  # timed-out waiters go only as releases pass them
            self._waiting = deque(w for w in self._waiting if not w.done())
        await wait_turn(self._waiting, wait_s)

    async def release(
        self,
        lease: Lease,
        real_tokens: int | None,
        learned: tuple[int, int],
        seen: Observed = NOTHING_OBSERVED,
        *,
        answered: bool = True,
        refunded: bool = False,
    ) -> None:
        """Return the lease; correct the token estimate; learn what the provider's headers
        say of its buckets (`seen`). An answer that is not a refusal (`answered`) ends a
        pause's probe phase; a refusal the provider did not count is `refunded`.

        Returns before Redis has it: the release goes with the pipe's next call, before any
        admission asked after it, and its reply is not read (a failure is logged; the lease
        then expires with its TTL). `aclose` waits for the releases still on their way."""
        learns = seen[0] > 0 or seen[3] > 0
        if lease.share is not None:  # a refund was never sent: it says nothing of congestion
            lease.share.done(None if refunded else answered, lease.admitted_ms)
        if not lease.id and not learns:
            return
        self.learning = self.learning or learns
        delta = 0 if real_tokens is None else real_tokens - lease.tokens
        if self.cfg.token_accounting == "reserved":
            delta = max(delta, 0)
        keys, limits = lease.scopes
        now_ms = int(time.time() * 1000)
        refund, estimate = (int(refunded), lease.tokens) if lease.id else (0, 0)
        seen_words = _NOTHING_SEEN if seen is NOTHING_OBSERVED else "".join(f"{v} " for v in seen)
        words = (
            f"{now_ms} {lease.id} {delta} {learned[0]} {learned[1]} {int(answered)} {refund} "
            f"{estimate} {seen_words}{lease.admitted_ms} {limits}"
        )
        self._pipe.post(Lua.LIMIT_RELEASE, keys, words)
        if answered:
            self._pause_value = None
            if lease.id and not (learns or refunded or self.limited):
                self._hold(lease.scopes)
        woken, waiting = 0, self._waiting
        while waiting and woken < WAKES_PER_RELEASE:
            woken += wake(waiting.popleft())

    def _hold(self, scopes: Scopes) -> None:
        """An answer without limit headers came back: hold a share of the scope's adaptive
        concurrency (`workers.share`), which its call finds granted only where the scope is
        plain adaptive concurrency."""
        share = self._shares.get(scopes[0])
        if share is None:
            if len(self._shares) >= 64:  # bounded whatever models requests name
                return
            holder = f"{self._lease_prefix}s{len(self._shares)}"
            share = self._shares[scopes[0]] = Share(
                self._pipe, scopes[0], scopes[1], holder, self._ttl_ms, lambda: self._asking
            )
        share.start()

    async def aclose(self) -> None:
        """Give the shares back, then wait for the releases still on their way to Redis
        (before its client closes)."""
        for share in self._shares.values():
            await share.aclose()
        await self._pipe.drain()

    async def pause(self, retry_after_s: float) -> None:
        """A 429 said wait: stop every worker sending to this endpoint until then; after
        that one request probes and the others wait for its answer."""
        now_ms = time.time() * 1000
        until_ms = now_ms + retry_after_s * 1000
        self._pause_value = b"set"
        self._pause_checked = time.monotonic()
        await self._pause(keys=[self.pause_key], args=[until_ms, now_ms])

    async def _pause_set(self) -> bool:
        """Whether an endpoint without configured limits has a pause (or a probe out), read
        from Redis at most every 200 ms: without one, its requests need no script call."""
        now = time.monotonic()
        if now - self._pause_checked > 0.2:
            self._pause_checked = now  # before the await: one reader, not every coroutine
            self._pause_value = await self._client.get(self.pause_key)
        return self._pause_value is not None
