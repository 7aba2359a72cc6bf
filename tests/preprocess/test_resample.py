import re

import numpy as np
import pytest
import rasterio
from affine import Affine

from pandafine.core.grid import Grid
from pandafine.core.raster_io import read_raster, write_raster
from pandafine.core.windows import row_bands
from pandafine.preprocess.resample import resample_layer, resample_to_grid


def test_row_bands_cover_exactly():
    bands = list(row_bands(10, 4))
    assert bands == [(0, 4), (4, 4), (8, 2)]
    with pytest.raises(ValueError):
        list(row_bands(10, 0))


def test_panda_nearest_gives_exact_8x8_blocks(tmp_path, small_grid):
    coarse = small_grid.coarse()
    dn = np.arange(coarse.height * coarse.width, dtype=np.float32).reshape(coarse.shape) % 64
    sat = (dn >= 63).astype(np.float32)
    src = write_raster(tmp_path / "panda.tif", np.stack([dn, sat]), coarse, nodata=np.nan)
    out = resample_layer("panda", src, small_grid, tmp_path / "out.tif", method="nearest")
    arr, g = read_raster(out)
    assert g.same_as(small_grid)
    np.testing.assert_array_equal(arr[0], np.kron(dn, np.ones((8, 8), np.float32)))


def test_average_preserves_block_means_and_nodata(tmp_path, small_grid):
    fine = small_grid.scaled(4)
    rng = np.random.default_rng(0)
    x = rng.random(fine.shape, dtype=np.float32)
    x[:8, :8] = np.nan  # a 2x2-pixel hole at the working resolution
    src = write_raster(tmp_path / "fine.tif", x, fine, nodata=np.nan)
    out = resample_to_grid(src, small_grid, tmp_path / "avg.tif", method="average", window=7)
    arr, _ = read_raster(out)
    expect = np.nanmean(x.reshape(small_grid.height, 4, small_grid.width, 4), axis=(1, 3))
    assert np.isnan(arr[0, :2, :2]).all()
    np.testing.assert_allclose(arr[0, 2:, 2:], expect[2:, 2:], rtol=1e-5)


@pytest.mark.parametrize("method", ["bilinear", "average", "nearest"])
def test_windows_do_not_change_the_result(tmp_path, small_grid, method):
    """Resampling streams square windows: any window size gives the one-window result."""
    fine = small_grid.scaled(3)
    x = np.random.default_rng(1).random(fine.shape, dtype=np.float32)
    x[5:9, 11:20] = np.nan
    src = write_raster(tmp_path / "fine.tif", x, fine, nodata=np.nan)
    whole, _ = read_raster(resample_to_grid(src, small_grid, tmp_path / "whole.tif", method=method, window=10_000))
    for size in (5, 16):
        part, _ = read_raster(resample_to_grid(src, small_grid, tmp_path / f"w{size}.tif", method=method,
                                               window=size))
        np.testing.assert_array_equal(part, whole)


def test_missing_crs_is_a_clear_error(tmp_path):
    p = tmp_path / "nocrs.tif"
    with rasterio.open(p, "w", driver="GTiff", width=4, height=4, count=1, dtype="float32") as dst:
        dst.write(np.ones((1, 4, 4), np.float32))
    from affine import Affine

    from pandafine.core.grid import CHINA_ALBERS, Grid

    grid = Grid(CHINA_ALBERS, Affine(125, 0, 0, 0, -125, 0), 8, 8, 8)
    with pytest.raises(ValueError, match="nocrs.tif.*no CRS"):
        resample_to_grid(p, grid, tmp_path / "o.tif", method="bilinear")
    assert not (tmp_path / "o.tif").exists()


