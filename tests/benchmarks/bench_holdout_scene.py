"""Ablation rows on a held-out synthetic scene: every patch of another scene's tiles is a test patch.

The benchmark's own test split is 16 patches (8 places, 2 years), two of which
(one city core) decide the mean; a scene drawn with another ``synthetic.seed``
gives 112 patches no model has seen, from cities, roads and a river laid out
anew. Usage, from a workdir where the benchmark ablation has run, after
building the other scene's tiles in a second clone
(``workflow/configs/holdout_scene.yaml``: the benchmark with ``synthetic.seed: 8``)::

    snakemake --cores 2 results/tiles/train.zarr \
        --configfile workflow/configs/benchmark.yaml workflow/configs/holdout_scene.yaml   # in the clone
    python tests/benchmarks/bench_holdout_scene.py --tiles ../pandafine-holdout/results/tiles/train.zarr \
        --ablation results/ablation

Prints, per trained row, PSNR on z (data range: max - min of the held-out
target's z, as ``pandafine evaluate`` does), PSNR on radiance and the brightest
1 % error, as mean ± sample standard deviation over the row's seeds
(``<slug>/seed-*/``, or ``<slug>/`` for a one-seed ablation), and the paired
difference to the UNet row per seed. Nothing is asserted; not collected by pytest.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

KEYS = ("psnr_log_db", "psnr_radiance_db", "brightest_1pct_error")


def model_dirs(row_dir: Path) -> dict[str, Path]:
    """``{seed label: model dir}`` of one ablation row (empty for the interpolation row)."""
    seeds = {p.name: p for p in sorted(row_dir.glob("seed-*")) if (p / "checkpoint.pt").is_file()}
    if seeds:
        return seeds
    return {"-": row_dir} if (row_dir / "checkpoint.pt").is_file() else {}


def _spread(vals) -> str:
    m = float(np.mean(vals))
    return f"{m:.2f}" + (f" ± {np.std(vals, ddof=1):.2f}" if len(vals) > 1 else "")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiles", type=Path, required=True, help="train.zarr of the held-out scene")
    ap.add_argument("--ablation", type=Path, required=True, help="results/ablation of the benchmark run")
    ap.add_argument("--split", choices=("all", "test"), default="all",
                    help="evaluate every patch of the held-out scene (default) or only its test split")
    args = ap.parse_args(argv)

    from pandafine.core.scaling import log_to_radiance
    from pandafine.models.registry import load_trained_model
    from pandafine.tiles.store import PatchStore
    from pandafine.training.evaluate import data_ranges, method_metrics
    from pandafine.training.train import predict_log, true_log

    store = PatchStore(args.tiles)
    idx = np.arange(len(store)) if args.split == "all" else store.indices("test")
    z_true = true_log(store, idx)
    mask = np.isfinite(z_true)
    true = log_to_radiance(np.nan_to_num(z_true))
    range_log, range_rad = data_ranges(true, mask, args.tiles)
    print(f"{args.tiles}: {len(idx)} patches ({args.split}), {int(mask.sum())} target pixels, "
          f"PSNR data range (log) {range_log:.3f}")

    results: dict[str, dict[str, dict[str, float]]] = {}
    for row_dir in sorted(p for p in args.ablation.iterdir() if p.is_dir()):
        for seed, d in model_dirs(row_dir).items():
            model, ck = load_trained_model(d)
            if list(ck["channels"]) != store.channels:
                raise SystemExit(f"{d}: model channels {ck['channels']} differ from {args.tiles} {store.channels}")
            pred = log_to_radiance(predict_log(model, store, idx, 16))
            m = method_metrics(pred, true, mask, range_log, range_rad)
            results.setdefault(row_dir.name, {})[seed] = {k: m[k] for k in KEYS}
    unet = next((v for k, v in results.items() if k.endswith("-unet")), None)
    print(f"{'row':<22} {'PSNR log dB':>14} {'PSNR rad dB':>14} {'bright 1% err':>14}  vs UNet per seed (dB)")
    for row, by_seed in results.items():
        cols = [_spread([r[k] for r in by_seed.values()]) for k in KEYS]
        diffs = "" if unet is None or row.endswith("-unet") else " ".join(
            f"{s}: {r['psnr_log_db'] - unet[s]['psnr_log_db']:+.2f}" for s, r in by_seed.items() if s in unet)
        print(f"{row:<22} {cols[0]:>14} {cols[1]:>14} {cols[2]:>14}  {diffs}")


if __name__ == "__main__":
    main()
