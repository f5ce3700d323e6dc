"""Rubin normalizer: Confluent wire format, the local schema registry, container files.

Rubin's own schemas and sample alerts are GPL-3.0 (lsst/alert_packet), so the
tests build their messages from a small Rubin-shaped schema written here
(``lsst.v99_1``: id 9901) laid out as alert_packet lays out its files.  The
real schemas and samples in ``../shared/samples/rubin`` are swept when present.
"""

from __future__ import annotations

import io
import json
import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import fastavro
import pytest

import alerts_schema
from alerts_schema import Alert
from alerts_schema.errors import ConfigurationError, InputError, MalformedInput, NormalizationError
from listeners import avro, rubin
from listeners.base import MessageMeta, Normalized
from listeners.common import tai_mjd_to_utc
from listeners.detect import Format, sniff
from tests.conftest import SAMPLES

DATA = Path(__file__).resolve().parent / "data" / "rubin"
SHARED = SAMPLES / "rubin"
RECEIVED = datetime(2026, 11, 21, 3, 13, 0, tzinfo=UTC)
NS = "lsst.v99_1"
SCHEMA_ID = 9901

DIA_SOURCE = {
    "type": "record", "name": "diaSource", "namespace": NS,
    "fields": [
        {"name": "diaSourceId", "type": "long"},
        {"name": "visit", "type": "long"},
        {"name": "detector", "type": "int"},
        {"name": "diaObjectId", "type": ["null", "long"], "default": None},
        {"name": "midpointMjdTai", "type": "double"},
        {"name": "ra", "type": "double"},
        {"name": "raErr", "type": ["null", "float"], "default": None},
        {"name": "dec", "type": "double"},
        {"name": "decErr", "type": ["null", "float"], "default": None},
        {"name": "x", "type": "float"},
        {"name": "psfFlux", "type": ["null", "float"], "default": None},
        {"name": "psfFluxErr", "type": ["null", "float"], "default": None},
        {"name": "snr", "type": ["null", "float"], "default": None},
        {"name": "band", "type": ["null", "string"], "default": None},
        {"name": "reliability", "type": ["null", "float"], "default": None},
    ],
}
ALERT = {
    "type": "record", "name": "alert", "namespace": NS,
    "fields": [
        {"name": "diaSourceId", "type": "long"},
        {"name": "observation_reason", "type": ["null", "string"], "default": None},
        {"name": "diaSource", "type": f"{NS}.diaSource"},
        {"name": "prvDiaSources", "type": ["null", {"type": "array",
                                                    "items": f"{NS}.diaSource"}],
         "default": None},
        {"name": "diaObject", "type": ["null", {
            "type": "record", "name": "diaObject", "namespace": NS,
            "fields": [{"name": "diaObjectId", "type": "long"},
                       {"name": "nDiaSources", "type": "int"}]}], "default": None},
        {"name": "cutoutDifference", "type": ["null", "bytes"], "default": None},
        {"name": "cutoutScience", "type": ["null", "bytes"], "default": None},
        {"name": "cutoutTemplate", "type": ["null", "bytes"], "default": None},
    ],
}
# The same schema in one piece, as a container file's header or a registry answer holds it.
SELF_CONTAINED = {**ALERT, "fields": [{**f, "type": DIA_SOURCE} if f["name"] == "diaSource"
                                      else f for f in ALERT["fields"]]}
SOURCE = {
    "diaSourceId": 3068394670028488705, "visit": 2025081500123, "detector": 42,
    "diaObjectId": 3068394670028488704, "midpointMjdTai": 60902.993305483615,
    "ra": 351.570546978, "raErr": 2.0e-5, "dec": -0.126243049656, "decErr": 1.0e-5, "x": 12.5,
    "psfFlux": 1241.0, "psfFluxErr": 12.0, "snr": 41.1, "band": "r", "reliability": 0.93,
}
RECORD = {
    "diaSourceId": SOURCE["diaSourceId"], "observation_reason": "wfd", "diaSource": SOURCE,
    "prvDiaSources": [{**SOURCE, "diaSourceId": i, "midpointMjdTai": 60900.0 + i}
                      for i in range(20)],
    "diaObject": {"diaObjectId": SOURCE["diaObjectId"], "nDiaSources": 21},
    "cutoutDifference": b"\x00" * 5000, "cutoutScience": b"\x01" * 5000,
    "cutoutTemplate": None,
}
# 60902.993305483615 TAI is 2025-08-15 23:50:21.593784 TAI; minus 37 s is UTC.
EXPECTED_UTC = datetime(2025, 8, 15, 23, 49, 44, 593784, tzinfo=UTC)


