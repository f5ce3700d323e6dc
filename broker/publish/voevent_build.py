"""Alerts and coincidences to VOEvent 2.0 XML: pure functions, no I/O, no clock.

:func:`build_trigger` turns an internal detector-trigger :class:`~alerts_schema.Alert`
(stream ``detector``) into the VOEvent published under the alert's own IVORN;
:func:`build_coincidence` does the same for a :class:`~alerts_schema.Coincidence`.
Both check the result with :func:`validate` (the VOEvent 2.0 XSD bundled with
voevent-parse, offline) and against :data:`MAX_VOEVENT_BYTES`, and raise
:class:`PublishError` instead of returning a packet that must not leave.

Determinism
    The same inputs give byte-identical XML: ``Who/Date`` is the alert's
    ``received_time`` (else its trigger time) or the coincidence's
    ``created_time``, never the wall clock; Params come in a fixed order and
    free-form ``extra`` keys are sorted.  A redelivery can therefore rebuild
    the same bytes, though the outbox should send the stored ones.

voevent-parse on Python >= 3.10
    ``voeventparse.add_how``, ``add_why`` and ``add_citations`` (1.0.3) call
    ``collections.Iterable``, removed in Python 3.10: they raise
    ``AttributeError`` *after* inserting an empty ``How``/``Why``/``Citations``
    element, which the XSD refuses.  This module never calls them; it builds
    those three elements itself (:func:`_add_how`, :func:`_add_why`,
    :func:`_add_citations`).  ``tests/test_voevent_build.py`` proves the upstream
    breakage here.

Text, parsed once
    A packet is written as XML text (:class:`_Packet`, every value escaped), then
    parsed once, checked against the XSD and serialized by :func:`_finish`: the
    bytes voevent-parse's element-by-element tree gave (but for an element whose
    text is the empty string, now ``<x/>`` where it was ``<x></x>``: the same
    document to any XML reader), in 0.6 of the time (a
    trigger's packet: 1.11 against 1.80 ms, medians of 2,800 builds of each
    interleaved in one process, 2026-12-08; issue 17).  ``tests/test_voevent_build.py``
    reads hostile text back exactly.

Trigger VOEvent layout (``What``)
    Top level, where VOEvent readers look first (our own
    :mod:`listeners.voevent` reads ``FAR``, ``signalness`` and the first
    ``meta.id`` Param only at top level): ``event_id`` (the broker's
    ``<detector>:<event id>`` key, UCD ``meta.id``), ``revision``,
    ``alert_type``, ``FAR`` (Hz), ``signalness`` (the trigger's ``p_astro``),
    ``p_value``.  Then the Groups ``Event``, ``Localization``, ``Energy``,
    ``Classification``, ``Reconstruction``, ``Publisher``, ``Data_Rights``,
    ``Provenance`` and ``Extra`` (stream fields this module does not know).
    :data:`TRIGGER_FIELD_PARAMS` maps each trigger-schema field to its Param.
"""

from __future__ import annotations

import json
import math
import re
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import voeventparse as vp
from lxml import etree

from alerts_schema import (
    Alert,
    Coincidence,
    EllipseLocalization,
    Localization,
    Member,
    PointLocalization,
    SkymapLocalization,
)
from alerts_schema.errors import PermanentError
from alerts_schema.model import format_utc
from crossmatch.engine import members_class
from listeners import xml_safe

__all__ = [
    "MAX_VOEVENT_BYTES",
    "TRIGGER_FIELD_PARAMS",
    "PublishError",
    "Who",
    "build_coincidence",
    "build_trigger",
    "coincidence_role",
    "validate",
]

MAX_VOEVENT_BYTES = 99_000
"""Largest VOEvent the builders return, in bytes: below Comet's 99,999-byte frame
limit (Comet drops larger frames without a NAK) with room for the VTP envelope."""

COORD_SYSTEM = "UTC-ICRS-GEO"
TRIGGER_OBSERVATORY = "GEOSURFACE"  # a neutrino telescope sits at the Earth's surface
COINCIDENCE_OBSERVATORY = "GEOLUN"  # members may be in orbit (Fermi, Swift): geocentric
NEUTRINO_CONCEPT = "phys.particle.neutrino"  # IVOA UCD1+ word; readers map it to the messenger
PROV_NAMESPACE = "http://www.w3.org/ns/prov#"

# VOEvent roles of the Alert roles: a drill is a rehearsal, never an observation.
_VOEVENT_ROLE = {"observation": "observation", "test": "test", "drill": "test",
                 "utility": "utility", "prediction": "prediction"}

# Why/Inference concepts per messenger (IVOA UCD1+ words; LVK uses process.gravitation).
_MESSENGER_CONCEPTS = {
    "gravitational_wave": "process.gravitation", "neutrino": NEUTRINO_CONCEPT,
    "gamma_ray": "em.gamma", "x_ray": "em.X-ray", "ultraviolet": "em.UV",
    "optical": "em.opt", "infrared": "em.IR", "radio": "em.radio",
    "cosmic_ray": "phys.particle", "other": "meta.code.class",
}

# Characters XML 1.0 cannot carry (C0 controls, lone surrogates, U+FFFE/FFFF).
_NOT_XML = re.compile("[^\t\n\r\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")

# Trigger fields listeners.trigger keeps in Alert.extra, and the Group each goes to.
_TRIGGER_EXTRA = ("trigger_type", "multiplicity", "flavor", "neutrino_type",
                  "error_radius_50_deg", "gal_l_deg", "gal_b_deg", "reco_quality",
                  "p_neutrino", "ranking", "publisher", "contact", "sent_time")

TRIGGER_FIELD_PARAMS: Mapping[str, tuple[str, ...]] = {
    "event_id": ("detector_event_id",), "revision": ("revision",),
    "retraction": ("retraction",), "detector": ("detector",), "instrument": ("instrument",),
    "trigger_type": ("trigger_type",), "real": ("real",), "time": ("time",),
    "time_precision_s": ("time_error",), "sent_time": ("sent_time",), "ra_deg": ("ra",),
    "dec_deg": ("dec",), "gal_l_deg": ("gal_l",), "gal_b_deg": ("gal_b",),
    "error_radius_50_deg": ("src_error_50",), "error_radius_90_deg": ("src_error_90",),
    "flavor": ("flavor",), "neutrino_type": ("neutrino_type",),
    "multiplicity": ("multiplicity",), "energy_gev": ("energy",),
    "energy_min_gev": ("energy_min",), "energy_max_gev": ("energy_max",),
    "reco_quality": ("reco_quality",), "p_neutrino": ("p_neutrino",),
    "p_astro": ("signalness",), "far_hz": ("FAR",), "ranking": ("ranking",),
    "pipeline": ("pipeline",), "pipeline_version": ("pipeline_version",),
    "reco_method": ("reco_method",), "cuts": ("cuts",), "publisher": ("publisher",),
    "contact": ("contact_name", "contact_email"),
    "data_rights": ("data_rights", "embargo_until"),
}
"""Each field of ``trigger.schema.json`` and the What Param(s) carrying it (``$schema``
and ``schema_version`` describe the document, not the event, and are not published)."""


