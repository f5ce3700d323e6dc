"""Sky-overlap benchmarks: per-call time of ``crossmatch.overlap.overlap`` by pair kind.

Timed one call at a time with ``time.perf_counter`` over many repetitions, on
prepared localizations (the engine keeps :class:`~crossmatch.localization.SkyMap`
objects of live maps in memory), plus the one-off costs of preparing a map:

* map x map for every pair of the LVK sample maps in ``../shared/samples/lvk``
  (issue target: <= 50 ms), with and without the 90% credible-region gate;
* point x map, circle x map (Swift BAT 3', IceCube 0.6 deg, Fermi GBM with its
  core+tail systematic), circle x circle, ellipse x circle;
* credible level of 100,000 positions in a map (the optical follow-up lookup).

Without the samples a synthetic multi-order map stands in (noted in the table).

Run alone: ``python -m bench.overlap_bench``.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from bench._common import Figure, percentiles_ms

SAMPLES = Path(__file__).resolve().parent.parent.parent / "shared" / "samples" / "lvk"
BENCH = "sky overlap"
BACKEND = "numpy"


def _times(fn: Callable[[], object], repeats: int) -> list[float]:
    fn()  # warm caches (credible levels, pixel centres) as the live engine has them
    out = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def _synthetic_map() -> object:
    """A ~20,000-pixel multi-order map of a Fisher density (when the samples are absent)."""
    import healpy

    from crossmatch.localization import SkyMap, VonMisesFisher

    src = VonMisesFisher.from_radius(194.3, -17.9, 2.0, 0.9)
    uniq, dens = [], []
    ipix = np.arange(12, dtype=np.int64)
    for order in range(12):
        nside = 1 << order
        vecs = np.array(healpy.pix2vec(nside, ipix, nest=True)).T
        p = np.exp(src.log_density(vecs))
        # Split where the pixel could hold much probability: judge by its nearest point.
        theta = np.arccos(np.clip(vecs @ src.vec, -1, 1))
        near = np.clip(theta - healpy.max_pixrad(nside), 0, None)
        peak = src.kappa / (2 * np.pi) * np.exp(src.kappa * (np.cos(near) - 1))
        split = (peak * healpy.nside2pixarea(nside) > 1e-5) & (order < 11)
        uniq.append(ipix[~split] + 4 * 4**order)
        dens.append(p[~split])
        ipix = (ipix[split][:, None] * 4 + np.arange(4)).ravel()
    return SkyMap.from_uniq(np.concatenate(uniq), np.concatenate(dens))


def bench_overlap(repeats: int = 300) -> list[Figure]:
    """Median (and p99) per-call times of the overlap kinds, in milliseconds.

    Parameters
    ----------
    repeats
        Calls timed per figure (map x map uses a fifth as many).

    Returns
    -------
    list of Figure
    """
    from crossmatch.localization import Ellipse, SkyMap, VonMisesFisher, gbm_mixture
    from crossmatch.overlap import credible_level_at, overlap

    figures: list[Figure] = []

    def add(metric: str, samples: list[float], note: str = "") -> None:
        p50, _, p99 = percentiles_ms(samples)
        figures.append(Figure(BENCH, BACKEND, f"{metric} p50", p50, "ms", note))
        figures.append(Figure(BENCH, BACKEND, f"{metric} p99", p99, "ms"))

    paths = sorted(SAMPLES.glob("*.multiorder.fits")) if SAMPLES.is_dir() else []
    if paths:
        maps = {}
        for path in paths:
            data = path.read_bytes()
            add(f"read FITS {path.name}", _times(lambda d=data: SkyMap.from_fits(d), 20),
                f"{len(data):,} bytes")
            maps[path.name] = SkyMap.from_fits(data)
        source = "LVK samples"
    else:
        maps = {"synthetic Fisher map": _synthetic_map()}
        source = "synthetic map (samples absent)"
    names = sorted(maps)
    first = maps[names[0]]
    add("prepare map (sort ranges + credible levels)",
        _times(lambda: SkyMap(first.moc).credible_levels, 50), f"{first.n_pixels:,} pixels")

    n_map = max(20, repeats // 5)
    for i, n1 in enumerate(names):
        for n2 in names[i:]:
            a, b = maps[n1], maps[n2]
            label = f"map x map {n1.split('.')[0]} x {n2.split('.')[0]}"
            gated = overlap(a, b).gated
            add(label + " (gate off)",
                _times(lambda a=a, b=b: overlap(a, b, credible_level=None), n_map),
                f"{a.n_pixels:,} x {b.n_pixels:,} pixels; target <= 50 ms")
            add(label + " (90% gate)", _times(lambda a=a, b=b: overlap(a, b), n_map),
                "gated: regions disjoint" if gated else "gate passed, integral computed")

    sky = maps.get("bayestar.multiorder.fits", first)
    ra, dec = sky.moc.max_position()
    point = VonMisesFisher.point(ra + 0.1, dec)
    add("point x map", _times(lambda: overlap(point, sky), repeats), source)
    counterparts = {
        "Swift BAT 3' circle x map": VonMisesFisher.from_radius(ra + 0.1, dec, 3 / 60, 0.9),
        "IceCube 0.6 deg circle x map": VonMisesFisher.from_radius(ra + 0.3, dec, 0.6, 0.9),
        "Fermi GBM core+tail x map": gbm_mixture(ra + 2.0, dec, 5.0, 0.6827, 3.72),
    }
    for label, loc in counterparts.items():
        add(label, _times(lambda loc=loc: overlap(loc, sky), repeats), source)
    outside = VonMisesFisher.from_radius(ra + 40.0, dec, 1.0, 0.9)
    add("circle x map, gated (regions apart)", _times(lambda: overlap(outside, sky), repeats))

    c1 = VonMisesFisher.from_radius(10.0, 20.0, 5.0, 0.9)
    c2 = VonMisesFisher.from_radius(15.0, 22.0, 0.8, 0.9)
    add("circle x circle (closed form)", _times(lambda: overlap(c1, c2), repeats * 10))
    mix = gbm_mixture(12.0, 21.0, 5.0, 0.6827, 3.72)
    add("GBM mixture x circle", _times(lambda: overlap(mix, c2), repeats * 10))
    ell = Ellipse.from_axes(12.0, 21.0, 2.0, 0.7, 30.0, 0.9)
    add("ellipse x circle (Gauss-Hermite)", _times(lambda: overlap(ell, c1), repeats))

    rng = np.random.default_rng(1)
    ras = rng.uniform(0, 360, 100_000)
    decs = np.degrees(np.arcsin(rng.uniform(-1, 1, 100_000)))
    add("credible level of 100,000 positions in a map",
        _times(lambda: credible_level_at(sky, ras, decs), 20), source)
    return figures


def main() -> None:
    """Print the figures as a plain table."""
    figures = bench_overlap()
    width = max(len(f.metric) for f in figures)
    for f in figures:
        print(f"{f.metric:<{width}}  {f.value:10.4f} {f.unit}  {f.note}")
    medians = [f.value for f in figures if f.metric.startswith("map x map") and "p50" in f.metric]
    if medians:
        print(f"map x map median of medians: {statistics.median(medians):.2f} ms; "
              f"worst {max(medians):.2f} ms (target <= 50 ms)")


if __name__ == "__main__":
    main()
