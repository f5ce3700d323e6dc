"""Route raw bytes to the normalizer that handles them.

Routing looks at the sniffed format first and then, for formats several
streams share, at the content.  Each input-stream module registers itself in
:data:`ROUTES`; the first route whose ``accepts`` returns True wins.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from broker.errors import NormalizationError, UnknownFormat
from listeners import alert_json, json_limits
from listeners.base import MessageMeta, Normalized
from listeners.detect import Format, sniff


@dataclass(frozen=True)
class Route:
    """A normalizer and the test that picks it.

    ``accepts(format, decoded, meta)`` sees the sniffed format, the decoded
    JSON value when the format is JSON (else None) and the message metadata.
    ``handle(data, decoded, meta)`` is the stream's normalizer, given the
    already-decoded JSON so that routing never parses a message twice.
    """

    name: str
    formats: frozenset[Format]
    accepts: Callable[[Format, Any, MessageMeta], bool]
    handle: Callable[[bytes, Any, MessageMeta], Normalized]


ROUTES: list[Route] = [
    Route("alert-json", frozenset({Format.JSON}),
          lambda _f, doc, _m: alert_json.looks_like_alert(doc)
          or (isinstance(doc, list) and bool(doc) and all(map(alert_json.looks_like_alert, doc))),
          lambda _data, doc, meta: alert_json.normalize_decoded(doc, meta)),
]


def route(data: bytes, meta: MessageMeta) -> tuple[Route, Any]:
    """The route for ``data`` and its decoded JSON (None for other formats).

    Raises :class:`UnknownFormat` saying what was seen when no route accepts it.
    """
    fmt = sniff(data)
    decoded = json_limits.loads(data) if fmt is Format.JSON else None
    for candidate in ROUTES:
        if fmt in candidate.formats and candidate.accepts(fmt, decoded, meta):
            return candidate, decoded
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
