"""Calibrate stage: raw products -> physical, comparable values on their own grids.

* PANDA: DN (any dtype, int8 included) -> float32 ``dn`` (NaN nodata) + ``saturated``.
* Landsat is calibrated where it is read, per (year, block), straight onto the working grid
  (:mod:`pandafine.preprocess.landsat_composite`).
* Luojia-01: DN -> radiance, footprint masking (:mod:`pandafine.sensors.luojia`) and
  relative inter-calibration of the frames of a year: registered, outlier-screened
  flux ratios on the overlaps (on the working grid), gains by pixel-weighted
  network least squares in log space.
* DEM: tiles (any CRS) merged into one float32 raster.

Pure computations are the functions without a path argument; the
``calibrate_*`` functions do the file I/O.
"""

from __future__ import annotations

import contextlib
import json
import math
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from pandafine.core.atomic import atomic_path, write_text_atomic
from pandafine.core.grid import Grid
from pandafine.core.raster_io import (
    float_profile,
    grid_of,
    iter_windows,
    open_georeferenced,
    open_writer,
    write_raster,
)
from pandafine.core.runtime import gdal_cache_limit
from pandafine.core.scaling import RADIANCE_UNITS
from pandafine.core.windows import frame_bounds_on, grid_window_of, intersect_blocks, reproject_to_block
from pandafine.preprocess.denoise import remove_spikes
from pandafine.sensors.luojia import footprint_mask, frame_radiance, parse_meta_xml

#: Largest valid PANDA / DMSP-like DN; DN >= this is saturated.
PANDA_DN_MAX = 63
#: Pixels lit in both frames needed before an overlap ratio is trusted.
MIN_PAIR_PIXELS = 20
#: Edge of the square windows used for window-by-window processing (pixels).
WINDOW = 1024
#: Edge of the square windows the PANDA file is calibrated in, in its own 1 km cells: 256 cells are
#: 2048 working pixels (125 m) and one 256 px tile of the output, so each window writes whole tiles.
#: A window holds ~2 MiB of arrays; with :data:`WINDOW` cells, a 1000 km region (~1000 cells per
#: side) was one window, and memory grew with the region up to 1024 cells per side.
PANDA_WINDOW = 256
#: Edge (pixels of the merged DEM) of the square chunks the DEM tiles are merged in, a multiple of the
#: output's 256 px tiles: each chunk writes whole tiles and holds 16 MiB of float32. (1024 px used
#: ~40 MiB less but more CPU, 24-26 s user against 21-24 s at 8000² px: the tiles' blocks along a chunk
#: row's lower edge are decoded again by the next row once the bounded GDAL cache has dropped them.)
DEM_MERGE_CHUNK = 2048
#: Gaussian smoothing (working pixels) of the overlap images before registration.
REGISTRATION_SIGMA = 1.0
#: Largest frame-to-frame shift (working pixels) the registration may apply.
MAX_SHIFT = 3.0
#: Cells (working pixels per side) whose flux ratios are screened for outliers.
RATIO_BLOCK = 8
#: Hot-pixel screen before the overlap comparison: a pixel > this x its brightest neighbour
#: (:func:`pandafine.preprocess.denoise.remove_spikes`, on the native frame grid) ...
CALIBRATION_SPIKE_FACTOR = 10.0
#: ... and, on the working grid, pixels > this x the 99th percentile of the lit pixels
#: (hot pixels are tens to hundreds of times brighter than any light; a warp may split them).
CALIBRATION_HOT_FACTOR = 5.0


# ----------------------------------------------------------------------------- I/O helpers


def _grid_of_dataset(src) -> Grid:
    return Grid(src.crs.to_wkt(), src.transform, src.width, src.height, 1)


# ----------------------------------------------------------------------------- PANDA


def panda_out_of_range(dn: np.ndarray) -> np.ndarray:
    """True where a valid (finite) DN lies outside 0..63."""
    with np.errstate(invalid="ignore"):
        return np.isfinite(dn) & ((dn < 0) | (dn > PANDA_DN_MAX))


def panda_bands(dn: np.ndarray) -> np.ndarray:
    """``(2, rows, cols)`` float32: clipped DN and the saturation flag (NaN where DN is NaN).

    Parameters
    ----------
    dn : numpy.ndarray
        DN as float with NaN for nodata.
    """
    dn = np.asarray(dn, dtype=np.float32)
    clipped = np.clip(dn, 0, PANDA_DN_MAX)
    sat = np.where(np.isnan(clipped), np.nan, (clipped >= PANDA_DN_MAX).astype(np.float32))
    return np.stack([clipped, sat.astype(np.float32)])


def _signed_byte(src) -> bool:
    # GDAL < 3.7 exposes int8 rasters as Byte with PIXELTYPE=SIGNEDBYTE.
    return src.dtypes[0] == "uint8" and src.tags(1, ns="IMAGE_STRUCTURE").get("PIXELTYPE") == "SIGNEDBYTE"


