"""Every sample through the real transports: Kafka (tansu) and files (`mmbroker ingest`).

The Kafka test produces each sample to the topic it travels on in production
and checks that the archive ends up exactly as when the same bytes are ingested
directly: the transport neither loses, adds nor alters anything.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

import alerts_schema
from broker.archive.store import AlertQuery, Archive
from broker.runtime.ingest import Ingestor
from listeners import gcn_json
from listeners.base import MessageMeta
from listeners.envelope import RawMessage
from listeners.kafka import KafkaListener, KafkaSource
from tests.conftest import SAMPLES, mmbroker
from tests.servers import FAST_JOIN, produce, tansu, wait_for

DATA = Path(__file__).parent / "data"


def _topic_messages() -> list[tuple[str, bytes]]:
    """(topic, bytes) for every shipped sample, on its production topic."""
    from datetime import UTC, datetime

    out: list[tuple[str, bytes]] = []
    for path in sorted((DATA / "gcn").glob("*.json")):
        data = path.read_bytes()
        doc = json.loads(data)
        meta = MessageMeta("file", datetime.now(UTC), "t")
        topic = gcn_json.stream_name(doc, meta) if isinstance(doc, dict) else "gcn.notices.x"
        if not topic.startswith("gcn."):
            topic = "gcn.notices.unknown"
        out.append((topic, data))
    for path in sorted((DATA / "voevents").glob("*.xml")):
        out.append(("gcn.classic.voevent.samples", path.read_bytes()))
    for path in alerts_schema.example_paths("trigger"):
        out.append(("detector.triggers", path.read_bytes()))
    for path in sorted((DATA / "ztf").glob("*.avro")):
        out.append(("ztf_20261121_programid1", path.read_bytes()))
    for path in sorted((DATA / "snews").rglob("*.json")) if (DATA / "snews").is_dir() else []:
        out.append(("snews.alerts", path.read_bytes()))
    lvk = SAMPLES / "lvk"
    if lvk.is_dir():
        for path in sorted(lvk.glob("MS181101ab-*.json")) + sorted(lvk.glob("*.avro")):
            out.append(("igwn.gwalert", path.read_bytes()))
    return out


def _snapshot(archive: Archive) -> tuple[set, list[str]]:
    keys = {(d["source"], d["event_id"], d["revision"], d["id"])
            for d in archive.list_alerts(AlertQuery(limit=100_000))}
    reasons = sorted(q["reason"] for q in archive.list_quarantine(limit=100_000))
    return keys, reasons


@pytest.mark.timeout(300)
def test_samples_over_kafka_archive_as_if_ingested_directly(tmp_path: Path) -> None:
    messages = _topic_messages()
    assert len(messages) > 60

    direct = Archive.open(f"sqlite:///{tmp_path / 'direct.sqlite3'}")
    Ingestor(direct, authority="test.mmbroker").ingest(
        [RawMessage(topic, data) for topic, data in messages])
    expected = _snapshot(direct)
    assert len(expected[0]) > 40

    via_kafka = Archive.open(f"sqlite:///{tmp_path / 'kafka.sqlite3'}")
    topics = sorted({t for t, _ in messages})
    with tansu(tmp_path) as bootstrap:
        for topic in topics:
            # one partition per topic keeps the order, so revisions arrive in sequence
            produce(bootstrap, topic, [d for t, d in messages if t == topic],
                    keys=[b"k"] * sum(t == topic for t, _ in messages))
        listener = KafkaListener(
            KafkaSource(topics, {"bootstrap.servers": bootstrap, "group.id": "samples",
                                 "auto.offset.reset": "earliest", **FAST_JOIN}),
            Ingestor(via_kafka, authority="test.mmbroker"), batch_size=50)
        stop = threading.Event()
        thread = threading.Thread(target=listener.run, args=(stop,), daemon=True)
        thread.start()
        try:
            assert wait_for(lambda: listener.messages == len(messages), 120)
        finally:
            stop.set()
            thread.join(30)
    assert _snapshot(via_kafka) == expected
    health = {h["stream"]: h for h in via_kafka.stream_health() if not h["detector"]}
    assert sum(h["messages_total"] for h in health.values()) == len(messages)
    if any(t == "gcn.heartbeat" for t, _ in messages):
        beats = [h for h in via_kafka.stream_health() if h["stream"] == "gcn.heartbeat"]
        assert beats and beats[0]["last_heartbeat_at"] is not None


def _sample_files() -> list[Path]:
    roots = [DATA] + ([SAMPLES] if SAMPLES.is_dir() else [])
    return sorted(p for root in roots for p in root.rglob("*")
                  if p.suffix in {".json", ".xml", ".avro"} and "schema" not in p.parts
                  and p.name != "MANIFEST.tsv")


@pytest.mark.timeout(300)
def test_mmbroker_ingest_every_sample_file(tmp_path: Path) -> None:
    """Each file is archived or quarantined with a reason; the summary adds up."""
    if not SAMPLES.is_dir():
        pytest.skip(f"shared samples not found at {SAMPLES}; only tests/data is swept")
    files = _sample_files()
    db = tmp_path / "all.sqlite3"
    mmbroker("--db", str(db), "db", "upgrade")
    out = mmbroker("--db", str(db), "ingest", "--format", "json",
                   *map(str, files), timeout=280).stdout
    report = json.loads(out)[0]
    (summary,) = report["summary"]
    total = sum(summary[k] for k in ("archived", "duplicate", "quarantined", "heartbeat"))
    assert total >= len(files)  # a file may hold several alerts
    for entry in report["quarantined"]:
        assert entry["reason"] and len(entry["reason"]) > 15, entry
        assert entry["file"] != "?"
    archive = Archive.open(f"sqlite:///{db}", upgrade=False)
    assert archive.count_alerts() == summary["archived"]
    archive.close()
