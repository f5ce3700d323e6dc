"""Sky maps by URL are fetched (issue 16, item 2).

Against a real HTTP server on 127.0.0.1 (``http.server`` in a thread, stopped after
each test) serving the real FITS maps of ``../shared/samples``, and answers that go
wrong: slow, trickling, 404, 403, oversize, a redirect off the allowlist, HTML, FITS
that is no sky map, a gzip bomb.  Each is a clear error, kept on the alert and in the
fetch queue and logged, and the alert stays archived and matched with what it had.
The end-to-end tests feed the real LVK VOEvent of MS181101ab, its ``skymap_fits``
pointing at the local server, then a GRB point notice inside the map: they pair
spatially once the map is fetched, and a GRB that arrived before the map gets its
coincidence updated (revision 1, a new VOEvent) when the map comes.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import logging
import re
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select

from alerts_schema import Alert, SkymapLocalization, validation_errors
from alerts_schema.model import format_utc
from broker.archive.db import transaction
from broker.archive.models import AlertRow, ProvenanceDoc, Skymap, VOEventRow
from broker.archive.store import Archive
from broker.config import Settings, get_settings
from broker.runtime import assembly
from broker.runtime.mapfetch import (
    FetchPolicy,
    MapFetchError,
    MapFetchLoop,
    MapFetchUnavailable,
    check_url,
    fetch,
    queue_status,
    read_map,
)
from broker.runtime.pipeline import Pipeline
from crossmatch.events import fetched_map, order, supersedes
from listeners.base import MessageMeta
from listeners.common import skymap_url
from listeners.envelope import RawMessage
from tests.conftest import SAMPLES

pytestmark = pytest.mark.timeout(120)

LVK_MAP = SAMPLES / "lvk" / "bayestar.multiorder.fits"
FERMI_MAP = SAMPLES / "voevents" / "gwcelery" / "fermi_skymap.fits.gz"
GW_VOEVENT = SAMPLES / "lvk" / "MS181101ab-2-Preliminary.xml"
GBM_FLIGHT = SAMPLES / "gcn-schema" / "notices__fermi__gbm__trigger.flight1.example.json"
MAP_PEAK = (194.30419921875, -17.856895095545468)  # bayestar.multiorder.fits' densest pixel
AUTHORITY = "test.mmbroker"


# -- the local server ---------------------------------------------------------------

class MapServer:
    """An HTTP server on 127.0.0.1 answering each path as :meth:`route` says."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.release = threading.Event()  # "/held/..." answers once this is set
        self.hits: dict[str, int] = {}
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.hits[self.path] = server.hits.get(self.path, 0) + 1
                # The fetcher may hang up mid-answer, as it should on some.
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    server.route(self)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,),
                                       name="map-server", daemon=True)

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"

    @staticmethod
    def send(handler: http.server.BaseHTTPRequestHandler, status: int, body: bytes = b"",
             headers: dict[str, str] | None = None, length: bool = True) -> None:
        handler.send_response(status)
        for name, value in (headers or {}).items():
            handler.send_header(name, value)
        if length:
            handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    def route(self, h: http.server.BaseHTTPRequestHandler) -> None:
        path = h.path
        if path.startswith("/held/"):
            self.release.wait(30)
            path = path[len("/held"):]
        name = re.sub(r",\d+$", "", path.rsplit("/", 1)[-1])  # GraceDB's ",0" version
        if path.startswith("/maps/"):
            data = {"bayestar.multiorder.fits": LVK_MAP,
                    "glg_healpix_all_bn180524416.fit": FERMI_MAP}.get(name)
            if data is None:
                self.send(h, 404, b"no such map")
            else:
                self.send(h, 200, data.read_bytes(), {"Content-Type": "application/fits"})
        elif path == "/slow.fits":  # says nothing for longer than the fetcher waits
            self.stop.wait(5)
            self.send(h, 200, LVK_MAP.read_bytes())
        elif path == "/trickle.fits":  # a byte at a time, each well within the timeout
            h.send_response(200)
            h.end_headers()
            for byte in LVK_MAP.read_bytes()[:200]:
                if self.stop.wait(0.05):
                    return
                h.wfile.write(bytes([byte]))
                h.wfile.flush()
        elif path == "/missing.fits":
            self.send(h, 404, b"not yet")
        elif path == "/forbidden.fits":
            self.send(h, 403, b"who are you")
        elif path == "/big.fits":  # says so up front
            self.send(h, 200, b"SIMPLE  =" + b" " * 100,
                      {"Content-Length": str(10**9)}, length=False)
        elif path == "/endless.fits":  # says nothing about its length, and never ends
            h.send_response(200)
            h.end_headers()
            h.wfile.write(b"SIMPLE  =                    T")
            chunk = b" " * 65536
            while not self.stop.is_set():
                h.wfile.write(chunk)
        elif path == "/away.fits":  # to a host the allowlist does not name
            self.send(h, 302, headers={"Location": self.url("/maps/bayestar.multiorder.fits",
                                                            host="localhost")})
        elif path == "/around.fits":  # to a path on the same, allowed, host
            self.send(h, 301, headers={"Location": "/maps/bayestar.multiorder.fits"})
        elif path == "/loop.fits":
            self.send(h, 302, headers={"Location": "/loop.fits"})
        elif path == "/file.fits":
            self.send(h, 302, headers={"Location": "file:///etc/passwd"})
        elif path == "/page.fits":
            self.send(h, 200, b"<!DOCTYPE html><html><body>Sky map</body></html>",
                      {"Content-Type": "text/html"})
        elif path == "/image.fits":  # FITS, but an image, not a HEALPix table
            import io

            from astropy.io import fits

            out = io.BytesIO()
            fits.PrimaryHDU(data=[[1.0, 2.0], [3.0, 4.0]]).writeto(out)
            self.send(h, 200, out.getvalue())
        elif path == "/bomb.fits.gz":
            self.send(h, 200, gzip_bomb())
        elif path == "/flaky.fits":  # down twice, then up
            if self.hits[h.path] <= 2:
                self.send(h, 503, b"busy")
            else:
                self.send(h, 200, LVK_MAP.read_bytes())
        else:
            self.send(h, 404, b"?")


