"""Listener benchmarks: normalized+archived alerts/s per stream, beside the bare decode cost.

For each stream (GCN JSON notices, VOEvents, ZTF Avro) the same N distinct
messages, built from the samples shipped in ``tests/data`` (each copy gets its
own event id so nothing is a duplicate), are

1. decoded bare: ``json.loads``, the hardened XML parse, a full
   ``fastavro.reader`` decode (what a naive listener pays at least);
2. normalized: routing + the stream's normalizer + the contract check;
3. ingested: the whole path into the archive (raw bytes committed, normalized,
   archived idempotently), in batches, on SQLite and PostgreSQL, one process.
"""

from __future__ import annotations

import io
import json
import re
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench._common import Figure, backend_url

DATA = Path(__file__).resolve().parent.parent / "tests" / "data"


def gcn_messages(n: int) -> tuple[str, list[bytes]]:
    templates = []
    for path in sorted((DATA / "gcn").glob("notices__*.example.json")):
        doc = json.loads(path.read_bytes())
        if "id" in doc and "core" not in path.name and "retraction" not in path.name:
            templates.append(doc)
    out = []
    for i in range(n):
        doc = dict(templates[i % len(templates)])
        doc["id"] = [f"bench{i}"]
        doc.pop("record_number", None)
        out.append(json.dumps(doc).encode())
    return "gcn.notices.bench", out


def voevent_messages(n: int) -> tuple[str, list[bytes]]:
    names = ["BAT_GRB_Pos_655721-214.xml", "XRT_Pos_655721-326.xml",
             "SWIFT_bat_position_v2.0_example.xml"]
    templates = [(DATA / "voevents" / name).read_bytes() for name in names]
    out = []
    for i in range(n):
        xml = templates[i % len(templates)]
        xml = re.sub(rb'ivorn="([^"#]+)#([^"]+)"', rb'ivorn="\1#bench-' + str(i).encode() + b'"',
                     xml, count=1)
        xml = re.sub(rb'(<Param name="TrigID"[^>]*value=")(\d+)',
                     rb"\g<1>" + str(10**7 + i).encode(), xml, count=1)
        out.append(xml)
    return "gcn.classic.voevent.bench", out


def ztf_messages(n: int) -> tuple[str, list[bytes]]:
    import fastavro

    path = next(iter(sorted((DATA / "ztf").glob("ztf_*v4_02.avro"))))
    with path.open("rb") as f:
        reader = fastavro.reader(f)
        schema = reader.writer_schema
        record = next(iter(reader))
    out = []
    for i in range(n):
        record = dict(record, candid=record["candid"] + i + 1,
                      candidate=dict(record["candidate"], candid=record["candid"] + i + 1))
        buf = io.BytesIO()
        fastavro.writer(buf, schema, [record])
        out.append(buf.getvalue())
    return "ztf_bench_programid1", out


STREAMS: dict[str, Callable[[int], tuple[str, list[bytes]]]] = {
    "gcn-json": gcn_messages, "voevent": voevent_messages, "ztf-avro": ztf_messages,
}


def _bare_decoder(stream: str) -> Callable[[bytes], Any]:
    if stream == "gcn-json":
        return json.loads
    if stream == "voevent":
        from listeners import xml_safe

        return lambda data: xml_safe.parse(data, max_bytes=1 << 20)
    import fastavro

    return lambda data: list(fastavro.reader(io.BytesIO(data)))


def _rate(n: int, seconds: float) -> float:
    return n / seconds if seconds > 0 else float("inf")


def bench_stream(stream: str, n: int, batch: int, backends: list[str]) -> list[Figure]:
    from broker.archive.store import Archive
    from broker.runtime.ingest import Ingestor
    from listeners.envelope import RawMessage

    topic, messages = STREAMS[stream](n)
    figures = []
    decode = _bare_decoder(stream)
    for data in messages[:20]:  # warm caches (schema parse, imports)
        decode(data)
    start = time.perf_counter()
    for data in messages:
        decode(data)
    bare = _rate(n, time.perf_counter() - start)
    figures.append(Figure("listener", "-", f"{stream} bare decode", bare, "msg/s"))

    probe = Archive.open(backend_url("sqlite", "probe", recreate=True))
    normalizer = Ingestor(probe, authority="bench.mmbroker")
    raws = [RawMessage(topic, data, received_at=datetime.now(UTC)) for data in messages]
    for raw in raws[:20]:
        normalizer.normalize(raw)
    start = time.perf_counter()
    results = [normalizer.normalize(raw) for raw in raws]
    normalize_rate = _rate(n, time.perf_counter() - start)
    failed = [r for r in results if isinstance(r, Exception)]
    if failed:
        raise RuntimeError(f"{stream}: {len(failed)} bench messages did not normalize: "
                           f"{failed[0]}")
    probe.close()
    figures.append(Figure("listener", "-", f"{stream} normalize", normalize_rate, "msg/s",
                          f"{normalize_rate / bare:.0%} of bare decode"))

    for backend in backends:
        archive = Archive.open(backend_url(backend, f"listen_{stream.replace('-', '_')}",
                                           recreate=True))
        ingestor = Ingestor(archive, authority="bench.mmbroker")
        fresh = [RawMessage(topic, data) for data in messages]
        start = time.perf_counter()
        for i in range(0, n, batch):
            ingestor.ingest(fresh[i:i + batch])
        rate = _rate(n, time.perf_counter() - start)
        assert archive.count_alerts() == n, f"{stream}: {archive.count_alerts()} of {n}"
        archive.close()
        figures.append(Figure("listener", backend, f"{stream} normalized+archived", rate,
                              "alerts/s", f"batches of {batch}; {rate / bare:.0%} of bare "
                                          f"decode"))
    return figures


def bench_listeners(n: int, batch: int, backends: list[str]) -> list[Figure]:
    figures: list[Figure] = []
    for stream in STREAMS:
        figures += bench_stream(stream, n, batch, backends)
    return figures
