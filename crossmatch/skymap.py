"""HEALPix probability sky maps held as multi-order (NUNIQ) pixel lists.

A multi-order map lists pixels of mixed resolution that tile (part of) the
sky without overlap: each row has a NUNIQ index ``uniq = 4 * 4**order + ipix``
(``ipix`` NESTED at that order) and a probability density in sr^-1, the form
LVK alerts carry (``UNIQ``/``PROBDENSITY`` binary table; Singer & Price 2016,
the IVOA MOC convention).  Everything here works on those rows directly:
a typical LVK map is ~20,000 rows, where flattening to its finest order
(order 11) would be 50 million pixels.

Pure functions of in-memory bytes and arrays; no file or network I/O.  Errors
a sender caused raise :class:`~alerts_schema.errors.MalformedInput` (or
:class:`~alerts_schema.errors.HostileInput` for decompression bombs) with a reason
a person can act on.

Function-local imports: healpy (about 0.7 s to import, matplotlib with it) and
astropy.io.fits are imported by the functions that use them, deferred so that
a command or process that never reads a sky map starts without them.

>>> sky = read_multiorder(fits_bytes)
>>> sky.area_deg2(0.9), sky.max_position()
"""

from __future__ import annotations

import io
import math
import re
import warnings
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from alerts_schema.errors import HostileInput, MalformedInput

__all__ = [
    "MAX_FITS_BYTES",
    "MAX_ORDER",
    "SR_TO_DEG2",
    "MultiOrderMap",
    "read_multiorder",
    "repair_negative_density",
    "uniq_to_order_ipix",
]

MAX_ORDER = 29
"""Finest HEALPix order a NUNIQ index may use (nside 2**29, as in crossmatch.healpix)."""

SR_TO_DEG2 = (180.0 / math.pi) ** 2
"""Square degrees per steradian (about 3282.8)."""

MAX_FITS_BYTES = 256 * 1024 * 1024
"""Largest multi-order FITS file accepted, after gunzip (bytes); a bound on memory, not on
real maps.  Flat maps are streamed, bounded by their declared size instead."""

# uniq values at which each order starts: order k covers [4**(k+1), 4**(k+2)).
_ORDER_STARTS = np.array([4 ** (k + 1) for k in range(MAX_ORDER + 2)], dtype=np.int64)
_FITS_BLOCK = 2880
_GZIP_MAGIC = b"\x1f\x8b"
# Header cards that describe the table layout rather than the map.
_STRUCTURAL = re.compile(r"^(XTENSION|BITPIX|NAXIS\d*|PCOUNT|GCOUNT|TFIELDS|T[A-Z]+\d+|"
                         r"HISTORY|COMMENT|EXTEND|SIMPLE|END|)$")
# Density units accepted, as factors to sr^-1 (LVK writes "sr-1").
_DENSITY_UNITS = {"": 1.0, "sr-1": 1.0, "sr**-1": 1.0, "sr^-1": 1.0, "1/sr": 1.0, "/sr": 1.0,
                  "deg-2": SR_TO_DEG2, "deg**-2": SR_TO_DEG2, "deg^-2": SR_TO_DEG2,
                  "1/deg2": SR_TO_DEG2, "1/deg**2": SR_TO_DEG2}
_FLAT_PROB_COLUMNS = ("PROB", "PROBABILITY")  # probability per pixel (ligo.skymap, Fermi GBM)


