"""Queues, lanes and actors: which dramatiq queue and actor a batch's messages go to."""

from __future__ import annotations

from typing import Literal

EXECUTE_ACTOR = "batchyard.execute"
QUEUE_PREFIX = "llm."
#: dramatiq's suffix of a queue's delayed twin (`dramatiq.common.dq_name`).
DELAY_SUFFIX = ".DQ"

Priority = Literal["high", "normal", "low"]
PRIORITIES: tuple[Priority, ...] = ("high", "normal", "low")

#: Normal-priority batches are spread over this many queues ("lanes") per endpoint: each lane
#: has its own consumer, so batches on different lanes interleave instead of queueing behind
#: each other. Fixed, because producers and every worker must agree on the queue names.
FAIR_LANES = 4
#: Lane suffixes: "" (the plain `llm.<endpoint>` queue), "@1".."@3", "@high", "@low". `@` is
#: not allowed in endpoint names, so a lane never collides with another endpoint's queue.
NORMAL_LANES: tuple[str, ...] = ("", *(f"@{i}" for i in range(1, FAIR_LANES)))
LANES: tuple[str, ...] = ("@high", *NORMAL_LANES, "@low")

#: dramatiq orders prefetched messages by their actor's priority (lower first), so one actor
#: per priority level with the same body makes high-priority work jump the local line.
ACTORS: dict[Priority, tuple[str, int]] = {
    "high": (f"{EXECUTE_ACTOR}.high", 0),
    "normal": (EXECUTE_ACTOR, 10),
    "low": (f"{EXECUTE_ACTOR}.low", 20),
}


def queue_name(endpoint: str, lane: str = "") -> str:
    """The dramatiq queue that feeds an endpoint on a lane ("" is the plain queue)."""
    return f"{QUEUE_PREFIX}{endpoint}{lane}"


def delay_queue(queue: str) -> str:
    """The queue dramatiq moves delayed messages of `queue` from once they are due."""
    return queue if queue.endswith(DELAY_SUFFIX) else queue + DELAY_SUFFIX


def endpoint_queues(endpoint: str) -> list[str]:
    """Every lane queue of an endpoint."""
    return [queue_name(endpoint, lane) for lane in LANES]


def lane_priority(lane: str) -> Priority:
    """The priority a lane serves."""
    return "high" if lane == "@high" else "low" if lane == "@low" else "normal"


def actor_for(lane: str) -> str:
    """The actor name messages on `lane` are sent to."""
    return ACTORS[lane_priority(lane)][0]


def check_priority(priority: str) -> Priority:
    """`priority` if it is one, else a ValueError naming the choices."""
    if priority not in PRIORITIES:
        raise ValueError(f"priority must be one of {', '.join(PRIORITIES)}, got {priority!r}")
    return priority


def pick_lane(priority: Priority, depths: list[int], turn: int) -> str:
    """The lane for a new batch: its priority's own lane, or for normal batches the normal lane
    with the fewest waiting messages (`depths`, in `NORMAL_LANES` order), ties broken
    round-robin by `turn` so consecutive batches land on different lanes."""
    if priority != "normal":
        return f"@{priority}"
    n = len(NORMAL_LANES)
    best = min(range(n), key=lambda i: (depths[i], (i - turn) % n))
    return NORMAL_LANES[best]
