"""Conditional diffusion: parameterisations and time convention through the model, loss, residual base, training.

Oracle check: for data that is a single point ``x0 = C`` the exact eps is
``(x_t - sqrt(a) C) / sqrt(1 - a)`` at every (fractional) timestep; a backbone
returning it (or the matching v) makes every sampler end exactly on C, which
pins how the model passes timesteps, schedules and predictions to the samplers.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from fake_tiles import stage_config, write_fake_train_zarr
from pandafine.core.scaling import radiance_to_log
from pandafine.models import input_multiple, resolve_model_config
from pandafine.models.checkpoint import read_checkpoint
from pandafine.models.conditional_unet import ConditionalUNet, SamplerSpec
from pandafine.models.diffusion import ConditionalDiffusion
from pandafine.models.noise import diffuse, make_torch_noise_fn, v_from_x0_eps
from pandafine.models.registry import build_model, load_trained_model
from pandafine.tiles.store import PatchStore
from pandafine.training import train as T

C = 0.8


class PointMassOracle(nn.Module):
    """Exact eps / v for data x0 = C (ignores cond), given the schedule."""

    def __init__(self, schedule, prediction):
        super().__init__()
        self.schedule, self.prediction = schedule, prediction

    def forward(self, x_t, time, cond):
        t = float(torch.as_tensor(time).reshape(-1)[0])
        a = self.schedule.alpha_bar_at(t)
        eps = (x_t - a ** 0.5 * C) / (1 - a) ** 0.5
        return eps if self.prediction == "eps" else v_from_x0_eps(C, eps, a)


@pytest.mark.parametrize("prediction", ["eps", "v"])
@pytest.mark.parametrize("schedule", ["linear", "cosine"])
@pytest.mark.parametrize("sampler", [{"kind": "ddim", "steps": 5}, {"kind": "ddim", "steps": 4, "eta": 1.0},
                                     {"kind": "ddpm", "steps": 7}, {"kind": "dpmpp_2m", "steps": 6},
                                     {"kind": "euler", "steps": 6},
                                     {"kind": "staged", "switch_t": 50, "fast_steps": 3, "slow_steps": 3, "eta": 1.0}])
def test_oracle_denoiser_lands_on_the_data(prediction, schedule, sampler):
    model = ConditionalDiffusion(3, width=4, depth=1, prediction=prediction, schedule=schedule, timesteps=200,
                                 data_scale=2.0)
    model.backbone = PointMassOracle(model.schedule, prediction)
    x = torch.randn(2, 3, 8, 8)
    z = model.sample(x, make_torch_noise_fn(1), sampler)
    assert torch.allclose(z, torch.full_like(z, 2.0 * C), atol=2e-3)  # z = z_base (0) + data_scale * x0


def test_training_loss_is_the_masked_eps_or_v_mse():
    torch.manual_seed(0)
    for prediction in ("eps", "v"):
        model = ConditionalDiffusion(2, width=4, depth=1, prediction=prediction, schedule="linear", timesteps=100,
                                     data_scale=0.5)
        x = torch.randn(3, 2, 8, 8)
        target = torch.rand(3, 1, 8, 8) * 1e-4
        target[0, 0, :2] = float("nan")
        torch.manual_seed(7)
        loss = model.training_loss(x, target)
        torch.manual_seed(7)  # the same draws, by hand
        t = torch.randint(0, 100, (3,))
        eps = torch.randn(3, 1, 8, 8)
        valid = torch.isfinite(target)
        x0 = torch.where(valid, radiance_to_log(torch.nan_to_num(target)) / 0.5, torch.zeros_like(target))
        a = torch.tensor(model.schedule.alpha_bar, dtype=torch.float32)[t].view(3, 1, 1, 1)
        goal = eps if prediction == "eps" else v_from_x0_eps(x0, eps, a)
        out = model.backbone(diffuse(x0, eps, a), t.float(), x)
        expected = ((out - goal) ** 2)[valid].mean()
        assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_backbone_time_embedding_changes_output_and_shapes():
    net = ConditionalUNet(5, width=4, depth=2)
    nn.init.normal_(net.head.weight)
    x, cond = torch.randn(2, 1, 16, 16), torch.randn(2, 5, 16, 16)
    a, b = net(x, 10.0, cond), net(x, 900.0, cond)
    assert a.shape == (2, 1, 16, 16) and not torch.allclose(a, b)
    per_sample = net(x, torch.tensor([10.0, 900.0]), cond)
    assert torch.allclose(per_sample[0], a[0], atol=1e-6) and torch.allclose(per_sample[1], b[1], atol=1e-6)


def test_config_registry_and_validation():
    cfg = resolve_model_config({"name": "diffusion", "width": 4, "depth": 2})
    assert cfg["prediction"] == "v" and cfg["schedule"] == "cosine" and cfg["timesteps"] == 1000
    model = build_model({"name": "diffusion", "width": 4, "depth": 2, "sampler": {"kind": "dpmpp_2m"}}, 11)
    assert model.sampler == SamplerSpec("dpmpp_2m", steps=10)
    assert input_multiple({"name": "diffusion", "width": 4, "depth": 3}) == 8
    with pytest.raises(ValueError, match="supports ddpm, ddim, dpmpp_2m, euler, staged, got 'heun'"):
        build_model({"name": "diffusion", "width": 4, "depth": 2, "sampler": {"kind": "heun"}}, 11)
    with pytest.raises(ValueError, match="model.prediction"):
        build_model({"name": "diffusion", "width": 4, "depth": 2, "prediction": "x0"}, 11)
    with pytest.raises(ValueError, match="switch_t"):
        build_model({"name": "diffusion", "width": 4, "depth": 2, "timesteps": 100,
                     "sampler": {"kind": "staged", "switch_t": 99}}, 11)
    with pytest.raises(ValueError, match="unknown key"):
        SamplerSpec.from_mapping({"kind": "ddim", "step": 3})


def test_config_schema_accepts_generative_models(demo_config):
    from pandafine.config import validate_config

    cfg = dict(demo_config)
    cfg["model"] = {"name": "diffusion", "width": 16, "depth": 2, "prediction": "eps", "schedule": "linear",
                    "timesteps": 500, "data_scale": 0.5, "sampler": {"kind": "staged", "switch_t": 100,
                                                                     "fast_steps": 5, "slow_steps": 3, "eta": 1.0}}
    validate_config(cfg)
    cfg["model"] = {"name": "flow", "width": 16, "depth": 2, "sampler": {"kind": "heun", "steps": 4},
                    "base_model": "results/models/unet"}
    validate_config(cfg)


@pytest.fixture(scope="module")
def zarr(tmp_path_factory):
    return write_fake_train_zarr(tmp_path_factory.mktemp("tiles") / "train.zarr")


def test_training_is_deterministic_and_forward_samples(zarr, tmp_path):
    cfg = stage_config(epochs=2)
    cfg["model"] = {"name": "diffusion", "width": 4, "depth": 2, "timesteps": 100,
                    "sampler": {"kind": "ddim", "steps": 3}}
    T.train_model(cfg, zarr, tmp_path / "a", progress=False)
    T.train_model(cfg, zarr, tmp_path / "b", progress=False)
    a, b = read_checkpoint(tmp_path / "a" / "checkpoint.pt"), read_checkpoint(tmp_path / "b" / "checkpoint.pt")
    assert all(torch.equal(a["model_state"][k], b["model_state"][k]) for k in a["model_state"])
    assert all(np.isfinite(r["train_loss"]) and np.isfinite(r["val_psnr_log"]) for r in a["history"])
    model, ck = load_trained_model(tmp_path / "a")
    x = torch.from_numpy(PatchStore(zarr).read([0, 1])[0])
    out1, out2 = model(x), model(x)
    assert out1.shape == (2, 1, 16, 16) and torch.equal(out1, out2) and bool((out1 >= 0).all())


def test_residual_on_a_trained_base_model(zarr, tmp_path):
    """With an oracle for x0 = 0 the diffusion sample is the frozen base model's prediction."""
    base_cfg = stage_config(epochs=1)
    T.train_model(base_cfg, zarr, tmp_path / "unet", progress=False)
    base, _ = load_trained_model(tmp_path / "unet")
    model = build_model({"name": "diffusion", "width": 4, "depth": 2, "timesteps": 100,
                         "base_model": str(tmp_path / "unet")}, 11)
    assert model.backbone.cond_channels == 12  # inputs + z_base
    assert not any(p.requires_grad for p in model.base.parameters())
    global C
    old, C = C, 0.0
    try:
        model.backbone = PointMassOracle(model.schedule, model.prediction)
        x = torch.from_numpy(PatchStore(zarr).read([0, 1])[0])
        xn = base.normalize(x)
        z = model.sample(xn, make_torch_noise_fn(0))
    finally:
        C = old
    with torch.no_grad():
        assert torch.allclose(z, base.net(xn), atol=1e-4)
    # and the training target is the residual
    target = torch.from_numpy(PatchStore(zarr).read([0, 1])[1])
    x0, valid, cond = model.data_target(xn, target)
    with torch.no_grad():
        zb = base.net(xn)
    expected = (radiance_to_log(torch.nan_to_num(target)) - zb)[valid]
    assert torch.allclose(x0[valid], expected, atol=1e-5) and torch.equal(cond[:, -1:], zb)
    with pytest.raises(ValueError, match="takes 11 channels, the patches have 5"):
        build_model({"name": "diffusion", "width": 4, "depth": 2, "base_model": str(tmp_path / "unet")}, 5)
