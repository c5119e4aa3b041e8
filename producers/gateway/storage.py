"""Uploaded files: streamed in, small ones kept in Redis, large ones in a local directory.

An upload is never held whole in memory: up to `small_file_kib` is buffered (and then stored
in Redis), beyond that every chunk goes straight to `<storage_dir>/<namespace>/<id>.part`,
renamed to `<id>.jsonl` once the upload is accepted. Metadata is a Redis hash either way.
"""

from __future__ import annotations

import asyncio
import io
import logging
import os
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import redis.asyncio as aioredis
from aiohttp import web

from producers.gateway.limits import too_large
from producers.gateway.views import text
from workers.protocol.gateway import GatewayKeys, valid_id

log = logging.getLogger("batchyard.gateway")

#: Files younger than this are never swept (uploads in progress or being committed).
_MIN_AGE_S = 3600


def new_file_id() -> str:
    """`file-` + 24 hex digits, like OpenAI's file ids."""
    return f"file-{uuid.uuid4().hex[:24]}"


@dataclass
class StoredFile:
    """An uploaded file's metadata; `path` is empty when the content is in Redis."""

    id: str
    owner: str
    filename: str
    purpose: str
    size: int
    lines: int
    created_at: int
    path: str = ""

    def to_openai(self) -> dict[str, Any]:
        """The OpenAI `file` object."""
        return {
            "id": self.id,
            "object": "file",
            "bytes": self.size,
            "created_at": self.created_at,
            "filename": self.filename,
            "purpose": self.purpose,
            "status": "processed",
            "status_details": None,
        }


@dataclass
class Received:
    """An upload streamed to storage and counted, not yet committed."""

    file_id: str
    size: int
    lines: int
    data: bytes | None
    path: Path | None


def read_lines(f: BinaryIO, max_bytes: int) -> Iterator[bytes]:
    """Every line of `f`, each at most `max_bytes` long plus its newline; a longer line comes
    out cut to `max_bytes + 1` bytes (so callers can tell) and its rest is skipped unread."""
    while line := f.readline(max_bytes + 1):
        if len(line) > max_bytes and not line.endswith(b"\n"):
            while (rest := f.readline(1 << 16)) and not rest.endswith(b"\n"):
                pass
        yield line


