"""The dashboard's all-sky view, server side: the 90% credible-region contour traced from a
stored HEALPix map, and ``/dashboard/sky`` on both backends with the API's data-rights rule.
(The drawing and its projection math run in Chromium: ``test_sky_js.py`` and
``test_dashboard_e2e.py``.)"""

from __future__ import annotations

import itertools
import json
import math
import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from broker import demo
from broker.archive.store import Archive
from broker.config import get_settings
from broker.web.app import create_app
from broker.web.sky import MAX_CONTOUR_LINES, MAX_CONTOUR_POINTS, cached_contour, contour
from broker.web.tokens import create_token
from crossmatch.localization import SkyMap
from listeners.envelope import RawMessage
from tests.conftest import SAMPLES, ingest_demo

SAMPLE_DIR = Path(os.environ.get("MMBROKER_SAMPLES", SAMPLES))


def _separation_deg(ra: np.ndarray, dec: np.ndarray, ra0: float, dec0: float) -> np.ndarray:
    from astropy import units as u
    from astropy.coordinates import SkyCoord

    return SkyCoord(ra * u.deg, dec * u.deg).separation(SkyCoord(ra0 * u.deg, dec0 * u.deg)).deg


def _on_boundary(sky: SkyMap, lines: list[list[list[float]]], radius_deg: float) -> None:
    """Every contour point has the region on one side and the rest of the sky on the other
    within ``radius_deg``: it outlines the 90% region, not some other shape."""
    levels = sky.credible_levels
    for line in lines:
        for ra, dec in line:
            bearings = np.linspace(0, 2 * np.pi, 16, endpoint=False)
            ring_dec = np.clip(dec + radius_deg * np.cos(bearings), -90, 90)
            ring_ra = (ra + radius_deg * np.sin(bearings) /
                       max(math.cos(math.radians(dec)), 0.05)) % 360
            rows = sky.rows_at(ring_ra, ring_dec)
            lv = np.where(rows >= 0, levels[np.clip(rows, 0, None)], 1.0)
            assert (lv < 0.9).any() and (lv >= 0.9).any(), (ra, dec)


def test_the_contour_of_a_gaussian_map_is_its_90_percent_circle() -> None:
    # A circular Gaussian of sigma 4 deg holds 90% within sigma * sqrt(-2 ln 0.1) = 8.58 deg.
    ra0, dec0, sigma = 197.45, -23.38, 4.0
    sky = SkyMap.from_fits(demo.gaussian_multiorder_fits(ra0, dec0, sigma))
    traced = contour(sky)
    assert len(traced["lines"]) == 1
    line = np.array(traced["lines"][0])
    assert (line[0] == line[-1]).all() and len(line) > 12  # closed, more than a polygon
    sep = _separation_deg(line[:, 0], line[:, 1], ra0, dec0)
    radius = sigma * math.sqrt(-2 * math.log(0.1))
    pixel = math.degrees(math.sqrt(4 * math.pi / (12 * 4 ** 6)))  # order 6: 0.92 deg
    assert np.all(np.abs(sep - radius) < pixel), (sep.min(), sep.max(), radius)
    assert traced["area_deg2"] == pytest.approx(sky.moc.area_deg2(0.9), rel=0.02)
    _on_boundary(sky, traced["lines"], 1.5)


def test_a_region_across_ra_180_is_cut_at_the_edge_of_the_view() -> None:
    sky = SkyMap.from_fits(demo.gaussian_multiorder_fits(179.0, 10.0, 3.0))
    lines = contour(sky)["lines"]
    assert len(lines) == 2  # one each side of the edge of the map (RA 180)
    for line in lines:
        ends = [line[0][0], line[-1][0]]
        assert all(abs(e - 180.0) < 0.01 for e in ends), ends
    ras = np.array([p[0] for line in lines for p in line])
    assert (ras < 180.01).any() and (ras > 179.99).any()
    assert ((ras > 170) & (ras < 190)).all()  # the short way round, never across RA 0
    _on_boundary(sky, lines, 1.5)


def test_a_region_around_a_pole_is_one_line_round_the_sky() -> None:
    sky = SkyMap.from_fits(demo.gaussian_multiorder_fits(30.0, 85.0, 3.0))
    lines = contour(sky)["lines"]
    decs = np.array([p[1] for line in lines for p in line])
    assert len(lines) == 1 and decs.min() > 75
    assert {round(p[0]) % 360 for p in lines[0]} >= {0, 90, 180, 270} or \
        np.ptp([p[0] for p in lines[0]]) > 300


