"""Requests that kill their worker: running marks, death counts, jobs run alone."""

from __future__ import annotations

import asyncio
import os
import subprocess
import tempfile
from pathlib import Path

import orjson
import pytest
import redis

from workers.crashes import (
    SLOT,
    Marks,
    RunningMarks,
    Solo,
    count_deaths,
    expire_owners,
    marks_path,
    read_marks,
    sweep_marks,
)


def test_marks_hold_what_runs_and_nothing_once_cleared(tmp_path: Path) -> None:
    marks = RunningMarks(tmp_path / "run" / "123", slots=3)
    a = marks.mark(b"ns:q.msgs\tid-a")
    b = marks.mark(b"ns:q.msgs\tid-b")
    c = marks.mark(b"ns:other.msgs\t" + b"x" * 400)  # cut to its slot, never into the next
    # every slot taken: the next message is not marked (and nothing else is overwritten)
    assert marks.mark(b"ns:q.msgs\tid-d") == -1
    assert read_marks(marks.path).running == [
        ("ns:q.msgs", "id-a"),
        ("ns:q.msgs", "id-b"),
        ("ns:other.msgs", "x" * (SLOT - 1 - len("ns:other.msgs\t"))),
    ]
    marks.clear(b)
    marks.clear(c)
    # a freed slot is reused, its old text gone
    assert marks.mark(b"ns:q.msgs\te") in (b, c)
    assert sorted(read_marks(marks.path).running) == [("ns:q.msgs", "e"), ("ns:q.msgs", "id-a")]
    marks.clear(a)
    assert len(read_marks(marks.path).running) == 1
    # the worker ids it holds messages under are kept apart, the latest noted only
    assert read_marks(marks.path)[1:] == ("", [])
    marks.owners("ns:__heartbeats__", ["w-old", "w-1"])
    marks.owners("ns:__heartbeats__", ["w-1"])
    assert read_marks(marks.path)[1:] == ("ns:__heartbeats__", ["w-1"])
    assert len(read_marks(marks.path).running) == 1
    marks.close()
    # a last heartbeat, or a job that outlived the drain, after the close: nothing
    marks.owners("ns:__heartbeats__", ["w-2"])
    marks.clear(a)
    assert not marks.path.exists()


def test_the_last_worker_to_close_removes_the_directory(tmp_path: Path) -> None:
    one = RunningMarks(tmp_path / "run" / "1", slots=2)
    two = RunningMarks(tmp_path / "run" / "2", slots=2)
    one.close()
    assert (tmp_path / "run").is_dir()  # the other's marks are still in it
    two.close()
    assert not (tmp_path / "run").exists()


def test_marks_of_supervisors_that_are_gone_are_swept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    dead = subprocess.Popen(["true"])
    dead.wait()
    gone = RunningMarks(marks_path(dead.pid, 11), slots=2)  # left by a killed supervisor
    here = RunningMarks(marks_path(os.getpid(), 12), slots=2)
    assert sweep_marks() == 1
    assert not gone.path.parent.exists() and here.path.exists()
    here.close()


def test_marks_are_not_made_through_a_link(tmp_path: Path) -> None:
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "run").symlink_to(tmp_path / "elsewhere")  # made by someone else, say
    with pytest.raises(PermissionError, match="not a directory of this user"):
        RunningMarks(tmp_path / "run" / "123", slots=3)
    assert list((tmp_path / "elsewhere").iterdir()) == []


def test_only_a_supervised_process_marks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BATCHYARD_PARENT_PID", raising=False)
    assert RunningMarks.for_supervised(4) is None


def _message(job: dict[str, object]) -> bytes:
    return orjson.dumps({"queue_name": "q", "args": [job], "options": {"eta": 1.5}})


