"""docs/vo-access.md is true: its pyvo recipes run, as written, against a live broker.

``mmbroker serve --demo`` runs on each backend (its three test alerts and three
coincidences) and gets one embargoed neutrino trigger in the same cone, POSTed as the
README posts triggers.  Every ``python`` block of the page then runs in order in one
namespace, its URL pointed at this broker and ``MMBROKER_TOKEN`` a ``read:embargoed``
token; what the blocks leave behind is compared with the REST API's answer to the same
questions, and what they print with what the page shows.  The page's ``stilts
tapquery`` command runs too when ``stilts`` is installed, and its ObsCore mapping
tables are checked against the service's own column metadata.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests

from broker.web.tap.schema import OBSCORE_COLUMNS
from tests.conftest import REPO, free_port
from tests.servers import http, leaky_client, stop_process

PAGE = REPO / "docs" / "vo-access.md"
DOC_URL = "http://127.0.0.1:8000"
MMBROKER = str(Path(sys.executable).with_name("mmbroker"))


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", PAGE.read_text(), re.S)


def _cli(db: str, *args: str) -> str:
    proc = subprocess.run([MMBROKER, "--db", db, *args], capture_output=True, text=True,
                          timeout=120, check=True, env={**os.environ, "COLUMNS": "100"})
    return proc.stdout.strip().splitlines()[-1]


def _get(base: str, path: str, token: str | None = None) -> Any:
    status, body = http(base + path, token=token)
    assert status == 200, (path, body[:300])
    return json.loads(body)


@pytest.fixture
def broker(db_url: str, tmp_path: Path) -> Iterator[dict[str, str]]:
    """``mmbroker serve --demo`` on ``db_url`` with the demo done, one embargoed trigger
    posted, and a read:embargoed token."""
    port = free_port()
    env = {**os.environ, "MMBROKER_LOG_LEVEL": "WARNING",
           "MMBROKER_VTP_RECEIVE_PORT": str(free_port()),
           "MMBROKER_VTP_BROADCAST_PORT": str(free_port())}
    log = open(tmp_path / "serve.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen([MMBROKER, "--db", db_url, "serve", "--demo", "--port", str(port)],
                            stdout=log, stderr=subprocess.STDOUT, env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            assert proc.poll() is None, (tmp_path / "serve.log").read_text()
            try:
                if len(_get(base, "/api/v1/coincidences")["items"]) >= 3:
                    break
            except (OSError, AssertionError):
                pass
            assert time.monotonic() < deadline, (tmp_path / "serve.log").read_text()
            time.sleep(0.3)
        writer = _cli(db_url, "token", "create", "--scope", "write:triggers",
                      "--detector", "KM3NeT", "--name", "km3net-online")
        reader = _cli(db_url, "token", "create", "--scope", "read:embargoed", "--name", "me")
        now = datetime.now(UTC)
        trigger = {"event_id": "ARCA-EMB-0001", "detector": "KM3NeT", "instrument": "ARCA21",
                   "trigger_type": "track", "real": False,
                   "time": now.strftime("%Y-%m-%dT%H:%M:%SZ"), "ra_deg": 197.1,
                   "dec_deg": -23.4, "error_radius_90_deg": 0.8, "energy_gev": 1.2e5,
                   "pipeline": "online-track", "pipeline_version": "3.2.1",
                   "data_rights": {"level": "embargoed", "embargo_until": (
                       now + timedelta(days=30)).strftime("%Y-%m-%dT00:00:00Z")}}
        status, body = http(base + "/api/v1/triggers", json.dumps(trigger).encode(),
                            token=writer)
        assert status in (200, 201), body
        embargoed = json.loads(body)["id"]
        yield {"base": base, "token": reader, "embargoed": embargoed, "db": db_url}
    finally:
        stop_process(proc)
        log.close()


@pytest.mark.timeout(400)
def test_the_pyvo_recipes_run_and_answer_as_rest(broker: dict[str, str],
                                                 monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    base = broker["base"]
    monkeypatch.setenv("MMBROKER_TOKEN", broker["token"])
    code = blocks("python")
    assert len(code) >= 4 and DOC_URL in code[0]
    namespace: dict[str, Any] = {}
    with leaky_client():
        try:
            for block in code:
                exec(compile(block.replace(DOC_URL, base), str(PAGE), "exec"), namespace)
        finally:  # the recipes' HTTP sessions, closed now rather than by the collector
            for value in namespace.values():
                session = getattr(value, "_session", value)
                if isinstance(session, requests.Session):
                    session.close()
        kept = {name: namespace[name] for name in ("since", "rows", "pairs", "hidden",
                                                   "counts")}
        namespace.clear()
    namespace.update(kept)
    printed = capsys.readouterr().out
    shown = blocks("text")

    # The tables, as the page lists them.
    assert printed.splitlines()[:8] == shown[0].splitlines()[:8]
    # The cone + time + provenance query: the REST answer, without the embargoed trigger.
    since = namespace["since"].utc.isot + "Z"
    rest = _get(base, f"/api/v1/alerts?ra=196.8&dec=-22.9&radius=5&since={since}"
                      "&messenger=neutrino&pipeline=online-track")["items"]
    rows = [str(i) for i in namespace["rows"]["obs_id"]]
    assert sorted(rows) == sorted(a["id"] for a in rest) and len(rows) == 1
    everything = _get(base, f"/api/v1/alerts?ra=196.8&dec=-22.9&radius=5&since={since}"
                            "&messenger=neutrino&pipeline=online-track",
                      broker["token"])["items"]
    assert {a["id"] for a in everything} == {*rows, broker["embargoed"]}
    # The coincidences and their members: the three the demo found (the embargoed
    # trigger's are hidden), two members each.
    coincidences = _get(base, "/api/v1/coincidences")["items"]
    pairs = namespace["pairs"]
    assert sorted(set(pairs["pairing"])) == sorted(c["pairing"] for c in coincidences)
    assert len(pairs) == sum(len(c["members"]) for c in coincidences) == 6
    assert len(_get(base, "/api/v1/coincidences", broker["token"])["items"]) > 3
    # The token sees the embargoed trigger, the anonymous caller does not.
    assert list(namespace["hidden"]["obs_id"]) == [broker["embargoed"]]
    assert "0 anonymously; 1 with the token:" in printed
    # The asynchronous job counts with the token's rights: the embargoed trigger too.
    counts = dict(zip(namespace["counts"]["messenger"], namespace["counts"]["n"],
                      strict=True))
    everyone = _get(base, "/api/v1/alerts", broker["token"])["items"]
    assert counts == {m: sum(a["messenger"] == m for a in everyone)
                      for m in {a["messenger"] for a in everyone}}
    assert counts["neutrino"] == 2 and f"COMPLETED {base}/tap/async/..." in printed
    # Cone search: the demo's three alerts, positions read by pyvo.
    lines = [line for line in printed.splitlines() if line.startswith("ivo://") and
             line.count(" ") == 2]
    assert {line.split()[0] for line in lines} == {
        a["id"] for a in _get(base, "/api/v1/alerts?ra=196.8&dec=-22.9&radius=5")["items"]}
    assert "196.8 -22.9" in printed

    if shutil.which("stilts") is None:
        if os.environ.get("MMBROKER_REQUIRE_STILTS") == "1":
            pytest.fail("stilts is not installed: apt-get install stilts")
        return
    for command in blocks("sh"):
        command = command.replace("\\\n", " ").replace(DOC_URL, base)
        if command.startswith("stilts tapquery"):
            out = subprocess.run(shlex.split(command), capture_output=True, text=True,
                                 timeout=120, check=True).stdout
            assert out.count("ivo://") == 3 and "DEMO" in out, out


def test_the_obscore_mapping_is_the_service_metadata() -> None:
    """Every ivoa.obscore column is in the page's mapping tables once, with the unit and
    UCD the service declares."""
    text = PAGE.read_text()
    section = text.split("## The ObsCore mapping", 1)[1].split("\n## ", 1)[0]
    declared = {c.name: c for c in OBSCORE_COLUMNS}
    seen: list[str] = []
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 4 or not cells[0].startswith("`"):
            continue
        names = re.findall(r"`([a-z_0-9]+)`", cells[0])
        units = [u.strip() for u in cells[2].split(",")] if cells[2] else [""]
        ucds = re.findall(r"`([^`]+)`", cells[3])
        for i, name in enumerate(names):
            column = declared[name]
            assert (units[min(i, len(units) - 1)] or None) == column.unit, name
            assert ucds[min(i, len(ucds) - 1)] == column.ucd, name
            seen.append(name)
    assert sorted(seen) == sorted(declared)
