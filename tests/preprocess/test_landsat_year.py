"""The yearly Landsat composite from scenes in the local layout: median of clear observations per (year, block),
gap filling from neighbouring years' block composites, coverage checks (pandafine.preprocess.landsat_composite)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine

from pandafine.core.blocks import grid_blocks
from pandafine.core.channels import LANDSAT_BANDS
from pandafine.core.grid import CHINA_ALBERS, Grid, grid_from_bbox
from pandafine.core.raster_io import write_raster
from pandafine.preprocess import landsat_composite as lc
from pandafine.sensors.landsat import reflectance_to_dn
from pandafine.sources.local import landsat_scenes

ANCHOR = (-2643772.86, 5926896.53)
CLEAR_QA = 21824
CLOUD_QA = 22280


def make_cfg(**pre):
    base = {"landsat_gapfill_years": 2}
    base.update(pre)
    return {"preprocess": base}


def composite(tmp_path, cfg, year, root, grid, out):
    """Block composites (one block: the grid) of every year under ``root``, then the year's composite."""
    block = grid_blocks(grid, 0)[0]
    comps = {}
    for d in sorted(Path(root).iterdir()):
        y = int(d.name)
        p = tmp_path / "blocks" / str(y) / f"{block.name}.tif"
        params = lc.CompositeParams(coastal="native", overviews=False)
        stats = lc.composite_block(landsat_scenes(root, y), grid, block, p, params,
                                   year=y, log=lambda m: None)
        lc.write_block_record(p.with_suffix(".json"), y, block, stats, "local")
        comps[y] = {block.name: p}
    comps.setdefault(year, {})
    if block.name not in comps[year]:  # a year without scene directory: an empty block composite
        p = tmp_path / "blocks" / str(year) / f"{block.name}.tif"
        lc.composite_block([], grid, block, p, year=year, log=lambda m: None)
        comps[year] = {block.name: p}
    lc.composite_year(cfg, year, comps, grid, [block], out, window=16)  # several windows
    return Path(out)


# ----------------------------------------------------------------------------- Landsat composite (pure)


def test_median_composite_counts_clear_only():
    stack = np.array([[[[0.1, 0.1]]], [[[0.3, np.nan]]], [[[0.2, 0.4]]], [[[np.nan, np.nan]]]],
                     np.float32)  # (obs=4, bands=1, 1, 2)
    med, count = lc.median_composite(stack)
    np.testing.assert_allclose(med[0, 0], [0.2, 0.25])
    np.testing.assert_array_equal(count[0], [3, 2])
    # an observation missing one band is not clear for any band
    two = np.array([[[[0.1]], [[np.nan]]], [[[0.5]], [[0.6]]]], np.float32)
    med, count = lc.median_composite(two)
    np.testing.assert_allclose(med[:, 0, 0], [0.5, 0.6])
    assert count[0, 0] == 1


# ----------------------------------------------------------------------------- Landsat composite (files)

UTM49 = "EPSG:32649"


