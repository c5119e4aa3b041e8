"""What the workers learned of a provider's buckets (`lua/lib/learned.lua`), for display."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from workers.protocol.keys import glob_escape

#: The state-hash fields of the request bucket, then of the token bucket.
FIELDS = (
    "lr_lim",
    "lr_rate",
    "lr_lvl",
    "lr_at",
    "lt_lim",
    "lt_rate",
    "lt_lvl",
    "lt_at",
)


@dataclass(frozen=True, slots=True)
class LearnedBucket:
    """One provider bucket as the answers described it: its limit, what is left now (by our
    count), and the seconds until it is full again at the refill rate it announced."""

    limit: int
    remaining: int
    full_in_s: float


def _bucket(raw: Sequence[bytes | str | None], now_ms: float) -> LearnedBucket | None:
    try:
        lim, rate, lvl, at = (float(v) for v in raw if v is not None)
    except ValueError:  # absent fields (fewer than four values), or garbage
        return None
    level = min(lim, lvl + max(0.0, now_ms - at) * rate)
    full_in = (lim - level) / rate / 1000 if rate > 0 else 0.0
    return LearnedBucket(int(lim), max(0, int(level)), round(full_in, 1))


def learned(
    raw: Sequence[bytes | str | None], now_ms: float
) -> tuple[LearnedBucket | None, LearnedBucket | None]:
    """(requests, tokens) from an `HMGET` of `FIELDS`; None where nothing was learned."""
    return _bucket(raw[:4], now_ms), _bucket(raw[4:8], now_ms)


@dataclass(frozen=True, slots=True)
class LearnedScope:
    """The provider's buckets for one model of an endpoint (where OpenAI and Anthropic set
    their limits), as the answers described them."""

    model: str
    requests: LearnedBucket | None
    tokens: LearnedBucket | None


#: Most model scopes of one endpoint that are read for display (bounds a page's cost).
MAX_SCOPES = 20


def scan_pattern(model_prefix: str) -> str:
    """A SCAN pattern for the state hashes under `model_prefix` (glob characters escaped)."""
    return glob_escape(model_prefix) + "*"


def state_keys(found: Iterable[bytes | str], model_prefix: str) -> list[str]:
    """The model scopes' state hashes among keys a scan found (not their leases, pause or
    window keys), sorted, at most `MAX_SCOPES`."""
    names = (k.decode() if isinstance(k, bytes) else k for k in found)
    suffixes = (":leases", ":pause", ":window")
    keys = (k for k in names if k.startswith(model_prefix) and not k.endswith(suffixes))
    return sorted(set(keys))[:MAX_SCOPES]


def show(bucket: LearnedBucket | None) -> str:
    """'412/600, full in 18.8s', or '-'."""
    if bucket is None:
        return "-"
    return f"{bucket.remaining:,}/{bucket.limit:,}, full in {bucket.full_in_s:g}s"