def meta(source: str = "lsst-alerts-v9") -> MessageMeta:
    return MessageMeta(source=source, received_at=RECEIVED, authority="test.mmbroker")


def write_schema_dir(root: Path) -> Path:
    """The test schema as lsst/alert_packet lays out a version: schema/99/1/*.avsc."""
    directory = root / "schema" / "99" / "1"
    directory.mkdir(parents=True)
    (directory / f"{NS}.alert.avsc").write_text(json.dumps(ALERT))
    (directory / f"{NS}.diaSource.avsc").write_text(json.dumps(DIA_SOURCE))
    (root / "sample_alert.json").write_text(json.dumps({"alertId": 1, "diaSource": {}}))
    (root / "latest.txt").write_text("99.1\n")
    return root


@pytest.fixture
def schema_dir(tmp_path: Path) -> Path:
    return write_schema_dir(tmp_path / "schemas")


@pytest.fixture
def registry(schema_dir: Path) -> Iterator[rubin.SchemaRegistry]:
    """The test registry as the module default, restored afterwards."""
    previous = rubin.registry()
    schemas = rubin.SchemaRegistry(schema_dir)
    rubin.use_registry(schemas)
    try:
        yield schemas
    finally:
        rubin.use_registry(previous)


def parsed_test_schema() -> Any:
    return fastavro.parse_schema(SELF_CONTAINED)


def body(record: dict[str, Any] = RECORD) -> bytes:
    out = io.BytesIO()
    fastavro.schemaless_writer(out, parsed_test_schema(), record)
    return out.getvalue()


def frame(payload: bytes, schema_id: int = SCHEMA_ID, magic: int = 0) -> bytes:
    return bytes([magic]) + schema_id.to_bytes(4, "big") + payload


def container(records: list[dict[str, Any]]) -> bytes:
    out = io.BytesIO()
    fastavro.writer(out, parsed_test_schema(), records)
    return out.getvalue()


def run(data: bytes, source: str = "lsst-alerts-v9") -> Normalized:
    result = rubin.normalize(data, meta(source))
    for alert in result.alerts:
        assert alerts_schema.validation_errors("alert", alert.to_document()) == []
    return result


def only(data: bytes, source: str = "lsst-alerts-v9") -> Alert:
    (alert,) = run(data, source).alerts
    return alert


# -- schema ids --------------------------------------------------------------------------

@pytest.mark.parametrize(("name", "schema_id"), [
    ("lsst.v7_1.alert", 701), ("lsst.v7_4.alert", 704), ("lsst.v11_0.alert", 1100),
    ("lsst.v13_10.alert", 1310), ("lsst.v11_0.diaSource", None), ("ztf.alert", None),
    ("lsst.v1_100.alert", None),
])
def test_schema_id_rule(name: str, schema_id: int | None) -> None:
    assert rubin.schema_id_for_name(name) == schema_id


# -- the registry ---------------------------------------------------------------------------

def test_registry_loads_alert_packet_layout(schema_dir: Path) -> None:
    parses = avro.parse_count()
    schemas = rubin.SchemaRegistry(schema_dir)
    assert schemas.ids() == [SCHEMA_ID] and SCHEMA_ID in schemas
    assert avro.parse_count() - parses == 1  # parsed once, at load
    assert schemas.get(SCHEMA_ID).name == f"{NS}.alert"
    assert schemas.origin(SCHEMA_ID).endswith(f"{NS}.alert.avsc")
    skipped = {Path(path).name for path, _reason in schemas.skipped}
    assert skipped == {f"{NS}.diaSource.avsc", "sample_alert.json"}