def read_dn_window(src, window=None, band: int = 1) -> np.ndarray:
    """Band ``band`` of an open dataset as float64 DN, NaN where masked (nodata, mask band, NaN)."""
    raw = src.read(band, window=window)
    if _signed_byte(src):
        raw = raw.view(np.int8)
    dn = raw.astype(np.float64)
    valid = src.read_masks(band, window=window) > 0
    dn[~valid] = np.nan
    return dn


def calibrate_panda(cfg: Mapping[str, Any], raw_path: str | Path, out_path: str | Path) -> Path:
    """Write PANDA DN as float32 band ``dn`` + band ``saturated`` on the file's own grid.

    Parameters
    ----------
    cfg : mapping
        Validated config; ``preprocess.panda_out_of_range`` is ``'error'`` or ``'clip'``.
    raw_path : path
        A PANDA / DMSP-like raster (any CRS, any dtype including int8; band 1 is read).
    out_path : path
        Output GeoTIFF (2 bands float32, NaN nodata).

    Raises
    ------
    ValueError
        If the raster has no CRS or transform, or (mode ``'error'``) if valid
        DN fall outside 0..63 (the message gives the file and the count).

    Notes
    -----
    The file is read in :data:`PANDA_WINDOW` windows, once to check the DN and
    once per output band, with GDAL's block cache bounded
    (:func:`pandafine.core.runtime.gdal_cache_limit`), so memory does not grow
    with the file.
    """
    raw_path, out_path = Path(raw_path), Path(out_path)
    mode = cfg["preprocess"]["panda_out_of_range"]
    if mode not in ("error", "clip"):
        raise ValueError(f"preprocess.panda_out_of_range={mode!r}; expected 'error' or 'clip'")
    with gdal_cache_limit(), open_georeferenced(raw_path) as src:
        # Pass 1: count DN outside 0..63 (cheap: one band, read window by window).
        n_bad, lo, hi = 0, math.inf, -math.inf
        for w in iter_windows(src.width, src.height, PANDA_WINDOW):
            dn = read_dn_window(src, w)
            bad = panda_out_of_range(dn)
            if bad.any():
                n_bad += int(bad.sum())
                lo, hi = min(lo, float(dn[bad].min())), max(hi, float(dn[bad].max()))
        if n_bad:
            msg = (f"{raw_path}: {n_bad} pixel(s) have DN outside 0..{PANDA_DN_MAX} "
                   f"(range of those: {lo:g}..{hi:g})")
            if mode == "error":
                raise ValueError(msg + "; set preprocess.panda_out_of_range: clip to clip them")
            warnings.warn(msg + f"; clipped to 0..{PANDA_DN_MAX}", stacklevel=2)
        # Pass 2: write.
        profile = float_profile(src.crs, src.transform, src.width, src.height, 2)
        tags = {"source": raw_path.name, "units": "DN", "out_of_range_clipped": n_bad if mode == "clip" else 0}
        with open_writer(out_path, profile, ("dn", "saturated"), tags) as dst:
            # band by band: the tiles land in the file in the order of a one-window write (band 1, then band 2)
            for band in (1, 2):
                for w in iter_windows(src.width, src.height, PANDA_WINDOW):
                    dst.write(panda_bands(read_dn_window(src, w))[band - 1], band, window=w)
    return out_path


# ----------------------------------------------------------------------------- Luojia-01


def luojia_frames(raw_year_dir: str | Path) -> list[tuple[str, Path, Path]]:
    """(frame_id, tif, meta.xml) of every frame of a raw Luojia year directory, sorted by id."""
    raw_year_dir = Path(raw_year_dir)
    if not raw_year_dir.is_dir():
        raise FileNotFoundError(f"{raw_year_dir}: no such Luojia year directory")
    frames = []
    for tif in sorted(list(raw_year_dir.glob("*.tif")) + list(raw_year_dir.glob("*.TIF"))):
        xml = tif.with_name(f"{tif.stem}_meta.xml")
        if not xml.is_file():
            raise FileNotFoundError(f"{tif}: missing footprint file {xml.name}")
        frames.append((tif.stem, tif, xml))
    if not frames:
        raise FileNotFoundError(f"{raw_year_dir}: no Luojia-01 frame (*.tif with *_meta.xml)")
    return frames


def load_luojia_radiance(tif: str | Path, xml: str | Path) -> tuple[np.ndarray, Grid]:
    """Radiance of one raw frame (float32, NaN outside the footprint) and the frame's grid."""
    with open_georeferenced(tif) as src:
        dn = src.read(1)
        grid = _grid_of_dataset(src)
        crs = src.crs
    inside = footprint_mask(parse_meta_xml(xml), dn.shape, grid.transform, crs)
    rad = frame_radiance(dn, inside)
    if not np.isfinite(rad).any():
        raise ValueError(f"{tif}: no pixel of the frame lies inside its footprint ({Path(xml).name})")
    return rad, grid


