"""Gateway settings: the `gateway:` section, BATCHYARD_GATEWAY_* overrides, one-line errors."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import yaml

from producers.gateway.config import GatewayConfig, load_gateway_config
from schemas.config import ConfigError

DIGEST = hashlib.sha256(b"sk-service").hexdigest()


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("BATCHYARD_GATEWAY_"):
            monkeypatch.delenv(name)


def write(tmp_path: Path, data: dict[str, object]) -> Path:
    path = tmp_path / "batchyard.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_gateway_section_sits_beside_endpoints_and_expands_variables(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DASH_KEY_SHA", DIGEST.upper())
    path = write(
        tmp_path,
        {
            "endpoints": {"mock": {"provider": "mock"}},
            "gateway": {
                "keys": [
                    {"name": "svc", "sha256": DIGEST, "rate_per_min": 100},
                    {"name": "dash", "sha256": "${DASH_KEY_SHA}", "role": "read", "owner": "svc"},
                ],
                "max_upload_mib": 10,
                "storage_dir": str(tmp_path / "files"),
            },
        },
    )
    app_config, config = load_gateway_config(path)
    assert list(app_config.endpoints) == ["mock"]
    svc, dash = config.keys
    assert (svc.tenant, svc.role, svc.rate_per_min) == ("svc", "write", 100)
    assert (dash.tenant, dash.role, dash.sha256) == ("svc", "read", DIGEST)
    assert config.max_upload_bytes == 10 * 1024 * 1024
    assert config.storage_dir == tmp_path / "files"


def test_environment_overrides_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(
        tmp_path, {"endpoints": {"mock": {"provider": "mock"}}, "gateway": {"max_upload_mib": 10}}
    )
    monkeypatch.setenv("BATCHYARD_GATEWAY_MAX_UPLOAD_MIB", "3")
    monkeypatch.setenv("BATCHYARD_GATEWAY_KEYS", f"svc:{DIGEST},dash:{DIGEST[::-1]}:read:svc")
    _, config = load_gateway_config(path)
    assert config.max_upload_mib == 3
    assert [(k.name, k.role, k.tenant) for k in config.keys] == [
        ("svc", "write", "svc"),
        ("dash", "read", "svc"),
    ]


def test_keys_env_also_takes_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BATCHYARD_GATEWAY_KEYS", f'[{{"name": "a", "sha256": "{DIGEST}"}}]')
    assert [k.name for k in GatewayConfig().keys] == ["a"]


def test_no_config_file_means_the_mock_endpoint_and_no_keys(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    app_config, config = load_gateway_config(None)
    assert list(app_config.endpoints) == ["mock"]
    assert config.keys == []


@pytest.mark.parametrize(
    ("section", "expected"),
    [
        ({"keys": [{"name": "a", "sha256": "abc"}]}, "gateway.keys.0.sha256: must be the sha256"),
        (
            {"keys": [{"name": "a", "sha256": DIGEST}, {"name": "a", "sha256": DIGEST}]},
            "key name 'a' is used twice",
        ),
        ({"max_uplod_mib": 5}, "gateway.max_uplod_mib: Extra inputs are not permitted"),
        ({"keys": [{"name": "a", "sha256": DIGEST, "role": "admin"}]}, "gateway.keys.0.role"),
        ("yes", "'gateway' must be a mapping"),
    ],
)
def test_mistakes_are_one_line_naming_the_field(
    tmp_path: Path, section: object, expected: str
) -> None:
    path = write(tmp_path, {"endpoints": {"mock": {"provider": "mock"}}, "gateway": section})
    with pytest.raises(ConfigError) as err:
        load_gateway_config(path)
    assert expected in str(err.value)
    assert "\n" not in str(err.value)


def test_malformed_keys_env_is_a_config_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("BATCHYARD_GATEWAY_KEYS", "just-a-name")
    path = write(tmp_path, {"endpoints": {"mock": {"provider": "mock"}}})
    with pytest.raises(ConfigError, match="name:sha256"):
        load_gateway_config(path)
