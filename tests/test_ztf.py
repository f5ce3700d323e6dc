"""ZTF Avro normalizer and the shared Avro machinery (schema cache, projection, containers).

Runs on the copies in ``tests/data/ztf`` (BSD, see its MANIFEST.tsv) and on
containers written here with fastavro; sweeps ``../shared/samples/ztf-avro``
(every schema version there, including the 2017 prototype) when present.
"""

from __future__ import annotations

import io
import math
import random
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import fastavro
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import alerts_schema
from alerts_schema import Alert
from alerts_schema.errors import HostileInput, InputError, MalformedInput, NormalizationError
from listeners import avro, ztf
from listeners.base import MessageMeta, Normalized
from listeners.detect import Format, sniff
from tests.conftest import SAMPLES

DATA = Path(__file__).resolve().parent / "data" / "ztf"
SHARED = SAMPLES / "ztf-avro"
RECEIVED = datetime(2026, 11, 21, 3, 13, 0, tzinfo=UTC)
V3_3 = DATA / "ztf_public_20221229_ZTF18abfkwnk_2188216843315010016.v3_3.avro"
V4_02 = DATA / "ztf_20250302_programid1_ZTF17aaarzyp_2982177112815010003.v4_02.avro"
SKYPORTAL = DATA / "541385122515015008.avro"
BABAMUL = DATA / "babamul_alert.avro"
ARCSEC = 1.0 / 3600.0


def meta(source: str = "ztf_20250302_programid1") -> MessageMeta:
    return MessageMeta(source=source, received_at=RECEIVED, authority="test.mmbroker")


def run(data: bytes, source: str = "ztf_20250302_programid1") -> Normalized:
    """Normalize ``data`` and check every alert against the contract."""
    result = ztf.normalize(data, meta(source))
    for alert in result.alerts:
        assert alerts_schema.validation_errors("alert", alert.to_document()) == []
    return result


def only(data: bytes, source: str = "ztf_20250302_programid1") -> Alert:
    (alert,) = run(data, source).alerts
    return alert


def full_records(data: bytes) -> list[dict[str, Any]]:
    """What fastavro's own container reader makes of ``data`` (the reference)."""
    return list(fastavro.reader(io.BytesIO(data)))


def rewrite(data: bytes, change: Any = None, codec: str = "null") -> bytes:
    """``data`` re-encoded with fastavro after ``change(record)``, with its own schema."""
    reader = fastavro.reader(io.BytesIO(data))
    schema = reader.writer_schema
    records = list(reader)
    for record in records:
        if change:
            change(record)
    out = io.BytesIO()
    fastavro.writer(out, schema, records, codec=codec)
    return out.getvalue()


def shared_files() -> list[Any]:
    if not SHARED.is_dir():
        return [pytest.param(None, marks=pytest.mark.skip(
            reason=f"{SHARED} absent: the shared sample sweep needs ../shared/samples"))]
    return [pytest.param(p, id=str(p.relative_to(SHARED))) for p in sorted(SHARED.rglob("*.avro"))]


LOCAL = sorted(DATA.glob("*.avro"))


# -- every sample becomes a contract-valid Alert -----------------------------------------

def check_alert(alert: Alert, data: bytes) -> None:
    """What holds for every ZTF alert, checked against fastavro's full decode."""
    (record,) = full_records(data)
    candidate = record["candidate"]
    assert alert.messenger == "optical" and alert.facility == "ZTF"
    assert alert.event_id == str(record["candid"]) and alert.revision == 0
    assert alert.alert_type == "initial" and alert.role == "observation"
    assert alert.id == f"ivo://test.mmbroker/ztf#{record['candid']}-0"
    loc = alert.localization
    assert loc.kind == "point"
    assert loc.ra_deg == pytest.approx(candidate["ra"] % 360.0, abs=1e-12)
    assert loc.dec_deg == pytest.approx(candidate["dec"], abs=1e-12)
    assert loc.error_radius_deg == pytest.approx(ARCSEC) and loc.containment == 0.9
    jd_back = alert.trigger_time.timestamp() / 86400.0 + 2440587.5
    assert jd_back == pytest.approx(candidate["jd"], abs=1e-8)  # < 1 ms
    assert alert.extra["magpsf"] == pytest.approx(candidate["magpsf"])
    assert alert.extra["sigmapsf"] == pytest.approx(candidate["sigmapsf"])
    assert alert.extra["band"] == {1: "g", 2: "r", 3: "i"}[candidate["fid"]]
    assert alert.extra["candid"] == record["candid"]
    assert alert.extra["objectId"] == record.get("objectId")
    assert alert.data_rights.level == ("public" if candidate["programid"] == 1
                                       else "proprietary")