def test_registry_other_file_forms(tmp_path: Path) -> None:
    canonical = json.dumps(SELF_CONTAINED)
    (tmp_path / "4242.avsc").write_text(canonical)  # the id as the file name
    (tmp_path / "answer.json").write_text(json.dumps({"id": 4243, "version": 1,
                                                      "schema": canonical}))
    renamed = json.loads(canonical)
    renamed["name"] = "lsst.v98_0.alert"
    out = io.BytesIO()
    fastavro.writer(out, renamed, [])
    (tmp_path / "fakeAlert.avro").write_bytes(out.getvalue())  # a schema in an OCF header
    (tmp_path / "noise.avro").write_bytes(b"not avro")
    schemas = rubin.SchemaRegistry(tmp_path)
    assert schemas.ids() == [4242, 4243, 9800]
    assert rubin.SchemaRegistry(tmp_path, include_containers=False).ids() == [4242, 4243]


def test_registry_configuration_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="does not exist"):
        rubin.SchemaRegistry(tmp_path / "missing")
    (tmp_path / "lsst.v5_0.alert.avsc").write_text('{"type": "record", "name": "lsst.v5_0.'
                                                   'alert", "fields": [{"name": "a"}]}')
    with pytest.raises(ConfigurationError, match=r"lsst\.v5_0\.alert\.avsc"):
        rubin.SchemaRegistry(tmp_path)
    (tmp_path / "lsst.v5_0.alert.avsc").write_text("{broken")
    with pytest.raises(ConfigurationError, match="not JSON"):
        rubin.SchemaRegistry(tmp_path)


def test_registry_refuses_two_schemas_for_one_id(tmp_path: Path) -> None:
    write_schema_dir(tmp_path)
    other = {"type": "record", "name": "x", "fields": [{"name": "a", "type": "int"}]}
    (tmp_path / f"{SCHEMA_ID}.avsc").write_text(json.dumps(other))
    with pytest.raises(ConfigurationError, match=f"schema id {SCHEMA_ID}"):
        rubin.SchemaRegistry(tmp_path)


# -- Confluent messages ----------------------------------------------------------------------

def test_confluent_message_known_values(registry: rubin.SchemaRegistry) -> None:
    data = frame(body())
    assert sniff(data) is Format.AVRO_CONFLUENT
    alert = only(data)
    assert alert.id == f"ivo://test.mmbroker/lsst#{SOURCE['diaSourceId']}-0"
    assert alert.event_id == str(SOURCE["diaSourceId"]) and alert.revision == 0
    assert (alert.messenger, alert.facility, alert.source) == ("optical", "Rubin",
                                                               "lsst-alerts-v9")
    assert alert.trigger_time == EXPECTED_UTC
    loc = alert.localization
    assert (loc.ra_deg, loc.dec_deg, loc.containment) == (351.570546978, -0.126243049656, 0.9)
    assert loc.error_radius_deg == pytest.approx(2.1460 * 2.0e-5, rel=1e-4)  # 90% of raErr
    extra = alert.extra
    assert extra["diaSourceId"] == SOURCE["diaSourceId"]
    assert extra["diaObjectId"] == SOURCE["diaObjectId"]
    assert extra["psfFlux"] == 1241.0 and extra["psfFluxErr"] == 12.0  # nJy
    assert extra["band"] == "r" and extra["midpointMjdTai"] == SOURCE["midpointMjdTai"]
    assert extra["schema_id"] == SCHEMA_ID and extra["schema_name"] == f"{NS}.alert"
    assert extra["observation_reason"] == "wfd"
    assert alert.data_rights.level == "public"


def test_tai_to_utc_agrees_with_astropy() -> None:
    time = pytest.importorskip("astropy.time")
    for mjd in (41317.5, 50000.25, 57000.0, 57754.5, 60902.993305483615, 61500.0):
        expected = time.Time(mjd, format="mjd", scale="tai").utc.to_datetime(timezone=UTC)
        assert abs((tai_mjd_to_utc(mjd) - expected).total_seconds()) < 1e-5, mjd
    # 0.2 days of TAI across the leap second of 2016-12-31 read one second less in UTC.
    before, after = tai_mjd_to_utc(57753.9), tai_mjd_to_utc(57754.1)
    assert after - before == timedelta(days=0.2) - timedelta(seconds=1)


