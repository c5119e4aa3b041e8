"""A batch: the unit users submit, watch, cancel and collect."""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class BatchStatus(StrEnum):
    """Lifecycle states, named as the OpenAI Batch API names them."""

    validating = "validating"
    in_progress = "in_progress"
    finalizing = "finalizing"
    completed = "completed"
    failed = "failed"
    expired = "expired"
    cancelling = "cancelling"
    cancelled = "cancelled"

    @property
    def finished(self) -> bool:
        """True once no more results will arrive."""
        return self in _FINISHED


_FINISHED = {BatchStatus.completed, BatchStatus.failed, BatchStatus.expired, BatchStatus.cancelled}


class BatchCounts(BaseModel):
    """Live request counts; `failed` includes errored, expired and cancelled requests."""

    model_config = ConfigDict(extra="forbid")

    total: int = 0
    completed: int = 0
    failed: int = 0
    #: `failed`, broken down by final status.
    errored: int = 0
    expired: int = 0
    cancelled: int = 0

    @property
    def done(self) -> int:
        """Requests that have their one result."""
        return self.completed + self.failed


class Batch(BaseModel):
    """The batch record kept in Redis."""

    model_config = ConfigDict(extra="forbid")

    id: str
    status: BatchStatus
    counts: BatchCounts = Field(default_factory=BatchCounts)
    created_at: float
    finished_at: float | None = None
    sealed: bool = False
    cost_usd: float = 0.0
    budget_usd: float | None = None
    metadata: dict[str, str] = Field(default_factory=dict)
    priority: Literal["high", "normal", "low"] = "normal"

    @property
    def finished(self) -> bool:
        """True once every request has a result and submission is complete."""
        return self.status.finished
