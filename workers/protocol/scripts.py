"""The Lua scripts (`lua/*.lua`): read once, registered on any sync or asyncio connection.

Every script takes every key it touches through KEYS (so Redis Cluster with hash tags stays
possible); ARGV carries only data. A line `-- include: <name>` pulls in `lua/lib/<name>.lua`,
the helpers several scripts share. Each script's header says its KEYS, ARGV and reply.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from enum import StrEnum
from functools import cache
from importlib.resources import files
from typing import Any, TypedDict, overload

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
    LIMIT_RESERVE = "limit_reserve"
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


@cache
def _parts(script: Lua) -> tuple[str, str]:
    """The text of a script's includes, and its own text without the include lines."""
    folder = files(__package__).joinpath("lua")
    text = folder.joinpath(f"{script.value}.lua").read_text()
    names = _INCLUDE.findall(text)
    libs = "".join(folder.joinpath("lib", f"{name}.lua").read_text() for name in names)
    return libs, _INCLUDE.sub("", text)


#: `batched(script)`: one EVALSHA running `script` once per call it packs. `make` builds the
#: script's includes (their functions and tables) once per EVALSHA, not once per call (2.3 us
#: of Redis CPU per admit and release), so they must keep no state of a call's own (only
#: lib/expire's TTLs, which are the batch's); the script's own text becomes the body of the
#: function it returns, `one`, which points `KEYS` and `ARGV` (locals the includes see too) at
#: each call's own. ARGV[1] is every call's arguments in one string (`batch_args`), in runs of
#: consecutive calls with the same keys: per run a head line, "k n m\n" (the index of its first
#: key in KEYS, its key count, its number of calls), then per call a line, "\n"-terminated, of
#: " "-terminated words, its arguments (an empty word is an empty argument). The lines are
#: read with plain finds: a pattern's character class cost Redis's Lua ~90 instructions a
#: character, and keys written once per run need no compare per call (#22). KEYS holds each
#: call's keys, once per distinct tuple of keys: a loop turn's calls for one endpoint and
#: model share theirs. Replies are the calls' replies in order; a call that raised answers
#: with its error (the calls before it kept their effects, as separate EVALSHAs would have).
#: `make` gets the batch's key TTLs as its `...` (lib/expire): they are set once, after the
#: last call.
#:
#: An include may define `group_calls(keys, calls, m)`: it gets each run of m >= 2
#: consecutive calls with the same keys, as their unsplit argument words (`split(words)` makes
#: a call's ARGV), and answers for all of them at once, with the replies running them one by
#: one would give, or nil, before touching anything, when it cannot (then they run one by
#: one). Should it raise, every call of the run answers with that error. lib/admit_group and
#: lib/release_group: a loop turn's admits or releases of one endpoint and model read their
#: scopes once, not once per request (#22), and read each call's words with one string.match:
#: splitting every call's ~20 words into a table was half of their Redis CPU.
_BATCHED = """local function split(words)
  local argv, i = {}, 0
  for w in string.gmatch(words, '([^ ]*) ') do
    i = i + 1
    argv[i] = w
  end
  return argv
end
local function make(...)
local KEYS, ARGV
local group_calls
%s
return function(keys, argv)
KEYS, ARGV = keys, argv
%s
end, group_calls
end
local ttls = {}
local one, group_calls = make(ttls)
local out, n = {}, 0
local function answer(ok, reply)
  n = n + 1
  if ok then
    out[n] = reply
  else
    out[n] = {err = type(reply) == 'table' and reply.err or tostring(reply)}
  end
end
local run_keys, run, m = nil, {}, 0
local function flush_run()
  local ok, replies = false, nil
  if group_calls and m > 1 then
    ok, replies = pcall(group_calls, run_keys, run, m)
    if not ok then
      for _ = 1, m do answer(false, replies) end
      run, m = {}, 0
      return
    end
  end
  if replies then
    for j = 1, m do out[n + j] = replies[j] end
    n = n + m
  else
    for j = 1, m do answer(pcall(one, run_keys, split(run[j]))) end
  end
  run, m = {}, 0
end
local lines, at = ARGV[1], 1
while true do
  local stop = string.find(lines, '\\n', at, true)
  if not stop then break end
  local first, nk, calls = string.match(lines, '^(%%d+) (%%d+) (%%d+)', at)
  run_keys, at = {}, stop + 1
  for j = 1, tonumber(nk) do run_keys[j] = KEYS[tonumber(first) + j] end
  for j = 1, tonumber(calls) do
    stop = string.find(lines, '\\n', at, true)
    run[j] = string.sub(lines, at, stop - 1)
    at = stop + 1
  end
  m = tonumber(calls)
  flush_run()
end
for key, ms in pairs(ttls) do redis.call('pexpire', key, ms) end
return out
"""


@cache
def batched(script: Lua) -> str:
    """`script` run once per packed call in a single script call (see `_BATCHED`): a
    worker's limiter admits and releases every request of a loop turn with one EVALSHA
    each, one reply to read instead of one per request (#22)."""
    return _BATCHED % _parts(script)


def batch_args(calls: Iterable[tuple[tuple[str, ...], str]]) -> ScriptCall:
    """The keys and arguments of one `batched` call packing `calls`: (keys, arguments) each,
    the arguments as one string of words, each followed by a space (numbers and ids: no
    word holds a space or a newline). One string for the whole batch, not ~20 arguments a
    call: packing those was 2.4-3.7 % of a worker's loop (#22)."""
    keys: list[str] = []
    heads: dict[tuple[str, ...], str] = {}
    lines: list[str] = []
    last: tuple[str, ...] | None = None
    head, at = "", 0  # the run's head, and where its head line goes in `lines`
    for call_keys, words in calls:
        if call_keys is not last:  # a turn's calls mostly share one tuple: no hash of it
            last = call_keys
            found = heads.get(call_keys)
            if found is None:
                found = heads[call_keys] = f"{len(keys)} {len(call_keys)} "
                keys += call_keys
            if found is not head:  # a new run
                if head:
                    lines[at] = f"{head}{len(lines) - at - 1}\n"
                head, at = found, len(lines)
                lines.append("")
        lines.append(f"{words}\n")
    if head:
        lines[at] = f"{head}{len(lines) - at - 1}\n"
    return {"keys": keys, "args": ["".join(lines)]}


@overload
def register(client: aioredis.Redis, script: Lua) -> AsyncScript: ...
@overload
def register(client: redis.Redis, script: Lua) -> Script: ...
def register(client: redis.Redis | aioredis.Redis, script: Lua) -> Script | AsyncScript:
    """A callable script on `client` (EVALSHA, loading it on first use)."""
    return client.register_script(source(script))


def queue_known(pipeline: Any, script: Script | AsyncScript, call: ScriptCall) -> Any:
    """Queue a call of a script Redis is known to hold on `pipeline` as a bare EVALSHA:
    through the `Script` object, redis-py's pipeline asks SCRIPT EXISTS before each execute."""
    keys = call["keys"]
    return pipeline.evalsha(script.sha, len(keys), *keys, *call["args"])
