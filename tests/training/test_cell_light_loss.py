"""The light term of the training loss: known answers."""

import numpy as np
import pytest
import torch

from pandafine.core.scaling import radiance_to_log
from pandafine.training.train import cell_light_loss


def _z(radiance):
    return radiance_to_log(torch.as_tensor(radiance, dtype=torch.float32))


def test_exact_prediction_costs_nothing_and_a_scaled_one_its_log_ratio():
    rng = np.random.default_rng(0)
    true = rng.uniform(0, 5e-5, (2, 1, 16, 16))
    t = torch.as_tensor(true, dtype=torch.float32)
    assert float(cell_light_loss(_z(t), t, 8)) == pytest.approx(0.0, abs=1e-5)
    cells = true.reshape(2, 1, 2, 8, 2, 8).mean(axis=(3, 5))
    expect = np.abs(radiance_to_log(0.8 * cells) - radiance_to_log(cells)).mean()
    assert float(cell_light_loss(_z(0.8 * t), t, 8)) == pytest.approx(expect, rel=1e-4)


def test_light_moved_inside_a_cell_is_free_and_across_cells_is_not():
    true = torch.zeros((1, 1, 16, 16))
    true[0, 0, 2, 2] = 4e-5
    inside = torch.zeros_like(true)
    inside[0, 0, 5, 6] = 4e-5     # same 8 x 8 cell
    across = torch.zeros_like(true)
    across[0, 0, 10, 2] = 4e-5    # the cell below
    assert float(cell_light_loss(_z(inside), true, 8)) == pytest.approx(0.0, abs=1e-5)
    moved = 2 * float(radiance_to_log(np.float64(4e-5 / 64))) / 4  # two of the four cells wrong
    assert float(cell_light_loss(_z(across), true, 8)) == pytest.approx(moved, rel=1e-4)


def test_a_median_prediction_loses_light_that_the_term_sees():
    """Per-pixel medians of a skewed cell (what the pixel L1 aims at) lose light; the cell term is > 0."""
    true = torch.full((1, 1, 8, 8), 1e-6)
    true[0, 0, 0, :4] = 1e-4        # a few bright pixels hold most of the cell's light
    median = torch.full_like(true, 1e-6)
    mean = (4 * 1e-4 + 60 * 1e-6) / 64  # 7.2 times the median
    expect = float(radiance_to_log(np.float64(mean)) - radiance_to_log(np.float64(1e-6)))
    assert float(cell_light_loss(_z(median), true, 8)) == pytest.approx(expect, rel=1e-4)
    assert expect > 0.4


def test_pixels_without_target_count_in_neither_and_no_target_costs_nothing():
    true = torch.full((1, 1, 8, 8), 1e-5)
    true[0, 0, :4] = float("nan")
    pred = torch.full((1, 1, 8, 8), 1e-5)
    pred[0, 0, :4] = 1.0  # huge where there is no target: ignored
    assert float(cell_light_loss(_z(pred), true, 8)) == pytest.approx(0.0, abs=1e-5)
    none = torch.full((1, 1, 8, 8), float("nan"))
    assert float(cell_light_loss(_z(torch.full_like(none, 1e-6)), none, 8)) == 0.0


def test_gradient_flows_and_stays_bounded():
    true = torch.full((1, 1, 8, 8), 2e-5)
    z = _z(torch.full((1, 1, 8, 8), 1e-5)).requires_grad_(True)
    cell_light_loss(z, true, 8).backward()
    assert (z.grad < 0).all()  # too dark: raising z lowers the loss
    z = torch.full((1, 1, 8, 8), 30.0, requires_grad=True)  # absurdly bright: exp(30)
    cell_light_loss(z, true, 8).backward()
    assert torch.isfinite(z.grad).all() and float(z.grad.abs().max()) <= 1.0
