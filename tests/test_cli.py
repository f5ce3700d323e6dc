"""The command line: --help everywhere, and each command doing its job."""

from __future__ import annotations

import json
import re
from pathlib import Path

import click
import pytest
import typer.main

import alerts_schema
from broker.cli import app, main
from tests.conftest import mmbroker


def _commands(cmd: click.Command, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out = [path]
    for name, sub in getattr(cmd, "commands", {}).items():
        out.extend(_commands(sub, (*path, name)))
    return out


ALL_COMMANDS = _commands(typer.main.get_command(app))


def new_archive(path: Path) -> str:
    """An empty archive, as `mmbroker db upgrade` makes it (only it and `serve` make one)."""
    from broker.archive.store import Archive

    Archive.open(f"sqlite:///{path}").close()
    return str(path)


def test_the_public_surface_exists() -> None:
    names = {" ".join(c) for c in ALL_COMMANDS}
    assert {"serve", "ingest", "alerts list", "coincidences list", "token create",
            "db upgrade", "version", "quarantine list"} <= names


@pytest.mark.parametrize("command", ALL_COMMANDS, ids=lambda c: " ".join(c) or "mmbroker")
def test_help(command: tuple[str, ...], capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*command, "--help"]) == 0
    out = capsys.readouterr().out
    assert "Usage" in out


def test_console_script_help_and_version() -> None:
    out = mmbroker("--help").stdout
    for name in ("serve", "ingest", "alerts", "coincidences", "token", "db", "version"):
        assert name in out
    assert mmbroker("version").stdout.startswith("mmbroker ")


def test_unknown_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["no-such-command"]) == 2


