"""Training patches: the seeded, spatially blocked split and ``train.zarr``.

* :func:`assign_splits` is the pure split logic: patches are grouped into
  square spatial blocks and whole blocks go to train, val or test (seeded), so
  no patch of one split overlaps a patch of another, in any year.
* :func:`build_training_set` cuts aligned patches from the cubes and targets of
  the supervised years into ``train.zarr`` with normalization statistics taken
  from the train split only. It reads the cubes by bands of rows and writes the
  patches as it goes, so its memory does not grow with the region. With a halo
  (``tiles.halo``), each patch's inputs carry that many pixels of the real
  surroundings on every side, and its target is NaN there: the model is trained
  with the context it sees when the products are inferred, and is supervised on
  the patch alone.
* :class:`StreamedMoments` gives the normalization statistics of
  :func:`channel_moments` (numpy's float32 mean and std, to the last bit) from
  patches fed in batches.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from itertools import groupby
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from pandafine.config import tiles_halo
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
    #: Pixels of input context around each patch (``tiles.halo``); the target is NaN there.
    halo: int = 0

    @classmethod
    def from_config(cls, cfg: Mapping) -> "SplitParams":
        t = cfg["tiles"]
        fr = t["fractions"]
        return cls(int(t["patch"]), int(t["split_block"]), (fr["train"], fr["val"], fr["test"]),
                   int(cfg["run"]["seed"]), tiles_halo(cfg))


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

#: Bytes of cube read at once by :func:`build_training_set`: a band of the cube's chunk rows
#: (full width), fewer rows if the band would be larger (never less than one row of patches).
BAND_BYTES = 256 * 1024**2
#: Values summed by one numpy call in :class:`StreamedSum` (a node of numpy's pairwise summation),
#: so also the most values it buffers (256 KiB of float32 per channel).
SUM_BLOCK = 1 << 16
#: numpy's pairwise summation sums at most this many values sequentially (``PW_BLOCKSIZE``).
_PW_BLOCKSIZE = 128


def _moment(mean: float, std: float) -> tuple[float, float, bool]:
    constant = std <= CONSTANT_STD * max(1.0, abs(mean))
    return mean, 1.0 if constant else std, constant


def channel_moments(inputs: np.ndarray) -> list[tuple[float, float, bool]]:
    """Per channel of (N, C, P, P) patches: NaN-ignoring mean, normalizing std, and whether it is constant.

    A channel with no finite value, or whose std is at most :data:`CONSTANT_STD` times
    ``max(1, |mean|)``, is constant: its normalizing std is 1 (its mean is 0 when it is empty).
    :func:`streamed_channel_moments` gives the same values for patches read in batches.
    """
    out = []
    for c in range(inputs.shape[1]):
        vals = inputs[:, c][np.isfinite(inputs[:, c])]
        m = float(vals.mean()) if vals.size else 0.0
        s = float(vals.std()) if vals.size else 0.0
        out.append(_moment(m, s))
    return out


def _pairwise_tree(n: int, block: int):
    """numpy's pairwise summation tree of ``n`` values, down to nodes of at most ``block`` values.

    A node is its number of values (a leaf, summed by one numpy call) or a pair of
    nodes: numpy splits ``n > 128`` values at ``n // 2`` rounded down to a multiple of 8.
    """
    if n <= block:
        return n
    half = n // 2
    half -= half % 8
    return _pairwise_tree(half, block), _pairwise_tree(n - half, block)


def _leaves(tree) -> list[int]:
    return [tree] if isinstance(tree, int) else _leaves(tree[0]) + _leaves(tree[1])


class StreamedSum:
    """Sum of ``n`` values fed in pieces, equal to ``np.add.reduce`` of their concatenation.

    numpy sums a contiguous float array by pairwise summation over the whole array,
    so the rounding depends on the total count: the same tree is walked here, its
    nodes of at most ``block`` values summed by numpy as they fill up and combined
    at the end. Memory is one node (``block`` values) at most.

    Parameters
    ----------
    n : int
        How many values will be fed.
    dtype : numpy dtype
        The values' (and the sum's) floating dtype.
    block : int, optional
        Values per numpy call (at least 128; default :data:`SUM_BLOCK`).
    """

    def __init__(self, n: int, dtype=np.float32, block: int | None = None) -> None:
        block = SUM_BLOCK if block is None else block
        if block < _PW_BLOCKSIZE:
            raise ValueError(f"block must be at least {_PW_BLOCKSIZE}, got {block}")
        self.n, self.dtype = int(n), np.dtype(dtype)
        self._tree = _pairwise_tree(self.n, block)
        self._sizes = _leaves(self._tree)[::-1]  # popped from the end
        self._sums: list = []
        self._pending: list[np.ndarray] = []
        self._held = 0
        self._fed = 0

    def add(self, values: np.ndarray) -> None:
        """Feed the next values (any shape; taken in C order)."""
        values = np.ascontiguousarray(values, dtype=self.dtype).reshape(-1)
        self._fed += values.size
        if self._fed > self.n:
            raise ValueError(f"{self._fed} values fed to a sum of {self.n}")
        pos = 0
        while self._sizes and self._held + values.size - pos >= self._sizes[-1]:
            take = self._sizes.pop() - self._held
            node = values[pos:pos + take]
            if self._pending:
                node = np.concatenate(self._pending + [node])
                self._pending, self._held = [], 0
            # -0.0 is the exact identity (numpy starts from +0.0, added once at the top)
            self._sums.append(np.add.reduce(node, initial=self.dtype.type(-0.0)))
            pos += take
        if pos < values.size:
            self._pending.append(values[pos:].copy())
            self._held += values.size - pos

    def total(self):
        """The sum (a numpy scalar of ``dtype``), once all ``n`` values are fed."""
        if self._fed != self.n:
            raise ValueError(f"{self._fed} values fed to a sum of {self.n}")
        sums = iter(self._sums)

        def walk(node):
            if isinstance(node, int):
                return next(sums)
            left = walk(node[0])
            return left + walk(node[1])

        return self.dtype.type(0) + walk(self._tree) if self.n else self.dtype.type(0)


def _finite(x: np.ndarray) -> np.ndarray:
    return x[np.isfinite(x)]


class StreamedMoments:
    """:func:`channel_moments` of (k, C, P, P) patches fed in batches, with identical values.

    The patches are fed twice, in the same order: first :meth:`add_values` for
    the means, then (after :meth:`means`) :meth:`add_deviations` for the stds.
    The means and stds are numpy's (``vals.mean()``, ``vals.std()`` of each
    channel's finite values), their sums walked in numpy's pairwise order by
    :class:`StreamedSum`. Memory is one summation node per channel.

    Parameters
    ----------
    counts : sequence of int
        Number of finite values of each channel over all the patches to be fed.
    dtype : numpy dtype
        The patches' dtype (the statistics are computed in it, as numpy does).
    block : int, optional
        Values per numpy summation call (default :data:`SUM_BLOCK`).
    """

    def __init__(self, counts: Sequence[int], dtype=np.float32, block: int | None = None) -> None:
        self.dtype = np.dtype(dtype)
        self.counts = [int(n) for n in counts]
        self._block = block
        self._sums = [StreamedSum(n, self.dtype, block) for n in self.counts]
        self._squares: list[StreamedSum] | None = None
        self._means: list | None = None

    def add_values(self, x: np.ndarray) -> None:
        """Feed the next patches (k, C, P, P) for the means."""
        if self._means is not None:
            raise RuntimeError("add_values after means(): feed the deviations now")
        for c, acc in enumerate(self._sums):
            acc.add(_finite(x[:, c]))

    def means(self) -> list:
        """Per channel, the mean (a numpy scalar of ``dtype``; None for a channel without values)."""
        if self._means is None:
            # numpy divides the float sum by an intp count (in float64) and casts back, as here
            self._means = [self.dtype.type(acc.total() / np.intp(acc.n)) if acc.n else None for acc in self._sums]
            self._squares = [StreamedSum(n, self.dtype, self._block) for n in self.counts]
        return self._means

    def add_deviations(self, x: np.ndarray) -> None:
        """Feed the same patches (k, C, P, P) again, in the same order, for the stds."""
        means = self.means()
        for c, acc in enumerate(self._squares):
            if means[c] is not None:
                dev = _finite(x[:, c]) - means[c]
                acc.add(np.square(dev, out=dev))

    def moments(self) -> list[tuple[float, float, bool]]:
        """:func:`channel_moments`' (mean, normalizing std, constant) per channel."""
        means = self.means()
        out = []
        for m, acc in zip(means, self._squares):
            if m is None:
                out.append(_moment(0.0, 0.0))
            else:
                std = self.dtype.type(np.sqrt(self.dtype.type(acc.total() / np.intp(acc.n))))
                out.append(_moment(float(m), float(std)))
        return out


