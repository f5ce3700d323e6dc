"""The live index: alerts of the recent past held in memory for the cross-match engine.

The engine asks, on every alert arrival, which earlier alerts fall in a time
window and (for localized alerts) in a cone or a sky-map region.  This module
answers those questions from memory for the *live window* (the last
``window_s`` seconds of event time); longer look-backs go to the archive,
and :meth:`LiveIndex.covers` says which side of that line a query falls on.

Data structure
--------------
Every alert gets a *slot* (an integer) in a set of per-slot numpy columns
(event time, RA, Dec, order-29 NESTED pixel ``hpx29``, error radius, messenger
code, alive flag).  Slots are ordered for lookup by a 63-bit compound key::

    key = coarse_pixel << TBITS | quantized_event_time

where ``coarse_pixel = hpx29 >> 2 * (29 - coarse_order)`` is the NESTED pixel
at the coarse order (a prefix of ``hpx29``; alerts without a position get one
extra pixel number past the last real one).  Sorting by this key groups the
alerts by coarse pixel and sorts each group by time, so "coarse pixel p,
times in [t_lo, t_hi]" is two binary searches, and a whole list of pixels is
one vectorized :func:`numpy.searchsorted`.  Each batch of slots also keeps a
second, time-sorted order, which answers pure time windows and large sky
regions (an LVK 90% region) as one contiguous slice.

Insertions go to a small append buffer (scanned linearly by queries); a full
buffer becomes a sorted *run*, and runs merge log-structured fashion (a run
absorbs the next smaller one while it is less than ``fanout`` times larger),
so there are only a handful of runs and each alert is copied
``O(fanout * log(N))`` times in all.  Removal and expiry clear the alive flag;
dead rows are dropped at the next merge, and a full rewrite happens once they
reach half the rows.  Slots are recycled only after no run refers to them.

Queries filter exactly: times with inclusive bounds on the float event time,
cones by :func:`crossmatch.healpix.angular_separation_deg` on the stored
RA/Dec, pixel regions by ``hpx29``, and, when asked, messengers by their code
(before any entry is built: a GRB's window holds thousands of optical alerts).
The coarse lookup only narrows the candidates; quantized times and coarse
pixels are never trusted alone.

Thread safety
-------------
None: a :class:`LiveIndex` must be used from one thread at a time (the
engine calls it from its single worker thread).  Queries do not mutate the
index, so concurrent *readers* with no writer are safe, but nothing enforces
that; wrap it in a lock if more than one thread can reach it.

Function-local imports: healpy (about 0.7 s to import, matplotlib with it) is
imported by the method that uses it, deferred so that a process that never
holds a sky map starts without it.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from crossmatch.healpix import (
    MAX_ORDER,
    NPIX_29,
    angular_separation_deg,
    nested29,
    order_for_radius,
)

__all__ = ["IndexedAlert", "LiveIndex", "nuniq_to_ranges"]

_TIME_SPAN_LOG2 = 34
"""Quantized times cover Unix seconds [0, 2**34) (1970 to 2514); others clamp (still exact)."""

_MIN_COARSE, _MAX_COARSE = 3, 16
_PIXEL_COST = 8.0
"""Cost of one per-pixel binary search in units of one candidate row filtered (a rough
estimate; at 1M alerts the automatic choice was within 5% of the best forced plan)."""
_NO_HPX = -1
SCAN_BELOW = 256
"""An index holding at most this many alerts answers a cone by testing every alert of the
time window exactly (a cone's pixel ranges cost more than the test, about 0.3 ms)."""
_MAX_PIXEL_PLAN = 1 << 22
"""Most coarse pixels a query may expand into for per-pixel searches."""
# NUNIQ values at which each order starts: order k covers [4**(k+1), 4**(k+2)).
_UNIQ_STARTS = np.array([4 ** (k + 1) for k in range(MAX_ORDER + 2)], dtype=np.int64)


@dataclass(frozen=True, slots=True)
class IndexedAlert:
    """One alert as the live index holds it.

    Parameters
    ----------
    key
        Unique key, the alert's IVORN; adding a second alert with the same key
        replaces the first.
    stream
        Source stream the alert came from (e.g. ``gcn.fermi.gbm``).
    messenger
        Messenger (``gravitational_wave``, ``neutrino``, ``gamma_ray``, ...).
    facility
        Facility or instrument.
    role
        ``observation``, ``test`` or ``drill``; the index does not mix or filter
        them, the engine does.
    event_time_s
        Event (trigger) time, Unix seconds UTC; finite.
    ra_deg, dec_deg
        Best position, ICRS degrees, or both None for alerts without a position
        (those are found by :meth:`LiveIndex.in_time` only).
    hpx29
        Order-29 NESTED HEALPix pixel of (``ra_deg``, ``dec_deg``); computed
        when None and a position is given.  When given it must match the
        position: cone lookups find candidates by this pixel, then filter on
        RA/Dec.
    radius_deg
        Error radius to search with, degrees (>= 0), or None.
    payload
        Anything the engine wants back with the alert (not compared, not hashed).
    """

    key: str
    stream: str
    messenger: str
    facility: str
    role: str
    event_time_s: float
    ra_deg: float | None = None
    dec_deg: float | None = None
    hpx29: int | None = None
    radius_deg: float | None = None
    payload: Any = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if not math.isfinite(self.event_time_s):
            raise ValueError(f"{self.key}: event_time_s must be finite, got {self.event_time_s!r}")
        if (self.ra_deg is None) != (self.dec_deg is None):
            raise ValueError(f"{self.key}: give both ra_deg and dec_deg, or neither")
        if self.ra_deg is None:
            if self.hpx29 is not None:
                raise ValueError(f"{self.key}: hpx29 given without a position")
        else:
            assert self.dec_deg is not None
            if not (math.isfinite(self.ra_deg) and -90.0 <= self.dec_deg <= 90.0):
                raise ValueError(f"{self.key}: position ({self.ra_deg!r}, {self.dec_deg!r}) "
                                 "is not finite ICRS degrees")
            if self.hpx29 is None:
                object.__setattr__(self, "hpx29", nested29(self.ra_deg, self.dec_deg))
            elif not 0 <= self.hpx29 < NPIX_29:
                raise ValueError(f"{self.key}: hpx29 {self.hpx29} outside order 29")
        if self.radius_deg is not None and not self.radius_deg >= 0.0:
            raise ValueError(f"{self.key}: radius_deg must be >= 0, got {self.radius_deg!r}")


def nuniq_to_ranges(uniq: Iterable[int] | np.ndarray) -> np.ndarray:
    """Order-29 index ranges covered by NUNIQ pixels, as :meth:`LiveIndex.in_pixels` takes.

    Parameters
    ----------
    uniq
        NUNIQ indices (``4 * 4**order + ipix``, orders 0..29), e.g. the pixels
        of a sky map's 90% credible region.

    Returns
    -------
    numpy.ndarray
        ``(n, 2)`` int64 array of inclusive ``[lo, hi]`` order-29 NESTED index
        ranges, sorted, merged where they touch.
    """
    u = (uniq if isinstance(uniq, np.ndarray)
         else np.fromiter(uniq, dtype=np.int64)).astype(np.int64).ravel()
    if u.size == 0:
        return np.empty((0, 2), dtype=np.int64)
    if (u < 4).any():
        raise ValueError("NUNIQ indices start at 4")
    # Integer search, not log2: floating point rounds wrongly for indices near 2**62.
    order = np.searchsorted(_UNIQ_STARTS, u, side="right").astype(np.int64) - 1
    if (order > MAX_ORDER).any():
        raise ValueError("NUNIQ index beyond order 29")
    ipix = u - (np.int64(4) << (2 * order))
    shift = 2 * (MAX_ORDER - order)
    return _merge(ipix << shift, ((ipix + 1) << shift) - 1)


def _merge(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Sort inclusive integer ranges and merge those that overlap or touch, vectorized."""
    if lo.size == 0:
        return np.empty((0, 2), dtype=np.int64)
    order = np.argsort(lo, kind="stable")
    lo, hi = lo[order], hi[order]
    reach = np.maximum.accumulate(hi)
    # A range starts a new group when it begins beyond everything before it (+1: touching).
    start = np.empty(lo.size, dtype=bool)
    start[0] = True
    start[1:] = lo[1:] > reach[:-1] + 1
    first = np.flatnonzero(start)
    last = np.append(first[1:] - 1, lo.size - 1)
    return np.stack([lo[first], reach[last]], axis=1)


def _expand(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """All integers in the inclusive ranges ``[lo, hi]``, concatenated (vectorized)."""
    lengths = hi - lo + 1
    total = int(lengths.sum())
    if total == 0:
        return np.empty(0, dtype=np.int64)
    offsets = np.repeat(lo - np.concatenate(([0], np.cumsum(lengths)[:-1])), lengths)
    return offsets + np.arange(total, dtype=np.int64)


def _gather(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Positions of the half-open spans ``[a, b)``, concatenated."""
    keep = b > a
    return _expand(a[keep], b[keep] - 1) if keep.any() else np.empty(0, dtype=np.int64)


def _in_ranges(values: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Mask of ``values`` inside any of the sorted, disjoint inclusive ranges."""
    j = np.searchsorted(lo, values, side="right") - 1
    return (j >= 0) & (values <= hi[np.maximum(j, 0)])


class _Run:
    """An immutable batch of slots in two orders: by compound key, and by event time."""

    __slots__ = ("expired_upto", "hpx_by_t", "key", "max_radius", "slot", "slot_by_t",
                 "t_sorted")

    def __init__(self, key: np.ndarray, slot: np.ndarray, t_sorted: np.ndarray,
                 slot_by_t: np.ndarray, hpx_by_t: np.ndarray, max_radius: np.ndarray) -> None:
        self.key = key
        self.slot = slot
        self.t_sorted = t_sorted
        self.slot_by_t = slot_by_t
        self.hpx_by_t = hpx_by_t
        # Largest error radius (deg) of the run's rows, by messenger code (0 past the end).
        self.max_radius = max_radius
        # Rows before this position in time order are known dead (expired).
        self.expired_upto = 0

    def __len__(self) -> int:
        return int(self.slot.size)


class LiveIndex:
    """Alerts of the live window, indexed by time and sky position.

    Parameters
    ----------
    window_s
        Live window, seconds of event time: the index keeps every alert whose
        event time is within ``window_s`` of the newest time seen (the newest
        event time added, or the ``now_s`` passed to :meth:`add`).  Older ones
        are expired in sweeps, so up to ``window_s / 32`` more may linger;
        :meth:`covers` reports the exact horizon.
    coarse_order
        HEALPix order of the coarse lookup pixels (3..16).  The default 6
        (0.92 deg pixels, 49,152 of them) suits a million alerts and cones of
        arcseconds to tens of degrees; raise it for much denser indexes.
    complete_since_s
        Event time, Unix seconds, from which the caller guarantees to add
        every alert (e.g. the start of an archive warm-up, or the process start
        when there is none).  Default ``-inf``: the caller feeds everything.
        :meth:`covers` never claims more than this.
    buffer_size, fanout
        Tuning of the log-structured runs: new alerts are scanned linearly
        until ``buffer_size`` of them become a sorted run; a run absorbs the
        next smaller one while it is less than ``fanout`` times its size.

    Notes
    -----
    Not thread-safe: use from one thread (see the module docstring).
    Production callers should pass the wall clock as ``now_s`` to
    :meth:`add`: otherwise the newest *event* time drives expiry, and one
    alert dated in the future would expire the whole window.
    """

    def __init__(self, window_s: float, coarse_order: int = 6, *,
                 complete_since_s: float = -math.inf, buffer_size: int = 2048,
                 fanout: int = 8) -> None:
        if not (window_s > 0 and math.isfinite(window_s)):
            raise ValueError(f"window_s must be positive and finite, got {window_s!r}")
        if not _MIN_COARSE <= coarse_order <= _MAX_COARSE:
            raise ValueError(f"coarse_order must be in {_MIN_COARSE}..{_MAX_COARSE}")
        if math.isnan(complete_since_s):
            raise ValueError("complete_since_s must not be NaN")
        if buffer_size < 1 or fanout < 2:
            raise ValueError("buffer_size must be >= 1 and fanout >= 2")
        self.window_s = float(window_s)
        self.coarse_order = coarse_order
        self._buffer_size = buffer_size
        self._fanout = fanout
        self._shift = 2 * (MAX_ORDER - coarse_order)
        self._no_pos = 12 << (2 * coarse_order)  # coarse "pixel" of alerts without a position
        # The key must stay below 2**63: coarse pixels need 4 + 2k bits.
        self._tbits = 59 - 2 * coarse_order
        self._tscale = 2.0 ** (self._tbits - _TIME_SPAN_LOG2)  # a power of 2: exact products
        self._tmax = float((1 << self._tbits) - 1)  # exactly representable: tbits <= 53
        self._newest = -math.inf
        self._horizon = float(complete_since_s)
        self._sweep_every = self.window_s / 32.0
        # Per-slot columns, grown by doubling.
        cap = 1024
        self._t = np.zeros(cap)
        self._ra = np.zeros(cap)
        self._dec = np.zeros(cap)
        self._hpx = np.full(cap, _NO_HPX, dtype=np.int64)
        self._rad = np.zeros(cap)
        self._key = np.zeros(cap, dtype=np.int64)
        self._alive = np.zeros(cap, dtype=bool)
        # Messenger of each slot as a small code: lookups that want one messenger (a
        # GRB window full of optical transients) drop the rest before building entries.
        self._msg = np.zeros(cap, dtype=np.int16)
        self._msg_code: dict[str, int] = {}
        self._objs: list[IndexedAlert | None] = []
        self._free: list[int] = []
        self._slot_of: dict[str, int] = {}
        self._dead = 0  # dead slots still referenced by a run or the buffer
        self._buf = np.zeros(buffer_size, dtype=np.int64)
        self._nbuf = 0
        self._runs: list[_Run] = []
        self._plan: str | None = None  # test hook: force "time", "span" or "pixel"

    # -- state ------------------------------------------------------------------------

    def __len__(self) -> int:
        """Number of live alerts held."""
        return len(self._slot_of)

    def __contains__(self, key: object) -> bool:
        return key in self._slot_of

    def get(self, key: str) -> IndexedAlert | None:
        """The live alert with this key, or None."""
        slot = self._slot_of.get(key)
        return None if slot is None else self._objs[slot]

    @property
    def horizon_s(self) -> float:
        """Event time (Unix s) since which the index holds every alert added; see :meth:`covers`."""
        return self._horizon

    @property
    def newest_s(self) -> float:
        """Newest time seen (event time or ``now_s``), Unix seconds; -inf when empty."""
        return self._newest

    def covers(self, t_lo_s: float) -> bool:
        """Whether the index holds every alert with event time >= ``t_lo_s`` (Unix s).

        False means a query reaching back to ``t_lo_s`` must go to the archive
        (the index has expired, or never held, some of that time).
        """
        return t_lo_s >= self._horizon

    # -- writes -----------------------------------------------------------------------

    def add(self, entry: IndexedAlert, *, now_s: float | None = None) -> bool:
        """Add (or replace, by key) one alert.

        Parameters
        ----------
        entry
            The alert.
        now_s
            Current time, Unix seconds (the wall clock in production); advances
            the live window.  Without it the newest event time does.

        Returns
        -------
        bool
            True when held; False when its event time is before the horizon
            (already expired: the archive answers for it).
        """
        t = entry.event_time_s
        if now_s is not None and math.isnan(now_s):
            raise ValueError("now_s must not be NaN")
        newest = max(self._newest, t if now_s is None else now_s)
        if newest > self._newest:
            self._newest = newest
            cutoff = newest - self.window_s
            if cutoff > self._horizon + self._sweep_every:
                self.expire(cutoff)
        if t < self._horizon:
            return False
        old = self._slot_of.get(entry.key)
        if old is not None:
            self._kill(old)
        if self._free:
            slot = self._free.pop()
        else:
            slot = len(self._objs)
            if slot == self._t.size:
                self._grow()
            self._objs.append(None)
        self._objs[slot] = entry
        self._slot_of[entry.key] = slot
        self._t[slot] = t
        hpx = entry.hpx29
        if hpx is None:
            self._hpx[slot] = _NO_HPX
            coarse = self._no_pos
        else:
            self._ra[slot] = entry.ra_deg
            self._dec[slot] = entry.dec_deg
            self._hpx[slot] = hpx
            coarse = hpx >> self._shift
        self._rad[slot] = entry.radius_deg or 0.0
        self._msg[slot] = self._msg_code.setdefault(entry.messenger, len(self._msg_code))
        self._key[slot] = (coarse << self._tbits) | self._tq(t)
        self._alive[slot] = True
        self._buf[self._nbuf] = slot
        self._nbuf += 1
        if self._nbuf == self._buffer_size:
            self._flush()
        return True

    def extend(self, entries: Iterable[IndexedAlert], *, now_s: float | None = None) -> int:
        """Add many alerts (a warm-up from the archive); returns how many are held."""
        held = 0
        for entry in entries:
            held += self.add(entry, now_s=now_s)
        return held

    def remove(self, key: str) -> bool:
        """Remove the alert with this key (e.g. retracted); True if it was held."""
        slot = self._slot_of.get(key)
        if slot is None:
            return False
        self._kill(slot)
        self._maybe_rewrite()
        return True

    def expire(self, older_than_s: float) -> int:
        """Drop every alert with event time < ``older_than_s`` (Unix s); returns how many.

        The horizon (see :meth:`covers`) moves up to ``older_than_s``; later
        :meth:`add` calls for older alerts return False.
        """
        if math.isnan(older_than_s):
            raise ValueError("older_than_s must not be NaN")
        if older_than_s <= self._horizon:
            return 0
        self._horizon = float(older_than_s)
        dead: list[np.ndarray] = []
        for run in self._runs:
            j = int(np.searchsorted(run.t_sorted, older_than_s, side="left"))
            if j > run.expired_upto:
                dead.append(run.slot_by_t[run.expired_upto:j])
                run.expired_upto = j
        buf = self._buf[:self._nbuf]
        dead.append(buf[self._t[buf] < older_than_s])
        slots = np.concatenate(dead)
        slots = slots[self._alive[slots]]
        for slot in slots.tolist():
            self._kill(slot)
        self._maybe_rewrite()
        return int(slots.size)

    # -- queries ----------------------------------------------------------------------

    def in_time(self, t_lo_s: float, t_hi_s: float, *,
                messengers: Collection[str] | None = None) -> list[IndexedAlert]:
        """Alerts with ``t_lo_s <= event_time_s <= t_hi_s`` (Unix s), with or without position.

        Parameters
        ----------
        t_lo_s, t_hi_s
            Inclusive event-time bounds, Unix seconds.
        messengers
            Only alerts of these messengers (``IndexedAlert.messenger``); None: all.

        Returns
        -------
        list of IndexedAlert
            Sorted by event time.
        """
        _check_window(t_lo_s, t_hi_s)
        if not self._holds_any(messengers):
            return []
        return self._entries(self._of(self._time_slots(t_lo_s, t_hi_s), messengers))

    def _time_slots(self, t_lo_s: float, t_hi_s: float) -> np.ndarray:
        """Slots (alive or not) with ``t_lo_s <= event_time_s <= t_hi_s`` (Unix s)."""
        parts = []
        for run in self._runs:
            a = int(np.searchsorted(run.t_sorted, t_lo_s, side="left"))
            b = int(np.searchsorted(run.t_sorted, t_hi_s, side="right"))
            parts.append(run.slot_by_t[a:b])
        buf = self._buf[:self._nbuf]
        tb = self._t[buf]
        parts.append(buf[(tb >= t_lo_s) & (tb <= t_hi_s)])
        return np.concatenate(parts)

    def unlocalized(self, t_lo_s: float, t_hi_s: float) -> list[IndexedAlert]:
        """Alerts without a position with ``t_lo_s <= event_time_s <= t_hi_s`` (Unix s):
        those cone and pixel lookups never return.

        One key range per run (positionless alerts share one coarse pixel), so
        the cost is theirs, not the window's.

        Returns
        -------
        list of IndexedAlert
            Sorted by event time.
        """
        _check_window(t_lo_s, t_hi_s)
        base = self._no_pos << self._tbits
        lo, hi = base | self._tq(t_lo_s), base | self._tq(t_hi_s)
        parts = [run.slot[int(np.searchsorted(run.key, lo, side="left")):
                          int(np.searchsorted(run.key, hi, side="right"))]
                 for run in self._runs]
        parts.append(self._buf[:self._nbuf])
        slots = np.concatenate(parts)
        t = self._t[slots]
        return self._entries(slots[(t >= t_lo_s) & (t <= t_hi_s)
                                   & (self._hpx[slots] == _NO_HPX)])

    def in_cone(self, ra_deg: float, dec_deg: float, radius_deg: float, t_lo_s: float,
                t_hi_s: float, *, add_entry_radius: bool = False,
                messengers: Collection[str] | None = None) -> list[IndexedAlert]:
        """Alerts within ``radius_deg`` of a position and in a time window.

        Parameters
        ----------
        ra_deg, dec_deg
            Cone centre, ICRS degrees.
        radius_deg
            Cone radius, degrees (>= 0; 180 or more is the whole sky).
        t_lo_s, t_hi_s
            Inclusive event-time bounds, Unix seconds.
        add_entry_radius
            When True an alert matches if the separation is within
            ``radius_deg`` plus the alert's own ``radius_deg`` (error circles
            that touch); the lookup then widens by the largest radius held.
        messengers
            Only alerts of these messengers; None: all.

        Returns
        -------
        list of IndexedAlert
            Positioned alerts with angular separation <= the radius (great
            circle, :func:`~crossmatch.healpix.angular_separation_deg` on the
            stored RA/Dec), sorted by event time.
        """
        _check_window(t_lo_s, t_hi_s)
        if not (math.isfinite(ra_deg) and -90.0 <= dec_deg <= 90.0):
            raise ValueError(f"cone centre ({ra_deg!r}, {dec_deg!r}) is not ICRS degrees")
        if not radius_deg >= 0.0:
            raise ValueError(f"cone radius must be >= 0, got {radius_deg!r}")
        if not self._holds_any(messengers):
            return []
        if len(self) <= SCAN_BELOW:
            # A handful held (the rare set a survey alert looks back to): every one in the
            # window is tested exactly, without the cone's pixel ranges (which only ever
            # narrow the candidates the exact test below decides on).
            slots = self._time_slots(t_lo_s, t_hi_s)
            slots = slots[self._hpx[slots] != _NO_HPX]  # (positioned ones only)
        else:
            slots = self._select(self._cone_ranges(ra_deg, dec_deg, radius_deg + (
                self._widest(self._buf[:self._nbuf], messengers) if add_entry_radius
                else 0.0)), t_lo_s, t_hi_s)
        slots = self._of(slots, messengers)
        if slots.size:
            sep = np.atleast_1d(angular_separation_deg(ra_deg, dec_deg, self._ra[slots],
                                                       self._dec[slots]))
            limit = radius_deg + self._rad[slots] if add_entry_radius else radius_deg
            slots = slots[sep <= limit]
        return self._entries(slots)

    def _cone_ranges(self, ra_deg: float, dec_deg: float, search_deg: float) -> np.ndarray:
        """Merged order-29 ranges of pixels covering a cone of ``search_deg`` (a superset)."""
        import healpy

        if search_deg >= 170.0:
            # healpy's inclusive disc misses pixels near the antipode of a disc this wide
            # (hypothesis: 179.99 deg lost an alert 1 deg from it); it reads nearly every
            # row anyway.
            return np.array([[0, NPIX_29 - 1]], dtype=np.int64)
        # Pixels about radius/8 across (a few hundred per cone), never finer than
        # the coarse order: finer would only split lookups the coarse key answers.
        order = min(self.coarse_order, order_for_radius(search_deg) + 2)
        vec = healpy.ang2vec(ra_deg, dec_deg, lonlat=True)
        pix = np.sort(healpy.query_disc(1 << order, vec, math.radians(max(search_deg, 1e-9)),
                                        inclusive=True, nest=True)).astype(np.int64)
        shift = 2 * (MAX_ORDER - order)
        return _merge(pix << shift, ((pix + 1) << shift) - 1)

    def in_pixels(self, ranges_29: Sequence[tuple[int, int]] | np.ndarray, t_lo_s: float,
                  t_hi_s: float, *, messengers: Collection[str] | None = None
                  ) -> list[IndexedAlert]:
        """Alerts whose ``hpx29`` lies in order-29 index ranges, in a time window.

        Parameters
        ----------
        ranges_29
            Inclusive ``(lo, hi)`` order-29 NESTED index ranges, e.g. a sky
            map's credible region from :func:`nuniq_to_ranges` or
            :func:`crossmatch.healpix.cone_ranges`; any order, overlaps allowed.
        t_lo_s, t_hi_s
            Inclusive event-time bounds, Unix seconds.
        messengers
            Only alerts of these messengers; None: all.

        Returns
        -------
        list of IndexedAlert
            Sorted by event time.
        """
        _check_window(t_lo_s, t_hi_s)
        r = np.asarray(ranges_29, dtype=np.int64).reshape(-1, 2)
        if r.size and ((r[:, 0] > r[:, 1]).any() or r.min() < 0 or r.max() >= NPIX_29):
            raise ValueError("ranges_29 must be (lo, hi) pairs with 0 <= lo <= hi < 12 * 4**29")
        if not self._holds_any(messengers):
            return []
        return self._entries(self._of(self._select(_merge(r[:, 0], r[:, 1]), t_lo_s, t_hi_s),
                                      messengers))

    # -- internals --------------------------------------------------------------------

    def _tq(self, t: float) -> int:
        """Quantized time for the compound key: monotone, so key bounds stay supersets."""
        # Clamp before floor: the query bounds may be infinite.
        return math.floor(min(max(t * self._tscale, 0.0), self._tmax))

    def _tq_array(self, t: np.ndarray) -> np.ndarray:
        return np.clip(np.floor(t * self._tscale), 0.0, self._tmax).astype(np.int64)

    def _select(self, ranges: np.ndarray, t_lo: float, t_hi: float) -> np.ndarray:
        """Alive slots with t_lo <= t <= t_hi and hpx29 in the merged inclusive ``ranges``."""
        if ranges.size == 0 or t_lo > t_hi:
            return np.empty(0, dtype=np.int64)
        lo29, hi29 = ranges[:, 0], ranges[:, 1]
        coarse = _merge(lo29 >> self._shift, hi29 >> self._shift)
        c_lo, c_hi = coarse[:, 0], coarse[:, 1]
        n_pix = int((c_hi - c_lo).sum()) + len(coarse)
        tb = self._tbits
        q_lo, q_hi = self._tq(t_lo), self._tq(t_hi)
        pixels: np.ndarray | None = None
        parts: list[np.ndarray] = []
        for run in self._runs:
            # Three ways to the same candidates; take the one touching fewest rows.
            n_run = len(run)
            ta = int(np.searchsorted(run.t_sorted, t_lo, side="left"))
            tz = int(np.searchsorted(run.t_sorted, t_hi, side="right"))
            sa = np.searchsorted(run.key, c_lo << tb, side="left")
            sz = np.searchsorted(run.key, (c_hi + 1) << tb, side="left")
            n_span = int((sz - sa).sum())
            n_time = tz - ta
            cost_pixel = (n_pix * _PIXEL_COST + n_span * (n_time / max(n_run, 1))
                          if n_pix <= _MAX_PIXEL_PLAN else math.inf)
            plan = min((n_time, "time"), (n_span, "span"), (cost_pixel, "pixel"))[1]
            if self._plan and (self._plan != "pixel" or n_pix <= _MAX_PIXEL_PLAN):
                plan = self._plan
            if plan == "time":
                hpx = run.hpx_by_t[ta:tz]
                parts.append(run.slot_by_t[ta:tz][_in_ranges(hpx, lo29, hi29)])
                continue
            if plan == "span":
                pos = _gather(sa, sz)
            else:
                if pixels is None:
                    pixels = _expand(c_lo, c_hi) << tb
                a = np.searchsorted(run.key, pixels | q_lo, side="left")
                z = np.searchsorted(run.key, pixels | q_hi, side="right")
                pos = _gather(a, z)
            slots = run.slot[pos]
            t = self._t[slots]
            keep = (t >= t_lo) & (t <= t_hi)
            slots = slots[keep]
            parts.append(slots[_in_ranges(self._hpx[slots], lo29, hi29)])
        buf = self._buf[:self._nbuf]
        t = self._t[buf]
        buf = buf[(t >= t_lo) & (t <= t_hi)]
        parts.append(buf[_in_ranges(self._hpx[buf], lo29, hi29)])
        slots = np.concatenate(parts)
        alive: np.ndarray = slots[self._alive[slots]]
        return alive

    def _holds_any(self, messengers: Collection[str] | None) -> bool:
        """Whether an alert of ``messengers`` (None: any) was ever added: a lookup for
        messengers this index never held (a GRB tier asked for optical transients) is
        answered without touching a row."""
        return messengers is None or any(m in self._msg_code for m in messengers)

    def _widest(self, buf: np.ndarray, messengers: Collection[str] | None) -> float:
        """Largest error radius (deg) held of ``messengers`` (None: all); ``buf``: the
        buffer's slots.  An upper bound: dead rows of a run still count."""
        if messengers is None:
            codes = list(range(len(self._msg_code)))
        else:
            codes = [self._msg_code[m] for m in messengers if m in self._msg_code]
        widest = 0.0
        for run in self._runs:
            known = [c for c in codes if c < run.max_radius.size]  # (codes newer than run)
            if known:
                widest = max(widest, float(run.max_radius[known].max()))
        buf = self._of(buf, messengers)
        return max(widest, float(self._rad[buf].max()) if buf.size else 0.0)

    def _of(self, slots: np.ndarray, messengers: Collection[str] | None) -> np.ndarray:
        """The ``slots`` whose messenger is one of ``messengers`` (None: all)."""
        if messengers is None:
            return slots
        codes = [self._msg_code[m] for m in messengers if m in self._msg_code]
        if not codes:
            return slots[:0]
        msg = self._msg[slots]
        keep: np.ndarray = msg == codes[0]
        for code in codes[1:]:
            keep |= msg == code
        kept: np.ndarray = slots[keep]
        return kept

    def _entries(self, slots: np.ndarray) -> list[IndexedAlert]:
        """The alive alerts in ``slots``, sorted by event time (ties by slot)."""
        slots = slots[self._alive[slots]]
        if slots.size > 1:
            slots = slots[np.lexsort((slots, self._t[slots]))]
        objs = self._objs
        return [objs[s] for s in slots.tolist()]

    def _kill(self, slot: int) -> None:
        entry = self._objs[slot]
        assert entry is not None
        del self._slot_of[entry.key]
        self._objs[slot] = None  # release the payload now, not at the next merge
        self._alive[slot] = False
        self._dead += 1

    def _grow(self) -> None:
        for name in ("_t", "_ra", "_dec", "_hpx", "_rad", "_key", "_alive", "_msg"):
            old = getattr(self, name)
            new = np.zeros(old.size * 2, dtype=old.dtype)
            new[:old.size] = old
            setattr(self, name, new)

    def _build(self, key_parts: list[np.ndarray], time_parts: list[np.ndarray]) -> _Run | None:
        """A run from slot arrays already sorted piecewise (timsort merges the pieces)."""
        slot = np.concatenate(key_parts)
        alive = self._alive[slot]
        if not alive.all():
            released = slot[~alive]
            self._free.extend(released.tolist())
            self._dead -= int(released.size)
            slot = slot[alive]
        if slot.size == 0:
            return None
        slot = slot[np.argsort(self._key[slot], kind="stable")]
        by_t = np.concatenate(time_parts)
        by_t = by_t[self._alive[by_t]]
        by_t = by_t[np.argsort(self._t[by_t], kind="stable")]
        widest = np.zeros(len(self._msg_code))
        np.maximum.at(widest, self._msg[slot], self._rad[slot])
        return _Run(self._key[slot], slot, self._t[by_t], by_t, self._hpx[by_t], widest)

    def _flush(self) -> None:
        buf = self._buf[:self._nbuf].copy()
        self._nbuf = 0
        run = self._build([buf], [buf])
        if run is not None:
            self._runs.append(run)
        runs = self._runs
        while len(runs) >= 2 and len(runs[-2]) < self._fanout * len(runs[-1]):
            small, big = runs.pop(), runs.pop()
            merged = self._build([big.slot, small.slot],
                                 [big.slot_by_t[big.expired_upto:],
                                  small.slot_by_t[small.expired_upto:]])
            if merged is not None:
                runs.append(merged)
        if len(runs) >= 2 and len(runs[-1]) == 0:
            runs.pop()

    def _maybe_rewrite(self) -> None:
        """Merge everything into one run once half the rows held are dead."""
        if self._dead <= max(4096, len(self._slot_of)):
            return
        buf = self._buf[:self._nbuf].copy()
        self._nbuf = 0
        runs, self._runs = self._runs, []
        run = self._build([r.slot for r in runs] + [buf],
                          [r.slot_by_t[r.expired_upto:] for r in runs] + [buf])
        if run is not None:
            self._runs.append(run)


def _check_window(t_lo_s: float, t_hi_s: float) -> None:
    if math.isnan(t_lo_s) or math.isnan(t_hi_s):
        raise ValueError("time window bounds must not be NaN")
