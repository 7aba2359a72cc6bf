"""Reading a cube tile by tile: padded tiles in batches, in the order of a :class:`TileLayout`.

Shared by the ONNX inference (:mod:`pandafine.inference.infer`) and the tiled
sampling of the generative models (:mod:`pandafine.inference.sampling`).
"""

from __future__ import annotations

from typing import Iterator

import numpy as np

from pandafine.inference.blending import TileLayout


def pad_block(block: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """Pad a (C, h, w) block at its bottom/right to (C, rows, cols) by reflection.

    Reflection (mirror without repeating the edge; edge replication for a
    1-pixel axis) keeps the padded context statistically like the region.
    """
    c, h, w = block.shape
    if h > rows or w > cols:
        raise ValueError(f"block {h}x{w} is larger than the target {rows}x{cols}")
    if h == rows and w == cols:
        return block
    return np.pad(block, ((0, 0), (0, rows - h), (0, cols - w)), mode="reflect")


def iter_tile_batches(inputs, layout: TileLayout, batch_size: int, *,
                      source: str = "inputs") -> Iterator[tuple[int, list[int], np.ndarray]]:
    """Read tiles from a (C, H, W) array-like in row-major order, batched within each tile row.

    Each batch is read with one slice spanning its tiles (Zarr chunks are read once
    per batch, not once per tile), then padded where the region is smaller than a tile.
    A read failure (e.g. a truncated or corrupt chunk) is raised as ValueError naming
    ``source`` (the cube path) and the window.

    Yields
    ------
    (int, list of int, numpy.ndarray)
        Tile row offset, the tiles' column offsets, and a (B, C, tile, tile) float32 batch.
    """
    t, height, width = layout.tile, layout.height, layout.width
    cols = layout.cols
    for row in layout.rows:
        r1 = min(row + t, height)
        for i in range(0, len(cols), batch_size):
            group = cols[i:i + batch_size]
            c0, c1 = group[0], min(group[-1] + t, width)
            try:
                slab = np.asarray(inputs[:, row:r1, c0:c1], dtype=np.float32)
            except (OSError, RuntimeError, ValueError) as exc:
                raise ValueError(f"{source}: cannot read rows {row}:{r1}, columns {c0}:{c1} of the cube "
                                 f"(corrupt or truncated chunk?): {type(exc).__name__}: {exc}") from exc
            batch = np.empty((len(group), slab.shape[0], t, t), dtype=np.float32)
            for k, col in enumerate(group):
                tile = slab[:, :, col - c0:min(col + t, width) - c0]
                batch[k] = pad_block(tile, t, t)
            yield row, group, batch
