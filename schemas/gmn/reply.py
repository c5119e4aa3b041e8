"""Read one LLM reply honestly: cut off (GMN080), no JSON at all (GMN081), or a document.

The extractor's last resort is the first `{...}` that parses; in a reply cut off by
`max_tokens` that is an inner fragment (one node object), and validating it tells the model
"'nodes' is missing" instead of "your answer was cut off". Here a reply whose outermost
object never closes is reported as truncated, with the budget, and its fragments are not
validated.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final, Literal

from .feedback import NO_JSON, TRUNCATED
from .model import GMNError
from .parse import extract_document, matching_brace
from .validate import validate_gmn

#: finish_reason values (as results carry them) that mean "stopped by the output limit".
LENGTH_REASONS: Final = frozenset({"length", "max_tokens", "max_output_tokens"})

Fault = Literal["truncated", "no_json"]


@dataclass
class Reading:
    """What a reply held: the decoded document (if any), its errors, and a reply-level fault."""

    document: Any
    errors: list[GMNError] = field(default_factory=list)
    fault: Fault | None = None
    warnings: list[str] = field(default_factory=list)


def _unclosed(text: str) -> bool:
    """Whether the first `{` of the reply is never closed (strings and escapes tracked)."""
    start = text.find("{")
    return start >= 0 and matching_brace(text, start) is None


def read_reply(
    text: str,
    finish_reason: str | None = None,
    max_tokens: int | None = None,
    output_tokens: int | None = None,
) -> Reading:
    """Extract and validate a reply, naming a cut-off or JSON-less reply for what it is."""
    extraction = extract_document(text)
    complete = extraction.method in ("whole", "fenced", "text")
    cut = finish_reason in LENGTH_REASONS
    if not complete and (_unclosed(text) or (cut and extraction.document is None)):
        budget = f" (limit {max_tokens} tokens)" if max_tokens is not None else ""
        used = f" after {output_tokens} tokens" if output_tokens else ""
        message = (
            f"the answer was cut off{used}{budget} before its JSON object was closed; "
            "a fragment of it is not a document"
        )
        error = GMNError(code=TRUNCATED, path="$", message=message)
        return Reading(None, [error], "truncated", extraction.problems)
    if extraction.document is None and not _attempted(text):
        what = "the reply is empty" if not text.strip() else "the reply is prose without JSON"
        message = f"{what}; expected exactly one JSON object"
        return Reading(None, [GMNError(code=NO_JSON, path="$", message=message)], "no_json")
    source: Any = extraction.document if extraction.document is not None else extraction.text
    report = validate_gmn(source)
    return Reading(report.document, report.errors, None, extraction.problems)


def _attempted(text: str) -> bool:
    """Something a validator can say more about: JSON-ish or a text-form document."""
    return "{" in text or "[nodes]" in text or "[edges]" in text
