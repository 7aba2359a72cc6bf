"""Gap filling of the yearly Landsat composite: neighbouring years' block composites against their scenes.

The per-(year, block) path (``pandafine.preprocess.landsat_composite.composite_year``) fills a pixel
without a clear observation from the neighbouring years' *block composites* (the mean of the two
neighbours' medians at the nearest distance with any). The path it replaced (commit
:data:`OLD_COMMIT`) took the *pooled median of the neighbouring years' scenes*, which the block path
no longer keeps. This benchmark compares the two on a finished synthetic run, against the hidden truth:

* the run's yearly composites (``results/denoised/landsat/{year}.tif``) are the new path;
* the old path is run on the same raw scenes (``resources/raw/landsat``): its calibration and
  composite modules are taken from git (``git show 4985208:...``, as ``bench_landsat.py`` does);
* on the pixels clear in the year itself the two must be equal; on the gap-filled pixels both are
  compared with the truth's OLI-equivalent reflectance (``SyntheticScene.landsat_truth``, the 6 bands
  every sensor measures), year by year and pooled.

Usage (on a finished demo run, e.g. a clone after README command 1)::

    python tests/benchmarks/bench_landsat_gapfill.py --run /path/to/clone [--years 2009 2018]

Not collected by pytest (``--ignore=tests/benchmarks`` in pyproject).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_landsat import OLD_COMMIT, load_old_modules  # noqa: E402  (benchmarks share their helpers)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, required=True, help="a finished synthetic run (its results/ and resources/)")
    ap.add_argument("--config", type=Path, help="its config (default: RUN/config.yaml)")
    ap.add_argument("--years", type=int, nargs="+", help="years to compare (default: every year of the run)")
    a = ap.parse_args(argv)

    import rasterio

    from pandafine.config import validate_config
    from pandafine.config import years as config_years
    from pandafine.core.grid import Grid
    from pandafine.synthetic import scene as syn

    cfg = validate_config(yaml.safe_load((a.config or a.run / "config.yaml").read_text()))
    grid = Grid.from_dict(json.loads((a.run / "results" / "grid.json").read_text()))
    raw = a.run / "resources" / "raw" / "landsat"
    all_years = config_years(cfg)
    years = a.years or all_years
    scene = syn.SyntheticScene.from_config(cfg)
    gap_years = int(cfg["preprocess"]["landsat_gapfill_years"])
    print(f"run {a.run}: {grid.width} x {grid.height} px; old path from commit {OLD_COMMIT}; gap filling "
          f"+/-{gap_years} year(s)")
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        old = load_old_modules(d)
        cal, den = old["old_calibrate"], old["old_denoise"]
        need = sorted({v for y in years for v in range(y - gap_years, y + gap_years + 1) if v in all_years})
        cal_dirs = {}
        for y in need:
            cal_dirs[y] = d / "cal" / str(y)
            cal.calibrate_landsat_year(cfg, raw / str(y), cal_dirs[y])
        se_old = se_new = n = 0.0
        clear_max = 0.0
        print(f"{'year':>5} {'gap px':>7} {'old RMSE':>9} {'new RMSE':>9}  (gap-filled pixels vs truth, 6 bands)")
        for y in years:
            out = d / f"old_{y}.tif"
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                den.composite_landsat_year(cfg, y, cal_dirs, grid, out)
            with rasterio.open(out) as src:
                o = src.read()
            with rasterio.open(a.run / "results" / "denoised" / "landsat" / f"{y}.tif") as src:
                w = src.read()
            if not np.array_equal(o[7], w[7]):
                raise SystemExit(f"{y}: clear_count differs between the paths; the runs are not comparable")
            own = w[7] > 0
            if own.any():
                clear_max = max(clear_max, float(np.nanmax(np.abs(o[:7][:, own] - w[:7][:, own]))))
            gap = ~own & np.isfinite(o[:7]).all(0) & np.isfinite(w[:7]).all(0)
            if not gap.any():
                continue
            t = scene.landsat_truth(y, grid, supersample=4)
            do, dw = o[1:7][:, gap] - t[1:][:, gap], w[1:7][:, gap] - t[1:][:, gap]
            se_old += float((do ** 2).sum())
            se_new += float((dw ** 2).sum())
            n += do.size
            print(f"{y:>5} {int(gap.sum()):>7} {np.sqrt((do ** 2).mean()):>9.5f} {np.sqrt((dw ** 2).mean()):>9.5f}")
    print(f"clear pixels: largest difference between the paths {clear_max:.3g}")
    if n:
        print(f"gap-filled pixels, all years: old (pooled median of the neighbours' scenes) RMSE "
              f"{np.sqrt(se_old / n):.5f}; new (mean of the neighbours' block medians) {np.sqrt(se_new / n):.5f}; "
              f"new/old {np.sqrt(se_new / se_old):.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
