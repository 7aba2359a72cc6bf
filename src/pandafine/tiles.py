"""Tiling into Zarr: per-year inference cubes and training patches with a blocked split.

* :func:`build_cube` stacks the resampled layers of one year into
  ``cube/{year}.zarr`` (array ``inputs``, shape (C, H, W), chunked on the tile
  grid), reading and writing one band of chunk rows at a time.
* :func:`assign_splits` is the pure split logic: patches are grouped into
  square spatial blocks and whole blocks go to train, val or test (seeded), so
  no patch of one split overlaps a patch of another, in any year.
* :func:`build_training_set` cuts aligned patches from the cubes and targets of
  the supervised years into ``train.zarr`` with normalization statistics taken
  from the train split only.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from .atomic import atomic_path
from .channels import CHANNELS, DEM_CHANNELS, LANDSAT_CHANNELS, PANDA_CHANNELS
from .grid import Grid
from .resample import row_bands

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class SplitParams:
    """How patches are cut and split (``tiles`` section of the config)."""

    patch: int
    split_block: int
    fractions: tuple[float, float, float]
    seed: int

    @classmethod
    def from_config(cls, cfg: Mapping) -> "SplitParams":
        t = cfg["tiles"]
        fr = t["fractions"]
        return cls(int(t["patch"]), int(t["split_block"]), (fr["train"], fr["val"], fr["test"]),
                   int(cfg["run"]["seed"]))


def patch_origins(height: int, width: int, patch: int) -> list[tuple[int, int]]:
    """Row/col offsets of the non-overlapping patches that fit entirely in the grid."""
    return [(r, c) for r in range(0, height - patch + 1, patch) for c in range(0, width - patch + 1, patch)]


def assign_splits(origins: Sequence[tuple[int, int]], params: SplitParams) -> np.ndarray:
    """Split code (0 train, 1 val, 2 test) per patch origin, assigned by spatial block.

    Blocks of ``split_block x split_block`` patches are shuffled with the seed and
    dealt out by the split fractions; val and test each get at least one block
    when there are three or more blocks.
    """
    block_px = params.patch * params.split_block
    blocks = sorted({(r // block_px, c // block_px) for r, c in origins})
    rng = np.random.default_rng(params.seed)
    order = rng.permutation(len(blocks))
    n = len(blocks)
    n_test = int(round(params.fractions[2] * n))
    n_val = int(round(params.fractions[1] * n))
    if n >= 3:
        n_test, n_val = max(1, n_test), max(1, n_val) if params.fractions[1] > 0 else 0
    n_test = min(n_test, n - 1)
    n_val = min(n_val, n - 1 - n_test)
    code = {}
    for rank, idx in enumerate(order):
        code[blocks[idx]] = 2 if rank < n_test else (1 if rank < n_test + n_val else 0)
    return np.array([code[(r // block_px, c // block_px)] for r, c in origins], dtype=np.int8)


def _read_band_rows(path: Path, row_off: int, n_rows: int, expected: int, grid: Grid) -> np.ndarray:
    import rasterio
    from rasterio.windows import Window

    with rasterio.open(path) as src:
        if (src.height, src.width) != grid.shape or src.count != expected:
            raise ValueError(f"{path}: expected {expected} band(s) on the working grid {grid.height}x{grid.width}, "
                             f"found {src.count} band(s) of {src.height}x{src.width}")
        arr = src.read(window=Window(0, row_off, grid.width, n_rows)).astype(np.float32)
        if src.nodata is not None and not np.isnan(src.nodata):
            arr[arr == np.float32(src.nodata)] = np.nan
    return arr


def build_cube(panda_path: str | Path, landsat_path: str | Path, dem_path: str | Path, grid: Grid,
               out_path: str | Path, *, year: int, chunk: int) -> Path:
    """Stack the resampled layers of ``year`` into a Zarr cube ``inputs`` (C, H, W)."""
    import zarr

    layers = [(Path(panda_path), len(PANDA_CHANNELS)), (Path(landsat_path), len(LANDSAT_CHANNELS)),
              (Path(dem_path), len(DEM_CHANNELS))]
    chunk = min(chunk, max(grid.height, grid.width))
    with atomic_path(out_path) as tmp:
        root = zarr.open_group(zarr.storage.LocalStore(tmp), mode="w")
        arr = root.create_array("inputs", shape=(len(CHANNELS), grid.height, grid.width), dtype="float32",
                                chunks=(len(CHANNELS), chunk, chunk), fill_value=np.nan,
                                dimension_names=("channel", "y", "x"))
        for r, n in row_bands(grid.height, chunk):
            arr[:, r:r + n, :] = np.concatenate([_read_band_rows(p, r, n, k, grid) for p, k in layers])
        root.attrs.update({"channels": list(CHANNELS), "year": int(year), "grid": grid.to_dict(),
                           "crs_wkt": grid.to_dict()["crs_wkt"], "transform": list(grid.transform)[:6]})
        write_grid_mapping(root, arr, grid)
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


def channel_stats(inputs: np.ndarray) -> tuple[list[float], list[float]]:
    """NaN-ignoring per-channel mean and std of (N, C, P, P) patches (std floored at 1e-6)."""
    mean, std = [], []
    for c in range(inputs.shape[1]):
        vals = inputs[:, c][np.isfinite(inputs[:, c])]
        mean.append(float(vals.mean()) if vals.size else 0.0)
        std.append(max(float(vals.std()) if vals.size else 1.0, 1e-6))
    return mean, std


def build_training_set(cube_paths: Mapping[int, str | Path], target_paths: Mapping[int, str | Path],
                       out_path: str | Path, params: SplitParams, *, min_valid: float = 0.5) -> Path:
    """Cut patches of every supervised year into ``train.zarr`` (see docs/contracts.md)."""
    import rasterio
    import zarr
    from rasterio.windows import Window

    if set(cube_paths) != set(target_paths):
        raise ValueError(f"years with cubes {sorted(cube_paths)} differ from years with targets {sorted(target_paths)}")
    P = params.patch
    inputs, targets, years, rows, cols = [], [], [], [], []
    grid = None
    for year in sorted(cube_paths):
        opened = open_cube(cube_paths[year])
        if opened.channels != CHANNELS:
            raise ValueError(f"{cube_paths[year]}: channels {list(opened.channels)} differ from the expected "
                             f"{list(CHANNELS)}")
        cube, cgrid = opened.inputs, opened.grid
        if grid is None:
            grid = cgrid
        elif not grid.same_as(cgrid):
            raise ValueError(f"{cube_paths[year]}: grid differs from the other years' cubes")
        with rasterio.open(target_paths[year]) as tgt:
            if (tgt.height, tgt.width) != grid.shape:
                raise ValueError(f"{target_paths[year]}: target is {tgt.height}x{tgt.width}, "
                                 f"the working grid is {grid.height}x{grid.width}")
            for r, c in patch_origins(grid.height, grid.width, P):
                t = tgt.read(1, window=Window(c, r, P, P)).astype(np.float32)
                if np.isfinite(t).mean() < min_valid:
                    continue
                x = np.asarray(cube[:, r:r + P, c:c + P])
                if not np.isfinite(x[0]).any():
                    continue
                inputs.append(x)
                targets.append(t[None])
                years.append(year)
                rows.append(r)
                cols.append(c)
    if not inputs:
        raise ValueError(f"no training patch of {P}x{P} px has >= {min_valid:.0%} valid target pixels in "
                         f"{', '.join(str(p) for p in target_paths.values())}")
    split = assign_splits(list(zip(rows, cols)), params)
    inputs_arr = np.stack(inputs)
    mean, std = channel_stats(inputs_arr[split == 0])
    n = len(inputs)
    with atomic_path(out_path) as tmp:
        root = zarr.open_group(zarr.storage.LocalStore(tmp), mode="w")
        root.create_array("inputs", data=inputs_arr, chunks=(1, len(CHANNELS), P, P))
        root.create_array("target", data=np.stack(targets), chunks=(1, 1, P, P))
        root.create_array("split", data=split)
        root.create_array("year", data=np.array(years, dtype=np.int32))
        root.create_array("row", data=np.array(rows, dtype=np.int32))
        root.create_array("col", data=np.array(cols, dtype=np.int32))
        root.attrs.update({"channels": list(CHANNELS), "patch": P, "grid": grid.to_dict(),
                           "normalization": {"mean": mean, "std": std},
                           "counts": {s: int((split == i).sum()) for i, s in enumerate(SPLITS)},
                           "n_patches": n, "seed": params.seed, "split_block": params.split_block})
    return Path(out_path)
