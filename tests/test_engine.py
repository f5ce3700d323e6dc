"""The cross-match engine: windows, roles, lifecycle, sky gate, N-fold, restore."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from alerts_schema import Alert, validation_errors
from crossmatch.config import load_config
from crossmatch.engine import Engine, Result, result_key
from listeners import snews
from listeners.base import MessageMeta
from tests.conftest import SAMPLES

T0 = datetime(2026, 11, 21, 3, 12, 45, tzinfo=UTC)
CONFIG = load_config()


def engine() -> Engine:
    return Engine(CONFIG, authority="test.mmbroker", clock=None)


def alert(kind: str, event_id: str, dt_s: float = 0.0, *, revision: int = 0,
          role: str = "observation", ra: float = 197.0, dec: float = -23.0,
          radius: float = 2.0, alert_type: str | None = None, far: float | None = 1e-9,
          **extra: Any) -> Alert:
    base: dict[str, Any] = {
        "gw": {"source": "igwn.gwalert", "messenger": "gravitational_wave", "facility": "LVK",
               "extra": {"group": "CBC"}},
        "gw_burst": {"source": "igwn.gwalert", "messenger": "gravitational_wave",
                     "facility": "LVK", "extra": {"group": "Burst"}},
        "grb": {"source": "gcn.notices.fermi.gbm", "messenger": "gamma_ray",
                "facility": "Fermi", "instrument": "GBM"},
        "nu": {"source": "detector", "messenger": "neutrino", "facility": "KM3NeT"},
    }[kind]
    doc = {
        "schema_version": "1.0", "id": f"ivo://test.mmbroker/{kind}#{event_id}-{revision}",
        "event_id": event_id, "revision": revision,
        "alert_type": alert_type or ("initial" if revision == 0 else "update"),
        "role": role, "trigger_time": T0 + timedelta(seconds=dt_s),
        "localization": {"kind": "point", "ra_deg": ra, "dec_deg": dec,
                         "error_radius_deg": radius, "containment": 0.9},
        "far_hz": far, "data_rights": {"level": "public"}, **base,
    }
    doc["extra"] = {**doc.get("extra", {}), **extra}
    return Alert.model_validate(doc)


def feed(e: Engine, *alerts: Alert) -> list[Result]:
    return [r for a in alerts for r in e.process(a)]


def check(results: list[Result]) -> None:
    for r in results:
        assert validation_errors("coincidence", r.coincidence.to_document()) == []


@pytest.mark.parametrize(("dt", "found"), [
    (-1.0, True), (5.0, True), (0.0, True), (-1.001, False), (5.001, False),
])
def test_gw_cbc_grb_window_edges_are_inclusive(dt: float, found: bool) -> None:
    results = feed(engine(), alert("gw", "S1"), alert("grb", "G1", dt))
    pairs = [r for r in results if r.coincidence.pairing == "gw_cbc-grb"]
    assert bool(pairs) is found
    check(results)
    if found:
        (result,) = pairs
        members = result.coincidence.members
        assert [m.facility for m in members] == ["LVK", "Fermi"]  # side a is the reference
        assert members[1].time_offset_s == pytest.approx(dt)


def test_arrival_order_does_not_matter() -> None:
    first = feed(engine(), alert("gw", "S1"), alert("grb", "G1", 2.0))
    second = feed(engine(), alert("grb", "G1", 2.0), alert("gw", "S1"))
    assert {r.key for r in first} == {r.key for r in second}


def test_burst_window_is_wider() -> None:
    assert any(r.coincidence.pairing == "gw_burst-grb"
               for r in feed(engine(), alert("gw_burst", "S2"), alert("grb", "G2", 400.0)))
    assert not feed(engine(), alert("gw", "S3"), alert("grb", "G3", 400.0))


def test_roles_never_mix() -> None:
    assert not feed(engine(), alert("gw", "S1", role="test"), alert("grb", "G1", 1.0))
    assert not feed(engine(), alert("gw", "S1"), alert("grb", "G1", 1.0, role="drill"))
    tests = feed(engine(), alert("gw", "S1", role="test"), alert("grb", "G1", 1.0, role="test"))
    assert tests and all(r.coincidence.pairing for r in tests)


def test_sky_gate_and_overlap() -> None:
    near = feed(engine(), alert("nu", "N1", radius=1.0),
                alert("grb", "G1", 30.0, ra=198.0, radius=5.0))
    (result,) = [r for r in near if r.coincidence.pairing == "hen-grb"]
    overlap = result.coincidence.spatial_overlap
    assert overlap is not None and overlap.integral > 10
    names = {s.name for s in result.coincidence.significance}
    assert {"raven_temporal_far", "raven_space_time_far"} <= names
    far_away = feed(engine(), alert("nu", "N1", radius=1.0),
                    alert("grb", "G1", 30.0, ra=17.0, dec=23.0, radius=5.0))
    assert not [r for r in far_away if r.coincidence.pairing == "hen-grb"]


def test_update_supersedes_and_retraction_retracts() -> None:
    e = engine()
    (new,) = feed(e, alert("gw", "S1"), alert("grb", "G1", 1.0))
    assert (new.coincidence.state, new.coincidence.revision) == ("new", 0)
    (updated,) = e.process(alert("gw", "S1", revision=1, far=1e-12))
    assert updated.coincidence.state == "updated" and updated.coincidence.revision == 1
    assert updated.coincidence.supersedes == new.coincidence.id
    assert updated.coincidence.members[0].revision == 1
    assert updated.key != new.key
    assert e.process(alert("gw", "S1", revision=1, far=1e-12)) == []  # same revision again
    assert e.process(alert("gw", "S1", revision=0)) == []  # an older one, late
    (retracted,) = e.process(alert("grb", "G1", 1.0, revision=1, alert_type="retraction"))
    assert retracted.coincidence.state == "retracted"
    assert retracted.coincidence.supersedes == updated.coincidence.id
    check([new, updated, retracted])


def test_update_out_of_the_window_retracts() -> None:
    e = engine()
    feed(e, alert("gw", "S1"), alert("grb", "G1", 1.0))
    (moved,) = e.process(alert("grb", "G1", 30.0, revision=1))
    assert moved.coincidence.state == "retracted"


def test_results_are_idempotent_per_members_revisions_and_config() -> None:
    a, b = alert("gw", "S1"), alert("grb", "G1", 1.0)
    assert feed(engine(), a, b)[0].key == result_key([a, b], CONFIG.config_hash)
    assert result_key([a, b], CONFIG.config_hash) != result_key([a, b], "0" * 64)


def test_warm_restores_state_after_a_restart() -> None:
    first = engine()
    (new,) = feed(first, alert("gw", "S1"), alert("grb", "G1", 1.0))
    restarted = engine()
    restarted.warm([alert("gw", "S1"), alert("grb", "G1", 1.0)], [new.coincidence])
    assert restarted.process(alert("grb", "G1", 1.0)) == []  # nothing new
    (updated,) = restarted.process(alert("gw", "S1", revision=1))
    assert updated.coincidence.supersedes == new.coincidence.id
    assert updated.coincidence.revision == 1


# -- SNEWS N-fold -------------------------------------------------------------------

def _scenarios() -> dict[str, list[dict[str, Any]]]:
    path = Path(__file__).parent / "data" / "snews" / "pt" / "scenarios.json"
    return json.loads(path.read_text())


SN_EXPECTED = {
    # scenario: sets of detectors in the final coincidences
    "simple coincidence": [{"XENONnT", "DS-20K"}],
    "exact 10s coincidence": [{"XENONnT", "DUNE"}],
    "two coincidences": [{"XENONnT", "DS-20K"}, {"JUNO", "Baksan"}],
    "same message submitted twice": [],
    "same detector submits within 1sec": [],
    "3 coincident message, out of order": [{"DUNE", "DS-20K", "XENONnT"}],
    # Triggers at 10, 19, 21, 22, 20, 29, 18 s arriving in that order: no single
    # 10-s window holds them all; each joins the largest group it fits.
    "msgs at 10, 19, 21, 22, 20, 29, 18 seconds": [
        {"Borexino", "IceCube", "JUNO"}, {"IceCube", "NOvA", "DS-20K", "HALO", "XENONnT"}],
}


@pytest.mark.parametrize("name", sorted(SN_EXPECTED))
def test_snews_scenarios(name: str) -> None:
    e = engine()
    latest: dict[str, Any] = {}
    received = T0
    for message in _scenarios()[name]:
        received += timedelta(seconds=1)
        meta = MessageMeta("snews.observation", received, "test.mmbroker")
        for a in snews.normalize(json.dumps(message).encode(), meta).alerts:
            for r in e.process(a):
                check([r])
                ident = r.coincidence.id.rsplit("-", 1)[0]
                latest[ident] = r.coincidence
    found = [{m.facility for m in c.members} for c in latest.values()
             if c.pairing == "sn_nfold" and c.state != "retracted"]
    assert sorted(map(sorted, found)) == sorted(map(sorted, SN_EXPECTED[name]))
    for c in latest.values():
        names = {s.name for s in c.significance}
        assert "nfold_chance_rate" in names or "fisher_p" in names


def test_shared_snews_scenarios_match_the_shipped_copy() -> None:
    shared = SAMPLES / "snews" / "pt" / "scenarios.json"
    if not shared.is_file():
        pytest.skip(f"{shared} absent: the shared samples are not beside this clone")
    assert json.loads(shared.read_text()) == _scenarios()


@pytest.mark.timeout(300)
def test_calibrate_command_on_a_synthetic_background(tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """Alerts at the configured background rates, archived, then `crossmatch calibrate`."""
    import numpy as np

    from broker.cli import main
    from crossmatch.calibration import synthetic_background

    pairing = CONFIG.pairing("hen-grb")
    rates = {"nu": CONFIG.side_rate_hz(pairing, "a"), "grb": CONFIG.side_rate_hz(pairing, "b")}
    # Scale both streams up (same ratio of rates) so years of background fit in three
    # days: ~100 neutrinos and ~570 GRBs, ~190 chance pairs per scramble within the
    # +-500 s window, ~38,000 over 200 scrambles (0.5% counting error).  The fixed
    # seed makes the draw, and so the ratio, reproducible.
    span = 3 * 86400.0
    scale = 100 / (rates["nu"] * span)
    streams = synthetic_background({k: v * scale for k, v in rates.items()}, span, seed=7)
    rng = np.random.default_rng(8)
    files = []
    for kind, times in (("nu", streams["nu"]), ("grb", streams["grb"])):
        for i, t in enumerate(times):
            a = alert(kind, f"{kind}{i}", float(t), ra=float(rng.uniform(0, 360)),
                      dec=float(np.degrees(np.arcsin(rng.uniform(-1, 1)))))
            path = tmp_path / f"{kind}{i}.json"
            path.write_text(json.dumps(a.to_document()))
            files.append(str(path))
    db = str(tmp_path / "calib.sqlite3")
    assert main(["--db", db, "db", "upgrade"]) == 0
    assert main(["--db", db, "ingest", "-f", "json", *files]) == 0
    capsys.readouterr()
    assert main(["--db", db, "crossmatch", "calibrate", "--pairing", "hen-grb",
                 "--no-spatial", "--scrambles", "200", "-f", "json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["pairing"] == "hen-grb" and row["observed_count"] > 10_000
    # Against the rates of the archived events themselves, the count is exact...
    assert row["observed_rate_hz"] / row["expected_rate_hz"] == pytest.approx(1.0, rel=0.05)
    # ...and against the configured rates (times `scale`, as archived) within 20%.
    assert row["ratio"] / scale**2 == pytest.approx(1.0, rel=0.2)


def test_identical_exact_positions_give_a_finite_overlap() -> None:
    results = feed(engine(), alert("nu", "N1", radius=0.0), alert("grb", "G1", 10.0, radius=0.0))
    (result,) = [r for r in results if r.coincidence.pairing == "hen-grb"]
    assert result.coincidence.spatial_overlap.integral == 1e300
    check(results)


def test_engine_forgets_what_the_window_lets_go(monkeypatch: pytest.MonkeyPatch) -> None:
    from crossmatch import engine as engine_module

    monkeypatch.setattr(engine_module, "ROUND_MAX", 500)

    e = Engine(CONFIG, authority="test.mmbroker", clock=None, live_window_s=3600.0)
    feed(e, alert("gw", "S0"), alert("grb", "G0", 1.0))
    # (the last alerts processed are kept for their round: see ROUND_MAX)
    recent = 2 * max(engine_module.ROUND_MAX, engine_module.EXPIRE_EVERY)
    for i in range(recent + engine_module.EXPIRE_EVERY):
        e.process(alert("nu", f"late{i}", 7200.0 + i, ra=float(i % 360)))
    assert ("igwn.gwalert", "S0") not in e._events
    assert not any(("igwn.gwalert", "S0") in t.members for t in e._tracked.values())
    assert len(e._events) <= recent + engine_module.EXPIRE_EVERY + 2


def optical(event_id: str, dt_s: float, ra: float = 197.0, dec: float = -23.0) -> Alert:
    """A ZTF transient (0.0003 deg error) ``dt_s`` after T0."""
    base = alert("nu", event_id, dt_s, radius=0.0003, ra=ra, dec=dec).to_document()
    base.update(source="ztf", messenger="optical", facility="ZTF", instrument=None,
                id=f"ivo://test.mmbroker/ztf#{event_id}-0")
    return Alert.model_validate(base)


def test_partners_beyond_the_live_window_come_from_history() -> None:
    """A short memory still finds a neutrino-optical follow-up days later, via the archive."""
    neutrino = alert("nu", "N1", 0.0, radius=1.0)
    later = optical("Z1", 2 * 86400.0)  # two days after, inside the 1 deg circle
    asked: list[tuple[float, ...]] = []

    def history(t_lo, t_hi, ra, dec, radius, *, messengers=None):  # type: ignore[no-untyped-def]
        asked.append((t_lo, t_hi))
        return [neutrino] if t_lo <= neutrino.trigger_time.timestamp() <= t_hi else []

    e = Engine(CONFIG, authority="test.mmbroker", clock=None, live_window_s=3600.0,
               history=history)
    e.process(alert("gw", "S9", 2 * 86400.0 - 60))  # moves the index past the neutrino
    results = e.process(later)
    assert asked, "the engine did not ask the archive"
    assert "hen-optical" in [r.coincidence.pairing for r in results]


def test_batched_sky_map_overlaps_equal_the_overlap_module() -> None:
    """The vectorized one-pixel path gives what overlap() gives, gate included."""
    import hashlib

    import numpy as np

    from broker.demo import gaussian_multiorder_fits
    from crossmatch.localization import from_alert
    from crossmatch.overlap import overlap

    data = gaussian_multiorder_fits(197.45, -23.38, 6.0)
    sha = hashlib.sha256(data).hexdigest()
    gw = alert("gw", "S1").to_document()
    gw["localization"] = {"kind": "skymap", "skymap_sha256": sha, "format": "multiorder"}
    gw = Alert.model_validate(gw)
    rng = np.random.default_rng(3)
    optical = []
    for i in range(60):
        doc = alert("nu", f"Z{i}", 3600.0 + i, ra=float(197.45 + rng.normal(0, 12)),
                    dec=float(np.clip(-23.38 + rng.normal(0, 12), -89, 89)),
                    radius=0.0003).to_document()
        doc.update(source="ztf", messenger="optical", facility="ZTF", instrument=None,
                   id=f"ivo://test.mmbroker/ztf#Z{i}-0")
        optical.append(Alert.model_validate(doc))
    e = Engine(CONFIG, authority="test.mmbroker", clock=None, skymap_loader=lambda _s: data)
    e.warm(optical, [])
    results = {r.coincidence.members[1].alert_id: r for r in e.process(gw)
               if r.coincidence.pairing == "gw-optical"}
    sky = from_alert(gw, {sha: data})
    expected = {}
    for o in optical:
        ref = overlap(sky, from_alert(o, {}), credible_level=0.9)
        if not ref.gated and ref.integral > 0:
            expected[o.id] = ref.integral
    assert 5 < len(expected) < 60  # some inside the 90% region, some not
    assert set(results) == set(expected)
    for ivorn, integral in expected.items():
        got = results[ivorn].coincidence.spatial_overlap.integral
        assert got == pytest.approx(integral, rel=1e-6)


def test_a_grown_nfold_group_keeps_its_series_across_a_restart() -> None:
    messages = _scenarios()["3 coincident message, out of order"]

    def sn_alerts(e: Engine) -> list[Result]:
        out, received = [], T0
        for message in messages:
            received += timedelta(seconds=1)
            meta = MessageMeta("snews.observation", received, "test.mmbroker")
            for a in snews.normalize(json.dumps(message).encode(), meta).alerts:
                out.extend(e.process(a))
        return out

    first = engine()
    results = [r for r in sn_alerts(first) if r.coincidence.pairing == "sn_nfold"]
    assert [r.coincidence.revision for r in results] == [0, 1]  # grew from 2 to 3
    series = results[0].coincidence.id.rsplit("-", 1)[0]
    restarted = engine()
    restarted.warm(list(first._events.values()), [r.coincidence for r in results])
    assert len({t.series for t in restarted._tracked.values()}) == 1
    (tracked,) = restarted._tracked.values()
    assert tracked.series == series and tracked.revision == 1


class _Archive:
    """The archive as the engine sees it (pure-logic stand-in): what was stored, by IVORN,
    and what was matched by cone and time (positions only, as the broker's query, with
    the events' later revisions); calls counted."""

    def __init__(self) -> None:
        self.alerts: dict[str, Alert] = {}
        self.matched: set[str] | None = None  # None: every alert counts as matched
        self.asked = {"history": 0, "loader": 0}

    def history(self, t_lo: float, t_hi: float, ra: float | None, dec: float | None,
                radius: float | None, *, messengers: frozenset[str] | None = None
                ) -> list[Alert]:
        from crossmatch.healpix import angular_separation_deg

        self.asked["history"] += 1
        cone = ra is not None and dec is not None and bool(radius)
        done = [a for a in self.alerts.values()
                if self.matched is None or a.id in self.matched]
        found = [a for a in done
                 if (messengers is None or a.messenger in messengers)
                 and t_lo <= a.trigger_time.timestamp() <= t_hi and (not cone or (
                     getattr(a.localization, "ra_deg", None) is not None
                     and angular_separation_deg(ra, dec, a.localization.ra_deg,
                                                a.localization.dec_deg) <= radius))]
        # With every later revision of the events found (a retraction has no position).
        events = {(a.source, a.event_id) for a in found}
        return found + [a for a in done
                        if (a.source, a.event_id) in events and a not in found]

    def loader(self, ivorns: Any) -> list[Alert]:
        self.asked["loader"] += 1
        return [self.alerts[i] for i in ivorns if i in self.alerts]


def test_each_alert_is_held_as_long_as_a_pairing_reaches_back_for_it(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Retention comes from the windows: hen-optical reaches 10 days back from a transient
    to a neutrino, nothing reaches back to a transient, so a survey stream is held for the
    slack alone while the neutrino stays."""
    from crossmatch import engine as engine_module

    monkeypatch.setattr(engine_module, "ROUND_MAX", 500)
    e = Engine(CONFIG, authority="test.mmbroker", clock=None, late_slack_s=600.0)
    base, longer = e.retention_by_messenger()
    # Reaches under the slack (gw_burst-frb's 120 s back to an FRB) are held for the
    # slack; longer ones for the longest reach, hen-optical's 10 days, plus a day.
    assert base == 600.0
    assert longer == dict.fromkeys(("gamma_ray", "gravitational_wave", "neutrino"),
                                   11 * 86400.0)
    assert e.window_s == 11 * 86400.0
    feed(e, alert("nu", "N1", 0.0), optical("Z0", 10.0, ra=20.0))
    recent = 2 * max(engine_module.ROUND_MAX, engine_module.EXPIRE_EVERY)
    n = recent + 3 * engine_module.EXPIRE_EVERY
    for i in range(n):  # two and a half days of survey alerts, away from the neutrino
        e.process(optical(f"Z{i + 1}", 3600.0 + i * 45.0, ra=float(40 + i % 300)))
    assert ("detector", "N1") in e._held
    assert ("ztf", "Z0") not in e._held
    # What is held of the survey is its last slack (+ the last rounds' and one sweep's
    # worth), not the days.
    survey = [k for k in e._held if k[0] == "ztf"]
    assert 600.0 / 45.0 <= len(survey) <= recent + engine_module.EXPIRE_EVERY + 1
    assert e.live_alerts <= len(e._held)
    # A transient nine days on still finds the neutrino, from memory.
    asked = _Archive()
    e.history = asked.history
    results = e.process(optical("Z-late", 9 * 86400.0))
    assert [r.coincidence.pairing for r in results] == ["hen-optical"]
    assert asked.asked["history"] == 0


def _sn(facility: str, dt_s: float) -> Alert:
    """One SN neutrino detector's CoincidenceTier message ``dt_s`` after T0."""
    base = alert("nu", f"SN-{facility}", dt_s, snews_tier="CoincidenceTier").to_document()
    base.update(source="snews.observation", facility=facility, localization={"kind": "none"},
                id=f"ivo://test.mmbroker/snews#SN-{facility}-0")
    return Alert.model_validate(base)


def _mixed_stream(seed: int) -> list[Alert]:
    """Three days of a survey around five neutrinos and GRBs, two of them arriving two
    hours late and one five minutes late, one neutrino's update a day later, a transient
    retracted before a late neutrino looks for it, and two SN detectors' messages, one two
    hours late: in arrival order."""
    import random

    rng = random.Random(seed)
    sites = [(float(rng.uniform(0, 350)), float(rng.uniform(-60, 60))) for _ in range(5)]
    events = []
    for k, (ra, dec) in enumerate(sites):
        t = rng.uniform(0, 86400.0)
        kind = "nu" if k % 2 == 0 else "grb"
        first = alert(kind, f"{kind.upper()}{k}", t, ra=ra, dec=dec, radius=1.0)
        late = {0: 7200.0, 1: 7200.0, 3: 300.0}.get(k, rng.uniform(10.0, 60.0))
        events.append((t + late, first))
        # A transient on it soon after: in the archive only, or (k = 3) still in memory.
        events.append((t + 130.0, optical(f"P{k}", t + 100.0, ra=ra + 0.05, dec=dec)))
        if k == 0:
            update = alert(kind, f"{kind.upper()}{k}", t, revision=1, ra=ra + 0.1, dec=dec,
                           radius=0.8)
            events.append((t + 86400.0, update))
            # A GRB on it in time, and a transient on both as late as the neutrino: the
            # neutrino's search finds the transient in the archive before its own turn,
            # whose search must still find the GRB.
            events.append((t + 80.0, alert("grb", "G-on-N0", t + 50.0, ra=ra, dec=dec,
                                            radius=2.0)))
            events.append((t + 7201.0, optical(f"L{k}", t + 200.0, ra=ra, dec=dec)))
        if k == 1:  # a transient after the GRB, matched just before it (both late)
            events.append((t + late - 1.0, optical(f"U{k}", t + 300.0, ra=ra, dec=dec)))
            # Retracted before the late neutrino arrives: found by neither engine.
            gone = optical(f"R{k}", t + 1000.0, ra=ra, dec=dec)
            events.append((t + 1030.0, gone))
            events.append((t + 1100.0, Alert.model_validate({
                **gone.to_document(), "id": f"ivo://test.mmbroker/ztf#R{k}-1", "revision": 1,
                "alert_type": "retraction", "localization": {"kind": "none"}})))
        if k == 2:  # a GRB on the neutrino: hen-grb
            events.append((t + 130.0, alert("grb", "G-on-N2", t + 100.0, ra=ra, dec=dec,
                                             radius=2.0)))
    t_sn = rng.uniform(0, 86400.0)
    events += [(t_sn + 5.0, _sn("Super-K", t_sn)), (t_sn + 7200.0, _sn("IceCube", t_sn + 4.0))]
    for i in range(600):
        ra, dec = sites[i % 5] if i % 4 == 0 else (rng.uniform(0, 360), rng.uniform(-80, 80))
        t = rng.uniform(0, 3 * 86400.0)
        events.append((t + 30.0, optical(f"Z{i}", t, ra=(ra + rng.gauss(0, 0.3)) % 360.0,
                                         dec=max(-89.0, min(89.0, dec + rng.gauss(0, 0.3))))))
    return [a for _, a in sorted(events, key=lambda x: x[0])]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_short_memory_finds_what_whole_memory_finds(seed: int,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """With a 10-minute slack, survey documents read back from the archive and late alerts'
    windows completed from it, the results equal an engine holding everything.  The
    archive runs 20 alerts ahead of matching, as the broker archives a batch before it
    matches it, and marks alerts matched in rounds of 25, as the broker does after each
    round."""
    from crossmatch import engine as engine_module

    monkeypatch.setattr(engine_module, "EXPIRE_EVERY", 25)  # let go as soon as it may
    monkeypatch.setattr(engine_module, "ROUND_MAX", 25)  # the rounds below
    whole = Engine(CONFIG, authority="test.mmbroker", clock=None, late_slack_s=1e8)
    archive = _Archive()
    short = Engine(CONFIG, authority="test.mmbroker", clock=None, late_slack_s=600.0,
                   history=archive.history, loader=archive.loader)
    got: dict[str, set[tuple[Any, ...]]] = {"whole": set(), "short": set()}
    stream = _mixed_stream(seed)
    archive.matched = set()
    for i, a in enumerate(stream):
        for ahead in stream[i:i + 20]:
            archive.alerts[ahead.id] = ahead
        if i % 25 == 0:
            archive.matched |= {b.id for b in stream[:i]}
        for name, e in (("whole", whole), ("short", short)):
            got[name] |= {(r.key, r.coincidence.id, r.coincidence.state,
                           tuple(m.alert_id for m in r.coincidence.members))
                          for r in e.process(a)}
    assert got["short"] == got["whole"]
    pairings = {c[1].split("#")[1].rsplit("-", 2)[0] for c in got["whole"]}
    assert {"hen-optical", "grb-optical", "hen-grb", "sn_nfold"} <= pairings, pairings
    assert "updated" in {c[2] for c in got["whole"]}  # the neutrino's update re-evaluated
    assert archive.asked["loader"] > 0 and archive.asked["history"] > 0
    # Survey documents held: only the coincidences' members (for their updates), and
    # retractions (small, until they expire).
    members = {i for c in got["whole"] for i in c[3]}
    held = {d.id for k, d in short._events.items()
            if k[0] == "ztf" and d.alert_type != "retraction"}
    assert held <= members
    assert len(held) < 600 / 3 and len(whole._events) > 600


def test_a_fresh_engine_on_the_wall_clock_asks_the_archive_for_what_it_was_not_given() -> None:
    """On the wall clock, memory is complete only for the retention back from its start
    (what a warm-up loads): a late neutrino's look forward to a transient archived an hour
    before the start goes to the archive, though memory has held no transient yet."""
    archive = _Archive()
    transient = optical("Z1", 3600.0)
    neutrino = alert("nu", "N1", 3000.0)
    archive.alerts.update({transient.id: transient, neutrino.id: neutrino})
    e = Engine(CONFIG, authority="test.mmbroker", clock=lambda: T0.timestamp() + 7200.0,
               late_slack_s=600.0, history=archive.history, loader=archive.loader)
    assert [r.coincidence.pairing for r in e.process(neutrino)] == ["hen-optical"]


def test_a_transient_after_a_gw_finds_its_sky_map() -> None:
    """The usual follow-up order: the GW first, transients hours later.  A transient
    inside the map's 90% region pairs with it, one outside does not; the map's peak is no
    circle a cone lookup could match (it was indexed as one, and nothing was found)."""
    import hashlib

    from broker.demo import gaussian_multiorder_fits

    data = gaussian_multiorder_fits(197.45, -23.38, 6.0)
    sha = hashlib.sha256(data).hexdigest()
    gw = alert("gw", "S1").to_document()
    gw["localization"] = {"kind": "skymap", "skymap_sha256": sha, "format": "multiorder",
                          "ra_deg": 197.45, "dec_deg": -23.38}
    e = Engine(CONFIG, authority="test.mmbroker", clock=None, skymap_loader=lambda _s: data)
    assert e.process(Alert.model_validate(gw)) == []
    inside = e.process(optical("Z1", 3600.0, ra=199.0, dec=-22.0))
    assert [r.coincidence.pairing for r in inside] == ["gw-optical"]
    assert inside[0].coincidence.spatial_overlap.integral > 0
    assert e.process(optical("Z2", 7200.0, ra=20.0, dec=40.0)) == []


def test_the_archive_is_asked_only_for_the_messengers_a_pairing_takes() -> None:
    """A late neutrino's optical follow-up reads optical alerts from the archive, not the
    other neutrinos of its days (what made late triggers cost seconds when many came)."""
    asked: list[frozenset[str] | None] = []

    def history(t_lo, t_hi, ra, dec, radius, *, messengers=None):  # type: ignore[no-untyped-def]
        asked.append(messengers)
        return []

    e = Engine(CONFIG, authority="test.mmbroker", clock=None, live_window_s=3600.0,
               history=history)
    e.process(optical("Z0", 30 * 86400.0))  # moves memory's horizon far past the neutrino
    asked.clear()  # (the optical alert itself asked for neutrinos: hen-optical's side a)
    e.process(alert("nu", "N-late", 0.0, radius=1.0))
    assert asked and None not in asked
    assert frozenset({"optical"}) in asked
    assert all("neutrino" not in m for m in asked if m is not None), asked
