"""The cross-match engine: each arriving alert against the live window, by pairing.

The broker hands every archived alert to :meth:`Engine.process` and stores
what comes back; the engine itself does no I/O (sky map bytes come through
the ``skymap_loader`` the broker gives it).

For each configured pairing the alert takes part in, the engine looks up
partners in the :class:`~crossmatch.index.LiveIndex` inside the pairing's time
window (``lo <= t_b - t_a <= hi``, inclusive), keeps those of the same role
class (observations only with observations; tests with tests; drills with
drills), applies the credible-region gate and the overlap integral when the
pairing is spatial and both sides are localized, and attaches every
significance figure the pairing asks for.

Lifecycle of a coincidence (its identity is the pairing plus the member
events, whatever their revisions):

* ``new``: first found, revision 0;
* ``updated``: a member's new revision arrived (or the sky map it names by URL,
  fetched after it) and the members still coincide; the new
  result supersedes the previous revision;
* ``retracted``: a member was retracted, or its new revision (or its map) no
  longer coincides.  A retraction says nothing of when the event was (an LVK one
  names no event at all), so a coincidence retracted by one keeps the reference
  time and member offsets of the revision it retracts.

Results are idempotent per (member alert ids and revisions, fetched maps, config
hash): :func:`result_key` is what the archive deduplicates on.
"""

from __future__ import annotations

import hashlib
import heapq
import json
import logging
import math
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import numpy as np

from alerts_schema import Alert, Coincidence, Member, Overlap, PointLocalization, Significance
from crossmatch.config import CrossmatchConfig, Pairing, Selector
from crossmatch.events import EventKey, Order, event_key, fetched_map, order, supersedes
from crossmatch.index import IndexedAlert, LiveIndex
from crossmatch.localization import SkyMap, from_alert
from crossmatch.overlap import overlap
from crossmatch.significance import compute_figures

log = logging.getLogger(__name__)

ENGINE_VERSION = "1.0.0"
# I for two identical exact positions is infinite; JSON and the contract need a number.
MAX_OVERLAP = 1e300
EXPIRE_EVERY = 1000  # alerts processed between sweeps of the engine's own maps
ROUND_MAX = 10_000
"""Most alerts the broker matches before it marks them matched in the archive (an ingest
batch: ``ingest_batch_size`` is at most 10,000; a round of announcements); ``history``
answers only for alerts marked, so the engine keeps the last
``2 * max(ROUND_MAX, EXPIRE_EVERY)`` it processed at hand itself (about 20 MB)."""
EXTERNAL_PAD_DEG = 1.0
"""Archive cones for :attr:`Engine.external_messengers` are widened by at least this (deg):
the engine never sees their alerts' error radii (survey positions are good to arcseconds;
an alert of such a messenger with a larger radius could be missed by the archive search)."""
BATCH_MIN = 16  # partners from which a sky map's overlaps are looked up together
_UNSET = object()
STREAM = "coincidence"



class History(Protocol):
    """The archive as the engine reads it for what memory let go (see ``Engine.history``)."""

    def __call__(self, t_lo_s: float, t_hi_s: float, ra_deg: float | None,
                 dec_deg: float | None, radius_deg: float | None, *,
                 messengers: frozenset[str] | None = None,
                 unmatched: frozenset[str] = frozenset()) -> list[Alert]: ...


class Recall(Protocol):
    """The archive as an engine that is not fed every alert reads it (``Engine.recall``)."""

    def __call__(self, key: EventKey) -> tuple[list[Alert], list[Coincidence]]: ...


LATE_SLACK_S = 3600.0
"""Default late-arrival slack, seconds: see ``Engine.late_slack_s``."""
LONG_MARGIN_S = 86400.0
"""Margin beyond the longest reach for alerts held long, seconds (or the slack, if longer):
a survey transient up to a day late still looks back from memory, and a coincidence's
members outlive each other by a day."""


OBSERVATION_ROLES = ("observation", "prediction")
"""Roles of the ``observation`` class: predictions are matched as observations."""


def role_class(alert: Alert) -> str:
    """Alerts match only within their class: observations, tests, drills never mix."""
    return members_class([alert.role])


def members_class(roles: Iterable[str]) -> str:
    """The class the member roles of one coincidence share (see :func:`role_class`):
    ``observation`` for observations and predictions, else the role itself."""
    classes = {"observation" if r in OBSERVATION_ROLES else r for r in roles}
    return min(classes) if classes else "observation"


def class_roles(classes: Iterable[str]) -> tuple[str, ...]:
    """The alert roles of role classes (the inverse of :func:`members_class`), sorted."""
    return tuple(sorted({r for c in classes
                         for r in (OBSERVATION_ROLES if c == "observation" else (c,))}))


def result_key(members: Iterable[Alert], config_hash: str) -> str:
    """SHA-256 identifying one result: member ids and revisions plus the config hash.

    A member whose sky map was fetched after it arrived adds that map's SHA-256: the
    result with the map is another result than the one without (the key of every other
    result is what it always was).
    """
    def member(a: Alert) -> tuple[str, int] | tuple[str, int, str]:
        sha = fetched_map(a)
        return (a.id, a.revision) if sha is None else (a.id, a.revision, sha)

    body = json.dumps([sorted(member(a) for a in members), config_hash],
                      separators=(",", ":"))
    return hashlib.sha256(body.encode()).hexdigest()


def _epoch_s(t: datetime) -> float:
    return t.timestamp()


@dataclass(slots=True)
class _Held:
    """What the engine remembers of every event it holds, document or not."""

    id: str          # IVORN of the newest revision
    order: Order     # where that revision stands (crossmatch.events.supersedes)
    t_s: float       # event time, Unix s
    keep_s: float    # retention: the live index (tier) it is in


@dataclass
class _Tier:
    """One retention: a live index and its events by event time (for expiry)."""

    index: LiveIndex
    due: list[tuple[float, EventKey]] = field(default_factory=list)


@dataclass
class _Tracked:
    """A coincidence the engine follows across member revisions."""

    ident: str                      # hash of pairing + member event keys
    pairing: Pairing
    members: tuple[EventKey, ...]   # reference member first
    revision: int = 0
    ivorn: str = ""
    retracted: bool = False
    series: str = ""                # IVORN without the revision: fixed for life
    # Members' event times in the last revision emitted: a retracted member keeps its.
    times: dict[EventKey, datetime] = field(default_factory=dict)


