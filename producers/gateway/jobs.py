"""Native jobs: POST /v1/jobs runs one request (a native `LLMRequest` or an OpenAI batch line)
and, with `?wait=seconds`, answers with its result; GET /v1/jobs/{id} reads it back.

A job is a batch of one under the hood, so it gets everything a batch has: routing, limits,
failover, exactly-once results.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from typing import Any

import orjson
from aiohttp import web
from redis.typing import EncodableT, FieldT

from producers.collect import Format, render
from producers.gateway.auth import principal
from producers.gateway.errors import bad_request, json_object
from producers.gateway.state import Gateway, gateway
from schemas.batch_lines import LineError, parse_line
from schemas.config import ConfigError
from schemas.request import RouteHop
from schemas.result import LLMResult
from workers.protocol.results import read_stream

routes = web.RouteTableDef()

#: Longest single XREAD BLOCK: waiting requests notice a shutdown within this.
_BLOCK_SLICE_S = 2.0


def new_job_id() -> str:
    """`job_` + 24 hex digits."""
    return f"job_{uuid.uuid4().hex[:24]}"


def _wait_s(request: web.Request, gw: Gateway) -> float:
    raw = request.query.get("wait", "0")
    try:
        wait = float(raw)
    except ValueError:
        wait = -1.0
    if not 0 <= wait < float("inf"):
        raise bad_request("wait must be a number of seconds >= 0.", param="wait")
    return min(wait, gw.config.max_wait_s)


def _format(request: web.Request) -> Format:
    fmt = request.query.get("format", "native")
    if fmt not in ("native", "openai"):
        raise bad_request("format must be 'native' or 'openai'.", param="format")
    return "openai" if fmt == "openai" else "native"


def _route(request: web.Request, gw: Gateway) -> list[RouteHop] | None:
    name = request.query.get("route")
    if name is None:
        return None
    try:
        return gw.app_config.route(name)
    except ConfigError as exc:
        raise bad_request(str(exc), param="route") from None


async def wait_result(gw: Gateway, job_id: str, wait_s: float) -> tuple[str, LLMResult] | None:
    """The job's result, waiting up to `wait_s` for it to be written (no polling: XREAD BLOCK).

    Past `max_waiters` concurrent waits, requests stop waiting and answer at once.
    """
    stream = gw.keys.stream(job_id)
    deadline = time.monotonic() + wait_s
    if wait_s <= 0 or gw.waiters.locked():
        return _first(await gw.redis.xread({stream: "0-0"}, count=1))
    async with gw.waiters:
        while True:
            remaining = deadline - time.monotonic()
            block_ms = max(1, int(min(remaining, _BLOCK_SLICE_S) * 1000))
            found = _first(await gw.redis.xread({stream: "0-0"}, count=1, block=block_ms))
            if found is not None or remaining <= _BLOCK_SLICE_S or gw.closing.is_set():
                return found


def _first(raw: Any) -> tuple[str, LLMResult] | None:
    entries, _ = read_stream(raw, "0-0")
    return (entries[0][1], entries[0][2]) if entries else None


def job_object(
    job_id: str, record: Mapping[str, str], found: tuple[str, LLMResult] | None, fmt: Format
) -> dict[str, Any]:
    """The `job` object: status `in_progress` until the one result exists."""
    key, result = found if found is not None else (None, None)
    return {
        "id": job_id,
        "object": "job",
        "status": result.status if result is not None else "in_progress",
        "custom_id": record.get("custom_id"),
        "created_at": int(float(record.get("created_at") or 0)),
        "result": render(result, key, fmt) if result is not None and key is not None else None,
    }


@routes.post("/v1/jobs")
async def create_job(request: web.Request) -> web.Response:
    """Queue one request; with `?wait=s`, answer with its result (200) or still running (202)."""
    gw = gateway(request)
    wait_s, fmt, route = _wait_s(request, gw), _format(request), _route(request, gw)
    body = await json_object(request)
    job_id = new_job_id()
    body.setdefault("custom_id", job_id)
    try:
        llm_request = parse_line(orjson.dumps(body), 1)
    except LineError as err:
        raise bad_request(str(err), param=err.field, code="invalid_request") from None
    for i, hop in enumerate(llm_request.route or ()):
        if hop.endpoint not in gw.app_config.endpoints:
            param = f"body.route.{i}.endpoint" if "body" in body else f"route.{i}.endpoint"
            raise bad_request(f"line 1: {param}: unknown endpoint {hop.endpoint!r}", param=param)
    await gw.backpressure.check()
    record = {
        "kind": "job",
        "owner": principal(request).tenant,
        "phase": "submitted",
        "created_at": str(time.time()),
        "custom_id": llm_request.custom_id,
    }
    pipe = gw.redis.pipeline(transaction=False)
    pipe.hset(gw.gkeys.batch(job_id), mapping=dict[FieldT, EncodableT](record.items()))
    pipe.expire(gw.gkeys.batch(job_id), gw.settings.result_ttl_s)
    await pipe.execute()
    await gw.client.submit_many([llm_request], batch_id=job_id, route=route)
    found = await wait_result(gw, job_id, wait_s) if wait_s > 0 else None
    status = 200 if found is not None else 202
    return web.json_response(job_object(job_id, record, found, fmt), status=status)


@routes.get("/v1/jobs/{job_id}")
async def retrieve_job(request: web.Request) -> web.Response:
    """The job and, once written, its result (`?wait=s` waits for it)."""
    gw = gateway(request)
    wait_s, fmt = _wait_s(request, gw), _format(request)
    job_id = request.match_info["job_id"]
    state = await gw.owned_batch(request, job_id, "job")
    found = await wait_result(gw, job_id, wait_s)
    return web.json_response(job_object(job_id, state.gw, found, fmt))
