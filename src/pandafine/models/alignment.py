"""Spatial alignment blocks built on ``grid_sample`` (ONNX-exportable, no torchvision).

PANDA is a 1 km product nearest-upsampled to the 125 m working grid: its
8x8 blocks are not exactly co-registered with Landsat, and DMSP-like blooming
displaces bright areas. The blocks below warp PANDA feature maps onto the
Landsat geometry:

* :class:`AffineAlign` - a locally affine warp: one displacement per coarse cell,
  predicted from a fixed window of fused coarse features and interpolated
  bilinearly between cells; identity at initialization, independent of the
  tile extent.
* :class:`DeformableConv2d` - a 3x3 convolution whose nine taps are shifted by
  learned per-pixel offsets (offsets predicted by a convolution initialized to
  zero, so it starts as the plain convolution with the same weights).
* :class:`DeformationField` - a dense 2-channel flow (in pixels) applied with
  ``grid_sample``, with a total-variation smoothness penalty
  (:func:`flow_smoothness`); zero flow at initialization.

Every sampling uses 4-D ``grid_sample`` with ``align_corners=False``: pixel ``i``
of an axis of ``n`` pixels has the normalized coordinate ``(2 i + 1) / n - 1``,
so sampling exactly at pixel centres reproduces the input (a no-op warp).
Displacements are expressed in pixels of the feature map, so a learned shift
means the same ground distance whatever the tile size.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


def pixel_grid(height, width, *, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel-centre coordinates ``(ys (H, 1), xs (1, W))`` in pixels (float, dtype/device of ``like``)."""
    ys = torch.arange(height, dtype=like.dtype, device=like.device).view(-1, 1)
    xs = torch.arange(width, dtype=like.dtype, device=like.device).view(1, -1)
    return ys, xs


def sample_at(x: torch.Tensor, py: torch.Tensor, px: torch.Tensor, padding_mode: str = "border") -> torch.Tensor:
    """Bilinearly sample ``x`` (B, C, H, W) at pixel coordinates.

    Parameters
    ----------
    x : Tensor (B, C, H, W)
        Feature map.
    py, px : Tensor (B, Ho, Wo)
        Row and column (in pixels of ``x``, pixel centres at integers) to read
        for every output pixel.
    padding_mode : {"border", "zeros"}
        Value outside ``x``.

    Returns
    -------
    Tensor (B, C, Ho, Wo)
    """
    h, w = x.shape[-2], x.shape[-1]
    gx = (2.0 * px + 1.0) / w - 1.0
    gy = (2.0 * py + 1.0) / h - 1.0
    grid = torch.stack([gx, gy], dim=-1)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode=padding_mode, align_corners=False)


def warp(x: torch.Tensor, flow: torch.Tensor, padding_mode: str = "border") -> torch.Tensor:
    """``out[p] = x[p + flow[p]]`` (bilinear); ``flow`` (B, 2, H, W) is (dy, dx) in pixels."""
    ys, xs = pixel_grid(x.shape[-2], x.shape[-1], like=flow)
    return sample_at(x, ys + flow[:, 0], xs + flow[:, 1], padding_mode)


def flow_smoothness(flow: torch.Tensor) -> torch.Tensor:
    """Total variation of a flow (B, 2, H, W): mean absolute difference of neighbouring vectors.

    Zero exactly when the flow is constant; a scalar tensor.
    """
    dy = (flow[..., 1:, :] - flow[..., :-1, :]).abs().mean()
    dx = (flow[..., :, 1:] - flow[..., :, :-1]).abs().mean()
    return dy + dx


