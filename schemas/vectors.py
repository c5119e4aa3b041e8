"""Embedding vectors kept compact in Redis and written back as OpenAI writes them.

A float vector of 1,536 dimensions is ~30 kB as JSON decimals and 8 kB as base64 float32 —
OpenAI's own `encoding_format: "base64"` (little-endian float32, what its SDK requests and
decodes with `array("f")`). Embedding models compute in float32, so nothing is lost.
"""

from __future__ import annotations

import base64
import sys
from array import array
from typing import Any, Literal

VectorFormat = Literal["float", "base64"]

_SWAP = sys.byteorder != "little"


def encode(vector: list[float]) -> str:
    """A float vector as base64 little-endian float32."""
    packed = array("f", vector)
    if _SWAP:
        packed.byteswap()
    return base64.b64encode(packed.tobytes()).decode()


def decode(data: str) -> list[float]:
    """The floats of a base64 float32 vector (Python floats, as OpenAI's SDK returns them)."""
    packed = array("f", base64.b64decode(data))
    if _SWAP:
        packed.byteswap()
    return packed.tolist()


def pack(body: dict[str, Any]) -> tuple[dict[str, Any], VectorFormat | None]:
    """An embeddings body with every float vector base64-encoded, and the format the provider
    answered in (None when the body holds no vectors)."""
    data = body.get("data")
    if not isinstance(data, list) or not data:
        return body, None
    fmt: VectorFormat = "base64"
    items = []
    for item in data:
        vector = item.get("embedding") if isinstance(item, dict) else None
        if isinstance(vector, list):
            fmt = "float"
            item = {**item, "embedding": encode(vector)}
        items.append(item)
    return {**body, "data": items}, fmt


def unpack(body: dict[str, Any]) -> dict[str, Any]:
    """A packed embeddings body with float lists again, as a float answer was received."""
    data = body.get("data")
    if not isinstance(data, list):
        return body
    items = [
        {**item, "embedding": decode(item["embedding"])}
        if isinstance(item, dict) and isinstance(item.get("embedding"), str)
        else item
        for item in data
    ]
    return {**body, "data": items}
