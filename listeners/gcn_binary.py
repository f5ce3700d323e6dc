"""GCN Classic binary notices (160-byte socket packets, ``gcn.classic.binary.*``) to Alerts.

GCN Classic still publishes dozens of notice types as the 160-byte packets of its
original socket protocol, one Kafka topic per type (``gcn.classic.binary.<NAME>``,
``<NAME>`` as in :data:`listeners.voevent.GCN_TYPES` and pygcn's ``NoticeType``).
A packet is 40 big-endian signed 32-bit integers.  Slots 0-3 are the same in every
type (``pkt_type``, ``pkt_sernum``, ``pkt_hop_cnt``, ``pkt_sod``) and slot 39 ends
the packet (``"\\0\\0\\0\\n"``, or zeros in GCN's own GBM and IceCube packets).  Most
types then give the trigger number in slot 4, the trigger date in 5 (TJD, Truncated
Julian Day = MJD - 40000) and its time of day in 6 (centi-seconds), RA and Dec in 7
and 8 (0.0001 deg), an error radius in 11 and flag words in 18 (trigger id / solution
status) and 19 (misc).  The rest, and the
units of the error radius, differ by type; :data:`LAYOUTS` holds what is decoded for
each type.  Sources for the layouts: GCN's socket packet definition document and its
``socket_demo.c`` unpacking routines, checked against nasa-gcn/gcn-classic-to-json's
per-type readings and its real example packets (read, not copied).

Routing
    The topic decides: every message on a ``gcn.classic.binary.*`` topic is read here
    (:func:`claims`), before any format sniffing, so a packet's leading zero byte is
    never taken for Confluent Avro's magic byte.  A file (``meta.source == "file"``)
    is read here when it is exactly one packet: 160 bytes, a known type in slot 0 and
    the terminator (or zero) in slot 39.  On a topic that names a type, a packet of
    another type is refused (the topic and the packet disagree).

Error radii (what slot, what unit, what containment)
    ======================================  ===============================  ===========
    types                                   radius                           containment
    ======================================  ===============================  ===========
    Swift BAT 61/82/84/98, QL 97            slot 11, 0.0001 deg              90 %
    Swift XRT 67                            slot 16, 0.01 arcsec (else 11)   90 %
    Swift UVOT 81                           slot 16, 0.01 arcsec (else 11)   90 %
    Fermi GBM flight 111/117/118/119        slot 11, 0.0001 deg, stat only   68.27 % + sys
    Fermi GBM ground/final 112/114/115/146  slot 11, 0.0001 deg, stat only   68.27 % + sys
    Fermi GBM sub-threshold 131             slot 11, 0.0001 deg              68.27 %
    Fermi LAT 120-124, 127, 128             slot 11, 0.0001 deg              90 %
    INTEGRAL 53-56                          slot 11, arcsec, stat only       90 %
    AGILE 100-102, 108, 109                 slot 11, 0.0001 deg, stat+sys   90 %
    MAXI 134, 136                           slot 11, 0.0001 deg              90 %
    IceCube 173, 174, 176                   slot 11, 0.0001 deg, stat+sys   90 %
    Super-Kamiokande SK_SN 175              slot 15, 0.0001 deg              90 %
    SNEWS 149                               slot 11, 0.0001 deg              90 %
    GECAM 188, 189                          slot 10, 0.0001 deg              68.27 %
    IPN_POS 39                              slot 11, 0.0001 deg, 3 sigma     99.73 %
    GRB_CNTRPART 45                         slot 11, 0.0001 deg              90 %
    TEST_COORDS 2                           slot 11, 0.01 deg (RA/Dec too)   90 %
    ======================================  ===============================  ===========

    The containment and Fermi's systematic radius are the notice type's, from
    :data:`listeners.voevent.GCN_TYPES` (one table for both transports).  Times are
    UTC (TJD + time of day; GECAM's time of day is in 0.0001 s, every other type's in
    0.01 s).  Swift's trigger number is slot 4's low 24 bits (the top 8 are the
    observation segment), INTEGRAL's its low 16 bits (the top 16 the sub-number),
    IceCube's event is ``<run>:<event>`` (slots 23 and 4; read on GCN's real cascade
    packet, whose file name says ``run00139414.evt000034468187``, and taken to hold for
    the gold and bronze tracks), GBM's record number (slot 20) is the serial GBM's
    VOEvents call ``Sequence_Num``.

Semantics: those of the VOEvent path, with the rules shared through
:mod:`listeners.voevent`
    * event id = the trigger number, or ``<facility>-<trigger time>`` when it is 0 or
      negative; revision = ``rank * 1000 + serial`` (:func:`~listeners.voevent.gcn_revision`),
      so a Swift XRT position supersedes the BAT position of its trigger.
    * ``alert_type`` initial for a type that opens its mission's sequence (a GBM
      flight position only as the trigger's first record: later ones follow its Alert
      up, as their VOEvents' citations say), update otherwise, retraction where the
      packet says so (SNEWS's and SPI-ACS's bits).
    * role ``test`` for test types and packets whose test bit is set (Swift, SNEWS,
      SK_SN, GECAM, INTEGRAL and SPI-ACS).
    * not-a-GRB: Swift's ``Def_NOT_a_GRB`` and catalogue bits, ``GRB_Identified``
      false, GBM's classification (:func:`~listeners.voevent.not_a_grb_reasons`).
    * a Swift BAT position taken after the star tracker lost lock is kept in
      ``extra["untrusted_position"]``, never a localization.
    * no position (``kind: none``, reason in ``extra["position_note"]``) for types
      that carry none (BAT/GBM alerts, Konus, SPI-ACS, AGILE MCAL, CALET, Suzaku, IPN
      annuli), for RA = Dec = 0, for SNEWS's undefined direction and its 360 deg radius.

Not alerts, each refused with a reason naming its type (quarantined, never a crash):
``KILL_SOCKET`` and other control packets, spacecraft pointings, data-product notices
(light curves, spectra, images: no event position) and types whose layout is not
decoded here (their number and name are in the reason).  ``IM_ALIVE`` is a heartbeat
of its topic.  A wrong length is :class:`MalformedInput`, an unknown type number
:class:`UnknownFormat`; an RA outside [0, 360), a Dec outside [-90, 90], a negative
radius or one past 180 deg, a time of day past 86400 s and GCN's ``-2147483648`` "no
value" sentinel where a value is needed are :class:`ImplausibleValue`.

Source
    ``gcn.classic.binary/<facility>`` (``gcn.classic.binary/Swift``): one series per
    mission, so a later notice type of a trigger supersedes an earlier one whatever
    topic carried it.  It is not the VOEvent stream's IVORN: the same notice as a
    VOEvent says more (Sun, Moon, URLs), and one key with two contents would be
    quarantined as a conflict.  The Kafka topic is kept with the archived row.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from alerts_schema import Alert, DataRights, Energy, NoLocalization, PointLocalization
from alerts_schema.errors import ImplausibleValue, MalformedInput, NormalizationError, UnknownFormat
from crossmatch.events import REVISION_RULE
from listeners import facilities
from listeners.base import Heartbeat, MessageMeta, Normalized
from listeners.common import checked_ra, local_id
from listeners.voevent import (
    GBM_SYSTEMATIC_MODEL,
    GCN_REVISION_RULE,
    STAR_LOCK_NOTE,
    GcnType,
    gcn_event_id,
    gcn_revision,
    gcn_type,
    not_a_grb_reasons,
)

__all__ = ["LAYOUTS", "PACKET_BYTES", "TOPIC_PREFIX", "claims", "handle",
           "looks_like_gcn_binary", "normalize", "unpack"]

PACKET_BYTES = 160
TOPIC_PREFIX = "gcn.classic.binary."
SOURCE_PREFIX = "gcn.classic.binary/"
TJD_TO_MJD = 40000
UNDEFINED = -2**31
"""GCN's "no value" in a slot (``0x80000000``)."""

