"""Running it: readiness, metrics, JSON logs without tokens, body limits, secret files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from alerts_schema.errors import ConfigurationError
from broker.archive import migrate
from broker.archive.store import Archive
from broker.config import get_settings
from broker.web.app import create_app
from tests.conftest import ingest_demo, metric


def test_ready_says_what_is_wrong(archive: Archive) -> None:
    settings = get_settings(comet=False)
    with TestClient(create_app(settings, archive=archive)) as client:
        ready = client.get("/ready")
        assert ready.status_code == 200, ready.text
        assert ready.json() == {"status": "ready", "checks": {"archive": "ok",
                                                               "live_feed": "ok"}}
        migrate.downgrade(archive.engine, "0006")
        try:
            behind = client.get("/ready")
            assert behind.status_code == 503
            assert "schema at 0006" in behind.json()["checks"]["archive"]
            assert client.get("/health").status_code == 200  # alive, just not ready
        finally:
            migrate.upgrade(archive.engine)


def test_metrics_cover_match_publish_and_the_outbox(archive: Archive) -> None:
    from broker.metrics import REGISTRY

    def value(name: str, **labels: str) -> float:
        return REGISTRY.get_sample_value(name, labels) or 0.0

    matched = value("mmbroker_match_latency_seconds_count")
    gw_hen = value("mmbroker_coincidences_total", pairing="gw-hen", state="new")
    ingest_demo(archive, targets=("vtp",))
    # The registry is the process's: what this test did is the difference.
    assert value("mmbroker_match_latency_seconds_count") - matched == 3
    assert value("mmbroker_coincidences_total", pairing="gw-hen", state="new") - gw_hen == 1
    from broker.web.tokens import create_token

    scraper, _ = create_token(archive, "prometheus", ["read:metrics"])
    with TestClient(create_app(get_settings(comet=False), archive=archive)) as client:
        text = client.get("/metrics", headers={"Authorization": f"Bearer {scraper}"}).text
    # The trigger's VOEvent and the three coincidences' wait for Comet.
    assert metric(text, "mmbroker_outbox_pending", target="vtp") == 4


def test_json_logs_carry_alert_ids_and_never_tokens() -> None:
    code = (
        "import logging\n"
        "from broker import logs\n"
        "logs.configure('INFO', 'json')\n"
        "log = logging.getLogger('broker.runtime.pipeline')\n"
        "log.info('coincidence %s', 'ivo://x/c#1', extra={'ivorn': 'ivo://x/c#1'})\n"
        "log.warning('rejected token %s', 'mmb_0123456789abcdefABCDEF')\n"
        "logging.getLogger('uvicorn.access').info('GET /?t=mmb_zzzzzzzzzzzz 200')\n"
        "try:\n"
        "    raise ValueError('bad token mmb_yyyyyyyyyyyyyy')\n"
        "except ValueError:\n"
        "    log.exception('failed', extra={'token': 'mmb_xxxxxxxxxxxx'})\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=True).stderr
    records = [json.loads(line) for line in out.splitlines()]
    assert records[0]["ivorn"] == "ivo://x/c#1" and records[0]["level"] == "INFO"
    assert records[0]["time"].endswith("Z") and records[0]["logger"] == "broker.runtime.pipeline"
    for secret in ("mmb_0123456789", "mmb_zzzz", "mmb_yyyy", "mmb_xxxx"):
        assert secret not in out, secret
    assert records[1]["message"] == "rejected token mmb_[redacted]"
    assert "ValueError: bad token mmb_[redacted]" in records[3]["exception"]
    # The text format too.
    text_out = subprocess.run([sys.executable, "-c", code.replace("'json'", "'text'")],
                              capture_output=True, text=True, timeout=60, check=True).stderr
    assert "mmb_yyyy" not in text_out and "bad token mmb_[redacted]" in text_out


def test_request_bodies_have_a_ceiling(archive: Archive) -> None:
    settings = get_settings(comet=False, http_max_body_bytes=1024)
    with TestClient(create_app(settings, archive=archive)) as client:
        big = {"token": "x" * 5000}
        assert client.post("/dashboard/login", data=big).status_code == 413

        def chunks():  # no Content-Length: counted as it streams
            for _ in range(10):
                yield b"token=" + b"y" * 200

        reply = client.post("/dashboard/login", content=chunks(),
                            headers={"Content-Type": "application/x-www-form-urlencoded"})
        assert reply.status_code == 413 and "1024 bytes" in reply.json()["detail"]
        small = client.post("/dashboard/login", data={"token": "mmb_nope"})
        assert small.status_code == 401  # under the ceiling: the route answers
        # Triggers have their own, larger limit (and answer 401 before reading here).
        assert client.post("/api/v1/triggers", content=b"{}" * 2000,
                           headers={"Content-Type": "application/json"}).status_code == 401


def test_secrets_come_from_owner_only_files(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    secret = tmp_path / "db-url"
    secret.write_text("sqlite:////tmp/from-a-file.sqlite3\n")
    secret.chmod(0o644)
    monkeypatch.setenv("MMBROKER_DATABASE_URL_FILE", str(secret))
    with pytest.raises(ConfigurationError, match="chmod 600"):
        get_settings()
    secret.chmod(0o600)
    assert get_settings().database_url == "sqlite:////tmp/from-a-file.sqlite3"
    monkeypatch.setenv("MMBROKER_DATABASE_URL", "sqlite:////tmp/other.sqlite3")
    with pytest.raises(ConfigurationError, match="keep one"):
        get_settings()

    from listeners.kafka import config_from_env

    password = tmp_path / "kafka-password"
    password.write_text("s3cret\n")
    password.chmod(0o640)
    env = {"KAFKA_SASL_USERNAME": "broker", "KAFKA_SASL_PASSWORD_FILE": str(password)}
    with pytest.raises(ConfigurationError, match="readable or writable by others"):
        config_from_env(env)
    password.chmod(0o400)
    assert config_from_env(env) == {"sasl.username": "broker", "sasl.password": "s3cret"}
    assert os.environ.get("KAFKA_SASL_PASSWORD") is None


@pytest.mark.timeout(180)
def test_sigterm_finishes_what_is_in_flight(tmp_path: Path) -> None:
    """`mmbroker serve` stopped by SIGTERM while triggers pour in: every trigger it
    answered 201 for is archived, none twice, and it exits cleanly within its grace."""
    import signal
    import threading
    import time
    import urllib.error

    from tests.dashboard_support import create_token, running_broker, scenario

    db = tmp_path / "broker.sqlite3"
    token = create_token(db, "poster", "write:triggers", detectors=("KM3NeT",))
    answered: list[str] = []
    with running_broker(tmp_path, env={"MMBROKER_LOG_LEVEL": "INFO"}) as broker:
        stop = threading.Event()

        def post(worker: int) -> None:
            from datetime import UTC, datetime, timedelta

            start = datetime.now(UTC) - timedelta(hours=1)
            for i in range(worker, 10_000, 2):
                if stop.is_set():
                    return
                trigger, _ = scenario(start + timedelta(seconds=i), ra_deg=i % 360)
                try:
                    answered.append(broker.post_trigger(token, trigger))
                except (urllib.error.URLError, ConnectionError, OSError):
                    return  # the server has stopped taking requests

        posters = [threading.Thread(target=post, args=(k,)) for k in range(2)]
        for t in posters:
            t.start()
        while len(answered) < 20:
            time.sleep(0.05)
        broker.proc.send_signal(signal.SIGTERM)
        code = broker.proc.wait(30)
        stop.set()
        for t in posters:
            t.join(30)
    # uvicorn re-raises the signal once it has shut down, as a service manager expects.
    assert code in (0, -signal.SIGTERM)
    log = (tmp_path / "broker.log").read_text()
    assert "Application shutdown complete." in log, log[-2000:]
    archive = Archive.open(f"sqlite:///{db}", upgrade=False)
    try:
        with archive.engine.connect() as conn:
            from sqlalchemy import text

            stored = [r[0] for r in conn.execute(text("SELECT ivorn FROM alerts"))]
    finally:
        archive.close()
    assert len(stored) == len(set(stored))
    assert set(answered) <= set(stored), set(answered) - set(stored)


@pytest.mark.timeout(180)
def test_metrics_are_scoped_on_the_http_port_and_open_on_the_ops_port(tmp_path: Path) -> None:
    """`mmbroker serve` with one public and three embargoed triggers: an anonymous caller
    of the HTTP port gets 401 from /metrics (they count every arrival, hidden ones too),
    a read:metrics token gets them, and the ops listener serves them without a token,
    with /health and /ready, for Prometheus and probes."""
    import urllib.error
    import urllib.request
    from datetime import UTC, datetime

    from tests.conftest import free_port
    from tests.dashboard_support import create_token, running_broker, scenario

    db = tmp_path / "broker.sqlite3"
    poster = create_token(db, "poster", "write:triggers", detectors=("KM3NeT",))
    scraper = create_token(db, "prometheus", "read:metrics")
    ops = free_port()
    with running_broker(tmp_path, env={"MMBROKER_OPS_PORT": str(ops)}) as broker:
        for i, level in enumerate(["public", "embargoed", "embargoed", "embargoed"]):
            trigger, _ = scenario(datetime.now(UTC), ra_deg=10.0 + i)
            trigger["event_id"] += f"-{i}"
            if level == "embargoed":
                trigger["data_rights"] = {"level": "embargoed",
                                          "embargo_until": "2099-01-01T00:00:00Z"}
            broker.post_trigger(poster, trigger)

        def get(url: str, token: str | None = None) -> tuple[int, str]:
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            try:
                with urllib.request.urlopen(urllib.request.Request(url, headers=headers),
                                            timeout=10) as response:
                    return response.status, response.read().decode()
            except urllib.error.HTTPError as exc:
                return exc.code, exc.read().decode()

        status, body = get(f"{broker.url}/metrics")
        assert status == 401 and "mmbroker_messages_total" not in body, (status, body)
        assert get(f"{broker.url}/metrics", scraper)[0] == 200
        status, body = get(f"http://127.0.0.1:{ops}/metrics")
        assert status == 200
        assert metric(body, "mmbroker_messages_total", source="detector",
                      status="archived") == 4
        assert get(f"http://127.0.0.1:{ops}/health")[0] == 200
        status, body = get(f"http://127.0.0.1:{ops}/ready")
        assert status == 200 and json.loads(body)["checks"]["live_feed"] == "ok", body


@pytest.mark.timeout(180)
def test_the_api_stage_opens_the_ops_listener_too(tmp_path: Path, pg_url: str) -> None:
    """`mmbroker stage api` (a real tansu, PostgreSQL): /metrics refused on its HTTP port
    without a token and served on MMBROKER_OPS_PORT, where Kubernetes scrapes it; its
    /ready there answers as on the HTTP port."""
    import urllib.error
    import urllib.request

    from tests.conftest import free_port
    from tests.servers import stop_process, tansu, wait_for
    from tests.stage_support import start_stage

    Archive.open(pg_url).close()
    http, ops = free_port(), free_port()
    with tansu(tmp_path) as bootstrap:
        proc = start_stage("api", pg_url, {
            "MMBROKER_KAFKA_BOOTSTRAP": bootstrap, "MMBROKER_COMET": "false",
            "MMBROKER_HTTP_PORT": str(http), "MMBROKER_OPS_PORT": str(ops)},
            tmp_path / "api.log")
        try:
            def status(url: str) -> int | None:
                try:
                    with urllib.request.urlopen(url, timeout=5) as response:
                        return response.status
                except urllib.error.HTTPError as exc:
                    return exc.code
                except OSError:
                    return None

            assert wait_for(lambda: status(f"http://127.0.0.1:{http}/ready") == 200, 90,
                            0.3), (tmp_path / "api.log").read_text()[-3000:]
            assert status(f"http://127.0.0.1:{http}/metrics") == 401
            assert status(f"http://127.0.0.1:{ops}/metrics") == 200
            assert status(f"http://127.0.0.1:{ops}/ready") == 200
        finally:
            stop_process(proc, 20)
