"""Live-index benchmarks: the queries the cross-match engine makes on every alert arrival.

``bench_index()`` fills a :class:`crossmatch.index.LiveIndex` with
1,000,000 synthetic point alerts, uniform on the sky and in time over a
10-day live window (the longest default pairing, neutrino x optical
[0, +10 d]; 100,000 alerts a day, about ZTF's public rate), then measures:

- insertion: alerts/s while loading the million one ``add`` at a time
  (buffer flushes and run merges included), and in steady state, where each
  new alert also advances the window and expires the oldest;
- a new point alert: p50/p95/p99 of ``in_cone`` for several cone radii and time
  windows (targets: p99 <= 2 ms);
- an LVK sky map: its 90% credible region (order-29 ranges from the map's
  NUNIQ pixels) against the 100,000 alerts of one day, and the 300,000 of the
  GW x optical window [0, +3 d], with ``in_pixels`` (target <= 0.5 s).

Sky maps come from ``../shared/samples/lvk`` when present, else a synthetic
1000 deg^2 region stands in.  Run it alone with
``python -c "from bench.index_bench import main; main()"``.
"""

from __future__ import annotations

import math
import statistics
import time
from pathlib import Path

import numpy as np

from bench._common import Figure, percentiles_ms

DAY_S = 86400.0
WINDOW_S = 10 * DAY_S
T0_S = 1_798_761_600.0  # 2027-01-01T00:00:00Z
SAMPLES = Path(__file__).resolve().parent.parent.parent / "shared" / "samples" / "lvk"
MAPS = ("MS220722v_bayestar.multiorder.fits", "bayestar.multiorder.fits")


def _alerts(n: int, t_lo_s: float, t_hi_s: float, seed: int, prefix: str) -> list:
    """``n`` synthetic optical point alerts uniform on the sky and in [t_lo_s, t_hi_s]."""
    from crossmatch.healpix import nested29
    from crossmatch.index import IndexedAlert

    rng = np.random.default_rng(seed)
    ra = rng.uniform(0.0, 360.0, n)
    dec = np.degrees(np.arcsin(rng.uniform(-1.0, 1.0, n)))
    t = np.sort(rng.uniform(t_lo_s, t_hi_s, n))  # streams arrive roughly in time order
    hpx = nested29(ra, dec)
    radius = np.full(n, 1.0 / 3600)  # ZTF-like arcsecond positions
    return [IndexedAlert(f"ivo://bench.mmbroker/ztf#{prefix}{i}", "ztf", "optical", "ZTF",
                         "observation", ti, r, d, h, rad)
            for i, (ti, r, d, h, rad) in enumerate(zip(t.tolist(), ra.tolist(), dec.tolist(),
                                                       hpx.tolist(), radius.tolist(),
                                                       strict=True))]


def _region(path: Path | None) -> tuple[str, np.ndarray, float]:
    """(name, 90% region as order-29 ranges, area in deg^2) of a sample map or a stand-in."""
    from crossmatch.healpix import cone_ranges
    from crossmatch.index import nuniq_to_ranges

    if path is None:
        # A cap of 1000 deg^2: 2 pi (1 - cos r) sr.
        r = math.degrees(math.acos(1 - 1000 / (2 * math.pi * (180 / math.pi) ** 2)))
        return "synthetic 1000 deg2 cap", np.array(cone_ranges(150.0, -30.0, r)), 1000.0
    from crossmatch.skymap import read_multiorder

    sky = read_multiorder(path.read_bytes())
    inside = sky.credible_levels() <= 0.9
    return path.name, nuniq_to_ranges(sky.uniq[inside]), float(
        sky.pixel_area_sr[inside].sum() * (180 / math.pi) ** 2)


