"""The one error tree every adapter translates into; nothing vendor-specific leaks above it.

A class names what went wrong, not what to do about it: whether a worker retries, fails
over or gives up on each `code` is the policy's call (`schemas.config.DEFAULT_ACTIONS`,
overridable per deployment under `policy.on`).
"""

from __future__ import annotations

from typing import Any

from providers.headers import RateLimits


class ProviderError(Exception):
    """Base of all provider failures. `code` is the stable name stored in results."""

    code = "provider_error"

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        #: The provider's JSON error body, when it answered with one (`HTTPProvider.failure`).
        self.body: dict[str, Any] | None = None


class RateLimited(ProviderError):
    """429: the endpoint asks us to slow down, optionally saying for how long."""

    code = "rate_limited"

    def __init__(
        self,
        message: str,
        *,
        retry_after_s: float | None = None,
        limits: RateLimits | None = None,
        status: int | None = 429,
    ) -> None:
        super().__init__(message, status=status)
        self.retry_after_s = retry_after_s
        #: Limits the server advertised with the 429, for the shared limiter.
        self.limits = limits or RateLimits()


class Overloaded(ProviderError):
    """The provider is temporarily out of capacity (Anthropic 529, OpenAI 503 'overloaded')."""

    code = "overloaded"


class Timeout(ProviderError):
    """No (complete) answer within the configured time."""

    code = "timeout"


class ServerError(ProviderError):
    """5xx or a dropped connection."""

    code = "server_error"


class ProtocolError(ProviderError):
    """The provider answered something that is not its documented wire format."""

    code = "protocol_error"


class ContextTooLong(ProviderError):
    """The prompt plus max_tokens does not fit this endpoint's model: try a larger one."""

    code = "context_too_long"


class InvalidRequest(ProviderError):
    """The request itself is wrong; no endpoint will accept it."""

    code = "invalid_request"


class AuthError(ProviderError):
    """Bad or missing credentials, or no quota left: this endpoint cannot serve at all."""

    code = "auth_error"


class QuotaExceeded(AuthError):
    """The account has no quota left (OpenAI `insufficient_quota`)."""

    code = "insufficient_quota"


class ContentFiltered(ProviderError):
    """The provider refused the content."""

    code = "content_filtered"


class Unsupported(ProviderError):
    """The endpoint cannot serve this request (its kind, or a feature it uses, has no
    equivalent there): skipped before any call, the next hop is tried."""

    code = "unsupported"


#: Every error an endpoint's call can end in, by its `code` (Unsupported is found before one).
BY_CODE: dict[str, type[ProviderError]] = {
    cls.code: cls
    for cls in (
        RateLimited,
        Overloaded,
        Timeout,
        ServerError,
        ProtocolError,
        ContextTooLong,
        InvalidRequest,
        AuthError,
        QuotaExceeded,
        ContentFiltered,
    )
}
