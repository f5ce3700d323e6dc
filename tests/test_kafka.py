"""The Kafka transport against a real Kafka-protocol broker (tansu)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from alerts_schema.errors import ConfigurationError
from alerts_schema.synthetic import alert_documents
from broker.archive.store import Archive
from broker.runtime.ingest import Ingestor
from listeners.kafka import KafkaListener, KafkaSource, config_from_env, consumer_kwargs
from tests.servers import FAST_JOIN, FAST_JOIN_ENV, produce, stop_process, tansu, wait_for

pytestmark = pytest.mark.timeout(240)


@pytest.fixture
def kafka(tmp_path: Path) -> str:
    with tansu(tmp_path) as bootstrap:
        yield bootstrap


def _docs(n: int, seed: int) -> list[bytes]:
    return [json.dumps(d).encode() for d in alert_documents(n, seed=seed)]


def _consumer(kafka: str, group: str) -> dict[str, str]:
    return {"bootstrap.servers": kafka, "group.id": group, "auto.offset.reset": "earliest",
            **FAST_JOIN}


@contextlib.contextmanager
def _running(listener: KafkaListener) -> Iterator[None]:
    """The listener on a thread for the block, stopped (and seen to stop) after it."""
    stop = threading.Event()
    thread = threading.Thread(target=listener.run, args=(stop,), daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(30)
    assert not thread.is_alive()


def test_messages_are_archived_with_their_offsets(kafka: str, archive: Archive,
                                                  ingestor: Ingestor) -> None:
    produce(kafka, "mmbroker.alerts", [*_docs(50, seed=1), b"not an alert", b"\x80\x04pickle"])
    source = KafkaSource(["mmbroker.alerts"], _consumer(kafka, "t1"))
    with _running(KafkaListener(source, ingestor, batch_size=20)):
        assert wait_for(lambda: archive.count_alerts() == 50
                        and archive.count_quarantined() == 2, 60)
    with archive.engine.connect() as conn:
        from sqlalchemy import select

        from broker.archive.models import AlertRow
        transports = [t for (t,) in conn.execute(select(AlertRow.transport))]
    positions = {(t["kafka"]["partition"], t["kafka"]["offset"]) for t in transports}
    assert len(positions) == 50
    assert {t["kafka"]["topic"] for t in transports} == {"mmbroker.alerts"}
    reasons = [q["reason"] for q in archive.list_quarantine()]
    assert any("pickle" in r for r in reasons)
    health = {h["stream"]: h for h in archive.stream_health()}
    assert health["mmbroker.alerts"]["messages_total"] == 52


def test_offsets_are_committed_so_a_restart_reads_nothing_twice(
        kafka: str, archive: Archive, ingestor: Ingestor) -> None:
    produce(kafka, "mmbroker.commit", _docs(30, seed=2))
    config = _consumer(kafka, "t2")
    first = KafkaListener(KafkaSource(["mmbroker.commit"], config), ingestor)
    with _running(first):
        assert wait_for(lambda: first.messages == 30, 60)
    produce(kafka, "mmbroker.commit", _docs(10, seed=3))
    second = KafkaListener(KafkaSource(["mmbroker.commit"], config), ingestor)
    with _running(second):
        assert wait_for(lambda: second.messages == 10, 60)
    assert archive.count_alerts() == 40
    assert second.messages == 10  # the first 30 were not read again


def test_replay_from_a_timestamp(kafka: str, archive: Archive, ingestor: Ingestor) -> None:
    produce(kafka, "mmbroker.replay", _docs(20, seed=4))
    config = _consumer(kafka, "t3")
    first = KafkaListener(KafkaSource(["mmbroker.replay"], config), ingestor)
    with _running(first):
        assert wait_for(lambda: first.messages == 20, 60)
    replay = KafkaListener(KafkaSource(["mmbroker.replay"], config), ingestor,
                           since=datetime(2000, 1, 1, tzinfo=UTC))
    with _running(replay):
        assert wait_for(lambda: replay.messages == 20, 60)
    assert archive.count_alerts() == 20  # replayed, and every one a duplicate


def test_listener_killed_mid_stream_loses_and_doubles_nothing(
        kafka: str, db_url: str, tmp_path: Path) -> None:
    Archive.open(db_url).close()
    produce(kafka, "mmbroker.kill", _docs(400, seed=5))
    archive = Archive.open(db_url, upgrade=False)

    def start() -> subprocess.Popen[bytes]:
        """`mmbroker listen kafka`, as an operator runs it, credentials from KAFKA_*."""
        exe = Path(sys.executable).with_name("mmbroker")
        return subprocess.Popen(
            [str(exe), "--db", db_url, "listen", "kafka", "--topic", "mmbroker.kill",
             "--group-id", "killer", "--from-beginning"],
            env={**os.environ, "KAFKA_BOOTSTRAP_SERVERS": kafka,
                 **FAST_JOIN_ENV,
                 "MMBROKER_INGEST_BATCH_SIZE": "7", "MMBROKER_LOG_LEVEL": "WARNING"})

    proc = start()
    try:
        assert wait_for(lambda: archive.count_alerts() >= 60, 90), "listener made no progress"
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        killed_at = archive.count_alerts()
        assert killed_at < 400, "the kill came too late to test anything"
        proc = start()
        assert wait_for(lambda: archive.count_alerts() == 400, 120)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, "listener did not stop cleanly on SIGTERM"
    finally:
        stop_process(proc)
    assert archive.count_quarantined() == 0
    with archive.engine.connect() as conn:
        from sqlalchemy import func, select

        from broker.archive.models import AlertRow
        distinct = conn.execute(select(func.count(func.distinct(AlertRow.event_id)))).scalar()
    assert distinct == 400
    archive.close()


def test_gcn_classic_binary_notices_are_normalized_not_taken_for_avro(
        kafka: str, archive: Archive, ingestor: Ingestor) -> None:
    """Issue 16 item 5: GCN's 160-byte packets start with 0x00, Confluent Avro's magic
    byte; on a ``gcn.classic.binary.*`` topic they are binary notices (Swift 655721's
    BAT and XRT positions, built to the real layout), and a truncated one is refused as
    a binary notice, not as Avro."""
    from tests.test_gcn_binary import bat_655721, packet, xrt_655721

    bat_topic = "gcn.classic.binary.SWIFT_BAT_GRB_POS_ACK"
    xrt_topic = "gcn.classic.binary.SWIFT_XRT_POSITION"
    alive_topic = "gcn.classic.binary.IM_ALIVE"
    produce(kafka, bat_topic, [bat_655721(), bat_655721()[:100]])
    produce(kafka, xrt_topic, [xrt_655721()])
    produce(kafka, alive_topic, [packet({0: 3, 1: 1, 3: 4_320_000})])
    source = KafkaSource([bat_topic, xrt_topic, alive_topic], _consumer(kafka, "binary"))
    with _running(KafkaListener(source, ingestor, batch_size=10)):
        assert wait_for(lambda: archive.count_alerts() == 2
                        and archive.count_quarantined() == 1
                        and alive_topic in {h["stream"] for h in archive.stream_health()}, 60)
    bat = archive.get_alert("ivo://test.mmbroker/gcn.classic.binary/Swift#655721-2001")
    xrt = archive.get_alert("ivo://test.mmbroker/gcn.classic.binary/Swift#655721-8002")
    assert bat is not None and xrt is not None
    assert bat["localization"]["ra_deg"] == 319.7309 and bat["alert_type"] == "initial"
    assert xrt["localization"]["error_radius_deg"] == 0.001 and xrt["alert_type"] == "update"
    (refused,) = archive.list_quarantine()
    assert refused["source"] == bat_topic and "100 bytes" in refused["reason"]
    assert "avro" not in refused["reason"].lower()


def test_config_from_env_follows_confluent_naming() -> None:
    env = {"KAFKA_BOOTSTRAP_SERVERS": "a:9092,b:9092", "KAFKA_GROUP_ID": "g",
           "KAFKA_SASL_OAUTHBEARER_CLIENT_ID": "cid", "KAFKA_CLIENT___ID": "x",
           "OTHER": "y"}
    assert config_from_env(env) == {"bootstrap.servers": "a:9092,b:9092", "group.id": "g",
                                    "sasl.oauthbearer.client.id": "cid", "client_id": "x"}


def test_consumer_kwargs_translation() -> None:
    kw = consumer_kwargs({"bootstrap.servers": "h:1,h:2", "group.id": "g",
                          "security.protocol": "sasl_ssl", "sasl.mechanism": "SCRAM-SHA-512",
                          "sasl.username": "u", "sasl.password": "p",
                          "auto.offset.reset": "smallest"})
    assert kw["bootstrap_servers"] == ["h:1", "h:2"] and kw["group_id"] == "g"
    assert kw["security_protocol"] == "SASL_SSL" and kw["sasl_mechanism"] == "SCRAM-SHA-512"
    assert (kw["sasl_plain_username"], kw["sasl_plain_password"]) == ("u", "p")
    assert kw["auto_offset_reset"] == "earliest" and kw["enable_auto_commit"] is False
    assert kw["max_poll_interval_ms"] == 10_000 and kw["session_timeout_ms"] == 10_000
    # The operator's values win over the defaults.
    kw = consumer_kwargs({"bootstrap.servers": "h:1", "group.id": "g",
                          "session.timeout.ms": "45000", "max.poll.interval.ms": "60000"})
    assert (kw["session_timeout_ms"], kw["max_poll_interval_ms"]) == (45_000, 60_000)


def test_gcn_shorthand_builds_an_oidc_provider() -> None:
    kw = consumer_kwargs({"domain": "gcn.example", "client_id": "abc", "client_secret": "s3",
                          "group.id": "mmbroker"})
    assert kw["bootstrap_servers"] == ["kafka.gcn.example:9092"]
    assert kw["sasl_mechanism"] == "OAUTHBEARER" and kw["security_protocol"] == "SASL_SSL"
    provider = kw["sasl_oauth_token_provider"]
    assert provider.token_url == "https://auth.gcn.example/oauth2/token"
    assert "s3" not in repr(provider)


@pytest.mark.parametrize(("config", "message"), [
    ({"group.id": "g"}, "bootstrap.servers"),
    ({"bootstrap.servers": "h:1"}, "stable group.id"),
    ({"bootstrap.servers": "h:1", "group.id": "g", "fetch.wait.max.ms": "5"}, "unknown"),
    ({"bootstrap.servers": "h:1", "group.id": "g", "sasl.mechanisms": "OAUTHBEARER"},
     "OAUTHBEARER needs"),
])
def test_bad_configs(config: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        consumer_kwargs(config)


class _SlowSink:
    """An ingestor that takes ``per_message_s`` per message (large alerts, a loaded
    archive): a whole batch outlasts the consumer's ``max.poll.interval.ms``."""

    def __init__(self, ingestor: Ingestor, per_message_s: float) -> None:
        self.ingestor, self.archive, self.per_message_s = ingestor, ingestor.archive, \
            per_message_s

    def receive(self, *args: object, **kwargs: object) -> object:
        return self.ingestor.receive(*args, **kwargs)  # type: ignore[arg-type]

    def set_stream_connected(self, streams: list[str], connected: bool) -> None:
        self.ingestor.set_stream_connected(streams, connected)

    def ingest(self, messages: list[object]) -> object:
        import time

        time.sleep(self.per_message_s * len(messages))
        return self.ingestor.ingest(messages)  # type: ignore[arg-type]


