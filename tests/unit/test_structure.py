"""The layout's promises (issue #15), checked so they cannot regress quietly.

One client API (same methods and parameters, sync and async), the gateway on the async client
only, no private cross-module calls in the producers, no import cycles, no module over 500
lines, producers that load without dramatiq, and one Redis protocol (`workers/protocol`) that
imports only `schemas` and holds every key name and Lua script the producers and gateway use.
"""

from __future__ import annotations

import ast
import inspect
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from producers.client import AsyncClient, Client

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("schemas", "providers", "workers", "producers")
MAX_LINES = 500


def _public_methods(cls: type) -> dict[str, inspect.Signature]:
    return {
        name: inspect.signature(member)
        for name, member in inspect.getmembers(cls, inspect.isfunction)
        if not name.startswith("_")
    }


def test_async_client_has_every_method_of_the_sync_client_with_the_same_parameters() -> None:
    sync, aio = _public_methods(Client), _public_methods(AsyncClient)
    assert "submit_file" in sync and "submit_chunks" in sync  # the comparison compares things
    missing = sorted(set(sync) - set(aio))
    assert not missing, f"AsyncClient lacks {missing}"
    for name, signature in sync.items():
        theirs = aio[name]
        assert list(signature.parameters.values()) == list(theirs.parameters.values()), (
            f"{name}: Client{signature} but AsyncClient{theirs}"
        )
        ours_async = inspect.iscoroutinefunction(getattr(AsyncClient, name))
        ours_gen = inspect.isasyncgenfunction(getattr(AsyncClient, name))
        assert ours_async or ours_gen, f"AsyncClient.{name} is not async"
    # And nothing public on the async side is missing from the sync one (but `aclose`).
    assert sorted(set(aio) - set(sync)) == ["aclose"]


def _modules(*packages: str) -> Iterator[tuple[str, Path]]:
    for package in packages:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            yield ".".join(parts), path


def _imports(path: Path, known: set[str]) -> set[str]:
    """Project modules a file imports anywhere (top level, functions, TYPE_CHECKING)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name in known}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                if sub in known:
                    found.add(sub)
                elif node.module in known:
                    found.add(node.module)
    return found


def test_gateway_uses_the_async_client_only() -> None:
    for name, path in _modules("producers"):
        if not name.startswith("producers.gateway"):
            continue
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module == "producers.client":
                names = {alias.name for alias in node.names}
                assert names <= {"AsyncClient"}, f"{name} imports {names} from producers.client"
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in ("to_thread", "run_in_executor")
            ):
                work = ast.unparse(node.args[0]) if node.args else ""
                assert "client" not in work and "ingest" not in work, (
                    f"{name}:{node.lineno}: {ast.unparse(node)} runs client work in a thread"
                )


def test_producers_use_no_private_attribute_of_another_object() -> None:
    offenders = []
    for name, path in _modules("producers"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if (
                isinstance(node, ast.Attribute)
                and node.attr.startswith("_")
                and not node.attr.startswith("__")
                and node.attr != "_replace"  # namedtuple's public API
                and not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"))
            ):
                offenders.append(f"{name}:{node.lineno} {ast.unparse(node)}")
    assert not offenders, "\n".join(offenders)


def test_no_import_cycles_between_modules() -> None:
    modules = dict(_modules(*PACKAGES))
    known = set(modules)
    packages = {name for name, path in modules.items() if path.name == "__init__.py"}
    # A package's __init__ re-exporting its modules is not a cycle between concepts.
    graph = {
        name: _imports(path, known) - packages - {name}
        for name, path in modules.items()
        if name not in packages
    }
    assert "producers.gmn" in graph["producers.client"]  # the graph sees real edges
    cycles = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(name: str, path: list[str]) -> None:
        state[name] = 1
        for dep in sorted(graph.get(name, ())):
            if state.get(dep) == 1:
                cycles.append(" -> ".join([*path[path.index(dep) :], dep]))
            elif dep not in state:
                visit(dep, [*path, dep])
        state[name] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_each_of_these_modules_loads_alone_in_a_fresh_interpreter() -> None:
    for name in (
        "producers.cli",
        "producers.run_cli",
        "producers.gmn_cli",
        "producers.client",
        "producers.gmn",
    ):
        run = subprocess.run(
            [sys.executable, "-c", f"import {name}"], cwd=ROOT, capture_output=True, text=True
        )
        assert run.returncode == 0, f"import {name}: {run.stderr}"


def test_no_module_over_500_lines() -> None:
    long = {
        name: n
        for name, path in _modules(*PACKAGES)
        if (n := len(path.read_text().splitlines())) > MAX_LINES
    }
    assert not long, f"split these by concept: {long}"


def test_producers_load_without_dramatiq() -> None:
    code = (
        "import producers.client, producers.collect, producers.submit, sys; "
        "assert 'dramatiq' not in sys.modules, 'dramatiq was imported'"
    )
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr


#: `f"{prefix}:file:{file_id}"`: a formatted value followed by `:word` builds a Redis key.
_KEY_AFTER_VALUE = re.compile(r"^:[A-Za-z_]+(:|$)")
#: `"batchyard:gw:ingesting"`: a plain key name.
_KEY_LITERAL = re.compile(r"^[A-Za-z_]+(:[A-Za-z_]+)+:?$")
_LUA_WORDS = ("redis.call", "KEYS[", "ARGV[")
_SCRIPT_CALLS = ("register_script", "eval", "evalsha", "script_load")


def _own_redis_protocol(source: str, name: str) -> list[str]:
    """Key names, Lua source or ad-hoc script calls in a module's code."""
    found = []
    for node in ast.walk(ast.parse(source, name)):
        if isinstance(node, ast.JoinedStr):
            for before, part in zip(node.values, node.values[1:], strict=False):
                if (
                    isinstance(before, ast.FormattedValue)
                    and isinstance(part, ast.Constant)
                    and _KEY_AFTER_VALUE.match(str(part.value))
                ):
                    found.append(f"{name}:{node.lineno} key name {ast.unparse(node)}")
                    break
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            if any(word in node.value for word in _LUA_WORDS):
                found.append(f"{name}:{node.lineno} Lua source")
            elif _KEY_LITERAL.match(node.value):
                found.append(f"{name}:{node.lineno} key name {node.value!r}")
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in _SCRIPT_CALLS
        ):
            found.append(f"{name}:{node.lineno} script call {ast.unparse(node.func)}")
    return found