_BOMB: list[bytes] = []


def gzip_bomb() -> bytes:
    """A gzipped 'FITS file' of 300 MB (past the reader's 256 MB limit), 300 kB sent."""
    if not _BOMB:
        packer = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
        parts = [packer.compress(b"SIMPLE  =                    T" + b" " * 2850)]
        block = bytes(1 << 20)
        parts += [packer.compress(block) for _ in range(300)]
        parts.append(packer.flush())
        _BOMB.append(b"".join(parts))
    return _BOMB[0]


@pytest.fixture
def server() -> Iterator[MapServer]:
    srv = MapServer()
    srv.thread.start()
    try:
        yield srv
    finally:
        srv.stop.set()
        srv.release.set()
        srv.httpd.shutdown()
        srv.httpd.server_close()
        srv.thread.join(10)


POLICY = FetchPolicy(hosts=frozenset({"127.0.0.1"}), allow_http=True, max_bytes=4_000_000,
                     timeout_s=0.5, deadline_s=3.0)


# -- the fetcher ----------------------------------------------------------------------

def test_fetches_the_real_maps(server: MapServer) -> None:
    # The LVK map, by the URL as LVK writes it (GraceDB's ",0" file version kept).
    got = fetch(server.url("/maps/bayestar.multiorder.fits,0"), POLICY)
    assert got.data == LVK_MAP.read_bytes()
    skymap, sky = read_map(got.data, got.url)
    assert skymap.format == "multiorder"
    assert skymap.area_90_deg2 == pytest.approx(30.98, abs=0.01)
    assert sky.max_position() == pytest.approx(MAP_PEAK)
    # The real Fermi GBM map: flat RING HEALPix, gzipped.
    got = fetch(server.url("/maps/glg_healpix_all_bn180524416.fit"), POLICY)
    assert got.data == FERMI_MAP.read_bytes()
    assert read_map(got.data, got.url)[0].format == "flat"


def test_redirects_followed_only_on_the_allowlist(server: MapServer) -> None:
    got = fetch(server.url("/around.fits"), POLICY)
    assert got.data == LVK_MAP.read_bytes()
    assert got.url == server.url("/maps/bayestar.multiorder.fits")
    assert server.hits["/maps/bayestar.multiorder.fits"] == 1
    with pytest.raises(MapFetchError, match=r"redirects to http://localhost:\d+/maps/bayestar"
                                            r".*host localhost is not on the sky map host "
                                            r"list"):
        fetch(server.url("/away.fits"), POLICY)
    assert server.hits["/maps/bayestar.multiorder.fits"] == 1  # never went there again
    with pytest.raises(MapFetchError, match="more than 5 redirects"):
        fetch(server.url("/loop.fits"), POLICY)
    with pytest.raises(MapFetchError, match="redirects to file:///etc/passwd: file scheme"):
        fetch(server.url("/file.fits"), POLICY)


@pytest.mark.parametrize(("url", "why"), [
    ("file:///etc/passwd.fits", "file scheme: only https URLs are fetched"),
    ("ftp://heasarc.gsfc.nasa.gov/fermi/glg_healpix_all_bn1.fit", "ftp scheme"),
    ("data:application/fits;base64,U0lNUExF.fits", "data scheme"),
    ("https://example.com/localization.fits", "host example.com is not on the sky map host"),
    ("https://gracedb.ligo.org.evil.example/x.fits", "host gracedb.ligo.org.evil.example"),
    ("https://user:secret@gracedb.ligo.org/x.fits", "credentials in the URL are never sent"),
    ("https://gracedb.ligo.org:notaport/x.fits", "is not a URL"),
])
def test_refused_before_any_request(url: str, why: str) -> None:
    policy = FetchPolicy(hosts=frozenset(get_settings().skymap_fetch_hosts))
    with pytest.raises(MapFetchError, match=re.escape(why)):
        fetch(url, policy)


def test_https_in_production() -> None:
    production = FetchPolicy(hosts=frozenset(get_settings().skymap_fetch_hosts))
    gbm = ("http://heasarc.gsfc.nasa.gov/FTP/fermi/data/gbm/triggers/2024/bn240812094/"
           "quicklook/glg_healpix_all_bn240812094.fit")
    assert check_url(gbm, production) == "https" + gbm[4:]
    # Allowing plain HTTP is for loopback (tests) only; anything else stays on TLS.
    lenient = FetchPolicy(hosts=frozenset({"heasarc.gsfc.nasa.gov", "127.0.0.1"}),
                          allow_http=True)
    assert check_url(gbm, lenient) == "https" + gbm[4:]
    assert check_url("http://127.0.0.1:8080/a.fits", lenient) == "http://127.0.0.1:8080/a.fits"
    strict = FetchPolicy(hosts=frozenset({"127.0.0.1"}))
    assert check_url("http://127.0.0.1:8080/a.fits", strict) == "https://127.0.0.1:8080/a.fits"