def test_ingest_then_list(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = new_archive(tmp_path / "cli.sqlite3")
    files = [str(p) for p in alerts_schema.example_paths("alert")]
    bad = tmp_path / "bad.json"
    bad.write_bytes(b"{broken")
    assert main(["--db", db, "ingest", "--format", "json", *files, str(bad)]) == 0
    summary = json.loads(capsys.readouterr().out)[0]
    assert summary["summary"] == [{"source": "file", "archived": len(files), "duplicate": 0,
                                   "quarantined": 1, "heartbeat": 0}]
    assert summary["quarantined"][0]["file"] == str(bad)

    assert main(["--db", db, "alerts", "list", "--format", "json", "--limit", "2"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert len(listed) == 2
    for doc in listed:
        assert alerts_schema.validation_errors("alert", doc) == []

    assert main(["--db", db, "alerts", "list", "-f", "json", "--cone", "197,-23,3",
                 "--messenger", "neutrino"]) == 0
    (neutrino,) = json.loads(capsys.readouterr().out)
    assert neutrino["facility"] == "KM3NeT"

    assert main(["--db", db, "alerts", "list", "-f", "csv", "--since", "2026-11-21T00:00:00Z",
                 "--until", "2026-11-21T23:59:59Z"]) == 0
    csv_out = capsys.readouterr().out.strip().splitlines()
    assert csv_out[0].startswith("id,trigger_time,messenger") and len(csv_out) == 1 + 4

    assert main(["--db", db, "alerts", "list", "-f", "json", "--pipeline", "online-track",
                 "--reco-method", "JGandalf"]) == 0
    (by_provenance,) = json.loads(capsys.readouterr().out)
    assert by_provenance["id"] == neutrino["id"]

    assert main(["--db", db, "alerts", "show", neutrino["id"]]) == 0
    assert json.loads(capsys.readouterr().out)["id"] == neutrino["id"]
    assert main(["--db", db, "alerts", "show", "--raw", neutrino["id"]]) == 0
    assert json.loads(capsys.readouterr().out)["event_id"] == neutrino["event_id"]

    assert main(["--db", db, "quarantine", "list", "-f", "json"]) == 0
    (entry,) = json.loads(capsys.readouterr().out)
    assert "invalid JSON" in entry["reason"]

    # The examples are one scenario: the engine finds its three pairs while ingesting.
    assert main(["--db", db, "coincidences", "list", "-f", "json"]) == 0
    coincidences = {c["pairing"]: c for c in json.loads(capsys.readouterr().out)}
    assert set(coincidences) == {"hen-grb", "gw_cbc-grb", "gw-hen"}
    gw_grb = coincidences["gw_cbc-grb"]
    assert [(m["facility"], m["time_offset_s"]) for m in gw_grb["members"]] == [
        ("LVK", 0.0), ("Fermi", 1.71)]
    assert {s["name"] for s in gw_grb["significance"]} == {"raven_temporal_far"}
    hen_grb = coincidences["hen-grb"]
    assert hen_grb["spatial_overlap"]["integral"] > 1  # the circles agree
    for c in coincidences.values():
        assert alerts_schema.validation_errors("coincidence", c) == []


def test_ingest_shows_a_table_and_reasons(tmp_path: Path) -> None:
    bad = tmp_path / "pickle.bin"
    bad.write_bytes(b"\x80\x04\x95\x00")
    proc = mmbroker("--db", new_archive(tmp_path / "t.sqlite3"), "ingest", "--source", "snews",
                    str(bad))
    assert "ingest summary" in proc.stdout and "snews" in proc.stdout
    assert "pickle" in proc.stderr


@pytest.mark.parametrize(("args", "message"), [
    (["alerts", "list", "--cone", "1,2"], "--cone wants"),
    (["alerts", "list", "--cone", "1,100,2"], "out of range"),
    (["alerts", "list", "--since", "yesterday"], "not an ISO 8601 time"),
    (["token", "create", "--scope", "root"], "unknown or missing scope"),
])
def test_clear_errors(args: list[str], message: str, tmp_path: Path,
                      capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--db", new_archive(tmp_path / "e.sqlite3"), *args]) == 2
    assert message in capsys.readouterr().err


def test_tokens(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = new_archive(tmp_path / "tok.sqlite3")
    assert main(["--db", db, "token", "create", "--scope", "write:triggers", "--name", "km3"]) == 0
    token = capsys.readouterr().out.strip()
    assert token.startswith("mmb_") and len(token) > 40
    assert main(["--db", db, "token", "list", "-f", "json"]) == 0
    (listed,) = json.loads(capsys.readouterr().out)
    assert listed["name"] == "km3" and token not in json.dumps(listed)
    assert main(["--db", db, "token", "revoke", str(listed["id"])]) == 0
    assert main(["--db", db, "token", "revoke", str(listed["id"])]) == 1


def test_streams_shows_health_and_heartbeats(tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    db = new_archive(tmp_path / "streams.sqlite3")
    data = Path(__file__).parent / "data"
    assert main(["--db", db, "ingest", "--source", "gcn.heartbeat", "-f", "json",
                 str(data / "gcn" / "gcn.heartbeat.example.json")]) == 0
    assert main(["--db", db, "ingest", "--source", "gcn.notices.swift.bat.guano", "-f", "json",
                 str(data / "gcn" / "notices__swift__bat__Guano.example.json"),
                 str(tmp_path.joinpath("junk.json").write_bytes(b"{") and
                     tmp_path / "junk.json")]) == 0
    capsys.readouterr()
    assert main(["--db", db, "streams", "-f", "json"]) == 0
    rows = {r["stream"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["gcn.heartbeat"]["heartbeat_age_s"] is not None
    guano = rows["gcn.notices.swift.bat.guano"]
    assert (guano["messages"], guano["quarantined"]) == (2, 1)
    assert guano["last_message_age_s"] < 60


def test_calibrate_gates_scrambled_pairs_on_the_sky(tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    from alerts_schema.synthetic import alert_documents

    db = new_archive(tmp_path / "cal.sqlite3")
    files = []
    for i, doc in enumerate(alert_documents(400, seed=5)):  # one year, uniform on the sky
        files.append(tmp_path / f"{i}.json")
        files[-1].write_text(json.dumps(doc))
    assert main(["--db", db, "ingest", "--format", "json", *map(str, files)]) == 0
    capsys.readouterr()
    counts = {}
    for flag in ("--spatial", "--no-spatial"):
        assert main(["--db", db, "crossmatch", "calibrate", "--format", "json",
                     "--pairing", "grb-optical", "--scrambles", "20", flag]) == 0
        (row,) = json.loads(capsys.readouterr().out)
        assert row["spatial_gate"] is (flag == "--spatial")
        counts[flag] = row["observed_count"]
    # GBM circles and optical points at random: the engine's sky test keeps few.
    assert 0 <= counts["--spatial"] < counts["--no-spatial"] / 20
    assert counts["--no-spatial"] > 100


# -- issue 19: a CLI that fits a terminal, mistakes caught ---------------------------

RAW_FLOAT = re.compile(r"\d\.\d{7,}")
"""A float printed with its binary noise (197.57812500000003)."""


@pytest.fixture
def examples_db(tmp_path: Path) -> str:
    """The example alerts ingested: five alerts, three coincidences."""
    db = new_archive(tmp_path / "examples.sqlite3")
    files = [str(p) for p in alerts_schema.example_paths("alert")]
    mmbroker("--db", db, "ingest", "--format", "json", *files)
    return db


def test_tables_fit_80_columns_with_every_ivorn_whole(examples_db: str) -> None:
    narrow = {"COLUMNS": "80"}
    alerts = json.loads(mmbroker("--db", examples_db, "alerts", "list", "-f", "json").stdout)
    coincidences = json.loads(mmbroker("--db", examples_db, "coincidences", "list", "-f",
                                       "json").stdout)
    for command, docs in ((["alerts", "list"], alerts),
                          (["coincidences", "list"], coincidences)):
        out = mmbroker("--db", examples_db, *command, env=narrow).stdout
        lines = out.splitlines()
        assert max(len(line.rstrip()) for line in lines) <= 80, out
        assert "…" not in out and "..." not in out
        words = set(out.split())
        for doc in docs:
            assert doc["id"] in words, (doc["id"], out)  # whole, on one line
        assert not RAW_FLOAT.search(out)
    table = mmbroker("--db", examples_db, "alerts", "list", env=narrow).stdout
    assert "2026-11-21T03:12:47.020Z" in table  # times to the ms
    assert "197.4500" in table and "9.1e-14" in table  # RA/Dec 4 decimals, FAR 3 figures
    wide = mmbroker("--db", examples_db, "alerts", "list", "--wide", env=narrow).stdout
    header = next(line for line in wide.splitlines() if line.startswith("IVORN"))
    assert header.split() == ["IVORN", "time", "(UTC)", "messenger", "facility", "type",
                              "role", "RA", "Dec", "FAR"]
    assert "gravitational_wave" in wide and "-23.3800" in wide
    roomy = mmbroker("--db", examples_db, "alerts", "list", env={"COLUMNS": "160"}).stdout
    assert max(len(line.rstrip()) for line in roomy.splitlines()) <= 160
    assert all(doc["id"] in roomy.split() for doc in alerts)
    assert "IVORN" in roomy.splitlines()[1]  # a real table at 160 columns


def test_calibrate_table_keeps_its_header_at_80_columns(examples_db: str) -> None:
    out = mmbroker("--db", examples_db, "crossmatch", "calibrate", "--scrambles", "2",
                   "--no-spatial", env={"COLUMNS": "80"}).stdout
    assert max(len(line.rstrip()) for line in out.splitlines()) <= 80, out
    header = next(line for line in out.splitlines() if line.startswith("pairing"))
    assert "observed (Hz)" in header and "…" not in out
    assert not RAW_FLOAT.search(out)


def test_version_and_short_help() -> None:
    assert mmbroker("--version").stdout.strip().startswith("mmbroker ")
    assert "Usage" in mmbroker("-h").stdout
    assert "--far-max" in mmbroker("coincidences", "list", "-h").stdout


def test_coincidences_show_and_filters(examples_db: str,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    def listed(*args: str) -> list[str]:
        assert main(["--db", examples_db, "coincidences", "list", "-f", "json", *args]) == 0
        return sorted(c["pairing"] for c in json.loads(capsys.readouterr().out))

    assert listed() == ["gw-hen", "gw_cbc-grb", "hen-grb"]
    assert listed("--pairing", "hen-grb") == ["hen-grb"]
    assert listed("--pairing", "hen-grb", "--pairing", "gw-hen") == ["gw-hen", "hen-grb"]
    assert listed("--state", "retracted") == []
    assert listed("--state", "new", "--far-max", "1e-17") == ["gw_cbc-grb"]  # 6.3e-18 Hz
    assert listed("--since", "2026-11-21T03:12:30Z") == ["gw-hen", "gw_cbc-grb"]
    assert listed("--until", "2026-11-21T03:12:30Z") == ["hen-grb"]
    assert main(["--db", examples_db, "coincidences", "list", "--state", "old"]) == 2
    capsys.readouterr()

    ivorn = json.loads(mmbroker("--db", examples_db, "coincidences", "list", "--pairing",
                                "hen-grb", "-f", "json").stdout)[0]["id"]
    assert main(["--db", examples_db, "coincidences", "show", ivorn, "-f", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["id"] == ivorn
    out = mmbroker("--db", examples_db, "coincidences", "show", ivorn,
                   env={"COLUMNS": "80"}).stdout
    assert ivorn in out.split() and "ivo://local.mmbroker/detector#ARCA-12041-883201-0" in out
    assert "+25.215" in out and "raven_space_time_far = 3.96e-12 Hz (upper bound)" in out
    assert "RAVEN untargeted" in out  # each figure's definition
    missing = mmbroker("--db", examples_db, "coincidences", "show", ivorn + "x", check=False)
    assert missing.returncode == 1 and "no coincidence" in missing.stderr


def _with_tty_stderr(args: list[str]) -> tuple[int, bytes]:
    """Run mmbroker with stderr on a pseudo-terminal; its exit status and what it drew."""
    import os
    import pty
    import subprocess
    import sys

    exe = Path(sys.executable).with_name("mmbroker")
    leader, follower = pty.openpty()
    proc = subprocess.Popen([str(exe), *args], stdout=subprocess.DEVNULL, stderr=follower,
                            env={**os.environ, "COLUMNS": "100"})
    os.close(follower)
    drawn = b""
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the follower side closed
            break
        if not chunk:
            break
        drawn += chunk
    os.close(leader)
    return proc.wait(timeout=120), drawn


def test_long_commands_show_progress_on_a_terminal_only(examples_db: str) -> None:
    args = ["--db", examples_db, "crossmatch", "calibrate", "--scrambles", "50",
            "--no-spatial"]
    status, drawn = _with_tty_stderr(args)
    assert status == 0 and b"calibrating" in drawn, drawn
    piped = mmbroker(*args)
    assert "calibrating" not in piped.stderr and "\x1b[" not in piped.stderr
    status, drawn = _with_tty_stderr(["--db", examples_db, "ingest", *map(
        str, alerts_schema.example_paths("alert"))])
    assert status == 0 and b"ingesting" in drawn


def test_calibrate_pairing_does_not_depend_on_its_neighbours() -> None:
    from alerts_schema import Alert
    from alerts_schema.synthetic import alert_documents
    from crossmatch.calibration import calibrate_alerts
    from crossmatch.config import load_config

    config = load_config(None)
    alerts = [Alert.model_validate(d) for d in alert_documents(400, seed=5)]
    names = [p.name for p in config.pairings]
    assert names.index("grb-optical") > 0

    def count(*pairings: str) -> int:
        results = calibrate_alerts(config, alerts, n_scrambles=20, seed=3,
                                   pairings=list(pairings))
        return next(r.observed_count for r in results if r.pairing == "grb-optical")

    alone = count("grb-optical")
    assert alone > 0
    assert count("grb-optical", names[0]) == alone
    assert count(*names) == alone


def test_only_db_upgrade_and_serve_make_an_archive(tmp_path: Path) -> None:
    typo = tmp_path / "archvie.sqlite3"
    for command in (["alerts", "list"], ["coincidences", "list"], ["token", "list"],
                    ["ingest", str(alerts_schema.example_paths("alert")[0])],
                    ["streams"], ["db", "current"]):
        proc = mmbroker("--db", str(typo), *command, check=False)
        assert proc.returncode != 0 and proc.stdout == "", command
        (line,) = proc.stderr.strip().splitlines()
        assert f"no archive at {typo}" in line and "db upgrade" in line
        assert not typo.exists()
    assert "revision" in mmbroker("--db", str(typo), "db", "upgrade").stdout
    assert typo.exists()
    assert mmbroker("--db", str(typo), "alerts", "list").returncode == 0


@pytest.mark.parametrize("db", ["{tmp}/nonexistent/dir/a.sqlite3", "htp:/foo", "htp://foo",
                                "sqlite:///{tmp}/missing/dir/a.sqlite3"])
@pytest.mark.parametrize("command", [["alerts", "list"], ["db", "upgrade"]])
def test_bad_db_is_one_line_and_creates_nothing(db: str, command: list[str],
                                                tmp_path: Path) -> None:
    import subprocess
    import sys

    db = db.format(tmp=tmp_path)
    before = set(tmp_path.iterdir())
    proc = subprocess.run([str(Path(sys.executable).with_name("mmbroker")), "--db", db,
                           *command], capture_output=True, text=True, cwd=tmp_path,
                          timeout=60, check=False)
    assert proc.returncode != 0
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("error: ")
    assert set(tmp_path.iterdir()) == before  # no ./htp:, no folder


def test_unreachable_or_empty_postgresql_is_one_line(pg_url: str) -> None:
    from tests.conftest import free_port

    dead = f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/test"
    for url in (dead, pg_url):
        proc = mmbroker("--db", url, "alerts", "list", check=False)
        assert proc.returncode == 1
        (line,) = proc.stderr.strip().splitlines()
        assert "Traceback" not in proc.stderr
        assert ("cannot open the archive" in line) if url == dead else (
            "holds no mmbroker archive" in line and "db upgrade" in line)
    assert mmbroker("--db", pg_url, "db", "upgrade").returncode == 0
    assert mmbroker("--db", pg_url, "alerts", "list", "-f", "json").stdout.strip() == "[]"


def test_global_option_after_the_command_gets_a_hint(tmp_path: Path) -> None:
    proc = mmbroker("alerts", "list", "--db", "x.sqlite3", "-n", "3", check=False)
    assert proc.returncode == 2
    assert "hint: --db belongs to mmbroker itself, so it goes before the command: " \
           "mmbroker --db x.sqlite3 alerts list -n 3" in proc.stderr


def test_bad_setting_names_its_environment_variable(tmp_path: Path) -> None:
    proc = mmbroker("--db", new_archive(tmp_path / "s.sqlite3"), "alerts", "list",
                    env={"MMBROKER_HTTP_PORT": "99999"}, check=False)
    assert proc.returncode == 2
    (line,) = proc.stderr.strip().splitlines()
    assert "MMBROKER_HTTP_PORT" in line and "99999" in line


def test_alembic_is_quiet_at_the_default_log_level(tmp_path: Path) -> None:
    import subprocess
    import sys

    code = ("from broker import logs; from broker.archive import migrate; "
            "from broker.archive.db import make_engine; "
            "logs.configure('INFO'); "
            f"migrate.upgrade(make_engine('sqlite:///{tmp_path / 'q.sqlite3'}'))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, check=True)
    assert "alembic" not in proc.stderr and proc.stderr == ""


def test_serve_freezes_its_startup_heap_last() -> None:
    """`serve`'s last startup hook moves what startup built out of the collector's reach
    (full collections scan only what came later): after the listeners, the ops server
    and the demo, so what they build is frozen too."""
    import gc

    from rich.console import Console

    from broker import cli
    from broker.config import get_settings

    for demo in (False, True):
        hooks = cli._startup_hooks(get_settings(), Console(), demo=demo)
        assert hooks[-1] is cli._freeze_startup_heap
        assert len(hooks) == 3 + demo
    try:
        cli._freeze_startup_heap(None)
        assert gc.get_freeze_count() > 10_000
    finally:
        gc.unfreeze()