@dataclass
class Result:
    """One coincidence revision for the broker to store (and publish)."""

    key: str
    coincidence: Coincidence


@dataclass
class Engine:
    """Cross-match alerts as they arrive.

    Parameters
    ----------
    config
        Pairings, windows and background rates (its hash goes into every result).
    authority
        IVORN authority for coincidence ids.
    skymap_loader
        Sky map bytes by SHA-256 (the archive's ``skymaps`` table), or None.
    clock
        Wall clock in Unix seconds; None replays history, the newest event time
        seen standing in for "now" (``mmbroker ingest`` of old files).
    late_slack_s
        Late-arrival slack, seconds.  An alert some pairing reaches further
        back for than the slack is held in memory for the longest such reach
        plus a day (``LONG_MARGIN_S``, or the slack if longer): a neutrino 11
        days (``hen-optical`` looks back 10 days from an optical transient to
        it).  Others, among them the optical transients pairings only look
        *forward* to, are held for the slack alone; coincidences' members
        for the long retention.  An alert arriving later than the
        slack behind the newest time still finds every partner: the part of its
        window memory no longer holds is read from ``history``.  So the slack
        trades memory (a survey's rate times the slack) against archive
        queries for late alerts, not results; the exception is a superseded
        revision arriving more than the slack after its successor, which
        memory no longer knows to be superseded.
    live_window_s
        Upper bound on any alert's retention, seconds (default: none).  Set it
        to keep even the rare streams briefly; queries reaching further back
        go to ``history``.
    history
        ``(t_lo_s, t_hi_s, ra_deg, dec_deg, radius_deg, messengers=...) -> alerts``
        from the archive (the broker passes a cone + time query); positions None for
        a time-only query, ``messengers`` None for any (a pairing's other side names
        the messengers it takes: a late neutrino reads no neutrinos for its optical
        follow-up).  Without it, results are limited to what memory holds.
    loader
        ``ivorns -> alerts`` from the archive.  With it, alerts no pairing
        looks back to (survey transients, the bulk) are held as index entries
        only, about a tenth of a whole document, and the documents of those a
        search finds are read back; members of a coincidence are kept whole.
        Without it every document stays in memory.
    external_messengers
        Messengers this engine is never fed because another path matches them (the match
        stage's survey path, :func:`survey_messengers`): memory never holds their
        alerts (but as members of a coincidence), so every window on them is read from
        ``history``, which is asked for their alerts *whatever their matched state*
        (``unmatched=``): a survey alert is archived before anybody matches it, and the
        one that pairs with an alert this engine matches may not be matched yet.
        Alerts of these messengers are processed with ``hold=False``.
    recall
        ``(source, event id) -> (alerts, coincidences)`` from the archive, for an
        engine that is *not* fed every alert of the times it is asked about:
        ``mmbroker ingest`` adding files to an archive earlier runs (or a live broker)
        filled, each run starting empty.  The newest matched revision of the event
        and of every event of a coincidence citing it, and those coincidences.  With
        it, memory is never taken to be complete: every window is read from
        ``history`` as well (memory adds what this engine processed and the archive
        has not yet marked), and an event memory does not hold is first recalled,
        as :meth:`warm` loads the live window, so that its new revision updates, and
        its retraction retracts, a coincidence an earlier run stored.

    Notes
    -----
    Retention follows each alert's *side* in the pairings, computed from the
    windows: for ``lo <= t_b - t_a <= hi`` a later ``b`` reaches ``hi`` back
    to an ``a`` and a later ``a`` reaches ``-lo`` back to a ``b``; an N-fold
    pairing reaches its whole ``tau``.  Alerts of one retention share one
    :class:`~crossmatch.index.LiveIndex` (a *tier*, two of them); a query
    asks both, and goes to ``history`` for the time before the horizon of
    the shortest tier that may hold the side it looks for.
    """

    config: CrossmatchConfig
    authority: str
    skymap_loader: Callable[[str], bytes | None] = lambda _sha: None
    clock: Callable[[], float] | None = time.time
    late_slack_s: float = LATE_SLACK_S
    live_window_s: float | None = None
    history: History | None = None
    loader: Callable[[Sequence[str]], list[Alert]] | None = None
    recall: Recall | None = None
    external_messengers: frozenset[str] = frozenset()
    _tiers: dict[float, _Tier] = field(default_factory=dict, init=False)
    _held: dict[EventKey, _Held] = field(default_factory=dict, init=False)
    _events: dict[EventKey, Alert] = field(default_factory=dict, init=False)  # documents
    _by_ivorn: dict[str, EventKey] = field(default_factory=dict, init=False)
    _tracked: dict[str, _Tracked] = field(default_factory=dict, init=False)
    _of_event: dict[EventKey, set[str]] = field(default_factory=lambda: defaultdict(set),
                                                init=False)
    _skymaps: dict[str, Any] = field(default_factory=dict, init=False)
    _detectors_on: dict[str, bool] = field(default_factory=dict, init=False)

    _processed: int = field(default=0, init=False)
    _newest_s: float = field(default=-math.inf, init=False)
    _longest_need_s: float = field(default=0.0, init=False)
    # Largest error radius seen per (pairing, side), deg: archive cones are widened by it,
    # as memory's cone lookups add each entry's own radius.
    _pad_deg: dict[tuple[str, str], float] = field(default_factory=dict, init=False)
    # Archived partners a search read this call (by IVORN): candidates, not held.
    _archived: dict[str, Alert] = field(default_factory=dict, init=False)
    # The alerts processed last, by IVORN, oldest first: the archive may not have them
    # marked matched yet, and memory may hold them no more (see ROUND_MAX).
    _recent: dict[str, IndexedAlert] = field(default_factory=dict, init=False)
    _ivorns_of: dict[EventKey, list[str]] = field(default_factory=lambda: defaultdict(list),
                                                  init=False)

    def __post_init__(self) -> None:
        if not (self.late_slack_s > 0 and math.isfinite(self.late_slack_s)):
            raise ValueError(f"late_slack_s must be positive, got {self.late_slack_s!r}")
        self._longest_need_s = max((n for p in self.config.pairings for n in _needs(p)),
                                   default=0.0)
        for need in (0.0, self._longest_need_s):
            self._tier(self._keep_for(need))

    # -- retention ----------------------------------------------------------------

    @property
    def window_s(self) -> float:
        """The longest retention, seconds: how far back a restart reloads the archive."""
        return max(self._tiers)

    @property
    def live_alerts(self) -> int:
        """How many alerts the live indexes hold."""
        return sum(len(t.index) for t in self._tiers.values())

    def retention_by_messenger(self) -> tuple[float, dict[str, float]]:
        """How long (s) alerts are held: ``(any alert, {messenger: longer})``.

        What a restart reloads from the archive: every alert of the last
        ``any alert`` seconds, and of the messengers listed, as long as given.
        A side whose selector names no messenger counts for every alert.
        """
        base = self._keep_for(0.0)
        longer: dict[str, float] = {}
        for pairing in self.config.pairings:
            for side, need in zip((pairing.a, pairing.b), _needs(pairing), strict=True):
                if side is None:
                    continue
                keep = self._keep_for(need)
                messengers = _messengers(side)
                if messengers is None:
                    base = max(base, keep)
                else:
                    for m in messengers:
                        longer[m] = max(longer.get(m, 0.0), keep)
        return base, {m: k for m, k in sorted(longer.items()) if k > base}

    def _keep_for(self, need_s: float) -> float:
        """Retention (s) of an alert pairings reach ``need_s`` back for.

        Two tiers only: every index is asked on every search, and per-index
        overhead dominated with one tier per distinct reach (14 for the shipped
        pairings: 5x the time per alert).  Reaches shorter than the slack are
        held for the slack (a later alert finds them from memory if it is at
        most ``slack - reach`` late, and from the archive after); longer
        reaches for the longest reach plus a day (``LONG_MARGIN_S``) or the
        slack if longer.
        """
        if need_s >= self.late_slack_s:
            keep = self._longest_need_s + max(self.late_slack_s, LONG_MARGIN_S)
        else:
            keep = self.late_slack_s
        return min(keep, self.live_window_s) if self.live_window_s else keep

    def _tier(self, keep_s: float) -> _Tier:
        tier = self._tiers.get(keep_s)
        if tier is None:
            # On the wall clock, memory starts complete only for what a warm-up loads (the
            # retention back from now); replaying history, it is fed everything in order.
            now = self._now()
            since = -math.inf if now is None else now - keep_s
            tier = self._tiers[keep_s] = _Tier(LiveIndex(window_s=keep_s,
                                                         complete_since_s=since))
        return tier

    def _need(self, alert: Alert, sides: list[tuple[bool, bool]] | None = None) -> float:
        """How far back (s) any pairing reaches for ``alert``: 0 when none does.

        ``sides`` are the pairings' ``side_of(alert)``, when already known.  Widens
        the archive pad of each side ``alert`` is on to its error radius (same loop).
        """
        need = 0.0
        if sides is None:
            sides = [p.side_of(alert) for p in self.config.pairings]
        radius = _radius_deg(alert)
        for pairing, (in_a, in_b) in zip(self.config.pairings, sides, strict=True):
            if in_a or in_b:
                reach_a, reach_b = _needs(pairing)
                need = max(need, reach_a if in_a else 0.0, reach_b if in_b else 0.0)
                for side in (("a",) if in_a else ()) + (("b",) if in_b else ()):
                    pad = self._pad_deg.get((pairing.name, side), 0.0)
                    if radius > pad:
                        self._pad_deg[pairing.name, side] = radius
        return need

    def _now(self) -> float | None:
        return self.clock() if self.clock is not None else None

    def _holding(self, keep_s: float) -> list[LiveIndex]:
        """The indexes that may hold alerts of retention ``keep_s``: an alert is held at
        least that long (longer when pinned to a coincidence), never shorter."""
        return [t.index for k, t in self._tiers.items() if k >= keep_s]

    def _horizon(self, keep_s: float) -> float:
        """Event time since which memory holds every alert of retention >= ``keep_s``."""
        return max((index.horizon_s for index in self._holding(keep_s)), default=-math.inf)

    def _in_time(self, t_lo: float, t_hi: float, keep_s: float = 0.0,
                 messengers: Collection[str] | None = None) -> list[IndexedAlert]:
        return [e for index in self._holding(keep_s)
                for e in index.in_time(t_lo, t_hi, messengers=messengers)]

    # -- inputs -------------------------------------------------------------------

    def set_detector_status(self, status: Mapping[str, bool]) -> None:
        """Which SN neutrino detectors are ON (from heartbeats), for the N-fold rate."""
        self._detectors_on = dict(status)

    def warm(self, alerts: Iterable[Alert], coincidences: Iterable[Coincidence]) -> None:
        """Rebuild state after a restart: alerts of the live window, stored coincidences.

        Nothing is emitted: these results are already in the archive.
        """
        docs: dict[EventKey, Alert] = {}
        for alert in sorted(alerts, key=lambda a: (a.revision, a.trigger_time)):
            key = event_key(alert)
            held = self._held.get(key)
            if held is not None and not supersedes(order(alert), held.order):
                continue  # (catching up: never back to an older revision)
            self._remember(alert)
            docs[key] = alert
        coincidences = list(coincidences)
        # Members memory no longer holds (a survey transient past the slack; another
        # worker's partner from the archive): read back, so the coincidence is followed
        # and a member's next revision updates it instead of starting another.
        missing = {m.alert_id for c in coincidences for m in c.members} - self._by_ivorn.keys()
        for alert in sorted(self._load(sorted(missing)).values(), key=lambda a: a.revision):
            key = event_key(alert)
            held = self._held.get(key)
            if held is None or supersedes(order(alert), held.order):
                self._remember(alert)
                docs[key] = alert
            else:
                self._note_ivorn(alert.id, key)
        by_series: dict[str, str] = {}
        for coinc in sorted(coincidences, key=lambda c: c.revision):
            keys = tuple(self._by_ivorn.get(m.alert_id) for m in coinc.members)
            if any(k is None for k in keys):
                continue  # members outside the live window: the coincidence is history
            pairing = next((p for p in self.config.pairings if p.name == coinc.pairing), None)
            if pairing is None:
                continue
            members = tuple(k for k in keys if k is not None)
            series = coinc.id.rsplit("-", 1)[0]
            # One coincidence per IVORN series: an N-fold group that grew keeps the
            # identity (and the series) of its first revision.
            ident = by_series.get(series) or _identity(pairing, members)
            by_series[series] = ident
            known = self._tracked.get(ident)
            if known is not None and known.revision > coinc.revision:
                continue  # (memory is ahead: never back to an older revision)
            t0 = coinc.reference_time
            times = {} if t0 is None else {
                k: t0 + timedelta(seconds=m.time_offset_s)
                for k, m in zip(members, coinc.members, strict=True)}
            self._tracked[ident] = _Tracked(ident, pairing, members, coinc.revision, coinc.id,
                                            coinc.state == "retracted", series, times)
            for k in members:
                self._of_event[k].add(ident)
            self._pin(members, docs)

    def process(self, alert: Alert, *, again: bool = False, hold: bool = True
                ) -> list[Result]:
        """Every coincidence result ``alert`` creates, updates or retracts.

        ``again``: the caller knows ``alert`` was never matched as it is now (the archive
        says it is unmatched), so when it is the very revision held with a fetched sky
        map (as :meth:`warm` loaded it: the map stored, then the process died before
        matching the alert with it) it is matched again.  Anything else is as without.
        ``hold=False``: search for ``alert``'s partners without holding it in memory (an
        alert of :attr:`external_messengers`, which later alerts read from the archive;
        it is held only once it is a member of a coincidence).
        """
        key = event_key(alert)
        self._archived = {}
        previous = self._held.get(key)
        if previous is None and self.recall is not None:
            alerts, coincidences = self.recall(key)
            self.warm(alerts, coincidences)
            previous = self._held.get(key)
        if previous is not None and not supersedes(order(alert), previous.order) \
                and not (again and previous.id == alert.id and previous.order.fetched):
            return []  # an older revision arriving late, or a copy, changes nothing
        if alert.alert_type == "retraction":
            self._remember(alert, previous)
            return [r for ident in sorted(self._of_event.get(key, ()))
                    if (r := self._retract(self._tracked[ident])) is not None]
        sides = [p.side_of(alert) for p in self.config.pairings]
        if hold:
            self._remember(alert, previous, sides)
        else:
            self._need(alert, sides)  # (only its archive pad: see _need)
        self._processed += 1
        if self._processed % EXPIRE_EVERY == 0:
            self._expire()
        results: list[Result] = []
        for ident in sorted(self._of_event.get(key, ())):
            tracked = self._tracked[ident]
            if not tracked.retracted:
                results.extend(self._reevaluate(tracked))
        results.extend(self._search(alert, sides))
        return results

    # -- state --------------------------------------------------------------------

    def _remember(self, alert: Alert, previous: _Held | None = None,
                  sides: list[tuple[bool, bool]] | None = None) -> None:
        key = event_key(alert)
        if previous is None:
            previous = self._held.get(key)
        if previous is not None:
            self._tiers[previous.keep_s].index.remove(previous.id)
        retracted = alert.alert_type == "retraction"
        t = _epoch_s(alert.trigger_time)
        if retracted and previous is not None and not event_time_known(alert):
            t = previous.t_s  # (a stand-in time: the event's is the one held)
        self._newest_s = max(self._newest_s, t)
        need = 0.0 if retracted else self._need(alert, sides)
        pinned = bool(self._of_event.get(key))
        if pinned:
            keep = self.window_s  # a coincidence's members: see _pin
        elif retracted and previous is not None:
            keep = previous.keep_s
        else:
            keep = self._keep_for(need)
        self._held[key] = _Held(alert.id, order(alert), t, keep)
        if self.loader is None or need > 0 or pinned or retracted:
            self._events[key] = alert
        else:
            self._events.pop(key, None)  # read back from the archive when a search finds it
        self._note_ivorn(alert.id, key)
        tier = self._tier(keep)
        heapq.heappush(tier.due, (t, key))
        if not retracted:
            entry = _entry(alert, key)
            tier.index.add(entry, now_s=self._now())
            self._recent[alert.id] = entry
            while len(self._recent) > 2 * max(ROUND_MAX, EXPIRE_EVERY):
                self._recent.pop(next(iter(self._recent)))

    def _pin(self, keys: Iterable[EventKey], docs: Mapping[EventKey, Alert]) -> None:
        """Hold a coincidence's members for the long retention, documents included: a
        member's new revision, or its retraction, re-evaluates the coincidence.

        Members read from the archive are held from now on.
        """
        keys = list(keys)
        for key in keys:
            doc = docs.get(key)
            if key not in self._held and doc is not None:
                self._remember(doc)
        held = [(k, self._held[k]) for k in keys if k in self._held]
        keep = self.window_s
        for key, h in held:
            if key not in self._events:
                doc = docs.get(key)
                if doc is None or doc.id != h.id:
                    doc = next(iter(self._load([h.id]).values()), None)
                if doc is not None:
                    self._events[key] = doc
            if h.keep_s < keep:
                entry = self._tiers[h.keep_s].index.get(h.id)
                self._tiers[h.keep_s].index.remove(h.id)
                h.keep_s = keep
                tier = self._tier(keep)
                heapq.heappush(tier.due, (h.t_s, key))
                doc = self._events.get(key)
                if entry is None and doc is not None and doc.alert_type != "retraction":
                    entry = _entry(doc, key)  # (its own tier had let it go already)
                if entry is not None:
                    tier.index.add(entry, now_s=self._now())

    def _load(self, ivorns: Sequence[str]) -> dict[str, Alert]:
        """Documents by IVORN from the archive (``loader``)."""
        if not ivorns or self.loader is None:
            return {}
        found = {a.id: a for a in self.loader(ivorns)}
        if len(found) < len(ivorns):
            log.warning("the archive lacks %d of %d alert(s) the engine holds",
                        len(ivorns) - len(found), len(ivorns))
        return found

    def _documents(self, entries: Iterable[IndexedAlert]) -> list[Alert]:
        """The documents of index entries that are still their event's newest revision."""
        found: list[Alert | str] = []
        for entry in entries:
            held = self._held.get(entry.payload)
            if held is None:
                doc = self._archived.get(entry.key)  # a partner only the archive knows
                if doc is not None:
                    found.append(doc)
                continue
            if held.id != entry.key:
                continue
            doc = self._events.get(entry.payload) or self._archived.get(entry.key)
            found.append(doc if doc is not None else entry.key)
        missing = [x for x in found if isinstance(x, str)]
        loaded = self._load(missing)
        return [x if not isinstance(x, str) else loaded[x] for x in found
                if not isinstance(x, str) or x in loaded]

    def _note_ivorn(self, ivorn: str, key: EventKey) -> None:
        if self._by_ivorn.get(ivorn) != key:
            self._by_ivorn[ivorn] = key
            self._ivorns_of[key].append(ivorn)

    def _expire(self) -> None:
        """Forget events (and coincidences of only such events) the indexes have let go.

        Each tier's index expires as alerts arrive; the engine's maps must
        follow, or a broker running for months would hold every alert it ever
        saw.  A heap by event time per tier makes each sweep cost what it
        removes, not the window.
        """
        now = self._now()
        now = self._newest_s if now is None else now
        gone: set[EventKey] = set()
        for keep, tier in self._tiers.items():
            kept: list[tuple[float, EventKey]] = []
            tier.index.expire(now - keep)  # a tier nobody adds to still moves on
            horizon = tier.index.horizon_s
            while tier.due and tier.due[0][0] < horizon:
                _, key = heapq.heappop(tier.due)
                held = self._held.get(key)
                # (a later revision, or a pin to a longer tier, may have moved it: kept)
                if held is not None and held.keep_s == keep and held.t_s < horizon:
                    if held.id in self._recent:
                        kept.append((held.t_s, key))  # (its round may still ask for it)
                    else:
                        gone.add(key)
            for item in kept:
                heapq.heappush(tier.due, item)
        for key in gone:
            self._held.pop(key)
            self._events.pop(key, None)
            for ivorn in self._ivorns_of.pop(key, ()):
                self._by_ivorn.pop(ivorn, None)
            for ident in self._of_event.pop(key, ()):
                tracked = self._tracked.get(ident)
                if tracked is not None and all(k in gone or k not in self._held
                                               for k in tracked.members):
                    del self._tracked[ident]

    def _from_history(self, t_lo: float, t_hi: float, ra: float | None, dec: float | None,
                      radius: float | None, live: list[IndexedAlert], keep_s: float,
                      pad_deg: float = 0.0, messengers: frozenset[str] | None = None
                      ) -> list[IndexedAlert]:
        """The live results, plus the archive's for the part of the window memory lost
        (memory of the tiers that may hold the side looked for: retention >= ``keep_s``).

        The archive's newest revision of each event, unless memory holds another
        or it is a retraction.  ``history`` answers for alerts already matched
        (as memory holds only alerts processed); the last alerts this engine
        processed are added from ``_recent``, which the archive may not have
        marked yet.  The cone is widened by ``pad_deg``, the largest error
        radius of the side: the archive matches positions, memory adds each
        entry's radius.
        """
        # (an engine that is not fed everything holds no window whole: see ``recall``;
        # nor one not fed some messengers, for them: see ``external_messengers``)
        outside = self.external_messengers if messengers is None \
            else messengers & self.external_messengers
        horizon = self._horizon(keep_s) if self.recall is None and not outside else math.inf
        if self.history is None or t_lo >= horizon:
            return live
        if outside:  # (their error radii were never seen here: see EXTERNAL_PAD_DEG)
            pad_deg = max(pad_deg, EXTERNAL_PAD_DEG)
        known = {e.key for e in live}
        newest: dict[EventKey, Alert] = {}
        if radius is not None and pad_deg:
            radius = min(180.0, radius + pad_deg)
        t_top = min(t_hi, horizon)
        for past in (self.history(t_lo, t_top, ra, dec, radius, messengers=messengers,
                                  unmatched=frozenset(outside)) if outside else
                     self.history(t_lo, t_top, ra, dec, radius, messengers=messengers)):
            key = event_key(past)
            if key not in newest or supersedes(order(past), order(newest[key])):
                newest[key] = past
        found = list(live)
        for key, past in newest.items():
            held = self._held.get(key)
            if past.id in known or past.alert_type == "retraction":
                continue  # (an event whose newest archived revision retracts it: none)
            if held is not None and held.id != past.id:
                continue  # memory knows which revision is current
            self._archived[past.id] = past
            found.append(_entry(past, key))
            known.add(past.id)
        # Processed lately, maybe not marked matched yet (by time: a superset; the pair
        # tests decide).
        found += [e for e in self._recent.values()
                  if e.key not in known and t_lo <= e.event_time_s <= t_top]
        return found

    def _localization(self, alert: Alert) -> Any:
        sha = getattr(alert.localization, "skymap_sha256", None)
        if sha is None:
            return from_alert(alert, {})
        if sha not in self._skymaps:
            data = self.skymap_loader(sha)
            if len(self._skymaps) > 64:
                self._skymaps.pop(next(iter(self._skymaps)))
            self._skymaps[sha] = from_alert(alert, {sha: data}) if data else None
        return self._skymaps[sha]

    # -- matching -----------------------------------------------------------------

    def _search(self, alert: Alert, sides: list[tuple[bool, bool]]) -> list[Result]:
        results: list[Result] = []
        key = event_key(alert)
        for pairing, (in_a, in_b) in zip(self.config.pairings, sides, strict=True):
            if pairing.kind == "nfold":
                if in_a:
                    results.extend(self._nfold(pairing, alert))
                continue
            for alert_is_a in (True, False):
                if not (in_a if alert_is_a else in_b):
                    continue
                partners = self._partners(pairing, alert, alert_is_a)
                batch = self._batch_sky(pairing, alert, partners)
                for partner in partners:
                    other = event_key(partner)
                    if other == key:
                        continue
                    members = (key, other) if alert_is_a else (other, key)
                    ident = _identity(pairing, members)
                    if ident in self._tracked:
                        continue
                    a, b = (alert, partner) if alert_is_a else (partner, alert)
                    evaluated = self._evaluate(pairing, a, b, batch.get(partner.id, _UNSET))
                    if evaluated is not None:
                        results.append(self._emit(_Tracked(ident, pairing, members),
                                                  [a, b], *evaluated))
        return results

    def _partners(self, pairing: Pairing, alert: Alert, alert_is_a: bool) -> list[Alert]:
        """Other-side alerts in the window, same role class, newest revision only."""
        lo, hi = pairing.window_s
        t = _epoch_s(alert.trigger_time)
        t_lo, t_hi = (t + lo, t + hi) if alert_is_a else (t - hi, t - lo)
        other = pairing.b if alert_is_a else pairing.a
        if other is None:
            return []
        reach_a, reach_b = _needs(pairing)
        keep = self._keep_for(reach_b if alert_is_a else reach_a)
        pad = self._pad_deg.get((pairing.name, "b" if alert_is_a else "a"), 0.0)
        # A cheap first cut on fields the index (and the archive) holds: a GRB's window
        # is full of optical alerts that no GRB pairing wants.
        messengers = frozenset(other.messenger) if other.messenger else None
        entries = self._candidates(pairing, alert, t_lo, t_hi, keep, pad, messengers)
        role = role_class(alert)
        return [c for c in self._documents(
            e for e in entries
            if e.role == role and (messengers is None or e.messenger in messengers))
            if other.matches(c)]

    def _candidates(self, pairing: Pairing, alert: Alert, t_lo: float, t_hi: float,
                    keep_s: float, pad_deg: float, messengers: frozenset[str] | None = None
                    ) -> list[IndexedAlert]:
        """Index lookup: by sky when the pairing is spatial and the window long; the
        archive for what memory let go (``keep_s``, ``pad_deg``: see _from_history)."""
        if not pairing.spatial or pairing.duration_s <= 3600:
            return self._from_history(t_lo, t_hi, None, None, None,
                                      self._in_time(t_lo, t_hi, keep_s, messengers), keep_s,
                                      messengers=messengers)
        loc = self._localization(alert)
        level = pairing.credible_level or 0.9
        if isinstance(loc, SkyMap):
            start, stop = loc.region(level)
            ranges = np.column_stack((start, stop - 1)) if start.size else np.empty((0, 2))
            live = [e for index in self._holding(keep_s)
                    for e in index.in_pixels(ranges, t_lo, t_hi, messengers=messengers)] + [
                e for index in self._holding(keep_s) for e in index.unlocalized(t_lo, t_hi)]
            # The archive answers cones: the one around the map's peak holding its region.
            ra, dec, radius = _bounding_cone(loc, level)
            return self._from_history(t_lo, t_hi, ra, dec, radius, live, keep_s, pad_deg,
                                      messengers)
        centre = getattr(alert.localization, "ra_deg", None), getattr(
            alert.localization, "dec_deg", None)
        if loc is None or centre[0] is None or centre[1] is None:
            return self._from_history(t_lo, t_hi, None, None, None,
                                      self._in_time(t_lo, t_hi, keep_s, messengers), keep_s,
                                      messengers=messengers)
        radius = min(180.0, loc.credible_radius_deg(level)
                     if hasattr(loc, "credible_radius_deg") else 180.0)
        live = [e for index in self._holding(keep_s)
                for e in index.in_cone(centre[0], centre[1], radius, t_lo, t_hi,
                                       add_entry_radius=True, messengers=messengers)]
        # Sky maps: by time, the sky test decides (other unlocalized alerts stay out: a
        # position-less GRB would pair with every transient of its week).
        live += [e for index in self._holding(keep_s) for e in index.unlocalized(t_lo, t_hi)
                 if getattr(self._events.get(e.payload), "localization", None) is not None
                 and self._events[e.payload].localization.kind == "skymap"]
        return self._from_history(t_lo, t_hi, centre[0], centre[1], radius, live, keep_s,
                                  pad_deg, messengers)

    def _batch_sky(self, pairing: Pairing, alert: Alert, partners: list[Alert]
                   ) -> dict[str, Overlap | None]:
        """Overlaps of a sky map with many near-exact positions, in one vectorized lookup.

        A position whose error is under 1% of the map pixel holding it overlaps
        the map by 4 pi times that pixel's density (what the overlap module's
        one-pixel case computes, one partner at a time).  A sky map against a
        night of optical transients is thousands of these.  None marks a
        partner outside the credible region (gated).  Others are left to
        :func:`~crossmatch.overlap.overlap`.
        """
        if not pairing.spatial or len(partners) < BATCH_MIN:
            return {}
        sky = self._localization(alert)
        if not isinstance(sky, SkyMap):
            return {}
        points = [(p, p.localization) for p in partners
                  if isinstance(p.localization, PointLocalization)]
        if not points:
            return {}
        ra = np.array([loc.ra_deg for _, loc in points])
        dec = np.array([loc.dec_deg for _, loc in points])
        radius = np.array([math.hypot(loc.error_radius_deg, loc.systematic_deg or 0.0)
                           for _, loc in points])
        rows = sky.rows_at(ra, dec)
        known = rows >= 0
        safe = np.where(known, rows, 0)
        side_deg = np.degrees(np.sqrt(np.pi / 3.0)) / 2.0 ** sky.order[safe]
        level = pairing.credible_level or 0.9
        out: dict[str, Overlap | None] = {}
        for i, (partner, _) in enumerate(points):
            if not known[i] or radius[i] >= 0.01 * side_deg[i]:
                continue  # outside the map, or too wide for the one-pixel answer
            if sky.credible_levels[safe[i]] >= level:
                out[partner.id] = None
                continue
            integral = 4.0 * math.pi * float(sky.density[safe[i]])
            out[partner.id] = Overlap(
                integral=integral, log10_integral=math.log10(integral) if integral > 0 else None,
                method=f"point x map: density of the order-{int(sky.order[safe[i]])} pixel "
                       "holding it (batch)", credible_level=level)
        return out

    def _evaluate(self, pairing: Pairing, a: Alert, b: Alert, precomputed: Any = _UNSET
                  ) -> tuple[Overlap | None, list[Significance]] | None:
        """Overlap and figures of a pair, or None when it is not a coincidence.

        ``precomputed`` is the pair's overlap from :meth:`_batch_sky` (None:
        gated), or ``_UNSET`` to compute it here.
        """
        dt = _epoch_s(b.trigger_time) - _epoch_s(a.trigger_time)
        if not pairing.in_window(dt):
            return None
        sky: Overlap | None = None
        if pairing.spatial and precomputed is not _UNSET:
            if precomputed is None:
                return None
            sky = precomputed
        elif pairing.spatial:
            passes, sky = self.sky_test(pairing, a, b)
            if not passes:
                return None
        figures = compute_figures(
            pairing, self.config, far_a_hz=a.far_hz, far_b_hz=b.far_hz,
            overlap=sky.integral if sky else None, offset_s=dt,
            p_values=[p for p in (a.p_value, b.p_value) if p is not None] or None)
        return sky, [f.to_significance() for f in figures]

    def sky_test(self, pairing: Pairing, a: Alert, b: Alert) -> tuple[bool, Overlap | None]:
        """Whether two alerts' localizations agree under ``pairing``, and their overlap.

        False when one lies outside the other's credible region or they do not
        overlap.  An unlocalized member (or a sky map the archive does not
        hold) passes with no overlap: the pair is then judged on time alone.
        """
        loc_a, loc_b = self._localization(a), self._localization(b)
        if loc_a is None or loc_b is None:
            return True, None
        result = overlap(loc_a, loc_b, credible_level=pairing.credible_level)
        if result.gated or result.integral <= 0:
            return False, None
        integral, log10, method = result.integral, result.log10_integral, result.method
        if not math.isfinite(integral):  # two identical exact positions
            integral, log10 = MAX_OVERLAP, math.log10(MAX_OVERLAP)
            method += " (capped: identical exact positions)"
        return True, Overlap(integral=integral, log10_integral=log10, method=method,
                             credible_level=pairing.credible_level)

    def _nfold(self, pairing: Pairing, alert: Alert) -> list[Result]:
        """Distinct detectors whose triggers all fall within tau: at least ``nfold_min``.

        A new trigger first joins the largest existing group of this pairing it
        fits in (its detector not yet there, the group's span still <= tau):
        that group is updated.  Otherwise the tau-long window containing it with
        the most distinct detectors, if it has enough, starts a new group.
        Arrival order does not change which triggers end up together as long as
        they all fit one window; a trigger can belong to several groups.
        """
        tau = pairing.window_s[1]
        t = _epoch_s(alert.trigger_time)
        key = event_key(alert)
        detector = _detector(pairing, alert)
        nearby: dict[str, Alert] = {}
        keep = self._keep_for(_needs(pairing)[0])
        role = role_class(alert)
        messengers = set(pairing.a.messenger) if pairing.a.messenger else None
        entries = self._from_history(t - tau, t + tau, None, None, None,
                                     self._in_time(t - tau, t + tau, keep, messengers), keep)
        for candidate in self._documents(
                e for e in entries
                if e.role == role and (messengers is None or e.messenger in messengers)):
            if candidate.id == alert.id:
                continue
            if role_class(candidate) != role_class(alert) or not pairing.a.matches(candidate):
                continue
            name = _detector(pairing, candidate)
            best = nearby.get(name)
            if best is None or abs(_epoch_s(candidate.trigger_time) - t) < abs(
                    _epoch_s(best.trigger_time) - t):
                nearby[name] = candidate

        groups = []
        for ident in {i for c in nearby.values()
                      for i in self._of_event.get(event_key(c), ())}:
            tracked = self._tracked[ident]
            if tracked.pairing.name != pairing.name or tracked.retracted:
                continue
            members = [self._events[k] for k in tracked.members if k in self._events]
            if detector in {_detector(pairing, m) for m in members}:
                continue
            times = [_epoch_s(m.trigger_time) for m in members] + [t]
            if max(times) - min(times) <= tau:
                groups.append((-len(members), min(times), ident, members))
        if groups:
            _, _, ident, members = min(groups)
            tracked = self._tracked[ident]
            joined = sorted([*members, alert], key=lambda a: a.trigger_time)
            tracked.members = tuple(event_key(m) for m in joined)
            return [self._emit(tracked, joined, None, self._nfold_figures(pairing, joined))]

        others = [c for name, c in nearby.items() if name != detector]
        best_members: list[Alert] = [alert]
        for start in sorted({t, *(_epoch_s(c.trigger_time) for c in others)}):
            if not start <= t <= start + tau:
                continue
            window = [c for c in others if start <= _epoch_s(c.trigger_time) <= start + tau]
            if len(window) + 1 > len(best_members):  # ties: the earliest window wins
                best_members = [alert, *window]
        if len({_detector(pairing, m) for m in best_members}) < (pairing.nfold_min or 2):
            return []
        members = sorted(best_members, key=lambda a: a.trigger_time)
        keys = tuple(event_key(m) for m in members)
        ident = _identity(pairing, keys)
        if ident in self._tracked or key not in keys:
            return []
        return [self._emit(_Tracked(ident, pairing, keys), members, None,
                           self._nfold_figures(pairing, members))]

    def _nfold_figures(self, pairing: Pairing, members: list[Alert]) -> list[Significance]:
        on = [d for d, up in self._detectors_on.items() if up] or None
        figures = compute_figures(
            pairing, self.config, detectors_on=on,
            multiplicity=len({m.facility for m in members}),
            p_values=[m.p_value for m in members if m.p_value is not None] or None)
        return [f.to_significance() for f in figures]

    # -- lifecycle ----------------------------------------------------------------

    def _reevaluate(self, tracked: _Tracked) -> list[Result]:
        members = [self._events[k] for k in tracked.members if k in self._events]
        if len(members) != len(tracked.members):
            return []
        if tracked.pairing.kind == "nfold":
            return [self._emit(tracked, members, None,
                               self._nfold_figures(tracked.pairing, members))]
        evaluated = self._evaluate(tracked.pairing, members[0], members[1], _UNSET)
        if evaluated is None:
            result = self._retract(tracked)
            return [result] if result is not None else []
        return [self._emit(tracked, members, *evaluated)]

    def _retract(self, tracked: _Tracked) -> Result | None:
        if tracked.retracted:
            return None
        members = [self._events[k] for k in tracked.members if k in self._events]
        tracked.retracted = True
        return self._emit(tracked, members, None, [], retracted=True)

    def _emit(self, tracked: _Tracked, members: list[Alert], sky: Overlap | None,
              significance: list[Significance], *, retracted: bool = False) -> Result:
        first = tracked.ident not in self._tracked
        previous_ivorn = None if first else tracked.ivorn
        if not first:
            tracked.revision += 1
        self._tracked[tracked.ident] = tracked
        for member_key in tracked.members:
            self._of_event[member_key].add(tracked.ident)
        self._pin(tracked.members, {event_key(m): m for m in members})
        ordered = sorted(members, key=lambda m: tracked.members.index(event_key(m)))
        # A retracted member keeps the time it had in the revision retracted (its
        # retraction may state another, or none: see the module docstring).
        times = {event_key(m): (
            tracked.times.get(event_key(m), m.trigger_time)
            if m.alert_type == "retraction" else m.trigger_time) for m in ordered}
        tracked.times = times
        reference = ordered[0]
        reference_time = times[event_key(reference)]
        t0 = _epoch_s(reference_time)
        if not tracked.series:
            tracked.series = (f"ivo://{self.authority}/{STREAM}#{tracked.pairing.name}-"
                              f"{tracked.ident[:12]}")
        tracked.ivorn = f"{tracked.series}-{tracked.revision}"
        coinc = Coincidence(
            schema_version="1.0", id=tracked.ivorn, pairing=tracked.pairing.name,
            state="retracted" if retracted else ("new" if first else "updated"),
            revision=tracked.revision, supersedes=previous_ivorn,
            members=[Member(alert_id=m.id, revision=m.revision, source=m.source,
                            messenger=m.messenger, facility=m.facility,
                            time_offset_s=round(
                                _epoch_s(times[event_key(m)]) - t0, 6))
                     for m in ordered],
            reference_time=reference_time,
            localization=_best_localization(ordered),
            spatial_overlap=sky, significance=significance, engine_version=ENGINE_VERSION,
            config_hash=self.config.config_hash,
            created_time=datetime.fromtimestamp(
                self.clock() if self.clock is not None else time.time(), UTC))
        key = result_key(ordered, self.config.config_hash)
        if retracted:  # a retraction of the same members is its own result
            key = hashlib.sha256((key + ":retracted").encode()).hexdigest()
        return Result(key, coinc)


