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
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from pandafine.core.grid import Grid
from pandafine.core.raster_io import geotiff_profile, iter_windows, open_writer, read_raster
from pandafine.core.scaling import RADIANCE_UNITS
from pandafine.core.windows import frame_bounds_on, grid_window_of, intersect_blocks, reproject_to_block


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

    Each frame's weighted radiance and weights are warped once onto the block of
    the grid under the frame and kept in temporary files beside the output; the
    mosaic is then written window by window, summing the frames that touch the
    window (in frame order: the result does not depend on ``window``). Memory is
    set by one frame and one window, disk by the frames, neither by the grid.

    Parameters
    ----------
    frame_paths : sequence of paths
        Denoised frames (radiance, NaN outside the footprint), any CRS.
    grid : Grid
        The working grid.
    out_path : path
        Output GeoTIFF, e.g. ``results/target/{year}.tif``.
    window : int
        Edge of the output windows (working pixels).
    """
    frame_paths = [Path(p) for p in frame_paths]
    if not frame_paths:
        raise ValueError(f"{out_path}: no Luojia-01 frame to mosaic")
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{out_path.stem}.mosaic.", dir=out_path.parent) as tmp:
        frames = [f for i, p in enumerate(frame_paths) if (f := _feathered(p, grid, Path(tmp) / str(i))) is not None]
        profile = geotiff_profile(grid, 1, "float32", float("nan"))
        tags = {"units": RADIANCE_UNITS, "frames": ",".join(f.name for f in frames),
                "weights": "distance to footprint edge"}
        with open_writer(out_path, profile, ["radiance"], tags) as dst:
            for win in iter_windows(grid.width, grid.height, window):
                dst.write(_mosaic_window(frames, (win.row_off, win.col_off, win.height, win.width))[None],
                          window=win)
    return out_path


@dataclass(frozen=True)
class _FeatheredFrame:
    """A frame's weighted radiance and weights warped onto its block of the grid (float64 ``.npy`` files)."""

    name: str
    weighted: Path
    weights: Path
    block: tuple[int, int, int, int]


def _feathered(path: Path, grid: Grid, stem: Path) -> _FeatheredFrame | None:
    """Write ``avg(w L)`` and ``avg(w)`` of one frame on its block under ``stem``; None if it misses the grid."""
    rad, fgrid = read_raster(path)
    rad = rad[0]
    block = grid_window_of(frame_bounds_on(fgrid, grid), grid)
    if block is None:
        return None
    valid = np.isfinite(rad)
    w = feather_weights(valid).astype(np.float64)
    w[~valid] = np.nan
    weighted, weights = stem.with_suffix(".wl.npy"), stem.with_suffix(".w.npy")
    np.save(weighted, np.nan_to_num(reproject_to_block(w * rad, fgrid, grid, block)))
    np.save(weights, np.nan_to_num(reproject_to_block(w, fgrid, grid, block)))
    return _FeatheredFrame(path.name, weighted, weights, block)


def _mosaic_window(frames: Sequence[_FeatheredFrame], window: tuple[int, int, int, int]) -> np.ndarray:
    """``sum_k avg(w_k L_k) / sum_k avg(w_k)`` on one window of the grid (float32, NaN where uncovered)."""
    r0, c0, h, w = window
    num = np.zeros((h, w), np.float32)
    den = np.zeros((h, w), np.float32)
    for f in frames:
        part = intersect_blocks(f.block, window)
        if part is None:
            continue
        pr, pc, ph, pw = part
        out = (slice(pr - r0, pr - r0 + ph), slice(pc - c0, pc - c0 + pw))
        src = (slice(pr - f.block[0], pr - f.block[0] + ph), slice(pc - f.block[1], pc - f.block[1] + pw))
        num[out] += np.load(f.weighted, mmap_mode="r")[src]
        den[out] += np.load(f.weights, mmap_mode="r")[src]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / den, np.nan).astype(np.float32)
