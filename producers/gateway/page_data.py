"""What the dashboard shows, as typed records: `insights` builds them from Redis, the page
templates read their attributes, and the dashboard's JSON API (`/ui/api/...`, its event
streams) serialises them as they are, so the pages, the script and mypy see one shape."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import orjson

from workers.protocol.learned import LearnedScope


def dumps(value: object) -> str:
    """JSON of records (orjson serialises dataclasses natively)."""
    return orjson.dumps(value).decode()


@dataclass(frozen=True, slots=True)
class Counts:
    """What became of a batch's requests. Unlike the batch record's `failed`, `failed` here
    counts only requests that were sent and failed: the ones never sent because the batch
    was cancelled or its window ended are `cancelled` and `expired`, so a cancel does not
    read as a wave of failures."""

    total: int
    completed: int
    failed: int
    expired: int = 0
    cancelled: int = 0

    @property
    def answered(self) -> int:
        """Requests that were sent and have their result: what the bar and chart count."""
        return self.completed + self.failed

    @property
    def unsent(self) -> int:
        """Requests that ended without being sent (cancelled or expired)."""
        return self.expired + self.cancelled


@dataclass(frozen=True, slots=True)
class LineProblem:
    """One entry of a failed batch's validation `errors`."""

    code: str
    message: str
    param: str | None
    line: int | None

    @classmethod
    def parse(cls, entry: dict[str, Any]) -> LineProblem:
        """An entry as the gateway stored it."""
        line = entry.get("line")
        return cls(
            code=str(entry.get("code") or ""),
            message=str(entry.get("message") or ""),
            param=entry.get("param"),
            line=int(line) if line is not None else None,
        )


@dataclass(frozen=True, slots=True)
class BatchSummary:
    """One batch as the list shows it: the API's status and counts, plus pace and cost."""

    id: str
    status: str
    finished: bool
    request_counts: Counts
    #: Requests answered (completed or failed after being sent); unsent ones are not done.
    done: int
    #: Progress bar position, 0-100: the share of requests answered, so a batch that ended
    #: early (cancelled, expired, failed validation) never shows a full bar.
    percent: float
    rate_per_s: float
    eta_s: float | None
    #: None when no endpoint the batch uses has a price configured: unknown, not free.
    cost_usd: float | None
    created_at: int
    started_at: float
    finished_at: float | None
    priority: str
    metadata: dict[str, str]
    errors: tuple[LineProblem, ...]

    @property
    def percent_text(self) -> str:
        """The bar's label: a dash for a finished batch that had no requests at all."""
        if self.finished and not self.request_counts.total:
            return "\u2013"
        return f"{self.percent:.0f}%"

    @property
    def metadata_text(self) -> str:
        """`k=v, k=v`, sorted by key, for the list's small print."""
        return ", ".join(f"{k}={v}" for k, v in sorted(self.metadata.items()))


@dataclass(frozen=True, slots=True)
class Cause:
    """An error code and how many requests of the batch it ended."""

    code: str
    count: int


@dataclass(frozen=True, slots=True)
class Hop:
    """One endpoint a request went through, with that hop's error."""

    endpoint: str | None
    model: str | None
    error: str | None
    latency_ms: float | None = None


@dataclass(frozen=True, slots=True)
class Failure:
    """One failed request of a batch."""

    key: str
    #: The request's endpoint kind (chat, embeddings...).
    kind: str
    status: str
    code: str
    message: str
    hops: tuple[Hop, ...]


#: A point of the throughput chart: (epoch s, results done by then).
Sample = tuple[float, float]


@dataclass(frozen=True, slots=True)
class ListFilter:
    """The batch list's search: ids containing `batch_id`, created for `endpoint` ("" = any)."""

    batch_id: str = ""
    endpoint: str = ""

    def __bool__(self) -> bool:
        """True when it narrows the list at all."""
        return bool(self.batch_id or self.endpoint)

    def matches(self, batch_id: str, endpoint: str) -> bool:
        """The batch's id contains `batch_id` and its endpoint is `endpoint`."""
        if self.batch_id and self.batch_id not in batch_id:
            return False
        return not self.endpoint or endpoint == self.endpoint

    def query(self) -> dict[str, str]:
        """The filter as query parameters (empty ones left out)."""
        return {k: v for k, v in (("batch_id", self.batch_id), ("endpoint", self.endpoint)) if v}


@dataclass(frozen=True, slots=True)
class BatchInfo:
    """What the batch was created with, and its files: as the API's batch object has them,
    plus the input file's name."""

    endpoint: str = ""
    input_file_id: str = ""
    #: None when the input file is gone (deleted or expired).
    input_file_name: str | None = None
    completion_window: str = ""
    expires_at: int | None = None
    output_file_id: str | None = None
    error_file_id: str | None = None


@dataclass(frozen=True, slots=True)
class RouteHealth:
    """One endpoint of the batch's route and its circuit breaker's state."""

    endpoint: str
    state: str


#: Failed requests a page of the batch page's table lists.
FAILURES_PER_PAGE = 20


@dataclass(frozen=True, slots=True)
class FailureFilter:
    """Which failed requests the table lists: `custom_id` is matched as a substring,
    `endpoint` against the endpoints of the request's route; pages count from 1."""

    custom_id: str = ""
    endpoint: str = ""
    page: int = 1


