"""Rates and labels match their sources (issue 16, item 13).

The shipped ``gw_cbc-grb`` pairing's GRB rate is ligo-raven's own (310 per 365-day
year, ``gcn_rate`` in ligo-raven 3.3's ``search.coinc_far``), so a joint FAR of ours is
RAVEN's for the same event: checked here on the real igwn.gwalert notice of MS181101ab
(its BAYESTAR map inline) and the real GCN Fermi GBM notice with a map in GBM's format
placed on it (the pair of ``tests/test_sky_map_matching.py``), through the real
normalizers and the engine.  The RAVEN values are what ligo-raven 3.3 computes for these
inputs (``RAVEN_*`` below, formulas spelled out); with ligo-raven installed (``pip
install -e .[peer]``) :func:`test_ligo_raven_computes_the_same_joint_fars` asks it too.
"""

from __future__ import annotations

import io
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from alerts_schema import Coincidence
from alerts_schema.model import format_utc
from crossmatch.config import load_config
from crossmatch.engine import Engine
from listeners import gcn_json, lvk
from listeners.base import MessageMeta, Normalized
from listeners.common import parse_utc
from tests.test_sky_map_matching import (
    AUTHORITY,
    GBM_DEC,
    GBM_RA,
    GW_MAP,
    GW_NOTICE,
    RAVEN_MAP_X_MAP,
    gbm_map,
    gbm_notice,
)

pytestmark = pytest.mark.timeout(120)

RAVEN_GCN_RATE_HZ = 310.0 / (365.0 * 24.0 * 60.0 * 60.0)
"""ligo-raven 3.3 ``coinc_far``: "The combined rate of independent GRB discovery by
Swift, Fermi, INTEGRAL, and AGILE MCAL", ``gcn_rate = 310. / (365. * 24. * 60. * 60.)``."""
RAVEN_WINDOW_S = (-5.0, 1.0)
"""gwcelery's ``raven_coincidence_windows['GRB_CBC']`` (t_GW - t_GRB), ours [-1, +5] s."""
OFFSET_S = 1.2  # the GRB after the GW


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Normalized, Normalized, bytes]:
    tmp_path = tmp_path_factory.mktemp("raven")
    received = parse_utc("2018-11-01T22:40:00Z", field="received")
    gw = lvk.normalize(GW_NOTICE.read_bytes(), MessageMeta("igwn.gwalert", received, AUTHORITY))
    healpix = gbm_map(GBM_RA, GBM_DEC, tmp_path)
    when = format_utc(gw.alerts[0].trigger_time + timedelta(seconds=OFFSET_S))
    grb = gcn_json.normalize(gbm_notice(when, healpix),
                             MessageMeta("gcn.notices.fermi.gbm", received, AUTHORITY))
    return gw, grb, healpix


@pytest.fixture(scope="module")
def coincidence(pair: tuple[Normalized, Normalized, bytes]) -> Coincidence:
    gw, grb, _ = pair
    maps = {s.sha256: s.data for n in (gw, grb) for s in n.skymaps}
    engine = Engine(load_config(), authority=AUTHORITY, clock=None, skymap_loader=maps.get)
    engine.process(gw.alerts[0])
    (result,) = [r for r in engine.process(grb.alerts[0])
                 if r.coincidence.pairing == "gw_cbc-grb"]
    return result.coincidence


def _figure(coinc: Coincidence, name: str) -> float:
    (value,) = [s.value for s in coinc.significance if s.name == name]
    assert value is not None
    return value


def test_the_grb_rate_is_ligo_ravens() -> None:
    config = load_config()
    for name in ("gw_cbc-grb", "gw_burst-grb"):
        assert config.rate_hz(config.pairing(name).rate_b) == RAVEN_GCN_RATE_HZ, name
    # The per-mission rates (kept for the other GRB pairings) sum to 365/yr, which made
    # our joint FARs 1.18x RAVEN's.
    per_mission = ("grb_fermi_gbm", "grb_swift_bat", "grb_svom_eclairs", "grb_integral",
                   "grb_agile")
    assert config.rate_hz(per_mission) / RAVEN_GCN_RATE_HZ == pytest.approx(1.18, abs=5e-3)


def test_joint_fars_are_ravens(pair: tuple[Normalized, Normalized, bytes],
                               coincidence: Coincidence) -> None:
    """RAVEN's temporal FAR (window x GRB rate x GW FAR) and space-time FAR (over the
    map x map overlap, which ligo-raven computes as RAVEN_MAP_X_MAP) for this event."""
    gw, _, _ = pair
    far_gw = gw.alerts[0].far_hz
    assert far_gw is not None
    raven_temporal = (RAVEN_WINDOW_S[1] - RAVEN_WINDOW_S[0]) * RAVEN_GCN_RATE_HZ * far_gw
    raven_space_time = raven_temporal / RAVEN_MAP_X_MAP
    assert _figure(coincidence, "raven_temporal_far") == pytest.approx(raven_temporal, rel=0.01)
    assert _figure(coincidence, "raven_space_time_far") == pytest.approx(raven_space_time,
                                                                         rel=0.01)
    # (in fact to rounding: the formulas are the same)
    assert _figure(coincidence, "raven_temporal_far") == pytest.approx(raven_temporal,
                                                                       rel=1e-9)


class _Files:
    """What ligo-raven reads through a GraceDB client: the two sky map files, no network."""

    def __init__(self, files: dict[str, bytes]) -> None:
        self._files = files

    def files(self, graceid: str, filename: str, raw: bool = True) -> io.BytesIO:
        return io.BytesIO(self._files[filename])


def test_ligo_raven_computes_the_same_joint_fars(
        pair: tuple[Normalized, Normalized, bytes], coincidence: Coincidence,
        tmp_path: Path) -> None:
    """ligo-raven's ``coinc_far`` for the same GW FAR, window and sky maps (``peer``)."""
    search = pytest.importorskip("ligo.raven.search", reason="ligo-raven: pip install -e .[peer]")
    gw, _, healpix = pair
    t_0 = 1225146184.654  # GPS time of the GW (ligo-raven reads it, the FAR does not use it)
    se: dict[str, Any] = {"superevent_id": "MS181101ab", "far": gw.alerts[0].far_hz,
                          "preferred_event": "G1", "t_0": t_0}
    ext: dict[str, Any] = {"graceid": "E1", "pipeline": "Fermi", "gpstime": t_0 + OFFSET_S,
                           "search": "GRB"}
    client = _Files({"gw.multiorder.fits": GW_MAP.read_bytes(), "gbm.fits": healpix})
    got = search.coinc_far("MS181101ab", "E1", *RAVEN_WINDOW_S, grb_search="GRB",
                           se_dict=se, ext_dict=ext, gracedb=client, incl_sky=True,
                           se_fitsfile="gw.multiorder.fits", ext_fitsfile="gbm.fits",
                           se_moc=True, ext_moc=False, ext_nested=False)
    assert isinstance(got, dict), got
    assert got["skymap_overlap"] == pytest.approx(RAVEN_MAP_X_MAP, rel=1e-6)
    assert _figure(coincidence, "raven_temporal_far") == pytest.approx(
        got["temporal_coinc_far"], rel=0.01)
    assert _figure(coincidence, "raven_space_time_far") == pytest.approx(
        got["spatiotemporal_coinc_far"], rel=0.01)
