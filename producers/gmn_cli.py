"""`batchyard gmn`: generate GMN documents in bulk, validate files, report on output files."""

from __future__ import annotations

import sys
import tempfile
import time
from collections import Counter, defaultdict
from contextlib import ExitStack
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer
import yaml
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from producers import gmn
from producers.client import Client
from producers.console import JsonOpt, err, out, print_report, user_errors
from producers.context_probe import route_context
from producers.run import RunFailed, local_workers
from producers.run_cli import ConfigOpt
from producers.structured_report import (
    RoundCounts,
    errors_table,
    pct,
    rate,
    round_rows,
    rounds_table,
)
from schemas.config import DEFAULT_CONFIG, load_config, parse_config
from schemas.gmn import ValidationReport, validate_gmn, validate_reply
from schemas.gmn.copies import COPY_CODE, StructureIndex
from schemas.gmn.strategy import STRATEGIES
from schemas.settings import Settings
from workers.supervisor import Supervisor

gmn_app = typer.Typer(
    help="Bulk GMN generation: prompts in, validated GMN documents out.", no_args_is_help=True
)

#: Used instead of the built-in default config (a mock in echo mode) when no config file is
#: given: GMN mode, with a share of invalid first answers so the refine loop shows offline.
GMN_DEFAULT_CONFIG = {
    "endpoints": {"mock": {"provider": "mock", "mode": "gmn", "gmn_invalid_rate": 0.25, "seed": 0}},
    "routes": {"default": ["mock"]},
}


class ExampleOption(StrEnum):
    """`--example`: the choices of `schemas.gmn.examples.ExampleChoice`."""

    explorer = "explorer"
    contrast = "contrast"
    none = "none"


class ProfileOption(StrEnum):
    """`--profile`: the choices of `schemas.gmn.prompts.Profile`."""

    full = "full"
    lean = "lean"
    auto = "auto"


def gmn_config(settings: Settings, stack: ExitStack, console: Console) -> Settings:
    """Settings whose config is GMN-ready: the built-in default becomes the mock in GMN mode."""
    if load_config(settings.config) != parse_config(DEFAULT_CONFIG, "default config"):
        return settings
    folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="batchyard-gmn-")))
    path = folder / "batchyard-gmn.yaml"
    path.write_text(yaml.safe_dump(GMN_DEFAULT_CONFIG))
    console.print("[dim]no config file: the mock endpoint answers in GMN mode[/dim]")
    return settings.model_copy(update={"config": path})


