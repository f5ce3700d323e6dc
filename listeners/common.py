"""Parsing helpers every normalizer shares: times, units, identifiers, roles."""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import ValidationError

from alerts_schema import Alert, DataRights, PointLocalization, Provenance
from alerts_schema.errors import ImplausibleValue, NormalizationError
from listeners import timescales

SECONDS_PER_YEAR = 365.25 * 86400.0  # Julian year, as GCN and LVK use for yr^-1
_MJD_EPOCH = datetime(1858, 11, 17, tzinfo=UTC)
_UNSAFE_ID = re.compile(r"[^A-Za-z0-9._~:@!$&'()*+,;=-]+")


def parse_utc(value: Any, *, field: str = "time") -> datetime:
    """A timezone-aware UTC datetime from the forms alert streams use.

    Accepts ISO 8601 with ``Z``, with an offset, or with no zone at all
    (taken as UTC, as GCN notices mean it), a space instead of ``T``, any
    number of fractional digits (rounded to microseconds), and
    :class:`datetime` objects (naive ones taken as UTC).

    Raises
    ------
    NormalizationError
        Naming ``field`` and the value, when it is not a time.
    """
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    if not isinstance(value, str) or not value.strip():
        raise NormalizationError(f"{field}: expected an ISO 8601 time, got {value!r}")
    text = value.strip().replace(" ", "T", 1)
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    # Python's fromisoformat takes at most 6 fractional digits: round the rest.
    match = re.match(r"^(.*T\d{2}:\d{2}:\d{2})\.(\d+)(.*)$", text)
    extra = timedelta(0)
    if match and len(match.group(2)) > 6:
        frac = float("0." + match.group(2))
        micro = round(frac * 1e6)
        extra = timedelta(microseconds=micro)
        text = match.group(1) + match.group(3)
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError as exc:
        raise NormalizationError(f"{field}: {value!r} is not an ISO 8601 time") from exc
    parsed = parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
    return parsed + extra


def mjd_to_utc(mjd: float) -> datetime:
    """UTC datetime of a Modified Julian Date (days; UTC-based, no leap-second care)."""
    if not math.isfinite(mjd):
        raise NormalizationError(f"MJD {mjd!r} is not finite")
    return _MJD_EPOCH + timedelta(days=float(mjd))


def per_year_to_hz(rate_per_year: float) -> float:
    """Convert a rate in yr^-1 (Julian year) to Hz."""
    return float(rate_per_year) / SECONDS_PER_YEAR


def finite_or_none(value: Any, *, field: str = "value") -> float | None:
    """``value`` as a finite float; None for None/""/NaN; error for other non-numbers."""
    if value is None or value == "":
        return None
    try:
        number = float(value)
    except (TypeError, ValueError) as exc:
        raise NormalizationError(f"{field}: expected a number, got {value!r}") from exc
    return number if math.isfinite(number) else None


def local_id(*parts: Any) -> str:
    """An IVORN-safe local id from parts (joined with '-', unsafe characters to '_')."""
    text = "-".join(str(p) for p in parts if p is not None and p != "")
    return _UNSAFE_ID.sub("_", text).strip("_") or "unnamed"


def checked_ra(ra_deg: float, *, field: str = "ra") -> float:
    """A right ascension (deg) in [0, 360), or :class:`ImplausibleValue`: never wrapped.

    An RA of 400 is not 40: a producer that sends one has a bug, and wrapping
    would put the alert at a made-up position (issue 14, item 6).
    """
    number = float(ra_deg)
    if not (math.isfinite(number) and 0.0 <= number < 360.0):
        raise ImplausibleValue(f"{field} = {ra_deg!r} deg is outside [0, 360): "
                               "not a right ascension")
    return number


SKYMAP_URL_MAX = 1024
"""Longest sky map URL recorded (the contract's ``SkymapLocalization.url``)."""
_FITS_NAME = re.compile(r"\.(fits?|fts)(\.gz)?$", re.IGNORECASE)
_GRACEDB_VERSION = re.compile(r",\d+$")


