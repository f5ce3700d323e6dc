"""Significance figures (``crossmatch.significance``): analytic values, edge cases,
Monte Carlo checks of the N-fold rate and of the targeted FAR's null distribution."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from alerts_schema import Significance
from crossmatch.calibration import count_nfold, poisson_times
from crossmatch.config import CrossmatchConfig, load_config
from crossmatch.significance import (
    Figure,
    chance_probability,
    compute_figures,
    fisher_combined_p,
    fisher_log_p,
    nfold_chance_rate,
    nfold_chance_rate_hz,
    nfold_rate_leading_order_hz,
    poisson_log_cdf,
    poisson_p_at_least_one,
    poisson_sf,
    targeted_space_time_far,
    targeted_temporal_far,
    untargeted_space_time_far,
    untargeted_temporal_far,
)

DAY = 86400.0
unit_p = st.floats(min_value=1e-300, max_value=1.0)


@pytest.fixture(scope="module")
def config() -> CrossmatchConfig:
    return load_config()


def valid(figure: Figure) -> Figure:
    """The figure fits the contract's Significance object and is JSON."""
    Significance.model_validate(figure.to_dict())
    assert figure.to_significance().value == figure.value
    json.dumps(figure.to_dict(), allow_nan=False)
    return figure


# -- RAVEN ----------------------------------------------------------------------------------

def test_untargeted_temporal_far() -> None:
    figure = valid(untargeted_temporal_far(1e-7, 1e-5, (-1.0, 5.0)))
    assert figure.value == pytest.approx(1e-7 * 1e-5 * 6)
    assert (figure.name, figure.unit, figure.is_bound) == ("raven_temporal_far", "Hz", False)
    assert "1e-07 Hz x 1e-05 Hz x 6 s" in figure.definition
    assert untargeted_temporal_far(1e-7, 1e-5, 6.0).value == figure.value  # length form
    assert untargeted_temporal_far(0.0, 1e-5, 6.0).value == 0.0
    assert untargeted_temporal_far(1e-7, 0.0, 6.0).value == 0.0
    assert untargeted_temporal_far(1e-7, 1e-5, (3.0, 3.0)).value == 0.0


@pytest.mark.parametrize("args", [(-1e-7, 1e-5, 6.0), (math.nan, 1e-5, 6.0),
                                  (1e-7, math.inf, 6.0), (1e-7, 1e-5, (5.0, -1.0))])
def test_untargeted_refuses_bad_input(args: tuple) -> None:
    with pytest.raises(ValueError):
        untargeted_temporal_far(*args)


def test_untargeted_space_time_far_is_a_bound() -> None:
    figure = valid(untargeted_space_time_far(1e-7, 1e-5, (-1.0, 5.0), overlap=12.5))
    assert figure.value == pytest.approx(6e-12 / 12.5)
    assert figure.is_bound and figure.name == "raven_space_time_far"
    # All-sky maps give I = 1: the space-time FAR is then the temporal one.
    assert untargeted_space_time_far(1e-7, 1e-5, 6.0, 1.0).value == pytest.approx(6e-12)
    for bad in (0.0, -1.0, math.inf, math.nan):
        with pytest.raises(ValueError, match="overlap"):
            untargeted_space_time_far(1e-7, 1e-5, 6.0, bad)


