"""Seamless tiled sampling of the generative models, ensembles, and a seam measure.

A region is sampled tile by tile exactly as :mod:`pandafine.inference.infer` predicts it
(same :class:`~pandafine.inference.blending.TileLayout`, reflection padding and blending
windows; the final radiance is blended), with one difference: the noise of a
pixel is :func:`pandafine.models.noise.grid_noise` at its absolute working-grid
position ``(row0 + r, col0 + c)``, for every sampler step. Overlapping tiles
therefore draw identical noise for the pixels they share, and deterministic
samplers (DDIM with eta = 0, DPM-Solver++ 2M, Euler, flow Euler/Heun) give the
same value for a pixel from every tile that covers it, up to the effect of the
tile edge inside the network's receptive field, which the blending windows
weigh down.

Everything works on a *tile sampler* ``sample(inputs, noise_fn) -> radiance``:
raw inputs ``(B, C, h, w)`` (cube channels, NaN = nodata) to radiance
``(B, h, w)``. :func:`model_tile_sampler` makes one from a trained
diffusion / flow :class:`~pandafine.models.wrapper.PandaFineNet`; tests pass
closed-form ones.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from pandafine.core.runtime import configure_torch
from pandafine.core.scaling import log_to_radiance
from pandafine.inference.blending import TileLayout, blend_tiles, tile_origins
from pandafine.inference.ensemble import (
    EnsembleSpec,
    combine_members,
    member_noise_fns,
    read_ensemble_file,
    sample_members,
)
from pandafine.inference.tiling import iter_tile_batches, pad_block
from pandafine.models.checkpoint import read_checkpoint
from pandafine.models.noise import grid_noise
from pandafine.models.registry import load_trained_model
from pandafine.product.cog import PRODUCT_BANDS

#: ``sample(inputs (B, C, h, w) float32 ndarray, noise_fn) -> radiance (B, h, w) float32 ndarray``.
TileSampler = Callable[[np.ndarray, Callable], np.ndarray]


def make_batch_grid_noise_fn(seed: int, origins: Sequence[tuple[int, int]]) -> Callable:
    """``noise_fn(step, like)`` drawing :func:`grid_noise` for a batch of tiles at grid ``origins``.

    ``like`` is a torch tensor ``(B, C, h, w)`` with ``B == len(origins)``; tile ``b``
    gets the noise of the grid window at ``origins[b]`` (row, col).
    """
    origins = [(int(r), int(c)) for r, c in origins]

    def noise_fn(step: int, like):
        import torch

        b, c, h, w = like.shape
        if b != len(origins):
            raise ValueError(f"grid noise for {len(origins)} tile origins, got a batch of {b}")
        z = np.stack([grid_noise(seed, r, col, h, w, channels=c, step=step) for r, col in origins])
        return torch.from_numpy(z).to(dtype=like.dtype, device=like.device)

    return noise_fn


def model_tile_sampler(model, sampler: Mapping[str, Any] | None = None) -> TileSampler:
    """A tile sampler from a :class:`~pandafine.models.wrapper.PandaFineNet` around a diffusion/flow network.

    Radiance is ``expm1(max(z, 0)) * RADIANCE_REF`` as in the deployable module;
    ``sampler`` overrides the model's configured sampler.
    """
    import torch

    net = model.net
    if not hasattr(net, "sample"):
        raise ValueError(f"{type(net).__name__} is not a generative model (diffusion, flow): it cannot be sampled")
    model.eval()

    device = next(model.parameters()).device

    def sample(inputs: np.ndarray, noise_fn: Callable) -> np.ndarray:
        with torch.no_grad():
            x = model.normalize(torch.from_numpy(np.ascontiguousarray(inputs, dtype=np.float32)).to(device))
            z = net.sample(x, noise_fn, sampler)
            return log_to_radiance(z[:, 0]).float().cpu().numpy().astype(np.float32, copy=False)

    return sample


def _masked(pred: np.ndarray, batch: np.ndarray, mask_channel: int | None) -> np.ndarray:
    if mask_channel is None:
        return pred
    return np.where(np.isnan(batch[:, mask_channel]), np.float32(np.nan), pred)


def sample_region(sample: TileSampler, inputs, *, tile: int, overlap: int, window: str = "hann", seed: int = 0,
                  row0: int = 0, col0: int = 0, batch_size: int = 1, mask_channel: int | None = None,
                  make_noise: Callable = make_batch_grid_noise_fn) -> np.ndarray:
    """Sample a ``(C, H, W)`` region tile by tile with grid-position noise; blend the radiance.

    Parameters
    ----------
    sample : TileSampler
        E.g. :func:`model_tile_sampler`.
    inputs : array-like (C, H, W)
        Raw input channels of the region (a cube window, or an in-memory array).
    tile, overlap, window
        Tiling as in inference (``overlap`` in pixels) (:class:`~pandafine.inference.blending.TileLayout`).
    seed : int
        Noise seed; the noise of a pixel depends on ``(seed, step, row0 + r, col0 + c)`` only.
    row0, col0 : int
        Grid position of the region's top-left pixel.
    batch_size : int
        Tiles per sampler call (within a tile row).
    mask_channel : int, optional
        Channel whose NaN pixels are NaN in the output (as inference does with PANDA).
    make_noise : callable
        ``make_noise(seed, origins) -> noise_fn`` for a batch of tiles at grid ``origins``;
        the default is position-seeded grid noise (other choices exist for comparisons).

    Returns
    -------
    numpy.ndarray
        ``(H, W)`` float32 radiance.
    """
    _, height, width = inputs.shape
    layout = TileLayout(height, width, tile, overlap, window)

    def tiles():
        for row, cols, batch in iter_tile_batches(inputs, layout, batch_size):
            noise_fn = make_noise(seed, [(row0 + row, col0 + c) for c in cols])
            pred = _masked(sample(batch, noise_fn), batch, mask_channel)
            for k, c in enumerate(cols):
                yield row, c, pred[k]

    out = np.empty((height, width), dtype=np.float32)
    for first, block in blend_tiles(tiles(), layout):
        out[first:first + block.shape[0]] = block
    return out


def sample_one_pass(sample: TileSampler, inputs, *, seed: int = 0, row0: int = 0, col0: int = 0, multiple: int = 1,
                    mask_channel: int | None = None) -> np.ndarray:
    """Sample the whole ``(C, H, W)`` region in one network pass per step (the reference for tiling).

    The region is reflection-padded at its bottom/right to a multiple of ``multiple``
    (the model's input multiple); the noise is the same grid noise as in :func:`sample_region`.
    """
    x = np.asarray(inputs, dtype=np.float32)
    _, h, w = x.shape
    hp, wp = -(-h // multiple) * multiple, -(-w // multiple) * multiple
    batch = pad_block(x, hp, wp)[None]
    pred = sample(batch, make_batch_grid_noise_fn(seed, [(row0, col0)]))
    return _masked(pred, batch, mask_channel)[0, :h, :w]


def member_seed(seed: int, k: int) -> int:
    """Noise seed of ensemble member ``k`` (member 0 uses ``seed`` itself)."""
    return int(seed) + int(k)


def ensemble(sample_member: Callable[[int], np.ndarray], n: int, seeds: Sequence[int] | None = None,
             seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Mean and per-pixel spread (population standard deviation) of ``n`` samples.

    Parameters
    ----------
    sample_member : callable
        ``sample_member(seed) -> (H, W)`` product of one member (e.g. a
        :func:`sample_region` call with that seed).
    n : int
        Number of members.
    seeds : sequence of int, optional
        Member seeds; default ``member_seed(seed, k)`` for ``k < n`` (all different).
        Passing equal seeds gives identical members for deterministic samplers.
    seed : int
        Base seed when ``seeds`` is not given.

    Returns
    -------
    (numpy.ndarray, numpy.ndarray)
        ``(mean, spread)``, float32. Members are accumulated one at a time
        (Welford), so memory is two region-sized arrays whatever ``n``.
    """
    if n < 1:
        raise ValueError(f"ensemble size must be >= 1, got {n}")
    seeds = [member_seed(seed, k) for k in range(n)] if seeds is None else [int(s) for s in seeds]
    if len(seeds) != n:
        raise ValueError(f"ensemble of {n} members got {len(seeds)} seeds")
    mean = m2 = None
    for k, s in enumerate(seeds, start=1):
        x = np.asarray(sample_member(s), dtype=np.float64)
        if mean is None:
            mean, m2 = np.zeros_like(x), np.zeros_like(x)
        d = x - mean
        mean += d / k
        m2 += d * (x - mean)
    return mean.astype(np.float32), np.sqrt(np.maximum(m2 / n, 0.0)).astype(np.float32)


def sample_region_ensemble(sample: TileSampler, inputs, n: int, *, seed: int = 0, seeds: Sequence[int] | None = None,
                           **tiling: Any) -> tuple[np.ndarray, np.ndarray]:
    """:func:`ensemble` of ``n`` :func:`sample_region` members: (mean product, per-pixel spread)."""
    return ensemble(lambda s: sample_region(sample, inputs, seed=s, **tiling), n, seeds=seeds, seed=seed)


def ensemble_tile_predictor(sample: TileSampler, members: int, seed: int = 0, *, row0: int = 0,
                            col0: int = 0) -> Callable:
    """A tile predictor for :func:`pandafine.inference.infer.predict_tiles`: grid-noise samples of a batch of tiles.

    ``predict(row, cols, batch)`` samples the tiles at grid rows/columns
    ``(row0 + row, col0 + col)`` with :func:`make_batch_grid_noise_fn` and returns
    ``(B, 1, h, w)`` radiance for ``members == 1``; otherwise member ``k`` uses
    seed :func:`member_seed` ``(seed, k)`` and the prediction is
    ``(B, 2, h, w)`` = (mean, mean of squares) over the members. Both are
    linear in the members, so blending them across overlapping tiles gives
    the mean of the blended members exactly, and :func:`spread_from_moments`
    their population standard deviation where the overlapping tiles agree;
    where they disagree (near tile edges) their disagreement adds to the spread,
    which is never below that of the blended members (convexity).
    """
    if members < 1:
        raise ValueError(f"ensemble size must be >= 1, got {members}")

    def predict(row: int, cols: Sequence[int], batch: np.ndarray) -> np.ndarray:
        origins = [(row0 + row, col0 + c) for c in cols]
        if members == 1:
            return sample(batch, make_batch_grid_noise_fn(seed, origins))[:, None]
        s1 = s2 = None
        for k in range(members):
            x = np.asarray(sample(batch, make_batch_grid_noise_fn(member_seed(seed, k), origins)), np.float64)
            s1 = x if s1 is None else s1 + x
            s2 = x * x if s2 is None else s2 + x * x
        return np.stack([s1 / members, s2 / members], axis=1).astype(np.float32)

    return predict


def spread_from_moments(block: np.ndarray) -> np.ndarray:
    """(mean, mean of squares) bands -> (mean, spread = sqrt(max(E[x^2] - E[x]^2, 0))), float32."""
    mean, sq = block[0].astype(np.float64), block[1].astype(np.float64)
    with np.errstate(invalid="ignore"):
        spread = np.sqrt(np.maximum(sq - mean * mean, 0.0))
    return np.stack([mean, np.where(np.isnan(mean), np.nan, spread)]).astype(np.float32)


def calibrated_tile_predictor(model, spec: EnsembleSpec, *, row0: int = 0, col0: int = 0) -> Callable:
    """A tile predictor of a calibrated ensemble (:mod:`pandafine.inference.ensemble`) of a residual generative model.

    ``predict(row, cols, batch)`` draws the members of the tiles at grid rows/columns
    ``(row0 + row, col0 + col)`` with grid noise (:func:`~pandafine.inference.ensemble.member_noise_fns`),
    combines them in z (:func:`~pandafine.inference.ensemble.combine_members`) and returns
    ``(B, 2, h, w)`` = (mean, mean of squares) of their radiance, blended as
    :func:`ensemble_tile_predictor`'s moments are and finished by :func:`spread_from_moments`.
    """
    import torch

    device = next(model.parameters()).device

    def predict(row: int, cols: Sequence[int], batch: np.ndarray) -> np.ndarray:
        origins = [(row0 + row, col0 + c) for c in cols]
        x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)).to(device)
        zb, z = sample_members(model, x, member_noise_fns(spec, lambda s: make_batch_grid_noise_fn(s, origins)))
        rad = log_to_radiance(combine_members(z, zb, spec))
        return np.stack([rad.mean(axis=0), (rad * rad).mean(axis=0)], axis=1).astype(np.float32)

    return predict


