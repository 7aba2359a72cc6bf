"""Preprocessing benchmark: per-stage peak memory and time of one year's preprocessing, at two region sizes.

Usage::

    python tests/benchmarks/bench_preprocess.py [--quick] [--sizes N [N ...]] [--stages S [S ...]]
                                                 [--landsat-res M] [--scenes K] [--landsat-block PX]
                                                 [--workdir DIR] [--json OUT]

For each region size (working pixels per side at 125 m; default 8000 and 2000, i.e. a
1000 km and a 250 km square; ``--quick``: 1000 and 2000) the raw inputs the selected stages
need are synthesized in one subprocess (not measured); then every stage runs alone in its own
child process (``--process SIZE DIR STAGE``, single-threaded via
:func:`pandafine.core.runtime.limit_threads` as a workflow job with ``--threads 1``), in
pipeline order. Per (size, stage) the table gives the stage's wall time (timed inside the
child, around the library call), its cost in seconds per working-grid megapixel of the job
(the region's; for ``landsat_block`` its block's), the wall
time of the whole job (interpreter start and imports included) and the job's peak resident
memory. Peak RSS comes from GNU ``time`` (``%M``, :func:`bench_infer.measured_run`), not
from ``os.wait4``: Linux keeps a process's peak RSS across ``fork`` + ``exec``, so a child
forked straight from the benchmark would report the benchmark's own peak. Then, per
stage, the large/small ratios of time and of peak memory are printed next to the ratio of
the job's pixels: a streaming stage scales linearly in time (ratio ~ pixel ratio) and stays
flat in memory (ratio ~ 1; the cost model's acceptance is 1.1x for 4x the area), and a
per-block job (``landsat_block``, pixel ratio 1) stays flat in both. ``--stages``
measures a subset; the stages they depend on still run first (unmeasured). Wall times on
a shared machine are noisy; the memory figures are not.

Raw inputs are synthesized window by window from smooth closed-form fields (fast, and
continuous across windows): PANDA-like uint8 DN on the 1 km anchor lattice; ``--scenes``
Collection-2-like Landsat scenes (one OLI, the others ETM+, all 7 SR bands + QA_PIXEL with
clouds) on one UTM grid at ``--landsat-res`` metres (default 120 m, coarser than the real
30 m so that a 1000 km square stays feasible: the output says so; Landsat cost grows ~16x at
30 m); Copernicus-GLO-90-like float32 EPSG:4326 DEM tiles (1 degree, 3"; their number grows
with the area) under ``raw/dem``; and Luojia-like denoised frames of a fixed size
(float32 radiance, EPSG:4326 at :data:`LUOJIA_RES_DEG` degrees ~ 130 m, NaN outside a
rotated-rectangle footprint, overlapping their neighbours) on a lattice over the region, so
their number grows with the area like a real coverage and each frame stays the same size.
Stages are the library functions the CLI calls:
:func:`pandafine.preprocess.calibrate.calibrate_panda`,
:func:`pandafine.preprocess.calibrate.calibrate_dem` (merges the tiles),
:func:`pandafine.preprocess.landsat_composite.composite_block` (``landsat_block``, below) and
:func:`~pandafine.preprocess.landsat_composite.composite_year` (``composite_landsat``: the year's
composite from one block composite that is the whole region, made by an unmeasured prerequisite
``landsat_region``, scenes read in place at full resolution),
:func:`pandafine.preprocess.resample.resample_layer` (panda; dem, from the merged DEM),
:func:`pandafine.tiles.cube.build_cube` and :func:`pandafine.preprocess.mosaic.mosaic_frames`.

``landsat_block`` measures one per-block job (``pandafine landsat-block``) at a fixed block
size, as the workflow runs it: the region is cut on the Landsat block lattice of edge
``--landsat-block`` px (``preprocess.landsat_block``; default the largest of 2048, 1536, 1024,
512, 256 that leaves a full block away from the region's edge at the smallest size: 1536 for
4000 and 8000), and the job composites the first full block that does not touch the region's
edge (``r001c001``: the same block, the same ground, at every region size), from every scene
of the year (the synthetic scenes cover the whole region plus a margin, so they cover the
block; the child fails if a scene misses it). Its memory for a larger region at the same
block size is what the 1.1x acceptance is about; its pixels do not grow with the region.

Not collected by pytest (``--ignore=tests/benchmarks`` in pyproject).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_infer import measured_run  # noqa: E402  (benchmarks share their helpers)

REPO = Path(__file__).resolve().parents[2]
YEAR = 2018
SIZES = {"full": (8000, 2000), "quick": (1000, 2000)}
#: Rows written per synthesis window.
ROWS = 512
#: Stages that can be measured, in pipeline order.
STAGES = ("calibrate_panda", "calibrate_dem", "landsat_block", "composite_landsat", "resample_panda",
          "resample_dem", "build_cube", "mosaic")
#: Every stage in pipeline order, the unmeasured prerequisite ``landsat_region`` (the whole region as one
#: Landsat block, the input of ``composite_landsat``) included; and the stages each one needs the outputs of.
ORDER = ("calibrate_panda", "calibrate_dem", "landsat_block", "landsat_region", "composite_landsat",
         "resample_panda", "resample_dem", "build_cube", "mosaic")
NEEDS = {"composite_landsat": ("landsat_region",), "resample_panda": ("calibrate_panda",),
         "resample_dem": ("calibrate_dem",), "build_cube": ("resample_panda", "composite_landsat", "resample_dem")}
#: Raw inputs each stage reads (only those of the stages run are synthesized).
INPUTS = {"calibrate_panda": ("panda",), "calibrate_dem": ("dem",), "landsat_block": ("landsat",),
          "landsat_region": ("landsat",), "mosaic": ("luojia",)}
#: Candidate edges (px) of the Landsat blocks of ``landsat_block``, largest first (:func:`default_landsat_block`).
LANDSAT_BLOCKS = (2048, 1536, 1024, 512, 256)
#: Synthetic Luojia-01 denoised frames: side (pixels), pixel size (degrees) and the fraction of a
#: side that neighbours share.
LUOJIA_SIDE_PX = 1500
LUOJIA_RES_DEG = 0.0012
LUOJIA_OVERLAP = 0.2


def load_config() -> dict:
    return yaml.safe_load((REPO / "config.yaml").read_text())


def bench_grid(cfg: dict, size: int):
    """A ``size x size`` working grid at the configured pixel size, starting at the demo region's corner."""
    from affine import Affine

    from pandafine.core.grid import Grid, grid_from_config

    demo = grid_from_config(cfg)
    t = demo.transform
    return Grid(demo.crs, Affine(t.a, 0, t.c, 0, t.e, t.f), size, size, demo.factor)