def test_targeted_temporal_far_known_value() -> None:
    far_gw, far_grb, max_gw, max_grb, dt = 1e-6, 2e-5, 2 / DAY, 1e-4, 12.0
    z, z_max = far_gw * far_grb * dt, max_gw * max_grb * dt
    figure = valid(targeted_temporal_far(far_gw, far_grb, max_gw, max_grb, (-1.0, 11.0)))
    assert figure.value == pytest.approx(z * (1 + math.log(z_max / z)), rel=1e-12)
    assert not figure.is_bound and figure.name == "raven_targeted_temporal_far"
    # At the thresholds the rate is that of all background pairs, Z_max; above, capped.
    assert targeted_temporal_far(max_gw, max_grb, max_gw, max_grb, dt).value == \
        pytest.approx(z_max)
    assert targeted_temporal_far(1.0, 1.0, max_gw, max_grb, dt).value == pytest.approx(z_max)
    assert targeted_temporal_far(0.0, far_grb, max_gw, max_grb, dt).value == 0.0
    # Tiny FARs do not underflow on the way (computed through logs).
    assert targeted_temporal_far(1e-200, 1e-200, 1e-100, 1e-100, 1.0).value == \
        pytest.approx(0.0, abs=1e-300)
    with pytest.raises(ValueError, match="thresholds"):
        targeted_temporal_far(1e-6, 1e-6, 0.0, 1e-4, dt)
    space = valid(targeted_space_time_far(far_gw, far_grb, max_gw, max_grb, dt, overlap=4.0))
    assert space.value == pytest.approx(figure.value / 4.0) and space.is_bound


@given(u=st.floats(1e-12, 1.0), v=st.floats(1e-12, 1.0),
       max_1=st.floats(1e-9, 1e-3), max_2=st.floats(1e-9, 1e-3), dt=st.floats(0.1, 1e3))
def test_targeted_far_is_z_max_times_fisher(u: float, v: float, max_1: float, max_2: float,
                                            dt: float) -> None:
    """The targeted statistic is Fisher's method on u = FAR/FAR_max (chi-square, 4 dof)."""
    value = targeted_temporal_far(u * max_1, v * max_2, max_1, max_2, dt).value
    assert value == pytest.approx(max_1 * max_2 * dt * fisher_combined_p([u, v]).value,
                                  rel=1e-9)


def test_targeted_far_calibrated_on_uniform_background() -> None:
    """Under the null, u = FAR/FAR_max are uniform: with Z_max = 1 Hz,
    P(FAR_t <= x) = x, and P(uv <= z) = z (1 - ln z) (the product distribution)."""
    rng = np.random.default_rng(7)
    u, v = rng.uniform(size=20_000), rng.uniform(size=20_000)
    far_t = np.array([targeted_temporal_far(a, b, 1.0, 1.0, 1.0).value
                      for a, b in zip(u, v, strict=True)])
    for x in (0.01, 0.1, 0.5):
        # 20,000 draws: binomial sd <= 0.0035; the tolerance is > 4 sd.
        assert np.mean(far_t <= x) == pytest.approx(x, abs=0.015)
        assert np.mean(u * v <= x) == pytest.approx(x * (1 - math.log(x)), abs=0.015)


# -- N-fold ---------------------------------------------------------------------------------

def test_nfold_analytic_cases() -> None:
    r, tau = 1.6534e-6, 10.0
    # Two detectors: 2 r1 r2 tau to leading order, and the exact value just below it.
    exact = nfold_chance_rate_hz([r, 2 * r], 2, tau)
    assert exact == pytest.approx(2 * r * 2 * r * tau, rel=1e-4)
    assert exact <= nfold_rate_leading_order_hz([r, 2 * r], 2, tau)
    # Exact closed form for two detectors: r1 (1 - e^{-r2 tau}) + r2 (1 - e^{-r1 tau}).
    assert exact == pytest.approx(r * -math.expm1(-2 * r * tau) + 2 * r * -math.expm1(-r * tau),
                                  rel=1e-12)
    assert nfold_chance_rate_hz([r], 2, tau) == 0.0  # one detector ON: no coincidence
    assert nfold_chance_rate_hz([], 2, tau) == 0.0
    assert nfold_chance_rate_hz([0.0, 0.0, 0.0], 2, tau) == 0.0
    assert nfold_chance_rate_hz([r, r, r], 4, tau) == 0.0  # more than are ON
    assert nfold_chance_rate_hz([0.1, 0.2], 1, tau) == pytest.approx(0.3)  # any trigger
    assert nfold_chance_rate_hz([0.1, 0.2], 2, 0.0) == 0.0
    with pytest.raises(ValueError):
        nfold_chance_rate_hz([r, r], 0, tau)
    with pytest.raises(ValueError):
        nfold_chance_rate_hz([r, -r], 2, tau)


