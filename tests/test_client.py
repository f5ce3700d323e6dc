"""The analysts' client (:mod:`mmbroker_client`) against a real server, on both backends.

One uvicorn server per backend serves an archive of synthetic alerts (some
embargoed, some proprietary), an LVK alert with a sky map held in the
archive, and a GW-GRB coincidence with its VOEvent and provenance.  The tests
only read it, so their order does not matter; the rate-limit test starts its
own server on the same archive.
"""

from __future__ import annotations

import base64
import contextlib
import json
import math
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from mmbroker_client import (
    BadRequest,
    Client,
    ClientError,
    NotFound,
    RateLimited,
    ResultTruncated,
    Unauthorized,
)

import alerts_schema
from alerts_schema.synthetic import alert_documents
from tests.conftest import free_port, pg_schema
from tests.servers import live_app

pytestmark = pytest.mark.timeout(60)

AUTHORITY = "t.mmbroker"
N_SYNTHETIC = 30
EMBARGOED = (0, 1, 2, 13)  # synthetic documents made embargoed...
PROPRIETARY = (3, 4)  # ...and proprietary
CONE = (150.0, 20.0, 2.0)  # ra_deg, dec_deg, radius_deg
IN_CONE = {10: (150.5, 20.3), 11: (149.2, 19.5), 12: (150.0, 21.9), 13: (150.1, 20.1)}
SKY_MAP_CENTRE = (123.4, -45.6)
SUPEREVENT = "S240101cl"


def _separation_deg(ra1: float, dec1: float, ra2: float, dec2: float) -> float:
    r1, d1, r2, d2 = map(math.radians, (ra1, dec1, ra2, dec2))
    cos = math.sin(d1) * math.sin(d2) + math.cos(d1) * math.cos(d2) * math.cos(r1 - r2)
    return math.degrees(math.acos(max(-1.0, min(1.0, cos))))


def _documents() -> list[dict[str, Any]]:
    docs = alert_documents(N_SYNTHETIC, seed=7)
    for i, (ra, dec) in IN_CONE.items():
        docs[i]["localization"].update(ra_deg=ra, dec_deg=dec)
    for i in EMBARGOED:
        docs[i]["data_rights"] = {"level": "embargoed", "embargo_until": "2099-01-01T00:00:00Z"}
    for i in PROPRIETARY:
        docs[i]["data_rights"] = {"level": "proprietary"}
    return docs


def _lvk_notice(sky_map: bytes) -> bytes:
    """An LVK notice (JSON, sky map base64) as tests/test_lvk.py builds them."""
    return json.dumps({
        "alert_type": "PRELIMINARY", "time_created": "2024-01-01T10:00:40Z",
        "superevent_id": SUPEREVENT, "external_coinc": None,
        "urls": {"gracedb": f"https://gracedb.example/superevents/{SUPEREVENT}/view/"},
        "event": {
            "time": "2024-01-01T10:00:00.123Z", "far": 3.2e-10, "significant": True,
            "instruments": ["H1", "L1", "V1"], "group": "CBC", "pipeline": "gstlal",
            "search": "AllSky",
            "classification": {"BNS": 0.9, "NSBH": 0.05, "BBH": 0.0, "Terrestrial": 0.05},
            "properties": {"HasNS": 0.99, "HasRemnant": 0.9}, "duration": None,
            "central_frequency": None, "skymap": base64.b64encode(sky_map).decode("ascii")},
    }).encode()


@dataclass
class Served:
    """The running server and what the archive holds."""

    url: str
    token: str
    archive: Any
    db_url: str
    data_dir: Path
    docs: list[dict[str, Any]]  # the synthetic documents, as ingested
    raw: dict[str, bytes]  # event id -> the bytes ingested
    sky_map: bytes

    def client(self, token: bool = False, **kwargs: Any) -> Client:
        return Client(self.url, token=self.token if token else None, **kwargs)

    @property
    def hidden_event_ids(self) -> set[str]:
        return {self.docs[i]["event_id"] for i in (*EMBARGOED, *PROPRIETARY)}


