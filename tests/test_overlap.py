"""Overlap integrals I = 4 pi * integral p1 p2 dOmega and the credible-region gate.

Analytic answers (all-sky, halves, points at peaks, closed forms), brute-force
integration on fine HEALPix grids, symmetry and rotation properties, and the LVK
sample maps crossed with synthetic circles and with each other against slow,
independent reference implementations written here.
"""

from __future__ import annotations

import math
from pathlib import Path

import healpy
import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from crossmatch.localization import (
    TAIL_PROBABILITY,
    Ellipse,
    Mixture,
    SkyMap,
    VonMisesFisher,
    gbm_mixture,
    unit_vector,
)
from crossmatch.overlap import Overlap, contains, credible_level_at, overlap, raster_order
from tests.conftest import SAMPLES
from tests.test_skymap import fisher_map, uniq_of

FOUR_PI = 4 * math.pi
LVK = SAMPLES / "lvk"
SAMPLE_MAPS = sorted(LVK.glob("*.multiorder.fits")) if LVK.is_dir() else []
needs_samples = pytest.mark.skipif(not SAMPLE_MAPS,
                                   reason=f"no LVK sample sky maps under {LVK}")


# -- independent references ---------------------------------------------------------------


# HEALPix pixel centres near the poles are not their centroids, which makes a midpoint
# sum there converge only to first order: the grid is tilted so its poles lie on the equator.
TILT = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])


def brute_force(a, b, nside: int = 512) -> float:  # type: ignore[no-untyped-def]
    """4 pi * sum p_a p_b dOmega over every pixel of a fine, tilted grid (smooth densities)."""
    vecs = np.array(healpy.pix2vec(nside, np.arange(12 * nside * nside))).T @ TILT.T
    prod = np.exp(a.log_density(vecs) + b.log_density(vecs))
    return FOUR_PI * float(np.sum(prod)) * healpy.nside2pixarea(nside)


def local_brute_force(a, b, ra: float, dec: float, radius_deg: float,  # type: ignore[no-untyped-def]
                      nside: int) -> float:
    """As brute_force, over a disc that holds (all but a negligible part of) the product."""
    centre = TILT.T @ healpy.ang2vec(ra, dec, lonlat=True)
    pix = healpy.query_disc(nside, centre, math.radians(radius_deg))
    vecs = np.array(healpy.pix2vec(nside, pix)).T @ TILT.T
    prod = np.exp(a.log_density(vecs) + b.log_density(vecs))
    return FOUR_PI * float(np.sum(prod)) * healpy.nside2pixarea(nside)


def _ranges(sky: SkyMap) -> list[tuple[int, int, float]]:
    """(start, stop, normalized density) of each pixel, order-29 NESTED, in Python ints."""
    moc = sky.moc
    area = [math.pi / 3 / 4**o for o in moc.order.tolist()]
    total = math.fsum(d * a for d, a in zip(moc.probdensity.tolist(), area, strict=True))
    rows = [(ip << 2 * (29 - o), (ip + 1) << 2 * (29 - o), d / total)
            for o, ip, d in zip(moc.order.tolist(), moc.ipix.tolist(),
                                moc.probdensity.tolist(), strict=True)]
    return sorted(rows)


def sweep_reference(a: SkyMap, b: SkyMap) -> float:
    """Map x map by a two-pointer sweep over general intervals, in pure Python.

    Assumes nothing about HEALPix nesting: every overlap of two ranges is
    measured, in order-29 pixels of area 4 pi / (12 * 4**29).
    """
    ra_, rb_ = _ranges(a), _ranges(b)
    i = j = 0
    total = 0.0
    while i < len(ra_) and j < len(rb_):
        (s1, e1, d1), (s2, e2, d2) = ra_[i], rb_[j]
        lo, hi = max(s1, s2), min(e1, e2)
        if hi > lo:
            total += d1 * d2 * (hi - lo)
        if e1 <= e2:
            i += 1
        else:
            j += 1
    return FOUR_PI * total * (FOUR_PI / (12 * 4**29))


def vmf_log_density(kappa: float, ra: float, dec: float, vecs: np.ndarray) -> np.ndarray:
    """von Mises-Fisher log density written out afresh: kappa/(2 pi (1 - e^-2k)) e^(k(cos - 1))."""
    mu = np.array(healpy.ang2vec(ra, dec, lonlat=True))
    cos_t = np.clip(vecs @ mu, -1, 1)
    return (math.log(kappa / (2 * math.pi * -math.expm1(-2 * kappa))) + kappa * (cos_t - 1))


