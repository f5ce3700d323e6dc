"""Avro machinery the Avro normalizers share: schema cache, projection, framing.

Decoding an alert is dominated by two costs this module removes from the hot
path:

* **Parsing the writer schema.**  Every ZTF message is a whole Avro object
  container file (OCF) carrying its 20-40 kB writer schema in the header, and
  ``fastavro.reader`` parses it again for every message.  Here the header is
  read by hand and the schema looked up in a :class:`SchemaCache` keyed by the
  schema's bytes, so each distinct schema is parsed once per process.
* **Decoding what the normalizer never reads.**  Cutouts (three FITS stamps)
  and the detection history (``prv_candidates`` and kin) are most of an alert.
  A :class:`Projection` names the fields a normalizer reads; the reader schema
  built from it (once per writer schema) lets fastavro skip the rest.  The raw
  bytes are archived before parsing, so nothing skipped is lost:
  :func:`decode_container` with ``projection=None`` decodes everything.

Rubin publishes single Avro datums in the Confluent wire format (magic byte 0,
a 4-byte big-endian schema id, the Avro body); :func:`split_confluent` checks
the framing and :func:`decode_datum` decodes the body.

**Writer schemas are checked before anything is decoded.**  fastavro decodes
recursively in C: a recursive record nested 100,000 deep in the data overflows
the C stack and kills the process (SIGSEGV, no exception to catch).  So a
writer schema whose named types refer to themselves, or whose types nest deeper
than :data:`MAX_SCHEMA_DEPTH`, is refused as :class:`~alerts_schema.errors.HostileInput`
when it is first parsed; data can nest no deeper than its schema.  A stream's
normalizer also names the :class:`SchemaFamily` it decodes (ZTF, Rubin, LVK),
and a container whose writer schema is of another family is refused unread.
The verdict, good or bad, is cached by the schema's bytes
(:class:`SchemaCache`), so a flood of one hostile schema is parsed once.

Every failure raises :class:`~alerts_schema.errors.MalformedInput` (the bytes do not
parse) or :class:`~alerts_schema.errors.HostileInput` (they try to exhaust the
decoder), with a reason that says which part of the message is at fault.
"""

from __future__ import annotations

import hashlib
import io
import re
import threading
import zlib
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

import fastavro
from fastavro.schema import SchemaParseException, UnknownType, to_parsing_canonical_form

from alerts_schema.errors import HostileInput, InputError, MalformedInput, NormalizationError
from alerts_schema.model import format_utc
from listeners import json_limits
from listeners.common import finite_or_none

__all__ = [
    "CACHE",
    "MAX_SCHEMA_DEPTH",
    "OCF_MAGIC",
    "ContainerHeader",
    "Projection",
    "SchemaCache",
    "SchemaFamily",
    "WriterSchema",
    "container_schema",
    "decode_container",
    "decode_datum",
    "json_value",
    "parse_count",
    "parse_writer_schema",
    "peek_container_schema",
    "read_container_header",
    "split_confluent",
]

OCF_MAGIC = b"Obj\x01"
CONFLUENT_MAGIC = 0
CONFLUENT_HEADER_BYTES = 5  # magic byte + 4-byte big-endian schema id
MAX_SCHEMA_BYTES = 1 << 20  # the largest real alert schema is ~60 kB
MAX_RECORDS = 100_000  # per container; ZTF and Rubin send one per message
MAX_BLOCK_BYTES = 64 << 20  # decompressed, per container block
_MAX_METADATA_ENTRIES = 1024
MAX_SCHEMA_DEPTH = 32
"""Deepest nesting of records, arrays, maps and unions a writer schema may declare.

The real alert schemas nest at most 5 deep (ZTF's ``prv_candidates``: an array of
a union of a record); fastavro's C decoder recurses once per level.
"""
_SUPPORTED_CODECS = ("null", "deflate")
_PRIMITIVE_WIDTH_NONZERO = frozenset(
    {"boolean", "int", "long", "float", "double", "bytes", "string"})

_parse_lock = threading.Lock()
_parses = 0


def parse_count() -> int:
    """How many writer schemas this process has parsed (a counter for tests and metrics)."""
    return _parses


# -- schemas ---------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Projection:
    """The part of an alert record a normalizer reads.

    Parameters
    ----------
    name
        Identifies the projection in each writer schema's reader cache.
    keep
        Top-level fields to decode; the writer's other fields are skipped.
        Names the writer does not have are ignored, so one projection serves
        every version of a stream's schema.
    narrow
        For record-typed fields among ``keep`` (also inside a union with
        null): the subfields to decode.  Fields not named here are decoded whole.
    """

    name: str
    keep: frozenset[str]
    narrow: Mapping[str, frozenset[str]] = field(default_factory=dict, hash=False)


