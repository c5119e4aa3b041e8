"""`Settings()` reads `BATCHYARD_*` / `REDIS_URL` as pydantic-settings did, without importing it:
its import was ~15-20 ms of CPU in every `batchyard run` and worker process (#22)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from schemas.settings import Settings, SettingsError
from tests.conftest import ROOT


@pytest.fixture(autouse=True)
def bare_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.upper().startswith("BATCHYARD_") or name.upper() == "REDIS_URL":
            monkeypatch.delenv(name)


def test_defaults_without_any_variable() -> None:
    s = Settings()
    assert (s.redis_url, s.config, s.namespace, s.enqueue_chunk, s.log_json) == (
        None,
        None,
        "batchyard",
        1000,
        False,
    )


def test_prefixed_variables_are_read_and_converted_case_insensitively(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("BATCHYARD_CONFIG", "/etc/by.yaml")
    monkeypatch.setenv("batchyard_namespace", "lower")
    monkeypatch.setenv("BATCHYARD_LOG_JSON", "yes")
    monkeypatch.setenv("BATCHYARD_IDLE_POLL_MS", "300")
    monkeypatch.setenv("BATCHYARD_UNKNOWN", "ignored")
    s = Settings()
    assert (s.config, s.namespace, s.log_json, s.idle_poll_ms) == (
        Path("/etc/by.yaml"),
        "lower",
        True,
        300,
    )


def test_batchyard_redis_url_wins_over_redis_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", "redis://plain")
    assert Settings().redis_url == "redis://plain"
    monkeypatch.setenv("BATCHYARD_REDIS_URL", "redis://prefixed")
    assert Settings().redis_url == "redis://prefixed"


def test_constructor_values_win_and_unknown_ones_are_ignored(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("REDIS_URL", "redis://env")
    monkeypatch.setenv("BATCHYARD_ENQUEUE_CHUNK", "7")
    s = Settings(redis_url=None, enqueue_chunk=5, bogus=1)
    assert (s.redis_url, s.enqueue_chunk) == (None, 5)


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        ("BATCHYARD_NAMESPACE", "bad space", "should match pattern"),
        ("BATCHYARD_RESULT_TTL_S", "5", "greater than or equal to 60"),
        ("BATCHYARD_LOG_JSON", "maybe", "valid boolean"),
        ("BATCHYARD_EVENT_LOOP", "tokio", "must be 'uvloop' or 'asyncio'"),
    ],
)
def test_a_bad_variable_is_one_line_naming_the_variable_and_its_value(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, says: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as err:
        Settings()
    text = str(err.value)
    assert text.startswith(f"{name}={value!r}: ") and says in text and "\n" not in text
    assert isinstance(err.value, ValueError) and err.value.__cause__ is None


def test_every_bad_value_is_named_and_a_given_one_by_its_field(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("BATCHYARD_IDLE_POLL_MS", "abc")
    monkeypatch.setenv("BATCHYARD_ENQUEUE_CHUNK", "0")
    with pytest.raises(SettingsError) as err:
        Settings(cancel_poll_s=0)
    parts = str(err.value).split("; ")
    assert [p.split(":")[0] for p in parts] == [
        "cancel_poll_s=0",
        "BATCHYARD_IDLE_POLL_MS='abc'",
        "BATCHYARD_ENQUEUE_CHUNK='0'",
    ]


def test_the_event_loop_is_read_in_any_case(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings().event_loop == "uvloop"
    monkeypatch.setenv("BATCHYARD_EVENT_LOOP", " AsyncIO ")
    assert Settings().event_loop == "asyncio"


def test_the_run_and_worker_processes_do_not_import_pydantic_settings() -> None:
    code = (
        "import sys, workers.process, producers.run_cli, producers.run\n"
        "print(sorted(m for m in sys.modules if m.startswith('pydantic_settings')))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
