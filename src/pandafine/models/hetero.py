"""Heteroscedastic head: a per-pixel Gaussian ``N(mu, sigma**2)`` in z on top of a frozen base model.

The base (a trained unet or mmntlsr, :func:`pandafine.models.registry.load_base_net`) gives
z_base from the normalized inputs; a small :class:`~pandafine.models.unet.UNet` over the inputs
and z_base gives two maps, a mean correction ``d`` and a log-variance offset ``s``::

    mu = z_base + d          (d = 0 when ``mean_correction`` is off)
    log sigma**2 = clamp(log_var_init + s, *LOG_VAR_RANGE)

Training minimises the Gaussian negative log-likelihood ``0.5 (log sigma**2 + (z - mu)**2 / sigma**2)``
over the pixels with a finite target (:meth:`HeteroscedasticHead.training_loss`, used by
:func:`pandafine.training.train.batch_loss`). :meth:`HeteroscedasticHead.forward` returns ``mu``,
so training's validation PSNR, evaluation and export see the head as a deterministic model;
:meth:`HeteroscedasticHead.predict` gives ``(mu, log sigma**2)``. Training keeps the epoch with the
lowest validation NLL (``selects_by_loss``; the checkpoint's ``best_val_psnr_log`` then holds minus
that NLL), since PSNR does not see the spread.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import nn

from pandafine.core.scaling import radiance_to_log
from pandafine.models.unet import UNet

#: Bounds of log sigma**2 (sigma from 1e-3 to e**2 in z).
LOG_VAR_RANGE = (-13.8, 4.0)


class HeteroscedasticHead(nn.Module):
    """Mean and log-variance in z of a frozen base model's prediction (module docstring).

    Parameters
    ----------
    in_channels : int
        Normalized input channels (those of the base model).
    width, depth : int
        Size of the head's UNet (input: the channels plus z_base; output: 2 maps).
    base : torch.nn.Module
        Frozen network mapping normalized inputs to z_base (a tuple's first element is used).
    log_var_init : float
        log sigma**2 where the head outputs 0 (its start: the head's last layer starts at zero).
    mean_correction : bool
        Whether the head may move the mean off z_base.
    """

    #: Training picks the best epoch by validation loss (NLL), not PSNR (:mod:`pandafine.training.train`).
    selects_by_loss = True

    def __init__(self, in_channels: int, width: int = 16, depth: int = 2, *, base: nn.Module,
                 log_var_init: float = -5.0, mean_correction: bool = True) -> None:
        super().__init__()
        if base is None:
            raise ValueError("key 'model.base_model': the heteroscedastic head needs a trained base model")
        self.base = base
        self.log_var_init = float(log_var_init)
        self.mean_correction = bool(mean_correction)
        self.head = UNet(in_channels + 1, width=width, depth=depth, out_channels=2)
        nn.init.zeros_(self.head.head.weight)
        nn.init.zeros_(self.head.head.bias)

    @property
    def multiple(self) -> int:
        return max(self.head.multiple, int(getattr(self.base, "multiple", 1)))

    def train(self, mode: bool = True):
        super().train(mode)
        self.base.eval()  # always the deterministic, inference-mode base
        return self

    def base_log(self, x: torch.Tensor) -> torch.Tensor:
        """z_base ``(B, 1, H, W)`` from normalized inputs ``x``."""
        with torch.no_grad():
            out = self.base(x)
        return (out[0] if isinstance(out, tuple) else out).detach()

    def predict(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mu, log sigma**2)``, each ``(B, 1, H, W)``, for normalized inputs ``x`` ``(B, C, H, W)``."""
        zb = self.base_log(x)
        out = self.head(torch.cat([x, zb], dim=1))
        d, s = out[:, :1], out[:, 1:2]
        mu = zb + d if self.mean_correction else zb
        return mu, torch.clamp(self.log_var_init + s, *LOG_VAR_RANGE)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The mean ``mu`` ``(B, 1, H, W)`` (the head as a deterministic model)."""
        return self.predict(x)[0]

    def training_loss(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Mean Gaussian NLL (without the constant) over the pixels with a finite target.

        ``x``: normalized inputs ``(B, C, H, W)``; ``target``: radiance ``(B, 1, H, W)``, NaN where
        there is none (the generative models' ``training_loss`` takes the same).
        """
        valid = torch.isfinite(target)
        z = radiance_to_log(torch.where(valid, target, torch.zeros_like(target)))
        mu, log_var = self.predict(x)
        nll = 0.5 * (log_var + (z - mu) ** 2 * torch.exp(-log_var))
        return torch.where(valid, nll, torch.zeros_like(nll)).sum() / valid.sum().clamp(min=1)


def build_hetero(model_cfg: Mapping[str, Any], in_channels: int, base: nn.Module) -> HeteroscedasticHead:
    """A :class:`HeteroscedasticHead` from a resolved ``model`` config section and its frozen base."""
    return HeteroscedasticHead(in_channels, int(model_cfg["width"]), int(model_cfg["depth"]), base=base,
                               log_var_init=float(model_cfg["log_var_init"]),
                               mean_correction=bool(model_cfg["mean_correction"]))


__all__ = ["HeteroscedasticHead", "build_hetero", "LOG_VAR_RANGE"]
