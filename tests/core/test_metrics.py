"""Known answers of the numpy metrics."""

import numpy as np
import pytest

from pandafine.core import metrics as M


def test_psnr_known_mse():
    true = np.linspace(0, 1, 100).reshape(10, 10)
    assert M.psnr(true + 0.1, true, data_range=1.0) == pytest.approx(20.0)
    assert M.psnr(true + 0.1, true, data_range=10.0) == pytest.approx(40.0)
    assert M.psnr(true, true, 1.0) == np.inf
    with pytest.raises(ValueError, match="data_range"):
        M.psnr(true, true, 0.0)


def test_nan_pixels_are_ignored():
    true = np.array([1.0, 2.0, 3.0, 4.0])
    pred = np.array([1.0, np.nan, 3.0, 6.0])
    assert M.mae(pred, true) == pytest.approx(2 / 3)
    assert M.mae(pred, true, mask=np.array([True, True, True, False])) == 0.0
    assert np.isnan(M.mae(np.full(4, np.nan), true))
    with pytest.raises(ValueError, match="same shape"):
        M.mae(pred[:3], true)


def test_rmse_mae_r2():
    true = np.array([0.0, 2.0, 4.0])
    pred = true + np.array([1.0, -1.0, 3.0])
    assert M.mae(pred, true) == pytest.approx(5 / 3)
    assert M.rmse(pred, true) == pytest.approx(np.sqrt(11 / 3))
    assert M.r2(true, true) == 1.0
    assert M.r2(np.full(3, true.mean()), true) == pytest.approx(0.0)
    assert M.r2(pred, true) == pytest.approx(1 - 11 / 8)


def test_total_light_and_brightest_error():
    true = np.arange(1.0, 1001.0)
    assert M.total_light_error(1.1 * true, true) == pytest.approx(0.1)
    assert M.total_light_error(0.7 * true, true) == pytest.approx(0.3)
    assert M.total_light_ratio(0.7 * true, true) == pytest.approx(0.7)  # signed, unlike the error
    assert M.total_light_ratio(1.1 * true, true) == pytest.approx(1.1)
    pred = true.copy()
    pred[-10:] *= 0.5  # the brightest 1 % (991..1000) underestimated by half
    assert M.brightest_error(pred, true, q=0.99) == pytest.approx(-0.5)
    assert M.brightest_error(true * 1.2, true) == pytest.approx(0.2)


def test_ssim_identity_and_symmetry():
    rng = np.random.default_rng(0)
    x = rng.random((3, 32, 40))
    assert M.ssim(x, x, data_range=1.0) == pytest.approx(1.0)
    y = x + 0.2 * rng.standard_normal(x.shape)
    s = M.ssim(x, y, 1.0)
    assert 0 < s < 1
    assert M.ssim(y, x, 1.0) == pytest.approx(s)
    assert M.ssim(x + 0.05 * rng.standard_normal(x.shape), x, 1.0) > s


def test_ssim_of_constant_images():
    a, b, L = 0.3, 0.5, 1.0
    c1 = (0.01 * L) ** 2
    expected = (2 * a * b + c1) / (a * a + b * b + c1)  # variances 0: contrast-structure term is 1
    assert M.ssim(np.full((20, 20), a), np.full((20, 20), b), L) == pytest.approx(expected)


def test_ssim_window_must_be_whole_and_valid():
    x = np.random.default_rng(1).random((24, 24))
    smap = M.ssim_map(x, x, 1.0, win_size=7)
    assert np.isnan(smap[:3]).all() and np.isnan(smap[:, -3:]).all()  # windows crossing the border
    assert np.isfinite(smap[3:-3, 3:-3]).all()
    y = x.copy()
    y[12, 12] = np.nan
    smap = M.ssim_map(y, x, 1.0, win_size=7)
    assert np.isnan(smap[9:16, 9:16]).all() and np.isfinite(smap[3:8, 3:8]).all()
    assert M.ssim(y, x, 1.0, win_size=7) == pytest.approx(1.0)
    # leading axes are separate images: a stack averages like its members
    stack = np.stack([x, x[::-1]])
    noisy = stack + 0.1
    assert M.ssim(noisy, stack, 1.0) == pytest.approx(np.mean([M.ssim(noisy[i], stack[i], 1.0) for i in range(2)]))


# --------------------------------------------------------------------------- streamed versions


def _batches(n, sizes):
    """Index arrays splitting ``range(n)`` into consecutive batches of ``sizes`` (last one takes the rest)."""
    cuts = np.cumsum(sizes)
    return np.split(np.arange(n), cuts[cuts < n])


