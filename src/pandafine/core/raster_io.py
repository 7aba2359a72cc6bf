"""GeoTIFF reading and writing shared by the stages (atomic, tiled, compressed)."""

from __future__ import annotations

import contextlib
import warnings
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np

from pandafine.core.atomic import atomic_path
from pandafine.core.faults import RasterFileError, exception_chain, is_rasterio_error
from pandafine.core.grid import Grid
from pandafine.core.tiff_check import tiff_damage

#: A GeoTIFF whose uncompressed data pass this many bytes is written as a BigTIFF: compression may not
#: bring it under the 4 GiB of a classic TIFF (GDAL's own ``BIGTIFF=IF_SAFER`` threshold).
BIGTIFF_ABOVE_BYTES = 2_000_000_000


def bigtiff_option(width: int, height: int, count: int, dtype: str) -> str:
    """GDAL's ``BIGTIFF`` option: ``'YES'`` past :data:`BIGTIFF_ABOVE_BYTES` uncompressed, else ``'IF_SAFER'``.

    Without it a compressed GeoTIFF is a classic TIFF whatever its size, and a
    large grid fails with "Maximum TIFF file size exceeded" when its blocks are
    flushed. ``IF_SAFER`` leaves GDAL the same decision where the size is not
    known in advance (overviews, copies).
    """
    nbytes = int(width) * int(height) * int(count) * np.dtype(dtype).itemsize
    return "YES" if nbytes > BIGTIFF_ABOVE_BYTES else "IF_SAFER"


def geotiff_profile(grid: Grid, count: int, dtype: str, nodata: float | None = None,
                    **extra: Any) -> dict[str, Any]:
    """A rasterio profile for a tiled, compressed GeoTIFF on ``grid`` (a BigTIFF if it may pass 4 GiB)."""
    from rasterio.crs import CRS

    tiled = grid.width >= 256 and grid.height >= 256
    profile = dict(driver="GTiff", width=grid.width, height=grid.height, count=count, dtype=dtype,
                   crs=CRS.from_user_input(grid.crs), transform=grid.transform, nodata=nodata,
                   compress="deflate", tiled=tiled, interleave="band",
                   BIGTIFF=bigtiff_option(grid.width, grid.height, count, dtype))
    if tiled:
        profile.update(blockxsize=256, blockysize=256)
    if np.dtype(dtype).kind == "f":
        profile["predictor"] = 3
    elif np.dtype(dtype).kind in "iu":
        profile["predictor"] = 2
    profile.update(extra)
    return profile


def write_raster(path: str | Path, array: np.ndarray, grid: Grid, *, nodata: float | None = None,
                 band_names: Sequence[str] | None = None, tags: Mapping[str, Any] | None = None,
                 overviews: Sequence[int] = (), overview_resampling: str = "average",
                 **profile_extra: Any) -> Path:
    """Write a (bands, rows, cols) or (rows, cols) array on ``grid`` atomically.

    ``overviews`` (decimation factors, e.g. ``(2, 4)``) are built inside the file with
    ``overview_resampling`` (nodata excluded), as the internal overviews of a COG.
    """
    from rasterio.enums import Resampling

    arr = array[None] if array.ndim == 2 else array
    if arr.shape[1:] != grid.shape:
        raise ValueError(f"{path}: array shape {arr.shape[1:]} does not match grid shape {grid.shape}")
    profile = geotiff_profile(grid, arr.shape[0], arr.dtype.name, nodata, **profile_extra)
    with open_writer(path, profile, band_names, tags) as dst:
        dst.write(arr)
        if overviews:
            dst.build_overviews(list(overviews), Resampling[overview_resampling])
    return Path(path)


def open_raster(path: str | Path):
    """``rasterio.open(path)`` of a local raster file, with errors that name the file.

    A missing file raises :class:`FileNotFoundError`; a TIFF cut short or whose
    directories point past its end (:func:`~pandafine.core.tiff_check.tiff_damage`)
    and a file GDAL cannot open raise :class:`~pandafine.core.faults.RasterFileError`
    saying it is truncated or corrupt, before anything is read from it.
    """
    import rasterio

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such raster file")
    damage = tiff_damage(path)
    if damage:
        raise RasterFileError(f"{path}: {damage} (cut short by an interrupted download or copy? fetch it again)")
    try:
        return rasterio.open(path)
    except rasterio.errors.RasterioIOError as exc:
        raise RasterFileError(f"{path}: corrupt or not a raster GDAL can read ({exc})") from exc


