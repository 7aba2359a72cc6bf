"""The working grid: one raster grid for every layer after resampling.

The grid is defined once in the config (region bounding box in lon/lat, CRS,
pixel size, super-resolution factor and the anchor of the coarse PANDA grid)
and written to ``results/grid.json``. Its origin is snapped to the coarse grid
so that one coarse cell (``pixel_size * factor``) is exactly a ``factor x factor``
block of working pixels.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from affine import Affine

from pandafine.core.atomic import write_text_atomic

#: Albers equal-area conic used by China-wide DMSP-like products (and PANDA).
CHINA_ALBERS = (
    "+proj=aea +lat_0=0 +lon_0=105 +lat_1=25 +lat_2=47 +x_0=0 +y_0=0 "
    "+datum=WGS84 +units=m +no_defs"
)


@dataclass(frozen=True)
class Grid:
    """A north-up raster grid.

    Parameters
    ----------
    crs : str
        CRS as a PROJ string, WKT or ``EPSG:nnnn``.
    transform : affine.Affine
        Pixel-corner affine transform (north-up: ``b == d == 0``, ``e < 0``).
    width, height : int
        Size in pixels.
    factor : int
        Number of working pixels per coarse (PANDA) cell along each axis.
    """

    crs: str
    transform: Affine
    width: int
    height: int
    factor: int = 8

    def __post_init__(self) -> None:
        t = self.transform
        if t.b != 0 or t.d != 0 or t.a <= 0 or t.e >= 0:
            raise ValueError(f"grid transform must be north-up with positive pixel size, got {tuple(t)[:6]}")
        if self.width <= 0 or self.height <= 0:
            raise ValueError(f"grid size must be positive, got width={self.width} height={self.height}")
        if self.factor < 1:
            raise ValueError(f"grid factor must be >= 1, got {self.factor}")

    @property
    def pixel_size(self) -> float:
        return self.transform.a

    @property
    def shape(self) -> tuple[int, int]:
        return (self.height, self.width)

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(left, bottom, right, top) in grid CRS units."""
        left, top = self.transform.c, self.transform.f
        return (left, top + self.height * self.transform.e, left + self.width * self.transform.a, top)

    def coarse(self) -> "Grid":
        """The coarse (PANDA) grid: same extent, pixel size ``factor`` times larger."""
        if self.width % self.factor or self.height % self.factor:
            raise ValueError(f"grid {self.width}x{self.height} is not a whole number of {self.factor}x{self.factor} blocks")
        return Grid(self.crs, self.transform @ Affine.scale(self.factor), self.width // self.factor,
                    self.height // self.factor, 1)

    def scaled(self, factor: int) -> "Grid":
        """A grid over the same extent with pixels ``factor`` times smaller."""
        return Grid(self.crs, self.transform @ Affine.scale(1 / factor), self.width * factor,
                    self.height * factor, self.factor * factor)

    def window_transform(self, row_off: int, col_off: int) -> Affine:
        return self.transform @ Affine.translation(col_off, row_off)

    def to_dict(self) -> dict[str, Any]:
        import warnings

        from pyproj import CRS

        crs = CRS.from_user_input(self.crs)
        with warnings.catch_warnings():  # PROJ strings are lossy; WKT2 is the reference form
            warnings.simplefilter("ignore", UserWarning)
            proj4 = crs.to_proj4()
        return {
            "crs_wkt": crs.to_wkt(),
            "crs_proj4": proj4,
            "epsg": crs.to_epsg(),
            "transform": list(self.transform)[:6],
            "width": self.width,
            "height": self.height,
            "pixel_size": self.pixel_size,
            "factor": self.factor,
            "bounds": list(self.bounds),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Grid":
        return cls(d.get("crs_wkt") or d["crs_proj4"], Affine(*d["transform"]), int(d["width"]),
                   int(d["height"]), int(d.get("factor", 8)))

    def write_json(self, path: str | Path) -> None:
        write_text_atomic(path, json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def read_json(cls, path: str | Path) -> "Grid":
        try:
            return cls.from_dict(json.loads(Path(path).read_text()))
        except (OSError, ValueError, KeyError) as exc:
            raise ValueError(f"{path}: not a valid grid file ({exc})") from exc

    def same_as(self, other: "Grid", tol: float = 1e-6) -> bool:
        from pyproj import CRS

        return (self.width == other.width and self.height == other.height
                and all(abs(a - b) <= tol * max(1.0, abs(a)) for a, b in zip(self.transform, other.transform))
                and CRS.from_user_input(self.crs) == CRS.from_user_input(other.crs))


def lattice_offset(transform: Affine, grid: Grid) -> tuple[float, float] | None:
    """How far a raster's pixel lattice lies from ``grid``'s coarse (PANDA) lattice, in grid CRS units.

    ``transform`` is the raster's (in the grid's CRS). Returns the (x, y) offset
    of its pixel corners from the nearest coarse-lattice corners, each in
    ``[-cell / 2, cell / 2)``, where ``cell = pixel_size * factor``; ``None``
    when the lattices are not comparable (another pixel size, rotation).
    """
    cell = grid.pixel_size * grid.factor
    a, b, c, d, e, f = tuple(transform)[:6]
    if b or d or abs(a - cell) > 1e-6 * cell or abs(-e - cell) > 1e-6 * cell:
        return None

    def fold(v: float) -> float:
        return (v + cell / 2) % cell - cell / 2

    return fold(c - grid.transform.c), fold(f - grid.transform.f)


def snap_bounds(bounds: tuple[float, float, float, float], cell: float,
                anchor: tuple[float, float]) -> tuple[float, float, float, float]:
    """Snap (left, bottom, right, top) outward to the lattice ``anchor + k * cell``."""
    ax, ay = anchor
    left = ax + math.floor((bounds[0] - ax) / cell + 1e-9) * cell
    bottom = ay + math.floor((bounds[1] - ay) / cell + 1e-9) * cell
    right = ax + math.ceil((bounds[2] - ax) / cell - 1e-9) * cell
    top = ay + math.ceil((bounds[3] - ay) / cell - 1e-9) * cell
    return left, bottom, right, top


def grid_from_bbox(bbox_lonlat: tuple[float, float, float, float], crs: str, pixel_size: float,
                   factor: int, anchor: tuple[float, float]) -> Grid:
    """Build the working grid covering a lon/lat box, snapped to the coarse lattice.

    The box corners (densified along the edges) are projected into ``crs`` and the
    resulting bounds are snapped outward to ``anchor + k * pixel_size * factor``.
    """
    from rasterio.crs import CRS as RioCRS
    from rasterio.warp import transform_bounds

    west, south, east, north = bbox_lonlat
    if not (west < east and south < north):
        raise ValueError(f"region.bbox must be [west, south, east, north] with west<east and south<north, got {list(bbox_lonlat)}")
    if pixel_size <= 0:
        raise ValueError(f"grid.pixel_size must be > 0, got {pixel_size}")
    proj_bounds = transform_bounds(RioCRS.from_epsg(4326), RioCRS.from_user_input(crs), west, south, east, north,
                                   densify_pts=21)
    cell = pixel_size * factor
    left, bottom, right, top = snap_bounds(proj_bounds, cell, anchor)
    width = int(round((right - left) / pixel_size))
    height = int(round((top - bottom) / pixel_size))
    return Grid(crs, Affine(pixel_size, 0.0, left, 0.0, -pixel_size, top), width, height, factor)


def grid_from_config(cfg: Mapping[str, Any]) -> Grid:
    """The working grid described by a validated config mapping."""
    g = cfg["grid"]
    return grid_from_bbox(tuple(cfg["region"]["bbox"]), g["crs"], float(g["pixel_size"]), int(g["factor"]),
                          tuple(g["anchor"]))