@pytest.mark.parametrize("path", LOCAL, ids=[p.name for p in LOCAL])
def test_local_copies_become_valid_alerts(path: Path) -> None:
    data = path.read_bytes()
    assert sniff(data) is Format.AVRO_OCF
    check_alert(only(data), data)


@pytest.mark.parametrize("path", shared_files())
def test_shared_samples_every_schema_version(path: Path) -> None:
    data = path.read_bytes()
    alert = only(data, source="file")
    check_alert(alert, data)
    assert alert.source == "ztf"  # a file gets the stream's name
    schema = avro.container_schema(data)
    assert ztf.accepts(Format.AVRO_OCF, None, meta("file"), data) is (schema.name == "ztf.alert")


# -- known values -------------------------------------------------------------------------

def test_known_values_schema_3_3() -> None:
    alert = only(V3_3.read_bytes())
    assert alert.localization.ra_deg == 24.5614473
    assert alert.localization.dec_deg == 63.3358831
    # jd 2459942.7168403 (UTC) = 2022-12-29 05:12:15.0019 UTC
    assert abs((alert.trigger_time - datetime(2022, 12, 29, 5, 12, 15, 1900, tzinfo=UTC))
               .total_seconds()) < 1e-4
    assert alert.event_id == "2188216843315010016"
    extra = alert.extra
    assert extra["objectId"] == "ZTF18abfkwnk"
    assert extra["magpsf"] == pytest.approx(16.978384) and extra["sigmapsf"] == pytest.approx(
        0.1075447, rel=1e-6)
    assert (extra["fid"], extra["band"]) == (2, "r")
    assert extra["drb"] == pytest.approx(0.90144086) and extra["rb"] == pytest.approx(0.45285714)
    assert extra["isdiffpos"] is False and extra["schemavsn"] == "3.3"
    assert extra["ssnamenr"] is None and extra["ssdistnr"] is None  # 'null' and -999 sentinels
    assert alert.data_rights.level == "public"


def test_known_values_schema_4_02() -> None:
    alert = only(V4_02.read_bytes())
    assert (alert.localization.ra_deg, alert.localization.dec_deg) == (97.8890196, -2.798349)
    assert alert.trigger_time.isoformat().startswith("2025-03-02T04:15:03.00")
    assert alert.extra["objectId"] == "ZTF17aaarzyp"
    assert alert.extra["magpsf"] == pytest.approx(15.883608)
    assert alert.extra["schemavsn"] == "4.02"
    assert alert.extra["ndethist"] == 445
    assert {"prv_candidates", "fp_hists", "cutoutScience"} <= set(alert.extra["raw_only_fields"])


def test_known_values_pre_3_schema_and_g_band() -> None:
    alert = only(SKYPORTAL.read_bytes())
    assert alert.extra["objectId"] == "ZTF18aaypnsi"
    assert alert.extra["schemavsn"] is None  # 2018 packets had no schemavsn
    assert (alert.extra["fid"], alert.extra["band"]) == (1, "g")
    assert alert.localization.ra_deg == 310.4876013
    assert alert.trigger_time.isoformat().startswith("2018-06-26T09:14:34.99")


def test_jd_to_utc_agrees_with_astropy() -> None:
    astropy_time = pytest.importorskip("astropy.time")
    from listeners.common import jd_to_utc

    for jd in (2457745.72956, 2458295.8851273, 2459942.7168403, 2460736.6771181):
        expected = astropy_time.Time(jd, format="jd", scale="utc").to_datetime(timezone=UTC)
        assert abs((jd_to_utc(jd) - expected).total_seconds()) < 1e-4


def test_babamul_repackaged_alert() -> None:
    data = BABAMUL.read_bytes()
    alert = only(data)
    assert alert.extra["isdiffpos"] is True  # a boolean in this schema
    assert alert.extra["band"] == "i"
    assert alert.extra["schema_name"] == "BabamulZtfAlert"
    # Not a ztf.alert schema: only a ztf* stream name routes it here.
    assert not ztf.accepts(Format.AVRO_OCF, None, meta("file"), data)
    assert ztf.accepts(Format.AVRO_OCF, None, meta("ztf_babamul"), data)


