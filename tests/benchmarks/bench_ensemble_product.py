"""Ensemble products of the uncertainty study's residual flow: seams, tiled vs one pass, and cost.

Usage, in a workdir where ``snakemake results/models/<model>/uncertainty.json`` has run::

    python tests/benchmarks/bench_ensemble_product.py --cube results/tiles/cube/2018.zarr \
        --model-dir results/models/mmntlsr [--config config.yaml] [--members 8] [--tile 128 --overlap 64]

For one year's cube it runs ``pandafine infer``'s code (:func:`pandafine.inference.infer.infer_year`)
three times, in this order, in one process with the same threads:

1. the deterministic model (``model.onnx``, fp32): the year's product as the workflow makes it;
2. the ensemble (``uncertainty_models/generative/checkpoint.pt``, ``infer.ensemble = members``,
   the recipe of its ``ensemble.json``) with the same tile and overlap (``--tile``/``--overlap``,
   default the config's);
3. the same ensemble in one pass (a tile covering the grid).

Printed: wall seconds of 1 and 2 and their ratio (the issue's budget: members x 8 network calls
= 64 x for 8 members); tiled vs one-pass RMSE of the ensemble mean / its RMS (budget 1 %); the
seam ratio of the tiled mean and of the one-pass mean at the same pixel pairs (mean |neighbour
difference| across tile edges / elsewhere) and their quotient (budget 1.1: 1 km cell edges that fall
on tile edges show in both and cancel, as in ``bench_overlap.py``); the mean spread / mean radiance. Nothing
is asserted; not collected by pytest.
"""

from __future__ import annotations

import argparse
import copy
import tempfile
import time
from pathlib import Path


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cube", type=Path, required=True, help="results/tiles/cube/{year}.zarr")
    ap.add_argument("--model-dir", type=Path, required=True, help="results/models/<model> (after the uncertainty rule)")
    ap.add_argument("--config", type=Path, default=Path("config.yaml"))
    ap.add_argument("--members", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tile", type=int, help="tile (px) of runs 1 and 2 (default infer.tile; the demo's 352 px grid "
                                             "fits one 512 px tile, so seams need e.g. --tile 128)")
    ap.add_argument("--overlap", type=int, help="overlap (px) of runs 1 and 2 (default infer.overlap)")
    args = ap.parse_args(argv)

    import numpy as np
    import rasterio

    from pandafine.config import load_config
    from pandafine.core.runtime import limit_threads
    from pandafine.inference.infer import infer_year
    from pandafine.inference.sampling import relative_rmse, seam_statistics
    from pandafine.tiles.cube import open_cube

    limit_threads(args.threads)
    cfg = load_config(args.config)
    companion = args.model_dir / "uncertainty_models" / "generative" / "checkpoint.pt"
    onnx = args.model_dir / "model.onnx"
    for p in (companion, onnx):
        if not p.is_file():
            raise SystemExit(f"{p}: missing; run the uncertainty rule and the export first")
    h, w = open_cube(args.cube).grid.shape
    tile = int(args.tile or cfg["infer"]["tile"])
    overlap = int(args.overlap if args.overlap is not None else cfg["infer"]["overlap"])
    if max(h, w) <= tile:
        raise SystemExit(f"the {h} x {w} px grid fits one {tile} px tile: no seams to measure; pass a smaller --tile")

    def run(label: str, model_path: Path, members: int, tile_px: int, out: Path) -> tuple[float, np.ndarray]:
        c = copy.deepcopy(cfg)
        c["infer"].update(ensemble=members, tile=tile_px, overlap=min(overlap, tile_px - 8), precision="fp32")
        t0 = time.perf_counter()
        infer_year(c, args.cube, model_path, out, progress=False)
        sec = time.perf_counter() - t0
        with rasterio.open(out) as src:
            arr = src.read().astype(np.float64)
        print(f"{label}: {sec:.1f} s ({h} x {w} px, tile {tile_px}, {members} member(s))")
        return sec, arr

    one_tile = -(-max(h, w) // 64) * 64
    with tempfile.TemporaryDirectory() as tmp:
        t_det, det = run("deterministic model.onnx", onnx, 1, tile, Path(tmp) / "det.tif")
        t_ens, ens = run("ensemble, tiled", companion, args.members, tile, Path(tmp) / "ens.tif")
        _, one = run("ensemble, one pass", companion, args.members, one_tile, Path(tmp) / "one.tif")
    mean, spread = ens[0], ens[1]
    seams = seam_statistics(mean, tile, overlap)
    content = seam_statistics(one[0], tile, overlap)
    ok = np.isfinite(mean) & np.isfinite(det[0])
    print(f"cost: ensemble / deterministic wall time = {t_ens / t_det:.1f} x (budget {args.members} x 8 = "
          f"{8 * args.members} x)")
    print(f"tiled vs one-pass ensemble mean: RMSE / RMS = {relative_rmse(mean, one[0]):.4f} (budget 0.01); "
          f"spread: {relative_rmse(spread, one[1]):.4f}")
    print(f"seam ratio of the tiled mean: {seams['ratio']:.3f}; the one-pass mean at the same pairs: "
          f"{content['ratio']:.3f}; tiled / one-pass = {seams['ratio'] / content['ratio']:.3f} (budget 1.1: the "
          f"seam statistic of bench_overlap.py, the image's own edges under the tile edges divided out)")
    print(f"ensemble mean vs the deterministic product: RMSE / RMS = {relative_rmse(mean, det[0]):.4f}; total light "
          f"ratio {float(np.sum(mean[ok]) / np.sum(det[0][ok])):.4f}; mean spread / mean radiance = "
          f"{float(np.nanmean(spread) / np.nanmean(mean)):.3f}")


if __name__ == "__main__":
    main()
