"""Calibration of false-coincidence rates by time scrambling.

What ``mmbroker crossmatch calibrate`` reports, per pairing: how often the
pairing's streams coincide *by chance*, measured and predicted.

* **Predicted** (:func:`predicted_rate_hz`): from the configured background rates.
  For two independent Poisson streams of rates ``R_a`` and ``R_b`` the rate of
  pairs with ``lo <= t_b - t_a <= hi`` is ``R_a * R_b * (hi - lo)`` (Hz): each
  side-a event has on average ``R_b (hi - lo)`` side-b events in its window.  A
  spatial gate that a random pair passes with probability ``f_sky`` multiplies it
  by ``f_sky``.  For an N-fold pairing it is the exact N-fold rate of
  :func:`crossmatch.significance.nfold_chance_rate_hz`.
* **Observed** (:func:`calibrate_pair`, :func:`calibrate_nfold`): the archived
  alerts are time-scrambled -- each stream is rotated on a circle of length
  ``span_s`` (the archive's time span) by a seeded random offset at least ten
  window lengths from zero, which destroys every real coincidence but keeps each
  stream's rate and clustering -- and the coincidences are counted; the count over
  all scrambles divided by ``n_scrambles * span_s`` is the observed rate.
* **Expected** from the data's own rates (``N_a N_b (hi - lo) / span^2``): what the
  observed rate should be if the streams are Poisson at their measured rates, so
  that a wrong configured rate (predicted off) and a non-Poisson stream (observed
  off) can be told apart.

All functions are pure: the broker feeds them archived alerts (or times), and a
seeded :class:`numpy.random.Generator` makes every result reproducible.
:func:`synthetic_background` draws Poisson streams at the configured rates for
tests and demonstrations.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from alerts_schema.model import Alert
from crossmatch.config import CrossmatchConfig, Pairing
from crossmatch.events import event_key, order, supersedes
from crossmatch.significance import nfold_chance_rate_hz

__all__ = [
    "CalibrationResult",
    "Gate",
    "calibrate_alerts",
    "calibrate_nfold",
    "calibrate_pair",
    "count_nfold",
    "count_pairs",
    "min_scramble_shift_s",
    "poisson_times",
    "predicted_pair_rate_hz",
    "predicted_rate_hz",
    "scramble",
    "synthetic_background",
]

Gate = Callable[[NDArray[np.intp], NDArray[np.intp]], NDArray[np.bool_]]
"""A vectorized spatial gate: given index arrays into side a and side b (the
arrays as passed in), True where the pair passes."""

SCRAMBLE_FACTOR = 10.0
"""Scramble offsets keep at least this many window extents away from zero lag."""


# -- predictions ------------------------------------------------------------------------

def predicted_pair_rate_hz(rate_a_hz: float, rate_b_hz: float, window_s: tuple[float, float],
                           sky_fraction: float = 1.0) -> float:
    """Chance-pair rate ``R_a R_b (hi - lo) f_sky`` of two Poisson streams, Hz.

    Parameters
    ----------
    rate_a_hz, rate_b_hz
        Background rates of the two sides, Hz.
    window_s
        ``(lo, hi)``: the window on ``t_b - t_a``, seconds.
    sky_fraction
        Probability that a random pair passes the spatial gate (1 when time-only).
    """
    lo, hi = window_s
    if hi < lo:
        raise ValueError(f"window ({lo}, {hi}) s has hi before lo")
    return float(rate_a_hz) * float(rate_b_hz) * (hi - lo) * float(sky_fraction)


def predicted_rate_hz(pairing: Pairing, config: CrossmatchConfig, *,
                      detectors: Iterable[str] | None = None,
                      sky_fraction: float = 1.0) -> float:
    """Chance-coincidence rate of ``pairing`` from the configured background rates, Hz.

    Parameters
    ----------
    pairing, config
        The pairing and the configuration holding its rate keys.
    detectors
        For an nfold pairing, the detectors that were ON (required).
    sky_fraction
        For a pair, the probability that a random pair passes the spatial gate.
    """
    if pairing.kind == "nfold":
        if detectors is None:
            raise ValueError(f"{pairing.name}: an nfold prediction needs the detectors ON")
        rates = [config.rate_hz(pairing.rate_a, detector=d) for d in sorted(set(detectors))]
        return nfold_chance_rate_hz(rates, pairing.nfold_min or 2, pairing.window_s[1])
    return predicted_pair_rate_hz(config.side_rate_hz(pairing, "a"),
                                  config.side_rate_hz(pairing, "b"), pairing.window_s,
                                  sky_fraction)


# -- counting ---------------------------------------------------------------------------

def _times(values: ArrayLike) -> NDArray[np.float64]:
    array = np.asarray(values, dtype=np.float64).ravel()
    if array.size and not np.all(np.isfinite(array)):
        raise ValueError("times must be finite seconds")
    return array


def _check_circle(times: NDArray[np.float64], span_s: float, what: str) -> None:
    if times.size and (times.min() < 0 or times.max() >= span_s):
        raise ValueError(f"{what}: times must lie in [0, span_s = {span_s}) s")


def count_pairs(times_a: ArrayLike, times_b: ArrayLike, window_s: tuple[float, float], *,
                span_s: float | None = None, gate: Gate | None = None) -> int:
    """Number of pairs ``(i, j)`` with ``lo <= t_b[j] - t_a[i] <= hi`` (ends inclusive).

    Parameters
    ----------
    times_a, times_b
        Event times of the two sides, seconds.
    window_s
        ``(lo, hi)``, seconds.
    span_s
        When given, times live on a circle of this length (seconds) and differences
        wrap around it, as after :func:`scramble`; every time must be in
        ``[0, span_s)`` and the window shorter than ``span_s``.
    gate
        Optional spatial gate applied to each time-coincident pair.

    Returns
    -------
    int
    """
    a, b = _times(times_a), _times(times_b)
    lo, hi = (float(x) for x in window_s)
    if hi < lo:
        raise ValueError(f"window ({lo}, {hi}) s has hi before lo")
    if a.size == 0 or b.size == 0:
        return 0
    order = np.argsort(a, kind="stable")
    sorted_a = a[order]
    if span_s is not None:
        # Each a appears at t - span, t and t + span, so that a window reaching past
        # either end of the circle finds its partners; one image per pair as long as
        # the window extent stays below the span.  Image k stands for a time
        # difference t_b - t_a + shifts[k].
        if hi - lo >= span_s or max(abs(lo), abs(hi)) >= span_s:
            raise ValueError(f"window ({lo}, {hi}) s does not fit on a circle of {span_s} s")
        _check_circle(a, span_s, "side a")
        _check_circle(b, span_s, "side b")
        images = np.concatenate([sorted_a - span_s, sorted_a, sorted_a + span_s])
        shifts = np.array([span_s, 0.0, -span_s])
    else:
        images = sorted_a
        shifts = np.zeros(1)
    # The window is on dt = t_b - t_a, as Pairing.in_window computes it.  Searching
    # for t_a in [t_b - hi, t_b - lo] rounds differently by an ulp or so, so the
    # search is widened by a tolerance, partners well inside are counted at once,
    # and the few within the tolerance of an edge are decided by dt itself.
    scale = float(np.max(np.abs(images))) + abs(lo) + abs(hi)
    tol = 8.0 * np.finfo(np.float64).eps * (np.abs(b) + scale)
    outer_lo = np.searchsorted(images, b - hi - tol, side="left")
    outer_hi = np.searchsorted(images, b - lo + tol, side="right")
    inner_lo = np.searchsorted(images, b - hi + tol, side="left")
    inner_hi = np.searchsorted(images, b - lo - tol, side="right")

    def exact(rows: NDArray[np.intp], cols: NDArray[np.intp]) -> NDArray[np.bool_]:
        dt = (b[rows] - sorted_a[cols % a.size]) + shifts[cols // a.size]
        inside: NDArray[np.bool_] = (lo <= dt) & (dt <= hi)
        return inside

    if gate is None:
        sure = inner_hi > inner_lo
        certain = int(np.where(sure, inner_hi - inner_lo, 0).sum())
        # Undecided: [outer_lo, inner_lo) and [inner_hi, outer_hi), or all of
        # [outer_lo, outer_hi) when nothing is surely inside.
        first_stop = np.where(sure, inner_lo, outer_hi)
        second_start = np.where(sure, inner_hi, outer_hi)
        rows1, cols1 = _expand(outer_lo, first_stop)
        rows2, cols2 = _expand(second_start, outer_hi)
        return (certain + int(np.count_nonzero(exact(rows1, cols1)))
                + int(np.count_nonzero(exact(rows2, cols2))))
    rows, cols = _expand(outer_lo, outer_hi)
    keep = exact(rows, cols)
    rows, cols = rows[keep], cols[keep]
    if rows.size == 0:
        return 0
    return int(np.count_nonzero(gate(order[cols % a.size], rows)))


def _expand(starts: NDArray[np.intp], stops: NDArray[np.intp]
            ) -> tuple[NDArray[np.intp], NDArray[np.intp]]:
    """Row and column indices of the ranges ``[starts[j], stops[j])``, flattened."""
    counts = np.maximum(stops - starts, 0)
    total = int(counts.sum())
    rows = np.repeat(np.arange(starts.size, dtype=np.intp), counts)
    offsets = np.arange(total, dtype=np.intp) - np.repeat(np.cumsum(counts) - counts, counts)
    return rows, np.repeat(starts, counts) + offsets


def count_nfold(times_by_detector: Mapping[str, ArrayLike], n_min: int, window_s: float, *,
                span_s: float | None = None) -> int:
    """Number of triggers that open a >= ``n_min``-fold coincidence.

    A trigger at ``t`` opens one when triggers of at least ``n_min`` distinct
    detectors (its own included) lie in ``[t, t + tau]``, ends inclusive: the
    quantity whose rate :func:`crossmatch.significance.nfold_chance_rate_hz` gives.

    Parameters
    ----------
    times_by_detector
        Trigger times of each detector, seconds.
    n_min
        Fewest distinct detectors.
    window_s
        tau, seconds.
    span_s
        When given, times wrap around a circle of this length (see :func:`count_pairs`).
    """
    tau = float(window_s)
    streams = [np.sort(_times(t)) for t in times_by_detector.values()]
    streams = [s for s in streams if s.size]
    if len(streams) < n_min or n_min < 1:
        return 0
    if span_s is not None:
        if tau >= span_s:
            raise ValueError(f"tau {tau} s does not fit on a circle of {span_s} s")
        for s in streams:
            _check_circle(s, span_s, "detector")
        images = [np.concatenate([s, s + span_s]) for s in streams]
    else:
        images = streams
    starts = np.concatenate(streams)
    present = np.zeros(starts.size, dtype=np.int64)
    for img in images:
        present += (np.searchsorted(img, starts, side="left")
                    < np.searchsorted(img, starts + tau, side="right"))
    return int(np.count_nonzero(present >= n_min))


# -- scrambling -------------------------------------------------------------------------

def min_scramble_shift_s(window_s: tuple[float, float]) -> float:
    """Smallest scramble offset for a window, seconds: ten times its reach."""
    lo, hi = window_s
    return SCRAMBLE_FACTOR * max(hi - lo, abs(lo), abs(hi), 1.0)


def scramble(times: ArrayLike, span_s: float, rng: np.random.Generator,
             min_shift_s: float) -> NDArray[np.float64]:
    """Rotate ``times`` on the circle ``[0, span_s)`` by a random offset.

    The offset is uniform in ``[min_shift_s, span_s - min_shift_s]``: far from zero
    lag either way round, so no real coincidence survives, while the stream's rate
    and its own time structure are kept.

    Parameters
    ----------
    times
        Times in ``[0, span_s)``, seconds.
    span_s
        Circumference, seconds.
    rng
        The seeded generator.
    min_shift_s
        Least distance of the offset from zero lag, seconds.
    """
    t = _times(times)
    if span_s <= 2 * min_shift_s:
        raise ValueError(f"span {span_s} s is too short to scramble by at least "
                         f"{min_shift_s} s each way; calibrate on a longer archive")
    shift = rng.uniform(min_shift_s, span_s - min_shift_s)
    shifted = np.mod(t + shift, span_s)
    # np.mod can round up to span_s itself for times just below it.
    shifted[shifted >= span_s] = 0.0
    return shifted


# -- results ----------------------------------------------------------------------------

@dataclass(frozen=True)
class CalibrationResult:
    """Observed against predicted chance-coincidence rate of one pairing.

    Attributes
    ----------
    pairing, kind
        The pairing's name and kind.
    span_s
        Length of the scrambled time circle, seconds.
    n_scrambles
        Number of independent scrambles.
    events
        Events used per side (``a``, ``b``) or per detector (nfold).
    observed_count
        Coincidences counted over all scrambles.
    observed_rate_hz
        ``observed_count / (n_scrambles * span_s)``, Hz; None when the span was too
        short to scramble the window (then ``n_scrambles`` is 0 and a note says so).
    expected_rate_hz
        Chance rate expected from the events' own rates, Hz.
    predicted_rate_hz
        Chance rate from the configured background rates, Hz; None when not given.
    spatial_gate
        Whether a spatial gate was applied (False: time-only counts).
    sky_fraction
        Gate pass probability assumed in the expected and predicted rates.
    """

    pairing: str
    kind: str
    span_s: float
    n_scrambles: int
    events: dict[str, int]
    observed_count: int
    observed_rate_hz: float | None
    expected_rate_hz: float
    predicted_rate_hz: float | None
    spatial_gate: bool = False
    sky_fraction: float = 1.0
    notes: tuple[str, ...] = field(default_factory=tuple)
    """Caveats for the reader (time-only counts, detectors assumed ON, span too short)."""

    @property
    def ratio(self) -> float | None:
        """observed / predicted; None without an observation or a positive prediction."""
        if self.observed_rate_hz is None or not self.predicted_rate_hz:
            return None
        return self.observed_rate_hz / self.predicted_rate_hz

    @property
    def relative_error(self) -> float | None:
        """Poisson 1-sigma relative uncertainty of the observed rate (an underestimate
        when events are shared between coincidences); None for zero counts."""
        return 1.0 / math.sqrt(self.observed_count) if self.observed_count else None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary, with ``ratio`` and ``relative_error``."""
        out = asdict(self)
        out["notes"] = list(self.notes)
        out["ratio"] = self.ratio
        out["relative_error"] = self.relative_error
        return out

    def with_notes(self, notes: Sequence[str]) -> CalibrationResult:
        """A copy of the result with ``notes`` appended."""
        return replace(self, notes=(*self.notes, *notes)) if notes else self


