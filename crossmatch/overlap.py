"""Spatial overlap of two sky localizations, and credible-region lookups.

The overlap integral of two localizations with densities ``p1`` and ``p2``
(sr^-1, each integrating to 1 over the sphere) is

    I = 4 pi * integral p1(x) p2(x) dOmega,

the ratio of the chance both are at the same place to that for two
independent uniform positions: two all-sky maps give 1, two maps uniform on
the same half of the sky 2, on opposite halves 0.  It is the sky term of the
RAVEN space-time coincidence FAR (Urban 2016; Ashkar et al. 2021), where the
spatio-temporal FAR is the temporal one divided by ``I``.

How each pair is computed (``Overlap.method`` says which):

=======================  ==============================================================
pair                     computation
=======================  ==============================================================
vMF x vMF                closed form, in log space:
                         ``I = k1 k2 sinh K / (sinh k1 sinh k2 K)``,
                         ``K = |k1 mu1 + k2 mu2|``
point x anything         ``4 pi p(point)``; on a map the density of the pixel holding it
mixture x anything       linear in each component (log-sum-exp)
ellipse x vMF/ellipse    tangent-plane Gauss-Hermite quadrature (24 x 24 nodes) about
                         the product of the two Gaussian approximations; a product
                         wider than 17 deg (sigma) is summed over the whole sphere
                         at pixels <= sigma / 8 instead
vMF/ellipse x map        ``4 pi p_pixel`` when the density's support (the disc holding
                         all but 1e-12 of it) lies inside one map pixel; otherwise the
                         midpoint rule over the support on the finer of two grids: map
                         pixels at their own order where they are finer than sigma / 8
                         (sigma: the small-angle width, the minor one for an ellipse),
                         else the support's pixels of that size; normalized by the
                         rule's own total.  Accurate to a few 1e-4 (against a 30x finer
                         grid); a few 1e-3 when the integral comes from the density's
                         far tail
map x map                exact for piecewise-constant maps, at each map's own orders:
                         every pixel is a range of order-29 NESTED indices and two
                         HEALPix pixels are either nested or disjoint, so a binary
                         search of each map's sorted ranges in the other's finds every
                         overlapping pair; ``I = 4 pi sum p1 p2 (area of the smaller)``
=======================  ==============================================================

Before any of it, the credible-region gate (default 90%): when the two
``credible_level`` regions do not intersect, ``I`` is not computed and is
reported as 0 with ``gated=True``.  The test is exact for points, circles
and maps (a map's disc test is done on inclusive HEALPix discs, so it errs
towards not gating); ellipses enter it by their bounding circle, and
non-concentric mixtures are never gated.

Function-local imports: healpy (about 0.7 s to import, matplotlib with it) is
imported by the functions that use it, deferred so that a process that never
matches a sky map starts without it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from crossmatch.healpix import angular_separation_deg
from crossmatch.localization import (
    _FOUR_PI,
    _LOG_FOUR_PI,
    _MAX_QUERY_ORDER,
    _SIDE0_RAD,
    TAIL_PROBABILITY,
    Ellipse,
    Localization,
    Mixture,
    SkyMap,
    VonMisesFisher,
    _check_level,
    _exp_map,
    _frame,
    _log_map,
    _logsumexp,
    unit_vector,
)
from crossmatch.skymap import MAX_ORDER

__all__ = ["Overlap", "contains", "credible_level_at", "overlap"]

_LN10 = math.log(10.0)
_METHOD_CHARS = 128
# Support pixels per small-angle sigma of a smooth density summed against a map.
_RASTER_PER_SIGMA = 8.0
# Most pixels a raster may have; a very elongated ellipse is rasterized coarser instead.
_RASTER_BUDGET = 1 << 20
# Gauss-Hermite nodes per axis for smooth pairs.
_GH_NODES = 24
_GH_T, _GH_W = np.polynomial.hermite.hermgauss(_GH_NODES)
# Largest variance (rad^2) a wide density's Gaussian approximation is given when it only
# steers quadrature nodes: beyond ~1 rad the plane no longer resembles the sphere.
_MAX_GUIDE_VARIANCE = 1.0
# Largest variance (rad^2, a 17 deg sigma) of the product of two smooth densities that
# tangent-plane quadrature handles; wider products are summed over the whole sphere.
_MAX_PLANE_VARIANCE = 0.3**2


@dataclass(frozen=True)
class Overlap:
    """The overlap integral of two localizations.

    Attributes
    ----------
    integral : float
        ``I = 4 pi * integral p1 p2 dOmega``, dimensionless, >= 0 (1 for
        two all-sky maps).  ``inf`` only for two identical exact positions.
    log10_integral : float or None
        ``log10(I)``, computed in log space where the method allows (it
        stays finite when ``integral`` underflows to 0); None when ``I`` is
        0 exactly (disjoint supports, or gated).
    method : str
        How it was computed, for people; at most 128 characters (the
        contract's limit).
    gated : bool
        True when the two credible regions do not intersect: the integral
        was not computed and is reported as 0.
    credible_level : float or None
        The gate's credible level, None when no gate was applied.
    """

    integral: float
    log10_integral: float | None
    method: str
    gated: bool = False
    credible_level: float | None = None


def overlap(a: Localization, b: Localization, *, credible_level: float | None = 0.9
            ) -> Overlap:
    """Overlap integral ``I = 4 pi * integral p_a p_b dOmega`` of two localizations.

    Parameters
    ----------
    a, b
        Localizations (:class:`~crossmatch.localization.VonMisesFisher`,
        :class:`~crossmatch.localization.Mixture`,
        :class:`~crossmatch.localization.Ellipse`,
        :class:`~crossmatch.localization.SkyMap`).
    credible_level
        Credible level of the gate, probability in (0, 1]; ``None`` or 1
        computes the integral whatever the regions.

    Returns
    -------
    Overlap
        Symmetric in ``a`` and ``b``.
    """
    level = None
    if credible_level is not None:
        _check_level(credible_level)
        level = float(credible_level) if credible_level < 1.0 else None
    if level is not None and _disjoint(a, b, level):
        return Overlap(0.0, None, f"gated: the {level:g} credible regions do not intersect",
                       True, level)
    log_i, method = _log_overlap(a, b)
    if len(method) > _METHOD_CHARS:
        method = method[:_METHOD_CHARS - 3] + "..."
    if log_i == -math.inf:
        return Overlap(0.0, None, method, False, level)
    try:
        integral = math.exp(log_i)
    except OverflowError:
        integral = math.inf
    return Overlap(integral, log_i / _LN10, method, False, level)


# -- credible regions ---------------------------------------------------------------------


def credible_level_at(loc: Localization, ra_deg: float | np.ndarray,
                      dec_deg: float | np.ndarray) -> float | np.ndarray:
    """Smallest credible level whose region holds each position (probability, 0..1).

    The ``L`` credible region is the highest-density region holding ``L``;
    a position is inside it when this level is below ``L``.

    ============  ==============================================================
    localization  level
    ============  ==============================================================
    vMF/mixture   probability within the position's distance of the centre
                  (mixtures: concentric only); an exact position has 0 there,
                  1 elsewhere
    ellipse       ``1 - exp(-m^2 / 2)``, ``m`` the tangent-plane Mahalanobis
                  distance: the input ellipse is the ``containment`` region
    sky map       probability of the pixels strictly denser than the position's
                  (ties share a level; 1 where the density is 0 or off the map)
    ============  ==============================================================

    Parameters
    ----------
    loc
        The localization.
    ra_deg, dec_deg
        Positions, ICRS degrees (scalars or arrays).

    Returns
    -------
    float or numpy.ndarray
    """
    if isinstance(loc, SkyMap):
        return loc.credible_level_at(ra_deg, dec_deg)
    if isinstance(loc, Ellipse):
        value = -np.expm1(-0.5 * loc.mahalanobis2(unit_vector(ra_deg, dec_deg)))
    elif isinstance(loc, VonMisesFisher | Mixture):
        sep = angular_separation_deg(loc.ra_deg, loc.dec_deg, ra_deg, dec_deg)
        value = np.asarray(loc.cdf(sep))
    else:
        raise TypeError(f"not a localization: {type(loc).__name__}")
    return float(value) if np.ndim(value) == 0 else value


def contains(loc: Localization, ra_deg: float | np.ndarray, dec_deg: float | np.ndarray,
             level: float = 0.9) -> bool | np.ndarray:
    """Whether positions lie in the ``level`` credible region of ``loc``.

    True where :func:`credible_level_at` is below ``level``.

    Parameters
    ----------
    loc
        The localization.
    ra_deg, dec_deg
        Positions, ICRS degrees (scalars or arrays).
    level
        Credible level, probability in (0, 1].

    Returns
    -------
    bool or numpy.ndarray of bool
    """
    _check_level(level)
    inside = np.asarray(credible_level_at(loc, ra_deg, dec_deg)) < level
    return bool(inside) if inside.ndim == 0 else inside


def _region(loc: Localization, level: float) -> tuple[str, object, float] | None:
    """What the gate knows of a localization's ``level`` region: (kind, object, radius rad)."""
    if isinstance(loc, VonMisesFisher):
        if loc.is_point:
            return ("point", loc, 0.0)
        return ("cap", loc, math.radians(loc.credible_radius_deg(level)))
    if isinstance(loc, Mixture):
        if not loc.concentric:
            return None
        return ("cap", loc, math.radians(loc.credible_radius_deg(level)))
    if isinstance(loc, Ellipse):
        return ("ellipse", loc, math.radians(loc.credible_semi_major_deg(level)))
    if isinstance(loc, SkyMap):
        return ("map", loc, math.pi)
    raise TypeError(f"not a localization: {type(loc).__name__}")


_GATE_RANK = {"point": 0, "cap": 1, "ellipse": 2, "map": 3}


def _disjoint(a: Localization, b: Localization, level: float) -> bool:
    """True when the ``level`` credible regions of a and b certainly do not intersect."""
    ra_, rb_ = _region(a, level), _region(b, level)
    if ra_ is None or rb_ is None:
        return False
    if _GATE_RANK[ra_[0]] > _GATE_RANK[rb_[0]]:
        ra_, rb_ = rb_, ra_
    (ka, la, rad_a), (kb, lb, rad_b) = ra_, rb_
    if kb == "map":
        assert isinstance(lb, SkyMap)
        if ka == "map":
            assert isinstance(la, SkyMap)
            return not _ranges_intersect(*la.region(level), *lb.region(level))
        if ka == "point":
            assert isinstance(la, VonMisesFisher)
            return not contains(lb, la.ra_deg, la.dec_deg, level)
        centre = _centre_vec(la)
        return not _ranges_intersect(*_disc_ranges(centre, rad_a), *lb.region(level))
    if ka == "point" and kb == "ellipse":
        assert isinstance(la, VonMisesFisher)
        return not contains(lb, la.ra_deg, la.dec_deg, level)  # type: ignore[arg-type]
    sep = _separation_rad(_centre_vec(la), _centre_vec(lb))
    if ka == kb == "point":
        return sep > 0.0
    return sep > rad_a + rad_b


def _centre_vec(loc: object) -> np.ndarray:
    if isinstance(loc, VonMisesFisher | Ellipse):
        return loc.vec
    if isinstance(loc, Mixture):
        return loc.components[0][1].vec
    raise TypeError(f"no centre for {type(loc).__name__}")


def _separation_rad(u: np.ndarray, v: np.ndarray) -> float:
    """Angle between unit vectors, radians, accurate at all separations."""
    return math.atan2(float(np.linalg.norm(np.cross(u, v))), float(np.dot(u, v)))


def _disc_ranges(vec: np.ndarray, radius_rad: float) -> tuple[np.ndarray, np.ndarray]:
    """Order-29 ranges of an inclusive HEALPix cover of a disc (covers all of it)."""
    import healpy

    if radius_rad >= math.pi:
        return np.array([0], dtype=np.int64), np.array([12 << (2 * MAX_ORDER)], dtype=np.int64)
    # Pixels about half the radius across: a few dozen of them cover the disc.
    order = int(np.clip(math.floor(math.log2(_SIDE0_RAD / max(radius_rad / 2, 1e-300))),
                        0, _MAX_QUERY_ORDER))
    pix = np.sort(healpy.query_disc(1 << order, vec, radius_rad, inclusive=True, nest=True))
    shift = 2 * (MAX_ORDER - order)
    return pix.astype(np.int64) << shift, (pix.astype(np.int64) + 1) << shift


def _ranges_intersect(a_start: np.ndarray, a_stop: np.ndarray, b_start: np.ndarray,
                      b_stop: np.ndarray) -> bool:
    """Whether two lists of sorted, disjoint, half-open ranges share any index."""
    if a_start.size == 0 or b_start.size == 0:
        return False
    # For each b range, the last a range starting before it ends; since a's stops increase,
    # it is the only candidate that can reach into b.
    j = np.searchsorted(a_start, b_stop, side="left") - 1
    jc = np.clip(j, 0, None)
    return bool(np.any((j >= 0) & (a_stop[jc] > b_start)))


# -- the integrals -------------------------------------------------------------------------


_RANK = {"point": 0, "vmf": 1, "ellipse": 2, "map": 3}


def _kind(loc: Localization) -> str:
    if isinstance(loc, VonMisesFisher):
        return "point" if loc.is_point else "vmf"
    if isinstance(loc, Ellipse):
        return "ellipse"
    if isinstance(loc, SkyMap):
        return "map"
    raise TypeError(f"not a localization: {type(loc).__name__}")


def _log_overlap(a: Localization, b: Localization) -> tuple[float, str]:
    """Natural log of I (may be +-inf) and the method used."""
    if isinstance(a, Mixture) or isinstance(b, Mixture):
        return _log_overlap_mixture(a, b)
    ka, kb = _kind(a), _kind(b)
    if _RANK[ka] > _RANK[kb] or (ka == kb and _tie_key(a) > _tie_key(b)):
        a, b, ka, kb = b, a, kb, ka  # one canonical order: exactly symmetric results
    if ka == "point":
        assert isinstance(a, VonMisesFisher)
        if kb == "point":
            same = _separation_rad(a.vec, b.vec) == 0.0  # type: ignore[union-attr]
            return (math.inf if same else -math.inf), "point x point (a delta function each)"
        if kb == "map":
            assert isinstance(b, SkyMap)
            dens = float(b.density_at(a.ra_deg, a.dec_deg))
            return _log(_FOUR_PI * dens), "point x map: density of the pixel holding it"
        log_p = float(b.log_density(a.vec))  # type: ignore[union-attr]
        return _LOG_FOUR_PI + log_p, f"point x {kb}: 4 pi times its density there"
    if ka == kb == "vmf":
        assert isinstance(a, VonMisesFisher) and isinstance(b, VonMisesFisher)
        return _log_vmf_vmf(a, b), "vmf x vmf closed form"
    if ka == kb == "map":
        assert isinstance(a, SkyMap) and isinstance(b, SkyMap)
        return _log_map_map(a, b)
    if kb == "map":
        assert isinstance(b, SkyMap) and isinstance(a, VonMisesFisher | Ellipse)
        return _log_smooth_map(a, b)
    assert isinstance(a, VonMisesFisher | Ellipse) and isinstance(b, VonMisesFisher | Ellipse)
    return _log_gauss_hermite(a, b)


def _tie_key(loc: Localization) -> tuple[float, ...]:
    """Orders two localizations of one kind, so that I(a, b) and I(b, a) add up alike."""
    if isinstance(loc, VonMisesFisher):
        return (loc.kappa, loc.ra_deg, loc.dec_deg)
    if isinstance(loc, Ellipse):
        return (loc.sigma_major_deg, loc.sigma_minor_deg, loc.ra_deg, loc.dec_deg,
                loc.position_angle_deg)
    if isinstance(loc, SkyMap):
        return (float(loc.n_pixels), float(loc.start[0]), float(loc.density[0]))
    return ()


def _log(x: float) -> float:
    return math.log(x) if x > 0 else -math.inf


def _log_overlap_mixture(a: Localization, b: Localization) -> tuple[float, str]:
    if not isinstance(a, Mixture):
        a, b = b, a
    assert isinstance(a, Mixture)
    logs, methods = [], []
    for w, comp in a.components:
        log_i, method = _log_overlap(comp, b)
        logs.append(math.log(w) + log_i)
        methods.append(method)
    inner = "; ".join(dict.fromkeys(methods))
    return float(_logsumexp(np.array(logs))), f"mixture of {len(a.components)}: {inner}"


def _r(x: float) -> float:
    """log(sinh(x) / x) - x, exact for all x >= 0 (0 at x = 0)."""
    if x == 0:
        return 0.0
    return math.log(-math.expm1(-2.0 * x) / (2.0 * x))


def _log_vmf_vmf(a: VonMisesFisher, b: VonMisesFisher) -> float:
    """log I for two von Mises-Fisher densities of finite kappa.

    ``I = k1 k2 sinh K / (sinh k1 sinh k2 K)``.  Writing
    ``log(sinh x / x) = x + r(x)``, ``log I = (K - k1 - k2) + r(K) - r(k1) - r(k2)``,
    with ``K - k1 - k2 = -4 k1 k2 sin^2(d/2) / (K + k1 + k2)`` and
    ``K^2 = (k1 - k2)^2 + 4 k1 k2 cos^2(d/2)``: no cancellation anywhere, so it
    holds for kappas of 1e-300 or 1e300 and for coincident or antipodal centres.
    """
    k1, k2 = a.kappa, b.kappa
    top = max(k1, k2)
    if top == 0:
        return 0.0
    # sin^2(d/2) and cos^2(d/2) from chords, exact at 0 and 180 deg.
    s2 = float(np.sum((a.vec - b.vec) ** 2)) / 4.0
    c2 = float(np.sum((a.vec + b.vec) ** 2)) / 4.0
    x1, x2 = k1 / top, k2 / top  # scaled to keep k1 * k2 finite
    big_k = top * math.sqrt((x1 - x2) ** 2 + 4.0 * x1 * x2 * c2)
    diff = -4.0 * x1 * x2 * s2 * top / ((big_k / top) + x1 + x2)
    return diff + _r(big_k) - _r(k1) - _r(k2)


# -- smooth x smooth: Gauss-Hermite ------------------------------------------------------------


def _guide(loc: VonMisesFisher | Ellipse) -> tuple[np.ndarray, np.ndarray, np.ndarray,
                                                   np.ndarray]:
    """Centre frame (centre, east, north) and a Gaussian covariance (rad^2) in it."""
    if isinstance(loc, Ellipse):
        centre, east, north = loc.frame
        cov = loc.covariance
    else:
        centre, east, north = _frame(loc.ra_deg, loc.dec_deg)
        var = 1.0 / loc.kappa if loc.kappa > 0 else _MAX_GUIDE_VARIANCE
        cov = np.eye(2) * min(var, _MAX_GUIDE_VARIANCE)
    # Wide densities only steer the nodes; keep their guide on the plane's scale.
    evals, evecs = np.linalg.eigh(cov)
    cov = (evecs * np.minimum(evals, _MAX_GUIDE_VARIANCE)) @ evecs.T
    return centre, east, north, cov


def _log_gauss_hermite(a: VonMisesFisher | Ellipse, b: VonMisesFisher | Ellipse
                       ) -> tuple[float, str]:
    """log I for two smooth densities by quadrature on a tangent plane.

    ``I = 4 pi * integral p_a p_b (sin t / t) dxi`` over the azimuthal-
    equidistant plane (``t = |xi| < pi``), which is exact; the quadrature is
    Gauss-Hermite about the product ``g`` of the two Gaussian approximations
    carried to a common plane, summing ``p_a p_b (sin t / t) / g``.  The
    approximations only place the nodes: where they are good the summand is
    nearly constant and the rule converges at once.
    """
    ca, ea, na, sa = _guide(a)
    cb, eb, nb, sb = _guide(b)
    # The common plane touches the sphere near the product's peak: the
    # precision-weighted mean of the centres.
    wa, wb = 1.0 / math.sqrt(np.linalg.det(sa)), 1.0 / math.sqrt(np.linalg.det(sb))
    mid = wa * ca + wb * cb
    norm = float(np.linalg.norm(mid))
    base = mid / norm if norm > 1e-9 * (wa + wb) else ca
    ra0 = math.degrees(math.atan2(base[1], base[0]))
    dec0 = math.degrees(math.asin(max(-1.0, min(1.0, float(base[2])))))
    frame0 = _frame(ra0, dec0)

    def carried(centre: np.ndarray, east: np.ndarray, north: np.ndarray, cov: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray]:
        # Mean and covariance on the common plane: the centre's coordinates there and
        # the Jacobian of (common log map) o (own exp map) at the centre, by differences.
        eps = 1e-6
        steps = np.array([[eps, 0.0], [-eps, 0.0], [0.0, eps], [0.0, -eps], [0.0, 0.0]])
        pts = _exp_map(steps[:, 0], steps[:, 1], centre, east, north)
        xe, xn, _, _ = _log_map(pts, *frame0)
        jac = np.array([[xe[0] - xe[1], xe[2] - xe[3]], [xn[0] - xn[1], xn[2] - xn[3]]])
        jac /= 2 * eps
        return np.array([xe[4], xn[4]]), jac @ cov @ jac.T

    ma, sa0 = carried(ca, ea, na, sa)
    mb, sb0 = carried(cb, eb, nb, sb)
    ia, ib = np.linalg.inv(sa0), np.linalg.inv(sb0)
    cov = np.linalg.inv(ia + ib)
    cov = 0.5 * (cov + cov.T)
    evals = np.linalg.eigvalsh(cov)
    if evals[-1] > _MAX_PLANE_VARIANCE:
        # The product spreads over a good part of the sky, where the plane no longer
        # resembles it: sum over the whole sphere instead.
        order = raster_order(math.sqrt(evals[0]), math.pi)
        return (_log_sphere_sum(a, b, order),
                f"{_kind(a)} x {_kind(b)}: midpoint rule over the sphere at order {order}")
    mean = cov @ (ia @ ma + ib @ mb)
    chol = np.linalg.cholesky(cov)
    t1, t2 = np.meshgrid(_GH_T, _GH_T, indexing="ij")
    log_w = np.log(np.outer(_GH_W, _GH_W)) - math.log(math.pi)
    xi = mean[:, None, None] + math.sqrt(2.0) * np.einsum("ij,jkl->ikl", chol, np.stack([t1, t2]))
    theta = np.hypot(xi[0], xi[1])
    keep = theta < math.pi
    vecs = _exp_map(xi[0][keep], xi[1][keep], *frame0)
    th = theta[keep]
    log_jac = np.where(th > 0, np.log(np.sin(th) / np.where(th > 0, th, 1.0)), 0.0)
    # g(xi) = exp(-|t|^2) / (2 pi det L) at the nodes.
    log_g = -(t1[keep] ** 2 + t2[keep] ** 2) - math.log(2.0 * math.pi * np.linalg.det(chol))
    terms = log_w[keep] + a.log_density(vecs) + b.log_density(vecs) + log_jac - log_g
    method = f"{_kind(a)} x {_kind(b)}: tangent-plane Gauss-Hermite {_GH_NODES}^2"
    if terms.size == 0:  # cannot happen for a mean on the sphere; stay defined regardless
        return -math.inf, method
    return _LOG_FOUR_PI + float(_logsumexp(terms)), method


def _log_sphere_sum(a: VonMisesFisher | Ellipse, b: VonMisesFisher | Ellipse,
                    order: int) -> float:
    """log I by the midpoint rule over every pixel of the sphere at ``order``."""
    import healpy

    nside = 1 << order
    vecs = np.array(healpy.pix2vec(nside, np.arange(12 * nside * nside), nest=True)).T
    log_area = math.log(healpy.nside2pixarea(nside))
    return _LOG_FOUR_PI + log_area + float(_logsumexp(a.log_density(vecs) + b.log_density(vecs)))


# -- smooth x map -------------------------------------------------------------------------


def _support(loc: VonMisesFisher | Ellipse) -> tuple[float, float]:
    """Disc radius (rad) holding all but TAIL_PROBABILITY, and the narrowest sigma (rad)."""
    if isinstance(loc, VonMisesFisher):
        return loc.support_radius_rad(), loc.sigma_rad
    # 2-D Gaussian: probability exp(-m^2 / 2) beyond Mahalanobis radius m.
    m = math.sqrt(-2.0 * math.log(TAIL_PROBABILITY))
    return (min(math.pi, m * math.radians(loc.sigma_major_deg)),
            math.radians(loc.sigma_minor_deg))


def raster_order(sigma_rad: float, radius_rad: float) -> int:
    """HEALPix order at which a density of width ``sigma_rad`` is evaluated against a map.

    The smallest order whose pixel side ``sqrt(pi / 3) / 2**order`` is at
    most ``sigma / 8``, lowered while the disc of ``radius_rad`` would need
    more than 2**20 pixels, and at most 27 (healpy's inclusive disc query
    limit).

    Parameters
    ----------
    sigma_rad
        Small-angle width of the density, radians (the minor one of an ellipse).
    radius_rad
        Radius of the disc covered, radians.

    Returns
    -------
    int
    """
    if not math.isfinite(sigma_rad):
        order = 0
    elif sigma_rad <= 0:
        order = _MAX_QUERY_ORDER
    else:  # a difference of logs: the quotient overflows for subnormal widths
        order = math.ceil(math.log2(_SIDE0_RAD * _RASTER_PER_SIGMA) - math.log2(sigma_rad))
    order = int(np.clip(order, 0, _MAX_QUERY_ORDER))
    cap_fraction = 0.5 * float(1.0 - math.cos(min(radius_rad, math.pi)))
    while order > 0 and 12 * 4**order * cap_fraction > _RASTER_BUDGET:
        order -= 1
    return order


def support_pixels(loc: VonMisesFisher | Ellipse) -> tuple[int, np.ndarray]:
    """The pixels over which a smooth density is summed against a map.

    Those of order :func:`raster_order` that healpy's inclusive disc query
    returns for the disc holding all but
    :data:`~crossmatch.localization.TAIL_PROBABILITY` of the density.

    Returns
    -------
    order, ipix
        The order and the sorted NESTED indices.
    """
    import healpy

    radius, sigma = _support(loc)
    order = raster_order(sigma, radius)
    nside = 1 << order
    if radius >= math.pi / 2:
        # Half the sky or more: take all of it (healpy's disc query can drop the
        # antipodal pixel of a disc of radius near pi).
        return order, np.arange(12 * nside * nside, dtype=np.int64)
    return order, np.sort(healpy.query_disc(nside, loc.vec, radius, inclusive=True,
                                            nest=True)).astype(np.int64)


_RIM_POINTS = 16
_RIM_ANGLES = np.linspace(0.0, 2.0 * np.pi, _RIM_POINTS, endpoint=False)


def _rim_inside(centre: np.ndarray, radius_rad: float, order: int, ipix: int) -> bool:
    """Whether a disc much smaller than a pixel lies inside pixel ``ipix``.

    Its rim is sampled at 16 points: pixel edges are straight at this scale,
    so an edge crossing the disc leaves a sample outside unless it cuts off
    a sliver under 2% of the radius deep, at the far tail of the density.
    (healpy's inclusive disc query answers "maybe" for any disc near an edge,
    which sent half of all 1-arcsec sources down the slow path.)
    """
    import healpy

    helper = np.array([0.0, 0.0, 1.0]) if abs(centre[2]) < 0.9 else np.array([1.0, 0.0, 0.0])
    east = np.cross(helper, centre)
    east /= np.linalg.norm(east)
    north = np.cross(centre, east)
    ring = (math.cos(radius_rad) * centre[None, :] + math.sin(radius_rad) * (
        np.cos(_RIM_ANGLES)[:, None] * east[None, :] + np.sin(_RIM_ANGLES)[:, None] * north))
    pixels = healpy.vec2pix(1 << order, ring[:, 0], ring[:, 1], ring[:, 2], nest=True)
    return bool(np.all(pixels == ipix))


def _log_smooth_map(loc: VonMisesFisher | Ellipse, sky: SkyMap) -> tuple[float, str]:
    """log I of a smooth density and a map: the midpoint rule on the finer of the two grids.

    Over the support pixels (order ``o``): a map pixel finer than ``o`` takes
    the density at its own centre, a coarser one the density at the centres
    of its order-``o`` descendants - each map pixel integrated at its own
    order or finer, never flattened.  The sum is divided by the midpoint
    rule's own total over the support (1 to ~1e-6), so that an all-sky
    uniform map gives exactly 1 and a density inside one pixel exactly
    ``4 pi`` times that pixel's density, as the one-pixel shortcut does.
    """
    import healpy

    radius, _ = _support(loc)
    ra, dec = loc.ra_deg, loc.dec_deg
    row = int(sky.rows_at(ra, dec))
    o = int(sky.order[row]) if row >= 0 else -1
    # Only a disc narrower than the pixel holding its centre can lie inside it.
    if 0 <= o <= MAX_ORDER and radius < _SIDE0_RAD / 2**o and _rim_inside(
            loc.vec, radius, o, int(sky.ipix[row])):
        # All of the density (but 1e-12) lies in this one pixel.
        return (_log(_FOUR_PI * float(sky.density[row])),
                f"{_kind(loc)} x map: inside one order-{o} pixel, its density")
    order, ipix = support_pixels(loc)
    shift = 2 * (MAX_ORDER - order)
    start = ipix << shift
    stop = (ipix + 1) << shift
    (_, fine_map), (coarse_raster, coarse_map) = _nested_pairs(start, stop, sky.start, sky.stop)
    # Density at every support pixel's centre (for the normalization and the coarse part).
    support = np.exp(loc.log_density(np.array(healpy.pix2vec(1 << order, ipix, nest=True)).T))
    area = (math.pi / 3.0) / float(4**order)
    norm = area * float(np.sum(support))
    # Map pixels at or finer than the support order: the density at their own centres.
    fine = _sum_product(np.exp(loc.log_density(sky.centres[fine_map])),
                        sky.density[fine_map] * sky.area_sr[fine_map])
    # Map pixels coarser than it: the density at the centres of their descendants.
    coarse = area * _sum_product(support[coarse_raster], sky.density[coarse_map])
    n_eval = fine_map.size + coarse_raster.size
    return (_log(_FOUR_PI * float(fine + coarse) / norm),
            f"{_kind(loc)} x map: midpoint rule at order >= {order} ({n_eval} points)")


# -- map x map ----------------------------------------------------------------------------


def _nested_pairs(a_start: np.ndarray, a_stop: np.ndarray, b_start: np.ndarray,
                  b_stop: np.ndarray) -> tuple[tuple[np.ndarray, np.ndarray],
                                               tuple[np.ndarray, np.ndarray]]:
    """Every overlapping pair of pixels of two maps, as row indices.

    Each map's pixels are order-29 ranges sorted by start and disjoint.  Two
    HEALPix pixels either nest or are disjoint, so every overlapping pair is
    a pixel inside (or equal to) the one of the other map that starts at or
    before it: one binary search from each side finds all pairs, each once.

    Returns
    -------
    (ia, ib), (ja, jb)
        Pairs where b's pixel lies inside a's or equals it, and pairs where
        a's pixel lies strictly inside b's; the overlap is the smaller pixel.
    """
    j = np.searchsorted(a_start, b_start, side="right") - 1
    jc = np.clip(j, 0, None)
    b_in_a = np.nonzero((j >= 0) & (b_stop <= a_stop[jc]))[0]
    k = np.searchsorted(b_start, a_start, side="right") - 1
    kc = np.clip(k, 0, None)
    a_in_b = np.nonzero((k >= 0) & (a_stop <= b_stop[kc])
                        & (a_stop - a_start < b_stop[kc] - b_start[kc]))[0]
    return (jc[b_in_a], b_in_a), (a_in_b, kc[a_in_b])


def _nested_overlap(a: SkyMap, b: SkyMap) -> float:
    """integral p_a p_b dOmega of two piecewise-constant maps, sr^-1 (exact)."""
    (ia, ib), (ja, jb) = _nested_pairs(a.start, a.stop, b.start, b.stop)
    part_b = _sum_product(a.density[ia] * b.density[ib], b.area_sr[ib])
    part_a = _sum_product(a.density[ja] * b.density[jb], a.area_sr[ja])
    return part_a + part_b


def _sum_product(x: np.ndarray, y: np.ndarray) -> float:
    """sum(x * y) without BLAS: on a busy machine BLAS threads cost milliseconds to wake."""
    return float(np.einsum("i,i->", x, y))


def _map_map(a: SkyMap, b: SkyMap) -> float:
    return _FOUR_PI * _nested_overlap(a, b)


def _log_map_map(a: SkyMap, b: SkyMap) -> tuple[float, str]:
    return _log(_map_map(a, b)), "map x map: exact merge of nested ranges"
