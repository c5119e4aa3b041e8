"""A batch's output and error files, generated from its results and streamed, never stored:
the OpenAI batch output format (`schemas.batch_output.to_openai_line`), successes in the
output file and everything else in the error file."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson
from aiohttp import web

from producers.client import AsyncClient
from producers.gateway.views import FINISHED, BatchState, OutputKind, output_file_id
from schemas.batch_output import to_openai_line
from workers.protocol.gateway import GatewayKeys


async def chunks(client: AsyncClient, batch_id: str, kind: OutputKind) -> AsyncIterator[bytes]:
    """The file's lines, one page of results at a time (in completion order)."""
    after = "0-0"
    while (page := await client.results(batch_id, after)).read:
        buf = bytearray()
        for _sid, key, result in page.entries:
            if (result.status == "succeeded") == (kind == "output"):
                buf += orjson.dumps(to_openai_line(result, key))
                buf += b"\n"
        if buf:
            yield bytes(buf)
        after = page.cursor


async def stream(
    request: web.Request, client: AsyncClient, batch_id: str, kind: OutputKind
) -> web.StreamResponse:
    """Send the file as it is generated (chunked): memory stays at one page of results."""
    response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
    await response.prepare(request)
    async for chunk in chunks(client, batch_id, kind):
        await response.write(chunk)
    await response.write_eof()
    return response


async def file_object(
    client: AsyncClient, gkeys: GatewayKeys, state: BatchState, kind: OutputKind
) -> dict[str, Any]:
    """The OpenAI `file` object of a generated file. Its size takes one pass over the results,
    remembered once the batch is finished (the file cannot change any more)."""
    field = f"{kind}_bytes"
    size = state.gw.get(field)
    if size is None:
        total = 0
        async for chunk in chunks(client, state.id, kind):
            total += len(chunk)
        if state.status() in FINISHED:
            await client.redis.hset(gkeys.batch(state.id), field, total)
        size = str(total)
    finished = state.core.get("finished_at")
    return {
        "id": output_file_id(state.id, kind),
        "object": "file",
        "bytes": int(size),
        "created_at": int(float(finished or state.gw.get("created_at") or 0)),
        "filename": f"{state.id}_{kind}.jsonl",
        "purpose": "batch_output",
        "status": "processed",
        "status_details": None,
    }
