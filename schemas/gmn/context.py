"""GMN's context fitting is the generic one (`schemas.refine.context`)."""

from schemas.refine.context import (
    CONTEXT_CHARS_PER_TOKEN,
    MESSAGE_OVERHEAD,
    MIN_OUTPUT_TOKENS,
    Fitted,
    Turn,
    fit_first,
    fit_round,
    prompt_tokens,
    raised_max_tokens,
    room,
)

__all__ = [
    "CONTEXT_CHARS_PER_TOKEN",
    "MESSAGE_OVERHEAD",
    "MIN_OUTPUT_TOKENS",
    "Fitted",
    "Turn",
    "fit_first",
    "fit_round",
    "prompt_tokens",
    "raised_max_tokens",
    "room",
]
