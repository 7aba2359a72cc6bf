"""Calibrate stage: PANDA DN, Landsat C2 L2 reflectance/QA/harmonization, Luojia gains, DEM merge."""

from __future__ import annotations

import json
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.crs import CRS

from pandafine.core.channels import LANDSAT_BANDS
from pandafine.core.grid import CHINA_ALBERS, grid_from_bbox
from pandafine.preprocess import calibrate as cal
from pandafine.preprocess.landsat_composite import SceneReader
from pandafine.sensors import landsat as ls
from pandafine.sensors import luojia as lj
from pandafine.sources.local import landsat_scene, landsat_scenes
from repo_paths import REALDATA

ANCHOR = (-2643772.86, 5926896.53)


def make_cfg(**pre):
    base = {"panda_resampling": "nearest", "panda_out_of_range": "error", "luojia_background": 2.0e-6,
            "spike_factor": 4.0, "landsat_gapfill_years": 2}
    base.update(pre)
    return {"preprocess": base}


def write_tif(path, arr, crs, transform, nodata=None, dtype=None):
    arr = np.asarray(arr)
    arr3 = arr[None] if arr.ndim == 2 else arr
    with rasterio.open(path, "w", driver="GTiff", width=arr3.shape[2], height=arr3.shape[1], count=arr3.shape[0],
                       dtype=dtype or arr3.dtype.name, crs=crs, transform=transform, nodata=nodata) as dst:
        dst.write(arr3)
    return path


# ----------------------------------------------------------------------------- PANDA

PANDA_T = Affine(1000.0, 0, ANCHOR[0] + 3000000, 0, -1000.0, ANCHOR[1] - 2000000)


def test_panda_int8_read_and_saturation(tmp_path):
    dn = np.array([[0, 5, 63, -128], [62, 63, 1, 30]], dtype=np.int8)
    raw = write_tif(tmp_path / "p.tif", dn, CHINA_ALBERS, PANDA_T, nodata=-128)
    out = cal.calibrate_panda(make_cfg(), raw, tmp_path / "out" / "2018.tif")
    with rasterio.open(out) as src:
        assert src.count == 2 and src.dtypes == ("float32", "float32")
        assert src.descriptions == ("dn", "saturated")
        assert src.transform == PANDA_T and src.crs == CRS.from_user_input(CHINA_ALBERS)
        d, s = src.read()
    np.testing.assert_array_equal(d, [[0, 5, 63, np.nan], [62, 63, 1, 30]])
    np.testing.assert_array_equal(s, [[0, 0, 1, np.nan], [0, 1, 0, 0]])


def test_panda_uint8_nodata_255(tmp_path):
    dn = np.array([[255, 10], [63, 0]], dtype=np.uint8)
    raw = write_tif(tmp_path / "p.tif", dn, CHINA_ALBERS, PANDA_T, nodata=255)
    d, s = rasterio.open(cal.calibrate_panda(make_cfg(), raw, tmp_path / "o.tif")).read()
    np.testing.assert_array_equal(d, [[np.nan, 10], [63, 0]])
    np.testing.assert_array_equal(s, [[np.nan, 0], [1, 0]])


def test_panda_out_of_range_error_and_clip(tmp_path):
    dn = np.array([[-5, 10, 70], [63, 100, 0]], dtype=np.int8)  # 3 pixels outside 0..63, no nodata
    raw = write_tif(tmp_path / "odd_panda.tif", dn, CHINA_ALBERS, PANDA_T)
    out = tmp_path / "o.tif"
    with pytest.raises(ValueError, match=r"odd_panda\.tif.*3 pixel"):
        cal.calibrate_panda(make_cfg(panda_out_of_range="error"), raw, out)
    assert not out.exists()
    with pytest.warns(UserWarning, match=r"odd_panda\.tif.*3 pixel"):
        cal.calibrate_panda(make_cfg(panda_out_of_range="clip"), raw, out)
    d, s = rasterio.open(out).read()
    np.testing.assert_array_equal(d, [[0, 10, 63], [63, 63, 0]])
    np.testing.assert_array_equal(s, [[0, 0, 1], [1, 1, 0]])


def test_panda_windows_do_not_change_the_result(tmp_path, monkeypatch):
    """PANDA is calibrated in PANDA_WINDOW windows: any window gives the one-window pixels, and windows of
    whole output tiles (the default) the one-window file, byte for byte."""
    rng = np.random.default_rng(3)
    dn = rng.integers(0, 70, (600, 530)).astype(np.uint8)
    dn[rng.random(dn.shape) < 0.05] = 255
    raw = write_tif(tmp_path / "p.tif", dn, CHINA_ALBERS, PANDA_T, nodata=255)
    cfg = make_cfg(panda_out_of_range="clip")
    out = {}
    for window in (10_000, cal.PANDA_WINDOW, 100):
        monkeypatch.setattr(cal, "PANDA_WINDOW", window)
        with pytest.warns(UserWarning, match="clipped"):
            out[window] = cal.calibrate_panda(cfg, raw, tmp_path / f"w{window}.tif")
    assert out[256].read_bytes() == out[10_000].read_bytes()
    with rasterio.open(out[10_000]) as a, rasterio.open(out[100]) as b:
        assert a.tags() == b.tags() and a.descriptions == b.descriptions
        np.testing.assert_array_equal(b.read(), a.read())