@gmn_app.command()
def generate(
    file: Annotated[Path, typer.Argument(help="Prompts JSONL: custom_id, prompt, agent_type...")],
    output: Annotated[Path, typer.Option("--output", "-o")] = Path("gmn.jsonl"),
    rounds: Annotated[int, typer.Option(min=1, max=20, help="Answers per prompt, at most.")] = 3,
    processes: Annotated[int, typer.Option("--processes", "-p", min=1)] = 1,
    concurrency: Annotated[int, typer.Option("--concurrency", min=1, max=5000)] = 64,
    config: ConfigOpt = None,
    route: Annotated[str | None, typer.Option(help="Named route from the config.")] = None,
    json_mode: Annotated[
        bool, typer.Option(help="Ask for the provider's JSON mode (every endpoint must have it).")
    ] = False,
    temperature: Annotated[float, typer.Option(min=0.0, max=2.0)] = 0.2,
    max_tokens: Annotated[int | None, typer.Option(min=1)] = None,
    timeout: Annotated[float | None, typer.Option(help="Give up after this many seconds.")] = None,
    example: Annotated[
        ExampleOption,
        typer.Option(
            help="Complete example in the prompt: explorer, contrast (one unlike the agent "
            "type) or none (syntax only).",
        ),
    ] = ExampleOption.explorer,
    context_tokens: Annotated[
        int | None,
        typer.Option(
            min=64,
            help="Fit every round into this context (default: the route's max_context_tokens, "
            "else what its OpenAI-compatible servers report: llama.cpp /props n_ctx, vLLM "
            "max_model_len).",
        ),
    ] = None,
    candidates: Annotated[
        int,
        typer.Option(
            min=1,
            max=16,
            help="Best-of-k: answers drawn in round 1 (n where the endpoint takes it, else up "
            "to k calls); the first valid one is kept, all count in tokens and cost.",
        ),
    ] = 1,
    profile: Annotated[
        ProfileOption,
        typer.Option(
            help="full: SPEC documents with matrices; lean: sizes and graph only (consumers "
            "use default matrices), under a skeleton schema where the endpoint decodes under "
            "one — for small models; auto: full, then lean from the round after a cut-off "
            "answer or any fault but a copy of the example.",
        ),
    ] = ProfileOption.full,
) -> None:
    """Generate one validated GMN document per prompt, refining invalid answers in rounds."""
    started = time.monotonic()
    with user_errors(), ExitStack() as stack:
        if not file.is_file():
            raise FileNotFoundError(f"input file not found: {file}")

        settings = Settings()
        if config is not None:
            settings = settings.model_copy(update={"config": config})
        settings = gmn_config(settings, stack, err)
        app_config = load_config(settings.config)
        local = stack.enter_context(
            local_workers(settings, processes=processes, concurrency=concurrency, console=err)
        )
        client = stack.enter_context(Client(local.url, settings=settings, config=app_config))
        hops = app_config.route(route or "default")
        if context_tokens is None and gmn.context_limit(app_config, hops) is None:
            context_tokens = route_context(app_config, hops)
            if context_tokens is not None:
                err.print(
                    f"[dim]context per request, as the server reports it: {context_tokens}[/dim]"
                )
        batch_id = client.generate_gmn_batch(
            file,
            rounds=rounds,
            route=route,
            json_mode=json_mode,
            temperature=temperature,
            max_tokens=max_tokens,
            example=example.value,
            context_tokens=context_tokens,
            candidates=candidates,
            profile=profile.value,
        )
        report = write_outcomes(client, batch_id, output, local.supervisor, timeout, err)
    summary = report.to_dict()
    rounds_text = ", ".join(
        f"round {r['round']} {pct(r['valid_after_round'])}" for r in summary["by_round"]
    )
    out.print(
        f"{batch_id}: {report.valid} of {report.prompts} prompts valid "
        f"({pct(summary['validity'])} of {report.sent} sent; {summary['distinct_valid']} "
        f"distinct, {summary['copies']} copies of the example), {report.rejected} rejected "
        f"line(s), {report.call_failed} failed call(s) in {time.monotonic() - started:.1f}s\n"
        f"valid after {rounds_text or '-'}\noutput: {output}",
        highlight=False,
    )


def write_outcomes(
    client: Client,
    batch_id: str,
    output: Path,
    supervisor: Supervisor | None,
    timeout_s: float | None,
    console: Console,
) -> GMNReport:
    """Write output lines as results arrive, behind a progress bar; the batch's report."""
    report = GMNReport()
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TextColumn("[green]{task.fields[valid]} valid"),
        TextColumn("[red]{task.fields[invalid]} invalid"),
        TimeRemainingColumn(),
    )
    with output.open("wb") as f, Progress(*columns, console=console) as bar:
        task = bar.add_task(batch_id, total=None, valid=0, invalid=0)
        for done, total, items in client.follow_gmn(batch_id):
            for item in items:
                f.write(gmn.outcome_line(item))
                report.add(item)
            invalid = report.prompts - report.valid
            bar.update(task, total=total, completed=done, valid=report.valid, invalid=invalid)
            if supervisor is not None and supervisor.failed:
                raise RunFailed(supervisor.failed)
            if deadline is not None and time.monotonic() > deadline:
                raise RunFailed(f"batch {batch_id} not finished after {timeout_s:.0f}s")
    return report


@gmn_app.command()
def validate(
    files: Annotated[list[Path], typer.Argument(help="GMN files (JSON or text form); - = stdin.")],
    as_json: Annotated[bool, typer.Option("--json", help="One JSON verdict per file.")] = False,
    reply: Annotated[
        bool, typer.Option("--reply", help="Files are LLM replies: extract the document first.")
    ] = False,
) -> None:
    """Validate GMN documents; exit 1 if any is invalid, 2 if a file cannot be read."""
    invalid = unreadable = False
    for path in files:
        try:
            data = sys.stdin.buffer.read() if str(path) == "-" else path.read_bytes()
        except OSError as exc:
            err.print(f"[red]error:[/red] {path}: cannot read ({exc.strerror})")
            unreadable = True
            continue
        report = validate_reply(data.decode("utf-8", "replace")) if reply else validate_gmn(data)
        invalid |= not report.valid
        if as_json:
            sys.stdout.write(orjson.dumps({"file": str(path), **report.verdict()}).decode() + "\n")
        else:
            _print_verdict(out, str(path), report)
    if unreadable:
        raise typer.Exit(2)
    if invalid:
        raise typer.Exit(1)


