"""How the next refine round of a structured request differs from the last one, without I/O.

The same planner serves every validator: it picks the strategy (`strategy.next_strategy`: refine
with the errors, a fresh attempt, a hotter one, the next endpoint, more room after a cut-off
answer) and fits the round into the endpoint's context (`context.fit_round`: fewer listed errors
first, then without the last answer, then a lower `max_tokens`). A validator supplies only the
words (`Feedback`): GMN its grouped rules, JSON Schema its pointers and messages.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from schemas.structured import Verdict

from .context import fit_round, raised_max_tokens
from .strategy import Strategy, hotter, next_strategy

Msg = dict[str, Any]


class Feedback(Protocol):
    """The words of a validator's refine rounds."""

    def refine(self, verdict: Verdict, limit: int | None) -> str:
        """The user turn after the last answer: its errors (at most `limit`; None: the
        validator's own bound)."""
        ...

    def fresh(self, verdict: Verdict) -> str:
        """A note for a fresh attempt that does not see the failed answer."""
        ...

    def truncated(self, output_tokens: int | None, max_tokens: int | None) -> str:
        """A note after an answer cut off by the output limit."""
        ...

    def left_out(self, verdict: Verdict) -> str:
        """A note when the last answer is left out to fit the context."""
        ...


#: The generic refine turn's first and last lines (JSON Schema and plain validators).
REFINE_HEAD = "Your answer is not valid. Errors, each at a JSON pointer into your answer:"
REFINE_TAIL = "Answer again with the corrected JSON document only, nothing else."
FRESH_HEAD = "An earlier answer to this request was rejected. Make sure yours avoids these errors:"
LEFT_OUT_HEAD = "Your previous answer is left out here to save room."
#: Errors listed per refine turn when the validator sets no bound of its own.
MAX_LISTED = 20


class PointerFeedback:
    """The generic words: every error as `pointer: message`."""

    def refine(self, verdict: Verdict, limit: int | None) -> str:
        """The refine turn (the whole answer is the pointer `""`)."""
        shown = verdict.errors[: MAX_LISTED if limit is None else limit]
        lines = [f'- "{e.pointer}": {e.message}' for e in shown]
        return "\n".join([REFINE_HEAD, *lines, REFINE_TAIL])

    def fresh(self, verdict: Verdict) -> str:
        """A fresh attempt's note: what the rejected answer got wrong, without the answer."""
        lines = [f"- {e.message}" for e in verdict.errors[:MAX_LISTED]]
        return "\n".join([FRESH_HEAD, *lines, REFINE_TAIL])

    def truncated(self, output_tokens: int | None, max_tokens: int | None) -> str:
        """After a cut-off answer."""
        used = f" after {output_tokens} tokens" if output_tokens else ""
        limit = f" (limit {max_tokens} tokens)" if max_tokens is not None else ""
        return (
            f"Your previous answer was cut off{used}{limit} before the JSON document was "
            f"complete. Answer more briefly. {REFINE_TAIL}"
        )

    def left_out(self, verdict: Verdict) -> str:
        """When the last answer does not fit the context."""
        return f"{LEFT_OUT_HEAD}\n{self.fresh(verdict)}"


class History(Protocol):
    """What the strategy needs of a round (`schemas.structured.RoundRecord` has it)."""

    @property
    def codes(self) -> list[str]: ...

    @property
    def strategy(self) -> str | None: ...


@dataclass
class NextRound:
    """How the next request differs from the original one."""

    messages: list[Msg]
    strategy: Strategy
    temperature: float | None
    max_tokens: int | None
    #: Start the next round this many endpoints further along the route.
    rotate_route: int = 0
    #: Errors listed in the feedback (None: all) and whether the last answer was left out.
    errors_listed: int | None = None
    dropped_answer: bool = False
    fits: bool = True


def base_messages(messages: Sequence[Msg], turns: int, prompt_chars: int | None) -> list[Msg]:
    """The user's own turns, without answers or notes added by earlier rounds: the first
    `turns` messages (0: up to the first answer), the last user text cut to `prompt_chars`."""
    if turns:
        base = [dict(m) for m in messages[:turns]]
    else:
        base = []
        for m in messages:
            if m.get("role") == "assistant":
                break
            base.append(dict(m))
    if prompt_chars is not None and base and base[-1].get("role") == "user":
        content = base[-1].get("content")
        if isinstance(content, str):
            base[-1]["content"] = content[:prompt_chars]
    return base


def noted(base: list[Msg], note: str) -> list[Msg]:
    """The base turns with a note after the user's prompt (one user turn where the prompt is
    text, so templates that want alternating roles still get them)."""
    if base and base[-1].get("role") == "user" and isinstance(base[-1].get("content"), str):
        last = {**base[-1], "content": f"{base[-1]['content']}\n\n{note}"}
        return [*base[:-1], last]
    return [*base, {"role": "user", "content": note}]


def plan_next_round(
    messages: Sequence[Msg],
    answer: str,
    verdict: Verdict,
    history: Sequence[History],
    words: Feedback,
    *,
    turns: int,
    prompt_chars: int | None,
    temperature: float | None,
    max_tokens: int | None,
    output_tokens: int | None,
    endpoints: int,
    context_tokens: int | None,
) -> NextRound:
    """The next round's messages, temperature and max_tokens, fitted into the context."""
    strategy = next_strategy(history, truncated=verdict.truncated, endpoints=endpoints)
    base = base_messages(messages, turns, prompt_chars)
    if strategy in ("more_tokens", "fresh"):
        if strategy == "more_tokens":
            fresh = noted(base, words.truncated(output_tokens, max_tokens))
            budget = raised_max_tokens(fresh, max_tokens, context_tokens)
        else:
            fresh, budget = noted(base, words.fresh(verdict)), max_tokens
        fitted = fit_round(lambda _n, _a: fresh, 0, budget, context_tokens)
        return NextRound(fitted.turns, strategy, temperature, fitted.max_tokens, fits=fitted.fits)

    def build(limit: int | None, with_answer: bool) -> list[Msg]:
        if not with_answer:  # pointers into an answer the model cannot see would not help
            return noted(base, words.left_out(verdict))
        reply = {"role": "assistant", "content": answer}
        return [*base, reply, {"role": "user", "content": words.refine(verdict, limit)}]

    fitted = fit_round(build, len(verdict.errors), max_tokens, context_tokens)
    return NextRound(
        fitted.turns,
        strategy,
        hotter(temperature) if strategy == "hotter" else temperature,
        fitted.max_tokens,
        rotate_route=1 if strategy == "other_endpoint" else 0,
        errors_listed=fitted.errors_listed,
        dropped_answer=fitted.dropped_answer,
        fits=fitted.fits,
    )
