"""Flat (single-resolution) LVK maps read streaming into multi-order maps (issue 16 item 12).

The flat maps are written from the real multi-order samples the way
ligo.skymap rasterizes them (tests/flatmap_support.py), once per session.
"""

from __future__ import annotations

import gzip
import io
import math
import tracemalloc
import zlib
from pathlib import Path

import healpy
import numpy as np
import pytest
from astropy.io import fits

from alerts_schema.errors import HostileInput, MalformedInput
from crossmatch.flatmap import coarsen
from crossmatch.localization import SkyMap, VonMisesFisher
from crossmatch.overlap import overlap
from crossmatch.skymap import read_multiorder
from tests.conftest import import_peer
from tests.flatmap_support import SAMPLES, write_flat

BAYESTAR = SAMPLES / "bayestar.multiorder.fits"
MS220722 = SAMPLES / "MS220722v_bayestar.multiorder.fits"

pytestmark = pytest.mark.skipif(not BAYESTAR.exists() or not MS220722.exists(),
                                reason="LVK samples absent")

# (source, nside, ordering, columns, gzipped): the nside-1024 LVK layout always; 2048 is slow.
CASES = {
    "bayestar-1024-nested-gz": (BAYESTAR, 1024, "NESTED", None, True),
    "ms220722v-512-ring-fits": (MS220722, 512, "RING", ("PROB",), False),
    "bayestar-2048-nested-gz": (BAYESTAR, 2048, "NESTED", None, True),
    "ms220722v-2048-ring-gz": (MS220722, 2048, "RING", ("PROB",), True),
}
SLOW = {"bayestar-2048-nested-gz", "ms220722v-2048-ring-gz"}


@pytest.fixture(scope="session")
def flat_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("flatmaps")


def _flat(flat_dir: Path, name: str) -> tuple[Path, Path]:
    source, nside, ordering, columns, gzipped = CASES[name]
    out = flat_dir / (name + (".fits.gz" if gzipped else ".fits"))
    if not out.exists():
        kwargs = {"columns": columns} if columns else {}
        write_flat(source, out, nside, ordering=ordering, gzipped=gzipped, **kwargs)
    return source, out


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW
                                  else n for n in CASES])
def test_flat_map_overlaps_like_its_multiorder_original(flat_dir: Path, name: str) -> None:
    source, path = _flat(flat_dir, name)
    original = read_multiorder(source.read_bytes())
    flat = read_multiorder(path.read_bytes())
    other_source = MS220722 if source == BAYESTAR else BAYESTAR
    other = SkyMap(read_multiorder(other_source.read_bytes()))
    # Equal siblings fold back: no more rows than the original, far fewer than the flat pixels.
    assert flat.n_pixels <= original.n_pixels
    assert any("streaming" in note for note in flat.notes)
    assert flat.meta["OBJECT"] == original.meta["OBJECT"]
    assert flat.area_deg2(0.9) == pytest.approx(original.area_deg2(0.9), rel=0.01)
    ra, dec = original.max_position()
    point = VonMisesFisher.from_radius(ra + 0.3, dec - 0.2, 0.05, 0.9)
    for probe in (point, other):
        want = overlap(SkyMap(original), probe, credible_level=None).integral
        got = overlap(SkyMap(flat), probe, credible_level=None).integral
        assert want > 0
        assert got == pytest.approx(want, rel=0.01)


def test_flat_map_matches_ligo_raven(flat_dir: Path) -> None:
    raven = import_peer("ligo.raven.search")
    _, path_a = _flat(flat_dir, "bayestar-1024-nested-gz")
    path_b = write_flat(MS220722, flat_dir / "ms220722v-1024-raven.fits.gz", 1024,
                        columns=("PROB",))
    # ligo-raven's own reading: the flat PROB arrays, NESTED, as healpy returns them.
    want = raven.skymap_overlap_integral(healpy.read_map(str(path_a), nest=True),
                                         healpy.read_map(str(path_b), nest=True),
                                         se_nested=True, ext_nested=True)
    ours = overlap(SkyMap(read_multiorder(path_a.read_bytes())),
                   SkyMap(read_multiorder(path_b.read_bytes())), credible_level=None)
    assert ours.integral == pytest.approx(want, rel=0.01)


