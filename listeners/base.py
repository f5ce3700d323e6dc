"""The normalizer interface every input stream implements."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from alerts_schema import Alert


@dataclass(frozen=True, slots=True)
class MessageMeta:
    """What a transport knows about a message besides its bytes.

    Parameters
    ----------
    source
        The stream name: a Kafka topic, ``vtp:<peer>``, ``detector`` or ``file``.
    received_at
        When the broker received the bytes (UTC, timezone-aware).
    authority
        The IVORN authority this broker issues alert ids under.
    transport
        Where exactly the bytes came from (topic/partition/offset, peer
        address, file path), recorded with the archived alert.
    """

    source: str
    received_at: datetime
    authority: str
    transport: Mapping[str, Any] = field(default_factory=dict)

    def alert_ivorn(self, stream: str, local_id: str) -> str:
        """``ivo://<authority>/<stream>#<local id>`` for an alert this broker issues."""
        return f"ivo://{self.authority}/{stream}#{local_id}"


Normalizer = Callable[[bytes, MessageMeta], list[Alert]]