_ENDINGS = (b"\x00\x00\x00\n", b"\x00\x00\x00\x00")
_MJD_EPOCH = datetime(1858, 11, 17, tzinfo=UTC)
_DAY_S = 86400.0
_MAX_TJD = 99999  # TJD 99999 is in 2241
_LEAP_DAY_S = 86401.0  # a day holding a leap second
_WHOLE_SKY_DEG = 360.0  # SNEWS's radius for "no direction", as in its VOEvents
_MAX_RADIUS_DEG = 180.0
_ARCSEC = 1.0 / 3600.0
_LOW_HALF = 0xFFFF

Ints = tuple[int, ...]


def unpack(data: bytes) -> Ints:
    """The 40 slots of a packet, or :class:`MalformedInput` saying why it is not one.

    Slot 39 is not checked: GCN ends most packets with ``"\\0\\0\\0\\n"`` but its
    real Fermi GBM and IceCube packets end with zeros.
    """
    if len(data) != PACKET_BYTES:
        raise MalformedInput(f"GCN binary notice is {len(data)} bytes; a socket packet is "
                             f"{PACKET_BYTES} (40 four-byte integers)")
    return struct.unpack(">40i", data)


# -- what each layout yields ------------------------------------------------------------

@dataclass
class _Decoded:
    """What a type's layout gives, before the rules common to all types apply."""

    trigger: str | None
    tjd: int
    sod: int
    sod_s: float = 0.01  # seconds per count of ``sod``
    serial: int | None = None  # None: the packet serial number (slot 1)
    position: tuple[int, int, float, int, float] | None = None
    # (RA counts, Dec counts, deg per RA/Dec count, radius counts, deg per radius count)
    position_note: str | None = None
    flags: list[str] = field(default_factory=list)  # BAT_KNOWN flag names set
    grb_identified: bool | None = None
    most_likely: tuple[int, int | None] | None = None
    test: bool = False
    retraction: bool = False
    opens: bool = True  # False: the packet says an earlier notice of its trigger went out
    star_lock_lost: bool = False
    energy: Energy | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _bit(word: int, n: int) -> bool:
    return bool((word >> n) & 1)


