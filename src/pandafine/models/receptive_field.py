"""The receptive field of a trained network, measured from its gradients, and the tile size it needs.

Tiled inference (:mod:`pandafine.inference`) cuts a region into square tiles and
runs each one alone: an output pixel whose context reaches past its tile's edge
is computed from the network's zero padding instead of the scene. How far the
context of a pixel reaches is the network's receptive field. The theoretical
field (every input pixel that can reach the output) of a UNet of depth 3 is
more than 100 pixels wide, but a trained network draws almost all of a pixel's
value from a much smaller neighbourhood, its *effective receptive field*
(Luo et al. 2016, "Understanding the effective receptive field in deep
convolutional neural networks"). That is what this module measures.

Definition (:func:`measure_receptive_field`). For each of a few input images,
embedded (mirrored) in a larger canvas:

1. the output pixel with the largest prediction inside the image (where the
   light is; a dark pixel often has every ReLU of the head off and a zero
   gradient);
2. the absolute gradient of that output with respect to the network's inputs,
   summed over the channels (eval mode, fixed weights: deterministic);
3. the gradient mass within Chebyshev distance ``r`` of the pixel, i.e. in the
   ``(2r + 1) x (2r + 1)`` square centred on it (tiles are square), summed over
   the images.

The *receptive radius* is the smallest ``r`` whose square holds
:data:`RF_MASS_FRACTION` (99 %) of the mass; the *receptive field* is the side
of that square, ``2r + 1`` pixels. ``fraction=1`` gives the support of the
gradient instead (the theoretical field, as far as the canvas reaches). Parts
with a global reach (a tile mean, global pooling or attention) spread their
share of the mass thinly over the whole canvas, so they lengthen the radius
only when they hold more than 1 % of the mass; the radius is then a finite
number that grows with the canvas. The canvas is doubled (up to
:data:`RF_MAX_CANVAS`) until the square of the radius fits in half the room
around the image; otherwise :attr:`ReceptiveField.complete` is false and the
radius is a lower bound.

The tile rule (:func:`tile_error`): a tile smaller than the receptive field
leaves no pixel of it with its whole context, so every prediction is made partly
from padding; such a tile is refused. Overlap does not enter the rule: it does
not change the context a tile gives its inner pixels, it only sets how much the
edge pixels weigh in the blend (and more overlap measurably loses less light
at a given tile size). :func:`overlap_warning` says when the overlap is too
narrow to hide the tile edges.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np

#: Share of an output pixel's gradient mass that its receptive field holds.
RF_MASS_FRACTION = 0.99
#: Input images the gradient mass is summed over.
RF_SAMPLES = 4
#: Side of the first canvas the images are embedded in (pixels).
RF_CANVAS = 128
#: Largest canvas side tried before the radius is reported as a lower bound.
RF_MAX_CANVAS = 512
#: ONNX metadata key (``model.onnx``) holding the receptive field in working-grid pixels.
RF_METADATA_KEY = "pandafine.receptive_field_px"


@dataclass(frozen=True)
class ReceptiveField:
    """A measured receptive field (see the module docstring).

    Attributes
    ----------
    radius : int
        Smallest Chebyshev radius (pixels) holding ``fraction`` of the gradient mass.
    fraction : float
        Share of the gradient mass the field holds.
    canvas : int
        Side of the (square) canvas the radius was measured on.
    samples : int
        Number of input images (output pixels) summed over.
    mass : float
        Total absolute gradient mass measured (0: the outputs do not depend on the inputs).
    complete : bool
        Whether the radius's square fits in half the room around the images; if not,
        ``radius`` is a lower bound.
    """

    radius: int
    fraction: float
    canvas: int
    samples: int
    mass: float
    complete: bool

    @property
    def px(self) -> int:
        """The receptive field: side ``2 * radius + 1`` of its square, in pixels."""
        return receptive_field_px(self.radius)

    def to_dict(self) -> dict:
        """Plain values for ``export.json``: the fields and ``px``."""
        return {"px": self.px, **asdict(self)}


def receptive_field_px(radius: int) -> int:
    """Side of the square of Chebyshev radius ``radius``: ``2 * radius + 1``."""
    return 2 * int(radius) + 1


def cumulative_mass(grad: np.ndarray, positions: Sequence[tuple[int, int]], max_radius: int) -> np.ndarray:
    """Gradient mass within Chebyshev distance ``r`` of each image's position, summed over the images.

    Parameters
    ----------
    grad : numpy.ndarray
        (B, H, W) non-negative gradient magnitudes.
    positions : sequence of (int, int)
        One (row, col) per image: the output pixel the gradient is of.
    max_radius : int
        Largest radius; squares are clipped at the array's border.

    Returns
    -------
    numpy.ndarray
        float64 array of length ``max_radius + 1``: element ``r`` is the summed mass of the
        ``(2r + 1) x (2r + 1)`` squares centred on the positions.
    """
    grad = np.asarray(grad, dtype=np.float64)
    if grad.ndim != 3 or len(positions) != grad.shape[0]:
        raise ValueError(f"gradient maps (B, H, W) and one position per map needed, got shape {grad.shape} "
                         f"and {len(positions)} position(s)")
    _, h, w = grad.shape
    r = np.arange(int(max_radius) + 1)
    out = np.zeros(r.size)
    for g, (row, col) in zip(grad, positions):
        integral = np.zeros((h + 1, w + 1))
        integral[1:, 1:] = g.cumsum(0).cumsum(1)
        r0, r1 = np.clip(row - r, 0, h), np.clip(row + r + 1, 0, h)
        c0, c1 = np.clip(col - r, 0, w), np.clip(col + r + 1, 0, w)
        out += integral[r1, c1] - integral[r0, c1] - integral[r1, c0] + integral[r0, c0]
    return out


def mass_radius(cumulative: np.ndarray, fraction: float = RF_MASS_FRACTION) -> int:
    """Smallest radius whose mass reaches ``fraction`` of the largest one (0 if there is no mass).

    ``cumulative`` is as from :func:`cumulative_mass` (non-decreasing); its last
    element is taken as the total. ``fraction=1`` gives the support's radius (a
    relative tolerance of 1e-9 absorbs the rounding of the sums).
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    cumulative = np.asarray(cumulative, dtype=np.float64)
    total = float(cumulative[-1])
    if not total > 0:
        return 0
    return int(np.argmax(cumulative >= fraction * total * (1 - 1e-9)))


