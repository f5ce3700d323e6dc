"""The demo scenario ``mmbroker serve --demo`` replays, in the streams' real wire formats.

A binary-neutron-star merger seen three ways, near RA 197 deg, Dec -23 deg:

1. the collaboration's own neutrino telescope sends a track trigger
   (``POST /api/v1/triggers`` JSON, stream ``detector``);
2. Fermi GBM sends a flight-position GCN notice 25.2 s later
   (unified JSON schema, topic ``gcn.notices.fermi.gbm``);
3. LVK sends a preliminary ``igwn.gwalert`` for a mock superevent with its
   multi-order sky map inside, for a merger 1.7 s before the burst.

Every message goes through the same normalizers and archive as live traffic.
All three are marked as tests (``real: false``, ``alert_tense: test``, a
``MS`` mock superevent), so a demo can never be mistaken for an observation
and never matches one.  The GBM template is NASA's example notice (see
``demo_data/MANIFEST.tsv``); the trigger is the schema's own example; the sky
map is generated here.
"""

from __future__ import annotations

import base64
import io
import json
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from importlib import resources
from typing import Any

import healpy
import numpy as np
from astropy.io import fits
from astropy.table import Table

from broker.archive.store import utcnow
from listeners.envelope import Outcome, RawMessage

CENTRE_DEG = (197.45, -23.38)
SKY_SIGMA_DEG = 4.0

SCENARIO_OFFSETS_S = {  # event time after the first message's event time
    "trigger": 0.0, "grb": 25.215, "gw": 23.505,
}
LEAD_S = 30.0
"""How long (s) before the replay starts the scenario's first event happened."""
ARRIVAL_DELAYS_S = {  # replay time of each message after the start
    "trigger": 0.0, "grb": 1.5, "gw": 3.0,
}


def _utc(t: datetime, digits: int = 3) -> str:
    text = t.strftime("%Y-%m-%dT%H:%M:%S.%f")
    return text[: len(text) - 6 + digits] + "Z"


