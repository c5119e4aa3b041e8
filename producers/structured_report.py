"""`batchyard report BATCH`: validity per round, the most frequent errors, and tokens and cost
per valid answer, for any structured batch (json_schema, a plugin validator, or GMN)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console
from rich.table import Table

from schemas.result import LLMResult


@dataclass
class RoundCounts:
    """What the structured and the GMN report both count: answers and valid answers per
    round, error keys over all rounds and in final answers, failed calls, valid, tokens."""

    call_failed: int = 0
    valid: int = 0
    tokens: int = 0
    answers: Counter[int] = field(default_factory=Counter)
    valid_answers: Counter[int] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    final_errors: Counter[str] = field(default_factory=Counter)

    def count_answer(self, number: int, valid: bool, errors: Iterable[str]) -> None:
        """Count one round's answer and its error keys."""
        self.answers[number] += 1
        self.valid_answers[number] += valid
        self.errors.update(errors)


@dataclass
class StructuredReport(RoundCounts):
    """Counts over a batch's results; results without structured output count as `plain`."""

    requests: int = 0
    plain: int = 0
    structured: int = 0
    cost_usd: float = 0.0
    priced: int = 0

    def add(self, result: LLMResult) -> None:
        """Count one result."""
        self.requests += 1
        rounds = _rounds(result.extra)
        if rounds is None:
            self.plain += 1
            return
        history, final_valid, final_errors = rounds
        self.structured += 1
        self.tokens += result.usage.input_tokens + result.usage.output_tokens
        if result.cost_usd is not None:
            self.cost_usd += result.cost_usd
            self.priced += 1
        if result.status != "succeeded":
            self.call_failed += 1
        self.valid += final_valid
        for number, valid, errors in history:
            self.count_answer(number, valid, errors)
        self.final_errors.update(final_errors)

    def to_dict(self, top: int = 10) -> dict[str, Any]:
        """The report as JSON-ready data (what `batchyard report --json` prints)."""
        sent = self.structured
        rounds = round_rows(self.answers, self.valid_answers, sent)
        cost = round(self.cost_usd, 6) if self.priced else None
        return {
            "requests": self.requests,
            "plain": self.plain,
            "structured": sent,
            "call_failed": self.call_failed,
            "valid": self.valid,
            "validity": rate(self.valid, sent),
            "tokens": self.tokens,
            "cost_usd": cost,
            "tokens_per_valid": round(self.tokens / self.valid, 1) if self.valid else None,
            "cost_per_valid_usd": (
                round(cost / self.valid, 8) if cost is not None and self.valid else None
            ),
            "by_round": rounds,
            "errors_all_rounds": dict(self.errors.most_common(top)),
            "errors_final": dict(self.final_errors.most_common(top)),
        }


def error_key(error: dict[str, Any]) -> str:
    """How errors are grouped: code at pointer (`type at /age`); GMN's codes name the rule."""
    code = error.get("code") or "error"
    where = error.get("pointer")
    return f"{code} at {where}" if where else str(code)


def _code(error: dict[str, Any]) -> str:
    return str(error.get("code") or "error")


def _rounds(
    extra: dict[str, Any],
) -> tuple[list[tuple[int, bool, list[str]]], bool, list[str]] | None:
    """(round, valid, error keys) per round, the final verdict and its errors; None: plain."""
    record = extra.get("structured")
    if isinstance(record, dict):
        # GMN's codes name the rule; its pointers differ from document to document.
        key = _code if record.get("validator") == "gmn" else error_key
        history = [
            (h["round"], bool(h["valid"]), [key(e) for e in h.get("errors", [])])
            for h in record.get("history", [])
            if h["round"] >= 1
        ]
        final = [key(e) for e in record.get("errors", [])]
        return history, bool(record.get("valid")), final
    gmn = extra.get("gmn")
    if isinstance(gmn, dict):
        history = [
            (h["round"], bool(h["valid"]), list(h.get("codes", []))) for h in gmn.get("history", [])
        ]
        final = [str(e.get("code")) for e in gmn.get("errors", [])]
        return history, bool(gmn.get("valid")), final
    return None


def round_rows(answers: Counter[int], valid: Counter[int], sent: int) -> list[dict[str, Any]]:
    """Per round: answers, valid answers, their share, and the share of `sent` valid so far."""
    rows, cumulative = [], 0
    for r in sorted(answers):
        cumulative += valid[r]
        rows.append(
            {
                "round": r,
                "answers": answers[r],
                "valid_answers": valid[r],
                "answer_validity": rate(valid[r], answers[r]),
                "valid_after_round": rate(cumulative, sent),
            }
        )
    return rows


def rate(count: int, total: int) -> float | None:
    """count / total to four places; None when total is 0."""
    return round(count / total, 4) if total else None


def render(console: Console, data: dict[str, Any]) -> None:
    """The report as a summary line and two tables: by round, most frequent errors."""
    cost = data["cost_usd"]
    per_valid = data["cost_per_valid_usd"]
    console.print(
        f"{data['requests']} requests: {data['structured']} structured "
        f"({data['plain']} plain), {data['call_failed']} failed calls; {data['valid']} valid "
        f"({pct(data['validity'])}); {data['tokens']:,} tokens "
        f"({data['tokens_per_valid'] or '-'} per valid answer); cost "
        f"{'-' if cost is None else f'${cost:.4f}'} "
        f"({'-' if per_valid is None else f'${per_valid:.6f}'} per valid answer)",
        highlight=False,
        markup=False,
    )
    rounds = rounds_table(data["by_round"])
    errors = errors_table(
        data["errors_all_rounds"],
        data["errors_final"],
        "error",
        "final answers",
        "most frequent errors",
    )
    for table in (rounds, errors):
        console.print(table)


def rounds_table(rows: list[dict[str, Any]], *shares: str) -> Table:
    """The by-round table: answers, valid answers and the validity shares, then `shares`."""
    columns = ("answer_validity", "valid_after_round", *shares)
    table = Table(
        "round",
        "answers",
        "valid answers",
        *(c.replace("_", " ") for c in columns),
        title="by round",
    )
    for row in rows:
        table.add_row(
            str(row["round"]),
            str(row["answers"]),
            str(row["valid_answers"]),
            *(pct(row[c]) for c in columns),
        )
    return table


def errors_table(
    all_rounds: dict[str, int], final: dict[str, int], key: str, final_label: str, title: str
) -> Table:
    """Each error (or rule) key: the answers with it over all rounds, and the final ones."""
    table = Table(key, "answers (all rounds)", final_label, title=title)
    for name, count in all_rounds.items():
        # Plain text: keys may quote model answers, not rich markup.
        table.add_row(name, str(count), str(final.get(name, 0)))
    return table


def pct(value: object) -> str:
    """A share as a percentage; "-" where there is none."""
    return f"{value:.1%}" if isinstance(value, float | int) else "-"
