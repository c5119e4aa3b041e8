"""Batches API: create from an uploaded file, retrieve, list (after/limit), cancel.

Creating returns at once with status `validating`; the file is then checked line by line in
the background and the batch either fails (with line-numbered errors) or starts.
"""

from __future__ import annotations

import contextlib
import re
import time
from typing import Literal

import orjson
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from redis.typing import EncodableT, FieldT

from producers.gateway.auth import principal
from producers.gateway.errors import (
    ApiError,
    bad_request,
    invalid,
    json_object,
    list_page,
    not_found,
)
from producers.gateway.state import gateway
from producers.gateway.views import BatchState, load_batches, text
from producers.submit import new_batch_id
from schemas.request import URL_KINDS

routes = web.RouteTableDef()
#: The batch metadata key that picks a config route (e.g. one through a `mode: batch`
#: endpoint): `client.batches.create(..., metadata={"batchyard_route": "patient"})`.
ROUTE_KEY = "batchyard_route"

_WINDOW = re.compile(r"(\d+)([smhd])")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_MAX_WINDOW_S = 30 * 86400


class CreateBatch(BaseModel):
    """The body of POST /v1/batches (unknown fields, like `output_expires_after`, ignored)."""

    model_config = ConfigDict(extra="ignore")

    input_file_id: str = Field(min_length=1, max_length=200)
    endpoint: str
    completion_window: str
    metadata: dict[str, str] | None = None
    #: batchyard extension (OpenAI SDK: `extra_body={"priority": "high"}`).
    priority: Literal["high", "normal", "low"] = "normal"

    @field_validator("metadata")
    @classmethod
    def _metadata(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        if value is None:
            return value
        if len(value) > 16:
            raise ValueError("at most 16 keys")
        for k, v in value.items():
            if len(k) > 64 or len(v) > 512:
                raise ValueError(f"key {k[:64]!r}: keys take 64 characters, values 512")
        return value


def window_seconds(window: str) -> float:
    """`24h`, `90m`, `2d`... in seconds; 400 naming `completion_window` otherwise."""
    match = _WINDOW.fullmatch(window.strip())
    seconds = int(match.group(1)) * _UNIT_S[match.group(2)] if match else 0
    if not 0 < seconds <= _MAX_WINDOW_S:
        raise bad_request(
            f"Invalid completion_window {window!r}: use e.g. '24h' (at most 30d).",
            param="completion_window",
        )
    return float(seconds)


@routes.post("/v1/batches")
async def create_batch(request: web.Request) -> web.Response:
    """Create a batch from an uploaded file; validation and queueing continue in the background."""
    gw = gateway(request)
    owner = principal(request).tenant
    try:
        body = CreateBatch.model_validate(await json_object(request))
    except ValidationError as exc:
        raise invalid(exc) from None
    if body.endpoint not in URL_KINDS:
        raise bad_request(
            f"Unsupported endpoint {body.endpoint!r}: batches run {', '.join(URL_KINDS)} requests.",
            param="endpoint",
        )
    window_s = window_seconds(body.completion_window)
    route = (body.metadata or {}).get(ROUTE_KEY)
    if route is not None and route not in gw.app_config.routes:
        known = ", ".join(sorted(gw.app_config.routes))
        raise bad_request(
            f"Unknown route {route!r} in metadata.{ROUTE_KEY} (known: {known}).",
            param=f"metadata.{ROUTE_KEY}",
        )
    stored = await gw.store.get(body.input_file_id)
    if stored is None or stored.owner != owner:
        raise not_found("file", body.input_file_id)
    if stored.purpose != "batch":
        raise bad_request("The input file must have purpose 'batch'.", param="input_file_id")
    await gw.backpressure.check()
    batch_id = new_batch_id()
    now = time.time()
    ttl = gw.settings.result_ttl_s
    record: dict[FieldT, EncodableT] = {
        "kind": "batch",
        "owner": owner,
        "phase": "validating",
        "created_at": now,
        "input_file_id": stored.id,
        "endpoint": body.endpoint,
        "completion_window": body.completion_window,
        "window_s": window_s,
        "metadata": orjson.dumps(body.metadata).decode(),  # null when none was given
        "priority": body.priority,
    }
    listing = gw.gkeys.owner_batches(owner)
    pipe = gw.redis.pipeline(transaction=True)
    pipe.hset(gw.gkeys.batch(batch_id), mapping=record)
    pipe.expire(gw.gkeys.batch(batch_id), ttl)
    pipe.zadd(gw.gkeys.ingesting, {batch_id: now + 60})
    pipe.zadd(listing, {batch_id: now})
    pipe.zremrangebyscore(listing, "-inf", now - ttl)
    pipe.expire(listing, ttl)
    await pipe.execute()
    gw.spawn(
        gw.ingest.run(
            batch_id,
            stored,
            window_s,
            body.metadata or {},
            body.priority,
            body.endpoint,
        ),
        name=f"ingest {batch_id}",
    )
    state = BatchState(batch_id, {text(k): text(v) for k, v in record.items()}, {})
    return web.json_response(state.to_openai())


@routes.get("/v1/batches/{batch_id}")
async def retrieve_batch(request: web.Request) -> web.Response:
    """The batch object, with live request counts."""
    gw = gateway(request)
    state = await gw.owned_batch(request, request.match_info["batch_id"], "batch")
    return web.json_response(state.to_openai())


def page_limit(request: web.Request, default: str = "20") -> int:
    raw = request.query.get("limit", default)
    if not raw.isdigit() or not 1 <= int(raw) <= 100:
        raise bad_request("limit must be an integer from 1 to 100.", param="limit")
    return int(raw)


async def listing_start(request: web.Request, after: str | None) -> tuple[str, int]:
    """The caller's batch listing key and the rank just past `after` (0 without one)."""
    gw = gateway(request)
    listing = gw.gkeys.owner_batches(principal(request).tenant)
    if not after:
        return listing, 0
    rank = await gw.redis.zrevrank(listing, after)
    if not isinstance(rank, int):
        raise bad_request(f"Unknown batch id {after!r} in 'after'.", param="after")
    return listing, rank + 1


async def owned_page(
    request: web.Request, after: str | None, limit: int
) -> tuple[list[BatchState], bool]:
    """A page of the caller's batches, newest first, and whether older ones follow."""
    gw = gateway(request)
    listing, start = await listing_start(request, after)
    ids = [text(raw) for raw in await gw.redis.zrevrange(listing, start, start + limit)]
    states = await load_batches(gw.redis, gw.keys, gw.gkeys, ids[:limit])
    gone = [i for i, s in zip(ids, states, strict=False) if s is None]
    if gone:
        await gw.redis.zrem(listing, *gone)
    return [s for s in states if s is not None], len(ids) > limit


@routes.get("/v1/batches")
async def list_batches(request: web.Request) -> web.Response:
    """The caller's batches, newest first, a page at a time (`after` = last id seen)."""
    states, has_more = await owned_page(request, request.query.get("after"), page_limit(request))
    data = [s.to_openai() for s in states]
    return list_page(data, has_more)


async def cancel(request: web.Request, batch_id: str) -> BatchState:
    """Cancel the caller's batch: queued requests end `cancelled` unsent; a batch still
    validating stops there. Shared by the API and the dashboard's button."""
    gw = gateway(request)
    state = await gw.owned_batch(request, batch_id, "batch")
    if state.phase == "validating":
        now = time.time()
        await gw.move_phase(
            batch_id, "validating", "cancelled", cancelling_at=now, cancelled_at=now
        )
        # Lost the race when validation has just ended: then it is being submitted.
        state = await gw.owned_batch(request, batch_id, "batch")
    if state.phase in ("submitting", "submitted"):
        await gw.redis.hset(gw.gkeys.batch(batch_id), "cancel_requested", 1)
        # Still submitting and no record yet: ingestion cancels once it has queued everything.
        with contextlib.suppress(KeyError):
            await gw.client.cancel(batch_id)
    return await gw.owned_batch(request, batch_id, "batch")


async def retry_failed(request: web.Request, batch_id: str) -> tuple[int, BatchState]:
    """Re-run the failed requests of the caller's batch (as `batchyard retry --failed`);
    returns how many were queued. Cancelled batches stay cancelled."""
    gw = gateway(request)
    state = await gw.owned_batch(request, batch_id, "batch")
    status = state.status()
    if not state.core or status not in ("in_progress", "completed", "expired"):
        raise ApiError(
            409,
            f"Batch {batch_id!r} is {status}: only running or finished (not cancelled) "
            "batches can retry their failed requests.",
            code="batch_not_retryable",
        )
    retried = await gw.client.retry_failed(batch_id)
    if retried:  # the output and error files change: forget their cached sizes
        await gw.redis.hdel(gw.gkeys.batch(batch_id), "output_bytes", "errors_bytes")
    return retried, await gw.owned_batch(request, batch_id, "batch")


@routes.post("/v1/batches/{batch_id}/cancel")
async def cancel_batch(request: web.Request) -> web.Response:
    """Cancel: queued requests end `cancelled` unsent; a batch still validating stops there."""
    state = await cancel(request, request.match_info["batch_id"])
    return web.json_response(state.to_openai())
