"""Kafka transport: consume alert topics and hand batches to the ingest pipeline.

Delivery is at-least-once into an idempotent archive, which together means no
loss and no duplicate rows: offsets are committed only after the batch's
archive transaction has committed, so a listener killed at any moment
re-reads at most one batch, and re-archiving it is a no-op.

Configuration follows gcn-kafka: Confluent-style properties (``bootstrap.servers``,
``group.id``, ``sasl.mechanisms``, ...), optionally read from ``KAFKA_*``
environment variables with Confluent's naming rules, plus gcn-kafka's
``client_id``/``client_secret``/``domain`` shorthand for GCN's OIDC login.
They are translated here to kafka-python's keyword arguments.

Function-local imports: kafka-python (about 0.3 s to import) and
:mod:`listeners.oidc`, which imports it, are imported by the code that builds
a client, deferred so that a process with no Kafka stream, and every
``mmbroker`` command that only reads these settings, never pays for them.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from alerts_schema.errors import ConfigurationError, RetryableError
from listeners.connection import ConnectionReporter, kafka_connected
from listeners.envelope import Sink
from listeners.secretfiles import secret_from_env

log = logging.getLogger(__name__)

# Rebalance timeout: tansu (and small clusters) make the first join of a group
# wait for the full max.poll.interval.ms; kafka-python's 300 s default means a
# five-minute pause at every start.
DEFAULT_MAX_POLL_INTERVAL_MS = 10_000
# How long a dead member keeps its partitions.  kafka-python's 45 s default holds
# a killed worker's alerts back 45 s before another worker takes them over; tansu
# also makes a group's first join wait about half of it (23 s measured).  10 s is
# Kafka's pre-3.0 default and above every broker's group.min.session.timeout.ms;
# heartbeats come from kafka-python's own thread, so a long batch does not miss them.
DEFAULT_SESSION_TIMEOUT_MS = 10_000
LAG_EVERY_S = 10.0
"""How often (s) the listener measures its partitions' lag (``mmbroker_kafka_consumer_lag``)."""
CONNECTION_CHECK_S = 1.0
"""How often (s) the listener reports whether it holds a broker connection."""

_crc_checked = False


def native_crc32c() -> bool:
    """Whether kafka-python checks record batches' CRC-32C in native code.

    Without the ``crc32c`` package (kafka-python's ``crc32c`` extra, a dependency of
    mmbroker) it falls back to pure Python: 8.5 MB/s on the benchmark machine against
    13 GB/s, which made the CRC most of a listener's CPU on a survey stream (a 35 KB ZTF
    alert, 4 ms of CRC; bench/RESULTS.md, Survey burst).
    """
    from kafka.record import util

    # kafka-python binds the native function at import when ``crc32c`` imports.
    return getattr(util, "crc32c_c", None) is not None


def _warn_once_without_native_crc32c() -> None:
    global _crc_checked
    if not _crc_checked:
        _crc_checked = True
        if not native_crc32c():
            log.warning("kafka-python checks CRCs in pure Python (the crc32c package is not "
                        "installed): a large-alert stream will cost several ms of CPU per "
                        "message; install mmbroker's dependencies (pip install crc32c)")


_ENV_SPLIT = re.compile(r"_+")
_ENV_REPLACE = {"_": ".", "__": "-", "___": "_"}


def config_from_env(env: Mapping[str, str] | None = None, prefix: str = "KAFKA_"
                    ) -> dict[str, str]:
    """Confluent-style Kafka properties from environment variables, as gcn-kafka reads them.

    ``KAFKA_BOOTSTRAP_SERVERS`` -> ``bootstrap.servers``; a double underscore
    stands for ``-`` and a triple one for ``_`` (Confluent's Docker rules).
    ``KAFKA_<NAME>_FILE`` reads the value from a file only its owner may read
    (:func:`listeners.secretfiles.read_secret_file`): the way to pass passwords.
    """
    env = os.environ if env is None else env
    config: dict[str, str] = {}
    for key in env:
        if key.startswith(prefix) and len(key) > len(prefix):
            base = key.removesuffix("_FILE")
            name = _ENV_SPLIT.sub(lambda m: _ENV_REPLACE.get(m[0], m[0]), base[len(prefix):])
            value = secret_from_env(base, env)
            if value is not None:  # always, as ``key`` is one of base and base_FILE
                config[name.lower()] = value
    return config


@dataclass
class KafkaSource:
    """One Kafka cluster and the topics to read from it.

    ``config`` holds Confluent-style properties; ``group.id`` must be stable
    across restarts (committed offsets live under it).
    """

    topics: list[str]
    config: dict[str, str] = field(default_factory=dict)


