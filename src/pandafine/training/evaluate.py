"""Evaluate a trained model on the test split, beside an interpolation baseline.

Baseline ("interpolation"): the PANDA DN of each 1 km cell (the mean of its
``factor x factor`` block on the working grid) is bilinearly interpolated from
the cell centres to the working pixels (within each patch; edge half-cells take
the nearest cell), then mapped to log radiance z by a least-squares quadratic
in DN fitted on the train split's targets. (With ``preprocess.panda_resampling:
bilinear`` the PANDA channel is already smooth; its block means are close to
the cell values, so the baseline is nearly the same.)

Metrics (:mod:`pandafine.core.metrics`) are computed over the test-split pixels where
the target and both predictions are finite: PSNR on z = log1p(L / RADIANCE_REF)
(data range: max - min of the true z over those pixels) and on radiance (data
range: max true radiance), SSIM on z, RMSE / MAE / R² on radiance and on z,
total-light error and the mean relative error of the brightest 1 % of pixels.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from pandafine.core import metrics as M
from pandafine.core.atomic import atomic_path, write_text_atomic
from pandafine.core.json_records import json_safe
from pandafine.core.runtime import configure_torch
from pandafine.core.scaling import RADIANCE_REF, RADIANCE_UNITS, log_to_radiance, radiance_to_log
from pandafine.models.registry import load_trained_model
from pandafine.tiles.store import PatchStore
from pandafine.training.train import predict_log

log = logging.getLogger(__name__)

METRICS_NAME = "metrics.json"
PANELS_NAME = "test_panels.png"
#: Degree of the DN -> z polynomial of the interpolation baseline.
BASELINE_DEGREE = 2
#: Quantile of the true radiance above which pixels count as "brightest".
BRIGHTEST_Q = 0.99


# --------------------------------------------------------------------------- baseline (pure)

def block_means(a: np.ndarray, factor: int, row0: int = 0, col0: int = 0) -> tuple[np.ndarray, int, int]:
    """NaN-aware means of the coarse cells covering a fine patch.

    Parameters
    ----------
    a : ndarray, shape (H, W)
        Fine-grid values of one patch whose top-left pixel is at grid row/col ``row0, col0``.
    factor : int
        Cell size in fine pixels; cells start at grid rows/cols that are multiples of ``factor``.

    Returns
    -------
    cells : ndarray, shape (h, w)
        Mean of each (partially) covered cell (NaN if it has no finite value).
    pr, pc : int
        Offset of the patch inside the first cell (``row0 % factor``, ``col0 % factor``).
    """
    h, w = a.shape
    pr, pc = row0 % factor, col0 % factor
    hh = -(-(h + pr) // factor) * factor
    ww = -(-(w + pc) // factor) * factor
    padded = np.full((hh, ww), np.nan, dtype=np.float64)
    padded[pr:pr + h, pc:pc + w] = a
    blocks = padded.reshape(hh // factor, factor, ww // factor, factor)
    ok = np.isfinite(blocks)
    count = ok.sum(axis=(1, 3))
    total = np.where(ok, blocks, 0.0).sum(axis=(1, 3))
    with np.errstate(invalid="ignore", divide="ignore"):
        cells = np.where(count > 0, total / np.maximum(count, 1), np.nan)
    return cells, pr, pc


def upsample_cells(dn: np.ndarray, factor: int, row0: int = 0, col0: int = 0) -> np.ndarray:
    """Bilinear interpolation of a patch's coarse-cell values from the cell centres to its pixels.

    ``dn`` (H, W) is a fine-grid patch of a coarse layer (blocky after nearest
    resampling); see :func:`block_means` for ``factor``, ``row0``, ``col0``.
    Pixels beyond the outermost cell centres take the nearest cell's value;
    a NaN cell makes the pixels that interpolate from it NaN.
    """
    from scipy import ndimage

    cells, pr, pc = block_means(dn, factor, row0, col0)
    h, w = dn.shape
    # fine pixel centre i sits at (i + pr + 0.5) / factor - 0.5 in cell-centre coordinates
    r = (np.arange(h) + pr + 0.5) / factor - 0.5
    c = (np.arange(w) + pc + 0.5) / factor - 0.5
    rr, cc = np.meshgrid(np.clip(r, 0, cells.shape[0] - 1), np.clip(c, 0, cells.shape[1] - 1), indexing="ij")
    return ndimage.map_coordinates(cells, [rr, cc], order=1, mode="nearest", prefilter=False)


def poly_features(dn: np.ndarray, degree: int = BASELINE_DEGREE) -> np.ndarray:
    """``[1, d, d**2, ...]`` with ``d = DN / 63`` (columns), for a 1-D array of DN."""
    d = np.asarray(dn, dtype=np.float64) / 63.0
    return np.stack([d**k for k in range(degree + 1)], axis=-1)


@dataclass
class NormalEquations:
    """Accumulated least-squares normal equations ``(X^T X) b = X^T y`` (streaming fit)."""

    degree: int = BASELINE_DEGREE

    def __post_init__(self) -> None:
        self.xtx = np.zeros((self.degree + 1, self.degree + 1))
        self.xty = np.zeros(self.degree + 1)
        self.n = 0

    def add(self, dn: np.ndarray, z: np.ndarray) -> None:
        ok = np.isfinite(dn) & np.isfinite(z)
        X = poly_features(dn[ok], self.degree)
        self.xtx += X.T @ X
        self.xty += X.T @ np.asarray(z, dtype=np.float64)[ok]
        self.n += int(ok.sum())

    def solve(self) -> np.ndarray:
        if self.n <= self.degree:
            raise ValueError(f"baseline fit: {self.n} pixels with finite DN and target; need > {self.degree}")
        coef, *_ = np.linalg.lstsq(self.xtx, self.xty, rcond=None)
        return coef


def apply_poly(dn: np.ndarray, coef: np.ndarray) -> np.ndarray:
    """z predicted from DN by the polynomial ``coef`` (from :meth:`NormalEquations.solve`)."""
    return poly_features(dn, len(coef) - 1) @ np.asarray(coef)


# --------------------------------------------------------------------------- metrics (pure)

def method_metrics(pred: np.ndarray, true: np.ndarray, mask: np.ndarray, range_log: float,
                   range_radiance: float) -> dict[str, float]:
    """All metrics of one method; ``pred`` and ``true`` are radiance stacks (N, H, W)."""
    zp, zt = radiance_to_log(np.nan_to_num(pred)), radiance_to_log(np.nan_to_num(true))
    return {
        "psnr_log_db": M.psnr(zp, zt, range_log, mask=mask),
        "psnr_radiance_db": M.psnr(pred, true, range_radiance, mask=mask),
        "ssim_log": M.ssim(zp, zt, range_log, mask=mask),
        "rmse_radiance": M.rmse(pred, true, mask=mask),
        "mae_radiance": M.mae(pred, true, mask=mask),
        "r2_radiance": M.r2(pred, true, mask=mask),
        "rmse_log": M.rmse(zp, zt, mask=mask),
        "mae_log": M.mae(zp, zt, mask=mask),
        "r2_log": M.r2(zp, zt, mask=mask),
        "total_light_error": M.total_light_error(pred, true, mask=mask),
        "brightest_1pct_error": M.brightest_error(pred, true, q=BRIGHTEST_Q, mask=mask),
    }


# --------------------------------------------------------------------------- I/O

def _patch_offsets(store, idx) -> tuple[np.ndarray, np.ndarray]:
    rows = store.extra.get("row")
    cols = store.extra.get("col")
    if rows is None or cols is None:
        zeros = np.zeros(len(idx), np.int64)
        return zeros, zeros
    return np.asarray(rows)[idx].astype(np.int64), np.asarray(cols)[idx].astype(np.int64)


def _baseline_dn(store, idx, factor: int, panda_ch: int) -> np.ndarray:
    """Interpolated PANDA DN (k, P, P) of patches ``idx``."""
    rows, cols = _patch_offsets(store, idx)
    out = np.empty((len(idx), store.patch, store.patch), np.float64)
    pos = 0
    for _, x, _ in store.iter_batches(idx, 64):
        for k in range(len(x)):
            out[pos] = upsample_cells(x[k, panda_ch], factor, rows[pos], cols[pos])
            pos += 1
    return out


def fit_baseline(store, factor: int, panda_ch: int) -> tuple[np.ndarray, int]:
    """Coefficients of z ≈ poly(DN) on the train split, and the number of pixels fitted."""
    ne = NormalEquations()
    train_idx = store.indices("train")
    for start in range(0, len(train_idx), 256):
        sel = train_idx[start:start + 256]
        dn = _baseline_dn(store, sel, factor, panda_ch)
        t = store.read_target(sel)[:, 0]
        with np.errstate(invalid="ignore"):
            z = np.where(np.isfinite(t), radiance_to_log(np.nan_to_num(t)), np.nan)
        ne.add(dn, z)
    return ne.solve(), ne.n


def _panels(path: Path, panda: np.ndarray, interp: np.ndarray, model: np.ndarray, true: np.ndarray,
            ids: list[int]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    z = {k: radiance_to_log(np.nan_to_num(v)) for k, v in (("interp", interp), ("model", model))}
    zt = np.where(np.isfinite(true), radiance_to_log(np.nan_to_num(true)), np.nan)
    vmax = float(np.nanmax(zt[ids])) if np.isfinite(zt[ids]).any() else 1.0
    err = np.abs(z["model"] - zt)
    emax = float(np.nanmax(err[ids])) if np.isfinite(err[ids]).any() else 1.0
    cols = [("PANDA input (DN)", panda, dict(cmap="gray", vmin=0, vmax=63)),
            ("interpolation z", z["interp"], dict(cmap="magma", vmin=0, vmax=vmax)),
            ("model z", z["model"], dict(cmap="magma", vmin=0, vmax=vmax)),
            ("truth z", zt, dict(cmap="magma", vmin=0, vmax=vmax)),
            ("|model - truth| (z)", err, dict(cmap="viridis", vmin=0, vmax=emax))]
    fig, axes = plt.subplots(len(ids), len(cols), figsize=(2.4 * len(cols), 2.4 * len(ids) + 0.6), squeeze=False)
    for r, i in enumerate(ids):
        for c, (title, arr, kw) in enumerate(cols):
            ax = axes[r, c]
            im = ax.imshow(arr[i], interpolation="nearest", **kw)
            ax.set_xticks([]), ax.set_yticks([])
            if r == 0:
                ax.set_title(title, fontsize=9)
            if r == len(ids) - 1:
                fig.colorbar(im, ax=ax, orientation="horizontal", fraction=0.05, pad=0.04)
        axes[r, 0].set_ylabel(f"test patch {r + 1}", fontsize=8)
    fig.suptitle(f"Test patches; z = log1p(L / {RADIANCE_REF:g} {RADIANCE_UNITS})", fontsize=9)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


def test_split_setup(cfg: Mapping[str, Any], store) -> tuple[int, int, np.ndarray]:
    """(panda channel index, grid factor, test-split indices) of a patch store; errors name the store."""
    if "panda" not in store.channels:
        raise ValueError(f"{store.path}: no 'panda' channel (channels: {store.channels}); the baseline needs it")
    test_idx = store.indices("test")
    if test_idx.size == 0:
        raise ValueError(f"{store.path}: the test split (split == 2) is empty")
    return store.channels.index("panda"), int(cfg["grid"]["factor"]), test_idx


def interpolation_baseline(store, test_idx: np.ndarray, factor: int, panda_ch: int):
    """The interpolation baseline on ``test_idx``: fitted on the train split, as radiance.

    Returns (prediction (N, P, P) radiance, NaN where PANDA is; polynomial coefficients; pixels fitted).
    """
    coef, n_fit = fit_baseline(store, factor, panda_ch)
    dn_up = _baseline_dn(store, test_idx, factor, panda_ch)
    pred = np.where(np.isfinite(dn_up), log_to_radiance(apply_poly(dn_up, coef)), np.nan)
    return pred, coef, n_fit


def data_ranges(true: np.ndarray, mask: np.ndarray, source) -> tuple[float, float]:
    """PSNR data ranges over the evaluated pixels: (max - min of true log radiance, max true radiance)."""
    zt = radiance_to_log(np.nan_to_num(true))
    range_log = float(zt[mask].max() - zt[mask].min())
    range_rad = float(true[mask].max())
    if not (range_log > 0 and range_rad > 0):
        raise ValueError(f"{source}: test-split target is constant (log range {range_log}, "
                         f"max radiance {range_rad}); PSNR is undefined")
    return range_log, range_rad


def evaluate_model(cfg: Mapping[str, Any], train_zarr, model_dir, out_dir, *, n_panels: int = 4) -> Path:
    """Evaluate the model of ``model_dir`` and the interpolation baseline on the test split.

    Parameters
    ----------
    cfg : mapping
        Validated config (``grid.factor``, ``train.batch_size``).
    train_zarr : path-like
        ``results/tiles/train.zarr``.
    model_dir : path-like
        Directory with ``checkpoint.pt`` (best weights are evaluated).
    out_dir : path-like
        Receives ``metrics.json`` and ``test_panels.png``.
    n_panels : int
        Number of test patches shown in the figure (the brightest ones).

    Returns
    -------
    pathlib.Path
        Path of ``metrics.json``.
    """
    configure_torch()
    store = PatchStore(train_zarr)
    model, ck = load_trained_model(model_dir)
    if list(ck["channels"]) != store.channels:
        raise ValueError(f"{Path(model_dir) / 'checkpoint.pt'}: model channels {ck['channels']} differ from "
                         f"{store.path} channels {store.channels}")
    panda_ch, factor, test_idx = test_split_setup(cfg, store)
    true = store.read_target(test_idx)[:, 0].astype(np.float64)
    panda = np.concatenate([x[:, panda_ch] for _, x, _ in store.iter_batches(test_idx, 256)])
    pred_interp, coef, n_fit = interpolation_baseline(store, test_idx, factor, panda_ch)
    pred_model = log_to_radiance(predict_log(model, store, test_idx, 2 * int(cfg["train"]["batch_size"]))
                                 .astype(np.float64))

    mask = np.isfinite(true) & np.isfinite(pred_model) & np.isfinite(pred_interp)
    if not mask.any():
        raise ValueError(f"{store.path}: no test pixel has a finite target and finite predictions")
    range_log, range_rad = data_ranges(true, mask, store.path)
    res_model = method_metrics(pred_model, true, mask, range_log, range_rad)
    res_interp = method_metrics(pred_interp, true, mask, range_log, range_rad)
    out = {
        "test_split": {
            "n_patches": int(test_idx.size),
            "n_pixels": int(mask.sum()),
            "data_range": {
                "log": range_log,
                "log_definition": f"max - min of true z = log1p(L / {RADIANCE_REF:g}) over the evaluated pixels",
                "radiance": range_rad,
                "radiance_definition": "max true radiance over the evaluated pixels (min taken as 0)",
                "radiance_units": RADIANCE_UNITS,
            },
            "model": res_model,
            "interpolation": res_interp,
        },
        "gain_db": {
            "psnr_log": res_model["psnr_log_db"] - res_interp["psnr_log_db"],
            "psnr_radiance": res_model["psnr_radiance_db"] - res_interp["psnr_radiance_db"],
        },
        "methods": {
            "model": {"checkpoint": str(Path(model_dir) / "checkpoint.pt"), "model_config": ck["model_config"],
                      "best_epoch": ck["best_epoch"], "epochs_run": ck["epoch"]},
            "interpolation": {
                "description": "PANDA cell means bilinearly interpolated from 1 km cell centres, "
                               f"z = polynomial of DN/63 (degree {BASELINE_DEGREE}) fitted on the train split",
                "coefficients": [float(v) for v in coef],
                "n_fit_pixels": n_fit,
            },
        },
        "definitions": {
            "pixels": "test-split pixels where the target and both predictions are finite",
            "null": "a metric that is not finite (e.g. PSNR of a perfect prediction) is written as null",
            "ssim": "Gaussian window sigma 1.5, 11x11, on z, only where the whole window is valid",
            "total_light_error": "|sum pred - sum true| / sum true (radiance)",
            "brightest_1pct_error": f"mean (pred - true) / true over pixels >= the {BRIGHTEST_Q} quantile of true "
                                    "radiance; negative = underestimation",
        },
    }
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    totals = np.where(np.isfinite(true), true, 0).reshape(len(true), -1).sum(axis=1)
    ids = [int(i) for i in np.argsort(-totals, kind="stable")[:max(1, n_panels)]]
    _panels(out_dir / PANELS_NAME, panda, pred_interp, pred_model, np.where(mask, true, np.nan), ids)
    path = out_dir / METRICS_NAME
    write_text_atomic(path, json.dumps(json_safe(out), indent=2) + "\n")
    log.info("test split: model PSNR(log) %.2f dB vs interpolation %.2f dB (gain %.2f dB)",
             res_model["psnr_log_db"], res_interp["psnr_log_db"], out["gain_db"]["psnr_log"])
    return path
