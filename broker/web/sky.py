"""What the dashboard's all-sky view draws: alerts, error circles, credible-region contours.

The page draws the sky itself (``broker/web/static/sky.js``, an SVG in Mollweide
projection); this module gives it the data as JSON from ``/dashboard/sky``:
each visible alert of the span (position, error radius, messenger, links) and,
for an alert whose HEALPix sky map is held here, the outline of its 90%
credible region as (RA, Dec) polylines, plus the coincidences of the span with
their member alerts.

A contour is traced once per sky map (by SHA-256) and kept in a small cache:
the credible level is sampled on an equirectangular grid whose step follows
the region's size (finer for a few square degrees, about 1 deg for a
thousand), only over the band of declinations the region spans, and
``contourpy`` (matplotlib's contouring engine) traces the 0.9 level.  The
result is thinned (Ramer-Douglas-Peucker) and capped, so a sky map costs the
page at most :data:`MAX_CONTOUR_POINTS` points whatever its resolution.
"""

from __future__ import annotations

import logging
import math
import threading
from collections import OrderedDict
from datetime import datetime, timedelta
from typing import Any

import contourpy
import numpy as np
from sqlalchemy import exists, select
from sqlalchemy.orm import aliased

from alerts_schema.errors import InputError
from broker.archive import query as q
from broker.archive.models import AlertRow, CoincidenceMember, CoincidenceRow
from broker.web.livefeed import (
    ALERT_COLUMNS,
    COINCIDENCE_COLUMNS,
    alert_summary,
    coincidence_summaries,
)
from crossmatch.localization import skymap_by_hash

log = logging.getLogger(__name__)

MAX_SKY_ALERTS = 2000
"""Most alerts one sky answer holds (the newest of the span)."""
MAX_SKY_COINCIDENCES = 500
"""Most coincidences one sky answer holds (the newest of the span)."""
MAX_CONTOUR_POINTS = 1500
"""Most (RA, Dec) points of one sky map's contour, all polylines together."""
MAX_CONTOUR_LINES = 40
"""Most polylines of one contour (the longest are kept: islands of a few pixels go)."""
MAX_GRID_POINTS = 400_000
"""Most grid samples of the credible level one contour costs."""
FUTURE_SLACK_S = 600.0
"""How far (s) in the future an event time may be and still count as of the span (clock
skew); one later is a sender's error the tables show, not part of the last hours' sky."""
CONTOUR_LEVEL = 0.9
"""Credible level (probability) the view outlines."""
_CACHE_SIZE = 128
_cache: OrderedDict[tuple[str, float], dict[str, Any]] = OrderedDict()
_cache_lock = threading.Lock()


# -- contours ----------------------------------------------------------------------------


def _step_deg(area_deg2: float) -> float:
    """Grid step (deg) for a region of ``area_deg2``: about 25 steps across it, within
    0.05..1 deg (a sky map's finest pixels are rarely below 0.05 deg)."""
    return float(min(1.0, max(0.05, math.sqrt(max(area_deg2, 1e-6)) / 25.0)))