def test_the_default_hosts_are_the_streams_own() -> None:
    """Every sky map URL of the samples' real notices names a default host, bar the LVK
    user guide's examples and the schema's example.com."""
    from listeners import registry

    hosts = set(get_settings().skymap_fetch_hosts)
    named: set[str] = set()
    for path in sorted(SAMPLES.rglob("*")):
        if path.suffix not in (".xml", ".json") or not path.is_file():
            continue
        meta = MessageMeta("file", _now(), AUTHORITY)
        try:
            _, result = registry.normalize(path.read_bytes(), meta)
        except Exception:
            continue
        for alert in result.alerts:
            if url := alert.extra.get("skymap_url"):
                named.add(url.split("/")[2].lower())
    assert named - hosts == {"emfollow.docs.ligo.org"}
    assert hosts - named == {"opendata.km3net.de"}  # KM3NeT names its site, no map yet


@pytest.mark.parametrize(("path", "error", "why"), [
    ("/missing.fits", MapFetchUnavailable, r"HTTP 404 Not Found"),
    ("/slow.fits", MapFetchUnavailable, r"timed out \(no answer within 0.5 s\)"),
    ("/trickle.fits", MapFetchUnavailable, r"not done within 3 s \(\d+ bytes read\)"),
    ("/forbidden.fits", MapFetchError, r"HTTP 403 Forbidden"),
    ("/big.fits", MapFetchError, r"1000000000 bytes, over the 4000000-byte limit"),
    ("/endless.fits", MapFetchError, r"over the 4000000-byte limit"),
    ("/page.fits", MapFetchError, r"not a FITS file \(starts b'<!DOCTYPE'"),
])
def test_answers_that_go_wrong(server: MapServer, path: str, error: type[Exception],
                               why: str) -> None:
    started = time.monotonic()
    with pytest.raises(error, match=why):
        fetch(server.url(path), POLICY)
    assert time.monotonic() - started < POLICY.deadline_s + 1.0  # bounded, whatever it does


@pytest.mark.parametrize(("path", "why"), [
    ("/image.fits", r"not a readable sky map: sky map FITS holds no binary table"),
    ("/bomb.fits.gz", r"not a readable sky map: sky map expands beyond the 268435456-byte "
                      r"limit when gunzipped"),
])
def test_fits_that_is_no_map_is_refused_by_the_hardened_reader(server: MapServer, path: str,
                                                                why: str) -> None:
    assert len(gzip_bomb()) < 1_000_000  # made before the server is asked for it
    got = fetch(server.url(path), POLICY)
    with pytest.raises(MapFetchError, match=why):
        read_map(got.data, got.url)


# -- the normalizers record the URL, and only a map's ----------------------------------

@pytest.mark.parametrize(("value", "kept"), [
    ("https://gracedb.ligo.org/api/superevents/S1/files/bayestar.multiorder.fits,1", True),
    ("https://roc.icecube.wisc.edu/public/x.skymap_nside_1024_probability.fits.gz", True),
    ("http://heasarc.gsfc.nasa.gov/FTP/fermi/quicklook/glg_healpix_all_bn1.fit", True),
    ("file:///tmp/map.fits", True),  # kept: the fetcher refuses it, and says so
    ("https://opendata.km3net.de/", False),
    ("http://heasarc.gsfc.nasa.gov/FTP/fermi/quicklook/glg_locplot_all_bn1.png", False),
    ("https://example.org/a map.fits", False), ("not a url.fits", False), (42, False),
    ("https://x.org/" + "a" * 1100 + ".fits", False),
])
def test_skymap_url(value: object, kept: bool) -> None:
    assert (skymap_url(value) == value) is kept


def test_gbm_voevent_location_map_is_its_healpix_file() -> None:
    """GCN writes the quick-look plot in LocationMap_URL; the map beside it is fetched
    (the name gwcelery and SkyPortal use), over HTTPS."""
    from listeners import voevent

    data = (SAMPLES / "voevents" / "gwcelery" / "fermi_final_gcn.xml").read_bytes()
    (alert,) = voevent.normalize(data, MessageMeta("file", _now(), AUTHORITY)).alerts
    assert alert.localization.kind == "point"
    assert alert.extra["skymap_url"] == (
        "http://heasarc.gsfc.nasa.gov/FTP/fermi/data/gbm/triggers/2018/bn180524416/quicklook/"
        "glg_healpix_all_bn180524416.fit")
    # A flight position names the plot too, but no map is published for it.
    data = (SAMPLES / "voevents" / "gwcelery" / "fermi_grb_gcn.xml").read_bytes()
    (alert,) = voevent.normalize(data, MessageMeta("file", _now(), AUTHORITY)).alerts
    assert "skymap_url" not in alert.extra


# -- through the archive and the engine -------------------------------------------------

def _now() -> Any:
    from broker.archive.store import utcnow

    return utcnow()


