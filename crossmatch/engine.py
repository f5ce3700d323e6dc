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
* ``updated``: a member's new revision arrived and the members still
  coincide; the new result supersedes the previous revision;
* ``retracted``: a member was retracted, or its new revision no longer
  coincides.

Results are idempotent per (member alert ids and revisions, config hash):
:func:`result_key` is what the archive deduplicates on.
"""

from __future__ import annotations

import hashlib
import heapq
import json
import logging
import math
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np

from alerts_schema import Alert, Coincidence, Member, Overlap, Significance
from crossmatch.config import CrossmatchConfig, Pairing
from crossmatch.index import IndexedAlert, LiveIndex
from crossmatch.localization import SkyMap, from_alert
from crossmatch.overlap import overlap
from crossmatch.significance import compute_figures

log = logging.getLogger(__name__)

ENGINE_VERSION = "1.0.0"
# I for two identical exact positions is infinite; JSON and the contract need a number.
MAX_OVERLAP = 1e300
EXPIRE_EVERY = 1000  # alerts processed between sweeps of the engine's own maps
BATCH_MIN = 16  # partners from which a sky map's overlaps are looked up together
_UNSET = object()
STREAM = "coincidence"

EventKey = tuple[str, str]  # (source, event id): one physical event, all its revisions


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


def result_key(members: Iterable[Alert], config_hash: str) -> str:
    """SHA-256 identifying one result: member ids and revisions plus the config hash."""
    body = json.dumps([sorted((a.id, a.revision) for a in members), config_hash],
                      separators=(",", ":"))
    return hashlib.sha256(body.encode()).hexdigest()


def _epoch_s(t: datetime) -> float:
    return t.timestamp()


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
    live_window_s
        How much event time the in-memory index keeps, seconds; default: the
        longest pairing window plus a day.  Set it shorter when a stream is too
        dense to hold for the longest window (Rubin fills 10 days with ~1e8
        alerts): queries reaching further back go to ``history``.
    history
        ``(t_lo_s, t_hi_s, ra_deg, dec_deg, radius_deg) -> alerts`` from the
        archive (the broker passes a cone + time query); positions None for a
        time-only query.  Without it, results are limited to the live window.
    """

    config: CrossmatchConfig
    authority: str
    skymap_loader: Callable[[str], bytes | None] = lambda _sha: None
    clock: Callable[[], float] | None = time.time
    live_window_s: float | None = None
    history: Callable[[float, float, float | None, float | None, float | None],
                      list[Alert]] | None = None
    index: LiveIndex = field(init=False)
    _events: dict[EventKey, Alert] = field(default_factory=dict, init=False)
    _by_ivorn: dict[str, EventKey] = field(default_factory=dict, init=False)
    _tracked: dict[str, _Tracked] = field(default_factory=dict, init=False)
    _of_event: dict[EventKey, set[str]] = field(default_factory=lambda: defaultdict(set),
                                                init=False)
    _skymaps: dict[str, Any] = field(default_factory=dict, init=False)
    _detectors_on: dict[str, bool] = field(default_factory=dict, init=False)

    _processed: int = field(default=0, init=False)
    _by_time: list[tuple[float, EventKey]] = field(default_factory=list, init=False)
    _ivorns_of: dict[EventKey, list[str]] = field(default_factory=lambda: defaultdict(list),
                                                  init=False)

    def __post_init__(self) -> None:
        reach = max((max(abs(p.window_s[0]), abs(p.window_s[1])) for p in self.config.pairings),
                    default=0.0)
        # By default keep what any pairing can still reach from a new alert, plus
        # a day of slack for late arrivals.
        self.index = LiveIndex(window_s=self.live_window_s or reach + 86400.0)

    # -- inputs -------------------------------------------------------------------

    def set_detector_status(self, status: Mapping[str, bool]) -> None:
        """Which SN neutrino detectors are ON (from heartbeats), for the N-fold rate."""
        self._detectors_on = dict(status)

    def warm(self, alerts: Iterable[Alert], coincidences: Iterable[Coincidence]) -> None:
        """Rebuild state after a restart: alerts of the live window, stored coincidences.

        Nothing is emitted: these results are already in the archive.
        """
        for alert in sorted(alerts, key=lambda a: (a.revision, a.trigger_time)):
            self._remember(alert)
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
            self._tracked[ident] = _Tracked(ident, pairing, members, coinc.revision, coinc.id,
                                            coinc.state == "retracted", series)
            for k in members:
                self._of_event[k].add(ident)

    def process(self, alert: Alert) -> list[Result]:
        """Every coincidence result ``alert`` creates, updates or retracts."""
        key = (alert.source, alert.event_id)
        previous = self._events.get(key)
        if previous is not None and previous.revision >= alert.revision:
            return []  # an older revision arriving late changes nothing
        self._note_ivorn(alert.id, key)
        if alert.alert_type == "retraction":
            self._events[key] = alert
            if previous is not None:
                self.index.remove(previous.id)
            return [r for ident in sorted(self._of_event.get(key, ()))
                    if (r := self._retract(self._tracked[ident])) is not None]
        self._remember(alert, previous)
        self._processed += 1
        if self._processed % EXPIRE_EVERY == 0:
            self._expire()
        results: list[Result] = []
        for ident in sorted(self._of_event.get(key, ())):
            tracked = self._tracked[ident]
            if not tracked.retracted:
                results.extend(self._reevaluate(tracked))
        results.extend(self._search(alert))
        return results

    # -- state --------------------------------------------------------------------

    def _remember(self, alert: Alert, previous: Alert | None = None) -> None:
        key = (alert.source, alert.event_id)
        if previous is None:
            previous = self._events.get(key)
        if previous is not None:
            self.index.remove(previous.id)
        self._events[key] = alert
        self._note_ivorn(alert.id, key)
        heapq.heappush(self._by_time, (_epoch_s(alert.trigger_time), key))
        if alert.alert_type == "retraction":
            return
        loc = alert.localization
        ra, dec = getattr(loc, "ra_deg", None), getattr(loc, "dec_deg", None)
        radius = getattr(loc, "error_radius_deg", None) or getattr(loc, "semi_major_deg", None)
        self.index.add(IndexedAlert(
            key=alert.id, stream=alert.source, messenger=alert.messenger,
            facility=alert.facility, role=role_class(alert),
            event_time_s=_epoch_s(alert.trigger_time), ra_deg=ra, dec_deg=dec,
            radius_deg=radius, payload=key),
            now_s=self.clock() if self.clock is not None else None)

    def _note_ivorn(self, ivorn: str, key: EventKey) -> None:
        if self._by_ivorn.get(ivorn) != key:
            self._by_ivorn[ivorn] = key
            self._ivorns_of[key].append(ivorn)

    def _expire(self) -> None:
        """Forget events (and coincidences of only such events) the index has let go.

        The index expires by itself; the engine's maps must follow it, or a
        broker running for months would hold every alert it ever saw.  A heap
        by event time makes each sweep cost what it removes, not the window.
        """
        horizon = self.index.horizon_s
        gone: set[EventKey] = set()
        while self._by_time and self._by_time[0][0] < horizon:
            _, key = heapq.heappop(self._by_time)
            alert = self._events.get(key)
            if alert is not None and _epoch_s(alert.trigger_time) < horizon:
                gone.add(key)  # (a later revision may have moved it inside: kept)
        for key in gone:
            self._events.pop(key)
            for ivorn in self._ivorns_of.pop(key, ()):
                self._by_ivorn.pop(ivorn, None)
            for ident in self._of_event.pop(key, ()):
                tracked = self._tracked.get(ident)
                if tracked is not None and all(k in gone or k not in self._events
                                               for k in tracked.members):
                    del self._tracked[ident]

    def _from_history(self, t_lo: float, t_hi: float, ra: float | None, dec: float | None,
                      radius: float | None, live: list[IndexedAlert]) -> list[IndexedAlert]:
        """The live results, plus the archive's for the part of the window the index lost."""
        if self.history is None or self.index.covers(t_lo):
            return live
        known = {e.key for e in live}
        found = list(live)
        for past in self.history(t_lo, min(t_hi, self.index.horizon_s), ra, dec, radius):
            if past.id in known:
                continue
            key = (past.source, past.event_id)
            current = self._events.get(key)
            if current is None or current.revision < past.revision:
                self._events[key] = past  # known from now on, for the lifecycle
                self._note_ivorn(past.id, key)
                heapq.heappush(self._by_time, (_epoch_s(past.trigger_time), key))
            loc = past.localization
            found.append(IndexedAlert(
                key=past.id, stream=past.source, messenger=past.messenger,
                facility=past.facility, role=role_class(past),
                event_time_s=_epoch_s(past.trigger_time), ra_deg=getattr(loc, "ra_deg", None),
                dec_deg=getattr(loc, "dec_deg", None), payload=key))
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

    def _search(self, alert: Alert) -> list[Result]:
        results: list[Result] = []
        key = (alert.source, alert.event_id)
        for pairing in self.config.pairings:
            in_a, in_b = pairing.side_of(alert)
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
                    other = (partner.source, partner.event_id)
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
        entries = self._candidates(pairing, alert, t_lo, t_hi)
        # A cheap first cut on fields the index holds: a GRB's window is full of
        # optical alerts that no GRB pairing wants.
        messengers = set(other.messenger) if other.messenger else None
        role = role_class(alert)
        found = []
        for entry in entries:
            if entry.role != role or (messengers is not None and entry.messenger not in messengers):
                continue
            candidate = self._events.get(entry.payload)
            if candidate is None or candidate.id != entry.key:
                continue
            if not other.matches(candidate):
                continue
            found.append(candidate)
        return found

    def _candidates(self, pairing: Pairing, alert: Alert, t_lo: float, t_hi: float
                    ) -> list[IndexedAlert]:
        """Index lookup: by sky when the pairing is spatial and the window long."""
        if not pairing.spatial or pairing.duration_s <= 3600:
            return self._from_history(t_lo, t_hi, None, None, None,
                                      self.index.in_time(t_lo, t_hi))
        loc = self._localization(alert)
        level = pairing.credible_level or 0.9
        if isinstance(loc, SkyMap):
            start, stop = loc.region(level)
            ranges = np.column_stack((start, stop - 1)) if start.size else np.empty((0, 2))
            live = self.index.in_pixels(ranges, t_lo, t_hi) + [
                e for e in self.index.in_time(t_lo, t_hi) if e.hpx29 is None]
            # The archive answers cones: the one around the map's peak holding its region.
            ra, dec, radius = _bounding_cone(loc, level)
            return self._from_history(t_lo, t_hi, ra, dec, radius, live)
        centre = getattr(alert.localization, "ra_deg", None), getattr(
            alert.localization, "dec_deg", None)
        if loc is None or centre[0] is None or centre[1] is None:
            return self._from_history(t_lo, t_hi, None, None, None,
                                      self.index.in_time(t_lo, t_hi))
        radius = loc.credible_radius_deg(level) if hasattr(loc, "credible_radius_deg") else 180.0
        live = self.index.in_cone(centre[0], centre[1], min(180.0, radius), t_lo, t_hi,
                                  add_entry_radius=True)
        return self._from_history(t_lo, t_hi, centre[0], centre[1], min(180.0, radius), live)

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
        points = [p for p in partners if p.localization.kind == "point"]
        if not points:
            return {}
        ra = np.array([p.localization.ra_deg for p in points])
        dec = np.array([p.localization.dec_deg for p in points])
        radius = np.array([math.hypot(p.localization.error_radius_deg,
                                      p.localization.systematic_deg or 0.0) for p in points])
        rows = sky.rows_at(ra, dec)
        known = rows >= 0
        safe = np.where(known, rows, 0)
        side_deg = np.degrees(np.sqrt(np.pi / 3.0)) / 2.0 ** sky.order[safe]
        level = pairing.credible_level or 0.9
        out: dict[str, Overlap | None] = {}
        for i, partner in enumerate(points):
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
        key = (alert.source, alert.event_id)
        detector = _detector(pairing, alert)
        nearby: dict[str, Alert] = {}
        for entry in self.index.in_time(t - tau, t + tau):
            candidate = self._events.get(entry.payload)
            if candidate is None or candidate.id != entry.key or candidate.id == alert.id:
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
                      for i in self._of_event.get((c.source, c.event_id), ())}:
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
            tracked.members = tuple((m.source, m.event_id) for m in joined)
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
        keys = tuple((m.source, m.event_id) for m in members)
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
        for key in tracked.members:
            self._of_event[key].add(tracked.ident)
        ordered = sorted(members, key=lambda m: tracked.members.index((m.source, m.event_id)))
        reference = ordered[0]
        t0 = _epoch_s(reference.trigger_time)
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
                            time_offset_s=round(_epoch_s(m.trigger_time) - t0, 6))
                     for m in ordered],
            reference_time=reference.trigger_time,
            localization=_best_localization(ordered),
            spatial_overlap=sky, significance=significance, engine_version=ENGINE_VERSION,
            config_hash=self.config.config_hash,
            created_time=datetime.fromtimestamp(
                self.clock() if self.clock is not None else time.time(), UTC))
        key = result_key(ordered, self.config.config_hash)
        if retracted:  # a retraction of the same members is its own result
            key = hashlib.sha256((key + ":retracted").encode()).hexdigest()
        return Result(key, coinc)


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
