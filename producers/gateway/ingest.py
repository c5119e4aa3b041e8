"""OpenAI-style batch creation: validate the whole input file first, fail the batch with
line-numbered errors if any line is bad, else enqueue it. Runs as a task of the gateway's
event loop with the async client; each chunk of lines ends in a Redis round trip, so a
50,000-line file never holds the loop for more than one chunk.

Memory stays bounded for any file: lines are streamed, duplicate custom_ids are found with a
Redis set, and at most `max_batch_errors` errors are kept.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable, Iterator
from itertools import islice
from typing import Any

import orjson
import redis
import redis.asyncio as aioredis

from producers.client import AsyncClient
from producers.gateway.config import GatewayConfig
from producers.gateway.storage import FileStore, StoredFile
from producers.gateway.views import text
from producers.submit import kinds_for
from schemas.batch_lines import CHAT_URL, LineError, parse_line
from schemas.config import AppConfig
from schemas.request import EndpointKind, LLMRequest
from workers.protocol.gateway import GatewayKeys
from workers.protocol.lanes import Priority
from workers.protocol.scripts import Lua, register

log = logging.getLogger("batchyard.gateway")

#: A batch whose ingestion lease is this old lost its gateway; see `recover`.
LEASE_S = 60
_CHUNK = 1000


class Stopped(Exception):
    """The batch was cancelled while being ingested, or the gateway is stopping."""


def line_problem(err: LineError) -> dict[str, Any]:
    """One entry of a failed batch's `errors.data`, with OpenAI's codes where they have one."""
    if err.field is None:
        code = "invalid_json_line"
    elif err.field == "url":
        code = "url_mismatch"
    else:
        code = "invalid_request"
    return {"code": code, "message": str(err), "param": err.field, "line": err.line}


def batch_error(code: str, message: str, line: int | None = None) -> dict[str, Any]:
    """An `errors.data` entry not tied to one field."""
    return {"code": code, "message": message, "param": None, "line": line}


class Problems:
    """Line errors of a file, keeping the first `cap` and counting the rest."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.kept: list[dict[str, Any]] = []
        self.more = 0

    def add(self, problem: dict[str, Any]) -> None:
        """Keep or count one error."""
        if len(self.kept) < self.cap:
            self.kept.append(problem)
        else:
            self.more += 1

    def __bool__(self) -> bool:
        return bool(self.kept)

    def entries(self) -> list[dict[str, Any]]:
        """The kept errors, plus one entry saying how many were left out."""
        if not self.more:
            return self.kept
        tail = batch_error("too_many_errors", f"{self.more} more line(s) have errors")
        return [*self.kept, tail]