def skymap_url(value: Any) -> str | None:
    """``value`` when it is a URL naming a FITS sky map file, else None.

    A URL whose path names a FITS file (``.fits``, ``.fit``, ``.fts``, each optionally
    ``.gz``), GraceDB's file version suffix (``,0``) allowed after the name, as sent
    (stripped of surrounding blanks).  What scheme or host may be fetched is not
    decided here: the broker's fetcher refuses what its settings do not allow
    (``file:``, a host off its list) and says so on the alert.  A page or a site root
    (KM3NeT's ``healpix_url`` names ``https://opendata.km3net.de/``) is no map.
    """
    if not isinstance(value, str):
        return None
    url = value.strip()
    if not url or len(url) > SKYMAP_URL_MAX or any(c.isspace() for c in url):
        return None
    scheme, sep, rest = url.partition("://")
    if not sep or not re.fullmatch(r"[A-Za-z][A-Za-z0-9+.-]*", scheme):
        return None
    path = rest.partition("/")[2].split("?", 1)[0].split("#", 1)[0]
    if not _FITS_NAME.search(_GRACEDB_VERSION.sub("", path)):
        return None
    return url


def present_but_not_finite(text: Any) -> bool:
    """True for a value that is given (not None, not blank) yet not a finite number
    (NaN, inf, 1e999): such a value must be refused, not read as "not stated"."""
    if text is None or (isinstance(text, str) and not text.strip()):
        return False
    try:
        return not math.isfinite(float(text))
    except (TypeError, ValueError):
        return False


# -- the one plausibility rule every stream's Alerts meet (issue 14, item 6) ----------

EARLIEST_TRIGGER_TIME = datetime(1987, 1, 1, tzinfo=UTC)
"""No alert is older: the earliest event a real sample describes is SN 1987A (1987-02-23).

The bound stops impossible dates (year 0001, a Unix time read as an MJD) before
they reach the cross-match, whose windows cannot reach before year 1."""
LATEST_TRIGGER_AHEAD = timedelta(days=366)
"""How far past its receipt a trigger time may lie: a year (replayed and synthetic data
stamped ahead of the clock pass; year 2999 does not)."""
MAX_ERROR_DEG = 180.0


def check_plausible(alert: Any, received_at: datetime) -> None:
    """Raise :class:`ImplausibleValue` for an Alert outside the ranges every stream shares.

    * position: RA in [0, 360), Dec in [-90, 90], both finite;
    * errors (radius, semi-axes, systematic): finite, >= 0 and <= 180 deg;
    * trigger time: from :data:`EARLIEST_TRIGGER_TIME` to ``received_at`` + 1 year.

    Applied to every normalizer's output in one place (:meth:`broker.runtime.ingest.
    Ingestor.normalize`); the normalizers themselves refuse such values rather
    than wrap, clamp or drop them (docs/errors.md).
    """
    what = f"alert {alert.event_id!r}"
    loc = alert.localization
    ra, dec = getattr(loc, "ra_deg", None), getattr(loc, "dec_deg", None)
    if ra is not None:
        checked_ra(ra, field=f"{what}: localization.ra_deg")
    if dec is not None and not (math.isfinite(dec) and -90.0 <= dec <= 90.0):
        raise ImplausibleValue(f"{what}: localization.dec_deg = {dec!r} is outside [-90, 90]")
    for name in ("error_radius_deg", "semi_major_deg", "semi_minor_deg", "systematic_deg"):
        value = getattr(loc, name, None)
        if value is not None and not (math.isfinite(value) and 0.0 <= value <= MAX_ERROR_DEG):
            raise ImplausibleValue(f"{what}: localization.{name} = {value!r} deg is not an "
                                   f"error in [0, {MAX_ERROR_DEG:g}]")
    when = alert.trigger_time
    latest = received_at + LATEST_TRIGGER_AHEAD
    if when < EARLIEST_TRIGGER_TIME or when > latest:
        raise ImplausibleValue(f"{what}: trigger_time {when.isoformat()} is outside "
                               f"{EARLIEST_TRIGGER_TIME.date()} .. receipt + 1 year "
                               f"({latest.isoformat(timespec='seconds')})")
    error_s = alert.trigger_time_error_s
    if error_s is not None and not (math.isfinite(error_s) and error_s >= 0):
        raise ImplausibleValue(f"{what}: trigger_time_error_s = {error_s!r} is not a "
                               "finite error >= 0 s")


_TRUE_WORDS = frozenset({"true", "t", "yes", "y", "1"})
_FALSE_WORDS = frozenset({"false", "f", "no", "n", "0", "none", "null", ""})


