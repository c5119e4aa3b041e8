"""A worker process's share of adaptive concurrency: its requests are admitted here.

An endpoint that sends no limit headers (vLLM, llama.cpp, most proxies) is limited by
adaptive concurrency alone (lib/aimd): a number of requests in flight that every worker
shares. Each request was admitted and released through Redis (`limit_admit.lua`,
`limit_release.lua`): at 0 ms latency those two script calls and the loop turns around them
cost a worker's event loop ~30 % of its CPU per request and Redis ~40 % of its own (#22). A
process now holds a share of the limit (`limit_reserve.lua`) and admits within it without a
round trip. The share is leases in the same sorted set an admission counts, so every other
process and every admission still counts them; one call every `SYNC_S` renews them, reports
the answers (adaptive concurrency moves as it did, one answer at a time), and sizes the
share to what the process wants (the most calls it had in flight and waiting at once within
`IDLE_S`). A share is granted only while the limit has room for what every process holding
one wants: where they want more, requests are admitted one by one as before, which keeps
every slot of a saturated server in use and sees each cut at once. A refusal is reported at
once, and a call waiting for a slot asks again at the next loop turn in which answers came
back. A share unused for `IDLE_S` is given back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable

from workers.protocol.scripts import Lua
from workers.results import ScriptPipe

log = logging.getLogger("batchyard.limits")

#: How often a held share is renewed (and the answers reported) while nothing asks sooner.
SYNC_S = 0.05
#: A share with no call in flight or waiting this long is given back.
IDLE_S = 1.0
#: After a call found the scope not plain adaptive concurrency, the next try waits this long.
RETRY_S = 1.0


class Share:
    """One process's slots of one scope's adaptive concurrency (`limit_reserve.lua`)."""

    def __init__(
        self,
        pipe: ScriptPipe,
        keys: tuple[str, ...],
        limits: str,
        holder: str,
        ttl_ms: int,
        asking: Callable[[], int],
    ) -> None:
        self._pipe = pipe
        #: Calls of the process waiting for admission (to this share or through the scripts).
        self._asking = asking
        self._keys = keys
        self._limits = limits
        self._holder = holder
        self._ttl_ms = ttl_ms
        #: Slots granted by the last call; calls in flight under them.
        self.granted = 0
        self.in_flight = 0
        #: Leases this process holds in Redis since the last call.
        self._held = 0
        #: Answers since the last call: clean ones, and the admission times of refusals.
        self._oks = 0
        self._refused: list[str] = []
        self._waiting: deque[asyncio.Future[None]] = deque()
        self._poke: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._retry_at = 0.0
        #: The most calls wanted a slot at once lately, and when.
        self._peak = 0
        self._peak_at = 0.0

    def start(self) -> None:
        """Ask for a share (or a larger one) at the next loop turn, unless a call found the
        scope not plain a moment ago."""
        if self._task is not None and not self._task.done():
            self._nudge()  # a clean answer: the limit grew, there may be room now
            return
        if time.monotonic() < self._retry_at:
            return
        self._poke = asyncio.Event()
        self._poke.set()
        self._task = asyncio.create_task(self._run())

    def take(self) -> bool:
        """One slot for a call, if one is free."""
        if self.in_flight < self.granted:
            self.in_flight += 1
            return True
        return False

    async def wait(self, timeout_s: float) -> None:
        """Until a slot may be free (a call ended or more were granted), at most `timeout_s`;
        the share is asked to grow at the next turn in which answers came back."""
        await wait_turn(self._waiting, timeout_s)

    def wake_all(self) -> None:
        """Wake every call waiting for a slot (the worker is stopping)."""
        while self._waiting:
            wake(self._waiting.popleft())

    def done(self, ok: bool | None, admitted_ms: float) -> None:
        """A call under the share ended: `ok` True when answered, False when refused (a 429,
        503 or timeout: adaptive concurrency cuts, and hears of it now), None when it was
        never sent."""
        self.in_flight -= 1
        if ok:
            self._oks += 1
        elif ok is not None:
            self._refused.append(str(int(admitted_ms)))
            self._nudge()
        waiting = self._waiting
        while waiting:
            if self.in_flight < self.granted:
                if wake(waiting.popleft()):
                    return
            else:  # full: more may be granted now that an answer came back
                self._nudge()
                return

    def _nudge(self) -> None:
        if self._poke is not None:
            self._poke.set()

    async def _run(self) -> None:
        poke = self._poke
        assert poke is not None
        try:
            while True:
                if not poke.is_set():
                    try:
                        async with asyncio.timeout(SYNC_S):
                            await poke.wait()
                    except TimeoutError:
                        pass
                poke.clear()
                # What the process wants: the most it wanted within the last IDLE_S (calls come
                # and go between admissions: a share sized to one instant's count shrank and
                # grew every turn), and nothing once it has been idle that long.
                now = time.monotonic()
                demand = self.in_flight + self._asking()
                if demand >= self._peak or now - self._peak_at > IDLE_S:
                    self._peak, self._peak_at = demand, now
                want = self._peak
                if not await self._sync(want):
                    return
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # Redis gone: admit through the scripts again
            log.warning("adaptive concurrency share lost (%s); admitting request by request", exc)
            self.granted = 0
            self._retry_at = time.monotonic() + RETRY_S
            self._wake_all()

    async def _sync(self, want: int) -> bool:
        """One `limit_reserve.lua` call; False when nothing is held any more (then stop)."""
        oks, refused = self._oks, self._refused
        self._oks, self._refused = 0, []
        keep = self.in_flight
        words = (
            f"{int(time.time() * 1000)} {self._holder} {want} {keep} {self._held} "
            f"{self._ttl_ms} {oks} {','.join(refused) or '-'} {self._limits}"
        )
        granted, _limit, plain = await self._pipe.call(Lua.LIMIT_RESERVE, self._keys, words)
        self.granted = int(granted)
        self._held = max(self.granted, keep)
        if not int(plain):  # limits configured or learned, or a pause: not before RETRY_S
            self._retry_at = time.monotonic() + RETRY_S
        self._wake_all()
        # Held, or wanted where a share can be had (the others' leases fill the limit now).
        return self._held > 0 or (want > 0 and bool(int(plain)))

    def _wake_all(self) -> None:
        """Wake the waiters the share now has room for (all of them when it is gone: they
        then go through the scripts)."""
        room = self.granted - self.in_flight if self.granted else len(self._waiting)
        while self._waiting and room > 0:
            room -= wake(self._waiting.popleft())

    async def aclose(self) -> None:
        """Give the share back (the calls still in flight keep their leases until their ttl)."""
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.granted = 0
        self._wake_all()
        if self._held:
            try:
                await self._sync(0)
            except Exception as exc:  # its leases expire with their ttl
                log.debug("share not given back (%s)", exc)


async def wait_turn(waiting: deque[asyncio.Future[None]], timeout_s: float) -> None:
    """Wait in the line `waiting` until `wake`d, at most `timeout_s` (the limiter's waiters
    for a slot, and a share's)."""
    loop = asyncio.get_running_loop()
    waiter: asyncio.Future[None] = loop.create_future()
    waiting.append(waiter)
    timer = loop.call_later(timeout_s, wake, waiter)
    try:
        await waiter
    finally:
        timer.cancel()


def wake(waiter: asyncio.Future[None]) -> bool:
    """Wake `waiter`; False when it was done already (timed out or cancelled)."""
    if waiter.done():
        return False
    waiter.set_result(None)
    return True
