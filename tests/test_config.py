"""Settings from MMBROKER_* variables, a TOML file, and overrides."""

from __future__ import annotations

from pathlib import Path

import pytest

from alerts_schema.errors import ConfigurationError
from broker.config import Settings, database_url_from_option, get_settings


def test_defaults(tmp_path: Path) -> None:
    s = get_settings()
    assert (s.http_host, s.http_port) == ("127.0.0.1", 8000)
    assert (s.vtp_receive_port, s.vtp_broadcast_port) == (8098, 8099)
    assert s.kafka_bootstrap is None
    assert s.effective_database_url == f"sqlite:///{tmp_path / 'data' / 'mmbroker.sqlite3'}"


def test_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MMBROKER_DATABASE_URL", "postgresql+psycopg://u@db:5432/mm")
    monkeypatch.setenv("MMBROKER_HTTP_PORT", "9000")
    monkeypatch.setenv("MMBROKER_KAFKA_BOOTSTRAP", "kafka:9092")
    monkeypatch.setenv("MMBROKER_IVORN_AUTHORITY", "km3net.mmbroker")
    s = get_settings()
    assert s.effective_database_url == "postgresql+psycopg://u@db:5432/mm"
    assert s.http_port == 9000 and s.kafka_bootstrap == "kafka:9092"
    assert s.ivorn_authority == "km3net.mmbroker"


def test_config_file_then_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "mmbroker.toml"
    cfg.write_text('http_port = 8111\nivorn_authority = "from.file"\n')
    monkeypatch.setenv("MMBROKER_CONFIG_FILE", str(cfg))
    monkeypatch.setenv("MMBROKER_HTTP_PORT", "8222")
    s = get_settings()
    assert s.ivorn_authority == "from.file" and s.http_port == 8222
    assert get_settings(http_port=8333).http_port == 8333


@pytest.mark.parametrize(("var", "value"), [
    ("MMBROKER_HTTP_PORT", "eighty"), ("MMBROKER_HTTP_PORT", "70000"),
    ("MMBROKER_IVORN_AUTHORITY", "has spaces/and#hash"), ("MMBROKER_LOG_LEVEL", "LOUD"),
    ("MMBROKER_CONFIG_FILE", "/nonexistent/mmbroker.toml"),
])
def test_bad_settings_are_configuration_errors(var: str, value: str,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(var, value)
    with pytest.raises(ConfigurationError):
        get_settings()


def test_every_setting_is_documented() -> None:
    doc = (Path(__file__).parent.parent / "docs" / "configuration.md").read_text()
    for name, field in Settings.model_fields.items():
        assert field.description, name
        assert f"MMBROKER_{name.upper()}" in doc, f"MMBROKER_{name.upper()} not in docs"


def test_database_option() -> None:
    assert database_url_from_option("postgresql+psycopg://x/y") == "postgresql+psycopg://x/y"
    assert database_url_from_option("/tmp/a.sqlite3") == "sqlite:////tmp/a.sqlite3"
