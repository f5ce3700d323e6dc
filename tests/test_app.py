"""The HTTP app: /health and /metrics on both backends, and the served demo."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from broker.archive import migrate
from broker.archive.store import Archive
from broker.config import get_settings
from broker.runtime.ingest import Ingestor
from broker.web.app import create_app
from broker.web.tokens import create_token
from listeners.envelope import RawMessage
from tests.conftest import free_port
from tests.servers import wait_for


def test_health_and_metrics(db_url: str) -> None:
    settings = get_settings(database_url=db_url)
    with TestClient(create_app(settings)) as client:
        health = client.get("/health")
        assert health.status_code == 200
        body = health.json()
        assert body["status"] == "ok" and body["schema_revision"] == migrate.head_revision()
        ingestor = Ingestor(client.app.state.archive, authority="t.mmbroker")
        ingestor.ingest([RawMessage("metrics-test", b"not json at all")])
        # They count hidden arrivals too: refused without a token holding read:metrics.
        assert client.get("/metrics").status_code == 401
        archive = client.app.state.archive
        ack, _ = create_token(archive, "shifter", ["ack", "read:embargoed"])
        assert client.get("/metrics", headers=_bearer(ack)).status_code == 403
        scraper, _ = create_token(archive, "prometheus", ["read:metrics"])
        metrics = client.get("/metrics", headers=_bearer(scraper))
        assert metrics.status_code == 200
        assert metrics.headers["content-type"].startswith("text/plain")
        assert 'mmbroker_messages_total{source="metrics-test",status="quarantined"}' \
            in metrics.text
        assert "mmbroker_ingest_batch_seconds_bucket" in metrics.text


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_health_reports_a_dead_database(tmp_path: Path) -> None:
    archive = Archive.open(f"sqlite:///{tmp_path / 'h.sqlite3'}")
    settings = get_settings()
    with TestClient(create_app(settings, archive=archive)) as client:
        archive.engine.dispose()
        (tmp_path / "h.sqlite3").unlink()
        (tmp_path / "h.sqlite3").mkdir()  # the path is now a directory: unopenable
        response = client.get("/health")
        assert response.status_code == 503
        assert response.json()["status"] == "degraded"


def test_openapi_describes_operations() -> None:
    with TestClient(create_app(get_settings())) as client:
        spec = client.get("/openapi.json").json()
    assert {"/health", "/metrics"} <= set(spec["paths"])


def _get_json(url: str) -> object:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


@pytest.mark.timeout(120)
def test_serve_demo_archives_the_scenario(tmp_path: Path) -> None:
    """`mmbroker serve --demo`, as the README runs it: the scenario lands in the archive."""
    port = free_port()
    db = tmp_path / "demo.sqlite3"
    exe = Path(sys.executable).with_name("mmbroker")
    env = {**os.environ, "MMBROKER_LOG_LEVEL": "WARNING",
           "MMBROKER_VTP_RECEIVE_PORT": str(free_port()),
           "MMBROKER_VTP_BROADCAST_PORT": str(free_port())}
    proc = subprocess.Popen([str(exe), "--db", str(db), "serve", "--demo", "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        deadline = time.monotonic() + 90
        while True:
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            try:
                if _get_json(f"http://127.0.0.1:{port}/health")["status"] == "ok":
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, "broker did not come up"
            time.sleep(0.2)
        archive = Archive.open(f"sqlite:///{db}", upgrade=False)
        while archive.count_alerts() < 3:
            assert time.monotonic() < deadline, "demo did not archive its three alerts"
            time.sleep(0.2)
        from broker.archive.store import AlertQuery

        docs = archive.list_alerts(AlertQuery(role="test"))
        assert sorted(d["messenger"] for d in docs) == ["gamma_ray", "gravitational_wave",
                                                        "neutrino"]
        # ...and ends with the coincidence VOEvents accepted by the built-in Comet.
        from broker.publish.outbox import status

        def delivered() -> set[str]:
            return {e["ivorn"].split("#")[1].split("-")[0] for e in status(archive)
                    if e["targets"].get("vtp", {}).get("state") == "sent"}

        assert wait_for(lambda: {"gw_cbc", "gw", "hen"} <= delivered(), 60), status(archive)
        archive.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            out, _ = proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
    # uvicorn finishes in-flight requests, then re-raises SIGTERM so the exit
    # status says how the process ended (systemd counts that as a clean stop).
    assert proc.returncode in (0, -signal.SIGTERM), out
    assert "demo" in out and "archived" in out
