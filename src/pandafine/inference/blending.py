"""Overlap blending for tiled inference: windows, tile layout and a row-band accumulator.

Pure numpy, no I/O. The steps follow MONAI's sliding-window inference:

1. **layout** -- :func:`tile_origins` places tiles along each axis of the whole
   grid with stride ``tile - overlap`` (pixels); the last tile is snapped to end on
   the grid's border. :class:`TileLayout` combines both axes; with an ``area`` (a
   spatial block of the grid) it keeps the tiles of the grid's lattice that touch
   the area and blends only the area's pixels, so blocks blended separately
   equal the same pixels of one whole-grid blend.
2. **window** -- :func:`window` gives a tile's separable importance map (``hann``, ``gaussian``,
   ``pyramid`` or ``constant``); :func:`border_adjusted_window` lifts it to full weight
   on the sides that touch the region border, where no other tile overlaps.
3. **accumulate** -- :class:`BlendAccumulator` adds ``weight * prediction`` and ``weight``
   for one band of tile rows and hands back finished output rows, normalized by the
   accumulated weights. Memory is (tile height x area width), never the whole area.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator

import numpy as np

#: Window kinds understood by :func:`window`.
WINDOW_KINDS = ("hann", "gaussian", "pyramid", "constant")


def _as_shape(shape: int | tuple[int, int]) -> tuple[int, int]:
    if isinstance(shape, (int, np.integer)):
        shape = (int(shape), int(shape))
    h, w = (int(s) for s in shape)
    if h < 1 or w < 1:
        raise ValueError(f"window shape must be positive, got {(h, w)}")
    return h, w


def _profile(n: int, kind: str, sigma_scale: float) -> np.ndarray:
    """1-D weight profile of length ``n`` sampled at pixel centres, maximum 1."""
    x = (np.arange(n, dtype=np.float64) + 0.5) / n  # pixel centres in (0, 1)
    if kind == "hann":
        p = np.sin(np.pi * x) ** 2
    elif kind == "gaussian":
        if sigma_scale <= 0:
            raise ValueError(f"sigma_scale must be > 0 for a gaussian window, got {sigma_scale}")
        p = np.exp(-0.5 * ((x - 0.5) / sigma_scale) ** 2)
    elif kind == "pyramid":
        p = 1.0 - np.abs(2.0 * x - 1.0)
    elif kind == "constant":
        p = np.ones(n)
    else:
        raise ValueError(f"unknown window kind {kind!r}; expected one of {', '.join(WINDOW_KINDS)}")
    return p / p.max()


def window(shape: int | tuple[int, int], kind: str = "hann", floor: float = 1e-3,
           sigma_scale: float = 0.125) -> np.ndarray:
    """A separable 2-D blending window (importance map) with maximum 1.

    Parameters
    ----------
    shape : int or (int, int)
        Tile size (rows, cols); an int means a square tile.
    kind : {'hann', 'gaussian', 'pyramid', 'constant'}
        ``hann``: sin² profile; ``gaussian``: exp(-x²/2σ²) with σ = ``sigma_scale`` × size;
        ``pyramid``: linear ramp to the centre; ``constant``: all ones.
        Profiles are sampled at pixel centres, so they are symmetric and never exactly 0.
    floor : float
        Minimum of each 1-D profile (MONAI uses 1e-3 on the 2-D map): no pixel of a
        tile is ever ignored. It is applied per axis, so the 2-D minimum is ``floor**2``:
        where the overlaps of four tiles meet, the edge pixels of one tile must not
        weigh as much as the interior pixels of another (a 2-D floor gives tile edges,
        where zero padding distorts predictions, up to half the weight there).
    sigma_scale : float
        Gaussian σ as a fraction of the tile size.

    Returns
    -------
    numpy.ndarray
        float64 array of ``shape`` with values in ``[floor**2, 1]``.
    """
    h, w = _as_shape(shape)
    if not 0 <= floor <= 1:
        raise ValueError(f"window floor must be in [0, 1], got {floor}")
    return np.outer(np.maximum(_profile(h, kind, sigma_scale), floor),
                    np.maximum(_profile(w, kind, sigma_scale), floor))


def border_adjusted_window(base: np.ndarray, at_top: bool, at_bottom: bool, at_left: bool,
                           at_right: bool) -> np.ndarray:
    """Lift a window to its maximum from the centre outward on the sides at the region border.

    A tile side that lies on the region border has no neighbour to blend with, so a
    window tapering there would only lose precision (and, with a floor, bias the
    blend). On each flagged side the profile is replaced, from the centre outward, by
    its running maximum: for the usual unimodal windows the outer half becomes the
    centre value, so border pixels get full weight.

    Parameters
    ----------
    base : numpy.ndarray
        (rows, cols) window, e.g. from :func:`window`.
    at_top, at_bottom, at_left, at_right : bool
        Whether that side of the tile lies on the region border.

    Returns
    -------
    numpy.ndarray
        A new array; ``base`` is not modified.
    """
    if base.ndim != 2:
        raise ValueError(f"window must be 2-D (rows, cols), got shape {base.shape}")
    w = np.array(base, dtype=np.float64, copy=True)
    h, wd = w.shape
    if at_top:
        top = w[: (h + 1) // 2]
        w[: (h + 1) // 2] = np.maximum.accumulate(top[::-1], axis=0)[::-1]
    if at_bottom:
        w[h // 2:] = np.maximum.accumulate(w[h // 2:], axis=0)
    if at_left:
        left = w[:, : (wd + 1) // 2]
        w[:, : (wd + 1) // 2] = np.maximum.accumulate(left[:, ::-1], axis=1)[:, ::-1]
    if at_right:
        w[:, wd // 2:] = np.maximum.accumulate(w[:, wd // 2:], axis=1)
    return w


def tile_origins(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles of size ``tile`` covering ``[0, length)``.

    The stride is ``tile - overlap``; the last tile is moved back so that it
    ends exactly on the border (it then overlaps its neighbour more). If
    ``length <= tile`` there is a single tile at 0 (the caller pads the data).

    Parameters
    ----------
    length : int
        Grid size along the axis (pixels).
    tile : int
        Tile size along the axis (pixels).
    overlap : int
        Pixels shared by neighbouring tiles, in ``[0, tile)``.

    Returns
    -------
    list of int
        Increasing offsets; the first is 0 and the last is ``max(length - tile, 0)``.
    """
    if length < 1 or tile < 1:
        raise ValueError(f"length and tile must be >= 1, got length={length} tile={tile}")
    if isinstance(overlap, float) and not overlap.is_integer():
        raise ValueError(f"overlap {overlap} must be a whole number of pixels (infer.overlap is in pixels)")
    overlap = int(overlap)
    if not 0 <= overlap < tile:
        raise ValueError(f"overlap {overlap} px must be in [0, tile) = [0, {tile})")
    stride = tile - overlap
    if length <= tile:
        return [0]
    last = length - tile
    origins = list(range(0, last + 1, stride))
    if origins[-1] != last:
        origins.append(last)
    return origins


