"""One GMN round without I/O: check an answer, and GMN's words for the next round.

The rounds themselves (strategy, context fitting, history, usage) are the generic structured
mechanism's (`schemas.refine`, `workers.structured`); the `gmn` validator plugin
(`workers.gmn_review`) plugs `check_answer` and `GMNFeedback` into it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from schemas.refine.context import Turn, fit_first
from schemas.request import LLMRequest
from schemas.structured import Verdict

from .copies import COPY_CODE, check_copy
from .examples import ExampleChoice, example_documents, examples_for
from .feedback import (
    RULES,
    TRUNCATION_HEAD,
    group_errors,
    rank,
    render_groups,
    truncation_note,
)
from .grounding import check_agent_type
from .lean import NO_EXAMPLE_HEAD, SIMPLIFY_HEAD, layouts_for, unlike_examples
from .model import GMNError
from .prompts import (
    ANSWER_INSTRUCTION,
    DEFAULT_TEMPERATURE,
    MAX_LISTED_ERRORS,
    GMNPrompt,
    GMNTaskData,
    Profile,
    check_constraints,
    first_request,
)
from .reply import read_reply
from .stated import check_stated, stated_sizes, suggested_layouts


@dataclass
class Checked:
    """An answer's verdict: its document, every error (sorted most basic first), its fault."""

    document: Any
    errors: list[GMNError]
    truncated: bool = False
    warnings: list[str] = field(default_factory=list)

    @property
    def codes(self) -> list[str]:
        """Distinct codes in order."""
        return list(dict.fromkeys(e.code for e in self.errors))


def check_answer(
    text: str,
    data: GMNTaskData,
    *,
    finish_reason: str | None = None,
    max_tokens: int | None = None,
    output_tokens: int | None = None,
) -> Checked:
    """Validator, constraints (GMN090), agent-type rules (GMN092-096), the sizes the prompt
    states (GMN097/098) and copies (GMN091)."""
    reading = read_reply(text, finish_reason, max_tokens, output_tokens)
    errors = list(reading.errors)
    if reading.fault is None:
        errors += check_constraints(reading.document, data.constraints)
        errors += check_agent_type(reading.document, data.agent_type, data.constraints)
        errors += check_stated(reading.document, data.stated)
        if not errors:
            errors += check_copy(reading.document, example_documents(data.examples))
    errors.sort(key=lambda e: rank(e.code))
    return Checked(reading.document, errors, reading.fault == "truncated", reading.warnings)


def base_turns(turns: list[Turn], prompt_chars: int | None) -> list[Turn]:
    """The original system and user turns, without answers or notes added by earlier rounds."""
    base: list[Turn] = []
    for role, content in turns:
        if role == "assistant":
            break
        base.append((role, content))
    last = len(base) - 1
    if prompt_chars is not None and last >= 0 and base[last][0] == "user":
        base[last] = ("user", base[last][1][:prompt_chars])
    return base


def _noted(base: list[Turn], note: str) -> list[Turn]:
    """The base turns with a note after the user's prompt (one user turn, no empty turns)."""
    if base and base[-1][0] == "user":
        return [*base[:-1], ("user", f"{base[-1][1]}\n\n{note}")]
    return [*base, ("user", note)]


def refine_text(
    checked: Checked, feedback: str | None, limit: int | None = MAX_LISTED_ERRORS
) -> str:
    """The user turn after the last answer: its errors grouped by rule, most basic first."""
    lines: list[str] = []
    if checked.errors:
        lines.append("Your GMN document is not valid. Fix these problems, the most basic first:")
        lines.extend(render_groups(group_errors(checked.errors, checked.document), limit))
    if feedback:
        lines.append(f"Change requested: {feedback.strip()}")
    lines.append(
        "Fix every error and answer with the corrected document only. " + ANSWER_INSTRUCTION
    )
    return "\n".join(lines)


#: How each note a round adds to the user's prompt begins (`is_follow_up` looks for them).
FRESH_HEAD = "An earlier answer to this prompt was rejected."
LEFT_OUT_HEAD = "Your previous answer is left out here to save room."
_HEADS = (FRESH_HEAD, LEFT_OUT_HEAD, TRUNCATION_HEAD, SIMPLIFY_HEAD, NO_EXAMPLE_HEAD)


def is_follow_up(turns: list[Turn]) -> bool:
    """Whether a request is a later round: it has an answer in it, or a reviewer's note."""
    users = [content for role, content in turns if role == "user"]
    if any(role == "assistant" for role, _ in turns):
        return True
    return bool(users) and any(f"\n\n{head}" in users[-1] for head in _HEADS)