def _print_verdict(console: Console, name: str, report: ValidationReport) -> None:
    if report.valid:
        console.print(f"{name}: [green]valid[/green]", highlight=False)
        return
    console.print(f"{name}: [red]invalid[/red], {len(report.errors)} error(s)", highlight=False)
    for e in report.errors:
        node = f" (node {e.node})" if e.node else ""
        console.print(f"  {e.code}  {e.path}{node}  {e.message}", highlight=False, markup=False)


# --- report -------------------------------------------------------------------------------------

_NUMBERS = ("matrix", "distribution", "vector")


def without_sizes(document: dict[str, Any]) -> dict[str, Any]:
    """The graph of a document, node types and edges only (no sizes, no numbers)."""
    nodes = document.get("nodes")
    return {
        "nodes": [
            {"id": n.get("id"), "type": n.get("type")}
            for n in (nodes if isinstance(nodes, list) else [])
            if isinstance(n, dict)
        ],
        "edges": document.get("edges"),
    }


def has_numbers(document: dict[str, Any]) -> bool:
    """Whether any node of a document carries a matrix, distribution or vector."""
    nodes = document.get("nodes")
    return isinstance(nodes, list) and any(
        isinstance(node, dict)
        and isinstance(props := node.get("properties"), dict)
        and any(props.get(key) is not None for key in _NUMBERS)
        for node in nodes
    )


@dataclass
class GMNReport(RoundCounts):
    """Validity per agent type and per round, and the most frequent rule violations (the
    error keys here are GMN codes)."""

    prompts: int = 0
    rejected: int = 0
    by_agent: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    #: Final documents that copy a prompt's example (GMN091), and those whose only fault that is.
    copies: int = 0
    only_copies: int = 0
    structures: StructureIndex = field(default_factory=StructureIndex)
    #: Per strategy (`schemas.gmn.strategy`): rounds run with it, and documents it fixed.
    strategy_rounds: Counter[str] = field(default_factory=Counter)
    strategy_fixed: Counter[str] = field(default_factory=Counter)
    #: Valid final documents with no matrix, distribution or vector (the lean profile's, or
    #: a full answer that left them out): valid GMN, but consumers use default numbers.
    without_numbers: int = 0
    #: Prompts per profile (`full`, `lean`), and valid documents' distinct graphs with sizes
    #: left out: 22 lean documents on one skeleton would be one graph, however sized.
    profiles: Counter[str] = field(default_factory=Counter)
    graphs: StructureIndex = field(default_factory=StructureIndex)
    #: Valid documents that keep the sizes the prompt states (`grounded`), and valid ones
    #: whose line does not say (written before the check).
    grounded_valid: int = 0
    grounded_unknown: int = 0

    def add(self, item: gmn.GMNOutcome) -> None:
        """Count one output line."""
        agent = self.by_agent[item.agent_type or "unknown"]
        self.prompts += 1
        agent["prompts"] += 1
        self.tokens += item.tokens.get("total_tokens", 0)
        if item.line is not None:  # rejected before anything was sent
            self.rejected += 1
            agent["rejected"] += 1
            return
        agent["sent"] += 1
        self.profiles[item.profile or "unknown"] += 1
        self.call_failed += item.status != "succeeded"
        self.valid += item.valid
        agent["valid"] += item.valid
        for verdict in item.history:
            self.count_answer(verdict.round, verdict.valid, verdict.codes)
            if verdict.strategy is not None:
                self.strategy_rounds[verdict.strategy] += 1
                if verdict.valid and verdict.round > 1:
                    self.strategy_fixed[verdict.strategy] += 1
        codes = {e.code for e in item.errors if e.code.startswith("GMN")}
        self.final_errors.update(codes)
        if COPY_CODE in codes:
            self.copies += 1
            self.only_copies += codes == {COPY_CODE}
        if item.valid:
            self.grounded_valid += item.grounded is True
            self.grounded_unknown += item.grounded is None
        if item.valid and item.document is not None:
            self.structures.add(item.document, item.rounds or 1)
            self.without_numbers += not has_numbers(item.document)
            self.graphs.add(without_sizes(item.document))

    @property
    def sent(self) -> int:
        """Prompts that reached a model (not rejected at submit time)."""
        return self.prompts - self.rejected

    def to_dict(self, top: int = 10) -> dict[str, Any]:
        """The report as JSON-ready data (what `batchyard gmn report --json` prints)."""
        rounds = round_rows(self.answers, self.valid_answers, self.sent)
        for row in rounds:
            distinct = self.structures.distinct_by(row["round"])
            row["distinct_valid_after_round"] = rate(distinct, self.sent)
        strategies = {
            name: {
                "rounds": self.strategy_rounds[name],
                "fixed": self.strategy_fixed[name],
                "fix_rate": rate(self.strategy_fixed[name], self.strategy_rounds[name]),
            }
            for name in STRATEGIES
            if self.strategy_rounds[name]
        }
        agents = {
            name: {
                "prompts": c["prompts"],
                "rejected": c["rejected"],
                "valid": c["valid"],
                "validity": rate(c["valid"], c["sent"]),
            }
            for name, c in sorted(self.by_agent.items())
        }
        return {
            "prompts": self.prompts,
            "rejected": self.rejected,
            "sent": self.sent,
            "call_failed": self.call_failed,
            "valid": self.valid,
            "validity": rate(self.valid, self.sent),
            "distinct_valid": self.structures.distinct,
            "copies": self.copies,
            "valid_if_copies_counted": self.valid + self.only_copies,
            "valid_without_numbers": self.without_numbers,
            "distinct_graphs": self.graphs.distinct,
            "grounded_valid": self.grounded_valid,
            "grounded_validity": rate(self.grounded_valid, self.sent),
            "grounded_unknown": self.grounded_unknown,
            "profiles": dict(sorted(self.profiles.items())),
            "tokens": self.tokens,
            "by_agent_type": agents,
            "by_round": rounds,
            "by_strategy": strategies,
            "violations_all_rounds": dict(self.errors.most_common(top)),
            "violations_final": dict(self.final_errors.most_common(top)),
        }