def uniq_to_order_ipix(uniq: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """HEALPix order and NESTED pixel index of NUNIQ indices.

    Parameters
    ----------
    uniq
        NUNIQ indices (integers >= 4).

    Returns
    -------
    order, ipix
        int64 arrays; ``order`` is -1 for indices below 4 and ``MAX_ORDER + 1``
        for indices beyond order 29, which callers must reject.

    Notes
    -----
    Integer arithmetic throughout: ``log2`` in floating point rounds wrongly
    for order-29 indices near 2**62.
    """
    uniq = np.asarray(uniq, dtype=np.int64)
    order = np.searchsorted(_ORDER_STARTS, uniq, side="right").astype(np.int64) - 1
    base = _ORDER_STARTS[np.clip(order, 0, MAX_ORDER + 1)]
    return order, uniq - base


@dataclass(frozen=True, eq=False)
class MultiOrderMap:
    """A HEALPix probability sky map as NUNIQ pixels of mixed order.

    Parameters
    ----------
    uniq
        NUNIQ pixel indices (int64), each naming one NESTED pixel of order
        0..29; pixels must not overlap.  They need not cover the whole sky:
        what is not listed has zero probability.
    probdensity
        Probability density of each pixel, sr^-1; finite and non-negative,
        not all zero.  Need not integrate to exactly 1: probabilities are
        taken relative to ``total_probability``.
    meta
        Header values of the map (``OBJECT``, ``CREATOR``, ``DISTMEAN`` ...),
        JSON scalars only.
    notes
        What the reader noticed and repaired or tolerated (FITS header
        fixes, renormalization), for a person to read.

    Raises
    ------
    MalformedInput
        For arrays that do not make a sky map: mismatched lengths, indices
        outside orders 0..29, duplicate or overlapping pixels, densities that
        are negative, NaN, infinite or all zero.
    """

    uniq: np.ndarray
    probdensity: np.ndarray
    meta: Mapping[str, Any] = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    order: np.ndarray = field(init=False, repr=False)
    """HEALPix order of each pixel (int64)."""
    ipix: np.ndarray = field(init=False, repr=False)
    """NESTED index of each pixel at its own order (int64)."""
    pixel_area_sr: np.ndarray = field(init=False, repr=False)
    """Solid angle of each pixel, sr."""

    def __post_init__(self) -> None:
        uniq = np.array(self.uniq, dtype=np.int64, copy=True).ravel()
        dens = np.array(self.probdensity, dtype=np.float64, copy=True).ravel()
        if uniq.shape != dens.shape:
            raise MalformedInput(f"sky map has {uniq.size} UNIQ values but {dens.size} "
                                 "PROBDENSITY values")
        if uniq.size == 0:
            raise MalformedInput("sky map has no pixels")
        order, ipix = uniq_to_order_ipix(uniq)
        bad = (order < 0) | (order > MAX_ORDER)
        if bad.any():
            raise MalformedInput(f"sky map UNIQ value {int(uniq[bad][0])} is not a NUNIQ index "
                                 f"of HEALPix order 0..{MAX_ORDER}")
        if not np.isfinite(dens).all():
            raise MalformedInput(f"sky map has {int((~np.isfinite(dens)).sum())} non-finite "
                                 "PROBDENSITY values")
        if (dens < 0).any():
            raise MalformedInput(f"sky map has {int((dens < 0).sum())} negative PROBDENSITY "
                                 f"values (min {float(dens.min()):.3g} sr^-1)")
        _check_tiling(order, ipix, uniq)
        area = (math.pi / 3.0) / np.power(4.0, order)  # 4 pi / (12 * 4**order) sr
        total = float(np.dot(dens, area))
        if not total > 0 or not math.isfinite(total):
            raise MalformedInput(f"sky map total probability is {total!r}: nothing to localize")
        for name, value in (("uniq", uniq), ("probdensity", dens), ("order", order),
                            ("ipix", ipix), ("pixel_area_sr", area)):
            value.setflags(write=False)  # frozen means the arrays too
            object.__setattr__(self, name, value)
        object.__setattr__(self, "meta", dict(self.meta))
        object.__setattr__(self, "notes", tuple(self.notes))

    # -- basic figures --------------------------------------------------------------

    @property
    def n_pixels(self) -> int:
        """Number of rows (pixels) in the map."""
        return int(self.uniq.size)

    @property
    def max_order(self) -> int:
        """Finest HEALPix order present."""
        return int(self.order.max())

    @property
    def probability(self) -> np.ndarray:
        """Probability in each pixel (density times area), normalized to sum to 1."""
        prob = self.probdensity * self.pixel_area_sr
        normalized: np.ndarray = prob / prob.sum()
        return normalized

    @property
    def total_probability(self) -> float:
        """Integral of the density over the listed pixels as the map states it (1 if normalized)."""
        return float(np.dot(self.probdensity, self.pixel_area_sr))

    @property
    def sky_fraction(self) -> float:
        """Fraction of the sphere the listed pixels cover (1 for an all-sky map)."""
        return float(self.pixel_area_sr.sum() / (4.0 * math.pi))

    # -- credible regions ------------------------------------------------------------

    def _greedy(self) -> tuple[np.ndarray, np.ndarray]:
        """Pixel order of decreasing density and the normalized cumulative probability."""
        # Stable sort so that ties (uniform regions) give the same answer every time.
        rank = np.argsort(-self.probdensity, kind="stable")
        cum = np.cumsum(self.probdensity[rank] * self.pixel_area_sr[rank])
        return rank, cum / cum[-1]

    def area_deg2(self, level: float = 0.9) -> float:
        """Area of the ``level`` credible region, deg^2.

        The region is the smallest-area one holding probability ``level``: the
        pixels of highest density, taken in turn until their probability
        reaches ``level``.  The last pixel counts only in part (the density is
        constant within a pixel, so area grows linearly with probability
        there); a map uniform on a region of area A gives exactly ``level * A``.

        Parameters
        ----------
        level
            Credible level, probability in (0, 1].

        Returns
        -------
        float
            Area in square degrees.
        """
        if not 0.0 < level <= 1.0:
            raise ValueError(f"credible level must be in (0, 1], got {level!r}")
        rank, cum = self._greedy()
        k = min(int(np.searchsorted(cum, level, side="left")), cum.size - 1)
        area = self.pixel_area_sr[rank]
        before = cum[k - 1] if k > 0 else 0.0
        step = cum[k] - before
        fraction = (level - before) / step if step > 0 else 1.0
        area_sr = float(area[:k].sum()) + float(area[k]) * min(max(fraction, 0.0), 1.0)
        return area_sr * SR_TO_DEG2

    def credible_levels(self) -> np.ndarray:
        """Greedy credible level of each pixel, in the map's row order.

        The level of a pixel is the probability of all pixels at least as
        dense as it (itself included): a position lies inside the 90% region
        when the level of its pixel is <= 0.9.

        Returns
        -------
        numpy.ndarray
            Probabilities in (0, 1], one per row.
        """
        rank, cum = self._greedy()
        levels = np.empty_like(cum)
        levels[rank] = cum
        return levels

    # -- positions -------------------------------------------------------------------

    def max_position(self) -> tuple[float, float]:
        """Centre of the pixel of highest probability density, ICRS degrees.

        Density rather than pixel probability: a coarse pixel holds more
        probability merely for being larger, while the densest pixel is the
        mode of the distribution at the map's resolution.

        Returns
        -------
        ra_deg, dec_deg
            Right ascension in [0, 360) and declination in [-90, 90], degrees.
        """
        import healpy

        i = int(np.argmax(self.probdensity))
        ra, dec = healpy.pix2ang(1 << int(self.order[i]), int(self.ipix[i]), nest=True,
                                 lonlat=True)
        return float(ra) % 360.0, float(dec)

    def pixel_at(self, ra_deg: float | np.ndarray, dec_deg: float | np.ndarray) -> np.ndarray:
        """Row index of the pixel holding each position, -1 where no pixel is listed.

        Parameters
        ----------
        ra_deg, dec_deg
            ICRS positions, degrees.

        Returns
        -------
        numpy.ndarray
            int64 row indices, shaped like the broadcast inputs.
        """
        import healpy

        # Each pixel is the contiguous range of its order-29 descendants, so one
        # sorted search answers the lookup for any mix of orders.
        shift = 2 * (MAX_ORDER - self.order)
        start = self.ipix << shift
        stop = (self.ipix + 1) << shift
        by_start = np.argsort(start)
        pix29 = np.asarray(healpy.ang2pix(1 << MAX_ORDER, ra_deg, dec_deg, nest=True,
                                          lonlat=True), dtype=np.int64)
        j = np.searchsorted(start[by_start], pix29, side="right") - 1
        row = by_start[np.clip(j, 0, None)]
        inside = (j >= 0) & (pix29 < stop[row])
        return np.where(inside, row, -1)

    def density_at(self, ra_deg: float | np.ndarray, dec_deg: float | np.ndarray) -> np.ndarray:
        """Probability density at positions (ICRS degrees), sr^-1, normalized; 0 off the map."""
        row = self.pixel_at(ra_deg, dec_deg)
        dens = self.probdensity / self.total_probability
        return np.where(row >= 0, dens[np.clip(row, 0, None)], 0.0)

    def credible_level_at(self, ra_deg: float | np.ndarray,
                          dec_deg: float | np.ndarray) -> np.ndarray:
        """Greedy credible level (probability, 0..1] of the pixel at positions; 1 off the map."""
        row = self.pixel_at(ra_deg, dec_deg)
        levels = self.credible_levels()
        return np.where(row >= 0, levels[np.clip(row, 0, None)], 1.0)


def _check_tiling(order: np.ndarray, ipix: np.ndarray, uniq: np.ndarray) -> None:
    """Raise MalformedInput when pixels repeat or one lies inside another."""
    # NUNIQ cannot name a pixel beyond 12 * 4**order, so only overlaps need checking.
    shift = 2 * (MAX_ORDER - order)
    start = ipix << shift
    stop = (ipix + 1) << shift
    by_start = np.argsort(start, kind="stable")
    s, e = start[by_start], stop[by_start]
    clash = np.nonzero(s[1:] < e[:-1])[0]
    if clash.size:
        a, b = uniq[by_start[clash[0]]], uniq[by_start[clash[0] + 1]]
        what = "repeats" if a == b else "overlaps"
        raise MalformedInput(f"sky map pixel UNIQ {int(b)} {what} pixel UNIQ {int(a)}")


# -- reading FITS ------------------------------------------------------------------


def read_multiorder(data: bytes, *, max_bytes: int = MAX_FITS_BYTES,
                    negative_tolerance: float = 0.0) -> MultiOrderMap:
    """Read a HEALPix sky map FITS file from bytes.

    Reads the first binary table with a ``UNIQ`` column (multi-order, NUNIQ
    ordering, ``PROBDENSITY`` in sr^-1 as LVK sends).  A single-resolution map
    (``ORDERING`` RING or NESTED, implicit indexing, ``PROB``/``PROBABILITY``
    per pixel or ``PROBDENSITY``; explicit ``PIXEL`` indexing too) is read
    as a stream, keeping only the probability column, and folded into the
    same form (:mod:`crossmatch.flatmap`): equal sibling pixels merge, so a
    map rasterized from a multi-order one gets its rows back, in bounded
    memory whatever its size (LVK's nside-2048 maps are 1.6 GB of rows).
    Gzip-compressed files are accepted.

    Parameters
    ----------
    data
        The FITS file (or its gzip), bytes.
    max_bytes
        Largest size accepted after decompression, bytes, for multi-order
        maps; a flat map is bounded instead by what its header declares
        (rows of an NSIDE up to 8192), which it may not exceed.
    negative_tolerance
        0 (the default) rejects any negative density.  Above 0, negative
        pixels (and healpy's ``UNSEEN`` marker) holding at most this fraction
        of the map's positive probability are set to 0 and noted, as
        smoothing leaves in some flat maps; see
        :func:`repair_negative_density`.

    Returns
    -------
    MultiOrderMap
        The map; ``meta`` holds the table header's descriptive cards and
        ``notes`` what astropy repaired in the header.

    Raises
    ------
    MalformedInput
        Not FITS, truncated, no HEALPix table, coordinates not equatorial,
        or values that do not make a map (see :class:`MultiOrderMap`).
    HostileInput
        Over ``max_bytes`` after decompression; a flat map whose NSIDE is no
        power of 2 up to 8192, whose rows do not fit it, or whose payload
        inflates past its declared size.
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise MalformedInput(f"sky map: expected bytes, got {type(data).__name__}")
    data = bytes(data)
    gzipped = data[:2] == _GZIP_MAGIC
    flat = _read_flat(data, gzipped, max_bytes)
    if flat is not None:
        uniq, dens, meta, notes = flat
        if negative_tolerance > 0:
            dens, repaired = repair_negative_density(uniq, dens, negative_tolerance)
            notes = (*notes, *repaired)
        return MultiOrderMap(uniq, dens, meta=meta, notes=notes)
    if gzipped:
        data = _gunzip(data, max_bytes)
    elif len(data) > max_bytes:
        raise HostileInput(f"sky map of {len(data)} bytes exceeds the {max_bytes}-byte limit")
    if not data.startswith(b"SIMPLE  ="):
        raise MalformedInput(f"sky map is not a FITS file (starts {data[:16]!r})")
    if len(data) % _FITS_BLOCK:
        # FITS files are whole 2880-byte blocks; anything else was cut short in transit.
        raise MalformedInput(f"sky map FITS is truncated or padded: {len(data)} bytes is not a "
                             f"multiple of {_FITS_BLOCK}")
    uniq, dens, meta, notes = _read_table(data)
    if negative_tolerance > 0:
        dens, repaired = repair_negative_density(uniq, dens, negative_tolerance)
        notes = (*notes, *repaired)
    return MultiOrderMap(uniq, dens, meta=meta, notes=notes)


def repair_negative_density(uniq: np.ndarray, probdensity: np.ndarray, tolerance: float
                            ) -> tuple[np.ndarray, list[str]]:
    """Clip slightly negative densities to zero, or refuse when they are not slight.

    Smoothing a map in spherical harmonics (as some flat GRB maps are made)
    rings slightly below zero far from the source; such pixels carry no
    information and are set to 0.  healpy's ``UNSEEN`` marker (-1.6375e30,
    "no data") is likewise read as 0.

    Parameters
    ----------
    uniq
        NUNIQ index of each pixel (for its area).
    probdensity
        Density of each pixel, sr^-1.
    tolerance
        Largest fraction of the positive probability the negative pixels
        may hold (sum of |density| * area); 0 accepts none.

    Returns
    -------
    probdensity, notes
        A repaired copy and what was done, for ``MultiOrderMap.notes``.

    Raises
    ------
    MalformedInput
        When the negative pixels hold more than ``tolerance``.
    """
    import healpy

    dens = np.array(probdensity, dtype=np.float64, copy=True).ravel()
    notes: list[str] = []
    unseen = dens == healpy.UNSEEN
    if unseen.any():
        dens[unseen] = 0.0
        notes.append(f"{int(unseen.sum())} UNSEEN pixels read as probability 0")
    negative = dens < 0
    if not negative.any():
        return dens, notes
    order, _ = uniq_to_order_ipix(np.asarray(uniq, dtype=np.int64).ravel())
    if order.shape != dens.shape:
        return dens, notes  # MultiOrderMap reports the mismatch
    area = (math.pi / 3.0) / np.power(4.0, np.clip(order, 0, MAX_ORDER))
    finite = np.isfinite(dens)
    positive = float(np.dot(np.where(finite & ~negative, dens, 0.0), area))
    lost = float(np.dot(np.where(finite & negative, -dens, 0.0), area))
    if not lost <= tolerance * positive:
        raise MalformedInput(f"sky map has {int(negative.sum())} negative PROBDENSITY values "
                             f"holding {lost:.3g} against {positive:.3g} positive probability "
                             f"(more than the {tolerance:g} tolerated)")
    dens[negative] = 0.0
    notes.append(f"{int(negative.sum())} negative pixels ({lost / positive:.2e} of the "
                 "probability) clipped to 0")
    return dens, notes


def _read_flat(data: bytes, gzipped: bool, max_bytes: int
               ) -> tuple[np.ndarray, np.ndarray, dict[str, Any], tuple[str, ...]] | None:
    """A flat map read streaming (see crossmatch.flatmap), or None when not a flat map."""
    from crossmatch.flatmap import _Fallback, read_flat

    try:
        flat = read_flat(data, gzipped=gzipped, max_bytes=max_bytes,
                         density_factor=_density_factor)
    except _Fallback:
        return None
    order, _ = uniq_to_order_ipix(flat.uniq)
    dens = flat.prob / ((math.pi / 3.0) / np.power(4.0, order))
    meta, notes = _header_meta(flat.header)
    return flat.uniq, dens, meta, (*flat.notes, *notes)


def _gunzip(data: bytes, max_bytes: int) -> bytes:
    """Decompress gzip with an output cap, so a small bomb cannot fill memory."""
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        out = inflater.decompress(data, max_bytes + 1)
    except zlib.error as exc:
        raise MalformedInput(f"sky map gzip is corrupt: {exc}") from exc
    if len(out) > max_bytes:
        raise HostileInput(f"sky map expands beyond the {max_bytes}-byte limit when gunzipped")
    if not inflater.eof:
        raise MalformedInput("sky map gzip is truncated")
    return out


def _read_table(data: bytes) -> tuple[np.ndarray, np.ndarray, dict[str, Any], tuple[str, ...]]:
    """UNIQ, PROBDENSITY (sr^-1), header meta and notes from a whole FITS file."""
    from astropy.io import fits
    from astropy.utils.exceptions import AstropyWarning

    notes: list[str] = []
    # astropy reports truncation and header repairs as warnings, not errors:
    # record them to decide here, since under a warnings-as-errors policy they
    # would otherwise surface as unrelated failures, or be lost in logs.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            with fits.open(io.BytesIO(data), memmap=False, lazy_load_hdus=False) as hdus:
                result = _extract(hdus)
        except MalformedInput:
            raise
        except Exception as exc:  # astropy raises many types on garbage; all mean "not FITS"
            truncated = [w for w in caught if "truncated" in str(w.message)]
            why = "truncated" if truncated else f"{type(exc).__name__}: {exc}"
            raise MalformedInput(f"sky map FITS unreadable: {why}"[:500]) from exc
    for w in caught:
        text = str(w.message).replace("\n", " ").strip()
        if "truncated" in text:
            raise MalformedInput(f"sky map FITS is truncated: {text}"[:500])
        if issubclass(w.category, AstropyWarning):  # VerifyWarning: header repaired
            notes.append(f"FITS: {text}"[:300])
        else:  # not astropy's message about the file: a library problem, keep it visible
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    uniq, dens, meta, extra_notes = result
    return uniq, dens, meta, tuple(notes + extra_notes)


def _extract(hdus: Any) -> tuple[np.ndarray, np.ndarray, dict[str, Any], list[str]]:
    """Find the HEALPix table among open HDUs and copy its columns out."""
    from astropy.io.fits import BinTableHDU

    tables = [h for h in hdus if isinstance(h, BinTableHDU)]
    if not tables:
        raise MalformedInput("sky map FITS holds no binary table")
    for hdu in tables:
        names = [n.upper() for n in hdu.columns.names]
        ordering = str(hdu.header.get("ORDERING", "")).strip().upper()
        if "UNIQ" in names or ordering == "NUNIQ":
            return _multiorder_columns(hdu, names)
        if ordering in ("RING", "NESTED"):
            return _flat_columns(hdu, names, ordering)
    raise MalformedInput("sky map FITS has no HEALPix table (no UNIQ column, no ORDERING "
                         "RING/NESTED)")


def _header_meta(header: Any) -> tuple[dict[str, Any], list[str]]:
    """Descriptive header cards as JSON scalars, and notes on cards skipped; frame checked."""
    from astropy.io.fits.verify import VerifyError

    coordsys = str(header.get("COORDSYS", "C")).strip().upper()
    if coordsys not in ("C", "CEL", "EQ", "ICRS", ""):
        raise MalformedInput(f"sky map COORDSYS {coordsys!r} is not celestial (C): "
                             "rotating maps is not supported")
    meta: dict[str, Any] = {}
    notes: list[str] = []
    for card in header.cards:
        key = card.keyword
        if _STRUCTURAL.match(key) or key in meta:
            continue
        try:
            value = card.value
        except VerifyError:
            # One garbled descriptive card (DISTMEAN= 39.5abc) should not cost the map.
            notes.append(f"FITS: header card {key} unparsable, skipped")
            continue
        if isinstance(value, bool | int | str) or (isinstance(value, float)
                                                   and math.isfinite(value)):
            meta[key] = value.strip() if isinstance(value, str) else value
    return meta, notes


def _column(hdu: Any, names: list[str], name: str) -> tuple[np.ndarray, str]:
    """A column's values (native byte order) and its TUNIT, by case-insensitive name."""
    idx = names.index(name)
    col = hdu.columns[idx]
    values = np.asarray(hdu.data.field(idx))
    return values, str(col.unit or "").strip()


