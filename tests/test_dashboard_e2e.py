"""The dashboard in real headless Chromium against a real running broker.

``mmbroker serve`` runs as its own process with a Kafka listener on a real
tansu broker and the built-in Comet; triggers are POSTed over HTTP and GRB
notices produced to Kafka, as in production.  Screenshots of the main and
a detail page go to ``test-artifacts/`` (not committed).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from tests.dashboard_support import (
    ARTIFACTS,
    REQUIRE_BROWSER,
    Broker,
    browser_missing,
    chromium_page,
    create_token,
    running_broker,
    scenario,
    wait_until,
)
from tests.servers import FAST_JOIN_ENV, produce, stop_tansu, tansu

GRB_TOPIC = "gcn.notices.fermi.gbm"


@pytest.fixture(autouse=True)
def _needs_browser() -> None:
    reason = browser_missing()
    if reason is not None:
        if REQUIRE_BROWSER:
            pytest.fail(f"MMBROKER_REQUIRE_BROWSER=1 but {reason}", pytrace=False)
        pytest.skip(reason)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A broker listening to a Kafka topic, with a trigger poster's and a shifter's tokens."""
    reason = browser_missing()
    if reason is not None:
        pytest.skip(reason)
    workdir = tmp_path_factory.mktemp("dashboard")
    db = workdir / "broker.sqlite3"
    poster = create_token(db, "poster", "write:triggers", detectors=("KM3NeT",))
    shifter = create_token(db, "alice", "ack")
    with tansu(workdir) as bootstrap, running_broker(workdir, comet=True, env={
            "MMBROKER_KAFKA_BOOTSTRAP": bootstrap, "MMBROKER_KAFKA_TOPICS": GRB_TOPIC,
            "MMBROKER_LIVE_POLL_S": "0.2", "KAFKA_AUTO_OFFSET_RESET": "earliest",
            **FAST_JOIN_ENV}) as broker:
        yield {"broker": broker, "bootstrap": bootstrap, "poster": poster, "shifter": shifter}


def _open(page: Any, url: str) -> None:
    page.goto(url)
    page.wait_for_selector("#conn.live")


def _sign_in(page: Any, token: str, *, live: bool = True) -> None:
    page.fill("#token", token)
    page.click(".login button[type=submit]")
    page.wait_for_selector("#user")
    if live:  # the live page's stream (detail pages have none)
        page.wait_for_selector("#conn.live")


_moment = [datetime.now(UTC) - timedelta(minutes=30)]


def _now() -> datetime:
    """A fresh instant per scenario, so event ids never collide between tests."""
    _moment[0] = max(_moment[0] + timedelta(seconds=1), datetime.now(UTC))
    return _moment[0]


@pytest.mark.timeout(180)
def test_page_loads_clean_and_a_posted_alert_appears_within_2_s(world: dict[str, Any]) -> None:
    broker: Broker = world["broker"]
    with chromium_page() as (page, errors):
        _open(page, broker.url + "/")
        trigger, _ = scenario(_now(), ra_deg=40.0, dec_deg=10.0)
        ivorn = broker.post_trigger(world["poster"], trigger)
        posted = time.monotonic()
        row = page.wait_for_selector(f'#alerts tr[data-ivorn="{ivorn}"]', timeout=2000)
        shown_s = time.monotonic() - posted
        assert shown_s < 2.0
        assert trigger["event_id"] in row.inner_text()
        assert page.evaluate("document.querySelectorAll('#alerts tbody tr').length") >= 1
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "dashboard-main.png"), full_page=True)
        assert errors == []