def streamed_channel_moments(read_batches: Callable[[], Iterable[np.ndarray]], counts: Sequence[int] | None = None,
                             dtype=np.float32, *, block: int | None = None) -> list[tuple[float, float, bool]]:
    """:func:`channel_moments` of patches read in batches, with identical values (:class:`StreamedMoments`).

    Parameters
    ----------
    read_batches : callable
        ``read_batches()`` yields the patches as (k, C, P, P) arrays, in order; it is
        called twice, or three times when ``counts`` is not given.
    counts : sequence of int, optional
        Number of finite values of each channel over all the batches (counted if omitted).
    dtype : numpy dtype
        The patches' dtype.
    block : int, optional
        Values per numpy summation call (default :data:`SUM_BLOCK`).
    """
    if counts is None:
        for x in read_batches():
            n = np.isfinite(x).sum(axis=(0, 2, 3))
            counts = n if counts is None else counts + n
        counts = [] if counts is None else counts.tolist()
    acc = StreamedMoments(counts, dtype, block)
    for x in read_batches():
        acc.add_values(x)
    for x in read_batches():
        acc.add_deviations(x)
    return acc.moments()


def normalization(moments: Sequence[tuple[float, float, bool]]) -> tuple[list[float], list[float]]:
    """The per-channel means and normalizing stds of :func:`channel_moments`."""
    return [m for m, _, _ in moments], [s for _, s, _ in moments]