@gmn_app.command()
def report(
    file: Annotated[Path, typer.Argument(help="Output of `batchyard gmn generate`.")],
    as_json: JsonOpt = False,
    top: Annotated[int, typer.Option(min=1, help="Rule violations to list.")] = 10,
) -> None:
    """Validity per agent type and per round, and the most frequent rule violations."""
    summary = GMNReport()
    with user_errors():
        for item in gmn.read_outcomes(file):
            summary.add(item)
    print_report(summary.to_dict(top), as_json, render_report)


def render_report(console: Console, data: dict[str, Any]) -> None:
    """The report as three tables: by agent type, by round, rule violations."""
    console.print(
        f"{data['prompts']} prompts: {data['sent']} sent, {data['rejected']} rejected, "
        f"{data['call_failed']} failed calls; {data['valid']} valid "
        f"({pct(data['validity'])} of sent), {data['distinct_valid']} distinct valid, "
        f"{data['copies']} copies of the example; {data['tokens']:,} tokens",
        highlight=False,
    )
    if data.get("profiles"):
        profiles = ", ".join(f"{name} {count}" for name, count in data["profiles"].items())
        console.print(
            f"profiles: {profiles}; valid documents: {data['distinct_valid']} distinct by graph "
            f"and sizes, {data['distinct_graphs']} distinct graphs with sizes left out",
            highlight=False,
        )
    if "grounded_valid" in data:
        unknown = data.get("grounded_unknown") or 0
        console.print(
            f"grounded valid: {data['grounded_valid']} ({pct(data['grounded_validity'])} of "
            "sent) keep the sizes the prompt states"
            + (f"; {unknown} valid lines do not say (written before the check)" if unknown else ""),
            highlight=False,
        )
    if data.get("valid_without_numbers"):
        console.print(
            f"{data['valid_without_numbers']} of the valid documents have no matrix, "
            "distribution or vector (consumers use default numbers)",
            highlight=False,
        )
    agents = Table("agent_type", "prompts", "rejected", "valid", "validity", title="by agent type")
    for name, row in data["by_agent_type"].items():
        agents.add_row(
            name, *(str(row[k]) for k in ("prompts", "rejected", "valid")), pct(row["validity"])
        )
    rounds = rounds_table(data["by_round"], "distinct_valid_after_round")
    strategies = Table("strategy", "rounds", "fixed", "fix rate", title="by strategy")
    for name, row in data["by_strategy"].items():
        strategies.add_row(name, str(row["rounds"]), str(row["fixed"]), pct(row["fix_rate"]))
    rules = errors_table(
        data["violations_all_rounds"],
        data["violations_final"],
        "rule",
        "final documents",
        "rule violations",
    )
    for table in (agents, rounds, strategies, rules):
        console.print(table)
