"""The cross-match configuration: pairings, time windows, background rates.

One TOML file says which streams are paired, within which time window, whether
the sky must agree, which significance figures are computed and at which
background rates.  Every coincidence carries :attr:`CrossmatchConfig.config_hash`,
the SHA-256 of the file's exact bytes, so a result can always be traced to the
configuration that produced it.  The shipped default is
``crossmatch/pairings.toml`` (read with :mod:`importlib.resources`); pass another
path to :func:`load_config` to use your own.

Conventions
-----------
* A pairing has two sides, ``a`` and ``b``.  Its window ``window_s = [lo, hi]``
  bounds ``t_b - t_a`` in seconds, **both ends inclusive**: ``lo <= t_b - t_a <= hi``.
* An ``nfold`` pairing has one side, ``a``; its members are alerts of *distinct*
  detectors (``group_by``, default the alert's ``facility``) whose trigger times
  all lie within ``window_s = [0, tau]``: ``max(t) - min(t) <= tau`` (inclusive).
* Rates are Hz (events per second) everywhere, as in the Alert contract.

File layout (``format = 1``)::

    format = 1                      # layout version; other values are refused
    version = "2026.1"              # version of the contents, for humans
    significant_far_hz = 1.9e-7     # a coincidence below this FAR is "significant"

    [background_rates_hz]           # rate of each stream, Hz
    grb_fermi_gbm = 7.6e-6
    "sn_detector.Super-K" = 1e-6    # a per-detector override of "sn_detector"

    [selectors.gw_cbc]              # named selectors, reusable by name
    messenger = ["gravitational_wave"]
    group = ["CBC"]

    [[pairings]]
    name = "gw_cbc-grb"
    a = "gw_cbc"                    # a selector name, or an inline table
    b = { any_of = ["grb"], require_far = false }
    window_s = [-1, 5]              # t_b - t_a, seconds, inclusive
    spatial = true
    credible_level = 0.9
    far_from = "a"                  # whose far_hz the RAVEN figures use
    rate_a = []
    rate_b = ["grb_fermi_gbm"]      # keys of [background_rates_hz], summed
    significance = ["raven_temporal_far", "raven_space_time_far"]

Selector fields (all optional; an alert must satisfy every field given, and a
field given as a list is satisfied by any entry of it):

``messenger``
    Alert messengers, exact.
``facility``, ``instrument``, ``source``
    Shell-style globs (``*``, ``?``, ``[...]``) matched case-insensitively against
    the alert's field; an alert without an instrument fails an ``instrument`` rule.
``group``
    LVK search group (``CBC``, ``Burst``), case-insensitive, read from
    ``extra["group"]`` (igwn.gwalert JSON/Avro) or ``extra["lvk"]["group"]``
    (LVK VOEvents).
``extra``
    A table of dotted paths into ``Alert.extra`` (``"gcn.notice_type"``) to lists
    of accepted values, compared as case-insensitive text.
``min_far_hz``, ``max_far_hz``
    Inclusive bounds on ``far_hz``.  An alert without ``far_hz`` passes them unless
    ``require_far = true``.
``localized``
    ``true``: the alert must have a sky position (localization kind other than
    ``none``); ``false``: it must not.
``any_of``, ``none_of``
    Lists of selector names or inline selector tables: at least one of ``any_of``
    must match, and none of ``none_of``.

Test and drill alerts are not the selectors' concern: the engine never pairs
alerts of different roles, and retractions retract rather than match.
"""

from __future__ import annotations

import fnmatch
import functools
import hashlib
import math
import re
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal, NoReturn, cast

from alerts_schema.errors import ConfigurationError
from alerts_schema.model import Alert

__all__ = [
    "DEFAULT_CONFIG_RESOURCE",
    "FIGURE_NAMES",
    "FORMAT",
    "MESSENGERS",
    "CrossmatchConfig",
    "Pairing",
    "Selector",
    "load_config",
    "parse_config",
    "window_bounds",
]

