"""Windows of the working grid: which block of it a raster covers, and warping a block onto it.

Shared by the preprocessing stages (Luojia-01 calibration and mosaic, Landsat
composites), the STAC reader and the tile cubes.
"""

from __future__ import annotations

import math
from typing import Iterator

import numpy as np

from pandafine.core.grid import Grid


def grid_window_of(bounds_grid_crs: tuple[float, float, float, float], grid: Grid):
    """The (row_off, col_off, height, width) block of ``grid`` covering bounds, or None if disjoint."""
    left, bottom, right, top = bounds_grid_crs
    t = grid.transform
    c0 = max(0, math.floor((left - t.c) / t.a))
    c1 = min(grid.width, math.ceil((right - t.c) / t.a))
    r0 = max(0, math.floor((top - t.f) / t.e))
    r1 = min(grid.height, math.ceil((bottom - t.f) / t.e))
    if c1 <= c0 or r1 <= r0:
        return None
    return r0, c0, r1 - r0, c1 - c0


def frame_bounds_on(frame: Grid, grid: Grid) -> tuple[float, float, float, float]:
    """Bounds of a frame grid expressed in the CRS of ``grid``."""
    from rasterio.crs import CRS
    from rasterio.warp import transform_bounds

    return transform_bounds(CRS.from_user_input(frame.crs), CRS.from_user_input(grid.crs), *frame.bounds,
                            densify_pts=21)


def reproject_to_block(array: np.ndarray, src: Grid, grid: Grid, block: tuple[int, int, int, int],
                       resampling: str = "average") -> np.ndarray:
    """Warp a float array (NaN nodata) onto a block (row_off, col_off, height, width) of ``grid``."""
    from rasterio.crs import CRS
    from rasterio.enums import Resampling
    from rasterio.warp import reproject

    r0, c0, h, w = block
    dst = np.full((h, w), np.nan, dtype=np.float64)
    reproject(np.asarray(array, dtype=np.float64), dst, src_transform=src.transform,
              src_crs=CRS.from_user_input(src.crs), src_nodata=np.nan, dst_transform=grid.window_transform(r0, c0),
              dst_crs=CRS.from_user_input(grid.crs), dst_nodata=np.nan, resampling=Resampling[resampling])
    return dst


def intersect_blocks(a, b):
    """Intersection of two (row_off, col_off, height, width) blocks, or None."""
    if a is None or b is None:
        return None
    r0, c0 = max(a[0], b[0]), max(a[1], b[1])
    r1, c1 = min(a[0] + a[2], b[0] + b[2]), min(a[1] + a[3], b[1] + b[3])
    if r1 <= r0 or c1 <= c0:
        return None
    return r0, c0, r1 - r0, c1 - c0


def row_bands(height: int, band_rows: int) -> Iterator[tuple[int, int]]:
    """(row_off, n_rows) bands covering ``height`` rows."""
    if band_rows < 1:
        raise ValueError(f"band_rows must be >= 1, got {band_rows}")
    for r in range(0, height, band_rows):
        yield r, min(band_rows, height - r)
