"""How long each step took for an alert: event -> received, then matched and published
side by side, then Comet's ack.

* event: the trigger time the facility states;
* received: when the broker had the raw bytes;
* matched: when the cross-match engine had processed the alert;
* published: when the first VOEvent carrying it entered the outbox: its own
  (a detector trigger), or that of a coincidence its arrival completed (it
  was the member matched last);
* acknowledged: when Comet acknowledged that VOEvent over VTP.

The chain forks after ``received``: a detector trigger's own VOEvent needs nothing
the engine does, so it is queued before the engine runs (``published`` may come
before ``matched``); a VOEvent of a coincidence comes after the match that made it.
Each interval is thus measured from the step it waits for: ``received->matched``
(the engine), ``received->published`` (whatever stood before the VOEvent),
``published->acknowledged`` (the outbox and Comet).

Steps not (yet) reached are None.  :func:`distribution` summarises the
recent alerts' step durations for the dashboard.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.engine import Connection

from broker.archive.models import AlertRow, CoincidenceMember, Delivery, VOEventRow

STEPS = ("event", "received", "matched", "published", "acknowledged")
"""The latency chain's steps (``matched`` and ``published`` both follow ``received``,
in either order: see the module's docstring)."""
INTERVALS = (("received", "event"), ("matched", "received"), ("published", "received"),
             ("acknowledged", "published"), ("acknowledged", "event"))
"""The durations the distribution reports: (later step, the step it waits for)."""
BIN_EDGES_S = np.concatenate(([0.0], np.logspace(-2, 5, 15)))
"""Histogram bin edges (s): 0, then 10 ms to ~28 hours, logarithmic."""


def step_times(conn: Connection, alert_ids: Sequence[int]) -> dict[int, dict[str, Any]]:
    """Each alert's time of every step (UTC datetimes, None when not reached)."""
    ids = list(alert_ids)
    out: dict[int, dict[str, Any]] = {}
    if not ids:
        return out
    for r in conn.execute(select(AlertRow.id, AlertRow.event_time, AlertRow.received_at,
                                 AlertRow.matched_at).where(AlertRow.id.in_(ids))):
        out[r.id] = {"event": r.event_time, "received": r.received_at,
                     "matched": r.matched_at, "published": None, "acknowledged": None,
                     "voevent_ivorn": None}
    own = select(VOEventRow.alert_id.label("alert_id"), VOEventRow.id.label("voevent_id"),
                 VOEventRow.ivorn, VOEventRow.created_at).where(VOEventRow.alert_id.in_(ids))
    # A coincidence's VOEvent is the publication of the member whose arrival completed
    # it (the last matched), not of a member that waited hours for its partner.
    theirs = select(CoincidenceMember.coincidence_id).where(CoincidenceMember.alert_id.in_(ids))
    last_matched = (select(CoincidenceMember.coincidence_id,
                           func.max(AlertRow.matched_at).label("last"))
                    .join(AlertRow, AlertRow.id == CoincidenceMember.alert_id)
                    .where(CoincidenceMember.coincidence_id.in_(theirs))
                    .group_by(CoincidenceMember.coincidence_id).subquery())
    via = (select(CoincidenceMember.alert_id.label("alert_id"),
                  VOEventRow.id.label("voevent_id"), VOEventRow.ivorn, VOEventRow.created_at)
           .join(VOEventRow, VOEventRow.coincidence_id == CoincidenceMember.coincidence_id)
           .join(AlertRow, AlertRow.id == CoincidenceMember.alert_id)
           .join(last_matched, last_matched.c.coincidence_id == CoincidenceMember.coincidence_id)
           .where(CoincidenceMember.alert_id.in_(ids), AlertRow.matched_at == last_matched.c.last))
    first: dict[int, Any] = {}
    for v in conn.execute(own.union_all(via)):
        if v.alert_id not in first or v.created_at < first[v.alert_id].created_at:
            first[v.alert_id] = v
    acks = {}
    voevents = [r.voevent_id for r in first.values()]
    if voevents:
        acks = dict(conn.execute(
            select(Delivery.voevent_id, func.min(Delivery.delivered_at))
            .where(Delivery.voevent_id.in_(voevents), Delivery.target == "vtp",
                   Delivery.state == "sent").group_by(Delivery.voevent_id)).all())
    for alert_id, r in first.items():
        out[alert_id].update(published=r.created_at, voevent_ivorn=r.ivorn,
                             acknowledged=acks.get(r.voevent_id))
    return out


def durations_s(steps: dict[str, Any]) -> dict[str, float | None]:
    """The INTERVALS of one alert in seconds (None where a step is missing)."""
    out: dict[str, float | None] = {}
    for later, earlier in INTERVALS:
        a: datetime | None = steps.get(later)
        b: datetime | None = steps.get(earlier)
        out[f"{earlier}->{later}"] = None if a is None or b is None else \
            (a - b).total_seconds()
    return out


def distribution(conn: Connection, recent: int = 500, visible: Any = None) -> dict[str, Any]:
    """Quantiles (s) and histograms of each interval over the ``recent`` newest alerts
    (among those the SQL condition ``visible`` keeps).

    Alerts replayed from the past (event time long before receipt) are kept:
    the shifter should see them as the outliers they are.
    """
    newest = select(AlertRow.id).order_by(AlertRow.id.desc()).limit(recent)
    if visible is not None:
        newest = newest.where(visible)
    ids = list(conn.execute(newest).scalars())
    per_alert = [durations_s(s) for s in step_times(conn, ids).values()]
    out: dict[str, Any] = {"alerts": len(per_alert), "bin_edges_s": BIN_EDGES_S.tolist(),
                           "intervals": {}}
    for later, earlier in INTERVALS:
        key = f"{earlier}->{later}"
        values = np.array([d[key] for d in per_alert if d[key] is not None], dtype=float)
        clipped = np.clip(values, 0.0, BIN_EDGES_S[-1])
        counts = np.histogram(clipped, BIN_EDGES_S)[0].tolist() if values.size else \
            [0] * (len(BIN_EDGES_S) - 1)
        quantiles = {f"p{q}": float(np.percentile(values, q)) for q in (50, 90, 99)} \
            if values.size else {"p50": None, "p90": None, "p99": None}
        out["intervals"][key] = {"count": int(values.size), "counts": counts, **quantiles}
    return out
