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

from workers.protocol.scripts import Lua, ScriptCall, register

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


class SyncDriver:
    """Runs operations on a synchronous connection (threads for `Spawn`)."""

    def __init__(self, client: redis.Redis) -> None:
        self.redis = client
        self.lua: dict[Lua, Script] = {lua: register(client, lua) for lua in Lua}

    def run(self, operation: Operation[T]) -> T:
        """Run an operation to its end and return its result."""
        pool: ThreadPoolExecutor | None = None
        reply: Any = None
        failed = False
        try:
            while True:
                try:
                    step = operation.throw(reply) if failed else operation.send(reply)
                except StopIteration as done:
                    return done.value  # type: ignore[no-any-return]
                try:
                    if isinstance(step, Spawn):
                        pool = pool or ThreadPoolExecutor(1, thread_name_prefix="batchyard-io")
                        reply, failed = pool.submit(self.run, step.operation), False
                    elif isinstance(step, Join):
                        future: Future[Any] = step.handle
                        reply, failed = future.result(), False
                    else:
                        reply, failed = self._do(step), False
                except Exception as exc:
                    reply, failed = exc, True
        finally:
            operation.close()
            if pool is not None:
                pool.shutdown()

    def _do(self, step: Cmd | Eval | Pipe | Sleep) -> Any:
        if isinstance(step, Cmd):
            return getattr(self.redis, step.name)(*step.args, **step.kwargs)
        if isinstance(step, Eval):
            return self.lua[step.script](**step.call)
        if isinstance(step, Sleep):
            time.sleep(step.seconds)
            return None
        batch = self.redis.pipeline(transaction=False)
        for op in step.ops:
            if isinstance(op, Cmd):
                getattr(batch, op.name)(*op.args, **op.kwargs)
            else:
                self.lua[op.script](**op.call, client=batch)
        return batch.execute()


class AsyncDriver:
    """Runs operations on an asyncio connection (tasks for `Spawn`)."""

    def __init__(self, client: aioredis.Redis) -> None:
        self.redis = client
        self.lua: dict[Lua, AsyncScript] = {lua: register(client, lua) for lua in Lua}

    async def run(self, operation: Operation[T]) -> T:
        """Run an operation to its end and return its result."""
        spawned: list[asyncio.Task[Any]] = []
        reply: Any = None
        failed = False
        try:
            while True:
                try:
                    step = operation.throw(reply) if failed else operation.send(reply)
                except StopIteration as done:
                    return done.value  # type: ignore[no-any-return]
                try:
                    if isinstance(step, Spawn):
                        task = asyncio.create_task(self.run(step.operation))
                        spawned.append(task)
                        reply, failed = task, False
                    elif isinstance(step, Join):
                        reply, failed = await step.handle, False
                    else:
                        reply, failed = await self._do(step), False
                except Exception as exc:
                    reply, failed = exc, True
        finally:
            operation.close()
            # A spawned step still running when the operation failed ends before we do, and
            # its own failure (the operation's is the one raised) is not left unretrieved.
            if pending := [task for task in spawned if not task.done()]:
                await asyncio.wait(pending)
            for task in spawned:
                if not task.cancelled():
                    task.exception()

    async def _do(self, step: Cmd | Eval | Pipe | Sleep) -> Any:
        if isinstance(step, Cmd):
            return await getattr(self.redis, step.name)(*step.args, **step.kwargs)
        if isinstance(step, Eval):
            return await self.lua[step.script](**step.call)
        if isinstance(step, Sleep):
            await asyncio.sleep(step.seconds)
            return None
        batch = self.redis.pipeline(transaction=False)
        for op in step.ops:
            if isinstance(op, Cmd):
                getattr(batch, op.name)(*op.args, **op.kwargs)
            else:
                await self.lua[op.script](**op.call, client=batch)
        return await batch.execute()
