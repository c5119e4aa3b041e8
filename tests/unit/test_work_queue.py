"""LaneQueue: the worker's local work queue serves lanes of equal priority in turn."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from queue import Empty

import pytest

from workers.dramatiq_ext.work_queue import LaneQueue


@dataclass
class Msg:
    queue_name: str
    n: int


@dataclass
class Item:
    priority: int
    message: Msg = field(compare=False)


def put(q: LaneQueue, queue: str, count: int, priority: int = 10) -> None:
    for n in range(count):
        q.put(Item(priority, Msg(queue, n)))


def drain(q: LaneQueue) -> list[tuple[str, int]]:
    out = []
    while True:
        try:
            item = q.get_nowait()
        except Empty:
            return out
        out.append((item.message.queue_name, item.message.n))


def test_lanes_of_equal_priority_take_turns_fifo_within_each() -> None:
    q = LaneQueue()
    put(q, "llm.mock", 5)  # a big lane's prefetch, all fetched first
    put(q, "llm.mock@1", 2)  # then a small batch on another lane
    assert q.qsize() == 7
    assert drain(q) == [
        ("llm.mock", 0),
        ("llm.mock@1", 0),
        ("llm.mock", 1),
        ("llm.mock@1", 1),
        ("llm.mock", 2),
        ("llm.mock", 3),
        ("llm.mock", 4),
    ]
    assert q.qsize() == 0 and q.empty()


def test_a_lane_that_turns_busy_is_served_within_one_turn() -> None:
    q = LaneQueue()
    put(q, "a", 10)
    assert q.get_nowait().message.queue_name == "a"
    put(q, "b", 1)
    assert [q.get_nowait().message.queue_name for _ in range(3)] == ["a", "b", "a"]


def test_lower_priority_value_goes_first_whatever_the_turn() -> None:
    q = LaneQueue()
    put(q, "llm.mock", 3, priority=10)
    put(q, "llm.mock@low", 2, priority=20)
    put(q, "llm.mock@high", 2, priority=0)
    served = []
    while not q.empty():
        item = q.get_nowait()
        served.append((item.priority, item.message.queue_name))
    assert (
        served == [(0, "llm.mock@high")] * 2 + [(10, "llm.mock")] * 3 + [(20, "llm.mock@low")] * 2
    )


def test_get_blocks_until_a_put_and_join_waits_for_task_done() -> None:
    q = LaneQueue()
    got: list[Item] = []
    reader = threading.Thread(target=lambda: got.append(q.get(timeout=10)))
    reader.start()
    put(q, "a", 1)
    reader.join(10)
    assert [i.message.n for i in got] == [0]
    q.task_done()
    q.join()  # returns: every item put was marked done
    with pytest.raises(Empty):
        q.get(timeout=0.01)
