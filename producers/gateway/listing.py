"""The dashboard's batch list with its search: the caller's batches, newest first, keeping
those whose id contains `batch_id` and whose endpoint is `endpoint`, a page at a time."""

from __future__ import annotations

from aiohttp import web

from producers.gateway.batches import listing_start, owned_page
from producers.gateway.page_data import ListFilter
from producers.gateway.state import gateway
from producers.gateway.views import BatchState, load_batches, text

#: Batches read per round trip while searching.
CHUNK = 200
#: Batches one page of a search reads at most; past it the page links on from where it
#: stopped, so a search over a long history costs a bounded amount per page.
MAX_SCANNED = 5000


async def find_page(
    request: web.Request, after: str | None, limit: int, flt: ListFilter
) -> tuple[list[BatchState], str | None]:
    """A page of the caller's batches matching `flt`, and the id to continue after (None
    at the end)."""
    if not flt:
        states, has_more = await owned_page(request, after, limit)
        return states, (states[-1].id if has_more and states else None)
    gw = gateway(request)
    listing, start = await listing_start(request, after)
    found: list[BatchState] = []
    cursor, last_scanned = start, None
    while len(found) <= limit and cursor - start < MAX_SCANNED:
        ids = [text(raw) for raw in await gw.redis.zrevrange(listing, cursor, cursor + CHUNK - 1)]
        if not ids:
            return found, None
        loaded = await load_batches(gw.redis, gw.keys, gw.gkeys, ids)
        for batch_id, state in zip(ids, loaded, strict=True):
            cursor += 1
            if state is not None and flt.matches(state.id, state.gw.get("endpoint", "")):
                found.append(state)
                if len(found) > limit:
                    return found[:limit], found[limit - 1].id
            last_scanned = batch_id
    more = await gw.redis.zcard(listing) > cursor
    return found, (last_scanned if more else None)
