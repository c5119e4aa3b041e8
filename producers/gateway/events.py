"""GET /v1/batches/{id}/events: a batch's progress as server-sent events.

An event is sent whenever the status or the request counts change (`event: progress`), and a
last one when the batch finishes (`event: done`); `data` is the batch object each time.
"""

from __future__ import annotations

import asyncio
import time

import orjson
from aiohttp import web

from producers.gateway.errors import bad_request
from producers.gateway.state import gateway
from producers.gateway.views import FINISHED, BatchState, load_batch

routes = web.RouteTableDef()

_KEEPALIVE_S = 15.0


def _interval_s(request: web.Request) -> float:
    raw = request.query.get("interval", "0.5")
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0.05 <= value <= 60:
        raise bad_request("interval must be seconds from 0.05 to 60.", param="interval")
    return value


@routes.get("/v1/batches/{batch_id}/events")
async def batch_events(request: web.Request) -> web.StreamResponse:
    """Stream progress until the batch finishes, the client leaves or the gateway stops."""
    gw = gateway(request)
    batch_id = request.match_info["batch_id"]
    state: BatchState | None = await gw.owned_batch(request, batch_id, "batch")
    interval_s = _interval_s(request)
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",
        }
    )
    await response.prepare(request)
    last: tuple[object, ...] | None = None
    sent = 0
    quiet_since = time.monotonic()
    try:
        while state is not None:
            batch = state.to_openai()
            snapshot = (batch["status"], *batch["request_counts"].values())
            if snapshot != last:
                sent += 1
                event = "done" if batch["status"] in FINISHED else "progress"
                data = orjson.dumps(batch).decode()
                await response.write(f"id: {sent}\nevent: {event}\ndata: {data}\n\n".encode())
                last, quiet_since = snapshot, time.monotonic()
                if event == "done":
                    break
            elif time.monotonic() - quiet_since > _KEEPALIVE_S:
                await response.write(b": keep-alive\n\n")
                quiet_since = time.monotonic()
            if gw.closing.is_set():
                break
            await asyncio.sleep(interval_s)
            state = await load_batch(gw.redis, gw.keys, gw.gkeys, batch_id)
        await response.write_eof()
    except ConnectionResetError:
        pass  # the client went away
    return response
