"""Denoise stage: clean Luojia-01 frames; build yearly Landsat composites on the working grid.

Luojia-01 (per frame, on the frame's own grid):

1. footprint edge erosion (``erode`` pixels; the frame edge carries stray light
   and partially covered pixels),
2. isolated hot pixel / spike removal: a pixel brighter than ``spike_factor``
   times the *brightest* of its (valid) 8 neighbours and above the background
   is replaced by the median of those neighbours. (Comparing with the
   neighbourhood median instead also flattens real lights, e.g. a lit street
   crossing or a single-pixel road segment: on the synthetic scene that changed
   lit pixels by ~2 % on average, the max rule by ~0 %, with every injected hot
   pixel still removed.)
3. background cut-off: radiance below ``preprocess.luojia_background`` -> 0.

Landsat (per year, on the working grid): every calibrated scene of the year is
warped with ``average`` resampling (NaN ignored), the per-pixel per-band median
of the clear observations is taken and their number is band 8
``clear_count``; pixels without any clear observation are filled from the
nearest years (year +/- 1, then +/- 2, ... up to
``preprocess.landsat_gapfill_years``, both sides pooled) and keep
``clear_count`` 0. Work goes block by block over the grid. The composite's
tags record its coverage (``clear_coverage``: fraction of the grid with a clear
observation in the year itself; ``valid_coverage``: after gap filling); a
composite valid on less than ``preprocess.min_landsat_coverage`` of the grid
(scenes of another place, a search that found nothing) is an error.
"""

from __future__ import annotations

import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from pandafine.core.atomic import atomic_path
from pandafine.core.channels import LANDSAT_BANDS
from pandafine.core.grid import Grid
from pandafine.core.raster_io import (
    geotiff_profile,
    grid_of,
    iter_windows,
    open_raster,
    open_writer,
    read_raster,
    write_raster,
)
from pandafine.core.scaling import RADIANCE_UNITS
from pandafine.core.windows import frame_bounds_on, grid_window_of, intersect_blocks

#: Band names of the yearly Landsat composite.
COMPOSITE_BANDS = LANDSAT_BANDS + ("clear_count",)
#: Block edge (working pixels) of the Landsat composite.
COMPOSITE_WINDOW = 512
#: Default of ``preprocess.min_landsat_coverage``: the composite (gap filling included) must be valid on
#: at least this fraction of the working grid.
DEFAULT_MIN_LANDSAT_COVERAGE = 0.9

_NEIGHBOURS = [(dr, dc) for dr in (0, 1, 2) for dc in (0, 1, 2) if (dr, dc) != (1, 1)]


# ----------------------------------------------------------------------------- Luojia-01 (pure)


