"""The batch record: one Redis hash per batch (`Keys.batch`), built here, read here.

Producers create it (`new_record`); `enqueue.lua` counts `total`; `write_results.lua` counts
`completed`, `failed`, `n_<status>` and `cost_usd`; `seal.lua` sets `sealed`; `cancel.lua`
sets `cancelled_at`; the last two and result writes set `status` and `finished_at` once the
batch is done. Workers read a few fields before each call (`WORKER_FIELDS`).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from schemas.batch import Batch, BatchCounts, BatchStatus
from schemas.request import RouteHop
from workers.protocol.lanes import lane_priority

#: What a worker reads before sending one of the batch's requests, in `BatchState` order.
WORKER_FIELDS = ("status", "cost_usd", "budget_usd")


class BatchNotFound(KeyError):
    """No batch with that id (or it expired)."""

    def __str__(self) -> str:
        return f"no batch {self.args[0]!r} (unknown id, or its results expired)"


def new_record(
    route: list[RouteHop],
    *,
    deadline: float | None = None,
    lane: str = "",
    metadata: Mapping[str, str] | None = None,
    budget_usd: float | None = None,
) -> dict[str, str | bytes | float | int]:
    """The fields of a fresh batch hash (`created_at` is now)."""
    record: dict[str, str | bytes | float | int] = {
        "lane": lane,
        "status": BatchStatus.in_progress.value,
        "created_at": time.time(),
        "total": 0,
        "completed": 0,
        "failed": 0,
        "sealed": 0,
        "metadata": orjson.dumps(dict(metadata or {})),
        "route": orjson.dumps([h.model_dump(exclude_none=True) for h in route]),
        "deadline": deadline if deadline is not None else "",
    }
    if budget_usd is not None:
        record["budget_usd"] = budget_usd
    return record


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def parse_record(batch_id: str, raw: Mapping[Any, Any]) -> Batch:
    """A `Batch` from HGETALL output; raises `BatchNotFound` for an empty hash."""
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


def parse_lane(raw: Any) -> str:
    """The lane of a batch from HGET of its `lane` field ("" when absent)."""
    return raw.decode() if isinstance(raw, bytes) else ""


@dataclass
class BatchState:
    """What workers need to know about a batch before sending one of its requests."""

    status: str
    cost_usd: float
    budget_usd: float | None

    @classmethod
    def parse(cls, values: Sequence[Any]) -> BatchState:
        """From HMGET of `WORKER_FIELDS` (an expired batch reads as status "")."""
        status, cost, budget = (v.decode() if isinstance(v, bytes) else v for v in values)
        return cls(status or "", float(cost or 0), float(budget) if budget else None)
