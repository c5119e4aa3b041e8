"""One loop timer per timeout length for every call it bounds, instead of one per call.

`asyncio.timeout` arms a loop timer per call (a heap push) and cancels it when the call ends
(a heap entry left for the loop to sweep): 4.0-8.1 µs per call in a worker (#22). A call's
bound here is an entry at the tail of its length's queue: entries of one length expire in the
order they were made, so one timer, set for the head's deadline, serves them all. What
happens when one expires is what `asyncio.timeout` does: its task is cancelled, and the
cancellation leaves the block as `TimeoutError`, unless someone else cancelled the task too.
"""

from __future__ import annotations

import asyncio
from collections import deque


class _Bound:
    """One call's bound: `with deadline(timeout_s):` in a task."""

    __slots__ = ("_cancelling", "_queue", "_task", "expired", "when")

    def __init__(self, queue: Deadlines) -> None:
        self._queue = queue
        self._task: asyncio.Task[object] | None = None
        self._cancelling = 0
        self.when = 0.0
        self.expired = False

    def __enter__(self) -> _Bound:
        task = asyncio.current_task()
        if task is None:
            raise RuntimeError("deadline() should be used inside a task")
        self._task = task
        self._cancelling = task.cancelling()
        self._queue.add(self)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, _tb: object
    ) -> None:
        task, self._task = self._task, None  # an ended call is skipped by the timer
        self._queue.drop_ended()
        if self.expired and task is not None:
            # the timer's cancel is ours to take back; no other cancel came: it timed out
            alone = task.uncancel() <= self._cancelling
            if alone and exc_type is asyncio.CancelledError:
                raise TimeoutError from exc

    # Entering and leaving wait for nothing: `async with` works too, as with asyncio.timeout,
    # but costs a coroutine each way.
    async def __aenter__(self) -> _Bound:
        return self.__enter__()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, _tb: object
    ) -> None:
        self.__exit__(exc_type, exc, _tb)


class Deadlines:
    """The bounds of one timeout length on one loop, oldest first, and their one timer."""

    def __init__(self, loop: asyncio.AbstractEventLoop, timeout_s: float) -> None:
        self.loop = loop
        self.timeout_s = timeout_s
        self._bounds: deque[_Bound] = deque()
        #: Bounds entered and not yet left.
        self._live = 0
        self._timer: asyncio.TimerHandle | None = None

    def add(self, bound: _Bound) -> None:
        """Start `bound` now; arm the timer if none is armed (an armed one is due no later)."""
        bound.when = self.loop.time() + self.timeout_s
        self._bounds.append(bound)
        self._live += 1
        if self._timer is None:
            self._timer = self.loop.call_at(bound.when, self._expire)

    def drop_ended(self) -> None:
        """Forget the ended bounds at the head: calls of one length mostly end in the order
        they started, so the queue stays about as long as the calls in flight. A call that
        hangs at the head (a provider that never answers, up to `timeout_s`) would keep every
        later call's ended bound queued behind it, `timeout_s` x the call rate of them: once
        ended bounds are half the queue, the queue is rebuilt from the live ones."""
        bounds = self._bounds
        self._live -= 1
        while bounds and bounds[0]._task is None:
            bounds.popleft()
        if len(bounds) > 2 * self._live + 64:
            self._bounds = deque(b for b in bounds if b._task is not None)

    def _expire(self) -> None:
        self._timer = None
        now = self.loop.time()
        bounds = self._bounds
        while bounds:
            bound = bounds[0]
            if bound._task is not None:
                if bound.when > now:
                    self._timer = self.loop.call_at(bound.when, self._expire)
                    return
                bound.expired = True
                bound._task.cancel()
            bounds.popleft()

    def __len__(self) -> int:
        return len(self._bounds)


_queues: dict[float, Deadlines] = {}


def deadline(timeout_s: float) -> _Bound:
    """A bound of `timeout_s` for the block it enters, as `asyncio.timeout(timeout_s)`, on
    the one timer of that length of the running loop."""
    loop = asyncio.get_running_loop()
    queue = _queues.get(timeout_s)
    if queue is None or queue.loop is not loop:
        if len(_queues) >= 64:  # bounded whatever lengths configs name
            _queues.clear()
        queue = _queues[timeout_s] = Deadlines(loop, timeout_s)
    return _Bound(queue)
