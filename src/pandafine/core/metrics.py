"""Image-quality and radiometric metrics (pure numpy/scipy, NaN-aware).

Every function takes ``pred`` and ``true`` arrays of the same shape and uses
only the pixels where both are finite (and, if given, ``mask`` is true). They
return Python floats; a metric with no usable pixel is ``nan``.

Streamed versions, for data that do not fit in memory at once (same formulas,
equal up to float summation order): :class:`ErrorSums` (MSE, RMSE, MAE, PSNR,
R², total-light error from running sums), :func:`ssim_sum_count` (SSIM's sum
and count, to average over batches of whole images) and :class:`BrightestError`
(:func:`brightest_error` of several predictions in two passes, with the exact
quantile of :func:`numpy.quantile` found in bounded memory).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

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
    _check_range("psnr", data_range)
    return psnr_from_mse(mse(pred, true, mask), data_range)


def _check_range(name: str, data_range: float) -> None:
    if not np.isfinite(data_range) or data_range <= 0:
        raise ValueError(f"{name}: data_range must be a positive finite number, got {data_range}")


def psnr_from_mse(m: float, data_range: float) -> float:
    """``10 log10(data_range**2 / m)`` in dB for a mean squared error ``m`` (``inf`` if 0, ``nan`` if ``nan``)."""
    _check_range("psnr", data_range)
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


def total_light_ratio(pred, true, mask=None) -> float:
    """Summed light of the prediction over that of the truth, ``sum(pred) / sum(true)`` (1 = kept)."""
    p, t = _pairs(pred, true, mask)
    total = float(t.sum())
    if p.size == 0 or total == 0:
        return float("nan")
    return float(p.sum() / total)


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
    _check_range("ssim", data_range)
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


def ssim_sum_count(pred, true, data_range: float, *, sigma: float = 1.5, win_size: int = 11,
                   mask=None) -> tuple[float, int]:
    """Sum and number of the local SSIM values where SSIM is defined (see :func:`ssim_map`).

    The leading axes are separate images, so the SSIM of a stack of images is
    the sum of these sums over any split of the stack into batches, divided by
    the sum of the counts (:func:`ssim` of the whole stack, up to summation order).
    """
    s = ssim_map(pred, true, data_range, sigma=sigma, win_size=win_size, mask=mask)
    s = s[np.isfinite(s)]
    return float(s.sum()), int(s.size)


def ssim(pred, true, data_range: float, *, sigma: float = 1.5, win_size: int = 11, mask=None) -> float:
    """Mean SSIM over the pixels where it is defined (see :func:`ssim_map`); ``nan`` if none."""
    total, count = ssim_sum_count(pred, true, data_range, sigma=sigma, win_size=win_size, mask=mask)
    return total / count if count else float("nan")


# --------------------------------------------------------------------------- streamed metrics


@dataclass
class ErrorSums:
    """Running sums of one prediction against the truth, for metrics over data seen in batches.

    :meth:`add` the batches (any split, any order); the metric methods then
    equal the functions of the same name over all the batches at once, up to
    float summation order.

    Parameters
    ----------
    true_mean : float, optional
        Mean of ``true`` over the same pixels (e.g. from a first pass); needed
        only by :meth:`r2`, whose total sum of squares is taken about it.
    """

    true_mean: float = float("nan")
    n: int = 0
    sse: float = 0.0
    sae: float = 0.0
    sum_pred: float = 0.0
    sum_true: float = 0.0
    ss_tot: float = 0.0

    def add(self, pred, true, mask=None) -> None:
        """Add the valid pixels of one batch (see :func:`valid_mask`)."""
        p, t = _pairs(pred, true, mask)
        d = p - t
        self.n += int(p.size)
        self.sse += float(np.sum(d**2))
        self.sae += float(np.sum(np.abs(d)))
        self.sum_pred += float(p.sum())
        self.sum_true += float(t.sum())
        if np.isfinite(self.true_mean):
            self.ss_tot += float(np.sum((t - self.true_mean) ** 2))

    def mse(self) -> float:
        """Mean squared error (:func:`mse`)."""
        return self.sse / self.n if self.n else float("nan")

    def rmse(self) -> float:
        """Root mean squared error (:func:`rmse`)."""
        return float(np.sqrt(self.mse()))

    def mae(self) -> float:
        """Mean absolute error (:func:`mae`)."""
        return self.sae / self.n if self.n else float("nan")

    def psnr(self, data_range: float) -> float:
        """PSNR in dB (:func:`psnr`)."""
        return psnr_from_mse(self.mse(), data_range)

    def r2(self) -> float:
        """Coefficient of determination (:func:`r2`); needs ``true_mean``."""
        if not np.isfinite(self.true_mean):
            raise ValueError("ErrorSums.r2: true_mean (the mean of true over the pixels) was not given")
        if self.n == 0 or self.ss_tot == 0:
            return float("nan")
        return float(1.0 - self.sse / self.ss_tot)

    def total_light_error(self) -> float:
        """Relative error of the summed light (:func:`total_light_error`)."""
        if self.n == 0 or self.sum_true == 0:
            return float("nan")
        return float(abs(self.sum_pred - self.sum_true) / abs(self.sum_true))

    def total_light_ratio(self) -> float:
        """Summed light of the prediction over that of the truth (:func:`total_light_ratio`)."""
        if self.n == 0 or self.sum_true == 0:
            return float("nan")
        return float(self.sum_pred / self.sum_true)


#: :class:`BrightestError` sorts float32 values by a 32-bit key: the top bits pick one of
#: ``2**_COARSE_BITS`` coarse bins (first pass), the rest one exact value in a bin (second pass).
_COARSE_BITS = 16
_FINE_BITS = 32 - _COARSE_BITS
_SIGN = np.uint32(0x80000000)


def _float32_keys(values) -> np.ndarray:
    """uint32 keys that sort like the (finite, float32-representable) ``values``."""
    v = np.asarray(values, dtype=np.float64).ravel()
    if not np.isfinite(v).all():
        raise ValueError("BrightestError: values must be finite")
    f = v.astype(np.float32)
    if not np.array_equal(f.astype(np.float64), v):
        raise ValueError("BrightestError: values must be float32 numbers (as stored in train.zarr); "
                         "the exact streamed quantile is defined on float32 keys")
    u = f.view(np.uint32)
    return np.where(u >= _SIGN, ~u, u | _SIGN)


def _key_values(keys) -> np.ndarray:
    """The float values (float64) of keys of :func:`_float32_keys` (inverse map)."""
    k = np.asarray(keys, dtype=np.uint32)
    u = np.where(k >= _SIGN, k ^ _SIGN, ~k)
    return u.view(np.float32).astype(np.float64)


def linear_quantile(n: int, q: float, order_statistic) -> float:
    """:func:`numpy.quantile` (method ``linear``) of ``n`` values from their order statistics.

    ``order_statistic(k)`` is the ``k``-th smallest value (0-based); at most two
    are asked for. The index and interpolation follow numpy's arithmetic step by
    step, so the result is numpy's bit for bit.
    """
    if n < 1:
        raise ValueError(f"linear_quantile: need at least one value, got n={n}")
    virtual = float(n - 1) * q
    if virtual >= n - 1:
        return float(order_statistic(n - 1))
    prev = int(np.floor(virtual))
    a, b = float(order_statistic(prev)), float(order_statistic(prev + 1))
    gamma = virtual - prev
    diff = b - a
    return b - diff * (1 - gamma) if gamma >= 0.5 else a + diff * gamma


class BrightestError:
    """Streamed :func:`brightest_error` of several predictions against one truth (two passes).

    First pass: :meth:`scan` the valid true values, batch by batch. Second pass:
    :meth:`scorer` gives a fresh :class:`BrightestScorer`; ``add`` to it the
    same pixels (any batches, any order) with the predictions, then ``result``.
    The ``q`` quantile is numpy's exactly (the values must be float32 numbers):
    the first pass counts the values in ``2**16`` coarse bins of their float32
    bits; the second counts the exact values inside the bin holding the quantile
    and accumulates the relative errors of the pixels above it, so memory does
    not grow with the number of pixels.

    Parameters
    ----------
    q : float
        Quantile of the true values at and above which pixels count as brightest.
    """

    def __init__(self, q: float = 0.99) -> None:
        if not 0 <= q < 1:
            raise ValueError(f"brightest_error: q must be in [0, 1), got {q}")
        self.q = float(q)
        self.coarse = np.zeros(1 << _COARSE_BITS, dtype=np.int64)

    @property
    def n(self) -> int:
        """Number of values scanned."""
        return int(self.coarse.sum())

    def scan(self, true) -> None:
        """First pass: count the valid true values of one batch (1-D or any shape; all are used)."""
        keys = _float32_keys(true)
        self.coarse += np.bincount(keys >> _FINE_BITS, minlength=self.coarse.size)

    def scorer(self) -> BrightestScorer:
        """A second-pass accumulator for the values scanned so far."""
        return BrightestScorer(self)


class BrightestScorer:
    """Second pass of :class:`BrightestError` (made by :meth:`BrightestError.scorer`)."""

    def __init__(self, scan: BrightestError) -> None:
        self.q = scan.q
        self.coarse = scan.coarse.copy()
        self.n = int(self.coarse.sum())
        self._cum = np.cumsum(self.coarse)
        if self.n:
            virtual = float(self.n - 1) * self.q
            low_rank = min(int(np.floor(virtual)), self.n - 1)
            self.bin = int(np.searchsorted(self._cum, low_rank, side="right"))  # coarse bin of the lower rank
        else:
            self.bin = -1
        self.fine = np.zeros(1 << _FINE_BITS, dtype=np.int64)
        self.above_min_key: int | None = None  # smallest key above self.bin
        self.fine_count = np.zeros(1 << _FINE_BITS, dtype=np.int64)  # positive values only
        self.fine_sum: dict[str, np.ndarray] = {}
        self.above_count = 0
        self.above_sum: dict[str, float] = {}
        self.seen = 0

    def add(self, true, preds: Mapping[str, np.ndarray]) -> None:
        """Add the valid pixels of one batch: true values and each prediction on the same pixels."""
        keys = _float32_keys(true)
        t = np.asarray(true, dtype=np.float64).ravel()
        self.seen += int(t.size)
        for name in preds:
            if name not in self.fine_sum:
                self.fine_sum[name] = np.zeros(self.fine.size)
                self.above_sum[name] = 0.0
        if self.n == 0:
            return  # nothing was scanned: result() reports the mismatch if values came now
        coarse = keys >> _FINE_BITS
        here, above = coarse == self.bin, coarse > self.bin
        fine = (keys[here] & ((1 << _FINE_BITS) - 1)).astype(np.int64)
        self.fine += np.bincount(fine, minlength=self.fine.size)
        if above.any():
            m = int(keys[above].min())
            self.above_min_key = m if self.above_min_key is None else min(self.above_min_key, m)
        pos = t > 0
        sel_here, sel_above = here & pos, above & pos
        fine_pos = (keys[sel_here] & ((1 << _FINE_BITS) - 1)).astype(np.int64)
        self.fine_count += np.bincount(fine_pos, minlength=self.fine.size)
        self.above_count += int(sel_above.sum())
        for name, pred in preds.items():
            p = np.asarray(pred, dtype=np.float64).ravel()
            if p.shape != t.shape:
                raise ValueError(f"BrightestScorer.add: prediction {name!r} has {p.size} values, true has {t.size}")
            rel_here = (p[sel_here] - t[sel_here]) / t[sel_here]
            rel_above = (p[sel_above] - t[sel_above]) / t[sel_above]
            self.fine_sum[name] += np.bincount(fine_pos, weights=rel_here, minlength=self.fine.size)
            self.above_sum[name] += float(rel_above.sum())

    def _order_statistic(self, k: int) -> float:
        below = int(self._cum[self.bin - 1]) if self.bin > 0 else 0
        cum = below + np.cumsum(self.fine)
        if k < int(cum[-1]):
            sub = int(np.searchsorted(cum, k, side="right"))
            return float(_key_values((self.bin << _FINE_BITS) | sub))
        if self.above_min_key is None:
            raise ValueError(f"BrightestScorer: rank {k} is above the second pass's values")
        return float(_key_values(self.above_min_key))

    def _check_passes(self) -> None:
        in_bin = int(self.coarse[self.bin]) if self.n else 0
        if self.seen != self.n or int(self.fine.sum()) != in_bin:
            raise ValueError(f"BrightestScorer: the second pass saw {self.seen} values ({int(self.fine.sum())} in "
                             f"the quantile's bin), the first {self.n} ({in_bin}); both passes must see the "
                             "same pixels")

    def quantile(self) -> float:
        """The ``q`` quantile of the true values (:func:`numpy.quantile`, linear); ``nan`` if none."""
        self._check_passes()
        if self.n == 0:
            return float("nan")
        return linear_quantile(self.n, self.q, self._order_statistic)

    def result(self) -> dict[str, float]:
        """Mean relative error of the brightest pixels per prediction (:func:`brightest_error`)."""
        qv = self.quantile()
        if self.n == 0:
            return {name: float("nan") for name in self.fine_sum}
        values = _key_values((self.bin << _FINE_BITS) | np.arange(self.fine.size, dtype=np.uint32))
        chosen = (self.fine_count > 0) & (values >= qv) & (values > 0)
        count = self.above_count + int(self.fine_count[chosen].sum())
        out = {}
        for name, sums in self.fine_sum.items():
            total = self.above_sum[name] + float(sums[chosen].sum())
            out[name] = total / count if count else float("nan")
        return out
