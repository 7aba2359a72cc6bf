"""Image-quality and radiometric metrics (pure numpy/scipy, NaN-aware).

Every function takes ``pred`` and ``true`` arrays of the same shape and uses
only the pixels where both are finite (and, if given, ``mask`` is true). They
return Python floats; a metric with no usable pixel is ``nan``.
"""

from __future__ import annotations

import numpy as np

#: SSIM constants of Wang et al. (2004).
SSIM_K1, SSIM_K2 = 0.01, 0.03


def valid_mask(pred, true, mask=None) -> np.ndarray:
    """Boolean mask of pixels where ``pred`` and ``true`` are finite (and ``mask`` is true)."""
    pred, true = np.asarray(pred), np.asarray(true)
    if pred.shape != true.shape:
        raise ValueError(f"pred and true must have the same shape, got {pred.shape} and {true.shape}")
    ok = np.isfinite(pred) & np.isfinite(true)
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != ok.shape:
            raise ValueError(f"mask must have shape {ok.shape}, got {mask.shape}")
        ok &= mask
    return ok


def _pairs(pred, true, mask=None) -> tuple[np.ndarray, np.ndarray]:
    ok = valid_mask(pred, true, mask)
    return np.asarray(pred, dtype=np.float64)[ok], np.asarray(true, dtype=np.float64)[ok]


def mse(pred, true, mask=None) -> float:
    """Mean squared error."""
    p, t = _pairs(pred, true, mask)
    return float(np.mean((p - t) ** 2)) if p.size else float("nan")


def rmse(pred, true, mask=None) -> float:
    """Root mean squared error."""
    return float(np.sqrt(mse(pred, true, mask)))


def mae(pred, true, mask=None) -> float:
    """Mean absolute error."""
    p, t = _pairs(pred, true, mask)
    return float(np.mean(np.abs(p - t))) if p.size else float("nan")


def psnr(pred, true, data_range: float, mask=None) -> float:
    """Peak signal-to-noise ratio ``10 log10(data_range**2 / MSE)`` in dB (``inf`` if MSE is 0)."""
    if not np.isfinite(data_range) or data_range <= 0:
        raise ValueError(f"psnr: data_range must be a positive finite number, got {data_range}")
    m = mse(pred, true, mask)
    if np.isnan(m):
        return float("nan")
    if m == 0:
        return float("inf")
    return float(10.0 * np.log10(data_range**2 / m))


def r2(pred, true, mask=None) -> float:
    """Coefficient of determination ``1 - SS_res / SS_tot`` (``nan`` if ``true`` is constant)."""
    p, t = _pairs(pred, true, mask)
    if p.size == 0:
        return float("nan")
    ss_tot = float(np.sum((t - t.mean()) ** 2))
    if ss_tot == 0:
        return float("nan")
    return float(1.0 - np.sum((t - p) ** 2) / ss_tot)


def total_light_error(pred, true, mask=None) -> float:
    """Relative error of the summed light ``|sum(pred) - sum(true)| / sum(true)``."""
    p, t = _pairs(pred, true, mask)
    total = float(t.sum())
    if p.size == 0 or total == 0:
        return float("nan")
    return float(abs(p.sum() - total) / abs(total))


def brightest_error(pred, true, q: float = 0.99, mask=None) -> float:
    """Mean relative error ``(pred - true) / true`` over the brightest pixels.

    The brightest pixels are those whose true value is at or above the ``q``
    quantile of ``true`` (over the valid pixels) and positive. Negative means
    the brightest pixels are underestimated (e.g. by a saturating sensor).
    """
    if not 0 <= q < 1:
        raise ValueError(f"brightest_error: q must be in [0, 1), got {q}")
    p, t = _pairs(pred, true, mask)
    if p.size == 0:
        return float("nan")
    sel = (t >= np.quantile(t, q)) & (t > 0)
    if not sel.any():
        return float("nan")
    return float(np.mean((p[sel] - t[sel]) / t[sel]))


def _gaussian(a: np.ndarray, sigma: float, truncate: float) -> np.ndarray:
    from scipy import ndimage

    sig = (0.0,) * (a.ndim - 2) + (sigma, sigma)
    return ndimage.gaussian_filter(a, sig, mode="constant", cval=0.0, truncate=truncate)


def ssim_map(pred, true, data_range: float, *, sigma: float = 1.5, win_size: int = 11,
             mask=None) -> np.ndarray:
    """Local SSIM with a Gaussian window over the last two axes (NaN where undefined).

    Leading axes are independent images (windows never cross them). Local means,
    variances and the covariance are Gaussian-weighted (``sigma``, window
    ``win_size x win_size``); SSIM is defined only where the whole window lies
    inside the image and on valid pixels, and is NaN elsewhere.

    Parameters
    ----------
    pred, true : array_like, shape (..., H, W)
    data_range : float
        Dynamic range ``L`` of the data; ``C1 = (0.01 L)**2``, ``C2 = (0.03 L)**2``.
    sigma : float
        Standard deviation of the Gaussian window (pixels).
    win_size : int
        Odd window size; the Gaussian is truncated at ``(win_size - 1) / 2`` pixels.
    mask : array_like of bool, optional
        Extra validity mask.
    """
    if not np.isfinite(data_range) or data_range <= 0:
        raise ValueError(f"ssim: data_range must be a positive finite number, got {data_range}")
    if win_size < 3 or win_size % 2 == 0:
        raise ValueError(f"ssim: win_size must be odd and >= 3, got {win_size}")
    ok = valid_mask(pred, true, mask)
    if ok.ndim < 2:
        raise ValueError(f"ssim: need arrays with at least 2 dimensions (..., H, W), got shape {ok.shape}")
    x = np.where(ok, np.asarray(pred, dtype=np.float64), 0.0)
    y = np.where(ok, np.asarray(true, dtype=np.float64), 0.0)
    w = ok.astype(np.float64)
    radius = (win_size - 1) // 2
    truncate = radius / sigma

    def g(a):
        return _gaussian(a, sigma, truncate)

    # Weight of valid pixels seen by each window: 1 when the window is whole and all valid
    # (zero padding outside the image makes windows that cross the border fall short).
    full = g(w)
    defined = full > 1.0 - 1e-9
    mu_x, mu_y = g(x), g(y)
    var_x = g(x * x) - mu_x**2
    var_y = g(y * y) - mu_y**2
    cov = g(x * y) - mu_x * mu_y
    c1 = (SSIM_K1 * data_range) ** 2
    c2 = (SSIM_K2 * data_range) ** 2
    s = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return np.where(defined, s, np.nan)


def ssim(pred, true, data_range: float, *, sigma: float = 1.5, win_size: int = 11, mask=None) -> float:
    """Mean SSIM over the pixels where it is defined (see :func:`ssim_map`); ``nan`` if none."""
    s = ssim_map(pred, true, data_range, sigma=sigma, win_size=win_size, mask=mask)
    s = s[np.isfinite(s)]
    return float(s.mean()) if s.size else float("nan")