def _u(word: int) -> int:
    """A slot as the unsigned 32-bit word GCN packs flags and half-words into."""
    return word & 0xFFFFFFFF


def _positive(value: int) -> str | None:
    return str(value) if value > 0 else None


def _swift_trigger(v: Ints) -> tuple[str | None, int]:
    return _positive(_u(v[4]) & 0xFFFFFF), (_u(v[4]) >> 24) & 0xFF


# Swift BAT/XRT/UVOT solution-status bits (slot 18) that the VOEvents name.
_SWIFT_FLAGS = {3: "Target_in_Flt_Catalog", 5: "Def_NOT_a_GRB", 8: "Target_in_Gnd_Catalog",
                12: "Target_in_Blk_Catalog"}
_SWIFT_TEST_BIT = 30
_STAR_LOCK_BIT = 10


def _swift_bat(v: Ints) -> _Decoded:
    """BAT_GRB_POS_ACK 61, its TEST 82, BAT_TRANS 84, BAT_SUB_THRESHOLD 98."""
    trigger, segment = _swift_trigger(v)
    status = _u(v[18])
    return _Decoded(
        trigger, v[5], v[6], position=(v[7], v[8], 1e-4, v[11], 1e-4),
        flags=[name for bit, name in _SWIFT_FLAGS.items() if _bit(status, bit)],
        grb_identified=_bit(status, 1), test=_bit(status, _SWIFT_TEST_BIT),
        star_lock_lost=_bit(status, _STAR_LOCK_BIT),
        extra={"swift": {"segment": segment, "image_signif": v[20] / 100.0,
                         "rate_signif": v[21] / 100.0, "phi_deg": v[12] / 100.0,
                         "theta_deg": v[13] / 100.0, "integ_time_s": v[14] / 250.0,
                         "image_trigger": _bit(status, 4), "soln_status": hex(status)}})


def _swift_ql(v: Ints) -> _Decoded:
    """BAT_QL_POS 97: slot 18 holds the slew flags, not a solution status."""
    trigger, segment = _swift_trigger(v)
    return _Decoded(trigger, v[5], v[6], position=(v[7], v[8], 1e-4, v[11], 1e-4),
                    extra={"swift": {"segment": segment, "rate_signif": v[21] / 100.0}})


