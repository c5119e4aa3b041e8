"""GMN as a structured-output validator (`gmn` in `batchyard.validators`).

GMN batches run on the generic mechanism (`workers.structured`: rounds, history, usage and
cost, best-of-k, strategy switch, context fitting, constrained decoding); GMN supplies its
checks (the validator, the prompt's constraints, what the agent type implies, copies of the
example), its feedback words, its JSON Schema and the `gmn` record its output lines come from.
The `gmn` task kind of earlier versions still reviews jobs queued before the change.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import ValidationError

from schemas.gmn.prompts import GMNRecord, token_counts
from schemas.gmn.rounds import Checked, GMNFeedback, check_answer
from schemas.gmn.task import check_data, task_state, verdicts
from schemas.job import Job
from schemas.refine import Feedback
from schemas.request import LLMRequest
from schemas.result import ErrorInfo, LLMResult
from schemas.structured import Issue, StructuredRecord, Verdict, summed
from workers import structured
from workers.tasks import Review
from workers.validators import MAX_ISSUES, Plugin, Reply, Switch, pointer


class GMNValidator(Plugin):
    """GMN's checks, words, schema and record for the generic refine rounds."""

    def check(
        self, answer: str, request: LLMRequest, options: dict[str, Any], reply: Reply
    ) -> Verdict:
        """Validator, constraints (GMN090), agent type (GMN092-096), copies (GMN091); a reply
        cut off by the output limit is GMN080, not its fragment's errors."""
        checked = check_answer(
            answer,
            check_data(options),
            finish_reason=reply.finish_reason,
            max_tokens=reply.max_tokens,
            output_tokens=reply.output_tokens,
        )
        issues = [
            Issue(
                pointer=gmn_pointer(e.path),
                message=f"{e.code}: {e.message}" + (f" (node {e.node})" if e.node else ""),
                code=e.code,
            )
            for e in checked.errors[:MAX_ISSUES]
        ]
        return Verdict(
            valid=not checked.errors,
            errors=issues,
            value=checked.document,
            truncated=checked.truncated,
            native=checked,
        )

    def problem(self, options: dict[str, Any]) -> str | None:
        try:
            check_data(options)
        except ValidationError as exc:
            return f"bad gmn options: {exc}"
        return None

    def feedback(self, options: dict[str, Any]) -> Feedback:
        feedback = options.get("feedback")
        return GMNFeedback(feedback if isinstance(feedback, str) else None)

    def wire_schema(self, options: dict[str, Any]) -> dict[str, Any] | None:
        """The GMN JSON Schema without the keywords grammar-based decoders reject, its sizes
        bounded by the request (constraints, agent type); for the lean profile, the request's
        skeleton schema."""
        try:
            data = check_data(options)
        except ValidationError:
            return None  # the reviewer reports bad options (`problem`)
        if data.profile == "lean":
            from schemas.gmn.lean import lean_json_schema

            return lean_json_schema(data.agent_type, data.constraints, data.stated, data.layouts)
        from schemas.gmn.json_schema import grounded_schema

        return grounded_schema(data.agent_type, data.constraints)

    def switch(self, options: dict[str, Any], verdict: Verdict) -> Switch | None:
        """`auto` jobs: the lean profile after a cut-off answer or any fault but a copy; lean
        jobs whose answer copied the example: no example from then on."""
        from schemas.gmn.lean import (
            lean_system,
            no_example_note,
            simplified,
            simplify_note,
            unexampled,
        )
        from schemas.gmn.task import gmn_options

        try:
            data = check_data(options)
        except ValidationError:
            return None
        lean = simplified(data, verdict.codes, verdict.truncated)
        if lean is not None:
            note = simplify_note(verdict.codes, verdict.truncated)
            return Switch(gmn_options(lean), lean_system(lean), note)
        bare = unexampled(data, verdict.codes)
        if bare is not None:
            copied = next((e.message for e in verdict.errors if e.code == "GMN091"), "")
            copied = copied.removeprefix("GMN091: ")
            note = no_example_note(copied)
            return Switch(gmn_options(bare), lean_system(bare), note, "no_example")
        return None

    def records(
        self, record: StructuredRecord, verdict: Verdict, options: dict[str, Any]
    ) -> dict[str, Any]:
        """`extra["gmn"]` only: the record GMN output lines and reports are built from (the
        generic `structured` record, with every round's answer, would double the result's
        size; `batchyard report` and the dashboard read `gmn` as well)."""
        checked = verdict.native
        from schemas.gmn.stated import grounded

        usage, cost = summed(record.history)
        document = checked.document if isinstance(checked, Checked) else verdict.value
        data = check_data(options)
        gmn = GMNRecord(
            document=document if isinstance(document, dict) else None,
            valid=verdict.valid,
            errors=checked.errors if isinstance(checked, Checked) else [],
            rounds=record.rounds,
            agent_type=data.agent_type,
            profile=data.profile,
            tokens=token_counts(usage),
            cost_usd=cost,
            history=verdicts(record.history),
            grounded=grounded(document, data.stated),
        )
        return {"gmn": gmn.model_dump(mode="json")}


#: The `gmn` entry of `batchyard.validators`.
GMN = GMNValidator()


def review(job: Job, result: LLMResult) -> Review:
    """The `gmn` task kind of earlier versions: its data read as a structured task's."""
    assert job.task is not None
    try:
        state = task_state(job.task.data)
    except ValidationError as exc:
        result.status = "errored"
        result.error = ErrorInfo(code="invalid_task", message=f"bad gmn task data: {exc}")
        return Review(result=result)
    job.task.data = state.model_dump(mode="json", exclude_defaults=True)
    return structured.review(job, result)


#: The entry point's earlier value (`workers.gmn_review:validate`): an install whose entry
#: points predate the plugin (an editable install keeps its pyproject's, and an `.egg-info`
#: on PYTHONPATH wins) still gets the plugin, not a bare validator without GMN's words,
#: schema and record.
validate = GMN


_STEP = re.compile(r"\.([^.\[]+)|\[(\d+)\]")


def gmn_pointer(path: str) -> str:
    """A GMN error path (`$.nodes[2].id`) as a JSON pointer (`/nodes/2/id`); a path that is
    not a JSON path (`line 3` of the text form) points at the whole answer."""
    if not path.startswith("$"):
        return ""
    return pointer(m.group(1) or m.group(2) for m in _STEP.finditer(path[1:]))
