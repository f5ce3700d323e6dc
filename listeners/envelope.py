"""The envelope every transport makes, what becomes of it, and the :class:`Sink` it goes to.

A transport (Kafka, VTP, HTTP, files) wraps the bytes it receives in a
:class:`RawMessage` and hands batches of them to a :class:`Sink`; the sink answers
with one :class:`Outcome` per alert (or per message that could not become one).
These types live here, below the broker, so that a transport needs nothing
from :mod:`broker`: the broker's ingestors, pipeline and stages implement
:class:`Sink`, and whoever assembles a process hands one to each transport.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

from alerts_schema import Alert

Status = Literal["archived", "duplicate", "quarantined", "heartbeat"]
"""What became of a message: an alert archived (or already held), quarantined with its
reason, or a heartbeat counted."""


def sha256_hex(data: bytes) -> str:
    """The SHA-256 of ``data``, in hex: the raw payload's key in the archive."""
    return hashlib.sha256(data).hexdigest()


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class RawMessage:
    """Bytes as received, with where and when they came from.

    ``data`` is what is stored; when the transport received more than the
    size limit, ``data`` is its head and ``full_size`` the real length.
    """

    source: str
    data: bytes
    received_at: datetime = field(default_factory=_utcnow)
    transport: dict[str, Any] = field(default_factory=dict)
    full_size: int | None = None
    sha256: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "sha256", sha256_hex(self.data))

    @property
    def truncated(self) -> bool:
        return self.full_size is not None and self.full_size > len(self.data)


@dataclass(frozen=True, slots=True)
class Outcome:
    """What became of one alert (or one unparseable message) at the archive."""

    status: Status
    source: str
    raw_sha256: str
    ivorn: str | None = None
    alert_id: int | None = None
    reason: str | None = None
    alert: Alert | None = None  # as archived (receipt fields set); None for failures


class Sink(Protocol):
    """What a transport feeds: the broker's ingest side, as the transport sees it.

    Implemented by :class:`broker.runtime.ingest.Ingestor` (archive),
    :class:`broker.runtime.pipeline.Pipeline` (archive, cross-match, publish),
    :class:`broker.runtime.announce.AnnouncingIngestor` (archive, announce to the
    match stage) and :class:`broker.runtime.match_stage.MatchSink` (announcements
    in, matched).
    """

    def receive(self, source: str, data: bytes, *, received_at: datetime | None = None,
                transport: dict[str, Any] | None = None) -> RawMessage:
        """Wrap bytes from ``source`` (a stream name) as a message (the sink keeps only the
        head of one over its size limit)."""
        ...

    def ingest(self, messages: Sequence[RawMessage]) -> list[Outcome]:
        """Take one batch; once this returns, the transport may acknowledge or commit it.

        Raises
        ------
        RetryableError
            Nothing of the batch may be acknowledged: it must be delivered again.
        """
        ...

    def set_stream_connected(self, streams: Sequence[str], connected: bool) -> None:
        """Record that the transport's connection serving ``streams`` came or went (the
        dashboard shows a stream red while its listener is disconnected)."""
        ...
