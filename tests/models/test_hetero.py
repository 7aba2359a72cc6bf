"""The heteroscedastic head: starts at the base, its NLL is the Gaussian one, and it learns a known spread."""

import math

import pytest
import torch
from torch import nn

from pandafine.core.scaling import log_to_radiance
from pandafine.models.hetero import HeteroscedasticHead


class ConstantBase(nn.Module):
    """A frozen 'base model' predicting z = 0.5 everywhere."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        return x[:, :1] * 0 + 0.5 + 0 * self.w


def test_starts_at_the_base_with_the_initial_variance():
    head = HeteroscedasticHead(2, width=4, depth=2, base=ConstantBase(), log_var_init=-4.0)
    mu, log_var = head.predict(torch.randn(3, 2, 16, 16))
    assert torch.all(mu == 0.5) and torch.all(log_var == -4.0)
    assert torch.equal(head(torch.randn(1, 2, 16, 16)), torch.full((1, 1, 16, 16), 0.5))


def test_training_loss_is_the_gaussian_nll_over_valid_pixels():
    head = HeteroscedasticHead(2, width=4, depth=2, base=ConstantBase(), log_var_init=math.log(0.04))
    z = torch.full((1, 1, 8, 8), 0.7)  # residual 0.2 from the base, sigma 0.2
    target = log_to_radiance(z)
    target[..., :4, :] = float("nan")  # half the pixels have no target
    loss = head.training_loss(torch.zeros(1, 2, 8, 8), target)
    assert float(loss.detach()) == pytest.approx(0.5 * (math.log(0.04) + 1.0), rel=1e-4)


def test_base_is_frozen_and_in_eval_mode():
    base = ConstantBase()
    head = HeteroscedasticHead(2, width=4, depth=2, base=base)
    head.train()
    assert not base.training
    loss = head.training_loss(torch.zeros(1, 2, 8, 8), log_to_radiance(torch.ones(1, 1, 8, 8)))
    loss.backward()
    assert base.w.grad is None


def test_learns_a_known_spatially_varying_spread():
    """Left half: residual noise sigma 0.05; right half: 0.3 (the input says which half). NLL recovers both."""
    torch.manual_seed(0)
    head = HeteroscedasticHead(1, width=8, depth=1, base=ConstantBase(), mean_correction=False)
    x = torch.zeros(4, 1, 16, 32)
    x[..., 16:] = 1.0
    sigma = torch.where(x > 0, torch.tensor(0.3), torch.tensor(0.05))
    opt = torch.optim.Adam(head.parameters(), lr=0.03)
    for _ in range(200):
        z = 0.5 + sigma * torch.randn_like(sigma)
        opt.zero_grad()
        head.training_loss(x, log_to_radiance(z)).backward()
        opt.step()
    with torch.no_grad():
        _, log_var = head.predict(x[:1])
    s = torch.exp(0.5 * log_var)[0, 0]
    assert float(s[4:12, 2:10].mean()) == pytest.approx(0.05, rel=0.15)
    assert float(s[4:12, 22:30].mean()) == pytest.approx(0.3, rel=0.15)


def test_registry_needs_a_base_model():
    from pandafine.models.registry import build_model

    with pytest.raises(ValueError, match="model 'hetero' needs keys base_model"):
        build_model({"name": "hetero", "width": 4, "depth": 2}, 3)
