"""Keep a round's prompt plus `max_tokens` inside the endpoint's context window.

Local servers often give each slot 2,048 tokens; a refine round carries the user's turns, the
last answer and its errors (for GMN also the rules and an example), and outgrew that in #23.
`fit_round` trims the error list first, then the earlier answer, then lowers `max_tokens` (not
below a floor), and says what it did. Token counts are estimates (no tokenizer at run time): JSON
with many numbers tokenizes densely, so the estimate is deliberately pessimistic. A turn is a
`(role, text)` pair or a chat message (its text parts are counted).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Generic, TypeVar

from schemas.tokens import estimate_tokens

#: Characters per token for fitting a round: below the default 4 of English prose
#: (`schemas.tokens`) because answers are JSON full of digits, which tokenizers split finely,
#: and a round that overflows the context fails where one trimmed a little too much does not.
CONTEXT_CHARS_PER_TOKEN: Final = 3
#: Per-message overhead of chat templates (role markers, separators).
MESSAGE_OVERHEAD: Final = 8
#: Below this `max_tokens` no GMN document (nor most structured answers) fits: better to drop
#: context than the answer room.
MIN_OUTPUT_TOKENS: Final = 256

Turn = tuple[str, str]
#: What a conversation may hold: (role, text) pairs or chat message dicts.
Turns = Sequence[Turn] | Sequence[Mapping[str, Any]]
T = TypeVar("T", Turn, dict[str, Any])


def text_of(turn: Turn | Mapping[str, Any]) -> str:
    """A turn's text: the pair's second item, a message's string content or text parts."""
    if isinstance(turn, tuple):
        return turn[1]
    content = turn.get("content")
    if isinstance(content, str):
        return content
    parts = content if isinstance(content, list) else []
    return "".join(
        p["text"] for p in parts if isinstance(p, dict) and isinstance(p.get("text"), str)
    )


def prompt_tokens(turns: Turns) -> int:
    """Estimated tokens of a conversation, template overhead included."""
    return sum(
        estimate_tokens(text_of(turn), CONTEXT_CHARS_PER_TOKEN) + MESSAGE_OVERHEAD for turn in turns
    )


def room(turns: Turns, context_tokens: int) -> int:
    """Tokens left for the answer after the prompt."""
    return context_tokens - prompt_tokens(turns)


@dataclass(frozen=True)
class Fitted(Generic[T]):
    """A round that fits (or the closest it could get): turns, max_tokens, what was dropped."""

    turns: list[T]
    max_tokens: int | None
    errors_listed: int | None
    dropped_answer: bool
    fits: bool


def fit_round(
    build: Callable[[int | None, bool], list[T]],
    error_count: int,
    max_tokens: int | None,
    context_tokens: int | None,
    min_output_tokens: int = MIN_OUTPUT_TOKENS,
) -> Fitted[T]:
    """The largest round `build(errors_listed, with_answer)` that fits with its max_tokens.

    `build` renders the turns listing at most `errors_listed` errors (None: all), with or
    without the previous answer. Order of cuts: errors (down to one), the previous answer,
    then `max_tokens` (down to `min_output_tokens`). Without a known context nothing is cut.
    """
    if context_tokens is None:
        return Fitted(build(None, True), max_tokens, None, False, True)
    wanted = max_tokens if max_tokens is not None else min_output_tokens
    floor = min(wanted, min_output_tokens)

    def fits(turns: list[T], need: int) -> bool:
        return room(turns, context_tokens) >= need

    full = build(None, True)
    if fits(full, wanted):
        return Fitted(full, max_tokens, None, False, True)
    for with_answer in (True, False):
        # Fewer listed errors only ever shrink the prompt: binary-search the most that fit.
        lo, hi = 1, max(1, error_count)
        if not fits(build(lo, with_answer), wanted):
            continue
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if fits(build(mid, with_answer), wanted):
                lo = mid
            else:
                hi = mid - 1
        return Fitted(build(lo, with_answer), max_tokens, lo, not with_answer, True)
    smallest = build(1, False)
    left = room(smallest, context_tokens)
    if left >= floor:
        return Fitted(smallest, left, 1, True, True)
    return Fitted(smallest, max_tokens, 1, True, False)


def fit_first(
    turns: Turns, max_tokens: int | None, context_tokens: int | None
) -> tuple[int | None, bool]:
    """(max_tokens, fits) for a first round: lower max_tokens to the room the prompt leaves."""
    if context_tokens is None or max_tokens is None:
        return max_tokens, context_tokens is None or room(turns, context_tokens) > 0
    left = room(turns, context_tokens)
    if left >= max_tokens:
        return max_tokens, True
    return max(left, 1), left >= min(max_tokens, MIN_OUTPUT_TOKENS)


def raised_max_tokens(
    turns: Turns, max_tokens: int | None, context_tokens: int | None
) -> int | None:
    """A larger answer budget after a cut-off answer: double, within the context's room.

    Without a known context the endpoint's limit is unknown, so the budget stays as it was
    (a model-specific output cap would turn a larger one into a 400).
    """
    if max_tokens is None or context_tokens is None:
        return max_tokens
    left = room(turns, context_tokens)
    return max(max_tokens, min(max_tokens * 2, left))