def landsat_bench_block(grid, block_px: int):
    """The block ``landsat_block`` composites: on the Landsat lattice of edge ``block_px``, the first full block
    (row-major) that does not touch the grid's edge, ``r001c001`` when there is one."""
    from pandafine.core.blocks import grid_blocks

    for b in grid_blocks(grid, block_px):
        if ((b.height, b.width) == (block_px, block_px) and b.row_off > 0 and b.col_off > 0
                and b.row_off + b.height < grid.height and b.col_off + b.width < grid.width):
            return b
    raise ValueError(f"a {grid.width}x{grid.height} px region has no full {block_px} px Landsat block away from "
                     f"its edge; pass a --landsat-block under {grid.width // 2} px")


def default_landsat_block(sizes) -> int:
    """The largest of :data:`LANDSAT_BLOCKS` that leaves a full block away from the edge of every region."""
    for b in LANDSAT_BLOCKS:
        if 2 * b < min(sizes):
            return b
    raise ValueError(f"a {min(sizes)} px region is too small for a Landsat block away from its edge")


def field(x: np.ndarray, y: np.ndarray, k: int) -> np.ndarray:
    """A smooth closed-form field in [-1, 1] of map coordinates (metres), variant ``k``."""
    a = 2 * math.pi / (7000.0 + 900.0 * k)
    b = 2 * math.pi / (23000.0 + 1700.0 * k)
    return (0.5 * np.sin(a * x + 0.7 * k) * np.cos(a * 0.8 * y)
            + 0.5 * np.sin(b * (x + y) + 1.3 * k)).astype(np.float32)


