"""The payload of a queued message: a request plus where it is in its route."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from schemas.request import LLMRequest, RouteHop
from schemas.result import Attempt


class Task(BaseModel):
    """Follow-up work on a request's answer, done as queued rounds (e.g. GMN validate/refine).

    The worker hands each successful answer to the reviewer registered for `kind`, which
    either finalizes the result or returns the next round's request.
    """

    model_config = ConfigDict(extra="forbid")

    kind: str = Field(min_length=1, max_length=50)
    round: int = Field(default=1, ge=1)
    max_rounds: int = Field(default=1, ge=1, le=20)
    data: dict[str, Any] = Field(default_factory=dict)


class Work(BaseModel):
    """A request, the endpoints it may try and its follow-up task: what a job runs, and what a
    failed request's dead letter keeps to run it again (`workers.protocol.dead_letter`)."""

    model_config = ConfigDict(extra="forbid")

    request: LLMRequest
    route: list[RouteHop] = Field(min_length=1)
    task: Task | None = None


class Job(Work):
    """What producers enqueue and workers execute; validated at both ends."""

    batch_id: str
    key: str
    hop: int = Field(default=0, ge=0)
    attempts: list[Attempt] = Field(default_factory=list)
    enqueued_at: float
    deadline: float | None = None
    trace: dict[str, str] = Field(default_factory=dict)
    #: Which of the endpoint's queues ("lanes") the batch uses: "" or "@1".."@3" for normal
    #: batches, "@high" / "@low" by priority. Kept across failover hops and retries.
    lane: str = Field(default="", pattern=r"^(@[0-9a-z]{1,8})?$")
    #: How many times a worker process died while running this job, as its supervisor
    #: counted (`workers.crashes`): from 2 it runs alone, at 3 it fails uncalled.
    deaths: int = Field(default=0, ge=0)

    @property
    def current(self) -> RouteHop:
        """The endpoint this message is queued for."""
        return self.route[self.hop]
