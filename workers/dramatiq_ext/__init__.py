"""Everything in batchyard that extends dramatiq past its public API, fenced in one place.

Nothing outside this subpackage touches a private dramatiq name, copies a dramatiq function or
calls dramatiq's dispatch script. HOOKS.md lists each private hook used, the dramatiq version it
was read from (`upstream.READ_FROM`) and why; tests/unit/test_dramatiq_hooks.py fails, naming
the hook, when an installed dramatiq differs from what was read.
"""

from workers.dramatiq_ext.acks import AckBatcher
from workers.dramatiq_ext.broker import LaneBroker, Waker
from workers.dramatiq_ext.consumer import BatchAckConsumer
from workers.dramatiq_ext.dispatch import AsyncDispatch, Dispatch
from workers.dramatiq_ext.heartbeat import Heartbeat
from workers.dramatiq_ext.loop_worker import LoopFeeder, LoopWorker
from workers.dramatiq_ext.middleware import AsyncIOLoop, WaitForRedis

__all__ = [
    "AckBatcher",
    "AsyncDispatch",
    "AsyncIOLoop",
    "BatchAckConsumer",
    "Dispatch",
    "Heartbeat",
    "LaneBroker",
    "LoopFeeder",
    "LoopWorker",
    "WaitForRedis",
    "Waker",
]
