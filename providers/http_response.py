"""A response as the adapters read it, and what a vendor's failure means: the error a status
or an error body stands for, and the one for a transport or decoding failure."""

from __future__ import annotations

import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from multidict import CIMultiDict, CIMultiDictProxy
from pydantic import ValidationError

from providers.errors import (
    AuthError,
    ContextTooLong,
    InvalidRequest,
    Overloaded,
    ProtocolError,
    ProviderError,
    QuotaExceeded,
    RateLimited,
    ServerError,
    Timeout,
)
from providers.headers import rate_limits, retry_after_s
from providers.wire_parse import BodyCutShort, BodyTooLarge

_DETAIL_CHARS = 300
MIB = 1 << 20
_HTML_TITLE = re.compile(r"<title>(.*?)</title>", re.IGNORECASE | re.DOTALL)


def rate_limited(message: str, headers: Mapping[str, str], status: int = 429) -> RateLimited:
    """The RateLimited error for a response, with its Retry-After and advertised limits."""
    return RateLimited(
        message, retry_after_s=retry_after_s(headers), limits=rate_limits(headers), status=status
    )


@dataclass(frozen=True, slots=True)
class HTTPResponse:
    """A fully read response: the adapters never hold an aiohttp object past `send`."""

    status: int
    #: aiohttp's proxy, or the lean client's own, fresh per response (no proxy per call, #22).
    headers: CIMultiDict[str] | CIMultiDictProxy[str]
    body: bytes

    @property
    def ok(self) -> bool:
        """2xx."""
        return 200 <= self.status < 300


@dataclass(frozen=True, slots=True)
class VendorError:
    """The error fields every vendor body has some spelling of."""

    type: str | None
    code: str | None
    message: str


def vendor_error(body: bytes) -> VendorError:
    """Read an error body in any of the vendor shapes (OpenAI, Anthropic, Ollama, vLLM, HTML)."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        text = body.decode("utf-8", "replace")
        title = _HTML_TITLE.search(text)
        return VendorError(None, None, _snippet(title.group(1) if title else text))
    err = data.get("error", data) if isinstance(data, dict) else data
    if isinstance(err, str):
        return VendorError(None, None, _snippet(err))
    if not isinstance(err, dict):
        return VendorError(None, None, _snippet(str(data)))
    details = err.get("details")
    code = err.get("code")
    if code is None and isinstance(details, dict):
        code = details.get("error_code")
    kind = err.get("type")
    return VendorError(
        type=str(kind) if kind is not None else None,
        code=str(code) if code is not None else None,
        message=_snippet(str(err.get("message") or err.get("detail") or "")),
    )


def _snippet(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _DETAIL_CHARS else text[: _DETAIL_CHARS - 1] + "…"


def error_for_status(message: str, resp: HTTPResponse) -> ProviderError:
    """The error a status means when the vendor's body says nothing more specific."""
    status = resp.status
    if status == 429:
        return rate_limited(message, resp.headers)
    if status in (401, 403, 407):
        return AuthError(message, status=status)
    if status == 402:
        return QuotaExceeded(message, status=status)
    if status == 408:
        return Timeout(message, status=status)
    if status == 413:
        return ContextTooLong(message, status=status)
    if status in (503, 529):
        return Overloaded(message, status=status)
    if status >= 500 or status == 409:
        return ServerError(message, status=status)
    if status >= 400:
        return InvalidRequest(message, status=status)
    return ProtocolError(f"{message} (unexpected status; check base_url)", status=status)


class _Translated:
    """`translate_errors`' context manager: a class, not a generator, since it wraps every call
    (a generator-based one cost a generator and its helper per use, twice per request)."""

    __slots__ = ("endpoint", "timeout_s")

    def __init__(self, endpoint: str, timeout_s: float | None) -> None:
        self.endpoint = endpoint
        self.timeout_s = timeout_s

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, _: Any) -> None:
        if exc is None or isinstance(exc, ProviderError):
            return
        translated = _translated(exc, f"endpoint {self.endpoint!r}", self.timeout_s)
        if translated is not None:
            raise translated from None


def _translated(exc: BaseException, where: str, timeout_s: float | None) -> ProviderError | None:
    """The project's error for an aiohttp, socket or decoding failure; None for any other."""
    if isinstance(exc, TimeoutError):  # aiohttp.ServerTimeoutError included; must precede OSError
        limit = f" within {timeout_s:g}s" if timeout_s is not None else ""
        return Timeout(f"{where}: no complete answer{limit}")
    # aiohttp's errors only where it is imported: a worker whose calls all go over `wire`
    # never imports it, so none of its errors can be raised there
    client = sys.modules.get("aiohttp")
    cut = (client.ClientPayloadError, BodyCutShort) if client is not None else BodyCutShort
    if isinstance(exc, cut):
        return ServerError(f"{where}: response body cut short ({_snippet(str(exc))})")
    if isinstance(exc, BodyTooLarge):
        mib = exc.limit / MIB
        return ProtocolError(
            f"{where}: response body longer than max_response_mb ({mib:g} MiB); not read further"
        )
    failed = (client.ClientError, OSError) if client is not None else OSError
    if isinstance(exc, failed):
        detail = f"{type(exc).__name__}: {_snippet(str(exc))}"
        return ServerError(f"{where}: connection failed ({detail})")
    if isinstance(exc, orjson.JSONDecodeError):
        return ProtocolError(f"{where}: response is not valid JSON ({exc})")
    if isinstance(exc, ValidationError):
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first["loc"]) or "body"
        return ProtocolError(f"{where}: unexpected response shape at {loc}: {first['msg']}")
    return None


def translate_errors(endpoint: str, timeout_s: float | None = None) -> _Translated:
    """Turn aiohttp, socket and decoding failures into the project's error tree, in one place.

    Raised `from None`: aiohttp exceptions can hold request headers, so none travels upward.
    """
    return _Translated(endpoint, timeout_s)