def contour(sky: Any, level: float = CONTOUR_LEVEL) -> dict[str, Any]:
    """The outline of a sky map's ``level`` credible region.

    Parameters
    ----------
    sky
        A :class:`crossmatch.localization.SkyMap`.
    level
        Credible level, probability in (0, 1).

    Returns
    -------
    dict
        ``lines``: polylines, each a list of ``[ra_deg, dec_deg]`` (RA in [0, 360),
        rounded to 0.01 deg); a closed outline repeats its first point last, an outline
        cut by the map's edge (RA 180 deg, where the view wraps) is open there.
        ``area_deg2``: the region's area; ``step_deg``: the grid step traced at.
    """
    start, _ = sky.region(level)
    inside = sky.credible_levels < level
    area_deg2 = float(sky.area_sr[inside & (sky.density > 0)].sum()) * (180 / math.pi) ** 2
    if not start.size:
        return {"lines": [], "area_deg2": 0.0, "step_deg": None}
    step = _step_deg(area_deg2)
    # Declination band of the region: its pixels' centres, widened by the largest pixel.
    centres = sky.centres[inside & (sky.density > 0)]
    dec = np.degrees(np.arcsin(np.clip(centres[:, 2], -1, 1)))
    biggest = float(np.degrees(np.sqrt(sky.area_sr[inside].max())))
    lo = max(-90.0, float(dec.min()) - biggest - 2 * step)
    hi = min(90.0, float(dec.max()) + biggest + 2 * step)
    while True:
        n_lon, n_lat = round(360.0 / step) + 1, max(3, math.ceil((hi - lo) / step) + 1)
        if n_lon * n_lat <= MAX_GRID_POINTS:
            break
        step *= 1.25
    # Longitude -180..180 (RA 180 at both ends): outlines are cut where the view wraps.
    lon = np.linspace(-180.0, 180.0, n_lon)
    lat = np.linspace(lo, hi, n_lat)
    lon_g, lat_g = np.meshgrid(lon, lat)
    rows = sky.rows_at(lon_g % 360.0, lat_g)
    levels = np.where(rows >= 0, sky.credible_levels[np.clip(rows, 0, None)], 1.0)
    levels = np.where((rows >= 0) & (sky.density[np.clip(rows, 0, None)] > 0), levels, 1.0)
    # Outside the band the level is 1: pad so that outlines close at the band's edges.
    if lo > -90:
        levels[0, :] = 1.0
    if hi < 90:
        levels[-1, :] = 1.0
    gen = contourpy.contour_generator(lon, lat, levels, name="serial",
                                      line_type=contourpy.LineType.Separate)
    paths = [np.asarray(p) for p in gen.lines(level) if len(p) >= 2]
    paths = [_thin(p, step / 2) for p in paths]
    paths.sort(key=len, reverse=True)
    paths = paths[:MAX_CONTOUR_LINES]
    total = sum(len(p) for p in paths)
    if total > MAX_CONTOUR_POINTS:
        stride = math.ceil(total / MAX_CONTOUR_POINTS)
        paths = [np.vstack((p[:-1:stride], p[-1:])) for p in paths]
    lines = [[[round(float(x) % 360.0, 2), round(float(y), 2)] for x, y in p] for p in paths]
    return {"lines": lines, "area_deg2": round(area_deg2, 2), "step_deg": round(step, 4)}


def _thin(points: np.ndarray, tolerance: float) -> np.ndarray:
    """Ramer-Douglas-Peucker: the points of a polyline needed to keep it within
    ``tolerance`` (grid units, deg) of the original; the ends stay."""
    n = len(points)
    if n <= 2:
        return points
    keep = np.zeros(n, dtype=bool)
    keep[0] = keep[-1] = True
    stack = [(0, n - 1)]
    while stack:
        a, b = stack.pop()
        if b <= a + 1:
            continue
        seg = points[b] - points[a]
        rel = points[a + 1:b] - points[a]
        norm = math.hypot(*seg)
        if norm == 0:
            dist = np.hypot(rel[:, 0], rel[:, 1])
        else:
            dist = np.abs(seg[0] * rel[:, 1] - seg[1] * rel[:, 0]) / norm
        i = int(np.argmax(dist))
        if dist[i] > tolerance:
            keep[a + 1 + i] = True
            stack += [(a, a + 1 + i), (a + 1 + i, b)]
    return points[keep]


