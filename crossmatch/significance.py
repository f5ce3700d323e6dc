"""Significance figures of a coincidence, each with its definition.

Pure functions of numbers: no I/O, no sky maps (the overlap integral ``I`` comes
from the sky-overlap code, ``I = 4*pi * integral p1*p2 dOmega``, 1 for two all-sky
maps).  Every figure is returned as a :class:`Figure` -- name, value, unit, a
definition a person can read, and whether the value is an upper bound -- the shape
of the ``Significance`` object of ``coincidence.schema.json``.

Formulas
--------
RAVEN, untargeted (Urban 2016, PhD thesis, Univ. of Wisconsin-Milwaukee; the
ligo-raven documentation, "Joint FAR calculation")::

    FAR_t  = FAR_1 * R_2 * (t_hi - t_lo)              temporal coincidence FAR, Hz
    FAR_st = FAR_t / I                                 space-time coincidence FAR, Hz

``FAR_1`` is the false-alarm rate of the significant member (a GW candidate), ``R_2``
the background rate of the partner streams, ``t_hi - t_lo`` the window length.
GW noise events with FAR <= f occur at rate f (that is what a FAR means); each has
``R_2 * (t_hi - t_lo)`` partners in its window on average, so ``FAR_t`` is the rate
of chance coincidences whose first member is at least this significant: an
*estimate* for Poisson backgrounds.  ``FAR_st`` is an *upper bound* on the rate of
chance coincidences ranked at least this high by ``FAR_t / I``: with isotropic
background positions the overlap of unrelated events has mean ``E[I] = 1``
(Ashton et al. 2018, ApJ 860, 6), and the rate of background pairs with
``FAR_t'/I' <= s`` is ``E[min(s I', cap)] <= s E[I'] = s``, with equality when no
search threshold caps it.

RAVEN, targeted (both members sub-threshold, each below its search threshold
``FAR_max``; ligo-raven documentation and its ``coinc_far`` targeted branch)::

    Z      = FAR_1 * FAR_2 * (t_hi - t_lo)            Hz
    Z_max  = FAR_max1 * FAR_max2 * (t_hi - t_lo)     Hz
    FAR_t  = Z * (1 + ln(Z_max / Z))   for Z < Z_max, and Z_max for Z >= Z_max
    FAR_st = FAR_t / I

Under the null hypothesis ``u = FAR_1/FAR_max1`` and ``v = FAR_2/FAR_max2`` are
independent and uniform on [0, 1]; ``P(uv <= z) = z (1 - ln z)`` (the product
distribution), and background pairs occur at rate ``Z_max``, so ``FAR_t`` is the
rate of chance pairs with a joint statistic at most ``Z``: an *estimate*.  It
equals ``Z_max`` times Fisher's combined p-value of ``(u, v)`` (chi-square with 4
degrees of freedom), which the tests check.  ``FAR_st`` is an upper bound by the
same ``E[I] = 1`` argument as above.

N-fold chance coincidences of supernova-neutrino detectors (SNEWS-style): detector
``i`` is ON and emits background triggers as a Poisson process of rate ``r_i``.  A
trigger *opens* a >= N-fold coincidence when at least ``N - 1`` *other* detectors
trigger within ``[t, t + tau]``.  By the Palm (Slivnyak-Mecke) property of Poisson
processes, the rate of such triggers is exactly::

    rate = sum_j r_j * P( #{i != j : detector i triggers in tau} >= N - 1 ),
    with P(detector i triggers in tau) = p_i = 1 - exp(-r_i tau)

(a Poisson-binomial tail).  For ``r_i tau << 1`` it reduces to the textbook
``rate ~= N tau^(N-1) sum_{|S| = N} prod_{i in S} r_i`` (e.g. the two-detector
``2 r_1 r_2 tau``), which is an upper bound of it: ``p_i <= r_i tau`` and the union
bound over (N-1)-subsets.  The tests check the exact rate against a Monte Carlo.

Fisher's method (Fisher 1925, "Statistical Methods for Research Workers", sec. 21.1):
``X = -2 sum ln p_i`` follows chi-square with ``2k`` degrees of freedom for ``k``
independent uniform p-values.  For even degrees of freedom the survival function
has the closed form ``sf = exp(-X/2) sum_{i<k} (X/2)^i / i!``, i.e. the Poisson
CDF ``P(N <= k-1; mu = X/2)``; it is evaluated in log space so that p-values down
to the smallest floats (1e-300 and below) combine without overflow.

Poisson chance probability: ``P(>= 1 event) = 1 - exp(-R * T * f_sky)`` for a
background of rate ``R`` over a time ``T`` and a sky fraction ``f_sky``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from alerts_schema.model import Significance
from crossmatch.config import CrossmatchConfig, Pairing

__all__ = [
    "Figure",
    "chance_probability",
    "compute_figures",
    "fisher_combined_p",
    "fisher_log_p",
    "nfold_chance_rate",
    "nfold_chance_rate_hz",
    "nfold_rate_leading_order_hz",
    "poisson_log_cdf",
    "poisson_p_at_least_one",
    "poisson_sf",
    "targeted_space_time_far",
    "targeted_temporal_far",
    "untargeted_space_time_far",
    "untargeted_temporal_far",
]

WindowLike = float | tuple[float, float] | Sequence[float]

_REFS_RAVEN = ("Urban 2016, PhD thesis, UW-Milwaukee; ligo-raven docs, 'Joint FAR "
               "calculation'")
_NAME_MAX = 64
_DEFINITION_MAX = 2048


@dataclass(frozen=True)
class Figure:
    """One significance figure, shaped as the Coincidence schema's ``Significance``.

    Parameters
    ----------
    name
        Short machine name (``raven_temporal_far``, ``fisher_p`` ...), <= 64 chars.
    value
        The figure, in ``unit``; always finite.
    unit
        ``Hz`` for rates, ``1`` for probabilities.
    definition
        What the figure means and how it was computed, with the inputs' values.
    is_bound
        True when ``value`` is an upper bound rather than an estimate.
    """

    name: str
    value: float
    unit: str
    definition: str
    is_bound: bool

    def __post_init__(self) -> None:
        # The contract (and PostgreSQL's JSONB) refuses non-finite numbers: fail here,
        # where the cause is known, rather than at validation time downstream.
        if not math.isfinite(self.value):
            raise ValueError(f"{self.name}: value {self.value!r} is not finite")
        if len(self.name) > _NAME_MAX or len(self.definition) > _DEFINITION_MAX:
            raise ValueError(f"{self.name}: name or definition too long for the schema")

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready dict (``coincidence.schema.json#/$defs/Significance``)."""
        return {"name": self.name, "value": float(self.value), "unit": self.unit,
                "definition": self.definition, "is_bound": self.is_bound}

    def to_significance(self) -> Significance:
        """The same figure as the pydantic :class:`alerts_schema.Significance`."""
        return Significance(**self.to_dict())


