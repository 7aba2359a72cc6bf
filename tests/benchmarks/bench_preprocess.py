"""Preprocessing benchmark: one year of calibrate PANDA -> Landsat calibrate + composite -> resample -> cube.

Usage::

    python tests/benchmarks/bench_preprocess.py [--quick] [--sizes N [N ...]] [--landsat-res M]
                                                 [--scenes K] [--workdir DIR] [--json OUT]

For each region size (working pixels per side at 125 m; default 8000 and 2000, i.e. a
1000 km and a 250 km square; ``--quick``: 1000 and 2000) the raw inputs are synthesized
in one subprocess (not measured) and the stages run in a second subprocess, whose wall
time per stage and peak resident memory (``ru_maxrss`` via ``os.wait4``) are reported,
with the large/small ratios next to the pixel ratio. Streaming stages should scale
linearly in time and stay nearly flat in memory.

Raw inputs are synthesized window by window from smooth closed-form fields (fast, and
continuous across windows): PANDA-like uint8 DN on the 1 km anchor lattice; ``--scenes``
Collection-2-like Landsat scenes (one OLI, the others ETM+, all 7 SR bands + QA_PIXEL with
clouds) on one UTM grid at ``--landsat-res`` metres (default 120 m, coarser than the real
30 m so that a 1000 km square stays feasible: the output says so; Landsat cost grows ~16x at
30 m); a float32 EPSG:4326 DEM (0.002 degrees). Stages are the library functions the CLI
calls: :func:`pandafine.preprocess.calibrate.calibrate_panda`,
:func:`pandafine.preprocess.calibrate.calibrate_landsat_year`,
:func:`pandafine.preprocess.denoise.composite_landsat_year`,
:func:`pandafine.preprocess.resample.resample_layer` (panda, dem) and :func:`pandafine.tiles.cube.build_cube`.

Not collected by pytest (``--ignore=tests/benchmarks`` in pyproject).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[2]
YEAR = 2018
SIZES = {"full": (8000, 2000), "quick": (1000, 2000)}
#: Rows written per synthesis window.
ROWS = 512


def load_config() -> dict:
    return yaml.safe_load((REPO / "config.yaml").read_text())


def bench_grid(cfg: dict, size: int):
    """A ``size x size`` working grid at the configured pixel size, starting at the demo region's corner."""
    from affine import Affine

    from pandafine.core.grid import Grid, grid_from_config

    demo = grid_from_config(cfg)
    t = demo.transform
    return Grid(demo.crs, Affine(t.a, 0, t.c, 0, t.e, t.f), size, size, demo.factor)


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


def synthesize(cfg: dict, size: int, landsat_res: float, n_scenes: int, raw: Path) -> dict:
    """Write the raw inputs of one year for a ``size``-pixel square; return what was written."""
    from rasterio.windows import Window

    from pandafine.core.grid import Grid
    from pandafine.sensors.landsat import SENSOR_BANDS, reflectance_to_dn
    from pandafine.synthetic import observe as obs
    from pandafine.synthetic import scene as syn

    grid = bench_grid(cfg, size)
    rng = np.random.default_rng(size)
    # PANDA: 1 km cells on the anchor lattice (+2 cells margin), uint8 DN 0..63, nodata 255
    pgrid = obs.panda_grid(grid)
    x, y = _centres(pgrid, 0, pgrid.height)
    dn = np.clip(np.rint(40 * np.maximum(field(x, y, 1), 0) ** 2 * 63 / 40), 0, 63).astype(np.uint8)
    with _writer(raw / "panda" / f"PANDA_China_{YEAR}.tif", pgrid, 1, "uint8", 255) as dst:
        dst.write(dn[None])
    # Landsat: scenes on one UTM grid covering the region
    lgrid = obs.landsat_grid(grid, landsat_res)
    endm = np.asarray(syn.ENDMEMBERS["vegetation"], np.float32), np.asarray(syn.ENDMEMBERS["urban"], np.float32)
    scenes = []
    for i in range(n_scenes):
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
    # DEM: float32 EPSG:4326 at 0.002 degrees over the region + 0.02 degrees
    from affine import Affine

    w, s, e, n = syn.lonlat_bounds(grid, margin_deg=0.02)
    res = 0.002
    dgrid = Grid("EPSG:4326", Affine(res, 0, w, 0, -res, n), math.ceil((e - w) / res), math.ceil((n - s) / res), 1)
    with _writer(raw / "dem" / "dem.tif", dgrid, 1, "float32", float("nan")) as dst:
        for r0 in range(0, dgrid.height, ROWS):
            k = min(ROWS, dgrid.height - r0)
            x, y = _centres(dgrid, r0, k)
            dst.write((500 + 300 * field(x * 1e5, y * 1e5, 4))[None].astype(np.float32),
                      window=Window(0, r0, dgrid.width, k))
    return {"grid": [grid.width, grid.height], "landsat_grid": [lgrid.width, lgrid.height],
            "landsat_res_m": landsat_res, "scenes": scenes, "panda_grid": [pgrid.width, pgrid.height],
            "dem_grid": [dgrid.width, dgrid.height]}