def test_raster_without_crs_is_refused(tmp_path):
    bad = tmp_path / "no_georef.tif"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with rasterio.open(bad, "w", driver="GTiff", width=3, height=2, count=1, dtype="uint8") as dst:
            dst.write(np.ones((1, 2, 3), np.uint8))
    with pytest.raises(ValueError, match=r"no_georef\.tif.*no CRS"):
        cal.calibrate_panda(make_cfg(), bad, tmp_path / "o.tif")
    # a CRS but no transform is refused too
    bad2 = tmp_path / "no_transform.tif"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with rasterio.open(bad2, "w", driver="GTiff", width=3, height=2, count=1, dtype="uint8",
                           crs="EPSG:4326") as dst:
            dst.write(np.ones((1, 2, 3), np.uint8))
    with pytest.raises(ValueError, match=r"no_transform\.tif.*no geotransform"):
        cal.calibrate_panda(make_cfg(), bad2, tmp_path / "o.tif")


@pytest.mark.realdata
def test_panda_real_china_dmsplike_int8(tmp_path):
    raw = REALDATA / "kingsley_china_dmsplike" / "DMSP-like2018.tif"
    if not raw.is_file():
        pytest.skip(f"real sample rasters not present ({raw})")
    out = cal.calibrate_panda(make_cfg(), raw, tmp_path / "2018.tif")
    with rasterio.open(raw) as src:
        assert src.dtypes[0] == "int8"
        dn_raw = src.read(1)
        crs, transform = src.crs, src.transform
    with rasterio.open(out) as dst:
        assert dst.crs == crs and dst.transform == transform
        d, s = dst.read()
    ok = np.isfinite(d)
    assert ok.all()  # the file declares no nodata: every pixel is a DN
    hist_raw = np.bincount(dn_raw.astype(np.int64).ravel(), minlength=64)
    hist_out = np.bincount(d[ok].astype(np.int64), minlength=64)
    np.testing.assert_array_equal(hist_out, hist_raw)
    assert np.array_equal(s == 1, d == 63) and hist_raw[63] > 0


@pytest.mark.realdata
def test_real_raster_without_georeferencing_is_refused(tmp_path):
    raw = REALDATA / "nighttimelights_jl_mumbai" / "april2012.tif"
    if not raw.is_file():
        pytest.skip(f"real sample rasters not present ({raw})")
    with pytest.raises(ValueError, match=r"april2012\.tif: raster has no CRS"):
        cal.calibrate_panda(make_cfg(), raw, tmp_path / "o.tif")


# ----------------------------------------------------------------------------- Landsat (pure)


def test_landsat_dn_reflectance_round_trip_and_fill():
    dn = np.array([0, 1, 7273, 43636, 65535], dtype=np.uint16)
    rho = ls.dn_to_reflectance(dn)
    assert np.isnan(rho[0])
    np.testing.assert_allclose(rho[1:], dn[1:] * 0.0000275 - 0.2, rtol=0, atol=1e-7)
    np.testing.assert_allclose(rho[2:4], [0.0, 1.0], atol=2e-5)
    np.testing.assert_array_equal(ls.reflectance_to_dn(rho), dn)


def test_qa_masks_exactly_the_flagged_bits():
    qa = np.array([1 << b for b in range(8)] + [0, (1 << 6) | (1 << 7), (1 << 5) | (1 << 3), 21824, 22280],
                  dtype=np.uint16)
    expect = np.array([True] * 5 + [False] * 3 + [False, False, True, False, True])
    # 21824 = clear+water-free land, clear bit set, low confidence bits only; 22280 has the cloud bit (3).
    np.testing.assert_array_equal(ls.qa_reject(qa), expect)


def test_sensor_of_scene_ids():
    assert ls.sensor_of("LT05_L2SP_127036_19900712_20200916_02_T1") == "TM"
    assert ls.sensor_of("LT04_L2SP_127036_19880712_20200916_02_T1") == "TM"
    assert ls.sensor_of("LE07_L2SP_127036_20010712_20200916_02_T1") == "ETM+"
    assert ls.sensor_of("LC08_L2SP_127036_20180712_20200916_02_T1") == "OLI"
    assert ls.acquisition_date("LC08_L2SP_127036_20180712_20200916_02_T1") == "20180712"
    with pytest.raises(ValueError, match="LX99"):
        ls.sensor_of("LX99_L2SP_127036_20180712_20200916_02_T1")


def test_roy_harmonization_inverts_known_tm_values():
    rho_oli = np.linspace(0.02, 0.6, 11, dtype=np.float32)
    for band, (slope, intercept) in ls.ROY2016_OLS.items():
        tm = (rho_oli - intercept) / slope  # inverse mapping
        np.testing.assert_allclose(ls.harmonize_to_oli(tm, band), rho_oli, atol=1e-6)
    assert ls.ROY2016_OLS["nir"] == (0.8462, 0.0412) and ls.ROY2016_OLS["blue"] == (0.8474, 0.0003)


# ----------------------------------------------------------------------------- Landsat (files)

UTM49 = "EPSG:32649"
UTM_T = Affine(30.0, 0, 300000.0, 0, -30.0, 3790000.0)