FORMAT = 1
"""Layout version of the configuration file this module reads."""

DEFAULT_CONFIG_RESOURCE = "pairings.toml"
"""File name of the shipped default, inside the :mod:`crossmatch` package."""

MESSENGERS = frozenset({
    "gravitational_wave", "neutrino", "gamma_ray", "x_ray", "ultraviolet", "optical",
    "infrared", "radio", "cosmic_ray", "other",
})
"""Messenger values of the Alert contract."""

FIGURE_NAMES = frozenset({
    "raven_temporal_far",
    "raven_space_time_far",
    "raven_targeted_temporal_far",
    "raven_targeted_space_time_far",
    "nfold_chance_rate",
    "fisher_p",
    "chance_probability",
})
"""Significance figures a pairing may ask for (see :mod:`crossmatch.significance`)."""

# Pairing names go into the coincidence's ``pairing`` field (at most 128 characters)
# and into log lines and URLs, so keep them to a plain alphabet.
_NAME = re.compile(r"^[a-z0-9][a-z0-9_.+-]{0,127}$")
_LVK_GROUP_PATHS = (("group",), ("lvk", "group"))

Side = Literal["a", "b"]


# -- selectors ----------------------------------------------------------------------

def _lower_tuple(values: Iterable[str]) -> tuple[str, ...]:
    return tuple(str(v).lower() for v in values)


def _glob_any(value: str | None, patterns: tuple[str, ...]) -> bool:
    if value is None or not patterns:
        return False
    return _globs(patterns).match(value.lower()) is not None


@functools.lru_cache(maxsize=1024)
def _globs(patterns: tuple[str, ...]) -> re.Pattern[str]:
    """One regular expression for a selector's glob patterns (each pairing tests every
    alert against them: one match instead of one ``fnmatchcase`` per pattern)."""
    return re.compile("|".join(f"(?:{fnmatch.translate(p)})" for p in patterns))


def _extra_value(extra: Mapping[str, Any], path: str) -> Any:
    """``extra`` looked up by a dotted path; a key that itself holds dots wins."""
    if path in extra:
        return extra[path]
    node: Any = extra
    for part in path.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def _as_text(value: Any) -> str | None:
    if value is None or isinstance(value, Mapping | list):
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value).lower()


