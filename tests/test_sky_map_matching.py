"""A sky map, when an alert has one, is its localization for matching (issue 16, item 1).

A Fermi GBM JSON notice that states ``ra``/``dec``/``ra_dec_error`` and carries its
map inline (``healpix_file``) is matched by its map, the position staying its summary
point.  The GW side is the real igwn.gwalert notice of MS181101ab (its BAYESTAR map
inline); the GBM side is the real GCN example notice, placed on that GW and given a
map in the real GBM format (``glg_healpix``: flat RING HEALPix, per-pixel
``PROBABILITY``), made from the real Fermi map in gwcelery's test data by turning
its peak onto the notice's position.
"""

from __future__ import annotations

import base64
import json
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest

from alerts_schema import PointLocalization, SkymapLocalization, validation_errors
from alerts_schema.model import format_utc
from crossmatch.config import load_config
from crossmatch.engine import Engine
from crossmatch.localization import SkyMap, from_alert
from crossmatch.overlap import overlap
from listeners import gcn_json, lvk
from listeners.base import MessageMeta, Normalized
from listeners.common import parse_utc
from tests.conftest import SAMPLES, import_peer

pytestmark = pytest.mark.timeout(120)

AUTHORITY = "test.mmbroker"
GW_NOTICE = SAMPLES / "lvk" / "MS181101ab-initial.json"
GW_MAP = SAMPLES / "lvk" / "bayestar.multiorder.fits"  # the map that notice inlines
FERMI_MAP = SAMPLES / "voevents" / "gwcelery" / "fermi_skymap.fits.gz"
GBM_NOTICE = Path(__file__).parent / "data" / "gcn" / (
    "notices__fermi__gbm__trigger.ground1.example.json")
GBM_RA, GBM_DEC = 195.0, -18.5  # inside the GW's 90% region, 0.9 deg from its peak

RAVEN_MAP_X_MAP = 57.91078457814337
"""ligo-raven 3.3's ``skymap_overlap_integral`` of these two maps (the GW map as
UNIQ/PROBDENSITY, the GBM map flat RING): what :func:`test_ligo_raven_agrees` computes
with ligo-raven (the test extra)."""


def gbm_map(ra_deg: float, dec_deg: float, tmp_path: Path, nside: int = 64) -> bytes:
    """The real Fermi map, turned so that its peak lies at (ra, dec), as a glg_healpix file."""
    import healpy
    from astropy.io import fits

    with fits.open(FERMI_MAP) as hdus:
        prob = np.asarray(hdus[1].data.field(0), dtype=float).ravel()
        nest = str(hdus[1].header.get("ORDERING", "RING")).upper() == "NESTED"
    peak = np.array(healpy.pix2vec(healpy.npix2nside(prob.size), int(np.argmax(prob)),
                                   nest=nest))
    target = healpy.ang2vec(ra_deg, dec_deg, lonlat=True)
    axis = np.cross(peak, target)
    sin, cos = float(np.linalg.norm(axis)), float(peak @ target)
    k = axis / sin
    cross = np.array([[0.0, -k[2], k[1]], [k[2], 0.0, -k[0]], [-k[1], k[0], 0.0]])
    turn = np.eye(3) + sin * cross + (1.0 - cos) * cross @ cross  # Rodrigues: peak -> target
    centres = np.array(healpy.pix2vec(nside, np.arange(healpy.nside2npix(nside)))).T
    theta, phi = healpy.vec2ang(centres @ turn)  # each centre turned back onto the source
    values = healpy.get_interp_val(prob, theta, phi, nest=nest)
    path = tmp_path / "glg_healpix_all_bn181101950.fit"
    healpy.write_map(str(path), values / values.sum(), nest=False,
                     column_names=["PROBABILITY"], dtype=np.float64)
    return path.read_bytes()