class WriterSchema:
    """One parsed writer schema and the reader schemas projected from it.

    Build it with :func:`parse_writer_schema` (or through a
    :class:`SchemaCache`), which parses the schema once and refuses schemas
    whose data could make the decoder loop without consuming input.
    """

    __slots__ = ("_lock", "_readers", "canonical", "field_names", "fingerprint", "name",
                 "parsed")

    def __init__(self, parsed: dict[str, Any]) -> None:
        self.parsed = parsed
        self.name: str = parsed.get("name", "") if isinstance(parsed, dict) else ""
        fields = parsed.get("fields", []) if isinstance(parsed, dict) else []
        self.field_names: tuple[str, ...] = tuple(f["name"] for f in fields)
        self.canonical: str = to_parsing_canonical_form(parsed)
        # SHA-256 of the Parsing Canonical Form: equal for schemas that decode alike.
        self.fingerprint = hashlib.sha256(self.canonical.encode()).hexdigest()
        self._readers: dict[str, dict[str, Any] | None] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"WriterSchema({self.name!r}, {self.fingerprint[:12]})"

    def reader(self, projection: Projection | None) -> dict[str, Any] | None:
        """The parsed reader schema for ``projection`` (None: decode everything).

        Built on first use for each projection, then reused.
        """
        if projection is None:
            return None
        try:
            return self._readers[projection.name]
        except KeyError:
            pass
        with self._lock:
            if projection.name not in self._readers:
                self._readers[projection.name] = _project(self.parsed, projection)
            return self._readers[projection.name]


def parse_writer_schema(schema: Any) -> WriterSchema:
    """Parse an Avro schema (a JSON value or a fastavro-parsed dict) into a WriterSchema.

    Raises
    ------
    MalformedInput
        When it is not a valid Avro schema.
    HostileInput
        When it declares arrays or maps of zero-width items (nulls, empty
        records), whose block counts could keep the decoder busy forever
        without reading a byte; when a named type refers to itself (data of
        such a schema can nest without limit, and fastavro's C decoder
        recursing through it overflows the stack); when its types nest deeper
        than :data:`MAX_SCHEMA_DEPTH`.
    """
    global _parses
    try:
        parsed = fastavro.parse_schema(schema)
    except (SchemaParseException, UnknownType) as exc:
        raise MalformedInput(f"invalid Avro schema: {exc}") from exc
    except RecursionError as exc:
        raise HostileInput("Avro schema nested too deeply") from exc
    except (TypeError, KeyError, ValueError, AttributeError) as exc:
        raise MalformedInput(f"invalid Avro schema: {type(exc).__name__}: {exc}") from exc
    if not isinstance(parsed, dict) or parsed.get("type") not in ("record", "error"):
        raise MalformedInput("Avro schema: the top level is not a record")
    _refuse_deep_or_recursive(parsed, parsed.get("__named_schemas", {}))
    _refuse_zero_width_repeats(parsed, parsed.get("__named_schemas", {}))
    with _parse_lock:
        _parses += 1
    return WriterSchema(parsed)


class SchemaCache:
    """Writer schemas by the bytes of their JSON, each parsed (and judged) once.

    Bounded (least recently used goes first) so that a stream of messages each
    carrying a different schema cannot grow memory without limit.

    Parameters
    ----------
    max_entries
        How many distinct schemas to keep parsed.
    """

    def __init__(self, max_entries: int = 64) -> None:
        self.max_entries = max_entries
        self.hits = 0
        self.misses = 0
        self._entries: OrderedDict[bytes, WriterSchema | tuple[type[InputError], str]] = (
            OrderedDict())
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, schema_json: bytes) -> WriterSchema:
        """The parsed schema for ``schema_json``, parsing it on first sight.

        Raises :class:`MalformedInput` or :class:`HostileInput` as
        :func:`parse_writer_schema` does.  Refusals are cached too (as the
        error's class and reason), so a flood of messages carrying one hostile
        schema costs one parse.
        """
        with self._lock:
            entry = self._entries.get(schema_json)
            if entry is not None:
                self.hits += 1
                self._entries.move_to_end(schema_json)
        if entry is None:
            entry = self._verdict(schema_json)
            with self._lock:
                self.misses += 1
                self._entries[schema_json] = entry
                while len(self._entries) > self.max_entries:
                    self._entries.popitem(last=False)
        if isinstance(entry, WriterSchema):
            return entry
        error_class, reason = entry
        raise error_class(reason)

    @staticmethod
    def _verdict(schema_json: bytes) -> WriterSchema | tuple[type[InputError], str]:
        if len(schema_json) > MAX_SCHEMA_BYTES:
            return HostileInput, (f"Avro schema of {len(schema_json)} bytes exceeds the "
                                  f"{MAX_SCHEMA_BYTES}-byte limit")
        try:
            return parse_writer_schema(json_limits.loads(schema_json))
        except (MalformedInput, HostileInput) as exc:
            return type(exc), exc.reason

    def clear(self) -> None:
        """Forget every schema and reset the counters."""
        with self._lock:
            self._entries.clear()
            self.hits = self.misses = 0