@dataclass(frozen=True)
class Selector:
    """Which alerts one side of a pairing takes.

    Every non-empty field must be satisfied; within a field, any entry will do.
    Text comparisons ignore case (values are stored lower-cased).  See the module
    docstring for each field's meaning.

    Parameters
    ----------
    name
        The selector's name in the file, or None for an inline selector.
    messenger
        Accepted messengers (exact contract values).
    facility, instrument, source
        Shell-style globs for ``Alert.facility``, ``.instrument``, ``.source``.
    group
        LVK search groups (``extra["group"]`` or ``extra["lvk"]["group"]``).
    extra
        ``(dotted path, accepted values)`` pairs into ``Alert.extra``.
    min_far_hz, max_far_hz
        Inclusive bounds on ``Alert.far_hz``, Hz.
    require_far
        Reject alerts without ``far_hz``.
    localized
        True: needs a sky position; False: must have none; None: either.
    any_of, none_of
        Nested selectors: at least one of ``any_of`` and none of ``none_of``
        must match.
    """

    name: str | None = None
    messenger: tuple[str, ...] = ()
    facility: tuple[str, ...] = ()
    instrument: tuple[str, ...] = ()
    source: tuple[str, ...] = ()
    group: tuple[str, ...] = ()
    extra: tuple[tuple[str, tuple[str, ...]], ...] = ()
    min_far_hz: float | None = None
    max_far_hz: float | None = None
    require_far: bool = False
    localized: bool | None = None
    any_of: tuple[Selector, ...] = ()
    none_of: tuple[Selector, ...] = ()

    def __post_init__(self) -> None:
        # Lower-case once here so that matches() does no per-call normalization of
        # the rules, whether the selector came from a file or from code.
        for attr in ("facility", "instrument", "source", "group"):
            object.__setattr__(self, attr, _lower_tuple(getattr(self, attr)))
        object.__setattr__(self, "extra",
                           tuple((path, _lower_tuple(vals)) for path, vals in self.extra))

    @property
    def is_empty(self) -> bool:
        """True when the selector sets no condition at all (it would take every alert)."""
        return not (self.messenger or self.facility or self.instrument or self.source
                    or self.group or self.extra or self.min_far_hz is not None
                    or self.max_far_hz is not None or self.require_far
                    or self.localized is not None or self.any_of or self.none_of)

    def matches(self, alert: Alert) -> bool:
        """Whether ``alert`` belongs to this side.

        Parameters
        ----------
        alert
            A normalized alert.

        Returns
        -------
        bool
            True when every condition of the selector holds.
        """
        if self.messenger and alert.messenger not in self.messenger:
            return False
        if self.facility and not _glob_any(alert.facility, self.facility):
            return False
        if self.instrument and not _glob_any(alert.instrument, self.instrument):
            return False
        if self.source and not _glob_any(alert.source, self.source):
            return False
        if self.group:
            groups = {_as_text(_extra_value(alert.extra, ".".join(path)))
                      for path in _LVK_GROUP_PATHS}
            if not any(g in self.group for g in groups if g is not None):
                return False
        for path, accepted in self.extra:
            if _as_text(_extra_value(alert.extra, path)) not in accepted:
                return False
        far = alert.far_hz
        if far is None:
            if self.require_far:
                return False
        else:
            if self.min_far_hz is not None and far < self.min_far_hz:
                return False
            if self.max_far_hz is not None and far > self.max_far_hz:
                return False
        if self.localized is not None:
            has_position = alert.localization.kind != "none"
            if has_position != self.localized:
                return False
        if self.any_of and not any(s.matches(alert) for s in self.any_of):
            return False
        return not any(s.matches(alert) for s in self.none_of)


# -- pairings -----------------------------------------------------------------------

@dataclass(frozen=True)
class Pairing:
    """One configured pairing of alert streams.

    Parameters
    ----------
    name
        Unique name, copied into each coincidence's ``pairing`` field.
    a, b
        The two sides.  ``b`` is None for an ``nfold`` pairing.
    window_s
        ``(lo, hi)`` in seconds.  For ``pair``: ``lo <= t_b - t_a <= hi``, both
        ends inclusive.  For ``nfold``: ``(0, tau)``, all member times within
        ``tau`` of each other, inclusive.
    kind
        ``pair`` (one alert from each side) or ``nfold`` (alerts of distinct
        detectors from side ``a``).
    spatial
        Whether the localizations must agree (credible-region gate, overlap).
    credible_level
        Credible level (0..1] of the spatial gate; None when not spatial.
    nfold_min
        Fewest distinct detectors for an ``nfold`` coincidence (>= 2).
    group_by
        Alert field naming the detector in an ``nfold`` pairing (``facility``).
    significance
        Names of the figures to compute (:data:`FIGURE_NAMES`).
    rate_a, rate_b
        Keys of ``background_rates_hz`` whose sum is each side's background rate.
    far_from
        Which side's ``far_hz`` enters the RAVEN figures as FAR_1 (the other
        side then contributes its background rate); None when unused.
    description
        A sentence for humans.
    """

    name: str
    a: Selector
    b: Selector | None
    window_s: tuple[float, float]
    kind: Literal["pair", "nfold"] = "pair"
    spatial: bool = False
    credible_level: float | None = None
    nfold_min: int | None = None
    group_by: str = "facility"
    significance: tuple[str, ...] = ()
    rate_a: tuple[str, ...] = ()
    rate_b: tuple[str, ...] = ()
    far_from: Side | None = None
    description: str = ""

    @property
    def duration_s(self) -> float:
        """Length of the window, ``hi - lo``, in seconds."""
        return self.window_s[1] - self.window_s[0]

    def in_window(self, dt_s: float) -> bool:
        """Whether ``dt_s = t_b - t_a`` (seconds) is inside the window, ends included."""
        return self.window_s[0] <= dt_s <= self.window_s[1]

    def side_of(self, alert: Alert) -> tuple[bool, bool]:
        """``(matches a, matches b)`` for ``alert``; b is False for nfold pairings."""
        return self.a.matches(alert), (self.b.matches(alert) if self.b is not None else False)

    @property
    def targeted_far_max_hz(self) -> tuple[float, float] | None:
        """``(FAR_max a, FAR_max b)`` in Hz for the targeted figures: the sides'
        ``max_far_hz``; None when either side has none."""
        if self.b is None or self.a.max_far_hz is None or self.b.max_far_hz is None:
            return None
        return self.a.max_far_hz, self.b.max_far_hz