def bench_index(n_live: int = 1_000_000, n_queries: int = 2000, seed: int = 11
                ) -> list[Figure]:
    """Figures of the live index at ``n_live`` alerts (see the module docstring)."""
    from crossmatch.index import LiveIndex

    figures: list[Figure] = []
    bench = "live index"
    note_n = f"{n_live:,} live alerts, 10 d window"
    entries = _alerts(n_live, T0_S, T0_S + WINDOW_S, seed, "a")
    index = LiveIndex(WINDOW_S)
    start = time.perf_counter()
    for e in entries:
        index.add(e)
    load_s = time.perf_counter() - start
    assert len(index) == n_live
    figures.append(Figure(bench, "memory", "insert (fill to 1M)", n_live / load_s, "alerts/s",
                          f"{n_live:,} adds in {load_s:.1f} s"))

    # Steady state: later alerts move the window on and expire the oldest as they go.
    n_more = max(n_live // 10, 1000)
    more = _alerts(n_more, T0_S + WINDOW_S, T0_S + WINDOW_S + WINDOW_S * n_more / n_live,
                   seed + 1, "b")
    lat = []
    start = time.perf_counter()
    for e in more:
        t = time.perf_counter()
        index.add(e)
        lat.append(time.perf_counter() - t)
    steady_s = time.perf_counter() - start
    figures.append(Figure(bench, "memory", "insert (steady, with expiry)", n_more / steady_s,
                          "alerts/s", f"{n_more:,} adds; slowest add {1000 * max(lat):.0f} ms "
                          f"(a run merge); {len(index):,} live after"))

    rng = np.random.default_rng(seed + 2)
    t_now = index.newest_s
    shapes = [(3.0, 500.0, "cone 3 deg, +-500 s"),
              (3.0, WINDOW_S, "cone 3 deg, +-10 d"),
              (10.0, DAY_S, "cone 10 deg, +-1 d"),
              (1.0 / 3600, WINDOW_S, "cone 1 arcsec, +-10 d")]
    for radius, half, label in shapes:
        ra = rng.uniform(0, 360, n_queries)
        dec = np.degrees(np.arcsin(rng.uniform(-1, 1, n_queries)))
        t_mid = rng.uniform(t_now - WINDOW_S + half, t_now, n_queries) if half < WINDOW_S \
            else np.full(n_queries, t_now)
        for i in range(20):  # warm-up: caches, healpy import
            index.in_cone(float(ra[i]), float(dec[i]), radius, t_mid[i] - half, t_mid[i] + half)
        samples, found = [], 0
        for i in range(n_queries):
            t = time.perf_counter()
            hits = index.in_cone(float(ra[i]), float(dec[i]), radius, float(t_mid[i] - half),
                                 float(t_mid[i] + half))
            samples.append(time.perf_counter() - t)
            found += len(hits)
        p50, p95, p99 = percentiles_ms(samples)
        note = f"{note_n}; {found / n_queries:,.1f} hits/query; p95 {p95:.2f} ms"
        figures.append(Figure(bench, "memory", f"{label} p50", p50, "ms", note))
        figures.append(Figure(bench, "memory", f"{label} p99", p99, "ms",
                              "target <= 2 ms"))

    paths: list[Path | None] = [SAMPLES / m for m in MAPS if (SAMPLES / m).is_file()]
    for path in paths or [None]:
        t = time.perf_counter()
        name, ranges, area = _region(path)
        region_ms = 1000 * (time.perf_counter() - t)
        for days in (1, 3):
            t_lo = t_now - WINDOW_S / 2
            t_hi = t_lo + days * DAY_S
            n_window = len(index.in_time(t_lo, t_hi))
            index.in_pixels(ranges, t_lo, t_hi)  # warm-up
            samples = []
            for _ in range(30):
                t = time.perf_counter()
                hits = index.in_pixels(ranges, t_lo, t_hi)
                samples.append(time.perf_counter() - t)
            figures.append(Figure(
                bench, "memory", f"sky map 90% x {n_window:,} alerts ({days} d)",
                1000 * statistics.median(samples), "ms",
                f"{name}: {area:,.0f} deg2, {len(ranges):,} ranges, {len(hits):,} hits; "
                f"max {1000 * max(samples):.1f} ms; region from map {region_ms:.0f} ms; "
                "target <= 500 ms"))
    return figures


def main() -> None:
    """Print the figures as a table (without the rest of ``python -m bench``)."""
    from bench._common import machine

    print(machine())
    for f in bench_index():
        print(f"{f.benchmark:12} {f.metric:45} {f.value:12,.3f} {f.unit:9} {f.note}")


if __name__ == "__main__":
    main()