def write_landsat_scene(year_dir: Path, scene_id: str, dn_by_number: dict[int, np.ndarray], qa: np.ndarray):
    d = year_dir / scene_id
    d.mkdir(parents=True)
    for n, arr in dn_by_number.items():
        write_tif(d / f"{scene_id}_SR_B{n}.TIF", arr.astype(np.uint16), UTM49, UTM_T, nodata=0)
    write_tif(d / f"{scene_id}_QA_PIXEL.TIF", qa.astype(np.uint16), UTM49, UTM_T, nodata=1)
    return d


def calibrated(scene_dir: Path, coastal: str = "blue") -> np.ndarray:
    """A scene's OLI-equivalent reflectance as the block path reads it, on the scene's own 30 m grid (a warp onto
    the same grid is a copy)."""
    with SceneReader(landsat_scene(scene_dir), 30.0, False, str, coastal) as reader:
        grid = reader.grid
        assert CRS.from_user_input(grid.crs) == CRS.from_user_input(UTM49) and grid.transform == UTM_T
        out, n = reader.warp(grid, (0, 0, grid.height, grid.width))
    assert n > 0
    return out


def test_landsat_tm_scene_harmonized_masked(tmp_path):
    rng = np.random.default_rng(0)
    shape = (37, 45)
    truth = {b: rng.uniform(0.03, 0.5, shape).astype(np.float32) for b in ls.ROY2016_OLS}  # OLI reflectance
    nums = ls.SENSOR_BANDS["TM"]
    dn = {nums[b]: ls.reflectance_to_dn(ls.oli_to_tm(truth[b], b)) for b in truth}
    qa = np.full(shape, 21824, dtype=np.uint16)  # clear land
    flags = {(3, 4): 1 << 0, (10, 11): 1 << 1, (20, 7): 1 << 2, (30, 40): 1 << 3, (36, 44): 1 << 4}
    for (r, c), bit in flags.items():
        qa[r, c] |= bit
    qa[5, 5] |= 1 << 5  # snow: not masked
    dn[nums["red"]][12, 13] = 0  # fill in one band only
    raw_year = tmp_path / "raw" / "1990"
    scene = "LT05_L2SP_127036_19900712_20200916_02_T1"
    write_landsat_scene(raw_year, scene, dn, qa)

    assert [s.scene_id for s in landsat_scenes(tmp_path / "raw", 1990)] == [scene]
    out = calibrated(raw_year / scene)
    assert out.shape == (7,) + shape

    masked = np.zeros(shape, bool)
    for rc in flags:
        masked[rc] = True
    assert np.array_equal(np.isnan(out).all(axis=0), masked)  # exactly the QA-flagged pixels, all bands
    assert np.isnan(out[LANDSAT_BANDS.index("red"), 12, 13]) and np.isfinite(out[:, 12, 13]).sum() == 6
    ok = ~masked
    for b in ls.ROY2016_OLS:  # TM made by the inverse mapping comes back to OLI (DN quantization ~3e-5)
        np.testing.assert_allclose(out[LANDSAT_BANDS.index(b)][ok & np.isfinite(out[3])],
                                   truth[b][ok & np.isfinite(out[3])], atol=5e-5)
    np.testing.assert_array_equal(out[0], out[1])  # TM coastal = harmonized blue


def test_landsat_oli_scene_band_order(tmp_path):
    shape = (8, 9)
    values = {n: np.full(shape, 10000 + 1000 * n) for n in range(1, 8)}
    raw_year = tmp_path / "2018"
    scene = "LC08_L2SP_127036_20180712_20200916_02_T1"
    write_landsat_scene(raw_year, scene, values, np.full(shape, 21824))
    arr = calibrated(raw_year / scene, "native")
    for i in range(7):  # OLI: no harmonization, band n -> i = n-1
        np.testing.assert_allclose(arr[i], (10000 + 1000 * (i + 1)) * 0.0000275 - 0.2, atol=1e-6)
    # the default: the coastal channel holds the blue band (B2), as it does for TM/ETM+
    arr2 = calibrated(raw_year / scene)
    np.testing.assert_array_equal(arr2[0], arr[1])
    np.testing.assert_array_equal(arr2[1:], arr[1:])
    with pytest.raises(ValueError, match="landsat_coastal='green'"):
        calibrated(raw_year / scene, "green")


def test_gain_anchor_mean_averages_the_frames_calibration_out():
    gains = {"A": 1.0, "B": 0.8, "C": 1.25, "D": 1.0}  # D shares no overlap with the others
    out = cal.anchor_gains(gains, ["A", "B", "C"], "mean")
    assert out["B"] / out["A"] == pytest.approx(0.8) and out["C"] / out["A"] == pytest.approx(1.25)  # relative kept
    assert out["A"] * out["B"] * out["C"] == pytest.approx(1.0)  # geometric mean 1
    assert out["D"] == 1.0
    assert cal.anchor_gains(gains, ["A", "B", "C"], "reference") == gains
    with pytest.raises(ValueError, match="luojia_gain_anchor='median'"):
        cal.anchor_gains(gains, ["A"], "median")
    assert cal.connected_frames(["A", "B", "C", "D"], {("A", "B"): 1.0, ("C", "B"): 1.0}, "A") == ["A", "B", "C"]


