"""The normalizer interface every input stream implements.

A normalizer is a pure function ``(data: bytes, meta: MessageMeta) -> Normalized``:
no I/O, no clock (times come from the message or ``meta.received_at``), and
any failure raised as an :class:`~alerts_schema.errors.InputError` subclass whose
``reason`` a person can act on.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal
from urllib.parse import quote

from alerts_schema import Alert

# RFC 3986 pchar beyond the unreserved characters quote() always keeps; the path
# also keeps "/", the fragment "/" and "?".
_PATH_SAFE = "!$&'()*+,;=:@/"
_FRAGMENT_SAFE = _PATH_SAFE + "?"


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
        """``ivo://<authority>/<stream>#<local id>`` for an alert this broker issues.

        ``stream`` and ``local_id`` may come from a peer's packet: every character
        a URI path or fragment may not hold (``<``, ``>``, ``"``, spaces, ``#``,
        ``%``, non-ASCII ...) is percent-encoded, so the IVORN is a valid URI
        whatever a peer sends (issue 14, item 8).
        """
        # surrogatepass: JSON escapes can make lone surrogates, which UTF-8 cannot hold.
        return (f"ivo://{self.authority}/{quote(stream, _PATH_SAFE, errors='surrogatepass')}"
                f"#{quote(local_id, _FRAGMENT_SAFE, errors='surrogatepass')}")


@dataclass(frozen=True, slots=True)
class SkymapFile:
    """A sky map that arrived inside a message, to be stored once by hash.

    ``area_90_deg2`` and the most probable position are filled by the
    normalizer when it can compute them; the Alert's SkymapLocalization
    names the map by ``sha256``.
    """

    data: bytes
    format: Literal["multiorder", "flat"]
    area_90_deg2: float | None = None
    sha256: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "sha256", hashlib.sha256(self.data).hexdigest())


SKYMAP_URL = "skymap_url"
"""The ``extra`` key under which a normalizer records the URL of a sky map the alert
names but does not carry (GCN JSON ``healpix_url``, LVK VOEvent ``skymap_fits``, Fermi
GBM VOEvent ``LocationMap_URL``/``HealPix_URL``; see :func:`listeners.common.skymap_url`).
A normalizer does no I/O: the broker fetches the map later
(:mod:`broker.runtime.mapfetch`) and makes it the alert's localization."""


def skymap_url_to_fetch(alert: Alert) -> str | None:
    """The URL of the sky map ``alert`` names (``extra["skymap_url"]``) when the map is
    still to be fetched: the alert has no sky map localization and retracts nothing."""
    url = alert.extra.get(SKYMAP_URL)
    if not isinstance(url, str) or not url or alert.alert_type == "retraction":
        return None
    return None if alert.localization.kind == "skymap" else url


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """A sign of life from a stream or one detector on it (GCN heartbeat, SNEWS).

    Parameters
    ----------
    stream
        The stream the heartbeat speaks for (e.g. ``gcn.heartbeat``, ``snews``).
    detector
        The detector within the stream, or ``""`` for the stream as a whole.
    time
        The heartbeat's own timestamp (UTC).
    status
        The detector's state as the message states it (``ON``, ``OFF``), or None.
    """

    stream: str
    detector: str
    time: datetime
    status: str | None = None


@dataclass(frozen=True, slots=True)
class Normalized:
    """What one raw message became: alerts, sky maps they reference, heartbeats."""

    alerts: tuple[Alert, ...] = ()
    skymaps: tuple[SkymapFile, ...] = ()
    heartbeats: tuple[Heartbeat, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.alerts or self.heartbeats)


Normalizer = Callable[[bytes, MessageMeta], Normalized]
