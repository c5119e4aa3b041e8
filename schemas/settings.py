"""Process settings read once at start-up from the environment."""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Everything a producer or worker reads from `BATCHYARD_*` / `REDIS_URL`."""

    model_config = SettingsConfigDict(env_prefix="BATCHYARD_", extra="ignore")

    redis_url: str | None = Field(
        default=None, validation_alias=AliasChoices("BATCHYARD_REDIS_URL", "REDIS_URL")
    )
    config: Path | None = None
    namespace: str = Field(default="batchyard", pattern=r"^[A-Za-z0-9_-]+$")
    result_ttl_s: int = Field(default=7 * 86400, ge=60)
    heartbeat_timeout_ms: int = Field(default=15_000, ge=1000)
    maintenance_interval_s: float = Field(default=5.0, gt=0)
    #: How long a starting worker waits for Redis before exiting (its supervisor retries).
    redis_wait_s: float = Field(default=300.0, ge=0, le=86_400)
    cancel_poll_s: float = Field(default=1.0, gt=0, le=60)
    #: Longest pause of an idle queue's consumer between polls. Producers' enqueues wake
    #: idle workers at once; this bounds the wait for what they do not announce (failover
    #: hops, delayed retries) and for a wake-up lost while a worker reconnects.
    idle_poll_ms: int = Field(default=200, ge=10, le=60_000)
    enqueue_chunk: int = Field(default=1000, ge=1, le=100_000)
    log_level: str = "INFO"
    log_json: bool = False
