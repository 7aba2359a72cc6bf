"""Training patches: the seeded, spatially blocked split and ``train.zarr``.

* :func:`assign_splits` is the pure split logic: patches are grouped into
  square spatial blocks and whole blocks go to train, val or test (seeded), so
  no patch of one split overlaps a patch of another, in any year.
* :func:`build_training_set` cuts aligned patches from the cubes and targets of
  the supervised years into ``train.zarr`` with normalization statistics taken
  from the train split only.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from pandafine.core.atomic import atomic_path
from pandafine.core.channels import CHANNELS
from pandafine.core.raster_io import open_raster
from pandafine.tiles.cube import open_cube
from pandafine.tiles.store import SPLIT_NAMES

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SplitParams:
    """How patches are cut and split (``tiles`` section of the config)."""

    patch: int
    split_block: int
    fractions: tuple[float, float, float]
    seed: int

    @classmethod
    def from_config(cls, cfg: Mapping) -> "SplitParams":
        t = cfg["tiles"]
        fr = t["fractions"]
        return cls(int(t["patch"]), int(t["split_block"]), (fr["train"], fr["val"], fr["test"]),
                   int(cfg["run"]["seed"]))


def patch_origins(height: int, width: int, patch: int) -> list[tuple[int, int]]:
    """Row/col offsets of the non-overlapping patches that fit entirely in the grid."""
    return [(r, c) for r in range(0, height - patch + 1, patch) for c in range(0, width - patch + 1, patch)]


def assign_splits(origins: Sequence[tuple[int, int]], params: SplitParams) -> np.ndarray:
    """Split code (0 train, 1 val, 2 test) per patch origin, assigned by spatial block.

    Blocks of ``split_block x split_block`` patches are shuffled with the seed and
    dealt out by the split fractions; val and test each get at least one block
    when there are three or more blocks.
    """
    block_px = params.patch * params.split_block
    blocks = sorted({(r // block_px, c // block_px) for r, c in origins})
    rng = np.random.default_rng(params.seed)
    order = rng.permutation(len(blocks))
    n = len(blocks)
    n_test = int(round(params.fractions[2] * n))
    n_val = int(round(params.fractions[1] * n))
    if n >= 3:
        n_test, n_val = max(1, n_test), max(1, n_val) if params.fractions[1] > 0 else 0
    n_test = min(n_test, n - 1)
    n_val = min(n_val, n - 1 - n_test)
    code = {}
    for rank, idx in enumerate(order):
        code[blocks[idx]] = 2 if rank < n_test else (1 if rank < n_test + n_val else 0)
    return np.array([code[(r // block_px, c // block_px)] for r, c in origins], dtype=np.int8)


#: A channel whose training-split standard deviation is at most this times ``max(1, |mean|)`` is constant
#: there (e.g. PANDA saturated on every training patch): it is centred and not scaled (std 1), since
#: dividing by a floored std would turn any other value at inference into a huge input.
CONSTANT_STD = 1e-6


def channel_moments(inputs: np.ndarray) -> list[tuple[float, float, bool]]:
    """Per channel of (N, C, P, P) patches: NaN-ignoring mean, normalizing std, and whether it is constant.

    A channel with no finite value, or whose std is at most :data:`CONSTANT_STD` times
    ``max(1, |mean|)``, is constant: its normalizing std is 1 (its mean is 0 when it is empty).
    """
    out = []
    for c in range(inputs.shape[1]):
        vals = inputs[:, c][np.isfinite(inputs[:, c])]
        m = float(vals.mean()) if vals.size else 0.0
        s = float(vals.std()) if vals.size else 0.0
        constant = s <= CONSTANT_STD * max(1.0, abs(m))
        out.append((m, 1.0 if constant else s, constant))
    return out


def normalization(moments: Sequence[tuple[float, float, bool]]) -> tuple[list[float], list[float]]:
    """The per-channel means and normalizing stds of :func:`channel_moments`."""
    return [m for m, _, _ in moments], [s for _, s, _ in moments]


def channel_stats(inputs: np.ndarray) -> tuple[list[float], list[float]]:
    """Normalization of (N, C, P, P) patches: per-channel mean and std, std 1 for a constant channel."""
    return normalization(channel_moments(inputs))


def constant_channels(inputs: np.ndarray, channels) -> list[str]:
    """Names of the channels that are constant (or empty) in ``inputs`` (N, C, P, P)."""
    return [name for name, (_, _, constant) in zip(channels, channel_moments(inputs)) if constant]


def build_training_set(cube_paths: Mapping[int, str | Path], target_paths: Mapping[int, str | Path],
                       out_path: str | Path, params: SplitParams, *, min_valid: float = 0.5) -> Path:
    """Cut patches of every supervised year into ``train.zarr`` (see docs/contracts.md)."""
    import zarr
    from rasterio.windows import Window

    if set(cube_paths) != set(target_paths):
        raise ValueError(f"years with cubes {sorted(cube_paths)} differ from years with targets {sorted(target_paths)}")
    P = params.patch
    inputs, targets, years, rows, cols = [], [], [], [], []
    grid = None
    for year in sorted(cube_paths):
        opened = open_cube(cube_paths[year])
        if opened.channels != CHANNELS:
            raise ValueError(f"{cube_paths[year]}: channels {list(opened.channels)} differ from the expected "
                             f"{list(CHANNELS)}")
        cube, cgrid = opened.inputs, opened.grid
        if grid is None:
            grid = cgrid
        elif not grid.same_as(cgrid):
            raise ValueError(f"{cube_paths[year]}: grid differs from the other years' cubes")
        with open_raster(target_paths[year]) as tgt:
            if (tgt.height, tgt.width) != grid.shape:
                raise ValueError(f"{target_paths[year]}: target is {tgt.height}x{tgt.width}, "
                                 f"the working grid is {grid.height}x{grid.width}")
            for r, c in patch_origins(grid.height, grid.width, P):
                t = tgt.read(1, window=Window(c, r, P, P)).astype(np.float32)
                if np.isfinite(t).mean() < min_valid:
                    continue
                x = np.asarray(cube[:, r:r + P, c:c + P])
                if not np.isfinite(x[0]).any():
                    continue
                inputs.append(x)
                targets.append(t[None])
                years.append(year)
                rows.append(r)
                cols.append(c)
    if not inputs:
        raise ValueError(f"no training patch of {P}x{P} px has >= {min_valid:.0%} valid target pixels in "
                         f"{', '.join(str(p) for p in target_paths.values())}")
    split = assign_splits(list(zip(rows, cols)), params)
    inputs_arr = np.stack(inputs)
    moments = channel_moments(inputs_arr[split == 0])
    mean, std = normalization(moments)
    constant = [name for name, (_, _, flat) in zip(CHANNELS, moments) if flat]
    if constant:
        log.warning("%s: channel(s) %s are constant on the training split (centred, not scaled): the model "
                    "learns nothing from them", out_path, ", ".join(constant))
    n = len(inputs)
    with atomic_path(out_path) as tmp:
        root = zarr.open_group(zarr.storage.LocalStore(tmp), mode="w")
        root.create_array("inputs", data=inputs_arr, chunks=(1, len(CHANNELS), P, P))
        root.create_array("target", data=np.stack(targets), chunks=(1, 1, P, P))
        root.create_array("split", data=split)
        root.create_array("year", data=np.array(years, dtype=np.int32))
        root.create_array("row", data=np.array(rows, dtype=np.int32))
        root.create_array("col", data=np.array(cols, dtype=np.int32))
        root.attrs.update({"channels": list(CHANNELS), "patch": P, "grid": grid.to_dict(),
                           "normalization": {"mean": mean, "std": std},
                           "counts": {s: int((split == i).sum()) for i, s in enumerate(SPLIT_NAMES)},
                           "n_patches": n, "seed": params.seed, "split_block": params.split_block})
    return Path(out_path)
