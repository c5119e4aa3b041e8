"""Provider adapters: one ABC, one error tree, plugins discovered through entry points."""

from providers.base import Capabilities, Provider, ProviderConfig, ProviderResponse
from providers.errors import (
    AuthError,
    ContentFiltered,
    ContextTooLong,
    InvalidRequest,
    Overloaded,
    ProtocolError,
    ProviderError,
    RateLimited,
    ServerError,
    Timeout,
)

__all__ = [
    "AuthError",
    "Capabilities",
    "ContentFiltered",
    "ContextTooLong",
    "InvalidRequest",
    "Overloaded",
    "ProtocolError",
    "Provider",
    "ProviderConfig",
    "ProviderError",
    "ProviderResponse",
    "RateLimited",
    "ServerError",
    "Timeout",
]
