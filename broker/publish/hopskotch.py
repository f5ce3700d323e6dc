"""Hopskotch output: published VOEvents and their JSON form to SCiMMA topics, via hop-client.

Multi-messenger groups (SNEWS 2.0 among them) exchange alerts on SCiMMA's Hopskotch,
a Kafka service that hop-client reads and writes. A :class:`HopSender` is one more
outbox target (``hop-voevent``, ``hop-json``): it gets the outbox's retries, holds
(embargoed and proprietary VOEvents never reach it before their release) and
exactly-once marking per IVORN, like the VTP and Kafka targets.

What a hop-client reader gets:

* on the VOEvent topic, hop's ``voevent`` format: the XML exactly as issued (hop's own
  VOEvent model would rebuild it through a dict, losing byte identity), so
  ``hop subscribe`` shows it and ``hop.models.VOEvent.deserialize`` parses it;
* on the JSON topic, hop's ``json`` format (:func:`broker.publish.senders.json_form`);
* hop's headers (``_id``, ``_sender`` with a credential, ``_format``), and the IVORN as
  the Kafka key, so every revision of an event stays in one partition, in order.

Function-local imports: hop-client (about 0.25 s to import, with confluent-kafka and
requests) is imported by the code that opens a stream or signs in, deferred so that a
broker without ``hop_url`` never loads it.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from datetime import timedelta
from typing import Any, Literal

from broker.config import Settings
from broker.publish.senders import DeliveryError, json_form, no_waiter

log = logging.getLogger(__name__)

TARGETS = ("hop-voevent", "hop-json")
"""The outbox targets Hopskotch output adds (when ``hop_url`` is set)."""


class _IssuedVOEvent:
    """A VOEvent as hop-client serializes models, with our exact bytes as the content."""

    def __init__(self, xml: bytes) -> None:
        self.xml = xml

    def serialize(self) -> dict[str, Any]:
        return {"format": "voevent", "content": self.xml}


def hop_auth(settings: Settings) -> Any:
    """hop-client's credential from the settings (TLS + SCRAM), or False (loopback)."""
    if settings.hop_username is None or settings.hop_password is None:
        return False
    from hop.auth import Auth, SASLMethod

    return Auth(settings.hop_username, settings.hop_password.get_secret_value(),
                ssl=True, method=SASLMethod[settings.hop_sasl_mechanism.replace("-", "_")])


class HopSender:
    """Publish to one Hopskotch topic; ``send`` returns once the cluster has the message.

    Parameters
    ----------
    url
        The cluster, ``kafka://host[:port]/`` (hop-client's form).
    topic
        The topic written.
    kind
        ``voevent``: the XML; ``json``: :func:`~broker.publish.senders.json_form`.
    auth
        A :class:`hop.auth.Auth`, or False for an anonymous (loopback) cluster.
    document
        IVORN -> coincidence or alert document, for the JSON form.
    timeout_s
        How long (s) a send may wait for the cluster's acknowledgement.
    """

    def __init__(self, url: str, topic: str, *, kind: Literal["voevent", "json"],
                 auth: Any = False,
                 document: Callable[[str], dict[str, Any] | None] | None = None,
                 timeout_s: float = 10.0) -> None:
        self.target = f"hop-{kind}"
        self.url = url.rstrip("/") + "/" + topic
        self.kind = kind
        self.auth = auth
        self.document = document
        self.timeout_s = timeout_s
        self._producer: Any = None

    def _open(self) -> Any:
        if self._producer is None:
            from hop import Stream  # hop-client and confluent-kafka: only when configured

            try:
                # automatic_offload (hop's upload of oversize messages to SCiMMA's
                # archive over HTTP) is off: VOEvents are small, and it would ask the
                # cluster for topic configs a plain Kafka need not expose.
                self._producer = Stream(auth=self.auth).open(
                    self.url, "w", produce_timeout=timedelta(seconds=self.timeout_s),
                    automatic_offload=False)
            except Exception as exc:  # hop raises ValueError, KafkaException and kin
                raise DeliveryError(f"Hopskotch {self.url}: {type(exc).__name__}: {exc}") \
                    from exc
        return self._producer

    def send(self, ivorn: str, xml: bytes, on_wire: Callable[[], None] = no_waiter) -> None:
        from hop.models import JSONBlob

        message: Any = (_IssuedVOEvent(xml) if self.kind == "voevent"
                        else JSONBlob(content=json_form(ivorn, xml, self.document)))
        failures: list[Any] = []

        def delivered(error: Any, _message: Any) -> None:
            if error is not None:
                failures.append(error)

        producer = self._open()
        try:
            producer.write(message, key=ivorn.encode(), delivery_callback=delivered)
            on_wire()  # in librdkafka's queue
            unsent = producer.flush(timedelta(seconds=self.timeout_s))
        except Exception as exc:
            raise DeliveryError(f"Hopskotch {self.url}: {type(exc).__name__}: {exc}") from exc
        if failures or unsent:
            # The producer is kept: librdkafka reconnects by itself.
            raise DeliveryError(f"Hopskotch {self.url}: not acknowledged within "
                                f"{self.timeout_s:g} s ({failures[0] if failures else 'timeout'})")

    def prepare(self) -> None:
        pass  # the producer keeps its connections

    def close(self) -> None:
        producer, self._producer = self._producer, None
        if producer is None:
            return
        # What the cluster never acknowledged stays in the outbox; drop librdkafka's own
        # queue, or close() would wait out the timeout and its threads retry forever.
        for record in getattr(producer, "producers", {}).values():
            with contextlib.suppress(Exception):  # hop/adc internals: best effort
                record.producer._producer.purge()
        try:
            producer.close()
        except Exception:  # closing with the cluster gone may raise: nothing left to lose
            log.debug("Hopskotch producer close failed", exc_info=True)


def hop_senders(settings: Settings,
                document: Callable[[str], dict[str, Any] | None]) -> list[HopSender]:
    """The Hopskotch targets the settings configure (none without ``hop_url``)."""
    if not settings.hop_url:
        return []
    auth = hop_auth(settings)
    return [HopSender(settings.hop_url, settings.hop_voevent_topic, kind="voevent", auth=auth),
            HopSender(settings.hop_url, settings.hop_json_topic, kind="json", auth=auth,
                      document=document)]
