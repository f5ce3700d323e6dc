"""`mmbroker ingest` matches against history (issue 16, item 10).

Each `mmbroker ingest` starts a new engine; what earlier runs (or a live broker) archived
must be matched against as if memory held it, and an alert is marked matched only once
it was.  On the real command line (in process through ``main``, and once as the
installed console script), against a SQLite file and PostgreSQL: the real igwn.gwalert
notices of MS181101ab (preliminary, then its retraction) and the real GCN Fermi GBM JSON
notice placed 1.2 s after the GW, inside its 90% region.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from alerts_schema import Alert
from alerts_schema.model import format_utc
from broker.archive.store import AlertQuery, Archive
from broker.cli import main
from listeners.common import parse_utc
from tests.conftest import SAMPLES, mmbroker

pytestmark = pytest.mark.timeout(300)

LVK = SAMPLES / "lvk"
GBM_NOTICE = Path(__file__).parent / "data" / "gcn" / (
    "notices__fermi__gbm__trigger.ground1.example.json")
GRB_AFTER_S = 1.2


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    """The GW's preliminary notice and retraction as sent, and the GRB placed on the GW."""
    out = tmp_path / "files"
    out.mkdir()
    gw = out / "MS181101ab-preliminary.json"
    shutil.copy(LVK / "MS181101ab-preliminary.json", gw)
    retraction = out / "MS181101ab-retraction.json"
    shutil.copy(LVK / "MS181101ab-retraction.json", retraction)
    event_time = parse_utc(json.loads(gw.read_text())["event"]["time"], field="event.time")
    notice = json.loads(GBM_NOTICE.read_text())
    notice.update(trigger_time=format_utc(event_time + timedelta(seconds=GRB_AFTER_S)),
                  ra=195.0, dec=-18.5,  # inside the GW's 90% region
                  alert_tense="test")  # the GW is a mock superevent: both are tests
    grb = out / "gbm.json"
    grb.write_text(json.dumps(notice))
    return {"gw": gw, "grb": grb, "retraction": retraction}


@pytest.fixture
def db(db_url: str) -> Iterator[str]:
    """An archive (`mmbroker db upgrade`), as the ``--db`` option takes it."""
    assert main(["--db", db_url, "db", "upgrade"]) == 0
    yield db_url


SOURCES = {"gw": "igwn.gwalert", "retraction": "igwn.gwalert", "grb": "gcn.notices.fermi.gbm"}


def ingest(db: str, files: dict[str, Path], *names: str) -> None:
    """One `mmbroker ingest` run per stream of ``names``' files, as their topics name them."""
    for source in dict.fromkeys(SOURCES[n] for n in names):
        paths = [str(files[n]) for n in names if SOURCES[n] == source]
        assert main(["--db", db, "ingest", "--source", source, "-f", "json", *paths]) == 0


def coincidences(db: str) -> list[dict[str, Any]]:
    archive = Archive.open(db, upgrade=False)
    try:
        return sorted(archive.list_coincidences(1000), key=lambda c: (c["id"], c["revision"]))
    finally:
        archive.close()


def alerts(db: str) -> list[Alert]:
    archive = Archive.open(db, upgrade=False)
    try:
        return [Alert.model_validate(d) for d in archive.list_alerts(AlertQuery(limit=1000))]
    finally:
        archive.close()


def unmatched(db: str) -> int:
    from sqlalchemy import func, select

    from broker.archive.db import transaction
    from broker.archive.models import AlertRow

    archive = Archive.open(db, upgrade=False)
    try:
        with transaction(archive.engine, readonly=True) as conn:
            return int(conn.execute(select(func.count()).select_from(AlertRow)
                                    .where(AlertRow.matched_at.is_(None))).scalar_one())
    finally:
        archive.close()


def _essence(c: dict[str, Any]) -> tuple[Any, ...]:
    """What a coincidence says, without when it was made."""
    return (c["id"], c["pairing"], c["state"], c["revision"], c["reference_time"],
            [(m["alert_id"], m["time_offset_s"]) for m in c["members"]],
            c["spatial_overlap"], c["significance"])