@dataclass(frozen=True, slots=True)
class FailureTable:
    """Where the listed page sits among the failed requests that match the filter."""

    #: Failed requests matching the filter (at least, when `partial`).
    matching: int = 0
    #: True when the endpoint filter stopped reading before the end (see `insights`).
    partial: bool = False
    has_next: bool = False


@dataclass(frozen=True, slots=True)
class StructuredRound:
    """One round of a structured batch: answers checked, valid ones, valid so far."""

    round: int
    answers: int
    valid_answers: int
    answer_validity: float | None
    valid_after_round: float | None


@dataclass(frozen=True, slots=True)
class ErrorCount:
    """How often one error (code, and pointer where the validator gives one) occurred."""

    error: str
    count: int


@dataclass(frozen=True, slots=True)
class StructuredOutput:
    """The batch page's structured-output report (`producers.structured_report`): validity
    per round, the most frequent errors, tokens and cost per valid answer."""

    structured: int
    valid: int
    validity: float | None
    tokens_per_valid: float | None
    cost_per_valid_usd: float | None
    rounds: tuple[StructuredRound, ...]
    errors: tuple[ErrorCount, ...]
    #: True when only the first results were read (a large batch): the figures are a sample.
    partial: bool = False


@dataclass(frozen=True, slots=True)
class BatchDetail(BatchSummary):
    """The batch page: the summary plus what it was created with, error causes, a page of
    failed requests, progress samples and the health of the endpoints it uses."""

    causes: tuple[Cause, ...]
    #: True when `causes` counts a sample of the dead letters, not all of them.
    causes_partial: bool
    failures: tuple[Failure, ...]
    timeline: tuple[Sample, ...]
    info: BatchInfo = BatchInfo()
    health: tuple[RouteHealth, ...] = ()
    failure_filter: FailureFilter = FailureFilter()
    failure_table: FailureTable = FailureTable()
    #: For a batch of structured requests (json_schema, a validator, GMN); else None.
    structured: StructuredOutput | None = None

    @classmethod
    def of(
        cls,
        summary: BatchSummary,
        *,
        causes: tuple[Cause, ...],
        causes_partial: bool,
        failures: tuple[Failure, ...],
        timeline: tuple[Sample, ...],
        info: BatchInfo | None = None,
        health: tuple[RouteHealth, ...] = (),
        failure_filter: FailureFilter | None = None,
        failure_table: FailureTable | None = None,
        structured: StructuredOutput | None = None,
    ) -> BatchDetail:
        """The summary's fields with the detail's added (the JSON stays one flat object)."""
        base = {f.name: getattr(summary, f.name) for f in fields(BatchSummary)}
        return cls(
            **base,
            causes=causes,
            causes_partial=causes_partial,
            failures=failures,
            timeline=timeline,
            info=info or BatchInfo(),
            health=health,
            failure_filter=failure_filter or FailureFilter(),
            failure_table=failure_table or FailureTable(),
            structured=structured,
        )


@dataclass(frozen=True, slots=True)
class EndpointLimits:
    """Configured limits, capped by what the provider announced; None means no limit."""

    rpm: int | None
    tpm: int | None
    max_concurrency: int | None


@dataclass(frozen=True, slots=True)
class EndpointUsage:
    """Current use: calls and tokens of the breaker window scaled to a minute, and the share
    of each configured cap the last minute's admissions hold."""

    rpm: float
    tpm: float
    rpm_fill: float | None
    tpm_fill: float | None
    in_flight: int | None
    paused_until: float | None


@dataclass(frozen=True, slots=True)
class Latency:
    """Latency percentiles of the last calls, None without calls."""

    p50: float | None
    p95: float | None


@dataclass(frozen=True, slots=True)
class Calls:
    """Calls since the health record began."""

    ok: int
    failed: int


@dataclass(frozen=True, slots=True)
class Breaker:
    """The endpoint's circuit breaker."""

    state: str
    open_until: float | None


@dataclass(frozen=True, slots=True)
class EndpointStats:
    """One configured endpoint on the providers page."""

    endpoint: str
    provider: str
    models: tuple[str, ...]
    limits: EndpointLimits
    usage: EndpointUsage
    window_s: float
    latency_ms: Latency
    success_rate: float | None
    calls: Calls
    breaker: Breaker
    #: The provider's buckets per model, as its answers' headers described them (only
    #: filled for the providers page).
    learned: tuple[LearnedScope, ...] = ()


@dataclass(frozen=True, slots=True)
class TenantUsage:
    """What the providers page shows every key: its own tenant's work, and one word for
    the service's health (no endpoint names, models, limits or other tenants' calls)."""

    tenant: str
    #: Batches of the tenant still running, among the newest `scanned`.
    running: int
    #: Requests of those batches not answered yet.
    pending: int
    #: Requests answered (completed or failed) and failed, over the newest `scanned` batches.
    answered: int
    failed: int
    scanned: int
    #: The key's own request limit per minute (None: no limit).
    rate_per_min: int | None
    #: "operational" while every endpoint's breaker is closed, else "degraded".
    service: str
