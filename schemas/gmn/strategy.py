"""GMN's strategy switch is the generic one (`schemas.refine.strategy`)."""

from schemas.refine.strategy import (
    MAX_TEMPERATURE,
    MEANING,
    STRATEGIES,
    TEMPERATURE_STEP,
    Strategy,
    hotter,
    next_strategy,
    repeated,
)

__all__ = [
    "MAX_TEMPERATURE",
    "MEANING",
    "STRATEGIES",
    "TEMPERATURE_STEP",
    "Strategy",
    "hotter",
    "next_strategy",
    "repeated",
]
