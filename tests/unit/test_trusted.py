"""Models built unvalidated from validated values (`schemas.trusted`) are the models validation
builds: same fields, same fields set, same stored bytes, no value shared with their source."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel

from providers.base import ProviderResponse
from schemas.job import Job
from schemas.request import LLMRequest, RouteHop
from schemas.result import Attempt, LLMResult, Timings, Usage
from schemas.trusted import assign, fits, trusted
from workers.outcomes import succeeded


def test_an_instance_holds_what_pydantic_gives_it() -> None:
    # An upgrade of pydantic that adds to what an instance holds must fail here, not corrupt.
    assert BaseModel.__slots__ == (
        "__dict__",
        "__pydantic_fields_set__",
        "__pydantic_extra__",
        "__pydantic_private__",
    )


@pytest.mark.parametrize("cls", [LLMResult, Timings, Job, LLMRequest, RouteHop, Attempt])
def test_trusted_builds_what_model_construct_builds(cls: type[BaseModel]) -> None:
    assert fits(cls)
    fields = {
        name: (info.get_default(call_default_factory=True) if not info.is_required() else "x")
        for name, info in cls.model_fields.items()
    }
    given = {next(iter(fields))}
    built = trusted(cls, dict(fields), set(given))
    constructed = cls.model_construct(given, **fields)
    for slot in BaseModel.__slots__:
        assert getattr(built, slot) == getattr(constructed, slot), slot
    assert list(built.__dict__) == list(cls.model_fields)


def job(**fields: Any) -> Job:
    request = {"custom_id": "r-1", "kind": fields.pop("kind", "chat"), "body": {"model": "m"}}
    route = [{"endpoint": "a"}, {"endpoint": "b", "model": "y"}]
    return Job.model_validate(
        {"batch_id": "b", "key": "r-1", "request": request, "route": route, "hop": 1}
        | {"enqueued_at": 1.5, "attempts": [{"endpoint": "a", "error": "timeout"}]}
        | fields
    )


def validated(job: Job, req: LLMRequest, resp: ProviderResponse, cost: float | None) -> Any:
    """What `succeeded` built before it stopped validating (#22)."""
    body, texts = resp.body, req.kind not in ("embeddings", "moderations")
    vectors = None
    if body is not None and req.kind == "embeddings":
        from schemas import vectors as packing

        body, vectors = packing.pack(body)
    return LLMResult(
        custom_id=req.custom_id,
        batch_id=job.batch_id,
        status="succeeded",
        kind=req.kind,
        output=resp.text if texts else None,
        tool_calls=resp.tool_calls,
        finish_reason=resp.finish_reason,
        body=body,
        vectors=vectors,
        endpoint=job.current.endpoint,
        model=resp.model,
        cost_usd=cost,
        request_id=resp.request_id,
        usage=resp.usage,
        attempts=job.attempts,
    )


CHAT = {"choices": [{"message": {"content": "é ✓", "tool_calls": []}}], "n": [1.5e300, -0.0]}
CALLS = [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]
EMBEDDINGS = {"data": [{"embedding": [0.5, -1.25]}, {"embedding": "AAAAPw=="}], "model": "e"}


@pytest.mark.parametrize(
    ("kind", "answer", "cost"),
    [
        ("chat", {"text": "hi", "body": CHAT, "tool_calls": CALLS, "request_id": "q"}, 1.2e-05),
        ("chat", {"text": "", "finish_reason": None}, None),
        ("embeddings", {"body": EMBEDDINGS, "usage": Usage(input_tokens=3)}, 0.0),
        ("moderations", {"text": "flagged", "body": {"results": []}}, None),
    ],
)
def test_a_success_is_the_result_validation_built(
    kind: str, answer: dict[str, Any], cost: float | None
) -> None:
    # Given a validated job and answer
    j = job(kind=kind)
    resp = ProviderResponse(model="gpt-test", **answer)
    # When its result is built, and when it is validated as before
    result, before = succeeded(j, j.request, resp, cost), validated(j, j.request, resp, cost)
    # Then both are the same result, stored as the same bytes
    assert result == before
    assert result.model_fields_set == before.model_fields_set
    assert result.json_bytes() == before.json_bytes() == before.model_dump_json().encode()
    assert LLMResult.model_validate_json(result.json_bytes()) == result
    # and, as validation copies them, changing the result leaves the job and answer alone
    assert result.attempts is not j.attempts and result.timings is not before.timings
    if resp.body is not None and kind != "embeddings":
        assert result.body == resp.body and result.body is not resp.body
    if resp.tool_calls:
        result.tool_calls[0]["id"] = "changed"  # type: ignore[index]
        assert resp.tool_calls[0]["id"] == "c1"
    result.timings.started_at = 2.0
    assert succeeded(j, j.request, resp, cost).timings == Timings()


@pytest.mark.parametrize(
    "counts",
    [(3, 2, 1, 4), (None, None, None, None), (0, 7, None, 0), (-4, 2, -1, None), (1, -1)],
)
def test_counted_usage_is_the_validated_usage(counts: tuple[int | None, ...]) -> None:
    # Counts an answer's validation left as `int | None`, each read as validation reads it
    names = ("input_tokens", "output_tokens", "cached_tokens", "reasoning_tokens")
    before = Usage(**{name: n or 0 for name, n in zip(names, counts, strict=False)})
    counted = Usage.counted(*counts)
    assert counted == before and list(counted.__dict__) == list(before.__dict__)
    assert counted.model_fields_set == set(names)
    assert counted.model_dump_json() == before.model_dump_json()
    assert all(type(v) is int for v in counted.__dict__.values())


@pytest.mark.parametrize("status", ["succeeded", "errored"])
def test_a_stamped_result_is_the_assigned_one(status: str) -> None:
    # Given two equal results, one built from an answer (`succeeded`) or one by validation
    j = job()
    if status == "succeeded":
        resp = ProviderResponse(model="gpt-test", text="hi", body={"id": "x"})
        stamped, assigned = (succeeded(j, j.request, resp, None) for _ in range(2))
    else:
        stamped, assigned = (
            LLMResult(custom_id="r-1", batch_id="b", status="errored") for _ in range(2)
        )
    times = Timings(enqueued_at=1.5, started_at=2.0, finished_at=2.5)
    # When one is stamped and the other has both fields assigned
    assign(stamped, trace_id="ab" * 16, timings=times)
    assigned.trace_id, assigned.timings = "ab" * 16, times
    # Then they are the same result, with the same fields set, stored as the same bytes
    assert stamped == assigned
    assert stamped.model_fields_set == assigned.model_fields_set
    assert list(stamped.__dict__) == list(assigned.__dict__)
    assert stamped.json_bytes() == assigned.json_bytes()
