"""Finds adapters through the `batchyard.providers` entry-point group — built-ins included."""

from __future__ import annotations

from functools import cache
from importlib.metadata import entry_points

from pydantic import ValidationError

from providers.base import Provider, ProviderConfig
from schemas.config import AppConfig, ConfigError, EndpointConfig

GROUP = "batchyard.providers"


def names() -> list[str]:
    """Names of every installed adapter, without importing any of them."""
    return sorted({ep.name for ep in entry_points(group=GROUP)})


@cache
def provider_class(name: str) -> type[Provider]:
    """The adapter class for a provider name, or a clear error listing the known ones.

    Only the named plugin is imported, so one broken third-party package cannot stop the rest.
    """
    found = [ep for ep in entry_points(group=GROUP) if ep.name == name]
    if not found:
        known = ", ".join(names()) or "none installed"
        raise ConfigError(f"unknown provider {name!r} (known: {known})")
    ep = found[0]
    try:
        cls = ep.load()
    except Exception as exc:
        raise ConfigError(f"provider {name!r} ({ep.value}) failed to import: {exc}") from exc
    if not (isinstance(cls, type) and issubclass(cls, Provider)):
        raise ConfigError(f"provider {name!r} ({ep.value}) is not a batchyard Provider subclass")
    return cls


def endpoint_options(endpoint: str, cfg: EndpointConfig) -> ProviderConfig:
    """Validate an endpoint's provider-specific keys, naming the endpoint and field on error."""
    cls = provider_class(cfg.provider)
    try:
        options = cls.validate_options(cfg.provider_options())
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"])
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            allowed = ", ".join(sorted(cls.Config.model_fields)) or "none"
            msg = f"unknown field for provider {cfg.provider!r} (allowed here: {allowed})"
        raise ConfigError(f"endpoint {endpoint!r}, field {field!r}: {msg}") from None
    if cfg.api_key is None and cls.needs_api_key(options):
        raise ConfigError(
            f"endpoint {endpoint!r}, field 'api_key': required by provider {cfg.provider!r} "
            f"(add api_key: ${{YOUR_KEY_VARIABLE}} to the endpoint)"
        )
    return options


def check_config(config: AppConfig) -> None:
    """Fail at start-up, not at the first request, on any endpoint a provider cannot take."""
    for name, cfg in config.endpoints.items():
        endpoint_options(name, cfg)