def _density_factor(unit: str) -> float:
    factor = _DENSITY_UNITS.get(unit.replace(" ", "").lower())
    if factor is None:
        raise MalformedInput(f"sky map PROBDENSITY unit {unit!r} is not a density per solid angle")
    return factor


def _multiorder_columns(hdu: Any, names: list[str]
                        ) -> tuple[np.ndarray, np.ndarray, dict[str, Any], list[str]]:
    if hdu.data is None or "UNIQ" not in names or "PROBDENSITY" not in names:
        raise MalformedInput(f"multi-order sky map needs UNIQ and PROBDENSITY columns, has "
                             f"{names}")
    uniq, _ = _column(hdu, names, "UNIQ")
    dens, unit = _column(hdu, names, "PROBDENSITY")
    if uniq.ndim != 1 or dens.ndim != 1:
        raise MalformedInput("multi-order sky map columns must hold one value per row")
    if not np.issubdtype(uniq.dtype, np.integer):
        raise MalformedInput(f"sky map UNIQ column is {uniq.dtype}, not integers")
    if not np.issubdtype(dens.dtype, np.number):
        raise MalformedInput(f"sky map PROBDENSITY column is {dens.dtype}, not numbers")
    factor = _density_factor(unit)
    meta, notes = _header_meta(hdu.header)
    return uniq.astype(np.int64), dens.astype(np.float64) * factor, meta, notes


