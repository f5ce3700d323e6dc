"""A running broker and a headless Chromium for the dashboard's end-to-end tests and benchmark.

The broker is the real ``mmbroker serve`` (its own process, SQLite archive,
Comet child optional), listening to a real tansu Kafka-protocol broker when
asked; Chromium is Debian's, driven by Playwright (no browser download).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from tests.conftest import free_port
from tests.servers import stop_process, wait_for

CHROMIUM = os.environ.get("MMBROKER_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-default-apps", "--mute-audio",
                 "--autoplay-policy=no-user-gesture-required"]
REQUIRE_BROWSER = os.environ.get("MMBROKER_REQUIRE_BROWSER") == "1"
ARTIFACTS = Path(os.environ.get("MMBROKER_TEST_ARTIFACTS",
                                Path(__file__).resolve().parent.parent / "test-artifacts"))


def browser_missing() -> str | None:
    """Why the browser tests cannot run here (None when they can)."""
    if not (Path(CHROMIUM).exists() or shutil.which(CHROMIUM)):
        return f"no Chromium at {CHROMIUM} (install Debian's chromium package)"
    try:
        import playwright  # noqa: F401
    except ImportError:
        return "Playwright for Python is not installed (pip install -e '.[test]')"
    return None


def mmbroker_exe() -> str:
    return str(Path(sys.executable).with_name("mmbroker"))


def create_token(db: Path, name: str, *scopes: str, detectors: tuple[str, ...] = ()) -> str:
    """A token made by ``mmbroker token create`` for the archive ``db`` (as a shifter would);
    ``detectors`` binds a write:triggers token to the detectors it may post for."""
    from tests.conftest import mmbroker

    if not Path(db).exists():  # only `db upgrade` and `serve` make an archive
        mmbroker("--db", str(db), "db", "upgrade", timeout=60)
    args = [a for scope in scopes for a in ("--scope", scope)]
    args += [a for detector in detectors for a in ("--detector", detector)]
    out = mmbroker("--db", str(db), "token", "create", "--name", name, *args, timeout=60)
    return out.stdout.strip().splitlines()[-1]


@dataclass
class Broker:
    """A running ``mmbroker serve``: its URL, archive file and process."""

    url: str
    db: Path
    proc: subprocess.Popen[bytes]

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(self.url + path, timeout=10) as response:
            return json.loads(response.read())

    def post_trigger(self, token: str, trigger: dict[str, Any]) -> str:
        """POST a detector trigger; returns the alert IVORN."""
        request = urllib.request.Request(
            self.url + "/api/v1/triggers", data=json.dumps(trigger).encode(), method="POST",
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())["id"]


@contextlib.contextmanager
def running_broker(workdir: Path, *, env: dict[str, str] | None = None,
                   comet: bool = False) -> Iterator[Broker]:
    """``mmbroker serve`` on free ports with an archive in ``workdir``, until /health is ok."""
    port = free_port()
    db = workdir / "broker.sqlite3"
    full_env = {**os.environ, "MMBROKER_LOG_LEVEL": "WARNING",
                "MMBROKER_COMET": "true" if comet else "false",
                "MMBROKER_DATA_DIR": str(workdir / "data"),
                "MMBROKER_VTP_RECEIVE_PORT": str(free_port()),
                "MMBROKER_VTP_BROADCAST_PORT": str(free_port()), **(env or {})}
    log = open(workdir / "broker.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen([mmbroker_exe(), "--db", str(db), "serve", "--port", str(port)],
                            stdout=log, stderr=subprocess.STDOUT, env=full_env)
    broker = Broker(f"http://127.0.0.1:{port}", db, proc)

    def healthy() -> bool:
        assert proc.poll() is None, (workdir / "broker.log").read_text()
        try:
            return broker.get("/health")["status"] == "ok"
        except OSError:
            return False

    try:
        assert wait_for(healthy, 90, 0.2), "the broker did not come up"
        yield broker
    finally:
        stop_process(proc, 20)
        log.close()


@contextlib.contextmanager
def chromium_page(*, width: int = 1600, height: int = 1000) -> Iterator[tuple[Any, list[str]]]:
    """A page in headless Chromium and the list its console errors and page errors go to."""
    from playwright.sync_api import sync_playwright

    errors: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            page.on("console", lambda m: errors.append(f"console.{m.type}: {m.text}")
                    if m.type in ("error", "warning") else None)
            page.on("pageerror", lambda e: errors.append(f"page error: {e}"))
            page.set_default_timeout(15_000)
            yield page, errors
        finally:
            browser.close()


def scenario(now: datetime, *, ra_deg: float = 196.8, dec_deg: float = -22.9,
             grb_number: int | None = None) -> tuple[dict[str, Any], bytes]:
    """A neutrino trigger (JSON to POST) and a Fermi GBM notice (bytes for Kafka) that the
    cross-match pairs (hen-grb), both observations, events a few seconds before ``now``.
    ``grb_number`` is the notice's trigger number (default: from ``now``, in 0.1 s steps,
    so callers making more than ten a second pass their own).

    Built from the demo's templates (not its scenario, whose LVK sky map takes tens of
    ms to make: thousands of these feed the stage and chaos tests).
    """
    from importlib import resources

    trigger = json.loads(resources.files("alerts_schema").joinpath(
        "examples", "trigger-track-single.example.json").read_text())
    grb = json.loads(resources.files("broker").joinpath(
        "demo_data", "fermi_gbm_flight_position.json").read_text())
    grb.update(ra_dec_error=9.5, classification={"GRB": 0.96})
    t0 = now - timedelta(seconds=4)
    trigger.update(real=True, ra_deg=ra_deg, dec_deg=dec_deg,
                   event_id=f"E2E-{now:%Y%m%d%H%M%S%f}",
                   time=t0.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                   sent_time=(t0 + timedelta(seconds=0.3)).strftime("%Y-%m-%dT%H:%M:%S.%fZ"))
    number = str(grb_number if grb_number is not None
                 else 600_000_000 + int(now.timestamp() * 10) % 100_000_000)
    grb.update(id=[number, f"bn{now:%y%m%d}e2e"], alert_tense="current",
               trigger_time=(t0 + timedelta(seconds=2)).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3],
               alert_datetime=(t0 + timedelta(seconds=3)).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3],
               ra=ra_deg + 0.5, dec=dec_deg + 0.5)
    return trigger, json.dumps(grb).encode()


def wait_until(predicate: Any, timeout_s: float, what: str) -> float:
    """Seconds until ``predicate()`` held; fails after ``timeout_s``."""
    start = time.monotonic()
    assert wait_for(predicate, timeout_s, 0.05), f"{what} not within {timeout_s} s"
    return time.monotonic() - start
