"""Server-sent events: GET /v1/batches/{id}/events streams a batch's progress, and the
dashboard streams its batch list and provider health through the same loop.

An event is sent whenever the status or the request counts change (`event: progress`), and a
last one when the batch finishes (`event: done`); `data` is the batch object each time.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Hashable, Iterator
from typing import Any

import orjson
from aiohttp import web

from producers.gateway.auth import principal
from producers.gateway.errors import bad_request
from producers.gateway.limits import refused
from producers.gateway.state import gateway
from producers.gateway.views import FINISHED, BatchState, load_batch

routes = web.RouteTableDef()

_KEEPALIVE_S = 15.0

#: One look at the source: (event name, data, snapshot) — an event is sent when the snapshot
#: changed, and `done` ends the stream — or None when there is nothing more to watch.
Poll = Callable[[], Awaitable[tuple[str, Any, Hashable] | None]]


def interval_s(request: web.Request, default: str = "0.5") -> float:
    """The `interval` query parameter: seconds between looks, 0.05 to 60, raised to the
    gateway's `min_stream_interval_s` (each look costs Redis reads)."""
    raw = request.query.get("interval", default)
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0.05 <= value <= 60:
        raise bad_request("interval must be seconds from 0.05 to 60.", param="interval")
    return max(value, gateway(request).config.min_stream_interval_s)


@contextlib.contextmanager
def stream_slot(request: web.Request) -> Iterator[None]:
    """Hold one of the key's `max_streams_per_key` open streams (on this process), else 429."""
    gw = gateway(request)
    name = principal(request).name
    cap = gw.config.max_streams_per_key
    if gw.streams.get(name, 0) >= cap:
        raise refused(
            gw.metrics,
            "streams",
            f"Key {name!r} already has {cap} event streams open: close one first.",
            "too_many_streams",
            gw.config.retry_after_s,
        )
    gw.streams[name] = gw.streams.get(name, 0) + 1
    try:
        yield
    finally:
        gw.streams[name] -= 1
        if not gw.streams[name]:
            del gw.streams[name]


async def stream(request: web.Request, every_s: float, poll: Poll) -> web.StreamResponse:
    """Send an event each time `poll` sees a change, until it ends, the client leaves or the
    gateway stops; `: keep-alive` comments fill silences."""
    with stream_slot(request):
        return await _stream(request, every_s, poll)


async def _stream(request: web.Request, every_s: float, poll: Poll) -> web.StreamResponse:
    gw = gateway(request)
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",
        }
    )
    await response.prepare(request)
    last: Hashable | None = None
    sent = 0
    quiet_since = time.monotonic()
    try:
        while (seen := await poll()) is not None:
            event, payload, snapshot = seen
            if snapshot != last:
                sent += 1
                data = orjson.dumps(payload).decode()
                await response.write(f"id: {sent}\nevent: {event}\ndata: {data}\n\n".encode())
                last, quiet_since = snapshot, time.monotonic()
                if event == "done":
                    break
            elif time.monotonic() - quiet_since > _KEEPALIVE_S:
                await response.write(b": keep-alive\n\n")
                quiet_since = time.monotonic()
            if gw.closing.is_set():
                break
            await asyncio.sleep(every_s)
        await response.write_eof()
    except ConnectionResetError:
        pass  # the client went away
    return response


@routes.get("/v1/batches/{batch_id}/events")
async def batch_events(request: web.Request) -> web.StreamResponse:
    """Stream progress until the batch finishes, the client leaves or the gateway stops."""
    gw = gateway(request)
    batch_id = request.match_info["batch_id"]
    first: BatchState | None = await gw.owned_batch(request, batch_id, "batch")
    every_s = interval_s(request)

    async def poll() -> tuple[str, Any, Hashable] | None:
        nonlocal first
        state, first = first, None
        if state is None:
            state = await load_batch(gw.redis, gw.keys, gw.gkeys, batch_id)
        if state is None:
            return None
        batch = state.to_openai()
        counts = batch["request_counts"]
        finished = batch["status"] in FINISHED
        if state.core and not finished:
            started_at = float(state.core.get("created_at") or 0)
            await gw.timeline.record(batch_id, started_at, counts["completed"] + counts["failed"])
        snapshot = (batch["status"], *counts.values())
        return ("done" if finished else "progress"), batch, snapshot

    return await stream(request, every_s, poll)
