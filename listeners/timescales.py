"""Time scales (UTC, TAI, TT, TDB, GPS) to UTC, through :mod:`astropy.time`.

Streams date events in several scales: VOEvents name theirs in ``coord_system_id``
(``TT-ICRS-TOPO``, ``TDB-ICRS-BARY``, ``GPS-...``), Rubin gives ``midpointMjdTai``.
The leap seconds come from astropy (its table ships in ``astropy-iers-data``, whose
file says when it expires; astropy warns once it has, so a stale table is never
silent: refresh the package with ``scripts/lock``).

Speed: a :class:`~astropy.time.Time` conversion costs about 0.5 ms, too much for a
survey alert burst. TAI, TT and GPS differ from each other by constants fixed by
definition (TT = TAI + 32.184 s, GPS = TAI - 19 s), and TAI - UTC changes only at a
UTC midnight. So the offset is asked of astropy once per UTC day and cached; an
instant within a day of a leap second, and every TDB time (whose offset from TT
varies by up to 1.7 ms over the year), goes through astropy in full.
"""

from __future__ import annotations

import contextlib
import functools
import math
import warnings
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Final

from alerts_schema.errors import NormalizationError

__all__ = ["SCALES", "tai_minus_utc_s", "to_utc", "utc_from_tai_mjd"]

SCALES: Final = ("UTC", "TAI", "TT", "TDB", "GPS")
"""Time scales :func:`to_utc` understands (upper case, as in VOEvent coord_system_id)."""

# Seconds to add to a clock reading in each scale to get TAI (definitions, not data).
_TO_TAI_S: Final = {"TAI": 0.0, "TT": -32.184, "GPS": 19.0}
_MJD_EPOCH: Final = datetime(1858, 11, 17)
_DAY: Final = timedelta(days=1)


@contextlib.contextmanager
def _dubious_years_allowed() -> Iterator[None]:
    """ERFA warns "dubious year" outside its leap-second table (before 1960, or years
    past the table's last entry): the offset it gives is then the nearest known one,
    as good as anyone's. Whether such a date is plausible for an alert is decided by
    the normalizers' range checks, not by a warning here."""
    import erfa  # astropy's own dependency, deferred with it

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", erfa.ErfaWarning)
        yield


@functools.lru_cache(maxsize=4096)
def _offset_on(day: date) -> float:
    """TAI - UTC in seconds at noon UTC of ``day``, from astropy's leap-second table."""
    # astropy.time costs ~0.4 s to import: deferred so the CLI starts fast.
    from astropy.time import Time

    noon = datetime(day.year, day.month, day.day, 12)
    with _dubious_years_allowed():
        tai: datetime = Time(noon, scale="utc").tai.to_datetime()
    # Differences of clock readings, not of MJDs: a leap second day's UTC MJD is
    # stretched over 86,401 s.
    return round((tai - noon).total_seconds(), 6)


def tai_minus_utc_s(utc: datetime) -> float:
    """TAI - UTC in seconds (37 since 2017) at the UTC instant ``utc``."""
    return _offset_on(utc.date())


@functools.lru_cache(maxsize=4096)
def _steady(day: date) -> float | None:
    """The day's TAI - UTC if no leap second falls within a day either side, else None."""
    offset = _offset_on(day)
    if _offset_on(day - _DAY) == offset == _offset_on(day + _DAY):
        return offset
    return None


def _full(moment: datetime, scale: str) -> datetime:
    """The exact conversion by astropy (leap-second days, TDB)."""
    from astropy.time import Time  # deferred heavy import (see _offset_on)

    with _dubious_years_allowed():
        if scale == "GPS":  # astropy's "gps" is a format of TAI, not a scale
            converted = (Time(moment, scale="tai")
                         + timedelta(seconds=_TO_TAI_S["GPS"])).utc
        else:
            converted = Time(moment, scale=scale.lower()).utc
    # An instant inside an inserted leap second (23:59:60) becomes 00:00:00 of the
    # next day: a datetime cannot hold second 60.
    utc: datetime = converted.to_datetime(timezone=UTC, leap_second_strict="silent")
    return utc


def to_utc(moment: datetime, scale: str) -> datetime:
    """The UTC instant of a clock reading ``moment`` in time scale ``scale``.

    Parameters
    ----------
    moment
        The reading; its tzinfo, if any, is ignored (a TT reading is not UTC).
    scale
        One of :data:`SCALES`, any case.

    Returns
    -------
    datetime
        Timezone-aware UTC.

    Raises
    ------
    NormalizationError
        For a scale not in :data:`SCALES`.
    """
    scale = scale.upper()
    naive = moment.replace(tzinfo=None)
    if scale == "UTC":
        return naive.replace(tzinfo=UTC)
    if scale == "TDB":
        return _full(naive, scale)
    if scale not in _TO_TAI_S:
        raise NormalizationError(f"time scale {scale!r} is not one of {', '.join(SCALES)}")
    tai = naive + timedelta(seconds=_TO_TAI_S[scale])
    offset = _steady(tai.date())
    if offset is None:
        return _full(naive, scale)
    return (tai - timedelta(seconds=offset)).replace(tzinfo=UTC)


def utc_from_tai_mjd(mjd_tai: float) -> datetime:
    """UTC instant of a Modified Julian Date (days) counted in TAI (Rubin's
    ``midpointMjdTai``); the caller has checked it is finite and in range."""
    if not math.isfinite(mjd_tai):
        raise NormalizationError(f"MJD {mjd_tai!r} is not finite")
    return to_utc(_MJD_EPOCH + timedelta(days=mjd_tai), "TAI")
