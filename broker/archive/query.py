"""Archive queries: filters, data rights, sky regions and keyset pagination.

The three lists the API serves (alerts, coincidences, VOEvents) are answered
by :func:`search_alerts`, :func:`search_coincidences` and
:func:`search_voevents` from a query (what to match), a :class:`Viewer` (what
the caller may see) and an optional cursor (where the previous page ended).

Data rights
    One SQL condition per resource (:func:`alert_visible`), inside every
    statement a caller's request runs, counts included: a row the caller may
    not see never leaves the database.  Public alerts are visible to
    everyone; embargoed ones to ``read:embargoed`` until ``embargo_until``,
    then to everyone; proprietary ones only to ``read:proprietary``
    (``admin`` holds both).  A coincidence is visible when all its members
    are; a VOEvent when its alert or coincidence is.

Pagination
    Keyset: rows come newest first by (time, id) and a cursor holds the last
    row's key, so paging neither skips nor repeats a row however many new
    ones arrive meanwhile.  A cursor also holds a fingerprint of its query's
    filters and is refused under other filters.

Sky
    A cone or a stored sky map's credible region becomes a few order-29
    HEALPix index ranges for the SQL (the ``hpx29`` index) and an exact test
    in numpy on the candidates, paged until the page is full.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar, Protocol

import numpy as np
from sqlalchemy import (
    ARRAY,
    BigInteger,
    ColumnElement,
    and_,
    any_,
    bindparam,
    exists,
    false,
    func,
    or_,
    select,
    true,
)
from sqlalchemy.engine import Connection, Row
from sqlalchemy.orm import aliased
from sqlalchemy.sql import operators
from sqlalchemy.sql.expression import UnaryExpression
from sqlalchemy.sql.visitors import replacement_traverse

from alerts_schema.errors import RequestError
from broker.archive.models import (
    AlertRow,
    CoincidenceMember,
    CoincidenceRow,
    Skymap,
    VOEventCitation,
    VOEventRow,
)
from broker.archive.sealing import Sealer, archive_sealer
from crossmatch.healpix import NPIX_29, angular_separation_deg, cone_ranges
from crossmatch.localization import skymap_by_hash

MAX_LIMIT = 1000
"""Most rows one page may hold (the API's ``limit`` cap)."""
MAX_SQL_RANGES = 64
"""Most HEALPix ranges one sky region puts into SQL; finer detail is tested in numpy."""


class QueryError(RequestError):
    """A query that cannot be answered as asked (bad cursor, region, unknown sky map)."""


# -- who is asking ------------------------------------------------------------------------


@dataclass(frozen=True)
class Viewer:
    """The scopes of the caller a query answers for (none: anonymous)."""

    scopes: frozenset[str] = frozenset()

    @property
    def embargoed(self) -> bool:
        """May read embargoed alerts before their release time."""
        return bool(self.scopes & {"read:embargoed", "admin"})

    @property
    def proprietary(self) -> bool:
        """May read proprietary alerts."""
        return bool(self.scopes & {"read:proprietary", "admin"})

    def holds(self, scope: str) -> bool:
        """Holds ``scope`` (``admin`` holds every scope)."""
        return scope in self.scopes or "admin" in self.scopes

    def may_see(self, data_rights: str, embargo_until: datetime | None, now: datetime) -> bool:
        """The rule of :func:`alert_visible` for one row already in memory (live feeds)."""
        if data_rights == "public":
            return True
        if data_rights == "embargoed":
            return self.embargoed or (embargo_until is not None and embargo_until <= now)
        return data_rights == "proprietary" and self.proprietary


ANONYMOUS = Viewer()
ARCHIVIST = Viewer(frozenset({"admin"}))
"""Sees everything: the broker's own reads (CLI, cross-match history)."""


def alert_visible(viewer: Viewer, now: datetime, alert: Any = AlertRow
                  ) -> ColumnElement[bool]:
    """SQL condition: ``alert`` (the alerts table or an alias of it) is visible to ``viewer``."""
    if viewer.embargoed and viewer.proprietary:
        return true()
    allowed = [alert.data_rights == "public",
               and_(alert.data_rights == "embargoed", alert.embargo_until.is_not(None),
                    alert.embargo_until <= now)]
    if viewer.embargoed:
        allowed.append(alert.data_rights == "embargoed")
    if viewer.proprietary:
        allowed.append(alert.data_rights == "proprietary")
    return or_(*allowed)


def coincidence_visible(viewer: Viewer, now: datetime, coincidence: Any = CoincidenceRow
                        ) -> ColumnElement[bool]:
    """SQL condition: every member alert of ``coincidence`` is visible to ``viewer``."""
    if viewer.embargoed and viewer.proprietary:
        return true()
    member, alert = aliased(CoincidenceMember), aliased(AlertRow)
    hidden = (select(member.alert_id).join(alert, alert.id == member.alert_id)
              .where(member.coincidence_id == coincidence.id,
                     ~alert_visible(viewer, now, alert)))
    return ~exists(hidden)


# -- sky regions ---------------------------------------------------------------------------


class Region(Protocol):
    """A part of the sky a query keeps rows inside."""

    def sql_ranges(self) -> list[tuple[int, int]]:
        """Inclusive order-29 NESTED ranges covering the region (and perhaps more)."""

    def sky_fraction(self) -> float:
        """The region's area as a fraction of the sphere (what the exact test keeps)."""

    def contains(self, ra_deg: np.ndarray, dec_deg: np.ndarray, hpx29: np.ndarray
                 ) -> np.ndarray:
        """Exact membership of positions (ICRS degrees, and their order-29 pixels)."""


@dataclass(frozen=True)
class Cone:
    """Positions within ``radius_deg`` of (``ra_deg``, ``dec_deg``), ICRS degrees."""

    ra_deg: float
    dec_deg: float
    radius_deg: float

    def __post_init__(self) -> None:
        values = (self.ra_deg, self.dec_deg, self.radius_deg)
        if not all(np.isfinite(v) for v in values):
            raise QueryError("cone centre and radius must be finite numbers")
        if not -90 <= self.dec_deg <= 90:
            raise QueryError(f"cone dec {self.dec_deg} deg is outside [-90, 90]")
        if not 0 <= self.radius_deg <= 180:
            raise QueryError(f"cone radius {self.radius_deg} deg is outside [0, 180]")
        object.__setattr__(self, "ra_deg", float(self.ra_deg) % 360.0)

    def sql_ranges(self) -> list[tuple[int, int]]:
        return coarsen(cone_ranges(self.ra_deg, self.dec_deg, self.radius_deg))

    def sky_fraction(self) -> float:
        return float((1.0 - np.cos(np.radians(self.radius_deg))) / 2.0)

    def contains(self, ra_deg: np.ndarray, dec_deg: np.ndarray, hpx29: np.ndarray
                 ) -> np.ndarray:
        sep = angular_separation_deg(self.ra_deg, self.dec_deg, ra_deg, dec_deg)
        return np.asarray(sep <= self.radius_deg)


@dataclass(frozen=True)
class CredibleRegion:
    """The ``level`` credible region of the stored sky map ``skymap_sha256``."""

    skymap_sha256: str
    level: float
    skymap: Any = field(compare=False, repr=False)  # crossmatch.localization.SkyMap

    def sql_ranges(self) -> list[tuple[int, int]]:
        start, stop = self.skymap.region(self.level)
        return coarsen(zip(start.tolist(), (stop - 1).tolist(), strict=True))

    def sky_fraction(self) -> float:
        start, stop = self.skymap.region(self.level)
        return float((stop - start).sum()) / NPIX_29

    def contains(self, ra_deg: np.ndarray, dec_deg: np.ndarray, hpx29: np.ndarray
                 ) -> np.ndarray:
        levels = self.skymap.credible_level_at_nested29(hpx29.astype(np.int64))
        return np.asarray(levels) < self.level


def skymap_bytes(conn: Connection, sha256: str) -> bytes | None:
    """The sky map file the archive holds under ``sha256`` (None: not held here)."""
    data = conn.execute(select(Skymap.data).where(Skymap.sha256 == sha256)).scalar_one_or_none()
    return None if data is None else bytes(data)


def credible_region(conn: Connection, skymap_sha256: str, level: float) -> CredibleRegion:
    """The credible region of a sky map held in the archive.

    Raises
    ------
    QueryError
        For a level outside (0, 1] or a map the archive does not hold.
    """
    if not 0 < level <= 1:
        raise QueryError(f"credible level {level} is outside (0, 1]")

    sky = skymap_by_hash(skymap_sha256, lambda sha256: skymap_bytes(conn, sha256))
    if sky is None:
        raise QueryError(f"the archive holds no sky map {skymap_sha256}")
    return CredibleRegion(skymap_sha256, float(level), sky)


def coarsen(ranges: Iterable[tuple[int, int]], most: int = MAX_SQL_RANGES
            ) -> list[tuple[int, int]]:
    """At most ``most`` inclusive ranges covering ``ranges`` (sorted, disjoint).

    The narrowest gaps are closed first, so what the SQL over-selects is as
    little sky as the budget allows.
    """
    spans = list(ranges)
    if len(spans) <= most:
        return spans
    starts = np.array([s for s, _ in spans], dtype=np.int64)
    ends = np.array([e for _, e in spans], dtype=np.int64)
    gaps = starts[1:] - ends[:-1]
    keep = np.sort(np.argsort(gaps, kind="stable")[len(gaps) - (most - 1):])
    new_starts = np.concatenate((starts[:1], starts[keep + 1]))
    new_ends = np.concatenate((ends[keep], ends[-1:]))
    return list(zip(new_starts.tolist(), new_ends.tolist(), strict=True))


# -- the queries ---------------------------------------------------------------------------


def _values(value: str | Iterable[str] | None) -> tuple[str, ...] | None:
    if value is None:
        return None
    if isinstance(value, str):
        return (value,)
    return tuple(value) or None


def _utc(value: datetime | None) -> datetime | None:
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)  # the API documents naive times as UTC