def _too_short(span_s: float, shift: float) -> str | None:
    if span_s > 2 * shift:
        return None
    return (f"not scrambled: the span of {span_s:.6g} s is too short for offsets of at least "
            f"{shift:.6g} s each way (ten window extents); calibrate on a longer archive")


def calibrate_pair(pairing: Pairing, times_a: ArrayLike, times_b: ArrayLike, *,
                   span_s: float, n_scrambles: int = 100, seed: int = 0,
                   predicted_rate_hz: float | None = None, gate: Gate | None = None,
                   sky_fraction: float = 1.0) -> CalibrationResult:
    """Time-scramble side b against side a and count chance coincidences.

    Parameters
    ----------
    pairing
        A ``pair`` pairing (its window is used).
    times_a, times_b
        Event times in ``[0, span_s)``, seconds.
    span_s
        Length of the observed time span, seconds.
    n_scrambles
        Number of scrambles (>= 1); more lowers the scramble noise.
    seed
        Seed of the generator.
    predicted_rate_hz
        The configured prediction to compare with (Hz), e.g. from
        :func:`predicted_rate_hz`.
    gate, sky_fraction
        Optional spatial gate and the pass probability it is expected to have.
    """
    if pairing.kind != "pair":
        raise ValueError(f"{pairing.name} is not a pair pairing")
    if n_scrambles < 1:
        raise ValueError("n_scrambles must be >= 1")
    a, b = _times(times_a), _times(times_b)
    rng = np.random.default_rng(seed)
    shift = min_scramble_shift_s(pairing.window_s)
    expected = (a.size * b.size * pairing.duration_s * sky_fraction) / (span_s * span_s)
    short = _too_short(span_s, shift)
    runs = 0 if short else n_scrambles
    total = 0
    for _ in range(runs):
        total += count_pairs(a, scramble(b, span_s, rng, shift), pairing.window_s,
                             span_s=span_s, gate=gate)
    return CalibrationResult(
        pairing=pairing.name, kind="pair", span_s=span_s, n_scrambles=runs,
        events={"a": int(a.size), "b": int(b.size)}, observed_count=total,
        observed_rate_hz=total / (runs * span_s) if runs else None,
        expected_rate_hz=expected, predicted_rate_hz=predicted_rate_hz,
        spatial_gate=gate is not None, sky_fraction=sky_fraction,
        notes=(short,) if short else ())