def consumer_kwargs(config: Mapping[str, str]) -> dict[str, Any]:
    """kafka-python ``KafkaConsumer`` keyword arguments for Confluent-style ``config``.

    Raises
    ------
    ConfigurationError
        For a missing ``group.id`` or bootstrap server, and for any property
        this translation does not know (rather than silently ignoring it).
    """
    props = dict(config)
    domain = props.pop("domain", None)
    client_id = props.pop("client_id", None)
    client_secret = props.pop("client_secret", None)
    if domain:
        props.setdefault("bootstrap.servers", f"kafka.{domain}:9092")
    if client_id:
        props.setdefault("security.protocol", "SASL_SSL")
        props.setdefault("sasl.mechanisms", "OAUTHBEARER")
        props.setdefault("sasl.oauthbearer.method", "oidc")
        props.setdefault("sasl.oauthbearer.client.id", client_id)
        if client_secret:
            props.setdefault("sasl.oauthbearer.client.secret", client_secret)
        if domain:
            props.setdefault("sasl.oauthbearer.token.endpoint.url",
                             f"https://auth.{domain}/oauth2/token")

    kwargs: dict[str, Any] = {
        "enable_auto_commit": False,
        "auto_offset_reset": "latest",
        "max_poll_interval_ms": DEFAULT_MAX_POLL_INTERVAL_MS,
        "session_timeout_ms": DEFAULT_SESSION_TIMEOUT_MS,
    }
    bootstrap = props.pop("bootstrap.servers", None)
    group = props.pop("group.id", None)
    if not bootstrap:
        raise ConfigurationError("Kafka source needs bootstrap.servers (or domain)")
    if not group:
        raise ConfigurationError("Kafka source needs a stable group.id: committed offsets "
                                 "live under it, a random one would replay or skip alerts")
    kwargs["bootstrap_servers"] = [s.strip() for s in bootstrap.split(",") if s.strip()]
    kwargs["group_id"] = group
    if "auto.offset.reset" in props:
        reset = props.pop("auto.offset.reset")
        kwargs["auto_offset_reset"] = {"smallest": "earliest", "largest": "latest"}.get(
            reset, reset)
    for prop, kwarg in (("max.poll.interval.ms", "max_poll_interval_ms"),
                        ("session.timeout.ms", "session_timeout_ms"),
                        ("fetch.max.bytes", "fetch_max_bytes"),
                        ("max.partition.fetch.bytes", "max_partition_fetch_bytes")):
        if prop in props:
            kwargs[kwarg] = int(props.pop(prop))
    return {**kwargs, **client_kwargs(props)}


def client_kwargs(config: Mapping[str, str]) -> dict[str, Any]:
    """kafka-python keyword arguments any client takes (consumer, producer, admin) for
    Confluent-style connection and security properties: ``client.id``,
    ``security.protocol``, ``sasl.*`` (OAUTHBEARER through OIDC), ``ssl.*``.

    Raises
    ------
    ConfigurationError
        For any property this translation does not know (rather than ignoring it).
    """
    from listeners.oidc import OIDCTokenProvider

    props = dict(config)
    kwargs: dict[str, Any] = {}
    simple = {
        "client.id": "client_id",
        "security.protocol": "security_protocol",
        "sasl.username": "sasl_plain_username",
        "sasl.password": "sasl_plain_password",
        "ssl.ca.location": "ssl_cafile",
        "ssl.certificate.location": "ssl_certfile",
        "ssl.key.location": "ssl_keyfile",
    }
    for prop, kwarg in simple.items():
        if prop in props:
            kwargs[kwarg] = props.pop(prop)
    if "security_protocol" in kwargs:
        kwargs["security_protocol"] = kwargs["security_protocol"].upper()
    mechanism = props.pop("sasl.mechanisms", None) or props.pop("sasl.mechanism", None)
    if mechanism:
        kwargs["sasl_mechanism"] = mechanism.upper()
    method = props.pop("sasl.oauthbearer.method", None)
    oidc = {k: props.pop(k) for k in list(props) if k.startswith("sasl.oauthbearer.")}
    if kwargs.get("sasl_mechanism") == "OAUTHBEARER":
        if (method or "oidc").lower() != "oidc":
            raise ConfigurationError(f"unsupported sasl.oauthbearer.method {method!r}")
        try:
            kwargs["sasl_oauth_token_provider"] = OIDCTokenProvider(
                oidc["sasl.oauthbearer.token.endpoint.url"],
                oidc["sasl.oauthbearer.client.id"],
                oidc.get("sasl.oauthbearer.client.secret", ""),
                scope=oidc.get("sasl.oauthbearer.scope"))
        except KeyError as exc:
            raise ConfigurationError(f"OAUTHBEARER needs {exc.args[0]}") from exc
    elif oidc:
        raise ConfigurationError("sasl.oauthbearer.* set but sasl.mechanisms is not OAUTHBEARER")
    if props:
        raise ConfigurationError(f"unknown Kafka properties: {', '.join(sorted(props))}")
    return kwargs