def cell_shift_to_flow(shift: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Upsample per-cell displacements ``(B, 2, h, w)`` to a flow of ``size`` (bilinear between cell centres).

    ``align_corners=False``: a cell's value sits at its centre and the map is
    continuous and piecewise bilinear, so within every 2 x 2 group of cell
    centres the warp is (bi)linear in position: locally affine.
    """
    return F.interpolate(shift, size=size, mode="bilinear", align_corners=False)


class AffineAlign(nn.Module):
    """Locally affine warp of a map, its displacement predicted per coarse cell from a fixed window of context.

    A single affine transform per sample (the tile mean of the context, the
    linear part pivoting on the tile centre) makes every pixel depend on the
    tile's extent: a 512 px inference tile moved a pixel's source by up to
    ``max_linear * 256`` px, where the 32-64 px training patches moved it by a
    few. Here each coarse cell of the context map gets its own displacement
    ``(dy, dx)``, read from the context features averaged over a fixed
    ``window x window`` neighbourhood of cells (``count_include_pad=False``:
    at a map edge, over the cells there are). The displacements are squashed
    to ``max_shift * tanh`` pixels of the warped map and interpolated
    bilinearly between cell centres (:func:`cell_shift_to_flow`), so the
    warp is locally affine and continuous, and a pixel's source depends only
    on the context within ``window // 2`` cells of it (plus the context
    network's own reach), never on where the tile starts or ends.

    The head is ``1x1 conv -> ReLU -> window mean -> 1x1 conv (2)``; the last
    convolution is zero-initialized, so the warp starts as the identity.

    Parameters
    ----------
    context_channels : int
        Channels of the features the displacement is predicted from.
    hidden : int
        Channels of the head.
    max_shift : float
        Largest displacement per axis, in pixels of the warped map.
    window : int
        Odd edge of the neighbourhood of context cells averaged for a cell's displacement.
    """

    def __init__(self, context_channels: int, hidden: int, max_shift: float = 1.0, window: int = 5) -> None:
        super().__init__()
        if window < 1 or window % 2 == 0:
            raise ValueError(f"AffineAlign window must be a positive odd number of cells, got {window}")
        self.context = nn.Conv2d(context_channels, hidden, 1)
        self.head = nn.Conv2d(hidden, 2, 1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)
        self.max_shift, self.window = float(max_shift), int(window)

    def cell_shift(self, context: torch.Tensor) -> torch.Tensor:
        """Per-cell displacements ``(B, 2, h, w)`` (dy, dx), in pixels of the warped map."""
        h = F.relu(self.context(context))
        h = F.avg_pool2d(h, self.window, stride=1, padding=self.window // 2, count_include_pad=False)
        return torch.tanh(self.head(h)) * self.max_shift

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(warped x, per-cell displacements)``: ``x`` (B, C, H, W) resampled through the local warp."""
        shift = self.cell_shift(context)
        return warp(x, cell_shift_to_flow(shift, x.shape[-2:])), shift


class DeformableConv2d(nn.Module):
    """3x3 deformable convolution on ``grid_sample`` (zero padding, stride 1).

    For every output pixel the nine taps are read at ``p + tap + offset`` with
    bilinear sampling, where the per-pixel, per-tap ``offset`` (in pixels) is
    predicted by a 3x3 convolution of a guide map (zero-initialized), and
    combined by the convolution weights (a 1x1 convolution over the nine sampled
    copies). With zero offsets it equals ``F.conv2d(x, weight, bias, padding=1)``.
    With ``deformable=False`` it *is* that plain convolution (no offset branch).

    Parameters
    ----------
    in_channels, out_channels : int
        Channels in and out.
    guide_channels : int
        Channels of the map the offsets are predicted from (0: from ``x`` itself).
    deformable : bool
        Learn offsets (True) or be a plain 3x3 convolution (False).
    max_offset : float
        Bound of every offset, in pixels (``max_offset * tanh(raw / max_offset)``:
        the identity for small offsets, and no sampling far outside the taps,
        which made training stall in our runs).
    """

    TAPS = tuple((dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1))  # row-major, as conv weights

    def __init__(self, in_channels: int, out_channels: int, guide_channels: int = 0, deformable: bool = True,
                 max_offset: float = 2.0) -> None:
        super().__init__()
        self.max_offset = float(max_offset)
        ref = nn.Conv2d(in_channels, out_channels, 3, padding=1)  # default initialization of a conv
        self.weight = nn.Parameter(ref.weight.detach().clone())
        self.bias = nn.Parameter(ref.bias.detach().clone())
        self.deformable = bool(deformable)
        if self.deformable:
            self.offset = nn.Conv2d(in_channels + guide_channels, 2 * len(self.TAPS), 3, padding=1)
            nn.init.zeros_(self.offset.weight)
            nn.init.zeros_(self.offset.bias)

    def forward(self, x: torch.Tensor, guide: torch.Tensor | None = None) -> torch.Tensor:
        """Convolve ``x`` (B, C, H, W); ``guide`` (B, G, H, W) feeds the offset predictor."""
        if not self.deformable:
            return F.conv2d(x, self.weight, self.bias, padding=1)
        offsets = self.offset(x if guide is None else torch.cat([x, guide], dim=1))
        return self.deform(x, self.max_offset * torch.tanh(offsets / self.max_offset))

    def deform(self, x: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        """The deformable convolution with given ``offsets`` (B, 18, H, W): (dy, dx) per tap, in pixels."""
        ys, xs = pixel_grid(x.shape[-2], x.shape[-1], like=x)
        # one sampled copy per tap, concatenated tap-major: weight reordered to (O, tap, C)
        samples = [sample_at(x, ys + dy + offsets[:, 2 * k], xs + dx + offsets[:, 2 * k + 1], padding_mode="zeros")
                   for k, (dy, dx) in enumerate(self.TAPS)]
        o, c = self.weight.shape[0], self.weight.shape[1]
        weight = self.weight.permute(0, 2, 3, 1).reshape(o, len(self.TAPS) * c, 1, 1)
        return F.conv2d(torch.cat(samples, dim=1), weight, self.bias)


class DeformationField(nn.Module):
    """Dense local warp: a 3x3 convolution of ``[x, guide]`` predicts a flow (dy, dx) in pixels.

    The flow convolution is zero-initialized, so the warp starts as a no-op.
    ``forward`` returns the warped map and the flow (for :func:`flow_smoothness`).

    Parameters
    ----------
    in_channels : int
        Channels of the warped map.
    guide_channels : int
        Channels of the guide (reference geometry) map.
    max_flow : float
        Bound of the flow, in pixels (``max_flow * tanh(raw / max_flow)``).
    """

    def __init__(self, in_channels: int, guide_channels: int, max_flow: float = 2.0) -> None:
        super().__init__()
        self.max_flow = float(max_flow)
        self.flow = nn.Conv2d(in_channels + guide_channels, 2, 3, padding=1)
        nn.init.zeros_(self.flow.weight)
        nn.init.zeros_(self.flow.bias)

    def forward(self, x: torch.Tensor, guide: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        flow = self.max_flow * torch.tanh(self.flow(torch.cat([x, guide], dim=1)) / self.max_flow)
        return warp(x, flow), flow
