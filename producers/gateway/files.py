"""Files API: POST /v1/files (multipart, streamed), GET /v1/files/{id}, its /content, DELETE.

Uploaded files belong to the key's owner; output and error files of a batch belong to the
batch's owner. Anyone else gets 404.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import BodyPartReader, web

from producers.gateway import outputs
from producers.gateway.auth import principal
from producers.gateway.errors import ApiError, bad_request, list_page, not_found
from producers.gateway.limits import too_large
from producers.gateway.state import Gateway, gateway
from producers.gateway.storage import Received, StoredFile
from producers.gateway.views import BatchState, OutputKind, parse_output_file_id

#: Room for multipart boundaries and the small form fields around the file.
_MULTIPART_SLACK = 1 << 20
_FIELD_MAX = 1024
_CHUNK = 1 << 16

routes = web.RouteTableDef()

#: A batch's output or error file: the batch and which of the two.
Output = tuple[BatchState, OutputKind]


async def _part_chunks(part: BodyPartReader) -> AsyncIterator[bytes]:
    while chunk := await part.read_chunk(_CHUNK):
        yield chunk


async def _field(part: BodyPartReader) -> str:
    data = bytearray()
    async for chunk in _part_chunks(part):
        data += chunk
        if len(data) > _FIELD_MAX:
            raise bad_request(f"Form field {part.name!r} is too long.", param=part.name)
    return data.decode(errors="replace").strip()


async def _receive(gw: Gateway, part: BodyPartReader) -> Received:
    try:
        return await gw.store.receive(
            _part_chunks(part),
            max_bytes=gw.config.max_upload_bytes,
            max_lines=gw.config.max_file_lines,
        )
    except ApiError:  # over a limit
        gw.metrics.rejected.labels("upload_size").inc()
        raise


@routes.post("/v1/files")
async def create_file(request: web.Request) -> web.Response:
    """Upload a JSONL file with purpose `batch`, streamed to storage."""
    gw = gateway(request)
    limit = gw.config.max_upload_bytes
    if (request.content_length or 0) > limit + _MULTIPART_SLACK:
        gw.metrics.rejected.labels("upload_size").inc()
        raise too_large("The file", f"{gw.config.max_upload_mib} MiB")
    if not request.content_type.startswith("multipart/"):
        raise bad_request(
            "Upload the file as multipart/form-data with fields 'file' and 'purpose'."
        )
    purpose = ""
    received: Received | None = None
    filename = "upload.jsonl"
    try:
        async for part in await request.multipart():
            if not isinstance(part, BodyPartReader):
                raise bad_request("Nested multipart bodies are not supported.")
            if part.name == "purpose":
                purpose = await _field(part)
            elif part.name == "file":
                if received is not None:
                    raise bad_request("Send one file per upload.", param="file")
                filename = part.filename or filename
                received = await _receive(gw, part)
            else:  # small options this gateway does not use, like `expires_after[...]`
                await _field(part)
        if received is None:
            raise bad_request("Missing the 'file' field.", param="file")
        if purpose != "batch":
            raise bad_request(
                f"Unsupported purpose {purpose!r}: this gateway takes files with purpose 'batch'.",
                param="purpose",
            )
    except ValueError as exc:  # aiohttp's reader: a body cut short or a bad boundary
        if received is not None:
            gw.store.discard(received)
        raise bad_request(f"The multipart body is malformed or incomplete: {exc}.") from None
    except BaseException:
        if received is not None:
            gw.store.discard(received)
        raise
    stored = await gw.store.commit(
        received, owner=principal(request).tenant, filename=filename, purpose=purpose
    )
    return web.json_response(stored.to_openai())


async def _named(request: web.Request) -> tuple[Gateway, str, Output | StoredFile]:
    """The file the path names: (batch, kind) of one of the caller's batch output files, or
    the caller's uploaded file; 404 for one the caller cannot see, or has deleted."""
    gw = gateway(request)
    file_id = request.match_info["file_id"]
    parsed = parse_output_file_id(file_id)
    if parsed is None:
        stored = await gw.store.get(file_id)
        if stored is None or stored.owner != principal(request).tenant:
            raise not_found("file", file_id)
        return gw, file_id, stored
    try:
        state = await gw.owned_batch(request, parsed[0], "batch")
    except ApiError:
        raise not_found("file", file_id) from None
    if state.deleted(parsed[1]):
        raise not_found("file", file_id)
    return gw, file_id, (state, parsed[1])


@routes.get("/v1/files")
async def list_files(request: web.Request) -> web.Response:
    """The caller's uploaded files, newest first unless `order=asc`, `after` the last id seen,
    at most `limit` (1 to 10,000, default 10,000), optionally of one `purpose`."""
    gw = gateway(request)
    raw_limit = request.query.get("limit", "10000")
    if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= 10_000:
        raise bad_request("limit must be an integer from 1 to 10000.", param="limit")
    order = request.query.get("order", "desc")
    if order not in ("asc", "desc"):
        raise bad_request("order must be 'asc' or 'desc'.", param="order")
    after = request.query.get("after") or None
    try:
        files, has_more = await gw.store.page(
            principal(request).tenant,
            after=after,
            limit=int(raw_limit),
            oldest_first=order == "asc",
            purpose=request.query.get("purpose") or None,
        )
    except ValueError:
        raise bad_request(f"Unknown file id {after!r} in 'after'.", param="after") from None
    data = [f.to_openai() for f in files]
    return list_page(data, has_more)


@routes.get("/v1/files/{file_id}")
async def retrieve_file(request: web.Request) -> web.Response:
    """The file object."""
    gw, _, found = await _named(request)
    if isinstance(found, StoredFile):
        return web.json_response(found.to_openai())
    return web.json_response(await outputs.file_object(gw.client, gw.gkeys, *found))


@routes.get("/v1/files/{file_id}/content")
async def file_content(request: web.Request) -> web.StreamResponse:
    """The file's bytes; output/error files are generated from the results as they stream."""
    gw, file_id, found = await _named(request)
    if not isinstance(found, StoredFile):
        return await outputs.stream(request, gw.client, found[0].id, found[1])
    try:
        return await gw.store.response(found)
    except FileNotFoundError:
        raise not_found("file", file_id) from None


@routes.delete("/v1/files/{file_id}")
async def delete_file(request: web.Request) -> web.Response:
    """Remove an uploaded file, or a batch's output or error file: it is gone from the Files
    API (404 after), while the results stay for `batchyard collect` until the batch expires."""
    gw, file_id, found = await _named(request)
    if isinstance(found, StoredFile):
        await gw.store.delete(found)
    else:
        await gw.redis.hset(gw.gkeys.batch(found[0].id), f"{found[1]}_deleted", 1)
    return web.json_response({"id": file_id, "object": "file", "deleted": True})