def channel_stats(inputs: np.ndarray) -> tuple[list[float], list[float]]:
    """Normalization of (N, C, P, P) patches: per-channel mean and std, std 1 for a constant channel."""
    return normalization(channel_moments(inputs))


def constant_channels(inputs: np.ndarray, channels) -> list[str]:
    """Names of the channels that are constant (or empty) in ``inputs`` (N, C, P, P)."""
    return [name for name, (_, _, constant) in zip(channels, channel_moments(inputs)) if constant]


def band_height(chunk_rows: int, patch: int, row_bytes: int, band_bytes: int = BAND_BYTES) -> int:
    """Grid rows read at once: whole rows of patches, the cube's chunk rows if they fit in ``band_bytes``.

    Parameters
    ----------
    chunk_rows : int
        Rows of one chunk of the cube (a band of them decompresses each chunk once).
    patch : int
        Patch size.
    row_bytes : int
        Bytes of one full-width grid row of the cube (all channels).
    band_bytes : int
        The most bytes of cube to hold (at least one row of patches is read).
    """
    fit = band_bytes // max(1, row_bytes) // patch
    return patch * max(1, min(max(1, chunk_rows // patch), fit))


def _per_patch(a: np.ndarray, patch: int) -> np.ndarray:
    """View of (..., h, W) as (..., h // P, P, W // P, P): the whole patches of a band."""
    nr, nc = a.shape[-2] // patch, a.shape[-1] // patch
    return a[..., :nr * patch, :nc * patch].reshape(a.shape[:-2] + (nr, patch, nc, patch))


def band_patches(band: np.ndarray, patch: int) -> np.ndarray:
    """View of a (C, h, W) band as its (h // P, W // P, C, P, P) whole patches, in row-major order."""
    return _per_patch(band, patch).transpose(1, 3, 0, 2, 4)


def band_patches_with_halo(band: np.ndarray, patch: int, halo: int) -> np.ndarray:
    """View of the whole patches of a band padded by ``halo`` px on every side, each with its halo.

    Parameters
    ----------
    band : numpy.ndarray
        (C, h + 2 halo, W + 2 halo): a band of ``h`` rows and ``W`` columns of the grid with ``halo``
        px of context (or padding) around it.
    patch, halo : int
        Patch size and halo (px).

    Returns
    -------
    numpy.ndarray
        (h // P, W // P, C, P + 2 halo, P + 2 halo), in row-major order; patch ``(i, j)`` is
        ``band[:, i P : i P + P + 2 halo, j P : j P + P + 2 halo]``, whose centre is the patch that
        :func:`band_patches` gives for the band without its halo.
    """
    if not halo:
        return band_patches(band, patch)
    edge = patch + 2 * halo
    nr, nc = (band.shape[1] - 2 * halo) // patch, (band.shape[2] - 2 * halo) // patch
    windows = np.lib.stride_tricks.sliding_window_view(band, (edge, edge), axis=(1, 2))
    return windows[:, ::patch, ::patch][:, :nr, :nc].transpose(1, 2, 0, 3, 4)


def read_band_with_halo(cube, row: int, height: int, halo: int) -> np.ndarray:
    """Rows ``row .. row + height`` of a (C, H, W) cube, with ``halo`` px of context on every side.

    The context is the cube's own pixels where the grid has them, and their
    reflection about the grid's edge beyond it (as :func:`pandafine.inference.tiling.pad_block`
    pads a region smaller than a tile). Returns (C, height + 2 halo, W + 2 halo).
    """
    if not halo:
        return np.asarray(cube[:, row:row + height, :])
    rows = cube.shape[1]
    top, bottom = max(0, row - halo), min(rows, row + height + halo)
    band = np.asarray(cube[:, top:bottom, :])
    pad_top, pad_bottom = halo - (row - top), halo - (bottom - row - height)
    if max(pad_top, pad_bottom, halo) >= min(band.shape[1], band.shape[2]):
        raise ValueError(f"tiles.halo={halo} px: the grid ({rows}x{cube.shape[2]} px) is too small to reflect "
                         "a halo that wide at its edge; use a smaller halo")
    return np.pad(band, ((0, 0), (pad_top, pad_bottom), (halo, halo)), mode="reflect")


def target_valid(target: np.ndarray, patch: int, min_valid: float) -> np.ndarray:
    """(h // P, W // P) bool: the patches of a (h, W) target band with at least ``min_valid`` finite pixels."""
    valid = _per_patch(np.isfinite(target), patch).sum(axis=(1, 3)) / (patch * patch)
    return ~(valid < min_valid)


def panda_valid(panda: np.ndarray, patch: int) -> np.ndarray:
    """(h // P, W // P) bool: the patches of a (h, W) PANDA band with a finite pixel."""
    return _per_patch(np.isfinite(panda), patch).any(axis=(1, 3))


def patch_finite_counts(band: np.ndarray, patch: int) -> np.ndarray:
    """(h // P, W // P, C) int32: finite values per channel of each whole patch of a (C, h, W) band."""
    return _per_patch(np.isfinite(band), patch).sum(axis=(2, 4), dtype=np.int32).transpose(1, 2, 0)


@dataclass(frozen=True)
class BandPlan:
    """The kept patches of one band of one year, found by the first pass of :func:`build_training_set`."""

    year: int
    row: int            # first grid row of the band
    height: int         # grid rows of the band (whole patches)
    keep: np.ndarray    # (height // P, W // P) bool, the kept patches
    start: int          # index in train.zarr of the band's first kept patch


def _read_target(tgt, row: int, height: int, width: int) -> np.ndarray:
    from rasterio.windows import Window

    return tgt.read(1, window=Window(0, row, width, height)).astype(np.float32)


def _scan(cubes: Mapping[int, Any], target_paths: Mapping[int, str | Path], patch: int, heights: Mapping[int, int],
          min_valid: float):
    """First pass: the kept patches, band by band. Returns the band plans, (year, row, col) and finite counts."""
    plans, years, rows, cols, counts = [], [], [], [], []
    n = 0
    for year, cube in cubes.items():
        covered = cube.shape[1] // patch * patch
        with open_raster(target_paths[year]) as tgt:
            for r0 in range(0, covered, heights[year]):
                h = min(heights[year], covered - r0)
                t = _read_target(tgt, r0, h, cube.shape[2])
                keep = target_valid(t, patch, min_valid)
                if not keep.any():
                    continue  # the cube band is not read
                x = np.asarray(cube[:, r0:r0 + h, :])
                keep &= panda_valid(x[0], patch)
                i, j = np.nonzero(keep)  # row-major, the order of the patches in the store
                finite = patch_finite_counts(x, patch)[i, j]
                del x  # before the next band is read
                if not i.size:
                    continue
                plans.append(BandPlan(year, r0, h, keep, n))
                years.append(np.full(i.size, year, dtype=np.int32))
                rows.append((r0 + i * patch).astype(np.int32))
                cols.append((j * patch).astype(np.int32))
                counts.append(finite)
                n += i.size
    if not plans:
        return plans, *(np.zeros(0, np.int32),) * 3, np.zeros((0, len(CHANNELS)), np.int32)
    return plans, np.concatenate(years), np.concatenate(rows), np.concatenate(cols), np.concatenate(counts)


def _planned_bands(plans: Sequence[BandPlan], cubes: Mapping[int, Any], cube_paths: Mapping[int, str | Path],
                   target_paths: Mapping[int, str | Path], patch: int, min_valid: float, halo: int = 0):
    """Read the bands of ``plans`` again; yield ``(plan, patches (nr, nc, C, Q, Q), target (nr, nc, 1, P, P))``.

    ``Q = P + 2 halo``: each patch's inputs with ``halo`` px of context (:func:`read_band_with_halo`).
    """
    for year, group in groupby(plans, key=lambda p: p.year):
        cube = cubes[year]
        with open_raster(target_paths[year]) as tgt:
            for plan in group:
                xh = read_band_with_halo(cube, plan.row, plan.height, halo)
                x = xh[:, halo:halo + plan.height, halo:halo + cube.shape[2]]
                t = _read_target(tgt, plan.row, plan.height, cube.shape[2])
                keep = target_valid(t, patch, min_valid) & panda_valid(x[0], patch)
                if not np.array_equal(keep, plan.keep):
                    raise ValueError(f"{cube_paths[year]} or {target_paths[year]}: rows {plan.row}-"
                                     f"{plan.row + plan.height} changed while the training patches were cut")
                yield plan, band_patches_with_halo(xh, patch, halo), band_patches(t[None], patch)
                del x, xh, t  # before the next band is read


def pad_target(target: np.ndarray, halo: int) -> np.ndarray:
    """(..., P, P) targets padded with NaN to (..., P + 2 halo, P + 2 halo): no supervision in the halo."""
    if not halo:
        return target
    pad = [(0, 0)] * (target.ndim - 2) + [(halo, halo), (halo, halo)]
    return np.pad(target.astype(np.float32, copy=False), pad, constant_values=np.nan)


def _kept_rows(plan: BandPlan, xp: np.ndarray, tp: np.ndarray):
    """Per row of patches of a band: (index in the store of its first kept patch, inputs (k, C, P, P), target)."""
    n = plan.start
    for i in range(plan.keep.shape[0]):
        j = np.flatnonzero(plan.keep[i])
        if j.size:
            yield n, xp[i, j], tp[i, j]
            n += j.size


def _open_inputs(cube_paths: Mapping[int, str | Path], target_paths: Mapping[int, str | Path]):
    """Open and check every year's cube and target; return ``{year: cube array}`` (years sorted) and the grid."""
    if set(cube_paths) != set(target_paths):
        raise ValueError(f"years with cubes {sorted(cube_paths)} differ from years with targets {sorted(target_paths)}")
    cubes, grid = {}, None
    for year in sorted(cube_paths):
        opened = open_cube(cube_paths[year])
        if opened.channels != CHANNELS:
            raise ValueError(f"{cube_paths[year]}: channels {list(opened.channels)} differ from the expected "
                             f"{list(CHANNELS)}")
        if grid is None:
            grid = opened.grid
        elif not grid.same_as(opened.grid):
            raise ValueError(f"{cube_paths[year]}: grid differs from the other years' cubes")
        with open_raster(target_paths[year]) as tgt:
            if (tgt.height, tgt.width) != grid.shape:
                raise ValueError(f"{target_paths[year]}: target is {tgt.height}x{tgt.width}, "
                                 f"the working grid is {grid.height}x{grid.width}")
        cubes[year] = opened.inputs
    return cubes, grid


def build_training_set(cube_paths: Mapping[int, str | Path], target_paths: Mapping[int, str | Path],
                       out_path: str | Path, params: SplitParams, *, min_valid: float = 0.5,
                       band_bytes: int = BAND_BYTES) -> Path:
    """Cut patches of every supervised year into ``train.zarr`` (see docs/contracts.md).

    Patches (year by year, row-major) are kept when at least ``min_valid`` of
    their target pixels and one PANDA pixel are finite. With ``params.halo`` =
    h > 0 the stored inputs are ``P + 2h`` px square, the patch and h px of the
    cube around it (reflected beyond the grid's edge, :func:`read_band_with_halo`),
    and the stored target is the patch's target with NaN in the halo; the
    normalization statistics are those of the patches alone (as with h = 0). Each year's cube and
    target are read by bands of whole rows of patches (:func:`band_height`: the
    cube's chunk rows, at most ``band_bytes`` of cube), three times: to find
    the kept patches and split them, to write them into arrays of the final
    size (and sum the train split for the means), and to sum the squared
    deviations of the train split for the stds (:class:`StreamedMoments`, the
    values of :func:`channel_moments`). Memory is a band, not the region's
    patches. The store appears at ``out_path`` only when complete.
    """
    import zarr

    cubes, grid = _open_inputs(cube_paths, target_paths)
    P, H = params.patch, params.halo
    if H < 0:
        raise ValueError(f"tiles.halo={H}: expected a number of pixels >= 0")
    Q = P + 2 * H
    heights = {year: band_height(cube.chunks[1], P, len(CHANNELS) * grid.width * cube.dtype.itemsize, band_bytes)
               for year, cube in cubes.items()}
    plans, years, rows, cols, counts = _scan(cubes, target_paths, P, heights, min_valid)
    if not plans:
        raise ValueError(f"no training patch of {P}x{P} px has >= {min_valid:.0%} valid target pixels in "
                         f"{', '.join(str(p) for p in target_paths.values())}")
    split = assign_splits(list(zip(rows.tolist(), cols.tolist())), params)
    is_train = split == 0
    n = int(split.size)
    dtype = np.result_type(*(cube.dtype for cube in cubes.values()))
    stats = StreamedMoments(counts[is_train].sum(axis=0), dtype)

    def bands(only_train: bool):
        todo = [p for p in plans if is_train[p.start:p.start + int(p.keep.sum())].any()] if only_train else plans
        return _planned_bands(todo, cubes, cube_paths, target_paths, P, min_valid, H)

    with atomic_path(out_path) as tmp:
        root = zarr.open_group(zarr.storage.LocalStore(tmp), mode="w")
        inputs = root.create_array("inputs", shape=(n, len(CHANNELS), Q, Q), dtype=dtype,
                                   chunks=(1, len(CHANNELS), Q, Q))
        target = root.create_array("target", shape=(n, 1, Q, Q), dtype=np.float32, chunks=(1, 1, Q, Q))
        centre = np.s_[..., H:H + P, H:H + P]
        for plan, xp, tp in bands(only_train=False):
            for start, x, t in _kept_rows(plan, xp, tp):
                x = x.astype(dtype, copy=False)
                inputs[start:start + len(x)] = x
                target[start:start + len(x)] = pad_target(t, H)
                stats.add_values(x[centre][is_train[start:start + len(x)]])
            del xp, tp  # before the next band is read
        for plan, xp, tp in bands(only_train=True):
            for start, x, _ in _kept_rows(plan, xp, tp):
                stats.add_deviations(x[centre][is_train[start:start + len(x)]].astype(dtype, copy=False))
            del xp, tp
        moments = stats.moments()
        mean, std = normalization(moments)
        constant = [name for name, (_, _, flat) in zip(CHANNELS, moments) if flat]
        if constant:
            log.warning("%s: channel(s) %s are constant on the training split (centred, not scaled): the model "
                        "learns nothing from them", out_path, ", ".join(constant))
        root.create_array("split", data=split)
        root.create_array("year", data=years)
        root.create_array("row", data=rows)
        root.create_array("col", data=cols)
        root.attrs.update({"channels": list(CHANNELS), "patch": P, "halo": H, "grid": grid.to_dict(),
                           "normalization": {"mean": mean, "std": std},
                           "counts": {s: int((split == i).sum()) for i, s in enumerate(SPLIT_NAMES)},
                           "n_patches": n, "seed": params.seed, "split_block": params.split_block})
    return Path(out_path)
