"""Design-space measurements: a trained model x sampler x steps -> test-split metrics and speed.

:func:`evaluate_sampling` samples (or, for a deterministic model, predicts) the
test-split patches of ``train.zarr`` and returns the metrics of
:func:`pandafine.evaluate.method_metrics` (PSNR on log and linear radiance,
SSIM, brightest-1 % error, ...) over the same pixels and data ranges as
``pandafine evaluate``, beside the interpolation baseline, plus seconds per
megapixel and the model size. Generative models draw the noise of a patch
pixel from :func:`pandafine.models.noise.grid_noise` at its grid position
(seeded), so a result does not depend on the batch size.

:func:`table_csv` / :func:`table_markdown` turn such records into the design-space table.
"""

from __future__ import annotations

import csv
import io
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

#: Columns of the design-space table.
COLUMNS = ("model", "model_dir", "sampler", "steps", "network_calls", "precision", "psnr_log_db", "psnr_radiance_db",
           "ssim_log", "brightest_1pct_error", "seconds_per_mpx", "n_params", "size_mb")


def model_size(model) -> tuple[int, float]:
    """(number of parameters, megabytes of the fp32 state: parameters and buffers) of a torch module."""
    n = sum(int(p.numel()) for p in model.parameters())
    nbytes = sum(int(t.numel()) * t.element_size() for t in model.state_dict().values())
    return n, nbytes / 1e6


def evaluate_sampling(cfg: Mapping[str, Any], train_zarr, model_dir, *, sampler: Mapping[str, Any] | None = None,
                      seed: int = 0, batch_size: int = 8) -> dict[str, Any]:
    """Metrics of one trained model (and sampler) on the test split, with its speed.

    Parameters
    ----------
    cfg : mapping
        Validated config (``grid.factor``).
    train_zarr : path-like
        ``results/tiles/train.zarr``.
    model_dir : path-like
        A trained model directory (``checkpoint.pt``).
    sampler : mapping, optional
        Generative models: the sampler (``kind``, ``steps``, ...); default the model's
        configured one. Must be None for deterministic models (unet, mmntlsr).
    seed : int
        Noise seed of the generative samples.
    batch_size : int
        Patches per network call.

    Returns
    -------
    dict
        ``model`` and ``interpolation``: metric dicts of :func:`pandafine.evaluate.method_metrics`;
        ``seconds_per_mpx`` (prediction / sampling wall time per 10^6 test pixels, one
        process), ``sampler`` (label or None), ``steps``, ``network_calls``,
        ``n_params``, ``size_mb``, ``n_patches``, ``n_pixels``, ``model_config``.
    """
    import torch

    from .evaluate import data_ranges, interpolation_baseline, method_metrics, test_split_setup
    from .runtime import configure_torch
    from .scaling import log_to_radiance
    from .tiled_sampling import make_batch_grid_noise_fn, model_tile_sampler
    from .train import PatchStore, load_trained_model, predict_log

    configure_torch()
    store = PatchStore(train_zarr)
    model, ck = load_trained_model(model_dir)
    if list(ck["channels"]) != store.channels:
        raise ValueError(f"{Path(model_dir) / 'checkpoint.pt'}: model channels {ck['channels']} differ from "
                         f"{store.path} channels {store.channels}")
    panda_ch, factor, test_idx = test_split_setup(cfg, store)
    true = store.read_target(test_idx)[:, 0].astype(np.float64)
    pred_interp, _, _ = interpolation_baseline(store, test_idx, factor, panda_ch)
    generative = hasattr(model.net, "sample")
    if sampler is not None and not generative:
        raise ValueError(f"{model_dir}: a {ck['model_config'].get('name')} model is deterministic; "
                         "it takes no sampler")
    rows = np.asarray(store.extra.get("row", np.zeros(len(store))), dtype=np.int64)
    cols = np.asarray(store.extra.get("col", np.zeros(len(store))), dtype=np.int64)
    t0 = time.perf_counter()
    if generative:
        spec = model.net.sampler if sampler is None else model.net.check_sampler(model.net.sampler_spec(sampler))
        sample = model_tile_sampler(model, spec)
        parts = []
        for sel, x, _ in store.iter_batches(test_idx, batch_size):
            parts.append(sample(x, make_batch_grid_noise_fn(seed, list(zip(rows[sel], cols[sel])))))
        pred = np.concatenate(parts).astype(np.float64)
    else:
        spec = None
        with torch.no_grad():
            pred = log_to_radiance(predict_log(model, store, test_idx, batch_size).astype(np.float64))
    seconds = time.perf_counter() - t0
    mask = np.isfinite(true) & np.isfinite(pred) & np.isfinite(pred_interp)
    if not mask.any():
        raise ValueError(f"{store.path}: no test pixel has a finite target and finite predictions")
    range_log, range_rad = data_ranges(true, mask, store.path)
    n_params, size_mb = model_size(model)
    n_pix = int(test_idx.size) * store.patch * store.patch
    return {
        "model": method_metrics(pred, true, mask, range_log, range_rad),
        "interpolation": method_metrics(pred_interp, true, mask, range_log, range_rad),
        "seconds_per_mpx": seconds / (n_pix / 1e6),
        "sampler": None if spec is None else spec.label(),
        "steps": None if spec is None else (spec.fast_steps + spec.slow_steps if spec.kind == "staged"
                                            else spec.steps),
        "network_calls": 1 if spec is None else spec.network_calls,
        "n_params": n_params,
        "size_mb": size_mb,
        "n_patches": int(test_idx.size),
        "n_pixels": int(mask.sum()),
        "model_config": ck["model_config"],
    }