def _swift_fine(v: Ints, *, fine_deg: float, instrument: str) -> _Decoded:
    """XRT_POSITION 67 and UVOT_POS 81: slot 16 has the radius to 0.01 arcsec."""
    trigger, segment = _swift_trigger(v)
    status = _u(v[18])
    radius, scale = (v[16], fine_deg) if v[16] > 0 else (v[11], 1e-4)
    extra: dict[str, Any] = {"segment": segment, "soln_status": hex(status)}
    if instrument == "XRT":
        extra["signif"] = v[21] / 100.0
    else:
        extra["magnitude"] = v[9] / 100.0
    return _Decoded(trigger, v[5], v[6], position=(v[7], v[8], 1e-4, radius, scale),
                    flags=[name for bit, name in _SWIFT_FLAGS.items()
                           if bit in (5, 8) and _bit(status, bit)],
                    test=_bit(status, _SWIFT_TEST_BIT), extra={"swift": extra})


# GBM's classification (slot 23): class index in the low half-word, probability
# (0..255 for 0..100 %) in the high one; 0 means none was given.
def _gbm_class(word: int) -> tuple[int, int] | None:
    if word == 0:
        return None
    return _u(word) & _LOW_HALF, round(100 * ((_u(word) >> 16) & 0xFFFF) / 255)


_GBM_NOT_GRB_BIT = 5  # "a RETRACTION ... it is NOT a GRB": the VOEvents' Def_NOT_a_GRB


def _gbm_flt(v: Ints) -> _Decoded:
    """FLT_POS 111, FLT_INTERNAL 117, TRANS 118, POS_TEST 119."""
    most_likely = _gbm_class(v[23])
    return _Decoded(
        _positive(v[4]), v[5], v[6], serial=v[20], position=(v[7], v[8], 1e-4, v[11], 1e-4),
        # GBM numbers a trigger's records from 1, its Alert: a later record follows it up
        # (the VOEvent of such a position cites the Alert).
        opens=v[20] <= 1,
        flags=["Def_NOT_a_GRB"] if _bit(_u(v[18]), _GBM_NOT_GRB_BIT) else [],
        most_likely=most_likely,
        extra={"fermi": {"record_num": v[20], "data_signif": v[21] / 100.0,
                         "integ_time_s": v[14] / 1000.0, "phi_deg": v[12] / 100.0,
                         "theta_deg": v[13] / 100.0, "loc_algorithm": v[22],
                         "most_likely": None if most_likely is None else {
                             "index": most_likely[0], "prob_percent": most_likely[1]}}})


def _gbm_gnd(v: Ints) -> _Decoded:
    """GND_POS 112, GND_INTERNAL 114, FIN_POS 115, FIN_INTERNAL 146 (band edges in eV)."""
    low, high = v[26], v[27]
    energy = Energy(min_gev=low * 1e-9, max_gev=high * 1e-9) if 0 < low < high else None
    return _Decoded(
        _positive(v[4]), v[5], v[6], serial=v[20], position=(v[7], v[8], 1e-4, v[11], 1e-4),
        flags=["Def_NOT_a_GRB"] if _bit(_u(v[18]), _GBM_NOT_GRB_BIT) else [],
        energy=energy,
        extra={"fermi": {"record_num": v[20], "data_signif": v[21] / 10.0,
                         "data_interval_s": v[14] / 1000.0, "phi_deg": v[12] / 100.0,
                         "theta_deg": v[13] / 100.0, "loc_algorithm": v[22]}})


def _gbm_subthresh(v: Ints) -> _Decoded:
    """GBM SUBTHRESH 131: slot 4 is the transient's number (as the VOEvents' Trans_Num)."""
    return _Decoded(_positive(v[4]), v[5], v[6], position=(v[7], v[8], 1e-4, v[11], 1e-4),
                    extra={"fermi": {"trans_num_us": v[12]}})


def _fermi_lat(v: Ints) -> _Decoded:
    return _Decoded(_positive(v[4]), v[5], v[6], position=(v[7], v[8], 1e-4, v[11], 1e-4))


def _integral(v: Ints) -> _Decoded:
    """WAKEUP 53, REFINED 54, OFFLINE 55, WEAK 56: radius in arcsec; test: bit 31 of 12."""
    return _Decoded(
        _positive(_u(v[4]) & 0xFFFF), v[5], v[6], position=(v[7], v[8], 1e-4, v[11], _ARCSEC),
        test=_bit(_u(v[12]), 31),
        extra={"integral": {"sub_num": (_u(v[4]) >> 16) & 0xFFFF, "inten_sigma": v[10] / 100.0,
                            "time_scale_s": v[13] / 10000.0, "time_error_s": v[16] / 10000.0}})


