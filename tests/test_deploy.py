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


# -- the scaled-out deployment --------------------------------------------------------------

yaml = pytest.importorskip("yaml")
COMPOSE = DEPLOY / "compose"


def _compose() -> dict:
    return yaml.safe_load((COMPOSE / "compose.yaml").read_text())


def test_kafka_is_kraft_with_production_replication() -> None:
    services = _compose()["services"]
    brokers = [s for name, s in services.items() if name.startswith("kafka-")]
    assert len(brokers) == 3
    for broker in brokers:
        env = broker["environment"]
        assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"  # KRaft, no ZooKeeper
        assert env["KAFKA_DEFAULT_REPLICATION_FACTOR"] == "3"
        assert env["KAFKA_MIN_INSYNC_REPLICAS"] == "2"
        assert env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == "3"
        assert env["KAFKA_UNCLEAN_LEADER_ELECTION_ENABLE"] == "false"
        assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
    assert len({b["environment"]["KAFKA_NODE_ID"] for b in brokers}) == 3


def test_every_topic_is_declared_with_replication_3_and_min_isr_2() -> None:
    from broker.config import Settings

    script = (COMPOSE / "topics.sh").read_text()
    assert "--replication-factor 3" in script and "min.insync.replicas=2" in script
    declared = set(re.findall(r"^\s+([\w.\-]+):\d+", script, re.MULTILINE))
    s = Settings()
    assert {s.kafka_alerts_topic, s.kafka_output_xml_topic, s.kafka_output_json_topic} <= declared


def test_producers_are_idempotent_with_acks_all(tmp_path: Path) -> None:
    """Every producer the broker makes (announcements, VOEvent output), connected to a real
    Kafka-protocol broker, is idempotent and waits for every in-sync replica."""
    from broker.notify import AnnouncingIngestor
    from broker.senders import KafkaSender
    from tests.servers import tansu

    with tansu(tmp_path) as bootstrap:
        announcer = AnnouncingIngestor(type("I", (), {"archive": None})(), bootstrap, "t")
        sender = KafkaSender(bootstrap, "mmbroker.voevent")
        producers = [announcer._connect(), sender._producer_or_connect()]
        try:
            for producer in producers:
                assert producer.config["enable_idempotence"] is True
                assert producer.config["acks"] in ("all", -1)
        finally:
            announcer.close()
            sender.close()


def test_postgres_ingest_role_commits_synchronously() -> None:
    sql = (COMPOSE / "postgres-init.sql").read_text()
    assert re.search(r"ALTER ROLE mmbroker_ingest SET synchronous_commit = on;", sql)
    assert "PASSWORD '" not in sql.upper().replace('"', "'")


def test_every_stage_runs_a_real_command_with_probes() -> None:
    from typer.main import get_command

    from broker.cli import app

    stages = set(get_command(app).commands["stage"].commands)  # type: ignore[attr-defined]
    assert stages == {"listen", "match", "publish", "api"}
    services = _compose()["services"]
    for name in stages:
        assert services[name]["command"][:2] == ["stage", name]
    docs = list(yaml.safe_load_all((DEPLOY / "kubernetes" / "mmbroker.yaml").read_text()))
    deployments = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Deployment"}
    assert set(deployments) == {f"mmbroker-{n}" for n in stages}
    for name, d in deployments.items():
        spec = d["spec"]["template"]["spec"]
        main = spec["containers"][0]
        assert main["args"][:2] == ["stage", name.removeprefix("mmbroker-")]
        for c in spec["containers"]:
            assert "readinessProbe" in c and "livenessProbe" in c, (name, c["name"])
        assert main["readinessProbe"]["httpGet"]["path"] == "/ready"
        # Liveness never depends on the database: the stages' /health answers for the
        # process alone, the API's (which reports the archive) is replaced by a TCP check.
        liveness = main["livenessProbe"]
        assert liveness.get("httpGet", {}).get("path") == "/health" or "tcpSocket" in liveness
        # The Secret into the environment: a secret volume's files are root's, unreadable
        # by the image's user, and looser modes are refused.
        assert {"secretRef": {"name": "mmbroker-secrets"}} in main["envFrom"]
        assert not any("secret" in str(v).lower() for v in spec.get("volumes", [])), name
    assert deployments["mmbroker-match"]["spec"]["replicas"] >= 2
    # Prometheus scrapes every stage, the API too, on the ops port: /metrics on the API's
    # HTTP port needs a read:metrics token (it counts hidden arrivals).
    (ops_config,) = [d["data"] for d in docs if d["kind"] == "ConfigMap"]
    for name, d in deployments.items():
        annotations = d["spec"]["template"]["metadata"]["annotations"]
        assert annotations["prometheus.io/scrape"] == "true", name
        assert annotations["prometheus.io/port"] == ops_config["MMBROKER_OPS_PORT"], name
    # The Secret's key is the setting's name (envFrom takes keys as variable names).
    manifest = (DEPLOY / "kubernetes" / "mmbroker.yaml").read_text()
    assert "--from-file=MMBROKER_DATABASE_URL=" in manifest
    # Probes and Prometheus come from outside the pod or container; VOEvents link to an
    # address subscribers can reach.
    (config,) = [d["data"] for d in docs if d["kind"] == "ConfigMap"]
    env = dict(line.split("=", 1) for line in (COMPOSE / "mmbroker.env").read_text()
               .splitlines() if line and not line.startswith("#"))
    for settings in (config, env):
        assert settings["MMBROKER_OPS_HOST"] == "0.0.0.0"
        assert settings["MMBROKER_PUBLIC_BASE_URL"].startswith(("http://", "https://"))
    # Comet takes submissions from the publisher beside it only.
    comet = " ".join(services["comet"]["entrypoint"])
    (sidecar,) = [c for c in deployments["mmbroker-publish"]["spec"]["template"]["spec"]
                  ["containers"] if c["name"] == "comet"]
    for command in (comet, " ".join(sidecar["command"])):
        assert "--author-whitelist=127.0.0.1/32" in command
        assert command.count("--author-whitelist") == 1