# -- argument checks ----------------------------------------------------------------

def _rate(value: float, what: str) -> float:
    value = float(value)
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"{what} must be a finite rate >= 0 Hz, got {value!r}")
    return value


def _window_length(window_s: WindowLike) -> float:
    """Length in seconds of a window given as its length or as ``(lo, hi)``."""
    if isinstance(window_s, int | float):
        length = float(window_s)
    else:
        lo, hi = (float(x) for x in window_s)
        length = hi - lo
    if not (math.isfinite(length) and length >= 0):
        raise ValueError(f"window must have a finite length >= 0 s, got {window_s!r}")
    return length


def _overlap(value: float) -> float:
    value = float(value)
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"overlap integral I must be finite and > 0, got {value!r} "
                         f"(I = 0 means the localizations exclude each other)")
    return value


def _g(x: float) -> str:
    return f"{x:.4g}"


# -- RAVEN --------------------------------------------------------------------------

def untargeted_temporal_far(far_hz: float, rate_hz: float, window_s: WindowLike) -> Figure:
    """RAVEN untargeted temporal coincidence FAR, ``FAR_1 * R_2 * (t_hi - t_lo)``.

    Parameters
    ----------
    far_hz
        FAR_1: false-alarm rate of the significant member (e.g. the GW), Hz.
    rate_hz
        R_2: background rate of the partner streams, Hz.
    window_s
        The coincidence window, seconds: ``(lo, hi)`` or its length.

    Returns
    -------
    Figure
        ``raven_temporal_far`` in Hz; an estimate (``is_bound`` False).
    """
    far, rate, dt = _rate(far_hz, "FAR_1"), _rate(rate_hz, "R_2"), _window_length(window_s)
    value = far * rate * dt
    return Figure(
        "raven_temporal_far", value, "Hz",
        f"RAVEN untargeted temporal coincidence FAR = FAR_1 x R_2 x (t_hi - t_lo) = "
        f"{_g(far)} Hz x {_g(rate)} Hz x {_g(dt)} s = {_g(value)} Hz: the rate of chance "
        f"coincidences between background events at least as significant as this member "
        f"(FAR_1) and any event of the partner streams (background rate R_2) within the "
        f"window. Poisson estimate ({_REFS_RAVEN}).",
        False)


