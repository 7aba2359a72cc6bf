"""Two ablation rows compared without training noise: the PSNR of each row's seed-averaged prediction.

Usage (in a workdir where the benchmark ablation has run)::

    python tests/benchmarks/bench_seed_ensemble.py --tiles results/tiles/train.zarr \
        --a results/ablation/11-full --b results/ablation/08-unet

``--a`` and ``--b`` are ablation row directories holding ``seed-<n>/checkpoint.pt`` (or lists of
model directories). On the test split, with the data range of ``pandafine evaluate`` (PSNR on
z = log1p(L / 1e-5), pixels where the target is finite), it prints every model's PSNR, the mean
and standard deviation over seeds, the PSNR of the mean z of all seeds of a row (the seed
ensemble: most of the seed-to-seed noise averaged out), and the differences a - b of both.

Nothing is asserted; not collected by pytest.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from bench_holdout_scene import model_dirs  # this folder is sys.path[0] when run as a script


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiles", type=Path, required=True)
    ap.add_argument("--a", type=Path, nargs="+", required=True, help="row directory or model directories")
    ap.add_argument("--b", type=Path, nargs="+", required=True, help="row directory or model directories")
    args = ap.parse_args(argv)

    from pandafine.core.metrics import psnr
    from pandafine.core.scaling import log_to_radiance
    from pandafine.models.registry import load_trained_model
    from pandafine.tiles.store import PatchStore
    from pandafine.training.evaluate import data_ranges
    from pandafine.training.train import predict_log, true_log

    store = PatchStore(args.tiles)
    idx = store.indices("test")
    zt = true_log(store, idx)
    mask = np.isfinite(zt)
    range_log, _ = data_ranges(log_to_radiance(np.nan_to_num(zt)), mask, args.tiles)
    print(f"test split: {len(idx)} patches, PSNR data range (log) {range_log:.3f}")

    summary = {}
    for label, paths in (("a", args.a), ("b", args.b)):
        dirs = []
        for p in paths:
            found = model_dirs(p)
            if not found:
                raise SystemExit(f"{p}: no checkpoint.pt in it or in a seed-*/ sub-directory")
            dirs.extend(found.values())
        zs, single = [], []
        for d in dirs:
            model, _ = load_trained_model(d)
            zs.append(predict_log(model, store, idx, 16).astype(np.float64))
            single.append(psnr(zs[-1], zt, range_log, mask))
            print(f"  {label} {d}: {single[-1]:.3f} dB")
        single = np.array(single)
        ens = psnr(np.mean(zs, axis=0), zt, range_log, mask)
        summary[label] = (single.mean(), ens)
        print(f"{label}: {len(zs)} models, mean {single.mean():.3f} ± {single.std(ddof=1) if len(zs) > 1 else 0:.3f} dB, "
              f"seed ensemble {ens:.3f} dB")
    (ma, ea), (mb, eb) = summary["a"], summary["b"]
    print(f"a - b: mean of single models {ma - mb:+.3f} dB, seed ensembles {ea - eb:+.3f} dB")


if __name__ == "__main__":
    main()
