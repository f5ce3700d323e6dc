"""Listeners tell the archive when their connection comes and goes.

The dashboard shows a stream red when its listener has lost its connection,
before the stream's silence alone would say so.  Each listener owns a
:class:`ConnectionReporter` for the streams it reads and calls it with its
state as often as it likes; only changes reach the archive, and a failure to
record one is logged, never raised into the listener.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from listeners.envelope import Sink

log = logging.getLogger(__name__)


class ConnectionReporter:
    """Record ``connected`` for ``streams`` through ``sink`` on each change.

    Parameters
    ----------
    sink
        What the listener hands messages to; its
        :meth:`~listeners.envelope.Sink.set_stream_connected` records the state.
    streams
        The stream names (Kafka topics, ``vtp:<peer>``) the connection serves.
    """

    def __init__(self, sink: Sink, streams: Sequence[str]) -> None:
        self._sink = sink
        self.streams = list(streams)
        self.state: bool | None = None

    def __call__(self, connected: bool) -> None:
        if connected is self.state:
            return
        try:
            self._sink.set_stream_connected(self.streams, connected)
        except Exception:  # the listener's own work must go on; the next change retries
            log.warning("could not record %s as %s", ", ".join(self.streams),
                        "connected" if connected else "disconnected", exc_info=True)
            return
        self.state = connected


def kafka_connected(consumer: Any) -> bool | None:
    """Whether a kafka-python consumer holds any broker connection (None: cannot tell).

    Read from the client's public metrics: kafka-python reconnects by itself
    and raises nothing while a cluster is away, so this is the only sign.
    """
    try:
        metrics = consumer.metrics()
    except Exception:  # metrics are best effort, and this is only a display
        return None
    for group in metrics.values():
        if isinstance(group, dict) and "connection-count" in group:
            return float(group["connection-count"]) > 0
    return None