def _spiacs(v: Ints) -> _Decoded:
    """INTEGRAL_SPIACS 52: no position; slot 12 bit 31 test, bit 30 retraction."""
    return _Decoded(_positive(_u(v[4]) & 0xFFFF), v[5], v[6], test=_bit(_u(v[12]), 31),
                    retraction=_bit(_u(v[12]), 30),
                    extra={"integral": {"sub_num": (_u(v[4]) >> 16) & 0xFFFF,
                                        "inten_sigma": v[10] / 100.0}})


def _agile(v: Ints) -> _Decoded:
    return _Decoded(_positive(v[4]), v[5], v[6], position=(v[7], v[8], 1e-4, v[11], 1e-4),
                    extra={"agile": {"grb": _bit(_u(v[18]), 1)}})


def _maxi(v: Ints) -> _Decoded:
    return _Decoded(_positive(v[4]), v[5], v[6], position=(v[7], v[8], 1e-4, v[11], 1e-4),
                    extra={"maxi": {"flux_mcrab": v[9] / 10.0,
                                    "negative_flux": _bit(_u(v[18]), 4)}})


def _icecube(v: Ints) -> _Decoded:
    """ICECUBE_ASTROTRACK_GOLD 173, _BRONZE 174, ICECUBE_CASCADE 176: slot 4 the event,
    slot 23 the run (as in the file name the packet carries: ``run00139414.evt...``)."""
    event, run = v[4], v[23]
    trigger = f"{run}:{event}" if run > 0 and event > 0 else _positive(event)
    return _Decoded(trigger, v[5], v[6], position=(v[7], v[8], 1e-4, v[11], 1e-4),
                    extra={"icecube": {"run_id": run, "event_id": event}})


def _sk_sn(v: Ints) -> _Decoded:
    """SK_SN 175: slot 15 is the 90 % radius (11 the 68 %, 16 the 95 %)."""
    return _Decoded(
        _positive(v[4]), v[5], v[6], position=(v[7], v[8], 1e-4, v[15], 1e-4),
        test=_bit(_u(v[18]), 1),
        extra={"super_kamiokande": {"n_events": v[9], "error_68_deg": v[11] * 1e-4,
                                    "error_95_deg": v[16] * 1e-4,
                                    "distance_kpc": [v[13] * 1e-5, v[14] * 1e-5]}})


def _snews(v: Ints) -> _Decoded:
    flags = _u(v[18])
    undefined = _bit(flags, 2)
    return _Decoded(
        _positive(v[4]), v[5], v[6],
        position=None if undefined else (v[7], v[8], 1e-4, v[11], 1e-4),
        position_note="RADec_valid is false" if undefined else None,
        test=_bit(flags, 1), retraction=_bit(flags, 5),
        extra={"snews": {"coincidence": _bit(flags, 0), "n_events": v[9],
                         "duration_s": v[13] / 100.0}})


def _gecam(v: Ints) -> _Decoded:
    """GECAM_FLT 188, GECAM_GND 189: radius in slot 10, time of day in 0.0001 s."""
    return _Decoded(
        _positive(v[4]), v[5], v[6], sod_s=1e-4, position=(v[7], v[8], 1e-4, v[10], 1e-4),
        test=_bit(_u(v[18]), 0),
        extra={"gecam": {"satellite": chr(64 + v[19]) if 1 <= v[19] <= 26 else None,
                         "classification": v[11], "net_count_rate": v[9]}})


def _ipn_pos(v: Ints) -> _Decoded:
    return _Decoded(_positive(v[4]), v[5], v[6], position=(v[7], v[8], 1e-4, v[11], 1e-4),
                    extra={"ipn": {"box_area_arcmin2": v[21] / 10000.0}})


def _cntrpart(v: Ints) -> _Decoded:
    """GRB_CNTRPART 45: the GRB's trigger and time; the counterpart's position."""
    return _Decoded(
        _positive(v[4]), v[5], v[6], position=(v[7], v[8], 1e-4, v[11], 1e-4),
        extra={"counterpart": {"obs_tjd": v[14], "obs_sod_s": v[15] / 100.0,
                               "obs_duration_s": v[16] / 100.0}})


