"""Order-29 NESTED indexing and cone ranges."""

from __future__ import annotations

import itertools

import healpy
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crossmatch.healpix import (
    MAX_ORDER,
    NPIX_29,
    angular_separation_deg,
    cone_ranges,
    merge_ranges,
    nested29,
    order_for_radius,
)

ra_st = st.floats(0, 360, exclude_max=True)
dec_st = st.floats(-90, 90)


@given(ra_st, dec_st)
def test_order29_pixel_descends_from_coarser_pixels(ra: float, dec: float) -> None:
    pix = nested29(ra, dec)
    assert 0 <= pix < NPIX_29
    for order in (0, 5, 12, 20):
        coarse = healpy.ang2pix(1 << order, ra, dec, nest=True, lonlat=True)
        assert pix >> (2 * (MAX_ORDER - order)) == coarse


@settings(max_examples=150, deadline=None)
@given(ra_st, dec_st, st.floats(0.001, 60), st.integers(0, 2**32 - 1))
def test_cone_ranges_cover_every_point_inside(ra: float, dec: float, radius: float,
                                              seed: int) -> None:
    ranges = cone_ranges(ra, dec, radius)
    rng = np.random.default_rng(seed)
    # random points inside the cone: offsets along random bearings
    bearing = rng.uniform(0, 2 * np.pi, 200)
    dist = np.radians(radius) * np.sqrt(rng.uniform(0, 1, 200)) * 0.999999
    d0, r0 = np.radians(dec), np.radians(ra)
    dec_p = np.arcsin(np.sin(d0) * np.cos(dist) + np.cos(d0) * np.sin(dist) * np.cos(bearing))
    ra_p = r0 + np.arctan2(np.sin(bearing) * np.sin(dist) * np.cos(d0),
                           np.cos(dist) - np.sin(d0) * np.sin(dec_p))
    ra_deg, dec_deg = np.degrees(ra_p) % 360.0, np.degrees(dec_p)
    inside = angular_separation_deg(ra, dec, ra_deg, dec_deg) <= radius
    pix = nested29(ra_deg[inside], dec_deg[inside])
    lo = np.array([r[0] for r in ranges])
    hi = np.array([r[1] for r in ranges])
    idx = np.searchsorted(lo, pix, side="right") - 1
    assert np.all(idx >= 0) and np.all(pix <= hi[idx])


def test_cone_ranges_are_few_and_sorted() -> None:
    for radius in (0.001, 0.1, 1.0, 10.0, 90.0):
        ranges = cone_ranges(120.0, -45.0, radius)
        assert ranges == sorted(ranges) and len(ranges) < 64
        assert all(a[1] + 1 < b[0] for a, b in itertools.pairwise(ranges))
    assert cone_ranges(0, 0, 180) == [(0, NPIX_29 - 1)]


def test_merge_ranges() -> None:
    assert merge_ranges([(0, 3), (4, 7), (9, 9), (9, 12), (20, 21)]) == [(0, 7), (9, 12),
                                                                          (20, 21)]


def test_order_for_radius() -> None:
    assert order_for_radius(0) == MAX_ORDER
    assert order_for_radius(180) == 0
    assert order_for_radius(1.0) > order_for_radius(10.0)
    # Subnormal radii once overflowed to an infinite order (found by hypothesis).
    assert order_for_radius(2.225073858507e-311) == MAX_ORDER
    assert order_for_radius(5e-324) == MAX_ORDER
    side0_deg = np.degrees(np.sqrt(np.pi / 3))
    for radius in np.geomspace(1e-9, 50.0, 200):  # pixels half to one radius across
        order = order_for_radius(float(radius))
        if 0 < order < MAX_ORDER:
            assert radius / 2 <= side0_deg / 2.0**order * (1 + 1e-12) < radius * (1 + 1e-12)


def test_separation_edge_cases() -> None:
    assert angular_separation_deg(0, 0, 180, 0) == 180.0
    assert abs(angular_separation_deg(359.9, 0, 0.1, 0) - 0.2) < 1e-9
    assert abs(angular_separation_deg(10, 90, 250, 90)) < 1e-9


@pytest.mark.parametrize("radius", [0.0, 1e-12, 1e-9, 2e-7])
def test_tiny_cones_do_not_abort(radius: float) -> None:
    """healpy's query_disc aborts the process above order 27: tiny cones must not get there."""
    ranges = cone_ranges(10.0, 20.0, radius)
    pix = nested29(10.0, 20.0)
    assert any(lo <= pix <= hi for lo, hi in ranges)
