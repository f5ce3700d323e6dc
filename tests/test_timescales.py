"""Time scales through astropy (:mod:`listeners.timescales`), checked against astropy
itself around the leap seconds of 2012-06-30, 2015-06-30 and 2016-12-31."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from astropy.time import Time, TimeDelta

from alerts_schema.errors import NormalizationError
from listeners import timescales
from listeners.common import tai_mjd_to_utc

# The first UTC instant after each leap second: TAI - UTC went 34 -> 35, 35 -> 36, 36 -> 37.
LEAPS = [(datetime(2012, 7, 1), 35.0), (datetime(2015, 7, 1), 36.0), (datetime(2017, 1, 1), 37.0)]
# Readings from two days before to two days after, densest at the inserted second.
OFFSETS_S = [-2 * 86400.0, -86400.0, -3600.0, -70.0, -40.0, -37.5, -36.2, -35.0, -20.0,
             -1.5, -0.5, 0.0, 0.5, 1.0, 20.0, 36.5, 37.0, 40.0, 3600.0, 86400.0, 2 * 86400.0]


def astropy_utc(reading: datetime, scale: str) -> datetime:
    if scale == "GPS":
        t = Time(reading, scale="tai") + TimeDelta(19.0, format="sec")
    else:
        t = Time(reading, scale=scale.lower())
    return t.utc.to_datetime(timezone=UTC, leap_second_strict="silent")


@pytest.mark.parametrize("scale", ["TAI", "TT", "GPS", "TDB"])
@pytest.mark.parametrize(("leap", "after"), LEAPS, ids=["2012", "2015", "2016"])
def test_every_scale_agrees_with_astropy_around_the_leap_seconds(
        scale: str, leap: datetime, after: float) -> None:
    for offset in OFFSETS_S:
        reading = leap + timedelta(seconds=offset)
        ours = timescales.to_utc(reading, scale)
        assert ours.tzinfo is UTC
        assert abs((ours - astropy_utc(reading, scale)).total_seconds()) < 2e-6, (
            scale, reading)


@pytest.mark.parametrize(("leap", "after"), LEAPS, ids=["2012", "2015", "2016"])
def test_tai_minus_utc_steps_by_one_second_at_each_leap(leap: datetime, after: float) -> None:
    assert timescales.tai_minus_utc_s(leap) == after
    assert timescales.tai_minus_utc_s(leap - timedelta(microseconds=1)) == after - 1.0


@pytest.mark.parametrize(("leap", "after"), LEAPS, ids=["2012", "2015", "2016"])
def test_rubin_tai_mjd_agrees_with_astropy(leap: datetime, after: float) -> None:
    base = Time(leap, scale="utc").tai.mjd
    for offset in OFFSETS_S:
        mjd = base + offset / 86400.0
        expected = Time(mjd, format="mjd", scale="tai").utc.to_datetime(
            timezone=UTC, leap_second_strict="silent")
        assert abs((tai_mjd_to_utc(mjd) - expected).total_seconds()) < 2e-5, mjd


def test_utc_is_read_as_is_and_a_timezone_on_the_reading_is_ignored() -> None:
    reading = datetime(2024, 5, 1, 10, 0, tzinfo=UTC)
    assert timescales.to_utc(reading, "utc") == reading
    assert timescales.to_utc(reading, "TT") == timescales.to_utc(reading.replace(tzinfo=None),
                                                                 "TT")


def test_tdb_is_not_taken_as_tt() -> None:
    """TDB - TT swings by ~1.7 ms over the year: the old code took them as equal."""
    tt = timescales.to_utc(datetime(2024, 4, 3, 12), "TT")
    tdb = timescales.to_utc(datetime(2024, 4, 3, 12), "TDB")
    assert 1e-4 < abs((tt - tdb).total_seconds()) < 2e-3


def test_an_unknown_scale_is_an_error() -> None:
    with pytest.raises(NormalizationError, match="time scale 'TCB'"):
        timescales.to_utc(datetime(2024, 5, 1), "TCB")


def test_the_leap_second_table_is_astropys_and_not_expired() -> None:
    """A stale table must be noticed: astropy's says when it expires."""
    from astropy.utils import iers

    table = iers.LeapSeconds.auto_open()
    assert table.expires > Time.now(), "astropy-iers-data's leap seconds have expired"