def documented_order(sigma_rad: float, radius_rad: float) -> int:
    """The evaluation order crossmatch.overlap documents: pixels <= sigma / 8, <= 2**20 of them."""
    order = min(27, max(0, math.ceil(math.log2(math.sqrt(math.pi / 3) * 8 / sigma_rad))))
    while order > 0 and 12 * 4**order * 0.5 * (1 - math.cos(min(radius_rad, math.pi))) > 2**20:
        order -= 1
    return order


def smooth_map_reference(v: VonMisesFisher, sky: SkyMap) -> float:
    """vMF x map by its documented rule, one map pixel at a time (dictionaries, no searches).

    Support: the inclusive disc of the pixels of the documented order holding all
    but 1e-12 of the density.  A map pixel at or finer than that order counts with
    the density at its own centre (if its ancestor is a support pixel); a coarser one
    with the density at the centres of its support descendants; the sum is divided by
    the rule's total over the support.
    """
    a = -math.log1p(-(1 - TAIL_PROBABILITY) * -math.expm1(-2 * v.kappa)) / v.kappa
    radius = 2 * math.asin(min(1.0, math.sqrt(a / 2)))
    order = documented_order(1 / math.sqrt(v.kappa), radius)
    support = healpy.query_disc(1 << order, healpy.ang2vec(v.ra_deg, v.dec_deg, lonlat=True),
                                radius, inclusive=True, nest=True).tolist()
    support_set = set(support)
    moc = sky.moc
    dens = moc.probdensity / moc.total_probability
    rows = {(o, ip): d for o, ip, d in zip(moc.order.tolist(), moc.ipix.tolist(),
                                           dens.tolist(), strict=True)}
    coarse_orders = sorted({o for o, _ in rows if o < order})
    points, weights = [], []  # (order, ipix) to evaluate, and map density * area
    for (o, ip), d in rows.items():
        if o >= order and (ip >> 2 * (o - order)) in support_set:
            points.append((o, ip))
            weights.append(d * math.pi / 3 / 4**o)
    for pix in support:
        for o in coarse_orders:
            d = rows.get((o, pix >> 2 * (order - o)))
            if d is not None:
                points.append((order, pix))
                weights.append(d * math.pi / 3 / 4**order)
                break
    total = 0.0
    for o in sorted({o for o, _ in points}):
        sel = [k for k, (po, _) in enumerate(points) if po == o]
        ipix = np.array([points[k][1] for k in sel])
        vecs = np.array(healpy.pix2vec(1 << o, ipix, nest=True)).T
        f = np.exp(vmf_log_density(v.kappa, v.ra_deg, v.dec_deg, vecs))
        total += float(np.sum(f * np.array([weights[k] for k in sel])))
    # Normalized by the rule's own total over the support pixels.
    vecs = np.array(healpy.pix2vec(1 << order, np.array(support), nest=True)).T
    norm = float(np.sum(np.exp(vmf_log_density(v.kappa, v.ra_deg, v.dec_deg, vecs))))
    return FOUR_PI * total / (norm * math.pi / 3 / 4**order)


def reference(loc, sky: SkyMap) -> float:  # type: ignore[no-untyped-def]
    if isinstance(loc, Mixture):
        return sum(w * smooth_map_reference(v, sky) for w, v in loc.components)
    return smooth_map_reference(loc, sky)


# -- builders -----------------------------------------------------------------------------


def uniform_on(pixels_by_order: dict[int, list[int]], empty: dict[int, list[int]] | None = None
               ) -> SkyMap:
    """A map uniform on the given NESTED pixels (any mix of orders), empty on `empty`."""
    uniq, dens = [], []
    area = sum(len(p) * math.pi / 3 / 4**o for o, p in pixels_by_order.items())
    for o, pix in pixels_by_order.items():
        uniq.append(uniq_of(o, pix))
        dens.append(np.full(len(pix), 1 / area))
    for o, pix in (empty or {}).items():
        uniq.append(uniq_of(o, pix))
        dens.append(np.zeros(len(pix)))
    return SkyMap.from_uniq(np.concatenate(uniq), np.concatenate(dens))


def children(pixels: list[int], levels: int) -> list[int]:
    return [p * 4**levels + k for p in pixels for k in range(4**levels)]