def checkpoint_tile_predictor(checkpoint_path, members: int = 1, *, n_channels: int | None = None):
    """What :func:`pandafine.inference.infer.infer_year` needs to sample a product from a generative checkpoint.

    Parameters
    ----------
    checkpoint_path : path-like
        ``results/models/{diffusion,flow}/checkpoint.pt``.
    members : int
        Ensemble size (``infer.ensemble``).
    n_channels : int, optional
        Channels of the cube, checked against the model's.

    Returns
    -------
    (predict, bands, finalize, tags)
        The tile predictor (:func:`ensemble_tile_predictor` of the model's
        configured sampler, noise seed ``model.sample_seed``), the band names,
        the block transform applied after blending (None, or
        :func:`spread_from_moments`) and product tags (sampler, seed, members, and the
        ensemble recipe). With ``members > 1`` and an :data:`~pandafine.inference.ensemble.ENSEMBLE_FILE`
        beside the checkpoint (``pandafine uncertainty`` writes one for its residual companion),
        the members follow that recipe (:func:`calibrated_tile_predictor`).
    """
    import json
    from pathlib import Path

    import torch

    configure_torch()
    path = Path(checkpoint_path)
    model, ck = load_trained_model(path.parent, checkpoint=read_checkpoint(path))
    mc = ck["model_config"]
    if not hasattr(model.net, "sample"):
        raise ValueError(f"{path}: a {mc.get('name')} checkpoint; only generative models (diffusion, flow) are "
                         "sampled from checkpoints, deterministic models run from their exported model.onnx")
    if n_channels is not None and len(ck["channels"]) != n_channels:
        raise ValueError(f"{path}: model takes {len(ck['channels'])} channels, the cube has {n_channels}")
    if torch.cuda.is_available():  # sampling is many network passes per tile: use the GPU when there is one
        model = model.to("cuda")
    seed = int(mc.get("sample_seed", 0))
    predict = ensemble_tile_predictor(model_tile_sampler(model), members, seed)
    bands = PRODUCT_BANDS if members > 1 else PRODUCT_BANDS[:1]
    tags = {"sampler": json.dumps(mc.get("sampler"), sort_keys=True), "sample_seed": str(seed),
            "ensemble_members": str(members)}
    if members == 1:
        return predict, bands, None, tags
    recipe = read_ensemble_file(path, members)
    if recipe is not None and not recipe.plain:
        predict = calibrated_tile_predictor(model, recipe)
        tags.update(sample_seed=str(recipe.seed), ensemble_recipe=json.dumps(dataclasses.asdict(recipe), sort_keys=True))
    return predict, bands, spread_from_moments, tags


