"""Uncertainty metrics: known answers (closed-form CRPS) and invariants on seeded synthetic forecasts.

Calibrated data: per pixel a mean ``mu`` and a spread ``s`` (heteroscedastic: ``s`` varies 10x over the
pixels); the target and the members are independent draws of ``N(mu, s**2)``. Tolerances are a few
standard errors of the estimates at the sample sizes used (stated where they are set).
"""

import itertools
import json
import math

import numpy as np
import pytest
from scipy.stats import norm

from pandafine.studies import uncertainty as U

N_PIX = 20_000  # calibrated cases: spread-skill s.e. ~ 1/sqrt(2 N) = 0.5 %, coverage s.e. <= 0.4 %


def _scene(n=N_PIX, seed=0):
    rng = np.random.default_rng(seed)
    mu = rng.uniform(0.0, 5.0, n)
    s = rng.uniform(0.05, 0.5, n)
    y = mu + s * rng.standard_normal(n)
    return rng, mu, s, y


def _members(rng, mu, s, m, scale=1.0):
    return mu + scale * s * rng.standard_normal((m, mu.size))


# --------------------------------------------------------------------------- classes


def test_panda_classes_by_dn():
    dn = np.array([[0, 1, 62, 62.5], [63, 70, np.nan, 0]])
    assert U.panda_classes(dn).tolist() == [[0, 1, 1, 1], [2, 2, -1, 0]]
    assert U.CLASS_NAMES[2] == "saturated"
    with pytest.raises(ValueError, match="DN must be >= 0.*-1"):
        U.panda_classes(np.array([-1.0, 3.0]))


# --------------------------------------------------------------------------- CRPS known answers


def test_gaussian_crps_closed_form():
    # CRPS(N(0, 1), 0) = 2 phi(0) - 1/sqrt(pi) = (sqrt 2 - 1)/sqrt(pi); it scales with sigma
    at_mean = (math.sqrt(2) - 1) / math.sqrt(math.pi)
    assert 2 * norm.pdf(0) - 1 / math.sqrt(math.pi) == pytest.approx(at_mean, rel=1e-12)
    for sigma in (0.1, 1.0, 3.0):
        assert U.gaussian_crps(np.full(5, 2.0), sigma, np.full(5, 2.0)) == pytest.approx(sigma * at_mean, rel=1e-12)
    w = 0.7  # off the mean: sigma [w (2 Phi(w) - 1) + 2 phi(w) - 1/sqrt(pi)]
    expected = 2.0 * (w * (2 * norm.cdf(w) - 1) + 2 * norm.pdf(w) - 1 / math.sqrt(math.pi))
    assert U.gaussian_crps(np.array([1.0]), 2.0, np.array([1.0 + 2.0 * w])) == pytest.approx(expected, rel=1e-12)


def test_ensemble_crps_small_ensembles():
    y = np.array([0.0, 1.0, -2.0])
    one = np.array([[1.5, 1.0, 0.5]])
    assert U.ensemble_crps(one, y, fair=False) == pytest.approx(np.mean(np.abs(one[0] - y)), rel=1e-12)
    with pytest.raises(ValueError, match="at least 2 members, got 1"):
        U.ensemble_crps(one, y)
    # two members a, b: mean|x - y| - sum_ij|x_i - x_j| / (2 M (M - 1)) = ... - |a - b| / 2 (fair),
    # or ... - sum_ij|x_i - x_j| / (2 M**2) = ... - |a - b| / 4 (empirical)
    two = np.array([[1.0, 3.0, -2.0], [-1.0, 0.0, -2.0]])
    e1 = np.mean(np.abs(two - y), axis=0)
    d = np.abs(two[0] - two[1])
    assert U.ensemble_crps(two, y) == pytest.approx(np.mean(e1 - d / 2), rel=1e-12)
    assert U.ensemble_crps(two, y, fair=False) == pytest.approx(np.mean(e1 - d / 4), rel=1e-12)


def test_ensemble_crps_approaches_the_gaussian_crps():
    rng, mu, s, y = _scene(n=5000, seed=1)
    f = _members(rng, mu, s, 64)
    g = U.gaussian_crps(mu, s, y)
    # fair: unbiased for the Gaussian's CRPS (pixel-to-pixel noise ~0.5 %); empirical: larger by ~E|X-X'|/(2M)
    assert U.ensemble_crps(f, y) == pytest.approx(g, rel=0.02)
    emp = U.ensemble_crps(f, y, fair=False)
    assert emp - g == pytest.approx(np.mean(s) / math.sqrt(math.pi) / 64, rel=0.25)