@pytest.mark.parametrize("name", ["lvk/bayestar.multiorder.fits",
                                  "lvk/combined-ext.multiorder.fits",
                                  "voevents/gwcelery/fermi_skymap.fits.gz"])
def test_the_contour_of_a_real_sky_map(name: str) -> None:
    # LVK multi-order maps and a flat Fermi GBM map (nside 8, 1,400 deg2 around the south
    # pole), read in place: their licences keep them out of tests/data.
    path = SAMPLE_DIR / name
    if not path.exists():
        pytest.skip(f"shared sample {path} not present (CI has ../shared/samples; or set "
                    "MMBROKER_SAMPLES)")
    sky = SkyMap.from_fits(path.read_bytes())
    traced = contour(sky)
    lines = traced["lines"]
    assert 1 <= len(lines) <= MAX_CONTOUR_LINES
    assert sum(len(line) for line in lines) <= MAX_CONTOUR_POINTS
    assert traced["area_deg2"] == pytest.approx(sky.moc.area_deg2(0.9), rel=0.02)
    assert all(0 <= ra < 360 and -90 <= dec <= 90 for line in lines for ra, dec in line)
    _on_boundary(sky, lines, 3 * traced["step_deg"])
    if "lvk" not in name:
        return
    # The most probable position lies inside the outline (ray casting in RA, Dec; the LVK
    # samples' regions are away from RA 180 and the poles).
    ra0, dec0 = sky.moc.max_position()
    crossings = 0
    for line in lines:
        for (ra1, d1), (ra2, d2) in itertools.pairwise(line):
            if (d1 > dec0) != (d2 > dec0) and ra0 < ra1 + (dec0 - d1) * (ra2 - ra1) / (d2 - d1):
                crossings += 1
    assert crossings % 2 == 1


def test_a_contour_is_traced_once_per_sky_map() -> None:
    fits = demo.gaussian_multiorder_fits(10.0, 20.0, 2.5)
    import hashlib

    sha = hashlib.sha256(fits).hexdigest()
    loads: list[str] = []

    def load(s: str) -> bytes:
        loads.append(s)
        return fits

    from crossmatch import localization

    localization._skymap_cache.pop(sha, None)
    first = cached_contour(sha, load)
    localization._skymap_cache.pop(sha, None)  # the map cache may not save a second trace
    second = cached_contour(sha, load)
    assert first is second and loads == [sha]
    assert cached_contour("0" * 64, lambda s: None) is None
    # Bytes that are not the map the hash names: no lines, the reason, and no second parse.
    wrong: list[str] = []
    bad = cached_contour("1" * 64, lambda s: wrong.append(s) or fits)
    assert bad is not None and bad["lines"] == [] and "SHA-256" in bad["error"]
    assert cached_contour("1" * 64, lambda s: wrong.append(s) or fits) is bad
    assert wrong == ["1" * 64]


# -- the endpoint, both backends ------------------------------------------------------------


def _trigger(event_id: str, ra: float, dec: float, rights: dict[str, Any], *,
             hours_ago: float = 2.0) -> RawMessage:
    body = json.loads(resources.files("alerts_schema").joinpath(
        "examples", "trigger-track-single.example.json").read_text())
    t0 = datetime.now(UTC) - timedelta(hours=hours_ago)
    body.update(event_id=event_id, real=False, ra_deg=ra, dec_deg=dec, data_rights=rights,
                time=t0.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                sent_time=(t0 + timedelta(seconds=1)).strftime("%Y-%m-%dT%H:%M:%S.%fZ"))
    return RawMessage("detector", json.dumps(body).encode())