def untargeted_space_time_far(far_hz: float, rate_hz: float, window_s: WindowLike,
                              overlap: float) -> Figure:
    """RAVEN untargeted space-time coincidence FAR, ``FAR_1 * R_2 * (t_hi - t_lo) / I``.

    Parameters
    ----------
    far_hz, rate_hz, window_s
        As for :func:`untargeted_temporal_far` (Hz, Hz, seconds).
    overlap
        The sky-map overlap integral I (dimensionless, > 0).

    Returns
    -------
    Figure
        ``raven_space_time_far`` in Hz; an upper bound (see the module docstring).

    Raises
    ------
    ValueError
        For I <= 0 (disjoint localizations: no spatial coincidence to rate).
    """
    temporal = untargeted_temporal_far(far_hz, rate_hz, window_s)
    i = _overlap(overlap)
    value = temporal.value / i
    return Figure(
        "raven_space_time_far", value, "Hz",
        f"RAVEN untargeted space-time coincidence FAR = FAR_1 x R_2 x (t_hi - t_lo) / I = "
        f"{_g(temporal.value)} Hz / {_g(i)} = {_g(value)} Hz, with I = 4 pi integral "
        f"p1 p2 dOmega the sky-map overlap (Ashton et al. 2018, ApJ 860, 6; "
        f"{_REFS_RAVEN}). Upper bound on the rate of chance coincidences ranked at least "
        f"this high, assuming isotropic backgrounds (E[I] = 1 for unrelated events).",
        True)


def _targeted_value(far_1: float, far_2: float, max_1: float, max_2: float,
                    dt: float) -> tuple[float, float, float]:
    """``(FAR_t, Z, Z_max)`` of the targeted search, computed through logs."""
    z_max = max_1 * max_2 * dt
    if far_1 == 0 or far_2 == 0 or dt == 0:
        # Z -> 0: Z (1 + ln(Z_max/Z)) -> 0.
        return 0.0, 0.0, z_max
    log_z = math.log(far_1) + math.log(far_2) + math.log(dt)
    log_z_max = math.log(max_1) + math.log(max_2) + math.log(dt)
    if log_z >= log_z_max:
        # Beyond the thresholds every background pair ranks at least this high.
        return z_max, math.exp(log_z), z_max
    return math.exp(log_z) * (1.0 + (log_z_max - log_z)), math.exp(log_z), z_max


def targeted_temporal_far(far_1_hz: float, far_2_hz: float, far_max_1_hz: float,
                          far_max_2_hz: float, window_s: WindowLike) -> Figure:
    """RAVEN targeted temporal coincidence FAR, ``Z (1 + ln(Z_max / Z))``.

    Parameters
    ----------
    far_1_hz, far_2_hz
        False-alarm rates of the two members, Hz.
    far_max_1_hz, far_max_2_hz
        The searches' thresholds FAR_max (> 0 Hz): only members at or below them
        are considered (e.g. GW 2/day, Fermi GBM targeted search 1e-4 Hz).
    window_s
        The coincidence window, seconds: ``(lo, hi)`` or its length.

    Returns
    -------
    Figure
        ``raven_targeted_temporal_far`` in Hz; an estimate.  Clamped to ``Z_max``
        when a member is above its threshold.
    """
    far_1, far_2 = _rate(far_1_hz, "FAR_1"), _rate(far_2_hz, "FAR_2")
    max_1, max_2 = _rate(far_max_1_hz, "FAR_max1"), _rate(far_max_2_hz, "FAR_max2")
    if max_1 == 0 or max_2 == 0:
        raise ValueError("the search thresholds FAR_max must be > 0 Hz")
    dt = _window_length(window_s)
    value, z, z_max = _targeted_value(far_1, far_2, max_1, max_2, dt)
    return Figure(
        "raven_targeted_temporal_far", value, "Hz",
        f"RAVEN targeted temporal coincidence FAR = Z (1 + ln(Z_max/Z)) = {_g(value)} Hz, "
        f"Z = FAR_1 x FAR_2 x (t_hi - t_lo) = {_g(far_1)} Hz x {_g(far_2)} Hz x {_g(dt)} s "
        f"= {_g(z)} Hz, Z_max = FAR_max1 x FAR_max2 x (t_hi - t_lo) = {_g(max_1)} Hz x "
        f"{_g(max_2)} Hz x {_g(dt)} s = {_g(z_max)} Hz (value capped at Z_max): the rate of "
        f"chance pairs of sub-threshold candidates with a product of FARs at most this "
        f"one's, for FARs uniform below their thresholds ({_REFS_RAVEN}).",
        False)


