"""The endpoints-and-routes file: YAML or TOML, `${VAR}` expanded, validated with clear errors."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    model_validator,
)

from schemas.request import RouteHop, Tier
from schemas.structured import StructuredDefaults

ENDPOINT_NAME = r"^[A-Za-z0-9_.-]{1,100}$"
_ABSURD = 10**9
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class ConfigError(ValueError):
    """A user error in the config: one line, naming the endpoint and field, no traceback."""


class BreakerConfig(BaseModel):
    """When an endpoint counts as down, and how it is probed back."""

    model_config = ConfigDict(extra="forbid")

    window_s: int = Field(default=30, ge=1, le=3600)
    min_failures: int = Field(default=5, ge=1, le=100_000)
    #: No verdict on a rate from fewer calls than this in the window.
    min_calls: int = Field(default=20, ge=1, le=1_000_000)
    failure_rate: float = Field(default=0.5, gt=0, le=1)
    open_s: float = Field(default=30.0, gt=0, le=86_400)
    probe_timeout_s: float = Field(default=60.0, gt=0, le=3600)


Action = Literal["retry", "failover", "fail"]

#: What a worker does with each error class when the config says nothing.
DEFAULT_ACTIONS: dict[str, Action] = {
    "rate_limited": "retry",
    "overloaded": "retry",
    "timeout": "retry",
    "server_error": "retry",
    "protocol_error": "retry",
    "auth_error": "failover",
    "insufficient_quota": "failover",
    "context_too_long": "failover",
    "circuit_open": "failover",
    "unsupported": "failover",
    "invalid_request": "fail",
    "content_filtered": "fail",
}


class PolicyConfig(BaseModel):
    """Retry and failover policy; one attempt budget per request across all endpoints."""

    model_config = ConfigDict(extra="forbid")

    retries_per_endpoint: int = Field(default=2, ge=0, le=20)
    max_attempts: int = Field(default=8, ge=1, le=100)
    backoff_base_s: float = Field(default=0.5, gt=0, le=60)
    backoff_max_s: float = Field(default=30.0, gt=0, le=3600)
    max_retry_wait_s: float = Field(default=60.0, ge=0, le=3600)
    #: How long a request whose batch has no completion window may wait out backpressure
    #: (429, overload, timeouts, an open breaker) before it fails; with a window, the window.
    max_backpressure_s: float = Field(default=86_400.0, gt=0, le=30 * 86_400)
    on: dict[str, Action] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _known_codes(self) -> PolicyConfig:
        unknown = set(self.on) - set(DEFAULT_ACTIONS)
        if unknown:
            known = ", ".join(sorted(DEFAULT_ACTIONS))
            raise ValueError(f"unknown error class {sorted(unknown)[0]!r} (known: {known})")
        return self

    def action(self, code: str) -> Action:
        """The configured action for an error code (unknown codes fail)."""
        return self.on.get(code) or DEFAULT_ACTIONS.get(code, "fail")


class ModelLimits(BaseModel):
    """Optional limits of one model on an endpoint (on top of the endpoint's own)."""

    model_config = ConfigDict(extra="forbid")

    rpm: int | None = Field(default=None, gt=0, le=_ABSURD)
    tpm: int | None = Field(default=None, gt=0, le=_ABSURD)
    max_concurrency: int | None = Field(default=None, gt=0, le=100_000)


class Price(BaseModel):
    """USD per million tokens."""

    model_config = ConfigDict(extra="forbid")

    input: float = Field(ge=0, le=100_000)
    output: float = Field(ge=0, le=100_000)
    cached_input: float | None = Field(default=None, ge=0, le=100_000)

    def cost(self, input_tokens: int, output_tokens: int, cached_tokens: int = 0) -> float:
        """Cost of one call; cached input tokens at their own price when one is set."""
        cached = min(cached_tokens, input_tokens)
        cached_price = self.input if self.cached_input is None else self.cached_input
        usd = (input_tokens - cached) * self.input + cached * cached_price
        return (usd + output_tokens * self.output) / 1_000_000


#: Providers whose vendors have a batch API (`mode: batch`).
BATCH_PROVIDERS = ("openai", "anthropic")


class BatchConfig(BaseModel):
    """How a `mode: batch` endpoint groups requests into vendor batches (OpenAI Batch API,
    Anthropic Message Batches) and when it gives up on them."""

    model_config = ConfigDict(extra="forbid")

    #: Requests per vendor batch (OpenAI allows 50,000 per file, Anthropic 100,000).
    max_requests: int = Field(default=50_000, ge=1, le=100_000)
    #: Bytes per vendor batch (OpenAI: 200 MB per file, Anthropic: 256 MB).
    max_bytes: int = Field(default=200 * 1024**2, ge=1024, le=256 * 1024**2)
    #: Send what has arrived once the oldest pending request has waited this long.
    max_wait_s: float = Field(default=60.0, gt=0, le=86_400)
    #: How often open vendor batches are polled.
    poll_s: float = Field(default=30.0, gt=0, le=3600)
    #: Cancel at the vendor and fall back live this long before the request's deadline;
    #: None: 25% of the request's window, at least 10 minutes.
    fallback_margin_s: float | None = Field(default=None, ge=0, le=30 * 86_400)
    #: Share of the live price the vendor charges for batch lines.
    discount: float = Field(default=0.5, ge=0, le=1)
    #: How long the poller's lease lives without renewal (another process then takes over).
    lease_s: float = Field(default=30.0, gt=0, le=3600)


class EndpointConfig(BaseModel):
    """Settings common to every endpoint; provider-specific keys are checked by the provider."""

    model_config = ConfigDict(extra="allow")

    provider: str = Field(min_length=1)
    model: str | None = None
    models: dict[Tier, str] = Field(default_factory=dict)
    api_key: SecretStr | None = None
    rpm: int | None = Field(default=None, gt=0, le=_ABSURD)
    tpm: int | None = Field(default=None, gt=0, le=_ABSURD)
    max_concurrency: int | None = Field(default=None, gt=0, le=100_000)
    timeout_s: float = Field(default=120.0, gt=0, le=3600)
    #: Longest answer body read, in MiB, as sent and once gzip/deflate is decoded: a longer one
    #: fails its call (`protocol_error`) as soon as that is known, unread. A server that
    #: sends gigabytes, or a few kilobytes of gzip that decode to them, would otherwise be
    #: held whole in a worker's memory. The default leaves room for the largest embeddings
    #: answers (2,048 inputs of 3,072 floats are ~70 MB of JSON).
    max_response_mb: float = Field(default=256.0, gt=0, le=16_384)
    breaker: BreakerConfig = Field(default_factory=BreakerConfig)
    max_context_tokens: int | None = Field(default=None, gt=0, le=100_000_000)
    model_limits: dict[str, ModelLimits] = Field(default_factory=dict)
    #: Price per model; "*" applies to models not listed.
    prices: dict[str, Price] = Field(default_factory=dict)
    #: How the provider counts a request against TPM: "reserved" (prompt + max_tokens, as
    #: OpenAI documents; real usage may only add) or "used" (unused output is refunded, as
    #: Anthropic does for output tokens).
    token_accounting: Literal["reserved", "used"] = "reserved"
    #: Longest wait for rate-limit capacity inside a worker; longer waits requeue with a delay.
    max_inline_wait_s: float = Field(default=5.0, ge=0, le=600)
    #: Defaults for structured requests routed here first (refine rounds, constrained decoding).
    structured: StructuredDefaults = Field(default_factory=StructuredDefaults)
    #: `mode: batch` (providers openai and anthropic): requests are sent through the vendor's
    #: Batch API at `batch.discount` of the price, with a live fall back before their deadline.
    #: (`mode` of other providers is theirs, e.g. the mock's `mode: gmn`.)
    batch: BatchConfig = Field(default_factory=BatchConfig)

    @model_validator(mode="after")
    def _batch_mode(self) -> EndpointConfig:
        mode = (self.model_extra or {}).get("mode")
        if self.provider in BATCH_PROVIDERS and mode not in (None, "live", "batch"):
            raise ValueError(f"mode must be 'live' or 'batch', not {mode!r}")
        return self

    @property
    def offloaded(self) -> bool:
        """True for `mode: batch` on a provider whose vendor has a batch API."""
        return self.provider in BATCH_PROVIDERS and (self.model_extra or {}).get("mode") == "batch"

    def provider_options(self) -> dict[str, Any]:
        """The keys this model does not know: validated by the provider's own `Config`."""
        options = dict(self.model_extra or {})
        if self.provider in BATCH_PROVIDERS:
            options.pop("mode", None)
        return options

    def price_for(self, model: str | None) -> Price | None:
        """The price of a model on this endpoint, if the config has one."""
        return self.prices.get(model or "") or self.prices.get("*")

    def model_for(self, tier: Tier | None) -> str | None:
        """The model this endpoint uses for a tier, falling back to its default model."""
        if tier is not None and tier in self.models:
            return self.models[tier]
        return self.model or self.models.get("basic")


def _compiles(pattern: str) -> str:
    try:
        re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"invalid regular expression {pattern!r}: {exc}") from None
    return pattern


