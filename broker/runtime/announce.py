"""The listen stage's hand-over to the match stage: archived alerts announced on Kafka.

When the stages run as separate processes (``mmbroker stage ...``), a
listener archives what it receives and then announces each alert's IVORN on
the alerts topic (``MMBROKER_KAFKA_ALERTS_TOPIC``), keyed by its event
(:func:`crossmatch.events.event_key`: the same LVK superevent or mission trigger from
any transport is one event), so the revisions of one event stay in order on one
partition, and so on one match worker, while the
events of even a single stream spread over every partition, and so over every
match worker (a stream key put all of a busy stream on one worker, idle the
others: measured with two streams and two workers).  The announcement is
acknowledged by every in-sync replica (idempotent producer, ``acks=all``)
before the listener commits its input offsets, so a crash in between only
repeats work: the input is read again, the archive answers "duplicate", and
the duplicate is announced again (the match stage skips what it has already
matched, and sweeps the archive for anything never announced).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from alerts_schema import Alert
from alerts_schema.errors import RetryableError
from broker.publish.senders import close_producer, kafka_producer
from broker.runtime.ingest import Ingestor
from crossmatch.events import event_key
from listeners.envelope import Outcome, RawMessage
from listeners.kafka import client_kwargs, config_from_env

log = logging.getLogger(__name__)

ANNOUNCED = ("archived", "duplicate")
"""Outcomes whose alert is announced (a duplicate may never have been)."""


BUS_ENV_PREFIX = "MMBROKER_BUS_KAFKA_"
"""Confluent-style properties of the broker's own Kafka cluster (``MMBROKER_KAFKA_BOOTSTRAP``:
the alerts topic and the VOEvent output topics), e.g. ``MMBROKER_BUS_KAFKA_SECURITY_PROTOCOL``
or ``MMBROKER_BUS_KAFKA_SASL_PASSWORD_FILE``.  Apart from ``KAFKA_*``, which belong to the
input streams (GCN's credentials must never reach the broker's own cluster, nor its to them)."""


def bus_properties(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The ``MMBROKER_BUS_KAFKA_*`` properties (Confluent-style)."""
    return config_from_env(env, prefix=BUS_ENV_PREFIX)


def bus_client_kwargs(env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """kafka-python keyword arguments of every producer and admin client on the broker's own
    cluster."""
    return client_kwargs(bus_properties(env))


def bus_consumer_properties(settings: Any, group: str,
                            env: Mapping[str, str] | None = None) -> dict[str, str]:
    """Confluent-style properties of a consumer of the broker's own cluster, read from the
    start of what its group never committed."""
    return {**bus_properties(env), "bootstrap.servers": settings.kafka_bootstrap or "",
            "group.id": group, "auto.offset.reset": "earliest"}


def ensure_topic(bootstrap: str, topic: str, partitions: int, replication: int,
                 config: dict[str, Any] | None = None) -> None:
    """Create the alerts topic if it does not exist (``min.insync.replicas`` below
    the replication factor, so one broker may be down)."""
    # kafka-python's admin client costs about 0.3 s to import: deferred until a stage
    # creates the topic (this module is imported by every `mmbroker` runtime command).
    from kafka.admin import KafkaAdminClient, NewTopic
    from kafka.errors import TopicAlreadyExistsError

    admin = KafkaAdminClient(bootstrap_servers=bootstrap.split(","), **(config or {}))
    try:
        topic_config = {"min.insync.replicas": str(max(1, replication - 1))}
        admin.create_topics([NewTopic(topic, partitions, replication,
                                      topic_configs=topic_config)])
    except TopicAlreadyExistsError:
        pass
    finally:
        admin.close()


def announcement_key(alert: Alert) -> bytes:
    """The Kafka key of an alert's announcement: its event (every revision of an event,
    from every transport, on one partition, in order)."""
    namespace, event_id = event_key(alert)
    return f"{namespace}\x1f{event_id}".encode()


class AnnouncingIngestor:
    """An ingestor whose archived alerts are announced on the alerts topic.

    A :class:`~listeners.envelope.Sink` wrapping an
    :class:`~broker.runtime.ingest.Ingestor`, so every transport feeds it unchanged.

    Raises
    ------
    RetryableError
        From :meth:`ingest` when the announcements were not acknowledged: the
        caller must not commit its input, which is then read again.
    """

    def __init__(self, ingestor: Ingestor, bootstrap: str, topic: str, *,
                 timeout_s: float = 10.0, config: dict[str, Any] | None = None) -> None:
        self.ingestor = ingestor
        self.archive = ingestor.archive
        self.topic = topic
        self._bootstrap = bootstrap
        self._timeout_s = timeout_s
        self._config = config or {}
        self._producer: Any = None

    def receive(self, source: str, data: bytes, *, received_at: datetime | None = None,
                transport: dict[str, Any] | None = None) -> RawMessage:
        return self.ingestor.receive(source, data, received_at=received_at,
                                     transport=transport)

    def set_stream_connected(self, streams: Sequence[str], connected: bool) -> None:
        self.ingestor.set_stream_connected(streams, connected)

    def ingest(self, messages: Sequence[RawMessage]) -> list[Outcome]:
        outcomes = self.ingestor.ingest(messages)
        ivorns = [(announcement_key(o.alert), o.ivorn) for o in outcomes
                  if o.status in ANNOUNCED and o.ivorn is not None and o.alert is not None]
        if ivorns:
            self.announce(ivorns)
        return outcomes

    def announce(self, ivorns: Sequence[tuple[bytes, str]]) -> None:
        """Publish (key, IVORN) pairs and wait until every replica has them."""
        try:
            producer = self._connect()
            futures = [producer.send(self.topic, key=key, value=ivorn.encode())
                       for key, ivorn in ivorns]
            producer.flush(timeout=self._timeout_s)
            for future in futures:
                future.get(timeout=self._timeout_s)
        except Exception as exc:  # kafka-python's errors, timeouts: the input is read again
            # The producer is kept: it reconnects by itself (see KafkaSender.send).
            raise RetryableError(f"announcing {len(ivorns)} alert(s) on {self.topic} failed: "
                                 f"{exc}") from exc

    def _connect(self) -> Any:
        if self._producer is None:
            self._producer = kafka_producer(self._bootstrap, self._timeout_s, self._config)
        return self._producer

    def close(self) -> None:
        close_producer(self._producer)
        self._producer = None