ALL_SKY_0 = uniform_on({0: list(range(12))})
ALL_SKY_MIXED = uniform_on({1: list(range(0, 24)), 3: children(list(range(24, 48)), 2)})
HALF_A = uniform_on({0: [0, 1, 2], 2: children([3, 4, 5], 2)}, empty={0: list(range(6, 12))})
HALF_A_FINE = uniform_on({4: children(list(range(6)), 4)})
HALF_B = uniform_on({1: children(list(range(6, 12)), 1)})


# -- analytic answers ---------------------------------------------------------------------


def test_all_sky_times_all_sky_is_one() -> None:
    for a in (ALL_SKY_0, ALL_SKY_MIXED):
        for b in (ALL_SKY_0, ALL_SKY_MIXED):
            result = overlap(a, b)
            assert result.integral == pytest.approx(1.0, rel=1e-14)
            assert result.log10_integral == pytest.approx(0.0, abs=1e-14)
            assert not result.gated and result.method.startswith("map x map")
    uniform = VonMisesFisher(10, 20, 0.0)
    assert overlap(uniform, uniform).integral == 1.0
    assert overlap(uniform, VonMisesFisher(0, -80, 50.0)).integral == pytest.approx(1.0)
    assert overlap(uniform, ALL_SKY_MIXED).integral == pytest.approx(1.0, rel=1e-14)
    assert overlap(uniform, HALF_A).integral == pytest.approx(1.0, rel=1e-14)
    e = Ellipse.from_axes(10, 20, 3, 1, 40, 0.9)
    assert overlap(e, ALL_SKY_MIXED).integral == pytest.approx(1.0, rel=1e-14)
    assert overlap(e, uniform).integral == pytest.approx(1.0, rel=1e-12)


def test_same_half_is_two_and_opposite_halves_zero() -> None:
    assert overlap(HALF_A, HALF_A_FINE).integral == pytest.approx(2.0, rel=1e-14)
    assert overlap(HALF_A, HALF_A).integral == pytest.approx(2.0, rel=1e-14)
    apart = overlap(HALF_A, HALF_B, credible_level=None)
    assert apart == Overlap(0.0, None, apart.method, False, None)
    gated = overlap(HALF_A, HALF_B)
    assert gated.gated and gated.integral == 0.0 and gated.credible_level == 0.9
    # Half the sky and all of it: 4 pi * (1/2pi) * (1/4pi) * 2 pi = 1.
    assert overlap(HALF_A, ALL_SKY_MIXED).integral == pytest.approx(1.0, rel=1e-14)


def test_point_at_a_maps_peak_is_four_pi_times_its_density() -> None:
    uniq, dens = fisher_map(123.0, -45.0, 500.0, max_order=9)
    sky = SkyMap.from_uniq(uniq, dens)
    i = int(np.argmax(sky.density))
    ra, dec = healpy.pix2ang(1 << int(sky.order[i]), int(sky.ipix[i]), nest=True, lonlat=True)
    result = overlap(VonMisesFisher.point(ra, dec), sky)
    assert result.integral == pytest.approx(FOUR_PI * sky.density.max(), rel=1e-14)
    assert "pixel holding it" in result.method
    # A tiny circle inside that pixel gives the same, by the same rule.
    tiny = VonMisesFisher.from_radius(ra, dec, 1e-4, 0.9)
    assert overlap(tiny, sky).integral == pytest.approx(result.integral, rel=1e-14)


@pytest.mark.parametrize(("c1", "c2"), [
    ((10.0, 20.0, 5.0), (15.0, 22.0, 8.0)),
    ((200.0, -30.0, 20.0), (220.0, -10.0, 30.0)),
    ((0.0, 0.0, 60.0), (180.0, 0.0, 60.0)),     # antipodal, wide
    ((359.5, 0.0, 3.0), (0.5, 1.0, 4.0)),        # across RA 0
    ((17.0, 89.0, 3.0), (197.0, 88.0, 4.0)),     # across the pole
])
def test_circle_times_circle_matches_numerical_integration(c1: tuple[float, float, float],
                                                          c2: tuple[float, float, float]
                                                          ) -> None:
    a = VonMisesFisher.from_radius(*c1, 0.9)
    b = VonMisesFisher.from_radius(*c2, 0.9)
    exact = overlap(a, b, credible_level=None)
    assert exact.method == "vmf x vmf closed form"
    assert exact.integral == pytest.approx(brute_force(a, b, nside=256), rel=1e-6)


