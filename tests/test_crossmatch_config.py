"""The cross-match configuration (``crossmatch.config``, ``crossmatch/pairings.toml``).

The shipped defaults against the field's practice, the hash of the file's bytes,
clear errors for bad files, window edges (both inclusive), and the selectors
against what the real normalizers produce from the sample messages.
"""

from __future__ import annotations

import hashlib
import math
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from alerts_schema import Alert
from alerts_schema.errors import ConfigurationError
from crossmatch.config import (
    FIGURE_NAMES,
    CrossmatchConfig,
    Pairing,
    Selector,
    load_config,
    parse_config,
)
from listeners import registry
from listeners.base import MessageMeta
from tests.conftest import SAMPLES

DATA = Path(__file__).resolve().parent / "data"
DAY = 86400.0


@pytest.fixture(scope="module")
def config() -> CrossmatchConfig:
    return load_config()


def alert(**fields: Any) -> Alert:
    """A schema-valid alert with defaults overridden by ``fields``."""
    doc: dict[str, Any] = {
        "schema_version": "1.0", "id": "ivo://test.mmbroker/s#e-0", "source": "s",
        "messenger": "gamma_ray", "facility": "Fermi", "instrument": None, "event_id": "e",
        "revision": 0, "alert_type": "initial", "role": "observation",
        "trigger_time": "2026-01-01T00:00:00Z",
        "localization": {"kind": "point", "ra_deg": 10.0, "dec_deg": 20.0,
                         "error_radius_deg": 1.0, "containment": 0.9},
        "far_hz": None, "data_rights": {"level": "public"}, "extra": {},
    }
    doc.update(fields)
    return Alert.model_validate(doc)


def sample_alert(path: Path) -> Alert:
    _, result = registry.normalize(path.read_bytes(),
                                   MessageMeta("file", datetime(2026, 1, 1, tzinfo=UTC),
                                               "test.mmbroker"))
    return result.alerts[0]


# -- the shipped default -------------------------------------------------------------

# (pairing, (lo, hi) of t_b - t_a in seconds) from the issue, which follows RAVEN/gwcelery
# (windows there are t_GW - t_ext, hence the sign flip) and the usual follow-up spans.
EXPECTED_WINDOWS = {
    "gw_cbc-grb": (-1.0, 5.0),
    "gw_burst-grb": (-60.0, 600.0),
    "gw_cbc-grb_subthreshold_gbm": (-1.0, 11.0),
    "gw_cbc-grb_subthreshold_bat": (-10.0, 20.0),
    "gw_cbc-frb": (-2.0, 10.0),
    "gw_burst-frb": (-120.0, 600.0),
    "gw-hen": (-500.0, 500.0),
    "gw_cbc-hen_10s": (-10.0, 10.0),
    "hen-grb": (-500.0, 500.0),
    "sn_burst-gw_burst": (-10.0, 10.0),
    "sn_nfold": (0.0, 10.0),
    "hen-optical": (0.0, 10 * DAY),
    "grb-optical": (0.0, 7 * DAY),
    "gw-optical": (0.0, 3 * DAY),
}


def test_default_has_the_fields_practice(config: CrossmatchConfig) -> None:
    assert {p.name: p.window_s for p in config.pairings} == EXPECTED_WINDOWS
    nfold = config.pairing("sn_nfold")
    assert (nfold.kind, nfold.nfold_min, nfold.b) == ("nfold", 2, None)
    for name in ("hen-optical", "grb-optical", "gw-optical"):
        assert config.pairing(name).spatial and config.pairing(name).credible_level == 0.9
    assert not config.pairing("sn_burst-gw_burst").spatial  # SNEWS has no sky position
    # Targeted thresholds, ligo-raven 3.3's defaults (search.coinc_far, SubGRBTargeted):
    # with Fermi GW 1/day and GBM 1e-4 Hz; with Swift GW 2/day and BAT-GUANO 1e-3 Hz.
    assert config.pairing("gw_cbc-grb_subthreshold_gbm").targeted_far_max_hz == \
        pytest.approx((1 / DAY, 1e-4))
    assert config.pairing("gw_cbc-grb_subthreshold_bat").targeted_far_max_hz == \
        pytest.approx((2 / DAY, 1e-3))


