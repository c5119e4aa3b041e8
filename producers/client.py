"""The producer API: submit batches, read their state and results. Sync and async.

`Client` and `AsyncClient` have the same methods with the same parameters (a test compares
them); each method runs one operation of `producers.core.ClientCore` on its driver
(`producers.redis_ops`), so what a method does is written once, there.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import redis
import redis.asyncio as aioredis
from typing_extensions import Unpack

from producers.core import (
    ClientCore,
    FailedRequest,
    RawResultPage,
    Record,
    ResultPage,
    Route,
    SubmitOptions,
    SubmitReport,
)
from producers.redis_ops import AsyncDriver, SyncDriver
from producers.submit import ChunkBuilder, Item
from schemas.batch import Batch, BatchStatus
from schemas.config import AppConfig
from schemas.request import RouteHop
from schemas.settings import Settings
from schemas.structured import DEFAULT_ROUNDS
from workers.protocol import lanes as L
from workers.protocol.health import HealthSnapshot
from workers.protocol.results import ResultEntry

# GMN's modules (`producers.gmn`, `schemas.gmn`) load in the GMN methods, on first use: every
# client would otherwise pay their import, `batchyard run` included (#22).
if TYPE_CHECKING:
    from producers import gmn
    from schemas.gmn import ValidationReport
    from schemas.gmn.prompts import GMNConstraints

    GMNLimits = GMNConstraints | dict[str, Any] | None
    GMNFollow = tuple[int, int, list[gmn.GMNOutcome]]

__all__ = [
    "AsyncClient",
    "Client",
    "FailedRequest",
    "GMNLimits",
    "RawResultPage",
    "ResultPage",
    "Route",
    "SubmitOptions",
    "SubmitReport",
]


def __getattr__(name: str) -> Any:
    """`GMNLimits`, built on first use: the GMN modules load when GMN is used, not with every
    client (`batchyard run` never needs them, #22)."""
    if name == "GMNLimits":
        from schemas.gmn.prompts import GMNConstraints

        return GMNConstraints | dict[str, Any] | None
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class _Shell:
    """What both clients hold: their core (settings, config, key names) and a connection."""

    def __init__(
        self,
        redis_url: str | None = None,
        *,
        settings: Settings | None = None,
        config: AppConfig | None = None,
    ) -> None:
        self.core = ClientCore(redis_url, settings, config)
        self.settings, self.config, self.keys = self.core.settings, self.core.config, self.core.keys
        self._connect(self.core.redis_url)

    def _connect(self, url: str) -> None:
        raise NotImplementedError


class Client(_Shell):
    """Synchronous client, for scripts and the CLI."""

    def _connect(self, url: str) -> None:
        self.redis = redis.Redis.from_url(url)
        self._run = SyncDriver(self.redis).run

    def close(self) -> None:
        """Close the Redis connections."""
        self.redis.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def submit_many(self, items: Iterable[Item], **options: Unpack[SubmitOptions]) -> SubmitReport:
        """Validate and enqueue requests in pipelined chunks; bad lines become error results.

        The options (`SubmitOptions`): `batch_id`, `route`, `metadata`, `completion_window_s`,
        `task`, `budget_usd`, `priority` ("high" batches are taken before normal ones by every
        worker, "low" ones only when nothing else waits) and `endpoint` (an OpenAI batch
        endpoint such as "/v1/embeddings": lines addressing another one are errors, as OpenAI's
        Batch API does).
        """
        return self._run(self.core.submit_many(items, **options))

    def submit_chunks(
        self, builder: ChunkBuilder, record: Record, items: Iterable[Item]
    ) -> SubmitReport:
        """Create the batch `record` describes and enqueue `items` as `builder` checks and
        encodes them, in pipelined chunks; then seal it (see `ClientCore.submit_chunks`)."""
        return self._run(self.core.submit_chunks(builder, record, items))

    def submit_file(self, path: Path, **kwargs: Any) -> SubmitReport:
        """Stream a JSONL file of any size into a batch."""
        with path.open("rb") as f:
            return self.submit_many(f, **kwargs)

    def lane(self, priority: L.Priority, route: list[RouteHop]) -> str:
        """The queue lane for a new batch (see `workers.protocol.lanes.pick_lane`)."""
        return self._run(self.core.lane(priority, route))

    def batch(self, batch_id: str) -> Batch:
        """The batch's current record."""
        return self._run(self.core.batch(batch_id))

    def results(
        self, batch_id: str, after: str = "0-0", *, count: int = 1000, block_ms: int | None = None
    ) -> ResultPage:
        """Up to `count` results after the stream id `after`: (stream id, key, result)."""
        return self._run(self.core.results(batch_id, after, count=count, block_ms=block_ms))

    def raw_results(
        self, batch_id: str, after: str = "0-0", *, count: int = 1000, block_ms: int | None = None
    ) -> RawResultPage:
        """`results` with each result as its stored JSON (bytes), unparsed."""
        return self._run(self.core.raw_results(batch_id, after, count=count, block_ms=block_ms))

    def iter_results(
        self, batch_id: str, after: str = "0-0", *, follow: bool = False
    ) -> Iterator[ResultEntry]:
        """Current results in completion order; with `follow`, until the batch finishes."""
        while True:
            page, end = self._run(self.core.next_results(batch_id, after, follow))
            yield from page.entries
            if end:
                return
            after = page.cursor

    def health(self, endpoints: list[str]) -> dict[str, HealthSnapshot]:
        """Shared health and breaker state of endpoints, as the workers record it."""
        return self._run(self.core.health(endpoints))

    def cancel(self, batch_id: str) -> BatchStatus:
        """Cancel a batch: queued requests end `cancelled` unsent, in-flight ones finish."""
        return self._run(self.core.cancel(batch_id))

    def failures(self, batch_id: str) -> dict[str, list[str]]:
        """Keys of requests that ended in error (dead letters), grouped by error code."""
        return self._run(self.core.failures(batch_id))

    def failed_requests(self, batch_id: str) -> list[FailedRequest]:
        """Every request that ended in error: its key, error code and endpoint kind."""
        return self._run(self.core.failed_requests(batch_id))

    def retry_failed(self, batch_id: str, *, completion_window_s: float | None = None) -> int:
        """Re-run every failed request of a batch with a fresh attempt budget; returns how many."""
        return self._run(self.core.retry_failed(batch_id, completion_window_s))

    def wait(self, batch_id: str, timeout_s: float | None = None, poll_s: float = 0.2) -> Batch:
        """Block until the batch finishes (or the timeout passes) and return its record."""
        return self._run(self.core.wait(batch_id, timeout_s, poll_s))

    def generate_gmn(
        self,
        prompt: str,
        agent_type: str = "general",
        constraints: GMNLimits = None,
        rounds: int = DEFAULT_ROUNDS,
        **options: Unpack[gmn.GMNOptions],
    ) -> gmn.GMNOutcome:
        """One GMN document, validated and refined in queued rounds; waits (bounded) for it."""
        from producers import gmn

        return self._run(gmn.generate(self.core, prompt, agent_type, constraints, rounds, options))

    def refine_gmn(
        self, document: gmn.Document, errors: gmn.Errors = None, **options: Unpack[gmn.Refine]
    ) -> gmn.GMNOutcome:
        """Repair an existing document (errors found here when None), optionally changing it
        as `feedback` says; `gmn.Refine` lists the options (`prompt`, `agent_type`,
        `constraints`, `rounds` and every GMN request option)."""
        from producers import gmn

        return self._run(gmn.refine(self.core, document, errors, options))

    def validate_gmn(
        self, document: gmn.Document, constraints: GMNLimits = None
    ) -> ValidationReport:
        """Validate a document or an LLM reply (and constraints) locally, without any Redis."""
        from producers import gmn

        return gmn.check(document, constraints)

    def generate_gmn_batch(
        self, lines: Iterable[Any] | Path, **options: Unpack[gmn.BatchOptions]
    ) -> str:
        """Enqueue a prompts file or lines as one GMN batch; bad lines become error entries.
        `gmn.BatchOptions` lists the options: `rounds`, `completion_window_s`, `priority` and
        every GMN request option."""
        from producers import gmn

        operation = gmn.submit_batch(self.core, lines, **options)
        return self._run(operation).batch_id

    def follow_gmn(self, batch_id: str, *, poll_s: float = 0.2) -> Iterator[GMNFollow]:
        """(done, total, new outcomes) as results arrive, until the batch finished and all are
        read."""
        from producers import gmn

        after = "0-0"
        while True:
            step = self._run(gmn.follow_step(self.core, batch_id, after, poll_s))
            yield step.done, step.total, step.outcomes
            if step.end:
                return
            after = step.cursor


class AsyncClient(_Shell):
    """asyncio client, for services that enqueue from an event loop: `Client`'s methods."""

    def _connect(self, url: str) -> None:
        self.redis = aioredis.Redis.from_url(url)
        self._run = AsyncDriver(self.redis).run

    async def close(self) -> None:
        """Close the Redis connections."""
        await self.redis.aclose()

    async def aclose(self) -> None:
        """`close`, by the name asyncio code expects."""
        await self.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def submit_many(
        self, items: Iterable[Item], **options: Unpack[SubmitOptions]
    ) -> SubmitReport:
        """See `Client.submit_many`."""
        return await self._run(self.core.submit_many(items, **options))

    async def submit_chunks(
        self, builder: ChunkBuilder, record: Record, items: Iterable[Item]
    ) -> SubmitReport:
        """See `Client.submit_chunks`."""
        return await self._run(self.core.submit_chunks(builder, record, items))

    async def submit_file(self, path: Path, **kwargs: Any) -> SubmitReport:
        """See `Client.submit_file` (the file is read in the event loop's thread)."""
        with path.open("rb") as f:
            return await self.submit_many(f, **kwargs)

    async def lane(self, priority: L.Priority, route: list[RouteHop]) -> str:
        """See `Client.lane`."""
        return await self._run(self.core.lane(priority, route))

    async def batch(self, batch_id: str) -> Batch:
        """See `Client.batch`."""
        return await self._run(self.core.batch(batch_id))

    async def results(
        self, batch_id: str, after: str = "0-0", *, count: int = 1000, block_ms: int | None = None
    ) -> ResultPage:
        """See `Client.results`."""
        return await self._run(self.core.results(batch_id, after, count=count, block_ms=block_ms))

    async def raw_results(
        self, batch_id: str, after: str = "0-0", *, count: int = 1000, block_ms: int | None = None
    ) -> RawResultPage:
        """See `Client.raw_results`."""
        return await self._run(
            self.core.raw_results(batch_id, after, count=count, block_ms=block_ms)
        )

    async def iter_results(
        self, batch_id: str, after: str = "0-0", *, follow: bool = False
    ) -> AsyncIterator[ResultEntry]:
        """See `Client.iter_results`."""
        while True:
            page, end = await self._run(self.core.next_results(batch_id, after, follow))
            for entry in page.entries:
                yield entry
            if end:
                return
            after = page.cursor

    async def health(self, endpoints: list[str]) -> dict[str, HealthSnapshot]:
        """See `Client.health`."""
        return await self._run(self.core.health(endpoints))

    async def cancel(self, batch_id: str) -> BatchStatus:
        """See `Client.cancel`."""
        return await self._run(self.core.cancel(batch_id))

    async def failures(self, batch_id: str) -> dict[str, list[str]]:
        """See `Client.failures`."""
        return await self._run(self.core.failures(batch_id))

    async def failed_requests(self, batch_id: str) -> list[FailedRequest]:
        """See `Client.failed_requests`."""
        return await self._run(self.core.failed_requests(batch_id))

    async def retry_failed(self, batch_id: str, *, completion_window_s: float | None = None) -> int:
        """See `Client.retry_failed`."""
        return await self._run(self.core.retry_failed(batch_id, completion_window_s))

    async def wait(
        self, batch_id: str, timeout_s: float | None = None, poll_s: float = 0.2
    ) -> Batch:
        """See `Client.wait` (sleeps without holding the event loop)."""
        return await self._run(self.core.wait(batch_id, timeout_s, poll_s))

    async def generate_gmn(
        self,
        prompt: str,
        agent_type: str = "general",
        constraints: GMNLimits = None,
        rounds: int = DEFAULT_ROUNDS,
        **options: Unpack[gmn.GMNOptions],
    ) -> gmn.GMNOutcome:
        """See `Client.generate_gmn`."""
        from producers import gmn

        operation = gmn.generate(self.core, prompt, agent_type, constraints, rounds, options)
        return await self._run(operation)

    async def refine_gmn(
        self, document: gmn.Document, errors: gmn.Errors = None, **options: Unpack[gmn.Refine]
    ) -> gmn.GMNOutcome:
        """See `Client.refine_gmn`."""
        from producers import gmn

        return await self._run(gmn.refine(self.core, document, errors, options))

    async def validate_gmn(
        self, document: gmn.Document, constraints: GMNLimits = None
    ) -> ValidationReport:
        """See `Client.validate_gmn` (local, CPU only)."""
        from producers import gmn

        return gmn.check(document, constraints)

    async def generate_gmn_batch(
        self, lines: Iterable[Any] | Path, **options: Unpack[gmn.BatchOptions]
    ) -> str:
        """See `Client.generate_gmn_batch`."""
        from producers import gmn

        operation = gmn.submit_batch(self.core, lines, **options)
        return (await self._run(operation)).batch_id

    async def follow_gmn(self, batch_id: str, *, poll_s: float = 0.2) -> AsyncIterator[GMNFollow]:
        """See `Client.follow_gmn`."""
        from producers import gmn

        after = "0-0"
        while True:
            step = await self._run(gmn.follow_step(self.core, batch_id, after, poll_s))
            yield step.done, step.total, step.outcomes
            if step.end:
                return
            after = step.cursor