def test_producers_and_the_gateway_hold_no_redis_key_name_or_lua_of_their_own() -> None:
    # The check sees what it looks for (the shapes the gateway's keys.py had before the move).
    sample = (
        'PREFIX = "batchyard:gw:ingesting"\n'
        'def f(p, i): return f"{p}:file:{i}"\n'
        "LUA = \"return redis.call('get', KEYS[1])\"\n"
        "r.eval(LUA, 1, 'k')\n"
    )
    assert len(_own_redis_protocol(sample, "sample")) == 4
    offenders = [
        hit
        for name, path in _modules("producers")
        for hit in _own_redis_protocol(path.read_text(), name)
    ]
    assert not offenders, "move these into workers/protocol:\n" + "\n".join(offenders)


def test_the_protocol_imports_only_schemas() -> None:
    modules = dict(_modules(*PACKAGES))
    protocol = {name: path for name, path in modules.items() if name.startswith("workers.protocol")}
    assert "workers.protocol.gateway" in protocol
    for name, path in protocol.items():
        outside = {
            dep
            for dep in _imports(path, set(modules))
            if not dep.startswith(("schemas", "workers.protocol"))
        }
        assert not outside, f"{name} imports {sorted(outside)}"
    code = (
        f"import sys, {', '.join(sorted(protocol))}; "
        "loaded = {m.split('.')[0] for m in sys.modules}; "
        "assert not loaded & {'dramatiq', 'aiohttp', 'providers', 'producers'}, loaded"
    )
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr


def test_workers_name_redis_keys_only_through_the_protocol() -> None:
    # dramatiq_ext spells dramatiq's own keys (heartbeats, acks): dramatiq's layout, not ours.
    offenders = [
        hit
        for name, path in _modules("workers")
        if not name.startswith(("workers.protocol", "workers.dramatiq_ext"))
        for hit in _own_redis_protocol(path.read_text(), name)
        if " key name " in hit
    ]
    assert not offenders, "name these in workers/protocol/keys.py:\n" + "\n".join(offenders)
