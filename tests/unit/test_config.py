"""Config files: ${VAR} expansion, validation errors that name endpoint and field, secrets."""

from __future__ import annotations

import gc
from pathlib import Path

import pytest

from providers.errors import BY_CODE, ProviderError
from providers.registry import check_config, provider_class
from schemas.config import (
    DEFAULT_ACTIONS,
    ConfigError,
    PolicyConfig,
    load_config,
    parse_config,
)


def test_no_file_means_the_mock_only_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    config = load_config(None)
    assert list(config.endpoints) == ["mock"]
    assert [h.endpoint for h in config.route()] == ["mock"]


def test_env_vars_expand_with_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MOCK_REPLY", "from-env")
    monkeypatch.delenv("UNSET_LATENCY", raising=False)
    config = parse_config(
        {
            "endpoints": {
                "m": {
                    "provider": "mock",
                    "reply": "${MOCK_REPLY}",
                    "latency_ms": "${UNSET_LATENCY:-5}",
                }
            }
        }
    )
    assert config.endpoints["m"].provider_options() == {"reply": "from-env", "latency_ms": "5"}


def test_missing_env_var_names_the_field(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOPE_KEY", raising=False)
    with pytest.raises(ConfigError, match=r"endpoints\.oa\.api_key: environment variable NOPE_KEY"):
        parse_config({"endpoints": {"oa": {"provider": "mock", "api_key": "${NOPE_KEY}"}}})


@pytest.mark.parametrize("value", [0, -5, 10**12, "lots"])
def test_absurd_limits_are_config_errors(value: object) -> None:
    with pytest.raises(ConfigError, match=r"endpoint 'm', field 'rpm'"):
        parse_config({"endpoints": {"m": {"provider": "mock", "rpm": value}}})


@pytest.mark.parametrize("value", [0, -1, 10**9, "big"])
def test_a_response_size_cap_out_of_range_is_a_config_error(value: object) -> None:
    with pytest.raises(ConfigError, match=r"endpoint 'm', field 'max_response_mb'"):
        parse_config({"endpoints": {"m": {"provider": "mock", "max_response_mb": value}}})
    assert (
        parse_config({"endpoints": {"m": {"provider": "mock"}}}).endpoints["m"].max_response_mb
        == 256
    )


def test_route_to_unknown_endpoint_is_an_error() -> None:
    with pytest.raises(ConfigError, match=r"unknown endpoint 'ghost' \(known: m\)"):
        parse_config(
            {"endpoints": {"m": {"provider": "mock"}}, "routes": {"default": ["m", "ghost"]}}
        )


def test_unknown_provider_lists_the_known_ones() -> None:
    with pytest.raises(ConfigError, match=r"unknown provider 'nope' \(known: .*mock"):
        provider_class("nope")


def test_unknown_provider_field_names_endpoint_field_and_allowed_keys() -> None:
    config = parse_config({"endpoints": {"m": {"provider": "mock", "replly": "x"}}})
    with pytest.raises(ConfigError, match=r"endpoint 'm', field 'replly': unknown field .*reply"):
        check_config(config)


def test_yaml_syntax_error_is_one_clear_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("endpoints: {m: [\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: not valid yaml"):
        load_config(path)


def test_toml_syntax_error_is_one_clear_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[endpoints\n")
    with pytest.raises(ConfigError, match=r"bad\.toml: not valid toml"):
        load_config(path)


def test_toml_config_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "batchyard.toml"
    path.write_text(
        '[endpoints.m]\nprovider = "mock"\nlatency_ms = 3\n\n[routes]\ndefault = ["m"]\n'
    )
    assert load_config(path).endpoints["m"].provider_options() == {"latency_ms": 3}


def test_api_key_never_shows_in_reprs() -> None:
    config = parse_config({"endpoints": {"m": {"provider": "mock", "api_key": "sk-SECRET-123"}}})
    assert "sk-SECRET-123" not in repr(config)
    assert "sk-SECRET-123" not in str(config.model_dump())
    assert config.endpoints["m"].api_key is not None
    assert config.endpoints["m"].api_key.get_secret_value() == "sk-SECRET-123"


def test_a_gateway_section_is_left_to_the_gateway() -> None:
    config = parse_config(
        {
            "endpoints": {"m": {"provider": "mock"}},
            "gateway": {"keys": [{"name": "svc", "sha256": "ab" * 32}]},
        }
    )
    assert config.gateway == {"keys": [{"name": "svc", "sha256": "ab" * 32}]}


def _error_classes(cls: type[ProviderError]) -> list[type[ProviderError]]:
    return [cls, *(c for sub in cls.__subclasses__() for c in _error_classes(sub))]


def test_every_error_class_has_a_policy_action() -> None:
    # The policy is the one place that says what a worker does with each error class; a class
    # it does not know would silently fall back to "fail".
    import workers.outcomes  # noqa: F401  (defines CircuitOpen, a ProviderError of the workers)

    codes = {c.code for c in _error_classes(ProviderError) if c is not ProviderError}
    assert "circuit_open" in codes
    assert codes <= set(DEFAULT_ACTIONS), codes - set(DEFAULT_ACTIONS)


def test_an_error_class_declares_its_code_and_joins_by_code_unless_found_before_a_call() -> None:
    import workers.outcomes  # noqa: F401  (CircuitOpen: found before a call, as Unsupported)

    codes = {c.code for c in _error_classes(ProviderError) if c is not ProviderError}
    assert set(BY_CODE) == codes - {"unsupported", "circuit_open"}
    assert all(cls.code == code for code, cls in BY_CODE.items())
    with pytest.raises(TypeError, match="code"):

        class Nameless(ProviderError):  # would have passed for its parent in results
            pass

    gc.collect()  # the half-made class leaves ProviderError.__subclasses__() for other tests
    assert "Nameless" not in {c.__name__ for c in _error_classes(ProviderError)}


def test_policy_overrides_the_default_action_of_one_class() -> None:
    policy = PolicyConfig(on={"content_filtered": "failover", "rate_limited": "fail"})
    assert policy.action("content_filtered") == "failover"
    assert policy.action("rate_limited") == "fail"
    assert policy.action("timeout") == "retry" and PolicyConfig().action("timeout") == "retry"
    assert policy.action("no_such_code") == "fail"
    with pytest.raises(ValueError, match="unknown error class 'gremlins'"):
        PolicyConfig(on={"gremlins": "retry"})  # type: ignore[dict-item]