def test_nfold_figure_uses_detectors_on() -> None:
    rates = {"Super-K": 1e-6, "IceCube": 2e-6, "JUNO": 3e-6, "KamLAND": 4e-6}
    figure = valid(nfold_chance_rate(rates, 2, 10.0, on=["JUNO", "IceCube", "JUNO"]))
    assert figure.value == pytest.approx(nfold_chance_rate_hz([2e-6, 3e-6], 2, 10.0))
    assert "2 detector(s) ON" in figure.definition and "JUNO" in figure.definition
    assert "Super-K" not in figure.definition
    assert nfold_chance_rate(rates, 2, 10.0).value > figure.value  # all ON
    assert nfold_chance_rate(rates, 2, 10.0, on=["JUNO"]).value == 0.0
    assert nfold_chance_rate(rates, 2, 10.0, on=[]).value == 0.0
    with pytest.raises(ValueError, match="no background rate for detector"):
        nfold_chance_rate(rates, 2, 10.0, on=["HALO"])


@pytest.mark.parametrize(("n", "seed"), [(2, 1), (3, 2)])
def test_nfold_rate_against_monte_carlo(n: int, seed: int) -> None:
    """Poisson triggers at rates where r tau is not small, so the exact formula and the
    leading order differ; the Monte Carlo must follow the exact one."""
    rates, tau, span = [0.05, 0.1, 0.03, 0.08], 2.0, 1.0e6
    rng = np.random.default_rng(seed)
    streams = {f"d{i}": poisson_times(r, span, rng) for i, r in enumerate(rates)}
    observed = count_nfold(streams, n, tau) / span
    exact = nfold_chance_rate_hz(rates, n, tau)
    # ~80,000 (n=2) and ~8,900 (n=3) openers: Poisson sd 0.4% and 1.1%; allow 5 sd plus
    # 2% for the mild clustering of openers (one burst of triggers can open twice).
    # The leading order is 20% (n=2) and 23% (n=3) higher here: clearly told apart.
    tolerance = 5.0 / math.sqrt(exact * span) + 0.02
    assert observed == pytest.approx(exact, rel=tolerance)
    assert nfold_rate_leading_order_hz(rates, n, tau) > exact * (1 + tolerance)


@settings(max_examples=60)
@given(rates=st.lists(st.floats(0, 1.0), min_size=0, max_size=8), n=st.integers(1, 5),
       tau=st.floats(0, 100.0))
def test_nfold_exact_never_exceeds_leading_order(rates: list[float], n: int, tau: float) -> None:
    exact = nfold_chance_rate_hz(rates, n, tau)
    assert 0.0 <= exact <= nfold_rate_leading_order_hz(rates, n, tau) * (1 + 1e-9) + 1e-300


# -- Fisher ---------------------------------------------------------------------------------

def test_fisher_known_values() -> None:
    assert fisher_combined_p([0.3]).value == pytest.approx(0.3)  # one p-value is itself
    # X = 10 with 3 p-values (6 dof): sf = e^-5 (1 + 5 + 12.5).
    assert fisher_combined_p([math.exp(-5), 1.0, 1.0]).value == \
        pytest.approx(18.5 * math.exp(-5), rel=1e-12)
    # Two p-values: p1 p2 (1 - ln(p1 p2)).
    prod = 0.01 * 0.02
    assert fisher_combined_p([0.01, 0.02]).value == pytest.approx(prod * (1 - math.log(prod)))
    figure = valid(fisher_combined_p([0.01, 0.02]))
    assert (figure.name, figure.unit, figure.is_bound) == ("fisher_p", "1", False)