def _test_coords(v: Ints) -> _Decoded:
    """TEST_COORDS 2: the BATSE-era layout, RA, Dec and radius in 0.01 deg."""
    return _Decoded(_positive(v[4]), v[5], v[6], position=(v[7], v[8], 0.01, v[11], 0.01))


def _timed(trigger: Callable[[Ints], str | None], serial_slot: int | None = None
           ) -> Callable[[Ints], _Decoded]:
    """A type that gives a trigger and its time but no position (the type's note says so)."""
    def decode(v: Ints) -> _Decoded:
        return _Decoded(trigger(v), v[5], v[6],
                        serial=v[serial_slot] if serial_slot is not None else None)
    return decode


def _plain(v: Ints) -> str | None:
    return _positive(v[4])


LAYOUTS: dict[int, Callable[[Ints], _Decoded]] = {
    **dict.fromkeys((61, 82, 84, 98), _swift_bat),
    97: _swift_ql,
    67: lambda v: _swift_fine(v, fine_deg=0.01 * _ARCSEC, instrument="XRT"),
    81: lambda v: _swift_fine(v, fine_deg=0.01 * _ARCSEC, instrument="UVOT"),
    60: _timed(lambda v: _swift_trigger(v)[0]),
    **dict.fromkeys((111, 117, 118, 119), _gbm_flt),
    **dict.fromkeys((112, 114, 115, 146), _gbm_gnd),
    131: _gbm_subthresh,
    **dict.fromkeys((110, 116), _timed(_plain, serial_slot=20)),
    **dict.fromkeys((120, 121, 122, 123, 124, 127, 128), _fermi_lat),
    **dict.fromkeys((53, 54, 55, 56), _integral),
    52: _spiacs,
    **dict.fromkeys((100, 101, 102, 108, 109), _agile),
    **dict.fromkeys((134, 136), _maxi),
    **dict.fromkeys((173, 174, 176), _icecube),
    175: _sk_sn,
    149: _snews,
    **dict.fromkeys((188, 189), _gecam),
    39: _ipn_pos,
    45: _cntrpart,
    2: _test_coords,
    # A trigger time but no position, as GCN_TYPES says of them.
    **dict.fromkeys((31, 32, 59, 105, 148, 160, 161), _timed(_plain)),
}
"""Packet type -> the reading of its layout (types absent here are refused by name)."""

_PRODUCTS = frozenset({62, 63, 64, 65, 66, 68, 69, 70, 71, 72, 73, 76, 77, 78, 79, 80, 85,
                       86, 87, 88, 89, 113})
"""Data-product notices (light curves, spectra, images, the XRT/UVOT nacks): no event
position, and their date is the observation's, not the trigger's."""

_NUMBERS: dict[str, int] = {t.name: n for n in range(1024) if (t := gcn_type(n)) is not None}


# -- routing --------------------------------------------------------------------------

def claims(meta: MessageMeta, data: bytes) -> bool:
    """Whether these bytes are a GCN binary notice: the topic says so, or a file is one
    whole packet of a known type (checked before any format sniffing)."""
    if meta.source.startswith(TOPIC_PREFIX):
        return True
    return meta.source == "file" and looks_like_gcn_binary(data)


def looks_like_gcn_binary(data: bytes) -> bool:
    """160 bytes, a GCN notice type number in slot 0 and slot 39 the packet terminator
    (or zero, as in GCN's own Fermi GBM and IceCube packets)."""
    if len(data) != PACKET_BYTES or data[-4:] not in _ENDINGS:
        return False
    return gcn_type(int.from_bytes(data[:4], "big", signed=True)) is not None


def handle(data: bytes, decoded: Any, meta: MessageMeta) -> Normalized:
    """Registry entry point: :func:`normalize` (binary is never pre-decoded)."""
    del decoded
    return normalize(data, meta)


# -- normalizing ------------------------------------------------------------------------

