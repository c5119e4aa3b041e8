"""Where the command line writes, and how it turns a user's mistake into one red line."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Annotated, Any

import orjson
import redis
import typer
from rich.console import Console

from producers.collect import OutputError
from producers.run import RunFailed
from schemas.config import ConfigError
from workers.protocol.batch_record import BatchNotFound

err = Console(stderr=True, soft_wrap=True)
# Piped output (scripts, CI) gets full-width tables instead of rich's 80-column default.
out = Console(width=None if sys.stdout.isatty() else 200)

#: The report commands' `--json`.
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the report as JSON.")]


def print_report(
    data: dict[str, Any], as_json: bool, render: Callable[[Console, dict[str, Any]], None]
) -> None:
    """A report command's output: the report's dict as indented JSON, or rendered as tables."""
    if as_json:
        sys.stdout.write(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        render(out, data)


@contextmanager
def user_errors() -> Iterator[None]:
    """Turn the errors a user can fix into one red line and exit code 2 — no traceback."""
    try:
        yield
    except (
        ConfigError,
        BatchNotFound,
        RunFailed,
        OutputError,
        FileNotFoundError,
        ValueError,
    ) as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    except redis.ConnectionError as exc:
        err.print(f"[red]error:[/red] cannot reach Redis ({exc}); check REDIS_URL")
        raise typer.Exit(2) from None
    except ConnectionError as exc:  # gave up waiting for Redis (`wait_for_redis`)
        err.print(f"[red]error:[/red] cannot reach Redis: {exc}; check REDIS_URL")
        raise typer.Exit(2) from None