# -- the whole configuration --------------------------------------------------------

@dataclass(frozen=True)
class CrossmatchConfig:
    """A loaded cross-match configuration.

    Parameters
    ----------
    version
        The file's ``version`` string (for humans; results cite the hash).
    pairings
        The pairings, in file order.
    background_rates_hz
        Background rate of each stream or detector, Hz (read-only mapping).
        A key ``"<key>.<detector>"`` overrides ``"<key>"`` for that detector.
    significant_far_hz
        A coincidence whose best FAR is at or below this rate (Hz) is significant.
    config_hash
        SHA-256 (lower-case hex) of the file's exact bytes.
    source
        Where the configuration came from (a path, or the package resource).
    selectors
        The named selectors (read-only mapping).
    """

    version: str
    pairings: tuple[Pairing, ...]
    background_rates_hz: Mapping[str, float]
    significant_far_hz: float
    config_hash: str
    source: str
    selectors: Mapping[str, Selector] = field(default_factory=lambda: MappingProxyType({}))

    def pairing(self, name: str) -> Pairing:
        """The pairing called ``name`` (KeyError naming the known ones otherwise)."""
        for pairing in self.pairings:
            if pairing.name == name:
                return pairing
        raise KeyError(f"no pairing {name!r}; known: {', '.join(p.name for p in self.pairings)}")

    def rate_hz(self, keys: Iterable[str], detector: str | None = None) -> float:
        """Sum of the background rates named by ``keys``, in Hz.

        Parameters
        ----------
        keys
            Keys of :attr:`background_rates_hz`.
        detector
            When given, ``"<key>.<detector>"`` is used instead of ``"<key>"``
            where the file defines it (per-detector rates of an nfold pairing).

        Returns
        -------
        float
            The summed rate, Hz; 0.0 for no keys.
        """
        total = 0.0
        for key in keys:
            specific = f"{key}.{detector}" if detector is not None else None
            if specific is not None and specific in self.background_rates_hz:
                total += self.background_rates_hz[specific]
            else:
                total += self.background_rates_hz[key]
        return total

    def side_rate_hz(self, pairing: Pairing, side: Side) -> float:
        """Background rate (Hz) of one side of ``pairing``, from its rate keys."""
        return self.rate_hz(pairing.rate_a if side == "a" else pairing.rate_b)


# -- loading ------------------------------------------------------------------------

def load_config(path: Path | str | None = None) -> CrossmatchConfig:
    """Read and validate a cross-match configuration file.

    Parameters
    ----------
    path
        A TOML file; None reads the shipped default ``crossmatch/pairings.toml``.

    Returns
    -------
    CrossmatchConfig
        The configuration, with ``config_hash`` the SHA-256 of the file's bytes.

    Raises
    ------
    ConfigurationError
        When the file cannot be read or is not a valid configuration; the
        message names the file, the offending entry and what is wrong.
    """
    if path is None:
        resource = resources.files("crossmatch").joinpath(DEFAULT_CONFIG_RESOURCE)
        try:
            data = resource.read_bytes()
        except OSError as exc:  # a broken installation: the package data is missing
            raise ConfigurationError(
                f"the default cross-match configuration crossmatch/{DEFAULT_CONFIG_RESOURCE} "
                f"cannot be read ({exc}); is the package data installed?") from exc
        return parse_config(data, source=f"crossmatch/{DEFAULT_CONFIG_RESOURCE}")
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigurationError(
            f"cross-match configuration {path} cannot be read: {exc.strerror or exc}") from exc
    return parse_config(data, source=str(path))