@contextlib.contextmanager
def naming_file(path: str | Path):
    """Re-raise a rasterio error of the block as :class:`~pandafine.core.faults.RasterFileError` naming ``path``."""
    try:
        yield
    except Exception as exc:
        if not is_rasterio_error(exc):
            raise
        causes = "; ".join(str(e) for e in exception_chain(exc) if str(e) and "See previous exception" not in str(e))
        raise RasterFileError(f"{path}: corrupt or unreadable raster ({causes or exc})") from exc


def read_raster(path: str | Path, *, masked_to_nan: bool = True) -> tuple[np.ndarray, Grid]:
    """Read a whole raster as float32 (nodata -> NaN) with its grid. For small rasters only."""
    path = Path(path)
    with open_raster(path) as src, naming_file(path):
        if src.crs is None:
            raise ValueError(f"{path}: raster has no CRS; expected a georeferenced GeoTIFF")
        grid = Grid(src.crs.to_wkt(), src.transform, src.width, src.height, 1)
        arr = src.read().astype(np.float32)
        if masked_to_nan and src.nodata is not None and not np.isnan(src.nodata):
            arr[arr == np.float32(src.nodata)] = np.nan
    return arr, grid


def grid_of(path: str | Path) -> Grid:
    """The grid of an existing raster (factor 1)."""
    with open_raster(path) as src:
        if src.crs is None:
            raise ValueError(f"{path}: raster has no CRS; expected a georeferenced GeoTIFF")
        return Grid(src.crs.to_wkt(), src.transform, src.width, src.height, 1)


def iter_windows(width: int, height: int, size: int = 1024) -> Iterator[Any]:
    """Square ``rasterio.windows.Window`` tiles of edge ``size`` covering a raster (row-major)."""
    from rasterio.windows import Window

    if size < 1:
        raise ValueError(f"window size must be >= 1, got {size}")
    for r in range(0, height, size):
        for c in range(0, width, size):
            yield Window(c, r, min(size, width - c), min(size, height - r))


def float_profile(crs, transform, width: int, height: int, count: int) -> dict[str, Any]:
    """Profile of a tiled, compressed float32 GeoTIFF (NaN nodata) on any grid (not only north-up).

    A BigTIFF where it may pass 4 GiB (:func:`bigtiff_option`).

    Deflate level 1: on noisy float32 reflectance it is about 3x faster than the
    default level 6 for files only ~2 % larger (these are intermediate files).
    """
    from rasterio.crs import CRS

    tiled = width >= 256 and height >= 256
    profile = dict(driver="GTiff", width=width, height=height, count=count, dtype="float32",
                   crs=CRS.from_user_input(crs), transform=transform, nodata=float("nan"),
                   compress="deflate", zlevel=1, predictor=3, tiled=tiled, interleave="band",
                   BIGTIFF=bigtiff_option(width, height, count, "float32"))
    if tiled:
        profile.update(blockxsize=256, blockysize=256)
    return profile


@contextlib.contextmanager
def open_writer(path: str | Path, profile: Mapping[str, Any], band_names: Sequence[str] | None = None,
                tags: Mapping[str, Any] | None = None):
    """Open a GeoTIFF for window-by-window writing; it appears at ``path`` only when closed cleanly."""
    import rasterio

    with atomic_path(path) as tmp:
        with rasterio.open(tmp, "w", **profile) as dst:
            if band_names:
                for i, name in enumerate(band_names, start=1):
                    dst.set_band_description(i, name)
            if tags:
                dst.update_tags(**{k: str(v) for k, v in tags.items()})
            yield dst


def open_georeferenced(path: str | Path):
    """:func:`open_raster` refusing rasters without a CRS or a geotransform.

    A truncated or corrupt file is said to be so (not "no CRS": the
    georeferencing tags of a truncated file may be lost).
    """
    import rasterio
    from affine import Affine

    path = Path(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
        src = open_raster(path)
    if src.crs is None or src.transform == Affine.identity():
        what = "no CRS" if src.crs is None else "no geotransform"
        if src.crs is None and src.transform == Affine.identity():
            what = "no CRS and no geotransform"
        src.close()
        raise ValueError(f"{path}: raster has {what}; expected a georeferenced GeoTIFF "
                         "(a CRS and an affine transform)")
    return src