def normalize(data: bytes, meta: MessageMeta) -> Normalized:
    """One Alert (or the heartbeat of an IM_ALIVE) from one GCN binary notice.

    Raises
    ------
    MalformedInput
        Not one 160-byte packet, or a packet of another type than its topic names.
    UnknownFormat
        Slot 0 is not a GCN notice type number.
    NormalizationError
        A control packet, a pointing, a data-product notice, a type whose layout is
        not decoded (the reason names the type) or a packet without a date.
    ImplausibleValue
        An impossible position, radius or time (never wrapped or clamped).
    """
    v = unpack(data)
    number = v[0]
    gcn = gcn_type(number)
    if gcn is None:
        raise UnknownFormat(f"GCN binary packet type {number} is not a GCN notice type "
                            f"(from {meta.source!r})")
    _check_topic(meta.source, number, gcn)
    what = f"GCN {gcn.name} (type {number})"
    if gcn.kind == "heartbeat":
        # Liveness belongs to the transport stream (topic) that went quiet.
        return Normalized(heartbeats=(Heartbeat(
            stream=meta.source, detector="", time=_time_of_day_near(meta, v[3])),))
    if gcn.kind in ("control", "pointing"):
        kind = "a control packet" if gcn.kind == "control" else "a spacecraft pointing"
        raise NormalizationError(f"{what} is {kind}, not an alert")
    if number in _PRODUCTS:
        raise NormalizationError(f"{what} is a data-product notice (no event position; "
                                 "its date is the observation's): not an alert")
    layout = LAYOUTS.get(number)
    if layout is None and gcn.facility == "LVK":
        raise NormalizationError(f"{what}: this broker does not decode that packet layout; "
                                 "LVK alerts come whole on igwn.gwalert and as VOEvents (the "
                                 "binary packet has no position and cuts the sky map's URL "
                                 "at 40 characters)")
    if layout is None:
        raise NormalizationError(f"{what}: this broker does not decode that packet layout "
                                 f"(read its VOEvent or JSON stream instead)")
    decoded = layout(v)
    trigger_time = _trigger_time(decoded, what)
    return Normalized(alerts=(_alert(v, gcn, decoded, trigger_time, meta, what),))


def _check_topic(source: str, number: int, gcn: GcnType) -> None:
    if not source.startswith(TOPIC_PREFIX):
        return
    named = _NUMBERS.get(source[len(TOPIC_PREFIX):])
    if named is not None and named != number:
        raise MalformedInput(f"GCN binary packet of type {number} ({gcn.name}) on {source}, "
                             f"the topic of type {named}")


def _trigger_time(decoded: _Decoded, what: str) -> datetime:
    tjd, sod = decoded.tjd, decoded.sod
    if tjd == UNDEFINED or sod == UNDEFINED:
        raise ImplausibleValue(f"{what}: the trigger date or time holds GCN's no-value "
                               f"sentinel {UNDEFINED}")
    if tjd <= 0:
        raise NormalizationError(f"{what}: no trigger date (TJD {tjd})")
    if tjd > _MAX_TJD:
        raise ImplausibleValue(f"{what}: TJD {tjd} is not a GCN date (five digits)")
    seconds = sod * decoded.sod_s
    if not 0.0 <= seconds < _LEAP_DAY_S:
        raise ImplausibleValue(f"{what}: time of day {seconds:g} s is outside 0 .. 86400 s")
    return _MJD_EPOCH + timedelta(days=tjd + TJD_TO_MJD, microseconds=round(seconds * 1e6))


def _time_of_day_near(meta: MessageMeta, pkt_sod: int) -> datetime:
    """The instant at ``pkt_sod`` (centi-seconds of a UTC day) nearest the receipt: an
    IM_ALIVE carries its time of day but no date."""
    received = meta.received_at if meta.received_at.tzinfo is not None \
        else meta.received_at.replace(tzinfo=UTC)
    seconds = pkt_sod / 100.0
    if not 0.0 <= seconds < _LEAP_DAY_S:
        return received
    midnight = received.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    candidates = [midnight + timedelta(days=d, seconds=seconds) for d in (-1, 0, 1)]
    return min(candidates, key=lambda t: abs((t - received).total_seconds()))


def _value(counts: int, scale: float, name: str, what: str) -> float:
    if counts == UNDEFINED:
        raise ImplausibleValue(f"{what}: {name} holds GCN's no-value sentinel {UNDEFINED}")
    return counts * scale