def parse_config(data: bytes, source: str = "<bytes>") -> CrossmatchConfig:
    """Validate configuration bytes (no I/O); see :func:`load_config`.

    Parameters
    ----------
    data
        The file's exact bytes (UTF-8 TOML); their SHA-256 becomes ``config_hash``.
    source
        Name of the file, for error messages and :attr:`CrossmatchConfig.source`.
    """
    digest = hashlib.sha256(data).hexdigest()
    reader = _Reader(source)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        reader.fail("file", f"not UTF-8 text (byte {exc.start}): TOML files are UTF-8")
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        reader.fail("file", f"not valid TOML: {exc}")
    return reader.config(document, digest)


class _Reader:
    """Validation of the parsed TOML document, with messages that say where."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.raw_selectors: dict[str, Any] = {}
        self.selectors: dict[str, Selector] = {}
        self.resolving: list[str] = []

    def fail(self, where: str, problem: str) -> NoReturn:
        raise ConfigurationError(f"cross-match configuration {self.source}: {where}: {problem}")

    # -- scalar helpers

    def table(self, value: Any, where: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            self.fail(where, f"expected a table, got {_kind(value)}")
        return value

    def keys(self, table: Mapping[str, Any], allowed: Iterable[str], where: str) -> None:
        unknown = sorted(set(table) - set(allowed))
        if unknown:
            self.fail(where, f"unknown key(s) {', '.join(unknown)}; allowed: "
                             f"{', '.join(sorted(allowed))}")

    def text(self, value: Any, where: str) -> str:
        if not isinstance(value, str) or not value.strip():
            self.fail(where, f"expected a non-empty string, got {_kind(value)}")
        return value

    def number(self, value: Any, where: str, *, minimum: float | None = None,
               positive: bool = False) -> float:
        # TOML booleans are Python bools, a subclass of int: refuse them as numbers.
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.fail(where, f"expected a number, got {_kind(value)}")
        number = float(value)
        if not math.isfinite(number):
            self.fail(where, f"{value!r} is not finite")
        if positive and number <= 0:
            self.fail(where, f"{number!r} must be greater than 0")
        if minimum is not None and number < minimum:
            self.fail(where, f"{number!r} must be at least {minimum!r}")
        return number

    def boolean(self, value: Any, where: str) -> bool:
        if not isinstance(value, bool):
            self.fail(where, f"expected true or false, got {_kind(value)}")
        return value

    def text_list(self, value: Any, where: str) -> tuple[str, ...]:
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list):
            self.fail(where, f"expected a list of strings, got {_kind(value)}")
        return tuple(self.text(v, f"{where}[{i}]") for i, v in enumerate(value))

    # -- the document

    def config(self, doc: dict[str, Any], digest: str) -> CrossmatchConfig:
        self.keys(doc, ("format", "version", "significant_far_hz", "background_rates_hz",
                        "selectors", "pairings"), "top level")
        if "format" not in doc:
            self.fail("format", f"missing; this reader understands format = {FORMAT}")
        if isinstance(doc["format"], bool) or doc["format"] != FORMAT:
            self.fail("format", f"{doc['format']!r} is not supported; this reader "
                                f"understands format = {FORMAT}")
        version = self.text(doc.get("version"), "version")
        significant = self.number(doc.get("significant_far_hz"), "significant_far_hz",
                                  positive=True)
        rates = self.rates(doc.get("background_rates_hz"))
        self.raw_selectors = self.table(doc.get("selectors", {}), "selectors")
        for name in self.raw_selectors:
            self.named_selector(name, "selectors")
        raw_pairings = doc.get("pairings")
        if not isinstance(raw_pairings, list) or not raw_pairings:
            self.fail("pairings", "expected at least one [[pairings]] table")
        pairings = tuple(self.pairing(p, f"pairings[{i}]", rates)
                         for i, p in enumerate(raw_pairings))
        seen: set[str] = set()
        for i, pairing in enumerate(pairings):
            if pairing.name in seen:
                self.fail(f"pairings[{i}].name", f"{pairing.name!r} is used twice")
            seen.add(pairing.name)
        return CrossmatchConfig(
            version=version, pairings=pairings,
            background_rates_hz=MappingProxyType(rates), significant_far_hz=significant,
            config_hash=digest, source=self.source,
            selectors=MappingProxyType(dict(self.selectors)))

    def rates(self, value: Any) -> dict[str, float]:
        table = self.table(value, "background_rates_hz")
        if not table:
            self.fail("background_rates_hz", "no rates given")
        rates: dict[str, float] = {}
        for key, rate in table.items():
            # A dotted bare key (a.b = 1) parses as a nested table: say how to write it.
            if isinstance(rate, dict):
                self.fail(f"background_rates_hz.{key}",
                          "a nested table; quote per-detector keys: \"key.detector\" = rate")
            rates[key] = self.number(rate, f"background_rates_hz.{key}", minimum=0.0)
        return rates

    def named_selector(self, name: str, where: str) -> Selector:
        if name in self.selectors:
            return self.selectors[name]
        if name not in self.raw_selectors:
            known = ", ".join(sorted(self.raw_selectors)) or "none"
            self.fail(where, f"no selector named {name!r} (known: {known})")
        if name in self.resolving:
            cycle = " -> ".join([*self.resolving[self.resolving.index(name):], name])
            self.fail(f"selectors.{name}", f"refers to itself ({cycle})")
        self.resolving.append(name)
        try:
            selector = self.selector(self.raw_selectors[name], f"selectors.{name}", name=name)
        finally:
            self.resolving.pop()
        self.selectors[name] = selector
        return selector

    def selector_ref(self, value: Any, where: str) -> Selector:
        if isinstance(value, str):
            return self.named_selector(value, where)
        return self.selector(value, where)

    def selector(self, value: Any, where: str, name: str | None = None) -> Selector:
        table = self.table(value, where)
        self.keys(table, ("messenger", "facility", "instrument", "source", "group", "extra",
                          "min_far_hz", "max_far_hz", "require_far", "localized", "any_of",
                          "none_of"), where)
        messengers = self.text_list(table.get("messenger", []), f"{where}.messenger")
        for i, messenger in enumerate(messengers):
            if messenger not in MESSENGERS:
                self.fail(f"{where}.messenger[{i}]",
                          f"{messenger!r} is not a messenger; use one of "
                          f"{', '.join(sorted(MESSENGERS))}")
        extra = []
        for path, accepted in self.table(table.get("extra", {}), f"{where}.extra").items():
            values = accepted if isinstance(accepted, list) else [accepted]
            texts = []
            for i, v in enumerate(values):
                if isinstance(v, bool):
                    texts.append("true" if v else "false")
                elif isinstance(v, str | int | float):
                    texts.append(str(v))
                else:
                    self.fail(f"{where}.extra.{path}[{i}]",
                              f"expected a string, number or boolean, got {_kind(v)}")
            if not texts:
                self.fail(f"{where}.extra.{path}", "no accepted values given")
            extra.append((path, tuple(texts)))

        def far(key: str) -> float | None:
            if key not in table:
                return None
            return self.number(table[key], f"{where}.{key}", minimum=0.0)

        min_far, max_far = far("min_far_hz"), far("max_far_hz")
        if min_far is not None and max_far is not None and min_far > max_far:
            self.fail(where, f"min_far_hz {min_far!r} is above max_far_hz {max_far!r}")
        localized = (self.boolean(table["localized"], f"{where}.localized")
                     if "localized" in table else None)

        def nested(key: str) -> tuple[Selector, ...]:
            raw = table.get(key, [])
            if not isinstance(raw, list):
                self.fail(f"{where}.{key}", f"expected a list of selector names or tables, "
                                            f"got {_kind(raw)}")
            return tuple(self.selector_ref(v, f"{where}.{key}[{i}]") for i, v in enumerate(raw))

        selector = Selector(
            name=name, messenger=messengers,
            facility=self.text_list(table.get("facility", []), f"{where}.facility"),
            instrument=self.text_list(table.get("instrument", []), f"{where}.instrument"),
            source=self.text_list(table.get("source", []), f"{where}.source"),
            group=self.text_list(table.get("group", []), f"{where}.group"),
            extra=tuple(extra), min_far_hz=min_far, max_far_hz=max_far,
            require_far=self.boolean(table.get("require_far", False), f"{where}.require_far"),
            localized=localized, any_of=nested("any_of"), none_of=nested("none_of"))
        if selector.is_empty:
            self.fail(where, "selects every alert; give at least one condition")
        return selector

    def pairing(self, value: Any, where: str, rates: Mapping[str, float]) -> Pairing:
        table = self.table(value, where)
        self.keys(table, ("name", "description", "kind", "a", "b", "window_s", "spatial",
                          "credible_level", "nfold_min", "group_by", "significance", "rate_a",
                          "rate_b", "far_from"), where)
        name = self.text(table.get("name"), f"{where}.name")
        if not _NAME.match(name):
            self.fail(f"{where}.name", f"{name!r}: use 1-128 lower-case letters, digits and "
                                       f"_ . + - (starting with a letter or digit)")
        where = f"pairings.{name}"
        kind = table.get("kind", "pair")
        if kind not in ("pair", "nfold"):
            self.fail(f"{where}.kind", f"{kind!r} is not 'pair' or 'nfold'")
        if "a" not in table:
            self.fail(f"{where}.a", "missing: which alerts side a takes")
        a = self.selector_ref(table["a"], f"{where}.a")
        window = table.get("window_s")
        if not isinstance(window, list) or len(window) != 2:
            self.fail(f"{where}.window_s", f"expected [lo, hi] in seconds, got {window!r}")
        lo = self.number(window[0], f"{where}.window_s[0]")
        hi = self.number(window[1], f"{where}.window_s[1]")
        if lo > hi:
            self.fail(f"{where}.window_s", f"lo {lo!r} s is after hi {hi!r} s")
        spatial = self.boolean(table.get("spatial", False), f"{where}.spatial")
        credible: float | None = None
        if "credible_level" in table:
            credible = self.number(table["credible_level"], f"{where}.credible_level",
                                   positive=True)
            if credible > 1:
                self.fail(f"{where}.credible_level", f"{credible!r} is above 1")
            if not spatial:
                self.fail(f"{where}.credible_level", "given for a pairing that is not spatial")
        elif spatial:
            self.fail(f"{where}.credible_level", "missing: a spatial pairing needs its gate "
                                                 "(for example 0.9)")
        b: Selector | None = None
        nfold_min: int | None = None
        group_by = "facility"
        if kind == "pair":
            if "b" not in table:
                self.fail(f"{where}.b", "missing: which alerts side b takes")
            b = self.selector_ref(table["b"], f"{where}.b")
            for key in ("nfold_min", "group_by"):
                if key in table:
                    self.fail(f"{where}.{key}", "only for kind = 'nfold'")
        else:
            if "b" in table:
                self.fail(f"{where}.b", "an nfold pairing has one side, a")
            if spatial:
                self.fail(f"{where}.spatial", "nfold pairings are time-only")
            raw_n = table.get("nfold_min")
            if isinstance(raw_n, bool) or not isinstance(raw_n, int) or raw_n < 2:
                self.fail(f"{where}.nfold_min", f"expected an integer >= 2, got {raw_n!r}")
            nfold_min = raw_n
            group_by = table.get("group_by", "facility")
            if group_by not in ("facility", "instrument", "source"):
                self.fail(f"{where}.group_by", f"{group_by!r}: use facility, instrument or "
                                               f"source")
            if lo != 0 or hi <= 0:
                self.fail(f"{where}.window_s", f"an nfold window is [0, tau] with tau > 0 "
                                               f"(all members within tau s), got [{lo}, {hi}]")
        rate_a = self.rate_keys(table.get("rate_a", []), f"{where}.rate_a", rates)
        rate_b = self.rate_keys(table.get("rate_b", []), f"{where}.rate_b", rates)
        if kind == "nfold" and rate_b:
            self.fail(f"{where}.rate_b", "an nfold pairing has no side b")
        far_from = table.get("far_from")
        if far_from is not None and far_from not in ("a", "b"):
            self.fail(f"{where}.far_from", f"{far_from!r} is not 'a' or 'b'")
        significance = self.text_list(table.get("significance", []), f"{where}.significance")
        pairing = Pairing(
            name=name, a=a, b=b, window_s=(lo, hi), kind=cast(Literal["pair", "nfold"], kind),
            spatial=spatial, credible_level=credible, nfold_min=nfold_min, group_by=group_by,
            significance=significance, rate_a=rate_a, rate_b=rate_b,
            far_from=cast(Side | None, far_from),
            description=str(table.get("description", "")))
        self.check_figures(pairing, where)
        return pairing

    def rate_keys(self, value: Any, where: str, rates: Mapping[str, float]) -> tuple[str, ...]:
        keys = self.text_list(value, where)
        for i, key in enumerate(keys):
            if key not in rates:
                self.fail(f"{where}[{i}]", f"{key!r} is not a key of [background_rates_hz]")
        return keys

    def check_figures(self, p: Pairing, where: str) -> None:
        """Each requested figure has what it needs, so none fails silently at run time."""
        seen: set[str] = set()
        for i, name in enumerate(p.significance):
            at = f"{where}.significance[{i}]"
            if name not in FIGURE_NAMES:
                self.fail(at, f"{name!r} is not a known figure; use one of "
                              f"{', '.join(sorted(FIGURE_NAMES))}")
            if name in seen:
                self.fail(at, f"{name!r} is listed twice")
            seen.add(name)
            if name.startswith("raven_"):
                if p.kind != "pair" or p.far_from is None:
                    self.fail(at, f"{name} needs a pair with far_from = 'a' or 'b'")
                if "space_time" in name and not p.spatial:
                    self.fail(at, f"{name} needs spatial = true")
                if "targeted" in name:
                    if p.targeted_far_max_hz is None:
                        self.fail(at, f"{name} needs max_far_hz (the search thresholds) on "
                                      f"both sides' selectors")
                elif not (p.rate_b if p.far_from == "a" else p.rate_a):
                    other = "rate_b" if p.far_from == "a" else "rate_a"
                    self.fail(at, f"{name} needs {other}: the background rate of the side "
                                  f"without far_from")
            elif name == "nfold_chance_rate":
                if p.kind != "nfold" or not p.rate_a:
                    self.fail(at, "nfold_chance_rate needs kind = 'nfold' and rate_a "
                                  "(per-detector background rate keys)")
            elif name == "chance_probability" and (p.kind != "pair" or not p.rate_b):
                self.fail(at, "chance_probability needs a pair with rate_b (the rate of "
                              "side b's background)")


def _kind(value: Any) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return f"a string ({value!r})" if value.strip() else "an empty string"
    return f"{type(value).__name__} {value!r}"


def window_bounds(windows: Sequence[Pairing]) -> tuple[float, float]:
    """Widest ``(lo, hi)`` over ``windows``, seconds: how far back and ahead to look."""
    if not windows:
        return 0.0, 0.0
    return min(p.window_s[0] for p in windows), max(p.window_s[1] for p in windows)
