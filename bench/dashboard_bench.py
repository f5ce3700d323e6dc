"""The dashboard under load: page load time and push latency in real headless Chromium.

``python -m bench dashboard`` fills a SQLite archive with 10,000 alerts (the
query benchmark's generator), runs ``mmbroker serve`` on it (its own process,
Comet off), then

* loads the page ``--page-loads`` times: time to the ``load`` event and to
  the first 100 alert rows drawn (the page's ``/dashboard/state`` included);
* posts detector triggers at ``--rate`` alerts/s for ``--seconds`` over HTTP
  from two client threads while the page is open, and reports, per alert,
  the time from the POST's answer (the alert is archived) to its row in the
  page (the page records ``Date.now()`` when it draws a row), and how late
  the page's own 100 ms timer fired meanwhile (main-thread responsiveness).
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from bench._common import OUT, Figure


def bench_dashboard(rows: int = 10_000, rate_per_s: float = 20.0, seconds: float = 30.0,
                    page_loads: int = 20) -> list[Figure]:
    import shutil
    import tempfile

    from bench.archive_bench import load_synthetic
    from broker.archive.store import Archive
    from tests.dashboard_support import (
        browser_missing,
        chromium_page,
        create_token,
        running_broker,
    )

    if reason := browser_missing():
        raise SystemExit(f"dashboard benchmark needs a browser: {reason}")
    workdir = Path(tempfile.mkdtemp(prefix="dashboard-", dir=OUT if OUT.exists() else None))
    try:
        db = workdir / "broker.sqlite3"
        archive = Archive.open(f"sqlite:///{db}")
        load_synthetic(archive, rows)
        archive.close()
        token = create_token(db, "bench", "write:triggers", detectors=("KM3NeT",))
        figures: list[Figure] = []
        with running_broker(workdir, env={"MMBROKER_API_RATE_LIMIT_PER_S": "0",
                                          "MMBROKER_WRITE_RATE_LIMIT_PER_S": "0"}) as broker, \
                chromium_page() as (page, errors):
            figures += _page_loads(page, broker.url, page_loads, rows)
            figures += _push(page, broker, token, rate_per_s, seconds, rows)
            if errors:
                raise RuntimeError(f"the page logged errors: {errors[:3]}")
        return figures
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _page_loads(page: Any, url: str, n: int, rows: int) -> list[Figure]:
    load_ms, drawn_ms = [], []
    for _ in range(n + 2):
        page.goto(url + "/")
        page.wait_for_function("document.querySelectorAll('#alerts tbody tr').length >= 100")
        timing = page.evaluate("""() => {
            const nav = performance.getEntriesByType('navigation')[0];
            return [nav.loadEventEnd, performance.now()];
        }""")
        load_ms.append(timing[0])
        drawn_ms.append(timing[1])
    load_ms, drawn_ms = load_ms[2:], drawn_ms[2:]  # the first two warm caches
    note = f"{n} loads, {rows} alerts archived, headless Chromium"
    return [Figure("dashboard", "sqlite", "page load event p50", float(np.median(load_ms)),
                   "ms", note),
            Figure("dashboard", "sqlite", "page load event p95",
                   float(np.percentile(load_ms, 95)), "ms"),
            Figure("dashboard", "sqlite", "first 100 rows drawn p50",
                   float(np.median(drawn_ms)), "ms", "navigation start -> rows in the DOM"),
            Figure("dashboard", "sqlite", "first 100 rows drawn p95",
                   float(np.percentile(drawn_ms, 95)), "ms")]


def _push(page: Any, broker: Any, token: str, rate_per_s: float, seconds: float,
          rows: int) -> list[Figure]:
    from tests.dashboard_support import scenario

    page.goto(broker.url + "/")
    page.wait_for_selector("#conn.live")
    page.evaluate("""() => {
        // When each alert row first appears (epoch ms), watched from outside the page's
        // own code.
        window.benchArrivals = {};
        new MutationObserver((changes) => {
            const now = Date.now();
            for (const change of changes) {
                for (const node of change.addedNodes) {
                    const ivorn = node.dataset && node.dataset.ivorn;
                    if (ivorn && !(ivorn in window.benchArrivals)) {
                        window.benchArrivals[ivorn] = now;
                    }
                }
            }
        }).observe(document.querySelector("#alerts tbody"), {childList: true});
        window.benchLag = [];
        let last = performance.now();
        window.benchTimer = setInterval(() => {
            const now = performance.now();
            window.benchLag.push(now - last - 100);
            last = now;
        }, 100);
    }""")
    total = int(rate_per_s * seconds)
    posted: dict[str, float] = {}
    lock = threading.Lock()
    start = time.monotonic()

    def post(worker: int) -> None:
        for i in range(worker, total, 2):
            time.sleep(max(0.0, start + i / rate_per_s - time.monotonic()))
            # The golden-angle spiral: positions all over the sky, seldom coincident.
            dec = float(np.degrees(np.arcsin(2 * ((i * 0.6180339887) % 1) - 1)))
            trigger, _ = scenario(datetime.now(UTC), ra_deg=(137.50776 * i) % 360, dec_deg=dec)
            ivorn = broker.post_trigger(token, trigger)
            with lock:
                posted[ivorn] = time.time() * 1000.0

    threads = [threading.Thread(target=post, args=(w,)) for w in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    achieved = total / (time.monotonic() - start)
    deadline = time.monotonic() + 30
    arrivals: dict[str, float] = {}
    while time.monotonic() < deadline:
        arrivals = page.evaluate("window.benchArrivals")
        if all(i in arrivals for i in posted):
            break
        time.sleep(0.2)
    lag = page.evaluate("window.benchLag")
    latency = np.array([arrivals[i] - t for i, t in posted.items() if i in arrivals])
    missing = len(posted) - latency.size
    note = (f"{total} triggers POSTed at {achieved:.1f}/s over {seconds:.0f} s onto "
            f"{rows} archived alerts; POST answered -> row drawn")
    return [Figure("dashboard", "sqlite", "push latency p50", float(np.median(latency)), "ms",
                   note),
            Figure("dashboard", "sqlite", "push latency p95", float(np.percentile(latency, 95)),
                   "ms", f"{missing} alerts never shown"),
            Figure("dashboard", "sqlite", "push latency max", float(latency.max()), "ms"),
            Figure("dashboard", "sqlite", "page timer lateness p50", float(np.median(lag)), "ms",
                   "a 100 ms setInterval in the page, during the load"),
            Figure("dashboard", "sqlite", "page timer lateness p95",
                   float(np.percentile(lag, 95)), "ms"),
            Figure("dashboard", "sqlite", "alerts posted", achieved, "alerts/s")]