def parse_flag(value: Any, *, field: str = "flag", default: bool = False) -> bool:
    """A boolean from the forms streams send: JSON booleans, 0/1 and words.

    SNEWS's own examples send ``"is_test": "True"`` as a string, so words
    (``true``/``false``/``yes``/``no``, any case) count as booleans; None
    means ``default``.

    Raises
    ------
    NormalizationError
        Naming ``field``, for anything else (a misread test flag would mix
        test alerts with observations).
    """
    if value is None:
        return default
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        word = value.strip().lower()
        if word in _TRUE_WORDS:
            return True
        if word in _FALSE_WORDS:
            return False
    raise NormalizationError(f"{field}: expected a boolean, got {value!r}")



# Photon energies: GCN and others state bands in energy, frequency or wavelength units.
_GEV_PER_ENERGY_UNIT = {"ev": 1e-9, "kev": 1e-6, "mev": 1e-3, "gev": 1.0, "tev": 1e3,
                        "pev": 1e6, "eev": 1e9}
_HZ_PER_FREQUENCY_UNIT = {"hz": 1.0, "khz": 1e3, "mhz": 1e6, "ghz": 1e9, "thz": 1e12}
_M_PER_WAVELENGTH_UNIT = {"nm": 1e-9, "um": 1e-6, "micron": 1e-6, "angstrom": 1e-10}
PLANCK_EV_S = 4.135667696e-15     # h in eV s (CODATA 2018, exact)
HC_EV_M = 1.239841984e-6          # h*c in eV m (CODATA 2018)


def photon_energy_gev(value: float, unit: str, *, field: str = "energy") -> float:
    """An energy in GeV from a value in an energy, frequency or wavelength unit.

    Parameters
    ----------
    value
        The number as the message gives it.
    unit
        Case-insensitive: ``eV``, ``keV``, ``MeV``, ``GeV``, ``TeV``, ``PeV``, ``EeV``
        (energy); ``Hz`` ... ``THz`` (photon frequency, E = h nu); ``nm``, ``um``,
        ``angstrom`` (photon wavelength, E = h c / lambda).

    Returns
    -------
    float
        Energy in GeV (keV * 1e-6, MHz * 4.136e-18, ...).

    Raises
    ------
    NormalizationError
        For an unknown unit, or a wavelength that is not positive.
    """
    key = unit.strip().lower() if isinstance(unit, str) else ""
    number = float(value)
    if key in _GEV_PER_ENERGY_UNIT:
        return number * _GEV_PER_ENERGY_UNIT[key]
    if key in _HZ_PER_FREQUENCY_UNIT:
        return number * _HZ_PER_FREQUENCY_UNIT[key] * PLANCK_EV_S * 1e-9
    if key in _M_PER_WAVELENGTH_UNIT:
        if number <= 0:
            raise NormalizationError(f"{field}: wavelength {value!r} {unit} is not positive")
        return HC_EV_M / (number * _M_PER_WAVELENGTH_UNIT[key]) * 1e-9
    raise NormalizationError(f"{field}: unknown energy unit {unit!r}")


# -- Julian dates and TAI (ZTF and Rubin normalizers; time scales in timescales.py) -----

JD_MINUS_MJD = 2400000.5  # days
# MJD of 0001-01-01 and of 9999-12-31, the range a Python datetime can hold.
_MJD_MIN, _MJD_MAX = -678575.0, 2973483.0

def checked_mjd(value: Any, *, field: str = "mjd") -> float:
    """``value`` as an MJD (days) a datetime can hold, else :class:`NormalizationError`.

    :func:`mjd_to_utc` lets ``OverflowError`` escape for absurd values (a Unix
    time put where an MJD belongs, as in some Rubin sample alerts); this names
    the field instead.
    """
    number = finite_or_none(value, field=field)
    if number is None:
        raise NormalizationError(f"{field}: expected an MJD, got {value!r}")
    if not _MJD_MIN <= number <= _MJD_MAX:
        raise NormalizationError(f"{field}: {value!r} is not a plausible MJD "
                                 f"(dates need {_MJD_MIN:.0f} .. {_MJD_MAX:.0f} days)")
    return number