def fresh_note(checked: Checked, feedback: str | None) -> str:
    """A fresh attempt does not see the failed answer: only the rules it broke."""
    lines = [f"{FRESH_HEAD} Make sure yours follows these rules:"]
    for code in checked.codes:
        lines.append(f"- {code}: {RULES.get(code, 'see the rules above')}")
        if code == COPY_CODE:
            # Which sizes were the example's: "design your own" alone got the same ones again.
            copied = next(e for e in checked.errors if e.code == code)
            lines.append(f"  (the rejected answer: {copied.message})")
    if feedback:
        lines.append(f"Change requested: {feedback.strip()}")
    return "\n".join(lines)


class GMNFeedback:
    """GMN's words for the generic refine rounds (`schemas.refine.Feedback`): errors grouped by
    rule with the spec's one-line rules, truncation with the budget, the change requested."""

    def __init__(self, feedback: str | None = None) -> None:
        self.feedback = feedback

    def refine(self, verdict: Verdict, limit: int | None) -> str:
        """The user turn after the last answer."""
        return refine_text(
            _checked(verdict), self.feedback, MAX_LISTED_ERRORS if limit is None else limit
        )

    def fresh(self, verdict: Verdict) -> str:
        """A fresh attempt's note: the rules the failed answer broke."""
        return f"{fresh_note(_checked(verdict), self.feedback)}\n{ANSWER_INSTRUCTION}"

    def truncated(self, output_tokens: int | None, max_tokens: int | None) -> str:
        """After a cut-off answer: where it was cut, and to answer more briefly."""
        note = truncation_note(output_tokens, max_tokens)
        if self.feedback:
            note += f"\nChange requested: {self.feedback.strip()}"
        return f"{note}\n{ANSWER_INSTRUCTION}"

    def left_out(self, verdict: Verdict) -> str:
        """When the last answer does not fit: the rules it broke, without pointers into it."""
        note = fresh_note(_checked(verdict), self.feedback)
        return f"{LEFT_OUT_HEAD}\n{note}\n{ANSWER_INSTRUCTION}"


def _checked(verdict: Verdict) -> Checked:
    """GMN's own reading of the answer, kept on the verdict by the `gmn` validator."""
    native = verdict.native
    if isinstance(native, Checked):
        return native
    errors = [
        GMNError(code=e.code or "GMN000", path="$", message=e.message) for e in verdict.errors
    ]
    return Checked(verdict.value, errors, verdict.truncated)


def first_round(
    spec: GMNPrompt,
    *,
    temperature: float = DEFAULT_TEMPERATURE,
    max_tokens: int | None = None,
    json_mode: bool = False,
    example: ExampleChoice = "explorer",
    context_tokens: int | None = None,
    profile: Profile = "full",
) -> tuple[LLMRequest, GMNTaskData]:
    """Round 1 and its task data, fitted into the context: a lower max_tokens, else no example.
    The sizes the prompt states, and the lean layouts it suggests, go into the task data."""
    stated = stated_sizes(spec.prompt, spec.constraints)
    request = first_request(
        spec,
        temperature=temperature,
        max_tokens=max_tokens,
        json_mode=json_mode,
        example=example,
        profile=profile,
        stated=stated,
    )
    budget, fits = fit_first(_turns(request), max_tokens, context_tokens)
    if not fits and example != "none":
        request = first_request(
            spec,
            temperature=temperature,
            max_tokens=max_tokens,
            json_mode=json_mode,
            example="none",
            profile=profile,
            stated=stated,
        )
        example = "none"
        budget, _ = fit_first(_turns(request), max_tokens, context_tokens)
    keys = examples_for(spec.agent_type, example, profile == "lean")
    layouts = None
    if profile != "full":  # what the lean schema offers: the prompt's layouts, no example's
        suggested = suggested_layouts(spec.prompt, spec.agent_type, stated)
        shown = [doc for _, doc in example_documents(keys)]
        layouts = unlike_examples(layouts_for(spec.constraints, suggested), shown)
    data = GMNTaskData(
        agent_type=spec.agent_type,
        constraints=spec.constraints,
        examples=keys,
        profile=profile,
        context_tokens=context_tokens,
        prompt_chars=len(spec.prompt),
        stated=stated,
        layouts=layouts,
    )
    return request.with_body(max_tokens=budget), data


def _turns(request: LLMRequest) -> list[Turn]:
    return [(m.role, m.text) for m in request.messages]
