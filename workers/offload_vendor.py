"""The vendors' batch APIs as batchyard uses them: create, read status, read results, cancel.

OpenAI (Batch API): upload a JSONL file (`purpose=batch`), `POST /v1/batches` with
`completion_window: 24h`; a batch is over in `completed`, `expired`, `cancelled` or `failed`;
successful lines are in `output_file_id`, failed ones in `error_file_id`, each line
`{custom_id, response: {status_code, body}, error}`.
Anthropic (Message Batches): `POST /v1/messages/batches` with `requests: [{custom_id, params}]`;
over when `processing_status` is `ended`; `results_url` streams `{custom_id, result: {type}}`
lines with type `succeeded` (its `message`), `errored`, `canceled` or `expired`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from providers.anthropic import AnthropicProvider
from providers.errors import ProviderError
from providers.http_response import HTTPResponse
from providers.openai import PATHS, OpenAIProvider

#: The adapters whose vendors have a batch API.
BatchAdapter = OpenAIProvider | AnthropicProvider

OPENAI_OVER = frozenset({"completed", "expired", "cancelled", "failed"})


@dataclass
class Line:
    """One request's outcome in a vendor batch: its answer body, or why it has none."""

    body: dict[str, Any] | None = None
    error: str | None = None


@dataclass
class Status:
    """A vendor batch as last read."""

    status: str
    over: bool
    info: dict[str, Any]


def _check(resp: HTTPResponse, provider: BatchAdapter, what: str) -> Any:
    if not resp.ok:
        raise provider.failure(resp)
    try:
        return orjson.loads(resp.body)
    except orjson.JSONDecodeError:
        raise ProviderError(f"endpoint {provider.endpoint!r}: {what}: not JSON") from None


def _jsonl(data: bytes) -> list[dict[str, Any]]:
    return [orjson.loads(raw) for raw in data.splitlines() if raw.strip()]


class VendorBatchAPI:
    """Batch calls of one batch-mode endpoint over its adapter's session and headers."""

    def __init__(self, provider: BatchAdapter) -> None:
        self.provider = provider
        self.vendor = provider.name

    async def create(self, kind: str, lines: list[tuple[str, dict[str, Any]]]) -> str:
        """Create a vendor batch of (custom_id, body) lines; its vendor id."""
        p = self.provider
        if self.vendor == "anthropic":
            requests = [{"custom_id": cid, "params": body} for cid, body in lines]
            resp = await p.send("POST", "/v1/messages/batches", p.headers(), {"requests": requests})
            return str(_check(resp, p, "create message batch")["id"])
        url = "/v1" + PATHS[kind]  # type: ignore[index]
        data = b"".join(
            orjson.dumps({"custom_id": cid, "method": "POST", "url": url, "body": body}) + b"\n"
            for cid, body in lines
        )
        file_id = await self._upload(data)
        payload = {"input_file_id": file_id, "endpoint": url, "completion_window": "24h"}
        resp = await p.send("POST", "/batches", p.headers(), payload)
        return str(_check(resp, p, "create batch")["id"])

    async def _upload(self, data: bytes) -> str:
        import aiohttp  # imported by the session `p.session` makes, if not before

        p = self.provider
        assert p.session is not None
        form = aiohttp.FormData()
        form.add_field("purpose", "batch")
        form.add_field("file", data, filename="batchyard.jsonl")
        headers = p.headers()
        headers.pop("content-type", None)
        async with p.session.post(p.options.base_url + "/files", data=form, headers=headers) as r:
            resp = HTTPResponse(r.status, r.headers, await r.read())
        return str(_check(resp, p, "upload batch file")["id"])

    async def status(self, vendor_id: str) -> Status:
        """The vendor batch's state."""
        p = self.provider
        if self.vendor == "anthropic":
            resp = await p.send("GET", f"/v1/messages/batches/{vendor_id}", p.headers())
            info = _check(resp, p, "read message batch")
            status = str(info["processing_status"])
            return Status(status, status == "ended", info)
        resp = await p.send("GET", f"/batches/{vendor_id}", p.headers())
        info = _check(resp, p, "read batch")
        status = str(info["status"])
        return Status(status, status in OPENAI_OVER, info)

    async def cancel(self, vendor_id: str) -> None:
        """Ask the vendor to cancel (it finishes what it cannot interrupt)."""
        p = self.provider
        path = (
            f"/v1/messages/batches/{vendor_id}/cancel"
            if self.vendor == "anthropic"
            else f"/batches/{vendor_id}/cancel"
        )
        resp = await p.send("POST", path, p.headers())
        if resp.status != 400:  # 400: it ended meanwhile
            _check(resp, p, "cancel batch")

    async def results(self, status: Status) -> dict[str, Line]:
        """Each line's outcome by custom_id, once the batch is over."""
        p = self.provider
        out: dict[str, Line] = {}
        if self.vendor == "anthropic":
            url = status.info.get("results_url")
            if not url:
                return out
            path = "/v1/messages/batches/" + str(status.info["id"]) + "/results"
            resp = await p.send("GET", path, p.headers())
            if not resp.ok:
                raise p.failure(resp)
            for line in _jsonl(resp.body):
                result = line.get("result") or {}
                kind = result.get("type")
                if kind == "succeeded":
                    out[line["custom_id"]] = Line(body=result.get("message"))
                else:
                    out[line["custom_id"]] = Line(error=f"batch_{kind}")
            return out
        for field in ("output_file_id", "error_file_id"):
            file_id = status.info.get(field)
            if not file_id:
                continue
            resp = await p.send("GET", f"/files/{file_id}/content", p.headers())
            if not resp.ok:
                raise p.failure(resp)
            for line in _jsonl(resp.body):
                response = line.get("response") or {}
                code = response.get("status_code")
                if line.get("error") is None and code == 200:
                    out[line["custom_id"]] = Line(body=response.get("body"))
                else:
                    error = line.get("error") or {}
                    out[line["custom_id"]] = Line(error=error.get("code") or f"http_{code}")
        return out