def test_the_sharp_correct_forecast_scores_best():
    rng, mu, s, y = _scene(n=5000, seed=2)
    right = U.gaussian_crps(mu, s, y)
    assert right < U.gaussian_crps(mu, 2 * s, y) and right < U.gaussian_crps(mu, 0.5 * s, y)
    assert right < U.gaussian_crps(mu + s, s, y)
    ens = {k: U.ensemble_crps(_members(rng, mu, s, 32, scale=k), y) for k in (0.5, 1.0, 2.0)}
    assert ens[1.0] < ens[0.5] and ens[1.0] < ens[2.0]


# --------------------------------------------------------------------------- spread and coverage


def test_a_calibrated_ensemble_and_gaussian_score_nominal():
    rng, mu, s, y = _scene(seed=3)
    f = _members(rng, mu, s, 64)
    assert U.spread_skill(f, y) == pytest.approx(1.0, abs=0.03)
    assert U.spread_skill_gaussian(mu, s, y) == pytest.approx(1.0, abs=0.03)
    for level in (0.5, 0.9):
        tol = 4 * math.sqrt(level * (1 - level) / N_PIX) + 0.005  # 4 s.e. + the interpolation's small bias
        assert U.interval_coverage(f, y, level) == pytest.approx(level, abs=tol)
        assert U.gaussian_interval_coverage(mu, s, y, level) == pytest.approx(level, abs=tol)
        # numpy's default plotting positions under-cover by (M - 1) / (M + 1)
        linear = U.interval_coverage(f, y, level, method="linear")
        assert linear == pytest.approx(level * 63 / 65, abs=tol)


def test_a_small_calibrated_ensemble_needs_the_finite_size_factor():
    rng, mu, s, y = _scene(seed=4)
    f = _members(rng, mu, s, 4)
    assert U.spread_skill(f, y) == pytest.approx(1.0, abs=0.03)
    plain = np.sqrt(np.mean(np.var(f, axis=0, ddof=1))) / np.sqrt(np.mean((f.mean(axis=0) - y) ** 2))
    assert plain == pytest.approx(math.sqrt(4 / 5), abs=0.03)
    # the randomized rank PIT (default): nominal coverage with 4 members, at both levels
    tol = 4 * math.sqrt(0.25 / N_PIX) + 0.002
    assert U.interval_coverage(f, y, 0.5) == pytest.approx(0.5, abs=tol)
    assert U.interval_coverage(f, y, 0.9) == pytest.approx(0.9, abs=tol)
    # quantiles of the members: the central 50 % interval runs from order statistic 1.25 to 3.75 of 5 ranks
    # with Weibull positions: ~0.5 (0.52: interpolating between order statistics is not exact); numpy's
    # 'linear' gives 0.5 * 3/5; the 90 % interval cannot reach past the members' range: (M - 1) / (M + 1)
    assert U.interval_coverage(f, y, 0.5, method="weibull") == pytest.approx(0.5, abs=0.04)
    assert U.interval_coverage(f, y, 0.5, method="linear") == pytest.approx(0.3, abs=0.04)
    assert U.interval_coverage(f, y, 0.9, method="weibull") == pytest.approx(3 / 5, abs=0.02)


def test_coverage_with_a_point_mass_at_zero():
    """Zero-inflated target (radiance 0 where unlit): the target is 0 with probability 0.6, else |N(0, 1)|;
    members drawn from the same distribution tie with the target at 0. The randomized PIT covers the nominal
    level; member quantiles count every tied pixel as inside. A Gaussian censored at 0 likewise."""
    rng = np.random.default_rng(11)
    n, m = N_PIX, 8

    def draw(*shape):
        return np.where(rng.random(shape) < 0.6, 0.0, np.abs(rng.standard_normal(shape)))

    y, f = draw(n), draw(m, n)
    tol = 4 * math.sqrt(0.25 / n) + 0.002
    for level in (0.5, 0.9):
        assert U.interval_coverage(f, y, level) == pytest.approx(level, abs=tol)
    assert U.interval_coverage(f, y, 0.5, method="weibull") > 0.7  # tied pixels are always inside (0.74)
    # N(0, 1) censored at 0: mass 0.5 at 0; a target at 0 is inside by the part of [0, 0.5] in the interval
    y0 = np.zeros(4)
    assert U.gaussian_interval_coverage(np.zeros(4), np.ones(4), y0, 0.5, lower=0.0) == pytest.approx(0.5)
    assert U.gaussian_interval_coverage(np.zeros(4), np.ones(4), y0, 0.9, lower=0.0) == pytest.approx(0.9)
    assert U.gaussian_interval_coverage(np.zeros(4), np.ones(4), y0, 0.5) == 1.0  # uncensored: |0 - 0| <= z