def test_default_rates_are_the_cited_figures(config: CrossmatchConfig) -> None:
    year = 365.25 * DAY
    rates = config.background_rates_hz
    assert rates["grb_fermi_gbm"] * year == pytest.approx(240)
    assert rates["grb_swift_bat"] * year == pytest.approx(90)
    # The RAVEN GW x GRB pairings' GRB rate is ligo-raven's own: 310 per 365-day year.
    assert rates["grb_independent"] == 310.0 / (365.0 * DAY)
    for name in ("gw_cbc-grb", "gw_burst-grb"):
        assert config.pairing(name).rate_b == ("grb_independent",)
    assert rates["hen_icecube_track"] * year == pytest.approx(30)
    assert rates["optical_ztf"] * DAY == pytest.approx(3e5)
    assert rates["sn_detector"] * 7 * DAY == pytest.approx(1.0)
    assert all(r > 0 and math.isfinite(r) for r in rates.values())
    for pairing in config.pairings:
        assert pairing.rate_a, pairing.name  # every pairing can be calibrated
        assert set(pairing.significance) <= FIGURE_NAMES
    assert config.significant_far_hz == pytest.approx(1 / (60 * DAY))


def test_hash_is_sha256_of_the_file_bytes(config: CrossmatchConfig, tmp_path: Path) -> None:
    data = resources.files("crossmatch").joinpath("pairings.toml").read_bytes()
    assert config.config_hash == hashlib.sha256(data).hexdigest()
    copy = tmp_path / "pairings.toml"
    copy.write_bytes(data)
    assert load_config(copy).config_hash == config.config_hash
    assert load_config(str(copy)).config_hash == config.config_hash
    copy.write_bytes(data + b"\n# a comment is a change too\n")
    changed = load_config(copy)
    assert changed.config_hash != config.config_hash
    assert changed.pairings == config.pairings


def test_lookups(config: CrossmatchConfig) -> None:
    with pytest.raises(KeyError, match="no pairing 'nope'"):
        config.pairing("nope")
    pairing = config.pairing("gw_cbc-grb")
    assert config.side_rate_hz(pairing, "b") == pytest.approx(
        sum(config.background_rates_hz[k] for k in pairing.rate_b))
    assert config.rate_hz([]) == 0.0


def test_per_detector_rate_override() -> None:
    cfg = parse_config(minimal(rates='r = 1e-5\nsn = 1e-6\n"sn.Super-K" = 2e-7\n'))
    assert cfg.rate_hz(["sn"], detector="Super-K") == 2e-7
    assert cfg.rate_hz(["sn"], detector="IceCube") == 1e-6
    assert cfg.rate_hz(["sn"]) == 1e-6


# -- window edges -----------------------------------------------------------------------

def test_window_edges_are_inclusive(config: CrossmatchConfig) -> None:
    pairing = config.pairing("gw_cbc-grb")
    lo, hi = pairing.window_s
    assert pairing.in_window(lo) and pairing.in_window(hi) and pairing.in_window(0.0)
    assert not pairing.in_window(math.nextafter(lo, -math.inf))
    assert not pairing.in_window(math.nextafter(hi, math.inf))
    assert pairing.duration_s == 6.0


@given(lo=st.floats(-1e6, 1e6), width=st.floats(0, 1e6), dt=st.floats(-3e6, 3e6))
def test_in_window_is_closed_interval(lo: float, width: float, dt: float) -> None:
    pairing = Pairing("p", Selector(messenger=("optical",)), Selector(messenger=("radio",)),
                      (lo, lo + width))
    assert pairing.in_window(dt) == (lo <= dt <= lo + width)


# -- selectors on synthetic alerts ---------------------------------------------------------

def test_selector_fields() -> None:
    gbm = alert(facility="Fermi", instrument="GBM", far_hz=1e-5)
    assert Selector(messenger=("gamma_ray",), facility=("fermi",), instrument=("G?M",)
                    ).matches(gbm)
    assert not Selector(instrument=("GBM-*",)).matches(gbm)
    assert not Selector(instrument=("*",)).matches(alert(instrument=None))
    assert Selector(source=("ivo://nasa.gsfc.gcn/swift*",)).matches(
        alert(source="ivo://nasa.gsfc.gcn/SWIFT"))
    # FAR bounds are inclusive; a missing FAR passes them unless required.
    assert Selector(min_far_hz=1e-5, max_far_hz=1e-5).matches(gbm)
    assert not Selector(max_far_hz=9.99e-6).matches(gbm)
    assert not Selector(min_far_hz=1.01e-5).matches(gbm)
    assert Selector(max_far_hz=1e-9).matches(alert(far_hz=None))
    assert not Selector(max_far_hz=1e-9, require_far=True).matches(alert(far_hz=None))
    assert Selector(localized=True).matches(gbm)
    assert Selector(localized=False).matches(alert(localization={"kind": "none"}))
    assert not Selector(localized=True).matches(alert(localization={"kind": "none"}))


