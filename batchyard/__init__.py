"""batchyard: batch LLM jobs on Redis queues. Re-exports the public API.

The names load on first use (PEP 562), so the `batchyard` command, which lives in this package,
starts without importing the client, Redis and pydantic (see `batchyard.launch`).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from producers.client import AsyncClient, Client, SubmitReport
    from schemas import Batch, BatchStatus, LLMRequest, LLMResult, Message, RouteHop, Usage

_SOURCES = {
    "AsyncClient": "producers.client",
    "Client": "producers.client",
    "SubmitReport": "producers.client",
    "Batch": "schemas",
    "BatchStatus": "schemas",
    "LLMRequest": "schemas",
    "LLMResult": "schemas",
    "Message": "schemas",
    "RouteHop": "schemas",
    "Usage": "schemas",
}

__all__ = [
    "AsyncClient",
    "Batch",
    "BatchStatus",
    "Client",
    "LLMRequest",
    "LLMResult",
    "Message",
    "RouteHop",
    "SubmitReport",
    "Usage",
]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    source = _SOURCES.get(name)
    if source is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(source), name)
    globals()[name] = value
    return value