def test_batches_that_outlast_the_poll_interval_shrink_until_they_fit(
        kafka: str, archive: Archive, ingestor: Ingestor) -> None:
    """60 messages at 0.06 s each in one poll of up to 100 take 3.6 s or more, past
    FAST_JOIN's 3 s max.poll.interval.ms: the group may drop the listener, failing the
    batch's commit.  The next polls take half as many (read again or not), and every
    message is archived once."""
    produce(kafka, "mmbroker.slow", _docs(60, seed=7))
    source = KafkaSource(["mmbroker.slow"], _consumer(kafka, "slow"))
    listener = KafkaListener(source, _SlowSink(ingestor, 0.06),  # type: ignore[arg-type]
                             batch_size=100)
    with _running(listener):
        assert wait_for(lambda: archive.count_alerts() == 60, 150)
        assert wait_for(lambda: listener.messages >= 60, 60)  # committed, not only archived
    assert listener.take <= 30  # 60 records took > 0.75 s, a quarter of 3 s: halved


def test_record_crcs_are_checked_in_native_code() -> None:
    # The crc32c package is a dependency (kafka-python's extra): without it every
    # record batch is checksummed in pure Python at 8.5 MB/s, most of a survey
    # listener's CPU.
    from listeners.kafka import native_crc32c

    assert native_crc32c()


def test_a_listener_without_native_crcs_says_so_once(monkeypatch: pytest.MonkeyPatch,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    from kafka.record import util

    import listeners.kafka as kafka_listener

    monkeypatch.setattr(util, "crc32c_c", None)
    monkeypatch.setattr(kafka_listener, "_crc_checked", False)
    with caplog.at_level("WARNING", logger="listeners.kafka"):
        kafka_listener._warn_once_without_native_crc32c()
        kafka_listener._warn_once_without_native_crc32c()
    warned = [r for r in caplog.records if "pure Python" in r.getMessage()]
    assert len(warned) == 1
    assert "pip install crc32c" in warned[0].getMessage()