def test_error_sums_equal_whole_array_metrics():
    rng = np.random.default_rng(2)
    true = rng.lognormal(0, 1, 500)
    pred = true * rng.normal(1, 0.2, 500)
    pred[::37] = np.nan
    mask = rng.random(500) > 0.1
    ok = M.valid_mask(pred, true, mask)
    sums = M.ErrorSums(true_mean=float(true[ok].mean()))
    for part in _batches(500, [1, 3, 100, 7]):
        sums.add(pred[part], true[part], mask[part])
    assert sums.n == ok.sum()
    for name in ("mse", "rmse", "mae", "r2", "total_light_error", "total_light_ratio"):
        assert getattr(sums, name)() == pytest.approx(getattr(M, name)(pred, true, mask), rel=1e-13), name
    assert sums.psnr(3.0) == pytest.approx(M.psnr(pred, true, 3.0, mask), rel=1e-13)
    empty = M.ErrorSums(true_mean=0.0)
    assert np.isnan(empty.mse()) and np.isnan(empty.r2()) and np.isnan(empty.total_light_error())
    assert np.isnan(empty.total_light_ratio())
    with pytest.raises(ValueError, match="true_mean"):
        M.ErrorSums().r2()


def test_ssim_sum_count_adds_over_image_batches():
    rng = np.random.default_rng(3)
    x = rng.random((5, 20, 20))
    y = x + 0.1 * rng.standard_normal(x.shape)
    y[2, 5, 5] = np.nan
    parts = [M.ssim_sum_count(y[p], x[p], 1.0) for p in _batches(5, [2, 1])]
    total, count = map(sum, zip(*parts))
    assert total / count == pytest.approx(M.ssim(y, x, 1.0), rel=1e-14)
    assert M.ssim_sum_count(y[:, :5, :5], x[:, :5, :5], 1.0) == (0.0, 0)  # no whole window


@pytest.mark.parametrize("kind", ["lognormal", "signed", "ties", "mostly_zero", "narrow"])
def test_brightest_error_streamed_has_numpys_quantile(kind):
    rng = np.random.default_rng(len(kind))
    for n in (1, 2, 3, 101, 2500):
        true = {"lognormal": rng.lognormal(-12, 2, n), "signed": rng.normal(0, 1, n),
                "ties": rng.integers(-3, 4, n).astype(float),
                "mostly_zero": np.where(rng.random(n) < 0.995, 0.0, rng.random(n)),
                "narrow": rng.lognormal(0, 1e-3, n)}[kind]
        true = true.astype(np.float32).astype(np.float64)
        preds = {"a": true * rng.normal(1, 0.1, n), "b": true + rng.normal(0, 0.01, n)}
        for q in (0.0, 0.37, 0.5, 0.99, 0.999):
            b = M.BrightestError(q)
            for part in _batches(n, [1, 3, 400]):
                b.scan(true[part])
            scorer = b.scorer()
            for part in _batches(n, [7, 1]):  # other batches in the second pass
                scorer.add(true[part], {k: v[part] for k, v in preds.items()})
            assert scorer.quantile() == np.quantile(true, q)  # exact
            res = scorer.result()
            for name, pred in preds.items():
                expected = M.brightest_error(pred, true, q=q)
                if np.isnan(expected):
                    assert np.isnan(res[name])
                else:
                    assert res[name] == pytest.approx(expected, rel=1e-12, abs=1e-15)


def test_linear_quantile_follows_numpy():
    rng = np.random.default_rng(5)
    for n in (1, 2, 5, 99, 100, 101, 1001):
        x = np.sort(rng.normal(size=n))
        for q in (0.0, 0.01, 0.25, 0.5, 0.99, 0.999999):
            assert M.linear_quantile(n, q, lambda k: x[k]) == np.quantile(x, q)


def test_brightest_error_streamed_errors():
    with pytest.raises(ValueError, match="q must be"):
        M.BrightestError(1.0)
    b = M.BrightestError()
    with pytest.raises(ValueError, match="float32"):
        b.scan(np.array([0.1]))  # not a float32 number
    with pytest.raises(ValueError, match="finite"):
        b.scan(np.array([np.nan]))
    b.scan(np.arange(1.0, 11.0))
    scorer = b.scorer()
    scorer.add(np.arange(1.0, 10.0), {"a": np.arange(1.0, 10.0)})  # one pixel short
    with pytest.raises(ValueError, match="same pixels"):
        scorer.result()
    empty = M.BrightestError().scorer()
    empty.add(np.zeros(0), {"a": np.zeros(0)})
    assert np.isnan(empty.quantile()) and np.isnan(empty.result()["a"])
