"""Denoise stage: Luojia spike/background/edge cleaning; Landsat yearly median composite with gap filling."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine

from pandafine.core.channels import LANDSAT_BANDS
from pandafine.core.grid import CHINA_ALBERS, Grid, grid_from_bbox
from pandafine.core.raster_io import write_raster
from pandafine.preprocess import denoise as dn

ANCHOR = (-2643772.86, 5926896.53)
BG = 2.0e-6


def make_cfg(**pre):
    base = {"panda_resampling": "nearest", "panda_out_of_range": "error", "luojia_background": BG,
            "spike_factor": 4.0, "landsat_gapfill_years": 2}
    base.update(pre)
    return {"preprocess": base}


# ----------------------------------------------------------------------------- Luojia (pure)


def test_neighbour_median_matches_brute_force():
    rng = np.random.default_rng(1)
    x = rng.uniform(0, 1, (23, 19)).astype(np.float32)
    x[rng.uniform(size=x.shape) < 0.2] = np.nan
    got = dn.neighbour_median(x, rows=5)  # several row chunks
    p = np.pad(x, 1, constant_values=np.nan)
    for r in range(x.shape[0]):
        for c in range(x.shape[1]):
            nb = np.delete(p[r:r + 3, c:c + 3].ravel(), 4)
            nb = nb[np.isfinite(nb)]
            if nb.size:
                assert got[r, c] == pytest.approx(float(np.median(nb)), rel=1e-6)
            else:
                assert np.isnan(got[r, c])


def smooth_lit_frame(shape=(120, 140)):
    """Smooth city-like radiance (mostly above background), NaN outside an elliptical footprint."""
    rr, cc = np.mgrid[0:shape[0], 0:shape[1]].astype(float)
    truth = 2.0e-7 + 3e-5 * np.exp(-((rr - 60) ** 2 + (cc - 70) ** 2) / (2 * 25.0 ** 2)) \
        + 1e-5 * np.exp(-((rr - 30) ** 2 + (cc - 110) ** 2) / (2 * 12.0 ** 2))
    inside = ((rr - 60) / 57.0) ** 2 + ((cc - 70) / 66.0) ** 2 <= 1
    truth[~inside] = np.nan
    return truth.astype(np.float32), inside


def test_hot_pixels_removed_smooth_light_kept():
    truth, inside = smooth_lit_frame()
    rng = np.random.default_rng(3)
    noisy = truth.copy()
    # isolated hot pixels (at least 3 px apart), 10-200x brighter, inside the eroded footprint
    cand = np.argwhere(inside)
    hot = []
    for r, c in cand[rng.permutation(len(cand))]:
        if all(max(abs(r - a), abs(c - b)) >= 3 for a, b in hot) and 2 <= r < 118 and 2 <= c < 138 \
                and inside[r - 2:r + 3, c - 2:c + 3].all():
            hot.append((r, c))
        if len(hot) == 80:
            break
    hr, hc = np.array(hot).T
    noisy[hr, hc] = truth[hr, hc] * rng.uniform(10, 200, len(hot)) + 5e-5
    clean = dn.denoise_frame(noisy, BG, 4.0, erode=1)

    expected = dn.cut_background(truth, BG)  # a hot pixel is removed if it reads as its clean value
    removed = np.abs(clean[hr, hc] - expected[hr, hc]) <= 0.05 * truth[hr, hc]
    assert removed.mean() >= 0.95
    lit = np.isfinite(clean) & (truth > BG)
    lit[hr, hc] = False
    assert lit.sum() > 5000
    rel = np.abs(clean[lit] - truth[lit]) / truth[lit]
    assert rel.mean() < 0.01
    # below-background pixels are cut to 0, outside stays NaN, the footprint loses exactly its outer ring
    dim = np.isfinite(clean) & (truth < BG)
    assert dim.any() and np.all(clean[dim] == 0)
    from scipy.ndimage import binary_erosion

    np.testing.assert_array_equal(np.isfinite(clean), binary_erosion(inside, np.ones((3, 3), bool), border_value=0))


def test_spike_rule_and_background_cut():
    x = np.full((5, 5), 1e-5, np.float32)
    x[2, 2] = 4.1e-5  # > 4 x max(neighbours) = 4e-5 -> spike
    x[0, 0] = 3.9e-5  # not a spike
    y, spike = dn.remove_spikes(x, 4.0, BG)
    assert spike.sum() == 1 and spike[2, 2] and y[2, 2] == pytest.approx(1e-5)
    assert y[0, 0] == pytest.approx(3.9e-5)
    # an isolated bright pixel on a dark (0) background is a spike if above background, not if below
    z = np.zeros((5, 5), np.float32)
    z[1, 1], z[3, 3] = 5e-6, 1e-6
    y, spike = dn.remove_spikes(z, 4.0, BG)
    assert spike[1, 1] and not spike[3, 3] and y[1, 1] == 0
    # a real light two pixels wide is kept (each pixel has an equally bright neighbour), and so is
    # a bright pixel next to a half-as-bright one, although both far exceed their neighbourhood median
    w = np.full((6, 6), 1e-5, np.float32)
    w[2, 2:4] = 9e-5
    w[4, 1], w[4, 0] = 8e-5, 4e-5
    y, spike = dn.remove_spikes(w, 4.0, BG)
    assert not spike.any() and np.array_equal(y, w)
    np.testing.assert_allclose(dn.neighbour_max(np.array([[1, 5, np.nan], [2, 3, 4]], np.float32)),
                               [[5, 4, 5], [5, 5, 5]])
    np.testing.assert_array_equal(dn.cut_background(np.array([1e-6, 2e-6, 3e-6, np.nan], np.float32), BG),
                                  np.array([0, 2e-6, 3e-6, np.nan], np.float32))


def test_denoise_luojia_year_files(tmp_path):
    rr, cc = np.mgrid[0:40, 0:50]
    truth = (1e-5 + 1e-7 * rr + 2e-7 * cc).astype(np.float32)
    truth[:3], truth[-3:], truth[:, :3], truth[:, -3:] = np.nan, np.nan, np.nan, np.nan
    noisy = truth.copy()
    noisy[20, 25] *= 50
    t = Affine(0.00125, 0, 108.9, 0, -0.00125, 34.3)
    g = Grid("EPSG:4326", t, 50, 40, 1)
    cal_dir = tmp_path / "cal"
    write_raster(cal_dir / "LJ_A.tif", noisy, g, nodata=float("nan"), band_names=["radiance"])
    (cal_dir / "gains.json").write_text(json.dumps({"reference": "LJ_A", "gains": {"LJ_A": 1.0}}))
    outs = dn.denoise_luojia_year(make_cfg(), cal_dir, tmp_path / "den")
    assert [p.name for p in outs] == ["LJ_A.tif"]
    assert (tmp_path / "den" / "gains.json").read_text() == (cal_dir / "gains.json").read_text()
    with rasterio.open(outs[0]) as src:
        assert src.transform == t and src.dtypes[0] == "float32"
        out = src.read(1)
    assert out[20, 25] == pytest.approx(truth[20, 25], rel=0.05)
    assert np.isnan(out[3]).all() and np.isfinite(out[4, 4:-4]).all()  # one ring eroded
    np.testing.assert_allclose(out[5:-5, 5:25], truth[5:-5, 5:25], rtol=1e-6)


# ----------------------------------------------------------------------------- Landsat composite (pure)


def test_median_composite_counts_clear_only():
    stack = np.array([[[[0.1, 0.1]]], [[[0.3, np.nan]]], [[[0.2, 0.4]]], [[[np.nan, np.nan]]]],
                     np.float32)  # (obs=4, bands=1, 1, 2)
    med, count = dn.median_composite(stack)
    np.testing.assert_allclose(med[0, 0], [0.2, 0.25])
    np.testing.assert_array_equal(count[0], [3, 2])
    # an observation missing one band is not clear for any band
    two = np.array([[[[0.1]], [[np.nan]]], [[[0.5]], [[0.6]]]], np.float32)
    med, count = dn.median_composite(two)
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
        arr = np.full((7, h, w), value, np.float32) + np.arange(7, dtype=np.float32)[:, None, None] * 0.01
        for r0, r1, c0, c1 in cloud_boxes:  # working-grid pixel boxes [r0, r1) x [c0, c1)
            m = (grow >= r0) & (grow < r1) & (gcol >= c0) & (gcol < c1)
            arr[:, m] = np.nan
        write_raster(year_dir / f"{name}.tif", arr, sg, nodata=float("nan"), band_names=LANDSAT_BANDS)

    return grid, write_scene


def test_composite_median_and_gapfill(tmp_path):
    grid, write_scene = composite_setup(tmp_path)
    H, W = grid.shape
    assert H >= 24 and W >= 24
    box1 = (2, 10, 2, 10)          # cloudy in one scene of 2000 -> median of the other two
    box2 = (11, 23, 11, 23)        # cloudy in every 2000 scene -> filled from 2001 (distance 1)
    box3 = (15, 19, 15, 19)        # ... also cloudy in 2001 -> filled from 1998 (distance 2)
    d = {y: tmp_path / "cal" / str(y) for y in (1998, 2000, 2001)}
    write_scene(d[2000], "LC08_L2SP_127036_20000301_20200916_02_T1", 0.10, [box2])
    write_scene(d[2000], "LC08_L2SP_127036_20000601_20200916_02_T1", 0.30, [box1, box2])
    write_scene(d[2000], "LC08_L2SP_127036_20000901_20200916_02_T1", 0.20, [box2])
    write_scene(d[2001], "LC08_L2SP_127036_20010601_20200916_02_T1", 0.50, [box3])
    write_scene(d[1998], "LC08_L2SP_127036_19980601_20200916_02_T1", 0.90)
    out = dn.composite_landsat_year(make_cfg(landsat_gapfill_years=2), 2000, d, grid,
                                    tmp_path / "den" / "2000.tif", window=16)  # several blocks
    with rasterio.open(out) as src:
        assert src.count == 8 and src.descriptions == LANDSAT_BANDS + ("clear_count",)
        assert src.crs == rasterio.crs.CRS.from_user_input(CHINA_ALBERS) and src.transform == grid.transform
        a = src.read()
    def check(sel, value):  # sel: (7, ...) composite values; scene value + 0.01 * band index expected
        sel = sel.reshape(7, -1)
        assert sel.shape[1] > 0
        want = np.broadcast_to((value + 0.01 * np.arange(7))[:, None], sel.shape)
        np.testing.assert_allclose(sel, want, atol=1e-6)

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
    d = {2000: tmp_path / "2000"}
    write_scene(d[2000], "LE07_L2SP_127036_20000601_20200916_02_T1", 0.3, [(3, 9, 3, 9)])
    with pytest.warns(UserWarning, match="no clear observation"):
        out = dn.composite_landsat_year(make_cfg(landsat_gapfill_years=1), 2000, d, grid, tmp_path / "o.tif")
    a = rasterio.open(out).read()
    assert np.isnan(a[:7, 4:8, 4:8]).all() and np.all(a[7, 4:8, 4:8] == 0)
    assert np.all(a[7, 12:, 12:] == 1)


def test_composite_records_its_coverage(tmp_path):
    grid, write_scene = composite_setup(tmp_path)
    H, W = grid.shape
    d = {2000: tmp_path / "2000", 2001: tmp_path / "2001"}
    # 2000 is cloudy on a box; 2001 is clear there, so the gap is filled
    write_scene(d[2000], "LE07_L2SP_127036_20000601_20200916_02_T1", 0.3, [(0, 8, 0, W)])
    write_scene(d[2001], "LE07_L2SP_127036_20010601_20200916_02_T1", 0.4)
    out = dn.composite_landsat_year(make_cfg(landsat_gapfill_years=1), 2000, d, grid, tmp_path / "o.tif")
    with rasterio.open(out) as src:
        cov = dn.LandsatCoverage.from_tags(src.tags())
        count = src.read(8)
    assert cov.year == 2000 and cov.scenes == 1 and cov.valid == 1.0
    assert cov.clear == pytest.approx((count > 0).mean(), abs=1e-6)
    assert 1 - 9 / H < cov.clear < 1 - 5 / H  # about the 8 cloudy rows are not clear (the box edge is tilted)


def _scene_far_away(tmp_path, grid, km):
    """One clear calibrated scene the size of the grid's footprint, ``km`` kilometres east of it."""
    from rasterio.warp import transform_bounds

    left, bottom, right, top = transform_bounds(grid.crs, UTM49, *grid.bounds, densify_pts=21)
    g = Grid(UTM49, Affine(30.0, 0, left + km * 1000.0, 0, -30.0, top), int((right - left) // 30) + 2,
             int((top - bottom) // 30) + 2, 1)
    arr = np.full((7, g.height, g.width), 0.2, np.float32)
    write_raster(tmp_path / "2000" / "LC08_L2SP_127036_20000601_20200916_02_T1.tif", arr, g,
                 nodata=float("nan"), band_names=LANDSAT_BANDS)
    return {2000: tmp_path / "2000"}


def test_landsat_of_another_place_is_an_error(tmp_path):
    grid, _ = composite_setup(tmp_path)
    d = _scene_far_away(tmp_path, grid, 500)
    out = tmp_path / "den" / "2000.tif"
    with pytest.raises(ValueError, match=r"Landsat 2000: .*valid on 0\.0 % .*min_landsat_coverage = 90 %.*"
                                         r"scene footprints .*LC08_L2SP_127036_20000601_20200916_02_T1\.tif"):
        dn.composite_landsat_year(make_cfg(landsat_gapfill_years=1), 2000, d, grid, out)
    assert not out.exists() and not list(out.parent.glob("*"))  # nothing written, no temporary left


def test_landsat_covering_part_of_the_grid_names_the_scenes(tmp_path):
    grid, _ = composite_setup(tmp_path)
    width_km = grid.width * grid.pixel_size / 1000
    d = _scene_far_away(tmp_path, grid, 0.6 * width_km)  # covers the east ~40 % of the grid
    out = tmp_path / "o.tif"
    with pytest.raises(ValueError, match=r"valid on \d+\.\d % .*LC08_L2SP_127036_20000601_20200916_02_T1\.tif \("):
        dn.composite_landsat_year(make_cfg(landsat_gapfill_years=0), 2000, d, grid, out)
    assert not out.exists()
    # a lower minimum accepts the partial composite and records how much it covers
    with pytest.warns(UserWarning, match="no clear observation"):
        dn.composite_landsat_year(make_cfg(landsat_gapfill_years=0, min_landsat_coverage=0.2), 2000, d, grid, out)
    with rasterio.open(out) as src:
        cov = dn.LandsatCoverage.from_tags(src.tags())
    assert 0.25 < cov.valid == cov.clear < 0.6
