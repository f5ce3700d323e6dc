"""VOEvents (2.0 and 1.1) from GCN Classic over Kafka and from VTP peers, to Alerts.

One normalizer serves ``gcn.classic.voevent.*`` and ``gcn.notices.*voevent*``
Kafka topics, VOEvents relayed by Comet peers (``vtp:<peer>``) and VOEvent
files.  Bytes are parsed only through :func:`listeners.xml_safe.parse`.

Families
--------
A packet is read by the first family that claims it:

``LVK``
    a ``GraceID`` Param, an LVC Packet_Type (150-154, 163, 164) or the
    ``ivo://gwnet`` authority.  Superevents ``M*``/``T*`` (mock, test) and
    hardware injections get role ``test``; FAR is in Hz (the unit attribute
    is honoured when present); ``internal=1`` or ``OpenAlert=0`` makes the
    alert ``proprietary``.
``KM3NeT``
    the ``KM3NeT`` authority or author.  Neutrino alerts; FAR in yr^-1.
``IceCube``
    IceCube/AMON Packet_Types (157, 158, 169, 173, 174, 176) or an AMON IVORN.
``GCN classic``
    any other packet with a ``Packet_Type`` Param: the type is looked up in
    :data:`GCN_TYPES` (facility, instrument, messenger, error containment).
``generic``
    everything else (Gaia, ASAS-SN, gwcelery templates ...).

Event id and revision (the rule)
--------------------------------
The archive keys an alert by ``(source, event_id, revision)``; a higher
revision of an event supersedes a lower one.  ``revision`` is an ordering
key, not a count: it is 0 for the first notice only where the stream numbers
its notices that way.

* LVK: ``event_id`` = GraceID; ``revision`` by LVK's own rule from ``AlertType``,
  ``Who/Date`` (its ``time_created``) and an External Coincidence group
  (:func:`listeners.lvk.revision`, ``extra.revision_rule``), the rule its JSON and
  Avro notices follow, so the two transports' revisions of a superevent interleave in
  order; a packet that rule cannot place (no AlertType or Who/Date, a GraceID that is
  no superevent) gets ``Pkt_Ser_Num - 1``, else the number of superseded IVORNs cited.
* KM3NeT: ``event_id`` = ``Event_Name`` (else ``TrigID``); ``revision`` =
  ``record_number - 1``.
* IceCube: ``event_id`` = ``<run_id>:<event_id>``; ``revision`` = ``Rev``.
* GCN classic: ``event_id`` = ``TrigID`` (``Trans_Num`` for GBM
  sub-threshold, ``Burst_Id`` for SVOM); a zero TrigID means "none" and is
  replaced by ``<facility>-<trigger time>``.  ``revision`` = ``rank * 1000 +
  serial``: ``rank`` is the place of the notice type in its mission's sequence
  (GBM Alert 0 < Flt_Pos 1 < Gnd_Pos 2 < Fin_Pos 3; BAT 0-7 < XRT 8-12 <
  UVOT 13-16; types not in the table rank 100 + type), ``serial`` is
  ``Sequence_Num`` (GBM) or ``Pkt_Ser_Num`` when below 1000, else 0.  So a
  Swift XRT position of trigger 655721 supersedes its BAT position even when
  both arrive on one VTP stream.
* generic: ``event_id`` = the first Param with UCD ``meta.id`` (``TrigID``),
  else the fragment of the last IVORN it cites as superseded/retracted (that
  of the original event when a producer cites the whole chain, as LVK does),
  else its own IVORN fragment; ``revision`` = number of IVORNs it cites
  (``supersedes``, ``retraction``, ``followup``).

``alert_type`` is ``retraction`` when the packet cites an IVORN with
``cite="retraction"``, says ``AlertType=Retraction``/``Alert_Type=retraction``
or has a true ``Retraction`` Param; ``initial`` when it is its stream's first
notice (first notice type, revision 0, no ``supersedes``/``followup``
citation); ``update`` otherwise.

Source and ids
--------------
``Alert.source`` is the VOEvent's own stream IVORN (``ivo://nasa.gsfc.gcn/SWIFT``)
whatever carried it: GCN puts every notice type on its own Kafka topic and a
VTP peer relays many missions, so neither names the series in which a later
notice supersedes an earlier one (a Swift XRT position supersedes the BAT
position of the same trigger; an LVK retraction supersedes its preliminary).
The Kafka topic or VTP peer is kept with the archived row.  The broker id is
``ivo://<authority>/<stream>#<event_id>-<revision>`` with ``<stream>`` e.g.
``nasa.gsfc.gcn/SWIFT``.

Sky positions
-------------
The ``Position2D`` and ``ISOTime`` of ``WhereWhen``'s ``ObservationLocation`` (an
``ObservatoryLocation`` before it holds the telescope's site, never the event's)
(``unit`` deg, rad, arcmin, arcsec; FK5 is taken as
ICRS, a < 0.1 arcsec difference) becomes a point localization.  No position is
kept (``kind: none``, reason in ``extra["position_note"]``) for the
placeholder 0/0, an error radius of exactly 360 deg (SNEWS's convention), GCN
``Coords_Type=0``, ``RADec_valid=false``, notice types that carry no position
(GBM Alert, Konus, AGILE MCAL) and non-equatorial frames.  Any other radius
past 180 deg, an RA outside [0, 360) and a NaN coordinate or radius are
refused (issue 14, item 6), never wrapped or read as "no position".
Containment: 0.9 by
default (GCN's convention; Swift, INTEGRAL, MAXI, IceCube/KM3NeT
``src_error_90``), 0.6827 for Fermi GBM (its radius is a statistical 1-sigma
one; ``systematic_deg`` is the core of the Connaughton et al. 2015 model,
ApJS 216, 32), 0.5 where the radius equals ``src_error_50``.

Sky maps by URL
---------------
Some VOEvents name a sky map by URL only.  A ``SkymapLocalization`` must carry
the SHA-256 of the map bytes, and a normalizer does no I/O, so the URL is
recorded in ``extra["skymap_url"]`` (:data:`listeners.base.SKYMAP_URL`) and the
broker fetches the map afterwards and makes it the localization
(:mod:`broker.runtime.mapfetch`, issue 16 item 2).  Until then the alert keeps
what the packet states: ``kind: none`` for LVK, the position for Fermi GBM.

* LVK: ``skymap_fits`` (O2's ``skymap_fits_basic``/``_shib``/``_x509`` after it),
  as sent: GraceDB's ``,N`` suffix is the file's version, and keeping it fetches
  the very map the notice describes, not a later one of the same name.
* Fermi GBM ground and final positions (and GBM's internal copies of them):
  ``LocationMap_URL``.  GCN writes the quick-look plot there
  (``.../quicklook/glg_locplot_all_bnX.png``); the HEALPix map beside it is
  ``glg_healpix_all_bnX.fit``, the name gwcelery and SkyPortal fetch from the same
  Param.  A ``LocationMap_URL`` naming a FITS file (``gbm_gnd_loc_map_*.fits``) is
  taken as it is.
* Any packet: a ``HealPix_URL`` (GBM sub-threshold) or ``healpix_url`` Param
  naming a FITS file (:func:`listeners.common.skymap_url`).

The LVK JSON/Avro stream carries the map inline.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from lxml import etree

from alerts_schema import (
    Alert,
    DataRights,
    Energy,
    NoLocalization,
    PointLocalization,
    Provenance,
)
from alerts_schema.errors import ImplausibleValue, NormalizationError, OwnPublication, UnknownFormat
from alerts_schema.model import ROLES, format_utc
from crossmatch.events import ISSUED, REVISION_RULE
from listeners import facilities, lvk, timescales, xml_safe
from listeners.base import SKYMAP_URL, Heartbeat, MessageMeta, Normalized
from listeners.common import (
    checked_ra,
    finite_or_none,
    local_id,
    parse_utc,
    present_but_not_finite,
    rate_to_hz,
    skymap_url,
)
from listeners.detect import Format

_URI_PATH_SAFE = "!$&'()*+,;=:@/"
# SNEWS VOEvents state "no direction" as an Error2Radius of exactly 360 deg, as the
# 0/0 placeholder does elsewhere; any other radius past 180 deg is refused.
_WHOLE_SKY_RADIUS_DEG = 360.0

__all__ = ["GBM_SYSTEMATIC_MODEL", "GCN_REVISION_RULE", "GCN_TYPES", "MAX_VOEVENT_BYTES",
           "STAR_LOCK_NOTE", "accepts", "gcn_event_id", "gcn_revision", "gcn_type", "handle",
           "looks_like_voevent", "normalize", "not_a_grb_reasons"]

MAX_VOEVENT_BYTES = 1_000_000
"""Largest VOEvent accepted, in bytes.  Comet drops frames over 99,999 bytes;
GCN and LVK VOEvents are 2-10 kB.  A megabyte leaves room and bounds the work."""

ONE_SIGMA = 0.6827
GBM_CONTAINMENT = ONE_SIGMA
DEFAULT_CONTAINMENT = 0.9
_HEAD = 4096
_VOEVENT_MARKS = (b"VOEvent", "VOEvent".encode("utf-16-le"), "VOEvent".encode("utf-16-be"))


# -- GCN classic notice types -----------------------------------------------------

@dataclass(frozen=True, slots=True)
class GcnType:
    """What a GCN classic Packet_Type tells about a notice.

    Parameters
    ----------
    name
        GCN's notice type name (as in ``gcn.classic.voevent.<NAME>`` topics).
    facility, instrument, messenger
        For the Alert; ``instrument`` None when the mission has one.
    rank
        Place of the type in its mission's notice sequence for one trigger
        (revision = rank * 1000 + serial).
    first
        The type can open a notice sequence (``alert_type`` initial).
    kind
        ``event``; ``test`` (a test packet: role test); ``pointing`` (a
        spacecraft pointing, not an event: refused); ``control`` (refused);
        ``heartbeat`` (becomes a :class:`Heartbeat`).
    position
        False when the notice carries no real sky position (placeholders).
    containment
        Probability inside ``Error2Radius`` (0..1).
    systematic_deg
        Systematic error to add in quadrature, degrees; None when included or unknown.
    """

    name: str
    facility: str
    instrument: str | None
    messenger: str
    rank: int
    first: bool = False
    kind: str = "event"
    position: bool = True
    containment: float = DEFAULT_CONTAINMENT
    systematic_deg: float | None = None


def _types(facility: str, messenger: str, rows: list[tuple[Any, ...]],
           **common: Any) -> dict[int, GcnType]:
    """Table rows ``(number, name, instrument, rank, first, {overrides})`` to GcnTypes."""
    table: dict[int, GcnType] = {}
    for row in rows:
        number, name, instrument, rank, first, *rest = row
        options = {**common, **(rest[0] if rest else {})}
        table[number] = GcnType(name, options.pop("facility", facility), instrument,
                                options.pop("messenger", messenger), rank, first, **options)
    return table


_NO_POS = {"position": False}
_TEST = {"kind": "test"}
_POINTING = {"kind": "pointing", "position": False}
_CONTROL = {"kind": "control", "position": False}
_GBM = {"containment": GBM_CONTAINMENT}

# Type numbers and names from GCN's public notice-type list; ranks follow the
# order in which each mission issues its notices after a trigger.
GCN_TYPES: dict[int, GcnType] = {
    **_types("GCN", "other", [
        (2, "TEST_COORDS", None, 0, True, _TEST),
        (3, "IM_ALIVE", None, 0, False, {"kind": "heartbeat"}),
        (4, "KILL_SOCKET", None, 0, False, {"kind": "control"}),
        (130, "SIMBADNED", None, 0, False, {"kind": "control"}),
        (142, "VOE_11_IM_ALIVE", None, 0, False, {"kind": "heartbeat"}),
        (143, "VOE_20_IM_ALIVE", None, 0, False, {"kind": "heartbeat"}),
    ]),
    **_types("Swift", "gamma_ray", [
        (60, "SWIFT_BAT_GRB_ALERT", "BAT", 0, True, _NO_POS),
        (97, "SWIFT_BAT_QL_POS", "BAT", 1, True),
        # The first position: opens the sequence as GCN distributes it (the ALERT before
        # it has no position and many do not receive it).
        (61, "SWIFT_BAT_GRB_POS_ACK", "BAT", 2, True),
        (62, "SWIFT_BAT_GRB_POS_NACK", "BAT", 3, False),
        (63, "SWIFT_BAT_GRB_LC", "BAT", 4, False),
        (64, "SWIFT_BAT_SCALEDMAP", "BAT", 5, False),
        (65, "SWIFT_FOM_OBS", None, 6, False),
        (66, "SWIFT_SC_SLEW", None, 7, False),
        (67, "SWIFT_XRT_POSITION", "XRT", 8, False, {"messenger": "x_ray"}),
        (71, "SWIFT_XRT_CENTROID", "XRT", 9, False, {"messenger": "x_ray"}),
        (68, "SWIFT_XRT_SPECTRUM", "XRT", 10, False, {"messenger": "x_ray"}),
        (69, "SWIFT_XRT_IMAGE", "XRT", 11, False, {"messenger": "x_ray"}),
        (70, "SWIFT_XRT_LC", "XRT", 12, False, {"messenger": "x_ray"}),
        (81, "SWIFT_UVOT_POS", "UVOT", 13, False, {"messenger": "optical"}),
        (89, "SWIFT_UVOT_POS_NACK", "UVOT", 14, False, {"messenger": "optical"}),
        (72, "SWIFT_UVOT_DBURST", "UVOT", 15, False, {"messenger": "optical"}),
        (73, "SWIFT_UVOT_FCHART", "UVOT", 16, False, {"messenger": "optical"}),
        (76, "SWIFT_BAT_GRB_LC_PROC", "BAT", 17, False),
        (77, "SWIFT_XRT_SPECTRUM_PROC", "XRT", 18, False, {"messenger": "x_ray"}),
        (78, "SWIFT_XRT_IMAGE_PROC", "XRT", 19, False, {"messenger": "x_ray"}),
        (79, "SWIFT_UVOT_DBURST_PROC", "UVOT", 20, False, {"messenger": "optical"}),
        (80, "SWIFT_UVOT_FCHART_PROC", "UVOT", 21, False, {"messenger": "optical"}),
        (85, "SWIFT_XRT_THRESHPIX", "XRT", 22, False, {"messenger": "x_ray"}),
        (86, "SWIFT_XRT_THRESHPIX_PROC", "XRT", 23, False, {"messenger": "x_ray"}),
        (87, "SWIFT_XRT_SPER", "XRT", 24, False, {"messenger": "x_ray"}),
        (88, "SWIFT_XRT_SPER_PROC", "XRT", 25, False, {"messenger": "x_ray"}),
        (84, "SWIFT_BAT_TRANS", "BAT", 30, True),
        (98, "SWIFT_BAT_SUB_THRESHOLD", "BAT", 31, True),
        (99, "SWIFT_BAT_SLEW_POS", "BAT", 32, True),
        (133, "SWIFT_BAT_MONITOR", "BAT", 33, True),
        (140, "SWIFT_BAT_SUBSUB", "BAT", 34, True),
        (141, "SWIFT_BAT_KNOWN_SRC", "BAT", 35, True),
        (82, "SWIFT_BAT_GRB_POS_TEST", "BAT", 0, True, _TEST),
        (83, "SWIFT_POINTDIR", None, 0, False, _POINTING),
        (46, "SWIFT_TOO_FOM", None, 0, False, _POINTING),
        (47, "SWIFT_TOO_SC_SLEW", None, 0, False, _POINTING),
        # Instrument alarms and operations messages: about the spacecraft, not the sky.
        (90, "SWIFT_BAT_ALARM_SHORT", "BAT", 0, False, _CONTROL),
        (91, "SWIFT_BAT_ALARM_LONG", "BAT", 0, False, _CONTROL),
        (92, "SWIFT_UVOT_EMERGENCY", "UVOT", 0, False, _CONTROL),
        (93, "SWIFT_XRT_EMERGENCY", "XRT", 0, False, _CONTROL),
        (94, "SWIFT_FOM_PPT_ARG_ERR", None, 0, False, _CONTROL),
        (95, "SWIFT_FOM_SAFE_POINT", None, 0, False, _CONTROL),
        (96, "SWIFT_FOM_SLEW_ABORT", None, 0, False, _CONTROL),
        (103, "SWIFT_ACTUAL_POINTDIR", None, 0, False, _POINTING),
    ]),
    **_types("Fermi", "gamma_ray", [
        (110, "FERMI_GBM_ALERT", "GBM", 0, True, {**_GBM, **_NO_POS}),
        (111, "FERMI_GBM_FLT_POS", "GBM", 1, True, {**_GBM, "systematic_deg": 7.52}),
        (112, "FERMI_GBM_GND_POS", "GBM", 2, False, {**_GBM, "systematic_deg": 3.72}),
        (115, "FERMI_GBM_FIN_POS", "GBM", 3, False, {**_GBM, "systematic_deg": 3.71}),
        (113, "FERMI_GBM_LC", "GBM", 4, False, _GBM),
        (118, "FERMI_GBM_TRANS", "GBM", 5, True, _GBM),
        # Sub-threshold radius is stat+sys at 68% (GCN's subthreshold page).
        (131, "FERMI_GBM_SUBTHRESH", "GBM", 6, True, _GBM),
        (119, "FERMI_GBM_POS_TEST", "GBM", 0, True, {**_GBM, **_TEST}),
        (120, "FERMI_LAT_POS_INI", "LAT", 10, True),
        (121, "FERMI_LAT_POS_UPD", "LAT", 11, False),
        (122, "FERMI_LAT_POS_DIAG", "LAT", 12, False),
        (127, "FERMI_LAT_GND", "LAT", 13, False),
        (128, "FERMI_LAT_OFFLINE", "LAT", 14, True),
        (123, "FERMI_LAT_TRANS", "LAT", 15, True),
        (125, "FERMI_LAT_MONITOR", "LAT", 16, True),
        (126, "FERMI_SC_SLEW", None, 17, False),
        (124, "FERMI_LAT_POS_TEST", "LAT", 0, True, _TEST),
        (129, "FERMI_POINTDIR", None, 0, False, _POINTING),
        # GBM's internal copies (FLT, GND, FIN, ALERT), on their own topics.
        (116, "FERMI_GBM_ALERT_INTERNAL", "GBM", 0, True, {**_GBM, **_NO_POS}),
        (117, "FERMI_GBM_FLT_INTERNAL", "GBM", 1, True, {**_GBM, "systematic_deg": 7.52}),
        (114, "FERMI_GBM_GND_INTERNAL", "GBM", 2, False, {**_GBM, "systematic_deg": 3.72}),
        (146, "FERMI_GBM_FIN_INTERNAL", "GBM", 3, False, {**_GBM, "systematic_deg": 3.71}),
        (144, "FERMI_SC_SLEW_INTERNAL", None, 17, False),
    ]),
    **_types("INTEGRAL", "gamma_ray", [
        (52, "INTEGRAL_SPIACS", "SPI-ACS", 0, True, _NO_POS),
        (53, "INTEGRAL_WAKEUP", "IBIS", 1, True),
        (54, "INTEGRAL_REFINED", "IBIS", 2, False),
        (55, "INTEGRAL_OFFLINE", "IBIS", 3, False),
        (56, "INTEGRAL_WEAK", "IBIS", 4, True),
        (51, "INTEGRAL_POINTDIR", None, 0, False, _POINTING),
    ]),
    **_types("AGILE", "gamma_ray", [
        (100, "AGILE_GRB_WAKEUP", "SuperAGILE", 0, True),
        (101, "AGILE_GRB_GROUND", "SuperAGILE", 1, False),
        (102, "AGILE_GRB_REFINED", "SuperAGILE", 2, False),
        # MCAL has no imaging: its notices carry placeholder coordinates.
        (105, "AGILE_MCAL_ALERT", "MCAL", 3, True, _NO_POS),
        (108, "AGILE_TRANS", "GRID", 4, True),
        (109, "AGILE_GRB_POS_TEST", "SuperAGILE", 0, True, _TEST),
        (107, "AGILE_POINTDIR", None, 0, False, _POINTING),
    ]),
    **_types("MAXI", "x_ray", [
        (134, "MAXI_UNKNOWN", None, 0, True),
        (135, "MAXI_KNOWN", None, 1, True),
        (136, "MAXI_TEST", None, 0, True, _TEST),
    ]),
    **_types("Konus-Wind", "gamma_ray", [(59, "KONUS_LC", None, 0, True, _NO_POS)]),
    **_types("SNEWS", "neutrino", [(149, "SNEWS", None, 0, True)]),
    **_types("HAWC", "gamma_ray", [(171, "HAWC_BURST_MONITOR", None, 0, True)]),
    **_types("CALET", "gamma_ray", [
        (160, "CALET_GBM_FLT_LC", "CGBM", 0, True, _NO_POS),
        (161, "CALET_GBM_GND_LC", "CGBM", 1, False, _NO_POS),
    ]),
    **_types("AAVSO", "optical", [(57, "AAVSO", None, 0, True)]),
    # GECAM's radius is a 1-sigma one (nasa-gcn/gcn-classic-to-json reads it so).
    **_types("GECAM", "gamma_ray", [
        (188, "GECAM_FLT", None, 0, True),
        (189, "GECAM_GND", None, 1, False),
    ], containment=ONE_SIGMA),
    # IPN_RAW and IPN_SEG are an annulus and a segment of one: no circle stands for them.
    **_types("IPN", "gamma_ray", [
        (31, "IPN_RAW", None, 0, True, _NO_POS),
        (32, "IPN_SEG", None, 1, False, _NO_POS),
        # The radius of the circle about the error box, at 3 sigma (GCN socket doc).
        (39, "IPN_POS", None, 2, False, {"containment": 0.9973}),
    ]),
    **_types("Suzaku", "gamma_ray", [(148, "SUZAKU_LC", "WAM", 0, True, _NO_POS)]),
    **_types("Super-Kamiokande", "neutrino", [(175, "SK_SN", None, 0, True)]),
    **_types("IceCube", "neutrino", [
        # LLAMA's GW + neutrino and AMON's neutrino + gamma-ray coincidences.
        (168, "GWHEN_COINC", None, 0, True),
        (172, "AMON_NU_EM_COINC", None, 0, True),
    ]),
    **_types("GCN", "other", [
        (45, "GRB_CNTRPART", None, 0, True, {"messenger": "optical"}),
        (145, "COINCIDENCE", None, 0, True),
        (48, "DOW_TOD", None, 0, False, _CONTROL),
        (38, "spare38", None, 0, False, _CONTROL),
        (50, "spare50", None, 0, False, _CONTROL),
    ]),
    # Retired missions: their numbers still map, so an archived packet reads.
    **_types("CGRO", "gamma_ray", [
        (1, "GRB_COORDS", "BATSE", 0, True),
        (11, "MAXBC", "BATSE", 1, False),
        (21, "BRAD_COORDS", "BATSE", 2, False),
        (22, "GRB_FINAL", "BATSE", 3, False),
        (24, "HUNTS_SRC", "BATSE", 4, False),
        (30, "COMPTEL_SRC", "COMPTEL", 5, False),
    ]),
    **_types("ALEXIS", "x_ray", [(25, "ALEXIS_SRC", None, 0, True)]),
    **_types("RXTE", "x_ray", [
        (26, "XTE_PCA_ALERT", "PCA", 0, True),
        (27, "XTE_PCA_SRC", "PCA", 1, False),
        (28, "XTE_ASM_ALERT", "ASM", 2, True),
        (29, "XTE_ASM_SRC", "ASM", 3, False),
        (37, "XTE_ASM_TRANS", "ASM", 4, True),
    ]),
    **_types("BeppoSAX", "x_ray", [
        (33, "SAX_WFC_ALERT", "WFC", 0, True),
        (34, "SAX_WFC_SRC", "WFC", 1, False),
        (35, "SAX_NFI_ALERT", "NFI", 2, True),
        (36, "SAX_NFI_SRC", "NFI", 3, False),
    ]),
    **_types("HETE-2", "gamma_ray", [
        (40, "HETE_ALERT_SRC", None, 0, True),
        (41, "HETE_UPDATE_SRC", None, 1, False),
        (42, "HETE_FINAL_SRC", None, 2, False),
        (43, "HETE_GNDANA_SRC", None, 3, False),
        (44, "HETE_TEST", None, 0, True, _TEST),
    ]),
    **_types("Milagro", "gamma_ray", [(58, "MILAGRO_POS", None, 0, True)]),
    **_types("OGLE", "optical", [(137, "OGLE", None, 0, True)]),
    **_types("CBAT", "optical", [(138, "CBAT", None, 0, True)]),
    **_types("MOA", "optical", [(139, "MOA", None, 0, True)]),
}

_LVK_TYPES = {150: "LVC_PRELIMINARY", 151: "LVC_INITIAL", 152: "LVC_UPDATE", 153: "LVC_TEST",
              154: "LVC_COUNTERPART", 163: "LVC_EARLY_WARNING", 164: "LVC_RETRACTION"}
_ICECUBE_TYPES = {157: "AMON_ICECUBE_COINC", 158: "AMON_ICECUBE_HESE", 169: "AMON_ICECUBE_EHE",
                  173: "ICECUBE_ASTROTRACK_GOLD", 174: "ICECUBE_ASTROTRACK_BRONZE",
                  176: "ICECUBE_CASCADE"}

# UCD words of Why/Inference/Concept, first match wins.
_CONCEPT_MESSENGERS = (("em.gamma", "gamma_ray"), ("em.x-ray", "x_ray"), ("em.uv", "ultraviolet"),
                       ("em.opt", "optical"), ("em.ir", "infrared"), ("em.radio", "radio"),
                       ("neutrino", "neutrino"), ("gravitational", "gravitational_wave"))

# VOEvent's own roles: the contract's, less ``drill`` (the broker's label for an exercise).
_ROLES = frozenset(ROLES) - {"drill"}
_TRUE = frozenset({"true", "1", "yes", "t"})
_INT = re.compile(r"^[+-]?(0|[1-9]\d*)$")
_FLOAT = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")
_ANGLE_UNITS = {"deg": 1.0, "degree": 1.0, "degrees": 1.0, "rad": math.degrees(1.0),
                "arcmin": 1.0 / 60.0, "arcsec": 1.0 / 3600.0}
_ID_PARAMS = ("TrigID", "Trans_Num", "Burst_Id")
_NOT_EVENT_IDS = frozenset({"packet_type", "pkt_ser_num", "sequence_num", "segment_num",
                            "record_number", "notice_level"})
_SKIP_GROUPS = frozenset({"Obs_Support_Info"})  # Sun/Moon at message creation, not the event


# -- the packet as read -----------------------------------------------------------

@dataclass(frozen=True, slots=True)
class _Param:
    name: str
    value: str | None
    unit: str
    ucd: str
    group: str | None


@dataclass
class _Packet:
    """What a VOEvent says, read once from the hardened tree."""

    ivorn: str
    authority: str
    path: str
    fragment: str
    role: str
    version: str | None
    namespace: str | None
    params: list[_Param]
    citations: list[tuple[str, str]]
    time_text: str | None
    coord_system: str | None
    position: etree._Element | None
    who_date: str | None
    author: str | None
    how: list[str]
    concepts: list[str]
    top: dict[str, _Param] = field(default_factory=dict)
    anywhere: dict[str, _Param] = field(default_factory=dict)
    groups: dict[str, dict[str, _Param]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for p in self.params:
            if not p.name:
                continue
            key = p.name.lower()
            self.anywhere.setdefault(key, p)
            if p.group is None:
                self.top.setdefault(key, p)
            else:
                self.groups.setdefault(p.group, {}).setdefault(p.name, p)

    def value(self, *names: str, anywhere: bool = False) -> str | None:
        """The stripped, non-empty value of the first named Param present (case-insensitive)."""
        table = self.anywhere if anywhere else self.top
        for name in names:
            p = table.get(name.lower())
            if p is not None and p.value is not None and p.value.strip():
                return p.value.strip()
        return None

    def param(self, name: str, *, anywhere: bool = False) -> _Param | None:
        return (self.anywhere if anywhere else self.top).get(name.lower())

    def integer(self, *names: str, anywhere: bool = False) -> int | None:
        text = self.value(*names, anywhere=anywhere)
        if text is None:
            return None
        try:
            return int(float(text)) if _FLOAT.match(text) else None
        except (ValueError, OverflowError):
            return None

    def flag(self, name: str) -> bool:
        """True when a Param of this name anywhere in What says true/1."""
        text = self.value(name, anywhere=True)
        return text is not None and text.lower() in _TRUE

    def cites(self, *kinds: str) -> list[str]:
        return [ivorn for ivorn, cite in self.citations if cite in kinds]


@dataclass
class _Fields:
    """The family-specific answers a packet gives; the rest is common."""

    event_id: str
    revision: int
    first: bool
    facility: str
    messenger: str
    instrument: str | None = None
    role: str | None = None
    retraction: bool = False
    position: bool = True
    position_note: str | None = None
    containment: float = DEFAULT_CONTAINMENT
    systematic_deg: float | None = None
    far_hz: float | None = None
    p_value: float | None = None
    signalness: float | None = None
    energy: Energy | None = None
    trigger_time_error_s: float | None = None
    data_rights: str = "public"
    provenance: Provenance | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    consumed_groups: frozenset[str] = frozenset()  # Groups already in extra under a name


# -- public interface -------------------------------------------------------------

def looks_like_voevent(data: bytes) -> bool:
    """Cheap test on the first bytes: does the document name a VOEvent root?"""
    head = bytes(data[:_HEAD])
    return any(mark in head for mark in _VOEVENT_MARKS)


def accepts(fmt: Format, decoded: Any, meta: MessageMeta, data: bytes | None = None) -> bool:
    """Route XML that looks like a VOEvent here.

    The registry's ``accepts`` sees no bytes; without ``data`` every XML message
    is taken (this is the only XML normalizer, and :func:`normalize` refuses a
    non-VOEvent root by name).  With ``data`` the first 4 kB must mention VOEvent.
    """
    if fmt is not Format.XML:
        return False
    return data is None or looks_like_voevent(data)


def handle(data: bytes, decoded: Any, meta: MessageMeta) -> Normalized:
    """Registry entry point: :func:`normalize` (XML is never pre-decoded)."""
    return normalize(data, meta)


def normalize(data: bytes, meta: MessageMeta) -> Normalized:
    """One Alert (or a GCN heartbeat) from one VOEvent.

    Parameters
    ----------
    data
        The VOEvent bytes as received.
    meta
        Transport metadata (recorded by the archive; the stream comes from the IVORN).

    Raises
    ------
    HostileInput, MalformedInput
        From :func:`listeners.xml_safe.parse`.
    UnknownFormat
        The XML root is not a VOEvent.
    NormalizationError
        The packet carries no event (control, pointing or test-ping packets,
        no time) or impossible values; the reason says which.
    """
    root = xml_safe.parse(data, max_bytes=MAX_VOEVENT_BYTES)
    packet = _read(root)
    if packet.authority == meta.authority:
        # Our own publication, echoed by a peer or read back from our own topic:
        # it must not become an alert (and so never be published again).
        raise OwnPublication(f"{packet.ivorn} is this broker's own VOEvent, come back from "
                             f"{meta.source}: kept, not re-ingested")
    source, stream = _source_and_stream(packet, meta)

    packet_type = packet.integer("Packet_Type")
    gcn = GCN_TYPES.get(packet_type) if packet_type is not None else None
    if gcn is not None and gcn.kind == "heartbeat":
        when = packet.who_date or packet.time_text
        time = parse_utc(when, field="Who/Date") if when else meta.received_at
        # Liveness belongs to the transport stream (topic or peer) that went quiet.
        return Normalized(heartbeats=(Heartbeat(stream=meta.source, detector="", time=time),))
    if gcn is not None and gcn.kind in ("control", "pointing"):
        what = "a control packet" if gcn.kind == "control" else "a spacecraft pointing"
        raise NormalizationError(f"GCN {gcn.name} (Packet_Type {packet_type}) is {what}, "
                                 f"not an alert ({packet.ivorn})")
    stand_in = packet.time_text is None and _retracts(packet, packet_type) \
        and packet.who_date is not None
    if packet.time_text is None and not stand_in:
        raise NormalizationError(f"VOEvent {packet.ivorn} (role {packet.role}) has no event "
                                 "time in WhereWhen: a test or utility packet with nothing "
                                 "to alert on")
    if stand_in:
        # A retraction without an event time still retracts: its Who/Date stands in,
        # flagged as not the event's (the broker gives it the time of the event's
        # earlier revisions it holds), as an LVK JSON retraction's time_created does.
        trigger_time, scale_note, scale_error_s = parse_utc(
            packet.who_date, field="Who/Date"), None, None
    else:
        trigger_time, scale_note, scale_error_s = _to_utc(
            parse_utc(packet.time_text, field="WhereWhen ISOTime"), packet.coord_system)

    fields = _family_fields(packet, packet_type, gcn, trigger_time)
    if stand_in:
        fields.extra.update(trigger_time_from="who_date", event_time_known=False)
    if scale_error_s:
        fields.trigger_time_error_s = max(fields.trigger_time_error_s or 0.0, scale_error_s)
    if scale_note:
        fields.extra["time_scale_note"] = scale_note
    localization = _localization(packet, fields)
    if (fields.role or packet.role) in ("test", "utility") and not _identifies_event(packet) \
            and isinstance(localization, NoLocalization):
        raise NormalizationError(f"VOEvent {packet.ivorn} (role {packet.role}) names no event "
                                 "(no identifier Param, no sky position): a connectivity test, "
                                 "not an alert")
    alert = _alert(packet, fields, localization, trigger_time, source, stream, meta)
    return Normalized(alerts=(alert,))


# -- GCN classic rules, shared with the binary packets (listeners.gcn_binary) ------

STAR_LOCK_NOTE = ("position taken after the star tracker lost lock "
                  "(StarTrack_Lost_Lock): not a trustworthy localization")
"""Why a position taken without star lock is kept in ``extra``, never matched."""


def gcn_type(packet_type: int) -> GcnType | None:
    """What GCN's notice type number says: :data:`GCN_TYPES`, or the LVK and IceCube
    types this module reads as their own families (named, mission's facility)."""
    known = GCN_TYPES.get(packet_type)
    if known is not None:
        return known
    if packet_type in _LVK_TYPES:
        return GcnType(_LVK_TYPES[packet_type], "LVK", None, "gravitational_wave", 0,
                       first=packet_type in (150, 163))
    if packet_type in _ICECUBE_TYPES:
        return GcnType(_ICECUBE_TYPES[packet_type], "IceCube", None, "neutrino", 0, first=True)
    return None


GBM_SYSTEMATIC_MODEL = ("Connaughton et al. 2015 (ApJS 216, 32) core-plus-tail, "
                        "core width systematic_deg")
"""What a Fermi GBM position's ``extra.systematic_model`` says: matched as the paper's model
for its position type (:func:`crossmatch.localization.gbm_mixture`)."""

GCN_REVISION_RULE = "gcn-rank-serial-v1"
"""Name of the GCN Classic revision rule (module docstring), shared by the VOEvent and
binary paths and recorded in each alert's ``extra.revision_rule``."""


def gcn_revision(gcn: GcnType, serial: int | None) -> int:
    """``rank * 1000 + serial`` (module docstring); a serial outside 0..999 counts as 0."""
    return gcn.rank * 1000 + (serial if serial is not None and 0 <= serial < 1000 else 0)


def gcn_event_id(gcn: GcnType, trigger: str | None, trigger_time: datetime) -> str:
    """The trigger number, or ``<facility>-<trigger time>`` when there is none (GCN writes
    0 for "no trigger number")."""
    if trigger is not None and trigger.strip() and not _is_zero(trigger):
        return trigger.strip()
    return local_id(gcn.facility, format_utc(trigger_time))


def not_a_grb_reasons(gcn: GcnType, *, flags: Iterable[str],
                      grb_identified: bool | None,
                      most_likely: tuple[int, int | None] | None) -> list[str]:
    """Why the mission itself says this trigger is a known source or not a GRB (empty: it
    does not). Such notices are archived and shown, and left out of the GRB selectors.

    ``flags`` are the :data:`BAT_KNOWN` flags the notice sets, ``grb_identified`` Swift's
    GRB_Identified (None when the notice has none), ``most_likely`` Fermi GBM's
    classification (class index, probability in %).
    """
    flagged = set(flags)
    reasons = [name for name in BAT_KNOWN if name in flagged]
    if grb_identified is False:
        reasons.append("GRB_Identified=false")
    if gcn.instrument == "GBM" and most_likely is not None:
        index, probability = most_likely
        if index != _GBM_GRB_CLASS:
            reasons.append(f"Most_Likely_Index={index} (GRB is {_GBM_GRB_CLASS})")
        elif probability is not None and probability < _GBM_MIN_GRB_PROB:
            reasons.append(f"Most_Likely_Prob={probability}% < {_GBM_MIN_GRB_PROB}%")
    return reasons


def _retracts(packet: _Packet, packet_type: int | None) -> bool:
    """Whether the packet retracts an event (LVC_RETRACTION, a ``retraction`` citation,
    an AlertType or Retraction Param saying so), before its family is read."""
    return (packet_type == 164 or bool(packet.cites("retraction"))
            or packet.flag("Retraction")
            or (packet.value("AlertType") or "").strip().lower() == "retraction")


# -- reading the tree -------------------------------------------------------------

def _local(element: etree._Element) -> str:
    """Local name of an element; VOEvent children are unqualified but STC may be namespaced."""
    return etree.QName(element).localname


def _children(element: etree._Element | None, name: str) -> Iterator[etree._Element]:
    if element is None:
        return
    for child in element:
        if isinstance(child.tag, str) and _local(child) == name:
            yield child


def _child(element: etree._Element | None, name: str) -> etree._Element | None:
    return next(_children(element, name), None)


def _descendant(element: etree._Element | None, name: str) -> etree._Element | None:
    if element is None:
        return None
    for node in element.iter():
        if isinstance(node.tag, str) and _local(node) == name:
            return node
    return None


def _text(element: etree._Element | None) -> str | None:
    if element is None or element.text is None:
        return None
    text = element.text.strip()
    return text or None


def _read(root: etree._Element) -> _Packet:
    if not isinstance(root.tag, str) or _local(root) != "VOEvent":
        name = _local(root) if isinstance(root.tag, str) else "?"
        raise UnknownFormat(f"XML root <{name}> is not a VOEvent")
    ivorn = (root.get("ivorn") or "").strip()
    if not ivorn:
        raise NormalizationError("VOEvent has no ivorn attribute")
    authority, path, fragment = _split_ivorn(ivorn)
    role = (root.get("role") or "observation").strip().lower()
    if role not in _ROLES:
        raise NormalizationError(f"VOEvent {ivorn} has role {root.get('role')!r}; expected "
                                 "observation, prediction, utility or test")
    what = _child(root, "What")
    params: list[_Param] = []
    if what is not None:
        _collect_params(what, None, params)
    citations = []
    for cited in _children(_child(root, "Citations"), "EventIVORN"):
        target = _text(cited)
        if target:  # an empty EventIVORN (seen in the wild) cites nothing
            citations.append((target, (cited.get("cite") or "").strip().lower()))
    where = _child(root, "WhereWhen")
    # The observed position is the ObservationLocation's; an ObservatoryLocation may
    # come first with the telescope's own Position3D (UTC-GEOD-TOPO, as ANTARES sends).
    observed = _descendant(where, "ObservationLocation")
    if observed is None:
        observed = where
    coords = _descendant(observed, "AstroCoords")
    system = _descendant(observed, "AstroCoordSystem")
    who = _child(root, "Who")
    author = _child(who, "Author")
    how = [t for d in _children(_child(root, "How"), "Description") if (t := _text(d))]
    why = _child(root, "Why")
    concepts = [] if why is None else [
        t for node in why.iter()
        if isinstance(node.tag, str) and _local(node) == "Concept" and (t := _text(node))]
    return _Packet(
        ivorn=ivorn, authority=authority, path=path, fragment=fragment, role=role,
        version=root.get("version"), namespace=etree.QName(root).namespace, params=params,
        citations=citations,
        time_text=_text(_descendant(observed, "ISOTime")),
        coord_system=(coords.get("coord_system_id") if coords is not None else None)
        or (system.get("id") if system is not None else None),
        position=_descendant(coords, "Position2D"), who_date=_text(_child(who, "Date")),
        author=_text(_child(author, "shortName")) or _text(_child(author, "title")),
        how=how, concepts=concepts,
    )


def _collect_params(element: etree._Element, group: str | None, out: list[_Param]) -> None:
    for child in element:
        if not isinstance(child.tag, str):
            continue
        name = _local(child)
        if name == "Param":
            value = child.get("value")
            if value is None:  # VOEvent 2.0 also allows <Value> content
                value = _text(_child(child, "Value"))
            out.append(_Param((child.get("name") or "").strip(), value,
                              (child.get("unit") or "").strip(),
                              (child.get("ucd") or "").strip(), group))
        elif name == "Group":
            _collect_params(child, (child.get("name") or child.get("type") or "").strip()
                            or "Group", out)


def _split_ivorn(ivorn: str) -> tuple[str, str, str]:
    """``ivo://authority/path#fragment`` as (authority, path, fragment); tolerant of quirks."""
    body = ivorn[6:] if ivorn.lower().startswith("ivo://") else ivorn
    stream, _, fragment = body.partition("#")
    authority, _, path = stream.partition("/")
    return authority.strip(), path.strip("/ "), fragment.strip()


def _issued(who_date: str | None) -> str | None:
    """``Who/Date`` as UTC with a ``Z`` (None when absent or unreadable: it orders
    revisions across transports only, so a bad one is not a reason to refuse)."""
    if not who_date:
        return None
    try:
        return format_utc(parse_utc(who_date, field="Who/Date"))
    except NormalizationError:
        return None


def _source_and_stream(packet: _Packet, meta: MessageMeta) -> tuple[str, str]:
    """``Alert.source`` and the stream part of the broker IVORN (see module docstring).

    Always the VOEvent's own stream IVORN, whatever carried it: GCN puts each
    notice type on its own Kafka topic, and one VTP peer relays many missions,
    so neither the topic nor the peer names the series a revision belongs to.
    The transport is recorded with the archived row.
    """
    del meta  # the transport does not name the stream
    stream = f"{packet.authority}/{packet.path}" if packet.path else packet.authority
    stream = re.sub(r"[\s#]+", "_", stream) or "voevent"
    # A peer's stream name may hold anything: the source is kept a valid URI (item 8).
    return f"ivo://{quote(stream, safe=_URI_PATH_SAFE)}", stream


# -- families ---------------------------------------------------------------------

def _family_fields(packet: _Packet, packet_type: int | None, gcn: GcnType | None,
                   trigger_time: datetime) -> _Fields:
    if (packet.param("GraceID") is not None or packet_type in _LVK_TYPES
            or packet.authority.lower() == "gwnet"):
        fields = _lvk(packet, packet_type)
    elif "km3net" in packet.authority.lower() or "km3net" in (packet.author or "").lower():
        fields = _km3net(packet)
    elif packet_type in _ICECUBE_TYPES or packet.path.lower() in ("amon", "icecube") \
            or packet.authority.lower() == "amon":
        fields = _icecube(packet, packet_type)
    elif packet_type is not None:
        fields = _gcn_classic(packet, packet_type, gcn, trigger_time)
    else:
        fields = _generic(packet)
    fields.retraction = (fields.retraction or bool(packet.cites("retraction"))
                         or packet.flag("Retraction"))
    if SKYMAP_URL not in fields.extra and (url := _named_map_url(packet, packet_type)):
        fields.extra[SKYMAP_URL] = url
    time_error = packet.param("Time_Error", anywhere=True)
    if time_error is not None and time_error.unit.lower() in ("s", "sec", "second", "seconds"):
        error = finite_or_none(time_error.value, field="Time_Error")
        fields.trigger_time_error_s = abs(error) if error is not None else None
    return fields


def _lvk(packet: _Packet, packet_type: int | None) -> _Fields:
    grace_id = packet.value("GraceID")
    if grace_id is None:
        raise NormalizationError(f"LVK VOEvent {packet.ivorn} has no GraceID Param")
    serial = packet.integer("Pkt_Ser_Num")
    revision = serial - 1 if serial is not None and serial >= 1 else len(packet.cites(
        "supersedes", "retraction"))
    alert_kind = (packet.value("AlertType") or "").lower()
    groups = packet.groups
    rule = None
    if alert_kind and packet.who_date:
        # LVK's own rule, as on the JSON and Avro paths, so a notice's copies share one
        # revision and its VOEvent and JSON revisions supersede each other in order
        # (crossmatch.events); a packet the rule cannot place keeps its serial number.
        try:
            revision = lvk.revision(grace_id, parse_utc(packet.who_date, field="Who/Date"),
                                    alert_kind, "External Coincidence" in groups)
            rule = lvk.REVISION_RULE
        except NormalizationError:
            pass
    injection = packet.integer("HardwareInj") == 1
    # Mock (MS..., MG...) and test (TS...) superevents, and hardware injections,
    # are never observations whatever the role attribute says.
    role = "test" if grace_id[:1] in ("M", "T") or injection else None
    far = _far_hz(packet, default_unit="Hz")
    internal = packet.integer("internal") == 1 or packet.integer("OpenAlert") == 0
    classification = _typed_group(groups.get("Classification", {}))
    terrestrial = classification.get("Terrestrial")
    extra: dict[str, Any] = {
        "lvk": {k: v for k, v in {
            "alert_type": packet.value("AlertType"), "group": packet.value("Group"),
            "search": packet.value("Search"), "significant": _typed(packet.value("Significant")),
            "event_page": packet.value("EventPage"), "hardware_injection": injection,
            "notice_type": _LVK_TYPES.get(packet_type) if packet_type is not None else None,
        }.items() if v is not None},
        **far.extra,
    }
    if rule is not None:
        extra[REVISION_RULE] = rule
    if classification:
        extra["classification"] = classification
    if properties := _typed_group(groups.get("Properties", {})):
        extra["properties"] = properties
    if external := _typed_group(groups.get("External Coincidence", {})):
        extra["external_coinc"] = external
    skymap = _skymap_url(packet)
    if skymap:
        extra[SKYMAP_URL] = skymap
    pipeline = packet.value("Pipeline")
    return _Fields(
        event_id=grace_id, revision=revision,
        # LVK's own alert type says which notice opens the event, as on the JSON path;
        # only a packet without one falls back to its serial number.
        first=(contract == "initial") if (contract := lvk.contract_alert_type(alert_kind))
        else revision == 0 and not packet.cites("supersedes", "followup"),
        facility="LVK", messenger="gravitational_wave", instrument=packet.value("Instruments"),
        role=role, retraction=alert_kind == "retraction" or packet_type == 164,
        position=False, position_note="LVK VOEvents localize by sky map URL only "
        "(extra.skymap_url)", far_hz=far.hz,
        signalness=(1.0 - terrestrial) if isinstance(terrestrial, int | float)
        and not isinstance(terrestrial, bool) and 0 <= terrestrial <= 1 else None,
        data_rights="proprietary" if internal else "public",
        provenance=Provenance(pipeline=pipeline) if pipeline else None, extra=extra,
        consumed_groups=frozenset({"Classification", "Properties", "External Coincidence"}))


def _skymap_url(packet: _Packet) -> str | None:
    """The LVK sky map URL as sent (GraceDB's ``,N`` is the file version: kept)."""
    for name in ("skymap_fits", "skymap_fits_basic"):
        if url := skymap_url(packet.value(name, anywhere=True)):
            return url
    for p in packet.params:
        if p.name.lower().startswith("skymap_fits") and (url := skymap_url(p.value)):
            return url
    return None


# GBM ground and final positions (and GBM's internal copies): their LocationMap_URL
# names the quick-look plot, beside which the HEALPix map lies.
_GBM_MAP_TYPES = frozenset({112, 115, 114, 146})
_GBM_LOCPLOT = re.compile(r"^(.*/)glg_locplot_(all_bn\d+(?:_v\d+)?)\.png$", re.IGNORECASE)


def _named_map_url(packet: _Packet, packet_type: int | None) -> str | None:
    """The URL of a sky map a (non-LVK) packet names (see "Sky maps by URL" above)."""
    location = packet.value("LocationMap_URL", anywhere=True)
    if url := skymap_url(location):
        return url
    if location and packet_type in _GBM_MAP_TYPES:
        match = _GBM_LOCPLOT.match(location)
        if match:
            return skymap_url(f"{match.group(1)}glg_healpix_{match.group(2)}.fit")
    return skymap_url(packet.value("HealPix_URL", "healpix_url", anywhere=True))


def _km3net(packet: _Packet) -> _Fields:
    event_id = packet.value("Event_Name", "TrigID")
    if event_id is None:
        event_id = packet.fragment or packet.ivorn
    record = packet.integer("record_number")
    revision = record - 1 if record is not None and record >= 1 else len(packet.cites(
        "supersedes", "retraction"))
    kind = (packet.value("Alert_Type") or "").lower()
    far = _far_hz(packet, default_unit=None)
    events = [_typed_group(members) for name, members in packet.groups.items()
              if name.lower().startswith("nu_event")]
    counterparts = [_typed_group(members) for name, members in packet.groups.items()
                    if name.lower().startswith("counterpart")]
    energy = None
    if len(events) == 1 and isinstance(events[0].get("energy_measured"), int | float):
        energy = Energy(best_gev=float(events[0]["energy_measured"]))  # GeV per GCN schema
    extra: dict[str, Any] = {"km3net": {k: v for k, v in {
        "alert_type": packet.value("Alert_Type"), "alert_tense": packet.value("Alert_Tense"),
        "alert_topology": packet.value("alert_topology"), "trig_id": packet.value("TrigID"),
        "n_events": _typed(packet.value("N_events")),
        "potential_counterpart": _typed(packet.value("potential_counterpart")),
        "healpix_url": packet.value("healpix_url"),
    }.items() if v is not None}, **far.extra}
    if events:
        extra["events"] = events
    if counterparts:
        extra["counterparts"] = counterparts
    pipeline = packet.value("Pipeline")
    return _Fields(
        event_id=event_id, revision=revision,
        first=(kind == "initial" or (not kind and revision == 0))
        and not packet.cites("supersedes", "followup"),
        facility="KM3NeT", messenger="neutrino", instrument=packet.value("Instrument"),
        retraction=kind == "retraction", containment=_src_error_containment(packet),
        far_hz=far.hz, energy=energy,
        provenance=Provenance(pipeline=pipeline) if pipeline else None, extra=extra,
        consumed_groups=frozenset(name for name in packet.groups if name.lower().startswith(
            ("nu_event", "counterpart"))))


def _icecube(packet: _Packet, packet_type: int | None) -> _Fields:
    run, event = packet.value("run_id"), packet.value("event_id")
    if run and event:
        event_id = f"{run}:{event}"
    else:
        event_id = packet.value("AMON_ID", "TrigID") or packet.fragment or packet.ivorn
    revision = packet.integer("Rev", "rev") or 0
    far = _far_hz(packet, default_unit="yr^-1")
    if far.hz == 0.0:  # IceCube: "a value of zero means not available"
        far = _Far(None, {"far_note": "FAR 0 means not available (IceCube)"})
    energy_param = packet.param("Energy")
    energy = None
    if energy_param is not None:
        value = finite_or_none(energy_param.value, field="Energy")
        factor = {"tev": 1e3, "gev": 1.0, "pev": 1e6}.get(energy_param.unit.lower() or "tev")
        if value is not None and value > 0 and factor is not None:
            energy = Energy(best_gev=value * factor)
    signalness = finite_or_none(packet.value("Signalness", "signalness"), field="Signalness")
    return _Fields(
        event_id=event_id, revision=max(revision, 0),
        first=revision == 0 and not packet.cites("supersedes", "followup"),
        facility="IceCube", messenger="neutrino",
        containment=_src_error_containment(packet), far_hz=far.hz, energy=energy,
        signalness=signalness if signalness is not None and 0 <= signalness <= 1 else None,
        extra={"icecube": {"notice_type": _ICECUBE_TYPES.get(packet_type)
                           if packet_type is not None else None,
                           "amon_id": packet.value("AMON_ID")}, **far.extra})


def _gcn_classic(packet: _Packet, packet_type: int, gcn: GcnType | None,
                 trigger_time: datetime) -> _Fields:
    if gcn is None:
        facility, messenger = _stream_identity(packet)
        gcn = GcnType(f"TYPE_{packet_type}", facility, _how_instrument(packet), messenger,
                      rank=100 + packet_type % 900, first=True)
    instrument = gcn.instrument or packet.value("Instrument", anywhere=True)
    event_id = None
    for name in _ID_PARAMS:
        value = packet.value(name, anywhere=True)
        if value is not None and not _is_zero(value):
            event_id = value
            break
    if event_id is None:
        event_id = _meta_id(packet)
    if event_id is None:
        event_id = gcn_event_id(gcn, None, trigger_time)
    serial = packet.integer("Sequence_Num")
    if serial is None:
        serial = packet.integer("Pkt_Ser_Num")
    test = gcn.kind == "test" or any(packet.flag(name) for name in (
        "Test_Submission", "Test_Notice", "Test", "InternalTest"))
    position, note = gcn.position, None
    if not gcn.position:
        note = f"{gcn.name} notices carry no sky position"
    elif packet.integer("Coords_Type", anywhere=True) == 0 or "unavailable" in (
            packet.value("Coords_String", anywhere=True) or "").lower():
        position, note = False, "GCN Coords_Type says unavailable/inappropriate"
    elif (packet.value("RADec_valid", anywhere=True) or "").lower() == "false":
        position, note = False, "RADec_valid is false"
    elif packet.flag("StarTrack_Lost_Lock") or packet.flag("ImTrig_during_ST_LoL"):
        # Without star lock the attitude, and so the position, can be off by degrees:
        # kept in extra, never matched as a localization.
        position, note = False, STAR_LOCK_NOTE
    far = _far_hz(packet, default_unit=None) if packet.param("FAR") else _Far(None, {})
    extra: dict[str, Any] = {"gcn": {"packet_type": packet_type, "notice_type": gcn.name},
                             REVISION_RULE: GCN_REVISION_RULE, **far.extra}
    if note and "StarTrack_Lost_Lock" in note and packet.position is not None:
        # What the packet said, for people to see, exactly as sent.
        extra["untrusted_position"] = {
            _local(node): node.text.strip() for node in packet.position.iter()
            if isinstance(node.tag, str) and _local(node) in ("C1", "C2", "Error2Radius")
            and node.text}
    if reasons := _not_a_grb(packet, gcn):
        extra["not_a_grb"] = True
        extra["not_a_grb_reasons"] = reasons
    if gcn.systematic_deg is not None and gcn.facility == "Fermi":
        extra["systematic_model"] = GBM_SYSTEMATIC_MODEL
    return _Fields(
        event_id=event_id, revision=gcn_revision(gcn, serial),
        first=gcn.first and not packet.cites("supersedes", "followup"),
        facility=gcn.facility, messenger=gcn.messenger, instrument=instrument,
        role="test" if test else None, position=position, position_note=note,
        containment=gcn.containment, systematic_deg=gcn.systematic_deg, far_hz=far.hz,
        energy=_gcn_energy(packet, gcn), extra=extra)


# Fermi GBM classifies each trigger (Most_Likely_Index, 4 = GRB, with its probability in
# %). As gwcelery does before RAVEN's searches, a trigger is not taken for a GRB unless
# GRB is the most likely class at >= 50%.
_GBM_GRB_CLASS = 4
_GBM_MIN_GRB_PROB = 50
# Swift BAT's Solution_Status flags that say "a known source, or not a burst".
BAT_KNOWN = ("Def_NOT_a_GRB", "Target_in_Flt_Catalog", "Target_in_Gnd_Catalog",
              "Target_in_Blk_Catalog")


def _not_a_grb(packet: _Packet, gcn: GcnType) -> list[str]:
    """:func:`not_a_grb_reasons` from a VOEvent's Params."""
    identified = packet.value("GRB_Identified", anywhere=True)
    index = packet.integer("Most_Likely_Index", anywhere=True)
    return not_a_grb_reasons(
        gcn, flags=[name for name in BAT_KNOWN if packet.flag(name)],
        grb_identified=None if identified is None
        else identified.lower() not in ("false", "0", "f", "no"),
        most_likely=None if index is None
        else (index, packet.integer("Most_Likely_Prob", anywhere=True)))


def _generic(packet: _Packet) -> _Fields:
    cited = packet.cites("supersedes", "retraction")
    event_id = _meta_id(packet)
    if event_id is None and cited:
        event_id = _split_ivorn(cited[-1])[2] or None
    if event_id is None:
        event_id = packet.fragment or packet.path or packet.ivorn
    facility, messenger = _stream_identity(packet)
    far = _far_hz(packet, default_unit=None) if packet.param("FAR") else _Far(None, {})
    signalness = finite_or_none(packet.value("signalness"), field="signalness")
    p_value = finite_or_none(packet.value("p_value", "pvalue"), field="p_value")
    return _Fields(
        event_id=event_id, revision=len(cited) + len(packet.cites("followup")),
        first=not packet.citations, facility=facility, messenger=messenger,
        instrument=_how_instrument(packet), far_hz=far.hz,
        containment=_src_error_containment(packet),
        signalness=signalness if signalness is not None and 0 <= signalness <= 1 else None,
        p_value=p_value if p_value is not None and 0 <= p_value <= 1 else None,
        extra=far.extra)


# -- shared interpretation --------------------------------------------------------

@dataclass(frozen=True, slots=True)
class _Far:
    hz: float | None
    extra: dict[str, Any]


def _far_hz(packet: _Packet, *, default_unit: str | None) -> _Far:
    """FAR in Hz from the ``FAR`` Param, honouring its unit attribute.

    ``default_unit`` is what the stream documents when the attribute is
    missing (LVK: Hz, IceCube: yr^-1); with no default a unit-less or
    unknown-unit FAR is kept only in ``extra`` rather than guessed.
    """
    param = packet.param("FAR")
    if param is None or param.value is None or not param.value.strip():
        return _Far(None, {})
    unit = param.unit or default_unit
    if unit is None:
        return _Far(None, {"far_note": f"FAR {param.value!r} has no unit: not converted"})
    try:
        hz = rate_to_hz(param.value, unit, field="FAR")
    except NormalizationError as exc:
        return _Far(None, {"far_note": f"{exc.reason}: not converted"})
    if hz is None or hz < 0:
        return _Far(None, {"far_note": f"FAR {param.value!r} is not a rate: not converted"})
    return _Far(hz, {})


def _src_error_containment(packet: _Packet) -> float:
    """0.5 when Error2Radius is the stated 50% radius, else 0.9 (src_error_90 or default)."""
    radius = finite_or_none(_text(_child(packet.position, "Error2Radius")), field="Error2Radius")
    fifty = finite_or_none(packet.value("src_error_50"), field="src_error_50")
    ninety = finite_or_none(packet.value("src_error_90"), field="src_error_90")
    if radius is not None and fifty is not None and math.isclose(radius, fifty) and not (
            ninety is not None and math.isclose(radius, ninety)):
        return 0.5
    return DEFAULT_CONTAINMENT


def _gcn_energy(packet: _Packet, gcn: GcnType) -> Energy | None:
    """Energy band from GCN Lo/Hi_Energy or SVOM Lower/Upper_Energy_Bound, in GeV."""
    bounds: list[float | None] = []
    for names in (("Lo_Energy", "Lower_Energy_Bound"), ("Hi_Energy", "Upper_Energy_Bound")):
        param = next((p for n in names if (p := packet.param(n, anywhere=True)) is not None),
                     None)
        value = finite_or_none(param.value, field=names[0]) if param is not None else None
        if value is None or value <= 0 or param is None:
            bounds.append(None)
            continue
        unit = param.unit.lower() or "kev"
        # GBM notices label their band edges keV but give eV (50000 "keV" for a
        # 50 keV edge, far above GBM's 40 MeV reach): read them as eV.
        if gcn.instrument == "GBM" and unit == "kev" and value > 1000:
            unit = "ev"
        factor = {"ev": 1e-9, "kev": 1e-6, "mev": 1e-3, "gev": 1.0, "tev": 1e3}.get(unit)
        bounds.append(value * factor if factor is not None else None)
    if bounds[0] is None and bounds[1] is None:
        return None
    return Energy(min_gev=bounds[0], max_gev=bounds[1])


def _stream_identity(packet: _Packet) -> tuple[str, str]:
    """(facility, messenger) from the IVORN path/authority or author, and Why concepts.

    A facility in :mod:`listeners.facilities` gives its canonical name and its
    messenger, whatever the packet's Concept says (ANTARES packets say ``em.gamma``);
    only an unknown facility's messenger is read from the Concept.
    """
    author = (packet.author or "").split(" (via")[0].split("/")[0].strip()
    path_tail = packet.path.split("/")[-1] if packet.path else ""
    for name in (path_tail, packet.authority, author):
        known = facilities.lookup(name)
        if known is not None:
            return known.name, known.messenger
    facility = author or path_tail or packet.authority
    return facility[:128] or "unknown", _concept_messenger(packet)


def _concept_messenger(packet: _Packet) -> str:
    text = " ".join(packet.concepts).lower()
    for word, messenger in _CONCEPT_MESSENGERS:
        if word in text:
            return messenger
    # Magnitudes without a stated band are survey photometry (ASAS-SN, Gaia).
    if any(p.ucd.startswith("phot.mag") for p in packet.params):
        return "optical"
    return "other"


def _how_instrument(packet: _Packet) -> str | None:
    """``BAT`` from GCN's ``Swift Satellite, BAT Instrument`` How description."""
    for text in packet.how:
        match = re.search(r"([\w.+-]+)\s+Instrument\b", text)
        if match:
            return match.group(1)[:128]
    return None


def _meta_id(packet: _Packet) -> str | None:
    """First top-level Param with UCD meta.id that identifies the event (not the packet)."""
    for p in packet.params:
        if p.group is None and p.ucd.split(";")[0] == "meta.id" and p.value and \
                p.value.strip() and p.name.lower() not in _NOT_EVENT_IDS \
                and not _is_zero(p.value):
            return p.value.strip()
    return None


# Barycentric times differ from the geocentric arrival time by the light travel
# time across the Earth's orbit, up to 499 s, which depends on the direction.
_BARYCENTRIC_UNCERTAINTY_S = 500.0


def _to_utc(time: datetime, coord_system: str | None) -> tuple[datetime, str | None, float]:
    """The UTC instant of a WhereWhen time in the packet's time scale.

    ``coord_system_id`` reads ``<time scale>-<frame>-<reference position>``
    (``UTC-FK5-GEO``, ``TT-ICRS-TOPO``, ``TDB-ICRS-BARY``).  TAI, TT, TDB and GPS
    times are converted by astropy (:mod:`listeners.timescales`).  A barycentric
    time cannot be brought to the Earth without the direction and the ephemeris, so
    it is kept with an uncertainty of 500 s and a note.
    Returns (UTC time, note for ``extra`` or None, extra uncertainty in s).
    """
    parts = (coord_system or "UTC").upper().split("-")
    scale, position = parts[0], parts[-1] if len(parts) > 1 else "GEO"
    known = scale in timescales.SCALES
    utc = timescales.to_utc(time, scale) if known else time
    if position == "BARY":
        return utc, (f"time in {coord_system}: barycentric, kept to within "
                     f"{_BARYCENTRIC_UNCERTAINTY_S:.0f} s"), _BARYCENTRIC_UNCERTAINTY_S
    if not known:
        return utc, f"time scale {scale!r} of {coord_system} taken as UTC", 0.0
    return utc, None, 0.0


def _is_zero(value: str) -> bool:
    """GCN writes TrigID 0 (``000000``) for "no trigger number" (AGILE, INTEGRAL tests)."""
    text = value.strip()
    return bool(text) and set(text) == {"0"}


def _identifies_event(packet: _Packet) -> bool:
    return packet.param("Packet_Type") is not None or _meta_id(packet) is not None


def _localization(packet: _Packet, fields: _Fields) -> PointLocalization | NoLocalization:
    """A point with an error circle, or none with the reason in ``fields.extra``."""
    note = fields.position_note
    point = None
    if fields.position:
        point, note = _point(packet, fields)
    if point is None:
        if note:
            fields.extra["position_note"] = note
        return NoLocalization()
    return point


def _point(packet: _Packet, fields: _Fields) -> tuple[PointLocalization | None, str | None]:
    element = packet.position
    if element is None:
        return None, "no Position2D in WhereWhen"
    system = (packet.coord_system or "").upper()
    name1 = (_text(_child(element, "Name1")) or "RA").lower()
    if any(frame in system for frame in ("GAL", "ECL", "FK4")) or not name1.startswith("ra"):
        return None, f"position frame {packet.coord_system or name1!r} is not equatorial"
    unit = (element.get("unit") or "deg").strip().lower()
    scale = _ANGLE_UNITS.get(unit)
    if scale is None:
        return None, f"Position2D unit {unit!r} not understood"
    value2 = _child(element, "Value2")
    texts = {"C1": _text(_child(value2, "C1")), "C2": _text(_child(value2, "C2")),
             "Error2Radius": _text(_child(element, "Error2Radius"))}
    for name, text in texts.items():
        if present_but_not_finite(text):
            # A NaN position is a broken producer, not "no position" (issue 14, item 6).
            raise ImplausibleValue(f"{packet.ivorn}: Position2D {name} = {str(text).strip()!r} "
                                   "is not a finite number")
    ra = finite_or_none(texts["C1"], field="Position2D C1")
    dec = finite_or_none(texts["C2"], field="Position2D C2")
    radius = finite_or_none(texts["Error2Radius"], field="Error2Radius")
    if ra is None or dec is None:
        return None, "Position2D has no C1/C2"
    if ra == 0.0 and dec == 0.0:
        return None, "RA=Dec=0 is the placeholder for no position"
    ra, dec = ra * scale, dec * scale
    radius = 0.0 if radius is None else radius * scale
    if not -90.0 <= dec <= 90.0:
        raise ImplausibleValue(f"{packet.ivorn}: declination {dec} deg outside [-90, 90]")
    if radius == _WHOLE_SKY_RADIUS_DEG:
        return None, f"error radius {radius:g} deg: the whole-sky convention (SNEWS)"
    if not 0.0 <= radius <= 180.0 or not math.isfinite(radius):
        raise ImplausibleValue(f"{packet.ivorn}: error radius {radius:g} deg is not an error "
                               "in [0, 180]")
    ra = checked_ra(ra, field=f"{packet.ivorn}: Position2D C1")
    return PointLocalization(ra_deg=ra, dec_deg=dec, error_radius_deg=radius,
                             containment=fields.containment,
                             systematic_deg=fields.systematic_deg), None


def _typed(text: str | None) -> Any:
    """A Param value as a JSON value: bool, int, finite float, else the string."""
    if text is None:
        return None
    value = text.strip()
    if value.lower() in ("true", "false"):
        return value.lower() == "true"
    if _INT.match(value):
        # Past 18 digits it is an identifier, not a number (and int() stops at 4,300).
        return int(value) if len(value.lstrip("+-")) <= 18 else value
    if _FLOAT.match(value) and ("." in value or "e" in value.lower()):
        number = float(value)
        if math.isfinite(number):
            return number
    return value


def _typed_group(members: dict[str, _Param]) -> dict[str, Any]:
    return {name: _typed(p.value) for name, p in members.items()}


def _alert(packet: _Packet, fields: _Fields, localization: PointLocalization | NoLocalization,
           trigger_time: datetime, source: str, stream: str, meta: MessageMeta) -> Alert:
    role = fields.role or packet.role
    if fields.retraction:
        alert_type = "retraction"
    elif fields.first:
        alert_type = "initial"
    else:
        alert_type = "update"
    extra: dict[str, Any] = {
        "voevent": {k: v for k, v in {
            "version": packet.version, "namespace": packet.namespace, "role": packet.role,
            "date": packet.who_date, "author": packet.author,
            "coord_system": packet.coord_system}.items() if v is not None},
        "params": {p.name: _typed(p.value) for p in packet.top.values()},
        "groups": {name: _typed_group(members) for name, members in packet.groups.items()
                   if name not in _SKIP_GROUPS and name not in fields.consumed_groups},
        **fields.extra,
    }
    if packet.citations:
        extra["citations"] = [{"ivorn": ivorn, "cite": cite} for ivorn, cite in packet.citations]
    if issued := _issued(packet.who_date):
        extra[ISSUED] = issued
    event_id = fields.event_id[:256]
    revision = min(max(fields.revision, 0), 1_000_000)
    return Alert(
        schema_version="1.0",
        id=meta.alert_ivorn(stream, local_id(event_id, revision)),
        source=source[:256],
        source_ivorn=packet.ivorn[:512],
        messenger=fields.messenger,
        facility=fields.facility[:128],
        instrument=fields.instrument[:128] if fields.instrument else None,
        event_id=event_id,
        revision=revision,
        alert_type=alert_type,
        role=role,
        trigger_time=trigger_time,
        trigger_time_error_s=fields.trigger_time_error_s,
        # Transports promise aware UTC; a naive time is taken as UTC, as GCN means it.
        received_time=meta.received_at if meta.received_at.tzinfo is not None
        else meta.received_at.replace(tzinfo=UTC),
        localization=localization,
        energy=fields.energy,
        far_hz=fields.far_hz,
        p_value=fields.p_value,
        signalness=fields.signalness,
        data_rights=DataRights(level=fields.data_rights),
        provenance=fields.provenance,
        extra=extra,
    )
