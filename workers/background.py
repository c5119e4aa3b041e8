"""Background tasks on the worker's event loop that end when cancelled."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

log = logging.getLogger("batchyard.worker")


async def cancel_and_wait(task: asyncio.Task[Any], timeout_s: float = 5.0) -> bool:
    """Cancel `task` and wait until it has ended (True), or `timeout_s` passed (False).

    One cancel is not always enough: on Python 3.11, `asyncio.wait_for` returns normally
    when a cancel lands in the loop pass its inner future completes in (fixed in 3.12), and
    redis-py 8 writes every command under `wait_for`. A background loop cancelled while a
    command was being written went on running (99 of 400 cancels of a pub/sub listener, in
    0-7 loop passes after its start), and whoever awaited it waited for ever. So the cancel
    is repeated while the task runs, at growing intervals from 50 ms (a task busy with its
    own clean-up after the first cancel normally ends before the second). An exception
    other than the cancel is raised, as awaiting the task would.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    pause = 0.05
    while not task.done():
        left = deadline - loop.time()
        if left <= 0:
            name, waited = task.get_name(), timeout_s
            log.warning("task %s did not end %.1fs after it was cancelled", name, waited)
            return False
        task.cancel()
        await asyncio.wait({task}, timeout=min(pause, left))
        pause *= 2
    if not task.cancelled() and (exc := task.exception()) is not None:
        raise exc
    return True