def calibrate_nfold(pairing: Pairing, times_by_detector: Mapping[str, ArrayLike], *,
                    span_s: float, n_scrambles: int = 100, seed: int = 0,
                    predicted_rate_hz: float | None = None) -> CalibrationResult:
    """Scramble each detector independently and count chance N-fold coincidences.

    Parameters are as for :func:`calibrate_pair`, with one time array per detector.
    """
    if pairing.kind != "nfold":
        raise ValueError(f"{pairing.name} is not an nfold pairing")
    if n_scrambles < 1:
        raise ValueError("n_scrambles must be >= 1")
    streams = {name: _times(t) for name, t in sorted(times_by_detector.items())}
    rng = np.random.default_rng(seed)
    shift = min_scramble_shift_s(pairing.window_s)
    n_min, tau = pairing.nfold_min or 2, pairing.window_s[1]
    names = list(streams)
    short = _too_short(span_s, shift)
    runs = 0 if short else n_scrambles
    total = 0
    for _ in range(runs):
        # Rotating every detector but the first is as good as rotating all of them.
        shuffled = {name: (streams[name] if i == 0 else
                           scramble(streams[name], span_s, rng, shift))
                    for i, name in enumerate(names)}
        total += count_nfold(shuffled, n_min, tau, span_s=span_s)
    expected = nfold_chance_rate_hz([t.size / span_s for t in streams.values()], n_min, tau)
    return CalibrationResult(
        pairing=pairing.name, kind="nfold", span_s=span_s, n_scrambles=runs,
        events={name: int(t.size) for name, t in streams.items()}, observed_count=total,
        observed_rate_hz=total / (runs * span_s) if runs else None,
        expected_rate_hz=expected, predicted_rate_hz=predicted_rate_hz,
        notes=(short,) if short else ())


