"""Writes each request's one result with the atomic `write_results.lua` script.

Writes are coalesced: while one script call is in flight, results that finish meanwhile wait
and go together in the next call. At low load every result is written at once; under load a
single round trip carries hundreds, which is where most of a worker's Redis time went. The
same `Coalescer` pipelines the pre-call result checks and the rate limiter's script calls.

Those go through `exchange`, not redis-py's pipeline: its pipeline asks SCRIPT EXISTS for its
scripts before every execute (a second round trip per flush) and wraps each one in a stack of
bookkeeping; a worker at 0 ms paid more for that than for the commands (#22). Commands are
packed by hiredis in one C call each: redis-py encodes every argument in Python first, which
for the limiter's ~20-argument script calls was ~10% of a worker's CPU.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from importlib import import_module
from typing import TYPE_CHECKING, Any, Generic, TypeVar, cast

import redis
import redis.asyncio as aioredis
from redis.asyncio.connection import AbstractConnection
from redis.commands.core import AsyncScript, Script
from redis.connection import Connection
from redis.exceptions import NoScriptError, ResponseError
from redis.typing import EncodableT

from schemas.result import LLMResult
from workers.protocol.batch_record import WORKER_FIELDS, BatchState
from workers.protocol.keys import Keys
from workers.protocol.results import ResultItem, write_call
from workers.protocol.scripts import Lua, ScriptCall, batch_args, batched, register

if TYPE_CHECKING:
    from workers.batch_watch import BatchWatch

T = TypeVar("T")
log = logging.getLogger("batchyard.worker")

#: Results per script call; bounds the Lua run time (Redis is single-threaded).
MAX_PER_CALL = 500

#: One Redis command as sent: its name, then its arguments.
Command = tuple[EncodableT, ...]

pack_command: Callable[[Command], bytes] | None
try:  # by name: a venv installed before hiredis became a dependency still type-checks
    pack_command = cast(Callable[[Command], bytes], import_module("hiredis").pack_command)
except ImportError:  # without it redis-py packs
    pack_command = None


async def exchange(
    client: aioredis.Redis, commands: list[Command], conn: AbstractConnection | None = None
) -> list[Any]:
    """Send `commands` in one write on one pooled connection and read every reply; a
    command Redis refused answers with its `ResponseError` (the others still ran). `conn`:
    a connection of the client's pool that the caller keeps (`Coalescer._connection`), used
    instead of one taken from the pool and given back.

    A connection error is retried as redis-py retries a pipeline (the client's `Retry`,
    reconnecting first), and otherwise raised.
    """
    if conn is not None:
        return await _retried(conn, commands)
    pool = client.connection_pool
    conn = await pool.get_connection()  # type: ignore[no-untyped-call]
    try:
        return await _retried(conn, commands)
    finally:
        await pool.release(conn)


async def _retried(conn: AbstractConnection, commands: list[Command]) -> list[Any]:
    return list(
        await conn.retry.call_with_retry(
            lambda: _exchange(conn, commands), lambda _error: conn.disconnect()
        )
    )


async def evalsha(
    client: aioredis.Redis,
    calls: list[tuple[AsyncScript, ScriptCall]],
    conn: AbstractConnection | None = None,
) -> list[Any]:
    """Run each script call in one `exchange` (on `conn`, if given); a call Redis refused
    with NOSCRIPT (the script's first use, or Redis restarted) did not run, so it runs again
    once loaded.

    redis-py's `Script.__call__` costs a worker more per call than this exchange (#22).
    """

    def command(script: AsyncScript, call: ScriptCall) -> Command:
        return ("EVALSHA", script.sha, len(call["keys"]), *call["keys"], *call["args"])

    replies = await exchange(client, [command(*c) for c in calls], conn)
    missing = [j for j, reply in enumerate(replies) if isinstance(reply, NoScriptError)]
    if missing:
        for j in missing:
            calls[j][0].sha = await client.script_load(calls[j][0].script)
        again = await exchange(client, [command(*calls[j]) for j in missing], conn)
        for j, reply in zip(missing, again, strict=True):
            replies[j] = reply
    return replies


def _packed(conn: AbstractConnection | Connection, commands: list[Command]) -> list[bytes]:
    """`commands` as one write: hiredis packs each (where installed), else redis-py does."""
    if pack_command is None:
        return list(conn.pack_commands(commands))
    return [b"".join([pack_command(c) for c in commands])]


async def _exchange(conn: AbstractConnection, commands: list[Command]) -> list[Any]:
    await conn.send_packed_command(_packed(conn, commands))
    replies: list[Any] = []
    try:
        for _ in commands:
            try:
                replies.append(await conn.read_response())
            except ResponseError as exc:
                replies.append(exc)
    except BaseException:
        # Replies still on the socket would reach the connection's next user.
        await conn.disconnect(nowait=True)
        raise
    return replies


def exchange_sync(client: redis.Redis, commands: list[Command]) -> list[Any]:
    """`exchange` on a blocking client: the consumer threads' fetch and fetch-time check.

    redis-py encodes each argument of a command in Python before hiredis packs it, and its
    pipeline and `Script.__call__` add their own steps: for a 50-message fetch's HMGET of
    the results, 1.5 us per message here against 0.5 us for one packed write (#22).
    """
    pool = client.connection_pool
    conn = pool.get_connection()
    try:
        return list(
            conn.retry.call_with_retry(
                lambda: _exchange_sync(conn, commands),
                lambda _error: conn.disconnect(),  # type: ignore[no-untyped-call]
            )
        )
    finally:
        pool.release(conn)


def evalsha_sync(client: redis.Redis, script: Script, keys: list[str], args: list[Any]) -> Any:
    """The reply of one script call through `exchange_sync`; a call refused with NOSCRIPT
    (the script's first use, or Redis restarted) runs again once the script is loaded."""
    command: Command = ("EVALSHA", script.sha, len(keys), *keys, *args)
    (reply,) = exchange_sync(client, [command])
    if isinstance(reply, NoScriptError):
        script.sha = client.script_load(script.script)
        (reply,) = exchange_sync(client, [("EVALSHA", script.sha, *command[2:])])
    if isinstance(reply, ResponseError):
        raise reply
    return reply


def _exchange_sync(conn: Connection, commands: list[Command]) -> list[Any]:
    conn.send_packed_command(_packed(conn, commands))  # type: ignore[no-untyped-call]
    replies: list[Any] = []
    try:
        for _ in commands:
            try:
                replies.append(conn.read_response())
            except ResponseError as exc:
                replies.append(exc)
    except BaseException:
        # Replies still on the socket would reach the connection's next user.
        conn.disconnect()  # type: ignore[no-untyped-call]
        raise
    return replies


class Coalescer(Generic[T]):
    """Requests made while one Redis call is in flight wait and go together in the next
    call (at most `MAX_PER_CALL` each); every waiter gets its own answer or the failure.
    A posted request (`_post`) has no waiter: its failure is logged."""

    def __init__(self) -> None:
        #: Requests not sent yet, each with its waiter's future (None: posted).
        self._pending: list[tuple[T, asyncio.Future[Any] | None]] = []
        self._flusher: asyncio.Task[None] | None = None
        self._conn: AbstractConnection | None = None

    async def _connection(self, client: aioredis.Redis) -> AbstractConnection:
        """This coalescer's own connection of `client`'s pool, taken at its first call and
        kept: its calls run one at a time (one flush at a time), and taking a connection from
        the pool and giving it back cost ~15-40 us of the worker's loop per call (the pool
        checks the socket for stray replies every time, #22). The pool still closes it."""
        if self._conn is None:
            self._conn = await client.connection_pool.get_connection()  # type: ignore[no-untyped-call]
        return self._conn

    async def _send(self, items: list[T]) -> list[Any]:
        raise NotImplementedError

    def _ask(self, item: T) -> asyncio.Future[Any]:
        """A future of `item`'s answer (the reply of its part of the call). A plain function,
        not a coroutine: callers await the future itself, one frame less per request."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue(item, future)
        return future

    def _post(self, item: T) -> None:
        """Send `item` with the next call, its answer unread: nobody waits for it (one future
        and one task wake-up less per request), and a failure is logged, not raised."""
        self._queue(item, None)

    def _queue(self, item: T, future: asyncio.Future[Any] | None) -> None:
        """Add `item` to the next call, and start the flusher if none is running."""
        self._pending.append((item, future))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush())

    async def drain(self) -> None:
        """Wait until everything asked and posted so far has been sent and answered."""
        while self._flusher is not None and not self._flusher.done():
            await asyncio.wait({self._flusher})

    async def _flush(self) -> None:
        while self._pending:
            group = self._pending[:MAX_PER_CALL]
            del self._pending[:MAX_PER_CALL]
            try:
                answers = await self._send([item for item, _ in group])
            except Exception as exc:  # every waiter must learn about the failure
                answers = [exc] * len(group)
            lost: BaseException | None = None
            for (_, future), answer in zip(group, answers, strict=True):
                failed = isinstance(answer, Exception)  # the call's or this item's own
                if future is None:
                    lost = answer if failed else lost
                elif future.done():
                    continue
                elif failed:
                    future.set_exception(answer)
                else:
                    future.set_result(answer)
            if lost is not None:
                log.warning("%s: a posted Redis call failed: %s", type(self).__name__, lost)


class ResultWriter(Coalescer[ResultItem]):
    """Exactly-once result storage on top of at-least-once message delivery."""

    def __init__(self, client: aioredis.Redis, keys: Keys, ttl_s: int) -> None:
        super().__init__()
        self.client = client
        self.keys = keys
        self.ttl_s = ttl_s
        self._script = register(client, Lua.WRITE_RESULTS)

    async def write(self, key: str, result: LLMResult, dead: bytes = b"") -> bool:
        """Store `result` unless one exists for (batch, key); True when this call stored it.

        `dead` is the dead-letter record kept for a failed request, so it can be re-run.
        """
        return bool(await self._ask((key, result, False, dead)))

    async def _send(self, items: list[ResultItem]) -> list[Any]:
        call = write_call(self.keys, self.ttl_s, items)
        conn = await self._connection(self.client)
        (reply,) = await evalsha(self.client, [(self._script, call)], conn)
        if isinstance(reply, ResponseError):
            raise reply
        return list(reply)


class ResultCheck(Coalescer[tuple[str, str]]):
    """Whether (batch, key) already has its result, asked before every provider call.

    Checks coalesce like writes, so a busy worker pays one round trip for many messages
    instead of one each (a round trip per message cost 40% of the 0 ms throughput).
    """

    def __init__(self, client: aioredis.Redis, keys: Keys) -> None:
        super().__init__()
        self.client = client
        self.keys = keys

    async def has(self, batch_id: str, key: str) -> bool:
        """True when the result of `key` in `batch_id` is stored."""
        return bool(await self._ask((batch_id, key)))

    async def _send(self, items: list[tuple[str, str]]) -> list[Any]:
        # One HMGET per batch, not a HEXISTS per item: each reply read is an await with its
        # own timeout, which at 0 ms cost more than the commands. A stored result's field
        # holds its stream id, so "not nil" is HEXISTS's answer.
        groups: dict[str, list[int]] = {}
        for i, (batch_id, _) in enumerate(items):
            groups.setdefault(batch_id, []).append(i)
        commands: list[Command] = [
            ("HMGET", self.keys.done(b), *[items[i][1] for i in at]) for b, at in groups.items()
        ]
        answers: list[Any] = [None] * len(items)
        replies = await exchange(self.client, commands, await self._connection(self.client))
        for at, reply in zip(groups.values(), replies, strict=True):
            if isinstance(reply, ResponseError):
                for i in at:
                    answers[i] = reply
            else:
                for i, value in zip(at, reply, strict=True):
                    answers[i] = value is not None
        return answers


class FetchCheck:
    """Stored-result checks made as messages are fetched, so the executor need not await one.

    The consumer thread calls `fetched` with each fetch's jobs (`on_fetch` of the broker),
    decoded once with their messages, before handing any out: one pipelined HMGET per batch,
    while the messages wait in the prefetch. A (batch, key) found without a result is
    remembered once; `absent` takes it, and the executor then skips its own check. Awaiting
    that check per message put a Redis round trip before every call: a 20 ms endpoint at
    concurrency 32 ran 10-25 % fewer jobs/s than without it (#15 fairness). Whatever is not
    remembered (the check failed, the message came some other way) is checked by
    `ResultCheck` as before; a result stored between fetch and call is still caught by the
    write, which stores only one result per key.

    The same round trip reads the record of each batch whose state the executor's `watch`
    does not hold fresh: the first request of a batch (and the first after each poll
    interval) awaited that read before its call, one round trip more at the start of every
    batch (#22).
    """

    #: More remembered keys than this (messages fetched and never run) are forgotten.
    LIMIT = 100_000

    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self.client = client
        self.keys = keys
        self._absent: set[tuple[str, str]] = set()
        #: The executor's batch states (set once it has started), filled here too.
        self.watch: BatchWatch | None = None

    def fetched(self, jobs: Sequence[Any]) -> None:
        """Check the results of `jobs` (the first arguments of fetched messages, decoded)."""
        groups: dict[str, list[str]] = {}
        for job in jobs:
            try:
                groups.setdefault(job["batch_id"], []).append(job["key"])
            except (LookupError, TypeError):
                continue  # not a job: the executor checks (or rejects) it
        if not groups:
            return
        commands: list[Command] = [
            ("HMGET", self.keys.done(batch_id), *keys) for batch_id, keys in groups.items()
        ]
        watch = self.watch
        stale = [b for b in groups if watch.fresh(b) is None] if watch is not None else []
        commands += [("HMGET", self.keys.batch(b), *WORKER_FIELDS) for b in stale]
        try:
            replies = exchange_sync(self.client, commands)
        except redis.RedisError:
            return  # the executor checks each of them itself
        if watch is not None:
            for batch_id, raw in zip(stale, replies[len(groups) :], strict=True):
                if isinstance(raw, list):
                    watch.remember(batch_id, BatchState.parse(raw))
        if len(self._absent) > self.LIMIT:
            self._absent.clear()
        for (batch_id, keys), reply in zip(groups.items(), replies[: len(groups)], strict=True):
            if isinstance(reply, list):
                self._absent.update(
                    (batch_id, k) for k, v in zip(keys, reply, strict=True) if v is None
                )

    def absent(self, batch_id: str, key: str) -> bool:
        """True (once) when the fetch found no result for `key` of `batch_id`."""
        try:
            self._absent.remove((batch_id, key))
        except KeyError:
            return False
        return True


class ScriptPipe(Coalescer[tuple[Lua, tuple[str, ...], str]]):
    """Script calls made while one flush is in flight go together in the next one, as one
    `batched` EVALSHA per script (each call still runs on its own, in call order within its
    script): the rate limiter's admits and releases cost one round trip per loop turn, and
    one reply each, instead of one per request (#22).

    Scripts run in the order given: the limiter's releases before its admits, so capacity
    given back in a loop turn is there for that turn's admits.
    """

    def __init__(self, client: aioredis.Redis, scripts: Sequence[Lua]) -> None:
        super().__init__()
        self.client = client
        self._batched = {s: client.register_script(batched(s)) for s in scripts}

    def call(self, script: Lua, keys: tuple[str, ...], words: str) -> asyncio.Future[Any]:
        """The reply of `script` run with `keys` and the arguments in `words`, each followed
        by a space (`scripts.batch_args`), as a future to await: a plain function, as
        `Coalescer._ask`, one coroutine less per limiter admission."""
        return self._ask((script, keys, words))

    def post(self, script: Lua, keys: tuple[str, ...], words: str) -> None:
        """`call` without waiting for its reply (`Coalescer._post`); `drain` waits for it."""
        self._post((script, keys, words))

    async def _send(self, items: list[tuple[Lua, tuple[str, ...], str]]) -> list[Any]:
        groups: dict[Lua, list[int]] = {s: [] for s in self._batched}
        for i, (script, _, _) in enumerate(items):
            groups[script].append(i)
        calls = [(self._batched[s], at) for s, at in groups.items() if at]

        replies = await evalsha(
            self.client,
            [(s, batch_args([(items[i][1], items[i][2]) for i in at])) for s, at in calls],
            await self._connection(self.client),
        )
        answers: list[Any] = [None] * len(items)
        for (_, at), reply in zip(calls, replies, strict=True):
            if isinstance(reply, ResponseError):  # the whole call failed
                for i in at:
                    answers[i] = reply
            else:  # a call's own failure is its ResponseError in the list
                for i, answer in zip(at, reply, strict=True):
                    answers[i] = answer
        return answers