def _centres(grid, r0: int, n: int):
    t = grid.transform
    x = t.c + (np.arange(grid.width) + 0.5) * t.a
    y = t.f + (np.arange(r0, r0 + n) + 0.5) * t.e
    return x[None, :], y[:, None]


def _writer(path: Path, grid, count: int, dtype: str, nodata):
    import rasterio
    from rasterio.crs import CRS

    path.parent.mkdir(parents=True, exist_ok=True)
    return rasterio.open(path, "w", driver="GTiff", width=grid.width, height=grid.height, count=count,
                         dtype=dtype, crs=CRS.from_user_input(grid.crs), transform=grid.transform, nodata=nodata,
                         tiled=True, blockxsize=256, blockysize=256, compress="zstd", zstd_level=1)


def luojia_frame_specs(grid) -> list[tuple[object, tuple[tuple[float, float], ...]]]:
    """(EPSG:4326 frame grid, footprint quad TL, TR, BR, BL in lon/lat) of each synthetic Luojia frame.

    Frames have a fixed size (:data:`LUOJIA_SIDE_PX` pixels of :data:`LUOJIA_RES_DEG`), like real
    Luojia-01 frames, and sit on a lattice over the region's lon/lat box with
    :data:`LUOJIA_OVERLAP` of a side shared by neighbours, so their number, not their size,
    grows with the area. The footprint is a rectangle of 0.85 x the frame's half sides, rotated
    by +-0.1 rad (NaN outside), so the edges are irregular.
    """
    from affine import Affine

    from pandafine.core.grid import Grid
    from pandafine.synthetic import scene as syn

    w, s, e, n = syn.lonlat_bounds(grid)
    res, side_px = LUOJIA_RES_DEG, LUOJIA_SIDE_PX
    side = side_px * res
    step = side * (1 - LUOJIA_OVERLAP)
    nx = max(1, math.ceil(((e - w) - side) / step) + 1)
    ny = max(1, math.ceil(((n - s) - side) / step) + 1)
    specs = []
    for i in range(ny):
        for j in range(nx):
            x0, y1 = w + j * step, n - i * step
            fgrid = Grid("EPSG:4326", Affine(res, 0, x0, 0, -res, y1), side_px, side_px, 1)
            cx, cy, h = x0 + side / 2, y1 - side / 2, 0.85 * side / 2
            th = 0.1 if (i + j) % 2 == 0 else -0.1
            c, sn = math.cos(th), math.sin(th)
            quad = tuple((cx + c * dx - sn * dy, cy + sn * dx + c * dy)
                         for dx, dy in ((-h, h), (h, h), (h, -h), (-h, -h)))
            specs.append((fgrid, quad))
    return specs