def test_prototype_packet_without_object_id() -> None:
    path = SHARED / "87704463155000_2017.avro"
    if not path.is_file():
        pytest.skip(f"{path} absent: needs ../shared/samples")
    alert = only(path.read_bytes())
    assert alert.extra["alertId"] == 87704463155000 and alert.extra["objectId"] is None
    assert alert.event_id == "-87704463155000"  # the prototype's candid is negative
    assert alert.extra["isdiffpos"] is True  # an int 1 in that schema


# -- the writer schema is parsed once per version ------------------------------------------

def test_writer_schema_parsed_once_per_version() -> None:
    avro.CACHE.clear()
    files = [p.read_bytes() for p in LOCAL]
    distinct = {avro.read_container_header(d).schema_json for d in files}
    assert len(distinct) < len(files)  # the two skyportal packets share one schema
    parses_before = avro.parse_count()
    for _ in range(3):
        for data in files:
            run(data)
    assert avro.CACHE.misses == len(distinct)
    assert avro.CACHE.hits == 3 * len(files) - len(distinct)
    assert avro.parse_count() - parses_before == len(distinct)


def test_cache_is_bounded() -> None:
    cache = avro.SchemaCache(max_entries=2)
    base = {"type": "record", "fields": [{"name": "x", "type": "int"}]}
    for i in range(5):
        cache.get(f'{{"type": "record", "name": "r{i}", "fields": {base["fields"]}}}'
                  .replace("'", '"').encode())
    assert len(cache) == 2 and cache.misses == 5


# -- projection: cutouts and history are skipped, yet retrievable -------------------------

def test_projection_decodes_only_what_the_alert_needs() -> None:
    data = V4_02.read_bytes()
    _writer, (record,) = avro.decode_container(data, ztf.PROJECTION)
    assert set(record) <= ztf.PROJECTION.keep
    assert not {"prv_candidates", "fp_hists", "cutoutScience", "cutoutTemplate",
                "cutoutDifference"} & set(record)
    assert set(record["candidate"]) <= ztf.PROJECTION.narrow["candidate"]
    (full,) = full_records(data)
    for key, value in record["candidate"].items():
        assert value == full["candidate"][key]


def test_full_decode_matches_fastavro() -> None:
    for path in LOCAL:
        data = path.read_bytes()
        assert avro.decode_container(data, None)[1] == full_records(data)


def test_cutouts_and_history_on_request() -> None:
    data = V4_02.read_bytes()
    (full,) = full_records(data)
    stamps = ztf.cutouts(data)
    assert set(stamps) == {"cutoutScience", "cutoutTemplate", "cutoutDifference"}
    for name, stamp in stamps.items():
        assert stamp == full[name]["stampData"] and stamp[:2] == b"\x1f\x8b"  # gzip FITS
    past = ztf.history(data)
    assert past["prv_candidates"] == full["prv_candidates"]
    assert past["fp_hists"] == full["fp_hists"] and past["prv_nondetections"] == []
    assert ztf.cutouts(BABAMUL.read_bytes()) == dict.fromkeys(stamps)  # no stamps at all


def test_deflate_containers_and_several_records() -> None:
    data = rewrite(V3_3.read_bytes(), codec="deflate")
    assert only(data).localization.ra_deg == 24.5614473
    reader = fastavro.reader(io.BytesIO(V3_3.read_bytes()))
    schema, (record,) = reader.writer_schema, list(reader)
    out = io.BytesIO()
    fastavro.writer(out, schema, [record, {**record, "candid": 1}], sync_interval=1)
    alerts = run(out.getvalue()).alerts  # two blocks of one record each
    assert [a.event_id for a in alerts] == ["2188216843315010016", "1"]


# -- routing --------------------------------------------------------------------------------

def test_accepts() -> None:
    data = V3_3.read_bytes()
    assert ztf.accepts(Format.AVRO_OCF, None, meta("ztf_public_20221229"))
    assert ztf.accepts(Format.AVRO_OCF, None, meta("file"), data)
    assert ztf.accepts(Format.AVRO_OCF, data, meta("file"))  # bytes passed as ``decoded``
    assert not ztf.accepts(Format.AVRO_OCF, None, meta("file"))  # nothing to look at
    assert not ztf.accepts(Format.AVRO_CONFLUENT, None, meta("ztf_public"), data)
    assert not ztf.accepts(Format.JSON, {"candid": 1}, meta("ztf_public"))
    assert not ztf.accepts(Format.AVRO_OCF, None, meta("file"), data[:40])  # no exception
    assert ztf.handle(data, None, meta()).alerts[0].event_id == "2188216843315010016"


# -- hostile and malformed input ------------------------------------------------------------