def test_projection_skips_history_object_and_cutouts(registry: rubin.SchemaRegistry) -> None:
    record = avro.decode_datum(body(), registry.get(SCHEMA_ID), rubin.PROJECTION)
    assert set(record) == {"diaSourceId", "observation_reason", "diaSource"}
    assert "x" not in record["diaSource"]  # narrowed to the fields the Alert uses
    full = avro.decode_datum(body(), registry.get(SCHEMA_ID), None)
    assert len(full["prvDiaSources"]) == 20 and full["cutoutScience"] == b"\x01" * 5000


def test_no_parsing_per_message(registry: rubin.SchemaRegistry) -> None:
    data = frame(body())
    parses = avro.parse_count()
    for _ in range(50):
        run(data)
    assert avro.parse_count() == parses


def test_errors_without_uncertainties_use_the_default_radius(
        registry: rubin.SchemaRegistry) -> None:
    record = {**RECORD, "diaSource": {**SOURCE, "raErr": None, "decErr": None}}
    loc = only(frame(body(record))).localization
    assert loc.error_radius_deg == rubin.DEFAULT_ERROR_RADIUS_DEG


def test_file_source_takes_the_stream_name(registry: rubin.SchemaRegistry) -> None:
    assert only(frame(body()), source="file").source == "lsst"


# -- container files -------------------------------------------------------------------------

def test_container_files(registry: rubin.SchemaRegistry) -> None:
    second = {**RECORD, "diaSourceId": 7, "diaSource": {**SOURCE, "diaSourceId": 7}}
    data = container([RECORD, second])
    assert rubin.accepts(Format.AVRO_OCF, None, meta("file"), data)
    alerts = run(data, source="file").alerts
    assert [a.event_id for a in alerts] == [str(SOURCE["diaSourceId"]), "7"]
    assert alerts[0].extra["schema_id"] == SCHEMA_ID
    avro.CACHE.clear()
    for _ in range(5):
        run(data, source="file")
    assert avro.CACHE.misses == 1


def test_broker_output_is_not_a_rubin_alert() -> None:
    data = (DATA / "ampel_LSSTReport.avro").read_bytes()
    assert not rubin.accepts(Format.AVRO_OCF, None, meta("file"), data)
    with pytest.raises(NormalizationError, match="not a Rubin alert"):
        rubin.normalize(data, meta())


# -- routing ------------------------------------------------------------------------------------

def test_accepts(registry: rubin.SchemaRegistry) -> None:
    data = frame(body())
    assert rubin.accepts(Format.AVRO_CONFLUENT, None, meta("lsst-alerts"))
    assert rubin.accepts(Format.AVRO_CONFLUENT, None, meta("rubin.alerts"))
    assert rubin.accepts(Format.AVRO_CONFLUENT, None, meta("file"), data)
    assert rubin.accepts(Format.AVRO_CONFLUENT, data, meta("file"))
    assert not rubin.accepts(Format.AVRO_CONFLUENT, None, meta("file"), frame(body(), 704))
    assert not rubin.accepts(Format.AVRO_CONFLUENT, None, meta("file"))
    assert not rubin.accepts(Format.JSON, {"diaSource": {}}, meta("lsst-alerts"))
    assert rubin.handle(data, None, meta()).alerts[0].event_id == str(SOURCE["diaSourceId"])


# -- hostile and malformed input ----------------------------------------------------------------

def test_wrong_magic_byte(registry: rubin.SchemaRegistry) -> None:
    with pytest.raises(MalformedInput, match="magic byte 0x01 is not 0x00"):
        rubin.normalize(frame(body(), magic=1), meta())


def test_unknown_schema_id(registry: rubin.SchemaRegistry) -> None:
    with pytest.raises(MalformedInput, match=r"unknown Rubin schema id 704 \(would be "
                                             r"lsst\.v7_4\).*holds: 9901"):
        rubin.normalize(frame(body(), 704), meta())


def test_no_registry_configured() -> None:
    assert len(rubin.registry()) == 0
    with pytest.raises(MalformedInput, match="no schema directory configured"):
        rubin.normalize(frame(body()), meta())


@pytest.mark.parametrize("cut", [0, 1, 4, 5, 6, 20, 100, -5000, -1])
def test_truncated_messages(registry: rubin.SchemaRegistry, cut: int) -> None:
    data = frame(body())
    with pytest.raises(MalformedInput, match=r"shorter|no Avro body|truncated|decode|left"):
        rubin.normalize(data[:cut], meta())


