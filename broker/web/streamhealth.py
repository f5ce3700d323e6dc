"""Health of every input stream as the dashboard shows it: connected, fresh, or stale.

A stream is listed when it is configured (``streams``, ``kafka_topics``,
``vtp_peers``) or has ever sent a message.  Its state is:

``disconnected``
    its listener reported the connection lost;
``stale``
    its newest message or heartbeat is older than ``stale_after_s(stream)``
    (or it has never sent one and is configured);
``ok``
    otherwise.

Per-detector rows (SNEWS heartbeats) are listed under their stream with the
detector's own heartbeat age and status.
"""

from __future__ import annotations

from collections import deque
from datetime import datetime
from typing import Any

from broker.archive.store import Archive, utcnow
from broker.config import Settings

RATE_WINDOW_S = 60.0
"""The span (s) messages per minute are averaged over: between this and twice this (no
figure until readings span it, as after a spell with nobody watching)."""


def configured_streams(settings: Settings) -> list[str]:
    """The streams the settings name: listed even before their first message."""
    names = list(settings.streams) + list(settings.kafka_topics)
    names += [f"vtp:{peer}" for peer in settings.vtp_peers]
    return list(dict.fromkeys(names))


def _age_s(now: datetime, then: datetime | None) -> float | None:
    return None if then is None else max(0.0, (now - then).total_seconds())


def _whole(seconds: float | None) -> int | None:
    return None if seconds is None else round(seconds)


def health_view(archive: Archive, settings: Settings,
                totals: deque[tuple[float, dict[str, int]]], mono_s: float,
                now: datetime | None = None) -> list[dict[str, Any]]:
    """One dict per stream (and per detector), in stream order.

    ``totals`` holds earlier (monotonic s, {stream: messages_total}) readings
    for the messages-per-minute figure; this reading is appended to it.
    """
    now = now or utcnow()
    rows = {(r["stream"], r["detector"]): r for r in archive.stream_health()}
    for stream in configured_streams(settings):
        rows.setdefault((stream, ""), {"stream": stream, "detector": "", "connected": None,
                                       "last_message_at": None, "last_heartbeat_at": None,
                                       "heartbeat_status": None, "messages_total": 0,
                                       "quarantined_total": 0})
    current = {s: int(r["messages_total"] or 0) for (s, d), r in rows.items() if d == ""}
    # The newest reading at least a window old, if it is not from before a gap.
    base_s, base = next(((t, reading) for t, reading in reversed(totals)
                         if mono_s - t >= RATE_WINDOW_S), (mono_s, current))
    if mono_s - base_s > 2 * RATE_WINDOW_S:
        base_s, base = mono_s, current
    totals.append((mono_s, current))
    elapsed = mono_s - base_s
    out = []
    for (stream, detector), r in sorted(rows.items()):
        message_age = _age_s(now, r.get("last_message_at"))
        heartbeat_age = _age_s(now, r.get("last_heartbeat_at"))
        ages = [a for a in (message_age, heartbeat_age) if a is not None]
        stale_after = settings.stale_after_s(stream)
        if r.get("connected") is False:
            state = "disconnected"
        elif not ages or min(ages) > stale_after:
            state = "stale"
        else:
            state = "ok"
        per_min = None
        if detector == "" and elapsed > 0:
            per_min = round((current.get(stream, 0) - base.get(stream, 0)) * 60.0 / elapsed, 1)
        out.append({"stream": stream, "detector": detector, "state": state,
                    "connected": r.get("connected"),
                    "last_message_age_s": _whole(message_age),
                    "heartbeat_age_s": _whole(heartbeat_age),
                    "heartbeat_status": r.get("heartbeat_status"),
                    # How long the connection has been as it is (a shifter asks "since when").
                    "connection_age_s": _whole(_age_s(now, r.get("connection_changed_at"))),
                    "messages_total": int(r.get("messages_total") or 0),
                    "messages_per_min": per_min,
                    "quarantined_total": int(r.get("quarantined_total") or 0),
                    "stale_after_s": stale_after})
    return out