def event_time_known(alert: Alert) -> bool:
    """False when the alert's ``trigger_time`` is a stand-in, not its event's time (an LVK
    retraction names no event: the notice time stands in, ``extra.event_time_known``
    false, until the broker sets the time of the event's earlier revisions)."""
    return alert.extra.get("event_time_known") is not False


def _needs(pairing: Pairing) -> tuple[float, float]:
    """How far back (s) a later alert reaches for a pairing's side ``a`` and side ``b``.

    For ``lo <= t_b - t_a <= hi``: a later ``b`` looks ``hi`` back for an
    ``a``, a later ``a`` looks ``-lo`` back for a ``b``; an N-fold group
    looks its whole ``tau`` back.
    """
    lo, hi = pairing.window_s
    if pairing.kind == "nfold":
        return hi - lo, 0.0
    return max(0.0, hi), max(0.0, -lo)


def _messengers(side: Selector) -> set[str] | None:
    """The messengers a side's selector can admit; None when it does not restrict them."""
    if side.messenger:
        return set(side.messenger)
    if side.any_of:
        found: set[str] = set()
        for child in side.any_of:
            got = _messengers(child)
            if got is None:
                return None
            found |= got
        return found
    return None


def survey_messengers(config: CrossmatchConfig) -> frozenset[str]:
    """The survey's messengers: those some pairing's side ``b`` names and no side ``a`` (nor
    an N-fold group) can take.

    Their alerts only ever look *back* to another messenger's alerts (for the shipped
    pairings: optical transients to neutrinos, GRBs and GWs, through ``hen-optical``,
    ``grb-optical`` and ``gw-optical``), and no pairing ever pairs two of them: what the
    match stage matches in parallel (:mod:`broker.runtime.match_stage`).  Empty when a
    side ``a`` selector names no messenger (it could take any alert).
    """
    taken: set[str] = set()
    named: set[str] = set()
    for pairing in config.pairings:
        side_a = _messengers(pairing.a) if pairing.a is not None else set()
        if side_a is None:
            return frozenset()
        taken |= side_a
        if pairing.b is not None and pairing.kind != "nfold":
            named |= _messengers(pairing.b) or set()
    return frozenset(named - taken)