def test_landsat_missing_band_names_the_scene(tmp_path):
    raw_year = tmp_path / "2000"
    scene = "LE07_L2SP_127036_20000712_20200916_02_T1"
    write_landsat_scene(raw_year, scene, {n: np.full((4, 4), 9000) for n in (1, 2, 3, 4, 5)}, np.zeros((4, 4)))
    with pytest.raises(FileNotFoundError, match=f"{scene}_SR_B7"):
        landsat_scenes(tmp_path, 2000)


# ----------------------------------------------------------------------------- Luojia-01


def test_luojia_dn_radiance_round_trip():
    dn = np.array([0, 1, 100, 2500, 40000, 2**31 - 1], dtype=np.int64)
    rad = lj.dn_to_radiance(dn)
    np.testing.assert_allclose(rad, dn.astype(float) ** 1.5 * 1e-10, rtol=1e-6)
    np.testing.assert_allclose(lj.radiance_to_dn(rad), dn, rtol=1e-6)
    assert np.isnan(lj.dn_to_radiance(np.array([-3]))[0])


META = """<?xml version="1.0" encoding="UTF-8"?>
<ProductMetaData>
  <ImagingTime>{time}</ImagingTime>
  <TopLeftLatitude>{tl[1]}</TopLeftLatitude><TopLeftLongitude>{tl[0]}</TopLeftLongitude>
  <TopRightLatitude>{tr[1]}</TopRightLatitude><TopRightLongitude>{tr[0]}</TopRightLongitude>
  <BottomRightLatitude>{br[1]}</BottomRightLatitude><BottomRightLongitude>{br[0]}</BottomRightLongitude>
  <BottomLeftLatitude>{bl[1]}</BottomLeftLatitude><BottomLeftLongitude>{bl[0]}</BottomLeftLongitude>
</ProductMetaData>
"""

PIX = 0.00125  # degrees (~115 m x 139 m near Xi'an)


def field(lon, lat):
    """A smooth known radiance field (W m-2 sr-1 um-1), everywhere above the 2e-6 background."""
    bumps = [(108.94, 34.24, 0.02, 2.0e-5), (109.00, 34.27, 0.025, 1.5e-5), (108.985, 34.215, 0.015, 1.0e-5)]
    out = np.full(np.broadcast(lon, lat).shape, 4e-6)
    for x0, y0, s, a in bumps:
        out += a * np.exp(-((lon - x0) ** 2 + (lat - y0) ** 2) / (2 * s * s))
    return out


def write_luojia_frame(year_dir: Path, frame_id: str, west: float, north: float, cols: int, rows: int,
                       gain: float, inset: int = 2):
    """Raw frame: INT32 DN of gain x field, 0 outside a slightly skewed footprint, + _meta.xml."""
    year_dir.mkdir(parents=True, exist_ok=True)
    t = Affine(PIX, 0, west, 0, -PIX, north)
    cc, rr = np.meshgrid(np.arange(cols) + 0.5, np.arange(rows) + 0.5)
    lon, lat = t @ (cc, rr)
    dn = np.rint(lj.radiance_to_dn(gain * field(lon, lat))).astype(np.int32)
    east, south = west + cols * PIX, north - rows * PIX
    e = inset * PIX
    corners = dict(tl=(west + e, north - e), tr=(east - e, north - 1.5 * e), br=(east - 1.5 * e, south + e),
                   bl=(west + 1.5 * e, south + 1.5 * e))
    meta = lj.FrameMeta(tuple(corners[k] for k in ("tl", "tr", "br", "bl")))
    inside = lj.footprint_mask(meta, (rows, cols), t, "EPSG:4326")
    dn[~inside] = 0
    write_tif(year_dir / f"{frame_id}.tif", dn, "EPSG:4326", t)
    (year_dir / f"{frame_id}_meta.xml").write_text(META.format(time="2018-09-01T14:05:00", **corners))
    return inside


def test_meta_xml_and_footprint_mask(tmp_path):
    inside = write_luojia_frame(tmp_path, "F1", 108.9, 34.3, 20, 16, 1.0, inset=3)
    meta = lj.parse_meta_xml(tmp_path / "F1_meta.xml")
    assert meta.imaging_time == "2018-09-01T14:05:00"
    assert meta.footprint[0] == pytest.approx((108.9 + 3 * PIX, 34.3 - 3 * PIX))
    assert not inside[:2].any() and not inside[:, :2].any() and inside[8, 10]
    rad, grid = cal.load_luojia_radiance(tmp_path / "F1.tif", tmp_path / "F1_meta.xml")
    assert np.array_equal(np.isfinite(rad), inside)
    (tmp_path / "bad_meta.xml").write_text("<a><TopLeftLatitude>34</TopLeftLatitude></a>")
    with pytest.raises(ValueError, match=r"bad_meta\.xml.*TopLeftLongitude"):
        lj.parse_meta_xml(tmp_path / "bad_meta.xml")