def synthesize(cfg: dict, size: int, landsat_res: float, n_scenes: int, raw: Path,
               inputs: tuple[str, ...] = ("panda", "landsat", "dem", "luojia")) -> dict:
    """Write the raw ``inputs`` of one year for a ``size``-pixel square; return what was written."""
    from affine import Affine
    from rasterio.windows import Window

    from pandafine.sensors.landsat import SENSOR_BANDS, reflectance_to_dn
    from pandafine.synthetic import observe as obs
    from pandafine.synthetic import scene as syn

    grid = bench_grid(cfg, size)
    rng = np.random.default_rng(size)
    info: dict = {"grid": [grid.width, grid.height], "inputs": list(inputs)}
    # PANDA: 1 km cells on the anchor lattice (+2 cells margin), uint8 DN 0..63, nodata 255
    if "panda" in inputs:
        pgrid = obs.panda_grid(grid)
        x, y = _centres(pgrid, 0, pgrid.height)
        dn = np.clip(np.rint(40 * np.maximum(field(x, y, 1), 0) ** 2 * 63 / 40), 0, 63).astype(np.uint8)
        with _writer(raw / "panda" / f"PANDA_China_{YEAR}.tif", pgrid, 1, "uint8", 255) as dst:
            dst.write(dn[None])
        info["panda_grid"] = [pgrid.width, pgrid.height]
    # Landsat: scenes on one UTM grid covering the region
    lgrid = obs.landsat_grid(grid, landsat_res)
    endm = np.asarray(syn.ENDMEMBERS["vegetation"], np.float32), np.asarray(syn.ENDMEMBERS["urban"], np.float32)
    scenes = []
    for i in range(n_scenes if "landsat" in inputs else 0):
        sensor = "OLI" if i == 0 else "ETM+"
        prefix = "LC08" if sensor == "OLI" else "LE07"
        sid = f"{prefix}_L2SP_127036_{YEAR}{7 + i:02d}15_{YEAR + 3}0101_02_T1"
        d = raw / "landsat" / str(YEAR) / sid
        bands = SENSOR_BANDS[sensor]
        dsts = {name: _writer(d / f"{sid}_SR_B{num}.TIF", lgrid, 1, "uint16", 0) for name, num in bands.items()}
        qa_dst = _writer(d / f"{sid}_QA_PIXEL.TIF", lgrid, 1, "uint16", 1)
        try:
            for r0 in range(0, lgrid.height, ROWS):
                n = min(ROWS, lgrid.height - r0)
                x, y = _centres(lgrid, r0, n)
                urban = 0.5 + 0.5 * field(x, y, 2)
                cloud = field(x + 17000.0 * i, y - 9000.0 * i, 3 + i) > 0.55
                win = Window(0, r0, lgrid.width, n)
                for name, dst in dsts.items():
                    b = ("coastal", "blue", "green", "red", "nir", "swir1", "swir2").index(name)
                    rho = (1 - urban) * endm[0][b] + urban * endm[1][b]
                    rho = rho + rng.normal(0, 0.003, rho.shape).astype(np.float32)
                    rho = np.where(cloud, np.float32(0.4), rho)
                    dst.write(reflectance_to_dn(rho)[None], window=win)
                qa = np.where(cloud, (1 << 3) | (1 << 1), 1 << 6).astype(np.uint16)
                qa_dst.write(qa[None], window=win)
        finally:
            for dst in list(dsts.values()) + [qa_dst]:
                dst.close()
        scenes.append(sid)
    if "landsat" in inputs:
        info.update(landsat_grid=[lgrid.width, lgrid.height], landsat_res_m=landsat_res, scenes=scenes)
    # DEM: Copernicus-GLO-90-like 1-degree float32 EPSG:4326 tiles (3") over the region + 0.02 degrees
    tiles = obs.dem_tiles(syn.lonlat_bounds(grid, margin_deg=0.02)) if "dem" in inputs else []
    dem_px = 0
    for la, lo in tiles:
        tgrid = obs.dem_tile_grid(la, lo)
        with _writer(raw / "dem" / obs.dem_tile_name(la, lo), tgrid, 1, "float32", float("nan")) as dst:
            for r0 in range(0, tgrid.height, ROWS):
                k = min(ROWS, tgrid.height - r0)
                x, y = _centres(tgrid, r0, k)
                dst.write((500 + 300 * field(x * 1e5, y * 1e5, 4))[None].astype(np.float32),
                          window=Window(0, r0, tgrid.width, k))
        dem_px += tgrid.width * tgrid.height
    if "dem" in inputs:
        info.update(dem_tiles=len(tiles), dem_mpx=round(dem_px / 1e6, 2))
    # Luojia-01: denoised frames (radiance, NaN outside the footprint), overlapping
    frames = []
    for k, (fgrid, quad) in enumerate(luojia_frame_specs(grid) if "luojia" in inputs else []):
        path = raw / "luojia_denoised" / f"LJ01_{YEAR}_frame{k:02d}.tif"
        with _writer(path, fgrid, 1, "float32", float("nan")) as dst:
            t = fgrid.transform
            for r0 in range(0, fgrid.height, ROWS):
                n = min(ROWS, fgrid.height - r0)
                x, y = _centres(fgrid, r0, n)
                inside = obs.footprint_mask(Affine(t.a, 0, t.c, 0, t.e, t.f + r0 * t.e), fgrid.width, n, quad)
                rad = (2e-5 * (1.1 + field(x * 1e5, y * 1e5, 5 + k))).astype(np.float32)
                dst.write(np.where(inside, rad, np.float32(np.nan))[None], window=Window(0, r0, fgrid.width, n))
        frames.append([fgrid.width, fgrid.height])
    if "luojia" in inputs:
        info.update(luojia_frames=frames, luojia_mpx=round(sum(a * b for a, b in frames) / 1e6, 2))
    return info


