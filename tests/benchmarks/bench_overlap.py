"""Tile overlap: recompute factor, seams, light and throughput of trained models, per (tile, overlap).

Usage::

    python tests/benchmarks/bench_overlap.py --cube results/tiles/cube/2018.zarr \\
        --model unet=results/models/unet/model.onnx [--model NAME=PATH ...] \\
        [--mirror 3] [--tiles 128,256] [--overlaps 0,8,16,24,32] [--baseline 128:32] \\
        [--threads 2] [--repeat 3] [--json OUT] [--combos 128:32,512:64]
    python tests/benchmarks/bench_overlap.py --cube ... --model NAME=PATH --throughput 256:32 \\
        [--baseline 128:32] [--mirror 3] [--repeat 5] [--config config.yaml]

``--throughput TILE:OVERLAP[:BATCH]`` times ``pandafine infer`` itself
(:func:`pandafine.inference.infer.infer_year`: the cube read from a Zarr store on disk, the
product COG written) with that tiling against ``--baseline``, alternating the two ``--repeat``
times after one untimed run of each, on the mirrored region written as a cube, and prints
the medians and the median of the per-pair ratios, and the relative RMSE between the two
products (seams: the quality mode).

For each model and each (tile, overlap) it runs the tiling and blending of
``pandafine infer`` (:func:`pandafine.inference.infer.infer_array`, onnxruntime
on the CPU) over the cube's region, mirrored ``--mirror`` times along each axis
(reflection, so the region is larger than the demo's 352 px without new
seams of its own), and prints:

- ``recompute``: model output pixels computed per region pixel (tile areas / region
  area, with the last tile snapped to the border), and ``asymptotic`` =
  (tile / (tile - overlap))², the same for a region much larger than a tile;
- ``seam``: mean |difference| of neighbouring pixels across tile edges over that
  elsewhere (:func:`pandafine.inference.sampling.seam_statistics`), divided by the same
  statistic of the reference on the same pixel pairs (the image's own structure, e.g.
  1 km cell edges that fall on tile edges, cancels out; 1.0 = no seam);
- ``rel.RMSE``, ``light``: relative RMSE and total-light change against the reference,
  one pass of the model over the whole region (one tile, nothing blended);
- ``s``: median seconds of the passes, timed interleaved with the baseline
  (``--baseline TILE:OVERLAP``, today's 128:32) in the same loop, and
  ``speed-up``: median of the per-pass ratios baseline / candidate (``--repeat 0``: one
  untimed pass each, quality only).

Not collected by pytest (``--ignore=tests/benchmarks`` in pyproject).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np


def recompute_factor(height: int, width: int, tile: int, overlap: int) -> float:
    """Model output pixels per region pixel for the lattice :class:`TileLayout` lays out (both axes)."""
    from pandafine.inference.blending import recompute_factor as axis_factor

    return axis_factor(height, tile, overlap) * axis_factor(width, tile, overlap)


def asymptotic_factor(tile: int, overlap: int) -> float:
    return (tile / (tile - overlap)) ** 2


def load_region(cube: Path, mirror: int) -> np.ndarray:
    from pandafine.tiles.cube import open_cube

    x = np.asarray(open_cube(cube).inputs[:], dtype=np.float32)
    if mirror > 1:
        _, h, w = x.shape
        x = np.pad(x, ((0, 0), (0, h * (mirror - 1)), (0, w * (mirror - 1))), mode="symmetric")
    return np.ascontiguousarray(x)


def write_region_cube(region: np.ndarray, like: Path, out: Path) -> Path:
    """``region`` as an inference cube with the channels, year and pixel grid of the cube ``like``."""
    import zarr

    from pandafine.core.grid import Grid
    from pandafine.tiles.cube import open_cube, write_grid_mapping

    src = open_cube(like)
    _, h, w = region.shape
    grid = Grid(src.grid.crs, src.grid.transform, w, h, src.grid.factor)
    root = zarr.open_group(zarr.storage.LocalStore(out), mode="w")
    arr = root.create_array("inputs", data=region, chunks=(region.shape[0], 256, 256),
                            dimension_names=("channel", "y", "x"))
    root.attrs.update({"channels": list(src.channels), "year": src.year, "grid": grid.to_dict()})
    write_grid_mapping(root, arr, grid)
    return out


def throughput(args, region: np.ndarray) -> None:
    """Interleaved wall time of ``pandafine infer`` (infer_year) with two tilings on the same cube."""
    import tempfile

    import rasterio
    import yaml

    from pandafine.core.runtime import limit_threads
    from pandafine.inference.infer import infer_year

    cfg = yaml.safe_load(Path(args.config).read_text())
    cfg["infer"].update(window=args.window, batch_size=args.batch, providers=["CPUExecutionProvider"])
    name, model = args.model[0].split("=", 1)
    def tiling(spec: str) -> tuple[int, int, int]:  # TILE:OVERLAP[:BATCH]
        v = [int(x) for x in spec.split(":")]
        return v[0], v[1], v[2] if len(v) > 2 else args.batch

    runs = {"candidate": tiling(args.throughput), "baseline": tiling(args.baseline)}
    limit_threads(args.threads)  # as `pandafine infer --threads N`
    with tempfile.TemporaryDirectory() as tmp:
        cube = write_region_cube(region, args.cube, Path(tmp) / "cube.zarr")
        times: dict[str, list[float]] = {k: [] for k in runs}
        outs = {}
        for i in range(args.repeat + 1):
            for key, (t, o, b) in runs.items():
                cfg["infer"].update(tile=t, overlap=o, batch_size=b)
                out = Path(tmp) / f"{key}.tif"
                t0 = time.perf_counter()
                infer_year(cfg, cube, model, out, progress=False)
                if i:  # the first round is untimed
                    times[key].append(time.perf_counter() - t0)
                with rasterio.open(out) as src:
                    outs[key] = src.read(1).astype(np.float64)
    _, h, w = region.shape
    ratio = statistics.median(b / c for b, c in zip(times["baseline"], times["candidate"]))
    print(f"\n{name}: pandafine infer on {h}x{w} px, {args.threads} threads, {args.repeat} interleaved runs each")
    for key, (t, o, b) in runs.items():  # seams: the quality mode (against a one-pass run)
        print(f"  {key:9s} tile {t:4d} overlap {o:3d} batch {b}: recompute {recompute_factor(h, w, t, o):.3f} "
              f"(asymptotic {asymptotic_factor(t, o):.3f}), median {statistics.median(times[key]):.2f} s "
              f"(best {min(times[key]):.2f} s)")
    ok = np.isfinite(outs["baseline"]) & np.isfinite(outs["candidate"])
    rel = np.sqrt(np.mean((outs["candidate"][ok] - outs["baseline"][ok]) ** 2) / np.mean(outs["baseline"][ok] ** 2))
    print(f"  throughput candidate / baseline: {ratio:.2f}x (median of per-pair ratios); "
          f"relative RMSE between the two products {rel:.2e}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cube", type=Path, required=True)
    ap.add_argument("--model", action="append", required=True, help="NAME=PATH.onnx (repeatable)")
    ap.add_argument("--mirror", type=int, default=3)
    ap.add_argument("--tiles", default="128,256")
    ap.add_argument("--overlaps", default="0,8,16,24,32,48")
    ap.add_argument("--baseline", default="128:32")
    ap.add_argument("--combos", help="TILE:OVERLAP,... to measure instead of --tiles x --overlaps")
    ap.add_argument("--window", default="hann")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--throughput", help="TILE:OVERLAP[:BATCH]: time pandafine infer with it against --baseline "
                    "(TILE:OVERLAP[:BATCH] too)")
    ap.add_argument("--config", default="config.yaml", help="config for --throughput (its infer section is edited)")
    args = ap.parse_args()

    from pandafine.inference.infer import InferParams, infer_array
    from pandafine.inference.providers import make_session
    from pandafine.inference.sampling import seam_statistics

    region = load_region(args.cube, args.mirror)
    if args.throughput:
        throughput(args, region)
        return
    _, height, width = region.shape
    tiles = [int(t) for t in args.tiles.split(",")]
    overlaps = [int(o) for o in args.overlaps.split(",")]
    bt, bo = (int(v) for v in args.baseline.split(":"))
    print(f"region {height}x{width} px ({args.cube}, mirrored x{args.mirror}), window {args.window}, "
          f"batch {args.batch}, {args.threads} threads, baseline tile {bt} overlap {bo}")

    def params(t: int, o: int) -> InferParams:
        return InferParams(t, o, args.window, args.batch, ("CPUExecutionProvider",))

    results = []
    for spec in args.model:
        name, path = spec.split("=", 1)
        session = make_session(path, ["CPUExecutionProvider"], args.threads)
        one_tile = -(-max(height, width) // 16) * 16
        ref = infer_array(session, region, params(one_tile, 0)).astype(np.float64)
        ok = np.isfinite(ref)
        ref_sum, ref_rms = ref[ok].sum(), np.sqrt(np.mean(ref[ok] ** 2))
        combos = ([tuple(int(v) for v in c.split(":")) for c in args.combos.split(",")] if args.combos else
                  [(t, o) for t in tiles for o in overlaps if o < t])
        if args.repeat:
            infer_array(session, region, params(bt, bo))  # warm-up
        times: dict[tuple[int, int], list[float]] = {c: [1.0] for c in combos}  # placeholders for --repeat 0
        base_times: dict[tuple[int, int], list[float]] = {c: [float("nan")] for c in combos}
        outs = {}
        for k in range(max(args.repeat, 1)):
            for c in combos:
                if args.repeat:  # --repeat 0: quality only, no timing
                    if k == 0:
                        times[c], base_times[c] = [], []
                    t0 = time.perf_counter()
                    infer_array(session, region, params(bt, bo))
                    base_times[c].append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                outs[c] = infer_array(session, region, params(*c))
                times[c].append(time.perf_counter() - t0)
        print(f"\n{name} ({path}); reference: one pass ({one_tile} px tile)")
        print(f"{'tile':>5} {'ovl':>4} {'recompute':>9} {'asympt.':>7} {'seam':>6} {'rel.RMSE':>9} "
              f"{'light':>8} {'s':>7} {'speed-up':>8}")
        for c in combos:
            t, o = c
            out = outs[c].astype(np.float64)
            seams = seam_statistics(out, t, o)["ratio"] / seam_statistics(ref, t, o)["ratio"]
            m = ok & np.isfinite(out)
            rel_rmse = float(np.sqrt(np.mean((out[m] - ref[m]) ** 2)) / ref_rms)
            light = float(out[m].sum() / ref_sum - 1)
            speed = statistics.median(b / s for b, s in zip(base_times[c], times[c]))
            row = {"model": name, "tile": t, "overlap": o, "recompute": recompute_factor(height, width, t, o),
                   "asymptotic": asymptotic_factor(t, o), "seam_excess": seams, "rel_rmse": rel_rmse,
                   "light_change": light, "seconds": statistics.median(times[c]),
                   "baseline_seconds": statistics.median(base_times[c]), "speed_up": speed}
            results.append(row)
            print(f"{t:>5} {o:>4} {row['recompute']:>9.3f} {row['asymptotic']:>7.3f} {seams:>6.3f} "
                  f"{rel_rmse:>9.2e} {light:>+8.3%} {row['seconds']:>7.2f} {speed:>7.2f}x")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
