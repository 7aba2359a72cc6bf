"""MMNTLSR: multimodal nighttime-light super-resolution with switchable parts.

The network receives the full normalized stack ``(B, C, H, W)`` on the working
grid (channel order :data:`pandafine.core.channels.CHANNELS`) and splits it into
modalities, each with its own encoder suited to its resolution:

* **Landsat** (``coastal .. swir2, landsat_clear_count``; 30 m resampled to the
  grid): the stem of the main stream at full resolution; below level 0 the
  main stream is the *fused* features of the level above, downsampled
  (``depth`` 2x levels, ``width * 2**k`` channels at level ``k``);
* **DEM**: a light encoder (one 3x3 convolution per level, ``width * 2**k / 4``
  channels);
* **PANDA** (``panda, panda_saturated``; 1 km, 8x8-blocky on the grid): average
  pooled by 8 and encoded at 1 km by three 3x3 convolutions (the last dilated:
  a receptive field of 9 cells), resampled to every level and added to a
  full-resolution stem of the raw channels, average pooled to the level (the
  stem sees where a pixel sits within its cell).

Switchable parts (``modules`` dict, all on by default; see :data:`DEFAULT_MODULES`):

``fusion``
    Per-level multimodality fusion, from high to low resolution
    (:class:`ModalityFusion`): a per-pixel softmax gate over the PANDA and DEM
    features, mixed with the main stream, re-weighted by a local channel
    attention and added to the main stream. Off: the level's features are
    concatenated and mixed by a 1x1 convolution.
``affine``
    :class:`~pandafine.models.alignment.AffineAlign` of the raw PANDA channels
    (before both PANDA encoders): a locally affine warp, one displacement per
    1 km cell predicted by 3x3 convolutions from PANDA and Landsat at 1 km and
    averaged over :data:`AFFINE_WINDOW` x :data:`AFFINE_WINDOW` cells.
``deformable``
    The per-level PANDA convolution at levels 1.. is a
    :class:`~pandafine.models.alignment.DeformableConv2d` guided by the main
    stream (off, and at level 0: the plain 3x3 convolution).
``deformation_field``
    A dense flow warping the PANDA features at levels 1..
    (:class:`~pandafine.models.alignment.DeformationField`), with a total
    variation penalty returned in the auxiliary outputs.
``auxiliary``
    A head predicting where PANDA saturates (logit) and how bright the scene
    truly is there (a z map); both maps are extra inputs of the
    super-resolution head. Losses: :func:`auxiliary_losses`.
``multiscale``
    z predictions at 1/2 and 1/4 resolution from the decoder (training only);
    loss: :func:`multiscale_loss`.
``modulation``
    Global intensity x local pattern: a 1x1 head on the deepest fused level
    (1/2**depth resolution) gives a log-intensity map ``a``, upsampled
    bilinearly; the output is ``z = softplus(a + b)`` with ``b`` the local
    log-pattern, i.e. radiance / RADIANCE_REF = exp(a) * exp(b): a smooth
    brightness level times a fine pattern. Off: ``z = b``.
``local_pattern``
    A term of the local pattern ``b`` read straight from the surface: a small
    network over the Landsat and DEM channels of each pixel and its eight
    neighbours (:class:`LocalPattern`: one 3x3 convolution, then 1x1), added to
    the super-resolution head's map. With ``modulation`` it scales the radiance
    multiplicatively, as the impervious / vegetation / soil / water mix of a
    pixel does: a 1-2 px river through a saturated city core stays dark whatever
    PANDA says, which the deep decoder alone blurs away. Without ``modulation``
    it is only an additive term on z (on the benchmark, seed 42, a per-pixel version
    gained a third of what it gains with ``modulation``).

No part uses statistics over the whole tile (the affine alignment averages a
fixed window of cells, not the tile), so overlapping inference tiles agree
wherever both see a pixel's whole context.
With every switch off the network is a concatenation encoder-decoder.

In training mode ``forward`` returns ``(z, aux)``; in eval mode (and in the
exported ONNX graph) only z ``(B, 1, H, W)``, z = log1p(L / RADIANCE_REF).
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from pandafine.core.channels import CHANNELS, DEM_CHANNELS, LANDSAT_CHANNELS, PANDA_CHANNELS
from pandafine.core.scaling import radiance_to_log
from pandafine.models.alignment import AffineAlign, DeformableConv2d, DeformationField, flow_smoothness
from pandafine.models.blocks import ConvBlock, Down, Up

#: The switches of :class:`MMNTLSR` and their defaults.
DEFAULT_MODULES: dict[str, bool] = {"fusion": True, "affine": True, "deformable": True,
                                    "deformation_field": True, "auxiliary": True, "multiscale": True,
                                    "modulation": True, "local_pattern": True}
#: Weights of the extra training loss terms (:func:`loss_terms`) added to the L1 on z.
DEFAULT_LOSS_WEIGHTS: dict[str, float] = {"saturation": 0.1, "bright": 0.1, "multiscale": 0.25, "smoothness": 0.01,
                                          "floor": 1.0}
#: Lowest pre-activation ``u`` of ``z = softplus(u)`` (``modulation``) the ``floor`` loss term lets pass
#: unpenalized: softplus(-6) = 0.0025, i.e. 2.5e-8 W m-2 sr-1 um-1, below any lit pixel. Without it
#: the L1 on z, three quarters of whose targets are 0, drives u of every pixel to -11 or lower in the
#: first epoch on some seeds, where softplus's slope (e**u) leaves Adam's step nothing to act on: the
#: model stays at a constant z ~ 0 for good (the demo at run.seed 42 after the tile-invariant
#: alignment, the benchmark at run.seed 2).
SOFTPLUS_FLOOR = -6.0
#: Hidden channels of :class:`LocalPattern`.
LOCAL_PATTERN_HIDDEN = 32
#: PANDA pixel size in working-grid pixels (1 km / 125 m).
PANDA_FACTOR = 8
#: Edge, in 1 km cells, of the context window each cell's affine displacement is predicted from.
AFFINE_WINDOW = 5
#: Scales (downsampling factors) of the multi-scale outputs.
MULTISCALE_FACTORS = (2, 4)


def resolve_modules(modules: Mapping[str, Any] | None) -> dict[str, bool]:
    """``DEFAULT_MODULES`` updated with ``modules``; unknown names raise ``ValueError``."""
    modules = dict(modules or {})
    unknown = sorted(set(modules) - set(DEFAULT_MODULES))
    if unknown:
        raise ValueError(f"key 'model.modules': unknown switch(es) {', '.join(unknown)} "
                         f"(available: {', '.join(DEFAULT_MODULES)})")
    bad = {k: v for k, v in modules.items() if not isinstance(v, bool)}
    if bad:
        raise ValueError(f"key 'model.modules': switches must be true/false, got {bad}")
    return {**DEFAULT_MODULES, **modules}


def _channel_slice(channels: Sequence[str], names: Sequence[str]) -> slice:
    """Contiguous slice of ``names`` within ``channels``."""
    missing = [n for n in names if n not in channels]
    if missing:
        raise ValueError(f"MMNTLSR input channels {list(channels)} lack {missing}")
    idx = [list(channels).index(n) for n in names]
    if idx != list(range(idx[0], idx[0] + len(idx))):
        raise ValueError(f"MMNTLSR needs channels {list(names)} contiguous and in order, got positions {idx}")
    return slice(idx[0], idx[-1] + 1)


def _halve(x: torch.Tensor, times: int) -> torch.Tensor:
    """``times`` successive 2x2 average poolings (= one ``2**times`` average pooling when the size divides).

    Pooling in 2x steps gives the same symbolic sizes as the 2x encoder levels,
    which keeps the height and width dynamic in the exported graph.
    """
    for _ in range(times):
        x = F.avg_pool2d(x, 2)
    return x


def _conv_relu(cin: int, cout: int, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=dilation, dilation=dilation), nn.ReLU(inplace=True))


class ModalityFusion(nn.Module):
    """Fuse per-modality feature maps of one level into the main stream's ``out_channels``.

    The first map is the main stream (Landsat at level 0, the fused features
    carried down below it), the others are the modality features of the level.
    ``fusion=True``: every map projected to ``out_channels`` (1x1; identity
    when it already has them), a per-pixel softmax over the modalities (gate
    from the concatenated projections) weights the non-main ones, their
    gated sum is mixed with the main stream (1x1 on the concatenation, ReLU),
    re-weighted by a local channel attention (``sigmoid(1x1 -> ReLU -> 1x1)``)
    and *added* to the main stream (residual fusion: the main stream is never
    averaged away). ``fusion=False``: concatenation, 1x1 convolution, ReLU.
    """

    def __init__(self, in_channels: Sequence[int], out_channels: int, fusion: bool = True) -> None:
        super().__init__()
        self.fusion = bool(fusion)
        if self.fusion:
            self.proj = nn.ModuleList(nn.Identity() if c == out_channels else nn.Conv2d(c, out_channels, 1)
                                      for c in in_channels[1:])
            self.gate = nn.Conv2d(len(in_channels) * out_channels, len(in_channels) - 1, 1)
            self.mix = nn.Sequential(nn.Conv2d(2 * out_channels, out_channels, 1), nn.ReLU(inplace=True))
            hidden = max(4, out_channels // 4)
            self.attention = nn.Sequential(nn.Conv2d(out_channels, hidden, 1), nn.ReLU(inplace=True),
                                           nn.Conv2d(hidden, out_channels, 1), nn.Sigmoid())
        else:
            self.mix = nn.Sequential(nn.Conv2d(sum(in_channels), out_channels, 1), nn.ReLU(inplace=True))

    def forward(self, feats: Sequence[torch.Tensor]) -> torch.Tensor:
        if not self.fusion:
            return self.mix(torch.cat(list(feats), dim=1))
        main, others = feats[0], [p(f) for p, f in zip(self.proj, feats[1:])]
        weights = torch.softmax(self.gate(torch.cat([main, *others], dim=1)), dim=1)
        gated = others[0] * weights[:, 0:1]
        for m in range(1, len(others)):
            gated = gated + others[m] * weights[:, m:m + 1]
        mixed = self.mix(torch.cat([main, gated], dim=1))
        return main + mixed * self.attention(mixed)


class LocalPattern(nn.Module):
    """Log-brightness term of each pixel from the Landsat and DEM values of its 3x3 neighbourhood.

    One 3x3 convolution and two 1x1 convolutions (ReLU between them) map the
    normalized channels to one value, so the term sees only what the surface
    within 375 m of the pixel is made of (impervious surface, vegetation, soil,
    water): a strong prior that needs few training pixels, cannot blur a 1-2 px
    river or road away, and absorbs the sub-pixel blur and shift of the ~130 m
    Luojia-01 target.
    """

    def __init__(self, in_channels: int, hidden: int = LOCAL_PATTERN_HIDDEN) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Conv2d(in_channels, hidden, 3, padding=1), nn.ReLU(inplace=True),
                                 nn.Conv2d(hidden, hidden, 1), nn.ReLU(inplace=True), nn.Conv2d(hidden, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(x)


class PandaLevel(nn.Module):
    """Align the resampled PANDA features of one level to Landsat: flow warp, then (deformable) 3x3 conv."""

    def __init__(self, panda_channels: int, landsat_channels: int, deformable: bool, deformation_field: bool) -> None:
        super().__init__()
        guided = deformable or deformation_field
        self.guide = nn.Conv2d(landsat_channels, panda_channels, 1) if guided else None
        self.field = DeformationField(panda_channels, panda_channels) if deformation_field else None
        self.conv = DeformableConv2d(panda_channels, panda_channels, panda_channels if deformable else 0,
                                     deformable=deformable)

    def forward(self, p: torch.Tensor, landsat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        guide = self.guide(landsat) if self.guide is not None else None
        flow = None
        if self.field is not None:
            p, flow = self.field(p, guide)
        p = F.relu(self.conv(p, guide if self.conv.deformable else None))
        return p, flow


class MMNTLSR(nn.Module):
    """Multimodal nighttime-light super-resolution network (see the module docstring).

    Parameters
    ----------
    in_channels : int
        Number of input channels; must equal ``len(channels)``.
    width : int
        Channels of the full-resolution level (level ``k`` has ``width * 2**k``).
    depth : int
        Number of 2x downsamplings (>= 1).
    modules : mapping of str to bool, optional
        Switches (:data:`DEFAULT_MODULES`); missing ones take their defaults.
    channels : sequence of str
        Channel names of the input, in order (default :data:`pandafine.core.channels.CHANNELS`).
    max_shift : float
        Largest displacement (per axis) of the affine alignment, in working-grid pixels.
    """

    def __init__(self, in_channels: int, width: int = 16, depth: int = 3, modules: Mapping[str, Any] | None = None,
                 channels: Sequence[str] = CHANNELS, max_shift: float = 8.0) -> None:
        super().__init__()
        if width < 1 or depth < 1:
            raise ValueError(f"MMNTLSR needs width and depth >= 1, got width={width} depth={depth}")
        if in_channels != len(channels):
            raise ValueError(f"MMNTLSR: in_channels={in_channels} but {len(channels)} channel names {list(channels)}")
        self.in_channels, self.width, self.depth = in_channels, width, depth
        self.switches = resolve_modules(modules)
        sw = self.switches
        self._panda = _channel_slice(channels, PANDA_CHANNELS)
        self._landsat = _channel_slice(channels, LANDSAT_CHANNELS)
        self._dem = _channel_slice(channels, DEM_CHANNELS)

        chans = [width * 2**k for k in range(depth + 1)]
        dem_chans = [max(4, c // 4) for c in chans]
        pc = width  # PANDA feature channels (1 km information is low-dimensional)

        # encoders: the main stream starts from Landsat and, below level 0, carries the fused features down
        self.landsat_stem = ConvBlock(len(LANDSAT_CHANNELS), chans[0])
        self.landsat_downs = nn.ModuleList(Down(chans[k], chans[k + 1]) for k in range(depth))
        self.dem_stem = _conv_relu(len(DEM_CHANNELS), dem_chans[0])
        self.dem_downs = nn.ModuleList(_conv_relu(dem_chans[k], dem_chans[k + 1]) for k in range(depth))
        # PANDA: a 1 km context encoder (wide receptive field on the cell means) and a full-resolution
        # stem that sees the 8x8 cells as they lie on the grid (where a pixel sits within its cell)
        self.panda_encoder = nn.Sequential(_conv_relu(len(PANDA_CHANNELS), pc), _conv_relu(pc, pc),
                                           _conv_relu(pc, pc, dilation=2))
        self.panda_stem = ConvBlock(len(PANDA_CHANNELS), pc)
        # alignment of PANDA: a locally affine warp (a displacement per 1 km cell from a fixed window of
        # context, interpolated between cells), predicted from PANDA and Landsat at 1 km by 3x3
        # convolutions (a shift between the two is a spatial relation, which a 1x1 head cannot see) and
        # applied to the full-resolution PANDA channels before both PANDA encoders
        if sw["affine"]:
            n_ctx = len(PANDA_CHANNELS) + len(LANDSAT_CHANNELS)
            self.affine_context = nn.Sequential(_conv_relu(n_ctx, pc), _conv_relu(pc, pc),
                                                _conv_relu(pc, pc, dilation=2))
            self.affine = AffineAlign(pc, pc, max_shift=max_shift, window=AFFINE_WINDOW)
        else:
            self.affine_context, self.affine = None, None
        # local alignment (deformable conv, deformation field) at levels 1.. (250 m and coarser: PANDA
        # carries 1 km information, and level 0 would cost 4x level 1); level 0 gets a plain 3x3 conv
        self.panda_levels = nn.ModuleList(PandaLevel(pc, chans[k], sw["deformable"] and k > 0,
                                                     sw["deformation_field"] and k > 0)
                                          for k in range(depth + 1))
        # fusion at every level, from high to low resolution
        self.fusions = nn.ModuleList(ModalityFusion((chans[k], pc, dem_chans[k]), chans[k], sw["fusion"])
                                     for k in range(depth + 1))
        # decoder and heads
        self.ups = nn.ModuleList(Up(chans[k + 1], chans[k]) for k in reversed(range(depth)))
        if sw["auxiliary"]:
            self.aux_head = nn.Sequential(_conv_relu(chans[0], chans[0]), nn.Conv2d(chans[0], 2, 1))
            with torch.no_grad():
                self.aux_head[-1].bias[0] = -3.0  # start with a low saturation probability
        else:
            self.aux_head = None
        head_in = chans[0] + (2 if sw["auxiliary"] else 0)  # the auxiliary maps are inputs of the SR head
        self.sr_head = nn.Sequential(_conv_relu(head_in, chans[0]), nn.Conv2d(chans[0], 1, 1))
        # the local pattern: the head's map plus a term from the Landsat and DEM values of each 3x3 neighbourhood
        n_px = len(LANDSAT_CHANNELS) + len(DEM_CHANNELS)
        self.local_pattern = LocalPattern(n_px) if sw["local_pattern"] else None
        # global intensity x local pattern: a log-intensity map at the deepest level added to the local pattern
        self.intensity_head = nn.Conv2d(chans[depth], 1, 1) if sw["modulation"] else None
        factors = [f for f in MULTISCALE_FACTORS if f <= 2**depth] if sw["multiscale"] else []
        self.ms_factors = tuple(factors)
        self.ms_heads = nn.ModuleDict({str(f): nn.Conv2d(chans[f.bit_length() - 1], 1, 1) for f in factors})

    @property
    def multiple(self) -> int:
        """Input height and width must be multiples of this."""
        return max(PANDA_FACTOR, 2**self.depth)

    def _panda_features(self, panda: torch.Tensor, landsat: torch.Tensor):
        """Aligned PANDA encoded at 1 km and at full resolution: ``(p8, p_full, cell shifts or None)``."""
        shift = None
        if self.affine is not None:
            ctx = self.affine_context(torch.cat([_halve(panda, 3), _halve(landsat, 3)], dim=1))
            panda, shift = self.affine(panda, ctx)
        return self.panda_encoder(_halve(panda, 3)), self.panda_stem(panda), shift

    @staticmethod
    def _panda_at(p8: torch.Tensor, p_full: torch.Tensor, k: int, like: torch.Tensor) -> torch.Tensor:
        """PANDA features of level ``k`` (the size of ``like``): 1 km context resampled + pooled full-resolution stem."""
        if k < 3:
            ctx = F.interpolate(p8, size=like.shape[-2:], mode="bilinear", align_corners=False)
        else:
            ctx = p8 if k == 3 else _halve(p8, k - 3)
        return ctx + _halve(p_full, k)

    def forward(self, x: torch.Tensor):
        """z ``(B, 1, H, W)`` in eval mode; ``(z, aux)`` in training mode.

        ``aux`` holds, depending on the switches: ``sat_logit`` and ``bright``
        (B, 1, H, W); ``multiscale`` {factor: z at 1/factor resolution};
        ``smoothness`` (scalar, total variation of the flows) and ``flows``;
        ``affine_shift`` (B, 2, H/8, W/8), the alignment's per-cell (dy, dx) in pixels.
        """
        panda, landsat, dem = x[:, self._panda], x[:, self._landsat], x[:, self._dem]
        p8, p_full, affine_shift = self._panda_features(panda, landsat)
        main = self.landsat_stem(landsat)
        d = self.dem_stem(dem)
        fused, flows = [], []
        for k in range(self.depth + 1):
            if k:
                main = self.landsat_downs[k - 1](fused[-1])
                d = self.dem_downs[k - 1](F.avg_pool2d(d, 2))
            pk, flow = self.panda_levels[k](self._panda_at(p8, p_full, k, main), main)
            if flow is not None:
                flows.append(flow)
            fused.append(self.fusions[k]([main, pk, d]))

        y = fused.pop()
        decoded = {self.depth: y}
        for up in self.ups:
            y = up(y, fused.pop())
            decoded[len(fused)] = y
        aux: dict[str, Any] = {}
        if self.aux_head is not None:
            a = self.aux_head(y)
            sat_logit, bright = a[:, 0:1], a[:, 1:2]
            aux.update(sat_logit=sat_logit, bright=bright)
            z = self.sr_head(torch.cat([y, torch.sigmoid(sat_logit), bright], dim=1))
        else:
            z = self.sr_head(y)
        if self.local_pattern is not None:
            z = z + self.local_pattern(torch.cat([landsat, dem], dim=1))
        if self.intensity_head is not None:
            a = F.interpolate(self.intensity_head(decoded[self.depth]), size=z.shape[-2:], mode="bilinear",
                              align_corners=False)
            u = a + z
            z = F.softplus(u)
        if not self.training:
            return z
        if self.intensity_head is not None:
            aux["floor"] = F.relu(SOFTPLUS_FLOOR - u).mean()
        if self.ms_factors:
            aux["multiscale"] = {f: self.ms_heads[str(f)](decoded[f.bit_length() - 1]) for f in self.ms_factors}
        if flows:
            aux["flows"] = flows
            aux["smoothness"] = sum(flow_smoothness(f) for f in flows) / len(flows)
        if affine_shift is not None:
            aux["affine_shift"] = affine_shift
        return z, aux


# --------------------------------------------------------------------------- losses


def target_log(target: torch.Tensor) -> torch.Tensor:
    """z = log1p(L / RADIANCE_REF) of a target radiance, NaN kept where the target is not finite."""
    valid = torch.isfinite(target)
    z = radiance_to_log(torch.where(valid, target, torch.zeros_like(target)))
    return torch.where(valid, z, torch.full_like(z, float("nan")))


def _as_nchw(t: torch.Tensor) -> torch.Tensor:
    return t.unsqueeze(1) if t.ndim == 3 else t


def _masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` over ``mask`` (0, still attached to the graph, when the mask is empty)."""
    return torch.where(mask, values, torch.zeros_like(values)).sum() / mask.sum().clamp(min=1)


