"""Assembling a yearly product from the GeoTIFFs of its spatial blocks.

Each block of the working grid (:mod:`pandafine.core.blocks`) is inferred by its
own job (:func:`pandafine.inference.infer.infer_year` with an ``area``) into a
tiled GeoTIFF on the grid's pixel lattice. :func:`assemble_product` checks that
the blocks belong together (same grid, bands and product tags), streams them
block by block into one tiled GeoTIFF of the whole grid (grid pixels no block
covers stay nodata) and writes that as the product COG (:func:`write_cog`).
Memory is one block, never the grid.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np

from pandafine.core.grid import Grid
from pandafine.core.raster_io import open_raster
from pandafine.core.windows import intersect_blocks
from pandafine.product.cog import tiled_profile, tiled_temporary, write_cog

#: Tags of a block that must agree across the blocks of one product (what made it), besides the grid.
AGREEING_TAGS = ("year", "config_sha256", "model_sha256", "input_sha256", "pandafine_version")


def block_offset(transform, grid: Grid, path: Path) -> tuple[int, int]:
    """(row, col) of a block's top-left pixel on ``grid``; ``ValueError`` unless it sits on the grid's lattice."""
    if tuple(transform)[:2] != tuple(grid.transform)[:2] or tuple(transform)[3:5] != tuple(grid.transform)[3:5]:
        raise ValueError(f"{path}: pixel size {transform.a, transform.e} differs from the working grid's "
                         f"{grid.transform.a, grid.transform.e}")
    col, row = ~grid.transform * (transform.c, transform.f)
    if abs(col - round(col)) > 1e-6 or abs(row - round(row)) > 1e-6:
        raise ValueError(f"{path}: origin ({transform.c}, {transform.f}) is not on the working grid's pixel lattice")
    return int(round(row)), int(round(col))


def assemble_product(block_paths: Sequence[str | os.PathLike], grid: Grid, out_path: str | os.PathLike, *,
                     compress: str = "zstd", blocksize: int = 512) -> Path:
    """Join block GeoTIFFs of one year into the product COG on ``grid``.

    Parameters
    ----------
    block_paths : sequence of path
        The blocks' GeoTIFFs (any order); blocks that were skipped (all nodata) may be absent.
    grid : Grid
        The working grid.
    out_path : path
        The product COG; written through temporary files and a rename.
    compress, blocksize
        As :func:`pandafine.product.cog.write_cog`.

    Raises
    ------
    ValueError
        If a block lies off the grid's lattice or outside it, overlaps another, or
        differs from the first in CRS, bands or the tags of :data:`AGREEING_TAGS`.
    """
    import rasterio
    from rasterio.crs import CRS
    from rasterio.windows import Window

    if not block_paths:
        raise ValueError(f"{out_path}: no block to assemble")
    out_path = Path(out_path)
    paths = [Path(p) for p in block_paths]
    grid_crs = CRS.from_user_input(grid.crs)
    first_tags, bands, descriptions, band_tags = None, None, None, None
    placed: list[tuple[int, int, int, int]] = []  # (row, col, height, width) of the blocks read so far
    offsets = {}
    for p in paths:
        with open_raster(p) as src:
            if src.crs != grid_crs:
                raise ValueError(f"{p}: CRS differs from the working grid's")
            row, col = block_offset(src.transform, grid, p)
            if row < 0 or col < 0 or row + src.height > grid.height or col + src.width > grid.width:
                raise ValueError(f"{p}: {src.height}x{src.width} block at ({row}, {col}) lies outside the "
                                 f"{grid.height}x{grid.width} working grid")
            area = (row, col, src.height, src.width)
            if any(intersect_blocks(area, other) is not None for other in placed):
                raise ValueError(f"{p}: overlaps another block at ({row}, {col})")
            placed.append(area)
            tags = src.tags()
            if first_tags is None:
                first_tags, bands, descriptions = tags, src.count, src.descriptions
                band_tags = [src.tags(b) for b in range(1, src.count + 1)]
            else:
                differ = [k for k in AGREEING_TAGS if tags.get(k) != first_tags.get(k)]
                if src.count != bands or src.descriptions != descriptions or differ:
                    raise ValueError(f"{p}: does not belong with {paths[0]} (bands {src.descriptions} vs "
                                     f"{descriptions}; differing tags: {differ or 'none'}); was a block left from "
                                     "another run?")
            offsets[p] = (row, col)

    with tiled_temporary(out_path) as tmp:
        with rasterio.open(tmp, "w", **tiled_profile(grid.height, grid.width, bands, grid_crs, grid.transform)) as dst:
            for b in range(1, bands + 1):
                if descriptions[b - 1]:
                    dst.set_band_description(b, descriptions[b - 1])
                dst.update_tags(b, **band_tags[b - 1])
            dst.update_tags(**first_tags)
            for p, (row, col) in offsets.items():
                with open_raster(p) as src:
                    dst.write(src.read().astype(np.float32, copy=False),
                              window=Window(col, row, src.width, src.height))
        write_cog(tmp, out_path, compress=compress, blocksize=blocksize, tags=first_tags)
    return out_path
