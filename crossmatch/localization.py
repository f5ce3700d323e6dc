"""Sky localizations as probability densities on the sphere.

Every alert position becomes one of four objects, each a normalized
probability density per steradian over the celestial sphere (ICRS):

:class:`VonMisesFisher`
    A circular error region: the von Mises-Fisher (Fisher 1953) density
    ``p(x) = kappa / (4 pi sinh kappa) * exp(kappa mu.x)`` sr^-1, whose
    concentration ``kappa`` is solved exactly from a radius and the probability
    it contains.  ``kappa = inf`` is an exact position (a point).
:class:`Mixture`
    A weighted sum of von Mises-Fisher densities: Fermi GBM's statistical
    error with its core-plus-tail systematic (Connaughton et al. 2015).
:class:`Ellipse`
    An elliptical error region: a 2-D Gaussian on the plane tangent to the
    sphere at the centre, carried onto the sphere by the azimuthal-equidistant
    (exponential) map.
:class:`SkyMap`
    A HEALPix probability map, multi-order (NUNIQ) or flat (NESTED or RING,
    any nside), held as sorted ranges of order-29 NESTED indices.

:func:`from_alert` turns an alert's ``localization`` into one of these.  Angles
are degrees in the public API (radians inside), solid angles steradians.
Pure computation: the only bytes read are those handed in.

Function-local imports: healpy (about 0.7 s to import, matplotlib with it) is
imported by the methods that use it, deferred so that a command or process
that never reads a sky map starts without it.
"""

from __future__ import annotations

import hashlib
import math
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cached_property, lru_cache
from typing import TYPE_CHECKING, TypeAlias

import numpy as np

from alerts_schema.errors import MalformedInput
from crossmatch.skymap import (
    MAX_ORDER,
    MultiOrderMap,
    read_multiorder,
    repair_negative_density,
)

if TYPE_CHECKING:
    from alerts_schema.model import Alert

__all__ = [
    "GBM_CORE_WEIGHT",
    "GBM_TAIL_DEG",
    "NEGATIVE_TOLERANCE",
    "TAIL_PROBABILITY",
    "Ellipse",
    "Localization",
    "Mixture",
    "SkyMap",
    "VonMisesFisher",
    "from_alert",
    "gbm_mixture",
    "gbm_model",
    "unit_vector",
]

GBM_CORE_WEIGHT = 0.804
"""Weight of the core term of the Fermi GBM systematic (Connaughton et al. 2015, ground-automated
locations: 80.4% of bursts in a core whose width the alert states as ``systematic_deg``)."""

GBM_TAIL_DEG = 13.7
"""Width of the tail term of the Fermi GBM systematic, degrees (Connaughton et al. 2015: the
remaining 19.6% of bursts)."""

GBM_MODELS: dict[float, tuple[float, float]] = {
    7.52: (0.897, 55.6),  # flight-software positions: Table 7, first row
    3.72: (0.804, 13.7),  # ground-automated positions: Table 3, first row
    3.71: (0.900, 14.3),  # final (human-in-the-loop) positions: Table 3, second row
}
"""Connaughton et al. (2015)'s core-plus-tail models of the GBM systematic, by core width
(degrees) -> (core weight, tail width in degrees).  A GBM alert states its core width
(``systematic_deg``: 7.52, 3.72 or 3.71, by its position type), which names its row; any
other width takes the ground-automated weight and tail (``GBM_CORE_WEIGHT``,
``GBM_TAIL_DEG``).  These are also gwcelery's, for the sky maps it builds for RAVEN."""


def gbm_model(core_deg: float) -> tuple[float, float]:
    """(core weight, tail width in degrees) of the GBM systematic whose core is
    ``core_deg`` wide (:data:`GBM_MODELS`)."""
    return GBM_MODELS.get(round(core_deg, 2), (GBM_CORE_WEIGHT, GBM_TAIL_DEG))


GBM_CONTAINMENT = 0.6827
"""Containment of the GBM systematic widths: Connaughton et al. (2015) state them, like the
statistical radius, as 68% (one-sigma) radii and add them in quadrature."""

TAIL_PROBABILITY = 1e-12
"""Probability a smooth localization is allowed to hold outside the disc over which it is
summed against a sky map (see :meth:`VonMisesFisher.support_radius_rad`)."""

NEGATIVE_TOLERANCE = 1e-3
"""Largest fraction of a sky map's (positive) probability its negative pixels may hold and
still be clipped to zero, as smoothing or interpolation leaves; more is an error."""

_FOUR_PI = 4.0 * math.pi
_LOG_FOUR_PI = math.log(_FOUR_PI)
# Largest order at which healpy's inclusive disc query works (it oversamples by 4, and
# nside * 4 must stay within 2**29); beyond it healpy aborts the process.
_MAX_QUERY_ORDER = MAX_ORDER - 2
# Pixel side at order 0, radians: sqrt(4 pi / 12).
_SIDE0_RAD = math.sqrt(math.pi / 3.0)


# -- geometry ------------------------------------------------------------------------------


def unit_vector(ra_deg: float | np.ndarray, dec_deg: float | np.ndarray) -> np.ndarray:
    """Unit vectors of ICRS positions.

    Parameters
    ----------
    ra_deg, dec_deg
        Right ascension and declination, degrees (any shape, broadcast).

    Returns
    -------
    numpy.ndarray
        Shape ``(..., 3)``: x towards (0, 0), z towards the north pole.
    """
    ra = np.radians(np.asarray(ra_deg, dtype=np.float64))
    dec = np.radians(np.asarray(dec_deg, dtype=np.float64))
    ra, dec = np.broadcast_arrays(ra, dec)
    cos_dec = np.cos(dec)
    return np.stack([cos_dec * np.cos(ra), cos_dec * np.sin(ra), np.sin(dec)], axis=-1)


