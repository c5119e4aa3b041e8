"""The Lua scripts (`lua/*.lua`): read once, registered on any sync or asyncio connection.

Every script takes every key it touches through KEYS (so Redis Cluster with hash tags stays
possible); ARGV carries only data. A line `-- include: <name>` pulls in `lua/lib/<name>.lua`,
the helpers several scripts share. Each script's header says its KEYS, ARGV and reply.
"""

from __future__ import annotations

import re
from enum import StrEnum
from functools import cache
from importlib.resources import files
from typing import TypedDict, overload

import redis
import redis.asyncio as aioredis
from redis.commands.core import AsyncScript, Script
from redis.typing import EncodableT

_INCLUDE = re.compile(r"^-- include: (\w+)$", re.MULTILINE)


class Lua(StrEnum):
    """The scripts, by file name."""

    ENQUEUE = "enqueue"
    RETRY_FAILED = "retry_failed"
    WRITE_RESULTS = "write_results"
    CANCEL = "cancel"
    SEAL = "seal"
    HEALTH_RECORD = "health_record"
    HEALTH_ADMIT = "health_admit"
    LIMIT_ADMIT = "limit_admit"
    LIMIT_RELEASE = "limit_release"
    LIMIT_PAUSE = "limit_pause"
    RATE_ADMIT = "rate_admit"
    MOVE_PHASE = "move_phase"


class ScriptCall(TypedDict):
    """The keyword arguments of one script call: `script(**call)`."""

    keys: list[str]
    args: list[EncodableT]


@cache
def source(script: Lua) -> str:
    """The text of a script with its includes expanded."""
    folder = files(__package__).joinpath("lua")
    text = folder.joinpath(f"{script.value}.lua").read_text()
    return _INCLUDE.sub(lambda m: folder.joinpath("lib", f"{m[1]}.lua").read_text(), text)


@overload
def register(client: aioredis.Redis, script: Lua) -> AsyncScript: ...
@overload
def register(client: redis.Redis, script: Lua) -> Script: ...
def register(client: redis.Redis | aioredis.Redis, script: Lua) -> Script | AsyncScript:
    """A callable script on `client` (EVALSHA, loading it on first use)."""
    return client.register_script(source(script))
