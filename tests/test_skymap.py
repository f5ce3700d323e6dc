"""Multi-order HEALPix sky maps: reading FITS bytes, credible areas, positions.

Synthetic maps with analytic answers, the LVK sample maps against an
independent flat-map computation, and hostile bytes.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import math
from pathlib import Path

import healpy
import numpy as np
import pytest
from astropy.io import fits
from hypothesis import given, settings
from hypothesis import strategies as st

from alerts_schema.errors import HostileInput, MalformedInput
from crossmatch.skymap import (
    MAX_ORDER,
    SR_TO_DEG2,
    MultiOrderMap,
    read_multiorder,
    uniq_to_order_ipix,
)
from tests.conftest import SAMPLES

SKY_DEG2 = 4 * math.pi * SR_TO_DEG2  # 41252.96 deg^2
LVK_SAMPLES = SAMPLES / "lvk"


# -- builders (shared with tests/test_lvk.py) --------------------------------------------


def uniq_of(order: int | np.ndarray, ipix: int | np.ndarray) -> np.ndarray:
    """NUNIQ index of NESTED pixel ``ipix`` at ``order``."""
    return np.asarray(ipix, dtype=np.int64) + 4 * np.left_shift(1, 2 * np.asarray(order, np.int64))


def multiorder_fits(uniq: np.ndarray, probdensity: np.ndarray, *, unit: str = "sr-1",
                    header: dict[str, object] | None = None) -> bytes:
    """A multi-order FITS file (bytes) laid out as LVK writes them."""
    cols = [fits.Column(name="UNIQ", format="K", array=np.asarray(uniq, dtype=np.int64)),
            fits.Column(name="PROBDENSITY", format="D", unit=unit,
                        array=np.asarray(probdensity, dtype=np.float64))]
    table = fits.BinTableHDU.from_columns(cols)
    cards = {"PIXTYPE": "HEALPIX", "ORDERING": "NUNIQ", "COORDSYS": "C", "INDXSCHM": "EXPLICIT",
             "OBJECT": "S240101ab", "CREATOR": "mmbroker-tests", "DISTMEAN": 100.0,
             "DISTSTD": 20.0}
    cards.update(header or {})
    for key, value in cards.items():
        table.header[key] = value
    out = io.BytesIO()
    fits.HDUList([fits.PrimaryHDU(), table]).writeto(out)
    return out.getvalue()


def fisher_map(ra0: float, dec0: float, kappa: float, *, max_order: int = 8,
               split_above: float = 1e-4) -> tuple[np.ndarray, np.ndarray]:
    """A full-sky multi-order map of a von Mises-Fisher distribution about (ra0, dec0).

    ``kappa`` is the concentration (1/kappa ~ sigma^2 in rad^2).  Pixels that
    could hold more than ``split_above`` of the probability are split into
    their four children until ``max_order``, as LVK's adaptive maps are
    built; each keeps the density at its centre, sr^-1.

    Returns
    -------
    uniq, probdensity
    """
    v0 = healpy.ang2vec(ra0, dec0, lonlat=True)
    norm = kappa / (2 * math.pi * (1 - math.exp(-2 * kappa)))

    def density(theta: np.ndarray) -> np.ndarray:  # theta: distance from the centre, rad
        return norm * np.exp(kappa * (np.cos(theta) - 1))

    uniq_out: list[np.ndarray] = []
    dens_out: list[np.ndarray] = []
    ipix = np.arange(12, dtype=np.int64)
    for order in range(max_order + 1):
        nside = 1 << order
        vec = np.array(healpy.pix2vec(nside, ipix, nest=True)).T
        theta = np.arccos(np.clip(vec @ v0, -1, 1))
        # The densest point a pixel could hold is its nearest approach to the centre.
        nearest = np.clip(theta - healpy.max_pixrad(nside), 0, None)
        split = (density(nearest) * healpy.nside2pixarea(nside) > split_above) & (
            order < max_order)
        uniq_out.append(uniq_of(order, ipix[~split]))
        dens_out.append(density(theta[~split]))
        ipix = (ipix[split][:, None] * 4 + np.arange(4)).ravel()
    return np.concatenate(uniq_out), np.concatenate(dens_out)


def fisher_area_deg2(kappa: float, level: float) -> float:
    """Area (deg^2) of the cap holding ``level`` of a Fisher distribution."""
    one_minus_cos = -math.log1p(-level * (1 - math.exp(-2 * kappa))) / kappa
    return 2 * math.pi * one_minus_cos * SR_TO_DEG2


def flat_reference(sky: MultiOrderMap, order: int) -> np.ndarray:
    """Probability per NESTED pixel at one ``order``: the independent check.

    Finer pixels are summed into their ancestor, coarser ones spread evenly
    over their descendants.
    """
    flat = np.zeros(12 << (2 * order))
    prob = sky.probability
    fine = sky.order >= order
    np.add.at(flat, sky.ipix[fine] >> (2 * (sky.order[fine] - order)), prob[fine])
    for o in np.unique(sky.order[~fine]):
        sel = ~fine & (sky.order == o)
        k = 1 << (2 * (order - int(o)))
        children = (sky.ipix[sel][:, None] << (2 * (order - int(o)))) + np.arange(k)
        flat[children.ravel()] += np.repeat(prob[sel] / k, k)
    return flat


# -- NUNIQ arithmetic --------------------------------------------------------------------


@given(st.integers(0, MAX_ORDER), st.data())
def test_uniq_round_trips_at_every_order(order: int, data: st.DataObject) -> None:
    ipix = data.draw(st.integers(0, 12 * 4**order - 1))
    got_order, got_ipix = uniq_to_order_ipix(uniq_of(order, np.array([ipix])))
    assert (int(got_order[0]), int(got_ipix[0])) == (order, ipix)


def test_uniq_outside_orders_0_to_29_is_flagged() -> None:
    order, _ = uniq_to_order_ipix(np.array([0, 3, 4**31, 2**63 - 1], dtype=np.int64))
    assert list(order) == [-1, -1, MAX_ORDER + 1, MAX_ORDER + 1]


# -- analytic maps -----------------------------------------------------------------------


def test_uniform_on_four_base_pixels_at_mixed_orders() -> None:
    # Base pixels 0..3 (a third of the sky) at orders 0, 1, 2 and 3; the rest empty.
    uniq = np.concatenate([uniq_of(0, [0]), uniq_of(1, 4 + np.arange(4)),
                           uniq_of(2, 32 + np.arange(16)), uniq_of(3, 192 + np.arange(64)),
                           uniq_of(0, np.arange(4, 12))])
    dens = np.where(np.arange(uniq.size) < 85, 3 / (4 * math.pi), 0.0)
    sky = read_multiorder(multiorder_fits(uniq, dens))
    assert sky.n_pixels == 93 and sky.max_order == 3
    assert sky.total_probability == pytest.approx(1.0, rel=1e-12)
    assert sky.sky_fraction == pytest.approx(1.0, rel=1e-12)
    assert sky.area_deg2(0.9) == pytest.approx(0.9 * SKY_DEG2 / 3, rel=1e-9)
    assert sky.area_deg2(1.0) == pytest.approx(SKY_DEG2 / 3, rel=1e-9)
    assert sky.area_deg2(0.5) == pytest.approx(0.5 * SKY_DEG2 / 3, rel=1e-9)
    ra, dec = sky.max_position()
    assert 0 <= ra < 360 and dec > 0  # base pixels 0..3 are the northern ones


def test_uniform_on_northern_hemisphere() -> None:
    # Order 4: pixels centred north of the equator at full density, the equatorial ring
    # (centres on the equator, each half north) at half: exactly the northern hemisphere.
    nside = 16
    ipix = np.arange(12 * nside**2)
    z = healpy.pix2vec(nside, ipix, nest=True)[2]
    dens = np.where(z > 1e-12, 1 / (2 * math.pi), np.where(abs(z) <= 1e-12, 1 / (4 * math.pi), 0))
    sky = read_multiorder(multiorder_fits(uniq_of(4, ipix), dens))
    assert sky.total_probability == pytest.approx(1.0, rel=1e-12)
    assert sky.area_deg2(0.9) == pytest.approx(0.9 * SKY_DEG2 / 2, rel=1e-9)  # 18563.8 deg^2


def test_probability_in_one_pixel() -> None:
    order, ipix = 10, 4_000_000
    area_sr = healpy.nside2pixarea(1 << order)
    sky = MultiOrderMap(uniq_of(order, [ipix]), np.array([1 / area_sr]))
    assert sky.sky_fraction == pytest.approx(1 / (12 * 4**order))
    assert sky.area_deg2(0.9) == pytest.approx(0.9 * area_sr * SR_TO_DEG2, rel=1e-9)
    ra, dec = healpy.pix2ang(1 << order, ipix, nest=True, lonlat=True)
    assert sky.max_position() == pytest.approx((ra, dec), abs=1e-12)
    assert sky.pixel_at(ra, dec) == 0
    assert sky.pixel_at(ra + 10, dec) == -1
    assert sky.density_at(ra + 10, dec) == 0.0
    assert sky.credible_level_at(ra + 10, dec) == 1.0


@pytest.mark.parametrize(("ra0", "dec0", "kappa"),
                         [(123.4, -45.6, 300.0), (10.0, 80.0, 1000.0), (300.0, 5.0, 60.0)])
def test_fisher_map_matches_analytic_areas(ra0: float, dec0: float, kappa: float) -> None:
    uniq, dens = fisher_map(ra0, dec0, kappa, max_order=9, split_above=1e-4)
    sky = read_multiorder(multiorder_fits(uniq, dens))
    assert sky.max_order == 9 and len(np.unique(sky.order)) > 3
    assert sky.sky_fraction == pytest.approx(1.0, rel=1e-12)
    assert sky.total_probability == pytest.approx(1.0, rel=2e-3)
    for level in (0.5, 0.9):
        assert sky.area_deg2(level) == pytest.approx(fisher_area_deg2(kappa, level), rel=0.02)
    ra, dec = sky.max_position()
    sep = math.degrees(healpy.rotator.angdist((ra, dec), (ra0, dec0), lonlat=True)[0])
    assert sep < 0.15  # an order-9 pixel is 0.11 deg across
    assert float(sky.credible_level_at(ra0, dec0)) < 0.01
    assert float(sky.density_at(ra0, dec0)) == pytest.approx(
        kappa / (2 * math.pi * (1 - math.exp(-2 * kappa))), rel=0.03)
    # Inside/outside the 90% cap of the analytic distribution.
    cap_deg = math.degrees(math.acos(1 - fisher_area_deg2(kappa, 0.9) / SR_TO_DEG2
                                     / (2 * math.pi)))
    levels = sky.credible_level_at(np.full(2, ra0), np.array([dec0 - 0.5 * cap_deg,
                                                              dec0 - 1.5 * cap_deg]))
    assert levels[0] < 0.9 < levels[1]


def test_credible_levels_are_greedy_cumulative_probability() -> None:
    uniq = uniq_of(0, np.arange(12))
    prob = np.array([0.3, 0.2, 0.1, 0.1, 0.1, 0.05, 0.05, 0.05, 0.05, 0, 0, 0])
    sky = MultiOrderMap(uniq, prob / (math.pi / 3))
    levels = sky.credible_levels()
    assert levels[0] == pytest.approx(0.3) and levels[1] == pytest.approx(0.5)
    assert levels[4] == pytest.approx(0.8)  # ties count together: 0.5 + 3 * 0.1
    assert levels[8] == pytest.approx(1.0) and levels[11] == pytest.approx(1.0)
    # 90%: 0.8 from five pixels, then 0.1 out of the 0.2 the 0.05-pixels hold.
    assert sky.area_deg2(0.9) == pytest.approx((5 + 2) * SKY_DEG2 / 12, rel=1e-9)


def test_unnormalized_density_is_taken_relative_to_its_total() -> None:
    uniq = uniq_of(0, np.arange(12))
    sky = MultiOrderMap(uniq, np.full(12, 7.0))
    assert sky.total_probability == pytest.approx(7 * 4 * math.pi)
    assert sky.probability.sum() == pytest.approx(1.0)
    assert sky.area_deg2(0.9) == pytest.approx(0.9 * SKY_DEG2, rel=1e-9)
    with pytest.raises(ValueError, match="credible level"):
        sky.area_deg2(0.0)


def test_arrays_are_read_only() -> None:
    sky = MultiOrderMap(uniq_of(0, np.arange(12)), np.full(12, 1 / (4 * math.pi)))
    with pytest.raises(ValueError, match="read-only"):
        sky.probdensity[0] = 1.0


# -- FITS variants -----------------------------------------------------------------------


def test_gzip_big_endian_units_and_header_meta() -> None:
    uniq, dens = fisher_map(45, 45, 100, max_order=6)
    plain = read_multiorder(multiorder_fits(uniq, dens))
    zipped = read_multiorder(gzip.compress(multiorder_fits(uniq, dens)))
    per_deg2 = read_multiorder(multiorder_fits(uniq, dens / SR_TO_DEG2, unit="deg-2"))
    for other in (zipped, per_deg2):
        assert np.array_equal(other.uniq, plain.uniq)
        assert np.allclose(other.probdensity, plain.probdensity, rtol=1e-12)
    assert plain.uniq.dtype == np.int64 and plain.uniq.dtype.isnative
    assert plain.meta["CREATOR"] == "mmbroker-tests" and plain.meta["DISTMEAN"] == 100.0
    assert "TTYPE1" not in plain.meta and plain.notes == ()


@pytest.mark.parametrize("ordering", ["RING", "NESTED"])
@pytest.mark.parametrize("column", ["PROB", "PROBDENSITY"])
def test_flat_maps_become_single_order_maps(ordering: str, column: str) -> None:
    nside, hot_nest = 32, 5000
    prob = np.full(12 * nside**2, 0.5 / (12 * nside**2 - 1))
    prob[hot_nest] = 0.5
    values = prob if ordering == "NESTED" else prob[healpy.ring2nest(nside, np.arange(prob.size))]
    if column == "PROBDENSITY":
        values = values / healpy.nside2pixarea(nside)
    hdu = fits.BinTableHDU.from_columns([fits.Column(name=column, format="D", array=values)])
    hdu.header.update({"PIXTYPE": "HEALPIX", "ORDERING": ordering, "NSIDE": nside,
                       "INDXSCHM": "IMPLICIT", "COORDSYS": "C"})
    out = io.BytesIO()
    fits.HDUList([fits.PrimaryHDU(), hdu]).writeto(out)
    sky = read_multiorder(out.getvalue())
    # Equal siblings fold (lossless): the hot pixel keeps order 5, the flat rest goes coarse.
    assert sky.max_order == 5 and sky.n_pixels < prob.size / 100
    assert sky.density_at(*healpy.pix2ang(nside, hot_nest, nest=True, lonlat=True)) \
        == pytest.approx(0.5 / healpy.nside2pixarea(nside), rel=1e-9)
    assert sky.max_position() == pytest.approx(
        healpy.pix2ang(nside, hot_nest, nest=True, lonlat=True), abs=1e-9)
    assert any("flat" in note for note in sky.notes)


def test_header_repairs_are_noted_not_raised() -> None:
    good = multiorder_fits(uniq_of(0, np.arange(12)), np.full(12, 1 / (4 * math.pi)))
    non_ascii = good.replace(b"'mmbroker-tests'", b"'mmbroker-t\xe9sts'")
    sky = read_multiorder(non_ascii)
    assert any("non-ASCII" in note for note in sky.notes)
    garbled_value = good.replace(b"DISTMEAN=                100.0",
                                 b"DISTMEAN=             100.0abc")
    assert garbled_value != good
    sky = read_multiorder(garbled_value)
    assert "DISTMEAN" not in sky.meta
    assert any("DISTMEAN" in note for note in sky.notes)
    padded = read_multiorder(good + b"\0" * 2880)
    assert any("padding" in note for note in padded.notes)


# -- hostile and broken inputs -----------------------------------------------------------


def _good() -> bytes:
    return multiorder_fits(uniq_of(0, np.arange(12)), np.full(12, 1 / (4 * math.pi)))


def _table_fits(columns: list[fits.Column], header: dict[str, object] | None = None) -> bytes:
    hdu = fits.BinTableHDU.from_columns(columns)
    hdu.header.update(header or {})
    out = io.BytesIO()
    fits.HDUList([fits.PrimaryHDU(), hdu]).writeto(out)
    return out.getvalue()


@pytest.mark.parametrize(("data", "reason"), [
    (b"", "not a FITS file"),
    (b"hello, this is not a sky map" * 200, "not a FITS file"),
    (b"SIMPLE  =" + b" " * 100, "truncated"),
    (_good()[:2880 + 1000], "truncated"),
    (_good()[:2880 * 2], "truncated|no binary table|unreadable"),
    (_good()[:-2880], "truncated|unreadable"),
    (gzip.compress(_good())[:300], "gzip is truncated"),
    (b"\x1f\x8b" + b"\x00" * 50, "gzip is corrupt"),
    (b"SIMPLE  =" + b" " * 2871, "unreadable"),
])
def test_garbage_bytes_are_malformed(data: bytes, reason: str) -> None:
    with pytest.raises(MalformedInput, match=reason):
        read_multiorder(data)


def test_primary_only_fits_has_no_table() -> None:
    out = io.BytesIO()
    fits.HDUList([fits.PrimaryHDU(np.zeros(4))]).writeto(out)
    with pytest.raises(MalformedInput, match="no binary table"):
        read_multiorder(out.getvalue())


@pytest.mark.parametrize(("columns", "header", "reason"), [
    ([fits.Column(name="X", format="D", array=np.zeros(3))], {}, "no HEALPix table"),
    ([fits.Column(name="UNIQ", format="D", array=np.arange(4.0, 16.0)),
      fits.Column(name="PROBDENSITY", format="D", array=np.ones(12))], {}, "not integers"),
    ([fits.Column(name="UNIQ", format="K", array=np.arange(4, 16))], {}, "PROBDENSITY"),
    ([fits.Column(name="UNIQ", format="K", array=np.arange(4, 16)),
      fits.Column(name="PROBDENSITY", format="D", unit="Mpc", array=np.ones(12))], {},
     "unit 'Mpc'"),
    ([fits.Column(name="UNIQ", format="K", array=np.arange(4, 16)),
      fits.Column(name="PROBDENSITY", format="D", array=np.ones(12))], {"COORDSYS": "G"},
     "not celestial"),
])
def test_tables_that_are_not_sky_maps(columns: list[fits.Column], header: dict[str, object],
                                      reason: str) -> None:
    with pytest.raises(MalformedInput, match=reason):
        read_multiorder(_table_fits(columns, header))


@pytest.mark.parametrize(("uniq", "dens", "reason"), [
    ([4, 5, 6], [1.0, -1.0, 1.0], "negative"),
    ([4, 5, 6], [1.0, np.nan, 1.0], "non-finite"),
    ([4, 5, 6], [1.0, np.inf, 1.0], "non-finite"),
    ([4, 5, 6], [0.0, 0.0, 0.0], "total probability"),
    ([4, 5, 5], [1.0, 1.0, 1.0], "repeats"),
    ([4, 16, 17], [1.0, 1.0, 1.0], "overlaps"),  # 16 is a child of base pixel 0 (uniq 4)
    ([3, 5, 6], [1.0, 1.0, 1.0], "not a NUNIQ"),
    ([4**31, 5, 6], [1.0, 1.0, 1.0], "not a NUNIQ"),
    ([], [], "no pixels"),
])
def test_values_that_make_no_map(uniq: list[int], dens: list[float], reason: str) -> None:
    with pytest.raises(MalformedInput, match=reason):
        read_multiorder(multiorder_fits(np.array(uniq, dtype=np.int64), np.array(dens)))


def test_mismatched_arrays() -> None:
    with pytest.raises(MalformedInput, match="UNIQ values but"):
        MultiOrderMap(np.array([4, 5]), np.array([1.0]))


def test_gzip_bomb_is_hostile() -> None:
    bomb = gzip.compress(b"\0" * (4 << 20))
    with pytest.raises(HostileInput, match="limit"):
        read_multiorder(bomb, max_bytes=1 << 20)
    with pytest.raises(HostileInput, match="limit"):
        read_multiorder(_good(), max_bytes=1000)


@settings(max_examples=60, deadline=None)
@given(st.binary(min_size=0, max_size=4000))
def test_random_bytes_never_escape_as_other_errors(data: bytes) -> None:
    with contextlib.suppress(MalformedInput):
        read_multiorder(b"SIMPLE  =" + data)


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 7000), st.binary(min_size=1, max_size=8))
def test_corrupted_maps_never_escape_as_other_errors(offset: int, junk: bytes) -> None:
    data = _good()
    data = data[:offset] + junk + data[offset + len(junk):]
    try:
        sky = read_multiorder(data)
    except MalformedInput:
        return
    assert sky.total_probability > 0


# -- the LVK sample maps -----------------------------------------------------------------

SAMPLE_MAPS = sorted(LVK_SAMPLES.glob("*.fits")) if LVK_SAMPLES.is_dir() else []
needs_samples = pytest.mark.skipif(not SAMPLE_MAPS,
                                   reason=f"no LVK sample sky maps under {LVK_SAMPLES}")
# 90% areas and densest pixels as this module computes them (regression values; the test
# below checks them against an independent flat computation as well).
KNOWN = {
    "bayestar.multiorder.fits": (30.97986, 194.30420, -17.85690),
    "combined-ext.multiorder.fits": (27.70617, 194.30420, -17.85690),
    "MS220722v_bayestar.multiorder.fits": (1261.689, 98.34961, -27.44762),
}


@needs_samples
@pytest.mark.parametrize("path", SAMPLE_MAPS, ids=lambda p: p.name)
def test_sample_maps_agree_with_a_flat_computation(path: Path) -> None:
    sky = read_multiorder(path.read_bytes())
    assert sky.notes == ()
    assert sky.total_probability == pytest.approx(1.0, abs=1e-6)
    assert sky.sky_fraction == pytest.approx(1.0, abs=1e-12)
    assert sky.meta["ORDERING"] == "NUNIQ"
    order = 8  # nside 256: 0.05 deg^2 pixels, 786k of them
    flat = flat_reference(sky, order)
    assert flat.sum() == pytest.approx(1.0)
    ranked = np.sort(flat)[::-1]
    n90 = int(np.searchsorted(np.cumsum(ranked), 0.9)) + 1
    flat_area = n90 * healpy.nside2pixarea(1 << order, degrees=True)
    area = sky.area_deg2(0.9)
    assert area == pytest.approx(flat_area, rel=0.03)
    ra, dec = sky.max_position()
    flat_ra, flat_dec = healpy.pix2ang(1 << order, int(np.argmax(flat)), nest=True, lonlat=True)
    assert healpy.rotator.angdist((ra, dec), (flat_ra, flat_dec), lonlat=True)[0] < math.radians(1)
    if path.name in KNOWN:
        known_area, known_ra, known_dec = KNOWN[path.name]
        assert area == pytest.approx(known_area, rel=1e-5)
        assert (ra, dec) == pytest.approx((known_ra, known_dec), abs=1e-4)
    assert float(sky.credible_level_at(ra, dec)) < 0.01