@pytest.fixture
def sky_world(archive: Archive) -> Iterator[tuple[TestClient, dict[str, str], dict[str, str]]]:
    from broker.runtime.assembly import make_pipeline

    ingest_demo(archive, embargoed_until="2099-01-01T00:00:00Z")
    pipeline = make_pipeline(get_settings(comet=False), archive, targets=[])
    past = (datetime.now(UTC) - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    for message in (_trigger("SKY-PROP", 40.0, 5.0, {"level": "proprietary"}),
                    _trigger("SKY-RELEASED", 300.0, -40.0,
                             {"level": "embargoed", "embargo_until": past}),
                    _trigger("SKY-FUTURE", 100.0, 0.0, {"level": "public"}, hours_ago=-24)):
        pipeline.ingest([message])
    tokens = {name: create_token(archive, name, scopes)[0] for name, scopes in
              (("bob", ["read:embargoed"]), ("admin", ["admin"]))}
    with archive.engine.connect() as conn:
        from sqlalchemy import select

        from broker.archive.models import AlertRow
        # Trigger event ids come back as "<detector>:<id>"; the demo's is DEMO-<time>.
        ivorns = {r.event_id.rpartition(":")[2]: r.ivorn
                  for r in conn.execute(select(AlertRow.event_id, AlertRow.ivorn))}
        ivorns["DEMO"] = next(v for k, v in ivorns.items() if k.startswith("DEMO-"))
    settings = get_settings(api_rate_limit_per_s=0, comet=False, live_poll_s=0.05)
    with TestClient(create_app(settings, archive=archive)) as client:
        yield client, tokens, ivorns


def test_the_sky_endpoint_shows_each_viewer_what_it_may_see(
        sky_world: tuple[TestClient, dict[str, str], dict[str, str]]) -> None:
    client, tokens, ivorns = sky_world
    embargoed, proprietary = ivorns["DEMO"], ivorns["SKY-PROP"]
    released = ivorns["SKY-RELEASED"]

    def sky(token: str | None = None, **params: Any) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        reply = client.get("/dashboard/sky", params=params, headers=headers)
        assert reply.status_code == 200, reply.text
        return reply.json()

    public = sky()
    text = json.dumps(public)
    seen = {a["ivorn"] for a in public["alerts"]}
    assert released in seen and len(seen) == 3  # GW, GBM and the released trigger
    assert ivorns["SKY-FUTURE"] not in text  # an event a day ahead is no part of the span
    assert embargoed not in text and proprietary not in text  # neither listed nor linked
    assert public["coincidences"], "the GW-GBM coincidence is public"
    for c in public["coincidences"]:
        assert set(c["member_ivorns"]) <= seen
    # Rows named by IVORN only: a database id would count the hidden rows between two.
    for row in (*public["alerts"], *public["coincidences"]):
        assert not {"id", "supersedes_id", "member_ids"} & row.keys(), row.keys()
    gw = next(a for a in public["alerts"] if a["messenger"] == "gravitational_wave")
    assert gw["loc_kind"] == "skymap" and gw["contour90"] and gw["area90_deg2"] > 100
    ring = np.array(gw["contour90"][0])
    sep = _separation_deg(ring[:, 0], ring[:, 1], *demo.CENTRE_DEG)
    assert np.all(np.abs(sep - 8.58) < 1.0)
    grb = next(a for a in public["alerts"] if a["messenger"] == "gamma_ray")
    assert grb["error_radius_deg"] > 1 and grb["contour90"] is None

    bob = sky(tokens["bob"])  # embargoed, not proprietary
    assert embargoed in json.dumps(bob) and proprietary not in json.dumps(bob)
    assert len(bob["coincidences"]) > len(public["coincidences"])
    admin = sky(tokens["admin"])
    assert {embargoed, proprietary, released} <= {a["ivorn"] for a in admin["alerts"]}

    # The span: the triggers' events are 2 h old, the demo's a minute.
    assert {a["ivorn"] for a in sky(tokens["admin"], hours=1)["alerts"]} & \
        {proprietary, released} == set()
    for bad in ({"hours": 0}, {"hours": 1000}, {"hours": "x"}, {"hours": "nan"}):
        assert client.get("/dashboard/sky", params=bad).status_code == 422


def test_the_page_carries_the_sky_view_and_its_default_span(
        sky_world: tuple[TestClient, dict[str, str], dict[str, str]]) -> None:
    client, _, _ = sky_world
    page = client.get("/").text
    assert 'id="sky-svg"' in page and '"sky_hours": 24.0' in page
    script = client.get("/static/sky.js")
    assert script.status_code == 200 and "export function mollweide" in script.text
    assert "http" not in script.text.replace("http://www.w3.org/2000/svg", "")  # no CDN
