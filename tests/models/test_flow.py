"""Conditional flow matching: the time convention pinned through the model's loss and sampler.

Convention (pandafine.models.noise): x_t = (1 - t) x0 + t eps, t = 0 data, t = 1 noise,
target velocity eps - x0; sampling runs from t = 1 to t = 0.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from fake_tiles import stage_config, write_fake_train_zarr
from pandafine.core.scaling import radiance_to_log
from pandafine.models.checkpoint import read_checkpoint
from pandafine.models.flow import TIME_SCALE, ConditionalFlow
from pandafine.models.noise import flow_interpolate, flow_velocity, make_torch_noise_fn, x0_from_velocity
from pandafine.models.registry import build_model, load_trained_model
from pandafine.tiles.store import PatchStore
from pandafine.training import train as T


def test_convention_endpoints_and_velocity():
    x0, eps = torch.randn(4, 1, 5, 5), torch.randn(4, 1, 5, 5)
    assert torch.equal(flow_interpolate(x0, eps, 0.0), x0)  # t = 0: the data
    assert torch.equal(flow_interpolate(x0, eps, 1.0), eps)  # t = 1: the noise
    t, h = 0.37, 1e-3
    fd = (flow_interpolate(x0, eps, t + h) - flow_interpolate(x0, eps, t - h)) / (2 * h)
    assert torch.allclose(fd, flow_velocity(x0, eps), atol=1e-3)  # d x_t / dt = eps - x0
    assert torch.equal(flow_velocity(x0, eps), eps - x0)
    assert torch.allclose(x0_from_velocity(flow_interpolate(x0, eps, t), eps - x0, t), x0, atol=1e-6)


MU, S = 0.7, 0.5


class GaussianVelocity(nn.Module):
    """Exact velocity E[eps - x0 | x_t] for x0 ~ N(MU, S^2) per pixel (see tests/models/test_samplers.py);
    the flow maps x1 to MU + S * x1."""

    def __init__(self):
        super().__init__()
        self.times = []

    def forward(self, x_t, time, cond):
        t = float(torch.as_tensor(time).reshape(-1)[0]) / TIME_SCALE
        self.times.append(t)
        var = (1 - t) ** 2 * S ** 2 + t ** 2
        return -MU + (t - (1 - t) * S ** 2) / var * (x_t - (1 - t) * MU)


@pytest.mark.parametrize("kind,steps,tol", [("euler", 200, 0.02), ("heun", 10, 0.01), ("heun", 50, 1e-3)])
def test_sampling_runs_from_noise_at_t1_to_data_at_t0(kind, steps, tol):
    model = ConditionalFlow(2, width=4, depth=1, data_scale=3.0)
    oracle = GaussianVelocity()
    model.backbone = oracle
    x = torch.randn(2, 2, 8, 8)
    z = model.sample(x, make_torch_noise_fn(3), {"kind": kind, "steps": steps})
    x1 = make_torch_noise_fn(3)(0, x[:, :1])  # the initial noise the sampler drew
    expected = 3.0 * (MU + S * x1)  # z = data_scale * x0
    err = float((z - expected).abs().max())
    assert err < tol * 3.0  # first order (euler) / second order (heun) convergence to MU + S * x1
    assert oracle.times[0] == pytest.approx(1.0)  # first call at the noise end ...
    starts = oracle.times[::2] if kind == "heun" else oracle.times  # the time of each step's first call
    assert starts == pytest.approx([1 - i / steps for i in range(steps)])
    assert oracle.times[-1] == pytest.approx(0.0 if kind == "heun" else 1.0 / steps)  # ... towards the data


def test_training_loss_uses_the_convention():
    torch.manual_seed(0)
    model = ConditionalFlow(2, width=4, depth=1, data_scale=0.5)
    nn.init.normal_(model.backbone.head.weight, std=0.1)
    x = torch.randn(3, 2, 8, 8)
    target = torch.rand(3, 1, 8, 8) * 1e-4
    target[1, 0, 3:] = float("nan")
    torch.manual_seed(11)
    loss = model.training_loss(x, target)
    torch.manual_seed(11)
    t = torch.rand(3)
    eps = torch.randn(3, 1, 8, 8)
    valid = torch.isfinite(target)
    x0 = torch.where(valid, radiance_to_log(torch.nan_to_num(target)) / 0.5, torch.zeros_like(target))
    x_t = (1 - t.view(3, 1, 1, 1)) * x0 + t.view(3, 1, 1, 1) * eps
    pred = model.backbone(x_t, TIME_SCALE * t, x)
    expected = ((pred - (eps - x0)) ** 2)[valid].mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_registry_and_samplers():
    model = build_model({"name": "flow", "width": 4, "depth": 2, "sampler": {"steps": 3}}, 11)
    assert isinstance(model, ConditionalFlow) and model.sampler.kind == "euler" and model.sampler.steps == 3
    with pytest.raises(ValueError, match="supports euler, heun, got 'ddim'"):
        build_model({"name": "flow", "width": 4, "depth": 2, "sampler": {"kind": "ddim"}}, 11)


def test_training_lowers_the_velocity_loss(tmp_path):
    zarr = write_fake_train_zarr(tmp_path / "train.zarr")
    cfg = stage_config(epochs=4)
    cfg["model"] = {"name": "flow", "width": 6, "depth": 2, "sampler": {"kind": "heun", "steps": 2}}
    T.train_model(cfg, zarr, tmp_path / "flow", progress=False)
    ck = read_checkpoint(tmp_path / "flow" / "checkpoint.pt")
    losses = [r["train_loss"] for r in ck["history"]]
    assert ck["finished"] and losses[-1] < losses[0]
    model, _ = load_trained_model(tmp_path / "flow")
    out = model(torch.from_numpy(PatchStore(zarr).read([0])[0]))
    assert out.shape == (1, 1, 16, 16) and bool(torch.isfinite(out).all())