@pytest.mark.timeout(240)
def test_a_significant_coincidence_raises_the_alarm_until_acknowledged(
        world: dict[str, Any]) -> None:
    broker: Broker = world["broker"]
    with chromium_page() as (page, errors):
        _open(page, broker.url + "/")
        _sign_in(page, world["shifter"])
        trigger, grb = scenario(_now(), ra_deg=120.0, dec_deg=-40.0)
        alert = broker.post_trigger(world["poster"], trigger)
        produce(world["bootstrap"], GRB_TOPIC, [grb])
        page.wait_for_selector("#alarm:not([hidden])", timeout=30_000)
        ivorn = page.get_attribute("#alarm", "data-ivorn")
        coincidence = broker.get(f"/api/v1/coincidences/{quote(ivorn, safe='')}")["coincidence"]
        assert alert in [m["alert_id"] for m in coincidence["members"]]
        assert "SIGNIFICANT" in page.inner_text("#alarm")
        wait_until(lambda: "SIGNIFICANT COINCIDENCE" in page.title(), 3, "the tab title")
        page.keyboard.press("m")  # mute and unmute from the keyboard
        assert page.get_attribute("#mute", "aria-pressed") == "true"
        page.click("#mute")
        assert page.get_attribute("#mute", "aria-pressed") == "false"
        # Other alarms of earlier tests may be up too: acknowledge until this one is gone.
        for _ in range(10):
            if page.is_hidden("#alarm"):
                break
            page.click("#ack-button")
            page.wait_for_timeout(300)
        page.wait_for_selector("#alarm", state="hidden", timeout=5000)
        assert page.title() == "mmbroker"
        from broker.archive.models import Acknowledgement
        from broker.archive.store import Archive

        archive = Archive.open(f"sqlite:///{broker.db}", upgrade=False)
        try:
            with archive.engine.connect() as conn:
                acks = conn.execute(Acknowledgement.__table__.select()).all()
        finally:
            archive.close()
        assert acks and {a.acked_by for a in acks} == {"alice"}
        assert all(abs((a.acked_at.replace(tzinfo=UTC) - datetime.now(UTC)).total_seconds())
                   < 120 for a in acks)
        # A page opened now starts without the banner: the acknowledgement is shared.
        page.reload()
        page.wait_for_selector("#conn.live")
        assert page.is_hidden("#alarm")
        assert errors == []


@pytest.mark.timeout(240)
def test_the_detail_page_shows_the_sky_map_and_the_voevent(world: dict[str, Any]) -> None:
    broker: Broker = world["broker"]
    trigger, grb = scenario(_now(), ra_deg=250.0, dec_deg=30.0)
    alert = broker.post_trigger(world["poster"], trigger)
    produce(world["bootstrap"], GRB_TOPIC, [grb])

    def coincidence() -> str | None:
        items = broker.get("/api/v1/coincidences?limit=20")["items"]
        found = [c["id"] for c in items if alert in [m["alert_id"] for m in c["members"]]]
        return found[0] if found else None

    wait_until(lambda: coincidence() is not None, 30, "the coincidence")
    ivorn = coincidence()
    assert ivorn is not None
    with chromium_page() as (page, errors):
        page.goto(f"{broker.url}/dashboard/coincidences/{quote(ivorn, safe='')}")
        page.wait_for_function("document.querySelector('#skymap').complete && "
                               "document.querySelector('#skymap').naturalWidth > 0")
        assert page.evaluate("document.querySelector('#skymap').naturalWidth") >= 400
        xml = page.inner_text("#voevent")
        assert "<voe:VOEvent" in xml and ivorn in xml
        assert page.locator("#provenance svg .node").count() >= 3
        assert page.locator("table.members tbody tr").count() == 2
        # Acknowledged from its own page by a signed-in shifter.
        _sign_in(page, world["shifter"], live=False)
        page.click("#ack-detail")
        page.wait_for_selector("#acks li:has-text('alice at')")
        assert "acknowledge failed" not in page.inner_text("#acks")
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "dashboard-coincidence.png"), full_page=True)
        page.click(f'a[href="/dashboard/alerts/{quote(alert, safe="")}"]')
        page.wait_for_function("document.querySelector('#skymap').complete && "
                               "document.querySelector('#skymap').naturalWidth > 0")
        assert alert in page.inner_text("#voevent")
        page.goto(f"{broker.url}/dashboard/alerts/{quote('ivo://nowhere/x#1', safe='')}")
        assert "no alert" in page.inner_text("main")
        errors = [e for e in errors if "404" not in e]  # the deliberate not-found page
        assert errors == []


