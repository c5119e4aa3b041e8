"""An endpoint's shared health as stored by `health_record.lua`, read back for people.

The health hash (`Keys.health`) holds the breaker `state` and `open_until`, lifetime
`total_ok`/`total_fail`, and per-second buckets `ok:<s>`, `fail:<s>`, `tok:<s>`; the latency
list (`Keys.latency`) the newest call latencies in ms.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass
class HealthSnapshot:
    """An endpoint's health for `batchyard providers` and the dashboard."""

    endpoint: str
    state: str
    open_until: float
    ok_window: int
    fail_window: int
    tokens_window: int
    total_ok: int
    total_fail: int
    p50_ms: float | None
    p95_ms: float | None

    @property
    def success_rate(self) -> float | None:
        """Share of successes in the window, None without calls."""
        n = self.ok_window + self.fail_window
        return self.ok_window / n if n else None


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def read_snapshot(
    raw: Mapping[Any, Any], latencies: Sequence[Any], endpoint: str, window_s: int
) -> HealthSnapshot:
    """Build a snapshot from HGETALL of the health hash and LRANGE of the latency list."""
    f = {_text(k): _text(v) for k, v in raw.items()}
    now = int(time.time())
    recent = range(now - window_s + 1, now + 1)
    values = [float(x) for x in latencies]
    state = f.get("state", "closed")
    open_until = float(f.get("open_until", 0) or 0)
    if state == "open" and time.time() >= open_until:
        state = "half_open"  # the next request will probe
    return HealthSnapshot(
        endpoint=endpoint,
        state=state,
        open_until=open_until,
        ok_window=sum(int(f.get(f"ok:{s}", 0)) for s in recent),
        fail_window=sum(int(f.get(f"fail:{s}", 0)) for s in recent),
        tokens_window=sum(int(f.get(f"tok:{s}", 0)) for s in recent),
        total_ok=int(f.get("total_ok", 0)),
        total_fail=int(f.get("total_fail", 0)),
        p50_ms=_percentile(values, 0.5),
        p95_ms=_percentile(values, 0.95),
    )
