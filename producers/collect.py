"""Exports a batch's results to output/error JSONL files, resumably.

A `<output>.cursor` file remembers the last stream id written and the byte size of both files;
a re-run truncates any half-written tail and continues, so each result is written once.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Literal

import orjson
import redis

from producers.client import Client
from schemas.batch_output import (
    native_line,
    stored_openai_success,
    to_anthropic_line,
    to_openai_line,
)
from schemas.result import LLMResult
from workers.protocol.batch_record import BatchNotFound
from workers.protocol.connection import wait_for_redis
from workers.protocol.results import RawEntry

log = logging.getLogger("batchyard.producer")

Format = Literal["openai", "anthropic", "native"]


@dataclass
class CollectReport:
    """What one `collect` run wrote."""

    written: int
    succeeded: int
    errored: int
    cursor: str


def render(result: LLMResult, key: str, fmt: Format) -> dict[str, Any]:
    """One output line in the chosen format."""
    if fmt == "native":
        return native_line(result)
    if fmt == "anthropic":
        return to_anthropic_line(result)
    return to_openai_line(result, key)


def render_stored(raw: bytes, key: str, fmt: Format) -> tuple[bytes, bool]:
    """The output line (with its newline) of a result as stored, and whether it belongs in
    the output file (else the error file). An OpenAI-format success skips the model."""
    if fmt == "openai" and (line := stored_openai_success(raw, key)) is not None:
        return line, True
    result = LLMResult.model_validate_json(raw)
    line_bytes = orjson.dumps(render(result, key, fmt)) + b"\n"
    return line_bytes, result.status == "succeeded" or fmt == "anthropic"


class Cursor:
    """The resume point of a collect run, saved atomically beside the output file."""

    def __init__(self, path: Path, batch_id: str) -> None:
        self.path = path
        self.batch_id = batch_id
        self.stream_id = "0-0"
        self.sizes = (0, 0)

    def load(self) -> bool:
        """Read a cursor of the same batch; False when starting fresh."""
        try:
            data = orjson.loads(self.path.read_bytes())
        except (OSError, orjson.JSONDecodeError):
            return False
        if data.get("batch_id") != self.batch_id:
            return False
        self.stream_id = data["stream_id"]
        self.sizes = (int(data["out_bytes"]), int(data["err_bytes"]))
        return True

    def save(self, stream_id: str, out: BinaryIO, err: BinaryIO) -> None:
        """Persist after the data it points past is flushed to disk."""
        for f in (out, err):
            f.flush()
            os.fsync(f.fileno())
        self.stream_id = stream_id
        self.sizes = (out.tell(), err.tell())
        tmp = self.path.with_suffix(self.path.suffix + ".tmp")
        tmp.write_bytes(
            orjson.dumps(
                {
                    "batch_id": self.batch_id,
                    "stream_id": stream_id,
                    "out_bytes": self.sizes[0],
                    "err_bytes": self.sizes[1],
                }
            )
        )
        os.replace(tmp, self.path)


def errors_path(output: Path) -> Path:
    """Where the results that are not successes go, by default: `<output stem>.errors<suffix>`."""
    return output.with_name(output.stem + ".errors" + output.suffix)


def _open(path: Path, size: int) -> BinaryIO:
    f = path.open("r+b" if path.exists() else "w+b")
    f.truncate(size)
    f.seek(size)
    return f


class Export:
    """The output and error files of a batch open for appending, from their cursor on.

    `write` appends a page of results; `save` makes them durable (both files fsynced, then
    the cursor). Lines written after the last save (all of them, if a `write` failed midway)
    are rewritten by the next export, which truncates the files back to the cursor's sizes.
    """

    def __init__(self, output: Path, errors: Path, batch_id: str, fmt: Format) -> None:
        self.cursor = Cursor(output.with_name(output.name + ".cursor"), batch_id)
        sizes = self.cursor.sizes if self.cursor.load() else (0, 0)
        self.fmt = fmt
        #: The stream id the files hold every result up to.
        self.after = self.cursor.stream_id
        self.report = CollectReport(0, 0, 0, self.after)
        self.out = _open(output, sizes[0])
        try:
            self.err = _open(errors, sizes[1])
        except BaseException:
            self.out.close()
            raise

    def write(self, entries: list[RawEntry], after: str) -> None:
        """Append `entries` (read from the stream up to `after`) to their files."""
        report = self.report
        for _sid, key, raw in entries:
            line, ok = render_stored(raw, key, self.fmt)
            if ok:
                self.out.write(line)
                report.succeeded += 1
            else:
                self.err.write(line)
                report.errored += 1
        report.written += len(entries)
        self.after = report.cursor = after

    def save(self) -> None:
        """Make what was written durable and move the cursor past it (if it moved)."""
        if self.after != self.cursor.stream_id:
            self.cursor.save(self.after, self.out, self.err)

    def close(self) -> None:
        """Close both files (what was not saved is rewritten by the next export)."""
        try:
            self.out.close()
        finally:
            self.err.close()


class OutputError(RuntimeError):
    """An output file could not be written (read-only, full, ...): one line for the user."""


def _reconnect(client: Client, why: str, batch_id: str, exc: Exception) -> None:
    """Log `why` and wait (bounded, with backoff) until the client's Redis answers again."""
    log.warning(why, batch_id, exc)
    assert client.settings.redis_url is not None
    wait_for_redis(client.settings.redis_url, give_up_s=client.settings.redis_wait_s)


