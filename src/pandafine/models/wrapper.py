"""The deployable module: raw cube channels in, radiance out.

:class:`PandaFineNet` carries the normalization statistics (train split) and
the log scale of :mod:`pandafine.core.scaling` inside the module, so the exported
ONNX graph takes the cube channels exactly as stored (NaN = nodata) and returns
radiance in W m-2 sr-1 um-1.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from pandafine.core.scaling import RADIANCE_REF


class PandaFineNet(nn.Module):
    """``radiance = expm1(max(net((x - mean) / std with NaN -> 0), 0)) * RADIANCE_REF``.

    Parameters
    ----------
    net : torch.nn.Module
        Maps normalized channels ``(B, C, H, W)`` to z ``(B, 1, H, W)``.
    mean, std : sequence of float
        Per-channel normalization statistics (length C). A standard deviation
        that is zero or not finite is replaced by 1 (the channel is only centred);
        a mean that is not finite by 0.
    """

    def __init__(self, net: nn.Module, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        mean_t = torch.as_tensor(list(mean), dtype=torch.float32)
        std_t = torch.as_tensor(list(std), dtype=torch.float32)
        if mean_t.ndim != 1 or mean_t.shape != std_t.shape:
            raise ValueError(f"normalization mean and std must be 1-D of the same length, got "
                             f"{tuple(mean_t.shape)} and {tuple(std_t.shape)}")
        mean_t = torch.where(torch.isfinite(mean_t), mean_t, torch.zeros_like(mean_t))
        std_t = torch.where(torch.isfinite(std_t) & (std_t > 0), std_t, torch.ones_like(std_t))
        self.net = net
        self.register_buffer("mean", mean_t.view(1, -1, 1, 1))
        self.register_buffer("inv_std", (1.0 / std_t).view(1, -1, 1, 1))

    @property
    def n_channels(self) -> int:
        return int(self.mean.shape[1])

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """``(x - mean) / std`` with NaN (nodata) replaced by 0, the channel mean."""
        x = (x - self.mean) * self.inv_std
        return torch.where(torch.isnan(x), torch.zeros_like(x), x)

    def log_radiance(self, x: torch.Tensor) -> torch.Tensor:
        """z = log1p(L / RADIANCE_REF) as predicted (not clamped); what training fits."""
        return self.net(self.normalize(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Radiance ``(B, 1, H, W)`` in W m-2 sr-1 um-1 (>= 0) from raw channels ``(B, C, H, W)``."""
        z = self.log_radiance(x)
        return torch.expm1(torch.clamp(z, min=0.0)) * RADIANCE_REF
