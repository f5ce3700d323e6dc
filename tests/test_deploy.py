"""The shipped example configuration loads, and the service unit runs real commands."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from broker.config import get_settings

DEPLOY = Path(__file__).parent.parent / "deploy"


def test_example_config_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MMBROKER_CONFIG_FILE", str(DEPLOY / "mmbroker.example.toml"))
    s = get_settings()
    assert s.http_port == 8000 and s.ivorn_authority == "local.mmbroker"


def test_systemd_unit_uses_existing_commands() -> None:
    unit = (DEPLOY / "systemd" / "mmbroker.service").read_text()
    assert "ExecStart=/opt/mmbroker/venv/bin/mmbroker serve" in unit
    assert "mmbroker db upgrade" in unit
    # Secrets come from a root-only EnvironmentFile, never the unit itself.
    assert "EnvironmentFile=-/etc/mmbroker/secrets.env" in unit
    settings = [line for line in unit.splitlines() if line.startswith("Environment=")]
    assert settings and not any(re.search(r"PASSWORD|TOKEN|SECRET|://[^/@\s]+:[^@\s]*@",
                                          line, re.IGNORECASE) for line in settings)