@pytest.mark.parametrize("name", ["bayestar-1024-nested-gz", "ms220722v-512-ring-fits"])
def test_flat_read_memory_is_bounded(flat_dir: Path, name: str) -> None:
    _, path = _flat(flat_dir, name)
    data = path.read_bytes()
    tracemalloc.start()
    try:
        read_multiorder(data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # The nside-1024 table would be 403 MB (PROB alone 101 MB), a RING one gathered into a
    # NESTED array 101 MB; streaming holds a block, a chunk (RING: the open buffers), the result.
    assert peak < 80e6, f"peak {peak / 1e6:.0f} MB"  # measured 38 MB and 30 MB


def _header_bytes(nside: int, rows: int, *, columns: tuple[str, ...] = ("PROB",),
                  extra: dict[str, object] | None = None) -> bytes:
    hdu = fits.BinTableHDU.from_columns(
        [fits.Column(name=c, format="D", array=np.zeros(1)) for c in columns])
    hdu.header["NAXIS2"] = rows
    hdu.header.update({"PIXTYPE": "HEALPIX", "ORDERING": "NESTED", "NSIDE": nside,
                       "INDXSCHM": "IMPLICIT", **(extra or {})})
    return (fits.PrimaryHDU().header.tostring() + hdu.header.tostring()).encode("ascii")


def _gz_stream(*parts: bytes, zeros: int = 0) -> bytes:
    packer = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    out = [packer.compress(p) for p in parts]
    chunk = b"\0" * (1 << 20)
    for _ in range(zeros // len(chunk)):
        out.append(packer.compress(chunk))
    out.append(packer.flush())
    return b"".join(out)


def test_payload_inflating_past_its_header_is_hostile() -> None:
    nside = 64
    npix = 12 * nside**2
    prob = np.full(npix, 1.0 / npix).astype(">f8").tobytes()
    honest = _header_bytes(nside, npix) + prob + b"\0" * (-len(prob) % 2880)
    assert read_multiorder(gzip.compress(honest)).total_probability == pytest.approx(1.0)
    # The same map followed by 64 MB of zeros (64 kB gzipped): more than the header declares.
    bomb = _gz_stream(honest, zeros=64 << 20)
    assert len(bomb) < 1 << 20
    with pytest.raises(HostileInput, match="expands beyond"):
        read_multiorder(bomb)


@pytest.mark.parametrize(("nside", "rows", "reason"), [
    (16384, 12 * 16384**2, "not a power of 2 up to 8192"),
    (1000, 12 * 1000**2, "not a power of 2"),
    (0, 12, "not a power of 2"),
    (1024, 4 * 12 * 1024**2, "does not fit NSIDE 1024"),
    (1024, 12 * 1024**2 - 1, "does not fit NSIDE 1024"),
])
def test_implausible_headers_are_hostile(nside: int, rows: int, reason: str) -> None:
    # Only the header: a reader that believed it would inflate or allocate gigabytes.
    data = _gz_stream(_header_bytes(nside, rows), zeros=1 << 20)
    with pytest.raises(HostileInput, match=reason):
        read_multiorder(data)


def test_table_too_long_to_inflate_is_hostile() -> None:
    # A plausible NSIDE 8192 with LVK's four float64 columns: 25.8 GB to inflate.
    header = _header_bytes(8192, 12 * 8192**2, columns=("PROB", "DISTMU", "DISTSIGMA",
                                                        "DISTNORM"))
    with pytest.raises(HostileInput, match="byte limit"):
        read_multiorder(_gz_stream(header, zeros=1 << 20))


def _noise_map(nside: int, scale: float) -> bytes:
    rng = np.random.default_rng(7)
    prob = rng.uniform(0.5, 1.5, 12 * nside**2)
    prob *= scale / prob.sum()
    data = prob.astype(">f8").tobytes()
    return _header_bytes(nside, prob.size) + data + b"\0" * (-len(data) % 2880)


def test_detailed_map_folds_coarser_to_stay_under_the_row_cap(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import crossmatch.flatmap

    full = read_multiorder(_noise_map(64, 1.0))
    assert full.n_pixels == 12 * 64**2  # no two noise pixels are equal, none negligible
    monkeypatch.setattr(crossmatch.flatmap, "MAX_ROWS", 3000)
    capped = read_multiorder(_noise_map(64, 1.0))
    assert capped.n_pixels <= 3000
    assert capped.total_probability == pytest.approx(full.total_probability, rel=1e-12)


def test_unnormalized_map_is_folded_relative_to_its_total() -> None:
    # The same map summing to 1e-6: the 1e-9 threshold must scale, or every group would fold.
    tiny = read_multiorder(_noise_map(64, 1e-6))
    assert tiny.n_pixels == 12 * 64**2
    assert tiny.total_probability == pytest.approx(1e-6)


def test_truncated_flat_map_is_malformed() -> None:
    nside = 64
    npix = 12 * nside**2
    data = _header_bytes(nside, npix) + np.full(npix // 2, 1.0, dtype=">f8").tobytes()
    with pytest.raises(MalformedInput, match="truncated"):
        read_multiorder(gzip.compress(data))


def test_explicit_ring_map_with_density_column() -> None:
    nside = 64
    vmf = VonMisesFisher.from_radius(120.0, -30.0, 3.0, 0.9)
    ring = np.arange(12 * nside**2)
    vecs = np.array(healpy.pix2vec(nside, ring)).T
    dens = np.exp(vmf.log_density(vecs))
    keep = dens > 1e-12 * dens.max()  # a partial map: only the pixels that hold anything
    hdu = fits.BinTableHDU.from_columns([
        fits.Column(name="PIXEL", format="K", array=ring[keep]),
        fits.Column(name="PROBDENSITY", format="D", unit="deg-2",
                    array=dens[keep] / (180 / math.pi) ** 2)])
    hdu.header.update({"PIXTYPE": "HEALPIX", "ORDERING": "RING", "NSIDE": nside,
                       "INDXSCHM": "EXPLICIT", "COORDSYS": "C"})
    buf = io.BytesIO()
    fits.HDUList([fits.PrimaryHDU(), hdu]).writeto(buf)
    sky = read_multiorder(gzip.compress(buf.getvalue()))
    assert sky.total_probability == pytest.approx(1.0, rel=1e-3)
    assert sky.max_position() == pytest.approx((120.0, -30.0), abs=1.0)
    # Against the same pixels put in by hand, unfolded: the reader loses nothing that matters.
    direct = SkyMap.from_uniq(4 * 4**6 + healpy.ring2nest(nside, ring[keep]), dens[keep])
    got = overlap(SkyMap(sky), vmf, credible_level=None).integral
    want = overlap(direct, vmf, credible_level=None).integral
    assert got == pytest.approx(want, rel=1e-9)


def test_coarsen_folds_equal_and_negligible_siblings_only() -> None:
    # 16 pixels at order 2 under base pixel 1: 4 equal (fold), 4 tiny (fold), 2 groups kept.
    prob = np.array([0.1, 0.1, 0.1, 0.1,
                     1e-12, 2e-12, 0.0, 3e-12,
                     0.2, 0.1, 0.05, 0.05,
                     0.1, -1e-12, 0.1, 0.1])
    uniq, p = coarsen(prob, 2, 1, 2, eps=1e-9)
    order = np.floor(np.log2(uniq / 4) / 2).astype(int)
    assert sorted(order.tolist()) == [1, 1] + [2] * 8
    assert p.sum() == pytest.approx(prob.sum())
    assert -1e-12 in p  # a negative value stays visible for the reader to refuse or repair
    # All equal: one row, the base pixel itself.
    uniq, p = coarsen(np.full(16, 0.25), 2, 1, 2, eps=0.0)
    assert uniq.tolist() == [4 + 1] and p.tolist() == [4.0]


@pytest.mark.parametrize("nest", [True, False])
def test_healpy_written_map_with_1024_pixel_rows(tmp_path: Path, nest: bool) -> None:
    # healpy.write_map packs 1024 float32 pixels a row (TFORM 1024E): another real layout.
    nside = 128
    vmf = VonMisesFisher.from_radius(200.0, 40.0, 4.0, 0.9)
    vecs = np.array(healpy.pix2vec(nside, np.arange(12 * nside**2), nest=nest)).T
    prob = np.exp(vmf.log_density(vecs)) * healpy.nside2pixarea(nside)
    path = tmp_path / "map.fits.gz"
    healpy.write_map(str(path), prob.astype(np.float32), nest=nest, column_names=["PROB"],
                     coord="C", dtype=np.float32)
    sky = read_multiorder(path.read_bytes())
    pix = np.arange(prob.size)
    direct = SkyMap.from_uniq(4 * 4**7 + (pix if nest else healpy.ring2nest(nside, pix)),
                              prob.astype(np.float32) / healpy.nside2pixarea(nside))
    got = overlap(SkyMap(sky), vmf, credible_level=None).integral
    assert got == pytest.approx(overlap(direct, vmf, credible_level=None).integral, rel=1e-6)
    assert sky.n_pixels < prob.size / 2  # the far tail folded