# -- from archived alerts -------------------------------------------------------------------

def _latest_revisions(alerts: Iterable[Alert], role: str) -> list[Alert]:
    """One alert per event (:func:`~crossmatch.events.event_key`, whatever transport
    brought it): its newest revision, unless retracted.

    Every revision of an event is archived; counting each would multiply the
    event's weight in the background, and a retracted event is no event.
    """
    latest: dict[tuple[str, str], Alert] = {}
    for alert in alerts:
        if alert.role != role:
            continue
        key = event_key(alert)
        kept = latest.get(key)
        if kept is None or supersedes(order(alert), order(kept)):
            latest[key] = alert
    return [a for a in latest.values() if a.alert_type != "retraction"]


def calibrate_alerts(config: CrossmatchConfig, alerts: Iterable[Alert], *,
                     n_scrambles: int = 100, seed: int = 0, span_s: float | None = None,
                     pairings: Sequence[str] | None = None, role: str = "observation",
                     spatial_gate: Callable[[Pairing, Alert, Alert], bool] | None = None,
                     sky_fractions: Mapping[str, float] | None = None,
                     progress: Callable[[str], None] | None = None,
                     ) -> list[CalibrationResult]:
    """Calibrate every pairing (or those named) on archived alerts.

    Parameters
    ----------
    config
        The configuration whose pairings and rates are checked.
    alerts
        Archived alerts, any revisions; only ``role`` alerts are used, one per
        event (its latest revision), retracted events dropped.
    n_scrambles, seed
        Scrambles per pairing and the seed.  Each pairing draws from its own
        generator, seeded by :func:`pairing_seed` from ``seed`` and its name, so its
        result does not depend on which other pairings are run alongside it.
    span_s
        Length of the time span, seconds; default: first to last trigger time
        plus 1 s.
    pairings
        Names of the pairings to run; None for all.
    role
        Alert role to calibrate on ("observation"; never mixed with tests).
    spatial_gate
        ``(pairing, alert_a, alert_b) -> bool`` applied to time-coincident pairs
        of spatial pairings; None counts in time only.
    sky_fractions
        Per pairing name, the gate pass probability assumed in the predictions.
    progress
        Called with each pairing's name as its turn comes (for a progress bar).

    Returns
    -------
    list of CalibrationResult
        In configuration order.
    """
    events = _latest_revisions(alerts, role)
    selected = [p for p in config.pairings if pairings is None or p.name in pairings]
    if pairings is not None:
        unknown = sorted(set(pairings) - {p.name for p in config.pairings})
        if unknown:
            raise KeyError(f"no pairing named {', '.join(unknown)}")
    if not events:
        raise ValueError(f"no {role} alerts to calibrate on")
    stamps = np.array([a.trigger_time.timestamp() for a in events], dtype=np.float64)
    t0 = float(stamps.min())
    span = float(span_s) if span_s is not None else float(stamps.max() - t0) + 1.0
    rel = np.minimum(stamps - t0, np.nextafter(span, 0.0))
    fractions = sky_fractions or {}
    results = []
    for pairing in selected:
        if progress is not None:
            progress(pairing.name)
        in_a = np.array([pairing.a.matches(e) for e in events], dtype=bool)
        notes: list[str] = []
        if pairing.kind == "nfold":
            by_detector: dict[str, list[float]] = {}
            for i in np.flatnonzero(in_a):
                detector = str(getattr(events[i], pairing.group_by) or "")
                by_detector.setdefault(detector, []).append(float(rel[i]))
            predicted = predicted_rate_hz(pairing, config, detectors=by_detector)
            notes.append("predicted with every detector present in the archive taken as ON "
                         "throughout")
            results.append(calibrate_nfold(
                pairing, by_detector, span_s=span, n_scrambles=n_scrambles,
                seed=pairing_seed(seed, pairing.name),
                predicted_rate_hz=predicted).with_notes(notes))
            continue
        assert pairing.b is not None
        in_b = np.array([pairing.b.matches(e) for e in events], dtype=bool)
        idx_a, idx_b = np.flatnonzero(in_a), np.flatnonzero(in_b)
        gate: Gate | None = None
        fraction = fractions.get(pairing.name, 1.0)
        if pairing.spatial and spatial_gate is not None:
            gate = _alert_gate(spatial_gate, pairing, [events[i] for i in idx_a],
                               [events[i] for i in idx_b])
        elif pairing.spatial:
            notes.append("time-only counts: no spatial gate given")
        predicted = predicted_rate_hz(pairing, config, sky_fraction=fraction)
        result = calibrate_pair(pairing, rel[idx_a], rel[idx_b], span_s=span,
                                n_scrambles=n_scrambles,
                                seed=pairing_seed(seed, pairing.name),
                                predicted_rate_hz=predicted, gate=gate, sky_fraction=fraction)
        results.append(result.with_notes(notes))
    return results


