"""The light term of the training loss: known answers."""

import numpy as np
import pytest
import torch

from pandafine.core.scaling import radiance_to_log
from pandafine.training.train import cell_light_loss


def _z(radiance):
    return radiance_to_log(torch.as_tensor(radiance, dtype=torch.float32))


def test_exact_prediction_costs_nothing_and_a_scaled_one_its_scale():
    rng = np.random.default_rng(0)
    true = torch.as_tensor(rng.uniform(0, 5e-5, (2, 1, 16, 16)), dtype=torch.float32)
    assert float(cell_light_loss(_z(true), true, 8)) == pytest.approx(0.0, abs=1e-5)
    assert float(cell_light_loss(_z(0.8 * true), true, 8)) == pytest.approx(0.2, rel=1e-3)  # 20 % light lost


def test_light_moved_inside_a_cell_is_free_and_across_cells_is_not():
    true = torch.zeros((1, 1, 16, 16))
    true[0, 0, 2, 2] = 4e-5
    inside = torch.zeros_like(true)
    inside[0, 0, 5, 6] = 4e-5     # same 8 x 8 cell
    across = torch.zeros_like(true)
    across[0, 0, 10, 2] = 4e-5    # the cell below
    assert float(cell_light_loss(_z(inside), true, 8)) == pytest.approx(0.0, abs=1e-4)
    assert float(cell_light_loss(_z(across), true, 8)) == pytest.approx(2.0, rel=1e-3)


def test_pixels_without_target_count_in_neither_and_no_light_costs_nothing():
    true = torch.full((1, 1, 8, 8), 1e-5)
    true[0, 0, :4] = float("nan")
    pred = torch.full((1, 1, 8, 8), 1e-5)
    pred[0, 0, :4] = 1.0  # huge where there is no target: ignored
    assert float(cell_light_loss(_z(pred), true, 8)) == pytest.approx(0.0, abs=1e-4)
    dark = torch.zeros((1, 1, 8, 8))
    assert float(cell_light_loss(_z(torch.full_like(dark, 1e-6)), dark, 8)) == 0.0


def test_gradient_flows_to_the_prediction():
    true = torch.full((1, 1, 8, 8), 2e-5)
    z = _z(torch.full((1, 1, 8, 8), 1e-5)).requires_grad_(True)
    cell_light_loss(z, true, 8).backward()
    assert (z.grad < 0).all()  # too dark: raising z lowers the loss
