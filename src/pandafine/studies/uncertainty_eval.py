"""``uncertainty.json`` of a trained model: its per-pixel uncertainty on the test split.

The I/O side of :mod:`pandafine.studies.uncertainty` (whose functions are pure). Today the
only spread is the **constant-spread baseline** ``N(base, sigma_const**2)``: ``sigma_const`` is
the RMS residual of the model on the validation split (:func:`~pandafine.studies.uncertainty.
constant_sigma`), scored on the test split. Ensemble members (a residual generative model) and a
heteroscedastic head do not exist yet; the summary's ``methods`` lists what was scored.

Pixels, log space and data range are those of ``metrics.json``
(:func:`pandafine.training.evaluate.evaluate_model`): a pixel counts where the target, the model
and the interpolation baseline are finite (the baseline is finite where the interpolated PANDA DN
is); z = log1p(L / RADIANCE_REF) of the model's radiance and of the target; the PSNR data range
is :func:`~pandafine.training.evaluate.data_ranges`' log range over those pixels. So the base
PSNR(log) here equals ``metrics.json``'s ``test_split.model.psnr_log_db`` up to float summation
order.

The splits are predicted batch by batch as :func:`~pandafine.training.evaluate.evaluate_model`
does; the validation split is reduced to running sums, the test split to 1-D arrays of its valid
pixels (target, prediction, PANDA class), which the summary needs whole (quantiles, CRPS).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np

from pandafine.core import metrics as M
from pandafine.core.runtime import configure_torch
from pandafine.core.scaling import log_to_radiance, radiance_to_log
from pandafine.models.registry import load_trained_model
from pandafine.studies.uncertainty import panda_classes, uncertainty_summary, write_uncertainty
from pandafine.tiles.store import PatchStore
from pandafine.training.evaluate import (
    EVAL_BATCH_PIXELS,
    _patch_offsets,
    data_ranges,
    eval_batch_patches,
    test_split_setup,
    upsample_patches,
)
from pandafine.training.train import predict_log

log = logging.getLogger(__name__)


def split_batches(store, model, idx: np.ndarray, *, factor: int, panda_ch: int, model_batch: int,
                  batch: int) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """``(true radiance, model z, PANDA DN of the pixel's cell)`` of the valid pixels of each batch of ``idx``.

    1-D float64 arrays, one entry per pixel where the target, the model's radiance and the
    interpolated DN are finite (``metrics.json``'s pixels). The model's z is taken through radiance
    and back (``radiance_to_log(log_to_radiance(z))``, negative z to 0), as evaluation scores it.
    """
    for start in range(0, idx.size, batch):
        sel = idx[start:start + batch]
        x, t = store.read(sel)
        rows, cols = _patch_offsets(store, sel)
        dn = upsample_patches(x[:, panda_ch], factor, rows, cols)
        pred = log_to_radiance(predict_log(model, store, sel, model_batch).astype(np.float64))
        true = t[:, 0].astype(np.float64)
        ok = np.isfinite(true) & np.isfinite(pred) & np.isfinite(dn)
        cell = cell_dn(x, panda_ch)
        yield true[ok], radiance_to_log(pred[ok]), np.where(np.isfinite(cell), cell, dn)[ok]


def cell_dn(x: np.ndarray, panda_ch: int) -> np.ndarray:
    """The PANDA DN of each pixel's own 1 km cell: the patches' PANDA channel (k, P, P). It decides the pixel's
    PANDA class; the interpolated DN would make the pixels at a saturated cell's edge 'lit'."""
    return x[:, panda_ch].astype(np.float64)


def evaluate_uncertainty(cfg: Mapping[str, Any], train_zarr, model_dir, out_dir, *,
                         batch_pixels: int = EVAL_BATCH_PIXELS) -> Path:
    """Write ``out_dir/uncertainty.json`` for the model of ``model_dir`` (module docstring).

    Parameters
    ----------
    cfg : mapping
        Validated config (``grid.factor``, ``train.batch_size``).
    train_zarr : path-like
        ``results/tiles/train.zarr`` with non-empty validation and test splits and a ``panda`` channel.
    model_dir : path-like
        Directory with ``checkpoint.pt`` (best weights are used).
    out_dir : path-like
        Receives ``uncertainty.json`` (usually ``model_dir``, beside ``metrics.json``).
    batch_pixels : int
        Working pixels per batch (:func:`~pandafine.training.evaluate.eval_batch_patches`).

    Returns
    -------
    pathlib.Path
        Path of ``uncertainty.json``: ``{"test_split": summary}``, the summary of
        :func:`~pandafine.studies.uncertainty.uncertainty_summary` plus ``sigma_const``,
        ``n_val_pixels`` and ``n_patches``, and ``{"source": {...}}`` (store, checkpoint).

    Raises
    ------
    ValueError
        Naming the store or the checkpoint: channels differ, no ``panda`` channel, an empty
        validation or test split, no valid validation pixel or a zero validation residual.
    """
    configure_torch()
    store = PatchStore(train_zarr)
    ck_path = Path(model_dir) / "checkpoint.pt"
    model, ck = load_trained_model(model_dir)
    if list(ck["channels"]) != store.channels:
        raise ValueError(f"{ck_path}: model channels {ck['channels']} differ from {store.path} channels "
                         f"{store.channels}")
    panda_ch, factor, test_idx = test_split_setup(cfg, store)
    val_idx = store.indices("val")
    if val_idx.size == 0:
        raise ValueError(f"{store.path}: the validation split (split == 1) is empty; the constant-spread "
                         "baseline is fitted on it")
    model_batch = 2 * int(cfg["train"]["batch_size"])
    batch = eval_batch_patches(store.patch, model_batch, batch_pixels)
    kw = dict(factor=factor, panda_ch=panda_ch, model_batch=model_batch, batch=batch)

    # validation: running sums of the residual in z -> sigma_const (= constant_sigma on the whole split)
    val = M.ErrorSums()
    for true, z, _ in split_batches(store, model, val_idx, **kw):
        val.add(z, radiance_to_log(true))
    sigma_const = val.rmse()
    if not (val.n > 0 and np.isfinite(sigma_const) and sigma_const > 0):
        raise ValueError(f"{store.path}: the validation split gives no positive RMS residual of the model "
                         f"({val.n} valid pixels, RMS {sigma_const}); need valid pixels where the model and the "
                         "target differ")

    # test: the valid pixels, whole (the summary needs them at once)
    parts = list(split_batches(store, model, test_idx, **kw))
    true = np.concatenate([p[0] for p in parts])
    base = np.concatenate([p[1] for p in parts])
    classes = panda_classes(np.concatenate([p[2] for p in parts]))
    del parts
    if true.size == 0:
        raise ValueError(f"{store.path}: no test pixel has a finite target, model prediction and PANDA DN")
    range_log, _ = data_ranges(true, np.ones(true.shape, bool), store.path)
    y = radiance_to_log(true)
    summary = uncertainty_summary(y, base, data_range=range_log, sigma_const=sigma_const, classes=classes)
    summary.update({"sigma_const": float(sigma_const), "n_val_pixels": int(val.n),
                    "n_patches": int(test_idx.size)})
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    path = write_uncertainty(out_dir, {
        "test_split": summary,
        "source": {"tiles": str(store.path), "checkpoint": str(ck_path), "best_epoch": ck.get("best_epoch"),
                   "sigma_const_fit": "RMS residual of the model in z on the validation split, over the pixels "
                                      "where the target, the model and the PANDA DN are finite"},
    })
    log.info("uncertainty: sigma_const %.4g (%d validation pixels); test CRPS %s over %d pixels", sigma_const,
             val.n, (summary.get("overall") or {}).get("gaussian_constant", {}).get("crps"), summary["n_pixels"])
    return path
