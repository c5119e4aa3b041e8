"""Validators of structured answers, found through the `batchyard.validators` entry-point group.

A validator is a callable `(answer, request, options) -> Verdict`: it parses the answer text,
checks it, and names every problem with a JSON pointer into the answer and a message. The
`json_schema` validator checks against the request's own JSON Schema (`jsonschema`, format
checks on); `gmn` checks GMN documents; third-party packages register theirs the same way:

    [project.entry-points."batchyard.validators"]
    mine = "my_package.checks:validate"

A validator with more to say subclasses `Plugin`: it sees how the call ended (a cut-off
answer), words its own refine rounds, gives a JSON Schema for constrained decoding, and adds
its own record to the result. The rounds themselves are always `workers.structured`'s.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cache, lru_cache
from importlib.metadata import EntryPoint, entry_points
from typing import TYPE_CHECKING, Any

import orjson

from schemas.refine import Feedback, PointerFeedback
from schemas.refine.strategy import Strategy
from schemas.request import LLMRequest
from schemas.structured import Issue, StructuredRecord, Verdict

if TYPE_CHECKING:
    # jsonschema is imported where it is used: with its format checkers (rfc3987_syntax builds
    # a grammar at import) it costs ~2 s of CPU, which every `run`, `submit` and worker start
    # paid even for batches that ask for no schema (#22).
    from jsonschema.protocols import Validator as SchemaValidator

GROUP = "batchyard.validators"
#: Errors kept per answer: enough to fix it, bounded so a refine prompt stays small.
MAX_ISSUES = 20

Validator = Callable[[str, LLMRequest, dict[str, Any]], Verdict]

#: batchyard's own validators, also found when an install's entry points predate them (an
#: editable install keeps the entry points of the pyproject it was installed from).
BUILTIN = {"json_schema": "workers.validators:json_schema", "gmn": "workers.gmn_review:GMN"}


@dataclass(frozen=True)
class Reply:
    """How the call that gave an answer ended, besides the answer's text."""

    finish_reason: str | None = None
    #: The output limit the request set.
    max_tokens: int | None = None
    output_tokens: int | None = None


@dataclass(frozen=True)
class Switch:
    """A simpler target for the next round (`Plugin.switch`): the validator's new options, the
    system message that asks for it, and a note after the user's prompt on why."""

    options: dict[str, Any]
    system: str
    note: str
    #: How the history names the round (`schemas.refine.strategy.STRATEGIES`).
    strategy: Strategy = "simplify"


class Plugin:
    """A validator that also words its refine rounds, may give a JSON Schema for constrained
    decoding and adds its own record to the result. Subclasses override `check` and may
    override the rest; a plugin is still a plain validator (callable)."""

    def __call__(self, answer: str, request: LLMRequest, options: dict[str, Any]) -> Verdict:
        return self.check(answer, request, options, Reply())

    def check(
        self, answer: str, request: LLMRequest, options: dict[str, Any], reply: Reply
    ) -> Verdict:
        """The verdict on one answer."""
        raise NotImplementedError

    def problem(self, options: dict[str, Any]) -> str | None:
        """Why these options cannot be used (the job ends `invalid_task`), or None."""
        return None

    def feedback(self, options: dict[str, Any]) -> Feedback:
        """The words of the refine rounds."""
        return PointerFeedback()

    def wire_schema(self, options: dict[str, Any]) -> dict[str, Any] | None:
        """A JSON Schema to decode under where the endpoint can (the request carries none)."""
        return None

    def switch(self, options: dict[str, Any], verdict: Verdict) -> Switch | None:
        """A simpler target for the next round after this invalid verdict (the round's
        strategy is then `simplify`: a fresh attempt under the new system message and
        options), or None to refine as usual."""
        return None

    #: Whether `wire_schema` meets OpenAI's strict mode (every property required, no extra
    #: ones); grammar-based servers (llama.cpp, vLLM) decode under any schema either way.
    strict_schema = False

    def records(
        self, record: StructuredRecord, verdict: Verdict, options: dict[str, Any]
    ) -> dict[str, Any]:
        """What the final result's `extra` gets: by default `structured` (the verdict and every
        round's answer, errors, usage); a plugin may store its own record instead."""
        return {"structured": record.model_dump(mode="json")}


