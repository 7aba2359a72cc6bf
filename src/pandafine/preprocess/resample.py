"""Resampling onto the working grid, window by window.

Every layer ends up on the working grid (:class:`pandafine.core.grid.Grid`) with a
method chosen per layer: Landsat ``average``, DEM ``bilinear``, PANDA
``nearest`` (exact 8x8 blocks when the PANDA grid shares the working grid's
origin lattice) or ``bilinear``. Work proceeds in bands of rows, so memory is
set by the band height and the grid width, not by the region.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from pandafine.core.atomic import atomic_path
from pandafine.core.grid import Grid
from pandafine.core.raster_io import geotiff_profile
from pandafine.core.windows import row_bands

#: Default resampling method per layer.
LAYER_RESAMPLING = {"landsat": "average", "dem": "bilinear", "panda": "nearest", "target": "average"}




def _resampling(name: str):
    from rasterio.enums import Resampling

    try:
        return Resampling[name]
    except KeyError:
        raise ValueError(f"unknown resampling method {name!r}; expected one of nearest, bilinear, cubic, average") from None


def resample_to_grid(src_path: str | Path, grid: Grid, out_path: str | Path, *, method: str,
                     band_names: Sequence[str] | None = None, band_rows: int = 1024) -> Path:
    """Warp every band of ``src_path`` onto ``grid`` and write a float32 GeoTIFF (NaN nodata).

    Source nodata (declared or NaN) never leaks into valid output pixels: it is
    excluded from the interpolation, and output pixels not covered by the
    source are NaN.
    """
    import rasterio
    from rasterio.crs import CRS
    from rasterio.vrt import WarpedVRT
    from rasterio.windows import Window

    src_path = Path(src_path)
    resampling = _resampling(method)
    with rasterio.open(src_path) as src:
        if src.crs is None:
            raise ValueError(f"{src_path}: raster has no CRS; cannot resample it onto the working grid")
        nodata = src.nodata if src.nodata is not None else (np.nan if src.dtypes[0].startswith("float") else None)
        names = list(band_names) if band_names else [src.descriptions[i] or f"band{i + 1}" for i in range(src.count)]
        if len(names) != src.count:
            raise ValueError(f"{src_path}: has {src.count} bands, expected {len(names)} ({', '.join(names)})")
        vrt_opts = dict(crs=CRS.from_user_input(grid.crs), transform=grid.transform, width=grid.width,
                        height=grid.height, resampling=resampling, dtype="float32", dst_nodata=np.nan)
        if nodata is not None:
            vrt_opts["src_nodata"] = nodata
        profile = geotiff_profile(grid, src.count, "float32", np.nan)
        with atomic_path(out_path) as tmp, WarpedVRT(src, **vrt_opts) as vrt, \
                rasterio.open(tmp, "w", **profile) as dst:
            for r, n in row_bands(grid.height, band_rows):
                win = Window(0, r, grid.width, n)
                dst.write(vrt.read(window=win, masked=False).astype(np.float32), window=win)
            for i, name in enumerate(names, start=1):
                dst.set_band_description(i, name)
    return Path(out_path)


def resample_layer(layer: str, src_path: str | Path, grid: Grid, out_path: str | Path, *,
                   method: str | None = None) -> Path:
    """Resample one layer with its configured method (see :data:`LAYER_RESAMPLING`)."""
    if layer not in LAYER_RESAMPLING:
        raise ValueError(f"unknown layer {layer!r}; expected one of {', '.join(LAYER_RESAMPLING)}")
    return resample_to_grid(src_path, grid, out_path, method=method or LAYER_RESAMPLING[layer])
