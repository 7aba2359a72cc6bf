"""The region's outline (region.mask): blocks touching it, pixels inside it, the block list file."""

from __future__ import annotations

import json

import numpy as np
import pytest
from affine import Affine

from pandafine.core.blocks import grid_blocks
from pandafine.core.grid import Grid
from pandafine.core.region import (
    block_box,
    blocks_touching,
    format_block_list,
    inside_outline,
    plan_blocks,
    read_block_list,
    read_outline,
)

UTM = "EPSG:32649"  # UTM 49N, metres


@pytest.fixture
def grid():
    """A 100 x 160 px grid of 10 m pixels in UTM 49N, origin (500000, 3800000)."""
    return Grid(UTM, Affine(10, 0, 500_000, 0, -10, 3_800_000), 160, 100)


def cfg_for(block, mask=None):
    region = {"name": "t", "bbox": [0, 0, 1, 1]}
    if mask:
        region["mask"] = str(mask)
    return {"grid": {"block": block}, "region": region}


def write_geojson(path, rings, crs="EPSG:4326", kind="Polygon"):
    """A GeoJSON FeatureCollection of polygons (each a list of (x, y)) in ``crs``."""
    feats = [{"type": "Feature", "properties": {},
              "geometry": {"type": kind, "coordinates": [list(map(list, r))] if kind == "Polygon" else list(r[0])}}
             for r in rings]
    doc = {"type": "FeatureCollection", "features": feats}
    if crs != "EPSG:4326":
        doc["crs"] = {"type": "name", "properties": {"name": crs}}
    path.write_text(json.dumps(doc))
    return path


def pixel_ring(grid, r0, c0, r1, c1):
    """Closed ring along the edges of the pixel rectangle rows r0..r1, cols c0..c1 (grid CRS)."""
    t = grid.transform
    pts = [t * (c0, r0), t * (c1, r0), t * (c1, r1), t * (c0, r1)]
    return pts + pts[:1]


def test_blocks_touching_an_l_shape(grid):
    import shapely

    blocks = grid_blocks(grid, 40)  # 3 rows (40, 40, 20) x 4 cols of blocks
    # an L: the whole first block row, plus the first block column down to row 90
    outline = shapely.union_all([shapely.Polygon(pixel_ring(grid, 5, 5, 35, 155)),
                                 shapely.Polygon(pixel_ring(grid, 5, 5, 90, 35))])
    names = [b.name for b in blocks_touching(blocks, grid, outline)]
    assert names == ["r000c000", "r000c001", "r000c002", "r000c003", "r001c000", "r002c000"]
    assert blocks_touching(blocks, grid, None) == blocks


def test_block_box_is_the_block_footprint(grid):
    b = grid_blocks(grid, 40)[5]  # r001c001
    assert block_box(grid, b).bounds == (500_400, 3_799_200, 500_800, 3_799_600)


def test_inside_outline_marks_pixel_centres(grid):
    import shapely

    outline = shapely.Polygon(pixel_ring(grid, 10, 20, 30, 50))
    inside = inside_outline(outline, grid, (0, 0, 100, 160))
    expected = np.zeros((100, 160), bool)
    expected[10:30, 20:50] = True
    np.testing.assert_array_equal(inside, expected)
    # a window of the grid sees the same pixels
    np.testing.assert_array_equal(inside_outline(outline, grid, (8, 16, 40, 40)), expected[8:48, 16:56])


def test_outline_in_lonlat_is_reprojected(tmp_path, grid):
    from rasterio.warp import transform

    ring = pixel_ring(grid, 10, 20, 30, 50)
    lon, lat = transform(UTM, "EPSG:4326", [x for x, _ in ring], [y for _, y in ring])
    path = write_geojson(tmp_path / "outline.geojson", [list(zip(lon, lat))])
    outline = read_outline(path, UTM)
    inside = inside_outline(outline, grid, (0, 0, 100, 160))
    # straight edges in UTM are straight in lon/lat to well under a pixel over 300 m
    assert inside[11:29, 21:49].all() and inside.sum() == pytest.approx(20 * 30, abs=4)


def test_plan_blocks_writes_the_list_once(tmp_path, grid):
    path = write_geojson(tmp_path / "outline.geojson", [pixel_ring(grid, 5, 5, 35, 35)], crs=UTM)
    listing = tmp_path / "results" / "blocks.csv"
    blocks = plan_blocks(cfg_for(40, path), grid, listing)
    assert [b.name for b in blocks] == ["r000c000"]
    assert read_block_list(listing) == blocks
    stamp = listing.stat().st_mtime_ns
    plan_blocks(cfg_for(40, path), grid, listing)
    assert listing.stat().st_mtime_ns == stamp  # same plan: the file is left alone
    # without a mask: every block of the grid
    assert read_block_list(listing) != plan_blocks(cfg_for(40), grid, listing)
    assert len(read_block_list(listing)) == 12
    assert format_block_list([]).strip() == "block,row,col,row_off,col_off,height,width"


def test_mask_errors_name_the_file(tmp_path, grid):
    with pytest.raises(ValueError, match="does not exist"):
        read_outline(tmp_path / "nope.gpkg", UTM)
    bad = tmp_path / "bad.geojson"
    bad.write_text("not json")
    with pytest.raises(ValueError, match="bad.geojson.*not a readable vector file"):
        read_outline(bad, UTM)
    pts = write_geojson(tmp_path / "points.geojson", [[(108.9, 34.2)]], kind="Point")
    with pytest.raises(ValueError, match="points.geojson holds no polygon.*Point"):
        read_outline(pts, UTM)
    far = write_geojson(tmp_path / "far.geojson", [pixel_ring(grid, 500, 500, 600, 600)], crs=UTM)
    with pytest.raises(ValueError, match="far.geojson does not overlap the working grid"):
        plan_blocks(cfg_for(40, far), grid)