def _frame(ra_deg: float, dec_deg: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Centre, east and north unit vectors of the tangent plane at a position."""
    ra, dec = math.radians(ra_deg), math.radians(dec_deg)
    centre = np.array([math.cos(dec) * math.cos(ra), math.cos(dec) * math.sin(ra), math.sin(dec)])
    east = np.array([-math.sin(ra), math.cos(ra), 0.0])
    north = np.array([-math.sin(dec) * math.cos(ra), -math.sin(dec) * math.sin(ra),
                      math.cos(dec)])
    return centre, east, north


def _log_map(vecs: np.ndarray, centre: np.ndarray, east: np.ndarray, north: np.ndarray
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Azimuthal-equidistant coordinates of unit vectors about ``centre``.

    Returns ``(xi_east, xi_north, theta, sin_theta)``: the tangent-plane
    coordinates (radians; their length is the angular distance ``theta``
    from the centre) and ``sin(theta)``.
    """
    cos_t = _dot3(vecs, centre)
    e = _dot3(vecs, east)
    n = _dot3(vecs, north)
    sin_t = np.hypot(e, n)
    theta = np.arctan2(sin_t, cos_t)
    # theta / sin(theta) -> 1 at the centre; avoid 0/0 there.
    scale = np.where(sin_t > 0, theta / np.where(sin_t > 0, sin_t, 1.0), 1.0)
    return e * scale, n * scale, theta, sin_t


def _dot3(vecs: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Dot products of unit vectors (shape ``(..., 3)``) with one vector, without BLAS."""
    dots: np.ndarray = vecs[..., 0] * v[0] + vecs[..., 1] * v[1] + vecs[..., 2] * v[2]
    return dots


def _exp_map(xi_e: np.ndarray, xi_n: np.ndarray, centre: np.ndarray, east: np.ndarray,
             north: np.ndarray) -> np.ndarray:
    """Unit vectors at tangent-plane coordinates (radians) about ``centre``: inverse of _log_map."""
    theta = np.hypot(xi_e, xi_n)
    # sin(theta) / theta -> 1 at the centre.
    sinc = np.where(theta > 0, np.sin(theta) / np.where(theta > 0, theta, 1.0), 1.0)
    vecs: np.ndarray = (np.cos(theta)[..., None] * centre + (sinc * xi_e)[..., None] * east
                        + (sinc * xi_n)[..., None] * north)
    return vecs


def _check_position(ra_deg: float, dec_deg: float) -> tuple[float, float]:
    ra, dec = float(ra_deg), float(dec_deg)
    if not (math.isfinite(ra) and math.isfinite(dec)) or not -90.0 <= dec <= 90.0:
        raise ValueError(f"position ({ra!r}, {dec!r}) is not an ICRS position in degrees")
    return ra % 360.0, dec


# -- von Mises-Fisher ----------------------------------------------------------------------


def _one_minus_cos(angle_rad: float | np.ndarray) -> float | np.ndarray:
    """1 - cos(angle) without cancellation at small angles: 2 sin^2(angle / 2)."""
    return 2.0 * np.sin(np.asarray(angle_rad) / 2.0) ** 2


def _vmf_cdf(kappa: float, one_minus_cos: float | np.ndarray) -> float | np.ndarray:
    """Probability of a von Mises-Fisher density within angle theta of its mean.

    ``P = (1 - exp(-kappa (1 - cos theta))) / (1 - exp(-2 kappa))``, written
    with expm1 so that it stays exact for tiny and huge kappa.
    """
    a = np.asarray(one_minus_cos, dtype=np.float64)
    if kappa == 0:
        return a / 2.0
    if math.isinf(kappa):
        return np.where(a > 0, 1.0, 0.0)
    return np.expm1(-kappa * a) / math.expm1(-2.0 * kappa)


def _vmf_one_minus_cos_at(kappa: float, level: float) -> float:
    """1 - cos(r) of the cap about the mean that holds probability ``level``."""
    if math.isinf(kappa):
        return 0.0
    if kappa == 0:
        return 2.0 * level
    # Inverse of _vmf_cdf: 1 - cos r = -log(1 - level (1 - exp(-2 kappa))) / kappa.
    return min(2.0, -math.log1p(level * math.expm1(-2.0 * kappa)) / kappa)


def _log_norm_vmf(kappa: float) -> float:
    """log of kappa / (2 pi (1 - exp(-2 kappa))): the density at the mean is exp of this."""
    if kappa == 0:
        return -_LOG_FOUR_PI
    return math.log(kappa / (-math.expm1(-2.0 * kappa))) - math.log(2.0 * math.pi)


@dataclass(frozen=True)
class VonMisesFisher:
    """A von Mises-Fisher (Fisher) density on the sphere: a circular error region.

    The density is ``p(x) = kappa / (4 pi sinh kappa) * exp(kappa mu.x)``
    per steradian, with ``mu`` the unit vector of the centre.  The
    probability within angle ``theta`` of the centre is
    ``(1 - exp(-kappa (1 - cos theta))) / (1 - exp(-2 kappa))``.  For large
    ``kappa`` it is a 2-D Gaussian of standard deviation
    ``sigma = 1 / sqrt(kappa)`` radians per axis.

    Parameters
    ----------
    ra_deg, dec_deg
        Centre, ICRS degrees.
    kappa
        Concentration, dimensionless (1 / rad^2), >= 0: 0 is the uniform
        density 1 / (4 pi) sr^-1; ``math.inf`` an exact position.
    """

    ra_deg: float
    dec_deg: float
    kappa: float

    def __post_init__(self) -> None:
        ra, dec = _check_position(self.ra_deg, self.dec_deg)
        kappa = float(self.kappa)
        if math.isnan(kappa) or kappa < 0:
            raise ValueError(f"von Mises-Fisher kappa must be >= 0, got {self.kappa!r}")
        object.__setattr__(self, "ra_deg", ra)
        object.__setattr__(self, "dec_deg", dec)
        object.__setattr__(self, "kappa", kappa)

    @classmethod
    def point(cls, ra_deg: float, dec_deg: float) -> VonMisesFisher:
        """An exact position (``kappa = inf``), ICRS degrees."""
        return cls(ra_deg, dec_deg, math.inf)

    @classmethod
    def from_radius(cls, ra_deg: float, dec_deg: float, radius_deg: float,
                    containment: float) -> VonMisesFisher:
        """The density whose circle of ``radius_deg`` holds probability ``containment``.

        Solves ``c (1 - exp(-2 kappa)) = 1 - exp(-kappa a)`` for kappa, with
        ``a = 1 - cos r = 2 sin^2(r / 2)`` and ``c`` the containment.  When
        ``exp(-2 kappa)`` is negligible (every radius below ~60 deg at 90%)
        the answer is the closed form ``kappa = -ln(1 - c) / a``; otherwise a
        bisection on the monotonic containment finds it to double precision.

        Parameters
        ----------
        ra_deg, dec_deg
            Centre, ICRS degrees.
        radius_deg
            Radius of the error circle, degrees, in [0, 180].  0 gives an
            exact position (``kappa = inf``).
        containment
            Probability within the radius, in (0, 1): 0.9 for a 90% radius;
            0.3935 for a 2-D Gaussian one-sigma radius; 0.6827 for a "68%"
            radius.

        Returns
        -------
        VonMisesFisher

        Notes
        -----
        A circle so wide that the uniform density already holds
        ``containment`` inside it (``(1 - cos r) / 2 >= c``, for example
        r = 180 deg) carries no position information: kappa is 0 there
        rather than negative.
        """
        radius, c = float(radius_deg), float(containment)
        if not 0.0 < c < 1.0:
            raise ValueError(f"containment must be in (0, 1), got {containment!r}")
        if not 0.0 <= radius <= 180.0:
            raise ValueError(f"radius must be in [0, 180] degrees, got {radius_deg!r}")
        return cls(ra_deg, dec_deg, kappa_from_radius(radius, c))

    # -- figures ---------------------------------------------------------------------------

    @property
    def is_point(self) -> bool:
        """True for an exact position (``kappa = inf``)."""
        return math.isinf(self.kappa)

    @cached_property
    def vec(self) -> np.ndarray:
        """Unit vector of the centre."""
        return unit_vector(self.ra_deg, self.dec_deg)

    @property
    def sigma_rad(self) -> float:
        """Small-angle standard deviation per axis, radians: 1 / sqrt(kappa) (inf at kappa 0)."""
        return math.inf if self.kappa == 0 else 1.0 / math.sqrt(self.kappa)

    def cdf(self, separation_deg: float | np.ndarray) -> float | np.ndarray:
        """Probability within ``separation_deg`` (degrees) of the centre."""
        value = _vmf_cdf(self.kappa, _one_minus_cos(np.radians(separation_deg)))
        return float(value) if np.ndim(value) == 0 else value

    def credible_radius_deg(self, level: float) -> float:
        """Radius of the circle about the centre holding probability ``level``, degrees."""
        _check_level(level)
        a = _vmf_one_minus_cos_at(self.kappa, level)
        return math.degrees(2.0 * math.asin(min(1.0, math.sqrt(a / 2.0))))

    def support_radius_rad(self) -> float:
        """Radius outside which at most :data:`TAIL_PROBABILITY` lies, radians (pi at most)."""
        a = _vmf_one_minus_cos_at(self.kappa, 1.0 - TAIL_PROBABILITY)
        return 2.0 * math.asin(min(1.0, math.sqrt(a / 2.0)))

    def log_density(self, vecs: np.ndarray) -> np.ndarray:
        """Natural log of the density (sr^-1) at unit vectors ``vecs`` (shape ``(..., 3)``).

        Uses ``kappa (mu.x - 1) = -kappa |x - mu|^2 / 2``, exact for huge kappa.
        """
        vecs = np.asarray(vecs, dtype=np.float64)
        d2 = np.sum((vecs - self.vec) ** 2, axis=-1)
        if self.is_point:
            return np.where(d2 == 0, math.inf, -math.inf)
        log_density: np.ndarray = _log_norm_vmf(self.kappa) - 0.5 * self.kappa * d2
        return log_density

    def density(self, ra_deg: float | np.ndarray, dec_deg: float | np.ndarray
                ) -> float | np.ndarray:
        """Probability density at positions (ICRS degrees), sr^-1."""
        value = np.exp(self.log_density(unit_vector(ra_deg, dec_deg)))
        return float(value) if np.ndim(value) == 0 else value


def kappa_from_radius(radius_deg: float, containment: float) -> float:
    """Concentration of the von Mises-Fisher density whose ``radius_deg`` holds ``containment``.

    See :meth:`VonMisesFisher.from_radius`; 0 deg gives ``inf``.
    """
    if radius_deg == 0:
        return math.inf
    a = float(_one_minus_cos(math.radians(radius_deg)))
    c = containment
    if c <= a / 2.0:
        return 0.0
    kappa = -math.log1p(-c) / a  # exact when exp(-2 kappa) is negligible
    if 2.0 * kappa > 80.0:
        return kappa
    # The containment at fixed radius grows monotonically with kappa, from a/2 at 0 to
    # c / (1 - exp(-2 kappa)) >= c at the closed-form value: bisect in between.
    lo, hi = 0.0, kappa
    for _ in range(2000):
        mid = 0.5 * (lo + hi)
        if mid in (lo, hi):
            break
        if _vmf_cdf(mid, a) < c:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


# -- mixtures ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Mixture:
    """A weighted sum of von Mises-Fisher densities, sr^-1.

    Parameters
    ----------
    components
        ``((weight, VonMisesFisher), ...)``; weights positive and finite,
        rescaled to sum to 1.

    Notes
    -----
    Credible regions (and so the credible-region gate) are defined only for
    concentric mixtures, whose density falls monotonically with distance
    from the shared centre; the Fermi GBM mixtures are such.
    """

    components: tuple[tuple[float, VonMisesFisher], ...]

    def __post_init__(self) -> None:
        comps = tuple((float(w), v) for w, v in self.components)
        if not comps:
            raise ValueError("a mixture needs at least one component")
        for w, v in comps:
            if not (math.isfinite(w) and w > 0):
                raise ValueError(f"mixture weights must be positive and finite, got {w!r}")
            if not isinstance(v, VonMisesFisher):
                raise TypeError(f"mixture components must be VonMisesFisher, got {type(v)}")
        total = math.fsum(w for w, _ in comps)
        object.__setattr__(self, "components", tuple((w / total, v) for w, v in comps))

    @property
    def concentric(self) -> bool:
        """True when every component has the same centre."""
        first = self.components[0][1]
        return all((v.ra_deg == first.ra_deg and v.dec_deg == first.dec_deg)
                   or (abs(v.dec_deg) == 90.0 and v.dec_deg == first.dec_deg)
                   for _, v in self.components)

    @property
    def ra_deg(self) -> float:
        """Right ascension of the first component's centre, degrees."""
        return self.components[0][1].ra_deg

    @property
    def dec_deg(self) -> float:
        """Declination of the first component's centre, degrees."""
        return self.components[0][1].dec_deg

    def log_density(self, vecs: np.ndarray) -> np.ndarray:
        """Natural log of the density (sr^-1) at unit vectors ``vecs`` (shape ``(..., 3)``)."""
        terms = np.stack([math.log(w) + v.log_density(vecs) for w, v in self.components])
        return _logsumexp(terms, axis=0)

    def density(self, ra_deg: float | np.ndarray, dec_deg: float | np.ndarray
                ) -> float | np.ndarray:
        """Probability density at positions (ICRS degrees), sr^-1."""
        value = np.exp(self.log_density(unit_vector(ra_deg, dec_deg)))
        return float(value) if np.ndim(value) == 0 else value

    def cdf(self, separation_deg: float | np.ndarray) -> float | np.ndarray:
        """Probability within ``separation_deg`` (degrees) of the common centre."""
        self._need_concentric()
        value = sum(w * np.asarray(v.cdf(separation_deg)) for w, v in self.components)
        return float(value) if np.ndim(value) == 0 else value

    def credible_radius_deg(self, level: float) -> float:
        """Radius about the common centre holding probability ``level``, degrees."""
        _check_level(level)
        self._need_concentric()
        return _mixture_radius(self, float(level))

    def _need_concentric(self) -> None:
        if not self.concentric:
            raise ValueError("credible regions are defined here only for concentric mixtures")


@lru_cache(maxsize=1024)
def _mixture_radius(mix: Mixture, level: float) -> float:
    """Bisection for Mixture.credible_radius_deg, cached: the gate asks for it on every pair."""
    comps = [(w, v.kappa) for w, v in mix.components]

    def cdf(radius_deg: float) -> float:
        a = float(_one_minus_cos(math.radians(radius_deg)))
        return math.fsum(w * float(_vmf_cdf(k, a)) for w, k in comps)

    # The containment grows with radius and reaches `level` no later than the widest
    # component's own radius at `level`: bisect below that.
    lo, hi = 0.0, max(v.credible_radius_deg(level) for _, v in mix.components)
    while True:
        mid = 0.5 * (lo + hi)
        if mid in (lo, hi) or hi - lo < 1e-13 * hi:
            return hi
        if cdf(mid) < level:
            lo = mid
        else:
            hi = mid


def gbm_mixture(ra_deg: float, dec_deg: float, stat_radius_deg: float, containment: float,
                core_deg: float, *, core_weight: float = GBM_CORE_WEIGHT,
                tail_deg: float = GBM_TAIL_DEG) -> Mixture:
    """Fermi GBM position with its core-plus-tail systematic (Connaughton et al. 2015).

    Connaughton et al. (2015, ApJS 216, 32) model the GBM systematic as a
    core holding 80.4% of bursts and a 13.7 deg tail holding the rest,
    each added in quadrature to the statistical radius, radii being 68%
    ("one-sigma") containment radii of Fisher densities (the Briggs et al.
    1999 convention).  Each component here is therefore the von
    Mises-Fisher density whose 68.27% radius is
    ``hypot(r68_stat, width)``.

    Parameters
    ----------
    ra_deg, dec_deg
        Centre, ICRS degrees.
    stat_radius_deg
        Statistical error radius, degrees, at ``containment``; converted to
        its 68.27% radius first if ``containment`` differs.
    containment
        Probability within ``stat_radius_deg`` (GBM notices: 0.6827).
    core_deg
        Core systematic width, degrees (the alert's ``systematic_deg``:
        3.7 deg for ground positions).
    core_weight
        Fraction of bursts in the core (default 0.804).
    tail_deg
        Tail systematic width, degrees (default 13.7).

    Returns
    -------
    Mixture
        Two concentric components, core first.
    """
    if not (0.0 < core_weight <= 1.0):
        raise ValueError(f"core weight must be in (0, 1], got {core_weight!r}")
    stat = VonMisesFisher.from_radius(ra_deg, dec_deg, stat_radius_deg, containment)
    r68 = stat.credible_radius_deg(GBM_CONTAINMENT) if stat_radius_deg > 0 else 0.0
    comps = [(core_weight, VonMisesFisher.from_radius(
        ra_deg, dec_deg, min(180.0, math.hypot(r68, core_deg)), GBM_CONTAINMENT))]
    if core_weight < 1.0:
        comps.append((1.0 - core_weight, VonMisesFisher.from_radius(
            ra_deg, dec_deg, min(180.0, math.hypot(r68, tail_deg)), GBM_CONTAINMENT)))
    return Mixture(tuple(comps))


# -- ellipses ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Ellipse:
    """An elliptical error region: a 2-D Gaussian on the tangent plane, mapped onto the sphere.

    Tangent-plane coordinates ``xi`` are the azimuthal-equidistant
    (exponential-map) ones about the centre: direction as on the sky, length
    the angular distance.  The plane density is a 2-D Gaussian with standard
    deviations ``sigma_major`` along position angle ``position_angle_deg``
    (east of north) and ``sigma_minor`` across it; on the sphere,
    ``p(x) = N(xi; Sigma) * theta / sin(theta) / M`` sr^-1, where
    ``theta / sin(theta)`` is the map's area factor and ``M`` the plane
    probability within ``theta < pi`` (1 to double precision for sigmas
    below ~20 deg), so the density is exactly normalized on the sphere.

    For small ellipses this is the usual Gaussian error ellipse; its
    ``containment`` ellipse is the input one exactly.  A circular one
    (``sigma_major == sigma_minor = s``) agrees with a von Mises-Fisher
    density of ``kappa = 1 / s^2`` to O(s^2).  Beyond a few tens of degrees
    it is a convention, not a physical model: the density then has an
    integrable singularity at the antipode (the whole circle ``|xi| = pi``
    maps there), and overlaps involving it are good to ~1e-4 only.

    Parameters
    ----------
    ra_deg, dec_deg
        Centre, ICRS degrees.
    sigma_major_deg, sigma_minor_deg
        Standard deviations along and across the major axis, degrees,
        ``sigma_major >= sigma_minor > 0``.
    position_angle_deg
        Position angle of the major axis, degrees east of north.
    """

    ra_deg: float
    dec_deg: float
    sigma_major_deg: float
    sigma_minor_deg: float
    position_angle_deg: float

    def __post_init__(self) -> None:
        ra, dec = _check_position(self.ra_deg, self.dec_deg)
        a, b = float(self.sigma_major_deg), float(self.sigma_minor_deg)
        pa = float(self.position_angle_deg)
        if not (math.isfinite(a) and math.isfinite(b) and math.isfinite(pa)) or not 0 < b <= a:
            raise ValueError(f"ellipse sigmas must satisfy major >= minor > 0 (degrees), got "
                             f"{self.sigma_major_deg!r}, {self.sigma_minor_deg!r}")
        object.__setattr__(self, "ra_deg", ra)
        object.__setattr__(self, "dec_deg", dec)
        object.__setattr__(self, "sigma_major_deg", a)
        object.__setattr__(self, "sigma_minor_deg", b)
        object.__setattr__(self, "position_angle_deg", pa % 180.0)

    @classmethod
    def from_axes(cls, ra_deg: float, dec_deg: float, semi_major_deg: float,
                  semi_minor_deg: float, position_angle_deg: float,
                  containment: float) -> Ellipse:
        """The Gaussian whose ``containment`` ellipse has the given semi-axes.

        A 2-D Gaussian holds probability ``c`` within Mahalanobis radius
        ``sqrt(-2 ln(1 - c))``, so each sigma is the semi-axis divided by
        that.  Axes given in the wrong order are swapped (the position angle
        turned by 90 deg); a zero minor axis is widened to 1/1000 of the
        major so that the density stays a density.

        Parameters
        ----------
        ra_deg, dec_deg
            Centre, ICRS degrees.
        semi_major_deg, semi_minor_deg
            Semi-axes of the ``containment`` ellipse, degrees (> 0 major).
        position_angle_deg
            Position angle of ``semi_major_deg``, degrees east of north.
        containment
            Probability within the ellipse, in (0, 1).
        """
        if not 0.0 < containment < 1.0:
            raise ValueError(f"containment must be in (0, 1), got {containment!r}")
        a, b, pa = float(semi_major_deg), float(semi_minor_deg), float(position_angle_deg)
        if b > a:
            a, b, pa = b, a, pa + 90.0
        if not a > 0:
            raise ValueError("an ellipse needs a positive semi-major axis; use a point")
        b = max(b, a * 1e-3)
        m = math.sqrt(-2.0 * math.log1p(-containment))
        return cls(ra_deg, dec_deg, a / m, b / m, pa)

    @cached_property
    def frame(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Centre, east and north unit vectors of the tangent plane."""
        return _frame(self.ra_deg, self.dec_deg)

    @property
    def vec(self) -> np.ndarray:
        """Unit vector of the centre."""
        return self.frame[0]

    @cached_property
    def covariance(self) -> np.ndarray:
        """2x2 covariance in (east, north) tangent coordinates, rad^2."""
        pa = math.radians(self.position_angle_deg)
        major = np.array([math.sin(pa), math.cos(pa)])
        minor = np.array([math.cos(pa), -math.sin(pa)])
        sa, sb = math.radians(self.sigma_major_deg), math.radians(self.sigma_minor_deg)
        return sa**2 * np.outer(major, major) + sb**2 * np.outer(minor, minor)

    @cached_property
    def _log_norm(self) -> float:
        sa, sb = math.radians(self.sigma_major_deg), math.radians(self.sigma_minor_deg)
        # Plane probability within radius pi, by the angle integral of the radial one:
        # M = 1/(2 pi sa sb) * integral (1 - exp(-pi^2 q / 2)) / q dphi,
        # q = cos^2/sa^2 + sin^2/sb^2; the trapezoid rule is spectrally exact for it.
        phi = np.linspace(0.0, 2.0 * math.pi, 512, endpoint=False)
        q = np.cos(phi) ** 2 / sa**2 + np.sin(phi) ** 2 / sb**2
        mass = float(np.mean(-np.expm1(-0.5 * math.pi**2 * q) / q)) / (sa * sb)
        return -math.log(2.0 * math.pi * sa * sb) - math.log(min(1.0, mass))

    def mahalanobis2(self, vecs: np.ndarray) -> np.ndarray:
        """Squared Mahalanobis distance of unit vectors in the tangent plane (dimensionless)."""
        xe, xn, _, _ = _log_map(np.asarray(vecs, dtype=np.float64), *self.frame)
        inv = np.linalg.inv(self.covariance)
        d2: np.ndarray = inv[0, 0] * xe * xe + 2.0 * inv[0, 1] * xe * xn + inv[1, 1] * xn * xn
        return d2

    def log_density(self, vecs: np.ndarray) -> np.ndarray:
        """Natural log of the density (sr^-1) at unit vectors ``vecs`` (shape ``(..., 3)``)."""
        vecs = np.asarray(vecs, dtype=np.float64)
        xe, xn, theta, sin_t = _log_map(vecs, *self.frame)
        inv = np.linalg.inv(self.covariance)
        q = inv[0, 0] * xe * xe + 2.0 * inv[0, 1] * xe * xn + inv[1, 1] * xn * xn
        # Area factor theta / sin(theta) of the exponential map (1 at the centre); the
        # antipode itself (sin 0, theta pi) is outside the support.
        with np.errstate(divide="ignore"):
            jac = np.where(sin_t > 0, np.log(theta / np.where(sin_t > 0, sin_t, 1.0)), 0.0)
            out = self._log_norm - 0.5 * q + jac
        return np.where((sin_t > 0) | (theta < 1.0), out, -math.inf)

    def density(self, ra_deg: float | np.ndarray, dec_deg: float | np.ndarray
                ) -> float | np.ndarray:
        """Probability density at positions (ICRS degrees), sr^-1."""
        value = np.exp(self.log_density(unit_vector(ra_deg, dec_deg)))
        return float(value) if np.ndim(value) == 0 else value

    def credible_semi_major_deg(self, level: float) -> float:
        """Semi-major axis of the ellipse holding ``level`` of the plane Gaussian, degrees."""
        _check_level(level)
        if level >= 1.0:
            return 180.0
        return min(180.0, self.sigma_major_deg * math.sqrt(-2.0 * math.log1p(-level)))

    def credible_radius_deg(self, level: float) -> float:
        """Radius of the circle about the centre that bounds the ``level`` ellipse, degrees.

        The semi-major axis: a circle holding (at least) the credible region,
        as :meth:`VonMisesFisher.credible_radius_deg` gives one exactly.
        """
        return self.credible_semi_major_deg(level)


# -- sky maps ------------------------------------------------------------------------------


class SkyMap:
    """A HEALPix probability sky map, prepared for overlaps and credible-region lookups.

    Wraps a :class:`~crossmatch.skymap.MultiOrderMap` (NUNIQ pixels of mixed
    order; a flat map is the special case of one order).  Each pixel is the
    contiguous range ``[ipix << 2(29 - order), (ipix + 1) << 2(29 - order))``
    of order-29 NESTED indices; the rows are kept sorted by that range, so a
    position is found by one binary search and two maps meet by a merge of
    their sorted ranges, whatever their orders.

    Parameters
    ----------
    moc
        The map.  Its densities are normalized here: ``density`` integrates
        to 1 over the listed pixels.

    Attributes
    ----------
    moc : MultiOrderMap
        The wrapped map (rows in their original order).
    order, ipix : numpy.ndarray
        HEALPix order and NESTED index of each row, sorted by range start.
    start, stop : numpy.ndarray
        Order-29 NESTED range of each row (int64, half-open), sorted.
    density : numpy.ndarray
        Normalized probability density of each row, sr^-1.
    area_sr : numpy.ndarray
        Solid angle of each row, sr.
    """

    def __init__(self, moc: MultiOrderMap) -> None:
        self.moc = moc
        shift = 2 * (MAX_ORDER - moc.order)
        start = moc.ipix << shift
        rank = np.argsort(start, kind="stable")
        self.order = moc.order[rank]
        self.ipix = moc.ipix[rank]
        self.start = start[rank]
        self.stop = (self.ipix + 1) << (2 * (MAX_ORDER - self.order))
        self.area_sr = moc.pixel_area_sr[rank]
        self.density = moc.probdensity[rank] / moc.total_probability
        for arr in (self.order, self.ipix, self.start, self.stop, self.area_sr, self.density):
            arr.setflags(write=False)
        self._regions: dict[float, tuple[np.ndarray, np.ndarray]] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return (f"SkyMap({self.n_pixels} pixels, orders {int(self.order.min())}.."
                f"{int(self.order.max())}, {self.moc.meta.get('OBJECT', '?')})")

    # -- constructors ----------------------------------------------------------------------

    @classmethod
    def from_fits(cls, data: bytes, *, negative_tolerance: float = NEGATIVE_TOLERANCE
                  ) -> SkyMap:
        """Read a sky map FITS file (multi-order or flat, optionally gzipped) from bytes.

        Parameters
        ----------
        data
            The file's bytes.
        negative_tolerance
            Negative pixels holding at most this fraction of the map's
            positive probability are clipped to 0 (noted in ``moc.notes``);
            more raise :class:`~alerts_schema.errors.MalformedInput`.

        See Also
        --------
        crossmatch.skymap.read_multiorder
        """
        return cls(read_multiorder(data, negative_tolerance=negative_tolerance))

    @classmethod
    def from_uniq(cls, uniq: np.ndarray, probdensity: np.ndarray, *,
                  negative_tolerance: float = NEGATIVE_TOLERANCE) -> SkyMap:
        """A map from NUNIQ indices and densities (sr^-1, any normalization).

        Parameters
        ----------
        uniq
            NUNIQ indices of non-overlapping pixels.
        probdensity
            Density of each pixel, sr^-1; rescaled to integrate to 1.
        negative_tolerance
            As for :meth:`from_fits`.
        """
        dens, notes = repair_negative_density(uniq, probdensity, negative_tolerance)
        return cls(MultiOrderMap(uniq, dens, notes=tuple(notes)))

    @classmethod
    def from_flat(cls, values: np.ndarray, *, nest: bool, per_pixel: bool = True,
                  negative_tolerance: float = NEGATIVE_TOLERANCE) -> SkyMap:
        """A map from a flat HEALPix array of any nside.

        Parameters
        ----------
        values
            ``12 * nside**2`` values, nside a power of 2.
        nest
            True for NESTED pixel order, False for RING.
        per_pixel
            True when ``values`` are probabilities per pixel (healpy's and
            ligo.skymap's flat ``PROB``), False when densities (sr^-1).
            Either way the result is rescaled to integrate to 1.
        negative_tolerance
            As for :meth:`from_fits`; healpy's ``UNSEEN`` marker counts as 0.
        """
        import healpy

        vals = np.asarray(values, dtype=np.float64).ravel()
        npix = vals.size
        nside = round(math.sqrt(npix / 12)) if npix else 0
        if nside < 1 or nside & (nside - 1) or 12 * nside * nside != npix:
            raise MalformedInput(f"flat sky map has {npix} pixels, not 12 * nside**2 for a "
                                 "power-of-2 nside")
        order = nside.bit_length() - 1
        ipix = np.arange(npix, dtype=np.int64)
        if not nest:
            ipix = np.asarray(healpy.ring2nest(nside, ipix), dtype=np.int64)
        uniq = ipix + 4 * (1 << (2 * order))
        notes: list[str] = [f"flat {'NESTED' if nest else 'RING'} map, nside {nside}"]
        if negative_tolerance > 0:
            # Repair before scaling, while UNSEEN still reads as UNSEEN.
            vals, repaired = repair_negative_density(uniq, vals, negative_tolerance)
            notes += repaired
        if per_pixel:
            vals = vals / healpy.nside2pixarea(nside)
        return cls(MultiOrderMap(uniq, vals, notes=tuple(notes)))

    # -- figures ---------------------------------------------------------------------------

    @property
    def n_pixels(self) -> int:
        """Number of pixels (rows)."""
        return int(self.start.size)

    @cached_property
    def centres(self) -> np.ndarray:
        """Unit vector of each row's pixel centre, shape ``(n_pixels, 3)``."""
        import healpy

        out = np.empty((self.n_pixels, 3))
        for order in np.unique(self.order):
            sel = self.order == order
            out[sel] = np.array(healpy.pix2vec(1 << int(order), self.ipix[sel], nest=True)).T
        out.setflags(write=False)
        return out

    @cached_property
    def credible_levels(self) -> np.ndarray:
        """Probability strictly denser than each row: its credible level (rows sorted by start).

        A position lies in the ``L`` credible region - the highest-density
        region ``{p >= t}`` holding at least ``L`` - exactly when the
        probability of density strictly greater than its own is below ``L``.
        Ties (uniform regions) therefore share one level, and a position
        where the density is 0 has level 1.
        """
        dens = self.density
        rank = np.argsort(-dens, kind="stable")
        prob = (dens * self.area_sr)[rank]
        before = np.concatenate(([0.0], np.cumsum(prob)[:-1]))
        # Each tie group takes the level of its first (densest-ranked) member.
        d_sorted = dens[rank]
        first = np.concatenate(([True], d_sorted[1:] != d_sorted[:-1]))
        group_level = before[first][np.cumsum(first) - 1]
        levels: np.ndarray = np.empty_like(group_level)
        levels[rank] = np.where(d_sorted > 0, np.minimum(group_level, 1.0), 1.0)
        levels.setflags(write=False)
        return levels

    def region(self, level: float) -> tuple[np.ndarray, np.ndarray]:
        """Order-29 NESTED ranges ``(start, stop)`` of the ``level`` credible region, merged.

        Parameters
        ----------
        level
            Credible level, probability in (0, 1].

        Returns
        -------
        start, stop
            Sorted, disjoint, half-open int64 ranges; touching pixels merged.
        """
        _check_level(level)
        with self._lock:
            cached = self._regions.get(level)
        if cached is not None:
            return cached
        inside = (self.credible_levels < level) & (self.density > 0)
        s, e = self.start[inside], self.stop[inside]
        if s.size:
            breaks = np.nonzero(s[1:] != e[:-1])[0]
            s = np.concatenate((s[:1], s[breaks + 1]))
            e = np.concatenate((e[breaks], e[-1:]))
        s.setflags(write=False)
        e.setflags(write=False)
        with self._lock:
            if len(self._regions) > 8:
                self._regions.clear()
            self._regions[level] = (s, e)
        return s, e

    def rows_at_nested29(self, pix29: int | np.ndarray) -> np.ndarray:
        """Row index holding each order-29 NESTED index, -1 where no pixel is listed."""
        pix = np.asarray(pix29, dtype=np.int64)
        j = np.searchsorted(self.start, pix, side="right") - 1
        jc = np.clip(j, 0, None)
        return np.where((j >= 0) & (pix < self.stop[jc]), jc, -1)

    def rows_at(self, ra_deg: float | np.ndarray, dec_deg: float | np.ndarray) -> np.ndarray:
        """Row index holding each position (ICRS degrees), -1 where no pixel is listed."""
        import healpy

        pix = healpy.ang2pix(1 << MAX_ORDER, ra_deg, dec_deg, nest=True, lonlat=True)
        return self.rows_at_nested29(pix)

    def density_at(self, ra_deg: float | np.ndarray, dec_deg: float | np.ndarray
                   ) -> float | np.ndarray:
        """Normalized probability density at positions (ICRS degrees), sr^-1; 0 off the map."""
        row = self.rows_at(ra_deg, dec_deg)
        value = np.where(row >= 0, self.density[np.clip(row, 0, None)], 0.0)
        return float(value) if np.ndim(value) == 0 else value

    def credible_level_at(self, ra_deg: float | np.ndarray, dec_deg: float | np.ndarray
                          ) -> float | np.ndarray:
        """Credible level of positions (see :attr:`credible_levels`); 1 off the map."""
        row = self.rows_at(ra_deg, dec_deg)
        value = np.where(row >= 0, self.credible_levels[np.clip(row, 0, None)], 1.0)
        return float(value) if np.ndim(value) == 0 else value

    def credible_level_at_nested29(self, pix29: int | np.ndarray) -> float | np.ndarray:
        """Credible level at order-29 NESTED indices (as the live index stores positions)."""
        row = self.rows_at_nested29(pix29)
        value = np.where(row >= 0, self.credible_levels[np.clip(row, 0, None)], 1.0)
        return float(value) if np.ndim(value) == 0 else value


Localization: TypeAlias = VonMisesFisher | Mixture | Ellipse | SkyMap
"""Any sky localization :func:`crossmatch.overlap.overlap` accepts."""


# -- from alerts ---------------------------------------------------------------------------

_CACHE_SIZE = 16
_skymap_cache: OrderedDict[str, SkyMap] = OrderedDict()
_cache_lock = threading.Lock()


def from_alert(alert: Alert, skymap_bytes: Mapping[str, bytes]) -> Localization | None:
    """The localization an alert states, as a density on the sphere.

    ============================  =================================================
    alert localization            result
    ============================  =================================================
    ``none``                      ``None``
    ``point``, radius 0           :meth:`VonMisesFisher.point`
    ``point``, Fermi GBM with     :func:`gbm_mixture` (core = ``systematic_deg``,
    ``systematic_deg``            weight and tail by :func:`gbm_model`)
    ``point``, other              :meth:`VonMisesFisher.from_radius` of the radius
                                  (``hypot(radius, systematic_deg)`` when a
                                  systematic is stated) at its ``containment``
    ``ellipse``                   :meth:`Ellipse.from_axes`; a circle (equal
                                  axes) becomes a von Mises-Fisher density
    ``skymap``                    :meth:`SkyMap.from_fits` of
                                  ``skymap_bytes[skymap_sha256]``; ``None`` when
                                  those bytes are not given
    ============================  =================================================

    Parameters
    ----------
    alert
        A normalized alert (:class:`alerts_schema.model.Alert`).
    skymap_bytes
        Sky map files by the lower-case hex SHA-256 of their bytes.

    Returns
    -------
    Localization or None

    Raises
    ------
    MalformedInput
        The bytes under a hash do not have that hash, or are not a sky map.
    """
    loc = alert.localization
    if loc.kind == "none":
        return None
    if loc.kind == "point":
        radius = float(loc.error_radius_deg)
        sys_deg = loc.systematic_deg
        if sys_deg and (alert.instrument or "").strip().upper() == "GBM":
            weight, tail = gbm_model(sys_deg)
            return gbm_mixture(loc.ra_deg, loc.dec_deg, radius, loc.containment, sys_deg,
                               core_weight=weight, tail_deg=tail)
        if sys_deg:
            radius = min(180.0, math.hypot(radius, sys_deg))
        return VonMisesFisher.from_radius(loc.ra_deg, loc.dec_deg, radius, loc.containment)
    if loc.kind == "ellipse":
        a, b = float(loc.semi_major_deg), float(loc.semi_minor_deg)
        if a == b or max(a, b) == 0:
            return VonMisesFisher.from_radius(loc.ra_deg, loc.dec_deg, a, loc.containment)
        return Ellipse.from_axes(loc.ra_deg, loc.dec_deg, a, b, loc.position_angle_deg,
                                 loc.containment)
    if loc.kind == "skymap":
        return skymap_by_hash(loc.skymap_sha256, skymap_bytes.get)
    raise ValueError(f"unknown localization kind {loc.kind!r}")


def skymap_by_hash(sha256: str, load: Callable[[str], bytes | None]) -> SkyMap | None:
    """The sky map with content hash ``sha256``, from a small in-process cache or ``load``.

    ``load(sha256)`` gives the file's bytes or None (then None is returned);
    bytes that do not hash to ``sha256`` raise
    :class:`~alerts_schema.errors.MalformedInput`.  Reading a large map takes tens
    of ms, so the cross-match engine and the query API share the cache.
    """
    with _cache_lock:
        cached = _skymap_cache.get(sha256)
        if cached is not None:
            _skymap_cache.move_to_end(sha256)
            return cached
    data = load(sha256)
    if data is None:
        return None
    digest = hashlib.sha256(data).hexdigest()
    if digest != sha256:
        raise MalformedInput(f"sky map bytes have SHA-256 {digest}, not the {sha256} the "
                             "alert cites")
    sky = SkyMap.from_fits(bytes(data))
    with _cache_lock:
        _skymap_cache[sha256] = sky
        while len(_skymap_cache) > _CACHE_SIZE:
            _skymap_cache.popitem(last=False)
    return sky


# -- small helpers -------------------------------------------------------------------------


def _check_level(level: float) -> None:
    if not 0.0 < level <= 1.0:
        raise ValueError(f"credible level must be in (0, 1], got {level!r}")


def _logsumexp(values: np.ndarray, axis: int | None = None) -> np.ndarray:
    """log(sum(exp(values))) without overflow; -inf for an all -inf slice."""
    values = np.asarray(values, dtype=np.float64)
    top = np.max(values, axis=axis, keepdims=True)
    top = np.where(np.isfinite(top), top, 0.0)
    with np.errstate(divide="ignore"):
        out: np.ndarray = np.log(np.sum(np.exp(values - top), axis=axis, keepdims=True)) + top
    return np.squeeze(out, axis=axis) if axis is not None else out.reshape(())