@pytest.mark.timeout(240)
def test_a_stopped_stream_turns_red(tmp_path: Path) -> None:
    with tansu(tmp_path) as bootstrap, running_broker(tmp_path, env={
            "MMBROKER_KAFKA_BOOTSTRAP": bootstrap, "MMBROKER_KAFKA_TOPICS": GRB_TOPIC,
            "MMBROKER_LIVE_POLL_S": "0.2", "KAFKA_AUTO_OFFSET_RESET": "earliest", **FAST_JOIN_ENV,
            "MMBROKER_STREAM_STALE_OVERRIDES": f"{GRB_TOPIC}=3600",
            "MMBROKER_HEALTH_SCOPE": ""}) as broker, \
                chromium_page() as (page, errors):
        _, grb = scenario(_now(), ra_deg=10.0, dec_deg=-5.0)
        produce(bootstrap, GRB_TOPIC, [grb])
        _open(page, broker.url + "/")
        row = f'#health tr[data-stream="{GRB_TOPIC}"][data-detector=""]'
        page.wait_for_selector(f'{row}[data-state="ok"]', timeout=30_000)
        green = page.eval_on_selector(f"{row} .state", "e => getComputedStyle(e).color")
        stop_tansu(bootstrap)  # the stream stops, as in a real outage
        page.wait_for_selector(f'{row}[data-state="disconnected"]', timeout=30_000)
        red = page.eval_on_selector(f"{row} .state", "e => getComputedStyle(e).color")
        assert green != red and red.startswith("rgb(229, 72, 77")  # the page's --bad
        assert "disconnected" in page.inner_text(row).lower()
        assert errors == []


# -- the all-sky view ------------------------------------------------------------------------


def _sky_dot(page: Any, ivorn: str) -> tuple[float, float]:
    dot = page.wait_for_selector(f'#sky-svg circle.sky-alert[data-ivorn="{ivorn}"]',
                                 timeout=5000)
    return float(dot.get_attribute("cx")), float(dot.get_attribute("cy"))


@pytest.mark.timeout(240)
def test_the_sky_view_draws_updates_live_and_links_coincidences(world: dict[str, Any]) -> None:
    broker: Broker = world["broker"]
    with chromium_page() as (page, errors):
        _open(page, broker.url + "/")
        page.evaluate("window.__sameDocument = true")  # gone if the page reloads
        east, _ = scenario(_now(), ra_deg=90.0, dec_deg=15.0)
        west, _ = scenario(_now(), ra_deg=270.0, dec_deg=15.0)
        east_ivorn = broker.post_trigger(world["poster"], east)
        west_ivorn = broker.post_trigger(world["poster"], west)
        (x90, y90), (x270, y270) = _sky_dot(page, east_ivorn), _sky_dot(page, west_ivorn)
        assert x90 < 0 < x270 and y90 == pytest.approx(y270, abs=0.01)  # RA grows leftwards
        assert y90 < 0  # north up
        # The 90% error circle (1.1 deg) is drawn around it, in the messenger's colour.
        circle = page.locator(f'#sky-svg path.sky-circle[data-ivorn="{east_ivorn}"]')
        assert circle.count() == 1 and circle.get_attribute("stroke") == "#2fbf71"

        # A trigger and a GRB that coincide: the coincidence appears without a reload.
        trigger, grb = scenario(_now(), ra_deg=300.0, dec_deg=-10.0)
        alert = broker.post_trigger(world["poster"], trigger)
        produce(world["bootstrap"], GRB_TOPIC, [grb])

        def coincidence() -> str | None:
            items = broker.get("/api/v1/coincidences?limit=50")["items"]
            found = [c["id"] for c in items if alert in [m["alert_id"] for m in c["members"]]]
            return found[0] if found else None

        wait_until(lambda: coincidence() is not None, 30, "the coincidence")
        ivorn = coincidence()
        assert ivorn is not None
        marker = f'#sky-svg a.sky-coinc[data-ivorn="{ivorn}"]'
        page.wait_for_selector(marker, timeout=5000)
        assert page.evaluate("window.__sameDocument") is True
        assert "significant" in page.get_attribute(marker, "class")
        assert float(page.get_attribute(marker, "data-x")) > 0  # RA 300: right of centre
        # Its members are highlighted once the view has fetched them.
        page.wait_for_selector(f'#sky-svg circle.sky-alert.in-coinc[data-ivorn="{alert}"]',
                               timeout=5000)
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.locator("#sky").screenshot(path=str(ARTIFACTS / "dashboard-sky-live.png"))
        page.click(marker)
        page.wait_for_url(f"**/dashboard/coincidences/{quote(ivorn, safe='')}", timeout=10_000)
        assert ivorn in page.inner_text("main")
        assert page.locator("table.members tbody tr").count() == 2
        assert page.locator(f'table.members a[href="/dashboard/alerts/{quote(alert, safe="")}"]'
                            ).count() == 1
        assert errors == []


