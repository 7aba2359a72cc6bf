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