@pytest.mark.parametrize("cut", [4, 5, 20, 60, 2000, 25000, -20000, -17, -1])
def test_truncated_container(cut: int) -> None:
    data = V3_3.read_bytes()
    with pytest.raises(MalformedInput, match=r"truncated|sync marker|Obj"):
        ztf.normalize(data[:cut], meta())


def test_random_bytes_and_wrong_magic() -> None:
    rng = random.Random(7)
    noise = bytes(rng.randrange(256) for _ in range(4096))
    with pytest.raises(MalformedInput, match="not an Avro container"):
        ztf.normalize(noise, meta())
    with pytest.raises(MalformedInput, match=r"Avro container"):
        ztf.normalize(avro.OCF_MAGIC + noise, meta())


def test_corrupt_sync_marker_and_body() -> None:
    data = bytearray(V3_3.read_bytes())
    data[-3] ^= 0xFF
    with pytest.raises(MalformedInput, match="sync marker"):
        ztf.normalize(bytes(data), meta())
    header = avro.read_container_header(bytes(data))
    body = bytearray(V3_3.read_bytes())
    body[header.data_offset + 8:header.data_offset + 40] = b"\xff" * 32
    with pytest.raises(InputError):
        ztf.normalize(bytes(body), meta())


def test_bad_schema_in_header() -> None:
    def container(schema_json: bytes, codec: bytes = b"null") -> bytes:
        def text(value: bytes) -> bytes:
            return _zigzag(len(value)) + value

        header_map = (_zigzag(2) + text(b"avro.schema") + text(schema_json) + text(b"avro.codec")
                      + text(codec) + b"\x00")
        return avro.OCF_MAGIC + header_map + b"S" * 16

    with pytest.raises(MalformedInput, match="invalid JSON"):
        ztf.normalize(container(b"{not json"), meta())
    with pytest.raises(MalformedInput, match="invalid Avro schema"):
        ztf.normalize(container(b'{"type": "record", "name": "x", "fields": [{"name": "a"}]}'),
                      meta())
    with pytest.raises(MalformedInput, match="codec 'snappy' is not supported"):
        ztf.normalize(container(b'{"type": "record", "name": "x", "fields": []}', b"snappy"),
                      meta())
    spin = (b'{"type": "record", "name": "x", "fields": [{"name": "a", "type": {"type": "array",'
            b' "items": "null"}}]}')
    with pytest.raises(HostileInput, match="zero-width"):
        ztf.normalize(container(spin), meta())


def _zigzag(value: int) -> bytes:
    """Avro's zig-zag varint encoding of ``value``."""
    encoded = (value << 1) ^ (value >> 63)
    out = bytearray()
    while True:
        byte = encoded & 0x7F
        encoded >>= 7
        if encoded:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def test_deflate_bomb(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(avro, "MAX_BLOCK_BYTES", 4096)
    with pytest.raises(HostileInput, match="inflates past"):
        ztf.normalize(rewrite(V3_3.read_bytes(), codec="deflate"), meta())


def test_not_a_ztf_alert() -> None:
    ampel = Path(__file__).resolve().parent / "data" / "rubin" / "ampel_LSSTReport.avro"
    with pytest.raises(NormalizationError, match="not a ZTF alert"):
        ztf.normalize(ampel.read_bytes(), meta())


@pytest.mark.parametrize(("field", "value", "reason"), [
    ("dec", 95.0, "no valid position"),
    ("ra", math.nan, "no valid position"),
    ("jd", math.inf, "candidate.jd"),
    ("jd", 1e12, "not a plausible MJD"),
])
def test_impossible_candidate_values(field: str, value: float, reason: str) -> None:
    def change(record: dict[str, Any]) -> None:
        record["candidate"][field] = value

    with pytest.raises(NormalizationError, match=reason):
        ztf.normalize(rewrite(V3_3.read_bytes(), change), meta())


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_mangled_packets_fail_cleanly(data: st.DataObject) -> None:
    """Cut or corrupted packets either normalize or raise an InputError, nothing else."""
    packet = bytearray(V3_3.read_bytes())
    for _ in range(data.draw(st.integers(0, 4))):
        packet[data.draw(st.integers(0, len(packet) - 1))] = data.draw(st.integers(0, 255))
    end = data.draw(st.integers(0, len(packet)))
    try:
        result = ztf.normalize(bytes(packet[:end]), meta())
    except InputError:
        return
    for alert in result.alerts:
        assert alerts_schema.validation_errors("alert", alert.to_document()) == []
