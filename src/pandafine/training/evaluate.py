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

:func:`evaluate_model` streams the test split in batches of patches, so its
memory does not grow with the split: a first pass (:func:`scan_split`) finds
the evaluated pixels, the data ranges, the means and the coarse histogram of the
brightest-pixel quantile (and the brightest patches for the figure); a second
pass (:func:`score_split`) accumulates the error sums, SSIM and the brightest
pixels' errors. The result equals :func:`method_metrics` on the whole split up
to float summation order, and the quantile is numpy's exactly.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping

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
#: Working pixels per evaluation batch (rounded to whole model batches): bounds the memory of evaluation.
EVAL_BATCH_PIXELS = 2**20


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


def baseline_radiance(dn_up: np.ndarray, coef: np.ndarray) -> np.ndarray:
    """Radiance of the interpolation baseline from interpolated DN (NaN where the DN is)."""
    return np.where(np.isfinite(dn_up), log_to_radiance(apply_poly(dn_up, coef)), np.nan)


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
        "total_light_ratio": M.total_light_ratio(pred, true, mask=mask),
        "brightest_1pct_error": M.brightest_error(pred, true, q=BRIGHTEST_Q, mask=mask),
    }


def check_ranges(range_log: float, range_rad: float, source) -> tuple[float, float]:
    """The PSNR data ranges, or a ValueError naming ``source`` if the target is constant."""
    if not (range_log > 0 and range_rad > 0):
        raise ValueError(f"{source}: test-split target is constant (log range {range_log}, "
                         f"max radiance {range_rad}); PSNR is undefined")
    return float(range_log), float(range_rad)


# --------------------------------------------------------------------------- streamed metrics (pure)

#: One batch of a test split: true radiance (B, P, P) (float32 numbers, as stored) and
#: ``{method: predicted radiance (B, P, P)}``; every batch names the same methods.
Batch = tuple[np.ndarray, Mapping[str, np.ndarray]]


class PixelsChanged(ValueError):
    """The second pass evaluated other pixels than the first (a prediction not finite where it was)."""


def batch_mask(true: np.ndarray, preds: Mapping[str, np.ndarray]) -> np.ndarray:
    """Evaluated pixels of a batch: the target and every prediction are finite."""
    ok = np.isfinite(true)
    for pred in preds.values():
        ok &= np.isfinite(pred)
    return ok


def patch_totals(true: np.ndarray) -> np.ndarray:
    """Summed finite true radiance of each patch of a stack (B, P, P) (ranks patches for the figure)."""
    return np.where(np.isfinite(true), true, 0).reshape(len(true), -1).sum(axis=1)


def brightest_patches(totals: np.ndarray, n: int) -> list[int]:
    """Positions of the ``n`` (at least 1) patches with the largest totals, brightest first (stable)."""
    return [int(i) for i in np.argsort(-np.asarray(totals), kind="stable")[:max(1, n)]]


@dataclass
class SplitScan:
    """What the first pass over a test split finds (:func:`scan_split`).

    Attributes
    ----------
    n_pixels : int
        Evaluated pixels (target and every prediction of the pass finite).
    range_log, range_radiance : float
        PSNR data ranges (see :func:`data_ranges`).
    mean_log, mean_radiance : float
        Means of the true z and radiance over the evaluated pixels (for R²).
    brightest : pandafine.core.metrics.BrightestError
        Coarse histogram of the true radiance (for the brightest-pixel quantile).
    patch_totals : ndarray, shape (N,)
        :func:`patch_totals` of every patch, in the order of the batches.
    """

    n_pixels: int
    range_log: float
    range_radiance: float
    mean_log: float
    mean_radiance: float
    brightest: M.BrightestError
    patch_totals: np.ndarray