class PublishError(PermanentError):
    """A VOEvent that must not leave: schema-invalid, or over :data:`MAX_VOEVENT_BYTES`.

    Parameters
    ----------
    ivorn
        The IVORN of the refused packet.
    errors
        Each reason (XSD messages with their line, or the size).
    """

    def __init__(self, ivorn: str, errors: Sequence[str]) -> None:
        self.ivorn = ivorn
        self.errors = list(errors)
        shown = "; ".join(self.errors[:10])
        more = f" (+{len(self.errors) - 10} more)" if len(self.errors) > 10 else ""
        super().__init__(f"VOEvent {ivorn} not publishable: {shown}{more}")


_SHORT_NAME = "mmbroker"


@dataclass(frozen=True, slots=True)
class Who:
    """The ``Who`` of every VOEvent this broker publishes (from configuration).

    Parameters
    ----------
    author_ivorn
        ``Who/AuthorIVORN``, with or without the ``ivo://`` prefix.
    short_name
        ``Who/Author/shortName``.
    contact_name, contact_email
        ``Who/Author/contactName`` and ``contactEmail``; omitted when None.
    publisher
        ``Who/Author/title``: the organization publishing the packets.
    """

    author_ivorn: str = "ivo://local.mmbroker/mmbroker"
    short_name: str = _SHORT_NAME
    contact_name: str | None = None
    contact_email: str | None = None
    publisher: str = "mmbroker multimessenger alert broker"

    @classmethod
    def from_settings(cls, settings: Any) -> Who:
        """From :class:`broker.config.Settings` (``author_ivorn``, ``author_short_name`` ...)."""
        authority = getattr(settings, "ivorn_authority", "local.mmbroker")
        short = getattr(settings, "author_short_name", None) or _SHORT_NAME
        return cls(author_ivorn=getattr(settings, "author_ivorn", None)
                   or f"ivo://{authority}/mmbroker",
                   short_name=short, contact_name=getattr(settings, "contact_name", None),
                   contact_email=getattr(settings, "contact_email", None),
                   publisher=getattr(settings, "publisher", None) or short)


# -- validation -------------------------------------------------------------------

_local = threading.local()


def _schema() -> etree.XMLSchema:
    # One XMLSchema per thread: lxml does not promise that concurrent validate()
    # calls on one schema object are safe (its error_log is shared state).
    schema = getattr(_local, "schema", None)
    if schema is None:
        schema = etree.XMLSchema(etree.fromstring(vp.definitions.v2_0_schema_str))
        _local.schema = schema
    return schema


def validate(xml: bytes) -> list[str]:
    """XSD errors of a VOEvent against voevent-parse's bundled VOEvent 2.0 schema.

    Parameters
    ----------
    xml
        The serialized packet.

    Returns
    -------
    list of str
        One message per error (``line N: ...``); empty when the packet is valid.
        Bytes that are not well-formed XML give one error saying so.
    """
    try:
        # Our own output in practice, but validate() may be handed anything:
        # parse with the hardened parser (no entities, no DTD, no network).
        root = etree.fromstring(xml, parser=xml_safe.make_parser())
    except (etree.XMLSyntaxError, ValueError) as exc:
        return [f"not well-formed XML: {exc}"]
    schema = _schema()
    if schema.validate(root):
        return []
    return [f"line {e.line}: {e.message}" for e in schema.error_log]


# -- element helpers --------------------------------------------------------------

def _clean(text: str) -> str:
    """``text`` with characters XML cannot carry replaced by U+FFFD (lxml would refuse it)."""
    return _NOT_XML.sub("\ufffd", text)


def _value_text(value: Any) -> tuple[str, str]:
    """(text, VOEvent dataType) of a Param value; floats as repr, so bytes never drift."""
    if isinstance(value, bool):
        return ("true" if value else "false"), "string"
    if isinstance(value, int):
        return str(value), "int"
    if isinstance(value, float):
        return repr(value), "float"
    if isinstance(value, datetime):
        return format_utc(value), "string"
    if isinstance(value, str):
        return _clean(value), "string"
    # JSON values from Alert.extra: a canonical encoding, so the same dict gives the same bytes.
    return _clean(json.dumps(value, sort_keys=True, separators=(",", ":"),
                             ensure_ascii=False)), "string"


_ATTR_ESCAPES = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;",
                               "\t": "&#9;", "\n": "&#10;", "\r": "&#13;"})
_ATTR_SPECIAL = re.compile('[&<>"\t\n\r]')
_TEXT_ESCAPES = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;", "\r": "&#13;"})
_TEXT_SPECIAL = re.compile("[&<>\r]")


def _attr(value: str) -> str:
    """``value`` escaped for a double-quoted attribute: parsing gives it back exactly."""
    return value.translate(_ATTR_ESCAPES) if _ATTR_SPECIAL.search(value) else value


def _text(value: str) -> str:
    """``value`` escaped for element content: parsing gives it back exactly."""
    return value.translate(_TEXT_ESCAPES) if _TEXT_SPECIAL.search(value) else value


class _Markup(str):
    """Part of a packet as XML text (see :class:`_Packet`)."""

    __slots__ = ()


def _el(tag: str, text: str | None = None, *, inner: str = "", **attrib: str) -> _Markup:
    """An element as text: attribute values and ``text`` with what XML cannot carry
    replaced (:func:`_clean`) and escaped; ``inner``, markup already, after the text."""
    head = "".join(f' {key}="{_attr(_clean(value))}"' for key, value in attrib.items())
    body = (_text(_clean(text)) if text is not None else "") + inner
    return _Markup(f"<{tag}{head}>{body}</{tag}>" if body or text is not None
                   else f"<{tag}{head}/>")


