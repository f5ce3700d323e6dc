"""Prometheus metrics, served at ``/metrics``.

One registry per process; every stage adds to the same names so dashboards
need not know how the broker is deployed.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)

MESSAGES = Counter(
    "mmbroker_messages_total",
    "Alerts and messages handled at the archive, by input stream and outcome "
    "(archived, duplicate, quarantined).",
    ["source", "status"],
    registry=REGISTRY,
)
INGEST_SECONDS = Histogram(
    "mmbroker_ingest_batch_seconds",
    "Wall time to store, normalize and archive one batch of raw messages, in seconds.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
    registry=REGISTRY,
)