def test_selector_extra_group_and_nesting() -> None:
    json_cbc = alert(messenger="gravitational_wave", facility="LVK", extra={"group": "CBC"})
    voevent_burst = alert(messenger="gravitational_wave", facility="LVK",
                          extra={"lvk": {"group": "Burst"}})
    cbc, burst = Selector(group=("CBC",)), Selector(group=("burst",))
    assert cbc.matches(json_cbc) and not cbc.matches(voevent_burst)
    assert burst.matches(voevent_burst) and not burst.matches(json_cbc)
    assert not cbc.matches(alert())
    notice = alert(extra={"gcn": {"notice_type": "FERMI_GBM_SUBTHRESH"}, "flag": True, "n": 3,
                          "a.b": "dotted"})
    assert Selector(extra=(("gcn.notice_type", ("fermi_gbm_subthresh",)),)).matches(notice)
    assert Selector(extra=(("flag", ("true",)), ("n", ("3",)))).matches(notice)
    assert Selector(extra=(("a.b", ("DOTTED",)),)).matches(notice)
    assert not Selector(extra=(("gcn", ("x",)),)).matches(notice)  # a table is not a value
    assert not Selector(extra=(("missing.path", ("x",)),)).matches(notice)
    either = Selector(any_of=(Selector(facility=("Swift",)), Selector(facility=("Fermi",))))
    assert either.matches(alert(facility="Fermi")) and either.matches(alert(facility="Swift"))
    assert not either.matches(alert(facility="AGILE"))
    assert not Selector(messenger=("gamma_ray",), none_of=(either,)).matches(alert())
    assert Selector().is_empty and not either.is_empty


def test_default_selectors_on_synthetic_alerts(config: CrossmatchConfig) -> None:
    sel = config.selectors
    snews_tier = alert(messenger="neutrino", facility="Super-K", source="snews.observation",
                       localization={"kind": "none"}, extra={"snews_tier": "CoincidenceTier"})
    assert sel["sn_detector"].matches(snews_tier)
    assert not sel["hen"].matches(snews_tier) and not sel["sn_burst"].matches(snews_tier)
    # A SNEWS tier message read from a file keeps source "file": the tier still tells.
    assert sel["sn_detector"].matches(snews_tier.model_copy(update={"source": "file"}))
    cs = alert(messenger="neutrino", facility="SNEWS", source="snews.alert",
               localization={"kind": "none"})
    assert sel["sn_burst"].matches(cs) and not sel["sn_detector"].matches(cs)
    track = alert(messenger="neutrino", facility="IceCube", source="detector")
    assert sel["hen"].matches(track)
    assert not sel["hen"].matches(alert(messenger="neutrino", facility="IceCube",
                                        source="detector", localization={"kind": "none"}))
    guano = alert(facility="Swift", instrument="BAT-GUANO", source="gcn.notices.swift.bat.guano")
    assert sel["grb_subthreshold_bat"].matches(guano) and not sel["grb"].matches(guano)
    subthresh = alert(facility="Fermi", instrument="GBM", source="ivo://nasa.gsfc.gcn/Fermi",
                      extra={"gcn": {"notice_type": "FERMI_GBM_SUBTHRESH"}})
    assert sel["grb_subthreshold_gbm"].matches(subthresh) and not sel["grb"].matches(subthresh)
    assert sel["grb"].matches(alert(facility="Fermi", instrument="GBM"))


# -- selectors on what the real normalizers produce ------------------------------------------

@pytest.mark.parametrize(("path", "selected"), [
    ("gcn/notices__fermi__gbm__trigger.final.example.json", {"grb"}),
    ("gcn/notices__svom__eclairs__trigger.slewing.example.json", {"grb"}),
    ("gcn/notices__swift__bat__guano.loc_arc_min.example.json", {"grb_subthreshold_bat"}),
    ("voevents/BAT_GRB_Pos_655721-214.xml", {"grb"}),
    ("voevents/XRT_Pos_655721-326.xml", set()),
    ("gcn/notices__icecube__single_neutrino_alerts.gold_bronze_track_alerts.example.json",
     {"hen"}),
    ("gcn/notices__km3net__alert.example.json", {"hen"}),
    ("voevents/km3net_voevent_single_HE_example.xml", {"hen"}),
    # IceCube's follow-up of a GW is not an independent neutrino.
    ("gcn/notices__icecube__lvk_nu_track_search.example.json", set()),
    ("gcn/notices__superk__sn_alert.real.example.json", {"sn_any", "sn_burst"}),
    ("gcn/notices__chime__frb.detection.example.json", {"frb"}),
    ("gcn/notices__dsa110__frb.detection.example.json", {"frb"}),
    ("ztf/541385122515015008.avro", {"optical"}),
    ("snews/pt/example_coincidence_tier_message.json", {"sn_any", "sn_detector"}),
    ("snews/snews_cs_alert_expected_test.json", {"sn_any", "sn_burst"}),
])
def test_default_selectors_on_sample_messages(config: CrossmatchConfig, path: str,
                                              selected: set[str]) -> None:
    sample = sample_alert(DATA / path)
    assert {name for name, s in config.selectors.items() if s.matches(sample)} == selected