def pool_target(target_z: torch.Tensor, factor: int) -> tuple[torch.Tensor, torch.Tensor]:
    """NaN-aware ``factor x factor`` average of ``target_z`` (B, [1,] H, W): ``(mean (B, 1, h, w), valid)``.

    A coarse pixel is valid when at least one of its fine pixels is finite;
    its value is the mean of the finite ones.
    """
    t = _as_nchw(target_z)
    valid = torch.isfinite(t)
    num = F.avg_pool2d(torch.where(valid, t, torch.zeros_like(t)), factor)
    den = F.avg_pool2d(valid.to(t.dtype), factor)
    ok = den > 0
    return torch.where(ok, num / den.clamp(min=1e-12), torch.zeros_like(num)), ok


def multiscale_loss(aux: Mapping[str, Any], target_z: torch.Tensor) -> torch.Tensor:
    """Mean over the scales of the masked L1 between ``aux["multiscale"][f]`` and the f-pooled target z.

    ``target_z`` (B, [1,] H, W) may hold NaN (no target). Zero if there are no
    multi-scale outputs.
    """
    preds = aux.get("multiscale") or {}
    terms = []
    for f, pred in preds.items():
        t, ok = pool_target(target_z, int(f))
        terms.append(_masked_mean((pred - t).abs(), ok))
    if not terms:
        return target_z.new_zeros(())
    return sum(terms) / len(terms)


