"""Conditional diffusion: a UNet denoiser of z (or of the residual z - z_base) given the model inputs.

Conventions are those of :mod:`pandafine.models.noise` (VP, discrete timesteps
``0 .. T-1``, larger t = more noise). The data sample is
``x0 = (z - z_base) / data_scale`` with z = log1p(L / RADIANCE_REF) and z_base
the frozen base model's prediction (0 without one); see
:class:`~pandafine.models.conditional_unet.GenerativeModel`.

Training (:meth:`ConditionalDiffusion.training_loss`): t uniform on ``0 .. T-1``,
``x_t = sqrt(a) x0 + sqrt(1 - a) eps``; MSE between the network output and
eps (``prediction: eps``) or ``v = sqrt(a) eps - sqrt(1 - a) x0`` (``prediction: v``),
over the pixels with a finite target. The noise and timesteps come from torch's
global generator, which :func:`pandafine.training.train.train_model` seeds and checkpoints.

Sampling: the samplers of :mod:`pandafine.models.samplers`, over the denoiser
that :func:`pandafine.models.noise.denoiser_from_vp_model` makes of the network.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import torch

from pandafine.models import samplers as S
from pandafine.models.conditional_unet import DIFFUSION_SAMPLERS, GenerativeModel, SamplerSpec
from pandafine.models.noise import (
    INIT_NOISE_STEP,
    DiffusionSchedule,
    denoiser_from_vp_model,
    diffuse,
    karras_sigmas,
    v_from_x0_eps,
)

PREDICTIONS = ("eps", "v")
SCHEDULES = ("linear", "cosine")


def make_schedule(kind: str, timesteps: int) -> DiffusionSchedule:
    """The ``linear`` or ``cosine`` schedule of :mod:`pandafine.models.noise` with ``timesteps`` steps."""
    if kind == "linear":
        return DiffusionSchedule.linear(timesteps)
    if kind == "cosine":
        return DiffusionSchedule.cosine(timesteps)
    raise ValueError(f"key 'model.schedule': unknown schedule {kind!r} (available: {', '.join(SCHEDULES)})")


#: Sampler used when ``model.sampler`` leaves keys out.
DEFAULT_SAMPLER = {"kind": "ddim", "steps": 10, "eta": 0.0}


class ConditionalDiffusion(GenerativeModel):
    """Conditional VP diffusion model (eps- or v-prediction).

    Parameters
    ----------
    in_channels, width, depth, data_scale, sampler, base, seed
        See :class:`~pandafine.models.conditional_unet.GenerativeModel`.
    prediction : {"eps", "v"}
        What the network predicts.
    schedule : {"linear", "cosine"}
        Noise schedule.
    timesteps : int
        Number of discrete timesteps T.
    """

    supported_samplers = DIFFUSION_SAMPLERS
    default_sampler = DEFAULT_SAMPLER

    def __init__(self, in_channels: int, width: int = 32, depth: int = 3, *, prediction: str = "eps",
                 schedule: str = "cosine", timesteps: int = 1000, **kwargs: Any) -> None:
        if prediction not in PREDICTIONS:
            raise ValueError(f"key 'model.prediction': value {prediction!r} must be one of {', '.join(PREDICTIONS)}")
        self.prediction = prediction
        self.schedule_kind = schedule
        self.schedule = make_schedule(schedule, int(timesteps))
        super().__init__(in_channels, width, depth, **kwargs)
        self.register_buffer("alpha_bar", torch.tensor(self.schedule.alpha_bar, dtype=torch.float32),
                             persistent=False)

    def check_sampler(self, spec: SamplerSpec) -> SamplerSpec:
        spec = super().check_sampler(spec)
        if spec.kind == "staged" and not 0 <= spec.switch_t < self.schedule.T - 1:
            raise ValueError(f"key 'model.sampler.switch_t': value {spec.switch_t} must be in "
                             f"0..{self.schedule.T - 2}")
        if spec.kind in ("ddpm", "ddim") and spec.steps > self.schedule.T:
            raise ValueError(f"key 'model.sampler.steps': value {spec.steps} exceeds the {self.schedule.T} timesteps")
        return spec

    def network(self, x_t: torch.Tensor, t, cond: torch.Tensor) -> torch.Tensor:
        """The raw network output (eps or v) at (fractional) timestep ``t``."""
        return self.backbone(x_t, t, cond)

    def training_loss(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Masked MSE of the eps / v prediction at uniformly drawn timesteps.

        Parameters
        ----------
        x : tensor (B, C, H, W)
            Normalized model inputs.
        target : tensor (B, 1, H, W)
            Target radiance (NaN where there is none).
        """
        x0, valid, cond = self.data_target(x, target)
        b = x0.shape[0]
        t = torch.randint(0, self.schedule.T, (b,), device=x0.device)
        eps = torch.randn_like(x0)
        a = self.alpha_bar.to(x0.device)[t].view(b, 1, 1, 1)
        x_t = diffuse(x0, eps, a)
        goal = eps if self.prediction == "eps" else v_from_x0_eps(x0, eps, a)
        return self.masked_mse(self.network(x_t, t.float(), cond), goal, valid)

    def denoiser(self) -> Callable:
        """The samplers' denoiser ``D(x, sigma, cond) -> x0`` (sigma scale) of this network."""
        return denoiser_from_vp_model(self.network, self.schedule, self.prediction)

    def sample_data(self, cond: torch.Tensor, noise_fn: Callable, spec: SamplerSpec) -> torch.Tensor:
        like = cond[:, :1]
        z = noise_fn(INIT_NOISE_STEP, like)
        den = self.denoiser()
        sch = self.schedule
        if spec.kind == "ddim":
            return S.sample_ddim(den, z, sch, spec.steps, eta=spec.eta, noise_fn=noise_fn, cond=cond)
        if spec.kind == "ddpm":
            return S.sample_ddpm(den, z, sch, spec.steps, noise_fn=noise_fn, cond=cond)
        if spec.kind == "staged":
            return S.sample_staged(den, z, sch, spec.switch_t, spec.fast_steps, spec.slow_steps, eta=spec.eta,
                                   noise_fn=noise_fn, cond=cond)
        sigmas = karras_sigmas(spec.steps, sch.sigma_min, sch.sigma_max)
        fn = S.sample_euler if spec.kind == "euler" else S.sample_dpmpp_2m
        return fn(den, z * float(sigmas[0]), sigmas, cond)


def build_diffusion(model_cfg: Mapping[str, Any], in_channels: int, base=None) -> ConditionalDiffusion:
    """A :class:`ConditionalDiffusion` from a resolved ``model`` config section."""
    return ConditionalDiffusion(
        in_channels, int(model_cfg["width"]), int(model_cfg["depth"]), prediction=str(model_cfg["prediction"]),
        schedule=str(model_cfg["schedule"]), timesteps=int(model_cfg["timesteps"]),
        data_scale=float(model_cfg["data_scale"]), sampler=model_cfg.get("sampler"), base=base,
        seed=int(model_cfg.get("sample_seed", 0)), selection=str(model_cfg.get("selection", "sample")))


__all__ = ["DEFAULT_SAMPLER", "ConditionalDiffusion", "build_diffusion", "make_schedule", "PREDICTIONS",
           "SCHEDULES"]
