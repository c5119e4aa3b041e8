"""LaneQueue: dramatiq's work queue, taking turns between queues at equal priority.

dramatiq's worker keeps one local `PriorityQueue` of prefetched messages, ordered by actor
priority and then by the time each message was put (FIFO). Each lane has its own consumer,
which prefetches up to `queue_prefetch` messages: when a small batch arrives on an idle lane
behind a big batch, its messages queue behind every prefetched message of the big lane, and
from then on the two lanes share the slots in whatever order their consumers happened to
refill. Here messages of equal priority are served round-robin by queue (lane), so a newly
busy lane gets every other free slot from its first message on (issue #5, #15's fairness bench).

It is dramatiq's `queue.PriorityQueue` with the four storage methods the standard library
documents for subclasses (`_init`, `_qsize`, `_put`, `_get`) replaced, so `put`, `get`,
`task_done`, `join` and the locking are the standard library's own.
"""

from __future__ import annotations

import queue
from collections import deque
from typing import Any


class LaneQueue(queue.PriorityQueue[Any]):
    """Work-queue items (with `.priority` and `.message.queue_name`), lowest priority value
    first; within one priority, one item per queue in turn, FIFO within a queue."""

    def _init(self, maxsize: int) -> None:
        #: priority -> queue name -> that queue's items in arrival order. A queue's deque is
        #: dropped once empty, so the dict's order is the turn order: a queue that is served
        #: moves to the back.
        self._levels: dict[int, dict[str, deque[Any]]] = {}
        self._size = 0

    def _qsize(self) -> int:
        return self._size

    def _put(self, item: Any) -> None:
        lanes = self._levels.get(item.priority)
        if lanes is None:
            lanes = self._levels[item.priority] = {}
        name = item.message.queue_name
        items = lanes.get(name)
        if items is None:
            items = lanes[name] = deque()
        items.append(item)
        self._size += 1

    def _get(self) -> Any:
        priority = min(self._levels)
        lanes = self._levels[priority]
        name = next(iter(lanes))
        items = lanes.pop(name)
        item = items.popleft()
        if items:
            lanes[name] = items  # to the back of the turn order
        elif not lanes:
            del self._levels[priority]
        self._size -= 1
        return item
