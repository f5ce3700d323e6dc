"""Route raw bytes to the normalizer that handles them.

Routing first asks the routes that a transport's stream name alone decides
(GCN Classic binary notices on ``gcn.classic.binary.*``: their leading zero byte
would pass for Confluent Avro's magic byte), then looks at the sniffed format and,
for formats several streams share, at the stream name and the content.  The first
route in :data:`ROUTES` whose ``accepts`` is true wins, so the specific
streams come before the broad ones (an LVK alert is also JSON from a
``gcn.*``-looking topic; an Alert document is JSON too).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from alerts_schema import Alert
from alerts_schema.errors import MalformedInput, NormalizationError, UnknownFormat
from listeners import (
    alert_json,
    avro,
    gcn_binary,
    gcn_json,
    json_limits,
    lvk,
    rubin,
    snews,
    trigger,
    voevent,
    ztf,
)
from listeners.base import MessageMeta, Normalized
from listeners.detect import Format, sniff


@dataclass(frozen=True)
class Route:
    """A normalizer and the test that picks it.

    ``accepts(format, decoded, meta, data)`` sees the sniffed format, the
    decoded JSON value when the format is JSON (else None), the message
    metadata and the raw bytes (for cheap header checks, never a full parse).
    ``handle(data, decoded, meta)`` is the stream's normalizer, given the
    already-decoded JSON so that routing never parses a message twice.
    """

    name: str
    formats: frozenset[Format]
    accepts: Callable[[Format, Any, MessageMeta, bytes], bool]
    handle: Callable[[bytes, Any, MessageMeta], Normalized]
    claims: Callable[[MessageMeta, bytes], bool] | None = None
    """Set for a stream that its transport names (a topic prefix), whatever the bytes
    look like: asked before any sniffing, so no format's signature can take it."""


def _json_only(test: Callable[[Format, Any, MessageMeta], bool]
               ) -> Callable[[Format, Any, MessageMeta, bytes], bool]:
    return lambda fmt, decoded, meta, _data: test(fmt, decoded, meta)


def _with_bytes(test: Callable[..., bool]) -> Callable[[Format, Any, MessageMeta, bytes], bool]:
    return lambda fmt, decoded, meta, data: test(fmt, decoded, meta, data=data)


def _is_alert_json(_fmt: Format, doc: Any, meta: MessageMeta) -> bool:
    if not alert_json.trusted(meta):
        return False
    return alert_json.looks_like_alert(doc) or (
        isinstance(doc, list) and bool(doc) and all(map(alert_json.looks_like_alert, doc)))


@dataclass(frozen=True)
class DetectorStatusHook:
    """A stream whose alerts the cross-match weighs by which of its detectors are ON.

    ``applies(alert)`` says whether a batch needs the status; ``status(rows)`` reads it
    from the archive's ``stream_health`` rows.  The pipeline consults these hooks and
    knows no stream by name.
    """

    applies: Callable[[Alert], bool]
    status: Callable[[Iterable[Mapping[str, Any]]], dict[str, bool]]


DETECTOR_STATUS_HOOKS: tuple[DetectorStatusHook, ...] = (
    DetectorStatusHook(snews.feeds_detector_status, snews.detector_status),
)


JSON = frozenset({Format.JSON})
AVRO = frozenset({Format.AVRO_OCF, Format.AVRO_CONFLUENT})

ROUTES: list[Route] = [
    # GCN Classic binary packets start with a zero byte, Confluent Avro's magic byte:
    # the topic decides (listeners.gcn_binary.claims), before sniffing.
    Route("gcn-binary", frozenset(), lambda *_: False, gcn_binary.handle,
          claims=gcn_binary.claims),
    Route("alert-json", JSON, _json_only(_is_alert_json),
          lambda _data, doc, meta: alert_json.normalize_decoded(doc, meta)),
    Route("lvk", JSON | AVRO, _with_bytes(lvk.accepts), lvk.handle),
    # SNEWS accepts any object from a snews* topic, so Alert documents go first.
    Route("snews", JSON, _json_only(snews.accepts), snews.handle),
    Route("trigger", JSON, _json_only(trigger.accepts), trigger.handle),
    Route("gcn-json", JSON, _json_only(gcn_json.accepts), gcn_json.handle),
    Route("voevent", frozenset({Format.XML}), _with_bytes(voevent.accepts), voevent.handle),
    Route("ztf", AVRO, _with_bytes(ztf.accepts), ztf.handle),
    Route("rubin", AVRO, _with_bytes(rubin.accepts), rubin.handle),
]


def route(data: bytes, meta: MessageMeta) -> tuple[Route, Any]:
    """The route for ``data`` and its decoded JSON (None for other formats).

    Raises :class:`UnknownFormat` saying what was seen when no route accepts it, and
    :class:`~alerts_schema.errors.HostileInput` for an Avro container whose writer schema
    could crash the decoder (see :mod:`listeners.avro`).
    """
    for claimed in ROUTES:
        if claimed.claims is not None and claimed.claims(meta, data):
            return claimed, None
    fmt = sniff(data)
    decoded = json_limits.loads(data) if fmt is Format.JSON else None
    for candidate in ROUTES:
        if fmt in candidate.formats and candidate.accepts(fmt, decoded, meta, data):
            return candidate, decoded
    if fmt is Format.AVRO_OCF:
        # Say why when the writer schema is hostile (recursive, too deep): the routes'
        # peeks saw only "not mine".  The verdict is cached, so this parses nothing.
        with contextlib.suppress(MalformedInput):
            avro.container_schema(data)
    if fmt is Format.JSON:
        keys = sorted(decoded)[:8] if isinstance(decoded, dict) else type(decoded).__name__
        raise UnknownFormat(f"JSON from {meta.source!r} matches no known stream (keys: {keys})")
    raise UnknownFormat(f"{fmt.value} message from {meta.source!r}: no normalizer handles it")


def normalize(data: bytes, meta: MessageMeta) -> tuple[str, Normalized]:
    """Detect, route and normalize: ``(route name, result)`` or an :class:`InputError`."""
    chosen, decoded = route(data, meta)
    result = chosen.handle(data, decoded, meta)
    if not result:
        raise NormalizationError(f"{chosen.name}: message held neither an alert nor a "
                                 "heartbeat")
    return chosen.name, result