def test_closed_form_matches_its_textbook_expression() -> None:
    k1, k2 = 3.0, 7.0
    a, b = VonMisesFisher(0, 0, k1), VonMisesFisher(40, 10, k2)
    mu = k1 * unit_vector(0, 0) + k2 * unit_vector(40, 10)
    big_k = float(np.linalg.norm(mu))
    expected = k1 * k2 * math.sinh(big_k) / (math.sinh(k1) * math.sinh(k2) * big_k)
    assert overlap(a, b, credible_level=None).integral == pytest.approx(expected, rel=1e-13)


def test_log_space_survives_extremes() -> None:
    # 1e-6 deg circles 1 arcsec apart: I is astronomically small but its log is exact.
    a = VonMisesFisher.from_radius(0, 0, 1e-6, 0.9)
    b = VonMisesFisher.from_radius(1 / 3600, 0, 1e-6, 0.9)
    far = overlap(a, b, credible_level=None)
    sep = math.radians(1 / 3600)
    log_expected = -a.kappa * b.kappa / (a.kappa + b.kappa) * sep**2 / 2 + math.log(
        2 * a.kappa * b.kappa / (a.kappa + b.kappa))
    assert far.integral == 0.0 and far.log10_integral is not None
    assert far.log10_integral * math.log(10) == pytest.approx(log_expected, rel=1e-9)
    same = overlap(a, a)
    assert same.integral == pytest.approx(a.kappa, rel=1e-12)  # 2 k k / (2k) for k1 = k2 = k
    assert overlap(VonMisesFisher(0, 0, 1e-300), VonMisesFisher(0, 0, 1e300),
                   credible_level=None).integral == pytest.approx(1.0)


def test_points() -> None:
    p, q = VonMisesFisher.point(10, 10), VonMisesFisher.point(10, 10.001)
    assert overlap(p, q, credible_level=None).integral == 0.0
    assert overlap(p, q).gated
    assert overlap(p, p).integral == math.inf
    v = VonMisesFisher.from_radius(10, 11, 2.0, 0.9)
    assert overlap(p, v).integral == pytest.approx(FOUR_PI * v.density(10, 10), rel=1e-13)
    e = Ellipse.from_axes(10, 11, 3.0, 1.0, 0.0, 0.9)
    assert overlap(e, p).integral == pytest.approx(FOUR_PI * e.density(10, 10), rel=1e-13)


def test_mixtures_are_linear() -> None:
    mix = gbm_mixture(40, -10, 5.0, 0.6827, 3.72)
    b = VonMisesFisher.from_radius(45, -8, 10.0, 0.9)
    parts = sum(w * overlap(v, b, credible_level=None).integral for w, v in mix.components)
    result = overlap(mix, b, credible_level=None)
    assert result.integral == pytest.approx(parts, rel=1e-13)
    assert result.method.startswith("mixture of 2")
    # HEALPix midpoint sums converge as (pixel / sigma)^2: ~1e-6 at nside 512 here.
    assert overlap(mix, mix).integral == pytest.approx(brute_force(mix, mix, nside=512), rel=3e-6)


# -- ellipses -----------------------------------------------------------------------------


@pytest.mark.parametrize(("e", "other"), [
    (Ellipse.from_axes(12, 21, 8, 3, 30, 0.9), VonMisesFisher.from_radius(15, 22, 8, 0.9)),
    (Ellipse.from_axes(12, 21, 8, 3, 30, 0.9), VonMisesFisher.from_radius(13, 20, 0.5, 0.9)),
    (Ellipse.from_axes(12, 21, 8, 3, 30, 0.9), Ellipse.from_axes(14, 18, 6, 1, 100, 0.9)),
    (Ellipse.from_axes(359.9, 87, 5, 2, 170, 0.9), Ellipse.from_axes(90, 88, 4, 3, 10, 0.9)),
])
def test_ellipse_overlaps_match_numerical_integration(e: Ellipse,
                                                      other: VonMisesFisher | Ellipse) -> None:
    result = overlap(e, other, credible_level=None)
    assert "Gauss-Hermite" in result.method
    truth = local_brute_force(e, other, e.ra_deg, e.dec_deg, 40.0, nside=1024)
    assert result.integral == pytest.approx(truth, rel=1e-6)


