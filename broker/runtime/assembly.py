"""The composition root: every process of the broker is assembled here, and only here.

``mmbroker serve`` (through the FastAPI lifespan, :func:`make_sink`, and its start-up
hook), ``mmbroker listen``, ``mmbroker ingest`` and the stages (``mmbroker stage
listen|match|publish|api``) build their parts with these functions, so a stream
configured once is consumed the same way by the all-in-one broker and by a
dedicated listener process:

* :func:`make_sink`: what the transports of a process feed (a
  :class:`~listeners.envelope.Sink`): :func:`make_pipeline` in one process,
  :func:`announcer` in a staged one;
* :func:`start_listeners`: a Kafka listener and the VTP subscribers, feeding a sink,
  and the sky map fetchers (:func:`start_mapfetch`) that match its alerts again when
  the maps they name by URL arrive;
* :func:`start_delivery`: the outbox's delivery loops;
* :func:`start_match`: the match stage's worker, its listener on the alerts topic and
  its sweeper.

Nothing below :mod:`broker.runtime` imports this module.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from alerts_schema import Alert
from alerts_schema.errors import ConfigurationError, RetryableError
from broker.archive.store import AlertQuery, Archive
from broker.config import Settings
from broker.metrics import KAFKA_LAG
from broker.publish.comet_child import CometChild
from broker.publish.hopskotch import TARGETS as HOP_TARGETS
from broker.publish.hopskotch import hop_senders
from broker.publish.publisher import Publisher
from broker.publish.senders import DeliveryLoop, KafkaSender, Sender, VTPSender
from broker.runtime.announce import (
    AnnouncingIngestor,
    announcement_key,
    bus_client_kwargs,
    bus_consumer_properties,
)
from broker.runtime.ingest import Ingestor, configure_normalizers
from broker.runtime.mapfetch import FetchPolicy, MapFetchLoop, Rematch
from broker.runtime.match_stage import MatchSink, MatchWorker, run_sweeper
from broker.runtime.pipeline import Pipeline
from crossmatch.config import load_config
from crossmatch.engine import Engine
from listeners.envelope import Sink
from listeners.kafka import KafkaListener, KafkaSource, config_from_env
from listeners.vtp import VTPSubscriber

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


class Worker(Protocol):
    """A listener, delivery loop or flusher: runs in its own thread until ``stop`` is set."""

    def run(self, stop: threading.Event) -> None: ...


def spawn(running: Listeners, worker: Worker, name: str) -> None:
    """Run ``worker`` in a daemon thread of ``running`` (stopped by its ``stop``)."""
    thread = threading.Thread(target=worker.run, args=(running.stop,),
                              name=f"listener-{name}", daemon=True)
    thread.start()
    running.threads.append(thread)
    running.workers.append(worker)
    log.info("listening: %s", name)


def make_ingestor(settings: Settings, archive: Archive) -> Ingestor:
    """The archive's ingest side, as the settings configure it."""
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
                   running: Listeners, vtp_gate: CometChild | None = None) -> None:
    """A delivery loop per enabled target, in ``running``'s threads (and, with a pipeline
    in this process, its retry flusher; its publisher wakes the loops at once).

    ``vtp_gate``: the Comet child of ``serve`` (holds VTP delivery after its restarts)."""
    senders: list[Sender] = []
    if settings.comet:
        senders.append(VTPSender("127.0.0.1", settings.vtp_receive_port))
    if settings.kafka_bootstrap:
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
        spawn(running, _Flusher(pipeline), "pipeline-flush")
    for sender in senders:
        # Its own wake event: offer() sets it.
        loop = DeliveryLoop(archive, sender, gate=vtp_gate if sender.target == "vtp" else None)
        if pipeline is not None and pipeline.publisher is not None:
            pipeline.publisher.handoffs.append(loop.offer)
        spawn(running, loop, f"deliver-{sender.target}")


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
    def history(t_lo_s: float, t_hi_s: float, ra: float | None, dec: float | None,
                radius: float | None, *, messengers: frozenset[str] | None = None,
                unmatched: frozenset[str] = frozenset()) -> list[Alert]:
        cone = (ra, dec, radius) if ra is not None and dec is not None and radius else None
        since, until = datetime.fromtimestamp(t_lo_s, UTC), datetime.fromtimestamp(t_hi_s, UTC)
        # Only what the cross-match has processed, decided before the limit: what an
        # engine holding everything would hold (an alert archived, not yet matched, is
        # found by its own search when its turn comes; a coincidence never cites an
        # alert not yet announced).  Except the messengers ``unmatched`` names, archived
        # whatever their state: the match stage's survey path matches them apart, and
        # the engine asking is never fed them (Engine.external_messengers).
        rest = None if messengers is None else messengers - unmatched
        docs = [] if rest is not None and not rest else archive.list_alerts(AlertQuery(
            since=since, until=until, cone=cone, matched=True, limit=200_000,
            messenger=tuple(sorted(rest)) if rest else None))
        if unmatched:
            docs += archive.list_alerts(AlertQuery(
                since=since, until=until, cone=cone, limit=200_000,
                messenger=tuple(sorted(unmatched))))
        # The engine takes each event's newest revision: a retraction has no position.
        docs += archive.later_revisions(docs)
        return [Alert.model_validate(d) for d in docs]

    return history