def _param(name: str, value: Any, *, ucd: str, unit: str | None = None,
           description: str | None = None) -> _Markup | None:
    """A ``Param`` with value, unit, UCD and a ``Description``; None when ``value`` is None."""
    if value is None:
        return None
    text, data_type = _value_text(value)
    # voevent-parse's Param attributes, in its order.  Written out rather than through
    # _el (the same _clean, _attr and _text): ~46 Params per trigger, and _el's generic
    # attribute handling made a packet 1.17 against 0.87 ms (2026-12-08, interleaved).
    markup = f'<Param name="{_attr(_clean(name))}" value="{_attr(text)}"'
    if unit is not None:
        markup += f' unit="{_attr(_clean(unit))}"'
    if ucd is not None:
        markup += f' ucd="{_attr(_clean(ucd))}"'
    if not description:
        return _Markup(f'{markup} dataType="{data_type}"/>')
    return _Markup(f'{markup} dataType="{data_type}"><Description>'
                   f"{_text(_clean(description))}</Description></Param>")


def _group(name: str, params: Iterable[_Markup | None], *, description: str | None = None,
           group_type: str | None = None) -> _Markup | None:
    """A ``Group`` of the non-None ``params``; None when there are none (the XSD needs one)."""
    present = [p for p in params if p is not None]
    if not present:
        return None
    markup = f'<Group name="{_attr(_clean(name))}"' if name else "<Group"
    if group_type:
        markup += f' type="{_attr(_clean(group_type))}"'
    described = f"<Description>{_text(_clean(description))}</Description>" \
        if description else ""
    return _Markup(f"{markup}>{''.join(present)}{described}</Group>")


def _add_what(voevent: _Packet, items: Iterable[_Markup | None]) -> None:
    voevent.what.extend(item for item in items if item is not None)


def _add_how(voevent: _Packet, descriptions: Sequence[str], provenance_url: str) -> None:
    """``How``: descriptions and the provenance Reference (instead of the broken ``vp.add_how``)."""
    voevent.sections.append(_el("How", inner="".join(
        [*(_el("Description", text) for text in descriptions),
         _el("Reference", uri=provenance_url, type="provenance", meaning=PROV_NAMESPACE)])))


@dataclass(frozen=True, slots=True)
class _Inference:
    concepts: tuple[str, ...]
    description: str
    probability: float | None = None
    relation: str | None = None
    name: str | None = None


def _add_why(voevent: _Packet, inferences: Sequence[_Inference], description: str) -> None:
    """``Why`` with Inferences (instead of the broken ``vp.add_why``)."""
    parts = []
    for inf in inferences:
        attrib = {}
        if inf.probability is not None:
            attrib["probability"] = repr(float(inf.probability))
        if inf.relation is not None:
            attrib["relation"] = inf.relation
        inner = [_el("Name", inf.name)] if inf.name is not None else []
        inner += [_el("Concept", concept) for concept in inf.concepts]
        inner.append(_el("Description", inf.description))
        parts.append(_el("Inference", inner="".join(inner), **attrib))
    parts.append(_el("Description", description))
    voevent.sections.append(_el("Why", inner="".join(parts)))


def _add_citations(voevent: _Packet, cited: Sequence[tuple[str, str]],
                   description: str) -> None:
    """``Citations`` (instead of the broken ``vp.add_citations``); nothing when none cited.

    The XSD wants the EventIVORNs first, then at most one Description.
    """
    if not cited:
        return
    voevent.sections.append(_el("Citations", inner="".join(
        [*(_el("EventIVORN", ivorn, cite=cite) for ivorn, cite in cited),
         _el("Description", description)])))


def _trigger_cited(supersedes: str | None, retracts: str | None) -> list[tuple[str, str]]:
    return [(ivorn, cite) for ivorn, cite in ((supersedes, "supersedes"),
                                              (retracts, "retraction")) if ivorn]


def _coincidence_cited(coinc: Coincidence) -> list[tuple[str, str]]:
    cited = [(m.alert_id, "followup") for m in coinc.members]
    if coinc.supersedes:
        cited.append((coinc.supersedes,
                      "retraction" if coinc.state == "retracted" else "supersedes"))
    return cited


def trigger_citations(supersedes: str | None, retracts: str | None
                      ) -> list[tuple[str, str]]:
    """What :func:`citations_of` reads from the VOEvent :func:`build_trigger` makes with
    these arguments, without parsing it (the outbox records them as it queues)."""
    return [(_clean(ivorn).strip(), cite) for ivorn, cite in _trigger_cited(supersedes, retracts)]


def coincidence_citations(coinc: Coincidence) -> list[tuple[str, str]]:
    """What :func:`citations_of` reads from the VOEvent :func:`build_coincidence` makes of
    ``coinc``, without parsing it."""
    return [(_clean(ivorn).strip(), cite) for ivorn, cite in _coincidence_cited(coinc)]


def citations_of(xml: bytes) -> list[tuple[str, str]]:
    """(IVORN, cite) of every ``Citations/EventIVORN`` of a VOEvent, in document order.

    For VOEvents this broker built (the outbox records them for the
    ``cites`` / ``cited_by`` query filters); parsed with the hardened parser
    all the same.
    """
    root = xml_safe.parse(xml, max_bytes=max(len(xml), 1))
    return [((element.text or "").strip(), element.get("cite", ""))
            for element in root.iterfind("Citations/EventIVORN")]


_ROOT = ('<voe:VOEvent xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" '
         'xmlns:voe="http://www.ivoa.net/xml/VOEvent/v2.0" xsi:schemaLocation='
         '"http://www.ivoa.net/xml/VOEvent/v2.0 http://www.ivoa.net/xml/VOEvent/VOEvent-v2.0.xsd"'
         ' version="2.0" role="{role}" ivorn="{ivorn}">')
"""voevent-parse's skeleton root, as it serializes it (``voeventparse.Voevent``)."""
_WHO_DESCRIPTION = (f"VOEvent created with voevent-parse, version {vp.__version__}. "
                    "See https://github.com/timstaley/voevent-parse for details.")
"""The Who Description voevent-parse's skeleton carries: the packets' bytes are the ones
it gave when it built them (before issue 17)."""


class _Packet:
    """A VOEvent being built, as text, section by section in document order.

    Built element by element with voevent-parse and lxml.objectify, a trigger's packet
    was the largest step from its POST to its VOEvent's hand-over (issue 17); as text,
    parsed once by :func:`_finish`, the same bytes come out faster (see the module's
    docstring).
    """

    __slots__ = ("ivorn", "role", "sections", "what", "when", "who")

    def __init__(self, ivorn: str, role: str) -> None:
        self.ivorn, self.role = ivorn, role
        self.who = _el("Who", inner=_el("Description", _WHO_DESCRIPTION))
        self.what: list[str] = []
        self.when: str | None = "<WhereWhen/>"  # None: left out
        self.sections: list[str] = []  # How, Why, Citations, Description, as added

    def text(self) -> str:
        return "".join([_ROOT.format(role=_attr(self.role), ivorn=_attr(self.ivorn)),
                        self.who, f"<What>{''.join(self.what)}</What>", self.when or "",
                        *self.sections, "</voe:VOEvent>"])


