"""The dead letter: what is kept of a request that ended in error, so it can run again.

Workers write it with the failed result (`write_results.lua` stores it in `Keys.failed`);
`retry_failed.lua` reads its `status`; producers list failures by `code` and rebuild the job
from it (`job`), from the first hop with a fresh attempt budget.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from schemas.job import Job, Work

# Built when first used (a failed request's letter), not in every process's start-up (#22).


class _RequestHead(BaseModel):
    model_config = ConfigDict(extra="ignore", defer_build=True)

    kind: str = "chat"


class _Head(BaseModel):
    model_config = ConfigDict(extra="ignore", defer_build=True)

    status: str
    code: str
    request: _RequestHead = Field(default_factory=_RequestHead)


class DeadLetter(Work):
    """A failed request, its route and task, and why it failed."""

    model_config = ConfigDict(defer_build=True)

    status: str
    code: str

    @classmethod
    def of(cls, job: Job, status: str, code: str) -> bytes:
        """The encoded dead letter of a job that ended `status` with error `code`."""
        letter = cls(status=status, code=code, request=job.request, route=job.route, task=job.task)
        return letter.model_dump_json(exclude_defaults=True).encode()

    @classmethod
    def parse(cls, raw: bytes | str) -> DeadLetter:
        """Decode a stored dead letter."""
        return cls.model_validate_json(raw)

    @staticmethod
    def code_of(raw: bytes | str) -> str:
        """The error code of a stored dead letter, without validating its request."""
        return _Head.model_validate_json(raw).code

    @staticmethod
    def code_and_kind_of(raw: bytes | str) -> tuple[str, str]:
        """The error code and the request's endpoint kind, without validating the request."""
        head = _Head.model_validate_json(raw)
        return head.code, head.request.kind

    def job(
        self,
        batch_id: str,
        key: str,
        *,
        enqueued_at: float,
        deadline: float | None,
        lane: str,
        trace: dict[str, str],
    ) -> Job:
        """The job that runs this request again from its first hop, no attempts so far."""
        return Job(
            batch_id=batch_id,
            key=key,
            request=self.request,
            route=self.route,
            enqueued_at=enqueued_at,
            deadline=deadline,
            trace=trace,
            task=self.task,
            lane=lane,
        )