@pytest.mark.parametrize(("radius", "offset"), [(1.0, 0.0), (3.0, 0.5), (2.0, 4.0)])
def test_circle_times_map_is_accurate_against_a_finer_grid(radius: float, offset: float) -> None:
    # The midpoint rule at pixels <= sigma / 8 against the same rule at order 11
    # (0.03 deg pixels, itself good to ~1e-5): the documented accuracy, a few 1e-4.
    uniq, dens = fisher_map(60.0, -20.0, 800.0, max_order=8)
    sky = SkyMap.from_uniq(uniq, dens)
    v = VonMisesFisher.from_radius(60.0 + offset, -20.0, radius, 0.9)
    order = 11
    pix = healpy.query_disc(1 << order, v.vec, v.support_radius_rad(), inclusive=True,
                            nest=True).astype(np.int64)
    f = np.exp(v.log_density(np.array(healpy.pix2vec(1 << order, pix, nest=True)).T))
    rows = sky.rows_at_nested29(pix << 2 * (29 - order))
    d = np.where(rows >= 0, sky.density[np.clip(rows, 0, None)], 0.0)
    fine = FOUR_PI * float(np.sum(f * d) / np.sum(f))
    assert overlap(v, sky).integral == pytest.approx(fine, rel=5e-4)


def test_wide_smooth_pairs_are_summed_over_the_sphere() -> None:
    wide = VonMisesFisher.from_radius(3, 4, 120, 0.9)
    e = Ellipse.from_axes(50, -20, 60, 30, 10, 0.9)
    result = overlap(wide, e)
    assert "over the sphere" in result.method
    assert result.integral == pytest.approx(brute_force(wide, e, nside=256), rel=1e-5)
    assert overlap(e, VonMisesFisher(0, 0, 0.0)).integral == pytest.approx(1.0, rel=1e-4)


def test_ellipse_overlap_is_mirror_symmetric() -> None:
    # Reflecting the sky in right ascension mirrors position angles.
    e = Ellipse.from_axes(30.0, 40.0, 5.0, 1.5, 25.0, 0.9)
    v = VonMisesFisher.from_radius(33.0, 41.0, 4.0, 0.9)
    e_m = Ellipse.from_axes(330.0, 40.0, 5.0, 1.5, -25.0, 0.9)
    v_m = VonMisesFisher.from_radius(327.0, 41.0, 4.0, 0.9)
    assert overlap(e, v).integral == pytest.approx(overlap(e_m, v_m).integral, rel=1e-12)
    assert overlap(e, e_m, credible_level=None).integral == pytest.approx(
        overlap(e_m, e, credible_level=None).integral, rel=1e-12)


def test_ellipse_times_map_matches_numerical_integration() -> None:
    e = Ellipse.from_axes(30, 40, 4, 1.5, 60, 0.9)
    v = VonMisesFisher.from_radius(31, 41, 6, 0.9)
    nside = 256
    vecs = np.array(healpy.pix2vec(nside, np.arange(12 * nside**2), nest=True)).T
    sky = SkyMap.from_flat(np.exp(v.log_density(vecs)), nest=True, per_pixel=False)
    result = overlap(e, sky)
    assert "midpoint" in result.method
    # The map is v at 0.23-deg resolution: the overlap is I(e, v) to that resolution.
    assert result.integral == pytest.approx(overlap(e, v).integral, rel=1e-3)


# -- symmetry, rotations, wrap-around, poles ----------------------------------------------

positions = st.tuples(st.floats(0, 360, exclude_max=True), st.floats(-90, 90))
radii = st.floats(0.01, 120.0)


@given(positions, radii, positions, radii, st.floats(0.05, 0.95))
@settings(max_examples=150, deadline=None)
def test_overlap_is_symmetric(p1: tuple[float, float], r1: float, p2: tuple[float, float],
                              r2: float, c: float) -> None:
    a = VonMisesFisher.from_radius(*p1, r1, c)
    b = VonMisesFisher.from_radius(*p2, r2, 0.9)
    x, y = overlap(a, b, credible_level=None), overlap(b, a, credible_level=None)
    assert x == y
    assert x.integral >= 0
    g1, g2 = overlap(a, b), overlap(b, a)
    assert g1 == g2


def rotation(axis: np.ndarray, angle: float) -> np.ndarray:
    axis = axis / np.linalg.norm(axis)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + math.sin(angle) * k + (1 - math.cos(angle)) * k @ k


def rotated(vmf: VonMisesFisher, rot: np.ndarray) -> VonMisesFisher:
    x, y, z = rot @ vmf.vec
    # atan2 rather than asin(z): asin loses all precision within 1e-8 rad of a pole.
    ra, dec = math.degrees(math.atan2(y, x)) % 360, math.degrees(math.atan2(z, math.hypot(x, y)))
    return VonMisesFisher(ra, dec, vmf.kappa)


