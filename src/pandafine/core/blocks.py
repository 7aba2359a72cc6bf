"""Spatial blocks: the working grid cut into square blocks that jobs can process apart.

``grid.block`` (pixels) splits the grid into blocks of that edge, the last row
and column of blocks cut at the grid's border. A block is named by its block
row and column, ``r{row:03d}c{col:03d}``; ``grid.block`` absent or 0 is one
block, the whole grid (``r000c000``). Pure computation, no I/O.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pandafine.core.grid import Grid

#: Model minutes per megapixel of output of an inference job, for its runtime request: 2 CPU threads, full
#: MMNTLSR (the slowest model shipped), tile 512, overlap 64: 0.24 min/Mpx measured on a shared machine, rounded
#: up about 4x (docs/results/2026-12-07-blocks-at-scale.md). A GPU job is far faster; the request is an upper bound.
INFER_MINUTES_PER_MPX = 1.0
#: Floor of every job's runtime request (minutes): start-up, model loading, writing the COG.
MIN_JOB_MINUTES = 10
#: Memory of an inference job besides its buffers (MiB): the Python process, onnxruntime and the model.
INFER_BASE_MB = 3000

#: Single-thread seconds per working-grid megapixel of the per-year stages that stream the whole grid in
#: fixed windows (their memory does not grow with the grid, their runtime does): the larger of the 4000² and
#: 8000² px figures of ``tests/benchmarks/bench_preprocess.py`` (docs/results/2026-12-07-cost-model.md).
#: The DEM figures are for 3" (~90 m) tiles.
STREAMING_SECONDS_PER_MPX = {"calibrate_dem": 0.41, "resample_panda": 0.07, "resample_dem": 0.35, "cube": 0.36,
                             "mosaic": 0.70, "composite_landsat": 0.36}
#: Default of ``preprocess.landsat_block``: edge (working pixels) of the blocks Landsat is read and composited in,
#: 512 km at 125 m. It is its own lattice, not ``grid.block``: changing how inference is cut into jobs must not
#: rerun Landsat (and with it the cubes and the training).
DEFAULT_LANDSAT_BLOCK = 4096

#: Landsat block jobs (``landsat-block``): single-thread seconds per scene and per working-grid megapixel the
#: scene covers in the block, reading from the overview nearest the working pixel, and at full resolution
#: (30 m scenes, 125 m grid). Measured (CPU core-seconds, 1 thread, scenes read over HTTP on 127.0.0.1): 1.98 and
#: 6.70 s (1.77 and 5.92 in an earlier run of the same command), rounded up; wall was 1.7x and 1.2x that on a
#: shared 2-core machine, within :data:`RUNTIME_SAFETY` (``tests/benchmarks/bench_landsat.py``,
#: docs/results/2026-12-07-landsat-blocks.md).
LANDSAT_SECONDS_PER_SCENE_MPX = {"overview": 2.0, "full": 7.0}
#: Scenes a point of the ground is in per year, before ``max_scenes``: about 23 acquisitions a year per WRS-2
#: path/row and satellite, 1.3-2 path/rows over a point at China's latitudes, two satellites in most years (an
#: assumption, not a measurement, on the high side; a block near the edge of the scene lattice sees more).
LANDSAT_SCENES_PER_POINT = 90
#: Memory of a block job (MiB). Its peak is the median step, which holds a 64-row strip of a 512 px window of
#: every scene whose raster frame (~234 x 228 km, its fill corners included) touches the window: about 2.6x
#: :data:`LANDSAT_SCENES_PER_POINT`, ~235 at 90 per point (more in western China, where the UTM frames are
#: rotated on the grid). Measured: 633 MiB with 90 scene entries over one window, 962 MiB with 240, ~2.2 MiB per
#: entry (docs/results/2026-12-07-landsat-blocks.md); a full-resolution read adds ~160 MiB. Rounded up 2x.
LANDSAT_BLOCK_MB = 2500

#: A streaming job's runtime request is this many times its measured cost (slower nodes, busy file systems).
RUNTIME_SAFETY = 3.0

#: Name of a block: its block row and column.
BLOCK_NAME = re.compile(r"r(\d{3,})c(\d{3,})")


@dataclass(frozen=True)
class Block:
    """One block of the working grid: its indices and its pixel window."""

    row: int
    col: int
    row_off: int
    col_off: int
    height: int
    width: int

    @property
    def name(self) -> str:
        """``r{row:03d}c{col:03d}``."""
        return f"r{self.row:03d}c{self.col:03d}"

    @property
    def area(self) -> tuple[int, int, int, int]:
        """(row_off, col_off, height, width) on the grid."""
        return self.row_off, self.col_off, self.height, self.width


def block_size_errors(block: int, factor: int, product_blocksize: int) -> list[str]:
    """Why ``grid.block`` is invalid (empty when it is fine): it must be a multiple of ``grid.factor``
    (whole PANDA cells) and of ``product.blocksize`` (whole COG tiles)."""
    errors = []
    if block < 0:
        errors.append(f"key 'grid.block': value {block} must be >= 0 (0: one block, the whole grid)")
    elif block:
        for key, m in (("grid.factor", factor), ("product.blocksize", product_blocksize)):
            if block % m:
                errors.append(f"key 'grid.block': value {block} must be a multiple of {key}={m}")
    return errors


def grid_blocks(grid: Grid, block: int | None) -> list[Block]:
    """The blocks of ``grid`` in row-major order (``block`` None or 0: one block, the whole grid)."""
    if not block:
        return [Block(0, 0, 0, 0, grid.height, grid.width)]
    if block < 1:
        raise ValueError(f"block size {block} must be >= 1 pixel")
    return [Block(i, j, r, c, min(block, grid.height - r), min(block, grid.width - c))
            for i, r in enumerate(range(0, grid.height, block))
            for j, c in enumerate(range(0, grid.width, block))]


def block_named(grid: Grid, block: int | None, name: str) -> Block:
    """The block called ``name`` (``r001c002``); ``ValueError`` naming the valid range otherwise."""
    m = BLOCK_NAME.fullmatch(name)
    blocks = grid_blocks(grid, block)
    if m:
        row, col = int(m.group(1)), int(m.group(2))
        for b in blocks:
            if (b.row, b.col) == (row, col):
                return b
    last = blocks[-1]
    raise ValueError(f"block {name!r}: expected a name r{{row:03d}}c{{col:03d}} of a block of this grid "
                     f"(rows 0..{last.row}, columns 0..{last.col})")


def infer_job_resources(height: int, width: int, tile: int, channels: int) -> tuple[int, int]:
    """``(mem_mb, runtime_minutes)`` to request for inferring a ``height`` x ``width`` area.

    Memory is :data:`INFER_BASE_MB` plus the buffers that span the area's width
    (a band of tile rows of the cube with its halo, read ahead twice, blended and
    written behind: about 8 float32 copies of ``tile x (width + 2 tile) x channels``);
    it does not grow with the area's height. Runtime grows with its pixels
    (:data:`INFER_MINUTES_PER_MPX`, at least :data:`MIN_JOB_MINUTES`).
    """
    if min(height, width, tile, channels) < 1:
        raise ValueError(f"infer_job_resources: sizes must be positive, got {height}x{width}, tile {tile}, "
                         f"{channels} channels")
    band_mb = 8 * tile * (width + 2 * tile) * channels * 4 / 2**20
    minutes = height * width / 1e6 * INFER_MINUTES_PER_MPX
    return INFER_BASE_MB + int(-(-band_mb // 1)), max(MIN_JOB_MINUTES, int(-(-minutes // 1)))


def streaming_job_minutes(stage: str, grid: Grid) -> int:
    """Runtime (minutes) to request for a per-year stage that streams the whole ``grid``.

    :data:`STREAMING_SECONDS_PER_MPX` times the grid's megapixels times
    :data:`RUNTIME_SAFETY`, at least :data:`MIN_JOB_MINUTES`.
    """
    if stage not in STREAMING_SECONDS_PER_MPX:
        raise ValueError(f"streaming_job_minutes: no measured cost for stage {stage!r}; expected one of "
                         f"{', '.join(STREAMING_SECONDS_PER_MPX)}")
    seconds = STREAMING_SECONDS_PER_MPX[stage] * grid.width * grid.height / 1e6 * RUNTIME_SAFETY
    return max(MIN_JOB_MINUTES, int(-(-seconds // 60)))


def landsat_block_size(cfg) -> int:
    """``preprocess.landsat_block`` (default :data:`DEFAULT_LANDSAT_BLOCK`)."""
    return int(cfg["preprocess"].get("landsat_block", DEFAULT_LANDSAT_BLOCK))


def landsat_block_resources(height: int, width: int, pixel_size: float, max_scenes: int | None = None,
                            overviews: bool = False) -> tuple[int, int]:
    """(mem_mb, runtime minutes) to request for a ``landsat-block`` job over ``height x width`` working pixels.

    Runtime: scenes per point (:data:`LANDSAT_SCENES_PER_POINT`, or ``2 * max_scenes`` when that is fewer)
    times the block's megapixels times :data:`LANDSAT_SECONDS_PER_SCENE_MPX` (scaled by ``(125 /
    pixel_size)^2`` for another working pixel, as the source pixels under a working pixel grow), times
    :data:`RUNTIME_SAFETY`, at least :data:`MIN_JOB_MINUTES`.
    """
    if min(height, width) < 1 or pixel_size <= 0:
        raise ValueError(f"landsat_block_resources: sizes must be positive, got {height}x{width} px of {pixel_size} m")
    per_point = LANDSAT_SCENES_PER_POINT if not max_scenes else min(LANDSAT_SCENES_PER_POINT, 2 * int(max_scenes))
    rate = LANDSAT_SECONDS_PER_SCENE_MPX["overview" if overviews else "full"]
    if not overviews:
        rate *= (125.0 / pixel_size) ** 2
    seconds = per_point * height * width / 1e6 * rate * RUNTIME_SAFETY
    return LANDSAT_BLOCK_MB, max(MIN_JOB_MINUTES, int(-(-seconds // 60)))