def process(cfg: dict, size: int, raw: Path, out: Path) -> dict:
    """Run the stages of one year; return wall seconds per stage."""
    from pandafine.core.runtime import limit_threads

    limit_threads(1)  # as a workflow job does (`pandafine STAGE --threads 1`)
    import warnings

    from pandafine.preprocess.calibrate import calibrate_landsat_year, calibrate_panda
    from pandafine.preprocess.denoise import composite_landsat_year
    from pandafine.preprocess.resample import resample_layer
    from pandafine.tiles.cube import build_cube

    # the synthetic clouds leave some pixels without a clear observation (no other years here)
    warnings.filterwarnings("ignore", message=".*no clear observation.*")
    grid = bench_grid(cfg, size)
    times: dict[str, float] = {}

    def stage(name, fn, *args, **kwargs):
        t0 = time.perf_counter()
        fn(*args, **kwargs)
        times[name] = round(time.perf_counter() - t0, 3)

    stage("calibrate_panda", calibrate_panda, cfg, raw / "panda" / f"PANDA_China_{YEAR}.tif",
          out / "calibrated" / "panda" / f"{YEAR}.tif")
    stage("calibrate_landsat", calibrate_landsat_year, cfg, raw / "landsat" / str(YEAR),
          out / "calibrated" / "landsat" / str(YEAR))
    stage("composite_landsat", composite_landsat_year, cfg, YEAR,
          {YEAR: out / "calibrated" / "landsat" / str(YEAR)}, grid, out / "denoised" / "landsat" / f"{YEAR}.tif")
    stage("resample_panda", resample_layer, "panda", out / "calibrated" / "panda" / f"{YEAR}.tif", grid,
          out / "resampled" / "panda" / f"{YEAR}.tif", method=cfg["preprocess"]["panda_resampling"])
    stage("resample_dem", resample_layer, "dem", raw / "dem" / "dem.tif", grid, out / "resampled" / "dem" / "dem.tif")
    stage("build_cube", build_cube, out / "resampled" / "panda" / f"{YEAR}.tif",
          out / "denoised" / "landsat" / f"{YEAR}.tif", out / "resampled" / "dem" / "dem.tif", grid,
          out / "cube" / f"{YEAR}.zarr", year=YEAR, chunk=int(cfg["tiles"]["chunk"]))
    times["total"] = round(sum(times.values()), 3)
    return times


def run_child(args: list[str]) -> tuple[int, float, int]:
    """Run ``python this_file args`` and return (exit status, wall seconds, ru_maxrss KiB) of the child."""
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, __file__, *args])
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, time.perf_counter() - t0, int(usage.ru_maxrss)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help=f"sizes {SIZES['quick']} instead of {SIZES['full']}")
    ap.add_argument("--sizes", type=int, nargs="+", help="region sides in working pixels (overrides --quick)")
    ap.add_argument("--landsat-res", type=float, default=120.0, help="synthetic Landsat pixel size (m)")
    ap.add_argument("--scenes", type=int, default=2, help="Landsat scenes in the year")
    ap.add_argument("--workdir", type=Path, help="keep inputs/outputs here instead of a temporary directory")
    ap.add_argument("--json", type=Path, help="also write the results as JSON")
    ap.add_argument("--synthesize", nargs=2, metavar=("SIZE", "DIR"), help=argparse.SUPPRESS)
    ap.add_argument("--process", nargs=2, metavar=("SIZE", "DIR"), help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    cfg = load_config()
    if a.synthesize:
        size, d = int(a.synthesize[0]), Path(a.synthesize[1])
        info = synthesize(cfg, size, a.landsat_res, a.scenes, d / "raw")
        (d / "inputs.json").write_text(json.dumps(info))
        return 0
    if a.process:
        size, d = int(a.process[0]), Path(a.process[1])
        (d / "timings.json").write_text(json.dumps(process(cfg, size, d / "raw", d / "out")))
        return 0

    sizes = a.sizes or SIZES["quick" if a.quick else "full"]
    print(f"Landsat synthesized at {a.landsat_res:g} m ({a.scenes} scenes; real Collection 2 is 30 m: "
          f"~{(a.landsat_res / 30) ** 2:.0f}x more Landsat pixels)", flush=True)
    results = []
    with tempfile.TemporaryDirectory(prefix="bench_preprocess.") as tmp:
        base = a.workdir or Path(tmp)
        for size in sizes:
            d = base / f"s{size}"
            d.mkdir(parents=True, exist_ok=True)
            extra = ["--landsat-res", str(a.landsat_res), "--scenes", str(a.scenes)]
            rc, gen_s, _ = run_child(["--synthesize", str(size), str(d), *extra])
            if rc:
                print(f"synthesis of {size} px failed (exit {rc})", file=sys.stderr)
                return rc
            rc, wall, rss = run_child(["--process", str(size), str(d), *extra])
            if rc:
                print(f"processing of {size} px failed (exit {rc})", file=sys.stderr)
                return rc
            times = json.loads((d / "timings.json").read_text())
            info = json.loads((d / "inputs.json").read_text())
            res = {"size": size, "km": size * 0.125, "wall_s": round(wall, 2), "peak_rss_mib": round(rss / 1024, 1),
                   "stages_s": times, "synthesis_s": round(gen_s, 1), "inputs": info}
            results.append(res)
            print(f"{size} x {size} px ({size * 0.125:g} km): wall {wall:.1f} s (stages {times['total']:.1f} s), "
                  f"peak RSS {rss / 1024:.0f} MiB; Landsat grid {info['landsat_grid'][0]}x{info['landsat_grid'][1]}; "
                  + ", ".join(f"{k} {v:.1f}s" for k, v in times.items() if k != "total"), flush=True)
    if len(results) >= 2:
        big, small = max(results, key=lambda r: r["size"]), min(results, key=lambda r: r["size"])
        px = (big["size"] / small["size"]) ** 2
        print(f"ratio {big['size']}/{small['size']}: pixels x{px:.1f}, time x{big['wall_s'] / small['wall_s']:.2f}, "
              f"peak memory x{big['peak_rss_mib'] / small['peak_rss_mib']:.2f}")
    if a.json:
        a.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