def cached_contour(sha256: str, load: Any, level: float = CONTOUR_LEVEL
                   ) -> dict[str, Any] | None:
    """:func:`contour` of the sky map with content hash ``sha256``, traced once.

    ``load(sha256)`` gives the map's bytes or None (then None is returned); the map
    itself comes through :func:`crossmatch.localization.skymap_by_hash`'s cache.  Bytes
    that are no sky map, or not the ones the hash names, give no lines and the reason
    (``error``), kept like a contour: the view still shows the alert's position, and one
    bad file does not cost every page load a parse.
    """
    key = (sha256, level)
    with _cache_lock:
        if key in _cache:
            _cache.move_to_end(key)
            return _cache[key]
    result: dict[str, Any]
    try:
        sky = skymap_by_hash(sha256, load)
    except InputError as exc:
        log.warning("sky map %s cannot be outlined: %s", sha256, exc)
        sky, result = None, {"lines": [], "area_deg2": None, "step_deg": None,
                             "error": str(exc)}
    else:
        if sky is None:
            return None
        result = contour(sky, level)
    with _cache_lock:
        _cache[key] = result
        while len(_cache) > _CACHE_SIZE:
            _cache.popitem(last=False)
    return result


# -- what the view shows -----------------------------------------------------------------


def sky_view(conn: Any, who: q.Viewer, now: datetime, hours: float,
             settings: Any) -> dict[str, Any]:
    """Alerts with event times in the last ``hours`` (up to :data:`FUTURE_SLACK_S` ahead)
    and coincidences found in them that ``who`` may see (the data-rights rule of
    :func:`broker.archive.query.alert_visible`), newest first.  Rows are named by IVORN, never by
    database id, as on the live feed (a gap between the ids a viewer sees would count
    the rows it may not see).  Angles deg, times ISO UTC."""
    since = now - timedelta(hours=hours)
    rows = conn.execute(
        select(*ALERT_COLUMNS, AlertRow.loc_kind, AlertRow.skymap_sha256)
        .where(q.alert_visible(who, now), AlertRow.event_time >= since,
               AlertRow.event_time <= now + timedelta(seconds=FUTURE_SLACK_S))
        .order_by(AlertRow.event_time.desc(), AlertRow.id.desc())
        .limit(MAX_SKY_ALERTS)).all()
    alerts = []
    for row in rows:
        item = alert_summary(row)
        del item["data_rights"]
        item["loc_kind"] = row.loc_kind
        item["contour90"] = None
        if row.skymap_sha256:
            traced = cached_contour(row.skymap_sha256,
                                    lambda sha: q.skymap_bytes(conn, sha))
            if traced is not None and traced["lines"]:
                item["contour90"] = traced["lines"]
                item["area90_deg2"] = traced["area_deg2"]
        alerts.append(item)

    newer = aliased(CoincidenceRow)
    superseded = exists(select(newer.id).where(newer.supersedes_id == CoincidenceRow.id))
    crows = conn.execute(
        select(*COINCIDENCE_COLUMNS)
        .where(q.coincidence_visible(who, now), CoincidenceRow.created_at >= since,
               ~superseded)
        .order_by(CoincidenceRow.created_at.desc(), CoincidenceRow.id.desc())
        .limit(MAX_SKY_COINCIDENCES)).all()
    # A coincidence is visible only when all its members are: naming them is safe.
    members: dict[str, list[str]] = {r.ivorn: [] for r in crows}
    if crows:
        for m in conn.execute(select(CoincidenceRow.ivorn, AlertRow.ivorn.label("member"))
                              .join(CoincidenceMember,
                                    CoincidenceMember.coincidence_id == CoincidenceRow.id)
                              .join(AlertRow, AlertRow.id == CoincidenceMember.alert_id)
                              .where(CoincidenceRow.id.in_([r.id for r in crows]))
                              .order_by(AlertRow.ivorn)):
            members[m.ivorn].append(m.member)
    coincidences = []
    for data, _ in coincidence_summaries(conn, crows, settings):
        data["member_ivorns"] = members[data["ivorn"]]
        coincidences.append(data)
    return {"hours": hours, "since": since, "level": CONTOUR_LEVEL, "alerts": alerts,
            "coincidences": coincidences}
