"""Batch records in Redis <-> `Batch` models: shared by the sync and async clients."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import orjson

from schemas.batch import Batch, BatchCounts, BatchStatus
from schemas.request import RouteHop
from workers.keys import lane_priority


class BatchNotFound(KeyError):
    """No batch with that id (or it expired)."""

    def __str__(self) -> str:
        return f"no batch {self.args[0]!r} (unknown id, or its results expired)"


def new_record(
    metadata: dict[str, str] | None,
    route: list[RouteHop],
    deadline: float | None,
    lane: str = "",
) -> dict[Any, Any]:
    """The fields of a fresh batch hash."""
    return {
        "lane": lane,
        "status": BatchStatus.in_progress.value,
        "created_at": time.time(),
        "total": 0,
        "completed": 0,
        "failed": 0,
        "sealed": 0,
        "metadata": orjson.dumps(metadata or {}),
        "route": orjson.dumps([h.model_dump(exclude_none=True) for h in route]),
        "deadline": deadline if deadline is not None else "",
    }


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def parse_record(batch_id: str, raw: Mapping[Any, Any]) -> Batch:
    """Build a `Batch` from HGETALL output; raises `BatchNotFound` for an empty hash."""
    if not raw:
        raise BatchNotFound(batch_id)
    f = {_s(k): _s(v) for k, v in raw.items()}
    finished = f.get("finished_at")
    return Batch(
        id=batch_id,
        status=BatchStatus(f.get("status", "in_progress")),
        counts=BatchCounts(
            total=int(f.get("total", 0)),
            completed=int(f.get("completed", 0)),
            failed=int(f.get("failed", 0)),
            errored=int(f.get("n_errored", 0)),
            expired=int(f.get("n_expired", 0)),
            cancelled=int(f.get("n_cancelled", 0)),
        ),
        created_at=float(f.get("created_at", 0)),
        finished_at=float(finished) if finished else None,
        sealed=f.get("sealed") == "1",
        cost_usd=float(f.get("cost_usd", 0) or 0),
        budget_usd=float(f["budget_usd"]) if f.get("budget_usd") else None,
        metadata=orjson.loads(f.get("metadata", "{}")),
        priority=lane_priority(f.get("lane", "")),
    )