@pytest.mark.timeout(240)
def test_the_sky_view_draws_the_gw_credible_region_and_hides_embargoed_alerts(
        tmp_path: Path) -> None:
    from broker.archive.models import AlertRow
    from broker.archive.store import Archive
    from broker.config import get_settings
    from broker.runtime.assembly import make_pipeline
    from listeners.envelope import RawMessage
    from tests.conftest import ingest_demo

    # The demo (its LVK alert carries a multi-order sky map), its neutrino trigger under
    # embargo, and a few public observations around the sky for the picture.
    archive = Archive.open(f"sqlite:///{tmp_path / 'broker.sqlite3'}")
    try:
        ingest_demo(archive, embargoed_until="2099-01-01T00:00:00Z")
        pipeline = make_pipeline(get_settings(comet=False), archive, targets=[])
        for i, (ra, dec) in enumerate(((83.6, 22.0), (266.4, -29.0), (10.7, 41.3),
                                       (300.0, 45.0), (140.0, -60.0))):
            trigger, _ = scenario(_now() - timedelta(hours=i + 1), ra_deg=ra, dec_deg=dec)
            trigger["event_id"] = f"SKY-{i}"
            pipeline.ingest([RawMessage("detector", json.dumps(trigger).encode())])
        with archive.engine.connect() as conn:
            from sqlalchemy import select

            hidden = conn.execute(select(AlertRow.ivorn).where(
                AlertRow.data_rights == "embargoed")).scalar_one()
            gw = conn.execute(select(AlertRow.ivorn).where(
                AlertRow.messenger == "gravitational_wave")).scalar_one()
    finally:
        archive.close()
    with running_broker(tmp_path, env={"MMBROKER_LIVE_POLL_S": "0.2",
                                       "MMBROKER_ALARM_ROLES": "observation,test"}) as broker, \
            chromium_page() as (page, errors):
        _open(page, broker.url + "/")
        contour = page.wait_for_selector(
            f'#sky-svg path.sky-contour[data-ivorn="{gw}"]', timeout=10_000)
        assert contour.get_attribute("stroke") == "#4ea1ff"
        assert contour.get_attribute("d").count("L") > 12  # an outline, not a marker
        box = contour.evaluate(
            "e => { const b = e.getBBox(); return [b.x, b.y, b.width, b.height]; }")
        gx, gy = _sky_dot(page, gw)
        assert box[0] < gx < box[0] + box[2] and box[1] < gy < box[1] + box[3]
        # 17 deg across at Dec -23: a few percent of the map's 566-unit width.
        assert 10 < box[2] < 60 and 10 < box[3] < 60
        # The GBM's 9.5 deg circle, the demo's coincidences, and nothing of the embargoed
        # trigger: no dot, no circle, no coincidence it is a member of.
        assert page.locator('#sky-svg path.sky-circle[data-messenger="gamma_ray"]').count() == 1
        assert page.locator("#sky-svg a.sky-coinc").count() == 1  # gw_cbc-grb only
        assert page.locator(f'#sky-svg [data-ivorn="{hidden}"]').count() == 0
        # The legend names each messenger in the colour its marks are drawn in.
        swatch = page.locator('.sky-legend li[data-messenger="gravitational_wave"] .sw')
        assert swatch.evaluate("e => getComputedStyle(e).backgroundColor") == \
            "rgb(78, 161, 255)"  # #4ea1ff, the contour's stroke above
        assert "gravitational wave" in page.inner_text(".sky-legend")
        assert page.locator("#sky-svg circle.sky-alert").count() == 2 + 5
        page.wait_for_timeout(500)  # the ring's pulse and fonts settle for the picture
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.locator("#sky").screenshot(path=str(ARTIFACTS / "dashboard-sky.png"))
        assert errors == []
