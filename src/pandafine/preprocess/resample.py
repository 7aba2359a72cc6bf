"""Resampling onto the working grid, window by window.

Every layer ends up on the working grid (:class:`pandafine.core.grid.Grid`) with a
method chosen per layer: Landsat ``average``, DEM ``bilinear``, PANDA
``nearest`` (exact 8x8 blocks when the PANDA grid shares the working grid's
origin lattice) or ``bilinear``. Work proceeds in square windows of the
grid with GDAL's block cache bounded (:func:`pandafine.core.runtime.gdal_cache_limit`),
so memory is set by the window, not by the region.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Sequence

import numpy as np

from pandafine.core.atomic import atomic_path
from pandafine.core.grid import Grid, lattice_offset
from pandafine.core.raster_io import geotiff_profile, iter_windows, open_raster
from pandafine.core.runtime import gdal_cache_limit

#: Default resampling method per layer.
LAYER_RESAMPLING = {"landsat": "average", "dem": "bilinear", "panda": "nearest", "target": "average"}
#: Layers that must cover the working grid (``preprocess.min_coverage``): a PANDA or DEM file of another
#: place would otherwise resample to NaN and the run go on. (Landsat gaps are clouds; the target is the
#: Luojia footprints.)
COVERAGE_LAYERS = ("panda", "dem")
#: Default of ``preprocess.min_coverage``.
DEFAULT_MIN_COVERAGE = 0.99
#: What to do with a PANDA raster (grid CRS, coarse cell size) whose lattice is off ``grid.anchor``
#: (``preprocess.panda_alignment``): ``error``, or ``snap`` it onto the lattice with a warning.
PANDA_ALIGNMENT_MODES = ("error", "snap")
#: Lattice offsets up to this fraction of a working pixel are rounding, not misalignment.
ALIGNMENT_TOLERANCE = 1e-3


def _resampling(name: str):
    from rasterio.enums import Resampling

    try:
        return Resampling[name]
    except KeyError:
        raise ValueError(f"unknown resampling method {name!r}; expected one of nearest, bilinear, cubic, average") from None


def resample_to_grid(src_path: str | Path, grid: Grid, out_path: str | Path, *, method: str,
                     band_names: Sequence[str] | None = None, window: int = 1024,
                     min_coverage: float | None = None, alignment: str | None = None) -> Path:
    """Warp every band of ``src_path`` onto ``grid`` and write a float32 GeoTIFF (NaN nodata).

    Source nodata (declared or NaN) never leaks into valid output pixels: it is
    excluded from the interpolation, and output pixels not covered by the
    source are NaN. With ``min_coverage``, a result whose band 1 is valid on less
    than that fraction of the grid raises ``ValueError`` (naming the file, its
    footprint and the grid's bounds) and nothing is written. With ``alignment``
    (see :data:`PANDA_ALIGNMENT_MODES`), a source in the grid's CRS with the
    coarse cell size whose pixel corners are off the grid's coarse lattice
    (``grid.anchor``) raises ``ValueError`` (``'error'``) or is shifted onto the
    nearest lattice position with a warning (``'snap'``).

    Memory does not grow with the grid: ``window`` px square windows, GDAL's
    block cache bounded to :data:`pandafine.core.runtime.STREAM_GDAL_CACHE_MB`.
    """
    import rasterio
    from rasterio.crs import CRS
    from rasterio.vrt import WarpedVRT

    src_path = Path(src_path)
    resampling = _resampling(method)
    with gdal_cache_limit(), open_raster(src_path) as src:
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
        if alignment is not None:
            snapped = aligned_transform(src_path, src, grid, alignment)
            if snapped is not None:
                vrt_opts["src_transform"] = snapped
        profile = geotiff_profile(grid, src.count, "float32", np.nan)
        with atomic_path(out_path) as tmp, WarpedVRT(src, **vrt_opts) as vrt, \
                rasterio.open(tmp, "w", **profile) as dst:
            valid = 0
            for win in iter_windows(grid.width, grid.height, window):
                block = vrt.read(window=win, masked=False).astype(np.float32)
                valid += int(np.isfinite(block[0]).sum())
                dst.write(block, window=win)
            for i, name in enumerate(names, start=1):
                dst.set_band_description(i, name)
            coverage = valid / (grid.width * grid.height)
            if min_coverage is not None and coverage < min_coverage:
                raise ValueError(coverage_message(src_path, src, grid, coverage, min_coverage))
    return Path(out_path)


def aligned_transform(src_path: Path, src, grid: Grid, mode: str):
    """The transform that puts ``src`` on ``grid``'s coarse lattice, or None when it is there already
    (or not comparable: another CRS or cell size). Mode ``'error'`` raises instead of snapping."""
    from affine import Affine
    from rasterio.crs import CRS

    if mode not in PANDA_ALIGNMENT_MODES:
        raise ValueError(f"preprocess.panda_alignment={mode!r}; expected one of {', '.join(PANDA_ALIGNMENT_MODES)}")
    if src.crs != CRS.from_user_input(grid.crs):
        return None
    offset = lattice_offset(src.transform, grid)
    if offset is None or max(abs(v) for v in offset) <= ALIGNMENT_TOLERANCE * grid.pixel_size:
        return None
    dx, dy = offset
    msg = (f"{src_path}: its 1 km pixel lattice is off the working grid's coarse lattice (grid.anchor) by "
           f"x {dx:+.1f} m, y {dy:+.1f} m (origin {src.transform.c:.2f}, {src.transform.f:.2f})")
    if mode == "error":
        raise ValueError(msg + "; is it a file of another product or grid? Fix grid.anchor, or set "
                               "preprocess.panda_alignment: snap to shift it onto the lattice")
    warnings.warn(msg + "; snapped onto the lattice (preprocess.panda_alignment: snap)", stacklevel=2)
    return Affine.translation(-dx, -dy) * src.transform


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
                   method: str | None = None, min_coverage: float | None = None,
                   panda_alignment: str = "error") -> Path:
    """Resample one layer with its configured method (see :data:`LAYER_RESAMPLING`).

    ``min_coverage`` applies to the :data:`COVERAGE_LAYERS` only, ``panda_alignment``
    to PANDA only.
    """
    if layer not in LAYER_RESAMPLING:
        raise ValueError(f"unknown layer {layer!r}; expected one of {', '.join(LAYER_RESAMPLING)}")
    return resample_to_grid(src_path, grid, out_path, method=method or LAYER_RESAMPLING[layer],
                            min_coverage=min_coverage if layer in COVERAGE_LAYERS else None,
                            alignment=panda_alignment if layer == "panda" else None)
