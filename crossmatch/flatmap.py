"""Single-resolution (flat) HEALPix FITS maps read as a stream into a multi-order map.

A flat LVK map at nside 2048 is 50 million rows; with its PROB, DISTMU,
DISTSIGMA and DISTNORM columns as float64 that is 1.6 GB once gunzipped,
beyond any sensible in-memory limit, yet a real map.  This reader never holds
the whole table: it inflates the FITS a block of rows at a time, keeps only
the probability column, and folds each aligned run of NESTED pixels into
NUNIQ pixels as it goes (:func:`coarsen`), so what stays in memory is the
multi-order result (about 20,000 rows for a BAYESTAR map, which was
rasterized from one).  The distance columns are skipped: the broker's overlap
and credible regions use the sky probability only.

Memory bound, for nside 2**m:

* NESTED, implicit indexing: one inflate block (~8 MB) plus one chunk of
  4**10 pixels being folded (~40 MB of working arrays) plus the result,
  capped at ``MAX_ROWS`` rows (16 B each, 64 MB): under ~120 MB at any nside.
* RING: rows do not arrive in NESTED order, so each pixel goes to a 512 kB
  buffer for its NESTED ancestor 8 orders up, folded and freed once full.
  Rings run north to south, so only the ancestors the current rings cross
  are open: about 64 buffers (33 MB) at nside 2048.
* Explicit indexing (a ``PIXEL`` column, any order): buffers are folded at
  the end, so memory is 512 kB per 4**8-pixel region the listed pixels touch
  (at most 8 B per pixel of the sphere).

The decompressed size is capped by what the header declares (rows x row
width, which must itself fit the stated NSIDE); a header that lies, an NSIDE
that is not a power of two up to 8192, or a payload that inflates past its
declared size is refused as :class:`~alerts_schema.errors.HostileInput`.

Folding rule: four NESTED siblings, each already a whole pixel, become their
parent when their probabilities are equal (relative difference under 1e-9:
lossless, which recovers a rasterized multi-order map) or when together they
hold under ``EPS_REL`` of the map's probability (lossy, far-tail pixels whose
inner detail cannot change an overlap by more than that).  Groups holding a
negative or non-finite value are never folded, so the caller still sees them.

Function-local imports: healpy (about 0.7 s to import) and astropy.io.fits are
imported by the functions that use them, deferred so that a command or process that
never reads a flat sky map starts without them.
"""

from __future__ import annotations

import math
import re
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from alerts_schema.errors import HostileInput, MalformedInput, MMBrokerError

__all__ = ["EPS_REL", "MAX_NSIDE", "MAX_ROWS", "MAX_TABLE_BYTES", "FlatMap", "coarsen", "read_flat"]

MAX_NSIDE = 8192
"""Finest flat map accepted (order 13, 805 million pixels); LVK sends at most 2048."""

MAX_TABLE_BYTES = 8 << 30
"""Largest flat table inflated, bytes: bounds the time a stream may take, as memory is bounded
anyway (nside 4096 with LVK's four float64 columns is 6.4 GB; 8192 fits with PROB alone)."""

MAX_ROWS = 1 << 22
"""Most NUNIQ rows a folded map may keep (16 B each); beyond, folding is made coarser."""

EPS_REL = 1e-9
"""Sibling groups holding less than this fraction of the total probability are folded."""

_BLOCK = 2880
_CARD = 80
_MAX_HEADER_BLOCKS = 1000  # 2.9 MB of header cards: far beyond any real map
_MAX_HDUS = 16
_TRAILER_BYTES = 1 << 20  # further HDUs after the map (none in LVK files), bytes
_INFLATE_PIECE = 8 << 20  # bytes inflated per read: the streaming working set
_CHUNK_LEVELS = 10  # fold 4**10 pixels at a time (8 MB as float64)
_SCATTER_LEVELS = 8  # RING/explicit: buffers of 4**8 pixels (512 kB), few open at once
_SAME_RTOL = 1e-9
_TFORM = re.compile(r"^\s*(\d*)\s*([LXBIJKAEDCMPQ])")
_WIDTHS = {"L": 1, "B": 1, "I": 2, "J": 4, "K": 8, "A": 1, "E": 4, "D": 8, "C": 8, "M": 16,
           "P": 8, "Q": 16}
_PROB_COLUMNS = ("PROB", "PROBABILITY")


class _Fallback(MMBrokerError):
    """Not a flat HEALPix table: the whole-file reader decides (never leaves the package)."""