def test_no_secret_is_written_in_the_deploy_files() -> None:
    for path in DEPLOY.rglob("*"):
        if path.is_file():
            text = path.read_text()
            assert not re.search(r"://[^/@\s:]+:[^@\s/]+@", text.replace(
                "CHANGE-ME@", "")), path  # a URL with a password (the README example aside)
            assert not re.search(r"(?i)(password|secret)\s*[:=]\s*['\"][^'\"]+['\"]", text), path


def test_systemd_stage_unit_runs_each_stage() -> None:
    unit = (DEPLOY / "systemd" / "mmbroker-stage@.service").read_text()
    assert "ExecStart=/opt/mmbroker/venv/bin/mmbroker stage %i" in unit
    assert "MMBROKER_DATABASE_URL_FILE=" in unit and "TimeoutStopSec=" in unit


def test_the_postgres_init_script_lets_ingest_migrate_and_the_reader_only_read(
        pg_available: None) -> None:
    """The compose init script run on the real server (PostgreSQL 15 here, whose schema
    public no longer lets everyone create): the ingest role can run the migrations and
    write, commits synchronously, and the reader can read what it made but not write.
    Roles and database get a unique suffix and are dropped afterwards."""
    import uuid

    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    from broker.archive import Archive
    from tests.conftest import PG_URL

    suffix = uuid.uuid4().hex[:8]
    database, ingest, reader = (f"mmbroker_{suffix}", f"mmbroker_ingest_{suffix}",
                                f"mmbroker_reader_{suffix}")
    sql = (COMPOSE / "postgres-init.sql").read_text()
    sql = re.sub(r"\bmmbroker_ingest\b", ingest, sql)
    sql = re.sub(r"\bmmbroker_reader\b", reader, sql)
    sql = re.sub(r"\bDATABASE mmbroker\b", f"DATABASE {database}", sql)
    admin = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"CREATE DATABASE {database}"))
        # Off for the database, so only the script's per-role setting can turn it on (the
        # server's default is already on: the check would otherwise pass without it).
        conn.execute(text(f"ALTER DATABASE {database} SET synchronous_commit = off"))
    url = make_url(PG_URL).set(database=database)
    owner = create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with owner.connect() as conn:  # as the entrypoint runs it: in the new database
            for statement in filter(str.strip, re.sub(r"--[^\n]*", "", sql).split(";")):
                conn.execute(text(statement))
        archive = Archive.open(url.set(username=ingest).render_as_string(hide_password=False))
        try:
            with archive.engine.connect() as conn:
                assert conn.execute(text("SHOW synchronous_commit")).scalar() == "on"
            assert archive.count_alerts() == 0
        finally:
            archive.close()
        read = create_engine(url.set(username=reader))
        try:
            with read.connect() as conn:
                assert conn.execute(text("SELECT count(*) FROM alerts")).scalar() == 0
                with pytest.raises(Exception, match="read-only"):
                    conn.execute(text("DELETE FROM alerts"))
        finally:
            read.dispose()
    finally:
        owner.dispose()
        with admin.connect() as conn:
            conn.execute(text(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)"))
            for role in (ingest, reader):
                conn.execute(text(f"DROP ROLE IF EXISTS {role}"))
        admin.dispose()
