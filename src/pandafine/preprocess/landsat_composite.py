"""Landsat straight to the working grid: a composite per (year, block), then the year's gap-filled composite.

Per (year, block) (:func:`composite_block`): every scene that touches the block is
read only under the block, one window of :data:`COMPOSITE_WINDOW` working pixels at
a time (the cells of one lattice anchored at the grid's origin; a block that cuts a
cell warps the whole cell and keeps its part, so a block's pixels do not depend on
the block size): its SR bands and ``QA_PIXEL`` are read (optionally from the
COG's internal overview nearest the working pixel, :func:`overview_factor`), turned
into OLI-equivalent reflectance with QA masking
(:func:`pandafine.sensors.landsat.scene_reflectance`) and warped onto the window
with ``average`` resampling, NaN ignored. The per-pixel per-band median of the
clear observations (:func:`median_composite`) and their number ``clear_count`` make
the block composite. Nothing at scene resolution is written.

Resumable: each scene's warped observations go to a journal beside the output
(``.{block}.journal/{scene_id}.tif``, on the working grid) as soon as the scene is
read, so a job killed mid-block resumes from its finished scenes without reading
them again. The journal is keyed by what the observations depend on (grid, block,
coastal mode, overview reading); another key wipes it. It is removed once the
block composite is complete.

Per year (:func:`composite_year`): the block composites of the year are joined
on the working grid; pixels without a clear observation are filled from the block
composites of year +/- 1, then +/- 2, ... up to ``preprocess.landsat_gapfill_years``
(the mean of the neighbours' medians at the nearest distance that has any; the
pooled median of their scenes before blocks, see docs/contracts.md) and keep
``clear_count`` 0.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np

from pandafine.core.atomic import write_text_atomic
from pandafine.core.blocks import Block, grid_blocks
from pandafine.core.channels import LANDSAT_BANDS
from pandafine.core.faults import RasterFileError
from pandafine.core.grid import Grid
from pandafine.core.raster_io import geotiff_profile, open_raster, open_writer
from pandafine.core.windows import frame_bounds_on, grid_window_of, intersect_blocks
from pandafine.sensors.landsat import SceneAssets, scene_reflectance

#: Band names of a Landsat composite (block or year).
COMPOSITE_BANDS = LANDSAT_BANDS + ("clear_count",)
#: Edge (working pixels) of the windows scenes are warped onto; their lattice starts at the grid's origin.
COMPOSITE_WINDOW = 512
#: Default of ``preprocess.min_landsat_coverage``: the year's composite (gap filling included) must be valid
#: on at least this fraction of the planned blocks.
DEFAULT_MIN_LANDSAT_COVERAGE = 0.9
#: Default of ``preprocess.landsat_overviews``: read scenes at full resolution. Reading the COG overview nearest
#: the working pixel reads ~16x fewer pixels but changed the synthetic composites by 0.007-0.013 reflectance RMSE
#: (more than the 0.005 allowed; docs/results/2026-12-07-landsat-blocks.md), so it is an option, not the default.
DEFAULT_LANDSAT_OVERVIEWS = False
#: Rows of a window whose median is taken at once: the median step holds this strip of every scene over the window
#: (7 bands x 64 x 512 px x 4 B = 0.9 MiB a scene) rather than the whole window (7.3 MiB a scene).
MEDIAN_ROWS = 64
#: Source pixels read around a window's footprint (the ``average`` warp's kernel edge).
WARP_PAD = 2


# ----------------------------------------------------------------------------- pure parts


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


def fill_gaps(median: np.ndarray, count: np.ndarray, neighbours: Sequence[Sequence[np.ndarray]]) -> np.ndarray:
    """Fill pixels without a clear observation from neighbouring years' block composites.

    Parameters
    ----------
    median : (bands, rows, cols) float32
        The year's median of clear observations (NaN where ``count`` is 0); filled in place.
    count : (rows, cols)
        Clear observations of the year.
    neighbours : sequence over distance 1, 2, ... of sequences of (bands + 1, rows, cols) arrays
        The block composites (median bands, then ``clear_count``) of year - d and year + d.

    Returns
    -------
    numpy.ndarray
        Boolean (rows, cols): pixels still without a value.
    """
    gap = np.asarray(count) == 0
    for composites in neighbours:
        if not gap.any():
            break
        if not composites:
            continue
        stack = np.stack([np.where((c[-1] > 0)[None], c[:-1], np.nan) for c in composites])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN pixels
            fill = np.nanmean(stack, axis=0)
        use = gap & np.isfinite(fill).all(axis=0)
        median[:, use] = fill[:, use]
        gap &= ~use
    return gap


def overview_factor(source_pixel: float, factors: Sequence[int], working_pixel: float) -> int:
    """The decimation to read a scene at: the largest of ``factors`` (and 1) whose pixel is no coarser
    than the working pixel (30 m scenes, overviews 2, 4, 8, 125 m working pixel: 4, i.e. 120 m)."""
    best = 1
    for f in factors:
        if source_pixel * f <= working_pixel * (1 + 1e-6) and f > best:
            best = int(f)
    return best


def window_lattice(area: tuple[int, int, int, int], size: int = COMPOSITE_WINDOW) -> Iterator[tuple[int, int, int, int]]:
    """Windows (row_off, col_off, height, width) of the lattice of edge ``size`` anchored at the grid's origin,
    cut to ``area`` (row_off, col_off, height, width), row-major."""
    r0, c0, h, w = area
    for r in range((r0 // size) * size, r0 + h, size):
        for c in range((c0 // size) * size, c0 + w, size):
            cut = intersect_blocks((r, c, size, size), area)
            if cut is not None:
                yield cut


def lattice_cell(window: tuple[int, int, int, int], grid: Grid, size: int = COMPOSITE_WINDOW) -> tuple[int, int, int, int]:
    """The lattice cell (edge ``size``, anchored at the grid's origin) holding ``window``, cut to the grid."""
    r, c = (window[0] // size) * size, (window[1] // size) * size
    return r, c, min(size, grid.height - r), min(size, grid.width - c)


@dataclass(frozen=True)
class CompositeParams:
    """What a block composite's observations depend on besides the scenes.

    Attributes
    ----------
    coastal : {'blue', 'native'}
        ``preprocess.landsat_coastal``.
    overviews : bool
        ``preprocess.landsat_overviews``: read each scene from its internal overview nearest the working
        pixel (:func:`overview_factor`) instead of at full resolution.
    window : int
        Edge of the warp windows (working pixels).
    """

    coastal: str = "blue"
    overviews: bool = DEFAULT_LANDSAT_OVERVIEWS
    window: int = COMPOSITE_WINDOW

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> "CompositeParams":
        pre = cfg["preprocess"]
        return cls(coastal=str(pre.get("landsat_coastal", "blue")),
                   overviews=bool(pre.get("landsat_overviews", DEFAULT_LANDSAT_OVERVIEWS)))


@dataclass
class BlockStats:
    """What :func:`composite_block` did: scenes read, resumed from the journal, outside the block; source
    pixels read (all bands); clear coverage of the block."""

    scenes: list[dict] = field(default_factory=list)
    read: int = 0
    resumed: int = 0
    outside: int = 0
    pixels_read: int = 0
    clear: float = 0.0


# ----------------------------------------------------------------------------- reading one scene


class SceneReader:
    """The opened files of one scene (its overview ``factor`` chosen once), read window by window.

    Parameters
    ----------
    scene : SceneAssets
    working_pixel : float
        Edge of a working-grid pixel (metres), for the overview choice.
    overviews : bool
        Read from the overview nearest the working pixel when the files have one.
    sign : callable
        Turns a path or href into what GDAL opens (e.g. a signed URL).
    coastal : {'blue', 'native'}
        What the coastal channel holds (``preprocess.landsat_coastal``).
    """

    def __init__(self, scene: SceneAssets, working_pixel: float, overviews: bool, sign: Callable[[str], str],
                 coastal: str = "blue"):
        self.scene = scene
        self.sign = sign
        self.coastal = coastal
        self._files = list(scene.bands) + [("qa_pixel", scene.qa)]
        self._srcs: dict[str, Any] = {}
        try:
            qa = self._open(scene.qa, None)
            self.factor = 1
            if overviews:
                self.factor = overview_factor(abs(qa.res[0]), qa.overviews(1), working_pixel)
            self.level = None
            if self.factor > 1:
                self.level = qa.overviews(1).index(self.factor)
                for name, href in self._files:
                    with self._opened(href, None) as full:
                        if self.factor not in full.overviews(1):
                            self.factor, self.level = 1, None  # a band without that overview: full resolution
                            break
            if self.level is not None:
                qa.close()
                qa = self._open(scene.qa, self.level)
            self._srcs["qa_pixel"] = qa
            for name, href in scene.bands:
                self._srcs[name] = self._open(href, self.level)
            self._check()
        except BaseException:
            self.close()
            raise

    def _opened(self, href: str, level: int | None):
        import rasterio

        if "://" not in href and level is None:
            return open_raster(href)  # a local file: one that is cut short or corrupt is said to be so
        return rasterio.open(self.sign(href), **({} if level is None else {"overview_level": level}))

    def _open(self, href: str, level: int | None):
        try:
            return self._opened(href, level)
        except RasterFileError:
            raise
        except Exception as exc:  # rasterio/GDAL: unreachable, refused (403), not a raster
            raise RasterFileError(f"Landsat scene {self.scene.scene_id}: cannot open {href}: "
                                  f"{str(exc).replace(self.sign(href), href)[:300]}") from None

    def _check(self) -> None:
        qa = self._srcs["qa_pixel"]
        if qa.crs is None:
            raise ValueError(f"{self.scene.qa}: no CRS; expected a georeferenced Collection-2 QA_PIXEL file")
        for name, href in self.scene.bands:
            s = self._srcs[name]
            if s.dtypes[0] != "uint16":
                raise ValueError(f"{href}: data type {s.dtypes[0]}; expected uint16 Collection 2 Level-2 surface "
                                 "reflectance counts (reflectance = 2.75e-5 * DN - 0.2); a band already converted "
                                 "to reflectance or from another product cannot be used")
            if (s.width, s.height) != (qa.width, qa.height) or s.transform != qa.transform or s.crs != qa.crs:
                raise ValueError(f"{href}: grid {s.width}x{s.height} {tuple(s.transform)[:6]} differs from "
                                 f"{self.scene.qa} ({qa.width}x{qa.height} {tuple(qa.transform)[:6]}); "
                                 "all bands of a scene must share one grid")

    @property
    def grid(self) -> Grid:
        """The grid the scene is read on (its overview's when one is used)."""
        qa = self._srcs["qa_pixel"]
        return Grid(qa.crs.to_wkt(), qa.transform, qa.width, qa.height, 1)

    def area_on(self, grid: Grid) -> tuple[int, int, int, int] | None:
        """The scene's footprint on ``grid`` as (row_off, col_off, height, width), or None if disjoint."""
        return grid_window_of(frame_bounds_on(self.grid, grid), grid)

    def warp(self, grid: Grid, area: tuple[int, int, int, int], pad: int = WARP_PAD) -> tuple[np.ndarray, int]:
        """OLI-equivalent reflectance (7, h, w) of the scene warped (``average``, NaN ignored) onto ``area`` of
        ``grid``, and the number of source pixels read. Only the source window under ``area`` (plus ``pad``
        pixels) is read."""
        from rasterio.crs import CRS
        from rasterio.enums import Resampling
        from rasterio.warp import reproject, transform_bounds
        from rasterio.windows import Window, from_bounds

        r0, c0, h, w = area
        dst_t = grid.window_transform(r0, c0)
        dst_crs = CRS.from_user_input(grid.crs)
        out = np.full((len(LANDSAT_BANDS), h, w), np.nan, np.float32)
        qa = self._srcs["qa_pixel"]
        (left, right), (top, bottom) = zip(dst_t * (0, 0), dst_t * (w, h))
        bounds = transform_bounds(dst_crs, qa.crs, min(left, right), min(top, bottom), max(left, right),
                                  max(top, bottom), densify_pts=21)
        win = from_bounds(*bounds, transform=qa.transform)
        col0 = max(0, int(np.floor(win.col_off)) - pad)
        row0 = max(0, int(np.floor(win.row_off)) - pad)
        col1 = min(qa.width, int(np.ceil(win.col_off + win.width)) + pad)
        row1 = min(qa.height, int(np.ceil(win.row_off + win.height)) + pad)
        if col1 <= col0 or row1 <= row0:
            return out, 0
        win = Window(col0, row0, col1 - col0, row1 - row0)
        dn = {name: self._srcs[name].read(1, window=win) for name, _ in self.scene.bands}
        rho = scene_reflectance(dn, qa.read(1, window=win), self.scene.sensor, self.coastal)
        reproject(rho, out, src_transform=qa.window_transform(win), src_crs=qa.crs, src_nodata=np.nan,
                  dst_transform=dst_t, dst_crs=dst_crs, dst_nodata=np.nan, resampling=Resampling.average)
        return out, int(win.width * win.height) * len(self._files)

    def close(self) -> None:
        for s in self._srcs.values():
            s.close()
        self._srcs.clear()

    def __enter__(self) -> "SceneReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# ----------------------------------------------------------------------------- the journal of a block


class BlockJournal:
    """Finished scenes of a block composite: ``{scene_id}.tif`` (its observations on the working grid) or
    ``{scene_id}.none`` (the scene does not touch the block), written atomically, under a key."""

    def __init__(self, directory: str | Path, key: str):
        self.dir = Path(directory)
        stamp = self.dir / "key.json"
        if self.dir.exists():
            try:
                same = json.loads(stamp.read_text())["key"] == key
            except (OSError, ValueError, KeyError, TypeError):
                same = False
            if not same:
                shutil.rmtree(self.dir)
        if not self.dir.exists():
            self.dir.mkdir(parents=True)
            write_text_atomic(stamp, json.dumps({"key": key}) + "\n")

    def observations(self, scene_id: str) -> Path:
        return self.dir / f"{scene_id}.tif"

    def done(self, scene_id: str) -> bool:
        return self.observations(scene_id).exists() or (self.dir / f"{scene_id}.none").exists()

    def mark_outside(self, scene_id: str) -> None:
        write_text_atomic(self.dir / f"{scene_id}.none", "")

    def remove(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


def journal_key(grid: Grid, area: tuple[int, int, int, int], params: CompositeParams) -> str:
    """What a block's journaled observations depend on (scenes aside), as a digest."""
    doc = {"grid": grid.to_dict(), "area": list(area), "coastal": params.coastal, "overviews": params.overviews,
           "window": params.window}
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


def _write_observations(path: Path, grid: Grid, rect: tuple[int, int, int, int],
                        windows: Sequence[tuple[tuple[int, int, int, int], np.ndarray]], decimation: int) -> None:
    from rasterio.windows import Window

    r0, c0, h, w = rect
    sub = Grid(grid.crs, grid.window_transform(r0, c0), w, h, 1)
    profile = geotiff_profile(sub, len(LANDSAT_BANDS), "float32", float("nan"), zlevel=1)
    with open_writer(path, profile, LANDSAT_BANDS, {"decimation": decimation}) as dst:
        for (wr, wc, wh, ww), obs in windows:
            dst.write(obs, window=Window(wc - c0, wr - r0, ww, wh))


# ----------------------------------------------------------------------------- one block


def composite_block(scenes: Sequence[SceneAssets], grid: Grid, block: Block, out_path: str | Path,
                    params: CompositeParams = CompositeParams(), sign: Callable[[str], str] = str,
                    year: int | None = None, log: Callable[[str], None] = print) -> BlockStats:
    """Write the Landsat composite of one block: 7 median bands and ``clear_count``, on the block's grid.

    Parameters
    ----------
    scenes : sequence of SceneAssets
        Candidate scenes (those not touching the block are skipped after a header read).
    grid : Grid
        The working grid.
    block : Block
        The block (its pixel window on ``grid``).
    out_path : path
        The block composite (GeoTIFF, float32, NaN nodata); its journal is ``.{stem}.journal`` beside it.
    params : CompositeParams
    sign : callable
        Path or href -> what GDAL opens (asset signing); identity for local files.
    year : int, optional
        Recorded in the tags.
    log : callable
        Progress lines (one per scene).

    Returns
    -------
    BlockStats
    """
    out_path = Path(out_path)
    area = block.area
    journal = BlockJournal(out_path.parent / f".{out_path.stem}.journal", journal_key(grid, area, params))
    stats = BlockStats()
    ordered = sorted(scenes, key=lambda s: s.scene_id)
    for i, scene in enumerate(ordered, 1):
        where = f"scene {i}/{len(ordered)} {scene.scene_id}"
        if journal.done(scene.scene_id):
            stats.resumed += 1
            if journal.observations(scene.scene_id).exists():
                with open_raster(journal.observations(scene.scene_id)) as src:
                    stats.scenes.append(_scene_record(scene, int(src.tags().get("decimation", 1))))
            log(f"{where}: done in an earlier run (journal)")
            continue
        with SceneReader(scene, grid.pixel_size, params.overviews, sign, params.coastal) as reader:
            cut = intersect_blocks(reader.area_on(grid), area)
            if cut is None:
                journal.mark_outside(scene.scene_id)
                stats.outside += 1
                log(f"{where}: outside the block")
                continue
            windows = []
            for win in window_lattice(area, params.window):
                if intersect_blocks(win, cut) is None:
                    continue
                # warp the whole lattice cell (cut to the grid only) and keep the block's part: GDAL's average
                # depends on the destination extent, so a block's pixels must not depend on where it is cut
                cell = lattice_cell(win, grid, params.window)
                obs, n = reader.warp(grid, cell)
                r, c = win[0] - cell[0], win[1] - cell[1]
                stats.pixels_read += n
                windows.append((win, obs[:, r:r + win[2], c:c + win[3]]))
            factor = reader.factor
        rows = [w[0] for w, _ in windows]
        cols = [w[1] for w, _ in windows]
        rect = (min(rows), min(cols), max(w[0] + w[2] for w, _ in windows) - min(rows),
                max(w[1] + w[3] for w, _ in windows) - min(cols))
        _write_observations(journal.observations(scene.scene_id), grid, rect, windows, factor)
        stats.read += 1
        stats.scenes.append(_scene_record(scene, factor))
        log(f"{where} ({scene.sensor}, 1/{factor} resolution): {len(windows)} window(s)")
    clear = _write_block_median(journal, [s for s in ordered if journal.observations(s.scene_id).exists()],
                                grid, block, out_path, params, year, len(stats.scenes))
    stats.clear = clear
    journal.remove()
    return stats


def _scene_record(scene: SceneAssets, factor: int | None) -> dict:
    rec = {"scene_id": scene.scene_id, "sensor": scene.sensor, "cloud": None if math.isnan(scene.cloud) else scene.cloud,
           "qa": scene.qa}
    if factor is not None:
        rec["decimation"] = factor
    return rec


def _strips(area: tuple[int, int, int, int], rows: int) -> Iterator[tuple[int, int, int, int]]:
    r0, c0, h, w = area
    for r in range(r0, r0 + h, rows):
        yield r, c0, min(rows, r0 + h - r), w


def _write_block_median(journal: BlockJournal, scenes: Sequence[SceneAssets], grid: Grid, block: Block,
                        out_path: Path, params: CompositeParams, year: int | None, n_scenes: int) -> float:
    import rasterio
    from rasterio.windows import Window

    r0, c0, h, w = block.area
    sub = Grid(grid.crs, grid.window_transform(r0, c0), w, h, grid.factor)
    profile = geotiff_profile(sub, len(COMPOSITE_BANDS), "float32", float("nan"), zlevel=1)
    srcs = [rasterio.open(journal.observations(s.scene_id)) for s in scenes]
    clear = 0
    try:
        t = grid.transform
        rects = [(round((s.transform.f - t.f) / t.e), round((s.transform.c - t.c) / t.a), s.height, s.width)
                 for s in srcs]
        with open_writer(out_path, profile, COMPOSITE_BANDS) as dst:
            for cell in window_lattice(block.area, params.window):
                # strips of MEDIAN_ROWS rows: memory is that strip of every scene over the window, not the window
                for win in _strips(cell, MEDIAN_ROWS):
                    wr, wc, wh, ww = win
                    obs = []
                    for s, rect in zip(srcs, rects):
                        if intersect_blocks(rect, win) is None:
                            continue
                        obs.append(s.read(window=Window(wc - rect[1], wr - rect[0], ww, wh)))
                    stack = np.stack(obs) if obs else np.empty((0, len(LANDSAT_BANDS), wh, ww), np.float32)
                    med, count = median_composite(stack)
                    clear += int((count > 0).sum())
                    dst.write(np.concatenate([med, count[None].astype(np.float32)]),
                              window=Window(wc - c0, wr - r0, ww, wh))
            coverage = clear / max(1, h * w)
            dst.update_tags(units="surface reflectance (OLI-equivalent)", block=block.name, block_row_off=r0,
                            block_col_off=c0, scenes=n_scenes, clear_coverage=f"{coverage:.6f}",
                            **({"year": year} if year is not None else {}))
    finally:
        for s in srcs:
            s.close()
    return coverage


# ----------------------------------------------------------------------------- the year


@dataclass(frozen=True)
class LandsatCoverage:
    """How much of the planned area a yearly Landsat composite covers (fractions 0..1)."""

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


def composite_year(cfg: Mapping[str, Any], year: int, block_composites: Mapping[int, Mapping[str, str | Path]],
                   grid: Grid, blocks: Sequence[Block], out_path: str | Path, block_size: int = 0,
                   window: int = COMPOSITE_WINDOW,
                   region: Callable[[tuple[int, int, int, int]], np.ndarray] | None = None) -> LandsatCoverage:
    """Write the 8-band Landsat composite of ``year`` on the working grid from block composites.

    Parameters
    ----------
    cfg : mapping
        Validated config (``preprocess.landsat_gapfill_years``, ``preprocess.min_landsat_coverage``).
    year : int
    block_composites : mapping year -> {block name: block composite}
        Must hold ``year`` (every block of ``blocks``); neighbouring years fill gaps.
    grid : Grid
        The working grid.
    blocks : sequence of Block
        The planned blocks; pixels outside them are NaN.
    out_path : path
        Bands ``coastal .. swir2`` (median of clear observations, gap-filled) and ``clear_count`` (clear
        observations in ``year`` itself; 0 where gap-filled).
    block_size : int
        ``grid.block`` (0: one block, the whole grid).
    window : int
        Edge of the windows the composite is written in.
    region : callable, optional
        Area (row_off, col_off, height, width) -> boolean mask of the pixels inside the region (``region.mask``):
        the coverage is counted over them only (the planned blocks also hold sea and land outside the region).

    Raises
    ------
    ValueError
        The composite is valid on less than ``preprocess.min_landsat_coverage`` of the planned blocks, or a
        block composite of ``year`` is missing.
    """
    from rasterio.windows import Window

    max_gap = int(cfg["preprocess"]["landsat_gapfill_years"])
    min_coverage = float(cfg["preprocess"].get("min_landsat_coverage", DEFAULT_MIN_LANDSAT_COVERAGE))
    own_year = block_composites.get(year, {})
    missing = [b.name for b in blocks if b.name not in own_year]
    if missing:
        raise ValueError(f"Landsat {year}: no block composite for block(s) {', '.join(missing[:5])}")
    profile = geotiff_profile(grid, len(COMPOSITE_BANDS), "float32", float("nan"), zlevel=1)
    planned = {b.name for b in blocks}
    area_total = clear = unfilled = scenes = 0
    with open_writer(out_path, profile, COMPOSITE_BANDS) as dst:
        for block in grid_blocks(grid, block_size):
            if block.name not in planned:
                for wr, wc, wh, ww in window_lattice(block.area, window):
                    dst.write(np.full((len(COMPOSITE_BANDS), wh, ww), np.nan, np.float32),
                              window=Window(wc, wr, ww, wh))
                continue
            with _BlockFiles(block_composites, year, block, max_gap) as files:
                scenes += files.scenes
                for win in window_lattice(block.area, window):
                    wr, wc, wh, ww = win
                    own = files.read(files.own, win)
                    med, count = own[:-1], own[-1]
                    count = np.where(np.isfinite(count), count, 0)
                    inside = region(win) if region is not None else np.ones(count.shape, bool)
                    area_total += int(inside.sum())
                    clear += int(((count > 0) & inside).sum())
                    gap = fill_gaps(med, count, [[files.read(s, win) for s in d] for d in files.neighbours])
                    unfilled += int((gap & inside).sum())
                    dst.write(np.concatenate([med, count[None].astype(np.float32)]), window=Window(wc, wr, ww, wh))
        coverage = LandsatCoverage(year, scenes, clear / max(1, area_total), 1.0 - unfilled / max(1, area_total))
        if coverage.valid < min_coverage:
            raise ValueError(landsat_coverage_message(year, coverage.valid, min_coverage, max_gap,
                                                      own_year, blocks))
        dst.update_tags(year=year, units="surface reflectance (OLI-equivalent)", gapfill_years=max_gap,
                        blocks=len(blocks), **coverage.tags())
    if unfilled:
        warnings.warn(f"Landsat {year}: {unfilled} working-grid pixel(s) of the planned blocks have no clear "
                      f"observation within +/-{max_gap} year(s); they are NaN in {out_path}", stacklevel=2)
    print(f"Landsat {year}: {scenes} scene(s) over {len(blocks)} block(s); clear observations on "
          f"{100 * coverage.clear:.1f} % of them, valid after gap filling on {100 * coverage.valid:.1f} %")
    return coverage


class _BlockFiles:
    """The open block composites of one block: the year's own and, per distance, its neighbours'."""

    def __init__(self, composites: Mapping[int, Mapping[str, str | Path]], year: int, block: Block, max_gap: int):
        self.block = block
        self._open: list[Any] = []
        self.own = self._take(composites[year][block.name])
        self.scenes = int(self.own.tags().get("scenes", 0))
        self.neighbours = []
        for d in range(1, max_gap + 1):
            self.neighbours.append([self._take(composites[y][block.name]) for y in (year - d, year + d)
                                    if y in composites and block.name in composites[y]])

    def _take(self, path):
        src = open_raster(path)
        self._open.append(src)
        r0, c0, h, w = self.block.area
        if (src.height, src.width) != (h, w):
            raise ValueError(f"{path}: {src.width}x{src.height} px; expected block {self.block.name}'s {w}x{h}")
        return src

    def read(self, src, win: tuple[int, int, int, int]) -> np.ndarray:
        from rasterio.windows import Window

        wr, wc, wh, ww = win
        return src.read(window=Window(wc - self.block.col_off, wr - self.block.row_off, ww, wh))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for s in self._open:
            s.close()


def landsat_coverage_message(year: int, coverage: float, min_coverage: float, max_gap: int,
                             own: Mapping[str, str | Path], blocks: Sequence[Block]) -> str:
    """Why a Landsat composite was refused: how much of the planned blocks it covers, and which blocks lack."""
    poor = []
    for b in blocks:
        p = own.get(b.name)
        if p is None:
            continue
        with open_raster(p) as src:
            c = float(src.tags().get("clear_coverage", "nan"))
            what = f"{src.tags().get('scenes', '?')} scene(s)"
        record = Path(p).with_suffix(".json")
        if record.is_file():  # written by `pandafine landsat-block` beside the block composite
            doc = json.loads(record.read_text())
            what = f"{doc['read'] + doc['resumed']} scene(s) read, {doc['outside']} outside it"
        if not c >= 0.5:
            poor.append(f"{b.name} ({what}, clear on {100 * c:.0f} %)")
    where = ("blocks with little clear Landsat: " + "; ".join(poor[:5]) + (" ..." if len(poor) > 5 else "")
             if poor else "every block has some clear observations")
    return (f"Landsat {year}: the composite is valid on {100 * coverage:.1f} % of the planned blocks "
            f"(clear observations of {year} +/- {max_gap} year(s)), less than preprocess.min_landsat_coverage = "
            f"{100 * min_coverage:g} %: {where}. Are the scenes of another place, or did the search find none? "
            f"(set preprocess.min_landsat_coverage lower to accept a partial composite)")


def write_block_record(path: str | Path, year: int, block: Block, stats: BlockStats, source: str) -> Path:
    """The block composite's sidecar JSON: the scenes used (ids, sensors, files) and what was read."""
    doc = {"year": year, "block": block.name, "source": source, "scenes": stats.scenes, "read": stats.read,
           "resumed": stats.resumed, "outside": stats.outside, "source_pixels_read": stats.pixels_read,
           "clear_coverage": round(stats.clear, 6)}
    return write_text_atomic(Path(path), json.dumps(doc, indent=1) + "\n")

