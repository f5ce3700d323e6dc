"""Sky map images: HEALPix maps and error regions on a Mollweide projection, as PNG.

Rendered on the server with matplotlib's Agg backend (no pyplot, no display,
no network), so the API and the dashboard show sky maps offline.  Right
ascension increases to the left, as on the sky; the grid is ICRS degrees.
"""

from __future__ import annotations

import io
import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

_LOCK = threading.Lock()  # matplotlib's font and text caches are not thread-safe
_COLOURS = ("#d62728", "#1f77b4", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b")


@dataclass(frozen=True)
class Marker:
    """An alert's position on the image: a point, or a circle of ``radius_deg`` (ICRS deg)."""

    label: str
    ra_deg: float
    dec_deg: float
    radius_deg: float | None = None


def _x(ra_deg: np.ndarray | float) -> np.ndarray:
    """Mollweide x (radians, RA increasing to the left) of right ascensions in degrees."""
    wrapped = (np.asarray(ra_deg, dtype=float) + 180.0) % 360.0 - 180.0
    return np.radians(-wrapped)


def _circle(ra_deg: float, dec_deg: float, radius_deg: float, n: int = 181
            ) -> tuple[np.ndarray, np.ndarray]:
    """Points (RA, Dec in degrees) on the small circle of ``radius_deg`` around a position."""
    ra0, dec0, r = map(math.radians, (ra_deg, dec_deg, radius_deg))
    bearing = np.linspace(0, 2 * np.pi, n)
    dec = np.arcsin(np.sin(dec0) * np.cos(r) + np.cos(dec0) * np.sin(r) * np.cos(bearing))
    ra = ra0 + np.arctan2(np.sin(bearing) * np.sin(r) * np.cos(dec0),
                          np.cos(r) - np.sin(dec0) * np.sin(dec))
    return np.degrees(ra) % 360.0, np.degrees(dec)


def render_png(title: str, *, skymap: Any = None, markers: Sequence[Marker] = (),
               width_px: int = 960) -> bytes:
    """A PNG of a sky map (a :class:`crossmatch.localization.SkyMap`) and/or markers.

    The map is drawn as probability density on a 720 x 360 grid with its
    50% and 90% credible contours; each marker as a point or circle.
    """
    # matplotlib costs about 0.6 s to import and only the PNG routes need it: deferred so
    # that `mmbroker serve` and `stage api` start without it.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    with _LOCK:
        fig = Figure(figsize=(width_px / 100, width_px / 200), dpi=100)
        FigureCanvasAgg(fig)
        ax = fig.add_subplot(projection="mollweide")
        if skymap is not None:
            ra = np.linspace(180.0, -180.0, 721)  # left to right on the image
            dec = np.linspace(-90.0, 90.0, 361)
            ra_c, dec_c = np.meshgrid((ra[:-1] + ra[1:]) / 2, (dec[:-1] + dec[1:]) / 2)
            density = np.asarray(skymap.density_at(ra_c % 360.0, dec_c))
            levels = np.asarray(skymap.credible_level_at(ra_c % 360.0, dec_c))
            ax.pcolormesh(np.radians(-ra), np.radians(dec), density, cmap="viridis",
                          shading="flat", rasterized=True)
            ax.contour(np.radians(-ra_c[0]), np.radians(dec_c[:, 0]), levels,
                       levels=[0.5, 0.9], colors=["white", "white"],
                       linewidths=[0.8, 1.2], linestyles=["dashed", "solid"])
        for i, marker in enumerate(markers):
            colour = _COLOURS[i % len(_COLOURS)]
            ax.plot(_x(marker.ra_deg), math.radians(marker.dec_deg), marker="+",
                    markersize=10, color=colour, label=marker.label, linestyle="none")
            if marker.radius_deg:
                cra, cdec = _circle(marker.ra_deg, marker.dec_deg, marker.radius_deg)
                x = _x(cra)
                # Split the outline where it wraps around the edge of the projection.
                breaks = np.nonzero(np.abs(np.diff(x)) > np.pi)[0] + 1
                for xs, ys in zip(np.split(x, breaks), np.split(np.radians(cdec), breaks),
                                  strict=True):
                    ax.plot(xs, ys, color=colour, linewidth=1.2)
        ax.set_xticks(np.radians([-150, -120, -90, -60, -30, 0, 30, 60, 90, 120, 150]))
        ax.set_xticklabels(["150°", "120°", "90°", "60°", "30°", "0°", "330°", "300°",
                            "270°", "240°", "210°"], fontsize=7)
        ax.tick_params(axis="y", labelsize=7)
        ax.grid(True, linewidth=0.4, alpha=0.6)
        ax.set_title(title, fontsize=9)
        if markers:
            ax.legend(loc="lower right", fontsize=7, framealpha=0.8,
                      bbox_to_anchor=(1.05, -0.12))
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", metadata={"Software": "mmbroker"})
        return buffer.getvalue()