@given(positions, st.floats(0.1, 60), positions, st.floats(0.1, 60),
       st.tuples(st.floats(-1, 1), st.floats(-1, 1), st.floats(-1, 1)), st.floats(0, 2 * math.pi))
@settings(max_examples=150, deadline=None)
def test_overlap_is_rotation_invariant(p1: tuple[float, float], r1: float,
                                       p2: tuple[float, float], r2: float,
                                       axis: tuple[float, float, float], angle: float) -> None:
    assume(np.linalg.norm(axis) > 0.1)
    rot = rotation(np.array(axis), angle)
    a, b = VonMisesFisher.from_radius(*p1, r1, 0.9), VonMisesFisher.from_radius(*p2, r2, 0.9)
    before = overlap(a, b, credible_level=None)
    after = overlap(rotated(a, rot), rotated(b, rot), credible_level=None)
    assert before.log10_integral is not None and after.log10_integral is not None
    # log10 I is what stays accurate when I is tiny.  Rotating moves positions by ~1e-16
    # rad, which moves log I by ~kappa * 1e-16; and log I itself carries ~1e-15 relative.
    tol = 1e-9 + a.kappa * b.kappa / (a.kappa + b.kappa) * 1e-14 + 1e-13 * abs(
        before.log10_integral)
    assert after.log10_integral == pytest.approx(before.log10_integral, abs=tol)
    mix_a = Mixture(((0.7, a), (0.3, VonMisesFisher(a.ra_deg, a.dec_deg, a.kappa / 10))))
    mix_ar = Mixture(tuple((w, rotated(v, rot)) for w, v in mix_a.components))
    i1 = overlap(mix_a, b, credible_level=None).log10_integral
    i2 = overlap(mix_ar, rotated(b, rot), credible_level=None).log10_integral
    assert i1 is not None and i2 is not None
    assert i2 == pytest.approx(i1, abs=tol)


def test_ra_wrap_around_and_poles() -> None:
    def pair(ra1: float, dec1: float, ra2: float, dec2: float) -> float:
        a = VonMisesFisher.from_radius(ra1, dec1, 2.0, 0.9)
        b = VonMisesFisher.from_radius(ra2, dec2, 3.0, 0.9)
        return overlap(a, b).integral

    assert pair(359.9, 10, 0.1, 10) == pytest.approx(pair(179.9, 10, 180.1, 10), rel=1e-12)
    assert pair(0.0, 10, 359.99999, 10) == pytest.approx(pair(180.0, 10, 179.99999, 10),
                                                         rel=1e-12)
    # At a pole right ascension means nothing.
    assert pair(0, 90, 123, 89) == pytest.approx(pair(77, 90, 123, 89), rel=1e-12)
    assert pair(0, -90, 0, -89) == pytest.approx(pair(0, 90, 0, 89), rel=1e-12)


def test_maps_across_ra_zero_and_at_the_poles_match_the_reference() -> None:
    for ra0, dec0 in ((0.2, 5.0), (359.8, -5.0), (45.0, 89.5), (300.0, -89.9)):
        uniq, dens = fisher_map(ra0, dec0, 300.0, max_order=8)
        sky = SkyMap.from_uniq(uniq, dens)
        for ra, dec in ((359.5, dec0), (0.5, dec0), (180.0, dec0), (ra0, -dec0 / 2)):
            v = VonMisesFisher.from_radius(ra, dec, 4.0, 0.9)
            result = overlap(v, sky, credible_level=None)
            assert result.integral == pytest.approx(reference(v, sky), rel=1e-9, abs=1e-300)


def test_nested_and_ring_inputs_give_the_same_overlap() -> None:
    nside = 64
    src = VonMisesFisher(250.0, 30.0, 40.0)
    results = []
    for nest in (True, False):
        vecs = np.array(healpy.pix2vec(nside, np.arange(12 * nside**2), nest=nest)).T
        sky = SkyMap.from_flat(np.exp(src.log_density(vecs)), nest=nest)
        results.append((overlap(VonMisesFisher.from_radius(252.0, 31.0, 5.0, 0.9), sky).integral,
                        overlap(sky, HALF_A, credible_level=None).integral,
                        overlap(sky, sky).integral,
                        overlap(VonMisesFisher.point(251.0, 30.5), sky).integral))
    assert results[0] == pytest.approx(results[1], rel=1e-13)