def test_deaths_are_counted_in_the_stored_messages(redis_url: str) -> None:
    r = redis.Redis.from_url(redis_url)
    r.hset("ns:q.msgs", "m1", _message({"key": "a", "enqueued_at": 1.25}))
    r.hset("ns:q.msgs", "m2", _message({"key": "b", "deaths": 1}))
    marks = [("ns:q.msgs", "m1"), ("ns:q.msgs", "m2"), ("ns:q.msgs", "acked-meanwhile")]
    # Given a worker that died running three messages, one acked (deleted) since,
    assert count_deaths(r, marks) == 2
    assert count_deaths(r, marks[:1]) == 1
    # each stored one has one more death per count, the rest of it unchanged,
    m1 = orjson.loads(r.hget("ns:q.msgs", "m1") or b"")
    assert m1 == {
        "queue_name": "q",
        "args": [{"key": "a", "enqueued_at": 1.25, "deaths": 2}],
        "options": {"eta": 1.5},
    }
    assert orjson.loads(r.hget("ns:q.msgs", "m2") or b"")["args"][0]["deaths"] == 2
    # and a deleted one is not written back.
    assert not r.hexists("ns:q.msgs", "acked-meanwhile")
    r.close()


def test_a_dead_process_s_worker_ids_are_expired_if_still_beating(redis_url: str) -> None:
    r = redis.Redis.from_url(redis_url)
    r.zadd("ns:__heartbeats__", {"w-dead": 1_000_000, "w-alive": 2_000_000})
    dead = Marks([], "ns:__heartbeats__", ["w-dead", "w-gone"])
    assert expire_owners(r, dead) == 1
    # its own id now looks dead to maintenance; an id already dropped is not added back
    assert r.zrange("ns:__heartbeats__", 0, -1, withscores=True) == [
        (b"w-dead", 0.0),
        (b"w-alive", 2_000_000.0),
    ]
    assert expire_owners(r, Marks([], "", ["w-alive"])) == 0  # no key noted: nothing
    r.close()


def test_a_message_deleted_between_read_and_write_is_not_written_back(redis_url: str) -> None:
    r = redis.Redis.from_url(redis_url)
    r.hset("ns:q.msgs", "m1", _message({"key": "a"}))
    real_hget = r.hget

    def hget_then_ack(key: str, field: str) -> bytes | None:
        raw = real_hget(key, field)
        r.hdel(key, field)  # acked by the worker it was redelivered to
        return raw  # type: ignore[return-value]

    r.hget = hget_then_ack  # type: ignore[method-assign, assignment]
    assert count_deaths(r, [("ns:q.msgs", "m1")]) == 0
    assert not r.hexists("ns:q.msgs", "m1")
    r.close()


def test_a_job_run_alone_waits_for_the_others_and_holds_back_new_ones() -> None:
    async def scenario() -> list[str]:
        solo, log = Solo(), []

        async def job(name: str, alone: bool, hold: asyncio.Event) -> None:
            await solo.enter(alone)
            log.append(f"+{name}")
            await hold.wait()
            log.append(f"-{name}")
            solo.leave(alone)

        holds = {n: asyncio.Event() for n in "abcd"}
        tasks = [asyncio.create_task(job("a", False, holds["a"]))]
        tasks.append(asyncio.create_task(job("b", False, holds["b"])))
        await asyncio.sleep(0)
        tasks.append(asyncio.create_task(job("c", True, holds["c"])))  # waits for a and b
        await asyncio.sleep(0)
        tasks.append(asyncio.create_task(job("d", False, holds["d"])))  # waits for c
        for name in "abcd":
            holds[name].set()
            for _ in range(5):
                await asyncio.sleep(0)
        await asyncio.gather(*tasks)
        return log

    assert asyncio.run(scenario()) == ["+a", "+b", "-a", "-b", "+c", "-c", "+d", "-d"]


def test_a_job_cancelled_while_waiting_to_run_alone_lets_the_others_go() -> None:
    async def scenario() -> bool:
        solo = Solo()
        await solo.enter(False)  # one job runs
        alone = asyncio.create_task(solo.enter(True))
        await asyncio.sleep(0)
        other = asyncio.create_task(solo.enter(False))  # held back behind the alone one
        await asyncio.sleep(0)
        assert solo.blocked and not other.done()
        alone.cancel()
        await asyncio.sleep(0)
        await asyncio.wait_for(other, 1)
        return solo.running == 2 and not solo.blocked

    assert asyncio.run(scenario())
