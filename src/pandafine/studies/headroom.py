"""Where a model's test error lies, and how far a target is from the scene it shows (synthetic scenes).

Pure functions over test-split arrays in z = log1p(L / RADIANCE_REF), shape ``(N, H, W)``; PSNR is
:func:`pandafine.core.metrics.psnr` over the pixels where both arrays are finite (and ``mask``):

* :func:`blurred_truth_psnr` -- the hidden truth (synthetic sources) Gaussian-blurred in radiance
  and scored against the Luojia-01 target: a reference for what a predictor of the truth, smoothed
  like the target, reaches (the target is resampled from ~130 m frames, so it is smoother than the
  truth; the unblurred truth understates that reference);
* :func:`band_swap_psnr` -- the prediction with its low (or high) spatial frequencies replaced by
  the target's: which scale the error sits at;
* :func:`offset_oracle_psnr` -- the prediction corrected by the best constant z offset per block
  (a perfect brightness level per 1 km cell or per patch): how much error is brightness level
  rather than pattern.

``tests/benchmarks/bench_headroom.py`` prints these for trained models of a run.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy.ndimage import gaussian_filter

from pandafine.core.metrics import psnr
from pandafine.core.scaling import radiance_to_log


def _lowpass(z: np.ndarray, sigma: float) -> np.ndarray:
    """Per-patch Gaussian low-pass (sigma in pixels), NaN treated as 0."""
    return np.stack([gaussian_filter(np.nan_to_num(p), sigma, mode="reflect") for p in z])


def band_swap_psnr(z_pred: np.ndarray, z_true: np.ndarray, data_range: float, sigma: float,
                   mask: np.ndarray | None = None) -> dict[str, float]:
    """PSNR with the target's low-pass (``true_low``) or high-pass (``true_high``) put in place of the prediction's.

    ``true_low`` = target low-pass + prediction high-pass: what is left is the fine-scale error;
    ``true_high`` = prediction low-pass + target high-pass: what is left is the coarse-scale error.
    """
    lo_p, lo_t = _lowpass(z_pred, sigma), _lowpass(z_true, sigma)
    return {"true_low": psnr(lo_t + (z_pred - lo_p), z_true, data_range, mask),
            "true_high": psnr(lo_p + (z_true - lo_t), z_true, data_range, mask)}


def offset_oracle_psnr(z_pred: np.ndarray, z_true: np.ndarray, data_range: float, block: int,
                       lit: float = 0.3, mask: np.ndarray | None = None) -> float:
    """PSNR after adding, in every ``block`` x ``block`` block, the median z error of its lit pixels.

    Only pixels the prediction calls lit (z > ``lit``) are moved, by the median of target - prediction
    over pixels lit in the target (blocks with fewer than 4 such pixels are left alone).
    """
    out = np.array(z_pred, dtype=np.float64, copy=True)
    n, h, w = out.shape
    for i in range(n):
        for r in range(0, h, block):
            for c in range(0, w, block):
                p, t = out[i, r:r + block, c:c + block], z_true[i, r:r + block, c:c + block]
                sel = np.isfinite(t) & (t > lit)
                if sel.sum() >= 4:
                    p += np.where(p > lit, np.median((t - p)[sel]), 0.0)
    return psnr(out, z_true, data_range, mask)


def truth_patches(truth: dict[int, np.ndarray], years: Sequence[int], rows: Sequence[int], cols: Sequence[int],
                  patch: int) -> np.ndarray:
    """Patches ``(N, patch, patch)`` of the yearly truth rasters at the patches' grid offsets."""
    out = []
    for y, r, c in zip(years, rows, cols):
        a = truth[int(y)][int(r):int(r) + patch, int(c):int(c) + patch]
        if a.shape != (patch, patch):
            raise ValueError(f"truth of {int(y)}: patch at row {int(r)}, col {int(c)} leaves the raster {truth[int(y)].shape}")
        out.append(a)
    return np.stack(out)


def blurred_truth_psnr(truth: dict[int, np.ndarray], years, rows, cols, patch: int, z_true: np.ndarray,
                       data_range: float, sigmas: Sequence[float] = (0.0, 0.5, 0.7, 1.0)) -> dict[float, float]:
    """PSNR (log) of the truth blurred by each sigma (pixels, in radiance, whole rasters) against the target."""
    out = {}
    for s in sigmas:
        blurred = {y: (gaussian_filter(np.nan_to_num(a), s) if s > 0 else a) for y, a in truth.items()}
        out[float(s)] = psnr(radiance_to_log(truth_patches(blurred, years, rows, cols, patch)), z_true, data_range)
    return out


__all__ = ["band_swap_psnr", "offset_oracle_psnr", "truth_patches", "blurred_truth_psnr"]