@pytest.mark.parametrize(("name", "selected"), [
    ("MS181101ab-initial.json", {"gw", "gw_cbc"}),
    ("MS181101ab-2-Preliminary.xml", {"gw", "gw_cbc"}),
])
def test_default_selectors_on_lvk_samples(config: CrossmatchConfig, name: str,
                                          selected: set[str]) -> None:
    path = SAMPLES / "lvk" / name
    if not path.exists():
        pytest.skip(f"shared sample {path} not present (CI has ../shared/samples)")
    sample = sample_alert(path)
    assert {n for n, s in config.selectors.items() if s.matches(sample)} == selected


# -- bad files ------------------------------------------------------------------------------

def minimal(*, rates: str = "r = 1e-5\n", pairing: str | None = None, top: str = "",
            selectors: str = "") -> bytes:
    """A small valid configuration, with parts replaced."""
    pairing = pairing if pairing is not None else (
        'name = "p"\na = "sa"\nb = { messenger = ["optical"] }\nwindow_s = [-1, 5]\n'
        'far_from = "a"\nrate_b = ["r"]\nsignificance = ["raven_temporal_far"]\n')
    text = (f'format = 1\nversion = "t"\nsignificant_far_hz = 1e-7\n{top}\n'
            f'[background_rates_hz]\n{rates}\n'
            f'[selectors.sa]\nmessenger = ["gravitational_wave"]\n{selectors}\n'
            f'[[pairings]]\n{pairing}')
    return text.encode()


def test_minimal_is_valid() -> None:
    cfg = parse_config(minimal(), source="mini.toml")
    assert cfg.source == "mini.toml" and cfg.pairing("p").window_s == (-1.0, 5.0)
    assert cfg.config_hash == hashlib.sha256(minimal()).hexdigest()


PAIRING_OK = 'name = "p"\na = "sa"\nb = "sa"\nwindow_s = [-1, 5]\n'
NFOLD_OK = 'name = "n"\nkind = "nfold"\na = "sa"\nwindow_s = [0, 10]\nnfold_min = 2\n'

