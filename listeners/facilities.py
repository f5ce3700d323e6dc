"""The one table of facilities: canonical names, the names streams use for them, messengers.

Every normalizer names an alert's ``facility`` through :func:`canonical` or
:func:`lookup`, so a facility selector (``?facility=Einstein Probe``, a pairing's
``facility`` filter) written against one stream matches the same facility's alerts
from every other stream: GCN JSON says ``"mission": "EP"``, a VOEvent's IVORN path
says ``EinsteinProbe``, both are ``Einstein Probe`` here.

A facility's ``messenger`` is what it observes when the notice does not say otherwise
(an instrument table may refine it: Swift's XRT is x-ray). For facilities that can only
detect one messenger (neutrino telescopes, gravitational-wave detectors) the messenger
is ``fixed``: a packet's UCD ``Concept`` (ANTARES alerts say ``em.gamma``) never
overrides it, because such a detector cannot have seen a photon.

Names of facilities the table does not know pass through unchanged (trimmed), so a new
mission is archived under its own name rather than refused; adding its row here makes
its name and messenger uniform across streams.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from alerts_schema.model import Messenger

__all__ = ["FACILITIES", "Facility", "canonical", "key", "lookup"]


@dataclass(frozen=True, slots=True)
class Facility:
    """One observatory, mission or network that issues alerts.

    Attributes
    ----------
    name
        The canonical name every normalizer files its alerts under.
    messenger
        What the facility observes unless the notice or instrument says otherwise.
    aliases
        Other names streams use for it (mission fields, IVORN path segments,
        author short names); compared by :func:`key`.
    fixed
        True when the facility can detect only ``messenger`` (neutrino telescopes,
        gravitational-wave detectors): nothing in a packet overrides it.
    """

    name: str
    messenger: Messenger
    aliases: tuple[str, ...] = ()
    fixed: bool = False


FACILITIES: tuple[Facility, ...] = (
    # gamma rays
    Facility("Fermi", "gamma_ray"),
    Facility("Swift", "gamma_ray"),
    Facility("SVOM", "gamma_ray"),
    Facility("BurstCube", "gamma_ray"),
    Facility("Glowbug", "gamma_ray"),
    Facility("INTEGRAL", "gamma_ray"),
    Facility("AGILE", "gamma_ray"),
    Facility("CALET", "gamma_ray"),
    Facility("Konus-Wind", "gamma_ray", ("konus",)),
    Facility("HAWC", "gamma_ray"),
    Facility("GECAM", "gamma_ray"),
    Facility("IPN", "gamma_ray", ("InterPlanetary Network",)),
    Facility("Suzaku", "gamma_ray"),
    # retired missions whose GCN notice types still have numbers
    Facility("CGRO", "gamma_ray", ("BATSE", "COMPTEL")),
    Facility("HETE-2", "gamma_ray", ("HETE", "HETE2")),
    Facility("Milagro", "gamma_ray"),
    Facility("ALEXIS", "x_ray"),
    Facility("RXTE", "x_ray", ("XTE",)),
    Facility("BeppoSAX", "x_ray", ("SAX",)),
    # x rays
    Facility("Einstein Probe", "x_ray", ("EP", "EinsteinProbe")),
    Facility("MAXI", "x_ray"),
    Facility("IXPE", "x_ray"),
    Facility("NuSTAR", "x_ray"),
    Facility("XRISM", "x_ray"),
    # neutrinos: a detector of neutrinos whatever the packet's Concept says
    Facility("IceCube", "neutrino", ("AMON",), fixed=True),
    Facility("KM3NeT", "neutrino", ("KM3NeT_neutrino",), fixed=True),
    Facility("ANTARES", "neutrino", fixed=True),
    Facility("Baikal-GVD", "neutrino", ("Baikal", "BaikalGVD", "GVD"), fixed=True),
    Facility("Super-Kamiokande", "neutrino", ("SuperK", "SK", "Super-K"), fixed=True),
    Facility("SNEWS", "neutrino", fixed=True),
    # gravitational waves
    Facility("LVK", "gravitational_wave", ("gwnet", "LVC", "LIGO", "IGWN"), fixed=True),
    # radio
    Facility("CHIME", "radio", ("CHIME/FRB", "CHIMEFRB")),
    Facility("DSA-110", "radio", ("DSA110",)),
    # optical surveys and networks
    Facility("ZTF", "optical"),
    Facility("Rubin", "optical", ("LSST", "Rubin Observatory")),
    Facility("BOOM", "optical"),
    Facility("AAVSO", "optical"),
    Facility("OGLE", "optical"),
    Facility("CBAT", "optical"),
    Facility("MOA", "optical"),
    Facility("ASAS-SN", "optical", ("ASASSN",)),
    Facility("Gaia", "optical", ("gaia.cam.uk",)),
    # not observatories: the distributors' own notices (tests, utilities)
    Facility("GCN", "other"),
    Facility("HEASARC", "other"),
)

_NOT_KEY = re.compile(r"[^a-z0-9]+")


def key(name: str) -> str:
    """The comparison key of a facility name: lower case, letters and digits only.

    ``"Einstein Probe"``, ``"EinsteinProbe"`` and ``"einstein-probe"`` share one key.
    """
    return _NOT_KEY.sub("", name.lower())


def _index() -> dict[str, Facility]:
    index: dict[str, Facility] = {}
    for facility in FACILITIES:
        for name in (facility.name, *facility.aliases):
            k = key(name)
            if k in index and index[k] is not facility:
                raise AssertionError(f"facility key {k!r} names both {index[k].name!r} "
                                     f"and {facility.name!r}")
            index[k] = facility
    return index


_BY_KEY = _index()


def lookup(name: str | None) -> Facility | None:
    """The facility a stream's name for it denotes, or None when the table lacks it."""
    if not name:
        return None
    return _BY_KEY.get(key(name))


def canonical(name: str) -> str:
    """The canonical name of a facility, or ``name`` itself (trimmed) when unknown."""
    known = lookup(name)
    return known.name if known is not None else name.strip()
