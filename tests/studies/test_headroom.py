"""pandafine.headroom: known answers of the error decompositions."""

from __future__ import annotations

import numpy as np
import pytest

from pandafine.core.metrics import psnr
from pandafine.core.scaling import log_to_radiance
from pandafine.studies.headroom import band_swap_psnr, blurred_truth_psnr, offset_oracle_psnr, truth_patches


def smooth_scene(n=3, size=32, seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] / size
    return np.stack([3.0 + 0.5 * np.sin(2 * np.pi * (xx + rng.random())) + 0.5 * np.cos(2 * np.pi * yy) for _ in range(n)])


def test_band_swap_puts_a_constant_offset_in_the_low_band():
    t = smooth_scene()
    res = band_swap_psnr(t + 0.2, t, 4.0, sigma=2.0)
    assert res["true_low"] == float("inf") or res["true_low"] > 200  # the error was all coarse
    assert res["true_high"] == pytest.approx(20 * np.log10(4.0 / 0.2))


def test_band_swap_puts_a_checkerboard_in_the_high_band():
    t = smooth_scene()
    checker = 0.2 * (np.indices(t.shape[1:]).sum(0) % 2 * 2 - 1)
    res = band_swap_psnr(t + checker, t, 4.0, sigma=2.0)
    assert res["true_low"] == pytest.approx(20 * np.log10(4.0 / 0.2), abs=0.5)  # fine error stays
    assert res["true_high"] > res["true_low"] + 30  # ...and goes with the target's high band


def test_offset_oracle_removes_a_blockwise_brightness_error():
    t = smooth_scene()
    p = t.copy()
    p[:, :8, :8] -= 0.5  # one 8x8 block too dark
    assert psnr(p, t, 4.0) == pytest.approx(20 * np.log10(4.0 / (0.5 / 4)))  # 1/16 of pixels off by 0.5
    assert offset_oracle_psnr(p, t, 4.0, block=8) == float("inf")
    # in a 32 px block the dark pixels are 1/16: the median error is 0, nothing moves
    assert offset_oracle_psnr(p, t, 4.0, block=32) == pytest.approx(psnr(p, t, 4.0))


def test_blurred_truth_of_the_target_itself_is_perfect_unblurred():
    z = smooth_scene(n=2, size=16)
    truth = {2018: log_to_radiance(np.pad(z[0], 4)), 2019: log_to_radiance(np.pad(z[1], 4))}
    res = blurred_truth_psnr(truth, [2018, 2019], [4, 4], [4, 4], 16, z, 4.0, sigmas=(0.0, 1.0))
    assert res[0.0] > 100 and res[1.0] < res[0.0]
    with pytest.raises(ValueError, match="leaves the raster"):
        truth_patches(truth, [2018], [10], [10], 16)