def targeted_space_time_far(far_1_hz: float, far_2_hz: float, far_max_1_hz: float,
                            far_max_2_hz: float, window_s: WindowLike,
                            overlap: float) -> Figure:
    """RAVEN targeted space-time coincidence FAR, the targeted temporal FAR over I.

    Parameters
    ----------
    far_1_hz, far_2_hz, far_max_1_hz, far_max_2_hz, window_s
        As for :func:`targeted_temporal_far`.
    overlap
        The sky-map overlap integral I (dimensionless, > 0).

    Returns
    -------
    Figure
        ``raven_targeted_space_time_far`` in Hz; an upper bound.
    """
    temporal = targeted_temporal_far(far_1_hz, far_2_hz, far_max_1_hz, far_max_2_hz,
                                     window_s)
    i = _overlap(overlap)
    value = temporal.value / i
    return Figure(
        "raven_targeted_space_time_far", value, "Hz",
        f"RAVEN targeted space-time coincidence FAR = Z (1 + ln(Z_max/Z)) / I = "
        f"{_g(temporal.value)} Hz / {_g(i)} = {_g(value)} Hz, with I = 4 pi integral p1 p2 "
        f"dOmega the sky-map overlap ({_REFS_RAVEN}; Ashton et al. 2018). Upper bound on "
        f"the rate of chance pairs ranked at least this high, assuming isotropic "
        f"backgrounds (E[I] = 1 for unrelated events).",
        True)


# -- N-fold coincidences ------------------------------------------------------------

def _poisson_binomial(probabilities: Sequence[float]) -> list[float]:
    """``P(K = k)`` for ``K`` a sum of independent Bernoulli(p_i), k = 0..len."""
    dist = [1.0]
    for p in probabilities:
        q = 1.0 - p
        nxt = [0.0] * (len(dist) + 1)
        for k, mass in enumerate(dist):
            nxt[k] += mass * q
            nxt[k + 1] += mass * p
        dist = nxt
    return dist


def nfold_chance_rate_hz(rates_hz: Sequence[float], n: int, window_s: float) -> float:
    """Rate (Hz) of triggers that open a chance >= n-fold coincidence.

    Parameters
    ----------
    rates_hz
        Background trigger rate of each detector that is ON, Hz.
    n
        Number of distinct detectors required (>= 1).
    window_s
        tau, seconds: the other detectors must trigger within ``[t, t + tau]``.

    Returns
    -------
    float
        ``sum_j r_j P(at least n-1 of the others trigger within tau)``, Hz (module
        docstring); 0.0 when fewer than ``n`` detectors are ON.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n!r}")
    tau = _window_length(window_s)
    rates = [_rate(r, "detector rate") for r in rates_hz]
    if len(rates) < n:
        return 0.0
    # 1 - exp(-x) without cancellation for the tiny r*tau of real detectors.
    probs = [-math.expm1(-r * tau) for r in rates]
    total = 0.0
    for j, r_j in enumerate(rates):
        if r_j == 0:
            continue
        others = _poisson_binomial(probs[:j] + probs[j + 1:])
        # Sum the tail directly (all terms positive): no 1 - CDF cancellation.
        total += r_j * math.fsum(others[n - 1:])
    return total


def nfold_rate_leading_order_hz(rates_hz: Sequence[float], n: int, window_s: float) -> float:
    """Small-``r tau`` rate of chance >= n-fold coincidences, ``n tau^(n-1) e_n(r)``, Hz.

    ``e_n`` is the elementary symmetric polynomial (the sum over n-subsets of the
    product of their rates).  It is an upper bound of :func:`nfold_chance_rate_hz`
    and its limit when every ``r_i tau << 1``.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n!r}")
    tau = _window_length(window_s)
    rates = [_rate(r, "detector rate") for r in rates_hz]
    e = [1.0] + [0.0] * n
    for r in rates:
        for k in range(n, 0, -1):
            e[k] += r * e[k - 1]
    return n * tau ** (n - 1) * e[n]