@dataclass(frozen=True)
class PairRatio:
    """Radiance ratio of two frames on their overlap.

    Attributes
    ----------
    ratio : float
        ``L_a / L_b`` after registering ``a`` onto ``b``.
    pixels : int
        Working-grid pixels lit in both that entered the ratio (its weight in :func:`solve_gains`).
    shift : (float, float)
        ``(drow, dcol)`` (working pixels) by which ``a`` was moved to match ``b``.
    """

    ratio: float
    pixels: int
    shift: tuple[float, float]


def _nan_smooth(x: np.ndarray, valid: np.ndarray, sigma: float) -> np.ndarray:
    """Normalized-convolution Gaussian smoothing of ``x`` over ``valid`` pixels (NaN elsewhere)."""
    from scipy.ndimage import gaussian_filter

    num = gaussian_filter(np.where(valid, x, 0.0), sigma)
    den = gaussian_filter(valid.astype(np.float64), sigma)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(valid, num / den, np.nan)


def _block_sums(x: np.ndarray, k: int) -> np.ndarray:
    h, w = x.shape
    p = np.zeros((-(-h // k) * k, -(-w // k) * k))
    p[:h, :w] = x
    return p.reshape(p.shape[0] // k, k, p.shape[1] // k, k).sum(axis=(1, 3))


def register_shift(a: np.ndarray, b: np.ndarray, background: float, sigma: float = REGISTRATION_SIGMA,
                   max_shift: float = MAX_SHIFT) -> tuple[float, float, np.ndarray]:
    """Sub-pixel shift that moves ``a`` onto ``b`` (one linearized least-squares step).

    Both arrays are smoothed (Gaussian ``sigma`` pixels, NaN-aware) and
    ``b ~ c a + u da/dx + v da/dy`` is fitted on the interior of their common
    area (pixels lit in either; hot pixels must be screened out first, see
    :func:`overlap_ratio`); then ``a(x + d)`` with ``d = (v/c, u/c)``
    matches ``b``. Luojia-01 frames carry geolocation errors of a fraction of a
    pixel; on a steep radiance profile (a city edge) they bias overlap ratios by
    several percent unless removed.

    Returns
    -------
    (drow, dcol, interior) : shift to apply with ``scipy.ndimage.shift`` to ``a``
        (both clipped to ``+/-max_shift``) and the interior mask used.
    """
    from scipy.ndimage import binary_erosion

    both = np.isfinite(a) & np.isfinite(b)
    inner = binary_erosion(both, iterations=int(math.ceil(3 * sigma)) + 2, border_value=0)
    if inner.sum() < MIN_PAIR_PIXELS:
        inner = both
    sa, sb = _nan_smooth(a, both, sigma), _nan_smooth(b, both, sigma)
    gy, gx = np.gradient(np.where(both, sa, 0.0))
    with np.errstate(invalid="ignore"):
        m = inner & np.isfinite(gx) & np.isfinite(gy) & ((sa > background) | (sb > background))
    if m.sum() < MIN_PAIR_PIXELS:
        return 0.0, 0.0, inner
    coef, *_ = np.linalg.lstsq(np.stack([sa[m], gx[m], gy[m]], axis=1), sb[m], rcond=None)
    c, u, v = (float(t) for t in coef)
    if not (np.isfinite(c) and c > 0):
        return 0.0, 0.0, inner
    # b(x) ~ c a(x + d); scipy.ndimage.shift(a, s)(x) = a(x - s), so s = -d.
    clip = lambda t: float(np.clip(t, -max_shift, max_shift))  # noqa: E731
    return clip(-v / c), clip(-u / c), inner


def overlap_ratio(a: np.ndarray, b: np.ndarray, background: float, min_pixels: int = MIN_PAIR_PIXELS,
                  block: int = RATIO_BLOCK, clip: float = 3.0) -> PairRatio | None:
    """Robust radiance ratio ``a / b`` of two frames warped onto the same block of the working grid.

    0. pixels brighter than ``CALIBRATION_HOT_FACTOR`` times the 99th percentile
       of the lit pixels (hot pixels) are dropped from both;
    1. ``a`` is registered onto ``b`` (:func:`register_shift`, bilinear shift);
    2. pixels lit (> ``background``) in both and away from the overlap's edge
       are summed per ``block x block`` cell;
    3. cells whose log ratio lies more than ``clip`` robust standard deviations
       (1.4826 MAD) from the median are dropped (hot pixels, residual
       misregistration on sharp lights);
    4. the ratio is sum(a) / sum(b) over the kept cells (a flux ratio: noise and
       the sampling of sub-pixel features average out, unlike a per-pixel median).

    Returns
    -------
    PairRatio or None
        None when fewer than ``min_pixels`` pixels are lit in both.
    """
    from scipy.ndimage import shift as nd_shift

    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        both = np.isfinite(a) & np.isfinite(b)
        lit2 = both & (a > background) & (b > background)
        if int(lit2.sum()) < min_pixels:
            return None
        bound = CALIBRATION_HOT_FACTOR * float(np.percentile(np.concatenate([a[lit2], b[lit2]]), 99))
        hot = (a > bound) | (b > bound)
    if hot.any():
        a, b = np.where(hot, np.nan, a), np.where(hot, np.nan, b)
        both &= ~hot
    drow, dcol, inner = register_shift(a, b, background)
    if drow or dcol:
        finite = np.isfinite(a)
        whole = nd_shift(finite.astype(np.float64), (drow, dcol), order=1, mode="nearest") > 0.999
        a = np.where(both & whole, nd_shift(np.where(finite, a, 0.0), (drow, dcol), order=1, mode="nearest"),
                     np.nan)
    with np.errstate(invalid="ignore"):
        lit = inner & (a > background) & (b > background)
    if int(lit.sum()) < min_pixels:
        return None
    sa = _block_sums(np.where(lit, a, 0.0), block)
    sb = _block_sums(np.where(lit, b, 0.0), block)
    n = _block_sums(lit.astype(np.float64), block)
    use = n > 0
    sa, sb, n = sa[use], sb[use], n[use]
    lr = np.log(sa / sb)
    med = float(np.median(lr))
    spread = 1.4826 * float(np.median(np.abs(lr - med)))
    keep = np.abs(lr - med) <= clip * max(spread, 1e-3)
    return PairRatio(float(sa[keep].sum() / sb[keep].sum()), int(n[keep].sum()), (drow, dcol))


#: How a year's inter-calibrated Luojia-01 frames are anchored (``preprocess.luojia_gain_anchor``).
GAIN_ANCHORS = ("mean", "reference")
#: Default of ``preprocess.luojia_gain_anchor``.
DEFAULT_GAIN_ANCHOR = "mean"


def anchor_gains(gains: Mapping[str, float], connected: Sequence[str], anchor: str) -> dict[str, float]:
    """Relative gains rescaled to the absolute level ``anchor`` asks for.

    ``'reference'`` returns them as solved (the reference frame's gain is 1).
    ``'mean'`` divides the gains of the ``connected`` frames (those tied to the
    reference through overlaps) by their geometric mean: each frame's own
    calibration error is then assumed to average out over the frames, instead of
    the reference frame's error setting the year's level. Other frames keep their
    gain (1).
    """
    if anchor not in GAIN_ANCHORS:
        raise ValueError(f"preprocess.luojia_gain_anchor={anchor!r}; expected one of {', '.join(GAIN_ANCHORS)}")
    out = dict(gains)
    if anchor == "reference" or not connected:
        return out
    mean = math.exp(sum(math.log(gains[f]) for f in connected) / len(connected))
    for f in connected:
        out[f] = gains[f] / mean
    return out


def connected_frames(frame_ids: Sequence[str], pairs: Mapping[tuple[str, str], float], reference: str) -> list[str]:
    """Frames tied to ``reference`` through a chain of overlaps (the reference included), in ``frame_ids`` order."""
    adj: dict[str, set[str]] = {f: set() for f in frame_ids}
    for i, j in pairs:
        adj[i].add(j)
        adj[j].add(i)
    seen, todo = {reference}, [reference]
    while todo:
        for nb in adj[todo.pop()]:
            if nb not in seen:
                seen.add(nb)
                todo.append(nb)
    return [f for f in frame_ids if f in seen]


def choose_reference(frame_ids: Sequence[str], pairs: Mapping[tuple[str, str], float]) -> str:
    """The frame with the most overlaps (pairs with a ratio); the first one on ties or with none."""
    degree = {f: 0 for f in frame_ids}
    for i, j in pairs:
        degree[i] += 1
        degree[j] += 1
    return max(frame_ids, key=lambda f: (degree[f], -frame_ids.index(f)))


def solve_gains(frame_ids: Sequence[str], pairs: Mapping[tuple[str, str], float],
                reference: str, weights: Mapping[tuple[str, str], float] | None = None) -> dict[str, float]:
    """Relative gains from pairwise ratios by (weighted) least squares in log space.

    Parameters
    ----------
    frame_ids : sequence of str
    pairs : mapping (i, j) -> r_ij
        Robust ratio ``median(L_i / L_j)`` on the overlap of frames i and j.
    reference : str
        Frame whose gain is fixed to 1.
    weights : mapping (i, j) -> float, optional
        Weight of each pair's equation (e.g. the overlap's pixel count: small
        corner overlaps are less reliable); default 1.

    Returns
    -------
    dict
        ``gain[f]`` such that ``gain[i] * L_i ~= gain[j] * L_j`` on every overlap,
        i.e. ``log g_i - log g_j = -log r_ij`` in the least-squares sense.
        Frames not connected to the reference through overlaps keep gain 1
        (with a warning).
    """
    frame_ids = list(frame_ids)
    if reference not in frame_ids:
        raise ValueError(f"reference frame {reference!r} is not among the frames {frame_ids}")
    seen = set(connected_frames(frame_ids, pairs, reference))
    free = [f for f in frame_ids if f in seen and f != reference]
    gains = {f: 1.0 for f in frame_ids}
    if free:
        col = {f: k for k, f in enumerate(free)}
        rows, rhs = [], []
        for (i, j), r in pairs.items():
            if i not in seen:
                continue
            row = np.zeros(len(free))
            if i in col:
                row[col[i]] += 1.0
            if j in col:
                row[col[j]] -= 1.0
            sw = math.sqrt(float(weights[(i, j)])) if weights is not None else 1.0
            rows.append(row * sw)
            rhs.append(-math.log(r) * sw)
        x, *_ = np.linalg.lstsq(np.array(rows), np.array(rhs), rcond=None)
        for f, k in col.items():
            gains[f] = float(math.exp(x[k]))
    orphans = [f for f in frame_ids if f not in seen]
    if orphans:
        warnings.warn(f"Luojia frames {orphans} share no lit overlap with reference {reference!r} "
                      "(directly or through other frames); their relative gain is left at 1", stacklevel=2)
    return gains


def overlapping_pairs(frame_ids: Sequence[str], blocks: Mapping[str, tuple[int, int, int, int] | None]
                      ) -> list[tuple[str, str, tuple[int, int, int, int]]]:
    """Pairs of frames whose blocks of the working grid intersect, with the intersection.

    Parameters
    ----------
    frame_ids : sequence of str
        Frames, in the order the pairs are enumerated (``(a, b)`` with ``a`` before ``b``).
    blocks : mapping frame_id -> (row_off, col_off, height, width) or None
        Each frame's block of the working grid (:func:`pandafine.core.windows.grid_window_of`).

    Returns
    -------
    list of (a, b, block)
        ``block`` is the intersection of ``blocks[a]`` and ``blocks[b]``; disjoint pairs are left out.
    """
    out = []
    for i, fa in enumerate(frame_ids):
        for fb in frame_ids[i + 1:]:
            block = intersect_blocks(blocks[fa], blocks[fb])
            if block is not None:
                out.append((fa, fb, block))
    return out


def block_slices(outer: tuple[int, int, int, int], inner: tuple[int, int, int, int]) -> tuple[slice, slice]:
    """Index of block ``inner`` in an array covering block ``outer`` (both (row_off, col_off, height, width))."""
    r, c = inner[0] - outer[0], inner[1] - outer[1]
    if r < 0 or c < 0 or r + inner[2] > outer[2] or c + inner[3] > outer[3]:
        raise ValueError(f"block {tuple(inner)} is not inside block {tuple(outer)}")
    return slice(r, r + inner[2]), slice(c, c + inner[3])


def warp_for_comparison(tif: str | Path, xml: str | Path, grid: Grid, block: tuple[int, int, int, int],
                        background: float) -> np.ndarray:
    """One raw frame as the overlap comparison sees it: radiance, hot pixels screened, on ``block`` of ``grid``.

    Radiance (NaN outside the footprint, :func:`load_luojia_radiance`), spikes
    removed on the native grid (:func:`pandafine.preprocess.denoise.remove_spikes`,
    ``CALIBRATION_SPIKE_FACTOR``), warped with average resampling onto ``block``
    (float64, NaN where uncovered).
    """
    rad, fgrid = load_luojia_radiance(tif, xml)
    rad, _ = remove_spikes(rad, CALIBRATION_SPIKE_FACTOR, background)
    return reproject_to_block(rad, fgrid, grid, block)


def luojia_pair_ratios(files: Mapping[str, tuple[Path, Path]], frame_ids: Sequence[str], grid: Grid,
                       blocks: Mapping[str, tuple[int, int, int, int]], background: float,
                       workdir: str | Path) -> dict[tuple[str, str], PairRatio]:
    """:func:`overlap_ratio` of every pair of frames whose working-grid blocks intersect.

    Each frame that overlaps another is read, screened and warped once, onto
    its own block ``blocks[f]`` (:func:`warp_for_comparison`), when its first
    pair comes, and kept as a ``.npy`` memory map under ``workdir`` until its
    last pair is done (thousands of frames need not fit in memory); a pair is
    compared on the intersection of the two blocks, sliced out of both.

    Parameters
    ----------
    files : mapping frame_id -> (tif, meta.xml)
    frame_ids : sequence of str
        Frames to compare, in the order the pairs are enumerated.
    grid : Grid
        The working grid.
    blocks : mapping frame_id -> (row_off, col_off, height, width)
    background : float
        ``preprocess.luojia_background``.
    workdir : path
        An existing directory for the warped frames (the caller removes it).

    Returns
    -------
    dict
        ``(a, b) -> PairRatio`` for the pairs with enough pixels lit in both (see :func:`overlap_ratio`).
    """
    pairs = overlapping_pairs(frame_ids, blocks)
    last_use = {f: k for k, (fa, fb, _) in enumerate(pairs) for f in (fa, fb)}
    npy = {f: Path(workdir) / f"frame{k}.npy" for k, f in enumerate(frame_ids)}
    warped: dict[str, np.ndarray] = {}
    ratios: dict[tuple[str, str], PairRatio] = {}
    for k, (fa, fb, block) in enumerate(pairs):
        for f in (fa, fb):
            if f not in warped:
                np.save(npy[f], warp_for_comparison(*files[f], grid, blocks[f], background))
                warped[f] = np.load(npy[f], mmap_mode="r")
        res = overlap_ratio(warped[fa][block_slices(blocks[fa], block)],
                            warped[fb][block_slices(blocks[fb], block)], background)
        if res is not None:
            ratios[(fa, fb)] = res
        for f in (fa, fb):
            if last_use[f] == k:  # no later pair needs it
                del warped[f]
                npy[f].unlink()
    return ratios


def calibrate_luojia_year(cfg: Mapping[str, Any], raw_year_dir: str | Path, grid: Grid,
                          out_dir: str | Path) -> dict[str, Any]:
    """Radiance, footprint masking and relative inter-calibration of one year's Luojia-01 frames.

    Every frame is converted to radiance (NaN outside its ``_meta.xml``
    footprint). Every pair of overlapping frames, screened for hot pixels and
    warped onto the working grid (average resampling), is cut to the
    overlapping block, registered and compared by :func:`overlap_ratio`
    (flux ratio of pixels lit above ``preprocess.luojia_background`` in both);
    gains then follow from :func:`solve_gains` weighted by the overlap's pixel
    count, solved against the frame with the most overlaps and anchored by
    ``preprocess.luojia_gain_anchor`` (:func:`anchor_gains`). Writes ``{frame_id}.tif`` (native frame grid, radiance x gain)
    and ``gains.json``; returns the gains record.

    Notes
    -----
    Each frame is read twice: once for the comparisons (screened and warped
    once, onto its own block of the working grid, then sliced to each of its
    overlaps, see :func:`luojia_pair_ratios`; the warped frames are kept in a
    temporary directory inside ``out_dir``, removed at the end) and once to be
    written.

    GDAL warps through an approximate transformer (rasterio's fixed tolerance
    of 1/8 source pixel, interpolated along each destination row between the
    row's ends), so a warped pixel depends slightly on the columns spanned by
    the block it is warped onto. A frame warped onto its whole block and
    sliced to an overlap therefore equals the frame warped onto the overlap
    alone (one warp per pair, the earlier implementation) only where the
    overlap spans the block's full width; elsewhere lit pixels differ by
    ~1e-4 (smooth synthetic frames) to ~1 % (median; noisy demo frames, tens
    of % on a few sharp pixels). The gains moved by up to 6e-6 (test frames)
    and 2.1e-4 (demo frames) relative, 50 times below their accuracy (~1 %);
    now every overlap of a frame sees the same warped pixels.
    """
    out_dir = Path(out_dir)
    background = float(cfg["preprocess"]["luojia_background"])
    frames = luojia_frames(raw_year_dir)
    ids = [f for f, _, _ in frames]
    files = {f: (tif, xml) for f, tif, xml in frames}

    # Each frame's block of the working grid.
    bounds = {f: frame_bounds_on(grid_of(files[f][0]), grid) for f in ids}
    blocks = {f: grid_window_of(bounds[f], grid) for f in ids}
    off = [f for f in ids if blocks[f] is None]
    if off:
        feet = "; ".join(f"{f} {tuple(round(v) for v in bounds[f])}" for f in off[:5]) + (" ..." if len(off) > 5 else "")
        where = (f"footprints in the grid's CRS: {feet}; the working grid's bounds are "
                 f"{tuple(round(v) for v in grid.bounds)}")
        if len(off) == len(ids):
            raise ValueError(f"{raw_year_dir}: no Luojia-01 frame overlaps the working grid ({where}); "
                             "are the frames of another place?")
        warnings.warn(f"{raw_year_dir}: Luojia-01 frame(s) {off} do not overlap the working grid and are "
                      f"left out ({where})", stacklevel=2)
        ids = [f for f in ids if f not in off]

    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".warped.", dir=out_dir) as work:
        pairs = luojia_pair_ratios(files, ids, grid, blocks, background, work)
    ratios = {k: p.ratio for k, p in pairs.items()}
    reference = choose_reference(ids, ratios)
    gains = solve_gains(ids, ratios, reference, weights={k: p.pixels for k, p in pairs.items()})
    anchor = cfg["preprocess"].get("luojia_gain_anchor", DEFAULT_GAIN_ANCHOR)
    gains = anchor_gains(gains, connected_frames(ids, ratios, reference), anchor)

    for f in ids:
        rad, fgrid = load_luojia_radiance(*files[f])
        write_raster(out_dir / f"{f}.tif", (rad * np.float32(gains[f])).astype(np.float32), fgrid,
                     nodata=float("nan"), band_names=["radiance"],
                     tags={"units": RADIANCE_UNITS, "gain": repr(gains[f]), "reference": reference})
    record = {"reference": reference, "anchor": anchor, "gains": gains,
              "pairs": {f"{a}/{b}": {"ratio": p.ratio, "pixels": p.pixels, "shift_rowcol": list(p.shift)}
                        for (a, b), p in pairs.items()}}
    write_text_atomic(out_dir / "gains.json", json.dumps(record, indent=2) + "\n")
    return record


# ----------------------------------------------------------------------------- DEM


def calibrate_dem(cfg: Mapping[str, Any], raw_dir: str | Path, out_path: str | Path) -> Path:
    """Merge every DEM tile under ``raw_dir`` into one float32 raster (NaN nodata).

    Tiles may be in any CRS GDAL knows (EPSG:4326, CGCS2000 = EPSG:4490, a UTM
    zone, ...). When they all share one CRS the merge keeps it; otherwise every
    tile is reprojected (bilinear) to EPSG:4326 first. The resample stage
    reprojects the result onto the working grid either way. The finest tile
    resolution is used; where tiles overlap the first (sorted by name) wins.

    Notes
    -----
    The merge is written chunk by chunk: :data:`DEM_MERGE_CHUNK` px squares,
    whole tiles of the output, each merged by ``rasterio.merge.merge`` from the
    tiles it meets, opened for that chunk only (:func:`merge_dem_chunk`), with
    GDAL's block cache bounded (:func:`pandafine.core.runtime.gdal_cache_limit`).
    Memory therefore grows neither with the mosaic nor with the number of tiles.
    The output is laid out as one ``merge`` of all the tiles would lay it out
    (:func:`merged_dem_layout`). For tiles on its pixel lattice (one CRS,
    aligned tiles, also of coarser pixels) the pixels do not depend on the
    chunk size. For tiles reprojected on the fly, ``merge``'s nearest
    sampling depends on where the chunks cut, as it did with ``merge``'s own
    4000 px chunks before; a mosaic under :data:`DEM_MERGE_CHUNK` px per side
    is one chunk.
    """
    import rasterio

    raw_dir = Path(raw_dir)
    tiles = sorted(p for p in raw_dir.rglob("*") if p.is_file() and p.suffix.lower() in (".tif", ".tiff"))
    if not tiles:
        raise FileNotFoundError(f"{raw_dir}: no DEM tile (*.tif)")
    crss = []
    for t in tiles:
        with open_georeferenced(t) as src:
            crss.append(src.crs)
    target = crss[0] if all(c == crss[0] for c in crss) else DEM_COMMON_CRS
    out_path = Path(out_path)
    with gdal_cache_limit():
        feet = [dem_tile_footprint(t, target) for t in tiles]
        bounds = [b for b, _ in feet]
        res = (min(r[0] for _, r in feet), min(r[1] for _, r in feet))
        transform, width, height = merged_dem_layout(bounds, res)
        with _dem_tile_in(tiles[0], target) as first:
            profile = merged_dem_profile(first.profile, transform, width, height)
        with atomic_path(out_path) as tmp:
            with rasterio.open(tmp, "w", **profile) as dst:
                for win in iter_windows(width, height, DEM_MERGE_CHUNK):
                    dst.write(merge_dem_chunk(tiles, bounds, target, transform, win, res, profile["count"]),
                              window=win)
            with rasterio.open(tmp, "r+") as dst:
                dst.set_band_description(1, "elevation")
                dst.update_tags(units="m", tiles=len(tiles), source_crs=";".join(sorted({c.to_string() for c in crss})))
    return out_path


def dem_tile_footprint(path: Path, crs) -> tuple[tuple[float, float, float, float], tuple[float, float]]:
    """Bounds (left, bottom, right, top) and pixel size (x, y) of a DEM tile as read in ``crs``.

    Raises
    ------
    ValueError
        If the tile, read in ``crs``, is rotated, flipped or upside down
        (``rasterio.merge`` cannot merge it).
    """
    with _dem_tile_in(path, crs) as src:
        t = src.transform
        if not t.is_rectilinear or t.a < 0 or t.e > 0:
            raise ValueError(f"{path}: a rotated, flipped or upside-down raster (transform {tuple(t)[:6]}) "
                             "cannot be merged; expected a north-up DEM tile")
        return tuple(src.bounds), tuple(src.res)


def merged_dem_layout(bounds: Sequence[tuple[float, float, float, float]], res: tuple[float, float]):
    """Transform, width and height of the merge of tiles with ``bounds`` at pixel size ``res``.

    The union of the bounds, laid out as ``rasterio.merge.merge`` lays out a
    merge of all the tiles (its origin at the north-west corner, its size
    rounded to whole pixels).

    Parameters
    ----------
    bounds : sequence of (left, bottom, right, top)
        The tiles' bounds, in the merge's CRS.
    res : (float, float)
        Pixel width and height (positive).

    Returns
    -------
    (affine.Affine, int, int)
    """
    from affine import Affine

    w, s = min(b[0] for b in bounds), min(b[1] for b in bounds)
    e, n = max(b[2] for b in bounds), max(b[3] for b in bounds)
    width, height = round((e - w) / res[0]), round((n - s) / res[1])
    return Affine.translation(w, n) * Affine.scale(res[0], -res[1]), width, height


def merged_dem_profile(first_profile: Mapping[str, Any], transform, width: int, height: int) -> dict[str, Any]:
    """Profile of the merged DEM: the first tile's, with the merge's layout and a tiled, compressed float32 GeoTIFF."""
    profile = dict(first_profile)
    profile.update(driver="GTiff", tiled=True, blockxsize=256, blockysize=256, compress="deflate", predictor=3,
                   BIGTIFF="IF_SAFER")
    profile.update(transform=transform, height=height, width=width, dtype="float32", nodata=float("nan"))
    return profile


def tiles_meeting(bounds: Sequence[tuple[float, float, float, float]],
                  box: tuple[float, float, float, float]) -> list[int]:
    """Indices of the tiles whose ``bounds`` meet ``box`` (all left, bottom, right, top), edges included."""
    left, bottom, right, top = box
    return [i for i, (w, s, e, n) in enumerate(bounds) if w <= right and e >= left and s <= top and n >= bottom]


def merge_dem_chunk(tiles: Sequence[Path], bounds: Sequence[tuple[float, float, float, float]], crs, transform,
                    window, res: tuple[float, float], count: int) -> np.ndarray:
    """One chunk of the merged DEM: ``(count, rows, cols)`` float32, NaN where no tile has data.

    The tiles meeting the chunk (:func:`tiles_meeting`) are opened in ``crs``
    (:func:`_dem_tile_in`), merged by ``rasterio.merge.merge`` (first wins, in
    the order of ``tiles``) onto the chunk's bounds, and closed.

    Parameters
    ----------
    tiles : sequence of path
        All the tiles, in merge order.
    bounds : sequence of (left, bottom, right, top)
        Their bounds in ``crs`` (:func:`dem_tile_footprint`).
    crs
        The merge's CRS.
    transform : affine.Affine
        The merged raster's transform (:func:`merged_dem_layout`).
    window : rasterio.windows.Window
        The chunk, in pixels of the merged raster.
    res : (float, float)
        The merge's pixel size.
    count : int
        Bands of the output.
    """
    from rasterio.merge import merge
    from rasterio.windows import bounds as window_bounds

    box = window_bounds(window, transform)
    shape = (count, int(window.height), int(window.width))
    hits = tiles_meeting(bounds, box)
    if not hits:
        return np.full(shape, np.nan, dtype=np.float32)
    with contextlib.ExitStack() as stack:
        sources = [stack.enter_context(_dem_tile_in(tiles[i], crs)) for i in hits]
        data, _ = merge(sources, bounds=box, res=res, nodata=float("nan"), dtype="float32")
    if data.shape != shape:
        raise RuntimeError(f"DEM merge chunk {window}: got shape {data.shape}, expected {shape}")
    return data


#: CRS the DEM tiles are reprojected to when they do not share one.
DEM_COMMON_CRS = "EPSG:4326"


@contextlib.contextmanager
def _dem_tile_in(path: Path, crs):
    """A DEM tile opened for reading in ``crs``: the file itself, or a bilinear ``WarpedVRT`` of it."""
    from rasterio.crs import CRS
    from rasterio.enums import Resampling
    from rasterio.vrt import WarpedVRT

    crs = CRS.from_user_input(crs)
    with open_georeferenced(path) as src:
        if src.crs == crs:
            yield src
            return
        nodata = src.nodata if src.nodata is not None else (np.nan if src.dtypes[0].startswith("float") else None)
        opts = dict(crs=crs, resampling=Resampling.bilinear, dtype="float32", dst_nodata=np.nan)
        if nodata is not None:
            opts["src_nodata"] = nodata
        with WarpedVRT(src, **opts) as vrt:
            yield vrt