class _TooDetailed(MMBrokerError):
    """Folding kept more than MAX_ROWS rows: retry with a coarser threshold."""


@dataclass(frozen=True)
class FlatMap:
    """A flat map folded into NUNIQ rows.

    Attributes
    ----------
    uniq
        NUNIQ indices (int64).
    prob
        Probability in each row (dimensionless, as the file states it; not renormalized).
    header
        The table's astropy ``Header`` (for descriptive cards).
    notes
        What was read and how it was folded, for a person.
    """

    uniq: np.ndarray
    prob: np.ndarray
    header: Any
    notes: tuple[str, ...]


class _Inflow:
    """Bytes of a FITS file read forward, from memory or inflated from gzip under a cap."""

    def __init__(self, data: bytes, gzipped: bool, limit: int) -> None:
        self._data = memoryview(data)
        self._gz = zlib.decompressobj(16 + zlib.MAX_WBITS) if gzipped else None
        self._pending = b""
        self._pos = 0  # bytes handed out so far (decompressed offset)
        self._in = 0  # compressed bytes fed so far
        self.limit = limit

    @property
    def pos(self) -> int:
        return self._pos

    def read(self, n: int) -> bytes:
        """Up to ``n`` bytes (fewer only at the end of the file)."""
        allowed = self.limit - self._pos
        out = self._fetch(min(n, allowed + 1))
        if len(out) > allowed:
            raise HostileInput(f"sky map expands beyond the {self.limit}-byte size its FITS "
                               "header declares")
        return out

    def _fetch(self, n: int) -> bytes:
        if self._gz is None:
            out = bytes(self._data[self._pos:self._pos + n])
            self._pos += len(out)
            return out
        parts = [self._pending[:n]]
        self._pending = self._pending[n:]
        have = len(parts[0])
        while have < n and not self._gz.eof:
            tail = self._gz.unconsumed_tail
            if not tail:
                if self._in >= len(self._data):
                    break
                tail = bytes(self._data[self._in:self._in + (1 << 20)])
                self._in += len(tail)
            try:
                piece = self._gz.decompress(tail, n - have)
            except zlib.error as exc:
                raise MalformedInput(f"sky map gzip is corrupt: {exc}") from exc
            parts.append(piece)
            have += len(piece)
        parts = [p for p in parts if p]
        # One piece is the usual case: hand it over without a copy of 8 MB.
        out = parts[0] if len(parts) == 1 else b"".join(parts)
        self._pos += len(out)
        return out

    def exact(self, n: int, what: str) -> bytes:
        out = self.read(n)
        if len(out) < n:
            raise MalformedInput(f"sky map FITS is truncated in the {what}")
        return out

    def skip(self, n: int, what: str) -> None:
        while n > 0:
            step = min(n, _INFLATE_PIECE)
            self.exact(step, what)
            n -= step

    def drain(self) -> None:
        """Read to the end, so that a payload longer than declared is caught by the cap."""
        while len(self.read(_INFLATE_PIECE)) > 0:
            pass
        if self._gz is not None and not self._gz.eof:
            raise MalformedInput("sky map gzip is truncated")