def test_non_normalized_and_slightly_negative_maps() -> None:
    uniq, dens = fisher_map(10.0, 10.0, 200.0, max_order=7)
    sky = SkyMap.from_uniq(uniq, dens)
    scaled = SkyMap.from_uniq(uniq, 7.5 * dens)
    v = VonMisesFisher.from_radius(11.0, 9.0, 3.0, 0.9)
    assert overlap(v, scaled).integral == pytest.approx(overlap(v, sky).integral, rel=1e-14)
    assert overlap(scaled, sky).integral == pytest.approx(overlap(sky, sky).integral, rel=1e-14)
    ripples = dens.copy()
    low = np.argsort(dens)[:100]
    ripples[low] = -1e-12
    zeroed = dens.copy()
    zeroed[low] = 0.0
    with_ripples = SkyMap.from_uniq(uniq, ripples)
    assert overlap(v, with_ripples).integral == pytest.approx(
        overlap(v, SkyMap.from_uniq(uniq, zeroed)).integral, rel=1e-14)


# -- the gate and credible regions --------------------------------------------------------


def test_gate_for_points_circles_and_maps() -> None:
    uniq, dens = fisher_map(100.0, 0.0, 1000.0, max_order=9)
    sky = SkyMap.from_uniq(uniq, dens)
    r90 = VonMisesFisher(100, 0, 1000.0).credible_radius_deg(0.9)
    inside, outside = VonMisesFisher.point(100, r90 * 0.9), VonMisesFisher.point(100, r90 * 1.2)
    assert contains(sky, 100, r90 * 0.9) and not contains(sky, 100, r90 * 1.2)
    assert not overlap(inside, sky).gated
    result = overlap(outside, sky)
    assert result.gated and result.integral == 0.0 and result.log10_integral is None
    assert overlap(outside, sky, credible_level=None).integral > 0
    assert not overlap(outside, sky, credible_level=0.99).gated
    # Circles: gated exactly when their 90% caps are apart.
    a = VonMisesFisher.from_radius(0, 0, 2.0, 0.9)
    assert not overlap(a, VonMisesFisher.from_radius(4.9, 0, 3.0, 0.9)).gated
    assert overlap(a, VonMisesFisher.from_radius(5.1, 0, 3.0, 0.9)).gated
    # A circle whose cap reaches the map's region is not gated, one far away is.
    assert not overlap(VonMisesFisher.from_radius(100, r90 + 1.0, 1.5, 0.9), sky).gated
    assert overlap(VonMisesFisher.from_radius(100, r90 + 3.0, 1.5, 0.9), sky).gated
    # Ellipses: exact for a point, by the bounding circle otherwise.
    e = Ellipse.from_axes(0, 0, 3.0, 1.0, 0.0, 0.9)  # major axis north-south
    assert not overlap(e, VonMisesFisher.point(0, 2.9)).gated
    assert overlap(e, VonMisesFisher.point(1.1, 0)).gated
    assert not overlap(e, VonMisesFisher.from_radius(1.5, 0, 0.6, 0.9)).gated


def test_credible_levels_by_kind() -> None:
    v = VonMisesFisher.from_radius(10, 10, 2.0, 0.9)
    assert credible_level_at(v, 10, 12.0) == pytest.approx(0.9)
    assert contains(v, 10, 11.9) and not contains(v, 10, 12.1)
    levels = credible_level_at(v, np.array([10.0, 10.0]), np.array([10.0, 13.0]))
    assert isinstance(levels, np.ndarray) and levels[0] == 0.0 and levels[1] > 0.9
    e = Ellipse.from_axes(10, 10, 2.0, 1.0, 90.0, 0.5)  # major axis east-west
    assert credible_level_at(e, 10 + 2.0 / math.cos(math.radians(10)), 10) == pytest.approx(
        0.5, rel=2e-3)
    assert contains(e, 10, 10.9, 0.5) and not contains(e, 10, 11.1, 0.5)
    mix = gbm_mixture(10, 10, 3.0, 0.6827, 3.7)
    assert credible_level_at(mix, 10, 10 + mix.credible_radius_deg(0.9)) == pytest.approx(0.9)
    assert contains(HALF_A, 45.0, 60.0) and not contains(HALF_A, 45.0, -60.0)
    with pytest.raises(ValueError, match="credible level"):
        contains(v, 0, 0, 0.0)
    with pytest.raises(ValueError, match="credible level"):
        overlap(v, v, credible_level=1.5)


# -- the LVK samples against slow references ----------------------------------------------