def test_trailing_bytes(registry: rubin.SchemaRegistry) -> None:
    with pytest.raises(MalformedInput, match="bytes left after the datum"):
        rubin.normalize(frame(body() + b"\x00\x01"), meta())


def test_random_bytes(registry: rubin.SchemaRegistry) -> None:
    rng = random.Random(11)
    for _ in range(200):
        noise = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 400)))
        with pytest.raises(InputError):
            rubin.normalize(frame(noise), meta())
        with pytest.raises(InputError):
            rubin.normalize(noise, meta())


def test_implausible_time(registry: rubin.SchemaRegistry) -> None:
    record = {**RECORD, "diaSource": {**SOURCE, "midpointMjdTai": 1480360995.0}}
    with pytest.raises(NormalizationError, match=r"diaSource\.midpointMjdTai.*not a plausible"):
        rubin.normalize(frame(body(record)), meta())


# -- the real schemas and samples, when ../shared/samples is present -----------------------------

@pytest.fixture(scope="module")
def shared_registry() -> rubin.SchemaRegistry:
    if not SHARED.is_dir():
        pytest.skip(f"{SHARED} absent: the shared sample sweep needs ../shared/samples")
    return rubin.SchemaRegistry(SHARED)


def shared_files() -> list[Any]:
    if not SHARED.is_dir():
        return [pytest.param(None, marks=pytest.mark.skip(
            reason=f"{SHARED} absent: the shared sample sweep needs ../shared/samples"))]
    return [pytest.param(p, id=p.name) for p in sorted(SHARED.glob("*.avro"))]


def test_shared_registry_ids(shared_registry: rubin.SchemaRegistry) -> None:
    # fakeAlert_v*.avro headers and schema_v11_0/*.avsc: 11.0 twice, with one fingerprint.
    assert {300, 400, 500, 600, 601, 700, 701, 702, 703, 704, 800, 900, 1000, 1100} == set(
        shared_registry.ids())
    for path in (SHARED / "pittgoogle_lsst.v7_4.avro", SHARED / "pittgoogle_lsst.v11_0.avro"):
        schema_id = int.from_bytes(path.read_bytes()[1:5], "big")
        assert shared_registry.get(schema_id).name == path.name.removeprefix(
            "pittgoogle_").removesuffix(".avro") + ".alert"


@pytest.mark.parametrize("path", shared_files())
def test_shared_samples(path: Path, shared_registry: rubin.SchemaRegistry) -> None:
    data = path.read_bytes()
    version = path.stem.rsplit("v", 1)[-1]
    try:
        result = rubin.normalize(data, meta("file"), shared_registry)
    except InputError as exc:
        if path.name.startswith("ampel"):
            assert isinstance(exc, NormalizationError) and "not a Rubin alert" in exc.reason
        elif path.name.startswith("pittgoogle_rapid"):  # Roman's RAPID, not Rubin: id 100
            assert isinstance(exc, MalformedInput) and "schema id 100" in exc.reason
        else:
            # Schemas 3.0-7.4 samples put 1480360995 (a Unix time) in the MJD field.
            assert int(version.split("_")[0]) <= 7, exc.reason
            assert isinstance(exc, NormalizationError) and "plausible MJD" in exc.reason
        return
    assert int(version.split("_")[0]) >= 8
    (alert,) = result.alerts
    assert alerts_schema.validation_errors("alert", alert.to_document()) == []
    previous = rubin.registry()
    rubin.use_registry(shared_registry)
    try:
        assert rubin.accepts(sniff(data), None, meta("file"), data)
    finally:
        rubin.use_registry(previous)
    assert alert.event_id == "281323062375219200" and alert.source == "lsst"
    assert (alert.localization.ra_deg, alert.localization.dec_deg) == (351.570546978,
                                                                       0.126243049656)
    assert alert.trigger_time == EXPECTED_UTC  # the samples' 60902.993305483615 TAI
    assert alert.extra["psfFlux"] == 1241.0 and alert.extra["band"] == "r"
    assert alert.localization.error_radius_deg == pytest.approx(2.1460 * 0.00028, rel=1e-3)
