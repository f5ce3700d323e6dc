"""Synthetic Alert documents for tests, benchmarks and the cross-match unit tests.

Positions are uniform on the sphere; times uniform in a window; messengers,
facilities and localization kinds drawn from a realistic mix.  Every document
follows ``alert.schema.json``.  A seed makes a run reproducible.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

_KINDS = (
    # messenger, facility, instrument, source stream, error radius range (deg)
    ("neutrino", "IceCube", None, "gcn.notices.icecube.lvk_nu_track_search", (0.2, 3.0)),
    ("gamma_ray", "Fermi", "GBM", "gcn.notices.fermi.gbm", (2.0, 15.0)),
    ("gamma_ray", "Swift", "BAT", "gcn.notices.swift.bat.guano", (0.01, 0.1)),
    ("x_ray", "Einstein Probe", "WXT", "gcn.notices.einstein_probe.wxt.alert", (0.02, 0.1)),
    ("optical", "ZTF", None, "ztf", (0.0001, 0.0003)),
    ("radio", "CHIME", None, "gcn.notices.chime.frb", (0.1, 0.5)),
)

EPOCH = datetime(2026, 1, 1, tzinfo=UTC)


def uniform_sky(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` positions uniform on the sphere: (ra_deg, dec_deg) arrays."""
    ra = rng.uniform(0.0, 360.0, n)
    dec = np.degrees(np.arcsin(rng.uniform(-1.0, 1.0, n)))
    return ra, dec


def _utc(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def alert_documents(n: int, *, seed: int = 0, start: datetime = EPOCH,
                    span_s: float = 365.25 * 86400, authority: str = "synthetic.mmbroker",
                    prefix: str = "syn") -> list[dict[str, Any]]:
    """``n`` schema-valid Alert documents with distinct (source, event id) keys."""
    rng = np.random.default_rng(seed)
    ra, dec = uniform_sky(rng, n)
    times = rng.uniform(0.0, span_s, n)
    kinds = rng.integers(0, len(_KINDS), n)
    docs = []
    for i in range(n):
        messenger, facility, instrument, source, (rmin, rmax) = _KINDS[kinds[i]]
        radius = float(math.exp(rng.uniform(math.log(rmin), math.log(rmax))))
        event_id = f"{prefix}-{seed}-{i}"
        docs.append({
            "schema_version": "1.0",
            "id": f"ivo://{authority}/{source}#{event_id}-0",
            "source": source,
            "messenger": messenger,
            "facility": facility,
            "instrument": instrument,
            "event_id": event_id,
            "revision": 0,
            "alert_type": "initial",
            "role": "observation",
            "trigger_time": _utc(start + timedelta(seconds=float(times[i]))),
            "localization": {"kind": "point", "ra_deg": float(ra[i]) % 360.0,
                             "dec_deg": float(dec[i]), "error_radius_deg": radius,
                             "containment": 0.9},
            "far_hz": float(10 ** rng.uniform(-10, -5)),
            "data_rights": {"level": "public"},
        })
    return docs