def nfold_chance_rate(detector_rates_hz: Mapping[str, float], n: int, window_s: float,
                      on: Iterable[str] | None = None) -> Figure:
    """The N-fold chance-coincidence rate of SN neutrino detectors, as a :class:`Figure`.

    Parameters
    ----------
    detector_rates_hz
        Background trigger rate of each detector, Hz.
    n
        The coincidence's multiplicity: the rate is that of >= n-fold ones.
    window_s
        tau, seconds (10 s for SNEWS).
    on
        Detectors that were ON (from their heartbeats); None: all of
        ``detector_rates_hz``.  Each must have a rate.

    Returns
    -------
    Figure
        ``nfold_chance_rate`` in Hz; an estimate for Poisson backgrounds.
    """
    names = sorted(detector_rates_hz) if on is None else sorted(set(on))
    missing = [d for d in names if d not in detector_rates_hz]
    if missing:
        raise ValueError(f"no background rate for detector(s) {', '.join(missing)}")
    rates = [detector_rates_hz[d] for d in names]
    tau = _window_length(window_s)
    value = nfold_chance_rate_hz(rates, n, tau)
    approx = nfold_rate_leading_order_hz(rates, n, tau) if names else 0.0
    listed = ", ".join(f"{d} {_g(detector_rates_hz[d])} Hz" for d in names) or "none"
    return Figure(
        "nfold_chance_rate", value, "Hz",
        f"Rate of chance coincidences of >= {n} distinct SN neutrino detectors within "
        f"tau = {_g(tau)} s, given the {len(names)} detector(s) ON and their background "
        f"trigger rates ({listed})"[:1200]
        + f": sum_j r_j P(>= {n - 1} others trigger within tau), p_i = 1 - exp(-r_i tau) "
          f"(Poisson backgrounds, exact) = {_g(value)} Hz; leading order "
          f"{n} tau^{n - 1} sum over {n}-subsets of prod r_i = {_g(approx)} Hz.",
        False)


# -- Fisher's method and Poisson ------------------------------------------------------

def poisson_log_cdf(k: int, mu: float) -> float:
    """``ln P(N <= k)`` for ``N ~ Poisson(mu)``, computed in log space.

    Parameters
    ----------
    k
        Largest count included (>= 0).
    mu
        The mean (>= 0, finite).
    """
    if k < 0:
        return -math.inf
    mu = _rate(mu, "Poisson mean")
    if mu == 0:
        return 0.0
    log_mu = math.log(mu)
    terms = [i * log_mu - math.lgamma(i + 1) for i in range(k + 1)]
    top = max(terms)
    log_sum = top + math.log(math.fsum(math.exp(t - top) for t in terms))
    return min(0.0, -mu + log_sum)


def poisson_sf(k: int, mu: float) -> float:
    """``P(N >= k)`` for ``N ~ Poisson(mu)``, accurate in the far tail.

    Parameters
    ----------
    k
        Smallest count included.
    mu
        The mean (>= 0, finite).
    """
    if k <= 0:
        return 1.0
    mu = _rate(mu, "Poisson mean")
    if mu == 0:
        return 0.0
    if mu >= k:
        # The CDF below k is at most ~1/2 here: the complement loses nothing.
        return -math.expm1(poisson_log_cdf(k - 1, mu))
    # Sum the tail itself: terms shrink by mu/(i+1) < 1, so it converges.
    log_term = -mu + k * math.log(mu) - math.lgamma(k + 1)
    term, total, i = math.exp(log_term), 0.0, k
    if term == 0.0:
        return 0.0
    while term > total * 1e-17:
        total += term
        i += 1
        term *= mu / i
    return min(1.0, total)