def _set_who(voevent: _Packet, who: Who, date: datetime) -> None:
    # As voevent-parse's set_who and set_author: microseconds dropped (as the VOEvent
    # spec wants), the Author children in their order.
    author = [_el("title", who.publisher), _el("shortName", who.short_name)]
    if who.contact_name:
        author.append(_el("contactName", who.contact_name))
    if who.contact_email:
        author.append(_el("contactEmail", who.contact_email))
    voevent.who = _el("Who", inner="".join([
        _el("Description", _WHO_DESCRIPTION),
        _el("AuthorIVORN", "ivo://" + who.author_ivorn.removeprefix("ivo://")),
        _el("Date", date.replace(microsecond=0).isoformat()),
        _el("Author", inner="".join(author))]))


def _new_voevent(ivorn: str, role: str) -> _Packet:
    """An empty VOEvent 2.0 packet with this exact IVORN."""
    _stream, sep, _local_id = ivorn.removeprefix("ivo://").partition("#")
    if not ivorn.startswith("ivo://") or not sep:
        raise ValueError(f"{ivorn!r} is not an IVORN ivo://<authority>/<stream>#<id>")
    if _NOT_XML.search(ivorn):  # replacing characters would change the IVORN: refuse
        raise PublishError(ivorn, ["the IVORN holds characters XML cannot carry"])
    return _Packet(ivorn, role)


def _finish(voevent: _Packet, ivorn: str) -> bytes:
    """Serialize, then refuse (PublishError) anything schema-invalid or over the frame limit.

    The tree parsed from the text is the one checked against the XSD and serialized: the
    bytes that leave are the tree that passed."""
    root = etree.fromstring(voevent.text(), parser=xml_safe.make_parser())
    xml: bytes = etree.tostring(root, pretty_print=True, xml_declaration=True,
                                encoding="UTF-8")
    # Errors by line of the packet as sent: from its bytes (only when there are any).
    errors = [] if _schema().validate(root) else validate(xml)
    if len(xml) > MAX_VOEVENT_BYTES:
        errors.append(f"{len(xml)} bytes exceeds the {MAX_VOEVENT_BYTES}-byte limit (Comet "
                      "drops frames over 99,999 bytes)")
    if errors:
        raise PublishError(ivorn, errors)
    return xml


# -- WhereWhen and localization ---------------------------------------------------

@dataclass(frozen=True, slots=True)
class _Circle:
    ra_deg: float
    dec_deg: float
    radius_deg: float
    meaning: str  # what Error2Radius is, for WhereWhen/Description


def _cap_radius_deg(area_deg2: float) -> float:
    """Radius (deg) of the spherical cap with this area (deg^2): A = 2 pi (1 - cos r)."""
    area_sr = min(area_deg2 * (math.pi / 180.0) ** 2, 4.0 * math.pi)
    return math.degrees(math.acos(max(-1.0, 1.0 - area_sr / (2.0 * math.pi))))


def _circle(loc: Localization | None) -> _Circle | None:
    """The Position2D of a localization, if it has one."""
    if isinstance(loc, PointLocalization):
        sys_note = (f"; add the systematic error {loc.systematic_deg!r} deg in quadrature"
                    if loc.systematic_deg is not None else "")
        return _Circle(loc.ra_deg, loc.dec_deg, loc.error_radius_deg,
                       f"Error2Radius is the {_pct(loc.containment)} containment radius "
                       f"in degrees{sys_note}.")
    if isinstance(loc, EllipseLocalization):
        return _Circle(loc.ra_deg, loc.dec_deg, loc.semi_major_deg,
                       f"Error2Radius is the semi-major axis of the {_pct(loc.containment)} "
                       "error ellipse in degrees (a circle containing the ellipse); the "
                       "ellipse is in the Localization Group.")
    if isinstance(loc, SkymapLocalization) and loc.ra_deg is not None \
            and loc.dec_deg is not None and loc.area_90_deg2 is not None:
        return _Circle(loc.ra_deg, loc.dec_deg, _cap_radius_deg(loc.area_90_deg2),
                       "Position2D is the alert's summary position (the position it states, "
                       "else the sky map's most probable pixel); Error2Radius (deg) "
                       f"is the radius of a circle with the area ({loc.area_90_deg2!r} deg2) "
                       "of the map's 90% credible region, not the region itself: fetch the "
                       "map from the skymap_url Param.")
    return None


def _pct(fraction: float) -> str:
    return f"{fraction * 100:g}%"


def _add_where_when(voevent: _Packet, time: datetime | None, time_error_s: float | None,
                    circle: _Circle | None, observatory: str) -> None:
    """WhereWhen: UTC time (with its 1-sigma Error in s), ICRS position when there is one."""
    if time is None:
        voevent.when = None  # no time, no WhereWhen (an empty one says nothing)
        return
    # As voevent-parse's add_where_when writes it (naive UTC: the scale is in the coord
    # system id), and without a position when there is none.
    instant: str = _el("TimeInstant", inner=_el(
        "ISOTime", time.astimezone(UTC).replace(tzinfo=None).isoformat()))
    if time_error_s is not None:
        instant += _el("Error", repr(float(time_error_s)))
    coords: str = _el("Time", inner=instant, unit="s")
    if circle is not None:
        coords += _el("Position2D", unit="deg", inner="".join([
            _el("Name1", "RA"), _el("Name2", "Dec"),
            _el("Value2", inner=_el("C1", repr(circle.ra_deg)) + _el("C2", repr(circle.dec_deg))),
            _el("Error2Radius", repr(circle.radius_deg))]))
    location = _el("AstroCoordSystem", id=COORD_SYSTEM) + _el(
        "AstroCoords", inner=coords, coord_system_id=COORD_SYSTEM)
    notes = ["Time is UTC (UTC-ICRS-GEO); Time/Error is its 1-sigma uncertainty in seconds."
             if time_error_s is not None else "Time is UTC (UTC-ICRS-GEO); no uncertainty "
             "stated."]
    notes.append(circle.meaning if circle is not None else "No sky position.")
    voevent.when = _el("WhereWhen", inner=_el("ObsDataLocation", inner=_el(
        "ObservatoryLocation", id=observatory) + _el("ObservationLocation", inner=location))
        + _el("Description", " ".join(notes)))