def test_solve_gains_network_exact_and_orphan():
    true = {"a": 1.0, "b": 0.8, "c": 1.25, "d": 0.5}  # L_f = true_f * T
    pairs = {(i, j): true[i] / true[j] for i, j in [("a", "b"), ("b", "c"), ("a", "c"), ("c", "d")]}
    ref = cal.choose_reference(list(true), pairs)
    assert ref == "c"  # three overlaps
    g = cal.solve_gains(list(true), pairs, ref)
    for f in true:
        assert g[f] * true[f] == pytest.approx(true[ref], rel=1e-12)
    with pytest.warns(UserWarning, match="'e'"):
        g2 = cal.solve_gains(list(true) + ["e"], pairs, "a")
    assert g2["e"] == 1.0 and g2["a"] == 1.0 and g2["b"] == pytest.approx(1.25)


def test_luojia_intercalibration_recovers_gains(tmp_path):
    raw = tmp_path / "raw" / "2018"
    gains_true = {"LJ_A": 0.9, "LJ_B": 1.0, "LJ_C": 1.12}
    # A and C overlap B only: B (gain 1.0) has the most overlaps and is the reference.
    write_luojia_frame(raw, "LJ_A", 108.895, 34.305, 68, 84, gains_true["LJ_A"])
    write_luojia_frame(raw, "LJ_B", 108.945, 34.300, 64, 80, gains_true["LJ_B"])
    write_luojia_frame(raw, "LJ_C", 108.990, 34.302, 56, 82, gains_true["LJ_C"])
    grid = grid_from_bbox((108.90, 34.20, 109.05, 34.30), CHINA_ALBERS, 125.0, 8, ANCHOR)
    out = tmp_path / "cal" / "2018"
    rec = cal.calibrate_luojia_year(make_cfg(), raw, grid, out)
    saved = json.loads((out / "gains.json").read_text())
    assert saved["reference"] == rec["reference"] == "LJ_B"
    assert set(saved["pairs"]) == {"LJ_A/LJ_B", "LJ_B/LJ_C"}
    for f, g in gains_true.items():
        assert saved["gains"][f] == pytest.approx(1.0 / g, rel=0.01), f
    # calibrated frames: reference-scale radiance, NaN outside the footprint, on the frame's own grid
    for f in gains_true:
        with rasterio.open(out / f"{f}.tif") as src, rasterio.open(raw / f"{f}.tif") as rsrc:
            assert src.transform == rsrc.transform and src.dtypes[0] == "float32"
            cal_rad = src.read(1)
            t = src.transform
        cc, rr = np.meshgrid(np.arange(cal_rad.shape[1]) + 0.5, np.arange(cal_rad.shape[0]) + 0.5)
        truth = field(*(t @ (cc, rr)))
        ok = np.isfinite(cal_rad)
        assert 0.8 * ok.size < ok.sum() < ok.size
        np.testing.assert_allclose(cal_rad[ok], truth[ok], rtol=0.012)


def test_luojia_frames_of_another_place_fail_at_calibrate(tmp_path):
    raw = tmp_path / "raw" / "2018"
    write_luojia_frame(raw, "LJ_A", 108.895, 34.305, 68, 84, 1.0)
    write_luojia_frame(raw, "LJ_FAR", 113.0, 30.0, 40, 40, 1.0)  # ~600 km away
    grid = grid_from_bbox((108.90, 34.20, 109.05, 34.30), CHINA_ALBERS, 125.0, 8, ANCHOR)
    # one frame off the grid: left out with a warning naming it
    with pytest.warns(UserWarning, match=r"LJ_FAR.*do not overlap the working grid"):
        rec = cal.calibrate_luojia_year(make_cfg(), raw, grid, tmp_path / "cal")
    assert list(rec["gains"]) == ["LJ_A"] and not (tmp_path / "cal" / "LJ_FAR.tif").exists()
    # every frame off the grid: an error at calibrate (not a late one at patches), nothing written
    (raw / "LJ_A.tif").unlink()
    (raw / "LJ_A_meta.xml").unlink()
    out = tmp_path / "cal2"
    with pytest.raises(ValueError, match=r"2018: no Luojia-01 frame overlaps the working grid .*LJ_FAR \("):
        cal.calibrate_luojia_year(make_cfg(), raw, grid, out)
    assert not out.exists()


#: Four mutually overlapping frames (id, west, north, cols, rows, true gain): six pairs.
FOUR_FRAMES = [("LJ_A", 108.90, 34.30, 60, 60, 0.9), ("LJ_B", 108.93, 34.29, 60, 60, 1.0),
               ("LJ_C", 108.92, 34.27, 60, 60, 1.12), ("LJ_D", 108.95, 34.28, 56, 64, 0.95)]
XIAN_GRID = ((108.90, 34.20, 109.05, 34.30), CHINA_ALBERS, 125.0, 8, ANCHOR)


def write_four_frames(raw: Path) -> dict[str, float]:
    for fid, west, north, cols, rows, gain in FOUR_FRAMES:
        write_luojia_frame(raw, fid, west, north, cols, rows, gain)
    return {fid: gain for fid, *_, gain in FOUR_FRAMES}


def frame_blocks(raw: Path, grid):
    from pandafine.core.raster_io import grid_of
    from pandafine.core.windows import frame_bounds_on, grid_window_of

    files = {f: (tif, xml) for f, tif, xml in cal.luojia_frames(raw)}
    return files, {f: grid_window_of(frame_bounds_on(grid_of(files[f][0]), grid), grid) for f in files}