def neighbour_median(x: np.ndarray, rows: int = 512) -> np.ndarray:
    """Median of the valid (finite) values among each pixel's 8 neighbours, the pixel itself excluded.

    Pixels outside the array count as missing. NaN where no neighbour is valid.
    Computed ``rows`` rows at a time (memory ~ 8 x rows x width).
    """
    x = np.asarray(x, dtype=np.float32)
    h, w = x.shape
    p = np.pad(x, 1, constant_values=np.nan)
    out = np.empty_like(x)
    for r0 in range(0, h, rows):
        r1 = min(h, r0 + rows)
        stack = np.stack([p[r0 + dr:r1 + dr, dc:dc + w] for dr, dc in _NEIGHBOURS])
        stack.sort(axis=0)  # NaN sort last
        n = np.isfinite(stack).sum(axis=0)
        lo = np.take_along_axis(stack, np.clip((n - 1) // 2, 0, 7)[None], axis=0)[0]
        hi = np.take_along_axis(stack, np.clip(n // 2, 0, 7)[None], axis=0)[0]
        med = 0.5 * (lo + hi)
        med[n == 0] = np.nan
        out[r0:r1] = med
    return out


def neighbour_max(x: np.ndarray) -> np.ndarray:
    """Largest valid (finite) value among each pixel's 8 neighbours, the pixel itself excluded.

    Pixels outside the array count as missing. NaN where no neighbour is valid.
    """
    x = np.asarray(x, dtype=np.float32)
    h, w = x.shape
    p = np.pad(np.where(np.isfinite(x), x, -np.inf), 1, constant_values=-np.inf)
    out = np.full(x.shape, -np.inf, np.float32)
    for dr, dc in _NEIGHBOURS:
        np.maximum(out, p[dr:dr + h, dc:dc + w], out=out)
    out[np.isneginf(out)] = np.nan
    return out


def remove_spikes(x: np.ndarray, factor: float, background: float) -> tuple[np.ndarray, np.ndarray]:
    """Replace isolated spikes (single hot pixels) by their neighbour median.

    A spike is a valid pixel with ``x > factor * max(neighbours)`` and
    ``x > background``: brighter than every one of its 8 valid neighbours by
    more than ``factor``. Returns the cleaned array and the spike mask.
    """
    x = np.asarray(x, dtype=np.float32)
    nmax = neighbour_max(x)
    with np.errstate(invalid="ignore"):
        spike = np.isfinite(x) & np.isfinite(nmax) & (x > factor * nmax) & (x > background)
    med = neighbour_median(x)
    return np.where(spike, med, x).astype(np.float32), spike


def cut_background(x: np.ndarray, background: float) -> np.ndarray:
    """Set radiance below ``background`` to 0 (NaN stays NaN)."""
    x = np.asarray(x, dtype=np.float32)
    with np.errstate(invalid="ignore"):
        return np.where(x < background, np.float32(0), x).astype(np.float32)


def erode_footprint(x: np.ndarray, pixels: int = 1) -> np.ndarray:
    """NaN the outer ``pixels`` rings of the valid area (8-connected; the array edge counts as outside)."""
    if pixels <= 0:
        return np.asarray(x, dtype=np.float32)
    from scipy.ndimage import binary_erosion

    x = np.array(x, dtype=np.float32)
    valid = np.isfinite(x)
    kept = binary_erosion(valid, structure=np.ones((3, 3), bool), iterations=pixels, border_value=0)
    x[valid & ~kept] = np.nan
    return x


def denoise_frame(radiance: np.ndarray, background: float, spike_factor: float, erode: int = 1) -> np.ndarray:
    """Edge erosion, spike removal and background cut-off of one radiance frame (NaN outside footprint)."""
    x = erode_footprint(radiance, erode)
    x, _ = remove_spikes(x, spike_factor, background)
    return cut_background(x, background)


# ----------------------------------------------------------------------------- Luojia-01 (files)


def denoise_luojia_year(cfg: Mapping[str, Any], in_dir: str | Path, out_dir: str | Path,
                        erode: int = 1) -> list[Path]:
    """Denoise every calibrated frame ``{in_dir}/*.tif`` into ``out_dir`` (same grid); copy gains.json."""
    in_dir, out_dir = Path(in_dir), Path(out_dir)
    pre = cfg["preprocess"]
    background, factor = float(pre["luojia_background"]), float(pre["spike_factor"])
    frames = sorted(in_dir.glob("*.tif"))
    if not frames:
        raise FileNotFoundError(f"{in_dir}: no calibrated Luojia-01 frame (*.tif)")
    gains = in_dir / "gains.json"
    if not gains.is_file():
        raise FileNotFoundError(f"{gains}: missing; the calibrate stage writes it beside the frames")
    outs = []
    for f in frames:
        rad, grid = read_raster(f)
        clean = denoise_frame(rad[0], background, factor, erode)
        outs.append(write_raster(out_dir / f.name, clean, grid, nodata=float("nan"), band_names=["radiance"],
                                 tags={"units": RADIANCE_UNITS, "background": background,
                                       "spike_factor": factor, "edge_erosion": erode}))
    with atomic_path(out_dir / "gains.json") as tmp:
        shutil.copyfile(gains, tmp)
    return outs


# ----------------------------------------------------------------------------- Landsat composite (pure)


def median_composite(stack: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel per-band median of clear observations.

    Parameters
    ----------
    stack : numpy.ndarray
        (n_obs, bands, rows, cols) with NaN for masked values. An observation is
        clear at a pixel only if all its bands are finite there.

    Returns
    -------
    median : (bands, rows, cols) float32, NaN where no clear observation
    count : (rows, cols) int, number of clear observations
    """
    stack = np.asarray(stack, dtype=np.float32)
    if stack.shape[0] == 0:
        return np.full(stack.shape[1:], np.nan, np.float32), np.zeros(stack.shape[2:], np.int64)
    clear = np.isfinite(stack).all(axis=1)
    count = clear.sum(axis=0)
    ordered = np.sort(np.where(clear[:, None], stack, np.nan), axis=0)  # NaN sort last
    # median of the first `count` values: mean of the two middle ones (one when count is odd)
    lo = np.broadcast_to(np.maximum(count - 1, 0) // 2, ordered.shape[1:])[None]
    hi = np.broadcast_to(count // 2, ordered.shape[1:])[None]
    hi = np.minimum(hi, stack.shape[0] - 1)
    med = 0.5 * (np.take_along_axis(ordered, lo, axis=0)[0] + np.take_along_axis(ordered, hi, axis=0)[0])
    med[:, count == 0] = np.nan
    return med.astype(np.float32), count


# ----------------------------------------------------------------------------- Landsat composite (files)


def _scene_blocks(paths: Sequence[Path], grid: Grid) -> list[tuple[Path, tuple[int, int, int, int]]]:
    out = []
    for p in paths:
        block = grid_window_of(frame_bounds_on(grid_of(p), grid), grid)
        if block is not None:
            out.append((p, block))
    return out


def _warp_block(path: Path, grid: Grid, block: tuple[int, int, int, int], pad: int = 2) -> np.ndarray:
    """Bands of ``path`` warped (average, NaN ignored) onto a block of ``grid``.

    Only the source window under the block (plus ``pad`` pixels) is read and
    warped, so the cost of a block does not grow with the scene or the grid.
    """
    from rasterio.crs import CRS
    from rasterio.enums import Resampling
    from rasterio.warp import reproject, transform_bounds
    from rasterio.windows import Window, from_bounds

    r0, c0, h, w = block
    dst_t = grid.window_transform(r0, c0)
    dst_crs = CRS.from_user_input(grid.crs)
    with open_raster(path) as src:
        out = np.full((src.count, h, w), np.nan, np.float32)
        (left, right), (top, bottom) = zip(dst_t * (0, 0), dst_t * (w, h))
        bounds = transform_bounds(dst_crs, src.crs, min(left, right), min(top, bottom), max(left, right),
                                  max(top, bottom), densify_pts=21)
        win = from_bounds(*bounds, transform=src.transform)
        col0 = max(0, int(np.floor(win.col_off)) - pad)
        row0 = max(0, int(np.floor(win.row_off)) - pad)
        col1 = min(src.width, int(np.ceil(win.col_off + win.width)) + pad)
        row1 = min(src.height, int(np.ceil(win.row_off + win.height)) + pad)
        if col1 <= col0 or row1 <= row0:
            return out
        win = Window(col0, row0, col1 - col0, row1 - row0)
        data = src.read(window=win).astype(np.float32)
        reproject(data, out, src_transform=src.window_transform(win), src_crs=src.crs, src_nodata=np.nan,
                  dst_transform=dst_t, dst_crs=dst_crs, dst_nodata=np.nan, resampling=Resampling.average)
    return out


def _composite_block(scenes: Sequence[tuple[Path, tuple[int, int, int, int]]], grid: Grid,
                     block: tuple[int, int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    obs = []
    for path, sblock in scenes:
        if intersect_blocks(sblock, block) is not None:
            obs.append(_warp_block(path, grid, block))
    stack = np.stack(obs) if obs else np.empty((0, len(LANDSAT_BANDS), block[2], block[3]), np.float32)
    return median_composite(stack)


def _year_scenes(calibrated_year_dirs: Mapping[int, Path], year: int) -> list[Path]:
    d = calibrated_year_dirs.get(year)
    return sorted(Path(d).glob("*.tif")) if d is not None and Path(d).is_dir() else []


def composite_landsat_year(cfg: Mapping[str, Any], year: int, calibrated_year_dirs: Mapping[int, str | Path],
                           grid: Grid, out_path: str | Path, window: int = COMPOSITE_WINDOW) -> Path:
    """Write the 8-band Landsat composite of ``year`` on the working grid.

    Parameters
    ----------
    cfg : mapping
        Validated config (``preprocess.landsat_gapfill_years``).
    year : int
    calibrated_year_dirs : mapping year -> directory of calibrated scenes ``*.tif``
        Must hold ``year`` and may hold neighbouring years for gap filling.
    grid : Grid
        The working grid.
    out_path : path
        Output GeoTIFF: bands ``coastal .. swir2`` (median of clear
        observations; gap-filled from neighbouring years) and ``clear_count``
        (clear observations in ``year`` itself; 0 where gap-filled).
    """
    max_gap = int(cfg["preprocess"]["landsat_gapfill_years"])
    min_coverage = float(cfg["preprocess"].get("min_landsat_coverage", DEFAULT_MIN_LANDSAT_COVERAGE))
    dirs = {int(k): Path(v) for k, v in calibrated_year_dirs.items()}
    own = _scene_blocks(_year_scenes(dirs, year), grid)
    neighbours = []  # per distance d: the pooled scenes of year - d and year + d
    for d in range(1, max_gap + 1):
        neighbours.append(_scene_blocks(_year_scenes(dirs, year - d) + _year_scenes(dirs, year + d), grid))
    if not own and not any(neighbours) and min_coverage > 0:
        raise ValueError(landsat_coverage_message(year, dirs, grid, 0.0, min_coverage, max_gap))
    if not own:
        warnings.warn(f"Landsat {year}: no calibrated scene over the working grid "
                      f"(looked in {dirs.get(year)}); the composite is gap-filled from neighbouring years",
                      stacklevel=2)
    profile = geotiff_profile(grid, len(COMPOSITE_BANDS), "float32", float("nan"), zlevel=1)
    unfilled = clear = 0
    with open_writer(out_path, profile, COMPOSITE_BANDS) as dst:
        for w in iter_windows(grid.width, grid.height, window):
            block = (w.row_off, w.col_off, w.height, w.width)
            med, count = _composite_block(own, grid, block)
            clear += int((count > 0).sum())
            gap = count == 0
            for scenes in neighbours:
                if not gap.any():
                    break
                if not scenes:
                    continue
                fill, fcount = _composite_block(scenes, grid, block)
                use = gap & (fcount > 0)
                med[:, use] = fill[:, use]
                gap &= ~use
            unfilled += int(gap.sum())
            dst.write(np.concatenate([med, count[None].astype(np.float32)]), window=w)
        coverage = LandsatCoverage(year, len(own), clear / (grid.width * grid.height),
                                    1.0 - unfilled / (grid.width * grid.height))
        if coverage.valid < min_coverage:
            raise ValueError(landsat_coverage_message(year, dirs, grid, coverage.valid, min_coverage, max_gap))
        dst.update_tags(year=year, units="surface reflectance (OLI-equivalent)", gapfill_years=max_gap,
                        **coverage.tags())
    if unfilled:
        warnings.warn(f"Landsat {year}: {unfilled} working-grid pixel(s) have no clear observation within "
                      f"+/-{max_gap} year(s); they are NaN in {out_path}", stacklevel=2)
    print(f"Landsat {year}: {len(own)} scene(s) over the grid; clear observations on "
          f"{100 * coverage.clear:.1f} % of it, valid after gap filling on {100 * coverage.valid:.1f} %")
    return Path(out_path)


@dataclass(frozen=True)
class LandsatCoverage:
    """How much of the working grid a yearly Landsat composite covers (fractions 0..1)."""

    year: int
    scenes: int
    #: fraction with at least one clear observation in the year itself
    clear: float
    #: fraction valid after gap filling from neighbouring years
    valid: float

    def tags(self) -> dict[str, str]:
        """GeoTIFF tags of the composite."""
        return {"scenes": str(self.scenes), "clear_coverage": f"{self.clear:.6f}",
                "valid_coverage": f"{self.valid:.6f}"}

    @classmethod
    def from_tags(cls, tags: Mapping[str, str]) -> "LandsatCoverage":
        """Read back what :meth:`tags` wrote (``KeyError`` for a composite without them)."""
        return cls(int(tags["year"]), int(tags["scenes"]), float(tags["clear_coverage"]),
                   float(tags["valid_coverage"]))


def landsat_coverage_message(year: int, dirs: Mapping[int, Path], grid: Grid, coverage: float,
                             min_coverage: float, max_gap: int) -> str:
    """Why a Landsat composite was refused: how much of the grid it covers, where the scenes lie."""
    from rasterio.warp import transform_bounds

    years = [y for y in range(year - max_gap, year + max_gap + 1) if y in dirs]
    feet = []
    for y in years:
        for p in _year_scenes(dirs, y):
            g = grid_of(p)
            try:
                feet.append(f"{p.name} {tuple(round(v) for v in transform_bounds(g.crs, grid.crs, *g.bounds))}")
            except Exception:  # a footprint that does not transform is reported in its own CRS
                feet.append(f"{p.name} {tuple(g.bounds)} in its own CRS")
    where = ("scene footprints (in the grid's CRS): " + "; ".join(feet[:5]) + (" ..." if len(feet) > 5 else "")
             if feet else f"no calibrated scene at all in {', '.join(str(dirs[y]) for y in years) or 'no directory'}")
    return (f"Landsat {year}: the composite is valid on {100 * coverage:.1f} % of the working grid "
            f"(clear observations of {year} +/- {max_gap} year(s)), less than preprocess.min_landsat_coverage = "
            f"{100 * min_coverage:g} %: {where}; the working grid's bounds are "
            f"{tuple(round(v) for v in grid.bounds)}. Are the scenes of another place, or did the search find "
            f"none? (set preprocess.min_landsat_coverage lower to accept a partial composite)")
