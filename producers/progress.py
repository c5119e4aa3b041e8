"""Rate and ETA of a batch, for `status` and the progress bar."""

from __future__ import annotations

import time
from dataclasses import dataclass

from schemas.batch import Batch


@dataclass
class Pace:
    """Throughput so far and the time left at that pace."""

    rate_per_s: float
    eta_s: float | None


def pace(batch: Batch, now: float | None = None) -> Pace:
    """Results per second since the batch was created, and the ETA of the rest."""
    end = batch.finished_at or (now or time.time())
    elapsed = max(1e-6, end - batch.created_at)
    done = batch.counts.done
    rate = done / elapsed
    remaining = batch.counts.total - done
    eta = remaining / rate if rate > 0 and not batch.finished else (0.0 if batch.finished else None)
    return Pace(rate, eta)


def describe(batch: Batch) -> str:
    """A one-paragraph human summary of a batch."""
    c = batch.counts
    p = pace(batch)
    eta = "-" if p.eta_s is None else f"{p.eta_s:.0f}s"
    return (
        f"{batch.id}  {batch.status.value}"
        f"{'' if batch.priority == 'normal' else f'  priority {batch.priority}'}\n"
        f"  total {c.total}  succeeded {c.completed}  failed {c.failed} "
        f"(errored {c.errored}, expired {c.expired}, cancelled {c.cancelled})  "
        f"pending {c.total - c.done}\n"
        f"  rate {p.rate_per_s:.1f}/s  eta {eta}"
    )
