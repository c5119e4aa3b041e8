"""The worker reads each message's job with pydantic's validator itself (#22): the same job,
and the same error, as `Job.model_validate`."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from schemas.job import Job
from workers.execute import _validate_job

GOOD: dict[str, Any] = {
    "request": {"custom_id": "r-1", "body": {"model": "m", "messages": []}},
    "route": [{"endpoint": "a"}, {"endpoint": "b", "model": "y"}],
    "batch_id": "b",
    "key": "r-1",
    "enqueued_at": 1.5,
    "attempts": [{"endpoint": "a", "error": "timeout"}],
    "trace": {"traceparent": "00-" + "1" * 32 + "-" + "2" * 16 + "-00"},
    "lane": "@high",
}


def test_a_job_is_read_as_model_validate_reads_it() -> None:
    job, before = _validate_job(GOOD), Job.model_validate(GOOD)
    assert isinstance(job, Job) and job == before
    assert job.model_fields_set == before.model_fields_set
    assert job.model_dump_json() == before.model_dump_json()
    # an earlier version's flat request is read the same way too
    flat = GOOD | {"request": {"custom_id": "r-1", "messages": [{"role": "user", "content": "x"}]}}
    assert _validate_job(flat) == Job.model_validate(flat)


@pytest.mark.parametrize(
    "odd",
    [
        {"lane": "@HIGH"},
        {"route": []},
        {"hop": -1},
        {"request": {"custom_id": "r\n1", "body": {}}},
        {"unknown": 1},
    ],
)
def test_an_odd_job_fails_as_model_validate_fails(odd: dict[str, Any]) -> None:
    with pytest.raises(ValidationError) as ours:
        _validate_job(GOOD | odd)
    with pytest.raises(ValidationError) as theirs:
        Job.model_validate(GOOD | odd)
    assert ours.value.errors(include_context=False) == theirs.value.errors(include_context=False)
    assert str(ours.value) == str(theirs.value)