def embed(images: np.ndarray, size: int) -> np.ndarray:
    """Centre (B, C, h, w) images in a ``size x size`` canvas filled by mirroring them (symmetric padding)."""
    _, _, h, w = images.shape
    if size < max(h, w):
        raise ValueError(f"canvas {size} px is smaller than the images ({h}x{w})")
    top, left = (size - h) // 2, (size - w) // 2
    pad = ((0, 0), (0, 0), (top, size - h - top), (left, size - w - left))
    return np.ascontiguousarray(np.pad(images, pad, mode="symmetric"), dtype=np.float32)


def brightest_samples(images: np.ndarray, n: int = RF_SAMPLES, channel: int = 0) -> np.ndarray:
    """Indices of the ``n`` images with the largest mean of ``channel`` (NaN ignored), brightest first.

    Ties keep the images' order, so the choice is deterministic.
    """
    values = np.asarray(images[:, channel], dtype=np.float64).reshape(len(images), -1)
    finite = np.isfinite(values)
    counts = finite.sum(axis=1)
    sums = np.where(finite, values, 0.0).sum(axis=1)
    means = np.where(counts > 0, sums / np.maximum(counts, 1), -np.inf)
    return np.argsort(-means, kind="stable")[:n]


def _round_up(value: int, multiple: int) -> int:
    return -(-int(value) // multiple) * multiple


def _gradient_maps(net, canvas: np.ndarray, window: tuple[int, int, int, int]):
    """``(|d out / d x| summed over channels (B, H, W), positions)`` at each image's brightest output in ``window``."""
    import torch

    r0, r1, c0, c1 = window
    x = torch.from_numpy(canvas).requires_grad_(True)
    with torch.enable_grad():
        out = net(x)
        if out.ndim != 4 or out.shape[1] != 1 or out.shape[0] != x.shape[0]:
            raise ValueError(f"receptive field: the network must map (B, C, H, W) to (B, 1, H, W), "
                             f"got {tuple(out.shape)} for {tuple(x.shape)}")
        inner = out[:, 0, r0:r1, c0:c1].detach()
        flat = inner.reshape(inner.shape[0], -1).argmax(dim=1)
        rows, cols = flat // inner.shape[-1] + r0, flat % inner.shape[-1] + c0
        picked = out[torch.arange(out.shape[0]), 0, rows, cols]
        (grad,) = torch.autograd.grad(picked.sum(), x)
    positions = [(int(r), int(c)) for r, c in zip(rows, cols)]
    return grad.abs().sum(dim=1).numpy(), positions


def measure_receptive_field(net, images: np.ndarray, *, fraction: float = RF_MASS_FRACTION,
                            canvas: int = RF_CANVAS, max_canvas: int = RF_MAX_CANVAS,
                            multiple: int = 1) -> ReceptiveField:
    """The effective receptive field of ``net`` (see the module docstring).

    Parameters
    ----------
    net : torch.nn.Module
        Maps ``(B, C, H, W)`` to ``(B, 1, H, W)``; put in eval mode here. Images of
        a batch must not interact (no batch statistics), which holds in eval mode.
    images : numpy.ndarray
        (B, C, h, w) NaN-free inputs of ``net`` (e.g. normalized patches); each is
        mirrored into a square canvas, and its own brightest output pixel is measured.
    fraction : float
        Share of the gradient mass the field holds, in (0, 1].
    canvas : int
        Side of the first canvas (raised to hold the images and to a multiple of ``multiple``).
    max_canvas : int
        The canvas is doubled while the radius's square does not fit in half the room
        around the images, up to this side.
    multiple : int
        Canvas sides are multiples of this (the network's input size multiple).

    Returns
    -------
    ReceptiveField
    """
    images = np.asarray(images, dtype=np.float32)
    if images.ndim != 4 or not len(images):
        raise ValueError(f"receptive field: images must be (B, C, h, w) with B >= 1, got shape {images.shape}")
    if not np.isfinite(images).all():
        raise ValueError("receptive field: images must be finite (normalize them and fill nodata first)")
    _, _, h, w = images.shape
    multiple = max(1, int(multiple))
    size = _round_up(max(int(canvas), max(h, w) + 2 * multiple), multiple)
    net.eval()
    while True:
        top, left = (size - h) // 2, (size - w) // 2
        grad, positions = _gradient_maps(net, embed(images, size), (top, top + h, left, left + w))
        max_radius = min(top, size - h - top, left, size - w - left)
        cum = cumulative_mass(grad, positions, max_radius)
        radius = mass_radius(cum, fraction)
        complete = 2 * radius <= max_radius
        if complete or 2 * size > max_canvas:
            return ReceptiveField(radius=radius, fraction=float(fraction), canvas=size, samples=len(images),
                                  mass=float(cum[-1]), complete=complete)
        size *= 2


def min_tile(receptive_px: int, multiple: int = 8) -> int:
    """Smallest tile side (a multiple of ``multiple``) holding a receptive field of ``receptive_px`` pixels."""
    return max(int(multiple), _round_up(receptive_px, max(1, int(multiple))))


def tile_error(tile: int, receptive_px: int, *, multiple: int = 8, source: str = "model") -> str | None:
    """The error message if an ``infer.tile`` of ``tile`` px cannot hold the receptive field, else None.

    A tile smaller than the field leaves none of its pixels its whole context
    (every prediction is made partly from the network's zero padding); the
    overlap cannot mend that (see the module docstring).
    """
    if int(tile) >= int(receptive_px):
        return None
    radius = (int(receptive_px) - 1) // 2
    return (f"key 'infer.tile': value {tile} is smaller than the receptive field of {source}, "
            f"{receptive_px} px ({RF_MASS_FRACTION:.0%} of the gradient of an output pixel lies within "
            f"{radius} px of it): no pixel of a tile would see its whole context, and tiled predictions "
            f"lose light against one-tile ones; use infer.tile >= {min_tile(receptive_px, multiple)} "
            f"(a multiple of {multiple})")


def overlap_warning(tile: int, overlap: int, receptive_px: int) -> str | None:
    """A note if the tile overlap (pixels) is narrower than the receptive field, else None.

    Midway between two tile centres a pixel is ``overlap / 2`` px from the edge
    of both tiles that cover it; with less than the receptive radius there, no
    tile gives it its whole context, and the blend can only average two
    truncated predictions.
    """
    shared = int(overlap)
    radius = (int(receptive_px) - 1) // 2
    if shared >= 2 * radius:
        return None
    return (f"infer.tile {tile} with infer.overlap {shared} px: pixels midway between tile centres are "
            f"{shared // 2} px from both tiles' edges, less than the receptive radius {radius} px, so tile "
            f"edges may show (an overlap of {2 * radius} px or more hides them: raise infer.overlap or infer.tile)")


__all__ = ["RF_MASS_FRACTION", "RF_SAMPLES", "RF_CANVAS", "RF_MAX_CANVAS", "RF_METADATA_KEY", "ReceptiveField",
           "receptive_field_px", "cumulative_mass", "mass_radius", "embed", "brightest_samples",
           "measure_receptive_field", "min_tile", "tile_error", "overlap_warning"]