CACHE = SchemaCache()
"""The process-wide cache of container writer schemas (ZTF, Rubin files)."""


def _project(parsed: dict[str, Any], projection: Projection) -> dict[str, Any]:
    """A parsed reader schema holding only ``projection``'s fields of ``parsed``."""
    named: dict[str, Any] = parsed.get("__named_schemas", {})
    fields = []
    for fld in parsed["fields"]:
        if fld["name"] not in projection.keep:
            continue
        subfields = projection.narrow.get(fld["name"])
        fields.append(fld if subfields is None else
                      {**fld, "type": _narrow(fld["type"], subfields, named)})
    reader = {k: v for k, v in parsed.items() if not k.startswith("__")}
    reader["fields"] = fields
    # A kept field may refer by name to a type the writer defined inside a field
    # the projection dropped: hand such definitions to the parser as known names.
    known: dict[str, Any] = {}
    for _ in range(len(named) + 1):
        try:
            # A record schema parses to a dict (fastavro's Schema also allows str, list).
            return cast("dict[str, Any]",
                        fastavro.parse_schema(reader, named_schemas=dict(known)))
        except UnknownType as exc:
            if exc.name not in named or exc.name in known:
                raise
            known[exc.name] = named[exc.name]
    raise AssertionError("unreachable: every named type was offered")  # pragma: no cover


def _narrow(avro_type: Any, subfields: frozenset[str], named: Mapping[str, Any]) -> Any:
    """``avro_type`` with its record (alone or in a union) cut down to ``subfields``."""
    if isinstance(avro_type, list):
        return [_narrow(member, subfields, named) for member in avro_type]
    if isinstance(avro_type, str) and avro_type in named:
        avro_type = named[avro_type]
    if isinstance(avro_type, dict) and avro_type.get("type") in ("record", "error"):
        return {**avro_type, "fields": [f for f in avro_type["fields"] if f["name"] in subfields]}
    return avro_type


def _zero_width(avro_type: Any, named: Mapping[str, Any], seen: frozenset[str]) -> bool:
    """True when a value of ``avro_type`` can be encoded in zero bytes."""
    if isinstance(avro_type, str):
        if avro_type == "null":
            return True
        if avro_type in _PRIMITIVE_WIDTH_NONZERO or avro_type in seen or avro_type not in named:
            return False
        return _zero_width(named[avro_type], named, seen | {avro_type})
    if isinstance(avro_type, list):  # a union's branch index takes a byte
        return False
    if isinstance(avro_type, dict):
        kind = avro_type.get("type")
        if kind in ("record", "error"):
            inner = seen | {avro_type.get("name", "")}
            return all(_zero_width(f["type"], named, inner) for f in avro_type["fields"])
        if kind == "fixed":
            return avro_type.get("size") == 0
        if kind in ("array", "map", "enum"):
            return False
        return _zero_width(kind, named, seen)
    return False


def _refuse_zero_width_repeats(parsed: dict[str, Any], named: Mapping[str, Any]) -> None:
    """Raise HostileInput for an array or map whose items take no bytes at all."""
    stack: list[Any] = [parsed]
    visited: set[int] = set()
    while stack:
        node = stack.pop()
        if id(node) in visited:
            continue
        visited.add(id(node))
        if isinstance(node, list):
            stack.extend(node)
        elif isinstance(node, dict):
            kind = node.get("type")
            if kind in ("array", "map"):
                inner = node.get("items" if kind == "array" else "values")
                if _zero_width(inner, named, frozenset()):
                    raise HostileInput(f"Avro schema declares an {kind} of zero-width items "
                                       "(the decoder could spin without reading input)")
                stack.append(inner)
            elif kind in ("record", "error"):
                stack.extend(f["type"] for f in node.get("fields", []))
            elif isinstance(kind, dict | list):
                stack.append(kind)


