"""Mosaic stage: feathered (distance-weighted) average of overlapping Luojia-01 frames.

Each frame's weight at a pixel is its distance, in frame pixels, to the
nearest pixel outside the frame's valid footprint (or outside the raster), so
weights fall to zero at every frame edge and seams between frames with a
residual gain difference become smooth ramps instead of steps.

On the working grid the mosaic is ``sum_k avg(w_k L_k) / sum_k avg(w_k)``, where
``avg`` is the ``average`` warp of a frame onto the grid (NaN ignored). The
weighted sums are accumulated frame by frame in disk-backed arrays, so memory
is set by one frame and one output block, not by the grid.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Sequence

import numpy as np

from pandafine.core.grid import Grid
from pandafine.core.raster_io import geotiff_profile, iter_windows, open_writer, read_raster
from pandafine.core.scaling import RADIANCE_UNITS
from pandafine.core.windows import frame_bounds_on, grid_window_of, reproject_to_block


def feather_weights(valid_mask: np.ndarray) -> np.ndarray:
    """Euclidean distance (pixels) from each valid pixel to the nearest invalid pixel or the raster edge.

    Parameters
    ----------
    valid_mask : bool array (rows, cols)

    Returns
    -------
    numpy.ndarray
        float32; 0 on invalid pixels, 1 on valid pixels touching an invalid one
        or the raster edge, growing inward.
    """
    from scipy.ndimage import distance_transform_edt

    valid = np.asarray(valid_mask, dtype=bool)
    padded = np.pad(valid, 1, constant_values=False)
    return distance_transform_edt(padded)[1:-1, 1:-1].astype(np.float32)


def mosaic_frames(frame_paths: Sequence[str | Path], grid: Grid, out_path: str | Path,
                  window: int = 1024) -> Path:
    """Feathered mosaic of denoised frames on the working grid (float32 radiance, NaN where uncovered).

    Parameters
    ----------
    frame_paths : sequence of paths
        Denoised frames (radiance, NaN outside the footprint), any CRS.
    grid : Grid
        The working grid.
    out_path : path
        Output GeoTIFF, e.g. ``results/target/{year}.tif``.
    """
    frame_paths = [Path(p) for p in frame_paths]
    if not frame_paths:
        raise ValueError(f"{out_path}: no Luojia-01 frame to mosaic")
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    used = []
    with tempfile.TemporaryDirectory(prefix=f".{out_path.stem}.mosaic.", dir=out_path.parent) as tmp:
        num = np.lib.format.open_memmap(Path(tmp) / "num.npy", mode="w+", dtype=np.float32, shape=grid.shape)
        den = np.lib.format.open_memmap(Path(tmp) / "den.npy", mode="w+", dtype=np.float32, shape=grid.shape)
        for p in frame_paths:
            rad, fgrid = read_raster(p)
            rad = rad[0]
            block = grid_window_of(frame_bounds_on(fgrid, grid), grid)
            if block is None:
                continue
            valid = np.isfinite(rad)
            w = feather_weights(valid).astype(np.float64)
            w[~valid] = np.nan
            wl = w * rad
            r0, c0, h, wd = block
            num[r0:r0 + h, c0:c0 + wd] += np.nan_to_num(reproject_to_block(wl, fgrid, grid, block))
            den[r0:r0 + h, c0:c0 + wd] += np.nan_to_num(reproject_to_block(w, fgrid, grid, block))
            used.append(p.name)
        profile = geotiff_profile(grid, 1, "float32", float("nan"))
        tags = {"units": RADIANCE_UNITS, "frames": ",".join(used), "weights": "distance to footprint edge"}
        with open_writer(out_path, profile, ["radiance"], tags) as dst:
            for win in iter_windows(grid.width, grid.height, window):
                sl = (slice(win.row_off, win.row_off + win.height), slice(win.col_off, win.col_off + win.width))
                d = np.asarray(den[sl])
                with np.errstate(invalid="ignore", divide="ignore"):
                    out = np.where(d > 0, np.asarray(num[sl]) / d, np.nan).astype(np.float32)
                dst.write(out[None], window=win)
        del num, den
    return out_path