def settings_for(server: MapServer, **more: Any) -> Settings:
    return get_settings(comet=False, skymap_fetch_hosts="127.0.0.1",
                        skymap_fetch_allow_http=True, skymap_fetch_timeout_s=0.5,
                        skymap_fetch_deadline_s=3.0, skymap_fetch_max_bytes=4_000_000,
                        skymap_fetch_backoff_s=0.05, skymap_fetch_backoff_max_s=0.1,
                        skymap_fetch_attempts=3, skymap_fetch_workers=1, **more)


def gw_voevent(url: str) -> bytes:
    """The real LVK Preliminary VOEvent of MS181101ab, its sky map at ``url``."""
    data = GW_VOEVENT.read_bytes()
    return data.replace(b"https://emfollow.docs.ligo.org/userguide/_static/"
                        b"bayestar.multiorder.fits,0", url.encode())


def grb_notice(gw: Alert, *, dt_s: float = 1.2, at: tuple[float, float] = MAP_PEAK) -> bytes:
    """The real GCN Fermi GBM flight-position notice (a point, 8.3 deg), a test like the
    mock GW, placed ``dt_s`` after it at ``at``."""
    doc = json.loads(GBM_FLIGHT.read_text())
    doc.update(trigger_time=format_utc(gw.trigger_time + timedelta(seconds=dt_s)),
               alert_tense="test", ra=at[0], dec=at[1])
    return json.dumps(doc).encode()


def make(settings: Settings, archive: Archive) -> Pipeline:
    # Past alerts: the engine on their event times; VOEvents archived, not sent.
    return assembly.make_pipeline(settings, archive, replay=True, warm=False, targets=[])


def ingest(pipeline: Pipeline, source: str, data: bytes) -> Alert:
    (outcome,) = pipeline.ingest([RawMessage(source, data)])
    assert outcome.status == "archived", outcome.reason
    assert outcome.alert is not None
    return outcome.alert


def row(archive: Archive, ivorn: str) -> Any:
    with transaction(archive.engine, readonly=True) as conn:
        return conn.execute(select(AlertRow).where(AlertRow.ivorn == ivorn)).one()


def fetches(archive: Archive) -> list[dict[str, Any]]:
    return queue_status(archive)


def loop_for(settings: Settings, archive: Archive, pipeline: Pipeline) -> MapFetchLoop:
    """The loop the composition root builds, with no thread: run here a job at a time."""
    return assembly.mapfetch_loop(settings, archive, pipeline)


def test_an_lvk_voevent_gets_its_map(server: MapServer, archive: Archive) -> None:
    settings = settings_for(server)
    pipeline = make(settings, archive)
    url = server.url("/maps/bayestar.multiorder.fits,0")
    gw = ingest(pipeline, "gcn.classic.voevent.LVC_PRELIMINARY", gw_voevent(url))
    # Archived and matched at once with what it has: no localization, the fetch queued.
    assert gw.localization.kind == "none" and gw.extra["skymap_url"] == url
    stored = row(archive, gw.id)
    assert stored.loc_kind == "none" and stored.matched_at is not None
    assert [(f["ivorn"], f["url"], f["state"]) for f in fetches(archive)] == [
        (gw.id, url, "pending")]

    loop = loop_for(settings, archive, pipeline)
    assert loop.run_once()
    assert not loop.run_once()  # nothing more due
    (queued,) = fetches(archive)
    assert (queued["state"], queued["attempts"], queued["last_error"]) == ("fetched", 1, None)
    stored = row(archive, gw.id)
    after = Alert.model_validate(stored.document)
    loc = after.localization
    assert isinstance(loc, SkymapLocalization)
    assert loc.skymap_sha256 == queued["skymap_sha256"] == fetched_map(after)
    assert loc.url == url and loc.format == "multiorder"
    assert loc.area_90_deg2 == pytest.approx(30.98, abs=0.01)
    assert (loc.ra_deg, loc.dec_deg) == pytest.approx(MAP_PEAK)  # no position stated
    assert after.extra["skymap_fetch"]["fetched_url"] == url
    assert (stored.loc_kind, stored.skymap_sha256) == ("skymap", loc.skymap_sha256)
    assert stored.hpx29 is not None and stored.match_seq is None
    assert archive.skymap(loc.skymap_sha256) == LVK_MAP.read_bytes()
    assert validation_errors("alert", after.to_document()) == []
    # Same IVORN and revision, one step on: the engine takes it as the newer version.
    assert (after.id, after.revision) == (gw.id, gw.revision)
    assert supersedes(order(after), order(gw)) and not supersedes(order(gw), order(after))
    # The same message again is a duplicate of what was archived, not a conflict.
    (again,) = pipeline.ingest([RawMessage("gcn.classic.voevent.LVC_PRELIMINARY",
                                           gw_voevent(url))])
    assert again.status == "duplicate"
    assert len(fetches(archive)) == 1


