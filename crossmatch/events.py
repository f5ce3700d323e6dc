"""One physical event across transports: which alerts are revisions of the same event,
and which of two revisions is the newer.

The same notice reaches the broker by several roads.  An LVK superevent comes as
igwn.gwalert JSON (or Avro) and as a GCN VOEvent ``ivo://gwnet/LVC#S...``; a Swift
trigger as a GCN Classic VOEvent and as a 160-byte binary notice; an Einstein Probe or
SVOM trigger as GCN JSON and as a VOEvent.  Each is archived under its own stream
(``Alert.source``), as received; to the cross-match engine they are one event, so its
revisions supersede each other and it never pairs twice with the same partner.

Event key
---------
``(namespace, event id)``, where the namespace is

* ``LVK`` for every LVK alert (``facility`` LVK): GraceDB superevent ids are unique
  across LVK, whatever the stream;
* ``gcn/<facility>`` for a mission's notices distributed by GCN (GCN Kafka topics
  ``gcn.*``, GCN Classic VOEvents ``ivo://nasa.gsfc.gcn/...``, GCN Classic binary
  notices, and gwcelery's re-issue of GCN notices as VOEvents ``ivo://lvk.internal/...``):
  a mission numbers its own triggers, and every GCN format carries that number;
* the stream itself (``Alert.source``) for everything else, as before.

Which revision is newer
-----------------------
Within one stream the revision number decides.  Across streams it decides too when both
streams number revisions by the same rule, which each alert names in
``extra.revision_rule`` (:data:`REVISION_RULE`): LVK's ``lvk-time-created-v1`` on its JSON,
Avro and VOEvent paths, GCN Classic's ``gcn-rank-serial-v1`` on its VOEvent and binary
paths.  Otherwise the time the facility issued each notice (``extra.issued``,
:data:`ISSUED`: LVK ``time_created``, GCN JSON ``alert_datetime``, VOEvent ``Who/Date``)
decides; with either unknown, the later arrival is taken as the newer, unless it says
the same of the event (time, type, localization) as the revision held.

Two alerts of the same revision from different streams are *copies* of one notice: the
second changes nothing, unless it brings a sky map the first lacked.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from alerts_schema import Alert, SkymapLocalization

__all__ = [
    "FETCHED_MAP",
    "GCN_SOURCES",
    "ISSUED",
    "REVISION_RULE",
    "EventKey",
    "Order",
    "event_key",
    "fetched_map",
    "namespace",
    "order",
    "supersedes",
]

EventKey = tuple[str, str]
"""``(namespace, event id)``: one physical event, all its revisions, every transport."""

REVISION_RULE = "revision_rule"
"""The ``extra`` key naming the rule an alert's revision number follows."""

ISSUED = "issued"
"""The ``extra`` key holding when the facility issued the notice (UTC, ``...Z``)."""

FETCHED_MAP = "skymap_fetch"
"""The ``extra`` key of the record the broker keeps of a sky map it fetched for an alert
after archiving it (``{"url", "sha256", ...}``; :mod:`broker.runtime.mapfetch`).  When
its ``sha256`` is the map the alert's localization names, the alert is that revision
*with its map*: the same IVORN and revision, one step later (:func:`supersedes`)."""

GCN_SOURCES = ("gcn.", "ivo://nasa.gsfc.gcn/", "gcn.classic.binary/", "ivo://lvk.internal/")
"""Prefixes of the streams that carry GCN-distributed mission notices (see the module
docstring): Kafka topics, Classic VOEvent IVORNs, Classic binary streams, and gwcelery's
re-issued VOEvents of GCN notices."""

_LVK = "LVK"
_namespaces: dict[tuple[str, str], str] = {}  # (source, facility) -> namespace, interned


def namespace(source: str, facility: str) -> str:
    """The event namespace of a stream and facility (module docstring)."""
    known = _namespaces.get((source, facility))
    if known is not None:
        return known
    if facility == _LVK:
        found = _LVK
    elif source.startswith(GCN_SOURCES):
        found = f"gcn/{facility}"
    else:
        found = source
    if len(_namespaces) < 4096:  # streams are few; a flood of odd sources is not cached
        _namespaces[source, facility] = found = sys.intern(found)
    return found


def event_key(alert: Alert) -> EventKey:
    """The event ``alert`` is a revision of, whichever transport brought it."""
    return namespace(alert.source, alert.facility), alert.event_id


@dataclass(frozen=True, slots=True)
class Order:
    """Where one revision stands among its event's revisions (see :func:`supersedes`).

    Attributes
    ----------
    source
        The stream that brought it.
    rule
        Its revision rule (``extra.revision_rule``), or None.
    revision
        Its revision number.
    fetched
        Its localization is a sky map fetched after it arrived.
    has_map
        Its localization is a sky map, however it came.
    issued_s
        When the facility issued it, Unix seconds, or None.
    content
        Hash of what it says of the event (time, type, localization): equal for two
        copies of one notice (in this process only).
    """

    source: str
    rule: str | None
    revision: int
    fetched: bool
    has_map: bool
    issued_s: float | None
    content: int


def fetched_map(alert: Alert) -> str | None:
    """SHA-256 of the sky map fetched after the alert arrived that is its localization, or
    None (no map, or one the message carried itself)."""
    record = alert.extra.get(FETCHED_MAP)
    if record is None:
        return None
    sha = getattr(alert.localization, "skymap_sha256", None)
    return sha if isinstance(record, dict) and sha and record.get("sha256") == sha else None


def order(alert: Alert) -> Order:
    """Where ``alert`` stands among its event's revisions (:func:`supersedes` compares)."""
    rule = alert.extra.get(REVISION_RULE)
    return Order(
        source=sys.intern(alert.source),
        rule=sys.intern(rule) if isinstance(rule, str) else None,
        revision=alert.revision, fetched=fetched_map(alert) is not None,
        has_map=isinstance(alert.localization, SkymapLocalization),
        issued_s=_issued_s(alert.extra.get(ISSUED)), content=_content(alert))


def supersedes(new: Order, held: Order) -> bool:
    """Whether revision ``new`` of an event replaces ``held``, the one the engine holds.

    The rules are the module docstring's.  Within one stream an alert whose map arrived
    after it (``fetched``) is matched again as it is now, superseding itself as it was;
    a later revision still supersedes both.  A revision never supersedes itself, so an
    alert processed twice changes nothing the second time.
    """
    if new.source == held.source:
        return (new.revision, new.fetched) > (held.revision, held.fetched)
    if new.rule is not None and new.rule == held.rule:
        pair: tuple[float, float] = (new.revision, held.revision)
    elif new.issued_s is not None and held.issued_s is not None:
        pair = (new.issued_s, held.issued_s)
    elif new.content != held.content:
        return True  # (nothing orders them: the later arrival stands)
    else:
        pair = (0.0, 0.0)  # what it says is what is held: a copy
    if pair[0] != pair[1]:
        return pair[0] > pair[1]
    return new.has_map and not held.has_map  # a copy: only a map it adds is news


def _issued_s(value: Any) -> float | None:
    if not isinstance(value, str) or not value.endswith("Z"):
        return None
    try:
        return datetime.fromisoformat(value[:-1] + "+00:00").timestamp()
    except ValueError:
        return None


def _content(alert: Alert) -> int:
    loc = alert.localization
    return hash((alert.trigger_time, alert.alert_type, loc.kind,
                 getattr(loc, "ra_deg", None), getattr(loc, "dec_deg", None),
                 getattr(loc, "error_radius_deg", None), getattr(loc, "skymap_sha256", None)))