BAD: list[tuple[bytes, str]] = [
    (b"\xff\xfe not utf-8", "not UTF-8"),
    (b"format = 1\nversion = ", "not valid TOML"),
    (minimal().replace(b"format = 1", b"format = 2"), "format: 2 is not supported"),
    (minimal().replace(b"format = 1\n", b""), "format: missing"),
    (minimal().replace(b'version = "t"', b"version = 3"), "version: expected a non-empty"),
    (minimal(top="colour = 1"), "unknown key(s) colour"),
    (minimal(top="").replace(b"significant_far_hz = 1e-7", b"significant_far_hz = 0"),
     "significant_far_hz: 0.0 must be greater than 0"),
    (minimal(rates="r = -1.0\n"), "background_rates_hz.r: -1.0 must be at least 0"),
    (minimal(rates="r = nan\n"), "background_rates_hz.r: nan is not finite"),
    (minimal(rates="r = true\n"), "background_rates_hz.r: expected a number, got a boolean"),
    (minimal(rates="r = 1e-5\nsn.det = 1\n"), 'quote per-detector keys'),
    (minimal(pairing=PAIRING_OK + "windows_s = [0, 1]\n"), "unknown key(s) windows_s"),
    (minimal(pairing=PAIRING_OK.replace("[-1, 5]", "[5, -1]")),
     "pairings.p.window_s: lo 5.0 s is after hi -1.0 s"),
    (minimal(pairing=PAIRING_OK.replace("[-1, 5]", "[0, inf]")), "window_s[1]: inf is not"),
    (minimal(pairing=PAIRING_OK.replace("[-1, 5]", "5")), "expected [lo, hi] in seconds"),
    (minimal(pairing=PAIRING_OK.replace('"p"', '"Bad Name"')), "lower-case letters"),
    (minimal(pairing=PAIRING_OK.replace('b = "sa"', 'b = "nope"')),
     "pairings.p.b: no selector named 'nope' (known: sa)"),
    (minimal(pairing=PAIRING_OK.replace('b = "sa"\n', "")), "pairings.p.b: missing"),
    (minimal(pairing=PAIRING_OK.replace('b = "sa"', "b = {}")),
     "pairings.p.b: selects every alert"),
    (minimal(pairing=PAIRING_OK.replace('b = "sa"', 'b = { messenger = ["light"] }')),
     "'light' is not a messenger"),
    (minimal(pairing=PAIRING_OK.replace('b = "sa"', 'b = { min_far_hz = 2, max_far_hz = 1 }')),
     "min_far_hz 2.0 is above max_far_hz 1.0"),
    (minimal(selectors='[selectors.x]\nany_of = ["y"]\n[selectors.y]\nnone_of = ["x"]\n'),
     "refers to itself (x -> y -> x)"),
    (minimal(pairing=PAIRING_OK + "spatial = true\n"), "credible_level: missing"),
    (minimal(pairing=PAIRING_OK + "spatial = true\ncredible_level = 1.5\n"), "1.5 is above 1"),
    (minimal(pairing=PAIRING_OK + "credible_level = 0.9\n"), "not spatial"),
    (minimal(pairing=PAIRING_OK + 'rate_b = ["zz"]\n'), "'zz' is not a key of"),
    (minimal(pairing=PAIRING_OK + 'far_from = "c"\n'), "'c' is not 'a' or 'b'"),
    (minimal(pairing=PAIRING_OK + 'significance = ["p_magic"]\n'), "'p_magic' is not a known"),
    (minimal(pairing=PAIRING_OK + 'significance = ["raven_temporal_far"]\n'),
     "needs a pair with far_from"),
    (minimal(pairing=PAIRING_OK + 'far_from = "a"\nsignificance = ["raven_temporal_far"]\n'),
     "needs rate_b"),
    (minimal(pairing=PAIRING_OK + 'far_from = "a"\nrate_b = ["r"]\n'
                                  'significance = ["raven_space_time_far"]\n'),
     "needs spatial = true"),
    (minimal(pairing=PAIRING_OK + 'far_from = "a"\n'
                                  'significance = ["raven_targeted_temporal_far"]\n'),
     "needs max_far_hz"),
    (minimal(pairing=PAIRING_OK + 'significance = ["nfold_chance_rate"]\n'),
     "nfold_chance_rate needs kind = 'nfold'"),
    (minimal(pairing=PAIRING_OK + 'significance = ["fisher_p", "fisher_p"]\n'), "listed twice"),
    (minimal(pairing=PAIRING_OK + 'nfold_min = 2\n'), "only for kind = 'nfold'"),
    (minimal(pairing=PAIRING_OK.replace('name = "p"', 'name = "p"\nkind = "triple"')),
     "'triple' is not 'pair' or 'nfold'"),
    (minimal(pairing=NFOLD_OK.replace("nfold_min = 2", "nfold_min = 1")),
     "nfold_min: expected an integer >= 2"),
    (minimal(pairing=NFOLD_OK.replace("[0, 10]", "[-5, 5]")), "an nfold window is [0, tau]"),
    (minimal(pairing=NFOLD_OK + 'b = "sa"\n'), "an nfold pairing has one side"),
    (minimal(pairing=NFOLD_OK + 'group_by = "colour"\n'), "'colour': use facility"),
    (minimal(pairing=NFOLD_OK + "spatial = true\ncredible_level = 0.9\n"), "time-only"),
    (minimal(pairing=PAIRING_OK + '\n[[pairings]]\n' + PAIRING_OK), "'p' is used twice"),
    (minimal().split(b"[[pairings]]")[0], "pairings: expected at least one"),
]


@pytest.mark.parametrize(("data", "message"), BAD)
def test_bad_configurations_say_what_and_where(data: bytes, message: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        parse_config(data, source="bad.toml")
    text = str(info.value)
    assert text.startswith("cross-match configuration bad.toml: ")
    assert message in text


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="cannot be read"):
        load_config(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_bytes(b"[[pairings]\n")
    with pytest.raises(ConfigurationError, match=rf"{bad.name}: file: not valid TOML"):
        load_config(bad)
