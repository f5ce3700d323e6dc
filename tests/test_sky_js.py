"""The sky view's projection math (``broker/web/static/sky.js``) run where it runs: in headless
Chromium, the module served from the package by a routed origin (no server process),
checked against matplotlib's Mollweide transform and astropy's Galactic frame."""

from __future__ import annotations

import math
from collections.abc import Iterator
from importlib import resources
from typing import Any

import numpy as np
import pytest

from tests.dashboard_support import REQUIRE_BROWSER, browser_missing, chromium_page

ORIGIN = "http://sky.test"


@pytest.fixture(scope="module")
def sky_js() -> Iterator[Any]:
    """A function running an expression with ``sky`` (the imported module) in Chromium."""
    reason = browser_missing()
    if reason is not None:
        if REQUIRE_BROWSER:
            pytest.fail(f"MMBROKER_REQUIRE_BROWSER=1 but {reason}", pytrace=False)
        pytest.skip(reason)
    static = resources.files("broker.web").joinpath("static")

    def serve(route: Any) -> None:
        name = route.request.url.removeprefix(ORIGIN + "/static/")
        if route.request.url == ORIGIN + "/":
            route.fulfill(body="<!doctype html><title>sky</title>", content_type="text/html")
        elif static.joinpath(name).is_file():
            route.fulfill(body=static.joinpath(name).read_text(),
                          content_type="text/javascript")
        else:
            route.fulfill(status=404, body="")

    with chromium_page() as (page, errors):
        page.route(ORIGIN + "/**", serve)
        page.goto(ORIGIN + "/")
        page.evaluate("async () => { window.sky = await import('/static/sky.js'); }")

        def run(expression: str, arg: Any = None) -> Any:
            return page.evaluate(f"(arg) => {{ const sky = window.sky; return {expression}; }}",
                                 arg)

        yield run
        assert errors == []


def test_mollweide_forward_matches_known_points_and_matplotlib(sky_js: Any) -> None:
    from matplotlib.projections.geo import MollweideAxes

    r2 = math.sqrt(2)
    known = {(0.0, 0.0): (0.0, 0.0), (math.pi, 0.0): (2 * r2, 0.0),
             (-math.pi, 0.0): (-2 * r2, 0.0), (0.0, math.pi / 2): (0.0, r2),
             (1.0, -math.pi / 2): (0.0, -r2)}
    for (lon, lat), want in known.items():
        got = sky_js("sky.mollweide(arg[0], arg[1])", [lon, lat])
        assert got == pytest.approx(want, abs=1e-9), (lon, lat)
    rng = np.random.default_rng(19)
    lon = rng.uniform(-math.pi, math.pi, 200)
    lat = np.arcsin(rng.uniform(-1, 1, 200))
    ours = np.array(sky_js("arg.map(([l, b]) => sky.mollweide(l, b))",
                           np.column_stack([lon, lat]).tolist()))
    # Reference: 2 theta + sin 2 theta = pi sin(lat) solved by bisection to 1e-14.
    lo_t, hi_t = np.full(lat.size, -math.pi / 2), np.full(lat.size, math.pi / 2)
    for _ in range(60):
        mid = (lo_t + hi_t) / 2
        low = 2 * mid + np.sin(2 * mid) < math.pi * np.sin(lat)
        lo_t, hi_t = np.where(low, mid, lo_t), np.where(low, hi_t, mid)
    theta = (lo_t + hi_t) / 2
    exact = np.column_stack([2 * r2 / math.pi * lon * np.cos(theta), r2 * np.sin(theta)])
    assert np.allclose(ours, exact, atol=1e-9)
    # matplotlib's own Mollweide (same units; its iteration stops early: up to 8e-4 off here).
    theirs = MollweideAxes.MollweideTransform(1).transform(np.column_stack([lon, lat]))
    assert np.allclose(ours, theirs, atol=2e-3)


def test_right_ascension_increases_to_the_left(sky_js: Any) -> None:
    x90, y90 = sky_js("sky.project(90, 20)")
    x270, y270 = sky_js("sky.project(270, 20)")
    assert x90 < 0 < x270 and y90 == pytest.approx(y270)
    assert sky_js("sky.project(0, 0)") == pytest.approx([0, 0], abs=1e-9)
    assert sky_js("sky.project(10, 0)")[0] < 0 < sky_js("sky.project(350, 0)")[0]
    # North up on the screen (SVG y grows downwards).
    assert sky_js("sky.project(0, 60)")[1] < 0 < sky_js("sky.project(0, -60)")[1]
    # RA 180 is both edges: just below it on the left, just above on the right.
    left, right = sky_js("[sky.project(179.99, 0)[0], sky.project(180.01, 0)[0]]")
    assert left == pytest.approx(-2 * math.sqrt(2) * 100, rel=1e-3) and right == -left


def test_a_small_circle_is_closed_and_at_its_radius(sky_js: Any) -> None:
    from astropy import units as u
    from astropy.coordinates import SkyCoord

    for ra, dec, r in ((197.4, -23.4, 9.5), (10.0, 88.0, 5.0), (359.0, 0.0, 3.0),
                       (120.0, -40.0, 0.05)):
        points = np.array(sky_js("sky.smallCircle(...arg)", [ra, dec, r]))
        assert len(points) == 73 and np.allclose(points[0], points[-1])
        sep = SkyCoord(points[:, 0] * u.deg, points[:, 1] * u.deg).separation(
            SkyCoord(ra * u.deg, dec * u.deg)).deg
        assert np.allclose(sep, r, atol=1e-6), (ra, dec, r)


def test_an_outline_across_ra_180_is_split_at_the_edge(sky_js: Any) -> None:
    runs = sky_js("sky.splitWrap(sky.smallCircle(179.0, 10.0, 4.0))")
    assert len(runs) == 3  # starts on the left, crosses, comes back: left, right, left
    a, b = 2 * math.sqrt(2) * 100, math.sqrt(2) * 100
    ends = [runs[0][-1], runs[1][0], runs[1][-1], runs[2][0]]
    for x, y in ends:
        assert (x / a) ** 2 + (y / b) ** 2 == pytest.approx(1.0, abs=1e-4)  # on the edge
    assert runs[1][0][0] > 0 and runs[0][-1][0] < 0
    # The two ends at one crossing are at the same declination (mirror images).
    assert runs[0][-1][1] == pytest.approx(runs[1][0][1], abs=1e-6)
    # An outline away from the edge stays one closed run.
    one = sky_js("sky.splitWrap(sky.smallCircle(0, 0, 10))")
    assert len(one) == 1 and one[0][0] == pytest.approx(one[0][-1])


def test_the_galactic_plane_matches_astropy(sky_js: Any) -> None:
    from astropy import units as u
    from astropy.coordinates import SkyCoord

    plane = np.array(sky_js("sky.galacticPlane(36)"))
    l_deg = np.linspace(0, 360, 37)
    ref = SkyCoord(l=l_deg * u.deg, b=np.zeros(37) * u.deg, frame="galactic").icrs
    ours = SkyCoord(plane[:, 0] * u.deg, plane[:, 1] * u.deg)
    assert np.all(ours.separation(ref).arcsec < 2.0)
    centre = sky_js("sky.galacticToIcrs(0, 0)")
    assert centre == pytest.approx([266.405, -28.936], abs=0.01)
    pole = sky_js("sky.galacticToIcrs(123, 90)")
    assert pole[1] == pytest.approx(27.128, abs=0.01)