class _Plain(Plugin):
    """A plain `(answer, request, options) -> Verdict` validator, with the generic words."""

    def __init__(self, check: Validator) -> None:
        self._check = check

    def check(
        self, answer: str, request: LLMRequest, options: dict[str, Any], reply: Reply
    ) -> Verdict:
        verdict = self._check(answer, request, options)
        if not verdict.valid and reply.finish_reason in LENGTH_REASONS:
            # A reply cut off by the output limit: its "not JSON" is the cut, not a fault.
            verdict.truncated = any(e.code == "json" for e in verdict.errors)
        return verdict


#: finish_reason values (as results carry them) that mean "stopped by the output limit".
LENGTH_REASONS = frozenset({"length", "max_tokens", "max_output_tokens"})


@cache
def plugin(name: str) -> Plugin:
    """The validator registered as `name`, as a plugin (a plain one gets the generic words)."""
    found = validator(name)
    return found if isinstance(found, Plugin) else _Plain(found)


class UnknownValidator(LookupError):
    """No installed package registers a validator by this name."""


@cache
def validator(name: str) -> Validator:
    """The validator registered as `name`; raises UnknownValidator naming the known ones."""
    found = [ep for ep in entry_points(group=GROUP) if ep.name == name]
    if not found and name in BUILTIN:
        found = [EntryPoint(name, BUILTIN[name], GROUP)]
    if not found:
        known = ", ".join(names()) or "none"
        raise UnknownValidator(f"no validator {name!r} is installed (known: {known})")
    loaded: Validator = found[0].load()
    return loaded


def names() -> list[str]:
    """Every installed validator's name."""
    return sorted({ep.name for ep in entry_points(group=GROUP)} | BUILTIN.keys())


def pointer(path: Any) -> str:
    """A JSON pointer (RFC 6901) to a path of keys and indexes."""
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in path)


def parse(answer: str) -> tuple[Any, Issue | None]:
    """The answer as JSON, or the issue saying why it is not JSON."""
    try:
        return orjson.loads(answer), None
    except orjson.JSONDecodeError as exc:
        return None, Issue(pointer="", message=f"not valid JSON: {exc}", code="json")


def schema_of(request: LLMRequest, options: dict[str, Any]) -> dict[str, Any] | None:
    """The JSON Schema a request asks for: `options.schema`, a chat body's
    `response_format.json_schema.schema`, or a Responses body's `text.format.schema`."""
    schema = options.get("schema")
    if isinstance(schema, dict):
        return schema
    fmt = request.body.get("response_format")
    if request.kind == "responses":
        text = request.body.get("text")
        fmt = text.get("format") if isinstance(text, dict) else None
        inner = fmt.get("schema") if isinstance(fmt, dict) else None
        return inner if isinstance(inner, dict) else None
    if isinstance(fmt, dict) and fmt.get("type") == "json_schema":
        spec = fmt.get("json_schema")
        inner = spec.get("schema") if isinstance(spec, dict) else None
        return inner if isinstance(inner, dict) else None
    return None


def check_schema(schema: dict[str, Any]) -> str | None:
    """Why `schema` is not a usable JSON Schema, or None."""
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import SchemaError
    from jsonschema.validators import validator_for

    try:
        validator_for(schema, default=Draft202012Validator).check_schema(schema)
    except SchemaError as exc:
        return f"not a valid JSON Schema: {exc.message}"
    return None


@lru_cache(maxsize=256)
def _compiled(raw: bytes) -> SchemaValidator:
    """One compiled validator per distinct schema: a batch usually shares one."""
    from jsonschema import Draft202012Validator
    from jsonschema.validators import validator_for

    schema = orjson.loads(raw)
    cls = validator_for(schema, default=Draft202012Validator)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


def json_schema(answer: str, request: LLMRequest, options: dict[str, Any]) -> Verdict:
    """Parse the answer and check it against the request's JSON Schema, formats included."""
    schema = schema_of(request, options)
    if schema is None:
        issue = Issue(message="the request has no JSON Schema to check against", code="schema")
        return Verdict(valid=False, errors=[issue])
    value, bad = parse(answer)
    if bad is not None:
        return Verdict(valid=False, errors=[bad])
    checker = _compiled(orjson.dumps(schema, option=orjson.OPT_SORT_KEYS))
    found = sorted(checker.iter_errors(value), key=lambda e: list(map(str, e.absolute_path)))
    issues = [
        Issue(pointer=pointer(e.absolute_path), message=e.message, code=str(e.validator))
        for e in found[:MAX_ISSUES]
    ]
    return Verdict(valid=not issues, errors=issues, value=value)
