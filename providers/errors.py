"""The one error tree every adapter translates into; nothing vendor-specific leaks above it.

A class names what went wrong, not what to do about it: whether a worker retries, fails
over or gives up on each `code` is the policy's call (`schemas.config.DEFAULT_ACTIONS`,
overridable per deployment under `policy.on`).
"""

from __future__ import annotations

from typing import Any

from providers.headers import RateLimits

#: Every error an endpoint's call can end in, by its `code`: each class joins it where it is
#: declared (except the ones found before a call: Unsupported, the breaker's CircuitOpen).
BY_CODE: dict[str, type[ProviderError]] = {}


class ProviderError(Exception):
    """Base of all provider failures. `code` is the stable name stored in results; a subclass
    names its own in its declaration: `class Overloaded(ProviderError, code="overloaded")`."""

    code = "provider_error"

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        #: The provider's JSON error body, when it answered with one (`HTTPProvider.failure`).
        self.body: dict[str, Any] | None = None

    def __init_subclass__(cls, *, code: str, before_call: bool = False, **kwargs: Any) -> None:
        """Set the subclass's `code` (required: none inherits its parent's by omission) and
        enter it in BY_CODE unless it is found `before_call`."""
        super().__init_subclass__(**kwargs)
        cls.code = code
        if not before_call:
            BY_CODE[code] = cls


class RateLimited(ProviderError, code="rate_limited"):
    """429: the endpoint asks us to slow down, optionally saying for how long."""

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


class Overloaded(ProviderError, code="overloaded"):
    """The provider is temporarily out of capacity (Anthropic 529, OpenAI 503 'overloaded')."""


class Timeout(ProviderError, code="timeout"):
    """No (complete) answer within the configured time."""


class ServerError(ProviderError, code="server_error"):
    """5xx or a dropped connection."""


class ProtocolError(ProviderError, code="protocol_error"):
    """The provider answered something that is not its documented wire format."""


class ContextTooLong(ProviderError, code="context_too_long"):
    """The prompt plus max_tokens does not fit this endpoint's model: try a larger one."""


class InvalidRequest(ProviderError, code="invalid_request"):
    """The request itself is wrong; no endpoint will accept it."""


class AuthError(ProviderError, code="auth_error"):
    """Bad or missing credentials, or no quota left: this endpoint cannot serve at all."""


class QuotaExceeded(AuthError, code="insufficient_quota"):
    """The account has no quota left (OpenAI `insufficient_quota`)."""


class ContentFiltered(ProviderError, code="content_filtered"):
    """The provider refused the content."""


class Unsupported(ProviderError, code="unsupported", before_call=True):
    """The endpoint cannot serve this request (its kind, or a feature it uses, has no
    equivalent there): skipped before any call, the next hop is tried."""