def table_record(result: Mapping[str, Any], model_dir, precision: str = "fp32") -> dict[str, Any]:
    """One row of the design-space table from an :func:`evaluate_sampling` result."""
    m = result["model"]
    return {"model": result["model_config"].get("name"), "model_dir": str(model_dir),
            "sampler": result["sampler"] or "-", "steps": result["steps"], "network_calls": result["network_calls"],
            "precision": precision, "psnr_log_db": m["psnr_log_db"], "psnr_radiance_db": m["psnr_radiance_db"],
            "ssim_log": m["ssim_log"], "brightest_1pct_error": m["brightest_1pct_error"],
            "seconds_per_mpx": result["seconds_per_mpx"], "n_params": result["n_params"],
            "size_mb": result["size_mb"]}


def _fmt(v) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


def table_csv(records: Sequence[Mapping[str, Any]]) -> str:
    """The records as CSV with the :data:`COLUMNS` header."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(COLUMNS)
    for r in records:
        w.writerow([_fmt(r.get(c)) for c in COLUMNS])
    return buf.getvalue()


def table_markdown(records: Sequence[Mapping[str, Any]]) -> str:
    """The records as a Markdown table (metrics rounded for reading; the CSV keeps 6 digits)."""
    head = ["model", "sampler", "calls", "precision", "PSNR log (dB)", "PSNR radiance (dB)", "SSIM log",
            "brightest 1% error", "s/Mpx", "params", "MB"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in records:
        lines.append("| " + " | ".join([
            str(r["model"]), str(r["sampler"]), str(r["network_calls"]), str(r["precision"]),
            f"{r['psnr_log_db']:.2f}", f"{r['psnr_radiance_db']:.2f}", f"{r['ssim_log']:.3f}",
            f"{r['brightest_1pct_error']:+.3f}", f"{r['seconds_per_mpx']:.2f}", str(r["n_params"]),
            f"{r['size_mb']:.2f}"]) + " |")
    return "\n".join(lines) + "\n"


__all__ = ["COLUMNS", "model_size", "evaluate_sampling", "table_record", "table_csv", "table_markdown"]