def _localization(gcn: GcnType, decoded: _Decoded, what: str
                  ) -> tuple[PointLocalization | NoLocalization, str | None]:
    if not gcn.position:
        return NoLocalization(), f"{gcn.name} notices carry no sky position"
    if decoded.position is None:
        return NoLocalization(), decoded.position_note or f"{gcn.name}: no position decoded"
    ra_counts, dec_counts, deg, radius_counts, radius_deg = decoded.position
    ra = _value(ra_counts, deg, "RA", what)
    dec = _value(dec_counts, deg, "Dec", what)
    radius = _value(radius_counts, radius_deg, "the error radius", what)
    if not -90.0 <= dec <= 90.0:
        raise ImplausibleValue(f"{what}: declination {dec:g} deg outside [-90, 90]")
    ra = checked_ra(ra, field=f"{what}: RA")
    if ra == 0.0 and dec == 0.0:
        return NoLocalization(), "RA=Dec=0 is the placeholder for no position"
    if math.isclose(radius, _WHOLE_SKY_DEG):
        return NoLocalization(), f"error radius {radius:g} deg: the whole-sky convention"
    if not 0.0 <= radius <= _MAX_RADIUS_DEG:
        raise ImplausibleValue(f"{what}: error radius {radius:g} deg is not an error in "
                               f"[0, {_MAX_RADIUS_DEG:g}]")
    return PointLocalization(ra_deg=ra, dec_deg=dec, error_radius_deg=radius,
                             containment=gcn.containment,
                             systematic_deg=gcn.systematic_deg), None


def _alert(v: Ints, gcn: GcnType, decoded: _Decoded, trigger_time: datetime,
           meta: MessageMeta, what: str) -> Alert:
    localization, note = _localization(gcn, decoded, what)
    extra: dict[str, Any] = {
        "gcn": {"packet_type": v[0], "notice_type": gcn.name, "format": "binary",
                "pkt_sernum": v[1]},
        REVISION_RULE: GCN_REVISION_RULE,  # the VOEvent copy's rule: they interleave
        **decoded.extra,
    }
    if decoded.star_lock_lost and isinstance(localization, PointLocalization):
        # Without star lock the attitude, and so the position, can be off by degrees:
        # kept for people to see, never matched as a localization.
        extra["untrusted_position"] = {"ra_deg": localization.ra_deg,
                                       "dec_deg": localization.dec_deg,
                                       "error_radius_deg": localization.error_radius_deg}
        localization, note = NoLocalization(), STAR_LOCK_NOTE
    if note:
        extra["position_note"] = note
    if reasons := not_a_grb_reasons(gcn, flags=decoded.flags,
                                     grb_identified=decoded.grb_identified,
                                     most_likely=decoded.most_likely):
        extra["not_a_grb"] = True
        extra["not_a_grb_reasons"] = reasons
    if gcn.systematic_deg is not None and gcn.facility == "Fermi":
        extra["systematic_model"] = GBM_SYSTEMATIC_MODEL
    serial = decoded.serial if decoded.serial is not None else v[1]
    revision = gcn_revision(gcn, serial)
    event_id = gcn_event_id(gcn, decoded.trigger, trigger_time)[:256]
    if decoded.retraction:
        alert_type = "retraction"
    elif gcn.first and decoded.opens:
        alert_type = "initial"
    else:
        alert_type = "update"
    facility = facilities.canonical(gcn.facility)
    stream = SOURCE_PREFIX + facility
    received = meta.received_at if meta.received_at.tzinfo is not None \
        else meta.received_at.replace(tzinfo=UTC)
    return Alert(
        schema_version="1.0",
        id=meta.alert_ivorn(stream, local_id(event_id, revision)),
        source=stream,
        messenger=gcn.messenger,
        facility=facility,
        instrument=gcn.instrument,
        event_id=event_id,
        revision=revision,
        alert_type=alert_type,
        role="test" if gcn.kind == "test" or decoded.test else "observation",
        trigger_time=trigger_time,
        received_time=received,
        localization=localization,
        energy=decoded.energy,
        data_rights=DataRights(level="public"),
        extra=extra,
    )