def test_overlapping_pairs_and_block_slices():
    blocks = {"a": (0, 0, 10, 10), "b": (5, 5, 10, 10), "c": (20, 20, 4, 4), "d": None}
    assert cal.overlapping_pairs(["a", "b", "c", "d"], blocks) == [("a", "b", (5, 5, 5, 5))]
    x = np.arange(15 * 15).reshape(15, 15)
    assert np.array_equal(x[10:15, 10:15][cal.block_slices((10, 10, 5, 5), (12, 11, 2, 3))], x[12:14, 11:14])
    with pytest.raises(ValueError, match=r"block \(12, 11, 4, 3\) is not inside block \(10, 10, 5, 5\)"):
        cal.block_slices((10, 10, 5, 5), (12, 11, 4, 3))


def test_warp_once_and_slice_matches_warp_per_overlap(tmp_path):
    """Warping a frame onto its whole block and slicing ~= warping it onto the overlap alone.

    GDAL's approximate transformer interpolates along each destination row, so
    the two are bit-identical only for a block spanning the same columns; else
    they differ slightly (measured on these frames: <= 3.7e-4 relative per
    pixel, gains <= 5.8e-6; see the Notes of ``calibrate_luojia_year``).
    """
    raw = tmp_path / "raw" / "2018"
    write_four_frames(raw)
    grid = grid_from_bbox(*XIAN_GRID)
    files, blocks = frame_blocks(raw, grid)
    ids = list(files)
    whole = {f: cal.warp_for_comparison(*files[f], grid, blocks[f], 2e-6) for f in ids}
    # same columns, fewer rows: identical
    r0, c0, h, w = blocks["LJ_A"]
    rows = (r0 + 5, c0, h - 12, w)
    np.testing.assert_array_equal(cal.warp_for_comparison(*files["LJ_A"], grid, rows, 2e-6),
                                  whole["LJ_A"][cal.block_slices(blocks["LJ_A"], rows)])
    # every overlap: same footprint, values within the approximate transformer's error
    pairs = cal.overlapping_pairs(ids, blocks)
    assert len(pairs) == 6
    direct = {}
    for fa, fb, block in pairs:
        warped = []
        for f in (fa, fb):
            d = cal.warp_for_comparison(*files[f], grid, block, 2e-6)
            s = whole[f][cal.block_slices(blocks[f], block)]
            assert np.array_equal(np.isfinite(d), np.isfinite(s))
            np.testing.assert_allclose(s, d, rtol=1e-3)
            warped.append(d)
        direct[(fa, fb)] = cal.overlap_ratio(*warped, 2e-6)
    # gains: one warp per frame vs one warp per frame and overlap
    ratios = {k: p.ratio for k, p in direct.items()}
    ref = cal.choose_reference(ids, ratios)
    gains = cal.solve_gains(ids, ratios, ref, weights={k: p.pixels for k, p in direct.items()})
    rec = cal.calibrate_luojia_year(make_cfg(luojia_gain_anchor="reference"), raw, grid, tmp_path / "cal")
    assert rec["reference"] == ref and list(rec["pairs"]) == [f"{a}/{b}" for a, b in direct]
    for f in ids:
        assert rec["gains"][f] == pytest.approx(gains[f], rel=2e-5, abs=0), f


def test_luojia_frames_read_and_warped_once_for_all_pairs(tmp_path, monkeypatch):
    raw = tmp_path / "raw" / "2018"
    gains_true = write_four_frames(raw)
    grid = grid_from_bbox(*XIAN_GRID)
    reads, warps = Counter(), Counter()
    load, warp = cal.load_luojia_radiance, cal.reproject_to_block

    def counting_load(tif, xml):
        reads[Path(tif).stem] += 1
        return load(tif, xml)

    def counting_warp(array, src, grid, block, *args, **kwargs):
        warps[src.transform] += 1
        return warp(array, src, grid, block, *args, **kwargs)

    monkeypatch.setattr(cal, "load_luojia_radiance", counting_load)
    monkeypatch.setattr(cal, "reproject_to_block", counting_warp)
    out = tmp_path / "cal" / "2018"
    rec = cal.calibrate_luojia_year(make_cfg(luojia_gain_anchor="reference"), raw, grid, out)
    assert len(rec["pairs"]) == 6  # every frame overlaps the three others
    assert reads == {f: 2 for f in gains_true}  # once for the six pairs, once to write
    assert sorted(warps.values()) == [1, 1, 1, 1]
    assert sorted(p.name for p in out.iterdir()) == sorted([f"{f}.tif" for f in gains_true] + ["gains.json"])
    # known answer: reference-scale gains
    g_ref = gains_true[rec["reference"]]
    for f, g in gains_true.items():
        assert rec["gains"][f] == pytest.approx(g_ref / g, rel=0.01), f


# ----------------------------------------------------------------------------- DEM


