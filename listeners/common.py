"""Parsing helpers every normalizer shares: times, units, identifiers, roles."""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime, timedelta
from typing import Any

from broker.errors import NormalizationError

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


def normalize_ra(ra_deg: float) -> float:
    """Right ascension wrapped into [0, 360) degrees."""
    wrapped = float(ra_deg) % 360.0
    return 0.0 if wrapped >= 360.0 else wrapped
