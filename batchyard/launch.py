"""The `batchyard` command's entry point: light on purpose.

`batchyard run` starts its first worker process here, before the CLI's own imports, so the two
start-ups overlap (`workers.warm`, #22); for a new batch on the Redis started here it hands that
worker its arguments here too (`early_redis.hand_worker_early`). The process ends through
`exit_now`, which skips the interpreter's teardown once output is flushed. `run` imports its
own command only (`producers.run_cli`), not the whole command line.
"""

from __future__ import annotations

import gc
import sys

from producers import early_redis
from workers import warm
from workers.lifetime import exit_now, imports_done


def main() -> None:
    """Console-script entry point (also `python -m batchyard`)."""
    running = sys.argv[1:2] == ["run"]
    gc.disable()  # the command's imports: see `imports_done`, called once they are done
    code: int = 0
    try:  # a Ctrl-C from here on still ends the early Redis and worker (`finally`)
        if running:
            early_redis.start(sys.argv[2:])
            warm.prestart(fork=True)
            early_redis.hand_worker_early(sys.argv[2:])
        import workers.lean_redis  # noqa: F401  (before anything imports redis-py)

        if running:  # the run's app: `run` without the other commands' imports
            from producers.run_cli import run_app

            imports_done()
            run_app()()
        else:
            from producers.cli import app

            imports_done()
            app()
    except SystemExit as exc:
        if isinstance(exc.code, str):
            print(exc.code, file=sys.stderr)
            code = 1
        else:
            code = exc.code or 0
    finally:
        warm.discard_all()
        early_redis.discard()
    exit_now(code)
