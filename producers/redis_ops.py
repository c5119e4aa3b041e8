"""Redis I/O as data, so each client operation is written once (sans-I/O, as httpx does).

An operation (`producers.core.ClientCore`'s methods) is a generator: it yields the Redis work
it needs as small values (`Cmd`, `Eval`, `Pipe`, `Sleep`, `Spawn`, `Join`) and receives each
reply. `SyncDriver` runs operations on a `redis.Redis`, `AsyncDriver` on a `redis.asyncio`
connection; `Client` and `AsyncClient` are thin shells over the two drivers.

`Spawn` starts a sub-operation without waiting for it and replies with a handle that `Join`
turns into its result: submission builds the next chunk while Redis runs the previous one
(a thread for the sync driver, a task for the asyncio one).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Generator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

import redis
import redis.asyncio as aioredis
from redis.commands.core import AsyncScript, Script
from redis.exceptions import NoScriptError

from workers.protocol.scripts import Lua, ScriptCall, queue_known, register

T = TypeVar("T")


@dataclass(frozen=True)
class Cmd:
    """One Redis command: `redis.<name>(*args, **kwargs)`; the reply is the command's."""

    name: str
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)


def cmd(name: str, *args: Any, **kwargs: Any) -> Cmd:
    """`Cmd(name, args, kwargs)`, written like the call it stands for."""
    return Cmd(name, args, kwargs)


@dataclass(frozen=True)
class Eval:
    """One Lua script call (`workers.protocol.scripts`); the reply is the script's."""

    script: Lua
    call: ScriptCall


@dataclass(frozen=True)
class Pipe:
    """Commands and script calls in one round trip (no transaction); replies as a list."""

    ops: tuple[Cmd | Eval, ...]


@dataclass(frozen=True)
class Sleep:
    """Wait without holding the event loop (asyncio) or a connection."""

    seconds: float


@dataclass(frozen=True)
class Spawn:
    """Start `operation` without waiting for it; the reply is a handle for `Join`."""

    operation: Operation[Any]


@dataclass(frozen=True)
class Join:
    """Wait for a spawned operation; the reply is its result (or its exception, raised)."""

    handle: Any


Step = Cmd | Eval | Pipe | Sleep | Spawn | Join
Operation = Generator[Step, Any, T]


def pipe(*ops: Cmd | Eval) -> Pipe:
    """`Pipe(ops)`."""
    return Pipe(ops)


class _Stepper:
    """Feeds replies (or errors, raised inside it) back into an operation."""

    def __init__(self, operation: Operation[Any]) -> None:
        self.operation = operation
        self.done, self.result = False, None
        self.step: Step = Sleep(0)
        self.reply(None)

    def reply(self, value: Any) -> None:
        """Send the reply to the current step; `step` is then the next one, unless `done`."""
        self._resume(self.operation.send, value)

    def fail(self, exc: Exception) -> None:
        """Raise the current step's error inside the operation, which may catch it."""
        self._resume(self.operation.throw, exc)

    def _resume(self, resume: Any, value: Any) -> None:
        try:
            self.step = resume(value)
        except StopIteration as stop:
            self.done, self.result = True, stop.value


def _queue(batch: Any, op: Cmd | Eval, lua: dict[Lua, Any], loaded: set[Lua]) -> Any:
    """Queue one command or script call on a pipeline (a script call returns a coroutine on
    an asyncio pipeline, to await before queueing the next).

    A script this driver has run before goes as a bare EVALSHA: through its `Script` object
    redis-py's pipeline asks SCRIPT EXISTS before every execute, one more round trip per
    pipe (a gateway job paid it on each enqueue). Should Redis have lost it since (SCRIPT
    FLUSH, a failover), `_reload` runs the refused calls again once it is loaded."""
    if isinstance(op, Cmd):
        return getattr(batch, op.name)(*op.args, **op.kwargs)
    if op.script in loaded:
        return queue_known(batch, lua[op.script], op.call)
    return lua[op.script](**op.call, client=batch)


