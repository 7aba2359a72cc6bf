"""How far trained models are from what the target allows, and at which scale their error sits.

Usage (in a workdir where the benchmark or demo config has run; synthetic sources only)::

    python tests/benchmarks/bench_headroom.py --tiles results/tiles/train.zarr \
        --truth resources/synthetic/truth results/ablation/08-unet/seed-42 results/ablation/11-full/seed-42

``--truth`` needs ``radiance_{year}.tif`` of the target years (``snakemake resources/synthetic/manifest.json``).
On the test split, with the data range of ``pandafine evaluate`` (PSNR on z = log1p(L / 1e-5)), it prints:

* the hidden truth, Gaussian-blurred in radiance by sigma px, against the Luojia-01 target;
* per model: PSNR; with a perfect brightness offset per 1 km cell / 2 km / patch
  (:func:`pandafine.studies.headroom.offset_oracle_psnr`); with the target's low or high spatial band
  put in (:func:`pandafine.studies.headroom.band_swap_psnr`, sigma 2 and 4 px); per-patch PSNR.

Nothing is asserted; not collected by pytest.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiles", type=Path, required=True)
    ap.add_argument("--truth", type=Path, required=True, help="directory of radiance_{year}.tif")
    ap.add_argument("models", nargs="*", type=Path, help="model directories with checkpoint.pt")
    args = ap.parse_args(argv)

    from pandafine.core.metrics import psnr
    from pandafine.core.raster_io import read_raster
    from pandafine.core.scaling import log_to_radiance
    from pandafine.models.registry import load_trained_model
    from pandafine.studies import headroom as H
    from pandafine.tiles.store import PatchStore
    from pandafine.training.evaluate import data_ranges
    from pandafine.training.train import predict_log, true_log

    store = PatchStore(args.tiles)
    idx = store.indices("test")
    years, rows, cols = (store.extra[k][idx] for k in ("year", "row", "col"))
    zt = true_log(store, idx)
    mask = np.isfinite(zt)
    range_log, _ = data_ranges(log_to_radiance(np.nan_to_num(zt)), mask, args.tiles)
    patch = zt.shape[-1]
    print(f"test split: {len(idx)} patches of {patch} px, years {sorted(set(years.tolist()))}, "
          f"PSNR data range (log) {range_log:.3f}")

    truth = {int(y): read_raster(args.truth / f"radiance_{int(y)}.tif")[0][0].astype(np.float64) for y in set(years.tolist())}
    for s, v in H.blurred_truth_psnr(truth, years, rows, cols, patch, zt, range_log).items():
        print(f"  truth blurred sigma {s:.1f} px vs target: {v:.2f} dB")

    for model_dir in args.models:
        model, _ = load_trained_model(model_dir)
        zp = predict_log(model, store, idx, 16)
        print(f"{model_dir}: PSNR(log) {psnr(zp, zt, range_log, mask):.2f} dB")
        offs = {b: H.offset_oracle_psnr(zp, zt, range_log, b, mask=mask) for b in (8, 16, patch)}
        print("  perfect brightness offset per 1 km cell / 2 km / patch: "
              + " / ".join(f"{v:.2f}" for v in offs.values()) + " dB")
        for s in (2.0, 4.0):
            r = H.band_swap_psnr(zp, zt, range_log, s, mask)
            print(f"  sigma {s:.0f} px: target's low band put in {r['true_low']:.2f} dB (fine error left), "
                  f"target's high band put in {r['true_high']:.2f} dB (coarse error left)")
        per = [psnr(zp[i], zt[i], range_log) for i in range(len(idx))]
        print("  per patch: " + " ".join(f"{v:.1f}" for v in per))


if __name__ == "__main__":
    main()
