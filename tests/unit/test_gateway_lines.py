"""Pure pieces of the gateway: bounded line reading, OpenAI error codes for bad lines,
completion windows, stable output file ids, and how a batch's status is derived."""

from __future__ import annotations

import io

import orjson
import pytest

from producers.gateway.batches import window_seconds
from producers.gateway.errors import ApiError
from producers.gateway.ingest import Problems, line_problem
from producers.gateway.state import with_max_connections
from producers.gateway.storage import read_lines
from producers.gateway.views import BatchState, output_file_id, parse_output_file_id
from schemas.batch_lines import LineError, parse_line


def test_read_lines_cuts_overlong_lines_and_skips_their_rest() -> None:
    data = b"short\n" + b"x" * 50 + b"\nnext\nlast-without-newline"
    lines = list(read_lines(io.BytesIO(data), 10))
    assert lines == [b"short\n", b"x" * 11, b"next\n", b"last-without-newline"[:11]]


def test_read_lines_keeps_blank_lines_so_numbers_match_the_file() -> None:
    assert list(read_lines(io.BytesIO(b"a\n\nb\n"), 100)) == [b"a\n", b"\n", b"b\n"]


def _error(raw: bytes) -> LineError:
    with pytest.raises(LineError) as err:
        parse_line(raw, 7)
    return err.value


@pytest.mark.parametrize(
    ("raw", "code", "param"),
    [
        (b"not json", "invalid_json_line", None),
        (b"[1]", "invalid_json_line", None),
        (
            orjson.dumps({"custom_id": "a", "method": "POST", "url": "/v1/images", "body": {}}),
            "url_mismatch",
            "url",
        ),
        (orjson.dumps({"custom_id": "a", "messages": []}), "invalid_request", "messages"),
    ],
)
def test_line_errors_get_openai_codes(raw: bytes, code: str, param: str | None) -> None:
    problem = line_problem(_error(raw))
    assert (problem["code"], problem["param"], problem["line"]) == (code, param, 7)
    assert problem["message"].startswith("line 7")


def test_problems_keep_the_first_ones_and_count_the_rest() -> None:
    problems = Problems(2)
    for line in range(1, 6):
        problems.add({"code": "x", "message": "m", "param": None, "line": line})
    entries = problems.entries()
    assert [e["line"] for e in entries[:2]] == [1, 2]
    assert entries[2]["code"] == "too_many_errors" and "3 more" in entries[2]["message"]


@pytest.mark.parametrize(("window", "seconds"), [("24h", 86400), ("90m", 5400), ("2d", 172800)])
def test_completion_windows(window: str, seconds: float) -> None:
    assert window_seconds(window) == seconds


@pytest.mark.parametrize("window", ["", "24", "0h", "1y", "31d", "h24"])
def test_bad_completion_windows_are_400(window: str) -> None:
    with pytest.raises(ApiError) as err:
        window_seconds(window)
    assert (err.value.status, err.value.param) == (400, "completion_window")


def test_output_file_ids_are_stable_and_name_their_batch() -> None:
    file_id = output_file_id("batch_abc", "errors")
    assert file_id == output_file_id("batch_abc", "errors")
    assert parse_output_file_id(file_id) == ("batch_abc", "errors")
    assert parse_output_file_id("file-0123456789") is None


def state(phase: str, **core: str) -> BatchState:
    gw = {"phase": phase, "created_at": "100.5", "window_s": "86400", "kind": "batch"}
    return BatchState("batch_x", gw, dict(core))


def test_status_is_the_gateway_phase_until_submitted_then_batchyards() -> None:
    assert state("validating").status() == "validating"
    assert state("failed").status() == "failed"
    assert state("submitting").status() == "in_progress"
    assert state("submitted", status="cancelling").status() == "cancelling"
    assert state("submitted", status="completed").status() == "completed"
    assert state("submitted", status="completed", n_expired="2").status() == "expired"
    asked = state("submitting")
    asked.gw["cancel_requested"] = "1"
    assert asked.status() == "cancelling"


def test_batch_object_names_output_files_once_finished() -> None:
    running = state("submitted", status="in_progress", total="3", completed="1", failed="1")
    obj = running.to_openai()
    assert obj["request_counts"] == {"total": 3, "completed": 1, "failed": 1}
    assert obj["output_file_id"] is None and obj["error_file_id"] is None
    assert obj["expires_at"] == 100 + 86400
    done = state(
        "submitted", status="completed", total="3", completed="3", failed="0", finished_at="200"
    ).to_openai()
    assert done["output_file_id"] == "file-batch_x-output" and done["error_file_id"] is None
    assert done["completed_at"] == 200


def test_pool_size_is_added_to_redis_urls_that_do_not_set_one() -> None:
    assert with_max_connections("redis://h:1/0", 7) == "redis://h:1/0?max_connections=7"
    assert with_max_connections("redis://h/0?max_connections=3", 7).endswith("=3")
    assert with_max_connections("redis://h/0?db=1", 7) == "redis://h/0?db=1&max_connections=7"
