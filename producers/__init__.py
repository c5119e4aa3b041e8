"""Producers: client API, bulk submit, collectors and the CLI. Never imports adapters.

The client loads on first use (PEP 562): importing a light module of this package (the CLI
entry) does not pay for Redis and pydantic.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from producers.client import AsyncClient, Client, SubmitReport

__all__ = ["AsyncClient", "Client", "SubmitReport"]


def __getattr__(name: str) -> Any:
    if name not in __all__:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module("producers.client"), name)
    globals()[name] = value
    return value