def poisson_p_at_least_one(rate_hz: float, duration_s: float) -> float:
    """``P(>= 1 event) = 1 - exp(-rate * duration)`` for a Poisson process (no units)."""
    mu = _rate(rate_hz, "rate") * _window_length(duration_s)
    return -math.expm1(-mu)


def fisher_log_p(p_values: Iterable[float]) -> float:
    """Natural log of Fisher's combined p-value.

    Parameters
    ----------
    p_values
        Independent p-values in [0, 1] (at least one).

    Returns
    -------
    float
        ``ln sf_chi2(X; 2k)``, ``X = -2 sum ln p_i``: ``-X/2 + ln sum_{i<k} (X/2)^i/i!``;
        ``-inf`` when a p-value is 0, 0.0 when all are 1.
    """
    ps = [float(p) for p in p_values]
    if not ps:
        raise ValueError("Fisher's method needs at least one p-value")
    for p in ps:
        if not (0.0 <= p <= 1.0):  # also refuses NaN
            raise ValueError(f"p-value {p!r} is not in [0, 1]")
    if any(p == 0.0 for p in ps):
        return -math.inf
    half_x = -math.fsum(math.log(p) for p in ps)
    if half_x == 0.0:
        return 0.0
    # sf of chi-square with 2k dof at X equals P(Poisson(X/2) <= k - 1).
    return poisson_log_cdf(len(ps) - 1, half_x)


def fisher_combined_p(p_values: Iterable[float]) -> Figure:
    """Fisher's combined p-value of independent p-values, as a :class:`Figure`.

    Returns
    -------
    Figure
        ``fisher_p`` (unit ``1``); exact for independent, uniform p-values.  The
        definition also states log10 of the value, which survives when the value
        itself underflows to 0.
    """
    ps = [float(p) for p in p_values]
    log_p = fisher_log_p(ps)
    value = math.exp(log_p)
    log10 = "-inf" if log_p == -math.inf else _g(log_p / math.log(10))
    shown = ", ".join(_g(p) for p in ps[:16]) + (" ..." if len(ps) > 16 else "")
    x_text = "inf" if log_p == -math.inf else _g(-2 * math.fsum(math.log(p) for p in ps))
    return Figure(
        "fisher_p", value, "1",
        f"Fisher's combined p-value of {len(ps)} independent p-values ({shown}): "
        f"X = -2 sum ln p_i = {x_text}"
        f", p = P(chi2 with {2 * len(ps)} dof >= X) = exp(-X/2) sum_(i<{len(ps)}) "
        f"(X/2)^i / i! = {_g(value)} (log10 p = {log10}) (Fisher 1925).",
        False)


def chance_probability(rate_hz: float, duration_s: WindowLike,
                       sky_fraction: float | None = None) -> Figure:
    """Probability of >= 1 unrelated event of a stream in a window and sky region.

    Parameters
    ----------
    rate_hz
        Background rate of the stream, Hz (all sky).
    duration_s
        The time searched, seconds (a length or ``(lo, hi)``).
    sky_fraction
        Fraction of the sky searched (credible-region area / 41,253 deg^2), in
        [0, 1]; None: the whole sky, and the value is then an upper bound.

    Returns
    -------
    Figure
        ``chance_probability`` (unit ``1``): ``1 - exp(-R T f_sky)``.
    """
    rate, dt = _rate(rate_hz, "rate"), _window_length(duration_s)
    bound = sky_fraction is None
    f_sky = 1.0 if sky_fraction is None else float(sky_fraction)
    if not (0.0 <= f_sky <= 1.0):
        raise ValueError(f"sky_fraction must be in [0, 1], got {sky_fraction!r}")
    mu = rate * dt * f_sky
    value = -math.expm1(-mu)
    sky = ("the whole sky (no credible-region area given, so an upper bound)" if bound
           else f"sky fraction f_sky = {_g(f_sky)}")
    return Figure(
        "chance_probability", value, "1",
        f"Poisson probability of at least one unrelated event: 1 - exp(-R T f_sky) with "
        f"background rate R = {_g(rate)} Hz, time T = {_g(dt)} s and {sky}; expected "
        f"number R T f_sky = {_g(mu)}.",
        bound)


