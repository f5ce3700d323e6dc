"""Calibration by time scrambling (``crossmatch.calibration``).

The issue's "must show": on a synthetic background, the observed false-coincidence
rate of every configured pairing is within +-20% of the predicted one.  Also the
counting against brute force (window edges inclusive, wrap-around), the scrambling,
a spatial gate, and the path from archived Alert objects.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from alerts_schema import Alert
from alerts_schema.synthetic import uniform_sky
from crossmatch.calibration import (
    CalibrationResult,
    calibrate_alerts,
    calibrate_nfold,
    calibrate_pair,
    count_nfold,
    count_pairs,
    min_scramble_shift_s,
    poisson_times,
    predicted_pair_rate_hz,
    predicted_rate_hz,
    scramble,
    synthetic_background,
)
from crossmatch.config import CrossmatchConfig, Pairing, Selector, load_config
from crossmatch.significance import nfold_chance_rate_hz

CONFIG = load_config()
EPOCH = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def config() -> CrossmatchConfig:
    return CONFIG


def pair(window: tuple[float, float]) -> Pairing:
    return Pairing("p", Selector(messenger=("gamma_ray",)), Selector(messenger=("optical",)),
                   window)


# -- counting ----------------------------------------------------------------------------------

def test_count_pairs_window_edges_inclusive() -> None:
    a = [100.0]
    b = [99.0, 105.0, math.nextafter(105.0, math.inf), math.nextafter(99.0, -math.inf), 100.0]
    assert count_pairs(a, b, (-1.0, 5.0)) == 3
    assert count_pairs([], b, (-1.0, 5.0)) == 0
    assert count_pairs(a, [], (-1.0, 5.0)) == 0
    assert count_pairs([1.0, 1.0], [1.0], (0.0, 0.0)) == 2  # zero-length window, both ends
    with pytest.raises(ValueError, match="hi before lo"):
        count_pairs(a, b, (5.0, -1.0))


def test_count_pairs_wraps_around_the_circle() -> None:
    # t_b - t_a = 1 - 99 = -98, i.e. +2 once round a circle of 100 s.
    assert count_pairs([99.0], [1.0], (0.0, 5.0)) == 0
    assert count_pairs([99.0], [1.0], (0.0, 5.0), span_s=100.0) == 1
    assert count_pairs([1.0], [99.0], (-5.0, 0.0), span_s=100.0) == 1
    with pytest.raises(ValueError, match="does not fit"):
        count_pairs([1.0], [2.0], (0.0, 100.0), span_s=100.0)
    with pytest.raises(ValueError, match=r"\[0, span_s"):
        count_pairs([100.0], [2.0], (0.0, 5.0), span_s=100.0)


def brute_pairs(a: list[float], b: list[float], lo: float, hi: float,
                span: float | None, gate: Any = None) -> int:
    shifts = (0.0,) if span is None else (-span, 0.0, span)
    n = 0
    for i, ta in enumerate(a):
        for j, tb in enumerate(b):
            if any(lo <= tb - ta + k <= hi for k in shifts) and (gate is None or gate(i, j)):
                n += 1
    return n


times = st.lists(st.floats(0.0, 99.0), max_size=25)


@settings(max_examples=80, deadline=None)
@given(a=times, b=times, lo=st.floats(-30.0, 30.0), width=st.floats(0.0, 40.0),
       circular=st.booleans())
def test_count_pairs_matches_brute_force(a: list[float], b: list[float], lo: float,
                                         width: float, circular: bool) -> None:
    span = 100.0 if circular else None
    hi = lo + width
    assert count_pairs(a, b, (lo, hi), span_s=span) == brute_pairs(a, b, lo, hi, span)

    def gate_ij(i: int, j: int) -> bool:
        return (i + 2 * j) % 3 != 0

    def gate(ia: np.ndarray, ib: np.ndarray) -> np.ndarray:
        return (ia + 2 * ib) % 3 != 0

    assert count_pairs(a, b, (lo, hi), span_s=span, gate=gate) == \
        brute_pairs(a, b, lo, hi, span, gate_ij)


def brute_nfold(streams: dict[str, list[float]], n: int, tau: float, span: float | None) -> int:
    shifts = (0.0,) if span is None else (0.0, span)
    count = 0
    for times_d in streams.values():
        for t in times_d:
            present = sum(any(t <= u + k <= t + tau for u in other for k in shifts)
                          for other in streams.values())
            count += present >= n
    return count


@settings(max_examples=60, deadline=None)
@given(streams=st.dictionaries(st.sampled_from("ABCD"), times, max_size=4),
       n=st.integers(1, 4), tau=st.floats(0.0, 20.0), circular=st.booleans())
def test_count_nfold_matches_brute_force(streams: dict[str, list[float]], n: int, tau: float,
                                         circular: bool) -> None:
    span = 100.0 if circular else None
    assert count_nfold(streams, n, tau, span_s=span) == brute_nfold(streams, n, tau, span)


def test_count_nfold_edges() -> None:
    # Inclusive: a trigger exactly tau later counts; one more ulp does not.
    assert count_nfold({"x": [0.0], "y": [10.0]}, 2, 10.0) == 1
    assert count_nfold({"x": [0.0], "y": [math.nextafter(10.0, 11.0)]}, 2, 10.0) == 0
    assert count_nfold({"x": [0.0, 1.0]}, 2, 10.0) == 0  # one detector is never 2-fold
    assert count_nfold({"x": [0.0], "y": [5.0]}, 2, 10.0) == 1  # the later one opens none


# -- scrambling ---------------------------------------------------------------------------------

def test_scramble_rotates_far_from_zero_lag() -> None:
    rng = np.random.default_rng(0)
    t = np.sort(rng.uniform(0, 1000.0, 50))
    for _ in range(100):
        s = scramble(t, 1000.0, rng, min_shift_s=100.0)
        assert s.size == t.size and np.all((s >= 0) & (s < 1000.0))
        lag = (s[0] - t[0]) % 1000.0  # every time moved by the same offset mod span
        assert np.allclose((s - t) % 1000.0, lag) or np.allclose((s - t) % 1000.0 - 1000, lag)
        assert 100.0 - 1e-9 <= lag <= 900.0 + 1e-9
    with pytest.raises(ValueError, match="too short"):
        scramble(t, 1000.0, rng, min_shift_s=500.0)
    assert min_scramble_shift_s((-1.0, 5.0)) == 60.0


# -- predictions ------------------------------------------------------------------------------

def test_predicted_rates(config: CrossmatchConfig) -> None:
    assert predicted_pair_rate_hz(1e-5, 2e-5, (-1.0, 5.0)) == pytest.approx(1.2e-9)
    assert predicted_pair_rate_hz(1e-5, 2e-5, (-1.0, 5.0), sky_fraction=0.5) == \
        pytest.approx(6e-10)
    assert predicted_pair_rate_hz(0.0, 2e-5, (-1.0, 5.0)) == 0.0
    p = config.pairing("gw_cbc-grb")
    assert predicted_rate_hz(p, config) == pytest.approx(
        config.side_rate_hz(p, "a") * config.side_rate_hz(p, "b") * 6.0)
    nfold = config.pairing("sn_nfold")
    r = config.background_rates_hz["sn_detector"]
    assert predicted_rate_hz(nfold, config, detectors=["A", "B"]) == \
        pytest.approx(2 * r * r * 10.0, rel=1e-4)
    assert predicted_rate_hz(nfold, config, detectors=["A"]) == 0.0
    with pytest.raises(ValueError, match="detectors ON"):
        predicted_rate_hz(nfold, config)


# -- the must-show: every pairing on a synthetic background --------------------------------------
#
# At the configured rates chance coincidences are rare (GW-CBC x GRB: one per ~20
# years), so each pairing's streams are drawn as Poisson processes at its configured
# rates times a per-side scale factor, chosen so that the counts are large; the
# prediction is the configured one times the same factors.  Per pair pairing, with
# window length dt and reach = max(dt, |lo|, |hi|):
#   span T = 2000 reach, N_a ~ 4000 events, R_b dt = 0.5  ->  N_b ~ 1000 reach/dt >= 1000,
#   ~2000 chance pairs per scramble, 8 scrambles -> ~16,000 counted.
# The relative standard deviation of observed/predicted comes from the Poisson draw
# of N_a (1.6%) and N_b (<= 3.2%) and from the scrambles (per scramble
# sqrt((1 + R_a dt + R_b dt)/2000) <= 3.5%, /sqrt(8) -> 1.3%): <= 4% in all, so the
# +-20% band is >= 5 sd wide.  The seeds are fixed: the test is deterministic.
# N-fold: 5 detectors at r tau = 0.02, T = 1e6 s: ~800 chance openers per scramble,
# 8 scrambles, relative sd ~3% (with the detectors' own Poisson counts).

SCRAMBLES = 8


def synthetic_pair_result(pairing: Pairing, config: CrossmatchConfig, seed: int
                          ) -> CalibrationResult:
    lo, hi = pairing.window_s
    dt = hi - lo
    reach = max(dt, abs(lo), abs(hi))
    span = 2000.0 * reach
    rate_a, rate_b = config.side_rate_hz(pairing, "a"), config.side_rate_hz(pairing, "b")
    scale_a, scale_b = 4000.0 / (rate_a * span), 0.5 / (rate_b * dt)
    streams = synthetic_background({"a": rate_a * scale_a, "b": rate_b * scale_b}, span, seed)
    predicted = predicted_rate_hz(pairing, config) * scale_a * scale_b
    return calibrate_pair(pairing, streams["a"], streams["b"], span_s=span,
                          n_scrambles=SCRAMBLES, seed=seed, predicted_rate_hz=predicted)


def synthetic_nfold_result(pairing: Pairing, config: CrossmatchConfig, seed: int
                           ) -> CalibrationResult:
    detectors = ["Super-K", "IceCube", "KamLAND", "JUNO", "SNO+"]
    tau, span = pairing.window_s[1], 1.0e6
    configured = {d: config.rate_hz(pairing.rate_a, detector=d) for d in detectors}
    rates = {d: r * (0.02 / (r * tau)) for d, r in configured.items()}  # r tau = 0.02
    streams = synthetic_background(rates, span, seed)
    predicted = nfold_chance_rate_hz(list(rates.values()), pairing.nfold_min or 2, tau)
    return calibrate_nfold(pairing, streams, span_s=span, n_scrambles=SCRAMBLES, seed=seed,
                           predicted_rate_hz=predicted)


@pytest.mark.parametrize("name", [p.name for p in CONFIG.pairings])
def test_observed_false_coincidence_rate_within_20_percent(config: CrossmatchConfig,
                                                           name: str) -> None:
    pairing = config.pairing(name)
    seed = 1000 + [p.name for p in config.pairings].index(name)
    result = (synthetic_nfold_result(pairing, config, seed) if pairing.kind == "nfold"
              else synthetic_pair_result(pairing, config, seed))
    assert result.observed_count > 5000
    assert result.ratio is not None and 0.8 <= result.ratio <= 1.2, result.to_dict()
    # The rate expected from the drawn events themselves agrees as well.
    assert result.observed_rate_hz == pytest.approx(result.expected_rate_hz, rel=0.2)
    json.dumps(result.to_dict(), allow_nan=False)


def test_scrambling_removes_real_coincidences() -> None:
    """300 injected true pairs (t_b = t_a + 0.5 s) dwarf the chance rate at zero lag, and
    leave no trace once scrambled."""
    pairing = pair((-1.0, 5.0))
    rng = np.random.default_rng(5)
    span = 2.0e6
    a = poisson_times(2e-3, span, rng)              # ~4000 events
    b = poisson_times(0.05, span, rng)              # R_b dt = 0.3
    real = rng.choice(a, 300, replace=False) + 0.5
    b_all = np.sort(np.concatenate([b, real[real < span]]))
    predicted = predicted_pair_rate_hz(2e-3, 0.05 + 300 / span, pairing.window_s)
    zero_lag = count_pairs(a, b_all, pairing.window_s, span_s=span) / span
    assert zero_lag > 1.2 * predicted  # ~1200 chance + 300 real
    result = calibrate_pair(pairing, a, b_all, span_s=span, n_scrambles=10, seed=1,
                            predicted_rate_hz=predicted)
    assert result.ratio == pytest.approx(1.0, abs=0.1)


def test_spatial_gate_scales_the_rate_by_the_sky_fraction() -> None:
    """Isotropic positions and a 20 deg cone gate: pass probability (1 - cos 20 deg)/2."""
    pairing = pair((0.0, 100.0))
    rng = np.random.default_rng(11)
    span = 2.0e6
    a = poisson_times(2e-3, span, rng)       # ~4000
    b = poisson_times(0.5, span, rng)        # R_b dt = 50 -> ~200,000 pairs per scramble
    ra_a, dec_a = uniform_sky(rng, a.size)
    ra_b, dec_b = uniform_sky(rng, b.size)
    va = np.column_stack([np.cos(np.radians(dec_a)) * np.cos(np.radians(ra_a)),
                          np.cos(np.radians(dec_a)) * np.sin(np.radians(ra_a)),
                          np.sin(np.radians(dec_a))])
    vb = np.column_stack([np.cos(np.radians(dec_b)) * np.cos(np.radians(ra_b)),
                          np.cos(np.radians(dec_b)) * np.sin(np.radians(ra_b)),
                          np.sin(np.radians(dec_b))])
    cos_r = math.cos(math.radians(20.0))

    def gate(ia: np.ndarray, ib: np.ndarray) -> np.ndarray:
        return np.einsum("ij,ij->i", va[ia], vb[ib]) >= cos_r

    fraction = (1 - cos_r) / 2
    predicted = predicted_pair_rate_hz(2e-3, 0.5, pairing.window_s, sky_fraction=fraction)
    result = calibrate_pair(pairing, a, b, span_s=span, n_scrambles=4, seed=2, gate=gate,
                            sky_fraction=fraction, predicted_rate_hz=predicted)
    # ~6,000 pairs pass per scramble; the sd of the ratio is ~2%.
    assert result.spatial_gate and result.observed_count > 15000
    assert result.ratio == pytest.approx(1.0, abs=0.1)


def test_calibrate_validates_its_arguments(config: CrossmatchConfig) -> None:
    with pytest.raises(ValueError, match="not a pair"):
        calibrate_pair(config.pairing("sn_nfold"), [1.0], [2.0], span_s=1e6)
    with pytest.raises(ValueError, match="not an nfold"):
        calibrate_nfold(config.pairing("gw_cbc-grb"), {"x": [1.0]}, span_s=1e6)
    with pytest.raises(ValueError, match="n_scrambles"):
        calibrate_pair(config.pairing("gw_cbc-grb"), [1.0], [2.0], span_s=1e6, n_scrambles=0)
    result = calibrate_pair(config.pairing("gw_cbc-grb"), [1.0], [2.0], span_s=1e6,
                            n_scrambles=2)
    assert result.ratio is None and result.relative_error is None
    assert result.to_dict()["events"] == {"a": 1, "b": 1}


# -- from archived alerts --------------------------------------------------------------------------

def make_alert(n: int, t: float, *, role: str = "observation", revision: int = 0,
               alert_type: str = "initial", event: str | None = None, **fields: Any) -> Alert:
    event_id = event or f"e{n}"
    doc: dict[str, Any] = {
        "schema_version": "1.0", "id": f"ivo://test.mmbroker/s#{event_id}-{revision}",
        "source": "s", "messenger": "gamma_ray", "facility": "Fermi", "instrument": "GBM",
        "event_id": event_id, "revision": revision, "alert_type": alert_type, "role": role,
        "trigger_time": EPOCH + timedelta(seconds=t),
        "localization": {"kind": "point", "ra_deg": 1.0, "dec_deg": 2.0,
                         "error_radius_deg": 1.0, "containment": 0.9},
        "data_rights": {"level": "public"}, "extra": {},
    }
    doc.update(fields)
    return Alert.model_validate(doc)


def test_calibrate_alerts_end_to_end(config: CrossmatchConfig) -> None:
    rng = np.random.default_rng(21)
    span = 2.0e5
    gw_times = rng.uniform(0, span, 600)
    grb_times = rng.uniform(0, span, 1500)
    alerts = [make_alert(i, t, messenger="gravitational_wave", facility="LVK",
                         instrument="H1,L1", source="igwn.gwalert", extra={"group": "CBC"},
                         far_hz=1e-6)
              for i, t in enumerate(gw_times)]
    alerts += [make_alert(10_000 + i, t) for i, t in enumerate(grb_times)]
    # Revisions, retractions and tests must not add events.
    alerts += [make_alert(10_000, grb_times[0] + 1.0, revision=1, alert_type="update",
                          event="e10000")]
    alerts += [make_alert(99_999, 10.0), make_alert(99_999, 10.0, revision=1,
                                                    alert_type="retraction", event="e99999")]
    alerts += [make_alert(20_000 + i, t, role="test") for i, t in enumerate(grb_times[:50])]
    # SNEWS tier messages of three detectors for the nfold pairing.
    sn = [make_alert(30_000 + 1000 * d + i, float(t), messenger="neutrino", facility=det,
                     source="snews.observation", instrument=None,
                     localization={"kind": "none"}, extra={"snews_tier": "CoincidenceTier"})
          for d, det in enumerate(("Super-K", "IceCube", "JUNO"))
          for i, t in enumerate(rng.uniform(0, span, 150))]
    results = calibrate_alerts(config, alerts + sn, n_scrambles=20, seed=3,
                               pairings=["gw_cbc-grb", "sn_nfold", "gw-optical"])
    by_name = {r.pairing: r for r in results}
    assert list(by_name) == ["gw_cbc-grb", "sn_nfold", "gw-optical"]
    gw_grb = by_name["gw_cbc-grb"]
    assert gw_grb.events == {"a": 600, "b": 1500}
    assert gw_grb.predicted_rate_hz == pytest.approx(predicted_rate_hz(
        config.pairing("gw_cbc-grb"), config))
    assert "time-only counts: no spatial gate given" in gw_grb.notes
    # 600 x 1500 x 6 s / span = 27 chance pairs per scramble, 20 scrambles: ~540 (sd ~5%).
    assert gw_grb.observed_rate_hz == pytest.approx(gw_grb.expected_rate_hz, rel=0.25)
    nfold = by_name["sn_nfold"]
    assert nfold.events == {"IceCube": 150, "JUNO": 150, "Super-K": 150}
    assert nfold.predicted_rate_hz == pytest.approx(predicted_rate_hz(
        config.pairing("sn_nfold"), config, detectors=["IceCube", "JUNO", "Super-K"]))
    # A 3-day window cannot be scrambled on a 2.3-day archive: said, not guessed.
    optical = by_name["gw-optical"]
    assert optical.events["b"] == 0 and optical.n_scrambles == 0
    assert optical.observed_rate_hz is None and optical.ratio is None
    assert any(note.startswith("not scrambled") for note in optical.notes)
    json.dumps([r.to_dict() for r in results], allow_nan=False)

    gated = calibrate_alerts(config, alerts, n_scrambles=5, pairings=["gw_cbc-grb"],
                             spatial_gate=lambda p, a, b: False,
                             sky_fractions={"gw_cbc-grb": 0.01})
    assert gated[0].spatial_gate and gated[0].observed_count == 0
    assert gated[0].predicted_rate_hz == pytest.approx(gw_grb.predicted_rate_hz * 0.01)
    with pytest.raises(KeyError, match="nope"):
        calibrate_alerts(config, alerts, pairings=["nope"])
    with pytest.raises(ValueError, match="no observation alerts"):
        calibrate_alerts(config, [make_alert(1, 1.0, role="test")])
