"""From raw bytes to archived Alerts: store raw, normalize, archive or quarantine.

Every transport (files, Kafka, VTP, HTTP) hands its messages to
:class:`Ingestor`.  The raw bytes are committed first, so a message that
crashes a parser is still on disk; then each is normalized by the route
:mod:`listeners.registry` picks, checked against the Alert schema, and
archived idempotently.  Anything that cannot become an Alert is quarantined
with its reason; nothing raised by a bad message escapes to the transport.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy.exc import SQLAlchemyError

from alerts_schema import validation_errors
from broker.archive import Archive, Outcome, RawMessage, utcnow
from broker.errors import (
    ArchiveUnavailable,
    HostileInput,
    InputError,
    PermanentError,
    SchemaValidationError,
)
from broker.metrics import INGEST_SECONDS, MESSAGES
from listeners import registry
from listeners.base import MessageMeta, Normalized

log = logging.getLogger(__name__)
T = TypeVar("T")

RETRY_DELAYS_S = (0.1, 0.5, 1.0, 2.0, 5.0)


@dataclass
class IngestReport:
    """Counts of what became of the messages ingested, per source."""

    counts: Counter[tuple[str, str]] = field(default_factory=Counter)
    outcomes: list[Outcome] = field(default_factory=list)

    def add(self, outcomes: Iterable[Outcome]) -> None:
        for outcome in outcomes:
            self.outcomes.append(outcome)
            self.counts[(outcome.source, outcome.status)] += 1

    def total(self, status: str) -> int:
        return sum(n for (_, s), n in self.counts.items() if s == status)

    def by_source(self) -> dict[str, dict[str, int]]:
        table: dict[str, dict[str, int]] = {}
        for (source, status), n in sorted(self.counts.items()):
            table.setdefault(source, {"archived": 0, "duplicate": 0, "quarantined": 0,
                                      "heartbeat": 0})
            table[source][status] = n
        return table


class Ingestor:
    """Turns batches of :class:`RawMessage` into archived alerts and quarantine entries.

    Parameters
    ----------
    archive
        Where everything is stored.
    authority
        IVORN authority for the alert ids this broker issues.
    max_message_bytes
        Messages longer than this are quarantined as hostile, keeping their head.
    """

    def __init__(self, archive: Archive, *, authority: str,
                 max_message_bytes: int = 16 * 1024 * 1024,
                 retry_delays_s: Sequence[float] = RETRY_DELAYS_S) -> None:
        self.archive = archive
        self.authority = authority
        self.max_message_bytes = max_message_bytes
        self.retry_delays_s = tuple(retry_delays_s)

    def receive(self, source: str, data: bytes, *, received_at: datetime | None = None,
                transport: dict[str, Any] | None = None) -> RawMessage:
        """Wrap bytes from a transport, keeping only the head of an oversize message."""
        oversize = len(data) > self.max_message_bytes
        return RawMessage(source, data[: self.max_message_bytes] if oversize else data,
                          received_at=received_at or utcnow(), transport=transport or {},
                          full_size=len(data) if oversize else None)

    def ingest(self, messages: Sequence[RawMessage]) -> list[Outcome]:
        """Store, normalize and archive one batch; retries while the archive is unavailable."""
        if not messages:
            return []
        with INGEST_SECONDS.time():
            self._retrying(lambda: self.archive.store_raw(messages))
            results = [(m, self.normalize(m)) for m in messages]
            try:
                outcomes = self._retrying(lambda: self.archive.store_results(results))
            except SQLAlchemyError as exc:
                outcomes = self._one_by_one(results, exc)
        for outcome in outcomes:
            MESSAGES.labels(outcome.source, outcome.status).inc()
        return outcomes

    def normalize(self, message: RawMessage) -> Normalized | PermanentError:
        """What the message became, its alerts validated against the contract, or the error."""
        if message.truncated:
            return HostileInput(f"message of {message.full_size} bytes exceeds the "
                                f"{self.max_message_bytes}-byte limit (head kept)")
        meta = MessageMeta(message.source, message.received_at, self.authority,
                           message.transport)
        try:
            _, result = registry.normalize(message.data, meta)
        except PermanentError as exc:
            return exc
        except Exception as exc:  # a normalizer bug must not take the listener down
            log.exception("normalizer crashed on a message from %s", message.source,
                          extra={"stream": message.source, "raw_sha256": message.sha256})
            return InputError(f"normalizer error {type(exc).__name__}: {exc}")
        for alert in result.alerts:
            errors = validation_errors("alert", alert.to_document())
            if errors:
                return SchemaValidationError("alert", errors)
        return result

    def _one_by_one(self, results: list[tuple[RawMessage, Normalized | PermanentError]],
                    batch_error: Exception) -> list[Outcome]:
        """Store a batch the database refused one message at a time.

        A value the database will not take (a permanent error, not an outage)
        must cost one message, quarantined with the database's reason, not the
        batch and not the listener.
        """
        log.error("archive refused a batch of %d (%s); storing one by one", len(results),
                  batch_error)
        outcomes: list[Outcome] = []
        for raw, result in results:
            try:
                outcomes += self._retrying(lambda r=raw, x=result: self.archive.store_results(
                    [(r, x)]))
            except SQLAlchemyError as exc:
                orig = getattr(exc, "orig", None) or exc
                refused = PermanentError(f"the archive refused it: {type(orig).__name__}: "
                                         f"{str(orig).strip().splitlines()[0][:300]}")
                outcomes += self._retrying(lambda r=raw, e=refused: self.archive.store_results(
                    [(r, e)]))
        return outcomes

    def _retrying(self, action: Callable[[], T]) -> T:
        for delay in (*self.retry_delays_s, None):
            try:
                return action()
            except ArchiveUnavailable as exc:
                if delay is None:
                    raise
                log.warning("archive unavailable (%s); retrying in %.1f s", exc, delay)
                time.sleep(delay)
        raise AssertionError("unreachable")
