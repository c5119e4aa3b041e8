"""Process settings read once at start-up from the environment."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

#: Prefix of every setting's environment variable (`BATCHYARD_NAMESPACE`, ...).
ENV_PREFIX = "BATCHYARD_"

#: Variables read after a field's own `BATCHYARD_<FIELD>`, in order.
ENV_FALLBACKS = {"redis_url": ("REDIS_URL",)}


#: The event loops a worker can run its jobs on (`BATCHYARD_EVENT_LOOP`).
EVENT_LOOPS = ("uvloop", "asyncio")


class SettingsError(ValueError):
    """A setting's value is wrong: one line naming its environment variable and the value."""


def environment(fields: list[str], environ: dict[str, str] | None = None) -> dict[str, str]:
    """The fields' values found in the environment: `BATCHYARD_<FIELD>`, then the fallbacks.

    Names match case-insensitively and an empty value counts, as pydantic-settings read them;
    batchyard read its settings with pydantic-settings until its import (~15-20 ms of CPU in
    every `batchyard run` and worker process, #22) proved larger than this loop.
    """
    found = {k.upper(): v for k, v in (os.environ if environ is None else environ).items()}
    values = {}
    for field in fields:
        for name in (ENV_PREFIX + field.upper(), *ENV_FALLBACKS.get(field, ())):
            if name in found:
                values[field] = found[name]
                break
    return values


class Settings(BaseModel):
    """Everything a producer or worker reads from `BATCHYARD_*` / `REDIS_URL`.

    `Settings()` reads the environment; a value given to the constructor wins over it.
    """

    model_config = ConfigDict(extra="ignore", validate_default=True)

    redis_url: str | None = None
    config: Path | None = None
    namespace: str = Field(default="batchyard", pattern=r"^[A-Za-z0-9_-]+$")
    result_ttl_s: int = Field(default=7 * 86400, ge=60)
    heartbeat_timeout_ms: int = Field(default=15_000, ge=1000)
    maintenance_interval_s: float = Field(default=5.0, gt=0)
    #: How long a starting worker waits for Redis before exiting (its supervisor retries).
    redis_wait_s: float = Field(default=300.0, ge=0, le=86_400)
    cancel_poll_s: float = Field(default=1.0, gt=0, le=60)
    #: Longest pause of an idle queue's consumer between polls. Every enqueue wakes idle
    #: workers at once (producers', failover hops and delayed retries, dramatiq's own), and an
    #: idle consumer holding a delayed message wakes when it is due; this bounds the wait for
    #: a wake-up lost while a worker reconnects and for messages requeued from a dead worker.
    #: 1 s, dramatiq's own longest backoff: at 200 ms an idle worker made ~80 script calls a
    #: second (12 consumers per endpoint) and used ~3.5 % of a core doing nothing (#22).
    idle_poll_ms: int = Field(default=1000, ge=10, le=60_000)
    enqueue_chunk: int = Field(default=1000, ge=1, le=100_000)
    log_level: str = "INFO"
    log_json: bool = False
    #: The loop a worker runs its jobs on: `uvloop` (used where it is installed) or `asyncio`.
    event_loop: str = "uvloop"

    def __init__(self, **values: Any) -> None:
        found = environment(list(type(self).model_fields))
        try:
            super().__init__(**{**found, **values})
        except ValidationError as exc:
            raise SettingsError(_described(exc, set(found) - set(values))) from None

    @field_validator("event_loop")
    @classmethod
    def _known_loop(cls, value: str) -> str:
        choice = value.strip().lower()
        if choice not in EVENT_LOOPS:
            raise ValueError(f"must be {' or '.join(map(repr, EVENT_LOOPS))}")
        return choice


def _described(exc: ValidationError, from_env: set[str]) -> str:
    """`exc` in one line: each wrong setting by the variable it was read from (else its
    name), its value, and what is wrong with it. pydantic's own text takes three lines per
    error and names the field, which nobody sets by that name (a bad `BATCHYARD_*` value was
    a traceback from `batchyard run`, and three lines from the other commands)."""
    parts = []
    for error in exc.errors():
        field = str(error["loc"][0]) if error["loc"] else "settings"
        name = ENV_PREFIX + field.upper() if field in from_env else field
        message = str(error["msg"]).removeprefix("Value error, ")
        parts.append(f"{name}={error['input']!r}: {message}")
    return "; ".join(parts)
