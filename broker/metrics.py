"""Prometheus metrics, served at ``/metrics``.

One registry per process; every stage adds to the same names so dashboards
need not know how the broker is deployed.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

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

LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
MATCH_SECONDS = Histogram(
    "mmbroker_match_latency_seconds",
    "Time from an alert's receipt to the cross-match engine having processed it, in seconds.",
    buckets=LATENCY_BUCKETS_S,
    registry=REGISTRY,
)
PUBLISH_SECONDS = Histogram(
    "mmbroker_publish_latency_seconds",
    "Time from a VOEvent entering the outbox to its target accepting it, in seconds.",
    ["target"],
    buckets=LATENCY_BUCKETS_S,
    registry=REGISTRY,
)
COINCIDENCES = Counter(
    "mmbroker_coincidences_total",
    "Coincidence revisions stored, by pairing and state (new, updated, retracted).",
    ["pairing", "state"],
    registry=REGISTRY,
)
DELIVERIES = Counter(
    "mmbroker_deliveries_total",
    "VOEvent deliveries by target and outcome (sent, or retry after a failed attempt).",
    ["target", "outcome"],
    registry=REGISTRY,
)
OUTBOX_PENDING = Gauge(
    "mmbroker_outbox_pending",
    "VOEvent deliveries waiting in the outbox, by target (read from the archive when "
    "scraped).",
    ["target"],
    registry=REGISTRY,
)
KAFKA_LAG = Gauge(
    "mmbroker_kafka_consumer_lag",
    "Records of an input partition not yet consumed by this process's listener.",
    ["topic", "partition"],
    registry=REGISTRY,
)
SKYMAP_FETCHES = Counter(
    "mmbroker_skymap_fetches_total",
    "Attempts at sky maps alerts name by URL, by outcome: fetched, retry (failed, to be "
    "tried again), failed (for good).",
    ["outcome"],
    registry=REGISTRY,
)
