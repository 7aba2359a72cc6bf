"""A small 2D UNet predicting the log-radiance scale z = log1p(L / RADIANCE_REF)."""

from __future__ import annotations

import torch
from torch import nn

from pandafine.models.blocks import ConvBlock, Down, Up


class UNet(nn.Module):
    """Encoder-decoder with skip connections; one output channel (z) unless ``out_channels`` says otherwise.

    Level ``k`` (0 = full resolution) has ``width * 2**k`` channels; there are
    ``depth`` poolings, so the input height and width must be divisible by
    ``2**depth`` (:attr:`multiple`).

    Parameters
    ----------
    in_channels : int
        Number of input channels (normalized, NaN-free).
    width : int
        Channels at full resolution.
    depth : int
        Number of 2x downsamplings (>= 1).
    norm : {"none", "batch"}
        Normalization after each 3x3 convolution (see :mod:`pandafine.models.blocks`).
    out_channels : int
        Output channels of the final 1x1 convolution (1: z; 2: the heteroscedastic head's
        mean correction and log-variance).
    """

    def __init__(self, in_channels: int, width: int = 24, depth: int = 3, norm: str = "none",
                 out_channels: int = 1) -> None:
        super().__init__()
        if in_channels < 1 or width < 1 or depth < 1:
            raise ValueError(f"UNet needs in_channels, width and depth >= 1, got "
                             f"in_channels={in_channels} width={width} depth={depth}")
        self.in_channels, self.width, self.depth, self.norm = in_channels, width, depth, norm
        chans = [width * 2**k for k in range(depth + 1)]
        self.stem = ConvBlock(in_channels, chans[0], norm)
        self.downs = nn.ModuleList(Down(chans[k], chans[k + 1], norm) for k in range(depth))
        self.ups = nn.ModuleList(Up(chans[k + 1], chans[k], norm) for k in reversed(range(depth)))
        self.head = nn.Conv2d(chans[0], int(out_channels), 1)

    @property
    def multiple(self) -> int:
        """Input height and width must be multiples of this."""
        return 2**self.depth

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map ``(B, in_channels, H, W)`` to ``(B, out_channels, H, W)`` (z by default)."""
        skips = [self.stem(x)]
        for down in self.downs:
            skips.append(down(skips[-1]))
        y = skips.pop()
        for up in self.ups:
            y = up(y, skips.pop())
        return self.head(y)
