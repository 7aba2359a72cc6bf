"""Mosaic stage: feather weights and the feathered mosaic of overlapping frames on the working grid."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from affine import Affine
from scipy.ndimage import binary_dilation, binary_erosion

from pandafine.core.grid import CHINA_ALBERS, Grid, grid_from_bbox
from pandafine.core.raster_io import write_raster
from pandafine.core.windows import reproject_to_block
from pandafine.preprocess.mosaic import feather_weights, mosaic_frames

ANCHOR = (-2643772.86, 5926896.53)
PIX = 0.00125
L0 = 1.0e-5


def test_feather_weights_known_distances():
    w = feather_weights(np.ones((5, 7), bool))
    np.testing.assert_array_equal(w[2], [1, 2, 3, 3, 3, 2, 1])
    np.testing.assert_array_equal(w[:, 3], [1, 2, 3, 2, 1])
    m = np.ones((5, 5), bool)
    m[2, 2] = False
    w = feather_weights(m)
    assert w[2, 2] == 0 and w[2, 1] == 1 and w[1, 1] == pytest.approx(np.sqrt(2))
    assert w[0, 0] == 1 and w.min() == 0
    np.testing.assert_allclose(feather_weights(np.pad(np.ones((3, 3), bool), 2))[2:5, 2:5],
                               [[1, 1, 1], [1, 2, 1], [1, 1, 1]])


def write_frame(path, west, north, cols, rows, value, inset=3):
    """A denoised frame: constant radiance ``value`` inside an inset footprint, NaN outside."""
    t = Affine(PIX, 0, west, 0, -PIX, north)
    arr = np.full((rows, cols), np.nan, np.float32)
    arr[inset:rows - inset, inset:cols - inset] = value
    write_raster(path, arr, Grid("EPSG:4326", t, cols, rows, 1), nodata=float("nan"), band_names=["radiance"])
    return path


@pytest.fixture
def grid():
    return grid_from_bbox((108.905, 34.20, 108.995, 34.30), CHINA_ALBERS, 125.0, 8, ANCHOR)


def coverage(path, grid):
    with rasterio.open(path) as src:
        arr = src.read(1)
        g = Grid("EPSG:4326", src.transform, src.width, src.height, 1)
    return np.isfinite(reproject_to_block(arr, g, grid, (0, 0, grid.height, grid.width)))


def frames(tmp_path, gain_b):
    a = write_frame(tmp_path / "A.tif", 108.90, 34.28, 48, 72, L0)            # lon 108.90-108.96
    b = write_frame(tmp_path / "B.tif", 108.94, 34.275, 48, 70, L0 * gain_b)  # lon 108.94-109.00
    return a, b


def test_same_constant_gives_constant_without_seam(tmp_path, grid):
    a, b = frames(tmp_path, 1.0)
    out = mosaic_frames([a, b], grid, tmp_path / "target" / "2018.tif")
    with rasterio.open(out) as src:
        assert src.transform == grid.transform and (src.height, src.width) == grid.shape
        assert src.dtypes[0] == "float32" and np.isnan(src.nodata)
        m = src.read(1)
    cov = coverage(a, grid) | coverage(b, grid)
    assert cov.sum() > 1000 and (~cov).sum() > 100  # the frames leave the top rows uncovered
    # NaN exactly where no frame covers (up to warp rounding on the one-pixel rim of the coverage)
    rim = binary_dilation(cov) & ~binary_erosion(cov)
    np.testing.assert_array_equal(np.isfinite(m)[~rim], cov[~rim])
    assert np.isfinite(m[cov & ~rim]).all()
    np.testing.assert_allclose(m[np.isfinite(m)], L0, rtol=1e-5)


def test_feathered_seam_is_continuous_despite_gain_error(tmp_path, grid):
    a, b = frames(tmp_path, 1.1)  # 10 % relative gain error in B
    m = rasterio.open(mosaic_frames([a, b], grid, tmp_path / "2018.tif")).read(1)
    ca, cb = coverage(a, grid), coverage(b, grid)
    fin = np.isfinite(m)
    only_a, only_b, both = ca & ~cb & fin, cb & ~ca & fin, ca & cb & fin
    np.testing.assert_allclose(m[only_a], L0, rtol=1e-5)
    np.testing.assert_allclose(m[only_b], 1.1 * L0, rtol=1e-5)
    assert both.sum() > 200
    assert np.all((m[both] >= L0 * (1 - 1e-5)) & (m[both] <= 1.1 * L0 * (1 + 1e-5)))

    # Horizontal steps along rows that cross the vertical seam (B's west edge inside A, A's east edge
    # inside B), away from the frames' top and bottom edges: where two frame edges meet, every feathering
    # scheme has a discontinuity, so corners are left out.
    rows = np.flatnonzero(cb.any(axis=1) & ca.any(axis=1))
    mid = np.zeros(m.shape[0], bool)
    mid[rows[0] + 15:rows[-1] - 15] = True
    step = np.abs(np.diff(m, axis=1))
    ok = np.isfinite(step) & mid[:, None]
    crosses = ok & ((ca[:, 1:] != ca[:, :-1]) | (cb[:, 1:] != cb[:, :-1]))  # crossing a frame border
    inside = ok & both[:, 1:] & both[:, :-1] & ~crosses
    assert crosses.sum() >= 2 * mid.sum() and inside.sum() > 100
    hard_seam = 0.1 * L0  # the step without feathering
    assert step[crosses].max() <= step[inside].max() * 1.05
    assert step[crosses].max() < 0.2 * hard_seam
    # the ramp goes from A's value to B's value across the overlap, monotonically along each row
    row = m[m.shape[0] // 2]
    r = row[np.isfinite(row)]
    assert r[0] == pytest.approx(L0, rel=1e-5) and r[-1] == pytest.approx(1.1 * L0, rel=1e-5)
    assert np.all(np.diff(r) >= -1e-12)


def test_no_frame_is_an_error(tmp_path, grid):
    with pytest.raises(ValueError, match="no Luojia-01 frame"):
        mosaic_frames([], grid, tmp_path / "x.tif")


def test_window_size_does_not_change_the_mosaic(tmp_path, grid):
    """The mosaic streams windows of the grid; any window size gives the same bytes of radiance."""
    a, b = frames(tmp_path, 1.1)
    whole = rasterio.open(mosaic_frames([a, b], grid, tmp_path / "whole.tif", window=4096)).read(1)
    assert np.isfinite(whole).sum() > 1000
    for size in (7, 32):
        part = rasterio.open(mosaic_frames([a, b], grid, tmp_path / f"w{size}.tif", window=size)).read(1)
        np.testing.assert_array_equal(part, whole)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["A.tif", "B.tif", "w32.tif",  # no temporary left
                                                                              "w7.tif", "whole.tif"]
