"""Results in Redis: how `write_results.lua` takes them, and how the result stream reads back.

Each batch's results are a stream (`Keys.stream`) of entries `k` = result key, `r` = the
`LLMResult` JSON; the done hash (`Keys.done`) maps each key to the stream id of its current
result, so a result superseded by `retry --failed` is recognised and skipped.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from schemas.result import LLMResult
from workers.protocol.blob import SEP
from workers.protocol.keys import Keys
from workers.protocol.scripts import ScriptCall

#: (result key, result, counts towards the batch total, dead letter or b"").
ResultItem = tuple[str, LLMResult, bool, bytes]
#: (stream id, result key, result).
ResultEntry = tuple[str, str, LLMResult]
#: (stream id, result key, the result's JSON as stored): for writers that only re-encode it.
RawEntry = tuple[str, str, bytes]
_Entry = TypeVar("_Entry", ResultEntry, RawEntry)


def write_call(keys: Keys, ttl_s: int, items: Sequence[ResultItem]) -> ScriptCall:
    """Keyword arguments of one `write_results.lua` call storing `items` (of any batches).

    One blob instead of five arguments per result (packing those cost workers more CPU than
    the script itself), then each result's JSON as an argument of its own. A result's counts
    go as one word, its ledger: the script adds up each distinct ledger once per call, and
    most of a call's results have the same (#22).
    """
    batches: dict[str, bytes] = {}
    script_keys: list[str] = []
    parts: list[bytes] = []
    data: list[bytes] = []
    for key, result, count, dead in items:
        index = batches.get(result.batch_id)
        if index is None:
            index = batches[result.batch_id] = b"%d" % len(batches)
            script_keys += keys.results(result.batch_id)
        usage = result.usage
        cost = result.cost_usd
        ledger = b"%s %d %d %d %d %d" % (
            result.status.encode(),
            count,
            usage.input_tokens,
            usage.output_tokens,
            usage.cached_tokens,
            usage.reasoning_tokens,
        )
        data.append(result.json_bytes())
        parts += (
            index,
            key.encode(),
            dead,
            repr(cost).encode() if cost and cost > 0 else b"",
            ledger,
        )
    blob = SEP.join(parts) + SEP if parts else b""
    return {"keys": script_keys, "args": [ttl_s, time.time(), blob, *data]}


def read_stream(raw: Any, after: str) -> tuple[list[ResultEntry], str]:
    """Entries of an XREAD/XRANGE-style reply, and the cursor after them (`after` if none)."""
    return _read(raw, after, entry)


def read_raw_stream(raw: Any, after: str) -> tuple[list[RawEntry], str]:
    """`read_stream` without parsing the results (`LLMResult` JSON bytes)."""
    return _read(raw, after, raw_entry)


def _read(
    raw: Any, after: str, make: Callable[[bytes | str, dict[bytes, bytes]], _Entry]
) -> tuple[list[_Entry], str]:
    out: list[_Entry] = []
    for _stream, items in raw or []:
        out += [make(sid, fields) for sid, fields in items]
    return out, (out[-1][0] if out else after)


def raw_entry(sid: bytes | str, fields: dict[bytes, bytes]) -> RawEntry:
    """One stream entry as (stream id, result key, the result's stored JSON)."""
    stream_id = sid.decode() if isinstance(sid, bytes) else sid
    return stream_id, fields[b"k"].decode(), fields[b"r"]


def entry(sid: bytes | str, fields: dict[bytes, bytes]) -> ResultEntry:
    """One stream entry as (stream id, result key, result)."""
    stream_id, key, raw = raw_entry(sid, fields)
    return stream_id, key, LLMResult.model_validate_json(raw)


def current(entries: list[_Entry], markers: Sequence[Any]) -> list[_Entry]:
    """The entries that are still their key's stored result (`markers`: HMGET of the done
    hash for the entries' keys)."""
    return [
        e for e, m in zip(entries, markers, strict=True) if m is not None and m.decode() == e[0]
    ]