class Ingest:
    """Validates and submits OpenAI-style batches; one instance per gateway process."""

    def __init__(
        self,
        client: AsyncClient,
        keys: GatewayKeys,
        store: FileStore,
        app_config: AppConfig,
        config: GatewayConfig,
    ) -> None:
        self.client = client
        self.redis: aioredis.Redis = client.redis
        self.keys = keys
        self.store = store
        self.endpoints = set(app_config.endpoints)
        self.config = config
        self._move = register(self.redis, Lua.MOVE_PHASE)
        self._seal = register(self.redis, Lua.SEAL)
        #: Set when the gateway's shutdown grace is over: running ingestions give up.
        self.stopping = asyncio.Event()

    async def move(self, batch_id: str, old: str, new: str, **fields: Any) -> bool:
        """Change the batch's phase only if it is still `old`."""
        args: list[Any] = [old, new]
        for name, value in fields.items():
            args += [name, value]
        return bool(await self._move(keys=[self.keys.batch(batch_id)], args=args))

    async def run(
        self,
        batch_id: str,
        stored: StoredFile,
        window_s: float,
        metadata: dict[str, str],
        priority: Priority = "normal",
        endpoint: str = CHAT_URL,
    ) -> None:
        """Validate, then submit; every outcome is recorded on the batch, nothing is raised.

        Every line must address the batch's `endpoint`, as OpenAI's Batch API requires.
        """
        try:
            await self._run(batch_id, stored, window_s, metadata, priority, endpoint)
        except Stopped:
            if self.stopping.is_set():
                await self.abandon(batch_id, "gateway_interrupted", "the gateway stopped meanwhile")
            else:  # cancelled while validating: the cancel recorded everything
                await self._release(batch_id)
        except Exception:
            log.exception("batch %s: ingestion failed", batch_id)
            await self.abandon(batch_id, "internal_error", "the gateway could not queue the file")

    async def _run(
        self,
        batch_id: str,
        stored: StoredFile,
        window_s: float,
        metadata: dict[str, str],
        priority: Priority,
        endpoint: str,
    ) -> None:
        try:
            problems = await self.validate(batch_id, stored, endpoint)
        except (OSError, redis.RedisError) as exc:
            log.warning("batch %s: cannot read %s: %s", batch_id, stored.id, exc)
            problems = Problems(1)
            problems.add(batch_error("file_unavailable", f"cannot read {stored.id}: {exc}"))
        if problems:
            errors = orjson.dumps(problems.entries())
            await self.move(batch_id, "validating", "failed", failed_at=time.time(), errors=errors)
            await self._release(batch_id)
            return
        if not await self.move(batch_id, "validating", "submitting", in_progress_at=time.time()):
            await self._release(batch_id)
            return
        lines = await self.store.read_lines(stored, self._max_line)
        submitted = asyncio.Event()
        lease = asyncio.create_task(self._renew(batch_id, submitted), name=f"lease {batch_id}")
        try:
            await self.client.submit_many(
                self._unless_stopping(batch_id, lines),
                batch_id=batch_id,
                metadata=metadata or None,
                route=metadata.get("batchyard_route"),
                completion_window_s=window_s,
                priority=priority,
                endpoint=endpoint,
            )
        finally:
            submitted.set()
            await lease  # before the release: a renewal after it would restore the lease
        await self.move(batch_id, "submitting", "submitted")
        if await self.redis.hget(self.keys.batch(batch_id), "cancel_requested"):
            await self.client.cancel(batch_id)
        await self._release(batch_id)

    @property
    def _max_line(self) -> int:
        return self.config.max_line_kib * 1024

    async def validate(
        self, batch_id: str, stored: StoredFile, endpoint: str = CHAT_URL
    ) -> Problems:
        """Every problem of the file, in line order, as OpenAI reports them."""
        problems = Problems(self.config.max_batch_errors)
        kinds = kinds_for(endpoint)
        seen = self.keys.seen(batch_id)
        count = 0
        model: str | None = None
        lines = enumerate(await self.store.read_lines(stored, self._max_line), start=1)
        try:
            while chunk := list(islice(lines, _CHUNK)):
                await self._still(batch_id, "validating")
                found, ids = [], []
                for number, raw in chunk:
                    if not raw.strip():
                        continue
                    count += 1
                    if count > self.config.max_batch_lines:
                        found.append(
                            batch_error(
                                "too_many_tasks",
                                f"line {number}: a batch takes at most "
                                f"{self.config.max_batch_lines} requests",
                                number,
                            )
                        )
                        break
                    problem, request = self._check(raw, number, kinds)
                    if problem is not None:
                        found.append(problem)
                    elif request is not None:
                        if model is None and request.model:
                            model = request.model
                            # OpenAI's batch `model`: the one the file's requests name.
                            await self.redis.hset(self.keys.batch(batch_id), "model", model[:200])
                        if request.custom_id is not None:
                            ids.append((number, request.custom_id))
                found += await self._duplicates(seen, ids)
                for problem in sorted(found, key=lambda p: p["line"] or 0):
                    problems.add(problem)
                if count > self.config.max_batch_lines:
                    break
        finally:
            await self.redis.delete(seen)
        if count == 0:
            problems.add(batch_error("empty_file", "the input file has no requests"))
        return problems

    def _check(
        self, raw: bytes, number: int, kinds: frozenset[EndpointKind] | None = None
    ) -> tuple[dict[str, Any] | None, LLMRequest | None]:
        if len(raw) > self._max_line:
            message = f"line {number}: longer than {self.config.max_line_kib} KiB"
            return batch_error("line_too_long", message, number), None
        try:
            request = parse_line(raw, number, kinds)
        except LineError as err:
            return line_problem(err), None
        for i, hop in enumerate(request.route or ()):
            if hop.endpoint not in self.endpoints:
                field = f"body.route.{i}.endpoint"
                unknown = LineError(number, field, f"unknown endpoint {hop.endpoint!r}")
                return line_problem(unknown), None
        return None, request

    async def _duplicates(self, seen: str, ids: list[tuple[int, str]]) -> list[dict[str, Any]]:
        if not ids:
            return []
        pipe = self.redis.pipeline(transaction=False)
        for _, custom_id in ids:
            pipe.sadd(seen, custom_id)
        pipe.expire(seen, LEASE_S * 10)  # outlives a crashed validation only briefly
        out = []
        for (number, custom_id), added in zip(ids, (await pipe.execute())[:-1], strict=True):
            if not added:
                message = f"line {number}: duplicate custom_id {custom_id!r}"
                out.append(
                    {
                        "code": "duplicate_custom_id",
                        "message": message,
                        "param": "custom_id",
                        "line": number,
                    }
                )
        return out

    async def _still(self, batch_id: str, phase: str) -> None:
        """Renew the lease; stop when someone (a cancel) moved the batch on, or at shutdown."""
        if self.stopping.is_set():
            raise Stopped(batch_id)
        await self.redis.zadd(self.keys.ingesting, {batch_id: time.time() + LEASE_S})
        current = await self.redis.hget(self.keys.batch(batch_id), "phase")
        if current is None or text(current) != phase:
            raise Stopped(batch_id)

    async def _renew(self, batch_id: str, submitted: asyncio.Event) -> None:
        """Keep the lease of a batch being submitted until `submitted` is set.

        Ended by an event, never a cancel: on Python 3.11, `asyncio.wait_for` returns normally
        when a cancel lands in the loop pass its future completes in, and redis-py writes every
        command under one (`socket_timeout`). A cancel that met the first ZADD's write (a
        one-round-trip submission ends that soon) was lost, and the lease renewed for ever,
        the ingestion waiting on it past the gateway's shutdown.
        """
        while not submitted.is_set():
            await self.redis.zadd(self.keys.ingesting, {batch_id: time.time() + LEASE_S})
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(submitted.wait(), LEASE_S / 4)

    def _unless_stopping(self, batch_id: str, lines: Iterable[bytes]) -> Iterator[bytes]:
        for n, line in enumerate(lines):
            if n % _CHUNK == 0 and self.stopping.is_set():
                raise Stopped(batch_id)
            yield line

    async def _release(self, batch_id: str) -> None:
        await self.redis.zrem(self.keys.ingesting, batch_id)

    async def abandon(self, batch_id: str, code: str, message: str) -> None:
        """End a batch whose ingestion cannot finish: failed if nothing was queued yet, else
        cancelled (queued requests end `cancelled`) with the reason in `errors`."""
        errors = orjson.dumps([batch_error(code, message)])
        if await self.move(batch_id, "validating", "failed", failed_at=time.time(), errors=errors):
            await self._release(batch_id)
            return
        if await self.move(batch_id, "submitting", "submitted", errors=errors):
            try:
                await self.client.cancel(batch_id)
            except KeyError:  # the batch record was never written: nothing was queued
                await self.move(batch_id, "submitted", "failed", failed_at=time.time())
            else:
                await self._seal(keys=[self.client.keys.batch(batch_id)], args=[time.time()])
        await self._release(batch_id)

    async def recover(self) -> int:
        """Abandon batches whose gateway died mid-ingestion (their lease ran out)."""
        stale = await self.redis.zrangebyscore(self.keys.ingesting, "-inf", time.time())
        for raw in stale:
            batch_id = text(raw)
            log.warning("batch %s: its gateway stopped while ingesting it", batch_id)
            await self.abandon(
                batch_id, "gateway_interrupted", "the gateway stopped during ingestion"
            )
        return len(stale)
