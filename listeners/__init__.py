"""Input streams: one module per stream, each a pure normalizer plus its transport.

A normalizer is a function ``(data: bytes, meta: MessageMeta) -> Normalized``
that raises an :class:`~alerts_schema.errors.InputError` subclass with a reason a
person understands when the bytes cannot become Alerts.  It does no I/O; the
transports (Kafka, VTP, HTTP, files) feed it and hand the results to the
archive through :mod:`broker.runtime.ingest`.

:mod:`listeners.detect` sniffs the format of raw bytes;
:mod:`listeners.registry` routes them to the normalizer that handles them;
:mod:`listeners.common` holds the parsing helpers normalizers share.
"""

from listeners.base import Heartbeat, MessageMeta, Normalized, Normalizer, SkymapFile

__all__ = ["Heartbeat", "MessageMeta", "Normalized", "Normalizer", "SkymapFile"]