def _await_batch(
    client: Client, batch_id: str, *, wait_s: float, poll_s: float, follow: bool = False
) -> None:
    """Fail on an unknown id at once, or (following) wait for Redis and for the batch to be
    submitted."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            client.batch(batch_id)
            return
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            if not follow:
                raise
            # Following waits for a Redis that is not up yet, as it does for one that restarts.
            _reconnect(client, "Redis not reachable yet for %s (%s); waiting", batch_id, exc)
        except BatchNotFound:
            if time.monotonic() >= deadline:
                raise
            time.sleep(min(poll_s, 0.2))


def collect(
    client: Client,
    batch_id: str,
    output: Path,
    errors: Path | None = None,
    *,
    follow: bool = False,
    fmt: Format = "openai",
    on_progress: Callable[[int], None] | None = None,
    poll_s: float = 1.0,
    wait_for_batch_s: float = 600.0,
    known: bool = False,
) -> CollectReport:
    """Append results not yet written to `output` (successes) and `errors` (the rest).

    `known`: the caller knows the batch exists (`batchyard run`, which reads its record each
    step anyway), so the check for an unknown id, a round trip and a record read, is skipped.
    """
    errors = errors or errors_path(output)
    if not known:
        _await_batch(
            client,
            batch_id,
            wait_s=wait_for_batch_s if follow else 0.0,
            poll_s=poll_s,
            follow=follow,
        )
    with output_errors(output):
        export = Export(output, errors, batch_id, fmt)
        try:
            return _collect(client, batch_id, export, follow, on_progress, poll_s)
        finally:
            export.close()


@contextmanager
def output_errors(output: Path) -> Iterator[None]:
    """An output file that cannot be written becomes an `OutputError`: one line for the user."""
    try:
        yield
    except ConnectionError:  # gave up waiting for Redis: not a file problem
        raise
    except OSError as exc:
        # The cursor is saved only after both files are flushed and fsynced, so it never runs
        # ahead of what is on disk: a later collect rewrites any half-written tail once.
        path = exc.filename or output
        raise OutputError(
            f"cannot write {path}: {exc.strerror or exc}; free some space or choose another "
            "--output (results already written are kept: run collect again to continue)"
        ) from None


def _collect(
    client: Client,
    batch_id: str,
    export: Export,
    follow: bool,
    on_progress: Callable[[int], None] | None,
    poll_s: float,
) -> CollectReport:
    while True:
        try:
            page = client.raw_results(
                batch_id, export.after, block_ms=int(poll_s * 1000) if follow else None
            )
            if not page.read:
                if not follow:
                    break
                batch = client.batch(batch_id)
                if batch.finished and not client.raw_results(batch_id, export.after, count=1).read:
                    break
                continue
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            if not follow:
                raise
            # Following outlives a Redis restart: wait (bounded, with backoff) and go on
            # from the cursor, which only ever moves past results already written.
            _reconnect(client, "lost Redis while following %s (%s); reconnecting", batch_id, exc)
            continue
        export.write(page.entries, page.cursor)
        export.save()
        if on_progress is not None:
            on_progress(export.report.written)
    return export.report
