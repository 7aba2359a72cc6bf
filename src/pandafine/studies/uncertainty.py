"""Per-pixel uncertainty: how well an ensemble (or a Gaussian spread) knows its own error.

The metrics of ``uncertainty.json``, beside ``metrics.json``. Every array is in the model's
log-radiance space, the space of PSNR(log) (:func:`pandafine.core.scaling.radiance_to_log`;
the PSNR data range is that of :func:`pandafine.training.evaluate.data_ranges`). NaN marks an
invalid pixel; it is left out of every number. Three kinds of forecast are scored against a
target ``y`` (the Luojia-01 target, or the radiometric reference of a synthetic run):

* an **ensemble**: ``members`` of shape ``(M, ...)``, e.g. samples of a residual generative model
  around the base model;
* the **constant-spread baseline**: ``N(base, sigma_const**2)``, ``sigma_const`` the RMS residual
  of the base on the validation split (:func:`constant_sigma`);
* the **heteroscedastic baseline**: ``N(mu, sigma**2)`` with a per-pixel ``sigma`` from a
  mean + log-variance head.

Definitions (the same for every forecast, so the numbers compare):

* **spread** of a pixel: the standard deviation the forecast predicts for the error of its point
  forecast. Gaussian: ``sigma``. Ensemble: ``sqrt((M + 1) / M) * std(members, ddof=1)``; the
  factor makes a calibrated finite ensemble score 1, because the error of the mean of ``M``
  draws has variance ``s**2 (1 + 1/M)`` (Fortin et al. 2014, J. Hydrometeor. 15, 1708).
* **spread-skill ratio**: RMS spread over the RMSE of the point forecast (the ensemble mean, or
  ``mu``) over the same pixels: ``sqrt(mean(spread**2)) / sqrt(mean((point - y)**2))``. 1 is
  calibrated, < 1 overconfident, > 1 underconfident. The RMS (not the mean) of the spread keeps
  the ratio at 1 when the spread varies from pixel to pixel (the mean of standard deviations is
  smaller than the root of their mean square); the plain mean of the members' standard
  deviations is reported beside it as ``spread_mean_std``.
* **CRPS**: the mean continuous ranked probability score over the pixels (:mod:`scoringrules`);
  for an ensemble the *fair* (unbiased) estimator by default, i.e. an unbiased estimate of the CRPS
  of the distribution the members are drawn from, so ensembles of different sizes and the
  Gaussians compare (:func:`ensemble_crps`).
* **coverage** of the central ``level`` interval: the expected fraction of pixels whose randomized
  PIT lies in ``[(1 - level) / 2, (1 + level) / 2]`` (:func:`pit_coverage`). Ensemble: the rank of
  the target among the members, ties (members clamped at 0 where the target is 0) spread uniformly
  (:func:`ensemble_pit`); Gaussian: its CDF at the target, censored at ``lower`` if given
  (:func:`gaussian_pit`). A calibrated forecast covers ``level`` whatever ``M``, also where the
  target has a point mass: 60-80 % of the Luojia target's pixels are exactly 0 (below the
  background), and member quantiles would count every such pixel as inside any interval that
  reaches 0. Member quantiles are still available (:func:`interval_coverage` with a numpy ``method``:
  Weibull positions cover at most ``(M - 1) / (M + 1)``, numpy's default ``level (M - 1) / (M + 1)``).
* **reliability curve**: pixels binned by spread decile; RMS spread and RMSE per bin
  (:func:`reliability_curve`). Binned by its own spread, a small calibrated ensemble looks
  overconfident in the low bins and underconfident in the top one (sampling noise of the spread).
* **PANDA classes**: the same numbers per 1 km PANDA class, ``unlit`` (DN 0), ``lit`` (0 < DN < 63)
  and ``saturated`` (DN >= 63) (:func:`panda_classes`).

Pure functions; :func:`uncertainty_summary` gathers them into a JSON-ready dict and
:func:`write_uncertainty` writes it.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from scipy.stats import norm

from pandafine.core import metrics as M
from pandafine.core.atomic import write_text_atomic
from pandafine.core.json_records import json_safe
from pandafine.preprocess.calibrate import PANDA_DN_MAX

UNCERTAINTY_NAME = "uncertainty.json"
#: PANDA classes of :func:`panda_classes`, by code 0, 1, 2 (-1: no valid DN).
CLASS_NAMES = ("unlit", "lit", "saturated")
#: Central intervals whose coverage is reported.
COVERAGE_LEVELS = (0.5, 0.9)
#: Ensemble sizes whose mean is scored (the first ``m`` members), as far as the ensemble has them.
MEMBER_COUNTS = (4, 8, 16)
#: Spread bins of the reliability curve (deciles).
RELIABILITY_BINS = 10
#: Pixels scored at once by :func:`ensemble_crps` (bounds the memory of scoringrules' sort).
CRPS_CHUNK = 1 << 18
#: Significant digits of the floats in :func:`uncertainty_summary`.
SIGNIFICANT_DIGITS = 6


# --------------------------------------------------------------------------- inputs


def panda_classes(dn) -> np.ndarray:
    """PANDA class of every pixel from its 1 km DN: 0 unlit, 1 lit, 2 saturated, -1 invalid.

    Parameters
    ----------
    dn : array_like
        PANDA DN (calibrated 0..63, NaN for nodata), e.g. the 1 km cells repeated on the working grid.

    Returns
    -------
    numpy.ndarray of int8, same shape
        0 where ``DN == 0``, 1 where ``0 < DN < 63``, 2 where ``DN >= 63`` (:data:`PANDA_DN_MAX`),
        -1 where the DN is not finite. Names: :data:`CLASS_NAMES`.
    """
    d = np.asarray(dn, dtype=np.float64)
    ok = np.isfinite(d)
    if (d[ok] < 0).any():
        raise ValueError(f"panda_classes: DN must be >= 0, got a minimum of {d[ok].min()}")
    out = np.full(d.shape, -1, dtype=np.int8)
    out[ok & (d == 0)] = 0
    out[ok & (d > 0) & (d < PANDA_DN_MAX)] = 1
    out[ok & (d >= PANDA_DN_MAX)] = 2
    return out


def _members(members, y=None) -> np.ndarray:
    f = np.asarray(members, dtype=np.float64)
    if f.ndim < 1 or f.shape[0] < 1:
        raise ValueError(f"members must have shape (M, ...) with M >= 1, got shape {f.shape}")
    if y is not None and f.shape[1:] != np.shape(y):
        raise ValueError(f"members must have shape (M, *y.shape) = (M, {', '.join(map(str, np.shape(y)))}), "
                         f"got {f.shape}")
    return f


def _sigma(sigma, shape, ok, what: str = "sigma") -> np.ndarray:
    s = np.broadcast_to(np.asarray(sigma, dtype=np.float64), shape)
    if (s[ok] <= 0).any():
        raise ValueError(f"{what} must be positive at every valid pixel, got a minimum of {s[ok].min()}")
    return s


def _level(level: float) -> float:
    if not 0 < level < 1:
        raise ValueError(f"interval level must be in (0, 1), got {level}")
    return float(level)


def ensemble_valid(members, y) -> np.ndarray:
    """True where ``y`` and every member are finite."""
    f = _members(members, y)
    return np.isfinite(np.asarray(y, dtype=np.float64)) & np.isfinite(f).all(axis=0)


def gaussian_valid(mu, sigma, y) -> np.ndarray:
    """True where ``y``, ``mu`` and ``sigma`` (broadcast to ``y``) are finite."""
    y = np.asarray(y, dtype=np.float64)
    mu = np.asarray(mu, dtype=np.float64)
    if mu.shape != y.shape:
        raise ValueError(f"mu must have the shape of y {y.shape}, got {mu.shape}")
    s = np.broadcast_to(np.asarray(sigma, dtype=np.float64), y.shape)
    return np.isfinite(y) & np.isfinite(mu) & np.isfinite(s)


# --------------------------------------------------------------------------- CRPS


def ensemble_crps(members, y, *, fair: bool = True) -> float:
    """Mean CRPS of an ensemble over the valid pixels (``scoringrules.crps_ensemble``).

    Parameters
    ----------
    members : array_like, shape (M, ...)
        Ensemble members; the member axis is the first.
    y : array_like, shape (...)
        Target.
    fair : bool
        True (default): the fair estimator ``mean|x_i - y| - sum_{i,j}|x_i - x_j| / (2 M (M - 1))``,
        an unbiased estimate of the CRPS of the distribution the members are drawn from, which
        needs M >= 2. It is computed by scoringrules' ``'pwm'`` estimator (probability weighted
        moments), algebraically equal to its ``'fair'`` one but O(M) rather than O(M**2) in memory.
        False: the CRPS of the members' empirical distribution (scoringrules' default ``'qd'``,
        equal to ``'nrg'``): ``mean|x_i - y| - sum_{i,j}|x_i - x_j| / (2 M**2)``, which is ``|x - y|``
        for one member and penalizes small ensembles.

    Returns
    -------
    float
        Mean CRPS, in the units of ``y``; ``nan`` if no pixel is valid (:func:`ensemble_valid`).
    """
    import scoringrules as sr  # lazy: ~0.6 s to import; only the uncertainty evaluation needs it

    f = _members(members, y)
    if fair and f.shape[0] < 2:
        raise ValueError(f"ensemble_crps: the fair estimator needs at least 2 members, got {f.shape[0]} "
                         "(fair=False scores a single member as |x - y|)")
    ok = ensemble_valid(f, y)
    obs, fct = np.asarray(y, dtype=np.float64)[ok], f[:, ok]
    if obs.size == 0:
        return float("nan")
    total = 0.0
    for start in range(0, obs.size, CRPS_CHUNK):
        chunk = np.ascontiguousarray(fct[:, start:start + CRPS_CHUNK].T)
        scores = sr.crps_ensemble(obs[start:start + CRPS_CHUNK], chunk, m_axis=-1,
                                  estimator="pwm" if fair else "qd", backend="numpy")
        total += float(np.sum(scores))
    return total / obs.size


def gaussian_crps(mu, sigma, y, lower: float | None = None) -> float:
    """Mean CRPS of ``N(mu, sigma**2)`` over the valid pixels (``scoringrules.crps_normal``, closed form).

    With ``lower``, of the normal censored at ``lower`` (``scoringrules.crps_cnormal``): the forecast's
    mass below ``lower`` sits at ``lower``, as when z < 0 is taken as 0.

    Parameters
    ----------
    mu : array_like
        Mean, the shape of ``y``.
    sigma : float or array_like
        Standard deviation (> 0 at the valid pixels), broadcast to ``y``.
    y : array_like
        Target.

    Returns
    -------
    float
        Mean CRPS; ``nan`` if no pixel is valid (:func:`gaussian_valid`).
    """
    import scoringrules as sr  # lazy: ~0.6 s to import; only the uncertainty evaluation needs it

    ok = gaussian_valid(mu, sigma, y)
    s = _sigma(sigma, ok.shape, ok)
    if not ok.any():
        return float("nan")
    obs, m = np.asarray(y, dtype=np.float64)[ok], np.asarray(mu, dtype=np.float64)[ok]
    if lower is not None:
        return float(np.mean(sr.crps_cnormal(obs, m, s[ok], float(lower), np.inf, backend="numpy")))
    return float(np.mean(sr.crps_normal(obs, m, s[ok], backend="numpy")))


def constant_sigma(pred_val, y_val) -> float:
    """Spread of the constant-spread baseline: the RMS residual of ``pred_val`` on the validation split.

    ``N(base, constant_sigma(base_val, y_val)**2)`` is then calibrated overall (spread-skill 1) on any
    split whose residuals are distributed as the validation split's.
    """
    sigma = M.rmse(pred_val, y_val)
    if not (math.isfinite(sigma) and sigma > 0):
        raise ValueError(f"constant_sigma: the validation residuals give no positive RMS (got {sigma}); "
                         "need valid pixels where the prediction and the target differ")
    return sigma


# --------------------------------------------------------------------------- spread scale (fitted on the validation split)

def gaussian_spread_scale(mu, sigma, y) -> float:
    """Factor ``s`` that minimises the Gaussian NLL of ``N(mu, (s sigma)**2)`` on ``y``: ``sqrt(mean(((y - mu) / sigma)**2))``.

    Fitted on the validation split, it corrects a heteroscedastic head trained on the training
    split, where the base model's residuals are smaller than on unseen patches.
    """
    ok = gaussian_valid(mu, sigma, y)
    if not ok.any():
        raise ValueError("gaussian_spread_scale: no valid pixel")
    s = _sigma(sigma, ok.shape, ok)
    r = (np.asarray(y, dtype=np.float64)[ok] - np.asarray(mu, dtype=np.float64)[ok]) / s[ok]
    return float(np.sqrt(np.mean(r**2)))


def ensemble_spread_scale(members, y) -> float:
    """Factor ``s`` such that :func:`scale_ensemble` ``(members, s)`` has spread-skill ratio 1 on ``y``: ``1 / spread_skill``."""
    ratio = spread_skill(members, y)
    if not (math.isfinite(ratio) and ratio > 0):
        raise ValueError(f"ensemble_spread_scale: the spread-skill ratio is {ratio}; need a positive spread and error")
    return 1.0 / ratio


def scale_ensemble(members, s: float) -> np.ndarray:
    """The members with their deviations from the ensemble mean multiplied by ``s`` (the mean is kept)."""
    f = _members(members)
    mean = f.mean(axis=0)
    return mean + float(s) * (f - mean)


# --------------------------------------------------------------------------- spread and coverage


def ensemble_spread(members) -> np.ndarray:
    """Per-pixel spread of an ensemble: ``sqrt((M + 1) / M) * std(members, axis=0, ddof=1)``.

    The standard deviation the ensemble predicts for the error of its mean (module docstring);
    needs M >= 2. NaN where a member is.
    """
    f = _members(members)
    m = f.shape[0]
    if m < 2:
        raise ValueError(f"ensemble_spread: a spread needs at least 2 members, got {m}")
    return np.sqrt((m + 1) / m) * np.std(f, axis=0, ddof=1)


def _ratio(spread: np.ndarray, sq_err: np.ndarray) -> float:
    if spread.size == 0:
        return float("nan")
    mse = float(np.mean(sq_err))
    rms = float(np.sqrt(np.mean(spread**2)))
    return rms / math.sqrt(mse) if mse > 0 else float("nan")


def spread_skill(members, y) -> float:
    """Spread-skill ratio of an ensemble: RMS :func:`ensemble_spread` / RMSE of the ensemble mean.

    Over the valid pixels (:func:`ensemble_valid`); ``nan`` if none or if the RMSE is 0.
    A calibrated ensemble of any size scores 1 in expectation.
    """
    f = _members(members, y)
    ok = ensemble_valid(f, y)
    y = np.asarray(y, dtype=np.float64)
    return _ratio(ensemble_spread(f[:, ok]), (f[:, ok].mean(axis=0) - y[ok]) ** 2)


def spread_skill_gaussian(mu, sigma, y) -> float:
    """Spread-skill ratio of ``N(mu, sigma**2)``: ``sqrt(mean(sigma**2)) / RMSE(mu)`` over the valid pixels.

    1 when ``sigma**2`` is on average the expected squared error of ``mu``.
    """
    ok = gaussian_valid(mu, sigma, y)
    s = _sigma(sigma, ok.shape, ok)
    y, mu = np.asarray(y, dtype=np.float64), np.asarray(mu, dtype=np.float64)
    return _ratio(s[ok], (mu[ok] - y[ok]) ** 2)


def pit_coverage(lo, hi, level: float) -> float:
    """Mean probability that a randomized PIT, uniform on ``[lo, hi]`` per pixel, lies in the central ``level`` interval.

    The central interval of the PIT is ``[(1 - level) / 2, (1 + level) / 2]``; where ``lo == hi``
    (no tie) the probability is 0 or 1. A calibrated forecast covers ``level`` in expectation,
    also where the target has a point mass (Czado, Gneiting & Held 2009, Biometrics 65, 1254).
    """
    level = _level(level)
    lo, hi = np.asarray(lo, dtype=np.float64), np.asarray(hi, dtype=np.float64)
    if lo.size == 0:
        return float("nan")
    a, b = (1 - level) / 2, (1 + level) / 2
    width = hi - lo
    inside = np.clip(np.minimum(hi, b) - np.maximum(lo, a), 0.0, None)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = np.where(width > 0, inside / np.where(width > 0, width, 1.0), ((lo >= a) & (lo <= b)).astype(float))
    return float(np.mean(p))


def ensemble_pit(members, y) -> tuple[np.ndarray, np.ndarray]:
    """Randomized rank PIT of ``y`` in the ensemble, as ``(lo, hi)`` per valid pixel.

    With ``r`` members below the target and ``t`` equal to it, the rank is uniform on ``r .. r + t``
    and the PIT on ``[r / (M + 1), (r + t + 1) / (M + 1)]``; for a calibrated ensemble it is uniform
    on [0, 1] whatever ``M``, ties (members clamped at 0 where the target is 0) included.
    """
    f = _members(members, y)
    ok = ensemble_valid(f, y)
    t = np.asarray(y, dtype=np.float64)[ok]
    g = f[:, ok]
    below = np.sum(g < t, axis=0)
    ties = np.sum(g == t, axis=0)
    m1 = f.shape[0] + 1
    return below / m1, (below + ties + 1) / m1


def gaussian_pit(mu, sigma, y, lower: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """PIT of ``y`` under ``N(mu, sigma**2)``, censored at ``lower`` if given, as ``(lo, hi)`` per valid pixel.

    Censored at ``lower`` (e.g. z >= 0: radiance is not negative) the forecast has a point mass
    ``Phi((lower - mu) / sigma)`` at ``lower``; a target there has a PIT uniform on ``[0, that mass]``.
    """
    ok = gaussian_valid(mu, sigma, y)
    s = _sigma(sigma, ok.shape, ok)[ok]
    t, m = np.asarray(y, dtype=np.float64)[ok], np.asarray(mu, dtype=np.float64)[ok]
    u = norm.cdf((t - m) / s)
    if lower is None:
        return u, u
    at = t <= lower
    return np.where(at, 0.0, u), np.where(at, norm.cdf((float(lower) - m) / s), u)


def interval_coverage(members, y, level: float, *, method: str = "pit") -> float:
    """Fraction of valid pixels whose target lies in the members' central ``level`` interval.

    ``method='pit'`` (default): the expected coverage of the randomized rank PIT
    (:func:`ensemble_pit`, :func:`pit_coverage`); a calibrated ensemble covers ``level`` in
    expectation for any ``M`` and with ties. Otherwise the interval runs from the ``(1 - level) / 2``
    to the ``(1 + level) / 2`` quantile of the members (:func:`numpy.quantile` with ``method``,
    bounds included): ``'weibull'`` puts quantile ``p`` at order statistic ``p (M + 1)``, so a
    calibrated ensemble without ties covers about ``level`` but at most ``(M - 1) / (M + 1)`` (the
    members' range: 0.78 for 8 members, 0.88 for 16), and a target tied with several members (a
    point mass) is always inside; numpy's default ``'linear'`` covers about ``level (M - 1) / (M + 1)``.
    """
    level = _level(level)
    f = _members(members, y)
    ok = ensemble_valid(f, y)
    if not ok.any():
        return float("nan")
    if method == "pit":
        return pit_coverage(*ensemble_pit(f, y), level)
    lo, hi = np.quantile(f[:, ok], [(1 - level) / 2, (1 + level) / 2], axis=0, method=method)
    t = np.asarray(y, dtype=np.float64)[ok]
    return float(np.mean((t >= lo) & (t <= hi)))


def gaussian_interval_coverage(mu, sigma, y, level: float, lower: float | None = None) -> float:
    """Expected coverage of the central ``level`` interval of ``N(mu, sigma**2)`` (censored at ``lower`` if given).

    Uncensored: the fraction of valid pixels with ``|y - mu| <= z sigma``, ``z = norm.ppf((1 + level) / 2)``.
    Censored: :func:`pit_coverage` of :func:`gaussian_pit` (a target at ``lower`` counts by the part
    of its PIT range inside the interval).
    """
    level = _level(level)
    ok = gaussian_valid(mu, sigma, y)
    if not ok.any():
        return float("nan")
    return pit_coverage(*gaussian_pit(mu, sigma, y, lower), level)


# --------------------------------------------------------------------------- reliability


@dataclass(frozen=True)
class ReliabilityBin:
    """One bin of a reliability curve: pixels with ``lo <= spread < hi`` (the last bin: ``<= hi``).

    ``lo`` and ``hi`` bound the binning value (the spread unless :func:`reliability_curve` got ``by``);
    ``spread_rms`` and ``rmse`` are the RMS spread and the RMSE of the bin's pixels.
    """

    lo: float
    hi: float
    spread_rms: float
    rmse: float
    count: int

    @property
    def ratio(self) -> float:
        """Spread-skill ratio of the bin."""
        return self.spread_rms / self.rmse if self.rmse > 0 else float("nan")


def reliability_curve(spread, sq_error, bins: int = RELIABILITY_BINS, *, by=None) -> tuple[ReliabilityBin, ...]:
    """Spread against skill, pixels binned by spread quantile (deciles by default).

    Parameters
    ----------
    spread : array_like
        Predicted spread per pixel (:func:`ensemble_spread`, or a Gaussian's ``sigma``).
    sq_error : array_like
        Squared error of the point forecast per pixel, the shape of ``spread``.
    bins : int
        Number of quantile bins wanted.
    by : array_like, optional
        Value the pixels are binned by (default: ``spread``), e.g. a spread estimated independently of
        the one scored. Binning an ensemble by its own spread selects on the spread's sampling noise:
        a calibrated ensemble of 8 members shows ``rmse > spread_rms`` in the low bins and ``<`` in the
        top bin (ratios ~0.75 to ~1.25); the bias fades as ``1/sqrt(M)``.

    Returns
    -------
    tuple of ReliabilityBin
        Over the pixels where all are finite, ordered by ``by`` (without ``by``: ``spread_rms`` strictly
        increasing; ``lo``/``hi`` are edges of ``by``). Bin edges are the ``k / bins`` quantiles of ``by``
        taken as data values (``'inverted_cdf'``), duplicates dropped, so ties and a constant ``by`` give
        fewer bins (one for a constant), never an empty one. Calibrated means ``rmse ≈ spread_rms`` in
        every bin. Empty if no pixel is valid.
    """
    if int(bins) < 1:
        raise ValueError(f"reliability_curve: bins must be >= 1, got {bins}")
    s, e = np.asarray(spread, dtype=np.float64), np.asarray(sq_error, dtype=np.float64)
    if s.shape != e.shape:
        raise ValueError(f"reliability_curve: spread and sq_error must have the same shape, got {s.shape} and {e.shape}")
    b = s if by is None else np.asarray(by, dtype=np.float64)
    if b.shape != s.shape:
        raise ValueError(f"reliability_curve: by must have the shape of spread {s.shape}, got {b.shape}")
    ok = np.isfinite(s) & np.isfinite(e) & np.isfinite(b)
    s, e, b = s[ok], e[ok], b[ok]
    if s.size == 0:
        return ()
    if (e < 0).any():
        raise ValueError(f"reliability_curve: sq_error must be >= 0 (squared errors), got a minimum of {e.min()}")
    edges = np.unique(np.quantile(b, np.linspace(0, 1, int(bins) + 1), method="inverted_cdf"))
    idx = np.clip(np.searchsorted(edges, b, side="right") - 1, 0, max(edges.size - 2, 0))
    out = []
    for k in range(max(edges.size - 1, 1)):
        sel = idx == k
        n = int(sel.sum())
        if n == 0:
            continue
        out.append(ReliabilityBin(float(edges[k]), float(edges[min(k + 1, edges.size - 1)]),
                                  float(np.sqrt(np.mean(s[sel] ** 2))), float(np.sqrt(np.mean(e[sel]))), n))
    return tuple(out)


# --------------------------------------------------------------------------- summary


def _round(x: Any, digits: int = SIGNIFICANT_DIGITS) -> Any:
    """Floats (also inside dicts and lists) to ``digits`` significant digits; NaN/inf to None."""
    if isinstance(x, dict):
        return {k: _round(v, digits) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_round(v, digits) for v in x]
    if isinstance(x, (float, np.floating)):
        v = float(x)
        if not math.isfinite(v):
            return None
        return float(f"{v:.{digits}g}")
    return json_safe(x)


def _gaussian_block(mu: np.ndarray, sigma: np.ndarray, y: np.ndarray, data_range: float,
                    lower: float | None) -> dict[str, Any]:
    point = mu if lower is None else np.maximum(mu, lower)  # the censored normal's median
    sq = (point - y) ** 2
    return {
        "psnr_log_db": M.psnr(point, y, data_range),
        "rmse_log": M.rmse(point, y),
        "crps": gaussian_crps(mu, sigma, y, lower),
        "spread_rms": float(np.sqrt(np.mean(sigma**2))),
        "spread_skill": _ratio(sigma, sq),
        "coverage": {f"{round(100 * lv)}": gaussian_interval_coverage(mu, sigma, y, lv, lower)
                     for lv in COVERAGE_LEVELS},
        "reliability": [dict(asdict(b), ratio=b.ratio) for b in reliability_curve(sigma, sq)],
    }


def _block(y: np.ndarray, base: np.ndarray, members: np.ndarray | None, gaussians: Mapping[str, tuple],
           data_range: float, member_counts: Sequence[int], lower: float | None = None,
           member_sets: Mapping[int, np.ndarray] | None = None) -> dict[str, Any]:
    """All numbers over the pixels given (1-D arrays, all valid)."""
    out: dict[str, Any] = {"n_pixels": int(y.size)}
    base_psnr = M.psnr(base, y, data_range)
    out["base"] = {"psnr_log_db": base_psnr, "rmse_log": M.rmse(base, y)}
    if members is not None:
        n_m = members.shape[0]
        mean = members.mean(axis=0)
        ens: dict[str, Any] = {"members": n_m, "psnr_log_db": M.psnr(mean, y, data_range),
                               "rmse_log": M.rmse(mean, y)}
        ens["psnr_log_gain_db"] = ens["psnr_log_db"] - base_psnr
        ens["by_members"] = {}
        for m in member_counts:
            if m > n_m:
                continue
            sub_ens = member_sets[m] if member_sets and m in member_sets else members[:m]
            p = M.psnr(sub_ens.mean(axis=0), y, data_range)
            ens["by_members"][str(m)] = {"psnr_log_db": p, "psnr_log_gain_db": p - base_psnr,
                                         "crps": ensemble_crps(sub_ens, y) if m >= 2 else None}
        if n_m >= 2:
            spread = ensemble_spread(members)
            sq = (mean - y) ** 2
            ens.update({
                "crps": ensemble_crps(members, y),
                "spread_rms": float(np.sqrt(np.mean(spread**2))),
                "spread_mean_std": float(np.mean(np.std(members, axis=0, ddof=1))),
                "spread_skill": _ratio(spread, sq),
                "coverage": {f"{round(100 * lv)}": interval_coverage(members, y, lv) for lv in COVERAGE_LEVELS},
                "reliability": [dict(asdict(b), ratio=b.ratio) for b in reliability_curve(spread, sq)],
            })
        out["ensemble"] = ens
    for name, (mu, sigma) in gaussians.items():
        out[name] = _gaussian_block(mu, sigma, y, data_range, lower)
    if members is not None and members.shape[0] >= 2 and gaussians:
        ens_crps = out["ensemble"]["crps"]
        out["ensemble"]["crps_skill"] = {
            name: (1.0 - ens_crps / out[name]["crps"]) if out[name]["crps"] else None for name in gaussians}
    return out


def uncertainty_summary(y, base, *, data_range: float, members=None, sigma_hetero=None, mu_hetero=None,
                        sigma_const: float | None = None, classes=None,
                        member_counts: Sequence[int] = MEMBER_COUNTS, lower: float | None = None,
                        member_sets: Mapping[int, Any] | None = None) -> dict[str, Any]:
    """Every uncertainty number of one evaluation (a split against one target), as a JSON-ready dict.

    Parameters
    ----------
    y : array_like
        Target in log-radiance space (NaN: invalid).
    base : array_like
        Base model's prediction, the shape of ``y``.
    data_range : float
        PSNR(log) data range (:func:`pandafine.training.evaluate.data_ranges`' first value).
    members : array_like, shape (M, *y.shape), optional
        Ensemble members. The ensemble mean of the first ``m`` members is scored for each
        ``m`` of ``member_counts`` up to ``M``; CRPS, spread and coverage use all ``M`` (needs M >= 2).
    sigma_hetero : array_like, optional
        Per-pixel standard deviation of the heteroscedastic head (``exp(logvar / 2)``).
    mu_hetero : array_like, optional
        Mean of the heteroscedastic head; ``base`` if not given.
    sigma_const : float, optional
        Spread of the constant-spread baseline ``N(base, sigma_const**2)`` (:func:`constant_sigma`
        on the validation split).
    classes : array_like of int, optional
        :func:`panda_classes` of every pixel; adds the numbers per class.
    member_counts : sequence of int
        Ensemble sizes whose mean PSNR(log) is reported.
    lower : float, optional
        The Gaussians are censored here (CRPS and coverage; e.g. 0 for z, which is never negative):
        their mass below ``lower`` is a point mass at ``lower``, as ensemble members clamped there are.
        ``base`` and ``mu_hetero`` are then the uncensored locations, and the point forecasts
        (PSNR, RMSE, spread-skill) are ``max(base, lower)`` and ``max(mu_hetero, lower)``.
    member_sets : mapping, optional
        ``{m: (m, *y.shape) array}``: the ensemble of ``m`` members scored in ``by_members``, where
        building a smaller ensemble is not taking the first ``m`` members (e.g. members recentred
        on their own mean); default ``members[:m]``.

    Returns
    -------
    dict
        ``methods`` (those scored, of ``base``, ``ensemble``, ``gaussian_constant``,
        ``gaussian_hetero``), ``n_pixels`` and ``data_range``, ``overall`` (a block) and, with
        ``classes``, ``classes``: ``{name: block or None}`` (None for a class without pixels). A
        block has ``n_pixels``, ``base`` {``psnr_log_db``, ``rmse_log``} and per method scored:
        ``ensemble`` {``members``, ``psnr_log_db``, ``psnr_log_gain_db``, ``rmse_log``,
        ``by_members`` {``"4"``: {``psnr_log_db``, ``psnr_log_gain_db``, ``crps``}, ...}, ``crps``,
        ``spread_rms``, ``spread_mean_std``, ``spread_skill``, ``coverage`` {``"50"``, ``"90"``},
        ``reliability`` [{``lo``, ``hi``, ``spread_rms``, ``rmse``, ``count``, ``ratio``}, ...],
        ``crps_skill`` {baseline: ``1 - CRPS_ens / CRPS_baseline``}} and ``gaussian_constant`` /
        ``gaussian_hetero`` {``psnr_log_db``, ``rmse_log``, ``crps``, ``spread_rms``,
        ``spread_skill``, ``coverage``, ``reliability``}. Every number is over the same pixels:
        those where ``y``, ``base``, every member and the heteroscedastic mean and spread are
        finite. Floats have :data:`SIGNIFICANT_DIGITS` significant digits; undefined ones are None.
    """
    y = np.asarray(y, dtype=np.float64)
    base = np.asarray(base, dtype=np.float64)
    if base.shape != y.shape:
        raise ValueError(f"base must have the shape of y {y.shape}, got {base.shape}")
    ok = np.isfinite(y) & np.isfinite(base)
    methods = ["base"]
    f = None
    if members is not None:
        f = _members(members, y)
        ok &= np.isfinite(f).all(axis=0)
        methods.append("ensemble")
    gauss_in: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    if sigma_const is not None:
        if not (math.isfinite(float(sigma_const)) and float(sigma_const) > 0):
            raise ValueError(f"sigma_const must be a positive finite number, got {sigma_const}")
        gauss_in["gaussian_constant"] = (base, np.full(y.shape, float(sigma_const)))
        methods.append("gaussian_constant")
    if sigma_hetero is not None:
        mu_h = base if mu_hetero is None else np.asarray(mu_hetero, dtype=np.float64)
        s_h = np.asarray(sigma_hetero, dtype=np.float64)
        if mu_h.shape != y.shape or s_h.shape != y.shape:
            raise ValueError(f"mu_hetero and sigma_hetero must have the shape of y {y.shape}, "
                             f"got {mu_h.shape} and {s_h.shape}")
        ok &= np.isfinite(mu_h) & np.isfinite(s_h)
        _sigma(s_h, y.shape, ok, "sigma_hetero")
        gauss_in["gaussian_hetero"] = (mu_h, s_h)
        methods.append("gaussian_hetero")
    elif mu_hetero is not None:
        raise ValueError("mu_hetero given without sigma_hetero")
    if not (math.isfinite(float(data_range)) and float(data_range) > 0):
        raise ValueError(f"uncertainty_summary: data_range must be a positive finite number, got {data_range}")

    point = base if lower is None else np.maximum(base, float(lower))

    sets = {int(m): _members(v, y) for m, v in (member_sets or {}).items()}

    def block(sel: np.ndarray) -> dict[str, Any]:
        return _block(y[sel], point[sel], None if f is None else f[:, sel],
                      {k: (mu[sel], s[sel]) for k, (mu, s) in gauss_in.items()}, float(data_range), member_counts,
                      lower, {m: v[:, sel] for m, v in sets.items()})

    out: dict[str, Any] = {"methods": methods, "n_pixels": int(ok.sum()), "data_range": float(data_range),
                           "overall": block(ok) if ok.any() else None}
    if classes is not None:
        c = np.asarray(classes)
        if c.shape != y.shape:
            raise ValueError(f"classes must have the shape of y {y.shape}, got {c.shape}")
        if not np.isin(c, (-1, 0, 1, 2)).all():
            raise ValueError(f"classes must be codes of panda_classes (-1, 0, 1, 2), got {sorted(np.unique(c))}")
        out["classes"] = {}
        for code, name in enumerate(CLASS_NAMES):
            sel = ok & (c == code)
            out["classes"][name] = block(sel) if sel.any() else None
    return _round(out)


def write_uncertainty(out_dir, sections: Mapping[str, Any]) -> Path:
    """Write ``sections`` (e.g. ``{"test": {"luojia": summary, ...}, "held_out": {...}}``) to ``out_dir/uncertainty.json``."""
    path = Path(out_dir) / UNCERTAINTY_NAME
    write_text_atomic(path, json.dumps(json_safe(dict(sections)), indent=2) + "\n")
    return path