def _settings(db_url: str, data_dir: Path, **overrides: Any) -> Any:
    from broker.config import get_settings

    return get_settings(database_url=db_url, data_dir=data_dir, ivorn_authority=AUTHORITY,
                        **overrides)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def served(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[Served]:
    """The module's server, once per backend."""
    tmp = tmp_path_factory.mktemp(f"client-{request.param}")
    with contextlib.ExitStack() as stack:
        if request.param == "sqlite":
            db_url = f"sqlite:///{tmp / 'archive.sqlite3'}"
        else:
            request.getfixturevalue("pg_available")
            db_url = stack.enter_context(pg_schema("t_client"))
        yield from _serve(db_url, tmp)


def _serve(db_url: str, tmp: Path) -> Iterator[Served]:
    from broker.archive.store import Archive
    from broker.runtime.assembly import make_pipeline
    from broker.runtime.ingest import Ingestor
    from broker.web.app import create_app
    from broker.web.tokens import create_token
    from listeners.envelope import RawMessage
    from tests.test_skymap import fisher_map, multiorder_fits

    with pytest.MonkeyPatch.context() as env:
        env.setenv("MMBROKER_DATA_DIR", str(tmp / "data"))
        for var in ("MMBROKER_DATABASE_URL", "MMBROKER_CONFIG_FILE"):
            env.delenv(var, raising=False)
        archive = Archive.open(db_url)
        try:
            docs = _documents()
            raw = {d["event_id"]: json.dumps(d).encode() for d in docs}
            sky_map = multiorder_fits(*fisher_map(*SKY_MAP_CENTRE, 400.0, max_order=5))
            Ingestor(archive, authority=AUTHORITY).ingest(
                [RawMessage("file", data) for data in raw.values()]
                + [RawMessage("igwn.gwalert", _lvk_notice(sky_map))])
            # Two public examples through the whole pipeline: a coincidence, its
            # VOEvent and its provenance.
            settings = _settings(db_url, tmp / "data", api_rate_limit_per_s=0)
            examples = {p.name: p.read_bytes() for p in alerts_schema.example_paths("alert")}
            make_pipeline(settings, archive, targets=[]).ingest(
                [RawMessage("file", examples[name]) for name in
                 ("alert-gw-cbc-skymap.example.json", "alert-grb-gbm.example.json")])
            token, _ = create_token(archive, "client-tests",
                                    ["read:embargoed", "read:proprietary"])
            with live_app(create_app(settings, archive=archive)) as url:
                yield Served(url, token, archive, db_url, tmp / "data", docs, raw, sky_map)
        finally:
            archive.close()


def _event_ids(alerts: list[dict[str, Any]]) -> list[str]:
    return [a["event_id"] for a in alerts]


# -- lists ---------------------------------------------------------------------------------


def test_paging_gives_every_visible_alert_exactly_once(served: Served) -> None:
    everything = list(served.client(token=True).iter_alerts(page_size=4))
    ids = [a["id"] for a in everything]
    assert len(ids) == len(set(ids)) == served.archive.count_alerts()
    assert len(everything) == N_SYNTHETIC + 3  # the LVK alert and the two examples
    assert all(i.startswith(f"ivo://{AUTHORITY}/") for i in ids)
    times = [a["trigger_time"] for a in everything]
    assert [datetime.fromisoformat(t) for t in times] == \
        sorted((datetime.fromisoformat(t) for t in times), reverse=True)  # newest first

    public = list(served.client().iter_alerts(page_size=3))
    assert len({a["id"] for a in public}) == len(public)
    assert set(_event_ids(public)) == set(_event_ids(everything)) - served.hidden_event_ids
    assert len(public) == len(everything) - len(EMBARGOED) - len(PROPRIETARY)
    assert [a["id"] for a in public] == [i for i, a in zip(ids, everything, strict=True)
                                         if a["event_id"] not in served.hidden_event_ids]

    assert _event_ids(served.client().iter_alerts(page_size=2, max_rows=5)) == \
        _event_ids(public[:5])
    assert list(served.client().iter_alerts(max_rows=0)) == []


def test_data_rights_follow_the_token(served: Served) -> None:
    anonymous, reader = served.client(), served.client(token=True)
    assert anonymous.count_alerts(data_rights=["embargoed", "proprietary"]) == 0
    assert reader.count_alerts(data_rights="embargoed") == len(EMBARGOED)
    assert reader.count_alerts(data_rights="proprietary") == len(PROPRIETARY)
    secret = served.docs[PROPRIETARY[0]]
    (found,) = reader.iter_alerts(event_id=secret["event_id"])
    assert reader.alert(found["id"])["alert"]["data_rights"]["level"] == "proprietary"
    assert reader.raw(found["id"]) == served.raw[secret["event_id"]]
    for call in (anonymous.alert, anonymous.raw, anonymous.skymap_png):
        with pytest.raises(NotFound):
            call(found["id"])
    with pytest.raises(Unauthorized) as info:
        Client(served.url, token="mmb_not-a-token").count_alerts()
    assert info.value.status == 401 and "token" in info.value.detail


def test_table_has_units_and_the_rows_of_the_iterator(served: Served) -> None:
    client = served.client(token=True)
    table = client.alerts(page_size=7)
    assert list(table["ivorn"]) == [a["id"] for a in client.iter_alerts()]
    assert str(table["ra_deg"].unit) == "deg" and str(table["dec_deg"].unit) == "deg"
    assert str(table["far_hz"].unit) == "Hz" and str(table["energy_gev"].unit) == "GeV"
    assert table["ra_deg"].meta["ucd"] == "pos.eq.ra;meta.main"
    assert table["far_hz"].meta["ucd"] == "arith.rate"
    assert table.meta["truncated"] is False
    by_id = {a["id"]: a for a in client.iter_alerts()}
    for row in table:
        doc = by_id[row["ivorn"]]
        if doc.get("far_hz") is not None:
            assert row["far_hz"] == pytest.approx(doc["far_hz"])
        assert row["event_time"] == doc["trigger_time"]

    from astropy.time import Time

    for name in ("event_time", "received_at", "embargo_until"):  # times are Time, UTC
        assert isinstance(table[name], Time) and table[name].scale == "utc", name
    docs = [by_id[i] for i in table["ivorn"]]
    expected = Time([d["trigger_time"].rstrip("Z") for d in docs], format="isot", scale="utc")
    assert abs(table["event_time"] - expected).max().to_value("s") < 1e-6
    no_embargo = [(d.get("data_rights") or {}).get("embargo_until") is None for d in docs]
    assert any(no_embargo) and list(table["embargo_until"].mask) == no_embargo

    with pytest.warns(ResultTruncated):
        first = client.alerts(page_size=2, max_rows=5)
    assert list(first["ivorn"]) == list(table["ivorn"][:5]) and first.meta["truncated"]
    assert len(client.alerts(max_rows=None)) == len(table)


def test_alerts_df(served: Served) -> None:
    import pandas as pd

    frame = served.client().alerts_df(page_size=10)
    assert len(frame) == served.client().count_alerts()
    assert {"ivorn", "ra_deg", "dec_deg", "far_hz", "event_time"} <= set(frame.columns)
    assert isinstance(frame["event_time"].dtype, pd.DatetimeTZDtype)
    assert str(frame["event_time"].dt.tz) == "UTC"
    by_id = {a["id"]: a for a in served.client().iter_alerts()}
    for ivorn, when, until in zip(frame["ivorn"], frame["event_time"], frame["embargo_until"],
                                  strict=True):
        doc = by_id[ivorn]
        assert when == pd.Timestamp(doc["trigger_time"])  # aware UTC, to the microsecond
        embargo = (doc.get("data_rights") or {}).get("embargo_until")
        assert (until is pd.NaT) if embargo is None else until == pd.Timestamp(embargo)
    assert frame["embargo_until"].isna().all()  # the public ones have none
    empty = served.client().alerts_df(event_id="no-such-event")
    assert len(empty) == 0 and "ra_deg" in empty.columns


def test_cone_time_and_messenger_filters(served: Served) -> None:
    ra, dec, radius = CONE

    def inside(doc: dict[str, Any]) -> bool:
        loc = doc["localization"]
        return _separation_deg(ra, dec, loc["ra_deg"], loc["dec_deg"]) <= radius

    expected = {d["event_id"] for d in served.docs if inside(d)}
    assert len(expected) >= len(IN_CONE)
    public = set(_event_ids(served.client().iter_alerts(cone=CONE)))
    assert public == expected - served.hidden_event_ids
    assert set(_event_ids(served.client(token=True).iter_alerts(cone=CONE))) == expected
    assert set(served.client().alerts(ra=ra, dec=dec, radius=radius)["event_id"]) == public
    assert served.client().count_alerts(cone=(ra - 360.0, dec, radius)) == len(public)

    times = sorted(datetime.fromisoformat(d["trigger_time"]) for d in served.docs)
    middle = times[len(times) // 2]
    naive = middle.astimezone(UTC).replace(tzinfo=None)
    elsewhere = middle.astimezone(timezone(timedelta(hours=-5)))
    client = served.client(token=True)
    later = list(client.iter_alerts(since=naive, ivorn_contains="#syn-"))
    assert len(later) == sum(t >= middle for t in times)
    assert client.count_alerts(since=elsewhere, ivorn_contains="#syn-") == len(later)
    assert client.count_alerts(until=middle.date(), ivorn_contains="#syn-") == sum(
        t < datetime.combine(middle.date(), datetime.min.time(), UTC) for t in times)

    messengers = ["neutrino", "gamma_ray"]
    wanted = [d for d in served.docs if d["messenger"] in messengers and inside(d)]
    table = client.alerts(cone=CONE, messenger=messengers, since=times[0], until=times[-1])
    assert sorted(table["event_id"]) == sorted(d["event_id"] for d in wanted)
    assert set(table["messenger"]) <= set(messengers)


def test_count_alerts(served: Served) -> None:
    client = served.client()
    assert client.count_alerts() == len(list(client.iter_alerts()))
    neutrinos = [d for d in served.docs if d["messenger"] == "neutrino"
                 and d["event_id"] not in served.hidden_event_ids]
    assert client.count_alerts(messenger="neutrino", ivorn_prefix=f"ivo://{AUTHORITY}/") == \
        len(neutrinos)
    far = sorted(d["far_hz"] for d in served.docs)[10]
    assert served.client(token=True).count_alerts(far_max=far, ivorn_contains="#syn-") == 11


def test_filters_are_checked_before_sending(served: Served) -> None:
    client = served.client()
    with pytest.raises(TypeError, match="messanger"):
        client.iter_alerts(messanger="neutrino")
    with pytest.raises(TypeError, match="page_size"):
        client.alerts(limit=5)
    with pytest.raises(TypeError, match="cone"):
        client.count_alerts(cone=CONE, ra=1.0)
    with pytest.raises(TypeError, match="unknown voevent filter"):
        client.iter_voevents(far_max=1.0)
    with pytest.raises(ValueError, match="page_size"):
        client.iter_alerts(page_size=1001)
    with pytest.raises(BadRequest) as info:
        client.count_alerts(messenger="photon")
    assert info.value.status == 422 and isinstance(info.value.detail, list)
    with pytest.raises(BadRequest) as info:
        client.count_alerts(ra=10.0, dec=95.0, radius=1.0)
    assert info.value.status == 422
    with pytest.raises(BadRequest, match="sky map"):
        client.count_alerts(skymap="0" * 64)


# -- one resource --------------------------------------------------------------------------


def test_alert_raw_sky_map_and_not_found(served: Served) -> None:
    client = served.client()
    doc = served.docs[20]
    (alert,) = client.iter_alerts(event_id=doc["event_id"])
    detail = client.alert(alert["id"])
    assert detail["alert"] == alert and set(detail) == {"alert", "receipt", "links"}
    assert detail["links"]["raw"] == detail["links"]["self"] + "/raw"
    assert client.raw(alert["id"]) == served.raw[doc["event_id"]]
    assert client.skymap_png(alert["id"]).startswith(b"\x89PNG\r\n\x1a\n")
    with pytest.raises(NotFound):  # a point, not a sky map
        client.skymap(alert["id"])

    (gw,) = client.iter_alerts(event_id=SUPEREVENT)
    assert gw["id"].startswith(f"ivo://{AUTHORITY}/igwn.gwalert#")
    assert client.skymap(gw["id"]) == served.sky_map
    sha = gw["localization"]["skymap_sha256"]
    assert client.skymap_by_sha256(sha) == served.sky_map
    assert client.count_alerts(skymap=sha, level=0.9, ivorn_contains="#syn-") == 0

    missing = alert["id"] + "x"
    for call in (client.alert, client.raw, client.skymap, client.skymap_png, client.voevent,
                 client.coincidence):
        with pytest.raises(NotFound) as info:
            call(missing)
        assert info.value.status == 404 and info.value.url.startswith(served.url)
        assert isinstance(info.value, ClientError) and info.value.detail
    with pytest.raises(NotFound, match="no alert"):
        client.alert(missing)


def test_coincidence_voevent_and_provenance(served: Served) -> None:
    client = served.client()
    (coinc,) = client.iter_coincidences(pairing="gw_cbc-grb")
    detail = client.coincidence(coinc["id"])
    assert detail["coincidence"] == coinc
    assert client.count_coincidences(member=coinc["members"][0]["alert_id"]) == 1
    table = client.coincidences(messenger="gravitational_wave")
    assert coinc["id"] in list(table["ivorn"]) and str(table["ra_deg"].unit) == "deg"
    frame = client.coincidences_df()
    assert coinc["id"] in set(frame["ivorn"]) and str(frame["created_at"].dt.tz) == "UTC"
    assert client.coincidence_skymap_png(coinc["id"]).startswith(b"\x89PNG")

    (summary,) = client.iter_voevents(kind="coincidence", ref_exact=coinc["members"][0]
                                      ["alert_id"])
    assert summary["ivorn"] == coinc["id"] == summary["subject_ivorn"]
    xml = client.voevent(summary["ivorn"])
    assert len(xml) == summary["size_bytes"] and coinc["id"].encode() in xml
    import hashlib

    assert hashlib.sha256(xml).hexdigest() == summary["sha256"]
    assert coinc["id"] in list(client.voevents(kind="coincidence")["ivorn"])
    assert client.count_voevents(cited=False) >= 1

    prov = client.provenance(coinc["id"])
    assert isinstance(prov, dict) and "entity" in prov
    members = {m["alert_id"] for m in coinc["members"]}
    raw_hashes = {client.alert(m)["receipt"]["raw_sha256"] for m in members}
    text = json.dumps(prov)
    assert all(h in text for h in raw_hashes)
    xml_prov = client.provenance(coinc["id"], format="xml")
    assert xml_prov.lstrip().startswith(b"<?xml") and b"prov:document" in xml_prov
    assert b"document" in client.provenance(coinc["id"], format="provn")
    with pytest.raises(NotFound):  # alerts from files have no VOEvent of the broker's
        client.provenance(next(iter(members)))
    with pytest.raises(ValueError):
        client.provenance(coinc["id"], format="ttl")  # type: ignore[call-overload]


def test_cone_search(served: Served) -> None:
    client = served.client()
    table = client.cone_search(*CONE)
    assert set(table["ivorn"]) == {a["id"] for a in client.iter_alerts(cone=CONE)}
    assert str(table["ra_deg"].unit) == "deg" and str(table["far_hz"].unit) == "Hz"
    assert table.meta["QUERY_STATUS"] == "OK"
    assert table.colnames[:3] == ["ivorn", "ra_deg", "dec_deg"]
    assert client.cone_search(*CONE, verb=1).colnames == ["ivorn", "ra_deg", "dec_deg"]
    overflow = client.cone_search(*CONE, maxrec=1)
    assert len(overflow) == 1 and overflow.meta["QUERY_STATUS"] == "OVERFLOW"
    everything = served.client(token=True).cone_search(*CONE, verb=3)
    assert len(everything) > len(table) and "data_rights" in everything.colnames
    with pytest.raises(BadRequest, match="radius"):
        client.cone_search(10.0, 20.0, 200.0)


# -- rate limits ---------------------------------------------------------------------------


def test_rate_limited_then_retried(served: Served) -> None:
    from broker.web.app import create_app

    settings = _settings(served.db_url, served.data_dir, api_rate_limit_per_s=1,
                         api_rate_limit_burst=2)
    with live_app(create_app(settings, archive=served.archive)) as url:
        impatient = Client(url, max_retries=0)
        impatient.count_alerts()
        impatient.count_alerts()
        with pytest.raises(RateLimited) as info:
            impatient.count_alerts()
        assert info.value.status == 429 and info.value.retry_after_s == 1.0
        assert "rate limit" in info.value.detail
        patient = Client(url, max_retries=3)
        started = time.monotonic()
        assert patient.count_alerts() == served.client().count_alerts()
        assert time.monotonic() - started >= 0.5  # it waited for Retry-After
        # A token has its own bucket, and the cone search is limited too.
        reader = Client(url, token=served.token, max_retries=0)
        reader.cone_search(*CONE)
        reader.cone_search(*CONE)
        with pytest.raises(RateLimited):
            reader.cone_search(*CONE)


# -- no server dependencies ----------------------------------------------------------------

_BLOCKED = ("sqlalchemy", "fastapi", "starlette", "healpy", "lxml", "prov", "matplotlib",
            "voeventparse", "pydantic", "numpy", "astropy", "pandas")

_NO_SERVER_DEPS = """
import importlib.abc, json, sys

BLOCKED = set(json.loads(sys.argv[1]))

class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{name} is blocked in this test")
        return None

sys.meta_path.insert(0, Block())
import mmbroker_client as c

client = c.Client(sys.argv[2])
alerts = list(client.iter_alerts(page_size=5, max_rows=12))
first = client.alert(alerts[0]["id"])
try:
    client.alert(alerts[0]["id"] + "nope")
except c.NotFound as exc:
    missing = exc.status
loaded = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
broker_modules = sorted(m for m in sys.modules if m.split(".")[0] in
                        ("broker", "alerts_schema", "listeners", "crossmatch"))
print(json.dumps({"n": len(alerts), "same": first["alert"] == alerts[0], "missing": missing,
                  "count": client.count_alerts(), "loaded": loaded,
                  "broker": broker_modules}))
"""


def test_client_needs_no_server_dependencies(served: Served) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", _NO_SERVER_DEPS, json.dumps(_BLOCKED), served.url],
        capture_output=True, text=True, timeout=30, check=False,
        env={**os.environ, "PYTHONWARNINGS": "error"})
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result == {"n": 12, "same": True, "missing": 404,
                      "count": served.client().count_alerts(), "loaded": [],
                      "broker": []}


# -- without the broker --------------------------------------------------------------------


def test_filters_become_query_parameters() -> None:
    from mmbroker_client import ALERT_FILTERS, VOEVENT_FILTERS
    from mmbroker_client._client import _filter_params

    params = _filter_params({
        "since": datetime(2026, 1, 2, 3, 4, 5),  # naive: UTC
        "until": datetime(2026, 1, 2, 12, 0, tzinfo=timezone(timedelta(hours=2))),
        "received_since": datetime(2026, 1, 1).date(),
        "messenger": ["neutrino", "gamma_ray"], "far_max": 1e-8, "energy_min": 100,
        "event_id": None, "cone": (-10.0, 20.5, 3)}, ALERT_FILTERS, "alert")
    assert params == [("dec", "20.5"), ("energy_min", "100"), ("far_max", "1e-08"),
                      ("messenger", "neutrino"), ("messenger", "gamma_ray"),
                      ("ra", "350.0"), ("radius", "3.0"),
                      ("received_since", "2026-01-01T00:00:00Z"),
                      ("since", "2026-01-02T03:04:05Z"), ("until", "2026-01-02T10:00:00Z")]
    assert _filter_params({"ref_any": True, "cited": False}, VOEVENT_FILTERS, "voevent") == \
        [("cited", "false"), ("ref_any", "true")]
    with pytest.raises(ValueError, match="finite"):
        _filter_params({"far_max": float("nan")}, ALERT_FILTERS, "alert")

    import numpy as np
    from astropy.time import Time

    assert _filter_params({"ref_any": np.bool_(False), "ra": np.float64(1.5),
                           "role": np.array(["test", "drill"]),
                           "authored_since": Time(60000.5, format="mjd")},
                          VOEVENT_FILTERS, "voevent") == \
        [("authored_since", "2023-02-25T12:00:00.000Z"), ("ra", "1.5"), ("ref_any", "false"),
         ("role", "test"), ("role", "drill")]


def test_no_answer_is_a_client_error() -> None:
    client = Client(f"http://127.0.0.1:{free_port()}", timeout_s=5)
    with pytest.raises(ClientError) as info:
        client.count_alerts()
    assert info.value.status is None and not isinstance(info.value, NotFound)
    with pytest.raises(ValueError):
        Client("ftp://example.org")


@pytest.mark.timeout(20)
def test_the_token_is_not_sent_to_another_origin() -> None:
    """A redirect to another host or port drops the Authorization header."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    seen: list[tuple[str, str | None]] = []
    target: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append((self.path, self.headers.get("Authorization")))
            if self.path.startswith("/api/v1/alerts/"):  # the first origin redirects
                self.send_response(302)
                self.send_header("Location", target[0] + "/elsewhere")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            body = b'{"alert": {}, "receipt": {}, "links": {}}'
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    servers = [ThreadingHTTPServer(("127.0.0.1", 0), Handler) for _ in range(2)]
    threads = [threading.Thread(target=s.serve_forever, daemon=True) for s in servers]
    for thread in threads:
        thread.start()
    try:
        first, second = (f"http://127.0.0.1:{s.server_address[1]}" for s in servers)
        target.append(second)
        assert Client(first, token="mmb_secret").alert("ivo://x/y#z") == \
            {"alert": {}, "receipt": {}, "links": {}}
        assert seen == [("/api/v1/alerts/ivo%3A%2F%2Fx%2Fy%23z", "Bearer mmb_secret"),
                        ("/elsewhere", None)]
    finally:
        for server in servers:
            server.shutdown()
            server.server_close()
        for thread in threads:
            thread.join(5)


# -- the distribution -----------------------------------------------------------------------


def test_the_client_installs_alone_with_one_pip_command(tmp_path: Path) -> None:
    """``pip install ./clients/python``, as README.md shows, gives an importable, typed
    package that requires nothing (astropy and pandas only as extras)."""
    # From a copy: pip builds in the source tree, making and removing build/ and *.egg-info
    # in the clone while other tests (the suite runs on two workers) read it.
    root = tmp_path / "client-src"
    shutil.copytree(Path(__file__).resolve().parent.parent / "clients" / "python", root,
                    ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
         "--no-deps", "--target", str(target), str(root)],
        check=True, capture_output=True, timeout=300)
    assert (target / "mmbroker_client" / "py.typed").is_file()
    metadata = next(target.glob("mmbroker_client-*.dist-info")) / "METADATA"
    requires = [line for line in metadata.read_text().splitlines()
                if line.startswith("Requires-Dist:")]
    assert requires and all("extra ==" in line for line in requires), requires
    # -I: no site-packages, no working directory: only what was installed, and stdlib.
    proc = subprocess.run(
        [sys.executable, "-I", "-c",
         f"import sys; sys.path.insert(0, {str(target)!r}); import mmbroker_client as m; "
         "print(m.__version__, m.__file__)"],
        capture_output=True, text=True, timeout=60, check=True)
    version, path = proc.stdout.split()
    assert version == "0.1.0" and path.startswith(str(target))
