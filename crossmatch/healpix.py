"""HEALPix NESTED indexing at order 29, and cone lookups as index ranges.

Every localized alert carries the order-29 NESTED pixel of its best position as
a 64-bit integer (``hpx29``).  Because NESTED numbering is hierarchical, the
order-29 descendants of a pixel ``p`` at order ``k`` are exactly the integers
``[p << 2(29-k), (p + 1) << 2(29-k))``, so a cone on the sky becomes a short
list of integer ranges that a B-tree index answers directly.

Function-local imports: healpy (about 0.7 s to import, matplotlib with it) and
astropy.coordinates are imported by the functions that use them, deferred so
that a command that only queries the archive (which imports this module for
its cone ranges) starts without them.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np

MAX_ORDER = 29
QUERY_DISC_MAX_ORDER = 27
NSIDE_29 = 1 << MAX_ORDER
NPIX_29 = 12 * (1 << (2 * MAX_ORDER))
# Pixel side at order 0, in degrees: sqrt(4 pi / 12) rad.
_ORDER0_SIDE_DEG = math.degrees(math.sqrt(math.pi / 3))


def nested29(ra_deg: float | np.ndarray, dec_deg: float | np.ndarray) -> int | np.ndarray:
    """Order-29 NESTED pixel index of ICRS positions (degrees)."""
    import healpy

    pix = healpy.ang2pix(NSIDE_29, ra_deg, dec_deg, nest=True, lonlat=True)
    if np.ndim(pix) == 0:
        return int(pix)
    return np.asarray(pix, dtype=np.int64)


def order_for_radius(radius_deg: float, *, max_order: int = MAX_ORDER) -> int:
    """A coarse order whose pixels are about half the cone radius across.

    Coarse enough that a cone needs a few dozen pixels, fine enough that the
    ranges hold little outside the cone.
    """
    if radius_deg <= 0:
        return max_order
    # A difference of logs: the quotient overflows for subnormal radii (hypothesis found 1e-311).
    order = math.floor(math.log2(_ORDER0_SIDE_DEG) - math.log2(radius_deg) + 1)
    return max(0, min(max_order, order))


def cone_ranges(ra_deg: float, dec_deg: float, radius_deg: float) -> list[tuple[int, int]]:
    """Inclusive order-29 index ranges covering a cone (ICRS degrees).

    The ranges cover every position within ``radius_deg`` of the centre and
    some positions just outside it; callers filter candidates by exact
    angular separation.
    """
    import healpy

    if radius_deg >= 180:
        return [(0, NPIX_29 - 1)]
    # healpy's inclusive query_disc aborts the process (SIGABRT) above order 27.
    order = order_for_radius(radius_deg, max_order=QUERY_DISC_MAX_ORDER)
    vec = healpy.ang2vec(ra_deg, dec_deg, lonlat=True)
    pixels = healpy.query_disc(1 << order, vec, math.radians(max(radius_deg, 1e-9)),
                               inclusive=True, nest=True)
    # For a disc smaller than a pixel query_disc may return nothing, even inclusive.
    centre = healpy.ang2pix(1 << order, ra_deg, dec_deg, nest=True, lonlat=True)
    pixels = np.union1d(pixels, [centre])
    shift = 2 * (MAX_ORDER - order)
    return merge_ranges((int(p) << shift, ((int(p) + 1) << shift) - 1) for p in np.sort(pixels))


def merge_ranges(ranges: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """Merge sorted inclusive integer ranges that touch or overlap."""
    merged: list[tuple[int, int]] = []
    for lo, hi in ranges:
        if merged and lo <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(merged[-1][1], hi))
        else:
            merged.append((lo, hi))
    return merged


def angular_separation_deg(ra1_deg: float | np.ndarray, dec1_deg: float | np.ndarray,
                           ra2_deg: float | np.ndarray, dec2_deg: float | np.ndarray
                           ) -> float | np.ndarray:
    """Great-circle separation in degrees, by astropy (Vincenty's formula: stable at all
    separations); scalars in, a float out."""
    # astropy.coordinates costs ~0.5 s to import: deferred so the CLI starts fast.
    from astropy.coordinates import angular_separation

    sep = np.degrees(angular_separation(np.radians(ra1_deg), np.radians(dec1_deg),
                                        np.radians(ra2_deg), np.radians(dec2_deg)))
    return float(sep) if np.ndim(sep) == 0 else sep