def composite_setup(tmp_path):
    """Working grid near Xi'an and a writer of calibrated 7-band scenes (UTM 30 m) covering it."""
    grid = grid_from_bbox((108.90, 34.20, 108.94, 34.23), CHINA_ALBERS, 125.0, 8, ANCHOR)
    from rasterio.warp import transform as warp_xy
    from rasterio.warp import transform_bounds

    left, bottom, right, top = transform_bounds(grid.crs, UTM49, *grid.bounds, densify_pts=21)
    x0, y0 = np.floor(left / 30) * 30 - 600, np.ceil(top / 30) * 30 + 600
    w, h = int((right - x0) // 30 + 21), int((y0 - bottom) // 30 + 21)
    st = Affine(30.0, 0, x0, 0, -30.0, y0)
    sg = Grid(UTM49, st, w, h, 1)
    # working-grid (row, col) of every scene pixel centre
    cc, rr = np.meshgrid(np.arange(w) + 0.5, np.arange(h) + 0.5)
    ux, uy = st @ (cc, rr)
    ax, ay = warp_xy(UTM49, grid.crs, ux.ravel(), uy.ravel())
    gcol, grow = ~grid.transform @ (np.array(ax), np.array(ay))
    grow, gcol = np.floor(grow).reshape(h, w), np.floor(gcol).reshape(h, w)

    def write_scene(year_dir: Path, name: str, value: float, cloud_boxes=()):
        """An OLI scene (local layout) of reflectance ``value + 0.01 * band index``, cloudy (QA) in the boxes."""
        qa = np.full((h, w), CLEAR_QA, np.uint16)
        for r0, r1, c0, c1 in cloud_boxes:  # working-grid pixel boxes [r0, r1) x [c0, c1)
            qa[(grow >= r0) & (grow < r1) & (gcol >= c0) & (gcol < c1)] = CLOUD_QA
        d = year_dir / name
        for i in range(7):
            dn = reflectance_to_dn(np.full((h, w), value + 0.01 * i))
            write_raster(d / f"{name}_SR_B{i + 1}.TIF", dn, sg, nodata=0)
        write_raster(d / f"{name}_QA_PIXEL.TIF", qa, sg, nodata=1)

    return grid, write_scene


def test_composite_median_and_gapfill(tmp_path):
    grid, write_scene = composite_setup(tmp_path)
    H, W = grid.shape
    assert H >= 24 and W >= 24
    box1 = (2, 10, 2, 10)          # cloudy in one scene of 2000 -> median of the other two
    box2 = (11, 23, 11, 23)        # cloudy in every 2000 scene -> filled from 2001 (distance 1)
    box3 = (15, 19, 15, 19)        # ... also cloudy in 2001 -> filled from 1998 (distance 2)
    d = {y: tmp_path / "raw" / str(y) for y in (1998, 2000, 2001)}
    write_scene(d[2000], "LC08_L2SP_127036_20000301_20200916_02_T1", 0.10, [box2])
    write_scene(d[2000], "LC08_L2SP_127036_20000601_20200916_02_T1", 0.30, [box1, box2])
    write_scene(d[2000], "LC08_L2SP_127036_20000901_20200916_02_T1", 0.20, [box2])
    write_scene(d[2001], "LC08_L2SP_127036_20010601_20200916_02_T1", 0.50, [box3])
    write_scene(d[1998], "LC08_L2SP_127036_19980601_20200916_02_T1", 0.90)
    out = composite(tmp_path, make_cfg(landsat_gapfill_years=2), 2000, tmp_path / "raw", grid,
                    tmp_path / "den" / "2000.tif")
    with rasterio.open(out) as src:
        assert src.count == 8 and src.descriptions == LANDSAT_BANDS + ("clear_count",)
        assert src.crs == rasterio.crs.CRS.from_user_input(CHINA_ALBERS) and src.transform == grid.transform
        a = src.read()
    def check(sel, value):  # sel: (7, ...) composite values; scene value + 0.01 * band index expected
        sel = sel.reshape(7, -1)
        assert sel.shape[1] > 0
        want = np.broadcast_to((value + 0.01 * np.arange(7))[:, None], sel.shape)
        np.testing.assert_allclose(sel, want, atol=2e-5)  # DN quantization 2.75e-5

    def inner(box, m=1):  # box interior, one pixel margin (edge pixels mix clear and cloudy 30 m pixels)
        r0, r1, c0, c1 = box
        return slice(r0 + m, r1 - m), slice(c0 + m, c1 - m)

    clear = np.ones((H, W), bool)
    for r0, r1, c0, c1 in (box1, box2):
        clear[max(0, r0 - 1):r1 + 1, max(0, c0 - 1):c1 + 1] = False
    check(a[:7][:, clear], 0.20)            # median(0.1, 0.3, 0.2)
    assert np.all(a[7][clear] == 3)
    s1 = inner(box1)
    check(a[:7, s1[0], s1[1]], 0.15)        # median(0.1, 0.2)
    assert np.all(a[7][s1] == 2)
    ring = np.zeros((H, W), bool)
    ring[inner(box2)] = True
    ring[box3[0] - 1:box3[1] + 1, box3[2] - 1:box3[3] + 1] = False
    check(a[:7][:, ring], 0.50)             # nearest year first (2001), not 1998
    s3 = inner(box3)
    check(a[:7, s3[0], s3[1]], 0.90)        # 2001 cloudy too -> 1998
    assert np.all(a[7][inner(box2)] == 0)


def test_composite_without_neighbours_leaves_nan(tmp_path):
    grid, write_scene = composite_setup(tmp_path)
    write_scene(tmp_path / "raw" / "2000", "LC08_L2SP_127036_20000601_20200916_02_T1", 0.3, [(3, 9, 3, 9)])
    with pytest.warns(UserWarning, match="no clear observation"):
        out = composite(tmp_path, make_cfg(landsat_gapfill_years=1), 2000, tmp_path / "raw", grid, tmp_path / "o.tif")
    a = rasterio.open(out).read()
    assert np.isnan(a[:7, 4:8, 4:8]).all() and np.all(a[7, 4:8, 4:8] == 0)
    assert np.all(a[7, 12:, 12:] == 1)


def test_composite_records_its_coverage(tmp_path):
    grid, write_scene = composite_setup(tmp_path)
    H, W = grid.shape
    # 2000 is cloudy on a box; 2001 is clear there, so the gap is filled
    write_scene(tmp_path / "raw" / "2000", "LC08_L2SP_127036_20000601_20200916_02_T1", 0.3, [(0, 8, 0, W)])
    write_scene(tmp_path / "raw" / "2001", "LC08_L2SP_127036_20010601_20200916_02_T1", 0.4)
    out = composite(tmp_path, make_cfg(landsat_gapfill_years=1), 2000, tmp_path / "raw", grid, tmp_path / "o.tif")
    with rasterio.open(out) as src:
        cov = lc.LandsatCoverage.from_tags(src.tags())
        count = src.read(8)
    assert cov.year == 2000 and cov.scenes == 1 and cov.valid == 1.0
    assert cov.clear == pytest.approx((count > 0).mean(), abs=1e-6)
    assert 1 - 9 / H < cov.clear < 1 - 5 / H  # about the 8 cloudy rows are not clear (the box edge is tilted)


def _scene_far_away(tmp_path, grid, km):
    """One clear OLI scene the size of the grid's footprint, ``km`` kilometres east of it (local layout)."""
    from rasterio.warp import transform_bounds

    left, bottom, right, top = transform_bounds(grid.crs, UTM49, *grid.bounds, densify_pts=21)
    g = Grid(UTM49, Affine(30.0, 0, left + km * 1000.0, 0, -30.0, top), int((right - left) // 30) + 2,
             int((top - bottom) // 30) + 2, 1)
    name = "LC08_L2SP_127036_20000601_20200916_02_T1"
    d = tmp_path / "raw" / "2000" / name
    for i in range(7):
        write_raster(d / f"{name}_SR_B{i + 1}.TIF", reflectance_to_dn(np.full((g.height, g.width), 0.2)), g, nodata=0)
    write_raster(d / f"{name}_QA_PIXEL.TIF", np.full((g.height, g.width), CLEAR_QA, np.uint16), g, nodata=1)
    return tmp_path / "raw"


def test_landsat_of_another_place_is_an_error(tmp_path):
    grid, _ = composite_setup(tmp_path)
    raw = _scene_far_away(tmp_path, grid, 500)
    out = tmp_path / "den" / "2000.tif"
    with pytest.raises(ValueError, match=r"Landsat 2000: .*valid on 0\.0 % .*min_landsat_coverage = 90 %.*"
                                         r"r000c000 \(0 scene\(s\) read, 1 outside it, clear on 0 %\)"):
        composite(tmp_path, make_cfg(landsat_gapfill_years=1), 2000, raw, grid, out)
    assert not out.exists() and not list(out.parent.glob("*"))  # nothing written, no temporary left


def test_landsat_covering_part_of_the_grid_names_the_scenes(tmp_path):
    grid, _ = composite_setup(tmp_path)
    width_km = grid.width * grid.pixel_size / 1000
    raw = _scene_far_away(tmp_path, grid, 0.6 * width_km)  # covers the east ~40 % of the grid
    out = tmp_path / "o.tif"
    with pytest.raises(ValueError, match=r"valid on \d+\.\d % .*r000c000 \(1 scene\(s\) read, 0 outside it, clear "
                                         r"on \d+ %\)"):
        composite(tmp_path, make_cfg(landsat_gapfill_years=0), 2000, raw, grid, out)
    assert not out.exists()
    # a lower minimum accepts the partial composite and records how much it covers
    with pytest.warns(UserWarning, match="no clear observation"):
        composite(tmp_path, make_cfg(landsat_gapfill_years=0, min_landsat_coverage=0.2), 2000, raw, grid, out)
    with rasterio.open(out) as src:
        cov = lc.LandsatCoverage.from_tags(src.tags())
    assert 0.25 < cov.valid == cov.clear < 0.6


def test_coverage_counts_the_region_only(tmp_path):
    """With region.mask the coverage is a fraction of the pixels inside the outline: Landsat missing outside the
    region (sea, neighbouring land) does not fail the year."""
    grid, _ = composite_setup(tmp_path)
    width_km = grid.width * grid.pixel_size / 1000
    raw = _scene_far_away(tmp_path, grid, 0.6 * width_km)  # covers the east ~40 % of the grid
    block = grid_blocks(grid, 0)[0]
    p = tmp_path / "blocks" / "2000" / f"{block.name}.tif"
    lc.composite_block(landsat_scenes(raw, 2000), grid, block, p, lc.CompositeParams(), year=2000,
                       log=lambda m: None)
    east = np.zeros(grid.shape, bool)
    east[:, int(0.8 * grid.width):] = True  # the region: the eastern fifth, all under the scene

    def region(area):
        r, c, h, w = area
        return east[r:r + h, c:c + w]

    cfg = make_cfg(landsat_gapfill_years=0)
    with pytest.raises(ValueError, match="valid on"):  # over the whole grid: ~40 % < 90 %
        lc.composite_year(cfg, 2000, {2000: {block.name: p}}, grid, [block], tmp_path / "all.tif")
    # no warning either: the pixels without Landsat are outside the region
    cov = lc.composite_year(cfg, 2000, {2000: {block.name: p}}, grid, [block], tmp_path / "o.tif", region=region)
    assert cov.valid == cov.clear == 1.0
    a = rasterio.open(tmp_path / "o.tif").read(8)
    assert (a[:, : int(0.3 * grid.width)] == 0).all()  # pixels outside the region are kept, without Landsat