def _refuse_deep_or_recursive(parsed: dict[str, Any], named: Mapping[str, Any]) -> None:
    """Raise HostileInput for a self-referring named type or nesting past MAX_SCHEMA_DEPTH."""
    depths: dict[str, int] = {}  # named type -> its nesting depth, once known

    def depth(node: Any, level: int, open_names: tuple[str, ...]) -> int:
        if level > MAX_SCHEMA_DEPTH:
            raise HostileInput(f"Avro schema nests deeper than {MAX_SCHEMA_DEPTH} levels "
                               "(records, arrays, maps, unions)")
        if isinstance(node, str):
            if node not in named:
                return 0  # a primitive
            if node in open_names:
                raise HostileInput(f"Avro schema is recursive: type {node!r} contains itself "
                                   "(its data could nest without limit)")
            if node not in depths:
                depths[node] = depth(named[node], level, (*open_names, node))
            elif level + depths[node] > MAX_SCHEMA_DEPTH:  # reused deeper than first seen
                depth(None, MAX_SCHEMA_DEPTH + 1, open_names)
            return depths[node]
        if isinstance(node, list):  # a union
            return 1 + max((depth(m, level + 1, open_names) for m in node), default=0)
        if not isinstance(node, dict):
            return 0
        kind = node.get("type")
        if kind in ("record", "error"):
            name = node.get("name", "")
            inner = (*open_names, name) if name else open_names
            found = 1 + max((depth(f["type"], level + 1, inner) for f in node["fields"]),
                            default=0)
            if name:
                depths[name] = found
            return found
        if kind == "array":
            return 1 + depth(node.get("items"), level + 1, open_names)
        if kind == "map":
            return 1 + depth(node.get("values"), level + 1, open_names)
        if kind in ("enum", "fixed"):
            return 0
        return depth(kind, level, open_names)

    try:
        depth(parsed, 0, ())
    except RecursionError as exc:  # pragma: no cover - the level bound comes first
        raise HostileInput("Avro schema nested too deeply") from exc


@dataclass(frozen=True, slots=True)
class SchemaFamily:
    """The writer schemas one stream sends, recognized by the record's full name.

    A stream's normalizer decodes only containers whose writer schema belongs
    to its family: a ZTF topic carrying some other schema is refused before a
    byte of data is decoded.

    Parameters
    ----------
    stream
        Names the stream in reasons (``ZTF``, ``Rubin``, ``LVK``).
    pattern
        Full match of the writer schema's full name.
    """

    stream: str
    pattern: re.Pattern[str]

    def __contains__(self, writer: object) -> bool:
        return isinstance(writer, WriterSchema) and bool(self.pattern.fullmatch(writer.name))

    def check(self, writer: WriterSchema) -> None:
        """Raise :class:`NormalizationError` unless ``writer`` belongs to the family."""
        if writer not in self:
            raise NormalizationError(f"Avro writer schema {writer.name[:200]!r} is not a "
                                     f"{self.stream} alert schema: not a {self.stream} alert "
                                     "(refused before decoding)")


# -- object container files ----------------------------------------------------------

@dataclass(frozen=True, slots=True)
class ContainerHeader:
    """The header of an Avro object container file."""

    schema_json: bytes
    codec: str
    sync: bytes
    data_offset: int  # where the first block starts


def _read_long(data: bytes, pos: int, what: str) -> tuple[int, int]:
    """Decode one zig-zag varint at ``pos``: ``(value, next position)``."""
    result = shift = 0
    end = min(pos + 10, len(data))  # a 64-bit long takes at most 10 bytes
    while pos < end:
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return (result >> 1) ^ -(result & 1), pos
        shift += 7
    if pos >= len(data):
        raise MalformedInput(f"Avro container truncated in {what} at byte {pos}")
    raise MalformedInput(f"Avro container: {what} at byte {pos} is not a valid varint")


def _read_bytes(data: bytes, pos: int, what: str) -> tuple[bytes, int]:
    size, pos = _read_long(data, pos, what)
    if size < 0 or pos + size > len(data):
        raise MalformedInput(f"Avro container truncated: {what} claims {size} bytes at byte "
                             f"{pos}, {len(data) - pos} remain")
    return data[pos:pos + size], pos + size