def scan_split(batches: Iterable[Batch], source, *, q: float = BRIGHTEST_Q) -> SplitScan:
    """First pass over a test split: evaluated pixels, data ranges, means, quantile histogram, patch totals.

    Parameters
    ----------
    batches : iterable of Batch
        The split, batch by batch (see :data:`Batch`).
    source : str or path-like
        Named in the errors.
    q : float
        Quantile of the brightest pixels.

    Raises
    ------
    ValueError
        If no pixel is evaluated or the target is constant there.
    """
    n, sum_z, sum_t = 0, 0.0, 0.0
    z_min, z_max, t_max = np.inf, -np.inf, -np.inf
    brightest = M.BrightestError(q)
    totals = []
    for true, preds in batches:
        true = np.asarray(true, dtype=np.float64)
        totals.append(patch_totals(true))
        mask = batch_mask(true, preds)
        if not mask.any():
            continue
        t = true[mask]
        z = radiance_to_log(t)
        n += int(t.size)
        z_min, z_max, t_max = min(z_min, float(z.min())), max(z_max, float(z.max())), max(t_max, float(t.max()))
        sum_z += float(z.sum())
        sum_t += float(t.sum())
        try:
            brightest.scan(t)
        except ValueError as exc:
            raise ValueError(f"{source}: test-split target: {exc}") from exc
    if n == 0:
        raise ValueError(f"{source}: no test pixel has a finite target and finite predictions")
    range_log, range_rad = check_ranges(z_max - z_min, t_max, source)
    return SplitScan(n_pixels=n, range_log=range_log, range_radiance=range_rad, mean_log=sum_z / n,
                     mean_radiance=sum_t / n, brightest=brightest,
                     patch_totals=np.concatenate(totals) if totals else np.zeros(0))


def score_split(batches: Iterable[Batch], scan: SplitScan) -> dict[str, dict[str, float]]:
    """Second pass over the split of ``scan``: the metrics of :func:`method_metrics` for each method.

    Raises
    ------
    PixelsChanged
        If this pass evaluates a different number of pixels than ``scan`` (with
        predictions the first pass did not have, e.g. the model, not finite
        everywhere that pass evaluated).
    """
    sums: dict[str, tuple[M.ErrorSums, M.ErrorSums]] = {}
    ssim: dict[str, list] = {}
    bright = scan.brightest.scorer()
    n = 0
    names = None
    for true, preds in batches:
        if names is None:
            names = tuple(preds)
            for name in names:
                sums[name] = (M.ErrorSums(true_mean=scan.mean_log), M.ErrorSums(true_mean=scan.mean_radiance))
                ssim[name] = [0.0, 0]
        elif tuple(preds) != names:
            raise ValueError(f"score_split: a batch has the methods {tuple(preds)}, the first had {names}")
        true = np.asarray(true, dtype=np.float64)
        mask = batch_mask(true, preds)
        n += int(mask.sum())
        zt = radiance_to_log(np.nan_to_num(true))
        for name, pred in preds.items():
            pred = np.asarray(pred, dtype=np.float64)
            zp = radiance_to_log(np.nan_to_num(pred))
            sums[name][0].add(zp, zt, mask)
            sums[name][1].add(pred, true, mask)
            total, count = M.ssim_sum_count(zp, zt, scan.range_log, mask=mask)
            ssim[name][0] += total
            ssim[name][1] += count
        bright.add(true[mask], {name: np.asarray(pred)[mask] for name, pred in preds.items()})
    if n != scan.n_pixels:
        raise PixelsChanged(f"the second pass evaluated {n} pixels, the first {scan.n_pixels}")
    brightest = bright.result()
    out = {}
    for name in names or ():
        zs, rs = sums[name]
        total, count = ssim[name]
        out[name] = {
            "psnr_log_db": zs.psnr(scan.range_log),
            "psnr_radiance_db": rs.psnr(scan.range_radiance),
            "ssim_log": total / count if count else float("nan"),
            "rmse_radiance": rs.rmse(),
            "mae_radiance": rs.mae(),
            "r2_radiance": rs.r2(),
            "rmse_log": zs.rmse(),
            "mae_log": zs.mae(),
            "r2_log": zs.r2(),
            "total_light_error": rs.total_light_error(),
            "total_light_ratio": rs.total_light_ratio(),
            "brightest_1pct_error": brightest[name],
        }
    return out


def streamed_metrics(make_batches: Callable[[], Iterable[Batch]], source, *,
                     scan_batches: Callable[[], Iterable[Batch]] | None = None,
                     q: float = BRIGHTEST_Q) -> tuple[SplitScan, dict[str, dict[str, float]]]:
    """:func:`method_metrics` of every method over a test split read twice, batch by batch.

    Equal to :func:`data_ranges` and :func:`method_metrics` on the whole split
    up to float summation order (the brightest-pixel quantile exactly).

    Parameters
    ----------
    make_batches : callable
        Returns a fresh iterable of :data:`Batch` over the split (called once per pass).
    source : str or path-like
        Named in the errors.
    scan_batches : callable, optional
        A cheaper first pass: the same batches with only some of the predictions
        (e.g. without the model). If the full predictions leave out pixels the
        first pass evaluated, the first pass is redone with ``make_batches``.
    q : float
        Quantile of the brightest pixels.

    Returns
    -------
    scan : SplitScan
    metrics : dict
        ``{method: {metric: value}}``.
    """
    scan = scan_split((scan_batches or make_batches)(), source, q=q)
    try:
        return scan, score_split(make_batches(), scan)
    except PixelsChanged as exc:
        if scan_batches is None:
            raise
        log.info("%s: %s; scanning again with all predictions", source, exc)
    scan = scan_split(make_batches(), source, q=q)
    return scan, score_split(make_batches(), scan)