def pairing_seed(seed: int, pairing: str) -> int:
    """The seed of ``pairing``'s own generator: a function of ``seed`` and the pairing's
    name only (SHA-256, so it is the same on every platform and Python)."""
    digest = hashlib.sha256(f"{seed}\x00{pairing}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


def _alert_gate(spatial_gate: Callable[[Pairing, Alert, Alert], bool], pairing: Pairing,
                side_a: Sequence[Alert], side_b: Sequence[Alert]) -> Gate:
    """A vectorized :data:`Gate` over two lists of alerts from a per-pair predicate."""
    def gate(ia: NDArray[np.intp], ib: NDArray[np.intp]) -> NDArray[np.bool_]:
        return np.fromiter((spatial_gate(pairing, side_a[i], side_b[j])
                            for i, j in zip(ia, ib, strict=True)), dtype=bool, count=len(ia))
    return gate


# -- synthetic backgrounds ---------------------------------------------------------------

def poisson_times(rate_hz: float, span_s: float, rng: np.random.Generator) -> NDArray[np.float64]:
    """Sorted event times of a Poisson process of ``rate_hz`` on ``[0, span_s)``, seconds."""
    if not (rate_hz >= 0 and math.isfinite(rate_hz)):
        raise ValueError(f"rate must be finite and >= 0 Hz, got {rate_hz!r}")
    n = rng.poisson(rate_hz * span_s)
    return np.sort(rng.uniform(0.0, span_s, n))


def synthetic_background(rates_hz: Mapping[str, float], span_s: float, seed: int = 0
                         ) -> dict[str, NDArray[np.float64]]:
    """Independent Poisson streams at the given rates: name -> sorted times (seconds).

    Parameters
    ----------
    rates_hz
        Rate of each stream, Hz (e.g. a pairing's configured side rates, scaled).
    span_s
        Length of the simulated time span, seconds.
    seed
        Seed of the generator; streams are drawn in sorted name order.
    """
    rng = np.random.default_rng(seed)
    return {name: poisson_times(float(rates_hz[name]), span_s, rng) for name in sorted(rates_hz)}
