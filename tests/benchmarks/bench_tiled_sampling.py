"""Tiled sampling of trained diffusion / flow models: seams, tiled vs one-pass, and a small design-space table.

Usage::

    python tests/benchmarks/bench_tiled_sampling.py [--workdir DIR] [--epochs N] [--width W] [--size S]
    python tests/benchmarks/bench_tiled_sampling.py --checkpoint results/models/diffusion/checkpoint.pt \
        --cube results/tiles/cube/2018.zarr [--size S] [--tile T]

The second form measures a trained model of a real run on an S x S window of a year's cube
(the brightest window of the cube's PANDA, at its grid position): tiled sampling (tile T,
overlap 0.25, Hann) against one pass, the seam ratio, and two seeds, for the model's sampler.

Trains (or reuses, if ``DIR/{model}/checkpoint.pt`` exists) a diffusion (v-prediction,
cosine schedule) and a flow model of width ``W`` and depth 2 on the fake tiles of
``tests/fake_tiles.py`` (4 scenes of 128 px, 32 px patches), plus a UNet of the same width for
reference. Then, on a fresh ``S`` x ``S`` scene, for each deterministic sampler:

* tiled sampling (tiles of 32 and 64 px, overlap 0.25, Hann windows) against one-pass
  sampling with the same seed: RMSE / RMS of the one-pass product (acceptance: <= 2 %);
* the seam ratio: mean |diff| of neighbours across tile edges / elsewhere (acceptance: <= 1.1);
* for scale: the difference between two seeds (RMSE / RMS) and the error against the truth.

Finally the test-split metrics of every model x sampler x steps (``pandafine.studies.design_space``).
All figures are printed; nothing is asserted. Not collected by pytest.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests"))

from fake_tiles import make_scene, stage_config, write_fake_train_zarr  # noqa: E402
from pandafine.inference import sampling as TS  # noqa: E402
from pandafine.models.checkpoint import read_checkpoint
from pandafine.models.registry import load_trained_model
from pandafine.studies import design_space as D  # noqa: E402
from pandafine.training import train as T  # noqa: E402

SAMPLERS = {"diffusion": [{"kind": "ddim", "steps": 8}, {"kind": "ddim", "steps": 25}, {"kind": "dpmpp_2m", "steps": 8},
                          {"kind": "dpmpp_2m", "steps": 25}, {"kind": "euler", "steps": 8},
                          {"kind": "ddpm", "steps": 25},
                          {"kind": "staged", "switch_t": 200, "fast_steps": 6, "slow_steps": 4, "eta": 1.0}],
            "flow": [{"kind": "euler", "steps": 8}, {"kind": "euler", "steps": 25}, {"kind": "heun", "steps": 4},
                     {"kind": "heun", "steps": 12}]}
DETERMINISTIC = {"ddim", "dpmpp_2m", "euler", "heun"}


def train(workdir: Path, epochs: int, width: int) -> tuple[Path, dict]:
    zarr = workdir / "train.zarr"
    if not zarr.exists():
        write_fake_train_zarr(zarr, patch=32, size=128, years=(2016, 2017, 2018, 2019))
    dirs = {}
    for name in ("unet", "diffusion", "flow"):
        out = workdir / name
        dirs[name] = out
        if (out / "checkpoint.pt").exists():
            print(f"{name}: reusing {out}")
            continue
        cfg = stage_config(epochs=epochs if name != "unet" else max(10, epochs // 2), patience=10 * epochs,
                          learning_rate=2e-3, batch_size=8)
        cfg["model"] = {"name": name, "width": width, "depth": 2}
        if name == "diffusion":
            cfg["model"]["sampler"] = {"kind": "ddim", "steps": 8}
        if name == "flow":
            cfg["model"]["sampler"] = {"kind": "euler", "steps": 8}
        t0 = time.perf_counter()
        T.train_model(cfg, zarr, out, progress=False)
        ck = read_checkpoint(out / "checkpoint.pt")
        print(f"{name}: trained {ck['epoch']} epochs in {time.perf_counter() - t0:.0f} s, best val PSNR(log) "
              f"{ck['best_val_psnr_log']:.2f} dB")
    return zarr, dirs


def measure_checkpoint(checkpoint: Path, cube_path: Path, size: int, tile: int) -> None:
    """Seams and tiled vs one-pass agreement of a trained model on the brightest window of a cube."""
    import numpy as np

    from pandafine.tiles.cube import open_cube

    model, ck = load_trained_model(checkpoint.parent, checkpoint=read_checkpoint(checkpoint))
    cube = open_cube(cube_path)
    panda = np.nan_to_num(np.asarray(cube.inputs[cube.channels.index("panda")]), nan=0.0)
    h, w = panda.shape
    size = min(size, h, w) // 8 * 8
    step = max(8, size // 4)
    best = max(((panda[r:r + size, c:c + size].sum(), r, c) for r in range(0, h - size + 1, step)
                for c in range(0, w - size + 1, step)))
    _, r0, c0 = best
    inputs = np.asarray(cube.inputs[:, r0:r0 + size, c0:c0 + size], dtype=np.float32)
    spec = ck["model_config"].get("sampler")
    sample = TS.model_tile_sampler(model)
    mask = cube.channels.index("panda")
    t0 = time.perf_counter()
    one = TS.sample_one_pass(sample, inputs, seed=0, row0=r0, col0=c0, multiple=8, mask_channel=mask)
    t1 = time.perf_counter()
    tiled = TS.sample_region(sample, inputs, tile=tile, overlap=tile // 4, seed=0, row0=r0, col0=c0, batch_size=4,
                             mask_channel=mask)
    t2 = time.perf_counter()
    other = TS.sample_one_pass(sample, inputs, seed=1, row0=r0, col0=c0, multiple=8, mask_channel=mask)
    seams = TS.seam_statistics(tiled, tile, 0.25)
    content = TS.seam_statistics(one, tile, 0.25)  # the same pixel pairs in the one-pass product: no tiles there
    print(f"{checkpoint} ({ck['model_config']['name']}, sampler {spec}), {cube_path}: window {size} x {size} px at "
          f"row {r0}, col {c0}; tile {tile}, overlap 0.25, hann")
    print(f"tiled vs one-pass RMSE / RMS of the one-pass product: {TS.relative_rmse(tiled, one):.4f} "
          f"(acceptance <= 0.02)")
    print(f"seam ratio (mean |neighbour difference| across tile edges / elsewhere): {seams['ratio']:.3f} "
          f"(acceptance <= 1.1); the same pairs in the one-pass product: {content['ratio']:.3f} (the content's "
          "own ratio there, e.g. 1 km PANDA cell edges, which tile edges fall on)")
    print(f"for scale: two seeds differ by {TS.relative_rmse(other, one):.4f}; one pass {t1 - t0:.1f} s, "
          f"tiled {t2 - t1:.1f} s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/pandafine-bench-sampling"))
    ap.add_argument("--epochs", type=int, default=80)
    ap.add_argument("--width", type=int, default=12)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--checkpoint", type=Path, help="a trained diffusion/flow checkpoint.pt of a run (with --cube)")
    ap.add_argument("--cube", type=Path, help="a year's cube, results/tiles/cube/{year}.zarr (with --checkpoint)")
    ap.add_argument("--tile", type=int, default=64, help="tile size for --checkpoint (default 64)")
    args = ap.parse_args()
    if args.checkpoint or args.cube:
        if not (args.checkpoint and args.cube):
            ap.error("--checkpoint and --cube go together")
        measure_checkpoint(args.checkpoint, args.cube, args.size, args.tile)
        return
    args.workdir.mkdir(parents=True, exist_ok=True)
    zarr, dirs = train(args.workdir, args.epochs, args.width)
    inputs, truth = make_scene(args.size, seed=11)
    print(f"\nregion {args.size} x {args.size} px (a scene not in the training set), seed 5, grid origin (1000, 2000)")
    print("model      sampler               tile  rel.RMSE tiled/one-pass  seam ratio  2 seeds differ  "
          "error vs truth")
    for name in ("diffusion", "flow"):
        model, _ = load_trained_model(dirs[name])
        for spec in SAMPLERS[name]:
            if spec["kind"] not in DETERMINISTIC:
                continue
            sample = TS.model_tile_sampler(model, spec)
            label = model.net.sampler_spec(spec).label()
            one = TS.sample_one_pass(sample, inputs, seed=5, row0=1000, col0=2000, multiple=4)
            other = TS.sample_one_pass(sample, inputs, seed=6, row0=1000, col0=2000, multiple=4)
            for tile in (32, 64):
                tiled = TS.sample_region(sample, inputs, tile=tile, overlap=tile // 4, seed=5, row0=1000, col0=2000,
                                         batch_size=4)
                seams = TS.seam_statistics(tiled, tile, 0.25)
                print(f"{name:10s} {label:21s} {tile:4d}  {TS.relative_rmse(tiled, one):22.4f}  "
                      f"{seams['ratio']:10.3f}  {TS.relative_rmse(other, one):14.3f}  "
                      f"{TS.relative_rmse(one, truth):14.3f}")
    print("\ndesign space (test split of the fake tiles, fp32, this machine):")
    cfg = stage_config()
    recs = [D.table_record(D.evaluate_sampling(cfg, zarr, dirs["unet"]), dirs["unet"])]
    for name in ("diffusion", "flow"):
        for spec in SAMPLERS[name]:
            recs.append(D.table_record(D.evaluate_sampling(cfg, zarr, dirs[name], sampler=spec, seed=0), dirs[name]))
    interp = D.evaluate_sampling(cfg, zarr, dirs["unet"])["interpolation"]
    print(D.table_markdown(recs))
    print(f"interpolation baseline: PSNR log {interp['psnr_log_db']:.2f} dB, PSNR radiance "
          f"{interp['psnr_radiance_db']:.2f} dB, SSIM log {interp['ssim_log']:.3f}, brightest 1% error "
          f"{interp['brightest_1pct_error']:+.3f}")


if __name__ == "__main__":
    main()