def test_fisher_edges() -> None:
    assert fisher_combined_p([1.0]).value == 1.0
    assert fisher_combined_p([1.0, 1.0, 1.0]).value == 1.0
    assert fisher_log_p([1.0, 1.0]) == 0.0
    assert fisher_combined_p([0.0, 0.5]).value == 0.0
    assert fisher_log_p([0.0, 0.5]) == -math.inf
    assert "log10 p = -inf" in valid(fisher_combined_p([0.0])).definition
    # The smallest p-values stay exact in log space ...
    assert fisher_log_p([1e-300]) == pytest.approx(math.log(1e-300), rel=1e-12)
    assert fisher_combined_p([1e-300]).value == pytest.approx(1e-300, rel=1e-9)
    half_x = -2 * math.log(1e-300)
    assert fisher_log_p([1e-300, 1e-300]) == pytest.approx(-half_x + math.log1p(half_x))
    # ... even when the value underflows: the definition keeps log10 p.
    figure = valid(fisher_combined_p([1e-300, 1e-300]))
    assert figure.value == 0.0 and "log10 p = -596.9" in figure.definition
    assert fisher_log_p([5e-324] * 100) < -70000  # subnormals, many of them
    for bad in ([], [1.5], [-0.1], [math.nan]):
        with pytest.raises(ValueError):
            fisher_log_p(bad)


def test_fisher_is_uniform_under_the_null() -> None:
    rng = np.random.default_rng(3)
    draws = rng.uniform(size=(20_000, 3))
    p = np.array([fisher_combined_p(row).value for row in draws])
    for alpha in (0.01, 0.05, 0.5):
        # Binomial sd at 20,000 draws is at most 0.0035; tolerance 4+ sd.
        assert np.mean(p <= alpha) == pytest.approx(alpha, abs=0.015)


@given(ps=st.lists(unit_p, min_size=1, max_size=20), i=st.integers(0, 19),
       factor=st.floats(0.0, 1.0))
def test_fisher_bounded_and_monotone(ps: list[float], i: int, factor: float) -> None:
    log_p = fisher_log_p(ps)
    assert log_p <= 0.0
    smaller = list(ps)
    smaller[i % len(ps)] *= factor
    assert fisher_log_p(smaller) <= log_p + 1e-12


# -- Poisson ----------------------------------------------------------------------------------

def test_poisson_helpers() -> None:
    assert poisson_p_at_least_one(0.0, 1e6) == 0.0
    assert poisson_p_at_least_one(1e-20, 1.0) == pytest.approx(1e-20, rel=1e-12)
    assert poisson_p_at_least_one(1.0, 1.0) == pytest.approx(1 - math.exp(-1))
    mu = 3.7
    for k in range(12):
        direct = math.fsum(math.exp(-mu) * mu ** i / math.factorial(i) for i in range(k + 1))
        assert math.exp(poisson_log_cdf(k, mu)) == pytest.approx(direct, rel=1e-12)
        assert poisson_sf(k + 1, mu) == pytest.approx(1 - direct, rel=1e-9, abs=1e-15)
    # The far tail without cancellation: P(N >= 50; 1) ~ e^-1 / 50! (1 + 1/51 + ...).
    assert poisson_sf(50, 1.0) == pytest.approx(math.exp(-1) / math.factorial(50) * 1.0200,
                                                rel=1e-3)
    assert poisson_sf(0, 5.0) == 1.0 and poisson_sf(3, 0.0) == 0.0
    assert poisson_log_cdf(-1, 1.0) == -math.inf and poisson_log_cdf(3, 0.0) == 0.0
    assert poisson_sf(1000, 990.0) == pytest.approx(
        -math.expm1(poisson_log_cdf(999, 990.0)), rel=1e-6)


def test_chance_probability() -> None:
    rate, window = 3.47, 864000.0
    bound = valid(chance_probability(rate, window))
    assert bound.is_bound and bound.value == pytest.approx(1.0)
    figure = valid(chance_probability(rate, window, sky_fraction=1e-8))
    assert not figure.is_bound
    assert figure.value == pytest.approx(-math.expm1(-rate * window * 1e-8))
    assert chance_probability(rate, window, sky_fraction=0.0).value == 0.0
    with pytest.raises(ValueError, match="sky_fraction"):
        chance_probability(rate, window, sky_fraction=1.5)


def test_figure_refuses_non_finite_values() -> None:
    with pytest.raises(ValueError, match="not finite"):
        Figure("x", math.inf, "Hz", "d", False)
    with pytest.raises(ValueError, match="too long"):
        Figure("x" * 65, 1.0, "Hz", "d", False)