def _localization_params(loc: Localization | None, *, skymap_url: str | None,
                         extra: Mapping[str, Any] | None = None) -> list[_Markup | None]:
    """Params of the ``Localization`` Group for any localization kind."""
    extra = extra or {}
    kind = "none" if loc is None else loc.kind
    params: list[_Markup | None] = [_param(
        "localization_kind", kind, ucd="meta.code",
        description="point (circle), ellipse, skymap (HEALPix map by reference) or none.")]
    ra_ucd, dec_ucd = "pos.eq.ra;meta.main", "pos.eq.dec;meta.main"
    if isinstance(loc, PointLocalization | EllipseLocalization):
        params += [
            _param("ra", loc.ra_deg, unit="deg", ucd=ra_ucd,
                   description="Right ascension of the best-fit direction, ICRS."),
            _param("dec", loc.dec_deg, unit="deg", ucd=dec_ucd,
                   description="Declination of the best-fit direction, ICRS.")]
    if isinstance(loc, PointLocalization):
        radius_name = {0.9: "src_error_90", 0.5: "src_error_50"}.get(loc.containment,
                                                                     "error_radius")
        params += [
            _param(radius_name, loc.error_radius_deg, unit="deg", ucd="stat.error;pos.eq",
                   description=f"Radius of the circle containing the true direction with "
                               f"{_pct(loc.containment)} probability (statistical and "
                               "systematic combined unless systematic_error is given); "
                               "WhereWhen Error2Radius."),
            _param("error_radius_containment", loc.containment, ucd="stat.probability",
                   description="Probability (0..1) contained within WhereWhen Error2Radius."),
            _param("systematic_error", loc.systematic_deg, unit="deg",
                   ucd="stat.error.sys;pos.eq",
                   description="Systematic error to add in quadrature to the radius.")]
    if "error_radius_50_deg" in extra and not (
            isinstance(loc, PointLocalization) and loc.containment == 0.5):
        params.append(_param(
            "src_error_50", extra["error_radius_50_deg"], unit="deg", ucd="stat.error;pos.eq",
            description="Radius of the circle containing the true direction with 50% "
                        "probability (statistical and systematic combined)."))
    if isinstance(loc, EllipseLocalization):
        params += [
            _param("semi_major", loc.semi_major_deg, unit="deg", ucd="stat.error;pos.eq",
                   description="Semi-major axis of the error ellipse."),
            _param("semi_minor", loc.semi_minor_deg, unit="deg", ucd="stat.error;pos.eq",
                   description="Semi-minor axis of the error ellipse."),
            _param("position_angle", loc.position_angle_deg, unit="deg", ucd="pos.posAng",
                   description="Position angle of the major axis, east of north."),
            _param("error_radius_containment", loc.containment, ucd="stat.probability",
                   description="Probability (0..1) contained within the ellipse.")]
    if isinstance(loc, SkymapLocalization):
        params += [
            _param("skymap_url", skymap_url or loc.url, ucd="meta.ref.url",
                   description="Where to fetch the HEALPix sky map (never sent inline)."),
            _param("skymap_sha256", loc.skymap_sha256, ucd="meta.checksum",
                   description="SHA-256 (hex) of the sky map file as received."),
            _param("skymap_format", loc.format, ucd="meta.code",
                   description="multiorder (NUNIQ) or flat HEALPix map."),
            _param("area_90", loc.area_90_deg2, unit="deg2", ucd="phys.angArea",
                   description="Area of the 90% credible region."),
            _param("ra", loc.ra_deg, unit="deg", ucd=ra_ucd,
                   description="Right ascension of the summary position (the position "
                               "the alert states, else the map's most probable pixel), ICRS."),
            _param("dec", loc.dec_deg, unit="deg", ucd=dec_ucd,
                   description="Declination of the summary position (the position "
                               "the alert states, else the map's most probable pixel), ICRS.")]
        if loc.area_90_deg2 is not None and loc.ra_deg is not None:
            params.append(_param(
                "error_radius_containment", 0.9, ucd="stat.probability",
                description="Nominal: Error2Radius is the equal-area circle of the 90% "
                            "credible region, not the region itself."))
    elif skymap_url is not None:
        params.append(_param("skymap_url", skymap_url, ucd="meta.ref.url",
                             description="Where to fetch the HEALPix sky map."))
    if "gal_l_deg" in extra or "gal_b_deg" in extra:
        params += [
            _param("gal_l", extra.get("gal_l_deg"), unit="deg", ucd="pos.galactic.lon",
                   description="Galactic longitude of the best-fit direction."),
            _param("gal_b", extra.get("gal_b_deg"), unit="deg", ucd="pos.galactic.lat",
                   description="Galactic latitude of the best-fit direction.")]
    return params


# -- detector triggers ------------------------------------------------------------

def build_trigger(alert: Alert, *, who: Who, provenance_url: str,
                  supersedes: str | None = None, retracts: str | None = None,
                  skymap_url: str | None = None) -> bytes:
    """The VOEvent 2.0 of an internal detector trigger, under the alert's own IVORN.

    Parameters
    ----------
    alert
        A detector-trigger alert (``alert.source == "detector"``, as
        :func:`listeners.trigger.trigger_alert` makes them).
    who
        Author, contact and publisher (from configuration).
    provenance_url
        URL of the packet's W3C PROV document; a ``How/Reference`` of type
        ``provenance``.
    supersedes
        IVORN of the revision this one replaces (``cite="supersedes"``).
    retracts
        IVORN of the revision a retraction alert retracts (``cite="retraction"``).
    skymap_url
        URL of a sky map at the broker's API, as a ``skymap_url`` Param.

    Returns
    -------
    bytes
        UTF-8 XML, schema-valid, at most :data:`MAX_VOEVENT_BYTES`; the same
        inputs always give the same bytes.

    Raises
    ------
    ValueError
        Not a detector trigger, or ``retracts`` given for an alert that is no retraction.
    PublishError
        The packet fails the XSD or exceeds :data:`MAX_VOEVENT_BYTES`.
    """
    if alert.source != "detector":
        raise ValueError(f"{alert.id}: build_trigger publishes detector triggers only "
                         f"(source 'detector'), not {alert.source!r}")
    if retracts is not None and alert.alert_type != "retraction":
        raise ValueError(f"{alert.id} is a {alert.alert_type}, not a retraction: it cannot "
                         f"retract {retracts}")
    v = _new_voevent(alert.id, _VOEVENT_ROLE[alert.role])
    # The alert's own times only: the same alert must give the same bytes.
    _set_who(v, who, alert.received_time or alert.trigger_time)
    _add_what(v, _trigger_what(alert, skymap_url))
    _add_where_when(v, alert.trigger_time, alert.trigger_time_error_s,
                    _circle(alert.localization), TRIGGER_OBSERVATORY)
    _add_how(v, _trigger_how(alert), provenance_url)
    _add_why(v, _trigger_inferences(alert), _trigger_summary(alert))
    _add_citations(v, _trigger_cited(supersedes, retracts),
                   _trigger_citation_text(alert, supersedes, retracts))
    v.sections.append(_el("Description", _trigger_summary(alert)))
    return _finish(v, alert.id)


