"""Building blocks shared by the image-to-image models.

Every block is a plain ``torch.nn.Module`` made of ONNX-exportable operators
(Conv, Relu, MaxPool, Resize, Concat, optionally BatchNormalization).

Normalization (``norm``): ``"none"`` (default) or ``"batch"``. Instance- or
group-normalization is deliberately not offered: it normalizes over the spatial
extent of the input, so a pixel's prediction would depend on the tile it is
predicted in, and overlapping inference tiles would disagree (seams). BatchNorm
is a per-channel affine map at inference (the exporter folds it into the
convolutions), but its running statistics, estimated from small batches of
mostly dark patches, made the validation PSNR jump by several dB between
epochs in our runs; without normalization training was as good, smoother and
faster, hence the default.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

NORMS = ("none", "batch")


def conv_norm_relu(in_channels: int, out_channels: int, norm: str = "none") -> list[nn.Module]:
    """``3x3 conv [-> BatchNorm] -> ReLU`` as a list of layers."""
    if norm not in NORMS:
        raise ValueError(f"unknown normalization {norm!r} (available: {', '.join(NORMS)})")
    if norm == "batch":
        return [nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False), nn.BatchNorm2d(out_channels),
                nn.ReLU(inplace=True)]
    return [nn.Conv2d(in_channels, out_channels, 3, padding=1), nn.ReLU(inplace=True)]


class ConvBlock(nn.Sequential):
    """Two ``3x3 conv [-> BatchNorm] -> ReLU`` layers.

    Parameters
    ----------
    in_channels, out_channels : int
        Channels in and out.
    norm : {"none", "batch"}
        Normalization after each convolution.
    """

    def __init__(self, in_channels: int, out_channels: int, norm: str = "none") -> None:
        super().__init__(*conv_norm_relu(in_channels, out_channels, norm),
                         *conv_norm_relu(out_channels, out_channels, norm))


class Down(nn.Module):
    """Halve the resolution (2x2 max pooling), then a :class:`ConvBlock`."""

    def __init__(self, in_channels: int, out_channels: int, norm: str = "none") -> None:
        super().__init__()
        self.pool = nn.MaxPool2d(2)
        self.conv = ConvBlock(in_channels, out_channels, norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.pool(x))


class Up(nn.Module):
    """Bilinear upsampling to the skip connection's size, 1x1 channel reduction,
    concatenation with the skip, then a :class:`ConvBlock`.

    Reducing the channels *before* concatenating (``in_channels -> skip_channels``
    with a 1x1 convolution, applied at the coarse resolution where it is cheap)
    keeps the decoder's 3x3 convolutions at ``2 * skip_channels`` inputs.

    Parameters
    ----------
    in_channels : int
        Channels of the coarse input.
    skip_channels : int
        Channels of the skip connection (and of the output).
    norm : {"none", "batch"}
        Normalization inside the :class:`ConvBlock`.
    """

    def __init__(self, in_channels: int, skip_channels: int, norm: str = "none") -> None:
        super().__init__()
        self.reduce = nn.Conv2d(in_channels, skip_channels, 1)
        self.conv = ConvBlock(2 * skip_channels, skip_channels, norm)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = self.reduce(x)
        x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        return self.conv(torch.cat([x, skip], dim=1))