def jd_to_utc(jd: Any, *, field: str = "jd") -> datetime:
    """UTC datetime of a Julian Date (days) counted in UTC, as ZTF's ``jd`` is.

    Subtracting 2400000.5 is exact in binary floating point, so this keeps the
    full precision of the JD (about 40 microseconds for present-day dates).
    """
    number = finite_or_none(jd, field=field)
    if number is None:
        raise NormalizationError(f"{field}: expected a Julian Date, got {jd!r}")
    return mjd_to_utc(checked_mjd(number - JD_MINUS_MJD, field=field))


def tai_mjd_to_utc(mjd_tai: Any, *, field: str = "mjd_tai") -> datetime:
    """UTC datetime of an MJD (days) counted in TAI, as Rubin's ``midpointMjdTai`` is.

    The leap seconds are astropy's (:mod:`listeners.timescales`).  An instant inside
    an inserted leap second (23:59:60 UTC, which a datetime cannot hold) comes out
    at the first instant of the next day.
    """
    return timescales.utc_from_tai_mjd(checked_mjd(mjd_tai, field=field))


# Rate units as VOEvent producers spell them, lower-cased and stripped of spaces,
# each with its factor to Hz.  GCN/IceCube/KM3NeT VOEvents give FAR in yr^-1,
# LVK in Hz; an unknown spelling is an error rather than a silent guess.
_RATE_UNITS_TO_HZ: dict[str, float] = {
    **dict.fromkeys(("hz", "1/s", "/s", "s^-1", "s-1", "s**-1", "persecond", "1/sec",
                     "/sec"), 1.0),
    **dict.fromkeys(("yr^-1", "yr-1", "yr**-1", "1/yr", "/yr", "peryear", "year^-1",
                     "1/year", "/year", "a^-1", "1/a"), 1.0 / SECONDS_PER_YEAR),
    **dict.fromkeys(("day^-1", "d^-1", "1/day", "/day", "1/d", "perday"), 1.0 / 86400.0),
}


def rate_to_hz(value: Any, unit: str | None, *, field: str = "rate") -> float | None:
    """A rate converted to Hz from the unit a message states (Hz, yr^-1, day^-1 spellings).

    Returns None for a missing/NaN value.  Raises :class:`NormalizationError`
    naming ``field`` when the unit is missing or not a rate unit: the caller
    decides what a unit-less rate means for its stream.
    """
    number = finite_or_none(value, field=field)
    if number is None:
        return None
    key = re.sub(r"\s+", "", unit or "").lower()
    if key not in _RATE_UNITS_TO_HZ:
        raise NormalizationError(f"{field}: unit {unit!r} is not a rate unit (Hz, yr^-1, day^-1)")
    return number * _RATE_UNITS_TO_HZ[key]


def survey_detection(meta: Any, *, stream: str, facility: str, event_id: str, ra_deg: float,
                     dec_deg: float, error_radius_deg: float, containment: float,
                     trigger_time: datetime, data_rights: str, pipeline: str,
                     pipeline_version: str | None, extra: dict[str, Any], what: str) -> Alert:
    """The Alert of one optical survey detection (ZTF candidate, Rubin DIASource).

    Survey detections are single-revision observations at a point; the
    streams differ only in the values passed here.  ``what`` names the
    detection in error reasons.

    Raises
    ------
    NormalizationError
        When a value breaks the Alert contract (first violation and its path).
    """
    try:
        return Alert(
            schema_version="1.0",
            id=meta.alert_ivorn(stream, local_id(event_id, 0)),
            source=stream if meta.source == "file" else meta.source,
            messenger="optical", facility=facility, event_id=event_id, revision=0,
            alert_type="initial", role="observation", trigger_time=trigger_time,
            localization=PointLocalization(ra_deg=checked_ra(ra_deg, field=f"{what}: ra"),
                                           dec_deg=dec_deg,
                                           error_radius_deg=error_radius_deg,
                                           containment=containment),
            data_rights=DataRights(level=data_rights),
            provenance=Provenance(pipeline=pipeline, pipeline_version=pipeline_version,
                                  reco_method="PSF-fit photometry on the difference image"),
            extra=extra,
        )
    except ValidationError as exc:
        first = exc.errors()[0]
        raise NormalizationError(f"{what}: {first['msg']} at "
                                 f"{'.'.join(map(str, first['loc']))}") from exc