def read_container_header(data: bytes) -> ContainerHeader:
    """Parse the header of an Avro object container file (no schema parsing).

    Raises
    ------
    MalformedInput
        Not an Avro container, or its header is truncated or inconsistent.
    """
    if not data.startswith(OCF_MAGIC):
        raise MalformedInput("not an Avro container file (no 'Obj\\x01' magic)")
    pos = len(OCF_MAGIC)
    meta: dict[str, bytes] = {}
    while True:
        count, pos = _read_long(data, pos, "header metadata count")
        if count == 0:
            break
        if count < 0:  # a negative count is followed by the block's size in bytes
            count = -count
            _size, pos = _read_long(data, pos, "header metadata size")
        if len(meta) + count > _MAX_METADATA_ENTRIES:
            raise MalformedInput(f"Avro container header claims over {_MAX_METADATA_ENTRIES} "
                                 "metadata entries")
        for _ in range(count):
            key, pos = _read_bytes(data, pos, "header metadata key")
            value, pos = _read_bytes(data, pos, "header metadata value")
            meta[key.decode("utf-8", "replace")] = value
    sync = data[pos:pos + 16]
    if len(sync) != 16:
        raise MalformedInput("Avro container truncated in the header's sync marker")
    if "avro.schema" not in meta:
        raise MalformedInput("Avro container header has no avro.schema")
    codec = meta.get("avro.codec", b"null").decode("utf-8", "replace") or "null"
    return ContainerHeader(meta["avro.schema"], codec, sync, pos + 16)


def container_schema(data: bytes, cache: SchemaCache = CACHE) -> WriterSchema:
    """The writer schema of the container ``data``, from ``cache`` when already seen."""
    return cache.get(read_container_header(data).schema_json)


def peek_container_schema(data: bytes, cache: SchemaCache = CACHE) -> WriterSchema | None:
    """Like :func:`container_schema` but None instead of an error (for routing)."""
    try:
        return container_schema(data, cache)
    except (MalformedInput, HostileInput):
        return None


def decode_container(data: bytes, projection: Projection | None,
                     cache: SchemaCache = CACHE, *, family: SchemaFamily | None = None
                     ) -> tuple[WriterSchema, list[dict[str, Any]]]:
    """Decode every record of an Avro object container file.

    Parameters
    ----------
    data
        The whole container (one Kafka message from ZTF, or a file).
    projection
        The fields to decode (see :class:`Projection`); None decodes everything.
    cache
        Where writer schemas are looked up and kept.
    family
        When given, a writer schema outside it is refused before any decoding.

    Returns
    -------
    tuple
        The writer schema and the decoded records, in file order.

    Raises
    ------
    MalformedInput
        Truncated or corrupt containers, unsupported codecs, records that do
        not decode with the writer schema.
    HostileInput
        Oversized schemas or blocks, zero-width repeated items, recursive or
        too deeply nested schemas, runaway nesting.
    NormalizationError
        A writer schema outside ``family``.
    """
    header = read_container_header(data)
    if header.codec not in _SUPPORTED_CODECS:
        raise MalformedInput(f"Avro container codec {header.codec!r} is not supported "
                             f"(supported: {', '.join(_SUPPORTED_CODECS)})")
    writer = cache.get(header.schema_json)
    if family is not None:
        family.check(writer)
    reader = writer.reader(projection)
    records: list[dict[str, Any]] = []
    pos = header.data_offset
    block_number = 0
    while pos < len(data):
        count, pos = _read_long(data, pos, f"block {block_number} record count")
        size, pos = _read_long(data, pos, f"block {block_number} size")
        if count < 0 or size < 0 or pos + size + 16 > len(data):
            raise MalformedInput(f"Avro container truncated in block {block_number}: it "
                                 f"claims {size} bytes at byte {pos}, {len(data) - pos} remain")
        if len(records) + count > MAX_RECORDS:
            raise HostileInput(f"Avro container claims over {MAX_RECORDS} records")
        block = data[pos:pos + size]
        pos += size
        if data[pos:pos + 16] != header.sync:
            raise MalformedInput(f"Avro container block {block_number} does not end with "
                                 "the header's sync marker (corrupt or truncated)")
        pos += 16
        if header.codec == "deflate":
            block = _inflate(block, block_number)
        records.extend(_decode_block(block, count, writer, reader, block_number))
        block_number += 1
    return writer, records


