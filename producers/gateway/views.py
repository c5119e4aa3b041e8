"""A gateway batch as the OpenAI `batch` object: its gateway record (owner, validation phase)
plus, once submitted, the live batchyard record (status, counts, timestamps)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import orjson
import redis.asyncio as aioredis

from workers.protocol.gateway import GatewayKeys, valid_id
from workers.protocol.keys import Keys

FINISHED = frozenset({"completed", "failed", "expired", "cancelled"})
OutputKind = Literal["output", "errors"]
_USAGE = ("input_tokens", "output_tokens", "cached_tokens", "reasoning_tokens")
_OUTPUT_ID = re.compile(r"file-(.+)-(output|errors)")


def output_file_id(batch_id: str, kind: OutputKind) -> str:
    """Stable id of a batch's output or error file: the same on every call and gateway."""
    return f"file-{batch_id}-{kind}"


def parse_output_file_id(file_id: str) -> tuple[str, OutputKind] | None:
    """(batch id, kind) of an output/error file id, else None."""
    match = _OUTPUT_ID.fullmatch(file_id)
    if match is None:
        return None
    kind: OutputKind = "output" if match.group(2) == "output" else "errors"
    return match.group(1), kind


def text(value: object) -> str:
    """A Redis reply as text."""
    return value.decode() if isinstance(value, bytes) else str(value)


def _decode(raw: dict[Any, Any]) -> dict[str, str]:
    return {text(k): text(v) for k, v in raw.items()}


def _ts(value: str | None) -> int | None:
    return int(float(value)) if value else None


@dataclass
class BatchState:
    """Both records of one batch, read together."""

    id: str
    gw: dict[str, str]
    core: dict[str, str]

    @property
    def owner(self) -> str:
        """Tenant that created the batch."""
        return self.gw.get("owner", "")

    @property
    def kind(self) -> str:
        """`batch` (OpenAI-style) or `job` (one native request)."""
        return self.gw.get("kind", "batch")

    @property
    def phase(self) -> str:
        """validating, submitting, submitted, failed or cancelled (the gateway's part)."""
        return self.gw.get("phase", "submitted")

    def status(self) -> str:
        """The OpenAI status: the gateway's phase until submitted, then batchyard's."""
        if self.phase in ("validating", "failed", "cancelled"):
            status = self.phase
        elif not self.core:
            status = "in_progress"
        else:
            status = self.core.get("status", "in_progress")
            if status == "completed" and int(self.core.get("n_expired", 0)) > 0:
                status = "expired"
        if self.gw.get("cancel_requested") and status in ("validating", "in_progress"):
            status = "cancelling"
        return status

    def counts(self) -> dict[str, int]:
        """Live request counts. As OpenAI counts them, requests a cancel kept from being sent
        are not `failed` (they are in the error file, with code `batch_cancelled`)."""
        failed = int(self.core.get("failed", 0)) - int(self.core.get("n_cancelled", 0))
        return {
            "total": int(self.core.get("total", 0)),
            "completed": int(self.core.get("completed", 0)),
            "failed": max(failed, 0),
        }

    def usage(self) -> dict[str, Any] | None:
        """OpenAI's batch `usage`: the tokens of every result so far (None before any)."""
        if not self.core:
            return None
        n = {k: int(self.core.get(k, 0)) for k in _USAGE}
        return {
            "input_tokens": n["input_tokens"],
            "input_tokens_details": {"cached_tokens": n["cached_tokens"]},
            "output_tokens": n["output_tokens"],
            "output_tokens_details": {"reasoning_tokens": n["reasoning_tokens"]},
            "total_tokens": n["input_tokens"] + n["output_tokens"],
        }

    def deleted(self, kind: OutputKind) -> bool:
        """Whether the batch's output (or error) file was deleted by its owner."""
        return self.gw.get(f"{kind}_deleted") == "1"

    def to_openai(self) -> dict[str, Any]:
        """The OpenAI `batch` object."""
        status = self.status()
        counts = self.counts()
        created = float(self.gw.get("created_at", 0))
        window_s = float(self.gw.get("window_s", 0))
        finished_at = _ts(self.core.get("finished_at"))
        errors = self.gw.get("errors")
        done = status in FINISHED and self.core
        return {
            "id": self.id,
            "object": "batch",
            "endpoint": self.gw.get("endpoint", ""),
            "errors": {"object": "list", "data": orjson.loads(errors)} if errors else None,
            "input_file_id": self.gw.get("input_file_id", ""),
            "completion_window": self.gw.get("completion_window", ""),
            "status": status,
            "output_file_id": output_file_id(self.id, "output")
            if done and counts["completed"]
            else None,
            "error_file_id": output_file_id(self.id, "errors")
            if done and int(self.core.get("failed", 0))
            else None,
            "created_at": int(created),
            "in_progress_at": _ts(self.gw.get("in_progress_at")),
            "expires_at": int(created + window_s) if window_s else None,
            "finalizing_at": None,
            "completed_at": finished_at if status == "completed" else None,
            "failed_at": _ts(self.gw.get("failed_at")),
            "expired_at": finished_at if status == "expired" else None,
            "cancelling_at": _ts(self.core.get("cancelled_at") or self.gw.get("cancelling_at")),
            "cancelled_at": _ts(self.gw.get("cancelled_at"))
            or (finished_at if status == "cancelled" else None),
            "request_counts": counts,
            "metadata": orjson.loads(self.gw.get("metadata") or "null"),
            "model": self.gw.get("model") or None,
            "usage": self.usage(),
        }


async def load_batches(
    client: aioredis.Redis, keys: Keys, gkeys: GatewayKeys, batch_ids: Sequence[str]
) -> list[BatchState | None]:
    """Both records of each batch in one round trip; None for unknown or expired ids (and
    for strings that cannot be ids, which could name other keys)."""
    valid = [b for b in batch_ids if valid_id(b)]
    pipe = client.pipeline(transaction=False)
    for batch_id in valid:
        pipe.hgetall(gkeys.batch(batch_id))
        pipe.hgetall(keys.batch(batch_id))
    replies = iter(await pipe.execute() if valid else [])
    out: list[BatchState | None] = []
    for batch_id in batch_ids:
        if not valid_id(batch_id):
            out.append(None)
            continue
        gw, core = next(replies), next(replies)
        out.append(BatchState(batch_id, _decode(gw), _decode(core)) if gw else None)
    return out


async def load_batch(
    client: aioredis.Redis, keys: Keys, gkeys: GatewayKeys, batch_id: str
) -> BatchState | None:
    """Both records of one batch."""
    return (await load_batches(client, keys, gkeys, [batch_id]))[0]
