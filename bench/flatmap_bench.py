"""Flat LVK maps: streaming read into a multi-order map, its memory, and map x map after it.

Flat maps are written from the real multi-order samples the way ligo.skymap
rasterizes them (``tests/flatmap_support.py``: PROB, DISTMU, DISTSIGMA,
DISTNORM as float64, one pixel a row, gzipped), at nside 1024 (LVK's
``bayestar.fits.gz``) and 2048 (as GW170817's), NESTED and RING, cached in
``bench/out/flatmaps``.  For each: wall time of ``read_multiorder`` (median of
3) and the tracemalloc peak of one read (Python and numpy allocations; the
whole table would be 32 B a pixel, 1.6 GB at nside 2048); then map x map of
the two flat nside-2048 maps as read.

Run alone: ``python -m bench.flatmap_bench``.
"""

from __future__ import annotations

import statistics
import time
import tracemalloc
from pathlib import Path

from bench._common import OUT, Figure, percentiles_ms

BENCH = "flat maps"
BACKEND = "numpy"


def _flat_files() -> dict[str, tuple[Path, int]]:
    """Label -> (flat file, nside), written once."""
    from tests.flatmap_support import SAMPLES, write_flat

    out = OUT / "flatmaps"
    out.mkdir(parents=True, exist_ok=True)
    cases = {
        "bayestar nside 1024 NESTED": ("bayestar", 1024, "NESTED"),
        "bayestar nside 2048 NESTED": ("bayestar", 2048, "NESTED"),
        "MS220722v nside 2048 NESTED": ("MS220722v_bayestar", 2048, "NESTED"),
        "bayestar nside 2048 RING": ("bayestar", 2048, "RING"),
    }
    files = {}
    for label, (stem, nside, ordering) in cases.items():
        path = out / f"{stem}-{nside}-{ordering.lower()}.fits.gz"
        if not path.exists():
            write_flat(SAMPLES / f"{stem}.multiorder.fits", path, nside, ordering=ordering)
        files[label] = (path, nside)
    return files


def bench_flatmaps(repeats: int = 3, map_repeats: int = 30) -> list[Figure]:
    """Read time and peak memory of flat maps, and map x map on what was read.

    Parameters
    ----------
    repeats
        Timed reads per map.
    map_repeats
        Timed map x map calls.

    Returns
    -------
    list of Figure
    """
    from crossmatch.localization import SkyMap
    from crossmatch.overlap import overlap
    from crossmatch.skymap import read_multiorder

    figures: list[Figure] = []
    maps = {}
    for label, (path, nside) in _flat_files().items():
        data = path.read_bytes()
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            sky = read_multiorder(data)
            times.append(time.perf_counter() - start)
        tracemalloc.start()
        read_multiorder(data)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        whole = 12 * nside**2 * 32
        figures.append(Figure(BENCH, BACKEND, f"read {label}", statistics.median(times), "s",
                              f"{len(data) / 1e6:.1f} MB gz, {whole / 1e9:.2f} GB of rows -> "
                              f"{sky.n_pixels:,} multi-order pixels"))
        figures.append(Figure(BENCH, BACKEND, f"read {label} peak memory", peak / 1e6, "MB",
                              "tracemalloc peak of one read"))
        maps[label] = SkyMap(sky)
    a, b = maps["bayestar nside 2048 NESTED"], maps["MS220722v nside 2048 NESTED"]
    for gate, level in (("gate off", None), ("90% gate", 0.9)):
        overlap(a, b, credible_level=level)
        samples = []
        for _ in range(map_repeats):
            start = time.perf_counter()
            overlap(a, b, credible_level=level)
            samples.append(time.perf_counter() - start)
        p50, _, p99 = percentiles_ms(samples)
        figures.append(Figure(BENCH, BACKEND, f"map x map flat nside 2048 ({gate}) p50", p50,
                              "ms", f"{a.n_pixels:,} x {b.n_pixels:,} pixels"))
        figures.append(Figure(BENCH, BACKEND, f"map x map flat nside 2048 ({gate}) p99", p99,
                              "ms"))
    return figures


def main() -> None:
    """Print the figures as a plain table."""
    figures = bench_flatmaps()
    width = max(len(f.metric) for f in figures)
    for f in figures:
        print(f"{f.metric:<{width}}  {f.value:10.3f} {f.unit}  {f.note}")


if __name__ == "__main__":
    main()