class _Query:
    """Shared normalization: sequences of accepted values, UTC times, cone tuples."""

    # What every subclass, a frozen dataclass, has.
    __dataclass_fields__: ClassVar[dict[str, dataclasses.Field[Any]]]
    limit: int

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.type.startswith("tuple[str, ...]"):
                object.__setattr__(self, f.name, _values(value))
            elif isinstance(value, datetime):
                try:
                    value = _utc(value).astimezone(UTC)  # type: ignore[union-attr]
                except OverflowError as exc:  # e.g. 0001-01-01T00:00+01:00
                    raise QueryError(f"{f.name}: {value.isoformat()} is outside the years "
                                     "1 to 9999 in UTC") from exc
                object.__setattr__(self, f.name, value)
        cone = getattr(self, "cone", None)
        if cone is not None and not isinstance(cone, Cone):
            object.__setattr__(self, "cone", Cone(*cone))
        if not 1 <= self.limit <= 10_000_000:
            raise QueryError(f"limit must be positive, not {self.limit}")

    def regions(self) -> list[Region]:
        return [r for r in (getattr(self, "cone", None), getattr(self, "region", None))
                if r is not None]

    def fingerprint(self) -> str:
        """A short hash of the filters (not the limit): what a cursor belongs to."""
        def plain(value: Any) -> Any:
            if isinstance(value, CredibleRegion):
                return [value.skymap_sha256, value.level]
            if isinstance(value, Cone):
                return [value.ra_deg, value.dec_deg, value.radius_deg]
            if isinstance(value, datetime):
                return value.isoformat()
            return value

        filters = {f.name: plain(getattr(self, f.name))
                   for f in dataclasses.fields(self) if f.name != "limit"}
        text = json.dumps([type(self).__name__, filters], sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class AlertQuery(_Query):
    """Filters on alerts; None means no filter.  Several values of one filter are ORed.

    Times are UTC (naive times are taken as UTC); ``cone`` is (ra_deg,
    dec_deg, radius_deg) in ICRS degrees; ``far_max_hz`` in Hz; energies in
    GeV, applied to ``energy_gev``; ``matched``: whether the cross-match has
    processed the alert (``matched_at`` set), not offered by the HTTP API.
    """

    since: datetime | None = None
    until: datetime | None = None
    received_since: datetime | None = None
    received_until: datetime | None = None
    source: tuple[str, ...] | Sequence[str] | str | None = None
    messenger: tuple[str, ...] | Sequence[str] | str | None = None
    facility: tuple[str, ...] | Sequence[str] | str | None = None
    instrument: tuple[str, ...] | Sequence[str] | str | None = None
    role: tuple[str, ...] | Sequence[str] | str | None = None
    alert_type: tuple[str, ...] | Sequence[str] | str | None = None
    data_rights: tuple[str, ...] | Sequence[str] | str | None = None
    event_id: str | None = None
    far_max_hz: float | None = None
    energy_min_gev: float | None = None
    energy_max_gev: float | None = None
    pipeline: tuple[str, ...] | Sequence[str] | str | None = None
    pipeline_version: tuple[str, ...] | Sequence[str] | str | None = None
    reco_method: tuple[str, ...] | Sequence[str] | str | None = None
    ivorn_prefix: str | None = None
    ivorn_contains: str | None = None
    cone: Cone | tuple[float, float, float] | None = None
    region: CredibleRegion | None = None
    matched: bool | None = None
    limit: int = 100

    def conditions(self) -> list[ColumnElement[bool]]:
        a = AlertRow
        out = _time_range(a.event_time, self.since, self.until)
        out += _time_range(a.received_at, self.received_since, self.received_until)
        out += _in(((a.source, self.source), (a.messenger, self.messenger),
                    (a.facility, self.facility), (a.instrument, self.instrument),
                    (a.role, self.role), (a.alert_type, self.alert_type),
                    (a.data_rights, self.data_rights), (a.pipeline, self.pipeline),
                    (a.pipeline_version, self.pipeline_version),
                    (a.reco_method, self.reco_method)))
        if self.event_id is not None:
            out.append(a.event_id == self.event_id)
        if self.far_max_hz is not None:
            out.append(a.far_hz <= self.far_max_hz)
        if self.energy_min_gev is not None:
            out.append(a.energy_gev >= self.energy_min_gev)
        if self.energy_max_gev is not None:
            out.append(a.energy_gev <= self.energy_max_gev)
        out += _ivorn_text(a.ivorn, self.ivorn_prefix, self.ivorn_contains)
        if self.matched is not None:
            out.append(a.matched_at.is_not(None) if self.matched else a.matched_at.is_(None))
        return out


@dataclass(frozen=True)
class CoincidenceQuery(_Query):
    """Filters on coincidences; None means no filter.

    ``since``/``until`` bound the reference (event) time, ``created_*`` when
    the engine found it.  ``messenger``, ``source``, ``facility`` and
    ``role`` match when any member alert has the value; ``member`` is a
    member alert's IVORN.  ``far_max_hz`` applies to the smallest FAR among
    the significance figures (Hz).
    """

    since: datetime | None = None
    until: datetime | None = None
    created_since: datetime | None = None
    created_until: datetime | None = None
    pairing: tuple[str, ...] | Sequence[str] | str | None = None
    state: tuple[str, ...] | Sequence[str] | str | None = None
    messenger: tuple[str, ...] | Sequence[str] | str | None = None
    source: tuple[str, ...] | Sequence[str] | str | None = None
    facility: tuple[str, ...] | Sequence[str] | str | None = None
    role: tuple[str, ...] | Sequence[str] | str | None = None
    member: str | None = None
    far_max_hz: float | None = None
    config_hash: tuple[str, ...] | Sequence[str] | str | None = None
    engine_version: tuple[str, ...] | Sequence[str] | str | None = None
    ivorn_prefix: str | None = None
    ivorn_contains: str | None = None
    cone: Cone | tuple[float, float, float] | None = None
    region: CredibleRegion | None = None
    limit: int = 100

    def conditions(self) -> list[ColumnElement[bool]]:
        c = CoincidenceRow
        out = _time_range(c.reference_time, self.since, self.until)
        out += _time_range(c.created_at, self.created_since, self.created_until)
        out += _in(((c.pairing, self.pairing), (c.state, self.state),
                    (c.config_hash, self.config_hash), (c.engine_version, self.engine_version)))
        if self.far_max_hz is not None:
            out.append(c.far_hz <= self.far_max_hz)
        out += _ivorn_text(c.ivorn, self.ivorn_prefix, self.ivorn_contains)
        member, alert = aliased(CoincidenceMember), aliased(AlertRow)
        for column, values in (("messenger", self.messenger), ("source", self.source),
                               ("facility", self.facility), ("role", self.role),
                               ("ivorn", _values(self.member))):
            if values is not None:
                out.append(exists(select(member.alert_id)
                                  .join(alert, alert.id == member.alert_id)
                                  .where(member.coincidence_id == c.id,
                                         getattr(alert, column).in_(values))))
        return out


@dataclass(frozen=True)
class VOEventQuery(_Query):
    """Filters on the VOEvents this broker issued (voeventdb's names where they mean the same).

    ``authored_since``/``authored_until`` bound when it was issued;
    ``ref_exact`` keeps VOEvents citing that IVORN, ``ref_contains`` those
    citing an IVORN containing the text, ``ref_any`` those citing anything
    (True) or nothing (False); ``cited`` those some other VOEvent cites (or
    not); ``cited_by`` those the VOEvent with that IVORN cites.  ``stream``
    is the IVORN's stream part (``authority/stream``); ``kind`` alert or
    coincidence.  The cone applies to the alert's or coincidence's position.
    """

    authored_since: datetime | None = None
    authored_until: datetime | None = None
    role: tuple[str, ...] | Sequence[str] | str | None = None
    kind: str | None = None
    stream: str | None = None
    ivorn_prefix: str | None = None
    ivorn_contains: str | None = None
    ref_exact: str | None = None
    ref_contains: str | None = None
    ref_any: bool | None = None
    cited: bool | None = None
    cited_by: str | None = None
    cone: Cone | tuple[float, float, float] | None = None
    limit: int = 100

    def conditions(self) -> list[ColumnElement[bool]]:
        v = VOEventRow
        out = _time_range(v.created_at, self.authored_since, self.authored_until)
        out += _in(((v.role, self.role),))
        out += _ivorn_text(v.ivorn, self.ivorn_prefix, self.ivorn_contains)
        if self.stream is not None:
            out.append(v.ivorn.startswith("ivo://" + self.stream.removeprefix("ivo://") + "#",
                                          autoescape=True))
        if self.kind == "alert":
            out.append(v.alert_id.is_not(None))
        elif self.kind == "coincidence":
            out.append(v.coincidence_id.is_not(None))
        elif self.kind is not None:
            raise QueryError(f"kind must be alert or coincidence, not {self.kind!r}")
        cite = aliased(VOEventCitation)
        if self.ref_exact is not None:
            out.append(exists(select(cite.voevent_id).where(
                cite.voevent_id == v.id, cite.cited_ivorn == self.ref_exact)))
        if self.ref_contains is not None:
            out.append(exists(select(cite.voevent_id).where(
                cite.voevent_id == v.id,
                cite.cited_ivorn.contains(self.ref_contains, autoescape=True))))
        if self.ref_any is not None:
            any_ref = exists(select(cite.voevent_id).where(cite.voevent_id == v.id))
            out.append(any_ref if self.ref_any else ~any_ref)
        return out

    def viewer_conditions(self, viewer: Viewer, now: datetime) -> list[ColumnElement[bool]]:
        """``cited`` and ``cited_by``: they look at other VOEvents, of which only those the
        viewer may see count (a hidden revision or coincidence citing a public VOEvent
        must not show through it)."""
        v, out = VOEventRow, []
        cite, citer = aliased(VOEventCitation), aliased(VOEventRow)
        if self.cited is not None:
            citing = exists(select(cite.voevent_id).join(citer, citer.id == cite.voevent_id)
                            .where(cite.cited_ivorn == v.ivorn,
                                   voevent_row_visible(viewer, now, citer)))
            out.append(citing if self.cited else ~citing)
        if self.cited_by is not None:
            out.append(v.ivorn.in_(select(cite.cited_ivorn)
                                   .join(citer, citer.id == cite.voevent_id)
                                   .where(citer.ivorn == self.cited_by,
                                          voevent_row_visible(viewer, now, citer))))
        return out


def _time_range(column: Any, since: datetime | None, until: datetime | None
                ) -> list[ColumnElement[bool]]:
    out = []
    if since is not None:
        out.append(column >= since)
    if until is not None:
        out.append(column <= until)
    return out


def _in(pairs: Iterable[tuple[Any, Sequence[str] | None]]) -> list[ColumnElement[bool]]:
    return [column.in_(values) for column, values in pairs if values is not None]


def _ivorn_text(column: Any, prefix: str | None, contains: str | None
                ) -> list[ColumnElement[bool]]:
    out = []
    if prefix is not None:
        out.append(column.startswith(prefix, autoescape=True))
    if contains is not None:
        out.append(column.contains(contains, autoescape=True))
    return out


# -- cursors -------------------------------------------------------------------------------


MAX_ROW_ID = 2**63 - 1
"""Largest row id (a signed 64-bit column): a cursor past it is refused, not sent to SQL."""


def encode_cursor(sealer: Sealer, fingerprint: str, key: tuple[datetime, int]) -> str:
    """An opaque cursor after the row with sort key ``key``, sealed with the archive's
    cursor key: a row id in clear would count the hidden rows between two pages."""
    text = json.dumps([fingerprint, key[0].isoformat(), key[1]], separators=(",", ":"))
    return sealer.seal(text.encode())


def decode_cursor(sealer: Sealer, cursor: str, fingerprint: str) -> tuple[datetime, int]:
    """The sort key a cursor holds, if it belongs to the query with ``fingerprint``."""
    payload = sealer.open(cursor)
    if payload is None:
        raise QueryError("not a cursor this API issued")
    try:
        owner, when, row_id = json.loads(payload)
        key = (datetime.fromisoformat(when), int(row_id))
    except (ValueError, TypeError, UnicodeError) as exc:
        raise QueryError("not a cursor this API issued") from exc
    if not 0 <= key[1] <= MAX_ROW_ID:  # row ids are signed 64-bit on every backend
        raise QueryError("not a cursor this API issued (row id out of range)")
    if owner != fingerprint:
        raise QueryError("this cursor belongs to a query with other filters; "
                         "pass the same filters as the first page")
    if key[0].tzinfo is None:
        raise QueryError("not a cursor this API issued")
    return key


# -- running a query -----------------------------------------------------------------------


@dataclass
class Page:
    """One page of rows, the cursor of the next (None on the last) and the total if asked."""

    rows: list[Row[Any]]
    next_cursor: str | None
    total: int | None = None


@dataclass(frozen=True)
class _Spec:
    """How a resource is selected, ordered and placed on the sky.

    ``window`` names the query's bounds on ``time`` (for the plan choice; None
    where ``hpx29`` is not an indexed column of the listed table).
    """

    select: Callable[[], Any]
    visible: Callable[[Viewer, datetime], ColumnElement[bool]]
    time: Any
    id: Any
    ra: Any = None
    dec: Any = None
    hpx29: Any = None
    window: tuple[str, str] | None = None


_ALERTS = _Spec(lambda: select(AlertRow.__table__), alert_visible, AlertRow.event_time,
                AlertRow.id, AlertRow.ra_deg, AlertRow.dec_deg, AlertRow.hpx29,
                ("since", "until"))
_COINCIDENCES = _Spec(lambda: select(CoincidenceRow.__table__), coincidence_visible,
                      CoincidenceRow.created_at, CoincidenceRow.id, CoincidenceRow.ra_deg,
                      CoincidenceRow.dec_deg, CoincidenceRow.hpx29,
                      ("created_since", "created_until"))


def _voevent_select() -> Any:
    return (select(VOEventRow.id, VOEventRow.ivorn, VOEventRow.role, VOEventRow.sha256,
                   func.length(VOEventRow.xml).label("size_bytes"), VOEventRow.alert_id,
                   VOEventRow.coincidence_id, VOEventRow.created_at,
                   func.coalesce(AlertRow.ivorn, CoincidenceRow.ivorn).label("subject_ivorn"),
                   _VOEVENT_RA.label("ra_deg"), _VOEVENT_DEC.label("dec_deg"))
            .outerjoin(AlertRow, AlertRow.id == VOEventRow.alert_id)
            .outerjoin(CoincidenceRow, CoincidenceRow.id == VOEventRow.coincidence_id))


def voevent_visible(viewer: Viewer, now: datetime) -> ColumnElement[bool]:
    """SQL condition on VOEvents outer-joined to alerts and coincidences: visible to ``viewer``."""
    if viewer.embargoed and viewer.proprietary:
        return true()
    return or_(and_(VOEventRow.alert_id.is_(None), VOEventRow.coincidence_id.is_(None)),
               and_(VOEventRow.alert_id.is_not(None), alert_visible(viewer, now)),
               and_(VOEventRow.coincidence_id.is_not(None), coincidence_visible(viewer, now)))


def voevent_row_visible(viewer: Viewer, now: datetime, voevent: Any) -> ColumnElement[bool]:
    """:func:`voevent_visible` for ``voevent``, an alias of the VOEvents table not joined
    to its alert or coincidence (a VOEvent another one cites or is cited by)."""
    if viewer.embargoed and viewer.proprietary:
        return true()
    alert, coincidence = aliased(AlertRow), aliased(CoincidenceRow)
    return or_(and_(voevent.alert_id.is_(None), voevent.coincidence_id.is_(None)),
               exists(select(alert.id).where(alert.id == voevent.alert_id,
                                             alert_visible(viewer, now, alert))),
               exists(select(coincidence.id).where(
                   coincidence.id == voevent.coincidence_id,
                   coincidence_visible(viewer, now, coincidence))))


_VOEVENT_RA = func.coalesce(AlertRow.ra_deg, CoincidenceRow.ra_deg)
_VOEVENT_DEC = func.coalesce(AlertRow.dec_deg, CoincidenceRow.dec_deg)
_VOEVENTS = _Spec(_voevent_select, voevent_visible, VOEventRow.created_at, VOEventRow.id,
                  _VOEVENT_RA, _VOEVENT_DEC, func.coalesce(AlertRow.hpx29, CoincidenceRow.hpx29))


def search_alerts(conn: Connection, query: AlertQuery, viewer: Viewer, *,
                  cursor: str | None = None, count: bool = False,
                  now: datetime | None = None) -> Page:
    """Alert rows matching ``query`` that ``viewer`` may see, newest event first."""
    return _search(conn, _ALERTS, query, viewer, cursor, count, now)


def search_coincidences(conn: Connection, query: CoincidenceQuery, viewer: Viewer, *,
                        cursor: str | None = None, count: bool = False,
                        now: datetime | None = None) -> Page:
    """Coincidence rows matching ``query`` that ``viewer`` may see, newest found first."""
    return _search(conn, _COINCIDENCES, query, viewer, cursor, count, now)


def search_voevents(conn: Connection, query: VOEventQuery, viewer: Viewer, *,
                    cursor: str | None = None, count: bool = False,
                    now: datetime | None = None) -> Page:
    """VOEvents matching ``query`` that ``viewer`` may see, newest first.

    Each row has the VOEvent's columns (not its bytes), ``size_bytes``,
    ``subject_ivorn`` (its alert or coincidence) and that subject's position.
    """
    return _search(conn, _VOEVENTS, query, viewer, cursor, count, now)


def _search(conn: Connection, spec: _Spec, query: Any, viewer: Viewer, cursor: str | None,
            count: bool, now: datetime | None) -> Page:
    now = now or datetime.now(UTC)
    fingerprint = query.fingerprint()
    conditions = [spec.visible(viewer, now), *query.conditions()]
    if isinstance(query, VOEventQuery):
        conditions += query.viewer_conditions(viewer, now)
    regions: list[Region] = query.regions()
    covered = 1.0
    for region in regions:
        ranges = region.sql_ranges()
        covered = min(covered, sum(hi - lo + 1 for lo, hi in ranges) / NPIX_29)
        conditions.append(or_(*(spec.hpx29.between(lo, hi) for lo, hi in ranges))
                          if ranges else false())
    want = query.limit + 1  # one more than the page: is there a next page?
    span = _span(conn, spec) if regions else None

    def sky_first(rows_wanted: int | None) -> bool:
        return bool(regions) and _sky_first(span, spec, query, covered, rows_wanted)

    total = (_count(conn, spec, _steered(conditions, spec, sky_first(None))[1], regions)
             if count else None)
    time, conditions = _steered(conditions, spec, sky_first(want))
    base = spec.select().where(*conditions)
    if cursor:
        after_time, after_id = decode_cursor(archive_sealer(conn, "cursor"), cursor,
                                             fingerprint)
        base = base.where(or_(time < after_time, and_(time == after_time, spec.id < after_id)))
    order = (time.desc(), spec.id.desc())
    if not regions:
        rows = list(conn.execute(base.order_by(*order).limit(want)))
    else:
        area = min(region.sky_fraction() for region in regions)
        over = covered / area if area > 0 else 1.0
        rows = _exact(conn, base, order, time, spec, regions, want, over)
    next_cursor = None
    if len(rows) > query.limit:
        rows = rows[:query.limit]
        last = rows[-1]._mapping
        next_cursor = encode_cursor(archive_sealer(conn, "cursor"), fingerprint,
                                    (last[spec.time.key], last[spec.id.key]))
    return Page(rows, next_cursor, total)


def _steered(conditions: list[ColumnElement[bool]], spec: _Spec, sky_first: bool
             ) -> tuple[Any, list[ColumnElement[bool]]]:
    """The time column and conditions, kept off the time index when the sky ranges are
    the cheaper plan (see :func:`_sky_first`)."""
    if sky_first:
        return unindexed(spec.time), [_unindex_time(c, spec.time) for c in conditions]
    return spec.time, conditions


def unindexed(column: Any) -> Any:
    """``+column``: the same value, but SQLite will not walk the column's index for it."""
    return UnaryExpression(column, operator=operators.custom_op("+"), type_=column.type)


def _unindex_time(condition: ColumnElement[bool], time: Any) -> Any:
    """``condition`` with ``time`` replaced by :func:`unindexed` ``time``."""
    column = time.expression
    plus = unindexed(time)

    def swap(element: Any, **kw: Any) -> Any:
        # ORM conditions hold annotated copies of the column, hence no ``is``
        same = (getattr(element, "table", None) is column.table
                and getattr(element, "name", None) == column.name)
        return plus if same else None

    return replacement_traverse(condition, {}, swap)


def _span(conn: Connection, spec: _Spec) -> tuple[int, datetime, datetime] | None:
    """On SQLite, for a resource whose time bounds the plan choice can use: (rows, first and
    last time), in one round trip; None otherwise.  Each aggregate is its own subquery, so
    SQLite answers each from an index end instead of scanning."""
    if conn.dialect.name != "sqlite" or spec.window is None:
        return None
    n, first, last = conn.execute(select(
        select(func.max(spec.id)).scalar_subquery(),
        select(func.min(spec.time)).scalar_subquery(),
        select(func.max(spec.time)).scalar_subquery())).one()
    if not n or first is None or last is None:
        return None
    return n, first, last


def alert_span(conn: Connection) -> tuple[int, datetime, datetime] | None:
    """The alerts' :func:`_span` on SQLite (rows, first and last event time), else None."""
    return _span(conn, _ALERTS)


def _sky_first(span: tuple[int, datetime, datetime] | None, spec: _Spec, query: Any,
               covered: float, want: int | None) -> bool:
    """Whether reading the sky ranges beats walking the time index (SQLite).

    SQLite's planner prefers the time index whenever it also gives the
    order, and walks it through a whole window however little sky a cone
    covers (a 0.5 deg cone over 30 days read about 82,000 rows for 1.6 matches in a
    1,000,000-alert archive: bench/RESULTS.md).  The
    rows each plan reads are estimated from the archive's size and time
    span (:func:`_span`): the sky ranges read ``n * covered``; the time walk
    reads the window's ``n * window / span`` rows, or stops after
    ``want / covered`` rows once the page is full (``want`` None: never, as
    for a count).  PostgreSQL makes this choice itself from its statistics
    (``span`` is None there).
    """
    if span is None or spec.window is None:
        return False
    n, first, last = span
    span_s = max((last - first).total_seconds(), 1.0)
    since, until = (getattr(query, name) for name in spec.window)
    lo = max(first, since) if since is not None else first
    hi = min(last, until) if until is not None else last
    window_rows = n * max((hi - lo).total_seconds(), 0.0) / span_s
    time_walk = window_rows if want is None else min(window_rows, want / max(covered, 1e-12))
    return n * covered < time_walk


def _keep(regions: Sequence[Region], ra: np.ndarray, dec: np.ndarray, hpx: np.ndarray
          ) -> np.ndarray:
    keep = np.ones(ra.shape, dtype=bool)
    for region in regions:
        keep &= region.contains(ra, dec, hpx)
    return keep


FIRST_BATCH_MAX = 20_000
"""Most candidate keys the first sky batch asks for."""


def _exact(conn: Connection, base: Any, order: tuple[Any, ...], time: Any, spec: _Spec,
           regions: Sequence[Region], want: int, over: float) -> list[Row[Any]]:
    """Candidates from the SQL ranges, in order, kept by the exact test until ``want``.

    Only the candidates' keys and positions are read; the kept rows are then
    loaded by id.  ``over`` is how much more sky the SQL ranges cover than
    the region, so the first batch is sized to fill the page at once.
    """
    keys = base.with_only_columns(spec.id.label("_id"), spec.time.label("_t"),
                                  spec.ra.label("_ra"), spec.dec.label("_dec"),
                                  spec.hpx29.label("_hpx29")).order_by(*order)
    batch = int(min(FIRST_BATCH_MAX, max(64, np.ceil(1.25 * want * over))))
    kept: list[int] = []
    after = None
    while len(kept) < want:
        paged = keys if after is None else keys.where(or_(
            time < after[0], and_(time == after[0], spec.id < after[1])))
        rows = conn.execute(paged.limit(batch)).all()
        if rows:
            ids = np.array([r[0] for r in rows], dtype=np.int64)
            pos = np.array([r[2:4] for r in rows], dtype=float)
            # int64 from the start: order-29 pixels exceed float64's exact integers.
            hpx = np.array([r[4] for r in rows], dtype=np.int64)
            kept += ids[_keep(regions, pos[:, 0], pos[:, 1], hpx)].tolist()
        if len(rows) < batch:
            break
        after = (rows[-1][1], rows[-1][0])
        batch = min(2 * batch, 4 * FIRST_BATCH_MAX)
    kept = kept[:want]
    if not kept:
        return []
    return list(conn.execute(base.where(_id_in(conn, spec.id, kept)).order_by(*order)))


def _id_in(conn: Connection, column: Any, ids: list[int]) -> ColumnElement[bool]:
    """``column IN ids``; on PostgreSQL one array parameter, so the statement text is the
    same for every page (psycopg parses each new ``IN (...)`` length again; a profile of
    the 10 deg x 7 day benchmark shape showed it, not recorded as a figure)."""
    if conn.dialect.name == "postgresql":
        return column == any_(bindparam("ids", ids, type_=ARRAY(BigInteger)))
    return column.in_(ids)


def _count(conn: Connection, spec: _Spec, conditions: list[ColumnElement[bool]],
           regions: Sequence[Region]) -> int:
    """Rows matching, ignoring the cursor and limit (sky regions tested exactly)."""
    if not regions:
        counted = spec.select().where(*conditions).subquery()
        return conn.execute(select(func.count()).select_from(counted)).scalar_one()
    stmt = spec.select().where(*conditions).with_only_columns(
        spec.ra, spec.dec, spec.hpx29)
    total = 0
    for chunk in conn.execute(stmt).partitions(50_000):
        pos = np.array([(r[0], r[1]) for r in chunk], dtype=float).reshape(-1, 2)
        hpx = np.array([r[2] for r in chunk], dtype=np.int64)
        total += int(_keep(regions, pos[:, 0], pos[:, 1], hpx).sum())
    return total


def citations(conn: Connection, voevent_ids: Iterable[int]) -> dict[int, list[dict[str, str]]]:
    """Citations of each VOEvent among ``voevent_ids``: [{ivorn, cite}], by row id."""
    wanted = sorted(set(voevent_ids))
    out: dict[int, list[dict[str, str]]] = {i: [] for i in wanted}
    if wanted:
        for vid, ivorn, cite in conn.execute(
                select(VOEventCitation.voevent_id, VOEventCitation.cited_ivorn,
                       VOEventCitation.cite).where(VOEventCitation.voevent_id.in_(wanted))
                .order_by(VOEventCitation.voevent_id, VOEventCitation.cited_ivorn)):
            out[vid].append({"ivorn": ivorn, "cite": cite})
    return out