def recompute_factor(length: int, tile: int, overlap: int) -> float:
    """Pixels the tiles of one axis compute per pixel of ``length`` (the 2-D factor is the product of both axes')."""
    return len(tile_origins(length, tile, overlap)) * tile / length


def grid_tiling(height: int, width: int, tile: int, overlap: int, multiple: int = 8) -> tuple[int, int]:
    """The (tile, overlap) used on a ``height x width`` grid.

    The configured ones, unless the whole grid fits in one tile: then one tile of the
    grid's longer side (rounded up to ``multiple``, the model's size granularity) and
    no overlap, so that a small region is one pass of the model instead of a larger
    tile mostly made of padding. Depends on the grid only, never on a block.
    """
    longest = -(-max(int(height), int(width)) // multiple) * multiple
    if longest <= tile:
        return longest, 0
    return int(tile), int(overlap)


@dataclass(frozen=True)
class TileLayout:
    """Tiles over a ``height x width`` grid, with the blending window of each tile.

    Parameters
    ----------
    height, width : int
        Grid size in pixels; tile positions depend on it only.
    tile : int
        Square tile size; tiles larger than the grid are padded by the caller.
    overlap : int
        Pixels shared by neighbouring tiles.
    kind : str
        Window kind (see :func:`window`).
    floor, sigma_scale : float
        Passed to :func:`window`.
    area : (row, col, rows, cols), optional
        The part of the grid to blend (a spatial block); default the whole grid.
        :attr:`rows` and :attr:`cols` then list the tiles of the grid's lattice
        that touch it; their reads reach outside it (its halo).
    """

    height: int
    width: int
    tile: int
    overlap: int
    kind: str = "hann"
    floor: float = 1e-3
    sigma_scale: float = 0.125
    area: tuple[int, int, int, int] | None = None
    _cache: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.area is not None:
            r, c, h, w = (int(v) for v in self.area)
            if h < 1 or w < 1 or r < 0 or c < 0 or r + h > self.height or c + w > self.width:
                raise ValueError(f"area {self.area} (row, col, rows, cols) is not inside the "
                                 f"{self.height}x{self.width} grid")

    @property
    def bounds(self) -> tuple[int, int, int, int]:
        """The blended area as (row, col, rows, cols): :attr:`area`, or the whole grid."""
        return tuple(int(v) for v in self.area) if self.area is not None else (0, 0, self.height, self.width)

    def _touching(self, length: int, start: int, size: int) -> list[int]:
        return [o for o in tile_origins(length, self.tile, self.overlap) if o < start + size and o + self.tile > start]

    @property
    def rows(self) -> list[int]:
        """Grid row offsets of the tile rows that touch the area."""
        r, _, h, _ = self.bounds
        return self._touching(self.height, r, h)

    @property
    def cols(self) -> list[int]:
        """Grid column offsets of the tile columns that touch the area."""
        _, c, _, w = self.bounds
        return self._touching(self.width, c, w)

    def tile_window(self, row: int, col: int) -> np.ndarray:
        """Window of the tile at grid offset (``row``, ``col``), adjusted at the grid border.

        A tile is on the top/left border when its offset is 0 and on the
        bottom/right border when it reaches the grid's end (never at the edge
        of an area: blocks blend as the whole grid does). At most nine distinct
        windows exist; they are cached.
        """
        flags = (row == 0, row + self.tile >= self.height, col == 0, col + self.tile >= self.width)
        if flags not in self._cache:
            base = window(self.tile, self.kind, self.floor, self.sigma_scale)
            self._cache[flags] = border_adjusted_window(base, *flags)
        return self._cache[flags]


class BlendAccumulator:
    """Weighted accumulation of tile predictions for a moving band of rows.

    The buffer covers output rows ``[top, top + capacity)``. Tiles are added in
    order of increasing row offset; once no later tile can reach a row,
    :meth:`flush` normalizes it (sum of weighted predictions / sum of weights),
    hands it out and frees its buffer space. Pixels that received no finite
    prediction come out as NaN.

    Parameters
    ----------
    height, width : int
        Region size in pixels.
    capacity : int
        Buffer height in rows; must be at least the tile height (it is clipped to
        ``height``).
    dtype : numpy dtype
        Accumulation dtype (float64 by default, so that a constant prediction stays
        exactly constant after the float32 cast).
    """

    def __init__(self, height: int, width: int, capacity: int, dtype=np.float64) -> None:
        if height < 1 or width < 1 or capacity < 1:
            raise ValueError(f"accumulator sizes must be positive, got height={height} width={width} "
                             f"capacity={capacity}")
        self.height = int(height)
        self.width = int(width)
        self.capacity = min(int(capacity), self.height)
        self.top = 0
        self._sum = np.zeros((self.capacity, self.width), dtype=dtype)
        self._weight = np.zeros((self.capacity, self.width), dtype=dtype)

    @property
    def buffer_rows(self) -> int:
        """Height of the accumulation buffers (rows)."""
        return self._sum.shape[0]

    def add(self, prediction: np.ndarray, weight: np.ndarray, row: int, col: int) -> None:
        """Accumulate one tile prediction placed at region offset (``row``, ``col``).

        Parts of the tile outside the region (padding, or a block's halo) are
        dropped; non-finite predictions get weight 0.

        Parameters
        ----------
        prediction, weight : numpy.ndarray
            (rows, cols) arrays of the same shape.
        row, col : int
            Region offset of the tile's top-left pixel (negative above or left of
            the region); its first row inside the region must be ``>= top``.
        """
        if prediction.shape != weight.shape or prediction.ndim != 2:
            raise ValueError(f"prediction {prediction.shape} and weight {weight.shape} must be equal 2-D shapes")
        dr, dc = max(0, -row), max(0, -col)  # parts above or left of the area (a block's halo) are dropped
        row, col = row + dr, col + dc
        h = min(prediction.shape[0] - dr, self.height - row)
        w = min(prediction.shape[1] - dc, self.width - col)
        if h < 1 or w < 1:
            raise ValueError(f"tile at ({row - dr}, {col - dc}) does not overlap the {self.height}x{self.width} region")
        if row < self.top or row + h > self.top + self.capacity:
            raise ValueError(f"tile rows [{row}, {row + h}) fall outside the accumulator band "
                             f"[{self.top}, {self.top + self.capacity}); flush before adding further rows "
                             "or raise the capacity")
        pred = prediction[dr:dr + h, dc:dc + w]
        wgt = np.where(np.isfinite(pred), weight[dr:dr + h, dc:dc + w], 0.0)
        r0 = row - self.top
        self._sum[r0:r0 + h, col:col + w] += wgt * np.nan_to_num(pred, nan=0.0, posinf=0.0, neginf=0.0)
        self._weight[r0:r0 + h, col:col + w] += wgt

    def flush(self, upto: int) -> tuple[int, np.ndarray] | None:
        """Hand out the finished rows ``[top, upto)`` (normalized, float32) and free them.

        Returns
        -------
        (int, numpy.ndarray) or None
            The first row index and the (rows, width) float32 block, or ``None`` if
            no row is finished.
        """
        upto = min(int(upto), self.height)
        n = upto - self.top
        if n <= 0:
            return None
        if n > self.capacity:
            raise ValueError(f"cannot flush {n} rows from a buffer of {self.capacity} rows")
        out = np.full((n, self.width), np.nan, dtype=np.float32)
        # divided in the accumulation dtype, then rounded once to float32
        np.divide(self._sum[:n], self._weight[:n], out=out, where=self._weight[:n] > 0, casting="same_kind")
        # shift the remaining rows up (numpy buffers overlapping copies) and clear the freed tail
        keep = self.capacity - n
        if keep:
            self._sum[:keep] = self._sum[n:]
            self._weight[:keep] = self._weight[n:]
        self._sum[keep:] = 0
        self._weight[keep:] = 0
        first = self.top
        self.top = upto
        return first, out


def blend_tiles(tiles: Iterator[tuple[int, int, np.ndarray]], layout: TileLayout) -> Iterator[tuple[int, np.ndarray]]:
    """Blend predictions, given tile row by tile row, into finished output row blocks of the area.

    Parameters
    ----------
    tiles : iterator of (row, col, prediction)
        Predictions (tile x tile arrays) at grid offsets, in row-major tile order
        of ``layout`` (its :attr:`~TileLayout.rows` and :attr:`~TileLayout.cols`).
    layout : TileLayout
        The tile layout the predictions follow.

    Yields
    ------
    (int, numpy.ndarray)
        First row (relative to the area) and a float32 (rows, area width) block;
        blocks follow each other without gaps and cover the whole area.
    """
    r0, c0, height, width = layout.bounds
    rows = tile_origins(layout.height, layout.tile, layout.overlap)
    acc = BlendAccumulator(height, width, layout.tile)
    # rows above the next tile row's origin are final once a tile row is done
    next_row = {r: (rows[i + 1] if i + 1 < len(rows) else layout.height) - r0 for i, r in enumerate(rows)}
    current = None
    for row, col, pred in tiles:
        if current is not None and row != current:
            done = acc.flush(next_row[current])
            if done is not None:
                yield done
        current = row
        acc.add(pred, layout.tile_window(row, col), row - r0, col - c0)
    done = acc.flush(height)
    if done is not None:
        yield done