def _detector_event_id(alert: Alert) -> str:
    """The trigger's own event id (listeners.trigger keys events ``<detector>:<id>``)."""
    return alert.event_id.removeprefix(f"{alert.facility}:")


def _trigger_what(alert: Alert, skymap_url: str | None) -> list[_Markup | None]:
    extra = alert.extra
    prov = alert.provenance
    energy = alert.energy
    stated = extra.get("contact")
    contact: dict[str, Any] = stated if isinstance(stated, dict) else {}
    rights = alert.data_rights
    top = [
        _param("event_id", alert.event_id, ucd="meta.id",
               description="Event key <detector>:<detector event id>, shared by every "
                           "revision and the retraction of the event."),
        _param("revision", alert.revision, ucd="meta.version",
               description="Revision of the trigger (0 first); a higher one supersedes."),
        _param("alert_type", alert.alert_type, ucd="meta.code.status",
               description="initial, update or retraction."),
        _param("FAR", alert.far_hz, unit="Hz", ucd="arith.rate;stat.falsealarm",
               description="False alarm rate of triggers at least this significant."),
        _param("signalness", alert.signalness, ucd="stat.probability",
               description="p_astro: probability (0..1) that the event is of astrophysical "
                           "origin."),
        _param("p_value", alert.p_value, ucd="stat.probability",
               description="Probability (0..1) of a background event at least this "
                           "significant."),
    ]
    event = _group("Event", [
        _param("detector_event_id", _detector_event_id(alert), ucd="meta.id",
               description="The detector's own identifier of the triggered event."),
        _param("detector", alert.facility, ucd="meta.id;instr.obsty",
               description="Observatory or collaboration running the detector."),
        _param("instrument", alert.instrument, ucd="meta.id;instr.setup",
               description="Detector building block or configuration."),
        _param("trigger_type", extra.get("trigger_type"), ucd="meta.code.class",
               description="What fired: track, starting_track, shower, multiplet or other."),
        _param("multiplicity", extra.get("multiplicity"), ucd="meta.number",
               description="Number of neutrino candidate events in the trigger."),
        _param("real", alert.role == "observation", ucd="meta.code",
               description="true for a real observation, false for a test trigger."),
        _param("retraction", alert.alert_type == "retraction", ucd="meta.code.status",
               description="true when this packet retracts the event (it was not real)."),
        _param("time", alert.trigger_time, ucd="time.epoch",
               description="Time of the event at the detector (UTC; for a multiplet, its "
                           "first event); WhereWhen ISOTime."),
        _param("time_error", alert.trigger_time_error_s, unit="s", ucd="stat.error;time.epoch",
               description="1-sigma uncertainty of the event time; WhereWhen Time/Error."),
        _param("sent_time", extra.get("sent_time"), ucd="time.processing",
               description="When the detector's alert system sent the trigger (UTC)."),
    ])
    localization = _group("Localization", _localization_params(
        alert.localization, skymap_url=skymap_url, extra=extra))
    energy_group = _group("Energy", [] if energy is None else [
        _param("energy", energy.best_gev, unit="GeV", ucd="phys.energy",
               description="Best estimate of the neutrino energy (or its proxy)."),
        _param("energy_min", energy.min_gev, unit="GeV", ucd="phys.energy;stat.min",
               description="Lower bound of the energy uncertainty interval."),
        _param("energy_max", energy.max_gev, unit="GeV", ucd="phys.energy;stat.max",
               description="Upper bound of the energy uncertainty interval."),
    ])
    classification = _group("Classification", [
        _param("flavor", extra.get("flavor"), ucd="meta.code.class",
               description="Neutrino flavour favoured by the reconstruction: e, mu, tau or "
                           "unknown."),
        _param("neutrino_type", extra.get("neutrino_type"), ucd="meta.code.class",
               description="neutrino, antineutrino or unknown."),
        _param("p_neutrino", extra.get("p_neutrino"), ucd="stat.probability",
               description="Probability (0..1) that the event is a neutrino rather than "
                           "background (e.g. an atmospheric muon)."),
        _param("ranking", extra.get("ranking"), ucd="meta.code.qual",
               description="gold, silver or bronze (gold most likely astrophysical)."),
    ])
    reconstruction = _group("Reconstruction", [
        _param("reco_method", prov.reco_method if prov else None, ucd="meta.code;meta.software",
               description="Reconstruction method for direction and energy."),
        _param("reco_quality", extra.get("reco_quality"), ucd="stat.fit.goodness",
               description="Reconstruction quality as the method defines it; dimensionless."),
        _param("pipeline", prov.pipeline if prov else None, ucd="meta.id;meta.software",
               description="Online pipeline that issued the trigger."),
        _param("pipeline_version", prov.pipeline_version if prov else None,
               ucd="meta.version;meta.software", description="Version of that pipeline."),
        _param("cuts", prov.cuts if prov else None, ucd="meta.note",
               description="Selection cuts applied, as the detector names them."),
    ])
    publisher = _group("Publisher", [
        _param("publisher", extra.get("publisher"), ucd="meta.curation",
               description="Who issued the trigger."),
        _param("contact_name", contact.get("name"), ucd="meta.curation",
               description="Whom to ask about the trigger."),
        _param("contact_email", contact.get("email"), ucd="meta.email",
               description="E-mail address of the contact."),
    ])
    data_rights = _group("Data_Rights", [
        _param("data_rights", rights.level, ucd="meta.code",
               description="public, embargoed (until embargo_until) or proprietary."),
        _param("embargo_until", rights.embargo_until, ucd="time.end",
               description="End of the embargo (UTC)."),
    ])
    provenance = _group("Provenance", [
        _param("source", alert.source, ucd="meta.id",
               description="Broker input stream of the alert."),
        _param("received_time", alert.received_time, ucd="time.processing",
               description="When the broker received the trigger (UTC)."),
        _param("raw_sha256", alert.raw_sha256, ucd="meta.checksum",
               description="SHA-256 (hex) of the trigger's raw bytes as received."),
        _param("raw_ref", alert.raw_ref, ucd="meta.ref.url",
               description="Path of the raw bytes at the broker's API."),
    ])
    unknown = sorted(k for k in extra if k not in _TRIGGER_EXTRA)
    extras = _group("Extra", [
        _param(k, extra[k], ucd="meta", description="Stream field kept as sent (JSON "
               "for objects and arrays).") for k in unknown],
        description="Fields of the alert this broker does not interpret.")
    return [*top, event, localization, energy_group, classification, reconstruction,
            publisher, data_rights, provenance, extras]