#: A regular expression in a config, checked when the config is read, not at its first use.
Regex = Annotated[str, AfterValidator(_compiles)]


class TierRule(BaseModel):
    """Picks `advanced` for requests that name neither a tier nor a model, when the prompt
    matches `pattern` or is at least `min_chars` long; `basic` otherwise."""

    model_config = ConfigDict(extra="forbid")

    pattern: Regex | None = None
    min_chars: int | None = Field(default=None, ge=1)

    def pick(self, prompt: str) -> Tier:
        """The tier for a prompt."""
        if self.min_chars is not None and len(prompt) >= self.min_chars:
            return "advanced"
        if self.pattern is not None and re.search(self.pattern, prompt):
            return "advanced"
        return "basic"


class AppConfig(BaseModel):
    """Endpoints by name and named routes (ordered endpoint lists)."""

    model_config = ConfigDict(extra="forbid")

    endpoints: dict[str, EndpointConfig] = Field(min_length=1)
    routes: dict[str, list[RouteHop]] = Field(default_factory=dict)
    policy: PolicyConfig = Field(default_factory=PolicyConfig)
    #: How requests without a tier or model choose one; None: each endpoint's default model.
    tier_rule: TierRule | None = None
    #: Request hooks by entry-point name, in the order they run, with their options.
    plugins: dict[str, dict[str, Any] | None] = Field(default_factory=dict)
    #: The HTTP gateway's own section (keys, limits); read and validated by the gateway.
    gateway: dict[str, Any] | None = None

    @model_validator(mode="before")
    @classmethod
    def _hops(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("routes"), dict):
            data = dict(data)
            data["routes"] = {
                name: [{"endpoint": h} if isinstance(h, str) else h for h in hops]
                if isinstance(hops, list)
                else hops
                for name, hops in data["routes"].items()
            }
        return data

    @model_validator(mode="after")
    def _check(self) -> AppConfig:
        for name in self.endpoints:
            if not re.match(ENDPOINT_NAME, name):
                raise ValueError(f"endpoint name {name!r} may use only letters, digits, _ . -")
        if "default" not in self.routes:
            self.routes["default"] = [RouteHop(endpoint=next(iter(self.endpoints)))]
        for route, hops in self.routes.items():
            if not hops:
                raise ValueError(f"route {route!r} is empty")
            for hop in hops:
                if hop.endpoint not in self.endpoints:
                    known = ", ".join(sorted(self.endpoints))
                    raise ValueError(
                        f"route {route!r} names unknown endpoint {hop.endpoint!r} (known: {known})"
                    )
        return self

    def route(self, name: str = "default") -> list[RouteHop]:
        """A named route; unknown names are an error naming the known ones."""
        try:
            return self.routes[name]
        except KeyError:
            raise ConfigError(f"unknown route {name!r} (known: {', '.join(self.routes)})") from None


