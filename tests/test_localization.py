"""Localizations as densities on the sphere: von Mises-Fisher circles, GBM mixtures,
ellipses, sky maps (flat and multi-order), and their construction from alerts.

Answers are analytic where they can be, else brute-force sums over fine HEALPix grids.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import healpy
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from alerts_schema.errors import MalformedInput
from alerts_schema.model import Alert
from crossmatch.localization import (
    GBM_CORE_WEIGHT,
    GBM_TAIL_DEG,
    Ellipse,
    Mixture,
    SkyMap,
    VonMisesFisher,
    from_alert,
    gbm_mixture,
    unit_vector,
)
from crossmatch.skymap import read_multiorder
from tests.test_skymap import multiorder_fits, uniq_of

EXAMPLES = Path(__file__).resolve().parent.parent / "alerts_schema" / "examples"
FOUR_PI = 4 * math.pi


def sphere_integral(log_density, nside: int = 256) -> float:  # type: ignore[no-untyped-def]
    """Midpoint sum of exp(log_density) over all pixels of a RING grid, dimensionless."""
    vecs = np.array(healpy.pix2vec(nside, np.arange(12 * nside * nside))).T
    return float(np.sum(np.exp(log_density(vecs)))) * healpy.nside2pixarea(nside)


def probability_within(loc, ra: float, dec: float, radius_deg: float,  # type: ignore[no-untyped-def]
                       nside: int = 1024) -> float:
    """Brute-force probability of a density within a cone, by fine pixels."""
    vec = healpy.ang2vec(ra, dec, lonlat=True)
    pix = healpy.query_disc(nside, vec, math.radians(radius_deg))
    vecs = np.array(healpy.pix2vec(nside, pix)).T
    return float(np.sum(np.exp(loc.log_density(vecs)))) * healpy.nside2pixarea(nside)


# -- von Mises-Fisher ------------------------------------------------------------------------


@pytest.mark.parametrize("radius", [1e-9, 1e-5, 0.01, 0.5, 3.0, 15.0, 60.0, 100.0, 150.0])
@pytest.mark.parametrize("containment", [0.3935, 0.5, 0.6827, 0.9, 0.99])
def test_kappa_reproduces_the_stated_containment(radius: float, containment: float) -> None:
    v = VonMisesFisher.from_radius(10.0, 20.0, radius, containment)
    uniform_share = (1 - math.cos(math.radians(radius))) / 2
    if containment <= uniform_share:
        assert v.kappa == 0.0  # no information: the uniform density already holds it
        return
    assert v.cdf(radius) == pytest.approx(containment, rel=1e-12)
    assert v.credible_radius_deg(containment) == pytest.approx(radius, rel=1e-9)


def test_small_radius_kappa_is_the_gaussian_limit() -> None:
    # For small r: 1 - cos r = r^2 / 2, so kappa = -2 ln(1 - c) / r^2 and sigma = 1/sqrt(kappa).
    for r_deg in (1e-6, 1e-3, 0.1):
        r = math.radians(r_deg)
        v = VonMisesFisher.from_radius(0, 0, r_deg, 0.9)
        assert v.kappa == pytest.approx(-2 * math.log(0.1) / r**2, rel=1e-5)
        assert math.degrees(v.sigma_rad) == pytest.approx(r_deg / math.sqrt(-2 * math.log(0.1)),
                                                          rel=1e-5)


def test_radius_zero_is_a_point_and_180_is_uniform() -> None:
    p = VonMisesFisher.from_radius(12.0, -30.0, 0.0, 0.9)
    assert p.is_point and p.kappa == math.inf
    assert p.credible_radius_deg(0.9) == 0.0
    assert p.cdf(0.0) == 0.0 and p.cdf(1e-9) == 1.0
    u = VonMisesFisher.from_radius(12.0, -30.0, 180.0, 0.9)
    assert u.kappa == 0.0
    assert u.density(50.0, 50.0) == pytest.approx(1 / FOUR_PI, rel=1e-15)
    assert u.credible_radius_deg(0.5) == pytest.approx(90.0)


@pytest.mark.parametrize("kappa", [0.0, 1e-8, 0.3, 5.0, 300.0, 3000.0])
def test_vmf_density_integrates_to_one(kappa: float) -> None:
    v = VonMisesFisher(33.0, -47.0, kappa)
    # HEALPix pixel centres are a second-order rule: ~(pixel / sigma)^2 / 1000 here.
    assert sphere_integral(v.log_density, nside=512) == pytest.approx(1.0, rel=1e-6)


def test_vmf_density_formula_and_huge_kappa() -> None:
    v = VonMisesFisher(0.0, 0.0, 7.0)
    theta = math.radians(40.0)
    expected = 7 / (FOUR_PI * math.sinh(7)) * math.exp(7 * math.cos(theta))
    assert v.density(40.0, 0.0) == pytest.approx(expected, rel=1e-13)
    huge = VonMisesFisher(0.0, 0.0, 1e30)
    assert huge.density(0.0, 0.0) == pytest.approx(1e30 / (2 * math.pi), rel=1e-12)
    assert huge.density(1e-10, 0.0) == 0.0  # 15 sigma away: underflows, never NaN
    assert np.isfinite(huge.log_density(unit_vector(1e-10, 0.0)))


@given(st.floats(1e-7, 179.0), st.floats(0.01, 0.999))
@settings(max_examples=200, deadline=None)
def test_radius_round_trip_property(radius: float, containment: float) -> None:
    v = VonMisesFisher.from_radius(0.0, 0.0, radius, containment)
    if v.kappa == 0:
        assert (1 - math.cos(math.radians(radius))) / 2 >= containment
    else:
        assert v.credible_radius_deg(containment) == pytest.approx(radius, rel=1e-7, abs=1e-12)


def test_vmf_validates() -> None:
    with pytest.raises(ValueError, match="kappa"):
        VonMisesFisher(0, 0, -1.0)
    with pytest.raises(ValueError, match="position"):
        VonMisesFisher(0, 91, 1.0)
    with pytest.raises(ValueError, match="containment"):
        VonMisesFisher.from_radius(0, 0, 1.0, 1.0)
    with pytest.raises(ValueError, match="radius"):
        VonMisesFisher.from_radius(0, 0, -1.0, 0.9)
    assert VonMisesFisher(-10.0, 0, 1.0).ra_deg == 350.0


# -- mixtures and Fermi GBM ----------------------------------------------------------------


def test_gbm_mixture_follows_connaughton_2015() -> None:
    stat, sys_deg = 4.0, 3.72
    mix = gbm_mixture(100.0, 20.0, stat, 0.6827, sys_deg)
    (w1, core), (w2, tail) = mix.components
    assert (w1, w2) == pytest.approx((GBM_CORE_WEIGHT, 1 - GBM_CORE_WEIGHT))
    # Each component's 68.27% radius is the statistical one plus the systematic in quadrature.
    assert core.credible_radius_deg(0.6827) == pytest.approx(math.hypot(stat, sys_deg), rel=1e-9)
    assert tail.credible_radius_deg(0.6827) == pytest.approx(math.hypot(stat, GBM_TAIL_DEG),
                                                             rel=1e-9)
    assert mix.concentric
    assert mix.cdf(0.0) == 0.0 and mix.cdf(180.0) == pytest.approx(1.0)
    r90 = mix.credible_radius_deg(0.9)
    assert mix.cdf(r90) == pytest.approx(0.9, rel=1e-9)
    assert core.credible_radius_deg(0.9) < r90 < tail.credible_radius_deg(0.9)
    assert sphere_integral(mix.log_density) == pytest.approx(1.0, rel=1e-6)


@pytest.mark.parametrize(("core_deg", "weight", "tail_deg"), [
    (7.52, 0.897, 55.6),   # flight positions (Connaughton et al. 2015, Table 7)
    (3.72, 0.804, 13.7),   # ground-automated (Table 3)
    (3.71, 0.900, 14.3),   # final (Table 3)
    (5.0, GBM_CORE_WEIGHT, GBM_TAIL_DEG),  # no row: the ground-automated model
])
def test_a_gbm_alert_is_matched_with_its_position_type_s_model(
        core_deg: float, weight: float, tail_deg: float) -> None:
    alert = Alert.model_validate({
        "schema_version": "1.0", "id": "ivo://test.mmbroker/gbm#1-0", "source": "gbm",
        "messenger": "gamma_ray", "facility": "Fermi", "instrument": "GBM", "event_id": "1",
        "revision": 0, "alert_type": "initial", "role": "observation",
        "trigger_time": "2026-12-06T00:00:00Z", "data_rights": {"level": "public"},
        "localization": {"kind": "point", "ra_deg": 10.0, "dec_deg": 20.0,
                         "error_radius_deg": 2.0, "containment": 0.6827,
                         "systematic_deg": core_deg}})
    mix = from_alert(alert, {})
    assert isinstance(mix, Mixture)
    (w1, core), (w2, tail) = mix.components
    assert (w1, w2) == pytest.approx((weight, 1 - weight))
    assert core.credible_radius_deg(0.6827) == pytest.approx(math.hypot(2.0, core_deg))
    assert tail.credible_radius_deg(0.6827) == pytest.approx(math.hypot(2.0, tail_deg))


def test_gbm_statistical_radius_at_other_containment_is_converted() -> None:
    # A 90% statistical radius is turned into its 68.27% radius before the quadrature sum.
    a = gbm_mixture(0, 0, 2.0, 0.6827, 3.7)
    r90 = VonMisesFisher.from_radius(0, 0, 2.0, 0.6827).credible_radius_deg(0.9)
    b = gbm_mixture(0, 0, r90, 0.9, 3.7)
    for (_, x), (_, y) in zip(a.components, b.components, strict=True):
        assert x.kappa == pytest.approx(y.kappa, rel=1e-9)


def test_mixture_weights_are_normalized_and_validated() -> None:
    v1, v2 = VonMisesFisher(0, 0, 10.0), VonMisesFisher(0, 0, 100.0)
    mix = Mixture(((3.0, v1), (1.0, v2)))
    assert [w for w, _ in mix.components] == pytest.approx([0.75, 0.25])
    with pytest.raises(ValueError, match="positive"):
        Mixture(((0.0, v1),))
    with pytest.raises(ValueError, match="at least one"):
        Mixture(())
    off = Mixture(((1.0, v1), (1.0, VonMisesFisher(10, 0, 10.0))))
    assert not off.concentric
    with pytest.raises(ValueError, match="concentric"):
        off.credible_radius_deg(0.9)
    pole = Mixture(((1.0, VonMisesFisher(10, 90, 5.0)), (1.0, VonMisesFisher(200, 90, 50.0))))
    assert pole.concentric  # right ascension means nothing at a pole


# -- ellipses --------------------------------------------------------------------------------


def test_ellipse_holds_its_containment() -> None:
    e = Ellipse.from_axes(200.0, -35.0, 2.0, 0.8, 60.0, 0.9)
    nside = 2048
    vec = e.vec
    pix = healpy.query_disc(nside, vec, math.radians(8.0))
    vecs = np.array(healpy.pix2vec(nside, pix)).T
    p = np.exp(e.log_density(vecs)) * healpy.nside2pixarea(nside)
    inside = e.mahalanobis2(vecs) <= -2 * math.log(0.1)
    assert p.sum() == pytest.approx(1.0, rel=1e-6)
    assert p[inside].sum() == pytest.approx(0.9, rel=2e-3)  # pixelated boundary


def test_ellipse_orientation_and_axes() -> None:
    # Position angle 0: the major axis points north.
    e = Ellipse.from_axes(50.0, 10.0, 3.0, 1.0, 0.0, 0.9)
    north, east = e.density(50.0, 12.0), e.density(50.0 + 2.0 / math.cos(math.radians(10)), 10.0)
    assert north > 100 * east
    rotated = Ellipse.from_axes(50.0, 10.0, 3.0, 1.0, 90.0, 0.9)
    assert rotated.density(50.0, 12.0) < rotated.density(50.0 + 2.0 / math.cos(math.radians(10)),
                                                         10.0)
    swapped = Ellipse.from_axes(50.0, 10.0, 1.0, 3.0, 90.0, 0.9)  # minor given first
    assert swapped.position_angle_deg == 0.0
    assert swapped.sigma_major_deg == pytest.approx(e.sigma_major_deg)
    m = math.sqrt(-2 * math.log(0.1))
    assert e.sigma_major_deg == pytest.approx(3.0 / m) and e.sigma_minor_deg == pytest.approx(1 / m)
    assert e.credible_semi_major_deg(0.9) == pytest.approx(3.0)
    assert e.credible_radius_deg(0.9) == pytest.approx(3.0)  # the bounding circle
    line = Ellipse.from_axes(0, 0, 2.0, 0.0, 0.0, 0.9)  # degenerate minor axis widened
    assert line.sigma_minor_deg == pytest.approx(line.sigma_major_deg * 1e-3)


@pytest.mark.parametrize("sigma", [0.5, 5.0, 40.0])
def test_ellipse_density_is_normalized_on_the_sphere(sigma: float) -> None:
    e = Ellipse(10.0, 75.0, sigma, sigma / 3, 20.0)
    assert sphere_integral(e.log_density, nside=512) == pytest.approx(1.0, rel=1e-6)


def test_circular_ellipse_is_nearly_a_fisher_density() -> None:
    s = 0.5  # degrees
    e = Ellipse(0.0, 0.0, s, s, 0.0)
    v = VonMisesFisher(0.0, 0.0, 1 / math.radians(s) ** 2)
    for off in (0.0, 0.5, 1.0):
        assert e.density(off, 0.0) == pytest.approx(v.density(off, 0.0), rel=1e-4)


# -- sky maps --------------------------------------------------------------------------------


def vmf_flat(nside: int, ra: float, dec: float, kappa: float, *, nest: bool) -> np.ndarray:
    """Per-pixel probabilities of a von Mises-Fisher density on a flat grid."""
    vecs = np.array(healpy.pix2vec(nside, np.arange(12 * nside * nside), nest=nest)).T
    p = np.exp(VonMisesFisher(ra, dec, kappa).log_density(vecs))
    return p * healpy.nside2pixarea(nside)


def test_flat_nested_and_ring_give_the_same_map() -> None:
    nside = 32
    nested = SkyMap.from_flat(vmf_flat(nside, 30, 40, 50.0, nest=True), nest=True)
    ring = SkyMap.from_flat(vmf_flat(nside, 30, 40, 50.0, nest=False), nest=False)
    assert np.array_equal(nested.start, ring.start)
    np.testing.assert_allclose(nested.density, ring.density, rtol=1e-12)
    assert nested.density_at(30, 40) == pytest.approx(
        VonMisesFisher(30, 40, 50.0).density(30, 40), rel=0.02)


def test_flat_densities_and_normalization() -> None:
    nside = 8
    probs = np.full(12 * nside * nside, 5.0)  # not normalized
    a = SkyMap.from_flat(probs, nest=True)
    b = SkyMap.from_flat(probs, nest=False, per_pixel=False)
    for sky in (a, b):
        assert sky.density == pytest.approx(np.full(sky.n_pixels, 1 / FOUR_PI))
    with pytest.raises(MalformedInput, match="12 \\* nside"):
        SkyMap.from_flat(np.ones(100), nest=True)


def test_negative_pixels_are_clipped_when_slight_and_refused_when_not() -> None:
    nside = 16
    probs = vmf_flat(nside, 0, 0, 20.0, nest=True)
    noisy = probs.copy()
    far = np.argsort(probs)[:50]
    noisy[far] = -1e-9  # smoothing ripples
    clipped = SkyMap.from_flat(noisy, nest=True)
    assert any("negative pixels" in n for n in clipped.moc.notes)
    assert (clipped.density >= 0).all()
    assert clipped.density[np.argsort(clipped.density)[:50]] == pytest.approx(np.zeros(50))
    noisy[far[:3]] = healpy.UNSEEN
    assert any("UNSEEN" in n for n in SkyMap.from_flat(noisy, nest=True).moc.notes)
    bad = probs.copy()
    bad[far] = -0.01
    with pytest.raises(MalformedInput, match="negative PROBDENSITY"):
        SkyMap.from_flat(bad, nest=True)
    with pytest.raises(MalformedInput, match="negative PROBDENSITY"):
        SkyMap.from_flat(noisy, nest=True, negative_tolerance=0.0)


def test_read_multiorder_keeps_strict_default_and_repairs_on_request() -> None:
    uniq = uniq_of(1, np.arange(48))
    dens = np.full(48, 1 / FOUR_PI)
    dens[0] = -1e-8
    data = multiorder_fits(uniq, dens)
    with pytest.raises(MalformedInput, match="negative"):
        read_multiorder(data)
    repaired = read_multiorder(data, negative_tolerance=1e-3)
    assert repaired.probdensity[0] == 0.0 and any("clipped" in n for n in repaired.notes)
    assert SkyMap.from_fits(data).density[0] == 0.0


def test_credible_levels_share_ties_and_exclude_empty_sky() -> None:
    # Half the sky uniform at two orders, the rest empty.
    uniq = np.concatenate([uniq_of(0, np.arange(5)), uniq_of(2, 5 * 16 + np.arange(16)),
                           uniq_of(0, np.arange(6, 12))])
    dens = np.concatenate([np.full(21, 1 / (2 * math.pi)), np.zeros(6)])
    sky = SkyMap.from_uniq(uniq, dens)
    levels = sky.credible_levels
    assert np.all(levels[sky.density > 0] == 0.0)  # one tie group: the densest
    assert np.all(levels[sky.density == 0] == 1.0)
    start, stop = sky.region(0.9)
    assert start.tolist() == [0] and stop.tolist() == [6 << 58]  # base pixels 0..5, merged
    assert sky.credible_level_at(45.0, 60.0) == 0.0  # base pixel 0
    assert sky.credible_level_at(45.0, -60.0) == 1.0  # base pixel 8: empty
    assert sky.credible_level_at_nested29(0) == 0.0


def test_credible_levels_are_probability_strictly_denser() -> None:
    uniq = uniq_of(0, np.arange(12))
    prob = np.array([0.3, 0.2, 0.1, 0.1, 0.1, 0.05, 0.05, 0.05, 0.05, 0, 0, 0])
    sky = SkyMap.from_uniq(uniq, prob / (math.pi / 3))
    assert sky.credible_levels.tolist() == pytest.approx(
        [0, 0.3, 0.5, 0.5, 0.5, 0.8, 0.8, 0.8, 0.8, 1, 1, 1])
    start, _ = sky.region(0.81)
    assert start.size == 1  # pixels 0..8 touch: one range


def test_rows_and_density_lookup_agree_with_multiorder_map() -> None:
    uniq = np.concatenate([uniq_of(3, np.arange(64)), uniq_of(1, np.arange(4, 48))])
    dens = np.linspace(1, 2, uniq.size)
    sky = SkyMap.from_uniq(uniq, dens)
    rng = np.random.default_rng(3)
    ra, dec = rng.uniform(0, 360, 500), np.degrees(np.arcsin(rng.uniform(-1, 1, 500)))
    np.testing.assert_allclose(sky.density_at(ra, dec), sky.moc.density_at(ra, dec), rtol=1e-14)


# -- from alerts -----------------------------------------------------------------------------


def example(name: str, **localization: object) -> Alert:
    doc = json.loads((EXAMPLES / name).read_text())
    if localization:
        doc["localization"] = localization
    return Alert.model_validate(doc)


def test_from_alert_point_kinds() -> None:
    gbm = from_alert(example("alert-grb-gbm.example.json"), {})
    assert isinstance(gbm, Mixture) and len(gbm.components) == 2
    assert gbm.components[0][1].credible_radius_deg(0.6827) == pytest.approx(
        math.hypot(11.3, 3.7), rel=1e-9)
    nu = from_alert(example("alert-neutrino-trigger.example.json"), {})
    assert isinstance(nu, VonMisesFisher)
    loc = example("alert-neutrino-trigger.example.json").localization
    assert nu.cdf(loc.error_radius_deg) == pytest.approx(loc.containment)  # type: ignore[union-attr]
    sys_point = from_alert(example("alert-neutrino-trigger.example.json", kind="point",
                                   ra_deg=1.0, dec_deg=2.0, error_radius_deg=3.0,
                                   containment=0.9, systematic_deg=4.0), {})
    assert isinstance(sys_point, VonMisesFisher)
    assert sys_point.credible_radius_deg(0.9) == pytest.approx(5.0)
    exact = from_alert(example("alert-neutrino-trigger.example.json", kind="point", ra_deg=1.0,
                               dec_deg=2.0, error_radius_deg=0.0, containment=0.9), {})
    assert isinstance(exact, VonMisesFisher) and exact.is_point
    assert from_alert(example("alert-snews-none.example.json"), {}) is None


def test_from_alert_ellipses() -> None:
    e = from_alert(example("alert-xray-ellipse-retraction.example.json"), {})
    assert isinstance(e, Ellipse)
    assert e.credible_semi_major_deg(0.9) == pytest.approx(0.4)
    circle = from_alert(example("alert-xray-ellipse-retraction.example.json", kind="ellipse",
                                ra_deg=1.0, dec_deg=2.0, semi_major_deg=0.3,
                                semi_minor_deg=0.3, position_angle_deg=0.0,
                                containment=0.9), {})
    assert isinstance(circle, VonMisesFisher)
    assert circle.credible_radius_deg(0.9) == pytest.approx(0.3)


def test_from_alert_skymaps_by_hash() -> None:
    data = multiorder_fits(uniq_of(1, np.arange(48)), np.full(48, 1 / FOUR_PI))
    sha = hashlib.sha256(data).hexdigest()
    alert = example("alert-gw-cbc-skymap.example.json", kind="skymap", skymap_sha256=sha,
                    format="multiorder")
    assert from_alert(alert, {}) is None  # bytes not at hand
    sky = from_alert(alert, {sha: data})
    assert isinstance(sky, SkyMap) and sky.n_pixels == 48
    assert from_alert(alert, {}) is sky  # parsed once, kept by hash
    other = "0" * 64
    wrong = example("alert-gw-cbc-skymap.example.json", kind="skymap", skymap_sha256=other,
                    format="multiorder")
    with pytest.raises(MalformedInput, match="SHA-256"):
        from_alert(wrong, {other: data})
