"""Request hooks: see or change requests and responses around every provider call.

Third-party packages register a `Plugin` subclass under the `batchyard.plugins` entry-point
group, exactly as the built-ins (`cache`, `redact`) do, and enable it in the config:

    plugins:
      cache: {ttl_s: 86400}
      redact: {patterns: ["[\\\\w.+-]+@[\\\\w-]+\\\\.[\\\\w.]+"]}
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any, ClassVar

import redis.asyncio as aioredis
from pydantic import BaseModel, ConfigDict, ValidationError

from providers.base import ProviderResponse
from schemas.config import ConfigError
from schemas.request import LLMRequest
from workers.protocol.keys import Keys

GROUP = "batchyard.plugins"


class PluginConfig(BaseModel):
    """Options of a plugin; unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")


@dataclass
class CallContext:
    """One provider call as plugins see it; `request` may be replaced (e.g. redacted)."""

    endpoint: str
    model: str
    request: LLMRequest
    state: dict[str, Any] = field(default_factory=dict)


class Plugin:
    """Base of request hooks; both methods are optional."""

    name: ClassVar[str]
    Config: ClassVar[type[PluginConfig]] = PluginConfig

    def __init__(self, config: PluginConfig, redis: aioredis.Redis, namespace: str) -> None:
        self.config = config
        self.redis = redis
        self.namespace = namespace
        #: Key names under that namespace; a plugin's own keys belong in `Keys` too.
        self.keys = Keys(namespace)

    async def before_call(self, ctx: CallContext) -> ProviderResponse | None:
        """Return a response to answer without calling the provider (and without using any
        rate-limit capacity); return None to go on."""
        return None

    async def after_call(self, ctx: CallContext, response: ProviderResponse) -> ProviderResponse:
        """See or change a provider's response."""
        return response

    async def call_failed(self, ctx: CallContext) -> None:
        """The call raised: release whatever `before_call` holds."""
        return None


def load_plugins(
    configured: dict[str, dict[str, Any] | None], redis: aioredis.Redis, namespace: str
) -> list[Plugin]:
    """Instantiate the configured plugins in config order; unknown names and keys are errors."""
    return [cls(config, redis, namespace) for cls, config in check_plugins(configured)]


def check_plugins(
    configured: dict[str, dict[str, Any] | None],
) -> list[tuple[type[Plugin], PluginConfig]]:
    """Resolve and validate the configured plugins without starting them."""
    if not configured:  # no scan of every installed package's entry points (#22)
        return []
    found = {ep.name: ep for ep in entry_points(group=GROUP)}
    plugins: list[tuple[type[Plugin], PluginConfig]] = []
    for name, options in configured.items():
        if name not in found:
            known = ", ".join(sorted(found)) or "none installed"
            raise ConfigError(f"unknown plugin {name!r} (known: {known})")
        cls = found[name].load()
        if not (isinstance(cls, type) and issubclass(cls, Plugin)):
            raise ConfigError(f"plugin {name!r} is not a batchyard Plugin subclass")
        try:
            config = cls.Config.model_validate(options or {})
        except ValidationError as exc:
            err = exc.errors()[0]
            loc = ".".join(str(p) for p in err["loc"])
            raise ConfigError(f"plugin {name!r}, field {loc!r}: {err['msg']}") from None
        plugins.append((cls, config))
    return plugins