def test_real_china_dmsplike_year_on_working_grid(tmp_path, realdata):
    """A real China-wide DMSP-like file (Albers, int8) resamples onto a grid snapped to its origin
    with every DN preserved (nearest, exact 8x8 blocks)."""
    from pandafine.core.grid import grid_from_bbox

    src = realdata / "kingsley_china_dmsplike" / "DMSP-like2018.tif"
    with rasterio.open(src) as ds:
        anchor = (ds.transform.c, ds.transform.f)
        crs = ds.crs.to_wkt()
    grid = grid_from_bbox((121.2, 30.9, 121.8, 31.4), crs, 125.0, 8, anchor)  # Shanghai
    out = resample_to_grid(src, grid, tmp_path / "sh.tif", method="nearest")
    arr, _ = read_raster(out)
    with rasterio.open(src) as ds:
        win = rasterio.windows.from_bounds(*grid.bounds, transform=ds.transform)
        orig = ds.read(1, window=win.round_offsets().round_lengths()).astype(np.float32)
        if ds.nodata is not None:
            orig[orig == ds.nodata] = np.nan
    np.testing.assert_array_equal(arr[0][::8, ::8], orig)
    assert np.nanmax(arr) > 30  # Shanghai is bright


def _dem(tmp_path, grid, name="dem.tif"):
    return write_raster(tmp_path / name, np.random.default_rng(1).random((1,) + grid.shape, dtype=np.float32),
                        grid, nodata=np.nan)


def test_dem_of_another_place_is_refused_naming_the_file(tmp_path, small_grid):
    elsewhere = Grid(small_grid.crs, Affine.translation(500_000, 0) * small_grid.transform, small_grid.width,
                     small_grid.height, small_grid.factor)  # 500 km east
    src = _dem(tmp_path, elsewhere)
    out = tmp_path / "out.tif"
    with pytest.raises(ValueError, match=r"dem\.tif: covers 0\.0 % of the working grid.*min_coverage = 99 %"):
        resample_layer("dem", src, small_grid, out, min_coverage=0.99)
    assert not out.exists() and not list(tmp_path.glob(".out*"))


def test_partial_coverage_is_measured_against_the_minimum(tmp_path, small_grid):
    # the DEM covers the left half of the grid
    half = Grid(small_grid.crs, small_grid.transform, small_grid.width // 2, small_grid.height, small_grid.factor)
    src = _dem(tmp_path, half)
    with pytest.raises(ValueError, match=r"covers 50\.0 % of the working grid"):
        resample_layer("dem", src, small_grid, tmp_path / "a.tif", min_coverage=0.99)
    assert resample_layer("dem", src, small_grid, tmp_path / "b.tif", min_coverage=0.4).is_file()
    # Landsat gaps are clouds, not another place: no coverage check for it
    assert resample_layer("landsat", src, small_grid, tmp_path / "c.tif", min_coverage=0.99).is_file()


def test_lattice_offset_folds_into_half_a_cell(small_grid):
    from pandafine.core.grid import lattice_offset

    coarse = small_grid.coarse().transform
    cell = coarse.a
    assert lattice_offset(coarse, small_grid) == (0.0, 0.0)
    assert lattice_offset(Affine.translation(3 * cell + 300, -cell - 700) * coarse, small_grid) == \
        pytest.approx((300.0, 300.0))
    assert lattice_offset(small_grid.transform, small_grid) is None  # 125 m pixels: not the 1 km lattice


@pytest.mark.parametrize("shift", [(300.0, 0.0), (-120.0, 450.0)])
def test_panda_off_the_anchor_lattice_is_refused_or_snapped(tmp_path, small_grid, shift):
    coarse = small_grid.coarse()
    dn = np.arange(coarse.height * coarse.width, dtype=np.float32).reshape(coarse.shape) % 64
    shifted = Grid(coarse.crs, Affine.translation(*shift) * coarse.transform, coarse.width, coarse.height, 1)
    src = write_raster(tmp_path / "PANDA_2000.tif", np.stack([dn, dn * 0]), shifted, nodata=np.nan)
    out = tmp_path / "out.tif"
    offset = re.escape(f"x {shift[0]:+.1f} m, y {shift[1]:+.1f} m")
    with pytest.raises(ValueError, match=rf"PANDA_2000\.tif: .*off the working grid's coarse lattice .*"
                                         rf"{offset}.*panda_alignment: snap"):
        resample_layer("panda", src, small_grid, out, method="nearest", min_coverage=0.0)
    assert not out.exists()
    with pytest.warns(UserWarning, match="snapped onto the lattice"):
        resample_layer("panda", src, small_grid, out, method="nearest", min_coverage=0.0,
                       panda_alignment="snap")
    arr, _ = read_raster(out)
    np.testing.assert_array_equal(arr[0], np.kron(dn, np.ones((8, 8), np.float32)))
