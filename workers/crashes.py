"""Requests that kill their worker process: counted, then run alone, then failed.

A request whose call or answer ends its worker process (the OOM killer on a huge answer, a
crash in native code or in a plugin) went back to its queue with the dead worker's other
messages, ran again, ended the next worker too, and so on: its batch never finished, and the
requests running beside it never got a result either.

Each supervised worker process marks the messages it is running in a small file its
supervisor knows (`RunningMarks`: one fixed-size slot per message, set before the job runs
and cleared after it, in shared memory: no system call). When a child dies without being
asked to, its supervisor adds one to the `deaths` of each job it was running, in the stored
message itself (`count_deaths`), before maintenance redelivers it. A job redelivered with
`SOLO_AT` deaths runs alone in its worker (`Solo`: no other job runs beside it, so a death
is its own), and one with `FAIL_AT` ends with a `worker_crashed` error, without a call. One
death is not enough to suspect a request: an operator's `kill -9` or an OOM kill caused by
another process ends every request in flight.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import mmap
import os
import shutil
import stat
import tempfile
from pathlib import Path
from typing import Any, NamedTuple

import orjson

from schemas.result import ErrorInfo
from workers.lifetime import PARENT_PID_ENV

log = logging.getLogger("batchyard.crashes")

#: A job run when its worker died this many times runs alone.
SOLO_AT = 2
#: A job run when its worker died this many times fails (`worker_crashed`), uncalled.
FAIL_AT = 3
#: Bytes per running message: "<its queue's .msgs key>\t<redis message id>\n".
SLOT = 256

#: Sets a message's new text only if it is still the one that was read: a message acked and
#: deleted meanwhile is not written back.
_SWAP = b"""
if redis.call('hget', KEYS[1], ARGV[1]) == ARGV[2] then
  redis.call('hset', KEYS[1], ARGV[1], ARGV[3])
  return 1
end
return 0
"""


def crashed(deaths: int) -> ErrorInfo:
    """The error of a job whose worker died each of the `deaths` times it ran it."""
    why = (
        f"the worker process running this request died {deaths} times (out of memory, "
        "killed, or a crash in native code or a plugin); it was not run again"
    )
    return ErrorInfo(code="worker_crashed", message=why)


def marks_dir(parent_pid: int) -> Path:
    """Where the worker processes supervised by `parent_pid` mark what they run."""
    return Path(tempfile.gettempdir()) / f"batchyard-running-{os.getuid()}-{parent_pid}"


def marks_path(parent_pid: int, pid: int) -> Path:
    """Where the worker process `pid` supervised by `parent_pid` marks what it runs."""
    return marks_dir(parent_pid) / str(pid)


class RunningMarks:
    """The messages this worker process is running, readable after it died."""

    def __init__(self, path: Path, slots: int) -> None:
        path.parent.mkdir(mode=0o700, exist_ok=True)
        # A shared temporary directory: one someone else made (or a link) is not used.
        found = os.lstat(path.parent)
        if not stat.S_ISDIR(found.st_mode) or found.st_uid != os.getuid():
            raise PermissionError(f"{path.parent} is not a directory of this user")
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        try:  # slot 0: the worker ids its messages are held under (`owners`)
            os.ftruncate(fd, (slots + 1) * SLOT)
            self._map = mmap.mmap(fd, (slots + 1) * SLOT)
        finally:
            os.close(fd)
        self.path = path
        self._free = list(range(slots, 0, -1))

    def __repr__(self) -> str:
        return f"<RunningMarks {self.path} free={len(self._free)}>"

    @classmethod
    def for_supervised(cls, slots: int) -> RunningMarks | None:
        """This process's marks, if a supervisor started it (else nobody would read them)."""
        parent = os.environ.get(PARENT_PID_ENV, "")
        if not parent.isdigit():
            return None
        try:
            return cls(marks_path(int(parent), os.getpid()), slots)
        except OSError as exc:
            log.warning("cannot mark running requests (%s): not counted if this worker dies", exc)
            return None

    def owners(self, heartbeats: str, ids: list[str]) -> None:
        """Note the dramatiq heartbeats key and the worker ids this process holds messages
        under: once it is dead, its supervisor expires them, and the next maintenance puts
        their messages back at once, not a heartbeat timeout later."""
        if self._map.closed:  # a last heartbeat as the process stops
            return
        line = f"{heartbeats}\t{' '.join(ids)}".encode()[: SLOT - 1] + b"\n"
        self._map[: len(line)] = line

    def mark(self, entry: bytes) -> int:
        """Note one running message (`entry`: its .msgs key, a tab, its id); its slot, or -1
        when every slot is taken."""
        if not self._free:
            return -1
        slot = self._free.pop()
        start = slot * SLOT
        line = entry[: SLOT - 1] + b"\n"
        self._map[start : start + len(line)] = line
        return slot

    def clear(self, slot: int) -> None:
        """The message of `slot` is no longer running."""
        if slot >= 0 and not self._map.closed:  # closed: a job outlived the drain
            self._map[slot * SLOT] = 0
            self._free.append(slot)

    def close(self) -> None:
        """Remove the file (and the directory, if it was the last): this process ends with
        nothing running."""
        self._map.close()
        self.path.unlink(missing_ok=True)
        with contextlib.suppress(OSError):  # not empty: another worker's marks are in it
            self.path.parent.rmdir()