def _trigger_how(alert: Alert) -> list[str]:
    # "<X> Instrument" is GCN's phrasing; listeners.voevent reads the instrument from it.
    lines = [f"{alert.facility} neutrino telescope, {alert.instrument} Instrument"
             if alert.instrument else f"{alert.facility} neutrino telescope"]
    prov = alert.provenance
    if prov is not None:
        parts = [f"pipeline {prov.pipeline}" + (f" {prov.pipeline_version}"
                                                if prov.pipeline_version else "")
                 if prov.pipeline else None,
                 f"reconstruction {prov.reco_method}" if prov.reco_method else None,
                 f"cuts: {prov.cuts}" if prov.cuts else None]
        text = "; ".join(p for p in parts if p)
        if text:
            lines.append(f"Online trigger: {text}.")
    return lines


def _trigger_inferences(alert: Alert) -> list[_Inference]:
    inferences = []
    if alert.signalness is not None:
        inferences.append(_Inference(
            (NEUTRINO_CONCEPT,), "p_astro: probability that the neutrino is of astrophysical "
            "origin.", probability=alert.signalness))
    p_neutrino = alert.extra.get("p_neutrino")
    if isinstance(p_neutrino, int | float) and not isinstance(p_neutrino, bool) \
            and 0 <= p_neutrino <= 1:
        inferences.append(_Inference(
            (NEUTRINO_CONCEPT,), "p_neutrino: probability that the event is a neutrino rather "
            "than background (e.g. an atmospheric muon).", probability=float(p_neutrino)))
    if not inferences:
        # The Concept still tells readers the messenger (no probability was stated).
        inferences.append(_Inference((NEUTRINO_CONCEPT,), "Neutrino candidate; the detector "
                                     "states no probability."))
    return inferences


def _trigger_summary(alert: Alert) -> str:
    kind = alert.extra.get("trigger_type")
    where = f" {alert.instrument}" if alert.instrument else ""
    test = "TEST trigger (not an observation): " if alert.role != "observation" else ""
    if alert.alert_type == "retraction":
        return (f"{test}{alert.facility}{where} retracts neutrino trigger "
                f"{_detector_event_id(alert)} (revision {alert.revision}): the event was not "
                "real.")
    what = f"{kind} " if isinstance(kind, str) else ""
    return (f"{test}{alert.facility}{where} {what}neutrino candidate "
            f"{_detector_event_id(alert)}, revision {alert.revision} ({alert.alert_type}).")


def _trigger_citation_text(alert: Alert, supersedes: str | None, retracts: str | None) -> str:
    parts = []
    if retracts:
        parts.append(f"Retracts {retracts}: event {alert.event_id} was not real.")
    if supersedes:
        parts.append(f"Revision {alert.revision} of event {alert.event_id} supersedes "
                     f"{supersedes}.")
    return " ".join(parts)


# -- coincidences -----------------------------------------------------------------

def coincidence_role(members: Sequence[Alert]) -> str:
    """VOEvent role of a coincidence: ``observation`` only when every member is one.

    Observations and tests are never matched together, so the members agree;
    ``prediction`` members count as observations (:func:`crossmatch.engine.members_class`).
    """
    return "observation" if members_class(m.role for m in members) == "observation" \
        else "test"


def build_coincidence(coinc: Coincidence, members: list[Alert], *, who: Who,
                      provenance_url: str,
                      skymap_url_for: Callable[[str], str] | None = None) -> bytes:
    """The VOEvent 2.0 of a coincidence, under the coincidence's IVORN.

    Parameters
    ----------
    coinc
        The coincidence revision.
    members
        The member alerts (matched to ``coinc.members`` by IVORN); they give the
        role, instruments and trigger times.  A member missing here is still
        published from ``coinc.members`` (and cited).
    who
        Author, contact and publisher (from configuration).
    provenance_url
        URL of the packet's W3C PROV document (``How/Reference`` of type ``provenance``).
    skymap_url_for
        Maps a sky map's SHA-256 to its URL at the broker's API; without it the
        facility's URL is used when known.  Maps are never inline.

    Returns
    -------
    bytes
        UTF-8 XML, schema-valid, at most :data:`MAX_VOEVENT_BYTES`, deterministic.

    Raises
    ------
    PublishError
        The packet fails the XSD or exceeds :data:`MAX_VOEVENT_BYTES`.
    """
    by_id = {m.id: m for m in members}
    known = [by_id[m.alert_id] for m in coinc.members if m.alert_id in by_id]
    v = _new_voevent(coinc.id, coincidence_role(known))
    _set_who(v, who, coinc.created_time)
    reference = by_id.get(coinc.members[0].alert_id)
    time = coinc.reference_time or (reference.trigger_time if reference else None)
    skymap_url = None
    if isinstance(coinc.localization, SkymapLocalization) and skymap_url_for is not None:
        skymap_url = skymap_url_for(coinc.localization.skymap_sha256)
    _add_what(v, _coincidence_what(coinc, by_id, skymap_url))
    _add_where_when(v, time, reference.trigger_time_error_s if reference else None,
                    _circle(coinc.localization), COINCIDENCE_OBSERVATORY)
    _add_how(v, [f"mmbroker cross-match engine {coinc.engine_version}, pairing "
                 f"{coinc.pairing}; configuration SHA-256 {coinc.config_hash}.",
                 "Members: " + "; ".join(f"{m.facility} {m.messenger} ({m.source})"
                                         for m in coinc.members) + "."], provenance_url)
    concepts = tuple(dict.fromkeys(_MESSENGER_CONCEPTS[m.messenger] for m in coinc.members))
    _add_why(v, [_Inference(concepts, _coincidence_summary(coinc), relation="associated")],
             _coincidence_summary(coinc))
    _add_citations(v, _coincidence_cited(coinc), _coincidence_citation_text(coinc))
    v.sections.append(_el("Description", _coincidence_summary(coinc)))
    return _finish(v, coinc.id)


def _coincidence_key(coinc: Coincidence) -> str:
    """The coincidence's identity across revisions: its IVORN fragment without ``-<revision>``."""
    fragment = coinc.id.partition("#")[2]
    suffix = f"-{coinc.revision}"
    return fragment[: -len(suffix)] if fragment.endswith(suffix) and fragment != suffix \
        else fragment