HOP_HEADERS = ("_id", "_sender", "_format", "_test")
"""The headers hop-client writes (hop.io.Producer.pack): a message UUID, the credential
that sent it, its model's format (``json``, ``voevent``, ``blob``, ``avro``, ...) and a
test mark. Kept with the message; ``_test`` makes a SNEWS message a test."""


def hop_headers(headers: Any) -> dict[str, str]:
    """hop-client's headers of a record as text (``_id`` as a UUID), others ignored.

    Parameters
    ----------
    headers
        The record's headers, ``[(key, bytes), ...]`` as kafka-python gives them, or None.
    """
    out: dict[str, str] = {}
    for key, value in headers or ():
        if key not in HOP_HEADERS or not isinstance(value, bytes) or key in out:
            continue
        if key == "_id" and len(value) == 16:
            out[key] = str(uuid.UUID(bytes=value))
        else:  # a header is the sender's text: bounded, never trusted as markup
            out[key] = value[:256].decode("utf-8", errors="replace")
    return out


LagRecorder = Callable[[str, int, int], None]
"""Called with (topic, partition, records not yet consumed) for each assigned partition."""


class KafkaListener:
    """Consume ``source`` and archive every message through ``sink``.

    Parameters
    ----------
    source
        Cluster, topics and Confluent-style properties.
    sink
        Stores, normalizes and archives each batch.
    batch_size
        Most records per poll (and so per archive transaction).  Fewer are taken while
        batches take long (:meth:`_resize`): a batch that outlasts the consumer's
        ``max.poll.interval.ms`` gets the listener thrown out of its group, and the
        same batch read again after the rejoin, and again.
    poll_timeout_s
        How long one poll waits for records, in seconds.
    since
        Replay: on first assignment, seek every partition to the first offset
        at or after this time (UTC) instead of the committed offset.
    consumer_factory
        Builds the consumer from kafka-python keyword arguments (tests pass
        the real ``KafkaConsumer``; kept injectable for the retry tests).
    record_lag
        Told every :data:`LAG_EVERY_S` each partition's lag (the broker sets its
        ``mmbroker_kafka_consumer_lag`` gauge with it); None: not measured.
    """

    def __init__(self, source: KafkaSource, sink: Sink, *, batch_size: int = 500,
                 poll_timeout_s: float = 0.5, since: datetime | None = None,
                 consumer_factory: Callable[..., Any] | None = None,
                 record_lag: LagRecorder | None = None) -> None:
        self.source = source
        self.sink = sink
        self.record_lag = record_lag
        self.batch_size = batch_size
        self.poll_timeout_s = poll_timeout_s
        self.since = since
        self._kwargs = consumer_kwargs(source.config)
        self._factory = consumer_factory
        self._rewound: set[Any] = set()
        self._to_rewind: set[Any] = set()
        self.messages = 0
        self.connection = ConnectionReporter(sink, source.topics)
        self.take = batch_size  # records the next poll takes (see _resize)
        self._interval_s = float(self._kwargs.get("max_poll_interval_ms",
                                                  DEFAULT_MAX_POLL_INTERVAL_MS)) / 1000.0

    def _resize(self, records: int, took_s: float) -> None:
        """Halve the records per poll after a batch that took more than a quarter of
        ``max.poll.interval.ms`` (a slow stream, a loaded machine, large alerts); double
        them again, up to ``batch_size``, after one that took less than a sixteenth."""
        if took_s > self._interval_s / 4 and self.take > 1:
            self.take = max(1, min(self.take, records) // 2)
            log.warning("Kafka listener: %d records took %.1f s to archive (the group drops "
                        "a member after %.0f s without a poll): %d per poll from now",
                        records, took_s, self._interval_s, self.take)
        elif took_s < self._interval_s / 16 and self.take < self.batch_size \
                and records >= self.take:
            self.take = min(self.batch_size, self.take * 2)

    def run(self, stop: threading.Event) -> None:
        """Consume until ``stop`` is set; reconnect with back-off after any failure.

        Nothing is committed for a batch that failed, so it is read again after
        the reconnect; the archive's idempotency makes the repeat harmless.
        """
        delay = 1.0
        while not stop.is_set():
            try:
                self._consume(stop)
                return
            except RetryableError as exc:
                log.warning("Kafka listener: %s; reconnecting in %.0f s", exc, delay)
            except Exception:  # a listener must outlive anything one batch can throw
                log.exception("Kafka listener failed; reconnecting in %.0f s", delay)
            self.connection(False)
            stop.wait(delay)
            delay = min(delay * 2, 30.0)

    def _consume(self, stop: threading.Event) -> None:
        from kafka import ConsumerRebalanceListener, KafkaConsumer

        _warn_once_without_native_crc32c()
        factory = self._factory or KafkaConsumer
        consumer = factory(**self._kwargs)
        listener = self

        class _Rewind(ConsumerRebalanceListener):
            # Runs on kafka-python's IO thread, where blocking calls are refused:
            # only note the partitions; the poll loop seeks them.
            def on_partitions_revoked(self, revoked: Any) -> None:
                pass

            def on_partitions_assigned(self, assigned: Any) -> None:
                if listener.since is not None:
                    listener._to_rewind.update(tp for tp in assigned
                                               if tp not in listener._rewound)

        checked = lag_at = 0.0
        try:
            consumer.subscribe(self.source.topics, listener=_Rewind())
            while not stop.is_set():
                batches = consumer.poll(timeout_ms=int(self.poll_timeout_s * 1000),
                                        max_records=self.take)
                if time.monotonic() - checked >= CONNECTION_CHECK_S:
                    checked = time.monotonic()
                    state = kafka_connected(consumer)
                    if state is not None:
                        self.connection(state)
                    if state and self.record_lag is not None and \
                            time.monotonic() - lag_at >= LAG_EVERY_S:
                        lag_at = time.monotonic()
                        _measure_lag(consumer, self.record_lag)
                if self._to_rewind:
                    # Records fetched before the seek are read again after it.
                    rewound = self._rewind(consumer)
                    batches = {tp: recs for tp, recs in batches.items() if tp not in rewound}
                records = [r for part in batches.values() for r in part]
                if not records:
                    continue
                began = time.monotonic()
                self._archive(records)
                # Before the commit: a batch that took too long fails its commit (the
                # group has dropped this member), and the next, read again, is smaller.
                self._resize(len(records), time.monotonic() - began)
                consumer.commit(self._next_offsets(batches))
                self.messages += len(records)
        finally:
            # No commit here: what was not archived must be read again.
            consumer.close(autocommit=False)

    def _archive(self, records: list[Any]) -> None:
        bootstrap = ",".join(self._kwargs["bootstrap_servers"])
        raws = [self.sink.receive(
            r.topic, r.value if r.value is not None else b"",
            transport={"kafka": {"bootstrap": bootstrap, "topic": r.topic,
                                 "partition": r.partition, "offset": r.offset,
                                 "timestamp_ms": r.timestamp,
                                 **({"headers": h} if (h := hop_headers(r.headers)) else {})}})
            for r in records]
        self.sink.ingest(raws)

    @staticmethod
    def _next_offsets(batches: Mapping[Any, list[Any]]) -> dict[Any, Any]:
        from kafka.structs import OffsetAndMetadata

        return {tp: OffsetAndMetadata(recs[-1].offset + 1, "", -1)
                for tp, recs in batches.items() if recs}

    def _rewind(self, consumer: Any) -> set[Any]:
        """Seek newly assigned partitions to ``since``; returns the partitions moved."""
        assert self.since is not None
        fresh = [tp for tp in self._to_rewind if tp not in self._rewound]
        self._to_rewind.clear()
        if not fresh:
            return set()
        when_ms = int(self.since.timestamp() * 1000)
        offsets = consumer.offsets_for_times({tp: when_ms for tp in fresh})
        ends = consumer.end_offsets(fresh)
        for tp in fresh:
            found = offsets.get(tp)
            consumer.seek(tp, found.offset if found is not None else ends[tp])
            self._rewound.add(tp)
        log.info("replaying %d partition(s) from %s", len(fresh), self.since.isoformat())
        return set(fresh)


def _measure_lag(consumer: Any, record: LagRecorder) -> None:
    """Tell ``record`` the lag of every assigned partition: end offset minus position."""
    try:
        parts = list(consumer.assignment())
        if not parts:
            return
        ends = consumer.end_offsets(parts)
        for tp in parts:
            record(tp.topic, tp.partition, max(0, ends[tp] - consumer.position(tp)))
    except Exception:  # a metric is not worth failing a poll loop for
        log.debug("could not measure consumer lag", exc_info=True)


__all__ = ["KafkaListener", "KafkaSource", "config_from_env", "consumer_kwargs"]