def _radius_deg(alert: Alert) -> float:
    """The error radius memory's cone lookups add for ``alert``, deg (0: none)."""
    loc = alert.localization
    return getattr(loc, "error_radius_deg", None) or getattr(loc, "semi_major_deg", None) or 0.0


def _entry(alert: Alert, key: EventKey) -> IndexedAlert:
    """The index entry of ``alert`` (strings every alert of a stream shares, interned).

    A sky map is indexed without a position: its peak is no circle a cone lookup could
    match, so searches take maps by time (``LiveIndex.unlocalized``) and test the map.
    """
    loc = alert.localization
    ra, dec = getattr(loc, "ra_deg", None), getattr(loc, "dec_deg", None)
    if loc.kind == "skymap":
        ra = dec = None
    radius = _radius_deg(alert) or None
    return IndexedAlert(
        key=alert.id, stream=sys.intern(alert.source), messenger=sys.intern(alert.messenger),
        facility=sys.intern(alert.facility), role=role_class(alert),
        event_time_s=_epoch_s(alert.trigger_time), ra_deg=ra, dec_deg=dec,
        radius_deg=radius, payload=key)


def _bounding_cone(sky: SkyMap, level: float) -> tuple[float, float, float]:
    """(ra, dec, radius) in degrees of a cone around the map's peak holding its region."""
    centres = sky.centres
    inside = np.nonzero(sky.credible_levels < level)[0]
    peak = centres[int(np.argmax(sky.density))]
    if inside.size == 0:
        inside = np.array([int(np.argmax(sky.density))])
    cos = np.clip(centres[inside] @ peak, -1.0, 1.0)
    # Pixel centres lie inside their pixels: pad by the largest pixel's half-diagonal.
    pad = np.degrees(np.sqrt(np.max(sky.area_sr[inside])))
    ra, dec = (float(v) for v in np.degrees((np.arctan2(peak[1], peak[0]) % (2 * np.pi),
                                              np.arcsin(peak[2]))))
    return ra % 360.0, dec, float(min(180.0, np.degrees(np.arccos(cos.min())) + pad))


def _detector(pairing: Pairing, alert: Alert) -> str:
    return str(getattr(alert, pairing.group_by, None) or alert.facility)


def _identity(pairing: Pairing, members: tuple[EventKey, ...]) -> str:
    body = json.dumps([pairing.name, [list(k) for k in members]], separators=(",", ":"))
    return hashlib.sha256(body.encode()).hexdigest()


def _best_localization(members: list[Alert]) -> Any:
    """The member localization covering the least sky (its credible area, deg^2)."""
    best, best_area = None, float("inf")
    for m in members:
        loc = m.localization
        if loc.kind == "point":
            area = np.pi * max(loc.error_radius_deg, 1e-9) ** 2
        elif loc.kind == "ellipse":
            area = np.pi * loc.semi_major_deg * loc.semi_minor_deg
        elif loc.kind == "skymap":
            area = loc.area_90_deg2 if loc.area_90_deg2 is not None else 4.1e4
        else:
            continue
        if area < best_area:
            best, best_area = loc, area
    return best
