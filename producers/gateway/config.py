"""The gateway's settings: API keys (hashed) and limits, from the config file's `gateway:`
section and `BATCHYARD_GATEWAY_*` environment variables (which win)."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

import orjson
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from schemas.config import DEFAULT_CONFIG, AppConfig, ConfigError, expand_env, parse_config

#: `read` may view, `write` may also create and cancel, `operator` may also see every
#: endpoint's name, models, limits and calls on the providers page (shared by all tenants).
Role = Literal["write", "read", "operator"]
_NAME = r"^[A-Za-z0-9_.@-]{1,64}$"
_CANDIDATES = ("batchyard.yaml", "batchyard.yml", "batchyard.toml")


class ApiKey(BaseModel):
    """One bearer key, stored as the sha256 hex digest of the token, never the token itself."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=_NAME)
    sha256: str
    role: Role = "write"
    #: Whose files and batches the key works on; keys sharing an owner see the same objects
    #: (a read-only dashboard key next to a service's write key). Defaults to `name`.
    owner: str | None = Field(default=None, pattern=_NAME)
    rate_per_min: int | None = Field(default=None, ge=1)

    @field_validator("sha256")
    @classmethod
    def _digest(cls, value: str) -> str:
        value = value.strip().lower()
        if len(value) != 64 or any(c not in "0123456789abcdef" for c in value):
            raise ValueError("must be the sha256 hex digest of the token (64 hex digits)")
        return value

    @property
    def tenant(self) -> str:
        """The owner recorded on the objects this key creates."""
        return self.owner or self.name


def _default_storage_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "batchyard" / "gateway-files"


def parse_keys(value: Any) -> Any:
    """`name:sha256[:role[:owner]],...` or a JSON list, as `BATCHYARD_GATEWAY_KEYS` holds them."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    if text.startswith("["):
        return orjson.loads(text)
    out = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        fields = item.split(":")
        if len(fields) < 2 or len(fields) > 4:
            raise ValueError(f"key entry {fields[0]!r}: write name:sha256[:role[:owner]]")
        entry = dict(zip(("name", "sha256", "role", "owner"), fields, strict=False))
        out.append(entry)
    return out


class GatewayConfig(BaseSettings):
    """API keys and limits of `batchyard gateway`."""

    model_config = SettingsConfigDict(env_prefix="BATCHYARD_GATEWAY_", extra="forbid")

    keys: Annotated[list[ApiKey], NoDecode] = Field(default_factory=list)
    #: Largest accepted upload (OpenAI's limit is 200 MB).
    max_upload_mib: int = Field(default=200, ge=1, le=1_000_000)
    #: Most lines an uploaded file may have (413 beyond).
    max_file_lines: int = Field(default=1_000_000, ge=1)
    #: Most requests one batch may have: more fails the batch (`too_many_tasks`), as OpenAI does.
    max_batch_lines: int = Field(default=50_000, ge=1)
    max_line_kib: int = Field(default=1024, ge=1, le=1_000_000)
    #: Largest JSON body of POST /v1/batches and /v1/jobs.
    max_request_kib: int = Field(default=1024, ge=1, le=1_000_000)
    #: Requests per minute per key (a key's own `rate_per_min` overrides it), over a sliding
    #: 60 s (GCRA: a burst of up to this many, then one every 60/rpm s); 0 = no limit.
    rate_per_min: int = Field(default=6000, ge=0)
    #: Queued messages (all endpoints) above which new work gets 429; 0 = no backpressure.
    max_queue_depth: int = Field(default=100_000, ge=0)
    retry_after_s: int = Field(default=5, ge=1, le=3600)
    max_wait_s: float = Field(default=60.0, ge=0, le=3600)
    #: Requests that may wait for a result at once (each holds a Redis connection).
    max_waiters: int = Field(default=2000, ge=1, le=100_000)
    #: Where uploads larger than `small_file_kib` are written.
    storage_dir: Path = Field(default_factory=_default_storage_dir)
    small_file_kib: int = Field(default=1024, ge=0, le=65_536)
    #: Line errors kept on a failed batch (the rest are counted in one last entry).
    max_batch_errors: int = Field(default=100, ge=1, le=10_000)
    #: Lifetime of a dashboard login (the session cookie), from the moment of logging in.
    session_ttl_s: int = Field(default=8 * 3600, ge=60, le=30 * 86400)
    #: Dashboard login attempts allowed per client address in any 60 s.
    login_per_min: int = Field(default=20, ge=1, le=10_000)
    #: A request body with no byte for this long is cut (408), as is one not complete
    #: after `body_total_timeout_s`; both also apply to authenticated requests.
    body_idle_timeout_s: float = Field(default=30.0, gt=0, le=3600)
    body_total_timeout_s: float = Field(default=300.0, gt=0, le=86_400)
    #: Event streams one key may hold open on one gateway process (429 beyond).
    max_streams_per_key: int = Field(default=20, ge=1, le=10_000)
    #: Event streams look for changes at most this often: a smaller `interval` is raised to it.
    min_stream_interval_s: float = Field(default=0.5, ge=0.05, le=60)

    @field_validator("keys", mode="before")
    @classmethod
    def _keys(cls, value: Any) -> Any:
        return parse_keys(value)

    @field_validator("keys")
    @classmethod
    def _unique(cls, value: list[ApiKey]) -> list[ApiKey]:
        names = [k.name for k in value]
        dup = next((n for n in names if names.count(n) > 1), None)
        if dup is not None:
            raise ValueError(f"key name {dup!r} is used twice")
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """The environment overrides the file, as for every other batchyard setting."""
        return env_settings, init_settings

    @property
    def max_upload_bytes(self) -> int:
        """`max_upload_mib` in bytes."""
        return self.max_upload_mib * 1024 * 1024


def parse_gateway(section: Any, source: str = "config") -> GatewayConfig:
    """Validate the `gateway:` section (plus environment) into one readable error line."""
    if section is None:
        section = {}
    if not isinstance(section, dict):
        raise ConfigError(f"{source}: 'gateway' must be a mapping")
    try:
        return GatewayConfig(**expand_env(section, "gateway"))
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        raise ConfigError(f"{source}: gateway.{loc}: {msg}") from None
    except ValueError as exc:  # a malformed BATCHYARD_GATEWAY_KEYS
        raise ConfigError(f"BATCHYARD_GATEWAY_KEYS: {exc}") from None


def _read(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config ({exc.strerror})") from None
    try:
        return tomllib.loads(text) if path.suffix == ".toml" else yaml.safe_load(text)
    except (yaml.YAMLError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: not valid {path.suffix.lstrip('.')}: {exc}") from None


def load_gateway_config(path: Path | None = None) -> tuple[AppConfig, GatewayConfig]:
    """Endpoints/routes and the gateway section of one file; no file means the mock default."""
    if path is None:
        path = next((Path(c) for c in _CANDIDATES if Path(c).is_file()), None)
    if path is None:
        return parse_config(DEFAULT_CONFIG, "default config"), parse_gateway({}, "environment")
    data = _read(path)
    section = data.pop("gateway", None) if isinstance(data, dict) else None
    return parse_config(data, str(path)), parse_gateway(section, str(path))