def _coincidence_what(coinc: Coincidence, by_id: Mapping[str, Alert],
                      skymap_url: str | None) -> list[_Markup | None]:
    top = [
        _param("event_id", _coincidence_key(coinc), ucd="meta.id",
               description="Coincidence key (pairing and member events), shared by every "
                           "revision."),
        _param("revision", coinc.revision, ucd="meta.version",
               description="Revision of the coincidence (0 first); a higher one supersedes."),
        _param("state", coinc.state, ucd="meta.code.status",
               description="new; updated (supersedes the previous revision); retracted (a "
                           "member was retracted or no longer coincides)."),
        _param("pairing", coinc.pairing, ucd="meta.code",
               description="Configured pairing that produced the match."),
        _param("n_members", len(coinc.members), ucd="meta.number",
               description="Number of alerts in coincidence."),
    ]
    significance = _group("Significance", [
        _param(s.name, s.value, unit=s.unit, ucd=_significance_ucd(s.name, s.unit),
               description=(("Upper bound. " if s.is_bound else "Estimate. ") + s.definition))
        for s in coinc.significance],
        description="Every significance figure of the coincidence; each Param's Description "
                    "defines it and says whether the value is an upper bound.")
    overlap = coinc.spatial_overlap
    overlap_group = _group("Spatial_Overlap", [] if overlap is None else [
        _param("overlap_integral", overlap.integral, ucd="stat.value",
               description="I = 4 pi * integral of p1 p2 dOmega over the members' "
                           "localizations; dimensionless (1 for two all-sky maps, larger "
                           "when they agree, 0 when disjoint)."),
        _param("log10_overlap_integral", overlap.log10_integral, ucd="stat.value",
               description="log10(I)."),
        _param("overlap_method", overlap.method, ucd="meta.code",
               description="How I was computed."),
        _param("credible_level", overlap.credible_level, ucd="stat.probability",
               description="Credible level (0..1) of the gate the localizations passed."),
    ])
    source = next((m.alert_id for m in coinc.members if m.alert_id in by_id
                   and _same_localization(by_id[m.alert_id].localization, coinc.localization)),
                  None)
    loc_params = _localization_params(coinc.localization, skymap_url=skymap_url)
    loc_params.append(_param("localization_member", source if coinc.localization else None,
                             ucd="meta.ref.ivoid",
                             description="IVORN of the best-localized member, whose "
                                         "localization this is."))
    localization = _group("Localization", loc_params,
                          description="The best-localized member's localization.")
    member_groups = [_member_group(i, m, by_id.get(m.alert_id))
                     for i, m in enumerate(coinc.members, start=1)]
    engine = _group("Engine", [
        _param("engine_version", coinc.engine_version, ucd="meta.version;meta.software",
               description="Version of the cross-match engine."),
        _param("config_hash", coinc.config_hash, ucd="meta.checksum",
               description="SHA-256 (hex) of the cross-match configuration in force."),
        _param("created_time", coinc.created_time, ucd="time.processing",
               description="When the engine produced this revision (UTC)."),
        _param("reference_time", coinc.reference_time, ucd="time.epoch",
               description="Trigger time of the reference member (UTC); time offsets are "
                           "measured from it."),
    ])
    return [*top, significance, overlap_group, localization, *member_groups, engine]


def _same_localization(a: Localization, b: Localization | None) -> bool:
    """Whether a member's localization is the coincidence's (a sky map is known by its hash)."""
    if isinstance(a, SkymapLocalization) and isinstance(b, SkymapLocalization):
        return a.skymap_sha256 == b.skymap_sha256
    return b is not None and a.kind != "none" and a == b


def _significance_ucd(name: str, unit: str) -> str:
    words = name.lower().split("_")
    if unit.lower() == "hz":
        return "arith.rate;stat.falsealarm" if "far" in words else "arith.rate"
    if "p" in words or name.lower().endswith(("pvalue", "p_value")):
        return "stat.probability"
    return "stat.value"


def _member_group(index: int, member: Member, alert: Alert | None) -> _Markup | None:
    params = [
        _param("ivorn", member.alert_id, ucd="meta.ref.ivoid",
               description="IVORN of the member alert revision (cited as followup)."),
        _param("facility", member.facility, ucd="meta.id;instr.obsty",
               description="Observatory or collaboration that issued the alert."),
        _param("messenger", member.messenger, ucd="meta.code.class",
               description="Messenger that carried the signal."),
        _param("source", member.source, ucd="meta.id", description="Broker input stream."),
        _param("revision", member.revision, ucd="meta.version",
               description="Revision of the member alert used."),
        _param("time_offset", member.time_offset_s, unit="s", ucd="time.interval",
               description="Member trigger time minus the reference time."),
    ]
    if alert is not None:
        params += [
            _param("instrument", alert.instrument, ucd="meta.id;instr.setup",
                   description="Instrument, detector or pipeline within the facility."),
            _param("event_id", alert.event_id, ucd="meta.id",
                   description="The facility's identifier of the event."),
            _param("source_ivorn", alert.source_ivorn, ucd="meta.ref.ivoid",
                   description="IVORN the facility gave the message."),
            _param("trigger_time", alert.trigger_time, ucd="time.epoch",
                   description="Trigger time of the member (UTC)."),
            _param("alert_type", alert.alert_type, ucd="meta.code.status",
                   description="initial, update or retraction."),
            _param("far", alert.far_hz, unit="Hz", ucd="arith.rate;stat.falsealarm",
                   description="The member's own false alarm rate."),
        ]
    role = "Reference member (time offset 0)" if index == 1 else f"Member {index}"
    missing = "" if alert is not None else " (alert not available to the publisher)"
    return _group(f"Member_{index}", params, group_type="member",
                  description=f"{role}: {member.facility} {member.messenger} alert{missing}.")


def _coincidence_summary(coinc: Coincidence) -> str:
    names = " + ".join(f"{m.facility} {m.messenger.replace('_', ' ')}" for m in coinc.members)
    state = {"new": "new", "updated": "updated",
             "retracted": "RETRACTED (no longer a coincidence)"}[coinc.state]
    return (f"Multimessenger coincidence ({coinc.pairing}) of {names}; revision "
            f"{coinc.revision}, {state}.")


def _coincidence_citation_text(coinc: Coincidence) -> str:
    text = f"Follows up its {len(coinc.members)} member alerts."
    if coinc.supersedes and coinc.state == "retracted":
        text += f" Retracts revision {coinc.supersedes}: the coincidence no longer holds."
    elif coinc.supersedes:
        text += f" Revision {coinc.revision} supersedes {coinc.supersedes}."
    return text
