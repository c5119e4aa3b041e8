"""A deadline on reading every request body: a client that trickles its body in (a byte every
few seconds) would otherwise hold a connection and a handler for as long as it likes, and hold
the gateway's shutdown with it.

A watchdog follows the body as it arrives: when no byte came for `body_idle_timeout_s`, or the
whole body took longer than `body_total_timeout_s`, or the gateway is stopping, the read the
handler is waiting on fails with 408 and the connection is closed after the answer.
"""

from __future__ import annotations

import asyncio
import contextlib

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from producers.gateway.errors import ApiError

#: Set on a request whose body the watchdog cut: its connection closes after the answer.
BODY_CUT = web.RequestKey("body_cut", bool)
#: Longest pause between two looks at a body's progress.
_STEP_S = 1.0


def _cut(why: str) -> ApiError:
    return ApiError(
        408,
        f"The request body arrived too slowly: {why}. Send it at once.",
        code="request_timeout",
        headers={"Connection": "close"},
    )


async def _watch(
    request: web.Request, idle_s: float, total_s: float, closing: asyncio.Event
) -> None:
    """Fail the body's pending read once it stalls, takes too long, or the gateway stops."""
    content = request.content
    loop = asyncio.get_running_loop()
    start = last = loop.time()
    seen = content.total_bytes
    step = min(_STEP_S, idle_s / 4, total_s / 4)
    while not content.is_eof():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(closing.wait(), step)
        now = loop.time()
        if content.total_bytes != seen:
            seen, last = content.total_bytes, now
        if content.is_eof():
            return
        if closing.is_set():
            why = "the gateway is shutting down"
        elif now - last >= idle_s:
            why = f"no byte for {idle_s:g} s"
        elif now - start >= total_s:
            why = f"not complete after {total_s:g} s"
        else:
            continue
        request[BODY_CUT] = True
        content.set_exception(_cut(why))
        return


def body_deadline_middleware(idle_s: float, total_s: float, closing: asyncio.Event) -> Middleware:
    """Outermost middleware: every body read of every handler is under the deadline."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not request.body_exists or request.content.is_eof():
            return await handler(request)
        watchdog = asyncio.create_task(_watch(request, idle_s, total_s, closing))
        try:
            response = await handler(request)
        finally:
            watchdog.cancel()
        if request.get(BODY_CUT):
            response.force_close()  # the rest of the body is not worth waiting for
        return response

    return middleware