def test_each_map_stored_once(server: MapServer, archive: Archive) -> None:
    """The Preliminary and the Initial name the same map: fetched for each, stored once."""
    settings = settings_for(server)
    pipeline = make(settings, archive)
    url = server.url("/maps/bayestar.multiorder.fits,0")
    first = ingest(pipeline, "gcn.classic.voevent.LVC_PRELIMINARY", gw_voevent(url))
    initial = (SAMPLES / "lvk" / "MS181101ab-3-Initial.xml").read_bytes().replace(
        b"https://emfollow.docs.ligo.org/userguide/_static/bayestar.multiorder.fits,0",
        url.encode())
    second = ingest(pipeline, "gcn.classic.voevent.LVC_INITIAL", initial)
    loop = loop_for(settings, archive, pipeline)
    while loop.run_once():
        pass
    shas = {Alert.model_validate(row(archive, a.id).document).localization.skymap_sha256
            for a in (first, second)}
    assert len(shas) == 1
    with transaction(archive.engine, readonly=True) as conn:
        assert conn.execute(select(Skymap.sha256)).scalars().all() == list(shas)


@pytest.mark.parametrize(("path", "kind", "why"), [
    ("/missing.fits", "retried", r"HTTP 404 Not Found \(gave up after 3 attempts\)"),
    ("/slow.fits", "retried", r"timed out .*\(gave up after 3 attempts\)"),
    ("/big.fits", "final", r"over the 4000000-byte limit"),
    ("/away.fits", "final", r"redirects to .*host localhost is not on the sky map host list"),
    ("/page.fits", "final", r"not a FITS file"),
    ("/image.fits", "final", r"not a readable sky map"),
])
def test_a_failed_fetch_is_kept_and_harms_nothing(server: MapServer, archive: Archive,
                                                  path: str, kind: str, why: str,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    settings = settings_for(server)
    pipeline = make(settings, archive)
    gw = ingest(pipeline, "gcn.classic.voevent.LVC_PRELIMINARY", gw_voevent(server.url(path)))
    loop = loop_for(settings, archive, pipeline)
    with caplog.at_level(logging.WARNING, logger="broker.runtime.mapfetch"):
        deadline = time.monotonic() + 30
        while fetches(archive)[0]["state"] == "pending" and time.monotonic() < deadline:
            if not loop.run_once():
                time.sleep(0.05)  # the back-off
    (queued,) = fetches(archive)
    assert queued["state"] == "failed"
    assert queued["attempts"] == (3 if kind == "retried" else 1)
    assert re.search(why, queued["last_error"])
    stored = row(archive, gw.id)
    after = Alert.model_validate(stored.document)
    # The alert keeps what it had, archived and matched; the error is on it for people.
    assert after.localization.kind == "none" and stored.loc_kind == "none"
    assert stored.matched_at is not None
    assert re.search(why, after.extra["skymap_fetch"]["error"])
    assert after.extra["skymap_fetch"]["url"] == server.url(path)
    assert not supersedes(order(after), order(gw))  # nothing for the engine to do again
    assert any(re.search(why, r.getMessage()) and r.levelno == logging.ERROR
               for r in caplog.records)


def test_a_map_down_for_a_while_arrives(server: MapServer, archive: Archive) -> None:
    settings = settings_for(server)
    pipeline = make(settings, archive)
    gw = ingest(pipeline, "gcn.classic.voevent.LVC_PRELIMINARY",
                gw_voevent(server.url("/flaky.fits")))
    loop = loop_for(settings, archive, pipeline)
    deadline = time.monotonic() + 30
    while fetches(archive)[0]["state"] == "pending" and time.monotonic() < deadline:
        if not loop.run_once():
            time.sleep(0.05)
    (queued,) = fetches(archive)
    assert (queued["state"], queued["attempts"]) == ("fetched", 3)
    assert Alert.model_validate(row(archive, gw.id).document).localization.kind == "skymap"


# -- end to end: a GW whose map arrives later pairs spatially with a GRB -------------------

def wait_for(condition: Callable[[], Any], timeout_s: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("timed out waiting")


def coincidences(archive: Archive) -> list[dict[str, Any]]:
    return sorted((c for c in archive.list_coincidences(limit=100)
                   if c["pairing"] == "gw_cbc-grb"), key=lambda c: c["revision"])


@contextlib.contextmanager
def fetching(settings: Settings, archive: Archive, pipeline: Pipeline
             ) -> Iterator[MapFetchLoop]:
    """The fetch workers as the composition root starts them, stopped afterwards."""
    running = assembly.Listeners()
    loop = assembly.start_mapfetch(settings, archive, pipeline, running)
    assert loop is not None
    try:
        yield loop
    finally:
        running.shutdown(10)


def test_gw_and_grb_pair_spatially_once_the_map_is_fetched(server: MapServer,
                                                           archive: Archive) -> None:
    settings = settings_for(server)
    pipeline = make(settings, archive)
    with fetching(settings, archive, pipeline) as loop:
        gw = ingest(pipeline, "gcn.classic.voevent.LVC_PRELIMINARY",
                    gw_voevent(server.url("/maps/bayestar.multiorder.fits,0")))
        wait_for(lambda: loop.fetched == 1)
    grb = ingest(pipeline, "gcn.notices.fermi.gbm", grb_notice(gw))
    assert grb.localization.kind == "point"
    (coinc,) = coincidences(archive)
    assert coinc["state"] == "new"
    assert [m["alert_id"] for m in coinc["members"]] == [gw.id, grb.id]
    overlap = coinc["spatial_overlap"]
    assert overlap is not None and "map" in overlap["method"]
    assert overlap["integral"] > 1.0  # the GRB sits on the map's peak
    assert any(s["name"] == "raven_space_time_far" for s in coinc["significance"])


def test_a_coincidence_found_before_the_map_is_updated_when_it_arrives(
        server: MapServer, archive: Archive) -> None:
    settings = settings_for(server)
    pipeline = make(settings, archive)
    with fetching(settings, archive, pipeline) as loop:
        # The map server holds its answer until the GRB is in.
        gw = ingest(pipeline, "gcn.classic.voevent.LVC_PRELIMINARY",
                    gw_voevent(server.url("/held/maps/bayestar.multiorder.fits,0")))
        inside = ingest(pipeline, "gcn.notices.fermi.gbm", grb_notice(gw))
        (first,) = coincidences(archive)
        # No map yet: paired on time alone (an unlocalized member passes with no overlap).
        assert (first["state"], first["revision"], first["spatial_overlap"]) == ("new", 0, None)
        server.release.set()
        wait_for(lambda: loop.fetched == 1)
        wait_for(lambda: len(coincidences(archive)) == 2)
    first, second = coincidences(archive)
    assert (second["state"], second["revision"], second["supersedes"]) == (
        "updated", 1, first["id"])
    assert [m["alert_id"] for m in second["members"]] == [gw.id, inside.id]
    assert second["members"][0]["revision"] == gw.revision  # the same revision, with its map
    overlap = second["spatial_overlap"]
    assert overlap is not None and overlap["integral"] > 1.0
    assert second["localization"]["kind"] in ("skymap", "point")
    # A new VOEvent for the new revision, queued like any other.
    with transaction(archive.engine, readonly=True) as conn:
        published = set(conn.execute(select(VOEventRow.ivorn)).scalars())
        prov = conn.execute(select(ProvenanceDoc.document).where(
            ProvenanceDoc.subject_ivorn == second["id"])).scalar_one()
    assert {first["id"], second["id"]} <= published
    # Its PROV names the map it was matched with: where it came from, its exact bytes.
    sha = second["members"][0].get("skymap_sha256") or fetched_map(
        Alert.model_validate(row(archive, gw.id).document))
    def records(kind: str) -> list[dict[str, Any]]:  # PROV-JSON lists repeated ids
        return [r for v in prov[kind].values() for r in (v if isinstance(v, list) else [v])]

    def named(record: dict[str, Any], key: str) -> set[str]:
        value = record.get(key, [])
        return {v.get("$") for v in (value if isinstance(value, list) else [value])}

    (skymap,) = [e for e in records("entity") if "mmbroker:SkyMap" in named(e, "prov:type")]
    assert skymap["mmbroker:sha256"] == sha
    assert skymap["prov:location"] == server.url("/held/maps/bayestar.multiorder.fits,0")
    assert any("mmbroker:skymap" in named(u, "prov:role") for u in records("used"))


def test_a_grb_the_map_rules_out_is_retracted_when_it_arrives(server: MapServer,
                                                              archive: Archive) -> None:
    settings = settings_for(server)
    pipeline = make(settings, archive)
    with fetching(settings, archive, pipeline) as loop:
        gw = ingest(pipeline, "gcn.classic.voevent.LVC_PRELIMINARY",
                    gw_voevent(server.url("/held/maps/bayestar.multiorder.fits,0")))
        # The other side of the sky from the map's 90% region.
        ingest(pipeline, "gcn.notices.fermi.gbm", grb_notice(gw, at=(14.3, 17.9)))
        assert [c["state"] for c in coincidences(archive)] == ["new"]
        server.release.set()
        wait_for(lambda: loop.fetched == 1)
        wait_for(lambda: len(coincidences(archive)) == 2)
    assert [c["state"] for c in coincidences(archive)] == ["new", "retracted"]


def test_fetching_off_leaves_the_url_queued(archive: Archive) -> None:
    settings = get_settings(comet=False, skymap_fetch=False)
    pipeline = make(settings, archive)
    running = assembly.Listeners()
    assert assembly.start_mapfetch(settings, archive, pipeline, running) is None
    assert running.threads == []
    gw = ingest(pipeline, "gcn.classic.voevent.LVC_PRELIMINARY", GW_VOEVENT.read_bytes())
    assert [f["state"] for f in fetches(archive)] == ["pending"]
    assert gw.extra["skymap_url"].endswith("bayestar.multiorder.fits,0")


def test_staged_a_match_worker_matches_it_again(server: MapServer, archive: Archive) -> None:
    """A staged listener's fetch announces the alert again; a match worker matches it and
    numbers it anew, and another worker, catching up on that number, knows its map."""
    from broker.runtime.announce import AnnouncingIngestor, announcement_key
    from broker.runtime.match_stage import MatchWorker

    settings = settings_for(server)
    sink = AnnouncingIngestor(assembly.make_ingestor(settings, archive), "", "mmbroker.alerts")
    announced: list[tuple[bytes, str]] = []
    sink.announce = announced.extend  # no Kafka here
    one = MatchWorker(settings, archive, lambda: make(settings, archive))
    other = MatchWorker(settings, archive, lambda: make(settings, archive))
    other.warm()

    def listen(source: str, data: bytes) -> Alert:
        (outcome,) = sink.ingest([sink.receive(source, data)])
        assert outcome.alert is not None
        return outcome.alert

    gw = listen("gcn.classic.voevent.LVC_PRELIMINARY",
                gw_voevent(server.url("/maps/bayestar.multiorder.fits,0")))
    grb = listen("gcn.notices.fermi.gbm", grb_notice(gw))
    assert one.handle([ivorn for _, ivorn in announced]) == 2
    (first,) = coincidences(archive)
    assert first["spatial_overlap"] is None  # no map yet
    numbered = row(archive, gw.id).match_seq
    assert numbered is not None

    announced.clear()
    loop = assembly.mapfetch_loop(settings, archive, sink)
    assert loop.run_once()
    assert announced == [(announcement_key(gw), gw.id)]
    assert row(archive, gw.id).match_seq is None  # to be matched again
    assert one.handle([gw.id]) == 1
    assert row(archive, gw.id).match_seq > numbered
    first, second = coincidences(archive)
    assert (second["state"], second["supersedes"]) == ("updated", first["id"])
    assert second["spatial_overlap"] is not None
    assert [m["alert_id"] for m in second["members"]] == [gw.id, grb.id]

    # The other worker catches up on the GW with its map: a second GRB on the map's peak
    # pairs with it by sky.
    later = listen("gcn.notices.fermi.gbm.second", grb_notice(gw, dt_s=2.5).replace(
        b"745121685", b"745121999"))
    assert other.handle([later.id]) == 1
    pairs = [c for c in coincidences(archive)
             if [m["alert_id"] for m in c["members"]] == [gw.id, later.id]]
    assert len(pairs) == 1 and pairs[0]["spatial_overlap"] is not None


def test_live_a_gw_on_the_wall_clock_pairs_once_its_map_arrives(server: MapServer,
                                                                 archive: Archive) -> None:
    """As ``serve`` runs: the engine on the wall clock, the GW a minute old."""
    from broker.archive.store import utcnow

    settings = settings_for(server)
    pipeline = assembly.make_pipeline(settings, archive, warm=False, targets=[])
    when = format_utc(utcnow() - timedelta(seconds=60)).encode()
    data = gw_voevent(server.url("/held/maps/bayestar.multiorder.fits,0")).replace(
        b"2018-11-01T22:22:46.654437Z", when).replace(b"2018-11-01T22:34:49Z", when)
    with fetching(settings, archive, pipeline) as loop:
        gw = ingest(pipeline, "gcn.classic.voevent.LVC_PRELIMINARY", data)
        grb = ingest(pipeline, "gcn.notices.fermi.gbm", grb_notice(gw))
        server.release.set()
        wait_for(lambda: loop.fetched == 1)
        wait_for(lambda: len(coincidences(archive)) == 2)
    first, second = coincidences(archive)
    assert (first["state"], first["spatial_overlap"]) == ("new", None)
    assert second["state"] == "updated" and second["spatial_overlap"]["integral"] > 1.0
    assert [m["alert_id"] for m in second["members"]] == [gw.id, grb.id]


def live_gw(server: MapServer, path: str = "/maps/bayestar.multiorder.fits,0") -> bytes:
    """The real LVK VOEvent of MS181101ab, dated a minute ago, its map at ``path``."""
    from broker.archive.store import utcnow

    when = format_utc(utcnow() - timedelta(seconds=60)).encode()
    return gw_voevent(server.url(path)).replace(
        b"2018-11-01T22:22:46.654437Z", when).replace(b"2018-11-01T22:34:49Z", when)


def test_a_serve_that_dies_before_matching_the_map_matches_it_when_it_starts(
        server: MapServer, archive: Archive) -> None:
    """The map is stored with ``matched_at`` cleared; the process dies before matching
    the alert again; the next ``serve`` matches it as it warms."""
    settings = settings_for(server)
    pipeline = assembly.make_pipeline(settings, archive, warm=False, targets=[])
    gw = ingest(pipeline, "gcn.classic.voevent.LVC_PRELIMINARY", live_gw(server))
    grb = ingest(pipeline, "gcn.notices.fermi.gbm", grb_notice(gw))
    (first,) = coincidences(archive)
    assert first["spatial_overlap"] is None  # no map yet
    dying = MapFetchLoop(archive, FetchPolicy.from_settings(settings), None)  # no rematch
    assert dying.run_once() and dying.fetched == 1
    assert row(archive, gw.id).matched_at is None  # stored, not matched with it
    assert len(coincidences(archive)) == 1

    restarted = assembly.make_pipeline(settings, archive, targets=[])  # warms
    first, second = coincidences(archive)
    assert (second["state"], second["supersedes"]) == ("updated", first["id"])
    assert [m["alert_id"] for m in second["members"]] == [gw.id, grb.id]
    assert second["spatial_overlap"]["integral"] > 1.0
    assert row(archive, gw.id).matched_at is not None
    restarted.warm()  # again: nothing left to match, nothing new
    assert len(coincidences(archive)) == 2


def test_alerts_archived_but_never_matched_are_matched_when_serve_starts(
        server: MapServer, archive: Archive) -> None:
    """A process that died between archiving a batch and matching it: the next one
    matches the batch against what it warmed."""
    settings = settings_for(server)
    pipeline = assembly.make_pipeline(settings, archive, warm=False, targets=[])
    gw = ingest(pipeline, "gcn.classic.voevent.LVC_PRELIMINARY", live_gw(server))
    (outcome,) = pipeline.ingestor.ingest([RawMessage("gcn.notices.fermi.gbm",
                                                      grb_notice(gw))])  # archived only
    assert outcome.status == "archived" and outcome.alert is not None
    assert row(archive, outcome.alert.id).matched_at is None and coincidences(archive) == []
    assembly.make_pipeline(settings, archive, targets=[])  # warms
    (found,) = coincidences(archive)
    assert [m["alert_id"] for m in found["members"]] == [gw.id, outcome.alert.id]
    assert row(archive, outcome.alert.id).matched_at is not None


def test_a_leased_fetch_is_one_workers_and_a_dead_workers_is_abandoned(
        server: MapServer, archive: Archive) -> None:
    from sqlalchemy import update

    from broker.archive.models import SkymapFetch
    from broker.runtime.mapfetch import claim

    settings = settings_for(server)
    pipeline = make(settings, archive)
    gw = ingest(pipeline, "gcn.classic.voevent.LVC_PRELIMINARY",
                gw_voevent(server.url("/maps/bayestar.multiorder.fits,0")))
    job = claim(archive, lease_s=60)
    assert job is not None and job.alert.id == gw.id and job.attempts == 1
    assert claim(archive, lease_s=60) is None  # leased: no other worker takes it
    # Its worker died, the lease ran out, again and again: given up, not leased for ever.
    with transaction(archive.engine) as conn:
        conn.execute(update(SkymapFetch).values(attempts=3, next_attempt_at=_now()))
    loop = loop_for(settings, archive, pipeline)
    assert loop.run_once()
    (queued,) = fetches(archive)
    assert queued["state"] == "failed"
    assert "abandoned after 3 attempts that never finished" in queued["last_error"]
    assert server.hits.get("/maps/bayestar.multiorder.fits,0") is None


def test_the_engine_takes_the_alert_with_its_map_as_a_newer_version(server: MapServer) -> None:
    """No archive: the engine alone, the GW before and after its map."""
    import hashlib

    from broker.runtime.mapfetch import relocalized
    from crossmatch.config import load_config
    from crossmatch.engine import Engine, result_key
    from listeners import gcn_json, voevent

    meta = MessageMeta("file", _now(), AUTHORITY)
    url = server.url("/maps/bayestar.multiorder.fits,0")
    (gw,) = voevent.normalize(gw_voevent(url), meta).alerts
    (grb,) = gcn_json.normalize(grb_notice(gw), MessageMeta("gcn.notices.fermi.gbm", _now(),
                                                            AUTHORITY)).alerts
    got = fetch(url, POLICY)
    skymap, sky = read_map(got.data, got.url)
    with_map = relocalized(gw, skymap, sky, {"url": url, "fetched_url": got.url,
                                             "attempts": 1})
    engine = Engine(load_config(), authority=AUTHORITY, clock=None,
                    skymap_loader={skymap.sha256: skymap.data}.get)
    assert engine.process(gw) == []
    (before,) = [r for r in engine.process(grb) if r.coincidence.pairing == "gw_cbc-grb"]
    assert before.coincidence.spatial_overlap is None
    (after,) = [r for r in engine.process(with_map) if r.coincidence.pairing == "gw_cbc-grb"]
    assert (after.coincidence.state, after.coincidence.supersedes) == (
        "updated", before.coincidence.id)
    assert after.coincidence.spatial_overlap is not None
    assert after.key != before.key
    assert engine.process(with_map) == []  # the same version again changes nothing
    assert engine.process(gw) == []  # nor the version without the map, arriving late
    # The key of a result without a fetched map is what it always was.
    old = hashlib.sha256(json.dumps(
        [sorted((a.id, a.revision) for a in (gw, grb)), "c" * 64],
        separators=(",", ":")).encode()).hexdigest()
    assert result_key([gw, grb], "c" * 64) == old
    assert result_key([with_map, grb], "c" * 64) != old
    # Its stated position, had it one, would have stayed the summary point.
    assert with_map.extra.get("position") is None
    assert (with_map.localization.ra_deg, with_map.localization.dec_deg) == pytest.approx(
        MAP_PEAK)


def test_a_stated_position_stays_the_summary_point(server: MapServer) -> None:
    """A Fermi GBM notice naming its map by URL: the map becomes the localization, the
    stated circle moves to extra.position, its centre the summary point (as item 1 does
    for an inline map)."""
    from broker.runtime.mapfetch import relocalized
    from listeners import gcn_json

    doc = json.loads((SAMPLES / "gcn-schema" /
                      "notices__fermi__gbm__trigger.ground1.example.json").read_text())
    (alert,) = gcn_json.normalize(json.dumps(doc).encode(), MessageMeta(
        "gcn.notices.fermi.gbm", _now(), AUTHORITY)).alerts
    assert alert.localization.kind == "point"
    assert alert.extra["skymap_url"] == doc["healpix_url"]
    got = fetch(server.url("/maps/glg_healpix_all_bn180524416.fit"), POLICY)
    skymap, sky = read_map(got.data, got.url)
    after = relocalized(alert, skymap, sky, {"url": doc["healpix_url"], "attempts": 1})
    loc = after.localization
    assert isinstance(loc, SkymapLocalization) and loc.format == "flat"
    assert (loc.ra_deg, loc.dec_deg) == (alert.localization.ra_deg,
                                         alert.localization.dec_deg)
    assert after.extra["position"] == alert.localization.model_dump(mode="json")
    assert loc.url == doc["healpix_url"] and fetched_map(after) == skymap.sha256