def sweep_marks() -> int:
    """Remove the marks directories of this user's supervisors that are gone (killed: no
    one cleaned up after them); how many."""
    removed = 0
    prefix = f"batchyard-running-{os.getuid()}-"
    for path in Path(tempfile.gettempdir()).glob(prefix + "*"):
        pid = path.name[len(prefix) :]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(path, ignore_errors=True)
            removed += 1
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's
        return True
    return True


class Marks(NamedTuple):
    """What a dead worker process had marked."""

    #: (.msgs key, message id) of every message it was running
    running: list[tuple[str, str]]
    #: dramatiq's heartbeats key ("" if not noted) and the worker ids it held messages under
    heartbeats: str
    ids: list[str]


def read_marks(path: Path) -> Marks:
    """The marks a worker process left in `path`."""
    data = path.read_bytes()
    lines = [
        data[start : start + SLOT].split(b"\n", 1)[0].decode(errors="replace").partition("\t")
        for start in range(0, len(data), SLOT)
    ]
    heartbeats, _, ids = lines[0] if data[:1] not in (b"", b"\0") else ("", "", "")
    running = [(key, rid) for key, _, rid in lines[1:] if key and rid and key[0] != "\0"]
    return Marks(running, heartbeats, ids.split())


def expire_owners(client: Any, marks: Marks) -> int:
    """Make the dead process's worker ids look dead to dramatiq's maintenance (heartbeat 0),
    those still beating only (XX): its unacked messages go back to their queues at the next
    maintenance, instead of a heartbeat timeout later. How many were expired."""
    if not marks.heartbeats or not marks.ids:
        return 0
    return int(client.zadd(marks.heartbeats, dict.fromkeys(marks.ids, 0), xx=True, ch=True))


def after_death(redis_url: str, marks: Marks) -> int:
    """What a supervisor does when a worker process died unasked: `count_deaths`, then
    `expire_owners`. How many deaths were counted."""
    import redis

    with redis.Redis.from_url(redis_url, socket_timeout=5) as client:
        counted = count_deaths(client, marks.running)
        expire_owners(client, marks)
    return counted


def count_deaths(client: Any, marks: list[tuple[str, str]]) -> int:
    """Add one to the `deaths` of the job of each marked message still stored (`client`: a
    sync redis-py client); how many were counted."""
    swap = client.register_script(_SWAP)
    counted = 0
    for key, rid in marks:
        raw = client.hget(key, rid)
        if raw is None:  # acked (its result is stored) since it was marked
            continue
        try:
            message = orjson.loads(raw)
            job = message["args"][0]
            job["deaths"] = int(job.get("deaths", 0)) + 1
        except (orjson.JSONDecodeError, LookupError, TypeError, ValueError, AttributeError):
            continue
        counted += swap(keys=[key], args=[rid, raw, orjson.dumps(message)])
    return counted


class Solo:
    """Runs some jobs alone on a worker's event loop: `enter(alone=True)` waits until no job
    runs and keeps others from starting until `leave(alone=True)`. Jobs run normally touch
    two counters (`try_enter`: no await unless a job waits to run alone)."""

    def __init__(self) -> None:
        self.running = 0
        #: Jobs waiting to run alone, and whether one is running.
        self.pending = 0
        self.alone = False
        self._changed: asyncio.Event | None = None

    @property
    def blocked(self) -> bool:
        """Whether a job now has to wait (one runs alone, or waits to)."""
        return self.alone or self.pending > 0

    def try_enter(self, alone: bool) -> bool:
        """Take this job's turn now if it needs no wait (a normal job, none alone); False:
        `enter` waits for it."""
        if alone or self.blocked:
            return False
        self.running += 1
        return True

    async def enter(self, alone: bool) -> None:
        """Wait for this job's turn."""
        if not alone:
            while self.blocked:
                await self._wait()
            self.running += 1
            return
        self.pending += 1
        try:
            while self.running or self.alone:
                await self._wait()
        except BaseException:  # cancelled: the jobs it held back may go on
            self.pending -= 1
            self._wake()
            raise
        self.pending -= 1
        self.alone = True

    def leave(self, alone: bool) -> None:
        """This job has ended."""
        if alone:
            self.alone = False
            self._wake()
        else:
            self.running -= 1
            if self.pending and not self.running:
                self._wake()

    async def _wait(self) -> None:
        if self._changed is None:
            self._changed = asyncio.Event()
        await self._changed.wait()

    def _wake(self) -> None:
        changed, self._changed = self._changed, None
        if changed is not None:
            changed.set()