def auxiliary_losses(aux: Mapping[str, Any], target_z: torch.Tensor, inputs: torch.Tensor,
                     channels: Sequence[str] = CHANNELS) -> dict[str, torch.Tensor]:
    """Losses of the saturation head: ``{"saturation": BCE, "bright": L1}`` (empty without the head).

    Parameters
    ----------
    aux : mapping
        Auxiliary outputs of :class:`MMNTLSR` (``sat_logit``, ``bright``).
    target_z : Tensor (B, [1,] H, W)
        Target z, NaN where there is no target.
    inputs : Tensor (B, C, H, W)
        The *raw* cube channels (as stored, NaN = nodata): the
        ``panda_saturated`` flag (1 where PANDA is saturated) is the target of
        the saturation logit (binary cross-entropy over pixels where it is
        finite); the bright map is fitted to ``target_z`` (L1) where PANDA is
        saturated and the target is finite.
    channels : sequence of str
        Channel names of ``inputs``.
    """
    if "sat_logit" not in aux:
        return {}
    sat = _as_nchw(inputs[:, list(channels).index("panda_saturated")])
    has_flag = torch.isfinite(sat)
    flag = torch.where(has_flag, (sat > 0.5).to(aux["sat_logit"].dtype), torch.zeros_like(sat))
    bce = F.binary_cross_entropy_with_logits(aux["sat_logit"], flag, reduction="none")
    t = _as_nchw(target_z)
    bright_mask = (flag > 0.5) & torch.isfinite(t)
    err = (aux["bright"] - torch.where(torch.isfinite(t), t, torch.zeros_like(t))).abs()
    return {"saturation": _masked_mean(bce, has_flag), "bright": _masked_mean(err, bright_mask)}