# --------------------------------------------------------------------------- I/O

def patch_offsets(store: PatchStore, idx) -> tuple[np.ndarray, np.ndarray]:
    """Grid offsets (rows, cols) of the stored arrays of patches ``idx``; zeros when the store has none.

    With a halo (``store.halo``) an array starts that many pixels above and left of its patch.
    """
    rows = store.extra.get("row")
    cols = store.extra.get("col")
    if rows is None or cols is None:
        zeros = np.zeros(len(idx), np.int64)
        return zeros, zeros
    h = store.halo
    return np.asarray(rows)[idx].astype(np.int64) - h, np.asarray(cols)[idx].astype(np.int64) - h


def upsample_patches(panda: np.ndarray, factor: int, rows, cols) -> np.ndarray:
    """:func:`upsample_cells` of each patch of a stack ``panda`` (k, P, P) at grid offsets ``rows, cols``."""
    out = np.empty(panda.shape, np.float64)
    for k in range(len(panda)):
        out[k] = upsample_cells(panda[k], factor, rows[k], cols[k])
    return out


def _baseline_dn(store, idx, factor: int, panda_ch: int) -> np.ndarray:
    """Interpolated PANDA DN (k, P, P) of patches ``idx``."""
    rows, cols = patch_offsets(store, idx)
    out = np.empty((len(idx), store.patch, store.patch), np.float64)
    pos = 0
    for _, x, _ in store.iter_batches(idx, 64):
        out[pos:pos + len(x)] = upsample_patches(x[:, panda_ch], factor, rows[pos:pos + len(x)],
                                                 cols[pos:pos + len(x)])
        pos += len(x)
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


def draw_patch_grid(fig, ax_at, cols, rows: int) -> None:
    """Draw patches as a grid: one row per patch, one column per ``(title, (rows, P, P) array, imshow kwargs)``.

    ``ax_at(r, c)`` gives the axes of row ``r``, column ``c``. Titles go on the first row and
    horizontal colour bars under the last; ticks are off.
    """
    for r in range(rows):
        for c, (title, arr, kw) in enumerate(cols):
            ax = ax_at(r, c)
            im = ax.imshow(arr[r], interpolation="nearest", **kw)
            ax.set_xticks([]), ax.set_yticks([])
            if r == 0:
                ax.set_title(title, fontsize=9)
            if r == rows - 1:
                fig.colorbar(im, ax=ax, orientation="horizontal", fraction=0.05, pad=0.04)