def _inflate(block: bytes, block_number: int) -> bytes:
    """Raw-deflate ``block``, refusing to expand past MAX_BLOCK_BYTES (zip bombs)."""
    inflater = zlib.decompressobj(-15)
    try:
        out = inflater.decompress(block, MAX_BLOCK_BYTES)
    except zlib.error as exc:
        raise MalformedInput(f"Avro container block {block_number}: bad deflate data: "
                             f"{exc}") from exc
    if inflater.unconsumed_tail:
        raise HostileInput(f"Avro container block {block_number} inflates past "
                           f"{MAX_BLOCK_BYTES} bytes")
    return out


def _decode_block(block: bytes, count: int, writer: WriterSchema,
                  reader: dict[str, Any] | None, block_number: int) -> list[dict[str, Any]]:
    stream = io.BytesIO(block)
    out = []
    for index in range(count):
        out.append(_read_one(stream, writer, reader,
                             f"record {index} of block {block_number}"))
    left = len(block) - stream.tell()
    if left:
        raise MalformedInput(f"Avro container block {block_number}: {left} bytes left after "
                             f"its {count} records (corrupt block or wrong schema)")
    return out


def _read_one(stream: io.BytesIO, writer: WriterSchema, reader: dict[str, Any] | None,
              what: str) -> dict[str, Any]:
    """One datum from ``stream``, every decoder failure turned into an InputError."""
    start = stream.tell()
    try:
        # The writer schema is a record (WriterSchema refuses any other): so is the datum.
        return cast("dict[str, Any]", fastavro.schemaless_reader(stream, writer.parsed, reader))
    except RecursionError as exc:
        raise HostileInput(f"Avro {what} nests too deeply") from exc
    except EOFError as exc:
        raise MalformedInput(f"Avro {what} is truncated: it ends inside a value "
                             f"(started at byte {start})") from exc
    except MemoryError as exc:
        raise HostileInput(f"Avro {what} claims more memory than exists") from exc
    except Exception as exc:  # fastavro's errors on corrupt data are not documented
        raise MalformedInput(f"Avro {what} does not decode with writer schema "
                             f"{writer.name!r}: {type(exc).__name__}: {exc}") from exc


# -- Confluent wire format -----------------------------------------------------------

def split_confluent(data: bytes) -> tuple[int, bytes]:
    """``(schema id, Avro body)`` of a Confluent wire-format message.

    Raises
    ------
    MalformedInput
        Shorter than the 5-byte header, a magic byte other than 0, or no body.
    """
    if len(data) < CONFLUENT_HEADER_BYTES:
        raise MalformedInput(f"Confluent wire format: {len(data)} bytes is shorter than the "
                             f"{CONFLUENT_HEADER_BYTES}-byte header (magic byte + schema id)")
    if data[0] != CONFLUENT_MAGIC:
        raise MalformedInput(f"Confluent wire format: magic byte 0x{data[0]:02x} is not 0x00")
    schema_id = int.from_bytes(data[1:CONFLUENT_HEADER_BYTES], "big")
    body = data[CONFLUENT_HEADER_BYTES:]
    if not body:
        raise MalformedInput(f"Confluent wire format: no Avro body after the header "
                             f"(schema id {schema_id})")
    return schema_id, body


def decode_datum(body: bytes, writer: WriterSchema,
                 projection: Projection | None) -> dict[str, Any]:
    """Decode one schemaless Avro datum that must fill ``body`` exactly.

    Raises
    ------
    MalformedInput
        Truncated bodies, bodies that do not decode, and bytes left over
        (the usual sign of a body written with another schema than its id says).
    """
    stream = io.BytesIO(body)
    record = _read_one(stream, writer, writer.reader(projection), "body")
    left = len(body) - stream.tell()
    if left:
        raise MalformedInput(f"Avro body: {left} bytes left after the datum (written with "
                             f"another schema than {writer.name!r}?)")
    return record


# -- values ----------------------------------------------------------------------------

def json_value(value: Any) -> Any:
    """``value`` as a JSON value for an Alert's ``extra``.

    Non-finite floats become None, datetimes ISO 8601 UTC strings, bytes their
    length in a note; containers are converted recursively.
    """
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return finite_or_none(value)
    if isinstance(value, datetime):
        return format_utc(value) if value.tzinfo else value.isoformat()
    if isinstance(value, bytes | bytearray):
        return f"<{len(value)} bytes>"
    if isinstance(value, Mapping):
        return {str(k): json_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_value(v) for v in value]
    return str(value)
