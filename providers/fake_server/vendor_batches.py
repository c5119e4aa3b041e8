"""The fake server's vendor batch APIs: OpenAI Files + Batches and Anthropic Message Batches.

Shapes follow the vendors' documentation: an OpenAI batch object moves through
`validating -> in_progress -> finalizing -> completed` (or `expired`, `cancelling ->
cancelled`), with `request_counts {total, completed, failed}`, an output file of successful
lines and an error file of failed ones, each line `{id, custom_id, response, error}`. An
Anthropic Message Batch has `processing_status` `in_progress | canceling | ended`,
`request_counts {processing, succeeded, errored, canceled, expired}` and a results stream of
`{custom_id, result: {type: succeeded|errored|canceled|expired, ...}}` lines once it ended.

Knobs (`BatchKnobs`): how long a batch takes, whether it never finishes, the fraction of its
lines the vendor fails, how long a cancel takes. Batches are evaluated lazily when read, so
the server needs no timer task.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy

from providers.fake_server.anthropic_wire import AnthropicWire
from providers.fake_server.batch_state import (
    BatchKnobs,
    VendorBatch,
    fails,
    iso,
    jsonl,
    parse_openai_lines,
    unrun,
)
from providers.fake_server.faults import Fault
from providers.fake_server.openai_wire import OpenAIWire
from providers.fake_server.wire import BadRequest, Reply, Wire

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

#: OpenAI: the only completion window the Batch API accepts.
WINDOWS = {"24h": 86_400.0}


class VendorBatches:
    """The batch endpoints of one FakeServer; `calls` records every batch API call."""

    def __init__(self, knobs: BatchKnobs, key_ok: Callable[[Wire, web.Request], bool]) -> None:
        self.knobs = knobs
        self._key_ok = key_ok
        self.openai = OpenAIWire()
        self.anthropic = AnthropicWire()
        self.files: dict[str, tuple[bytes, str, str, float]] = {}
        self.batches: dict[str, VendorBatch] = {}
        #: (method, path) of every batch API call, in order.
        self.calls: list[tuple[str, str]] = []
        #: Lines the vendor has answered (succeeded or failed), all batches.
        self.lines_done = 0

    def cancels(self) -> list[str]:
        """Ids of the batches a cancel was sent for."""
        return [b.id for b in self.batches.values() if b.cancel_at is not None]

    def add_routes(self, app: web.Application) -> None:
        """Mount the OpenAI and Anthropic batch routes."""
        r = app.router
        r.add_post("/v1/files", self._upload)
        r.add_get("/v1/files/{id}", self._file)
        r.add_get("/v1/files/{id}/content", self._file_content)
        r.add_post("/v1/batches", self._openai_create)
        r.add_get("/v1/batches/{id}", self._get("openai"))
        r.add_post("/v1/batches/{id}/cancel", self._cancel("openai"))
        r.add_post("/v1/messages/batches", self._anthropic_create)
        r.add_get("/v1/messages/batches/{id}", self._get("anthropic"))
        r.add_post("/v1/messages/batches/{id}/cancel", self._cancel("anthropic"))
        r.add_get("/v1/messages/batches/{id}/results", self._anthropic_results)

    # -- shared ------------------------------------------------------------------------------

    def _guard(self, request: web.Request, wire: Wire) -> web.Response | None:
        self.calls.append((request.method, request.path))
        if not self._key_ok(wire, request):
            return _reply(wire.error("auth", None, Fault(kind="auth")))
        return None

    def _batch(self, request: web.Request, vendor: str) -> VendorBatch | web.Response:
        """The vendor's batch the path names, once the key is checked; else the error reply."""
        wire = self.openai if vendor == "openai" else self.anthropic
        denied = self._guard(request, wire)
        if denied is not None:
            return denied
        batch = self.batches.get(request.match_info["id"])
        if batch is None or batch.vendor != vendor:
            return _reply(wire.error("not_found", None, Fault(kind="not_found")))
        return batch

    def _object(self, request: web.Request, batch: VendorBatch, now: float) -> dict[str, Any]:
        """The batch object in its vendor's shape, settled as of `now`."""
        if batch.vendor == "openai":
            return self._openai_object(batch, now)
        return self._anthropic_object(request, batch, now)

    def _get(self, vendor: str) -> Handler:
        """GET one batch of `vendor`."""

        async def get(request: web.Request) -> web.StreamResponse:
            batch = self._batch(request, vendor)
            if isinstance(batch, web.Response):
                return batch
            return web.json_response(self._object(request, batch, time.time()))

        return get

    def _cancel(self, vendor: str) -> Handler:
        """Cancel one batch of `vendor`: OpenAI refuses an ended batch, Anthropic ignores it."""

        async def cancel(request: web.Request) -> web.StreamResponse:
            batch = self._batch(request, vendor)
            if isinstance(batch, web.Response):
                return batch
            now = time.time()
            self._advance(batch, now)
            if batch.ended is not None and vendor == "openai":
                why = f"Cannot cancel a batch with status '{batch.ended}'."
                return _reply(self.openai.bad_request(why))
            if batch.ended is None and batch.cancel_at is None:
                batch.cancel_at = now
            return web.json_response(self._object(request, batch, now))

        return cancel

    def _advance(self, batch: VendorBatch, now: float) -> None:
        """Settle a batch whose time has come: done, cancelled or expired."""
        if batch.ended is not None:
            return
        knobs = self.knobs
        if batch.cancel_at is not None and now >= batch.cancel_at + knobs.cancel_latency_s:
            self._finish(batch, "cancelled", now)
        elif not knobs.never_finish and now >= batch.created + knobs.delay_s:
            self._finish(batch, "completed", now)
        elif now >= batch.created + (knobs.expire_s or WINDOWS.get(batch.window, 86_400.0)):
            self._finish(batch, "expired", now)

    def _finish(self, batch: VendorBatch, how: str, now: float) -> None:
        batch.ended, batch.ended_at = how, now
        for i, line in enumerate(batch.lines):
            if how != "completed":
                batch.results.append((False, unrun(batch, line, how)))
                continue
            failed = fails(i, self.knobs.fail_fraction)
            answer = self._run(batch, line, failed)
            batch.results.append((not failed, answer))
            self.lines_done += 1
        if batch.vendor == "openai":
            ok = [r for good, r in batch.results if good]
            bad = [r for good, r in batch.results if not good]
            if ok:
                batch.output_file_id = self._store(jsonl(ok), "batch_output", "output.jsonl")
            if bad:
                batch.error_file_id = self._store(jsonl(bad), "batch_output", "errors.jsonl")

    def _run(self, batch: VendorBatch, line: dict[str, Any], failed: bool) -> dict[str, Any]:
        """The vendor's answer to one line, as its output (or error) file carries it."""
        custom_id = line["custom_id"]
        if batch.vendor == "anthropic":
            if failed:
                error = {"type": "api_error", "message": "Internal server error"}
                return {
                    "custom_id": custom_id,
                    "result": {"type": "errored", "error": {"type": "error", "error": error}},
                }
            headers = CIMultiDictProxy(CIMultiDict({"anthropic-version": "2023-06-01"}))
            call = self.anthropic.parse(line["params"], headers, "messages")
            reply = self.anthropic.success(call, Fault(), call.last_user, None)
            message = orjson.loads(reply.body)
            return {"custom_id": custom_id, "result": {"type": "succeeded", "message": message}}
        rid = "req_" + secrets.token_hex(12)
        kind = self.openai.paths.get(line.get("url", ""), "chat")
        if failed:
            reply = self.openai.error("server_error", None, Fault(kind="server_error"))
        else:
            call = self.openai.parse(line.get("body"), CIMultiDictProxy(CIMultiDict()), kind)
            reply = self.openai.success(call, Fault(), call.last_user, None)
        return {
            "id": "batch_req_" + secrets.token_hex(12),
            "custom_id": custom_id,
            "response": {
                "status_code": reply.status,
                "request_id": rid,
                "body": orjson.loads(reply.body),
            },
            "error": None,
        }

    def _store(self, data: bytes, purpose: str, filename: str) -> str:
        file_id = "file-" + secrets.token_hex(12)
        self.files[file_id] = (data, purpose, filename, time.time())
        return file_id

    # -- OpenAI Files --------------------------------------------------------------------------

    def _file_object(self, file_id: str) -> dict[str, Any]:
        data, purpose, filename, created = self.files[file_id]
        return {
            "id": file_id,
            "object": "file",
            "bytes": len(data),
            "created_at": int(created),
            "filename": filename,
            "purpose": purpose,
        }

    async def _upload(self, request: web.Request) -> web.StreamResponse:
        denied = self._guard(request, self.openai)
        if denied is not None:
            return denied
        try:
            form = await request.post()
        except ValueError:
            return _reply(self.openai.bad_request("expected a multipart/form-data body"))
        purpose, upload = form.get("purpose"), form.get("file")
        if purpose != "batch":
            return _reply(self.openai.bad_request("'purpose': this fake accepts only 'batch'"))
        if not isinstance(upload, web.FileField):
            return _reply(self.openai.bad_request("'file': a file part is required"))
        data = upload.file.read()
        try:
            lines = parse_openai_lines(data)
        except BadRequest as exc:
            return _reply(self.openai.bad_request(str(exc)))
        del lines
        file_id = self._store(data, "batch", upload.filename or "input.jsonl")
        return web.json_response(self._file_object(file_id))

    def _file_id(self, request: web.Request) -> str | web.Response:
        """The stored file the path names, once the key is checked; else the error reply."""
        denied = self._guard(request, self.openai)
        if denied is not None:
            return denied
        file_id = request.match_info["id"]
        if file_id not in self.files:
            return _reply(self.openai.error("not_found", None, Fault(kind="not_found")))
        return file_id

    async def _file(self, request: web.Request) -> web.StreamResponse:
        file_id = self._file_id(request)
        if isinstance(file_id, web.Response):
            return file_id
        return web.json_response(self._file_object(file_id))

    async def _file_content(self, request: web.Request) -> web.StreamResponse:
        file_id = self._file_id(request)
        if isinstance(file_id, web.Response):
            return file_id
        return web.Response(body=self.files[file_id][0], content_type="application/octet-stream")

    # -- OpenAI Batches ------------------------------------------------------------------------

    async def _openai_create(self, request: web.Request) -> web.StreamResponse:
        denied = self._guard(request, self.openai)
        if denied is not None:
            return denied
        try:
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            return _reply(self.openai.bad_request("body is not valid JSON"))
        if not isinstance(body, dict):
            return _reply(self.openai.bad_request(self.openai.not_an_object))
        window = body.get("completion_window")
        if window not in WINDOWS:
            return _reply(self.openai.bad_request("completion_window: only '24h' is supported"))
        endpoint = body.get("endpoint")
        if endpoint not in self.openai.paths:
            return _reply(self.openai.bad_request(f"endpoint: {endpoint!r} is not supported"))
        found = self.files.get(str(body.get("input_file_id")))
        if found is None or found[1] != "batch":
            return _reply(self.openai.bad_request("input_file_id: no such batch file"))
        lines = parse_openai_lines(found[0])
        for n, line in enumerate(lines, 1):
            if line.get("url") != endpoint:
                why = f"line {n}: url {line.get('url')!r} differs from the batch's {endpoint!r}"
                return _reply(self.openai.bad_request(why))
        batch = VendorBatch(
            id="batch_" + secrets.token_hex(12),
            vendor="openai",
            lines=lines,
            created=time.time(),
            endpoint=endpoint,
            input_file_id=str(body["input_file_id"]),
            window=window,
            metadata=body.get("metadata"),
        )
        self.batches[batch.id] = batch
        return web.json_response(self._openai_object(batch, time.time()))

    def _openai_object(self, batch: VendorBatch, now: float) -> dict[str, Any]:
        self._advance(batch, now)
        total = len(batch.lines)
        done_ok = sum(1 for good, _ in batch.results if good)
        status = {
            None: "cancelling" if batch.cancel_at is not None else "in_progress",
            "completed": "completed",
            "cancelled": "cancelled",
            "expired": "expired",
        }[batch.ended]
        ended = int(batch.ended_at) if batch.ended_at is not None else None
        failed = total - done_ok if batch.ended == "completed" else 0
        return {
            "id": batch.id,
            "object": "batch",
            "endpoint": batch.endpoint,
            "errors": None,
            "input_file_id": batch.input_file_id,
            "completion_window": batch.window,
            "status": status,
            "output_file_id": batch.output_file_id,
            "error_file_id": batch.error_file_id,
            "created_at": int(batch.created),
            "in_progress_at": int(batch.created),
            "expires_at": int(batch.created + WINDOWS[batch.window]),
            "finalizing_at": ended if batch.ended == "completed" else None,
            "completed_at": ended if batch.ended == "completed" else None,
            "failed_at": None,
            "expired_at": ended if batch.ended == "expired" else None,
            "cancelling_at": int(batch.cancel_at) if batch.cancel_at is not None else None,
            "cancelled_at": ended if batch.ended == "cancelled" else None,
            "request_counts": {"total": total, "completed": done_ok, "failed": failed},
            "metadata": batch.metadata,
        }

    # -- Anthropic Message Batches -------------------------------------------------------------

    async def _anthropic_create(self, request: web.Request) -> web.StreamResponse:
        denied = self._guard(request, self.anthropic)
        if denied is not None:
            return denied
        if "anthropic-version" not in request.headers:
            return _reply(self.anthropic.bad_request("anthropic-version: header is required"))
        try:
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            return _reply(self.anthropic.bad_request("body is not valid JSON"))
        requests = body.get("requests") if isinstance(body, dict) else None
        if not isinstance(requests, list) or not requests:
            return _reply(self.anthropic.bad_request("requests: Field required"))
        seen: set[str] = set()
        for i, item in enumerate(requests):
            cid = item.get("custom_id") if isinstance(item, dict) else None
            if not isinstance(cid, str) or not 1 <= len(cid) <= 64:
                return _reply(self.anthropic.bad_request(f"requests.{i}.custom_id: invalid"))
            if cid in seen:
                why = f"requests.{i}.custom_id: duplicate custom_id {cid!r}"
                return _reply(self.anthropic.bad_request(why))
            seen.add(cid)
            if not isinstance(item.get("params"), dict):
                return _reply(self.anthropic.bad_request(f"requests.{i}.params: Field required"))
        batch = VendorBatch(
            id="msgbatch_" + secrets.token_hex(12),
            vendor="anthropic",
            lines=requests,
            created=time.time(),
        )
        self.batches[batch.id] = batch
        return web.json_response(self._anthropic_object(request, batch, time.time()))

    def _anthropic_object(
        self, request: web.Request, batch: VendorBatch, now: float
    ) -> dict[str, Any]:
        self._advance(batch, now)
        counts = {"processing": 0, "succeeded": 0, "errored": 0, "canceled": 0, "expired": 0}
        if batch.ended is None:
            counts["processing"] = len(batch.lines)
            status = "canceling" if batch.cancel_at is not None else "in_progress"
        else:
            status = "ended"
            for _, line in batch.results:
                counts[line["result"]["type"]] += 1
        base = f"http://{request.host}"
        return {
            "id": batch.id,
            "type": "message_batch",
            "processing_status": status,
            "request_counts": counts,
            "ended_at": iso(batch.ended_at),
            "created_at": iso(batch.created),
            "expires_at": iso(batch.created + 86_400),
            "archived_at": None,
            "cancel_initiated_at": iso(batch.cancel_at),
            "results_url": (
                f"{base}/v1/messages/batches/{batch.id}/results" if batch.ended else None
            ),
        }

    async def _anthropic_results(self, request: web.Request) -> web.StreamResponse:
        batch = self._batch(request, "anthropic")
        if isinstance(batch, web.Response):
            return batch
        self._advance(batch, time.time())
        if batch.ended is None:
            why = f"Batch {batch.id} has not ended; results are not available yet."
            return _reply(self.anthropic.bad_request(why))
        data = jsonl([line for _, line in batch.results])
        return web.Response(body=data, content_type="application/binary")


def _reply(reply: Reply) -> web.Response:
    return web.Response(
        status=reply.status,
        body=reply.body,
        headers=reply.headers,
        content_type=reply.content_type,
    )