def gaussian_multiorder_fits(ra_deg: float, dec_deg: float, sigma_deg: float) -> bytes:
    """A multi-order (NUNIQ) FITS sky map of a circular Gaussian, as LVK would send.

    Order-6 pixels (0.92 deg) within 6 sigma of the centre, order-3 pixels
    (7.3 deg) elsewhere; ``PROBDENSITY`` in sr^-1, normalized to 1.
    """
    coarse, fine = 3, 6
    centre = healpy.ang2vec(ra_deg, dec_deg, lonlat=True)
    uniq, dens = [], []
    sigma = np.radians(sigma_deg)
    for pix in range(12 * 4 ** coarse):
        vec = healpy.pix2vec(2 ** coarse, pix, nest=True)
        if np.degrees(np.arccos(np.clip(np.dot(vec, centre), -1, 1))) < 6 * sigma_deg + 8:
            children = np.arange(pix * 4 ** (fine - coarse), (pix + 1) * 4 ** (fine - coarse))
            order, ipix = fine, children
        else:
            order, ipix = coarse, np.array([pix])
        vecs = np.array(healpy.pix2vec(2 ** order, ipix, nest=True)).T
        theta = np.arccos(np.clip(vecs @ centre, -1, 1))
        uniq.extend(4 * 4 ** order + ipix)
        dens.extend(np.exp(-0.5 * (theta / sigma) ** 2))
    uniq_a, dens_a = np.array(uniq, dtype=np.int64), np.array(dens)
    orders = (np.log2(uniq_a // 4) // 2).astype(int)
    area = 4 * np.pi / (12 * 4.0 ** orders)
    dens_a /= np.sum(dens_a * area)
    table = Table({"UNIQ": uniq_a, "PROBDENSITY": dens_a})
    hdu = fits.table_to_hdu(table)
    hdu.header["PIXTYPE"] = "HEALPIX"
    hdu.header["ORDERING"] = "NUNIQ"
    hdu.header["COORDSYS"] = "C"
    hdu.header["MOCORDER"] = fine
    buffer = io.BytesIO()
    fits.HDUList([fits.PrimaryHDU(), hdu]).writeto(buffer)
    return buffer.getvalue()


def scenario_messages(now: datetime | None = None) -> list[tuple[str, RawMessage, float]]:
    """(label, raw message, replay delay in s) of the scenario, the first event
    :data:`LEAD_S` before ``now``.

    Replayed from ``now``, every message then arrives after its own event
    time, as real ones do (the dashboard's latency figures stay positive).
    """
    now = now or utcnow()
    stamp = now.strftime("%H%M%S")
    first = now - timedelta(seconds=LEAD_S)
    when = {k: first + timedelta(seconds=v) for k, v in SCENARIO_OFFSETS_S.items()}
    ra, dec = CENTRE_DEG

    schemas = resources.files("alerts_schema").joinpath("examples")
    trigger = json.loads(schemas.joinpath("trigger-track-single.example.json").read_text())
    trigger.update(event_id=f"DEMO-{stamp}", real=False, time=_utc(when["trigger"], 6),
                   sent_time=_utc(when["trigger"] + timedelta(seconds=0.3), 6),
                   ra_deg=196.8, dec_deg=-22.9)

    template = resources.files("broker").joinpath("demo_data", "fermi_gbm_flight_position.json")
    grb = json.loads(template.read_text())
    trigger_number = str(700_000_000 + int(now.timestamp()) % 100_000_000)
    grb.update(id=[trigger_number, f"bn{now:%y%m%d}demo"], alert_tense="test",
               trigger_time=_utc(when["grb"]).rstrip("Z"),
               alert_datetime=_utc(when["grb"] + timedelta(seconds=12)).rstrip("Z"),
               ra=195.9, dec=-21.7, ra_dec_error=9.5, classification={"GRB": 0.96})

    skymap = gaussian_multiorder_fits(ra, dec, SKY_SIGMA_DEG)
    gw = {
        "alert_type": "PRELIMINARY",
        "time_created": _utc(when["gw"] + timedelta(seconds=30), 0).replace(".Z", "Z"),
        "superevent_id": f"MS{now:%y%m%d}demo",
        "urls": {"gracedb": "https://gracedb.invalid/superevents/demo/view/"},
        "event": {
            "time": _utc(when["gw"]), "far": 9.1e-14, "significant": True,
            "instruments": ["H1", "L1", "V1"], "group": "CBC", "pipeline": "gstlal",
            "search": "MDC", "properties": {"HasNS": 1.0, "HasRemnant": 1.0, "HasMassGap": 0.0},
            "classification": {"BNS": 0.95, "NSBH": 0.04, "BBH": 0.0, "Terrestrial": 0.01},
            "duration": None, "central_frequency": None,
            "skymap": base64.b64encode(skymap).decode("ascii"),
        },
        "external_coinc": None,
    }
    return [
        ("trigger", RawMessage("detector", json.dumps(trigger).encode(),
                               transport={"demo": True}), ARRIVAL_DELAYS_S["trigger"]),
        ("grb", RawMessage("gcn.notices.fermi.gbm", json.dumps(grb).encode(),
                           transport={"demo": True}), ARRIVAL_DELAYS_S["grb"]),
        ("gw", RawMessage("igwn.gwalert", json.dumps(gw).encode(),
                          transport={"demo": True}), ARRIVAL_DELAYS_S["gw"]),
    ]


def run(sink: Any, *, speed: float = 1.0,
        report: Callable[[str, Outcome], None] | None = None) -> list[Outcome]:
    """Replay the scenario into ``sink`` (an Ingestor or Pipeline) in real time / ``speed``."""
    outcomes: list[Outcome] = []
    start = time.monotonic()
    for label, raw, delay_s in scenario_messages():
        time.sleep(max(0.0, start + delay_s / speed - time.monotonic()))
        fresh = RawMessage(raw.source, raw.data, transport=raw.transport)  # received now
        for outcome in sink.ingest([fresh]):
            outcomes.append(outcome)
            if report:
                report(label, outcome)
    return outcomes