def gbm_notice(trigger_time: str, healpix: bytes) -> bytes:
    """The real GCN GBM notice (``ra``, ``dec``, ``ra_dec_error`` as sent), placed on the GW."""
    doc = json.loads(GBM_NOTICE.read_text())
    doc.update(trigger_time=trigger_time, ra=GBM_RA, dec=GBM_DEC,
               alert_tense="test",  # the GW is a mock superevent: both are tests
               healpix_file=base64.b64encode(healpix).decode())
    return json.dumps(doc).encode()


@pytest.fixture
def pair(tmp_path: Path) -> tuple[Normalized, Normalized, bytes]:
    received = parse_utc("2018-11-01T22:40:00Z", field="received")
    gw = lvk.normalize(GW_NOTICE.read_bytes(),
                       MessageMeta("igwn.gwalert", received, AUTHORITY))
    (gw_alert,) = gw.alerts
    healpix = gbm_map(GBM_RA, GBM_DEC, tmp_path)
    when = format_utc(gw_alert.trigger_time + timedelta(seconds=1.2))
    grb = gcn_json.normalize(gbm_notice(when, healpix),
                             MessageMeta("gcn.notices.fermi.gbm", received, AUTHORITY))
    return gw, grb, healpix


def test_gbm_map_is_the_localization_and_the_position_the_summary(
        pair: tuple[Normalized, Normalized, bytes]) -> None:
    _, grb, healpix = pair
    (alert,) = grb.alerts
    (skymap,) = grb.skymaps
    assert skymap.data == healpix and skymap.format == "flat"
    loc = alert.localization
    assert isinstance(loc, SkymapLocalization) and loc.skymap_sha256 == skymap.sha256
    assert (loc.ra_deg, loc.dec_deg) == (GBM_RA, GBM_DEC)  # the summary point shown
    stated = PointLocalization.model_validate(alert.extra["position"])
    assert (stated.error_radius_deg, stated.containment) == (1.34, 0.68)
    assert validation_errors("alert", alert.to_document()) == []


def test_gw_x_gbm_overlap_is_map_x_map(pair: tuple[Normalized, Normalized, bytes]) -> None:
    """The coincidence's overlap is the kernel's map x map value (and RAVEN's), not the
    circle's."""
    gw, grb, healpix = pair
    maps = {s.sha256: s.data for n in (gw, grb) for s in n.skymaps}
    engine = Engine(load_config(), authority=AUTHORITY, clock=None, skymap_loader=maps.get)
    assert engine.process(gw.alerts[0]) == []
    results = [r for r in engine.process(grb.alerts[0])
               if r.coincidence.pairing == "gw_cbc-grb"]
    (result,) = results
    got = result.coincidence.spatial_overlap
    assert got is not None and got.method.startswith("map x map")

    kernel = overlap(SkyMap.from_fits(GW_MAP.read_bytes()), SkyMap.from_fits(healpix),
                     credible_level=0.9)
    assert got.integral == pytest.approx(kernel.integral, rel=1e-12)
    assert got.integral == pytest.approx(RAVEN_MAP_X_MAP, rel=1e-9)
    # The circle the notice states (what was matched before) gives another answer.
    circle = grb.alerts[0].model_copy(update={
        "localization": PointLocalization.model_validate(grb.alerts[0].extra["position"])})
    old = overlap(from_alert(gw.alerts[0], maps), from_alert(circle, {}), credible_level=0.9)
    assert abs(old.integral / got.integral - 1.0) > 1.0


def test_ligo_raven_agrees(pair: tuple[Normalized, Normalized, bytes], tmp_path: Path) -> None:
    """ligo-raven's own overlap of the same two files."""
    search = import_peer("ligo.raven.search")
    import healpy
    from astropy.table import Table

    _, _, healpix = pair
    gw = Table.read(GW_MAP)
    path = tmp_path / "gbm.fit"
    path.write_bytes(healpix)
    raven = search.skymap_overlap_integral(
        np.asarray(gw["PROBDENSITY"]), healpy.read_map(str(path), nest=False),
        se_skymap_uniq=np.asarray(gw["UNIQ"]), ext_nested=False)
    assert float(raven) == pytest.approx(RAVEN_MAP_X_MAP, rel=1e-9)