def loss_terms(aux: Mapping[str, Any], target_z: torch.Tensor, inputs: torch.Tensor,
               channels: Sequence[str] = CHANNELS) -> dict[str, torch.Tensor]:
    """Every extra loss term the switched-on parts define: saturation, bright, multiscale, smoothness, floor.

    ``floor`` (``modulation``): the mean of ``max(0, SOFTPLUS_FLOOR - u)`` over the pixels, where
    ``z = softplus(u)``; zero while every pixel's u stays above the floor.
    """
    terms = dict(auxiliary_losses(aux, target_z, inputs, channels))
    if "multiscale" in aux:
        terms["multiscale"] = multiscale_loss(aux, target_z)
    if "smoothness" in aux:
        terms["smoothness"] = aux["smoothness"]
    if "floor" in aux:
        terms["floor"] = aux["floor"]
    return terms


def weighted_extra_loss(aux: Mapping[str, Any], target: torch.Tensor, inputs: torch.Tensor,
                        weights: Mapping[str, float] | None = None,
                        channels: Sequence[str] = CHANNELS) -> torch.Tensor:
    """``sum_k weights[k] * loss_terms[k]`` from a target *radiance* (NaN = none) and raw inputs.

    ``weights`` update :data:`DEFAULT_LOSS_WEIGHTS`; unknown keys raise ``ValueError``.
    """
    w = dict(DEFAULT_LOSS_WEIGHTS)
    unknown = sorted(set(weights or {}) - set(w))
    if unknown:
        raise ValueError(f"key 'model.loss_weights': unknown term(s) {', '.join(unknown)} "
                         f"(available: {', '.join(w)})")
    w.update({k: float(v) for k, v in (weights or {}).items()})
    terms = loss_terms(aux, target_log(target), inputs, channels)
    total = target.new_zeros(())
    for k, v in terms.items():
        total = total + w[k] * v
    return total


def build_mmntlsr(model_cfg: Mapping[str, Any], in_channels: int) -> MMNTLSR:
    """:class:`MMNTLSR` from the ``model`` config section (``width``, ``depth``, optional ``modules``)."""
    return MMNTLSR(in_channels, width=int(model_cfg["width"]), depth=int(model_cfg["depth"]),
                   modules=model_cfg.get("modules"))


__all__ = ["MMNTLSR", "DEFAULT_MODULES", "DEFAULT_LOSS_WEIGHTS", "resolve_modules", "auxiliary_losses",
           "multiscale_loss", "loss_terms", "weighted_extra_loss", "target_log", "pool_target", "build_mmntlsr"]
