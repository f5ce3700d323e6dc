"""Hopskotch both ways, with hop-client itself on the other end, against a real
Kafka-protocol broker (tansu) through hop's ``kafka://`` URLs.

Out: :class:`broker.publish.hopskotch.HopSender` as outbox targets (VOEvents in hop's
``voevent`` format, byte for byte; their JSON form in hop's ``json`` format), exactly
once per IVORN through the outbox. In: what hop-client writes today (SNEWS 2.0
publishes this way) is read by the Kafka listener, its headers kept, ``_test`` honoured.
"""

from __future__ import annotations

import contextlib
import json
import re
import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from alerts_schema.errors import RetryableError
from broker.archive.models import AlertRow
from broker.archive.store import Archive
from broker.config import Settings
from broker.publish import outbox
from broker.publish.hopskotch import TARGETS, HopSender, hop_senders
from broker.publish.senders import DeliveryError, DeliveryLoop
from broker.runtime.assembly import delivery_targets
from broker.runtime.ingest import Ingestor
from listeners.kafka import KafkaListener, KafkaSource, hop_headers
from tests.conftest import free_port
from tests.servers import FAST_JOIN, tansu, wait_for

pytestmark = pytest.mark.timeout(180)

TEMPLATE = (Path(__file__).parent / "data" / "voevents" / "BAT_GRB_Pos_655721-214.xml"
            ).read_bytes()
SNEWS = Path(__file__).parent / "data" / "snews" / "pt" / "example_coincidence_tier_message.json"


def voevent(n: int) -> tuple[str, bytes]:
    ivorn = f"ivo://test.mmbroker/hop#ev{n}"
    return ivorn, re.sub(rb'ivorn="[^"]+"', f'ivorn="{ivorn}"'.encode(), TEMPLATE, count=1)


@pytest.fixture
def kafka(tmp_path: Path) -> Iterator[str]:
    with tansu(tmp_path) as bootstrap:
        yield bootstrap


def hop_read(bootstrap: str, topic: str, n: int, timeout_s: float = 60.0) -> list[Any]:
    """What a hop-client subscriber gets from the start of ``topic``: (model, metadata)
    pairs, once ``n`` have come or the time is up."""
    from hop import Stream
    from hop.io import StartPosition

    got: list[Any] = []
    stream = Stream(auth=False, start_at=StartPosition.EARLIEST, until_eos=False)
    done = threading.Event()

    def read() -> None:
        with stream.open(f"kafka://{bootstrap}/{topic}", "r",
                         group_id=f"check-{uuid.uuid4()}", ignoretest=False) as consumer:
            for message, metadata in consumer.read(metadata=True):
                got.append((message, metadata))
                if len(got) >= n or done.is_set():
                    break

    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    thread.join(timeout_s)
    done.set()
    return got


def test_voevents_and_their_json_reach_a_hop_subscriber(kafka: str) -> None:
    from hop.models import JSONBlob, VOEvent

    documents = {voevent(n)[0]: {"id": voevent(n)[0], "kind": "coincidence"} for n in range(3)}
    xml_sender = HopSender(f"kafka://{kafka}/", "mmb.voevent", kind="voevent")
    json_sender = HopSender(f"kafka://{kafka}", "mmb.coincidence", kind="json",
                            document=documents.get)
    try:
        for n in range(3):
            xml_sender.send(*voevent(n))
            json_sender.send(*voevent(n))
    finally:
        xml_sender.close()
        json_sender.close()

    xml = hop_read(kafka, "mmb.voevent", 3)
    assert [type(m) for m, _ in xml] == [VOEvent] * 3
    # (keyed by IVORN: in order per event, in any order across partitions)
    assert sorted(m.ivorn for m, _ in xml) == [voevent(n)[0] for n in range(3)]
    for message, meta in xml:
        assert meta.key == message.ivorn.encode()
        headers = dict(meta.headers)
        assert headers["_format"] == b"voevent" and len(headers["_id"]) == 16
    # The bytes as issued, not hop's re-rendering of them.
    assert sorted(_raw_values(kafka, "mmb.voevent", 3)) == sorted(voevent(n)[1]
                                                                 for n in range(3))

    js = hop_read(kafka, "mmb.coincidence", 3)
    assert [type(m) for m, _ in js] == [JSONBlob] * 3
    forms = {m.content["ivorn"]: m.content for m, _ in js}
    assert sorted(forms) == [voevent(n)[0] for n in range(3)]
    for n in range(3):
        ivorn, xml_bytes = voevent(n)
        assert forms[ivorn]["document"] == documents[ivorn]
        assert forms[ivorn]["voevent_xml"].encode() == xml_bytes


def _raw_values(bootstrap: str, topic: str, n: int) -> list[bytes]:
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(topic, bootstrap_servers=[bootstrap], group_id="raw",
                             auto_offset_reset="earliest", enable_auto_commit=False,
                             **{k.replace(".", "_"): int(v) for k, v in FAST_JOIN.items()})
    values: list[bytes] = []
    try:
        for _ in range(60):
            for records in consumer.poll(timeout_ms=500).values():
                values.extend(r.value for r in records)
            if len(values) >= n:
                break
    finally:
        consumer.close()
    return values