@pytest.mark.parametrize("scale, ratio", [(0.5, 0.5), (2.0, 2.0)])
def test_over_and_underconfident_ensembles(scale, ratio):
    rng, mu, s, y = _scene(seed=5)
    f = _members(rng, mu, s, 64, scale=scale)
    assert U.spread_skill(f, y) == pytest.approx(ratio, rel=0.04)
    for level in (0.5, 0.9):
        cov = U.interval_coverage(f, y, level)
        g = U.gaussian_interval_coverage(mu, scale * s, y, level)
        expected = 2 * norm.cdf(scale * norm.ppf((1 + level) / 2)) - 1  # |z| <= scale * z_level
        assert g == pytest.approx(expected, abs=0.015)
        assert (cov < level - 0.1) if scale < 1 else (cov > level + 0.05)


def test_spread_scales_fitted_on_one_half_calibrate_the_other():
    """An ensemble and a Gaussian that are 2x overconfident: the scale fitted on one half is 2 (the true
    factor) and calibrates the other half; scaling keeps the ensemble mean."""
    rng, mu, s, y = _scene(seed=6)
    f = _members(rng, mu, s, 16, scale=0.5)
    fit, rest = slice(0, N_PIX // 2), slice(N_PIX // 2, None)
    s_e = U.ensemble_spread_scale(f[:, fit], y[fit])
    s_g = U.gaussian_spread_scale(mu[fit], 0.5 * s[fit], y[fit])
    assert s_e == pytest.approx(2.0, rel=0.05) and s_g == pytest.approx(2.0, rel=0.03)
    g = U.scale_ensemble(f[:, rest], s_e)
    np.testing.assert_allclose(g.mean(axis=0), f[:, rest].mean(axis=0), atol=1e-12)
    assert U.spread_skill(g, y[rest]) == pytest.approx(1.0, rel=0.05)
    assert U.spread_skill_gaussian(mu[rest], s_g * 0.5 * s[rest], y[rest]) == pytest.approx(1.0, rel=0.03)
    with pytest.raises(ValueError, match="spread-skill ratio is 0"):
        U.ensemble_spread_scale(np.full((3, 10), 2.0), np.zeros(10))


def test_constant_sigma_is_the_validation_rms_and_calibrates_homoscedastic_noise():
    rng = np.random.default_rng(6)
    base_val = rng.uniform(0, 4, (40, 50))
    y_val = base_val + 0.3 * rng.standard_normal(base_val.shape)
    y_val[0, :5] = np.nan
    ok = np.isfinite(y_val)
    sigma = U.constant_sigma(base_val, y_val)
    assert sigma == pytest.approx(np.sqrt(np.mean((base_val[ok] - y_val[ok]) ** 2)), rel=1e-12)
    assert sigma == pytest.approx(0.3, rel=0.05)
    base = rng.uniform(0, 4, N_PIX)
    y = base + 0.3 * rng.standard_normal(N_PIX)
    assert U.spread_skill_gaussian(base, sigma, y) == pytest.approx(1.0, abs=0.06)  # sigma from 2000 px: s.e. 1.6 %
    assert U.gaussian_interval_coverage(base, sigma, y, 0.9) == pytest.approx(0.9, abs=0.02)
    with pytest.raises(ValueError, match="no positive RMS"):
        U.constant_sigma(base_val, base_val)


def test_nan_pixels_are_left_out():
    rng, mu, s, y = _scene(n=3000, seed=7)
    f = _members(rng, mu, s, 16)
    junk = 500
    y2 = np.concatenate([y, np.where(np.arange(junk) % 2, np.nan, 99.0)])
    mu2 = np.concatenate([mu, np.zeros(junk)])
    s2 = np.concatenate([s, np.where(np.arange(junk) % 2, 1.0, np.nan)])
    f2 = np.concatenate([f, np.full((16, junk), 7.0)], axis=1)
    f2[3, 3000::2] = np.nan  # a NaN in one member invalidates the pixel (y = 99 there)
    for fn, a, b in [(U.ensemble_crps, (f, y), (f2, y2)), (U.spread_skill, (f, y), (f2, y2)),
                     (U.gaussian_crps, (mu, s, y), (mu2, s2, y2)),
                     (U.spread_skill_gaussian, (mu, s, y), (mu2, s2, y2))]:
        assert fn(*b) == pytest.approx(fn(*a), rel=1e-12), fn.__name__
    assert U.interval_coverage(f2, y2, 0.9) == U.interval_coverage(f, y, 0.9)
    assert U.gaussian_interval_coverage(mu2, s2, y2, 0.5) == U.gaussian_interval_coverage(mu, s, y, 0.5)
    kw = {"data_range": 5.0, "sigma_const": 0.3}
    one = U.uncertainty_summary(y, mu, members=f, sigma_hetero=s, **kw)
    two = U.uncertainty_summary(y2, mu2, members=f2, sigma_hetero=s2, **kw)
    assert one == two and one["n_pixels"] == 3000


# --------------------------------------------------------------------------- reliability


def test_reliability_curve_bins():
    _, mu, s, y = _scene(seed=8)
    sq = (mu - y) ** 2
    spread = s.copy()
    spread[:10] = np.nan
    curve = U.reliability_curve(spread, sq)
    assert len(curve) == 10 and sum(b.count for b in curve) == N_PIX - 10
    assert all(a.spread_rms < b.spread_rms for a, b in itertools.pairwise(curve))
    assert all(b.lo <= b.spread_rms <= b.hi for b in curve)
    for b in curve:  # calibrated Gaussian, ~2000 px per bin: RMSE s.e. ~ 1.6 %
        assert b.rmse == pytest.approx(b.spread_rms, rel=0.06) and b.ratio == pytest.approx(1.0, abs=0.06)
    assert U.reliability_curve(2 * s, sq)[4].ratio == pytest.approx(2.0, rel=0.06)


def test_reliability_of_a_small_ensemble_binned_by_its_own_spread():
    rng, mu, s, y = _scene(seed=10)
    f = _members(rng, mu, s, 8)
    spread, sq = U.ensemble_spread(f), (f.mean(axis=0) - y) ** 2
    assert U.spread_skill(f, y) == pytest.approx(1.0, abs=0.03)  # calibrated overall ...
    own = U.reliability_curve(spread, sq)
    assert own[0].ratio < 0.85 and own[-1].ratio > 1.1           # ... but its own spread's noise sorts the bins
    indep = U.reliability_curve(spread, sq, by=s)                # binned by a value independent of the noise
    assert all(b.ratio == pytest.approx(1.0, abs=0.1) for b in indep)
    # ties and a constant spread give fewer bins, never an empty one
    tied = np.repeat([0.1, 0.2, 0.3], [700, 200, 100])  # deciles: 0.1 up to the 7th, 0.2 up to the 9th, 0.3
    curve = U.reliability_curve(tied, np.ones(1000))
    assert [(b.lo, b.hi, b.count) for b in curve] == [(0.1, 0.2, 700), (0.2, 0.3, 300)]  # a tie is never split
    const = U.reliability_curve(np.full(50, 0.3), np.full(50, 0.09))
    assert len(const) == 1 and const[0].count == 50 and const[0].ratio == pytest.approx(1.0)
    assert U.reliability_curve(np.full(3, np.nan), np.ones(3)) == ()


# --------------------------------------------------------------------------- summary


def _classed_scene(seed=9):
    """Unlit and saturated pixels only; only the saturated ones are noisy, and the ensemble is 2x too sharp there."""
    rng = np.random.default_rng(seed)
    shape = (60, 100)
    dn = np.where(np.arange(shape[1]) < 40, 0.0, 63.0) * np.ones(shape)
    dn[0, :3] = np.nan
    sat = dn == 63
    mu = np.where(sat, 6.0, 0.5) + rng.uniform(-0.2, 0.2, shape)
    s = np.where(sat, 0.4, 0.02)
    y = mu + s * rng.standard_normal(shape)
    members = mu + np.where(sat, 0.5, 1.0) * s * rng.standard_normal((8,) + shape)
    return dn, mu, s, y, members


def test_summary_per_class_and_json():
    dn, mu, s, y, members = _classed_scene()
    classes = U.panda_classes(dn)
    out = U.uncertainty_summary(y, mu, members=members, sigma_hetero=s, sigma_const=0.3, classes=classes,
                                data_range=8.0, member_counts=(4, 8, 16))
    assert json.loads(json.dumps(out)) == out
    assert out["methods"] == ["base", "ensemble", "gaussian_constant", "gaussian_hetero"]
    assert out["n_pixels"] == y.size
    ov = out["overall"]
    assert set(ov) == {"n_pixels", "base", "ensemble", "gaussian_constant", "gaussian_hetero"}
    ens = ov["ensemble"]
    assert set(ens["by_members"]) == {"4", "8"}  # 16 > M = 8: skipped
    assert ens["by_members"]["8"]["psnr_log_db"] == ens["psnr_log_db"]
    assert ens["psnr_log_gain_db"] == pytest.approx(ens["psnr_log_db"] - ov["base"]["psnr_log_db"], abs=1e-4)
    assert set(ens["coverage"]) == {"50", "90"} and set(ens["crps_skill"]) == {"gaussian_constant", "gaussian_hetero"}
    assert {"lo", "hi", "spread_rms", "rmse", "count", "ratio"} == set(ens["reliability"][0])
    assert ov["gaussian_hetero"]["crps"] < ov["gaussian_constant"]["crps"]  # the right spread per pixel wins
    # the base is the true mean here; the mean of 8 members adds noise of variance mean(var) / 8
    # (overall: every pixel, those without a PANDA class too)
    assert ens["psnr_log_db"] == pytest.approx(10 * np.log10(64 / np.mean((members.mean(axis=0) - y) ** 2)), abs=1e-3)
    assert ov["base"]["psnr_log_db"] == pytest.approx(10 * np.log10(64 / np.mean((mu - y) ** 2)), abs=1e-3)
    assert ens["psnr_log_db"] < ov["base"]["psnr_log_db"]

    cls = out["classes"]
    assert set(cls) == set(U.CLASS_NAMES) and cls["lit"] is None
    unlit, sat = cls["unlit"], cls["saturated"]
    assert unlit["n_pixels"] + sat["n_pixels"] == np.isfinite(dn).sum()
    assert unlit["ensemble"]["spread_skill"] == pytest.approx(1.0, abs=0.15)        # 2400 px, 8 members
    assert sat["ensemble"]["spread_skill"] == pytest.approx(0.5, abs=0.08)          # 2x too sharp
    assert sat["ensemble"]["coverage"]["90"] < 0.8 < unlit["ensemble"]["coverage"]["90"]
    assert sat["gaussian_hetero"]["spread_skill"] == pytest.approx(1.0, abs=0.1)
    # the constant spread (0.3) is too wide for the quiet unlit pixels and too sharp for the saturated ones
    assert unlit["gaussian_constant"]["spread_skill"] > 5 and sat["gaussian_constant"]["spread_skill"] < 1


def test_summary_with_missing_inputs(tmp_path):
    _, mu, _, y, members = _classed_scene()
    out = U.uncertainty_summary(y, mu, data_range=8.0)
    assert out["methods"] == ["base"] and set(out["overall"]) == {"n_pixels", "base"} and "classes" not in out
    one = U.uncertainty_summary(y, mu, members=members[:1], data_range=8.0)
    assert set(one["overall"]["ensemble"]) == {"members", "psnr_log_db", "rmse_log", "psnr_log_gain_db", "by_members"}
    assert one["overall"]["ensemble"]["by_members"] == {}
    empty = U.uncertainty_summary(np.full(4, np.nan), np.zeros(4), members=np.zeros((3, 4)), data_range=1.0)
    assert empty["overall"] is None and empty["n_pixels"] == 0
    path = U.write_uncertainty(tmp_path, {"test": {"luojia": out}})
    assert path.name == "uncertainty.json" and json.loads(path.read_text()) == {"test": {"luojia": out}}


def test_errors_name_the_value():
    y = np.zeros(5)
    with pytest.raises(ValueError, match=r"= \(M, 5\), got \(3, 4\)"):
        U.spread_skill(np.zeros((3, 4)), y)
    with pytest.raises(ValueError, match="sigma must be positive.*-1"):
        U.gaussian_crps(y, np.array([1, 1, -1, 1, 1.0]), y)
    with pytest.raises(ValueError, match="level must be in \\(0, 1\\), got 90"):
        U.interval_coverage(np.zeros((3, 5)), y, 90)
    with pytest.raises(ValueError, match="data_range must be a positive finite number, got 0"):
        U.uncertainty_summary(y, y, data_range=0)
    with pytest.raises(ValueError, match="classes must be codes.*7"):
        U.uncertainty_summary(y, y, data_range=1.0, classes=np.full(5, 7))