def describe_inputs(info: dict) -> str:
    """What was synthesized, for the log."""
    parts = []
    if "landsat_grid" in info:
        parts.append(f"Landsat grid {info['landsat_grid'][0]}x{info['landsat_grid'][1]} ({len(info['scenes'])} scenes)")
    if "dem_tiles" in info:
        parts.append(f"{info['dem_tiles']} DEM tiles ({info['dem_mpx']:g} Mpx)")
    if "luojia_frames" in info:
        parts.append(f"{len(info['luojia_frames'])} Luojia frames ({info['luojia_mpx']:g} Mpx)")
    if "panda_grid" in info:
        parts.append(f"PANDA {info['panda_grid'][0]}x{info['panda_grid'][1]} cells")
    return ", ".join(parts) or "nothing"


def run_stage(cfg: dict, size: int, stage: str, raw: Path, out: Path, landsat_block_px: int) -> tuple[float, float]:
    """Run one stage of one year (single-threaded, as a workflow job); return its wall seconds and the Mpx of its
    job (the region's; for ``landsat_block`` its block's, on the lattice of edge ``landsat_block_px``)."""
    from pandafine.core.runtime import limit_threads

    limit_threads(1)  # as a workflow job does (`pandafine STAGE --threads 1`)
    import warnings

    from pandafine.core.blocks import grid_blocks
    from pandafine.preprocess import calibrate as cal
    from pandafine.preprocess import landsat_composite as lc
    from pandafine.preprocess.mosaic import mosaic_frames
    from pandafine.preprocess.resample import DEFAULT_MIN_COVERAGE, resample_layer
    from pandafine.sources.local import landsat_scenes
    from pandafine.tiles.cube import build_cube

    # the synthetic clouds leave some pixels without a clear observation (no other years here)
    warnings.filterwarnings("ignore", message=".*no clear observation.*")
    grid = bench_grid(cfg, size)
    pre = cfg["preprocess"]
    resample_kw = {"min_coverage": pre.get("min_coverage", DEFAULT_MIN_COVERAGE),
                   "panda_alignment": pre.get("panda_alignment", "error")}
    panda_cal, dem_cal = out / "calibrated" / "panda" / f"{YEAR}.tif", out / "calibrated" / "dem" / "dem.tif"
    whole = grid_blocks(grid, 0)[0]  # the whole region as one Landsat block: composite_landsat's input
    region_block = out / "landsat_region" / str(YEAR) / f"{whole.name}.tif"
    block = landsat_bench_block(grid, landsat_block_px)  # the one block landsat_block measures
    landsat_block, landsat = out / "landsat" / str(YEAR) / f"{block.name}.tif", out / "denoised" / "landsat" / f"{YEAR}.tif"
    params = lc.CompositeParams.from_config(cfg)

    def one_block():
        scenes = landsat_scenes(raw / "landsat", YEAR)
        stats = lc.composite_block(scenes, grid, block, landsat_block, params, year=YEAR, log=lambda m: None)
        if stats.read != len(scenes) or stats.outside or not stats.clear > 0:
            raise RuntimeError(f"block {block.name}: {stats.read} of {len(scenes)} scene(s) read, {stats.outside} "
                               f"outside it, clear on {100 * stats.clear:.1f} %: the scenes must cover the block")
    panda, dem = out / "resampled" / "panda" / f"{YEAR}.tif", out / "resampled" / "dem" / "dem.tif"
    calls = {
        "calibrate_panda": lambda: cal.calibrate_panda(cfg, raw / "panda" / f"PANDA_China_{YEAR}.tif", panda_cal),
        "calibrate_dem": lambda: cal.calibrate_dem(cfg, raw / "dem", dem_cal),
        "landsat_block": one_block,
        "landsat_region": lambda: lc.composite_block(landsat_scenes(raw / "landsat", YEAR), grid, whole, region_block,
                                                     params, year=YEAR, log=lambda m: None),
        "composite_landsat": lambda: lc.composite_year(cfg, YEAR, {YEAR: {whole.name: region_block}}, grid, [whole],
                                                       landsat),
        "resample_panda": lambda: resample_layer("panda", panda_cal, grid, panda,
                                                 method=pre["panda_resampling"], **resample_kw),
        "resample_dem": lambda: resample_layer("dem", dem_cal, grid, dem, **resample_kw),
        "build_cube": lambda: build_cube(panda, landsat, dem, grid, out / "cube" / f"{YEAR}.zarr", year=YEAR,
                                         chunk=int(cfg["tiles"]["chunk"])),
        "mosaic": lambda: mosaic_frames(sorted((raw / "luojia_denoised").glob("*.tif")), grid,
                                        out / "target" / f"{YEAR}.tif"),
    }
    t0 = time.perf_counter()
    calls[stage]()
    wall = time.perf_counter() - t0
    return wall, (block.height * block.width if stage == "landsat_block" else size * size) / 1e6


