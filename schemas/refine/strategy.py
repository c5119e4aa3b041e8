"""Rounds that change something: how the next round differs from the last one.

With a weak model, a refine round that repeats the previous round's errors tends to repeat
them again (12 of 16 prompts in #23 had the same codes in all three rounds). So when a round's
codes equal the previous round's, the next round changes strategy instead of asking again.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final, Literal, Protocol

Strategy = Literal[
    "first", "refine", "fresh", "hotter", "other_endpoint", "more_tokens", "simplify", "no_example"
]
STRATEGIES: Final[tuple[str, ...]] = (
    "first",
    "refine",
    "fresh",
    "hotter",
    "other_endpoint",
    "more_tokens",
    "simplify",
    "no_example",
)
#: What each strategy does, for docs and reports.
MEANING: Final[dict[str, str]] = {
    "first": "the first answer",
    "refine": "the last answer and its errors",
    "fresh": "a new attempt without the failed answer, told which rules it broke",
    "hotter": "the last answer and its errors, at a higher temperature",
    "other_endpoint": "the last answer and its errors, on the next endpoint of the route",
    "more_tokens": "a new attempt after a cut-off answer, with more max_tokens if the "
    "context allows",
    "simplify": "a new attempt for a simpler target the validator offers (GMN `auto`: the "
    "lean profile after a cut-off answer or any fault but a copy)",
    "no_example": "a new attempt without the example the last answer copied (GMN lean)",
}
#: Temperature added by each `hotter` round, and its ceiling.
TEMPERATURE_STEP: Final = 0.4
MAX_TEMPERATURE: Final = 1.0


class Verdict(Protocol):
    """What the strategy needs of a round's verdict (`prompts.RoundVerdict` has it)."""

    @property
    def codes(self) -> list[str]: ...

    @property
    def strategy(self) -> str | None: ...


def repeated(history: Sequence[Verdict]) -> bool:
    """Whether the last round reported exactly the codes of the round before it."""
    if len(history) < 2:
        return False
    last, before = history[-1].codes, history[-2].codes
    return bool(last) and set(last) == set(before)


def next_strategy(history: Sequence[Verdict], *, truncated: bool, endpoints: int) -> Strategy:
    """The strategy of the next round, given every verdict so far (the last one included).

    A cut-off answer gets `more_tokens` (once in a row); a repeat of the previous codes
    cycles through fresh, hotter and (with more than one endpoint) other_endpoint; otherwise
    the last answer is refined with its errors.
    """
    last = history[-1].strategy if history else None
    if truncated and not (last == "more_tokens" and repeated(history)):
        return "more_tokens"
    if not repeated(history):
        return "refine"
    cycle: list[Strategy] = ["fresh", "hotter"]
    if endpoints > 1:
        cycle.append("other_endpoint")
    switches = sum(1 for v in history if v.strategy in cycle)
    return cycle[switches % len(cycle)]


def hotter(temperature: float | None) -> float:
    """The next `hotter` round's temperature."""
    return min(MAX_TEMPERATURE, round((temperature or 0.0) + TEMPERATURE_STEP, 3))
