"""The command line: --help everywhere, and each command doing its job."""

from __future__ import annotations

import json
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
    db = str(tmp_path / "cli.sqlite3")
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
    proc = mmbroker("--db", str(tmp_path / "t.sqlite3"), "ingest", "--source", "snews", str(bad))
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
    assert main(["--db", str(tmp_path / "e.sqlite3"), *args]) == 2
    assert message in capsys.readouterr().err


def test_tokens(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = str(tmp_path / "tok.sqlite3")
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
    db = str(tmp_path / "streams.sqlite3")
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

    db = str(tmp_path / "cal.sqlite3")
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