@pytest.fixture(scope="module")
def sample_maps() -> dict[str, SkyMap]:
    return {p.name: SkyMap.from_fits(p.read_bytes()) for p in SAMPLE_MAPS}


def synthetic_counterparts(sky: SkyMap) -> list[tuple[str, VonMisesFisher | Mixture]]:
    """GRB and neutrino localizations at, near and away from a map's peak."""
    ra, dec = sky.moc.max_position()
    rng = np.random.default_rng(int(sky.n_pixels))
    out: list[tuple[str, VonMisesFisher | Mixture]] = []
    for name, dra, ddec in (("peak", 0.0, 0.0), ("near", 0.7, -0.4), ("off", 6.0, 3.0),
                            ("random", float(rng.uniform(0, 360)), 0.0)):
        r, d = (ra + dra) % 360, max(-90.0, min(90.0, dec + ddec))
        out += [
            (f"swift-bat {name}", VonMisesFisher.from_radius(r, d, 3 / 60, 0.9)),
            (f"icecube {name}", VonMisesFisher.from_radius(r, d, 0.6, 0.9)),
            (f"km3net {name}", VonMisesFisher.from_radius(r, d, 2.5, 0.5)),
            (f"gbm {name}", gbm_mixture(r, d, 6.0, 0.6827, 3.72)),
        ]
    return out


@needs_samples
@pytest.mark.parametrize("path", SAMPLE_MAPS, ids=lambda p: p.name)
def test_sample_maps_crossed_with_circles_match_the_reference(
        path: Path, sample_maps: dict[str, SkyMap]) -> None:
    sky = sample_maps[path.name]
    for label, loc in synthetic_counterparts(sky):
        result = overlap(loc, sky, credible_level=None)
        expected = reference(loc, sky)
        assert result.integral == pytest.approx(expected, rel=1e-6), label


@needs_samples
def test_sample_maps_crossed_with_each_other_match_the_sweep(
        sample_maps: dict[str, SkyMap]) -> None:
    names = sorted(sample_maps)
    for i, n1 in enumerate(names):
        for n2 in names[i:]:
            a, b = sample_maps[n1], sample_maps[n2]
            result = overlap(a, b, credible_level=None)
            assert result.integral == pytest.approx(sweep_reference(a, b), rel=1e-9), (n1, n2)
            assert overlap(b, a, credible_level=None).integral == pytest.approx(
                result.integral, rel=1e-14)


@needs_samples
def test_sample_map_self_overlap_matches_a_flat_map_at_its_finest_order(
        sample_maps: dict[str, SkyMap]) -> None:
    # MS220722v's finest order is 9 (3.1M pixels): flattening there is exact.
    sky = sample_maps.get("MS220722v_bayestar.multiorder.fits")
    if sky is None:
        pytest.skip("MS220722v sample absent")
    order = int(sky.order.max())
    flat = np.zeros(12 * 4**order)
    for o in np.unique(sky.order):
        sel = sky.order == o
        k = 4 ** (order - int(o))
        idx = (sky.ipix[sel][:, None] * k + np.arange(k)).ravel()
        flat[idx] = np.repeat(sky.density[sel], k)
    expected = FOUR_PI * float(np.sum(flat**2)) * healpy.nside2pixarea(1 << order)
    assert overlap(sky, sky).integral == pytest.approx(expected, rel=1e-10)


@needs_samples
def test_sample_gate_and_peak(sample_maps: dict[str, SkyMap]) -> None:
    for sky in sample_maps.values():
        ra, dec = sky.moc.max_position()
        peak = overlap(VonMisesFisher.point(ra, dec), sky)
        assert peak.integral == pytest.approx(FOUR_PI * sky.density.max(), rel=1e-14)
        assert credible_level_at(sky, ra, dec) == 0.0
    a = sample_maps.get("bayestar.multiorder.fits")
    c = sample_maps.get("MS220722v_bayestar.multiorder.fits")
    if a is not None and c is not None:
        assert overlap(a, c).gated  # 90% regions on different parts of the sky
        assert 0 < overlap(a, c, credible_level=None).integral < 1e-3


def test_raster_order_for_degenerate_widths() -> None:
    """Finest order for widths at or below zero or subnormal, coarsest for infinite."""
    assert raster_order(1e-3, 0.01) > raster_order(1e-1, 0.01)
    for sigma_rad in (0.0, 5e-324, 2.2e-311):
        assert raster_order(sigma_rad, 1e-9) == 27  # healpy's inclusive query limit
    assert raster_order(math.inf, 1.0) == 0
