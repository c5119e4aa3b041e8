"""Reviewers of answers that need follow-up rounds, found through the `batchyard.tasks`
entry-point group (the same path third-party packages use)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from importlib.metadata import EntryPoint, entry_points

from schemas.job import Job
from schemas.request import LLMRequest
from schemas.result import LLMResult

GROUP = "batchyard.tasks"


@dataclass
class Review:
    """A reviewer's verdict: the final result to store, or the next round's request."""

    result: LLMResult | None = None
    next_request: LLMRequest | None = None
    #: Start the next round this many endpoints further along the route (a different model
    #: when the same one keeps failing the same way).
    rotate_route: int = 0
    #: The next request belongs to the same round (another draw of best-of-k).
    same_round: bool = False


Reviewer = Callable[[Job, LLMResult], Review]

#: batchyard's own reviewers, also found when an install's entry points predate them.
BUILTIN = {"structured": "workers.structured:review"}


@cache
def reviewer(kind: str) -> Reviewer | None:
    """The reviewer registered for a task kind, or None when no package provides it."""
    for ep in entry_points(group=GROUP):
        if ep.name == kind:
            found: Reviewer = ep.load()
            return found
    if kind in BUILTIN:
        builtin: Reviewer = EntryPoint(kind, BUILTIN[kind], GROUP).load()
        return builtin
    return None