def tile_border_pairs(length: int, tile: int, overlap: int) -> np.ndarray:
    """Indices ``j`` of the neighbour pairs ``(j, j + 1)`` that straddle a tile edge along one axis.

    A pair straddles an edge where a tile starts (``j + 1`` = a tile origin > 0) or
    ends (``j + 1`` = origin + tile < length).
    """
    edges = set()
    for o in tile_origins(length, tile, overlap):
        if o > 0:
            edges.add(o)
        if o + tile < length:
            edges.add(o + tile)
    return np.array(sorted(e - 1 for e in edges), dtype=np.int64)


def seam_statistics(image: np.ndarray, tile: int, overlap: int) -> dict[str, float]:
    """Mean absolute difference between neighbouring pixels across tile edges and elsewhere.

    Both axes are used: horizontal neighbours across the column edges of the tile
    layout, vertical neighbours across its row edges. NaN pixels are ignored.

    Returns
    -------
    dict
        ``border`` (mean |diff| of pairs straddling a tile edge), ``inside`` (all
        other pairs), ``ratio`` = border / inside, and the pair counts.
    """
    img = np.asarray(image, dtype=np.float64)
    h, w = img.shape
    dx = np.abs(np.diff(img, axis=1))  # (h, w-1): pair (j, j+1) at column j
    dy = np.abs(np.diff(img, axis=0))  # (h-1, w)
    bx = np.zeros(w - 1, bool)
    bx[tile_border_pairs(w, tile, overlap)] = True
    by = np.zeros(h - 1, bool)
    by[tile_border_pairs(h, tile, overlap)] = True
    border = np.concatenate([dx[:, bx].ravel(), dy[by, :].ravel()])
    inside = np.concatenate([dx[:, ~bx].ravel(), dy[~by, :].ravel()])
    border, inside = border[np.isfinite(border)], inside[np.isfinite(inside)]
    if border.size == 0 or inside.size == 0:
        raise ValueError(f"seam statistics need pairs across and away from tile edges; a {h}x{w} image with "
                         f"tile {tile}, overlap {overlap} gives {border.size} and {inside.size}")
    b, i = float(border.mean()), float(inside.mean())
    return {"border": b, "inside": i, "ratio": b / i if i > 0 else float("inf"),
            "n_border": int(border.size), "n_inside": int(inside.size)}


def relative_rmse(a: np.ndarray, reference: np.ndarray) -> float:
    """RMSE between ``a`` and ``reference`` divided by the RMS of ``reference`` (finite pixels of both)."""
    ok = np.isfinite(a) & np.isfinite(reference)
    ref = np.asarray(reference, dtype=np.float64)[ok]
    rms = float(np.sqrt(np.mean(ref ** 2)))
    if not rms > 0:
        raise ValueError("relative RMSE: the reference has no finite non-zero pixel")
    return float(np.sqrt(np.mean((np.asarray(a, dtype=np.float64)[ok] - ref) ** 2))) / rms


__all__ = ["TileSampler", "make_batch_grid_noise_fn", "model_tile_sampler", "sample_region", "sample_one_pass",
           "member_seed", "ensemble", "sample_region_ensemble", "tile_border_pairs", "seam_statistics",
           "relative_rmse"]