def test_dem_merge_two_tiles(tmp_path):
    raw = tmp_path / "dem"
    raw.mkdir()
    t1 = Affine(0.1, 0, 108.0, 0, -0.1, 35.0)
    t2 = Affine(0.1, 0, 109.0, 0, -0.1, 35.0)
    a = np.arange(100, dtype=np.float32).reshape(10, 10) + 400
    b = np.full((10, 10), 700, dtype=np.int16)
    b[0, 0] = -32768
    write_tif(raw / "Copernicus_DSM_COG_30_N34_00_E108_00_DEM.tif", a, "EPSG:4326", t1)
    write_tif(raw / "Copernicus_DSM_COG_30_N34_00_E109_00_DEM.tif", b, "EPSG:4326", t2, nodata=-32768)
    out = cal.calibrate_dem(make_cfg(), raw, tmp_path / "cal" / "dem.tif")
    with rasterio.open(out) as src:
        assert src.crs == CRS.from_epsg(4326) and src.dtypes[0] == "float32" and np.isnan(src.nodata)
        assert (src.width, src.height) == (20, 10)
        assert src.transform.almost_equals(Affine(0.1, 0, 108.0, 0, -0.1, 35.0))
        m = src.read(1)
    np.testing.assert_array_equal(m[:, :10], a)
    assert np.isnan(m[0, 10]) and np.all(m[:, 10:][~np.isnan(m[:, 10:])] == 700)


def _slope(rows, cols, transform):
    """Elevation rising linearly to the east: 100 m per degree of longitude, sampled at pixel centres."""
    cc, rr = np.meshgrid(np.arange(cols) + 0.5, np.arange(rows) + 0.5)
    lon, _ = transform * (cc, rr)
    return (400.0 + 100.0 * (lon - 108.0)).astype(np.float32)


@pytest.mark.parametrize("crs", ["EPSG:4490", "EPSG:4326"])
def test_dem_in_one_crs_keeps_it(tmp_path, crs):
    # CGCS2000 (EPSG:4490) is China's national geographic CRS; it is not rejected
    raw = tmp_path / "dem"
    raw.mkdir()
    t = Affine(0.1, 0, 108.0, 0, -0.1, 35.0)
    write_tif(raw / "tile.tif", _slope(10, 10, t), crs, t)
    out = cal.calibrate_dem(make_cfg(), raw, tmp_path / "dem.tif")
    with rasterio.open(out) as src:
        assert src.crs == CRS.from_user_input(crs) and src.transform.almost_equals(t)
        np.testing.assert_array_equal(src.read(1), _slope(10, 10, t))


def test_dem_tiles_in_different_crs_are_reprojected_and_merged(tmp_path):
    raw = tmp_path / "dem"
    raw.mkdir()
    t1 = Affine(0.01, 0, 108.0, 0, -0.01, 35.0)
    t2 = Affine(0.01, 0, 108.5, 0, -0.01, 35.0)
    write_tif(raw / "a.tif", _slope(50, 50, t1), "EPSG:4326", t1)
    # the east tile in UTM zone 49N (metres), sampled from the same slope
    from rasterio.warp import Resampling, calculate_default_transform, reproject
    dst_t, w, h = calculate_default_transform("EPSG:4326", "EPSG:32649", 50, 50, 108.5, 34.5, 109.0, 35.0)
    utm = np.full((h, w), np.nan, np.float32)
    reproject(_slope(50, 50, t2), utm, src_transform=t2, src_crs="EPSG:4326", dst_transform=dst_t,
              dst_crs="EPSG:32649", resampling=Resampling.bilinear, dst_nodata=np.nan)
    write_tif(raw / "b.tif", utm, "EPSG:32649", dst_t, nodata=float("nan"))
    out = cal.calibrate_dem(make_cfg(), raw, tmp_path / "dem.tif")
    with rasterio.open(out) as src:
        assert src.crs == CRS.from_epsg(4326)
        m = src.read(1)
        expect = _slope(src.height, src.width, src.transform)
        assert src.tags()["source_crs"] == "EPSG:32649;EPSG:4326"
        cc, rr = np.meshgrid(np.arange(src.width) + 0.5, np.arange(src.height) + 0.5)
        lon, lat = src.transform * (cc, rr)
    ok = np.isfinite(m)
    inside = (lon > 108.02) & (lon < 108.98) & (lat > 34.52) & (lat < 34.98)
    assert ok[inside].all()  # both tiles, the seam included, hold data
    # the reprojected tile keeps its elevations (bilinear of a linear slope: exact up to edge effects)
    np.testing.assert_allclose(m[ok], expect[ok], atol=1.0)


def _blob_scene(shape=(60, 70), centre=(28.0, 33.0), shift=(0.0, 0.0)):
    """A steep Gaussian 'city' (radiance) sampled with its centre moved by ``shift`` (rows, cols)."""
    rr, cc = np.mgrid[0:shape[0], 0:shape[1]].astype(np.float64)
    r0, c0 = centre[0] + shift[0], centre[1] + shift[1]
    return 1e-7 + 3e-4 * np.exp(-((rr - r0) ** 2 + (cc - c0) ** 2) / (2 * 6.0 ** 2))


def test_register_shift_recovers_subpixel_offset():
    b = _blob_scene()
    a = _blob_scene(shift=(0.5, -0.4))  # a's content sits 0.5 row lower, 0.4 col left of b's
    drow, dcol, _ = cal.register_shift(a, b, 2e-6)
    assert drow == pytest.approx(-0.5, abs=0.08) and dcol == pytest.approx(0.4, abs=0.08)