class FileStore:
    """Where uploads go and where batches read them from."""

    def __init__(
        self,
        client: aioredis.Redis,
        keys: GatewayKeys,
        root: Path,
        namespace: str,
        *,
        small_bytes: int,
        ttl_s: int,
    ) -> None:
        self.redis = client
        self.keys = keys
        self.dir = root / namespace
        self.small_bytes = small_bytes
        self.ttl_s = ttl_s

    async def receive(
        self, chunks: AsyncIterator[bytes], *, max_bytes: int, max_lines: int
    ) -> Received:
        """Stream an upload to storage, counting bytes and lines; 413 as soon as one is over."""
        file_id = new_file_id()
        size = lines = 0
        last = b"\n"
        buffer = bytearray()
        path: Path | None = None
        out: BinaryIO | None = None
        try:
            async for chunk in chunks:
                if not chunk:
                    continue
                size += len(chunk)
                lines += chunk.count(b"\n")
                last = chunk[-1:]
                if size > max_bytes:
                    raise too_large("The file", f"{max_bytes // (1024 * 1024)} MiB")
                if lines > max_lines:
                    raise too_large("The file's line count", f"{max_lines} lines")
                if out is None and len(buffer) + len(chunk) <= self.small_bytes:
                    buffer += chunk
                    continue
                if out is None:
                    self.dir.mkdir(parents=True, exist_ok=True)
                    path = self.dir / f"{file_id}.part"
                    out = path.open("wb")
                    out.write(buffer)
                    buffer = bytearray()
                out.write(chunk)
            if size and last != b"\n":
                lines += 1
                if lines > max_lines:
                    raise too_large("The file's line count", f"{max_lines} lines")
        except BaseException:
            if out is not None:
                out.close()
                out = None
            if path is not None:
                path.unlink(missing_ok=True)
            raise
        finally:
            if out is not None:
                out.close()
        return Received(file_id, size, lines, None if path else bytes(buffer), path)

    def discard(self, received: Received) -> None:
        """Drop an upload that was refused after it was stored."""
        if received.path is not None:
            received.path.unlink(missing_ok=True)

    async def commit(
        self, received: Received, *, owner: str, filename: str, purpose: str
    ) -> StoredFile:
        """Make an accepted upload a file: move it in place and write its metadata."""
        path = ""
        if received.path is not None:
            final = received.path.with_suffix(".jsonl")
            os.replace(received.path, final)
            path = str(final)
        stored = StoredFile(
            received.file_id,
            owner,
            filename,
            purpose,
            received.size,
            received.lines,
            int(time.time()),
            path,
        )
        pipe = self.redis.pipeline(transaction=True)
        if received.data is not None:
            pipe.set(self.keys.file_data(stored.id), received.data, ex=self.ttl_s)
        meta = self.keys.file(stored.id)
        pipe.hset(meta, mapping={k: v for k, v in vars(stored).items() if k != "id"})
        pipe.expire(meta, self.ttl_s)
        listing = self.keys.owner_files(owner)
        pipe.zadd(listing, {stored.id: time.time()})
        pipe.zremrangebyscore(listing, "-inf", time.time() - self.ttl_s)
        pipe.expire(listing, self.ttl_s)
        await pipe.execute()
        return stored

    async def page(
        self, owner: str, *, after: str | None, limit: int, oldest_first: bool, purpose: str | None
    ) -> tuple[list[StoredFile], bool]:
        """A page of the owner's files by creation time, and whether more follow. Entries
        whose metadata expired are dropped from the listing as they are met."""
        listing = self.keys.owner_files(owner)
        rank_of = self.redis.zrank if oldest_first else self.redis.zrevrank
        range_of = self.redis.zrange if oldest_first else self.redis.zrevrange
        start = 0
        if after:
            rank = await rank_of(listing, after)
            if not isinstance(rank, int):
                raise ValueError(after)
            start = rank + 1
        out: list[StoredFile] = []
        while len(out) <= limit:
            ids = [text(raw) for raw in await range_of(listing, start, start + 2 * limit)]
            if not ids:
                break
            start += len(ids)
            files = [await self.get(i) for i in ids]
            gone = [i for i, f in zip(ids, files, strict=True) if f is None]
            if gone:
                await self.redis.zrem(listing, *gone)
            out += [f for f in files if f is not None and purpose in (None, f.purpose)]
        return out[:limit], len(out) > limit

    async def get(self, file_id: str) -> StoredFile | None:
        """The file's metadata, or None when unknown or expired."""
        if not valid_id(file_id):
            return None
        raw = await self.redis.hgetall(self.keys.file(file_id))
        if not raw:
            return None
        f = {text(k): text(v) for k, v in raw.items()}
        return StoredFile(
            id=file_id,
            owner=f["owner"],
            filename=f["filename"],
            purpose=f["purpose"],
            size=int(f["size"]),
            lines=int(f["lines"]),
            created_at=int(f["created_at"]),
            path=f.get("path", ""),
        )

    async def delete(self, stored: StoredFile) -> None:
        """Forget a file and remove its content."""
        await self.redis.delete(self.keys.file(stored.id), self.keys.file_data(stored.id))
        await self.redis.zrem(self.keys.owner_files(stored.owner), stored.id)
        if stored.path:
            await asyncio.to_thread(Path(stored.path).unlink, missing_ok=True)

    async def response(self, stored: StoredFile) -> web.StreamResponse:
        """The file's content as a response, streamed from disk when it is there."""
        headers = {"Content-Type": "application/octet-stream"}
        if stored.path:
            if not await asyncio.to_thread(Path(stored.path).is_file):
                raise FileNotFoundError(stored.path)
            return web.FileResponse(stored.path, headers=headers)
        data = await self.redis.get(self.keys.file_data(stored.id))
        if data is None:
            raise FileNotFoundError(stored.id)
        return web.Response(body=data, headers=headers)

    async def read_lines(self, stored: StoredFile, max_bytes: int) -> Iterator[bytes]:
        """The file's lines: streamed from disk, or from its content held in Redis (small
        files), which is fetched here."""
        if stored.path:
            return _file_lines(stored.path, max_bytes)
        data = await self.redis.get(self.keys.file_data(stored.id))
        if not isinstance(data, bytes):
            raise FileNotFoundError(stored.id)
        return read_lines(io.BytesIO(data), max_bytes)

    async def sweep(self) -> int:
        """Remove files whose metadata expired and uploads a crash left half-written.

        Only files untouched for an hour are considered: an upload being committed has its
        file renamed a moment before its metadata is written.
        """
        if not self.dir.is_dir():
            return 0
        removed = 0
        now = time.time()
        for entry in self.dir.iterdir():
            file_id = entry.name.split(".", 1)[0]
            try:
                if now - entry.stat().st_mtime < _MIN_AGE_S:
                    continue
                stale = entry.suffix == ".part" or not await self.redis.exists(
                    self.keys.file(file_id)
                )
                if stale:
                    entry.unlink(missing_ok=True)
                    removed += 1
            except OSError as exc:
                log.warning("could not sweep %s: %s", entry, exc)
        return removed


def _file_lines(path: str, max_bytes: int) -> Iterator[bytes]:
    with open(path, "rb") as f:
        yield from read_lines(f, max_bytes)