def _padded(n: int) -> int:
    return -(-n // _BLOCK) * _BLOCK


def _header(flow: _Inflow, consumed: int = 0) -> tuple[bytes, dict[str, str]]:
    """Raw header blocks and their keyword -> raw value text, up to END.

    ``consumed`` bytes of the first block were already read (the SIMPLE check).
    """
    blocks: list[bytes] = []
    cards: dict[str, str] = {}
    first = b"SIMPLE  ="[:consumed]
    for _ in range(_MAX_HEADER_BLOCKS):
        block = first + flow.read(_BLOCK - len(first))
        first = b""
        if not block:
            raise _Fallback  # end of file before a map: the whole-file reader explains
        if len(block) < _BLOCK:
            raise MalformedInput("sky map FITS is truncated in a header")
        blocks.append(block)
        for i in range(0, _BLOCK, _CARD):
            card = block[i:i + _CARD].decode("ascii", "replace")
            key = card[:8].strip()
            if key == "END":
                return b"".join(blocks), cards
            if card[8:10] == "= " and key not in cards:
                cards[key] = card[10:]
    raise HostileInput(f"sky map FITS header runs past {_MAX_HEADER_BLOCKS} blocks")


def _value(cards: dict[str, str], key: str, default: Any = None) -> Any:
    """A card's value: int, float, bool or stripped string (comments removed)."""
    raw = cards.get(key)
    if raw is None:
        return default
    raw = raw.strip()
    if raw.startswith("'"):
        end = raw.find("'", 1)
        while end != -1 and raw[end + 1:end + 2] == "'":  # '' is an escaped quote
            end = raw.find("'", end + 2)
        return raw[1:end if end != -1 else None].replace("''", "'").strip()
    raw = raw.split("/", 1)[0].strip()
    if raw in ("T", "F"):
        return raw == "T"
    try:
        return int(raw)
    except ValueError:
        try:
            return float(raw.replace("D", "E"))
        except ValueError:
            return raw


def _int(cards: dict[str, str], key: str, default: int | None = None) -> int:
    value = _value(cards, key, default)
    if not isinstance(value, int) or isinstance(value, bool):
        raise _Fallback  # unparsable layout: let astropy say what is wrong
    return value


def _data_bytes(cards: dict[str, str]) -> int:
    """Size of an HDU's data (FITS standard 4.4.1.1), bytes, unpadded."""
    naxis = _int(cards, "NAXIS", 0)
    if naxis == 0:
        return 0
    size = abs(_int(cards, "BITPIX", 8)) // 8
    for k in range(1, naxis + 1):
        size *= _int(cards, f"NAXIS{k}")
    return (size + _int(cards, "PCOUNT", 0)) * _int(cards, "GCOUNT", 1)


@dataclass(frozen=True)
class _Column:
    name: str
    code: str
    repeat: int
    offset: int
    unit: str


def _columns(cards: dict[str, str]) -> tuple[list[_Column], int]:
    """Binary-table columns and the row width they add up to (bytes)."""
    out: list[_Column] = []
    offset = 0
    for k in range(1, _int(cards, "TFIELDS", 0) + 1):
        match = _TFORM.match(str(_value(cards, f"TFORM{k}", "")))
        if match is None:
            raise _Fallback
        repeat = int(match.group(1) or 1)
        code = match.group(2)
        width = (repeat + 7) // 8 if code == "X" else repeat * _WIDTHS[code]
        out.append(_Column(str(_value(cards, f"TTYPE{k}", "")).strip().upper(), code, repeat,
                           offset, str(_value(cards, f"TUNIT{k}", "") or "").strip()))
        offset += width
    return out, offset


def read_flat(data: bytes, *, gzipped: bool, max_bytes: int,
              density_factor: Callable[[str], float]) -> FlatMap:
    """Read a flat HEALPix FITS map, streaming, into NUNIQ rows of probability.

    Parameters
    ----------
    data
        The FITS file or its gzip, bytes.
    gzipped
        Whether ``data`` is gzip.
    max_bytes
        Cap on bytes inflated before the map's own header is read (primary
        HDU, other HDUs), bytes; the map itself is capped by its header.
    density_factor
        A ``PROBDENSITY`` column's TUNIT -> factor to sr^-1 (raising
        MalformedInput for units that are no density).

    Returns
    -------
    FlatMap

    Raises
    ------
    HostileInput
        Implausible NSIDE, a header whose row count does not fit it, a
        payload inflating past the declared size.
    MalformedInput
        Truncated or corrupt data, unusable columns.
    _Fallback
        (Module-private) not a flat HEALPix map: use the whole-file reader.
    """
    eps = EPS_REL
    rescaled = False
    for _ in range(8):
        try:
            flat = _read_once(data, gzipped, max_bytes, eps, density_factor)
        except _TooDetailed:
            eps *= 64.0
            continue
        total = float(np.sum(flat.prob, where=np.isfinite(flat.prob) & (flat.prob > 0)))
        # eps assumed the map sums to ~1 (PROB columns do); one that sums far lower was folded
        # too coarsely for its scale, so read again with the threshold relative to its total.
        if not rescaled and 0 < total < 0.25 and eps == EPS_REL:
            eps, rescaled = EPS_REL * total, True
            continue
        return flat
    raise HostileInput("flat sky map stays too detailed to fold into bounded memory")


def _read_once(data: bytes, gzipped: bool, max_bytes: int, eps: float,
               density_factor: Callable[[str], float]) -> FlatMap:
    flow = _Inflow(data, gzipped, max_bytes)
    try:
        found = _find_flat_table(flow)
    except (MalformedInput, HostileInput) as exc:
        # Until a flat table is found this is no flat map: the whole-file reader gives the
        # reasons it always gave (not FITS, truncated, over the limit).
        raise _Fallback from exc
    return _read_table(flow, *found, eps, density_factor)


def _find_flat_table(flow: _Inflow
                     ) -> tuple[bytes, dict[str, str], list[_Column], int, str]:
    """Header blocks, cards, columns, row width and ORDERING of the first flat HEALPix table."""
    if flow.read(9) != b"SIMPLE  =":
        raise _Fallback
    _, cards = _header(flow, 9)
    flow.skip(_padded(_data_bytes(cards)), "primary data")
    for _ in range(_MAX_HDUS):
        raw, cards = _header(flow)
        size = _data_bytes(cards)
        ordering = str(_value(cards, "ORDERING", "")).upper()
        if str(_value(cards, "XTENSION", "")).upper() == "BINTABLE" and ordering in (
                "RING", "NESTED", "NUNIQ"):
            columns, width = _columns(cards)
            names = [c.name for c in columns]
            if ordering == "NUNIQ" or "UNIQ" in names:
                raise _Fallback  # multi-order: small, the whole-file reader handles it
            return raw, cards, columns, width, ordering
        flow.skip(_padded(size), "data of another HDU")
    raise _Fallback


def _read_table(flow: _Inflow, raw: bytes, cards: dict[str, str], columns: list[_Column],
                width: int, ordering: str, eps: float,
                density_factor: Callable[[str], float]) -> FlatMap:
    """Stream a flat table's rows and fold them (the header is read, the rows are next)."""
    from astropy.io import fits

    rows = _int(cards, "NAXIS2")
    if _int(cards, "NAXIS1") != width or rows < 0:
        raise HostileInput(f"flat sky map header gives rows of {_int(cards, 'NAXIS1')} bytes, "
                           f"its columns {width}")
    pcount = _int(cards, "PCOUNT", 0)
    if not 0 <= pcount <= _TRAILER_BYTES:
        raise HostileInput(f"flat sky map declares a heap of {pcount} bytes")
    names = [c.name for c in columns]
    explicit = str(_value(cards, "INDXSCHM", "IMPLICIT")).upper() == "EXPLICIT"
    value_col = next((c for c in columns if c.name in _PROB_COLUMNS), None)
    per_sr = value_col is None
    if value_col is None:
        value_col = next((c for c in columns if c.name == "PROBDENSITY"), None)
    if value_col is None:
        raise MalformedInput(f"flat sky map needs a PROB, PROBABILITY or PROBDENSITY column, "
                             f"has {names}")
    if value_col.code not in "EDIJK" or any(
            f"{k}{columns.index(value_col) + 1}" in cards for k in ("TSCAL", "TZERO")):
        raise MalformedInput(f"flat sky map column {value_col.name} is {value_col.code!r}, "
                             "not plain numbers")
    pixel_col = next((c for c in columns if c.name in ("PIXEL", "PIX", "IPIX")), None)
    if explicit and (pixel_col is None or pixel_col.code not in "IJK"
                     or pixel_col.repeat != value_col.repeat):
        raise MalformedInput(f"explicitly indexed flat sky map needs an integer PIXEL column "
                             f"matching its values, has {names}")
    nside = _value(cards, "NSIDE")
    values = rows * value_col.repeat
    if nside is None and not explicit:
        nside = round(math.sqrt(values / 12))
    if not isinstance(nside, int) or not 1 <= nside <= MAX_NSIDE or nside & (nside - 1):
        raise HostileInput(f"flat sky map NSIDE {nside!r} is not a power of 2 up to {MAX_NSIDE}")
    npix = 12 * nside * nside
    if (values > npix) if explicit else (values != npix):
        raise HostileInput(f"flat sky map header declares {rows} rows of {value_col.repeat} "
                           f"values, which does not fit NSIDE {nside} ({npix} pixels)")
    if width * rows + pcount > MAX_TABLE_BYTES:
        raise HostileInput(f"flat sky map declares a {width * rows + pcount}-byte table, over "
                           f"the {MAX_TABLE_BYTES}-byte limit ({width} bytes a row)")
    # From here the header has fixed the size: the rest of the stream may hold the table,
    # its padding and a little more, nothing beyond.
    flow.limit = flow.pos + _padded(width * rows + pcount) + _TRAILER_BYTES
    order = nside.bit_length() - 1
    # Fold probabilities per pixel, so a density column becomes one (times pixel area, sr).
    area_sr = (math.pi / 3.0) / 4.0 ** order
    factor = density_factor(value_col.unit) * area_sr if per_sr else 1.0
    # Out-of-order rows cost ~8 arrays per row in ring2nest and sorting: smaller blocks.
    piece = _INFLATE_PIECE if ordering == "NESTED" and not explicit else _INFLATE_PIECE // 4
    blocks = _row_blocks(flow, rows, width, value_col, pixel_col if explicit else None, piece)
    if ordering == "NESTED" and not explicit:
        uniq, prob = _fold_stream((v for _, v in blocks), order, eps * 1.0 / factor)
        prob = prob * factor
    else:
        uniq, prob = _fold_scattered(blocks, nside, ordering == "RING", explicit, factor, eps)
    flow.skip(_padded(width * rows + pcount) - width * rows, "table padding")
    flow.drain()
    header = fits.Header.fromstring(raw.decode("ascii", "replace"))
    how = "RING" if ordering == "RING" else "NESTED"
    notes = (f"flat {how} map, nside {nside}{', explicit pixels' if explicit else ''}: read "
             f"streaming as {uniq.size} multi-order pixels (siblings folded when equal or "
             f"together under {eps:.1g} of the probability)",)
    return FlatMap(uniq, prob, header, notes)


def _row_blocks(flow: _Inflow, rows: int, width: int, value: _Column, pixel: _Column | None,
                piece: int) -> Iterator[tuple[np.ndarray | None, np.ndarray]]:
    """(pixel indices or None, values as float64) per block of about ``piece`` bytes of rows."""
    per_block = max(1, piece // max(width, 1))
    names, formats, offsets = ["v"], [_dtype(value)], [value.offset]
    if pixel is not None:
        names.append("p")
        formats.append(_dtype(pixel))
        offsets.append(pixel.offset)
    # Only the wanted columns, at their offsets: the other bytes of each row are never copied.
    dtype = np.dtype({"names": names, "formats": formats, "offsets": offsets,
                      "itemsize": width})
    done = 0
    while done < rows:
        n = min(per_block, rows - done)
        table = np.frombuffer(flow.exact(n * width, "table"), dtype=dtype, count=n)
        vals = table["v"].astype(np.float64).ravel()
        pix = table["p"].astype(np.int64).ravel() if pixel is not None else None
        done += n
        yield pix, vals


def _dtype(col: _Column) -> str:
    kind = {"I": ">i2", "J": ">i4", "K": ">i8", "E": ">f4", "D": ">f8"}[col.code]
    return f"({col.repeat},){kind}" if col.repeat > 1 else kind


class _Rows:
    """The NUNIQ rows folded so far; a map still finer than :data:`MAX_ROWS` is too detailed."""

    def __init__(self, order: int, levels: int, eps: float) -> None:
        self.order, self.levels, self.eps = order, levels, eps
        self.uniq: list[np.ndarray] = []
        self.prob: list[np.ndarray] = []
        self.kept = 0

    def fold(self, buffer: np.ndarray, root: int) -> None:
        """Fold the aligned run of pixels under NESTED ``root`` (at order - levels)."""
        u, p = coarsen(buffer, self.order, root, self.levels, self.eps)
        self.uniq.append(u)
        self.prob.append(p)
        self.kept += u.size
        if self.kept > MAX_ROWS:
            raise _TooDetailed

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        return np.concatenate(self.uniq), np.concatenate(self.prob)


def _fold_stream(values: Iterator[np.ndarray], order: int, eps: float
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Fold NESTED pixel values arriving in order into NUNIQ rows, an aligned chunk at a time."""
    levels = min(order, _CHUNK_LEVELS)
    chunk = 4 ** levels
    buffer = np.empty(chunk, dtype=np.float64)
    fill = 0
    root = 0  # NESTED index, at order - levels, of the chunk being filled
    rows = _Rows(order, levels, eps)
    for block in values:
        block = np.asarray(block, dtype=np.float64)
        while block.size:
            take = min(chunk - fill, block.size)
            buffer[fill:fill + take] = block[:take]
            block = block[take:]
            fill += take
            if fill == chunk:
                rows.fold(buffer, root)
                root += 1
                fill = 0
    if fill:
        raise MalformedInput("flat sky map ends inside a pixel group")
    return rows.result()


def _fold_scattered(blocks: Iterator[tuple[np.ndarray | None, np.ndarray]], nside: int,
                    ring: bool, explicit: bool, factor: float, eps: float
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Fold pixels arriving out of NESTED order (RING rows, explicit PIXEL) into NUNIQ rows.

    Each pixel goes to the buffer of its NESTED ancestor ``_SCATTER_LEVELS``
    orders up, which is folded and freed once all its pixels have come.  RING
    rows run north to south, so only the ancestors the current rings cross
    are open at once (about 64 of 4**8 pixels, 33 MB, at nside 2048); an
    explicit map may list pixels in any order, so its buffers wait for the end.
    """
    import healpy

    order = nside.bit_length() - 1
    npix = 12 * nside * nside
    levels = min(order, _SCATTER_LEVELS)
    size = 4 ** levels
    open_: dict[int, tuple[np.ndarray, list[int]]] = {}
    rows = _Rows(order, levels, eps)

    def fold(root: int) -> None:
        rows.fold(open_.pop(root)[0], root)

    start = 0
    for pix, vals in blocks:
        if pix is None:
            pix = np.arange(start, start + vals.size, dtype=np.int64)
            start += vals.size
        elif pix.size and (int(pix.min()) < 0 or int(pix.max()) >= npix):
            raise MalformedInput(f"flat sky map PIXEL index outside 0..{npix - 1}")
        nest = np.asarray(healpy.ring2nest(nside, pix), dtype=np.int64) if ring else pix
        by_nest = np.argsort(nest)
        nest = nest[by_nest]
        vals = vals[by_nest] * factor
        roots, first = np.unique(nest >> (2 * levels), return_index=True)
        bounds = [*first.tolist(), nest.size]
        for k, root in enumerate(roots.tolist()):
            lo, hi = bounds[k], bounds[k + 1]
            if root not in open_:
                open_[root] = (np.zeros(size, dtype=np.float64), [0])
            buffer, filled = open_[root]
            buffer[nest[lo:hi] - (root << (2 * levels))] = vals[lo:hi]
            filled[0] += hi - lo
            if filled[0] == size and not explicit:
                fold(root)
    for root in sorted(open_):
        fold(root)  # explicit maps (unlisted pixels are 0) and any the rows left incomplete
    return rows.result()


def coarsen(prob: np.ndarray, order: int, root: int, levels: int, eps: float
            ) -> tuple[np.ndarray, np.ndarray]:
    """Fold one aligned run of NESTED pixels into NUNIQ rows.

    Parameters
    ----------
    prob
        Probability of the ``4**levels`` pixels at ``order`` under one pixel
        ``root`` of order ``order - levels``, in NESTED order (dimensionless).
    order
        HEALPix order of ``prob``'s pixels.
    root
        NESTED index of their common ancestor at ``order - levels``.
    levels
        How many orders up the run may fold (the ancestor at most).
    eps
        Groups of four siblings holding together less than this fold even
        when unequal (same unit as ``prob``).

    Returns
    -------
    uniq, prob
        NUNIQ indices (int64) and the probability of each (float64), the
        probability summed over what each row covers.
    """
    val = np.asarray(prob, dtype=np.float64)
    whole = np.ones(val.size, dtype=bool)  # pixel is one row, not yet split
    first = root << (2 * levels)
    out_u: list[np.ndarray] = []
    out_p: list[np.ndarray] = []
    for level in range(levels):
        o = order - level
        # Siblings as four strided views: reductions over a trailing axis of 4 are ~5x slower.
        a, b, c, d = val[0::4], val[1::4], val[2::4], val[3::4]
        total = (a + b) + (c + d)
        hi = np.maximum(np.maximum(a, b), np.maximum(c, d))
        lo = np.minimum(np.minimum(a, b), np.minimum(c, d))
        # Comparisons with NaN are False, and lo >= 0 keeps negatives visible: neither folds.
        fold = (whole[0::4] & whole[1::4] & whole[2::4] & whole[3::4] & (lo >= 0)
                & ((hi - lo <= _SAME_RTOL * hi) | (total < eps)))
        idx = np.nonzero(whole & ~np.repeat(fold, 4))[0]
        out_u.append(first + idx + 4 * (1 << (2 * o)))
        out_p.append(val[idx])
        val, whole, first = total, fold, first >> 2
    o = order - levels
    idx = np.nonzero(whole)[0]
    out_u.append(first + idx + 4 * (1 << (2 * o)))
    out_p.append(val[idx])
    return np.concatenate(out_u).astype(np.int64), np.concatenate(out_p)