def make_pipeline(settings: Settings, archive: Archive, *, replay: bool = False,
                  warm: bool = True, targets: list[str] | None = None) -> Pipeline:
    """Ingest + cross-match for this process: one engine every transport shares.

    ``replay`` runs the engine on event time instead of the wall clock (files
    of past alerts, ``mmbroker ingest``), against the archive: what earlier runs
    (or a live broker) stored is matched against as if memory held it, since the
    engine reads every window from the archive too and recalls each event's
    coincidences before it first processes it (``Engine.recall``: a replay is
    warmed event by event, around the times the files hold, not around now).
    ``warm`` reloads the live window from the archive (not for a replay, which
    the recall warms); ``targets`` are the delivery targets VOEvents are queued
    for (None: the ones the settings enable, see :func:`delivery_targets`; []
    archives them without sending).
    """
    engine = Engine(load_config(settings.crossmatch_config),
                    authority=settings.ivorn_authority, skymap_loader=archive.skymap,
                    clock=None if replay else time.time,
                    late_slack_s=settings.crossmatch_late_slack_s,
                    live_window_s=settings.crossmatch_live_window_s,
                    history=archive_history(archive), loader=archive.load_alerts,
                    recall=archive.recall_event if replay else None)
    publisher = Publisher(archive, settings, delivery_targets(settings)
                          if targets is None else targets,
                          private_targets=private_targets(settings))
    pipeline = Pipeline(make_ingestor(settings, archive), engine, publisher)
    if warm and not replay:
        log.info("cross-match warmed with %d alerts of the live window", pipeline.warm())
    return pipeline


def announcer(settings: Settings, archive: Archive) -> AnnouncingIngestor:
    """The sink of the listen and api stages: archive, then announce to the match stage."""
    return AnnouncingIngestor(make_ingestor(settings, archive), settings.kafka_bootstrap or "",
                              settings.kafka_alerts_topic, config=bus_client_kwargs())


def make_sink(settings: Settings, archive: Archive, *, staged: bool = False) -> Sink:
    """What every transport of this process feeds (the HTTP triggers route included), with
    the normalizers configured: one pipeline, so one cross-match state, in ``serve``; in
    the api stage (``staged``), an :func:`announcer`."""
    configure_normalizers(settings)
    if staged:
        return announcer(settings, archive)
    return make_pipeline(settings, archive)


def record_kafka_lag(topic: str, partition: int, lag: int) -> None:
    """The ``mmbroker_kafka_consumer_lag`` gauge of one input partition (records)."""
    KAFKA_LAG.labels(topic, str(partition)).set(lag)


def start_listeners(settings: Settings, archive: Archive, *, sink: Sink | None = None,
                    kafka_topics: list[str] | None = None,
                    kafka_config: Mapping[str, str] | None = None,
                    vtp_peers: list[str] | None = None, since: datetime | None = None,
                    filters: tuple[str, ...] = ()) -> Listeners:
    """Start a listener per Kafka cluster and per VTP peer; returns them running.

    Parameters
    ----------
    sink
        What the listeners hand their messages to (shared); default: a new
        pipeline for ``archive``.
    kafka_topics, vtp_peers
        Default to the settings' ``kafka_topics`` and ``vtp_peers``.
    kafka_config
        Confluent-style properties; default: the ``KAFKA_*`` environment.
    since
        Replay Kafka topics from this time (UTC).
    """
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
        spawn(running, KafkaListener(KafkaSource(list(topics), config), sink,
                                     batch_size=settings.ingest_batch_size, since=since,
                                     record_lag=record_kafka_lag), "kafka")
    for peer in peers:
        host, _, port = peer.rpartition(":")
        spawn(running, VTPSubscriber(host, int(port), sink,
                                     local_ivo=f"ivo://{settings.ivorn_authority}/mmbroker",
                                     filters=filters,
                                     max_frame_bytes=settings.max_message_bytes),
              f"vtp:{peer}")
    start_mapfetch(settings, archive, sink, running)
    return running