DEFAULT_CONFIG: dict[str, Any] = {
    "endpoints": {"mock": {"provider": "mock"}},
    "routes": {"default": ["mock"]},
}


def expand_env(value: Any, path: str = "") -> Any:
    """Expand `${VAR}` and `${VAR:-default}` in every string; a missing VAR names its field."""
    if isinstance(value, dict):
        return {k: expand_env(v, f"{path}.{k}" if path else str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [expand_env(v, f"{path}.{i}") for i, v in enumerate(value)]
    if not isinstance(value, str):
        return value

    def sub(match: re.Match[str]) -> str:
        var, default = match.group(1), match.group(2)
        found = os.environ.get(var)
        if found is None or (found == "" and default is not None):
            if default is None:
                raise ConfigError(
                    f"{path}: environment variable {var} is not set "
                    f"(export it, or write ${{{var}:-default}})"
                )
            return default
        return found

    return _VAR.sub(sub, value)


def parse_config(data: Any, source: str = "config") -> AppConfig:
    """Validate a config mapping, turning pydantic's report into one readable line."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: must be a mapping with 'endpoints' (and optional 'routes')")
    data = expand_env(data)
    try:
        return AppConfig.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = [str(p) for p in err["loc"]]
        msg = err["msg"].removeprefix("Value error, ")
        if len(loc) >= 2 and loc[0] == "endpoints":
            where = f"endpoint {loc[1]!r}" + (f", field {'.'.join(loc[2:])!r}" if loc[2:] else "")
        elif loc:
            where = f"field {'.'.join(loc)!r}"
        else:
            where = "config"
        raise ConfigError(f"{source}: {where}: {msg}") from None


def load_config(path: Path | None = None) -> AppConfig:
    """Read the config file given, else ./batchyard.yaml|.toml, else the mock-only default."""
    if path is None:
        for candidate in (Path("batchyard.yaml"), Path("batchyard.yml"), Path("batchyard.toml")):
            if candidate.is_file():
                path = candidate
                break
        else:
            return parse_config(DEFAULT_CONFIG, "default config")
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config ({exc.strerror})") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    try:
        data = _parse(text, path)
    except RecursionError:
        raise ConfigError(f"{path}: nested too deeply to be a config") from None
    try:
        return parse_config(data, str(path))
    except RecursionError:
        raise ConfigError(f"{path}: nested too deeply to be a config") from None


def _parse(text: str, path: Path) -> Any:
    """The file's data: TOML by its suffix, else YAML (JSON is YAML). Each parser is imported
    here, when a file needs it: a run on the default config needs neither, and importing
    PyYAML was ~10 ms of CPU in each of its processes (#22)."""
    if path.suffix == ".toml":
        import tomllib

        try:
            return tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid toml: {exc}") from None
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid {path.suffix.lstrip('.')}: {exc}") from None
