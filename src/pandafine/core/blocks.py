"""Spatial blocks: the working grid cut into square blocks that jobs can process apart.

``grid.block`` (pixels) splits the grid into blocks of that edge, the last row
and column of blocks cut at the grid's border. A block is named by its block
row and column, ``r{row:03d}c{col:03d}``; ``grid.block`` absent or 0 is one
block, the whole grid (``r000c000``). Pure computation, no I/O.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pandafine.core.grid import Grid

#: Name of a block: its block row and column.
BLOCK_NAME = re.compile(r"r(\d{3,})c(\d{3,})")


@dataclass(frozen=True)
class Block:
    """One block of the working grid: its indices and its pixel window."""

    row: int
    col: int
    row_off: int
    col_off: int
    height: int
    width: int

    @property
    def name(self) -> str:
        """``r{row:03d}c{col:03d}``."""
        return f"r{self.row:03d}c{self.col:03d}"

    @property
    def area(self) -> tuple[int, int, int, int]:
        """(row_off, col_off, height, width) on the grid."""
        return self.row_off, self.col_off, self.height, self.width


def block_size_errors(block: int, factor: int, product_blocksize: int) -> list[str]:
    """Why ``grid.block`` is invalid (empty when it is fine): it must be a multiple of ``grid.factor``
    (whole PANDA cells) and of ``product.blocksize`` (whole COG tiles)."""
    errors = []
    if block < 0:
        errors.append(f"key 'grid.block': value {block} must be >= 0 (0: one block, the whole grid)")
    elif block:
        for key, m in (("grid.factor", factor), ("product.blocksize", product_blocksize)):
            if block % m:
                errors.append(f"key 'grid.block': value {block} must be a multiple of {key}={m}")
    return errors


def grid_blocks(grid: Grid, block: int | None) -> list[Block]:
    """The blocks of ``grid`` in row-major order (``block`` None or 0: one block, the whole grid)."""
    if not block:
        return [Block(0, 0, 0, 0, grid.height, grid.width)]
    if block < 1:
        raise ValueError(f"block size {block} must be >= 1 pixel")
    return [Block(i, j, r, c, min(block, grid.height - r), min(block, grid.width - c))
            for i, r in enumerate(range(0, grid.height, block))
            for j, c in enumerate(range(0, grid.width, block))]


def block_named(grid: Grid, block: int | None, name: str) -> Block:
    """The block called ``name`` (``r001c002``); ``ValueError`` naming the valid range otherwise."""
    m = BLOCK_NAME.fullmatch(name)
    blocks = grid_blocks(grid, block)
    if m:
        row, col = int(m.group(1)), int(m.group(2))
        for b in blocks:
            if (b.row, b.col) == (row, col):
                return b
    last = blocks[-1]
    raise ValueError(f"block {name!r}: expected a name r{{row:03d}}c{{col:03d}} of a block of this grid "
                     f"(rows 0..{last.row}, columns 0..{last.col})")
