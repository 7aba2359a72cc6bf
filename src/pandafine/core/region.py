"""The region a run serves: its outline (``region.mask``) on the working grid, and the blocks that touch it.

The working grid is the rectangle of ``region.bbox``. ``region.mask`` (optional)
is a vector file (GeoPackage, GeoJSON, Shapefile, ... anything GDAL/OGR reads)
whose polygons outline the region, e.g. China's border: only the spatial blocks
(:mod:`pandafine.core.blocks`) that touch it are planned, and product pixels
outside it are nodata. Without it the region is the whole grid.

:func:`read_outline` is the only I/O here besides the block-list file; the
decisions (:func:`blocks_touching`, :func:`inside_outline`) are pure.
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from pandafine.core.atomic import write_text_atomic
from pandafine.core.blocks import Block, grid_blocks
from pandafine.core.grid import Grid

#: Columns of the block list file.
BLOCK_LIST_COLUMNS = ("block", "row", "col", "row_off", "col_off", "height", "width")


def read_outline(path: str | os.PathLike, crs: str):
    """The union of the polygons of a vector file, in ``crs`` (a shapely geometry).

    Raises
    ------
    ValueError
        If the file cannot be read, has no CRS, no feature, or no polygon.
    """
    import pyogrio
    import shapely
    from rasterio.crs import CRS
    from rasterio.warp import transform_geom

    path = Path(path)
    if not path.exists():
        raise ValueError(f"region.mask: {path} does not exist (expected a vector file with the region's outline)")
    try:
        meta, _, wkb, _ = pyogrio.raw.read(path, columns=[], force_2d=True)
    except Exception as exc:  # pyogrio raises its own DataSourceError/DataLayerError
        raise ValueError(f"region.mask: {path} is not a readable vector file ({type(exc).__name__}: {exc})") from exc
    if meta.get("crs") is None:
        raise ValueError(f"region.mask: {path} has no coordinate reference system (expected one, e.g. EPSG:4326)")
    geoms = [g for g in shapely.from_wkb(wkb) if g is not None and not g.is_empty] if wkb is not None else []
    polys = [g for g in geoms if g.geom_type in ("Polygon", "MultiPolygon")]
    if not polys:
        kinds = sorted({g.geom_type for g in geoms}) or ["no feature"]
        raise ValueError(f"region.mask: {path} holds no polygon (found: {', '.join(kinds)}); "
                         "expected the region's outline as (multi)polygons")
    outline = shapely.union_all([shapely.make_valid(g) for g in polys])
    src, dst = CRS.from_user_input(meta["crs"]), CRS.from_user_input(crs)
    if src != dst:
        outline = shapely.geometry.shape(transform_geom(src, dst, shapely.geometry.mapping(outline)))
    return outline


def block_box(grid: Grid, block: Block):
    """The block's footprint in the grid's CRS (a shapely box)."""
    import shapely

    left, top = grid.transform * (block.col_off, block.row_off)
    right, bottom = grid.transform * (block.col_off + block.width, block.row_off + block.height)
    return shapely.box(min(left, right), min(top, bottom), max(left, right), max(top, bottom))


def blocks_touching(blocks: Sequence[Block], grid: Grid, outline) -> list[Block]:
    """The blocks whose footprint intersects ``outline`` (None: every block), in their order."""
    if outline is None:
        return list(blocks)
    import shapely

    shapely.prepare(outline)
    return [b for b in blocks if outline.intersects(block_box(grid, b))]


def inside_outline(outline, grid: Grid, area: tuple[int, int, int, int]) -> np.ndarray:
    """Boolean (rows, cols) of an area of the grid: True where a pixel's centre lies inside ``outline``."""
    from rasterio.features import rasterize

    row, col, rows, cols = area
    return rasterize([(outline, 1)], out_shape=(rows, cols), transform=grid.window_transform(row, col),
                     fill=0, dtype="uint8", all_touched=False).astype(bool)


def format_block_list(blocks: Sequence[Block]) -> str:
    """The block list as CSV text (:data:`BLOCK_LIST_COLUMNS`)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(BLOCK_LIST_COLUMNS)
    for b in blocks:
        w.writerow([b.name, b.row, b.col, b.row_off, b.col_off, b.height, b.width])
    return buf.getvalue()


def read_block_list(path: str | os.PathLike) -> list[Block]:
    """The blocks of a block list file written by :func:`plan_blocks`."""
    path = Path(path)
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if rows and tuple(rows[0]) != BLOCK_LIST_COLUMNS:
        raise ValueError(f"{path}: columns {list(rows[0])}, expected {list(BLOCK_LIST_COLUMNS)}")
    return [Block(*(int(r[k]) for k in BLOCK_LIST_COLUMNS[1:])) for r in rows]


def plan_blocks(cfg: Mapping[str, Any], grid: Grid, list_path: str | os.PathLike | None = None,
                size: int | None = None) -> list[Block]:
    """The blocks of ``grid`` (edge ``size``, default ``grid.block``) that touch the region, optionally recorded
    in a CSV file.

    The file is rewritten only when its content changes (its time stamp then
    says when the plan last changed).
    """
    blocks = grid_blocks(grid, int(cfg["grid"].get("block", 0) or 0) if size is None else size)
    mask = cfg["region"].get("mask")
    outline = read_outline(mask, grid.crs) if mask else None
    touching = blocks_touching(blocks, grid, outline)
    if not touching:
        raise ValueError(f"region.mask: {mask} does not overlap the working grid of region.bbox "
                         f"{list(cfg['region']['bbox'])} (bounds {tuple(round(v) for v in grid.bounds)} in {grid.crs})")
    if list_path is not None:
        text = format_block_list(touching)
        p = Path(list_path)
        if not p.exists() or p.read_text() != text:
            p.parent.mkdir(parents=True, exist_ok=True)
            write_text_atomic(p, text)
    return touching


__all__ = ["BLOCK_LIST_COLUMNS", "read_outline", "block_box", "blocks_touching", "inside_outline",
           "format_block_list", "read_block_list", "plan_blocks"]