def _flat_columns(hdu: Any, names: list[str], ordering: str
                  ) -> tuple[np.ndarray, np.ndarray, dict[str, Any], list[str]]:
    import healpy

    if str(hdu.header.get("INDXSCHM", "IMPLICIT")).strip().upper() != "IMPLICIT":
        raise MalformedInput("flat sky maps with explicit pixel indices are not supported")
    if hdu.data is None:
        raise MalformedInput("flat sky map table is empty")
    per_pixel = next((n for n in _FLAT_PROB_COLUMNS if n in names), None)
    if per_pixel is None and "PROBDENSITY" not in names:
        raise MalformedInput(f"flat sky map needs a PROB, PROBABILITY or PROBDENSITY column, "
                             f"has {names}")
    values, unit = _column(hdu, names, per_pixel or "PROBDENSITY")
    if not np.issubdtype(values.dtype, np.number):
        raise MalformedInput(f"sky map probability column is {values.dtype}, not numbers")
    # healpy writes flat maps as rows of 1024 pixels: flatten row-major.
    values = values.astype(np.float64).ravel()
    npix = values.size
    nside = int(hdu.header.get("NSIDE", 0)) or round(math.sqrt(npix / 12))
    if nside < 1 or nside & (nside - 1) or 12 * nside * nside != npix:
        raise MalformedInput(f"flat sky map has {npix} pixels, not 12 * nside**2 for a power-of-2 "
                             f"nside (NSIDE={hdu.header.get('NSIDE')!r})")
    order = nside.bit_length() - 1
    ipix = np.arange(npix, dtype=np.int64)
    if ordering == "RING":
        # Row i is RING pixel i; its NESTED index is what NUNIQ needs.
        ipix = np.asarray(healpy.ring2nest(nside, ipix), dtype=np.int64)
    if per_pixel is not None:
        dens = values / healpy.nside2pixarea(nside)
    else:
        dens = values * _density_factor(unit)
    uniq = ipix + 4 * (1 << (2 * order))
    meta, notes = _header_meta(hdu.header)
    return uniq, dens, meta, [f"flat {ordering} map, nside {nside}", *notes]
