"""The live index against brute force: time windows, cones, pixel regions, removal, expiry."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crossmatch import index as live_index
from crossmatch.healpix import NPIX_29, angular_separation_deg, cone_ranges, nested29
from crossmatch.index import IndexedAlert, LiveIndex, nuniq_to_ranges

# Boundary band (degrees): separations this close to the radius may fall either side,
# depending on the last bit of a vectorized sine; everything else must agree exactly.
EDGE_DEG = 1e-9
PLANS = [None, "time", "span", "pixel"]


MESSENGERS = ("optical", "neutrino", "gamma_ray")


def alert(key: str, t: float, ra: float | None = None, dec: float | None = None,
          radius: float | None = None, hpx: int | None = None) -> IndexedAlert:
    # (the messenger follows the key, so that lookups by messenger have something to drop)
    messenger = MESSENGERS[sum(map(ord, key)) % len(MESSENGERS)]
    return IndexedAlert(key, "test.stream", messenger, "Test", "test", t, ra, dec, hpx, radius,
                        payload={"k": key})


# -- strategies -------------------------------------------------------------------------

# A few shared times so that ties and inclusive edges come up often.
times_st = st.one_of(st.sampled_from([0.0, 10.0, 10.5, 100.0, 1e9, 1.8e9]),
                     st.floats(-1e3, 2e9, allow_nan=False))
ra_st = st.one_of(st.sampled_from([0.0, 359.999999, 180.0, 1e-9]),
                  st.floats(0, 360, exclude_max=True), st.floats(-720, 720))
dec_st = st.one_of(st.sampled_from([90.0, -90.0, 89.9999, -89.9999, 0.0]), st.floats(-90, 90))
radius_st = st.one_of(st.sampled_from([0.0, 1e-7, 180.0, 179.99, 90.0, 200.0]),
                      st.floats(1e-6, 1.0), st.floats(1.0, 120.0))


@st.composite
def alerts_st(draw: st.DrawFn) -> list[tuple[str, float, float | None, float | None,
                                             float | None]]:
    n = draw(st.integers(0, 40))
    out = []
    for i in range(n):
        t = draw(times_st)
        if draw(st.integers(0, 4)) == 0:
            out.append((f"k{i}", t, None, None, None))
        else:
            out.append((f"k{i}", t, draw(ra_st), draw(dec_st),
                        draw(st.one_of(st.none(), st.floats(0, 5)))))
    return out


def brute_time(model: dict[str, IndexedAlert], lo: float, hi: float) -> set[str]:
    return {k for k, e in model.items() if lo <= e.event_time_s <= hi}


def brute_cone(model: dict[str, IndexedAlert], ra: float, dec: float, radius: float,
               lo: float, hi: float, *, add_entry_radius: bool = False
               ) -> tuple[set[str], set[str]]:
    """(keys surely inside, keys on the boundary band that may go either way)."""
    inside, edge = set(), set()
    for k, e in model.items():
        if e.ra_deg is None or not lo <= e.event_time_s <= hi:
            continue
        limit = radius + ((e.radius_deg or 0.0) if add_entry_radius else 0.0)
        sep = angular_separation_deg(ra, dec, e.ra_deg, e.dec_deg)
        if abs(sep - limit) <= EDGE_DEG:
            edge.add(k)
        elif sep <= limit:
            inside.add(k)
    return inside, edge


def keys(result: list[IndexedAlert]) -> set[str]:
    times = [e.event_time_s for e in result]
    assert times == sorted(times), "results must come sorted by event time"
    assert len({e.key for e in result}) == len(result), "duplicates in a result"
    return {e.key for e in result}


def check_cone(index: LiveIndex, model: dict[str, IndexedAlert], ra: float, dec: float,
               radius: float, lo: float, hi: float, *, add_entry_radius: bool = False,
               messengers: frozenset[str] | None = None) -> None:
    got = keys(index.in_cone(ra, dec, radius, lo, hi, add_entry_radius=add_entry_radius,
                             messengers=messengers))
    if messengers is not None:
        model = {k: e for k, e in model.items() if e.messenger in messengers}
    inside, edge = brute_cone(model, ra, dec, radius, lo, hi,
                              add_entry_radius=add_entry_radius)
    assert got - edge == inside, (ra, dec, radius, lo, hi, messengers)


# -- property tests against brute force -------------------------------------------------


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(alerts_st(), st.data(), st.sampled_from(PLANS), st.sampled_from([3, 6, 11]),
       st.integers(1, 6), st.integers(2, 4), st.sampled_from([0, 256]))
def test_queries_match_brute_force(specs: list, data: st.DataObject, plan: str | None,
                                   coarse: int, buffer_size: int, fanout: int, scan: int
                                   ) -> None:
    """``scan``: cones of an index this small are answered by testing every alert of the
    window (0: always through the pixel ranges)."""
    saved, live_index.SCAN_BELOW = live_index.SCAN_BELOW, scan
    try:
        _queries_match_brute_force(specs, data, plan, coarse, buffer_size, fanout)
    finally:
        live_index.SCAN_BELOW = saved


def _queries_match_brute_force(specs: list, data: st.DataObject, plan: str | None,
                               coarse: int, buffer_size: int, fanout: int) -> None:
    index = LiveIndex(1e12, coarse, buffer_size=buffer_size, fanout=fanout)
    index._plan = plan
    model: dict[str, IndexedAlert] = {}
    horizon = -math.inf
    for key, t, ra, dec, radius in specs:
        op = data.draw(st.integers(0, 9))
        if op == 0 and model:  # remove a held key
            victim = data.draw(st.sampled_from(sorted(model)))
            assert index.remove(victim)
            del model[victim]
        elif op == 1:  # expire at some time
            cut = data.draw(times_st)
            index.expire(cut)
            horizon = max(horizon, cut)
            model = {k: e for k, e in model.items() if e.event_time_s >= cut}
        elif op == 2 and model:  # replace a held key (a new revision)
            key = data.draw(st.sampled_from(sorted(model)))
        entry = alert(key, t, ra, dec, radius)
        held = index.add(entry)
        assert held == (t >= horizon)
        if held:
            model[key] = entry
    assert len(index) == len(model)
    assert not index.remove("never-added")
    for k, e in model.items():
        assert index.get(k) is e and k in index

    for _ in range(4):
        lo = data.draw(times_st)
        hi = data.draw(st.one_of(times_st, st.just(lo), st.just(math.inf)))
        assert keys(index.in_time(lo, hi)) == brute_time(model, lo, hi)
        wanted = frozenset(data.draw(st.sets(st.sampled_from((*MESSENGERS, "unseen")))))
        assert keys(index.in_time(lo, hi, messengers=wanted)) == {
            k for k in brute_time(model, lo, hi) if model[k].messenger in wanted}
        ra, dec, radius = data.draw(ra_st), data.draw(dec_st), data.draw(radius_st)
        check_cone(index, model, ra, dec, radius, lo, hi)
        check_cone(index, model, ra, dec, radius, lo, hi, messengers=wanted)
        check_cone(index, model, ra, dec, radius, -math.inf, math.inf, add_entry_radius=True)
        check_cone(index, model, ra, dec, radius, lo, hi, add_entry_radius=True,
                   messengers=wanted)
    # A cone centred on a held alert with radius 0 finds it (and its twins).
    positioned = [e for e in model.values() if e.ra_deg is not None]
    if positioned:
        e = data.draw(st.sampled_from(positioned))
        got = keys(index.in_cone(e.ra_deg, e.dec_deg, 0.0, e.event_time_s, e.event_time_s))
        assert e.key in got


@st.composite
def ranges_st(draw: st.DrawFn, hpx: list[int]) -> list[tuple[int, int]]:
    """Order-29 ranges at assorted orders, some with edges exactly on held pixels."""
    ranges = []
    for _ in range(draw(st.integers(0, 6))):
        kind = draw(st.integers(0, 3))
        if kind == 0 and hpx:  # a range ending or starting exactly at a held pixel
            h = draw(st.sampled_from(hpx))
            ranges.append(draw(st.sampled_from([(h, h), (max(h - 5, 0), h), (h, h + 3),
                                                (h + 1, min(h + 9, NPIX_29 - 1)),
                                                (max(h - 9, 0), max(h - 1, 0))])))
        else:
            order = draw(st.integers(0, 29))
            p = draw(st.integers(0, 12 * 4**order - 1))
            shift = 2 * (29 - order)
            ranges.append((p << shift, ((p + 1) << shift) - 1))
    return ranges


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(alerts_st(), st.data(), st.sampled_from(PLANS), st.integers(1, 5))
def test_in_pixels_matches_brute_force(specs: list, data: st.DataObject, plan: str | None,
                                       buffer_size: int) -> None:
    index = LiveIndex(1e12, 4, buffer_size=buffer_size, fanout=2)
    index._plan = plan
    model = {}
    for key, t, ra, dec, radius in specs:
        model[key] = alert(key, t, ra, dec, radius)
        index.add(model[key])
    hpx = [e.hpx29 for e in model.values() if e.hpx29 is not None]
    for _ in range(3):
        ranges = data.draw(ranges_st(hpx))
        lo = data.draw(times_st)
        hi = data.draw(st.one_of(times_st, st.just(math.inf)))
        expected = {k for k, e in model.items()
                    if e.hpx29 is not None and lo <= e.event_time_s <= hi
                    and any(a <= e.hpx29 <= b for a, b in ranges)}
        assert keys(index.in_pixels(ranges, lo, hi)) == expected
        wanted = frozenset(data.draw(st.sets(st.sampled_from(MESSENGERS))))
        assert keys(index.in_pixels(ranges, lo, hi, messengers=wanted)) == {
            k for k in expected if model[k].messenger in wanted}


# -- a larger deterministic workload: many runs, merges, rewrites, slot reuse -----------


def _random_alerts(rng: np.random.Generator, n: int, prefix: str, t_lo: float, t_hi: float,
                   ) -> list[IndexedAlert]:
    ra = rng.uniform(0, 360, n)
    dec = np.degrees(np.arcsin(rng.uniform(-1, 1, n)))
    hpx = nested29(ra, dec)
    t = rng.uniform(t_lo, t_hi, n)
    return [IndexedAlert(f"{prefix}{i}", "s", "optical", "F", "observation", float(t[i]),
                         float(ra[i]), float(dec[i]), int(hpx[i]), None) if i % 9
            else IndexedAlert(f"{prefix}{i}", "s", "neutrino", "F", "observation", float(t[i]))
            for i in range(n)]


@pytest.mark.parametrize("plan", PLANS)
def test_churn_against_brute_force(plan: str | None) -> None:
    rng = np.random.default_rng(5)
    index = LiveIndex(1e9, buffer_size=37, fanout=3)
    index._plan = plan
    model: dict[str, IndexedAlert] = {}
    # Rounds of adds and removes leave dead rows in every run and force rewrites
    # (over 4096 dead), so slots get recycled while older runs still exist.
    for r in range(4):
        batch = _random_alerts(rng, 4000, f"r{r}-", 0.0, 1e5)
        for e in batch:
            index.add(e)
            model[e.key] = e
        for k in rng.choice(sorted(model), size=len(model) * 2 // 3, replace=False):
            assert index.remove(str(k))
            del model[str(k)]
    assert len(index) == len(model)
    assert len(index._objs) < 16000, "slots released by merges and rewrites are reused"
    assert sum(len(run) for run in index._runs) + index._nbuf < 3 * len(model) + 5000
    ts = np.array([e.event_time_s for e in model.values()])
    names = np.array(list(model))
    pos = [e for e in model.values() if e.ra_deg is not None]
    pra = np.array([e.ra_deg for e in pos])
    pdec = np.array([e.dec_deg for e in pos])
    pt = np.array([e.event_time_s for e in pos])
    pkeys = np.array([e.key for e in pos])
    for _ in range(60):
        lo = rng.uniform(0, 1e5)
        hi = lo + 10 ** rng.uniform(0, 5)
        assert keys(index.in_time(lo, hi)) == set(names[(ts >= lo) & (ts <= hi)])
        assert keys(index.unlocalized(lo, hi)) == {
            e.key for e in model.values() if e.ra_deg is None and lo <= e.event_time_s <= hi}
        ra, dec = rng.uniform(0, 360), rng.uniform(-90, 90)
        radius = 10 ** rng.uniform(-1, 2)
        sep = angular_separation_deg(ra, dec, pra, pdec)
        inside = (pt >= lo) & (pt <= hi)
        got = keys(index.in_cone(ra, dec, radius, lo, hi))
        edge = set(pkeys[inside & (np.abs(sep - radius) <= EDGE_DEG)])
        assert got - edge == set(pkeys[inside & (sep <= radius)]) - edge
    assert index.expire(5e4) == int((ts < 5e4).sum())
    assert keys(index.in_time(-math.inf, math.inf)) == set(names[ts >= 5e4])


# -- sky maps --------------------------------------------------------------------------


def test_nuniq_to_ranges() -> None:
    # Order 0 pixel 11 is the last twelfth of the sky; order 29 pixel 7 is one index.
    uniq = [4 + 11, 4 * 4**29 + 7, 4 * 4**29 + 8, 4 * 4**1 + 1]
    got = nuniq_to_ranges(np.array(uniq))
    assert got.tolist() == [[7, 8], [4**28, 2 * 4**28 - 1], [11 * 4**29, NPIX_29 - 1]]
    # A pixel inside a coarser one merges into it.
    assert nuniq_to_ranges([4 * 4 + 0, 4 * 4**29 + 7]).tolist() == [[0, 4**28 - 1]]
    assert nuniq_to_ranges([]).shape == (0, 2)
    with pytest.raises(ValueError):
        nuniq_to_ranges([3])


def test_sky_map_region_finds_alerts_in_its_credible_region() -> None:
    from crossmatch.skymap import MultiOrderMap

    # A synthetic multi-order map: an order-3 pixel of high density refined at order 5.
    uniq = np.concatenate([4 * 4**3 + np.arange(1, 768), 4 * 4**5 + np.arange(16)])
    dens = np.where(uniq >= 4 * 4**5, 100.0, 0.01)
    sky = MultiOrderMap(uniq, dens)
    region = nuniq_to_ranges(sky.uniq[sky.credible_levels() <= 0.9])
    rng = np.random.default_rng(3)
    entries = _random_alerts(rng, 3000, "o", 0.0, 1000.0)
    index = LiveIndex(1e6)
    index.extend(entries)
    got = keys(index.in_pixels(region, 100.0, 900.0))
    expected = {e.key for e in entries if e.ra_deg is not None and 100 <= e.event_time_s <= 900
                and sky.credible_level_at(e.ra_deg, e.dec_deg) <= 0.9}
    assert got == expected and expected


# -- positions, options, window ------------------------------------------------------------


def test_alerts_without_position_only_in_time() -> None:
    index = LiveIndex(1000.0)
    index.add(alert("snews", 50.0))
    index.add(alert("grb", 50.0, 10.0, 20.0, 1.0))
    assert keys(index.in_time(50.0, 50.0)) == {"snews", "grb"}
    assert keys(index.in_cone(10.0, 20.0, 180.0, 0.0, 100.0)) == {"grb"}
    assert keys(index.in_pixels([(0, NPIX_29 - 1)], 0.0, 100.0)) == {"grb"}
    assert keys(index.unlocalized(0.0, 100.0)) == {"snews"}
    assert keys(index.unlocalized(51.0, 100.0)) == set()
    assert index.get("snews").payload == {"k": "snews"}


def test_entry_radius_widens_the_match() -> None:
    index = LiveIndex(1000.0)
    index.add(alert("gbm", 0.0, 100.0, 0.0, radius=8.0))
    index.add(alert("ztf", 0.0, 100.0, 1.5, radius=1e-4))
    assert keys(index.in_cone(110.0, 0.0, 3.0, -1, 1)) == set()
    assert keys(index.in_cone(110.0, 0.0, 3.0, -1, 1, add_entry_radius=True)) == {"gbm"}


def test_pole_and_wraparound_cones() -> None:
    index = LiveIndex(1000.0)
    index.add(alert("north", 0.0, 123.0, 90.0))
    index.add(alert("east", 0.0, 359.99, 0.0))
    index.add(alert("west", 0.0, 0.01, 0.0))
    assert keys(index.in_cone(300.0, 89.5, 0.6, 0, 0)) == {"north"}
    assert keys(index.in_cone(0.0, 0.0, 0.02, 0, 0)) == {"east", "west"}
    assert keys(index.in_cone(-0.005, 0.0, 0.006, 0, 0)) == {"east"}


def test_window_expires_and_covers() -> None:
    index = LiveIndex(3200.0)  # sweeps every 100 s of window movement
    assert index.covers(-1e18)
    for i in range(100):
        assert index.add(alert(f"a{i}", 100.0 * i))
    newest = 9900.0
    assert index.newest_s == newest
    held = {e.key for e in index.in_time(-math.inf, math.inf)}
    # Everything within the window is held; nothing older than the horizon is.
    assert {f"a{i}" for i in range(100) if 100 * i >= newest - 3200} <= held
    assert all(100 * int(k[1:]) >= index.horizon_s for k in held)
    assert newest - 3200 - 100 <= index.horizon_s <= newest - 3200
    assert index.covers(newest - 3200) and not index.covers(index.horizon_s - 1)
    assert not index.add(alert("late", index.horizon_s - 1))
    assert index.add(alert("late-but-live", index.horizon_s))
    older = {k for k in held if 100 * int(k[1:]) < 9000} | {"late-but-live"}
    assert index.expire(9000.0) == len(older)  # a90 stays: the bound is inclusive
    assert "a90" in index and not older & {e.key for e in index.in_time(-math.inf, 1e9)}
    assert index.expire(10.0) == 0 and index.horizon_s == 9000.0
    assert not index.covers(8999.0)


def test_now_keeps_future_dated_alerts_from_expiring_the_window() -> None:
    index = LiveIndex(100.0)
    index.add(alert("a", 1000.0), now_s=1000.0)
    index.add(alert("future", 1e9), now_s=1001.0)  # a bad clock upstream
    assert "a" in index and "future" in index
    index.add(alert("b", 1001.0))  # without now_s the event time drives the window
    index.add(alert("c", 1e9 + 1))
    assert "a" not in index and "c" in index


def test_complete_since_bounds_covers() -> None:
    index = LiveIndex(1e6, complete_since_s=5000.0)
    index.add(alert("a", 6000.0))
    assert index.covers(5000.0) and not index.covers(4999.0)
    assert not index.add(alert("old", 4000.0))


def test_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        alert("x", math.nan)
    with pytest.raises(ValueError):
        alert("x", 0.0, 10.0, None)
    with pytest.raises(ValueError):
        alert("x", 0.0, 10.0, 91.0)
    with pytest.raises(ValueError):
        alert("x", 0.0, hpx=5)
    with pytest.raises(ValueError):
        alert("x", 0.0, 10.0, 10.0, radius=-1.0)
    with pytest.raises(ValueError):
        LiveIndex(0.0)
    with pytest.raises(ValueError):
        LiveIndex(10.0, coarse_order=2)
    index = LiveIndex(10.0)
    with pytest.raises(ValueError):
        index.in_cone(0.0, 0.0, -1.0, 0, 1)
    with pytest.raises(ValueError):
        index.in_time(math.nan, 1.0)
    with pytest.raises(ValueError):
        index.in_pixels([(5, 4)], 0, 1)
    with pytest.raises(ValueError):
        index.expire(math.nan)
    assert index.in_time(2.0, 1.0) == [] and index.in_cone(0, 0, 1, 2.0, 1.0) == []


def test_hpx29_is_filled_and_matches_cone_ranges() -> None:
    e = alert("x", 0.0, 45.0, -30.0)
    assert e.hpx29 == nested29(45.0, -30.0)
    assert any(lo <= e.hpx29 <= hi for lo, hi in cone_ranges(45.0, -30.0, 0.1))
