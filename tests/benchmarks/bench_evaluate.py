"""Peak memory of ``evaluate_model`` for a test split of N and 4N patches.

Usage::

    python tests/benchmarks/bench_evaluate.py [--n 400] [--patch 64] [--train 64] [--threads 2]
                                              [--impl PATH] [--store-cache] [--keep DIR] [--json OUT]

A synthetic ``train.zarr`` (contract: docs/contracts.md, section tile) is
written twice, with ``--n`` and ``4 * --n`` test patches of ``--patch``² pixels
(beside ``--train`` train patches for the baseline fit; no val patches), chunk
by chunk (the benchmark never holds a store whole). The model is a small UNet
(width 4, depth 1, seeded random weights) saved as ``checkpoint.pt``: memory is
set by the test split and the batches, not by the model.

Each evaluation runs in its own child process (this script with ``--child``);
its peak resident memory comes from GNU ``time`` (``bench_infer.measured_run``). A third child only
imports, opens the store and loads the model (the floor every run pays). The
stores are read batch by batch (``PatchStore(memory_limit=0)``, as for a store
above :data:`pandafine.tiles.store.DEFAULT_MEMORY_LIMIT`, e.g. China-sized); with
``--store-cache`` the default limit applies and these small stores are read into
memory whole, so the store's size shows in the peak. ``--impl`` evaluates with
another copy of ``evaluate.py`` (e.g. the in-memory version before streaming)
for comparison. Printed: peak RSS of N and 4N, their ratio, and the ratio of the
increments over the floor.

Not collected by pytest (``--ignore=tests/benchmarks`` in pyproject).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_infer import measured_run  # noqa: E402  (benchmarks share their helpers)

FACTOR = 8
MODEL_CONFIG = {"name": "unet", "width": 4, "depth": 1}
#: Config keys that evaluate_model reads.
EVAL_CONFIG = {"grid": {"factor": FACTOR}, "train": {"batch_size": 8}}
#: Patches written per chunk of the synthetic store.
WRITE_CHUNK = 64


def synthetic_patches(k: int, patch: int, n_channels: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(inputs (k, C, P, P), target (k, 1, P, P))`` float32 of a seeded random scene.

    Radiance is lognormal and spatially smooth; PANDA (channel 0) is its
    ``FACTOR`` block mean mapped to a saturating DN, nearest-upsampled; the other
    channels are noisy functions of the radiance. Some target pixels are NaN.
    """
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    field = ndimage.gaussian_filter(rng.normal(size=(k, patch, patch)), (0, 3, 3))
    radiance = (1e-5 * np.exp(4 * field / field.std())).astype(np.float32)
    cells = radiance.reshape(k, patch // FACTOR, FACTOR, patch // FACTOR, FACTOR).mean(axis=(2, 4))
    dn = np.minimum(63.0, np.round(63.0 * (cells / 6e-5) ** 0.7))
    panda = np.repeat(np.repeat(dn, FACTOR, axis=1), FACTOR, axis=2)
    inputs = np.empty((k, n_channels, patch, patch), np.float32)
    inputs[:, 0] = panda
    for c in range(1, n_channels):
        inputs[:, c] = np.log1p(radiance / 1e-5) * (0.1 * c) + rng.normal(0, 0.05, (k, patch, patch))
    target = radiance[:, None].copy()
    target[:, :, :2] = np.nan  # a strip without target in every patch
    return inputs, target


def write_store(path: Path, n_train: int, n_test: int, patch: int) -> Path:
    """A synthetic ``train.zarr`` with ``n_train`` train then ``n_test`` test patches, written chunk by chunk."""
    import zarr

    from pandafine.core.channels import CHANNELS

    n, c = n_train + n_test, len(CHANNELS)
    group = zarr.open_group(str(path), mode="w")
    inputs = group.create_array("inputs", shape=(n, c, patch, patch), dtype="float32",
                                chunks=(1, c, patch, patch), fill_value=np.nan)
    target = group.create_array("target", shape=(n, 1, patch, patch), dtype="float32",
                                chunks=(1, 1, patch, patch), fill_value=np.nan)
    split = np.r_[np.zeros(n_train, np.int8), np.full(n_test, 2, np.int8)]
    group.create_array("split", shape=(n,), dtype="int8", chunks=(n,))[:] = split
    side = int(np.ceil(np.sqrt(n)))
    group.create_array("row", shape=(n,), dtype="int32", chunks=(n,))[:] = (np.arange(n) // side) * patch
    group.create_array("col", shape=(n,), dtype="int32", chunks=(n,))[:] = (np.arange(n) % side) * patch
    for start in range(0, n, WRITE_CHUNK):
        k = min(WRITE_CHUNK, n - start)
        x, t = synthetic_patches(k, patch, c, seed=start)
        inputs[start:start + k], target[start:start + k] = x, t
    x, _ = synthetic_patches(min(n, WRITE_CHUNK), patch, c, seed=0)
    mean = [float(np.nanmean(x[:, i])) for i in range(c)]
    std = [float(np.nanstd(x[:, i])) or 1.0 for i in range(c)]
    group.attrs.update({"channels": list(CHANNELS), "patch": patch, "grid": {"factor": FACTOR},
                        "normalization": {"mean": mean, "std": std}})
    return path


def write_model(model_dir: Path, store_path: Path) -> Path:
    """``checkpoint.pt`` of a seeded random-init small UNet for the store's channels."""
    import torch

    from pandafine.models.checkpoint import CHECKPOINT_FORMAT, CHECKPOINT_NAME, save_checkpoint
    from pandafine.models.registry import build_wrapper
    from pandafine.tiles.store import PatchStore

    store = PatchStore(store_path, memory_limit=0)
    torch.manual_seed(0)
    net = build_wrapper(MODEL_CONFIG, store.channels, store.normalization)
    model_dir.mkdir(parents=True, exist_ok=True)
    path = model_dir / CHECKPOINT_NAME
    save_checkpoint(path, {"format": CHECKPOINT_FORMAT, "model_state": net.state_dict(),
                           "model_config": dict(MODEL_CONFIG), "channels": store.channels,
                           "normalization": store.normalization, "epoch": 0, "best_epoch": 0})
    return path


def child(args) -> None:
    """Run one evaluation (or only the imports and loads with ``--floor``) in this process."""
    import functools
    import importlib.util

    from pandafine.core.runtime import configure_torch, limit_threads

    limit_threads(args.threads)
    configure_torch()
    from pandafine.tiles.store import DEFAULT_MEMORY_LIMIT, PatchStore

    if args.impl:
        spec = importlib.util.spec_from_file_location("evaluate_impl", args.impl)
        mod = importlib.util.module_from_spec(spec)
        sys.modules["evaluate_impl"] = mod
        spec.loader.exec_module(mod)
    else:
        from pandafine.training import evaluate as mod
    limit = DEFAULT_MEMORY_LIMIT if args.store_cache else 0
    mod.PatchStore = functools.partial(PatchStore, memory_limit=limit)
    if args.floor:
        from pandafine.models.registry import load_trained_model

        mod.PatchStore(args.zarr), load_trained_model(args.model_dir)
        import matplotlib.pyplot  # noqa: F401  (the figure's import, paid by every run)
        return
    t0 = time.perf_counter()
    path = mod.evaluate_model(EVAL_CONFIG, args.zarr, args.model_dir, args.out)
    m = json.loads(path.read_text())["test_split"]
    print(json.dumps({"seconds": time.perf_counter() - t0, "n_patches": m["n_patches"],
                      "psnr_log_db": m["model"]["psnr_log_db"]}))


def run_child(extra: list[str]) -> tuple[float, dict]:
    """Peak RSS (MiB) of a child process running this script with ``--child``, and the JSON it printed."""
    rss, _, out = measured_run([sys.executable, __file__, "--child", *extra])
    text = out.strip().splitlines()
    return rss, (json.loads(text[-1]) if text else {})


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=400, help="test patches of the small store (the large has 4x)")
    ap.add_argument("--patch", type=int, default=64)
    ap.add_argument("--train", type=int, default=64, help="train patches (baseline fit)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--impl", type=Path, help="another evaluate.py to run instead of the package's")
    ap.add_argument("--store-cache", action="store_true", help="let PatchStore read small stores whole")
    ap.add_argument("--keep", type=Path, help="write the stores and outputs here (kept) instead of a temp dir")
    ap.add_argument("--json", type=Path, help="also write the figures as JSON")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--floor", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--zarr", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--model-dir", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        return child(args)
    if args.patch % FACTOR or args.n < 1:
        ap.error(f"--patch must be a multiple of {FACTOR} and --n >= 1")

    work = args.keep or Path(tempfile.mkdtemp(prefix="bench_evaluate_"))
    work.mkdir(parents=True, exist_ok=True)
    common = ["--threads", str(args.threads)] + (["--impl", str(args.impl)] if args.impl else []) \
        + (["--store-cache"] if args.store_cache else [])
    rows = []
    try:
        for n_test in (args.n, 4 * args.n):
            zarr_path = write_store(work / f"train_{n_test}.zarr", args.train, n_test, args.patch)
            model_dir = work / "model"
            write_model(model_dir, zarr_path)
            paths = ["--zarr", str(zarr_path), "--model-dir", str(model_dir)]
            floor, _ = run_child([*common, *paths, "--floor"])
            rss, info = run_child([*common, *paths, "--out", str(work / f"out_{n_test}")])
            rows.append({"n_test": n_test, "test_pixels": n_test * args.patch**2, "peak_rss_mib": rss,
                         "floor_rss_mib": floor, "seconds": info.get("seconds")})
            print(f"test patches {n_test:6d} ({n_test * args.patch**2 / 1e6:7.2f} Mpx): peak RSS {rss:8.1f} MiB, "
                  f"floor {floor:7.1f} MiB, above floor {rss - floor:8.1f} MiB, {info.get('seconds', 0):6.1f} s",
                  flush=True)
            if not args.keep:
                shutil.rmtree(zarr_path)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    small, large = rows
    ratio = large["peak_rss_mib"] / small["peak_rss_mib"]
    inc = (large["peak_rss_mib"] - large["floor_rss_mib"]) / max(small["peak_rss_mib"] - small["floor_rss_mib"], 1e-9)
    print(f"implementation: {args.impl or 'pandafine.training.evaluate'}; patch {args.patch}, "
          f"store {'cached whole' if args.store_cache else 'read batch by batch'}, threads {args.threads}")
    print(f"peak RSS ratio 4N / N: {ratio:.3f}; above-floor ratio: {inc:.3f}")
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "ratio": ratio, "above_floor_ratio": inc,
                                         "impl": str(args.impl or "")}, indent=2) + "\n")


if __name__ == "__main__":
    main()
