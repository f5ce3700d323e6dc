"""Flat LVK-style HEALPix FITS maps written from the real multi-order samples, streaming.

The flat maps LVK published (``bayestar.fits.gz`` at nside 1024, GW170817 at
nside 2048) are what ligo.skymap's rasterizer makes of a multi-order map: each
NESTED pixel at the flat order takes the density of the multi-order pixel
holding it, times its own area, as ``PROB``, with ``DISTMU``, ``DISTSIGMA`` and
``DISTNORM`` copied alongside; one BINTABLE of float64 columns, one pixel a row,
``INDXSCHM = 'IMPLICIT'``.  This writes the same layout a block of pixels at a
time (an nside-2048 map is 1.6 GB of rows: it is never held whole), gzipped or
not, NESTED or RING.  Shared by the tests and ``bench.flatmap_bench``.
"""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np

SAMPLES = Path(__file__).resolve().parent.parent.parent / "shared" / "samples" / "lvk"
LVK_COLUMNS = ("PROB", "DISTMU", "DISTSIGMA", "DISTNORM")
_BLOCK_PIXELS = 1 << 20


def write_flat(source: Path, out: Path, nside: int, *, ordering: str = "NESTED",
               columns: tuple[str, ...] = LVK_COLUMNS, gzipped: bool = True) -> Path:
    """Rasterize a multi-order FITS map to a flat map file.

    Parameters
    ----------
    source
        Multi-order (UNIQ/PROBDENSITY in sr^-1) FITS file.
    out
        File to write.
    nside
        Flat resolution (power of 2).
    ordering
        ``"NESTED"`` or ``"RING"``: the order rows are written in.
    columns
        ``PROB`` (probability per pixel) and any of the distance columns.
    gzipped
        Write gzip (level 1: fast) rather than plain FITS.

    Returns
    -------
    Path
        ``out``.
    """
    import healpy
    from astropy.io import fits

    with fits.open(source) as hdus:
        table = hdus[1]
        uniq = np.asarray(table.data["UNIQ"], dtype=np.int64)
        cols = {"PROB": np.asarray(table.data["PROBDENSITY"], dtype=np.float64)}
        for name in columns[1:]:
            cols[name] = np.asarray(table.data[name], dtype=np.float64)
        meta = {k: table.header[k] for k in ("OBJECT", "DISTMEAN", "DISTSTD")
                if k in table.header}
    order = np.floor(np.log2(uniq / 4) / 2).astype(np.int64)
    start29 = (uniq - 4 * 4**order) << (2 * (29 - order))
    by_start = np.argsort(start29)
    start29 = start29[by_start]
    m = nside.bit_length() - 1
    npix = 12 * nside * nside
    pixarea = healpy.nside2pixarea(nside)

    hdu = fits.BinTableHDU.from_columns(
        [fits.Column(name=c, format="D", unit={"PROB": "pix-1", "DISTNORM": "Mpc-2"}.get(c, "Mpc"),
                     array=np.zeros(1)) for c in columns])
    head = hdu.header
    head["NAXIS2"] = npix
    head.update({"PIXTYPE": "HEALPIX", "ORDERING": ordering, "COORDSYS": "C", "NSIDE": nside,
                 "INDXSCHM": "IMPLICIT", "CREATOR": "mmbroker-tests", **meta})
    dtype = np.dtype([(c, ">f8") for c in columns])
    row_bytes = dtype.itemsize
    packer = zlib.compressobj(1, zlib.DEFLATED, 16 + zlib.MAX_WBITS) if gzipped else None
    with out.open("wb") as fh:
        def put(data: bytes) -> None:
            fh.write(packer.compress(data) if packer is not None else data)

        put(fits.PrimaryHDU().header.tostring().encode("ascii"))
        put(head.tostring().encode("ascii"))
        for first in range(0, npix, _BLOCK_PIXELS):
            pix = np.arange(first, min(first + _BLOCK_PIXELS, npix), dtype=np.int64)
            nest = pix if ordering == "NESTED" else np.asarray(healpy.ring2nest(nside, pix))
            row = by_start[np.searchsorted(start29, nest << (2 * (29 - m)), side="right") - 1]
            block = np.empty(pix.size, dtype=dtype)
            for c in columns:
                block[c] = cols[c][row] * (pixarea if c == "PROB" else 1.0)
            put(block.tobytes())
        put(b"\0" * (-(npix * row_bytes) % 2880))
        if packer is not None:
            fh.write(packer.flush())
    return out
