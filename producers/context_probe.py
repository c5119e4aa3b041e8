"""The context window an OpenAI-compatible server gives each request, as the server reports it:
llama.cpp's `GET /props` (`default_generation_settings.n_ctx`, the context of one slot) or
vLLM's `GET /v1/models` (`max_model_len`). Used when a route's endpoints configure no
`max_context_tokens`, so GMN rounds fit a local server's slots without being told."""

from __future__ import annotations

import logging
import urllib.error
import urllib.request
from typing import Any

import orjson

from schemas.config import AppConfig
from schemas.request import RouteHop

log = logging.getLogger(__name__)

TIMEOUT_S = 3.0


def _positive(value: Any) -> int | None:
    return value if isinstance(value, int) and value > 0 else None


def served_context(base_url: str, timeout_s: float = TIMEOUT_S) -> int | None:
    """What the server at `base_url` (its OpenAI base, e.g. `http://host:8080/v1`) says one
    request may hold, or None when it says nothing (or cannot be reached)."""
    base = base_url.rstrip("/")
    root = base[: -len("/v1")] if base.endswith("/v1") else base
    props = _get(f"{root}/props", timeout_s)
    settings = props.get("default_generation_settings") if isinstance(props, dict) else None
    found = _positive(settings.get("n_ctx")) if isinstance(settings, dict) else None
    if found is not None:
        return found
    models = _get(f"{base}/models", timeout_s)
    data = models.get("data") if isinstance(models, dict) else None
    lengths = [
        n
        for m in (data if isinstance(data, list) else [])
        if isinstance(m, dict) and (n := _positive(m.get("max_model_len"))) is not None
    ]
    return min(lengths) if lengths else None


def _get(url: str, timeout_s: float) -> Any:
    """The JSON a GET answers with, or None (any error: the server just says nothing)."""
    if not url.startswith(("http://", "https://")):
        return None
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp:  # noqa: S310 (checked above)
            return orjson.loads(resp.read())
    except (urllib.error.URLError, OSError, ValueError) as exc:
        log.info("no context size from %s: %s", url, exc)
        return None


def route_context(config: AppConfig, route: list[RouteHop]) -> int | None:
    """The smallest context the route's OpenAI-compatible endpoints report; None if none does."""
    found = []
    for hop in route:
        endpoint = config.endpoints.get(hop.endpoint)
        if endpoint is None or endpoint.provider != "openai":
            continue
        base = endpoint.provider_options().get("base_url")
        size = served_context(str(base)) if base else None
        if size is not None:
            found.append(size)
    return min(found) if found else None