def test_overlap_ratio_is_robust_to_shift_and_hot_pixels():
    b = _blob_scene()
    a = 1.13 * _blob_scene(shift=(0.6, 0.5))
    a[[10, 40, 45], [20, 30, 50]] = 0.05  # hot pixels
    half = np.full(a.shape, np.nan)
    half[:, 20:] = 1.0  # the overlap cuts through the city: a shift would bias a plain flux ratio
    res = cal.overlap_ratio(a * half, b * half, 2e-6)
    assert res.ratio == pytest.approx(1.13, rel=0.005)
    assert res.pixels > 500 and res.shift[0] < -0.4
    # too few lit pixels in common -> no ratio
    dark = np.full(a.shape, 1e-7)
    assert cal.overlap_ratio(dark, dark, 2e-6) is None


def test_solve_gains_weights_favour_large_overlaps():
    # a-b and b-c are exact; a-c (a small corner overlap) is 10 % off
    pairs = {("a", "b"): 1.25, ("b", "c"): 0.8, ("a", "c"): 1.1}
    exact = cal.solve_gains(["a", "b", "c"], {k: v for k, v in pairs.items() if k != ("a", "c")}, "b")
    unweighted = cal.solve_gains(["a", "b", "c"], pairs, "b")
    weighted = cal.solve_gains(["a", "b", "c"], pairs, "b", weights={("a", "b"): 1000, ("b", "c"): 1000,
                                                                      ("a", "c"): 10})
    err = lambda g: max(abs(g[f] / exact[f] - 1) for f in exact)  # noqa: E731
    assert err(weighted) < 0.002 < 0.02 < err(unweighted)


def test_luojia_frame_without_meta_xml_names_the_frame(tmp_path):
    year = tmp_path / "2018"
    year.mkdir()
    (year / "LJ_frame_1.tif").write_bytes(b"not read")
    with pytest.raises(FileNotFoundError, match=r"LJ_frame_1\.tif: missing footprint file LJ_frame_1_meta\.xml"):
        cal.luojia_frames(year)


@pytest.mark.parametrize("chunk", [7, 16])
def test_dem_merge_chunks_do_not_change_the_result(tmp_path, monkeypatch, chunk):
    """The DEM is merged in DEM_MERGE_CHUNK chunks: any chunk gives the one-chunk raster (tiles of two pixel
    sizes on one lattice, overlapping, with a gap between them)."""
    raw = tmp_path / "dem"
    raw.mkdir()
    t1 = Affine(0.01, 0, 108.0, 0, -0.01, 35.0)
    t2 = Affine(0.015, 0, 108.3, 0, -0.015, 34.9)  # coarser, overlapping the first tile
    t3 = Affine(0.01, 0, 108.0, 0, -0.01, 34.4)  # south of a gap
    write_tif(raw / "a.tif", _slope(40, 40, t1), "EPSG:4326", t1)
    write_tif(raw / "b.tif", _slope(30, 30, t2) + 5, "EPSG:4326", t2)
    write_tif(raw / "c.tif", _slope(20, 30, t3), "EPSG:4326", t3)
    monkeypatch.setattr(cal, "DEM_MERGE_CHUNK", 10_000)
    whole = cal.calibrate_dem(make_cfg(), raw, tmp_path / "whole.tif")
    monkeypatch.setattr(cal, "DEM_MERGE_CHUNK", chunk)
    chunked = cal.calibrate_dem(make_cfg(), raw, tmp_path / "chunked.tif")
    with rasterio.open(whole) as a, rasterio.open(chunked) as b:
        assert (b.width, b.height, b.transform, b.crs, b.tags()) == (a.width, a.height, a.transform, a.crs, a.tags())
        assert b.width > 2 * chunk and b.height > 2 * chunk
        m = a.read(1)
        assert np.isnan(m).any() and np.isfinite(m).any()  # the gap, and the tiles
        np.testing.assert_array_equal(b.read(1), m)


def test_dem_tiles_meeting_a_chunk():
    bounds = [(0, 0, 1, 1), (1, 0, 2, 1), (0, 1, 1, 2), (5, 5, 6, 6)]
    assert cal.tiles_meeting(bounds, (0.5, 0.5, 1.5, 0.9)) == [0, 1]
    assert cal.tiles_meeting(bounds, (1, 1, 3, 3)) == [0, 1, 2]  # edges included; merge skips mere touches
    assert cal.tiles_meeting(bounds, (2.5, 2.5, 3, 3)) == []


def test_dem_merged_layout_is_the_union_of_the_tiles():
    transform, width, height = cal.merged_dem_layout([(108, 34, 109, 35), (109, 33.5, 110, 34.5)], (0.01, 0.02))
    assert (width, height) == (200, 75)
    assert transform.almost_equals(Affine(0.01, 0, 108, 0, -0.02, 35))


def test_dem_upside_down_tile_is_refused(tmp_path):
    raw = tmp_path / "dem"
    raw.mkdir()
    t = Affine(0.1, 0, 108.0, 0, 0.1, 34.0)  # rows run north
    write_tif(raw / "upside_down.tif", np.ones((5, 5), np.float32), "EPSG:4326", t)
    with pytest.raises(ValueError, match=r"upside_down\.tif.*cannot be merged"):
        cal.calibrate_dem(make_cfg(), raw, tmp_path / "dem.tif")
    assert not (tmp_path / "dem.tif").exists()
