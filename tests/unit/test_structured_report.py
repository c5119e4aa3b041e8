"""`batchyard report` counts GMN results the same way as json_schema ones."""

from __future__ import annotations

from producers.structured_report import StructuredReport
from schemas.result import LLMResult, Usage


def test_gmn_results_count_by_round_with_their_rule_codes() -> None:
    history = [
        {"round": 1, "valid": False, "codes": ["GMN050"]},
        {"round": 2, "valid": True, "codes": []},
    ]
    fixed = LLMResult(
        custom_id="g",
        batch_id="b",
        status="succeeded",
        usage=Usage(input_tokens=90, output_tokens=10),
        cost_usd=0.5,
        extra={"gmn": {"valid": True, "errors": [], "history": history}},
    )
    plain = LLMResult(custom_id="p", batch_id="b", status="succeeded")
    report = StructuredReport()
    report.add(fixed)
    report.add(plain)
    data = report.to_dict()
    assert (data["structured"], data["plain"], data["valid"]) == (1, 1, 1)
    assert [r["valid_after_round"] for r in data["by_round"]] == [0.0, 1.0]
    assert data["errors_all_rounds"] == {"GMN050": 1}
    assert (data["tokens_per_valid"], data["cost_per_valid_usd"]) == (100.0, 0.5)
