"""The demo scenario ``mmbroker serve --demo`` replays.

A neutrino-telescope trigger, a Fermi GBM gamma-ray burst 25 s later and a
binary-neutron-star gravitational-wave alert 23 s before the burst, all near
RA 197 deg, Dec -23 deg: the example documents shipped with the Alert schema,
moved to the present and marked ``role=test`` so that a demo can never be
mistaken for an observation.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from importlib import resources
from typing import Any

from broker.archive import Outcome, utcnow
from broker.ingest import Ingestor

SCENARIO = (
    # (example document, seconds after the start of the replay it arrives)
    ("alert-neutrino-trigger.example.json", 0.0),
    ("alert-grb-gbm.example.json", 1.5),
    ("alert-gw-cbc-skymap.example.json", 3.0),
)


def scenario_documents(now: datetime | None = None) -> list[tuple[dict[str, Any], float]]:
    """The scenario's Alert documents, shifted so the first event is ``now``.

    Event ids get the start time as a suffix, so every replay archives new
    alerts rather than duplicates of the last one.
    """
    now = now or utcnow()
    stamp = now.strftime("%Y%m%dT%H%M%S")
    folder = resources.files("alerts_schema").joinpath("examples")
    docs = [json.loads(folder.joinpath(name).read_text("utf-8")) for name, _ in SCENARIO]
    first = min(datetime.fromisoformat(d["trigger_time"]) for d in docs)
    out = []
    for doc, (_, delay_s) in zip(docs, SCENARIO, strict=True):
        shift = now - first
        when = datetime.fromisoformat(doc["trigger_time"]) + shift
        doc["trigger_time"] = when.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        doc["received_time"] = None
        doc["event_id"] = f"{doc['event_id']}-demo{stamp}"
        doc["id"] = doc["id"].split("#", 1)[0] + f"#{doc['event_id']}-{doc['revision']}"
        doc["role"] = "test"
        doc["raw_sha256"] = doc["raw_ref"] = None
        if doc["data_rights"]["level"] == "embargoed":
            doc["data_rights"]["embargo_until"] = (when + timedelta(days=1)).strftime(
                "%Y-%m-%dT%H:%M:%SZ")
        out.append((doc, delay_s))
    return out


def run(ingestor: Ingestor, *, speed: float = 1.0,
        report: Callable[[dict[str, Any], Outcome], None] | None = None) -> list[Outcome]:
    """Replay the scenario into ``ingestor`` in real time (divided by ``speed``)."""
    outcomes: list[Outcome] = []
    start = time.monotonic()
    for doc, delay_s in scenario_documents():
        time.sleep(max(0.0, start + delay_s / speed - time.monotonic()))
        raw = ingestor.receive("demo", json.dumps(doc).encode(), transport={"demo": True})
        for outcome in ingestor.ingest([raw]):
            outcomes.append(outcome)
            if report:
                report(doc, outcome)
    return outcomes