def test_an_unreachable_cluster_is_a_retryable_delivery_error() -> None:
    assert issubclass(DeliveryError, RetryableError)
    sender = HopSender(f"kafka://127.0.0.1:{free_port()}/", "mmb.voevent", kind="voevent",
                       timeout_s=2.0)
    try:
        with pytest.raises(DeliveryError, match="not acknowledged within 2 s"):
            sender.send(*voevent(0))
    finally:
        sender.close()


def test_through_the_outbox_each_ivorn_once(kafka: str, archive: Archive) -> None:
    settings = Settings(hop_url=f"kafka://{kafka}/", hop_voevent_topic="mmb.out",
                        hop_json_topic="mmb.out.json", comet=False)
    assert delivery_targets(settings) == list(TARGETS)
    items = [outbox.Outgoing(i, x, "observation", {"entity": {}})
             for i, x in (voevent(n) for n in range(40))]
    assert all(outbox.queue(archive, items, list(TARGETS)))
    senders = hop_senders(settings, lambda ivorn: {"id": ivorn})
    stops, threads = [], []
    for sender in senders:
        stop = threading.Event()
        thread = threading.Thread(target=DeliveryLoop(archive, sender, poll_s=0.1).run,
                                  args=(stop,), daemon=True)
        thread.start()
        stops.append(stop)
        threads.append(thread)
    try:
        def all_sent() -> bool:
            return all(state["state"] == "sent" for entry in outbox.status(archive, limit=100)
                       for state in entry["targets"].values())
        assert wait_for(all_sent, 90)
    finally:
        for stop in stops:
            stop.set()
        for thread in threads:
            thread.join(30)
        for sender in senders:
            sender.close()
    got = hop_read(kafka, "mmb.out", 40)
    assert Counter(m.ivorn for m, _ in got) == Counter({voevent(n)[0]: 1 for n in range(40)})


def test_settings_refuse_an_anonymous_remote_hopskotch() -> None:
    with pytest.raises(ValueError, match="needs a credential"):
        Settings(hop_url="kafka://kafka.scimma.org/")
    with pytest.raises(ValueError, match="go together"):
        Settings(hop_url="kafka://kafka.scimma.org/", hop_username="mmbroker-abc")
    ok = Settings(hop_url="kafka://kafka.scimma.org/", hop_username="mmbroker-abc",
                  hop_password="s3cret")
    assert "s3cret" not in repr(ok) and "s3cret" not in str(ok.model_dump())


# -- in: what hop-client writes ------------------------------------------------------------

@contextlib.contextmanager
def _listening(kafka: str, topic: str, ingestor: Ingestor) -> Iterator[KafkaListener]:
    source = KafkaSource([topic], {"bootstrap.servers": kafka, "group.id": "hop-in",
                                   "auto.offset.reset": "earliest", **FAST_JOIN})
    listener = KafkaListener(source, ingestor)
    stop = threading.Event()
    thread = threading.Thread(target=listener.run, args=(stop,), daemon=True)
    thread.start()
    try:
        yield listener
    finally:
        stop.set()
        thread.join(30)
    assert not thread.is_alive()


def test_snews_messages_written_by_hop_client_are_archived(
        kafka: str, archive: Archive, ingestor: Ingestor) -> None:
    from hop import Stream

    now = datetime.now(UTC)
    message = json.loads(SNEWS.read_bytes())
    message.update(is_test=False, machine_time=(now - timedelta(seconds=5)).isoformat(),
                   neutrino_time_utc=(now - timedelta(seconds=60)).isoformat())
    drill = {**message, "detector_name": "Super-K"}
    # automatic_offload=False: tansu does not describe topic configs, which hop's size
    # check asks for; the messages and headers hop writes are the same.
    with Stream(auth=False).open(f"kafka://{kafka}/snews.alert", "w",
                                 automatic_offload=False) as producer:
        producer.write(message)                 # a dict: hop sends it as its json format
        producer.write(drill, test=True)        # hop's _test header
    with _listening(kafka, "snews.alert", ingestor) as listener:
        assert wait_for(lambda: listener.messages == 2, 60)
    with archive.engine.connect() as conn:
        rows = conn.execute(select(AlertRow.facility, AlertRow.role, AlertRow.transport)
                            .where(AlertRow.source == "snews.alert")).all()
    assert {(facility, role) for facility, role, _ in rows} == {
        ("XENONnT", "observation"), ("Super-K", "test")}
    for _, _, transport in rows:  # hop's headers kept with the message
        assert transport["kafka"]["headers"]["_format"] == "json"
        assert uuid.UUID(transport["kafka"]["headers"]["_id"])
    assert archive.count_quarantined() == 0


def test_hop_headers_are_read_bounded_and_only_hops() -> None:
    uid = uuid.uuid4()
    headers = [("_id", uid.bytes), ("_format", b"json"), ("_test", b"true"),
               ("_sender", b"x" * 1000), ("other", b"ignored"), ("_format", b"second")]
    out = hop_headers(headers)
    assert out == {"_id": str(uid), "_format": "json", "_test": "true", "_sender": "x" * 256}
    assert hop_headers(None) == {}
