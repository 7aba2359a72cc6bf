"""Tiling into Zarr: per-year inference cubes and training patches with a blocked split.

* :func:`build_cube` stacks the resampled layers of one year into
  ``cube/{year}.zarr`` (array ``inputs``, shape (C, H, W), chunked on the tile
  grid), reading and writing one square window of whole chunks at a time.
* :func:`assign_splits` is the pure split logic: patches are grouped into
  square spatial blocks and whole blocks go to train, val or test (seeded), so
  no patch of one split overlaps a patch of another, in any year.
* :func:`build_training_set` cuts aligned patches from the cubes and targets of
  the supervised years into ``train.zarr`` with normalization statistics taken
  from the train split only.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pandafine.core.atomic import atomic_path
from pandafine.core.channels import CHANNELS, DEM_CHANNELS, LANDSAT_CHANNELS, PANDA_CHANNELS
from pandafine.core.checksums import remembered_sha256
from pandafine.core.grid import Grid
from pandafine.core.raster_io import iter_windows, open_raster

#: Edge (working pixels) of the windows a cube is built in, rounded down to whole chunks: memory is set
#: by a window of every layer, not by the region.
CUBE_WINDOW = 1024


def _open_layer(stack: contextlib.ExitStack, path: Path, expected: int, grid: Grid):
    src = stack.enter_context(open_raster(path))
    if (src.height, src.width) != grid.shape or src.count != expected:
        raise ValueError(f"{path}: expected {expected} band(s) on the working grid {grid.height}x{grid.width}, "
                         f"found {src.count} band(s) of {src.height}x{src.width}")
    return src


def _read_window(src, window) -> np.ndarray:
    arr = src.read(window=window).astype(np.float32)
    if src.nodata is not None and not np.isnan(src.nodata):
        arr[arr == np.float32(src.nodata)] = np.nan
    return arr


def build_cube(panda_path: str | Path, landsat_path: str | Path, dem_path: str | Path, grid: Grid,
               out_path: str | Path, *, year: int, chunk: int, window: int = CUBE_WINDOW) -> Path:
    """Stack the layers of ``year`` on the working grid into a Zarr cube ``inputs`` (C, H, W).

    ``landsat_path`` is the year's composite (it is made on the working grid). The
    cube is written in square windows of whole chunks (``window`` rounded down to
    a multiple of ``chunk``, at least one chunk).
    """
    import zarr

    layers = [(Path(panda_path), len(PANDA_CHANNELS)), (Path(landsat_path), len(LANDSAT_CHANNELS)),
              (Path(dem_path), len(DEM_CHANNELS))]
    chunk = min(chunk, max(grid.height, grid.width))
    window = max(chunk, window // chunk * chunk)
    with atomic_path(out_path) as tmp, contextlib.ExitStack() as stack:
        sources = [_open_layer(stack, p, k, grid) for p, k in layers]
        root = zarr.open_group(zarr.storage.LocalStore(tmp), mode="w")
        arr = root.create_array("inputs", shape=(len(CHANNELS), grid.height, grid.width), dtype="float32",
                                chunks=(len(CHANNELS), chunk, chunk), fill_value=np.nan,
                                dimension_names=("channel", "y", "x"))
        for win in iter_windows(grid.width, grid.height, window):
            rows = slice(win.row_off, win.row_off + win.height)
            cols = slice(win.col_off, win.col_off + win.width)
            arr[:, rows, cols] = np.concatenate([_read_window(src, win) for src in sources])
        root.attrs.update({"channels": list(CHANNELS), "year": int(year), "grid": grid.to_dict(),
                           "crs_wkt": grid.to_dict()["crs_wkt"], "transform": list(grid.transform)[:6]})
        write_grid_mapping(root, arr, grid)
    remembered_sha256(out_path)  # hashed once, here: every block's inference job reads the digest
    return Path(out_path)


def write_grid_mapping(root, arr, grid: Grid) -> None:
    """Add CF georeferencing so that ``xarray.open_zarr(cube)`` + rioxarray read CRS and transform.

    Writes 1-D pixel-centre coordinate arrays ``x`` and ``y`` (grid CRS units), a
    scalar ``spatial_ref`` array carrying ``crs_wkt``/``spatial_ref`` (WKT) and
    ``GeoTransform`` (GDAL order), and sets ``grid_mapping`` and ``coordinates`` on
    ``arr`` (zarr v3 ``dimension_names`` give xarray the dimensions).
    """
    from pyproj import CRS

    t = grid.transform
    crs = CRS.from_user_input(grid.crs)
    wkt, units = crs.to_wkt(), crs.axis_info[0].unit_name
    x = root.create_array("x", data=t.c + (np.arange(grid.width) + 0.5) * t.a, dimension_names=("x",))
    y = root.create_array("y", data=t.f + (np.arange(grid.height) + 0.5) * t.e, dimension_names=("y",))
    geographic = crs.is_geographic
    x.attrs.update({"standard_name": "longitude" if geographic else "projection_x_coordinate", "axis": "X",
                    "units": units})
    y.attrs.update({"standard_name": "latitude" if geographic else "projection_y_coordinate", "axis": "Y",
                    "units": units})
    ref = root.create_array("spatial_ref", shape=(), dtype="int32", fill_value=0, dimension_names=())
    ref.attrs.update({"crs_wkt": wkt, "spatial_ref": wkt,
                      "GeoTransform": " ".join(repr(float(v)) for v in t.to_gdal())})
    arr.attrs.update({"grid_mapping": "spatial_ref", "coordinates": "spatial_ref"})


@dataclass(frozen=True)
class Cube:
    """An opened inference cube (``results/tiles/cube/{year}.zarr``)."""

    path: Path
    inputs: Any  # zarr.Array (C, H, W)
    channels: tuple[str, ...]
    year: int | None
    grid: Grid


def open_cube(cube_path: str | os.PathLike) -> Cube:
    """Open an inference cube read-only and check it against the contract.

    Raises
    ------
    FileNotFoundError, ValueError
        If the store is missing or its array/attributes do not follow the contract.
    """
    import zarr

    cube_path = Path(cube_path)
    if not cube_path.exists():
        raise FileNotFoundError(f"inference cube not found: {cube_path}")
    try:
        group = zarr.open_group(str(cube_path), mode="r")
        inputs = group["inputs"]
    except (KeyError, FileNotFoundError, ValueError) as exc:
        raise ValueError(f"{cube_path}: expected a Zarr group with array 'inputs' (C, H, W): {exc}") from exc
    attrs = dict(group.attrs)
    missing = [k for k in ("channels", "grid") if k not in attrs]
    if missing:
        raise ValueError(f"{cube_path}: attribute(s) {missing} missing; expected channels, year, grid")
    if inputs.ndim != 3:
        raise ValueError(f"{cube_path}: array 'inputs' has shape {inputs.shape}; expected (C, H, W)")
    channels = tuple(attrs["channels"])
    if len(channels) != inputs.shape[0]:
        raise ValueError(f"{cube_path}: {len(channels)} channel names {list(channels)} for "
                         f"{inputs.shape[0]} channels in 'inputs'")
    grid = Grid.from_dict(attrs["grid"])
    if grid.shape != tuple(inputs.shape[1:]):
        raise ValueError(f"{cube_path}: grid shape {grid.shape} does not match 'inputs' shape {inputs.shape[1:]}")
    year = attrs.get("year")
    return Cube(cube_path, inputs, channels, None if year is None else int(year), grid)