def with_needs(selected: list[str]) -> list[str]:
    """``selected`` plus every stage they depend on, in pipeline order."""
    todo, stack = set(), list(selected)
    while stack:
        s = stack.pop()
        if s not in todo:
            todo.add(s)
            stack.extend(NEEDS.get(s, ()))
    return [s for s in ORDER if s in todo]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help=f"sizes {SIZES['quick']} instead of {SIZES['full']}")
    ap.add_argument("--sizes", type=int, nargs="+", help="region sides in working pixels (overrides --quick)")
    ap.add_argument("--stages", nargs="+", choices=STAGES, default=list(STAGES),
                    help="stages to measure (default all; the stages they need run first, unmeasured)")
    ap.add_argument("--landsat-res", type=float, default=120.0, help="synthetic Landsat pixel size (m)")
    ap.add_argument("--scenes", type=int, default=2, help="Landsat scenes in the year")
    ap.add_argument("--landsat-block", type=int,
                    help="edge (px) of the Landsat blocks of the landsat_block stage (default: the largest of "
                         f"{', '.join(map(str, LANDSAT_BLOCKS))} with a full block away from the smallest region's edge)")
    ap.add_argument("--inputs", nargs="+", help=argparse.SUPPRESS)
    ap.add_argument("--workdir", type=Path, help="keep inputs/outputs here instead of a temporary directory")
    ap.add_argument("--json", type=Path, help="also write the results as JSON")
    ap.add_argument("--synthesize", nargs=2, metavar=("SIZE", "DIR"), help=argparse.SUPPRESS)
    ap.add_argument("--process", nargs=3, metavar=("SIZE", "DIR", "STAGE"), help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    cfg = load_config()
    if a.synthesize:
        size, d = int(a.synthesize[0]), Path(a.synthesize[1])
        info = synthesize(cfg, size, a.landsat_res, a.scenes, d / "raw", tuple(a.inputs or ("panda", "landsat", "dem",
                                                                                             "luojia")))
        (d / "inputs.json").write_text(json.dumps(info))
        return 0
    if a.process:
        size, d, stage = int(a.process[0]), Path(a.process[1]), a.process[2]
        if stage not in ORDER:
            ap.error(f"unknown stage {stage!r}")
        if not a.landsat_block:
            ap.error("--process needs --landsat-block")
        wall, job_mpx = run_stage(cfg, size, stage, d / "raw", d / "out", a.landsat_block)
        (d / "timings").mkdir(parents=True, exist_ok=True)
        (d / "timings" / f"{stage}.json").write_text(json.dumps({"stage": stage, "wall_s": wall, "mpx": job_mpx}))
        return 0

    sizes = a.sizes or list(SIZES["quick" if a.quick else "full"])
    selected = [s for s in STAGES if s in a.stages]
    run = with_needs(selected)
    inputs = sorted({i for s in run for i in INPUTS.get(s, ())})
    try:
        lblock = a.landsat_block or default_landsat_block(sizes)
        blocks = {size: landsat_bench_block(bench_grid(cfg, size), lblock) for size in sizes}
    except ValueError as exc:
        ap.error(str(exc))
    print(f"Landsat synthesized at {a.landsat_res:g} m ({a.scenes} scenes; real Collection 2 is 30 m: "
          f"~{(a.landsat_res / 30) ** 2:.0f}x more Landsat pixels); one child process per stage, 1 thread; "
          "peak RSS from GNU time", flush=True)
    if "landsat_block" in selected:
        names = sorted({b.name for b in blocks.values()})
        print(f"landsat_block: one job for block {', '.join(names)} ({lblock}x{lblock} px) of the Landsat block "
              f"lattice of {lblock} px (preprocess.landsat_block), the same block at every region size", flush=True)
    head = f"{'size px':>8} {'km':>6} {'Mpx':>6}  {'stage':<18} {'stage s':>8} {'s/Mpx':>7} {'job s':>7} {'peak MiB':>9}"
    results = []
    with tempfile.TemporaryDirectory(prefix="bench_preprocess.") as tmp:
        base = a.workdir or Path(tmp)
        for size in sizes:
            d = base / f"s{size}"
            d.mkdir(parents=True, exist_ok=True)
            mpx = size * size / 1e6
            try:
                _, gen_s, _ = measured_run([sys.executable, __file__, "--synthesize", str(size), str(d),
                                            "--landsat-res", str(a.landsat_res), "--scenes", str(a.scenes),
                                            "--inputs", *inputs])
            except RuntimeError as exc:
                print(f"synthesis of {size} px failed: {exc}", file=sys.stderr)
                return 1
            info = json.loads((d / "inputs.json").read_text())
            print(f"{size} x {size} px ({size * 0.125:g} km, {mpx:g} Mpx): synthesized in {gen_s:.1f} s; "
                  f"{describe_inputs(info)}", flush=True)
            print(head, flush=True)
            stages = {}
            for stage in run:
                try:
                    rss, job_s, _ = measured_run([sys.executable, __file__, "--process", str(size), str(d), stage,
                                                  "--landsat-block", str(lblock)])
                except RuntimeError as exc:
                    print(f"stage {stage} at {size} px failed: {exc}", file=sys.stderr)
                    return 1
                if stage not in selected:
                    continue  # a prerequisite of a measured stage
                timing = json.loads((d / "timings" / f"{stage}.json").read_text())
                wall, job_mpx = timing["wall_s"], timing["mpx"]
                stages[stage] = {"wall_s": round(wall, 3), "job_mpx": round(job_mpx, 4),
                                 "s_per_mpx": round(wall / job_mpx, 4), "job_s": round(job_s, 3),
                                 "peak_rss_mib": round(rss, 1)}
                if stage == "landsat_block":
                    stages[stage]["block"] = blocks[size].name
                print(f"{size:>8} {size * 0.125:>6g} {job_mpx:>6.3g}  {stage:<18} {wall:>8.2f} {wall / job_mpx:>7.3f} "
                      f"{job_s:>7.2f} {rss:>9.0f}", flush=True)
            results.append({"size": size, "km": size * 0.125, "mpx": mpx, "synthesis_s": round(gen_s, 1),
                            "inputs": info, "stages": stages})
    ratios = {}
    if len(results) >= 2:
        big, small = max(results, key=lambda r: r["size"]), min(results, key=lambda r: r["size"])
        print(f"ratios {big['size']}/{small['size']} px (region pixels x{big['mpx'] / small['mpx']:.2f}; "
              "pixels: of the stage's job):")
        print(f"  {'stage':<18} {'pixels':>7} {'time':>7} {'memory':>7}")
        for stage in selected:
            b, s = big["stages"][stage], small["stages"][stage]
            px = b["job_mpx"] / s["job_mpx"]
            ratios[stage] = {"pixels": round(px, 3), "time": round(b["wall_s"] / s["wall_s"], 3),
                             "memory": round(b["peak_rss_mib"] / s["peak_rss_mib"], 3)}
            r = ratios[stage]
            print(f"  {stage:<18} " + " ".join(f"{'x' + format(v, '.2f'):>7}" for v in (px, r["time"], r["memory"])))
    if a.json:
        doc = {"landsat_res_m": a.landsat_res, "scenes": a.scenes, "landsat_block": lblock, "threads": 1,
               "stages": selected,
               "sizes": results, "ratios": ratios}
        a.json.write_text(json.dumps(doc, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
