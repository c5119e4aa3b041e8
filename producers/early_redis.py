"""`batchyard run`'s embedded Redis, started before the run's imports (#22).

A redis-server answers 20-50 ms after it is started, and `run` used to start its own only once
its imports were done and it had read its config and state: on the critical path of every run.
`start(args)` (called first thing by `batchyard.launch`) starts it where `run` will want it, in
`<output>.batchyard/redis` with its AOF on, but only for a new batch: no REDIS_URL set, no state
directory there yet, no --fresh, and a command line it reads for sure. `run_batch` takes it with
`claim` once its own reading of the same arguments and state agrees; `discard()` (at the
process's end) stops one nobody took and removes the directory it made. With that Redis
started, `hand_worker_early(args)` hands the prestarted worker its arguments at once.

Light to import: it runs before the fork of the prestarted worker (`workers.warm`).
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Mapping
from pathlib import Path

from workers.redis_server import RedisServer

#: `<output><STATE_SUFFIX>/` holds a run's Redis data and `run.json` until the batch completes.
STATE_SUFFIX = ".batchyard"

#: `batchyard run`'s options that take a value (see `producers.run_cli.run`) ...
VALUED = frozenset(
    {"-o", "--output", "-e", "--errors", "-p", "--processes", "--concurrency", "-c", "--config"}
    | {"--timeout", "--grace"}
)
#: ... and its flags that leave the output's state as it is (--fresh removes it; --help runs
#: nothing).
FLAGS = frozenset({"--keep-state"})
#: The long names of its short options.
LONG = {"-o": "--output", "-e": "--errors", "-p": "--processes", "-c": "--config"}
#: Where its output goes without -o, and its other defaults and bounds (`producers.run_cli.run`
#: takes them from here: the early handoff must read the command line as it does).
DEFAULT_OUTPUT = "results.jsonl"
DEFAULT_CONCURRENCY = 64
MAX_CONCURRENCY = 5000
DEFAULT_GRACE_S = 10.0

#: The server `start` made and the state directory it made for it, until claimed.
_spare: tuple[RedisServer, Path] | None = None


def options_of(args: list[str]) -> dict[str, str] | None:
    """The valued options of `batchyard run ARGS` by their long names (the last one given
    wins, as on its command line); None if an argument is one this reading is not sure of,
    or one that makes a new batch unlikely."""
    options: dict[str, str] = {}
    rest = iter(args)
    for arg in rest:
        if not arg.startswith("-") or arg == "-":
            continue  # the input file
        if arg.startswith("--"):
            name, given, value = arg.partition("=")
        else:  # -o FILE, or -oFILE
            name, value = arg[:2], arg[2:]
            given = "=" if value else ""
        if name in FLAGS and not given:
            continue
        if name not in VALUED:
            return None  # --fresh, --help, --, or what this reading does not know
        if not given:
            value = next(rest, "")
        if not value:
            return None
        options[LONG.get(name, name)] = value
    return options


def output_of(args: list[str]) -> Path | None:
    """The output file of `batchyard run ARGS` (`options_of`; None where that is)."""
    options = options_of(args)
    return None if options is None else Path(options.get("--output", DEFAULT_OUTPUT))


def worker_env(url: str) -> dict[str, str]:
    """What `batchyard run` sets in its workers' environment, beside its own."""
    return {
        "REDIS_URL": url,
        "BATCHYARD_LOG_LEVEL": os.environ.get("BATCHYARD_LOG_LEVEL", "WARNING"),
    }


def hand_worker_early(args: list[str]) -> None:
    """Hand the prestarted worker (`workers.warm`) the arguments and environment `run`'s
    supervisor will give its first worker, now, when they are sure: a Redis was started here
    for a new batch, and the command line's values read as `run` reads them. The worker then
    starts during this process's own imports, not after them (#22); `run` still checks the
    config and takes the worker only if it asks for the same (`warm.claim`)."""
    options = options_of(args)
    if _spare is None or options is None:
        return
    try:
        concurrency = int(options.get("--concurrency", DEFAULT_CONCURRENCY))
        grace_s = float(options.get("--grace", DEFAULT_GRACE_S))
        int(options.get("--processes", 1))
    except ValueError:
        return  # `run` reports it
    if not 1 <= concurrency <= MAX_CONCURRENCY or not grace_s >= 0:
        return
    # Imported by the prestart already (`warm.SHARED`), not by this module's importers.
    from schemas.settings import Settings
    from workers import warm
    from workers.lifetime import PARENT_PID_ENV
    from workers.supervisor import worker_args

    given = options.get("--config")
    try:
        config = Path(given) if given is not None else Settings().config
    except ValueError:  # a wrong BATCHYARD_* value: `run` reports it
        return
    env = {**os.environ, **worker_env(_spare[0].local_url), PARENT_PID_ENV: str(os.getpid())}
    warm.hand_early(worker_args(concurrency, grace_s, config), env, config)


def _redis_url_set(environ: Mapping[str, str]) -> bool:
    """Whether the settings may name a Redis (`schemas.settings`: BATCHYARD_REDIS_URL, then
    REDIS_URL, names matched in any case): either one set and not empty."""
    names = {"BATCHYARD_REDIS_URL", "REDIS_URL"}
    return any(name.upper() in names and value for name, value in environ.items())


def start(args: list[str]) -> None:
    """Start the embedded Redis of `batchyard run ARGS` now, if it will surely need a new one."""
    global _spare
    output = output_of(args)
    if output is None or _redis_url_set(os.environ) or not output.parent.is_dir():
        return
    state = output.with_name(output.name + STATE_SUFFIX)
    try:
        state.mkdir()
    except OSError:  # there already (a resume, or --fresh's to remove): `run` decides
        return
    server = RedisServer(
        dir=state / "redis", appendonly=True, die_with_parent=True, unix_socket=True
    )
    _spare = (server, state)  # from here on, `discard` removes what this made
    try:
        server.dir.mkdir()
        server.spawn()
    except Exception:  # `run` starts one itself, and reports what fails
        discard()


def claim(state: Path, wanted: bool) -> RedisServer | None:
    """The server `start` made for the run state `state`, if `wanted` (a new batch, on an
    embedded Redis); one made there but not wanted is discarded now, before the run touches
    its state. The caller waits for it (`RedisServer.start`) and stops it."""
    global _spare
    if _spare is None or os.path.abspath(_spare[1]) != os.path.abspath(state):
        return None
    server = _spare[0]
    if not wanted:
        discard()
        return None
    _spare = None
    return server


def discard() -> None:
    """Stop a server nobody claimed and remove the state directory made for it."""
    global _spare
    if _spare is None:
        return
    server, state = _spare
    _spare = None
    with contextlib.suppress(Exception):
        server.crash()
    shutil.rmtree(state, ignore_errors=True)