def _refused(ops: tuple[Cmd | Eval, ...], replies: list[Any], loaded: set[Lua]) -> list[int]:
    """The positions of script calls Redis did not know (NOSCRIPT), to run again; the
    scripts of the others are known loaded from now on."""
    again = [i for i, r in enumerate(replies) if isinstance(r, NoScriptError)]
    if again:
        loaded.clear()
    else:
        loaded.update(op.script for op in ops if isinstance(op, Eval))
    return again


def _raise_first(replies: list[Any]) -> list[Any]:
    """The replies, or the first error among them raised (as `Pipeline.execute` does)."""
    for reply in replies:
        if isinstance(reply, Exception):
            raise reply
    return replies


class SyncDriver:
    """Runs operations on a synchronous connection (a thread for `Spawn`)."""

    def __init__(self, client: redis.Redis) -> None:
        self.redis = client
        self.lua: dict[Lua, Script] = {lua: register(client, lua) for lua in Lua}
        self.loaded: set[Lua] = set()

    def run(self, operation: Operation[T]) -> T:
        """Run an operation to its end and return its result."""
        with ThreadPoolExecutor(1, thread_name_prefix="batchyard-io") as pool:
            stepper = _Stepper(operation)
            while not stepper.done:
                try:
                    value = self._do(stepper.step, pool)
                except Exception as exc:
                    stepper.fail(exc)
                else:
                    stepper.reply(value)
            return stepper.result  # type: ignore[return-value]

    def _do(self, step: Step, pool: ThreadPoolExecutor) -> Any:
        if isinstance(step, Cmd):
            return getattr(self.redis, step.name)(*step.args, **step.kwargs)
        if isinstance(step, Eval):
            return self.lua[step.script](**step.call)
        if isinstance(step, Pipe):
            batch = self.redis.pipeline(transaction=False)
            for op in step.ops:
                _queue(batch, op, self.lua, self.loaded)
            replies = batch.execute(raise_on_error=False)
            for i in _refused(step.ops, replies, self.loaded):
                replies[i] = self._do(step.ops[i], pool)
            return _raise_first(replies)
        if isinstance(step, Spawn):
            return pool.submit(self.run, step.operation)
        if isinstance(step, Join):
            future: Future[Any] = step.handle
            return future.result()
        time.sleep(step.seconds)
        return None


class AsyncDriver:
    """Runs operations on an asyncio connection (a task for `Spawn`)."""

    def __init__(self, client: aioredis.Redis) -> None:
        self.redis = client
        self.lua: dict[Lua, AsyncScript] = {lua: register(client, lua) for lua in Lua}
        self.loaded: set[Lua] = set()

    async def run(self, operation: Operation[T]) -> T:
        """Run an operation to its end and return its result."""
        spawned: list[asyncio.Task[Any]] = []
        stepper = _Stepper(operation)
        try:
            while not stepper.done:
                try:
                    value = await self._do(stepper.step, spawned)
                except Exception as exc:
                    stepper.fail(exc)
                else:
                    stepper.reply(value)
            return stepper.result  # type: ignore[return-value]
        finally:
            # A spawned step still running when the operation failed ends before we do, and
            # its own failure (the operation's is the one raised) is not left unretrieved.
            if pending := [task for task in spawned if not task.done()]:
                await asyncio.wait(pending)
            for task in spawned:
                if not task.cancelled():
                    task.exception()

    async def _do(self, step: Step, spawned: list[asyncio.Task[Any]]) -> Any:
        if isinstance(step, Cmd):
            return await getattr(self.redis, step.name)(*step.args, **step.kwargs)
        if isinstance(step, Eval):
            return await self.lua[step.script](**step.call)
        if isinstance(step, Pipe):
            batch = self.redis.pipeline(transaction=False)
            for op in step.ops:
                queued = _queue(batch, op, self.lua, self.loaded)
                if isinstance(op, Eval) and op.script not in self.loaded:
                    await queued
            replies = await batch.execute(raise_on_error=False)
            for i in _refused(step.ops, replies, self.loaded):
                replies[i] = await self._do(step.ops[i], spawned)
            return _raise_first(replies)
        if isinstance(step, Spawn):
            spawned.append(asyncio.create_task(self.run(step.operation)))
            return spawned[-1]
        if isinstance(step, Join):
            return await step.handle
        await asyncio.sleep(step.seconds)
        return None