def start_mapfetch(settings: Settings, archive: Archive, sink: Sink,
                   running: Listeners) -> MapFetchLoop | None:
    """The sky map fetchers of a process whose transports feed ``sink``
    (``skymap_fetch_workers`` threads of ``running``; None when ``skymap_fetch`` is off).

    Each alert whose map arrives is matched again where this process matches: by the
    pipeline of ``serve``, by the match stage after an announcement from a staged
    listener.  The sink's ingestor wakes them when it archives an alert naming a map.
    """
    if not settings.skymap_fetch:
        return None
    loop = mapfetch_loop(settings, archive, sink)
    for n in range(settings.skymap_fetch_workers):
        spawn(running, loop, f"skymap-fetch-{n}")
    return loop


def mapfetch_loop(settings: Settings, archive: Archive, sink: Sink) -> MapFetchLoop:
    """The sky map fetch loop of :func:`start_mapfetch`, not started (any number of threads
    may run it)."""
    rematch: Rematch | None = None
    if isinstance(sink, Pipeline):
        pipeline = sink

        def rematch(alert: Alert) -> None:  # the pipeline's engine, store and publisher
            pipeline.match([alert], {}, publish_alerts=False)
    elif isinstance(sink, AnnouncingIngestor):
        announcing = sink

        def rematch(alert: Alert) -> None:  # a match worker matches and numbers it again
            try:
                announcing.announce([(announcement_key(alert), alert.id)])
            except RetryableError as exc:  # the match stage's sweep finds it instead
                log.warning("announcing %s with its sky map failed (%s); the match "
                            "stage's sweep will match it", alert.id, exc)
    loop = MapFetchLoop(archive, FetchPolicy.from_settings(settings), rematch,
                        attempts=settings.skymap_fetch_attempts,
                        backoff_s=settings.skymap_fetch_backoff_s,
                        backoff_max_s=settings.skymap_fetch_backoff_max_s)
    ingestor = getattr(sink, "ingestor", sink)
    if isinstance(ingestor, Ingestor):
        ingestor.stored_hooks.append(loop.offer)
    return loop


def start_comet(settings: Settings) -> CometChild | None:
    """The Comet child of ``serve`` (None unless ``settings.comet``), started.

    Comet first: a listener subscribed to it (or a peer relaying it) must find it
    up, since VTP replays nothing sent before a subscriber connects.  Never fatal:
    its supervisor retries with back-off and the outbox waits.
    """
    if not settings.comet:
        return None
    comet = CometChild(settings)
    comet.run()
    return comet


def match_worker(settings: Settings, archive: Archive) -> MatchWorker:
    """A match worker whose pipelines queue VOEvents for the targets the settings enable."""
    return MatchWorker(settings, archive, lambda: make_pipeline(settings, archive, warm=False))


def start_match(settings: Settings, archive: Archive) -> Listeners:
    """The match stage: a warmed :func:`match_worker` fed by a Kafka listener on the alerts
    topic (its own consumer group), and its sweeper; returns them running."""
    configure_normalizers(settings)
    worker = match_worker(settings, archive)
    worker.warm()
    config = bus_consumer_properties(settings, f"{settings.effective_kafka_group_id}.match")
    running = Listeners()
    spawn(running, KafkaListener(KafkaSource([settings.kafka_alerts_topic], config),
                                 MatchSink(worker), batch_size=settings.ingest_batch_size,
                                 record_lag=record_kafka_lag), "match")
    sweeper = threading.Thread(target=run_sweeper, args=(worker, running.stop),
                               name="match-sweep", daemon=True)
    sweeper.start()
    running.threads.append(sweeper)
    return running