def _panels(path: Path, panda: np.ndarray, interp: np.ndarray, model: np.ndarray, true: np.ndarray) -> None:
    """Figure of the patches of the stacks (k, P, P) (one row each): PANDA, both predictions, truth, error."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    z = {k: radiance_to_log(np.nan_to_num(v)) for k, v in (("interp", interp), ("model", model))}
    zt = np.where(np.isfinite(true), radiance_to_log(np.nan_to_num(true)), np.nan)
    vmax = float(np.nanmax(zt)) if np.isfinite(zt).any() else 1.0
    err = np.abs(z["model"] - zt)
    emax = float(np.nanmax(err)) if np.isfinite(err).any() else 1.0
    cols = [("PANDA input (DN)", panda, dict(cmap="gray", vmin=0, vmax=63)),
            ("interpolation z", z["interp"], dict(cmap="magma", vmin=0, vmax=vmax)),
            ("model z", z["model"], dict(cmap="magma", vmin=0, vmax=vmax)),
            ("truth z", zt, dict(cmap="magma", vmin=0, vmax=vmax)),
            ("|model - truth| (z)", err, dict(cmap="viridis", vmin=0, vmax=emax))]
    rows = len(true)
    fig, axes = plt.subplots(rows, len(cols), figsize=(2.4 * len(cols), 2.4 * rows + 0.6), squeeze=False)
    draw_patch_grid(fig, lambda r, c: axes[r, c], cols, rows)
    for r in range(rows):
        axes[r, 0].set_ylabel(f"test patch {r + 1}", fontsize=8)
    fig.suptitle(f"Test patches; z = log1p(L / {RADIANCE_REF:g} {RADIANCE_UNITS})", fontsize=9)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


@dataclass
class _TestReader:
    """Reads test patches with the targets and the predictions of both methods (I/O of :func:`evaluate_model`)."""

    store: Any
    factor: int
    panda_ch: int
    coef: np.ndarray
    model: Any
    model_batch: int

    def read(self, idx: np.ndarray, with_model: bool) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        """``(PANDA DN, true radiance, {method: predicted radiance})`` of patches ``idx``, each (k, P, P)."""
        x, t = self.store.read(idx)
        rows, cols = patch_offsets(self.store, idx)
        panda = x[:, self.panda_ch]
        preds = {}
        if with_model:
            z = predict_log(self.model, self.store, idx, self.model_batch)
            preds["model"] = log_to_radiance(z.astype(np.float64))
        preds["interpolation"] = baseline_radiance(upsample_patches(panda, self.factor, rows, cols), self.coef)
        return panda, t[:, 0].astype(np.float64), preds

    def batches(self, idx: np.ndarray, batch: int, with_model: bool) -> Iterator[Batch]:
        """Batches (:data:`Batch`) of ``batch`` patches of ``idx`` (the model runs ``model_batch`` at a time)."""
        for start in range(0, idx.size, batch):
            _, true, preds = self.read(idx[start:start + batch], with_model)
            yield true, preds


def eval_batch_patches(patch: int, model_batch: int, batch_pixels: int = EVAL_BATCH_PIXELS) -> int:
    """Patches per evaluation batch: about ``batch_pixels`` working pixels, in whole model batches (>= 1)."""
    if patch < 1 or model_batch < 1 or batch_pixels < 1:
        raise ValueError(f"eval_batch_patches: patch ({patch}), model_batch ({model_batch}) and batch_pixels "
                         f"({batch_pixels}) must be >= 1")
    return max(1, batch_pixels // (patch * patch) // model_batch) * model_batch


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
    return baseline_radiance(dn_up, coef), coef, n_fit


def data_ranges(true: np.ndarray, mask: np.ndarray, source) -> tuple[float, float]:
    """PSNR data ranges over the evaluated pixels: (max - min of true log radiance, max true radiance)."""
    zt = radiance_to_log(np.nan_to_num(true))
    return check_ranges(float(zt[mask].max() - zt[mask].min()), float(true[mask].max()), source)


def evaluate_model(cfg: Mapping[str, Any], train_zarr, model_dir, out_dir, *, n_panels: int = 4,
                   batch_pixels: int = EVAL_BATCH_PIXELS) -> Path:
    """Evaluate the model of ``model_dir`` and the interpolation baseline on the test split.

    The split is read in batches, twice (:func:`streamed_metrics`; the first
    pass without the model unless the model's output is not finite somewhere),
    so memory is bounded by the batch, not by the split.

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
    batch_pixels : int
        Working pixels per evaluation batch (see :func:`eval_batch_patches`).

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
    coef, n_fit = fit_baseline(store, factor, panda_ch)
    model_batch = 2 * int(cfg["train"]["batch_size"])
    batch = eval_batch_patches(store.patch, model_batch, batch_pixels)
    reader = _TestReader(store, factor, panda_ch, coef, model, model_batch)
    log.info("test split: %d patches in batches of %d", test_idx.size, batch)
    scan, res = streamed_metrics(lambda: reader.batches(test_idx, batch, with_model=True), store.path,
                                 scan_batches=lambda: reader.batches(test_idx, batch, with_model=False))
    res_model, res_interp = res["model"], res["interpolation"]
    range_log, range_rad = scan.range_log, scan.range_radiance
    out = {
        "test_split": {
            "n_patches": int(test_idx.size),
            "n_pixels": scan.n_pixels,
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
            "total_light_ratio": "sum pred / sum true (radiance): 1 = total light kept, < 1 = light lost",
            "brightest_1pct_error": f"mean (pred - true) / true over pixels >= the {BRIGHTEST_Q} quantile of true "
                                    "radiance; negative = underestimation",
        },
    }
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ids = test_idx[brightest_patches(scan.patch_totals, n_panels)]
    panda, true, preds = reader.read(ids, with_model=True)
    true = np.where(batch_mask(true, preds), true, np.nan)
    _panels(out_dir / PANELS_NAME, panda, preds["interpolation"], preds["model"], true)
    path = out_dir / METRICS_NAME
    write_text_atomic(path, json.dumps(json_safe(out), indent=2) + "\n")
    log.info("test split: model PSNR(log) %.2f dB vs interpolation %.2f dB (gain %.2f dB)",
             res_model["psnr_log_db"], res_interp["psnr_log_db"], out["gain_db"]["psnr_log"])
    return path
