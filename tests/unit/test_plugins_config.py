"""Plugins are found through entry points and their options are validated up front."""

from __future__ import annotations

import pytest

from schemas.config import ConfigError
from workers.plugins import check_plugins
from workers.plugins.cache import ResponseCache
from workers.plugins.redact import RedactConfig, Redactor


def test_built_ins_resolve_in_config_order() -> None:
    found = check_plugins({"redact": None, "cache": {"ttl_s": 60}})
    assert [cls for cls, _ in found] == [Redactor, ResponseCache]


def test_unknown_plugin_lists_known_ones() -> None:
    with pytest.raises(ConfigError, match=r"unknown plugin 'nope' \(known: cache, redact"):
        check_plugins({"nope": {}})


def test_unknown_option_and_bad_regex_name_the_field() -> None:
    with pytest.raises(ConfigError, match=r"plugin 'cache', field 'ttl'"):
        check_plugins({"cache": {"ttl": 5}})
    with pytest.raises(ConfigError, match=r"plugin 'redact', field 'patterns\.0'.*invalid regular"):
        check_plugins({"redact": {"patterns": ["(unclosed"]}})


def test_redactor_masks_every_pattern() -> None:
    redactor = Redactor(RedactConfig(patterns=[r"\d+", "secret"]), None, "ns")  # type: ignore[arg-type]
    assert redactor.redact("a secret 123 and 45") == "a [REDACTED] [REDACTED] and [REDACTED]"


def test_no_plugins_configured_scans_no_entry_points(monkeypatch: pytest.MonkeyPatch) -> None:
    # Scanning every installed package's entry points was ~3-5 ms, twice per worker start.
    def scan(**_: object) -> None:
        raise AssertionError("entry points scanned")

    monkeypatch.setattr("workers.plugins.entry_points", scan)
    assert check_plugins({}) == []