# -- per pairing ----------------------------------------------------------------------------

def test_compute_figures_untargeted(config: CrossmatchConfig) -> None:
    pairing = config.pairing("gw_cbc-grb")
    rate = config.side_rate_hz(pairing, "b")
    figures = compute_figures(pairing, config, far_a_hz=1e-8, overlap=20.0)
    assert [f.name for f in figures] == ["raven_temporal_far", "raven_space_time_far"]
    assert figures[0].value == pytest.approx(1e-8 * rate * 6.0)
    assert figures[1].value == pytest.approx(1e-8 * rate * 6.0 / 20.0)
    for f in figures:
        valid(f)
    # Without an overlap (or I = 0) only the temporal figure; without FAR, none.
    assert [f.name for f in compute_figures(pairing, config, far_a_hz=1e-8)] == \
        ["raven_temporal_far"]
    assert len(compute_figures(pairing, config, far_a_hz=1e-8, overlap=0.0)) == 1
    assert compute_figures(pairing, config, far_b_hz=1e-8, overlap=2.0) == []


def test_compute_figures_far_from_b(config: CrossmatchConfig) -> None:
    pairing = config.pairing("sn_burst-gw_burst")
    (figure,) = compute_figures(pairing, config, far_b_hz=1e-9)
    assert figure.value == pytest.approx(1e-9 * config.side_rate_hz(pairing, "a") * 20.0)


def test_compute_figures_targeted(config: CrossmatchConfig) -> None:
    pairing = config.pairing("gw_cbc-grb_subthreshold_gbm")
    max_a, max_b = pairing.targeted_far_max_hz or (0.0, 0.0)
    figures = compute_figures(pairing, config, far_a_hz=1e-6, far_b_hz=1e-5, overlap=3.0)
    by_name = {f.name: f for f in figures}
    assert list(by_name) == ["raven_targeted_temporal_far", "raven_targeted_space_time_far",
                             "fisher_p"]
    z_max = max_a * max_b * 12.0
    assert by_name["raven_targeted_temporal_far"].value == pytest.approx(
        z_max * by_name["fisher_p"].value)
    explicit = compute_figures(pairing, config, far_a_hz=1e-6, far_b_hz=1e-5,
                               p_values=[0.5, 0.5])
    assert explicit[-1].value == pytest.approx(0.25 * (1 - math.log(0.25)))


def test_compute_figures_nfold_and_optical(config: CrossmatchConfig) -> None:
    nfold = config.pairing("sn_nfold")
    figures = compute_figures(nfold, config, detectors_on=["Super-K", "IceCube", "JUNO"],
                              p_values=[0.01, 0.2])
    assert [f.name for f in figures] == ["nfold_chance_rate", "fisher_p"]
    r = config.background_rates_hz["sn_detector"]
    assert figures[0].value == pytest.approx(3 * 2 * r * r * 10.0, rel=1e-4)
    triple = compute_figures(nfold, config, detectors_on=["a", "b", "c"], multiplicity=3)
    assert triple[0].value < figures[0].value
    assert compute_figures(nfold, config) == []  # no heartbeat information: no rate

    optical = config.pairing("hen-optical")
    rate = config.side_rate_hz(optical, "b")
    (early,) = compute_figures(optical, config, offset_s=3600.0, sky_fraction=1e-7)
    assert early.value == pytest.approx(-math.expm1(-rate * 3600.0 * 1e-7))
    (whole,) = compute_figures(optical, config, sky_fraction=1e-7)
    assert whole.value == pytest.approx(-math.expm1(-rate * 864000.0 * 1e-7))
    # A symmetric window: background events at least as close as |offset| either way.
    symmetric = replace(config.pairing("gw-hen"), significance=("chance_probability",))
    (close,) = compute_figures(symmetric, config, offset_s=-20.0, sky_fraction=1e-3)
    assert close.value == pytest.approx(
        -math.expm1(-config.side_rate_hz(symmetric, "b") * 40.0 * 1e-3))