# -- per pairing ----------------------------------------------------------------------

def _closeness_window(window_s: tuple[float, float], offset_s: float) -> float:
    """Length of the part of the window at least as close to 0 as ``offset_s``."""
    reach = abs(offset_s)
    lo, hi = window_s
    return max(0.0, min(hi, reach) - max(lo, -reach))


def compute_figures(pairing: Pairing, config: CrossmatchConfig, *,
                    far_a_hz: float | None = None, far_b_hz: float | None = None,
                    overlap: float | None = None, offset_s: float | None = None,
                    sky_fraction: float | None = None,
                    p_values: Sequence[float] | None = None,
                    detectors_on: Iterable[str] | None = None,
                    multiplicity: int | None = None) -> list[Figure]:
    """The figures ``pairing.significance`` asks for, from what the engine knows.

    A figure whose inputs are missing (a member without ``far_hz``, no overlap for
    a space-time figure, I = 0, no heartbeat information) is left out rather than
    guessed; the others are returned in the configured order.

    Parameters
    ----------
    pairing, config
        The pairing that matched and the configuration it came from (rates).
    far_a_hz, far_b_hz
        ``far_hz`` of the side-a and side-b members, Hz.
    overlap
        Sky-map overlap integral I of the members (dimensionless).
    offset_s
        ``t_b - t_a``, seconds: ``chance_probability`` counts background events at
        least this close in time within the window (the whole window when None).
    sky_fraction
        Fraction of the sky in side a's credible region, for ``chance_probability``.
    p_values
        Member p-values for ``fisher_p``; when None a targeted pairing uses
        ``FAR / FAR_max`` of each member, uniform under the null hypothesis.
    detectors_on
        Detectors ON at the time (heartbeats), for ``nfold_chance_rate``.
    multiplicity
        Distinct detectors in the nfold coincidence (default ``pairing.nfold_min``).

    Returns
    -------
    list of Figure
    """
    figures: list[Figure] = []
    thresholds = pairing.targeted_far_max_hz
    far_1 = far_a_hz if pairing.far_from == "a" else far_b_hz
    other_rate = (config.side_rate_hz(pairing, "b" if pairing.far_from == "a" else "a")
                  if pairing.far_from is not None else 0.0)
    usable_overlap = overlap is not None and math.isfinite(overlap) and overlap > 0
    for name in pairing.significance:
        if name == "raven_temporal_far" and far_1 is not None:
            figures.append(untargeted_temporal_far(far_1, other_rate, pairing.window_s))
        elif name == "raven_space_time_far" and far_1 is not None and usable_overlap:
            assert overlap is not None
            figures.append(untargeted_space_time_far(far_1, other_rate, pairing.window_s,
                                                     overlap))
        elif (name.startswith("raven_targeted") and thresholds is not None
              and far_a_hz is not None and far_b_hz is not None):
            if name == "raven_targeted_temporal_far":
                figures.append(targeted_temporal_far(far_a_hz, far_b_hz, *thresholds,
                                                     pairing.window_s))
            elif usable_overlap:
                assert overlap is not None
                figures.append(targeted_space_time_far(far_a_hz, far_b_hz, *thresholds,
                                                       pairing.window_s, overlap))
        elif name == "nfold_chance_rate" and detectors_on is not None:
            on = sorted(set(detectors_on))
            rates = {d: config.rate_hz(pairing.rate_a, detector=d) for d in on}
            n = multiplicity if multiplicity is not None else (pairing.nfold_min or 2)
            figures.append(nfold_chance_rate(rates, n, pairing.window_s[1]))
        elif name == "fisher_p":
            ps: Sequence[float] | None = p_values
            if ps is None and thresholds is not None and far_a_hz is not None \
                    and far_b_hz is not None:
                ps = [min(1.0, far_a_hz / thresholds[0]), min(1.0, far_b_hz / thresholds[1])]
            if ps:
                figures.append(fisher_combined_p(ps))
        elif name == "chance_probability":
            span = (pairing.duration_s if offset_s is None
                    else _closeness_window(pairing.window_s, offset_s))
            figures.append(chance_probability(config.side_rate_hz(pairing, "b"), span,
                                              sky_fraction))
    return figures
