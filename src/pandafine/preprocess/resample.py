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
#: Layers that must cover the working grid (``preprocess.min_coverage``): a PANDA or DEM file of another
#: place would otherwise resample to NaN and the run go on. (Landsat gaps are clouds; the target is the
#: Luojia footprints.)
COVERAGE_LAYERS = ("panda", "dem")
#: Default of ``preprocess.min_coverage``.
DEFAULT_MIN_COVERAGE = 0.99


def _resampling(name: str):
    from rasterio.enums import Resampling

    try:
        return Resampling[name]
    except KeyError:
        raise ValueError(f"unknown resampling method {name!r}; expected one of nearest, bilinear, cubic, average") from None


def resample_to_grid(src_path: str | Path, grid: Grid, out_path: str | Path, *, method: str,
                     band_names: Sequence[str] | None = None, band_rows: int = 1024,
                     min_coverage: float | None = None) -> Path:
    """Warp every band of ``src_path`` onto ``grid`` and write a float32 GeoTIFF (NaN nodata).

    Source nodata (declared or NaN) never leaks into valid output pixels: it is
    excluded from the interpolation, and output pixels not covered by the
    source are NaN. With ``min_coverage``, a result whose band 1 is valid on less
    than that fraction of the grid raises ``ValueError`` (naming the file, its
    footprint and the grid's bounds) and nothing is written.
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
            valid = 0
            for r, n in row_bands(grid.height, band_rows):
                win = Window(0, r, grid.width, n)
                block = vrt.read(window=win, masked=False).astype(np.float32)
                valid += int(np.isfinite(block[0]).sum())
                dst.write(block, window=win)
            for i, name in enumerate(names, start=1):
                dst.set_band_description(i, name)
            coverage = valid / (grid.width * grid.height)
            if min_coverage is not None and coverage < min_coverage:
                raise ValueError(coverage_message(src_path, src, grid, coverage, min_coverage))
    return Path(out_path)


def coverage_message(src_path: Path, src, grid: Grid, coverage: float, min_coverage: float) -> str:
    """Why a layer was refused: how much of the grid it covers, its footprint and the grid's bounds."""
    from rasterio.warp import transform_bounds

    try:
        foot = transform_bounds(src.crs, grid.crs, *src.bounds)
        where = f"its footprint {tuple(round(v) for v in foot)} (in the grid's CRS)"
    except Exception:  # a footprint that does not transform is reported in its own CRS
        where = f"its footprint {tuple(src.bounds)} in {src.crs}"
    return (f"{src_path}: covers {100 * coverage:.1f} % of the working grid with valid pixels, less than "
            f"preprocess.min_coverage = {100 * min_coverage:g} %: {where} vs the working grid's bounds "
            f"{tuple(round(v) for v in grid.bounds)}; is it a file of another place?")


def resample_layer(layer: str, src_path: str | Path, grid: Grid, out_path: str | Path, *,
                   method: str | None = None, min_coverage: float | None = None) -> Path:
    """Resample one layer with its configured method (see :data:`LAYER_RESAMPLING`).

    ``min_coverage`` applies to the :data:`COVERAGE_LAYERS` only.
    """
    if layer not in LAYER_RESAMPLING:
        raise ValueError(f"unknown layer {layer!r}; expected one of {', '.join(LAYER_RESAMPLING)}")
    return resample_to_grid(src_path, grid, out_path, method=method or LAYER_RESAMPLING[layer],
                            min_coverage=min_coverage if layer in COVERAGE_LAYERS else None)