@pytest.mark.parametrize("order", [("gw", "grb"), ("grb", "gw")])
def test_gw_and_grb_in_two_runs_coincide_once(db: str, files: dict[str, Path],
                                              order: tuple[str, str],
                                              tmp_path: Path) -> None:
    """Two runs find what one run finds: the one coincidence, once, whichever comes first."""
    ingest(db, files, order[0])
    assert coincidences(db) == [] and unmatched(db) == 0
    ingest(db, files, order[1])
    two_runs = coincidences(db)
    assert [(c["pairing"], c["state"]) for c in two_runs] == [("gw_cbc-grb", "new")]
    assert unmatched(db) == 0

    one_db = f"sqlite:///{tmp_path / 'one-run.sqlite3'}"
    assert main(["--db", one_db, "db", "upgrade"]) == 0
    # One invocation with both files (each normalizer recognizes its own).
    assert main(["--db", one_db, "ingest", "-f", "json", str(files["gw"]),
                 str(files["grb"])]) == 0
    (one,) = coincidences(one_db)
    (two,) = two_runs
    assert one["members"][1]["time_offset_s"] == two["members"][1]["time_offset_s"] == \
        GRB_AFTER_S
    assert one["spatial_overlap"] == two["spatial_overlap"]
    assert one["significance"] == two["significance"]


def test_a_retraction_ingested_later_retracts(db: str, files: dict[str, Path]) -> None:
    ingest(db, files, "gw")
    ingest(db, files, "grb")
    ingest(db, files, "retraction")
    new, retracted = coincidences(db)
    assert (new["state"], retracted["state"]) == ("new", "retracted")
    assert retracted["supersedes"] == new["id"] and retracted["revision"] == 1
    # It keeps the event's time and the members' offsets (item 9).
    assert retracted["reference_time"] == new["reference_time"]
    assert [m["time_offset_s"] for m in retracted["members"]] == \
        [m["time_offset_s"] for m in new["members"]]
    (gone,) = [a for a in alerts(db) if a.alert_type == "retraction"]
    assert retracted["members"][0]["alert_id"] == gone.id
    assert unmatched(db) == 0


def test_reingesting_the_same_files_makes_no_duplicate(db: str, files: dict[str, Path]
                                                       ) -> None:
    ingest(db, files, "gw")
    ingest(db, files, "grb")
    ingest(db, files, "retraction")
    before = [_essence(c) for c in coincidences(db)]
    assert [c[2] for c in before] == ["new", "retracted"]
    stored = {a.id: a.to_document() for a in alerts(db)}
    for names in (("gw", "grb", "retraction"), ("retraction",), ("grb",), ("gw",)):
        ingest(db, files, *names)
    assert [_essence(c) for c in coincidences(db)] == before
    assert {a.id: a.to_document() for a in alerts(db)} == stored
    archive = Archive.open(db, upgrade=False)
    try:
        assert archive.count_quarantined() == 0
    finally:
        archive.close()


def test_the_console_script_matches_against_history(tmp_path: Path, files: dict[str, Path]
                                                    ) -> None:
    """The installed `mmbroker`, two processes: the second finds the first one's GW."""
    db = str(tmp_path / "script.sqlite3")
    mmbroker("--db", db, "db", "upgrade")
    mmbroker("--db", db, "ingest", "--source", "igwn.gwalert", str(files["gw"]))
    mmbroker("--db", db, "ingest", "--source", "gcn.notices.fermi.gbm", str(files["grb"]))
    proc = mmbroker("--db", db, "coincidences", "list", "-f", "json")
    (found,) = json.loads(proc.stdout)
    assert (found["pairing"], found["state"]) == ("gw_cbc-grb", "new")


def test_an_alert_the_engine_failed_on_is_not_marked_matched(
        sqlite_url: str, files: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """Never marked matched what was not matched: a cross-match failure leaves it unmatched."""
    from crossmatch.engine import Engine

    assert main(["--db", sqlite_url, "db", "upgrade"]) == 0
    real = Engine.process

    def failing(self: Engine, alert: Alert, **kwargs: Any) -> list[Any]:
        if alert.messenger == "gamma_ray":
            raise RuntimeError("a cross-match bug")
        return real(self, alert, **kwargs)

    monkeypatch.setattr(Engine, "process", failing)
    assert main(["--db", sqlite_url, "ingest", "-f", "json", str(files["gw"]),
                 str(files["grb"])]) == 0
    assert unmatched(sqlite_url) == 1
    (grb,) = [a for a in alerts(sqlite_url) if a.messenger == "gamma_ray"]
    archive = Archive.open(sqlite_url, upgrade=False)
    try:
        assert archive.get_alert(grb.id) is not None
    finally:
        archive.close()
