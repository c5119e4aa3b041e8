"""The fake vendor's batches as data: knobs, one batch's state, and its input and result lines."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

from providers.fake_server.wire import BadRequest

EXPIRED_MESSAGE = "This request could not be executed before the completion window expired."


@dataclass
class BatchKnobs:
    """How the fake vendor runs batches."""

    #: Seconds from creation until a batch is done.
    delay_s: float = 0.0
    #: Batches stay in progress until cancelled or expired.
    never_finish: bool = False
    #: Fraction of each batch's lines the vendor fails (every 1/fraction-th line, exactly).
    fail_fraction: float = 0.0
    #: Seconds a cancel takes to end the batch.
    cancel_latency_s: float = 0.0
    #: Seconds until a batch expires (the vendor's 24 h window, scaled down); None: 24 h.
    expire_s: float | None = None


@dataclass
class VendorBatch:
    """One vendor batch as the fake vendor holds it."""

    id: str
    vendor: str
    lines: list[dict[str, Any]]
    created: float
    endpoint: str = ""
    input_file_id: str = ""
    window: str = "24h"
    metadata: Any = None
    cancel_at: float | None = None
    ended: str | None = None  # completed | cancelled | expired
    ended_at: float | None = None
    #: custom_id -> result line (OpenAI: output or error line; Anthropic: results line).
    results: list[tuple[bool, dict[str, Any]]] = field(default_factory=list)
    output_file_id: str | None = None
    error_file_id: str | None = None


def iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


def fails(index: int, fraction: float) -> bool:
    """Exactly `fraction` of lines fail, spread evenly (line i fails when the count ticks)."""
    return int((index + 1) * fraction) > int(index * fraction)


def unrun(batch: VendorBatch, line: dict[str, Any], how: str) -> dict[str, Any]:
    """A line the vendor did not run: cancelled or expired."""
    custom_id = line["custom_id"]
    if batch.vendor == "anthropic":
        kind = "canceled" if how == "cancelled" else "expired"
        return {"custom_id": custom_id, "result": {"type": kind}}
    if how == "expired":
        error = {"code": "batch_expired", "message": EXPIRED_MESSAGE}
    else:
        error = {"code": "batch_cancelled", "message": "This batch was cancelled."}
    return {
        "id": "batch_req_" + secrets.token_hex(12),
        "custom_id": custom_id,
        "response": None,
        "error": error,
    }


def parse_openai_lines(data: bytes) -> list[dict[str, Any]]:
    """The lines of a batch input file; a bad line is named by its number."""
    lines: list[dict[str, Any]] = []
    seen: set[str] = set()
    for n, raw in enumerate(data.splitlines(), 1):
        if not raw.strip():
            continue
        try:
            line = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise BadRequest(f"line {n}: not valid JSON") from None
        if not isinstance(line, dict) or not isinstance(line.get("custom_id"), str):
            raise BadRequest(f"line {n}: custom_id is required")
        if line["custom_id"] in seen:
            raise BadRequest(f"line {n}: duplicate custom_id {line['custom_id']!r}")
        seen.add(line["custom_id"])
        if line.get("method") != "POST" or not isinstance(line.get("body"), dict):
            raise BadRequest(f"line {n}: method must be POST and body an object")
        lines.append(line)
    if not lines:
        raise BadRequest("the file has no lines")
    return lines


def jsonl(lines: list[dict[str, Any]]) -> bytes:
    return b"".join(orjson.dumps(line) + b"\n" for line in lines)
