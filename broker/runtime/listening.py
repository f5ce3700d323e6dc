"""Start the configured input listeners (Kafka topics, VTP peers) as background threads.

``mmbroker serve`` and ``mmbroker listen`` both go through here, so a stream
configured once is consumed the same way by the all-in-one broker and by a
dedicated listener process.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from alerts_schema.errors import ConfigurationError
from broker.archive.store import Archive
from broker.config import Settings
from broker.publish.hopskotch import TARGETS as HOP_TARGETS
from broker.publish.hopskotch import hop_senders
from broker.runtime.ingest import Ingestor

if TYPE_CHECKING:
    from broker.runtime.pipeline import Pipeline

log = logging.getLogger(__name__)


@dataclass
class Listeners:
    """The running listener threads and the event that stops them all."""

    stop: threading.Event = field(default_factory=threading.Event)
    threads: list[threading.Thread] = field(default_factory=list)
    workers: list[object] = field(default_factory=list)

    def shutdown(self, timeout_s: float = 30.0) -> None:
        """Ask every listener to finish its current batch, and wait for them."""
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout_s)


def configure_normalizers(settings: Settings) -> None:
    """Apply settings the normalizers need (the Rubin schema registry)."""
    if settings.rubin_schema_dir:
        from listeners import rubin

        rubin.use_registry(rubin.SchemaRegistry(settings.rubin_schema_dir))


def make_ingestor(settings: Settings, archive: Archive) -> Ingestor:
    return Ingestor(archive, authority=settings.ivorn_authority,
                    max_message_bytes=settings.max_message_bytes,
                    inflight_lease_s=settings.inflight_lease_s,
                    probe_timeout_s=settings.probe_timeout_s)


PRIVATE_TARGET = "kafka-private"
"""The collaboration's own target (``kafka_private_topic``): embargoed and proprietary
VOEvents go to it at once."""


def delivery_targets(settings: Settings) -> list[str]:
    """Where published VOEvents go: Comet over VTP, and Kafka and Hopskotch when configured."""
    targets = ["vtp"] if settings.comet else []
    if settings.kafka_bootstrap:
        targets += ["kafka-xml", "kafka-json"]
        if settings.kafka_private_topic:
            if settings.kafka_private_topic in {settings.kafka_output_xml_topic,
                                                settings.kafka_output_json_topic}:
                raise ConfigurationError(
                    f"MMBROKER_KAFKA_PRIVATE_TOPIC={settings.kafka_private_topic} is a public "
                    "output topic: it would publish embargoed and proprietary VOEvents")
            targets.append(PRIVATE_TARGET)
    if settings.hop_url:
        targets += list(HOP_TARGETS)
    return targets


def private_targets(settings: Settings) -> list[str]:
    """Those of :func:`delivery_targets` never held (a collaboration's own)."""
    return [t for t in delivery_targets(settings) if t == PRIVATE_TARGET]


def start_delivery(settings: Settings, archive: Archive, pipeline: Pipeline | None,
                   running: Listeners, vtp_gate: Any = None) -> None:
    """A delivery loop per enabled target, in ``running``'s threads (and, with a pipeline
    in this process, its retry flusher; its publisher wakes the loops at once).

    ``vtp_gate``: the Comet child of ``serve`` (holds VTP delivery after its restarts)."""
    from broker.publish.senders import DeliveryLoop, KafkaSender, VTPSender

    senders: list[Any] = []
    if settings.comet:
        senders.append(VTPSender("127.0.0.1", settings.vtp_receive_port))
    if settings.kafka_bootstrap:
        from broker.runtime.announce import bus_client_kwargs

        bus = bus_client_kwargs()
        senders.append(KafkaSender(settings.kafka_bootstrap, settings.kafka_output_xml_topic,
                                   config=bus))
        senders.append(KafkaSender(settings.kafka_bootstrap, settings.kafka_output_json_topic,
                                   config=bus,
                                   as_json=True, document=_document_of(archive)))
        if PRIVATE_TARGET in delivery_targets(settings):
            senders.append(KafkaSender(settings.kafka_bootstrap,
                                       settings.kafka_private_topic or "", config=bus,
                                       target=PRIVATE_TARGET))
    senders += hop_senders(settings, _document_of(archive))
    if pipeline is not None:
        _spawn(running, _Flusher(pipeline), "pipeline-flush")
    for sender in senders:
        # Its own wake event: offer() sets it.
        loop = DeliveryLoop(archive, sender, gate=vtp_gate if sender.target == "vtp" else None)
        if pipeline is not None and pipeline.publisher is not None:
            pipeline.publisher.handoffs.append(loop.offer)
        _spawn(running, loop, f"deliver-{sender.target}")


class _Flusher:
    """Every few seconds, store and publish what a failed round left behind."""

    def __init__(self, pipeline: Pipeline, every_s: float = 5.0) -> None:
        self.pipeline = pipeline
        self.every_s = every_s

    def run(self, stop: threading.Event) -> None:
        while not stop.wait(self.every_s):
            try:
                self.pipeline.flush()
            except Exception:  # logged; the next tick tries again
                log.exception("pipeline flush failed")


def _document_of(archive: Archive) -> Any:
    def document(ivorn: str) -> dict[str, Any] | None:
        return archive.get_alert(ivorn) or archive.get_coincidence(ivorn)

    return document


def archive_history(archive: Archive) -> Any:
    """The engine's window into the past: a cone + time query on the archive, of alerts
    already matched, with later matched revisions of the events it finds."""
    from datetime import UTC

    from alerts_schema import Alert
    from broker.archive.store import AlertQuery

    def history(t_lo_s: float, t_hi_s: float, ra: float | None, dec: float | None,
                radius: float | None) -> list[Alert]:
        cone = (ra, dec, radius) if ra is not None and dec is not None and radius else None
        # Only what the cross-match has processed, decided before the limit: what an
        # engine holding everything would hold (an alert archived, not yet matched, is
        # found by its own search when its turn comes; a coincidence never cites an
        # alert not yet announced).
        docs = archive.list_alerts(AlertQuery(
            since=datetime.fromtimestamp(t_lo_s, UTC), until=datetime.fromtimestamp(t_hi_s, UTC),
            cone=cone, matched=True, limit=200_000))
        # The engine takes each event's newest revision: a retraction has no position.
        docs += archive.later_revisions(docs)
        return [Alert.model_validate(d) for d in docs]

    return history


def make_pipeline(settings: Settings, archive: Archive, *, replay: bool = False,
                  warm: bool = True, targets: list[str] | None = None) -> Pipeline:
    """Ingest + cross-match for this process: one engine every transport shares.

    ``replay`` runs the engine on event time instead of the wall clock (files
    of past alerts); ``warm`` reloads the live window from the archive;
    ``targets`` are the delivery targets VOEvents are queued for (None: the
    ones the settings enable, see :func:`delivery_targets`; [] archives them
    without sending).
    """
    import time

    from broker.runtime.pipeline import Pipeline
    from crossmatch.config import load_config
    from crossmatch.engine import Engine

    engine = Engine(load_config(settings.crossmatch_config),
                    authority=settings.ivorn_authority, skymap_loader=archive.skymap,
                    clock=None if replay else time.time,
                    late_slack_s=settings.crossmatch_late_slack_s,
                    live_window_s=settings.crossmatch_live_window_s,
                    history=archive_history(archive), loader=archive.load_alerts)
    from broker.publish.publisher import Publisher

    publisher = Publisher(archive, settings, delivery_targets(settings)
                          if targets is None else targets,
                          private_targets=private_targets(settings))
    pipeline = Pipeline(make_ingestor(settings, archive), engine, publisher)
    if warm:
        log.info("cross-match warmed with %d alerts of the live window", pipeline.warm())
    return pipeline


def start(settings: Settings, archive: Archive, *, sink: Any = None,
          kafka_topics: list[str] | None = None,
          kafka_config: Mapping[str, str] | None = None, vtp_peers: list[str] | None = None,
          since: datetime | None = None, filters: tuple[str, ...] = ()) -> Listeners:
    """Start a listener per Kafka cluster and per VTP peer; returns them running.

    Parameters
    ----------
    sink
        What the listeners hand their messages to (a :class:`Pipeline`, shared);
        default: a new pipeline for ``archive``.
    kafka_topics, vtp_peers
        Default to the settings' ``kafka_topics`` and ``vtp_peers``.
    kafka_config
        Confluent-style properties; default: the ``KAFKA_*`` environment.
    since
        Replay Kafka topics from this time (UTC).
    """
    from listeners.kafka import KafkaListener, KafkaSource, config_from_env
    from listeners.vtp import VTPSubscriber

    configure_normalizers(settings)
    running = Listeners()
    sink = sink if sink is not None else make_pipeline(settings, archive)
    topics = settings.kafka_topics if kafka_topics is None else kafka_topics
    peers = settings.vtp_peers if vtp_peers is None else vtp_peers
    if topics:
        config = dict(config_from_env() if kafka_config is None else kafka_config)
        config.setdefault("group.id", settings.effective_kafka_group_id)
        if "bootstrap.servers" not in config and settings.kafka_bootstrap and \
                "domain" not in config:
            config["bootstrap.servers"] = settings.kafka_bootstrap
        worker = KafkaListener(KafkaSource(list(topics), config), sink,
                               batch_size=settings.ingest_batch_size, since=since)
        _spawn(running, worker, "kafka")
    for peer in peers:
        host, _, port = peer.rpartition(":")
        worker = VTPSubscriber(host, int(port), sink,
                               local_ivo=f"ivo://{settings.ivorn_authority}/mmbroker",
                               filters=filters, max_frame_bytes=settings.max_message_bytes)
        _spawn(running, worker, f"vtp:{peer}")
    return running


def _spawn(running: Listeners, worker: object, name: str) -> None:
    thread = threading.Thread(target=worker.run, args=(running.stop,),  # type: ignore[attr-defined]
                              name=f"listener-{name}", daemon=True)
    thread.start()
    running.threads.append(thread)
    running.workers.append(worker)
    log.info("listening: %s", name)
