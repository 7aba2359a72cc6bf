"""The conditional UNet backbone of the generative models, and what diffusion and flow share.

:class:`ConditionalUNet` maps ``(x_t, time, cond)`` to one output channel:

* ``x_t`` ``(B, 1, H, W)``: the noisy sample (diffusion) or interpolant (flow);
* ``time`` a float (or ``(B,)`` tensor) on the model's own scale (diffusion: the
  fractional timestep ``0 .. T-1``; flow: ``1000 * t``), embedded sinusoidally,
  passed through an MLP and *added* to the features of every convolution block;
* ``cond`` ``(B, C, H, W)``: the normalized model inputs (the channels of
  :data:`pandafine.core.channels.CHANNELS`), plus, for residual learning, the base
  prediction z_base as one more channel.

No normalization layer: group/instance normalization would make a pixel depend
on the tile it is sampled in (see :mod:`pandafine.models.blocks`), which breaks
seamless tiled sampling.

:class:`GenerativeModel` is the common part of :class:`~pandafine.models.diffusion.ConditionalDiffusion`
and :class:`~pandafine.models.flow.ConditionalFlow`: the optional frozen base
model (residual learning: the generative model works on
``x0 = (z - z_base) / data_scale``), the masked training target, and a
``forward`` that samples with the configured sampler and a fixed seed, so the
model fits the :class:`~pandafine.models.wrapper.PandaFineNet` interface used by
training (validation), evaluation and tiled inference.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import torch
from torch import nn
from torch.nn import functional as F

from pandafine.core.scaling import radiance_to_log
from pandafine.models.noise import make_torch_noise_fn

#: Sampler kinds and the models that support them.
DIFFUSION_SAMPLERS = ("ddpm", "ddim", "dpmpp_2m", "euler", "staged")
FLOW_SAMPLERS = ("euler", "heun")


@dataclass(frozen=True)
class SamplerSpec:
    """How to sample a generative model (config ``model.sampler``).

    Parameters
    ----------
    kind : str
        Diffusion: ``ddpm`` (ancestral), ``ddim`` (``eta``), ``dpmpp_2m``
        (DPM-Solver++ 2M on Karras sigmas), ``euler`` (probability-flow ODE on Karras
        sigmas), ``staged`` (DPM-Solver++ 2M to ``switch_t``, then DDIM(``eta``)).
        Flow: ``euler``, ``heun``.
    steps : int
        Number of steps (``staged``: ``fast_steps + slow_steps`` is used instead).
    eta : float
        DDIM / staged stage-2 stochasticity (0 deterministic, 1 DDPM).
    switch_t : int
        ``staged``: timestep where the discrete stage starts.
    fast_steps, slow_steps : int
        ``staged``: steps of each stage.
    """

    kind: str = "ddim"
    steps: int = 10
    eta: float = 0.0
    switch_t: int = 100
    fast_steps: int = 6
    slow_steps: int = 4

    def __post_init__(self) -> None:
        if self.kind not in set(DIFFUSION_SAMPLERS) | set(FLOW_SAMPLERS):
            raise ValueError(f"key 'model.sampler.kind': unknown sampler {self.kind!r} (available: "
                             f"{', '.join(sorted(set(DIFFUSION_SAMPLERS) | set(FLOW_SAMPLERS)))})")
        if self.steps < 1 or self.fast_steps < 1 or self.slow_steps < 1:
            raise ValueError(f"key 'model.sampler': steps, fast_steps and slow_steps must be >= 1, got "
                             f"{self.steps}, {self.fast_steps}, {self.slow_steps}")
        if self.eta < 0:
            raise ValueError(f"key 'model.sampler.eta': value {self.eta} must be >= 0")

    @classmethod
    def from_mapping(cls, m: Mapping[str, Any] | "SamplerSpec" | None) -> "SamplerSpec":
        if isinstance(m, SamplerSpec):
            return m
        m = dict(m or {})
        unknown = set(m) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"key 'model.sampler': unknown key(s) {sorted(unknown)} "
                             f"(allowed: {', '.join(cls.__dataclass_fields__)})")
        return cls(**m)

    @property
    def stochastic(self) -> bool:
        """Whether the sampler draws fresh noise after the initial noise."""
        return self.kind == "ddpm" or (self.kind in ("ddim", "staged") and self.eta > 0)

    @property
    def network_calls(self) -> int:
        """Denoiser / velocity evaluations per sample."""
        if self.kind == "staged":
            return self.fast_steps + self.slow_steps
        return 2 * self.steps if self.kind == "heun" else self.steps

    def label(self) -> str:
        """Short text naming the sampler, e.g. ``ddim(eta=0) x10`` or ``staged(6+4 @ t=100)``."""
        if self.kind == "staged":
            return f"staged({self.fast_steps}+{self.slow_steps} @ t={self.switch_t}, eta={self.eta:g})"
        if self.kind == "ddim":
            return f"ddim(eta={self.eta:g}) x{self.steps}"
        return f"{self.kind} x{self.steps}"


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding ``(B, dim)`` of times ``t`` ``(B,)`` (Transformer / DDPM style)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=1)
    if dim % 2:
        emb = F.pad(emb, (0, 1))
    return emb


class TimeBlock(nn.Module):
    """``conv -> + time projection -> ReLU -> conv -> ReLU`` (two 3x3 convolutions)."""

    def __init__(self, in_channels: int, out_channels: int, time_dim: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.time = nn.Linear(time_dim, out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(x) + self.time(temb)[:, :, None, None]
        return F.relu(self.conv2(F.relu(h)))


class ConditionalUNet(nn.Module):
    """UNet over ``cat(x_t, cond)`` with a time embedding added in every block.

    Parameters
    ----------
    cond_channels : int
        Channels of ``cond`` (model inputs, plus 1 for a base prediction).
    width : int
        Channels at full resolution; level ``k`` has ``width * 2**k``.
    depth : int
        Number of 2x downsamplings; input sides must be multiples of ``2**depth``.
    time_dim : int, optional
        Width of the time embedding (default ``4 * width``).
    """

    def __init__(self, cond_channels: int, width: int = 32, depth: int = 3, time_dim: int | None = None) -> None:
        super().__init__()
        if cond_channels < 0 or width < 1 or depth < 1:
            raise ValueError(f"ConditionalUNet needs cond_channels >= 0, width and depth >= 1, got "
                             f"{cond_channels}, {width}, {depth}")
        self.cond_channels, self.width, self.depth = cond_channels, width, depth
        td = int(time_dim or 4 * width)
        self.time_dim = td
        self.time_mlp = nn.Sequential(nn.Linear(td, td), nn.SiLU(), nn.Linear(td, td))
        chans = [width * 2**k for k in range(depth + 1)]
        self.stem = TimeBlock(1 + cond_channels, chans[0], td)
        self.downs = nn.ModuleList(TimeBlock(chans[k], chans[k + 1], td) for k in range(depth))
        self.reduce = nn.ModuleList(nn.Conv2d(chans[k + 1], chans[k], 1) for k in reversed(range(depth)))
        self.ups = nn.ModuleList(TimeBlock(2 * chans[k], chans[k], td) for k in reversed(range(depth)))
        self.head = nn.Conv2d(chans[0], 1, 1)
        nn.init.zeros_(self.head.weight)  # starts predicting 0 (a calm start for eps/v/velocity targets)
        nn.init.zeros_(self.head.bias)

    @property
    def multiple(self) -> int:
        return 2**self.depth

    def forward(self, x_t: torch.Tensor, time, cond: torch.Tensor | None) -> torch.Tensor:
        b = x_t.shape[0]
        t = torch.as_tensor(time, dtype=torch.float32, device=x_t.device).reshape(-1)
        if t.numel() == 1:
            t = t.expand(b)
        temb = self.time_mlp(timestep_embedding(t, self.time_dim))
        h = x_t if cond is None else torch.cat([x_t, cond.to(x_t.dtype)], dim=1)
        skips = [self.stem(h, temb)]
        for down in self.downs:
            skips.append(down(F.max_pool2d(skips[-1], 2), temb))
        y = skips.pop()
        for reduce, up in zip(self.reduce, self.ups):
            skip = skips.pop()
            y = F.interpolate(reduce(y), size=skip.shape[-2:], mode="bilinear", align_corners=False)
            y = up(torch.cat([y, skip], dim=1), temb)
        return self.head(y)


#: Values of ``model.selection`` (diffusion, flow).
SELECTIONS = ("sample", "loss")


class GenerativeModel(nn.Module):
    """Shared part of the conditional diffusion and flow models (see the module docstring).

    Parameters
    ----------
    in_channels : int
        Number of (normalized) model input channels.
    width, depth : int
        Backbone size (:class:`ConditionalUNet`).
    data_scale : float
        ``x0 = (z - z_base) / data_scale``: the generative model sees data of about unit scale.
    sampler : SamplerSpec or mapping
        Sampler used by :meth:`forward` (validation, evaluation, export).
    base : torch.nn.Module, optional
        Frozen network mapping normalized inputs to z_base; without it ``z_base = 0``.
    seed : int
        Seed of the noise :meth:`forward` draws (the same for every call).
    selection : {"sample", "loss"}
        What picks the best training epoch: the validation PSNR of one sample (``sample``), or the
        training objective on the validation split with fixed noise (``loss``;
        :meth:`pandafine.training.train.ValidationSet.selection_score`).
    """

    supported_samplers: tuple[str, ...] = ()
    #: Sampler keys used where ``sampler`` leaves them out.
    default_sampler: Mapping[str, Any] = {}

    def __init__(self, in_channels: int, width: int, depth: int, *, data_scale: float = 1.0,
                 sampler: SamplerSpec | Mapping[str, Any] | None = None, base: nn.Module | None = None,
                 seed: int = 0, selection: str = "sample") -> None:
        super().__init__()
        if not data_scale > 0:
            raise ValueError(f"key 'model.data_scale': value {data_scale} must be > 0")
        if selection not in SELECTIONS:
            raise ValueError(f"key 'model.selection': value {selection!r} must be one of {', '.join(SELECTIONS)}")
        self.selects_by_loss = selection == "loss"
        self.in_channels = in_channels
        self.data_scale = float(data_scale)
        self.sampler = self.check_sampler(self.sampler_spec(sampler))
        self.base = base
        self.seed = int(seed)
        self.backbone = ConditionalUNet(in_channels + (1 if base is not None else 0), width, depth)

    @property
    def multiple(self) -> int:
        return self.backbone.multiple

    def sampler_spec(self, sampler: SamplerSpec | Mapping[str, Any] | None) -> SamplerSpec:
        """``sampler`` completed with :attr:`default_sampler` (a SamplerSpec is taken as is)."""
        if isinstance(sampler, SamplerSpec):
            return sampler
        return SamplerSpec.from_mapping({**self.default_sampler, **dict(sampler or {})})

    def check_sampler(self, spec: SamplerSpec) -> SamplerSpec:
        if spec.kind not in self.supported_samplers:
            raise ValueError(f"key 'model.sampler.kind': {type(self).__name__} supports "
                             f"{', '.join(self.supported_samplers)}, got {spec.kind!r}")
        return spec

    def train(self, mode: bool = True):
        super().train(mode)
        if self.base is not None:
            self.base.eval()  # always the deterministic, inference-mode base
        return self

    # -- conditioning and data scale
    def base_log(self, x: torch.Tensor) -> torch.Tensor:
        """z_base ``(B, 1, H, W)`` from normalized inputs (zeros without a base model)."""
        if self.base is None:
            return x.new_zeros((x.shape[0], 1) + tuple(x.shape[-2:]))
        with torch.no_grad():
            out = self.base(x)
        return (out[0] if isinstance(out, tuple) else out).detach()

    def conditioning(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(cond, z_base)``: the backbone's conditioning channels and the base prediction."""
        zb = self.base_log(x)
        cond = x if self.base is None else torch.cat([x, zb], dim=1)
        return cond, zb

    def data_target(self, x: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(x0, valid, cond)``: the data sample ``(z - z_base) / data_scale`` (0 where no target) and its mask."""
        valid = torch.isfinite(target)
        z = radiance_to_log(torch.where(valid, target, torch.zeros_like(target)))
        cond, zb = self.conditioning(x)
        x0 = torch.where(valid, (z - zb) / self.data_scale, torch.zeros_like(z))
        return x0, valid, cond

    @staticmethod
    def masked_mse(pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        err = torch.where(valid, (pred - target) ** 2, torch.zeros_like(pred))
        return err.sum() / valid.sum().clamp(min=1)

    # -- sampling
    def sample_data(self, cond: torch.Tensor, noise_fn: Callable, spec: SamplerSpec) -> torch.Tensor:
        """Sample ``x0`` ``(B, 1, H, W)`` given the conditioning (implemented by the subclasses)."""
        raise NotImplementedError

    @torch.no_grad()
    def sample(self, x: torch.Tensor, noise_fn: Callable, sampler: SamplerSpec | Mapping[str, Any] | None = None
               ) -> torch.Tensor:
        """One sample of z ``(B, 1, H, W)`` for normalized inputs ``x`` ``(B, C, H, W)``.

        Parameters
        ----------
        noise_fn : callable
            ``noise_fn(step, like)`` (see :mod:`pandafine.models.samplers`); use
            :func:`pandafine.models.noise.make_grid_noise_fn` (or the batched
            :func:`pandafine.inference.sampling.make_batch_grid_noise_fn`) for tile-consistent noise.
        sampler : SamplerSpec or mapping, optional
            Default: the model's configured sampler.
        """
        spec = self.sampler if sampler is None else self.check_sampler(self.sampler_spec(sampler))
        cond, zb = self.conditioning(x)
        x0 = self.sample_data(cond, noise_fn, spec)
        return zb + self.data_scale * x0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """z sampled with the configured sampler and noise from a generator seeded with :attr:`seed`.

        The noise depends on the batch layout, not on grid positions: for seamless
        tiles use :func:`pandafine.inference.sampling.sample_region`.
        """
        return self.sample(x, make_torch_noise_fn(self.seed))


__all__ = ["SamplerSpec", "ConditionalUNet", "GenerativeModel", "TimeBlock", "timestep_embedding",
           "DIFFUSION_SAMPLERS", "FLOW_SAMPLERS"]
