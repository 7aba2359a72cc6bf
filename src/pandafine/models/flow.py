"""Conditional flow matching (rectified flow) with the conditional UNet backbone.

Time convention (:mod:`pandafine.models.noise`, pinned there and tested in
``tests/models/test_flow.py``): ``t`` in ``[0, 1]``, ``t = 0`` is the data and ``t = 1``
the noise::

    x_t = (1 - t) * x0 + t * eps,     target velocity v = dx_t/dt = eps - x0

The network sees the time as ``TIME_SCALE * t`` (the same embedding range as the
diffusion timesteps). Training draws ``t`` uniformly on ``[0, 1]`` and fits the
velocity by a masked MSE; sampling integrates ``dx/dt = v`` from ``t = 1`` to
``t = 0`` with :func:`~pandafine.models.samplers.sample_flow_euler` or
:func:`~pandafine.models.samplers.sample_flow_heun`. The data sample is
``x0 = (z - z_base) / data_scale`` as for diffusion.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import torch

from pandafine.models import samplers as S
from pandafine.models.conditional_unet import FLOW_SAMPLERS, GenerativeModel, SamplerSpec
from pandafine.models.noise import INIT_NOISE_STEP, flow_interpolate, flow_velocity

#: The backbone's time input is ``TIME_SCALE * t``.
TIME_SCALE = 1000.0

#: Sampler used when ``model.sampler`` leaves keys out.
DEFAULT_SAMPLER = {"kind": "euler", "steps": 10}


class ConditionalFlow(GenerativeModel):
    """Conditional rectified-flow model predicting the velocity ``eps - x0``.

    Parameters are those of :class:`~pandafine.models.conditional_unet.GenerativeModel`.
    """

    supported_samplers = FLOW_SAMPLERS
    default_sampler = DEFAULT_SAMPLER

    def velocity(self, x_t: torch.Tensor, t, cond: torch.Tensor) -> torch.Tensor:
        """Predicted velocity at time ``t`` in ``[0, 1]`` (float or ``(B,)`` tensor)."""
        t = torch.as_tensor(t, dtype=torch.float32, device=x_t.device)
        return self.backbone(x_t, TIME_SCALE * t, cond)

    def training_loss(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Masked MSE between the predicted and the true velocity ``eps - x0`` at ``t ~ U[0, 1]``.

        Parameters
        ----------
        x : tensor (B, C, H, W)
            Normalized model inputs.
        target : tensor (B, 1, H, W)
            Target radiance (NaN where there is none).
        """
        x0, valid, cond = self.data_target(x, target)
        b = x0.shape[0]
        t = torch.rand(b, device=x0.device)
        eps = torch.randn_like(x0)
        x_t = flow_interpolate(x0, eps, t.view(b, 1, 1, 1))
        return self.masked_mse(self.velocity(x_t, t, cond), flow_velocity(x0, eps), valid)

    def sample_data(self, cond: torch.Tensor, noise_fn: Callable, spec: SamplerSpec) -> torch.Tensor:
        x1 = noise_fn(INIT_NOISE_STEP, cond[:, :1])
        fn = S.sample_flow_euler if spec.kind == "euler" else S.sample_flow_heun
        return fn(self.velocity, x1, spec.steps, cond)


def build_flow(model_cfg: Mapping[str, Any], in_channels: int, base=None) -> ConditionalFlow:
    """A :class:`ConditionalFlow` from a resolved ``model`` config section."""
    return ConditionalFlow(in_channels, int(model_cfg["width"]), int(model_cfg["depth"]),
                           data_scale=float(model_cfg["data_scale"]), sampler=model_cfg.get("sampler"), base=base,
                           seed=int(model_cfg.get("sample_seed", 0)), selection=str(model_cfg.get("selection", "sample")))


__all__ = ["DEFAULT_SAMPLER", "ConditionalFlow", "build_flow", "TIME_SCALE"]
