"""Bounded JSON decoding shared by every JSON normalizer.

``json.loads`` happily builds a million-deep list or a gigabyte string;
these limits turn such payloads into a clear :class:`HostileInput`.

``NaN``, ``Infinity`` and ``-Infinity`` are not JSON, but real producers send
them for missing values (the SNEWS coincidence system writes ``NaN`` for an
unknown p-value); they decode as ``None``, which every normalizer reads as
"not stated".  So do numbers too large for a float (``1e999``): no
non-finite number ever reaches an Alert or the archive (PostgreSQL's JSONB
refuses them).  The exception is a localization (:data:`LOCATION_KEYS`): an
error radius of ``1e999`` read as "not stated" became an exact point, so
there a non-finite number stays a non-finite float, for the normalizer to
refuse (issue 14, item 6).  Integers longer than Python's 4,300-digit limit
are malformed input.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

import numpy as np

from alerts_schema.errors import HostileInput, MalformedInput, MMBrokerError

MAX_JSON_BYTES = 16 * 1024 * 1024
MAX_DEPTH = 64
LOCATION_KEYS = frozenset({
    "ra", "dec", "ra_deg", "dec_deg", "ra_dec_error", "error_radius_deg",
    "error_radius_90_deg", "ra_uncertainty", "dec_uncertainty", "src_error_50",
    "rectangular_error_corners", "containment_probability", "semi_major_deg",
    "semi_minor_deg", "systematic_deg"})
"""Object keys whose non-finite numbers are kept as such (a position or its error)."""


class _NonFinite:
    """A non-finite number seen while decoding, resolved once its key is known."""

    __slots__ = ("value",)

    def __init__(self, value: float) -> None:
        self.value = value


class _SawNonFinite(MMBrokerError):
    """Raised inside the decoder and caught in :func:`loads`: never leaves this module."""


def loads(data: bytes, *, max_bytes: int = MAX_JSON_BYTES, max_depth: int = MAX_DEPTH) -> Any:
    """Decode UTF-8 JSON with size and nesting limits.

    Raises
    ------
    HostileInput
        Over ``max_bytes`` or nested deeper than ``max_depth``.
    MalformedInput
        Not UTF-8 or not JSON; the reason says where.
    """
    if len(data) > max_bytes:
        raise HostileInput(f"JSON of {len(data)} bytes exceeds the {max_bytes}-byte limit")
    # Counting brackets runs at C speed; the byte-by-byte scan runs only when
    # there are enough brackets for the nesting to possibly exceed the limit.
    if data.count(b"[") + data.count(b"{") > max_depth and (
            depth := _max_depth(data)) > max_depth:
        raise HostileInput(f"JSON nested {depth} levels deep (limit {max_depth})")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise MalformedInput(f"not valid UTF-8 at byte {exc.start}: {exc.reason}") from exc
    try:
        try:
            return json.loads(text, parse_constant=_stop, parse_float=_finite_or_stop)
        except _SawNonFinite:  # rare: decode again, resolving each by its key
            return _resolve(json.loads(text, parse_constant=_marked_constant,
                                       parse_float=_marked_float,
                                       object_pairs_hook=_object), keep=False)
    except json.JSONDecodeError as exc:
        raise MalformedInput(f"invalid JSON at line {exc.lineno} column {exc.colno}: "
                             f"{exc.msg}") from exc
    except RecursionError as exc:  # pragma: no cover - _max_depth catches it first
        raise HostileInput("JSON nested too deeply") from exc
    except ValueError as exc:  # an integer over the int-from-string digit limit
        raise MalformedInput(f"invalid JSON number: {exc}") from exc


def _stop(_name: str) -> None:
    raise _SawNonFinite


def _finite_or_stop(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _SawNonFinite
    return value


def _marked_constant(name: str) -> _NonFinite:
    return _NonFinite(float(name))


def _marked_float(text: str) -> float | _NonFinite:
    value = float(text)
    return value if math.isfinite(value) else _NonFinite(value)


def _resolve(value: Any, *, keep: bool) -> Any:
    """``value`` with its non-finite marks as floats (``keep``) or None."""
    if isinstance(value, _NonFinite):
        return value.value if keep else None
    if isinstance(value, list):
        return [_resolve(v, keep=keep) for v in value]
    return value  # objects were resolved by _object as they were built


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    return {k: _resolve(v, keep=k in LOCATION_KEYS) for k, v in pairs}


_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_DELTA = np.zeros(256, dtype=np.int8)
_DELTA[[ord("["), ord("{")]] = 1
_DELTA[[ord("]"), ord("}")]] = -1
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


def _max_depth(data: bytes) -> int:
    """Bracket nesting depth outside strings, without decoding.

    Strings are blanked by one regex pass and the brackets summed by numpy,
    both at C speed (a byte loop in Python took a second for 16 MB).
    """
    brackets = _STRING.sub(b"", data).translate(None, _NOT_BRACKETS)
    depth = np.cumsum(_DELTA[np.frombuffer(brackets, dtype=np.uint8)], dtype=np.int32)
    return int(depth.max()) if depth.size else 0
