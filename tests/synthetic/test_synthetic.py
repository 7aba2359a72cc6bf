"""The synthetic source: a hidden true scene written in the real products' formats.

A tiny config (0.1 degree region, two years, Landsat at 60 m) is generated once
per module; tests check meaning against the hidden truth (scene.json and the
scene model), not against stored numbers.
"""

from __future__ import annotations

import copy
import json
import math
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
import rasterio
import yaml
from pyproj import Transformer

from pandafine.config import validate_config
from pandafine.core.grid import Grid, grid_from_config
from pandafine.sources.manifest import read_manifest, sha256_file, verify_manifest, write_manifest
from pandafine.sources.synthetic import download_synthetic
from pandafine.synthetic import observe as obs
from pandafine.synthetic import scene as syn
from repo_paths import REPO

CONFIG = REPO / "config.yaml"

# Roy et al. (2016) OLS, OLI = slope * ETM+ + intercept (written out here independently of the module).
ROY = {"blue": (0.8474, 0.0003), "green": (0.8483, 0.0088), "red": (0.9047, 0.0061),
       "nir": (0.8462, 0.0412), "swir1": (0.8937, 0.0254), "swir2": (0.9071, 0.0172)}
TM_BANDS = {1: "blue", 2: "green", 3: "red", 4: "nir", 5: "swir1", 7: "swir2"}
OLI_BANDS = {1: "coastal", 2: "blue", 3: "green", 4: "red", 5: "nir", 6: "swir1", 7: "swir2"}
BAND_INDEX = {n: i for i, n in enumerate(("coastal", "blue", "green", "red", "nir", "swir1", "swir2"))}
OLD_YEARS = [1990, 2008]           # TM only; TM + ETM+ with SLC-off gaps
TRUTH_YEARS = [1984, 2019, 2020]


def scene_config(seed: int = 7) -> dict:
    """The demo config shrunk to a 0.1 degree box and two years: the smallest synthetic scene."""
    cfg = copy.deepcopy(yaml.safe_load(CONFIG.read_text()))
    cfg["region"]["bbox"] = [108.90, 34.25, 109.00, 34.35]
    cfg["run"].update(first_year=2018, last_year=2019, target_years=[2019])
    cfg["synthetic"].update(landsat_resolution=60, seed=seed)
    return validate_config(cfg)


def generate(cfg: dict, root: Path) -> dict[str, Path]:
    """Every layer of the tiny scene; returns layer -> manifest path."""
    return {
        "panda": download_synthetic(cfg, "panda", root / "raw" / "panda"),
        "landsat": download_synthetic(cfg, "landsat", root / "raw" / "landsat"),
        "landsat_old": download_synthetic(cfg, "landsat", root / "raw" / "landsat_old", OLD_YEARS),
        "dem": download_synthetic(cfg, "dem", root / "raw" / "dem"),
        "luojia": download_synthetic(cfg, "luojia", root / "raw" / "luojia"),
        "truth": download_synthetic(cfg, "truth", root / "synthetic", TRUTH_YEARS),
    }


def hashes(manifest: Path) -> dict[str, str]:
    return {f["path"]: f["sha256"] for f in read_manifest(manifest)["files"]}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    cfg = scene_config()
    root = tmp_path_factory.mktemp("synthetic")
    manifests = generate(cfg, root)
    scene_rec = json.loads((root / "synthetic" / "scene.json").read_text())
    return {"cfg": cfg, "root": root, "manifests": manifests, "scene": syn.SyntheticScene.from_config(cfg),
            "record": scene_rec, "grid": grid_from_config(cfg)}


def scenes(world, key: str, year: int) -> list[Path]:
    return sorted((world["manifests"][key].parent / str(year)).iterdir())


def read(path: Path) -> tuple[np.ndarray, Grid, rasterio.profiles.Profile]:
    with rasterio.open(path) as src:
        return src.read(1), Grid(src.crs.to_wkt(), src.transform, src.width, src.height, 1), src.profile


def landsat_scene(scene_dir: Path) -> tuple[dict[int, np.ndarray], np.ndarray, Grid]:
    sid = scene_dir.name
    bands = {}
    for f in sorted(scene_dir.glob(f"{sid}_SR_B*.TIF")):
        bands[int(f.stem.rsplit("B", 1)[1])], grid, _ = read(f)
    qa, grid, _ = read(scene_dir / f"{sid}_QA_PIXEL.TIF")
    return bands, qa, grid


def bit(qa: np.ndarray, n: int) -> np.ndarray:
    return (qa >> n) & 1 == 1


# ------------------------------------------------------------------------------------------
# manifests and determinism
# ------------------------------------------------------------------------------------------

def test_manifest_lists_files_with_size_and_hash(tmp_path):
    (tmp_path / "a").mkdir()
    f1, f2 = tmp_path / "a" / "x.bin", tmp_path / "y.txt"
    f1.write_bytes(b"\x00\x01" * 1000)
    f2.write_text("hello")
    m = write_manifest(tmp_path, "panda", "local", [(f2, "http://example/y.txt"), f1])
    doc = read_manifest(m)
    assert doc["layer"] == "panda" and doc["source"] == "local"
    assert [r["path"] for r in doc["files"]] == ["a/x.bin", "y.txt"]  # sorted, relative
    assert doc["files"][0]["size"] == 2000 and doc["files"][1]["origin"] == "http://example/y.txt"
    assert doc["files"][1]["sha256"] == "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
    assert verify_manifest(m) == []
    f2.write_text("hellO")
    assert any("sha256" in p for p in verify_manifest(m))
    with pytest.raises(ValueError, match="not inside"):
        write_manifest(tmp_path / "a", "panda", "local", [f2])


def test_every_layer_file_is_in_its_manifest(world):
    for key, m in world["manifests"].items():
        listed = {r["path"] for r in read_manifest(m)["files"]}
        on_disk = {p.relative_to(m.parent).as_posix() for p in m.parent.rglob("*") if p.is_file()} - {"manifest.json"}
        assert listed == on_disk, key  # nothing missing, no temporary leftovers
        assert verify_manifest(m) == []


def test_same_seed_gives_identical_files_in_any_thread_count(world, tmp_path):
    from pandafine.core.runtime import limit_threads, threads

    before = threads()
    limit_threads(2)
    try:
        again = generate(world["cfg"], tmp_path)
    finally:
        limit_threads(before)
    for key, m in world["manifests"].items():
        assert hashes(again[key]) == hashes(m), key


def test_different_seed_gives_a_different_scene(world, tmp_path):
    cfg = scene_config(seed=8)
    m = download_synthetic(cfg, "panda", tmp_path / "panda")
    assert set(hashes(m).values()).isdisjoint(hashes(world["manifests"]["panda"]).values())
    other = syn.SyntheticScene.from_config(cfg)
    assert other.cities[0].x != world["scene"].cities[0].x


def test_bad_layer_and_years_are_rejected(world, tmp_path):
    with pytest.raises(ValueError, match="unknown layer 'viirs'"):
        download_synthetic(world["cfg"], "viirs", tmp_path)
    with pytest.raises(ValueError, match=r"\[1980\]"):
        download_synthetic(world["cfg"], "panda", tmp_path, [1980, 1990])


# ------------------------------------------------------------------------------------------
# formats
# ------------------------------------------------------------------------------------------

def test_files_have_the_contract_crs_dtype_and_nodata(world):
    root, grid = world["root"], world["grid"]
    panda = root / "raw" / "panda" / "PANDA_China_2018.tif"
    _, g, prof = read(panda)
    assert prof["dtype"] == "uint8" and prof["nodata"] == 255 and g.same_as(obs.panda_grid(grid))

    sd = scenes(world, "landsat", 2019)[0]
    assert re.fullmatch(r"L[TEC]0[578]_L2SP_\d{6}_\d{8}_\d{8}_02_T1", sd.name)
    for f in sd.iterdir():
        _, g, prof = read(f)
        assert prof["dtype"] == "uint16" and prof["crs"].to_epsg() == 32649, f.name  # UTM 49N for 108.95 E
        assert prof["nodata"] == (1 if f.name.endswith("QA_PIXEL.TIF") else 0) and g.transform.a == 60

    dem = sorted((root / "raw" / "dem").glob("*.tif"))
    assert [d.name for d in dem] == ["Copernicus_DSM_COG_30_N34_00_E108_00_DEM.tif",
                                     "Copernicus_DSM_COG_30_N34_00_E109_00_DEM.tif"]
    _, g, prof = read(dem[0])
    assert prof["dtype"] == "float32" and prof["crs"].to_epsg() == 4326 and (g.width, g.height) == (1200, 1200)
    assert g.transform.a == pytest.approx(1 / 1200) and g.transform.c == pytest.approx(108 - 0.5 / 1200)

    frames = sorted((root / "raw" / "luojia" / "2019").glob("*.tif"))
    assert len(frames) == world["cfg"]["synthetic"]["luojia_frames"]
    for f in frames:
        assert re.fullmatch(r"LuoJia1-01_LR\d{12}_\d{14}_HDR_\d{4}", f.stem)
        _, g, prof = read(f)
        assert prof["dtype"] == "int32" and prof["crs"].to_epsg() == 4326
        assert 0.0012 <= g.transform.a <= 0.0014 and (f.parent / f"{f.stem}_meta.xml").is_file()

    truth, g, prof = read(root / "synthetic" / "truth" / "radiance_2019.tif")
    assert prof["dtype"] == "float32" and math.isnan(prof["nodata"]) and g.same_as(grid)
    assert np.isfinite(truth).all() and truth.min() > 0


# ------------------------------------------------------------------------------------------
# PANDA
# ------------------------------------------------------------------------------------------

def test_panda_dn_range_lattice_and_saturated_city_core(world):
    grid, cfg = world["grid"], world["cfg"]
    dn, g, _ = read(world["root"] / "raw" / "panda" / "PANDA_China_2019.tif")
    assert dn.max() <= 63 and dn.min() == 0
    ax, ay = cfg["grid"]["anchor"]
    assert ((g.transform.c - ax) / 1000) % 1 == pytest.approx(0, abs=1e-6)
    assert ((g.transform.f - ay) / 1000) % 1 == pytest.approx(0, abs=1e-6)
    l, b, r, t = grid.bounds
    assert g.bounds == pytest.approx((l - 2000, b - 2000, r + 2000, t + 2000))
    city = world["record"]["cities"][0]
    col, row = ~g.transform @ (city["x"], city["y"])
    assert dn[int(row), int(col)] == 63


def test_panda_dn_curve():
    L = np.array([0.0, 1e-7, 1e-6, 1e-5, 3e-5, 1e-4, 3e-4, 1e-2])
    dn = obs.panda_dn(L)
    assert dn.dtype == np.uint8 and dn[0] == 0 and dn[1] == 0 and dn[-1] == 63 and dn[-2] == 63
    assert np.all(np.diff(dn.astype(int)) >= 0) and 10 < dn[3] < 40
    assert obs.panda_dn(np.array([1e-5]), gain=1.1)[0] > obs.panda_dn(np.array([1e-5]))[0]


# ------------------------------------------------------------------------------------------
# Landsat
# ------------------------------------------------------------------------------------------

def test_panda_geolocation_shift_moves_a_light_by_the_drawn_offset():
    """The cell georeferenced at (x, y) shows the ground at (x+dx, y+dy): a light appears dx west, dy south."""
    cell, sub = 1000.0, 8
    pad = obs.panda_pad_cells(cell)
    n = 12
    yy, xx = np.mgrid[0:(n + 2 * pad) * sub, 0:(n + 2 * pad) * sub] + 0.5
    c = (n / 2 + pad) * sub
    fine = 2e-5 * np.exp(-((yy - c) ** 2 + (xx - c) ** 2) / (2 * 6.0**2))  # a 750 m wide town, DN <= 31 (unsaturated)

    def centroid(shift):
        dn = obs.simulate_panda(fine, obs.PandaYear(2000, 3.0, 1200.0, shift), cell, sub, pad).astype(float)
        r, q = np.mgrid[0:n, 0:n]
        return (dn * r).sum() / dn.sum(), (dn * q).sum() / dn.sum()

    r0, c0 = centroid((0.0, 0.0))
    r1, c1 = centroid((500.0, -250.0))
    assert c1 - c0 == pytest.approx(-0.5, abs=0.08) and r1 - r0 == pytest.approx(-0.25, abs=0.08)
    # the year's draw: within the bound, its own random stream (gain and blur as without a shift)
    plain, moved = obs.panda_year(7, 2018), obs.panda_year(7, 2018, 1000.0)
    assert plain.shift_m == (0.0, 0.0) and (plain.gain, plain.blur_sigma) == (moved.gain, moved.blur_sigma)
    assert all(0 < abs(v) <= 1000.0 for v in moved.shift_m) and moved == obs.panda_year(7, 2018, 1000.0)
    with pytest.raises(ValueError, match="panda_shift_m"):
        obs.panda_year(7, 2018, -1.0)


def test_sensor_schedule():
    assert obs.landsat_sensors(1990, 2) == ["TM", "TM"]
    assert obs.landsat_sensors(2005, 2) == ["TM", "ETM"]
    assert obs.landsat_sensors(2012, 2) == ["ETM", "ETM"]
    assert obs.landsat_sensors(2016, 3) == ["OLI", "OLI", "ETM"]


def _clear(qa: np.ndarray) -> np.ndarray:
    bad = bit(qa, 0) | bit(qa, 1) | bit(qa, 2) | bit(qa, 3) | bit(qa, 4)
    return ~bad


@pytest.mark.parametrize("key,year", [("landsat_old", 1990), ("landsat_old", 2008), ("landsat", 2019)])
def test_harmonized_reflectance_recovers_oli_truth(world, key, year):
    for sd in scenes(world, key, year):
        bands, qa, grid = landsat_scene(sd)
        truth = world["scene"].landsat_truth(year, grid)
        clear = _clear(qa)
        assert clear.mean() > 0.3
        oli = sd.name.startswith("LC08")
        assert sorted(bands) == ([1, 2, 3, 4, 5, 6, 7] if oli else [1, 2, 3, 4, 5, 7])
        for n, dn in bands.items():
            name = (OLI_BANDS if oli else TM_BANDS)[n]
            rho = dn[clear].astype(np.float64) * 0.0000275 - 0.2
            if not oli:
                slope, icpt = ROY[name]
                rho = slope * rho + icpt
            diff = rho - truth[BAND_INDEX[name]][clear]
            assert abs(diff.mean()) < 5e-4, (sd.name, name, diff.mean())
            assert 0.0015 < diff.std() < 0.0035, (sd.name, name, diff.std())


def test_qa_marks_clouds_shadows_and_slc_gaps(world):
    checked_gap = False
    for key, year in [("landsat_old", 1990), ("landsat_old", 2008), ("landsat", 2019)]:
        for sd in scenes(world, key, year):
            bands, qa, grid = landsat_scene(sd)
            truth = world["scene"].landsat_truth(year, grid)
            fill = bit(qa, 0)
            cloud = bit(qa, 3) & ~fill
            shadow = bit(qa, 4) & ~fill
            assert 0.05 < cloud.mean() < 0.5, sd.name
            assert not (bit(qa, 6) & (cloud | bit(qa, 1))).any()  # clear excludes (dilated) cloud
            assert (bit(qa, 1) & ~fill).any()  # dilated ring around clouds
            blue = bands[2 if sd.name.startswith("LC08") else 1].astype(np.float64) * 0.0000275 - 0.2
            assert blue[cloud].mean() > truth[BAND_INDEX["blue"]][cloud].mean() + 0.15  # clouds are bright
            nir_n = 5 if sd.name.startswith("LC08") else 4
            nir = bands[nir_n].astype(np.float64) * 0.0000275 - 0.2
            if shadow.sum() > 100:
                assert nir[shadow].mean() < 0.5 * truth[BAND_INDEX["nir"]][shadow].mean()  # shadows are dark
            slc_off = sd.name.startswith("LE07") and int(sd.name[17:25]) > 20030531
            if slc_off:
                checked_gap = True
                assert 0.05 < fill.mean() < 0.6
                assert np.all(qa[fill] == 1)
                assert all(np.all(b[fill] == 0) for b in bands.values())
                assert all(np.all(b[~fill] > 0) for b in bands.values())
                # gaps are stripes: many separate runs down a column
                col = fill[:, grid.width // 2].astype(int)
                assert np.count_nonzero(np.diff(col) == 1) >= 3
            else:
                assert not fill.any()
    assert checked_gap


def test_qa_pixel_values_match_collection2():
    f = np.zeros((1, 4), bool)
    cloud = np.array([[False, True, False, False]])
    dil = np.array([[False, False, True, False]])
    shadow = np.array([[False, False, False, True]])
    water = np.zeros((1, 4), bool)
    tm = obs.landsat_qa(f, cloud, dil, shadow, None, water)
    assert tm.tolist() == [[5440, 5896, 5378, 7504]]  # clear, cloud, dilated, shadow (TM/ETM+)
    oli = obs.landsat_qa(f, cloud, dil, shadow, np.zeros((1, 4), bool), water)
    assert oli.tolist() == [[21824, 22280, 21762, 23888]]  # values of real OLI QA_PIXEL files
    assert obs.landsat_qa(f, cloud, dil, shadow, None, np.ones((1, 4), bool))[0, 0] == 5440 + 128  # clear water
    assert obs.landsat_qa(np.ones((1, 4), bool), cloud, dil, shadow, None, water).tolist() == [[1, 1, 1, 1]]


# ------------------------------------------------------------------------------------------
# Luojia
# ------------------------------------------------------------------------------------------

def test_luojia_dn_is_truth_radiance_times_gain(world):
    rec, scene, cfg = world["record"], world["scene"], world["cfg"]
    year = cfg["run"]["target_years"][0]
    truth_file, tgrid, _ = read(world["root"] / "synthetic" / "truth" / f"radiance_{year}.tif")
    to_grid = Transformer.from_crs("EPSG:4326", tgrid.crs, always_xy=True)
    for fr in rec["luojia"][str(year)]:
        dn, grid, _ = read(world["root"] / "raw" / "luojia" / str(year) / f"{fr['frame_id']}.tif")
        assert 0.85 <= fr["gain"] <= 1.15 and max(map(abs, fr["shift_px"])) < 1
        inside = obs.footprint_mask(grid.transform, grid.width, grid.height, fr["footprint"])
        assert np.all(dn[~inside] == 0) and np.all(dn[inside] >= 1)
        hot = np.zeros(dn.shape, bool)
        for r, c, v in fr["hot_pixels"]:
            assert dn[r, c] == v and v >= 200_000
            hot[r, c] = True
        assert 4e-4 <= hot.sum() / inside.sum() <= 1.2e-3
        # the content is the truth at the recorded sub-pixel shift
        shifted = Grid("EPSG:4326", grid.transform @ rasterio.Affine.translation(*fr["shift_px"]), grid.width,
                       grid.height, 1)
        truth = scene.radiance_on_grid(year, shifted, supersample=2)
        clean = inside & ~hot & (truth > 2e-5)
        assert clean.sum() > 50
        ratio = dn[clean].astype(np.float64) ** 1.5 * 1e-10 / fr["gain"] / truth[clean]
        assert abs(np.median(ratio) - 1) < 0.01 and np.percentile(np.abs(ratio - 1), 99) < 0.05
        # and agrees with the truth file on the working grid where the radiance is smooth and bright
        rows, cols = np.nonzero(clean)
        lon, lat = shifted.transform @ (cols + 0.5, rows + 0.5)
        x, y = to_grid.transform(lon, lat)
        tc, tr = ~tgrid.transform @ (np.asarray(x), np.asarray(y))
        ok = (tr >= 0) & (tr < tgrid.height) & (tc >= 0) & (tc < tgrid.width)
        ref = truth_file[tr[ok].astype(int), tc[ok].astype(int)]
        lj = dn[rows[ok], cols[ok]].astype(np.float64) ** 1.5 * 1e-10 / fr["gain"]
        assert 0.9 < np.median(lj / ref) < 1.1


def test_luojia_meta_xml_and_footprints_cover_the_grid(world):
    rec, grid = world["record"], world["grid"]
    year = str(world["cfg"]["run"]["target_years"][0])
    to_ll = Transformer.from_crs(grid.crs, "EPSG:4326", always_xy=True)
    rows, cols = np.mgrid[0:grid.height, 0:grid.width]
    edge = np.zeros(grid.shape, bool)
    covered = np.zeros(grid.shape, int)
    for fr in rec["luojia"][year]:
        root = ET.parse(world["root"] / "raw" / "luojia" / year / f"{fr['frame_id']}_meta.xml").getroot()
        quad = [(float(root.findtext(f"{c}Longitude")), float(root.findtext(f"{c}Latitude")))
                for c in ("TopLeft", "TopRight", "BottomRight", "BottomLeft")]
        assert np.allclose(quad, fr["footprint"], atol=1e-7)
        assert root.findtext("ImagingTime").startswith(year)
        # corners of every working-grid pixel must be inside the union of footprints
        for dr, dc in ((0, 0), (0, 1), (1, 0), (1, 1)):
            lon, lat = to_ll.transform(*(grid.transform @ (cols + dc, rows + dr)))
            inside = obs.points_in_quad(np.asarray(lon), np.asarray(lat), quad)
            covered += inside
            edge |= ~inside
    assert covered.min() >= 4  # each pixel corner is inside some frame
    # neighbouring frames overlap
    lon, lat = to_ll.transform(*(grid.transform @ (cols + 0.5, rows + 0.5)))
    n_in = sum(obs.points_in_quad(np.asarray(lon), np.asarray(lat), fr["footprint"]) for fr in rec["luojia"][year])
    assert 0.15 < (n_in >= 2).mean() < 0.8


def test_luojia_dn_relation_known_values():
    L = np.array([0.0, 1e-10, 1e-4])
    assert np.allclose(obs.luojia_dn(L), [0.0, 1.0, 1e4])
    assert np.allclose(obs.luojia_radiance(obs.luojia_dn(L, 1.1)), L * 1.1)


# ------------------------------------------------------------------------------------------
# the hidden truth
# ------------------------------------------------------------------------------------------

def test_cities_grow_and_spots_are_bright(world):
    truth_dir = world["root"] / "synthetic" / "truth"
    t1984, _, _ = read(truth_dir / "radiance_1984.tif")
    t2020, _, _ = read(truth_dir / "radiance_2020.tif")
    assert t2020.sum() > 1.5 * t1984.sum()
    scene, grid = world["scene"], world["grid"]
    assert scene.urban_fraction_on_grid(2020, grid).sum() > 1.3 * scene.urban_fraction_on_grid(1984, grid).sum()
    assert 1e-7 * 0.5 < np.percentile(t2020, 5) < 1e-7 * 2  # dark background
    rec = world["record"]
    for s in rec["spots"]:
        assert 60 <= s["sigma"] <= 120 and 5 * 3e-4 <= s["radiance"] <= 10 * 3e-4
    core = scene.radiance(scene.fields(np.array([rec["cities"][0]["x"]]), np.array([rec["cities"][0]["y"]])), 2020)
    assert 5e-5 < core[0] < 2e-3


def test_radiance_is_continuous_in_space_on_any_grid(world):
    scene, grid = world["scene"], world["grid"]
    coarse = scene.radiance_on_grid(2019, grid, supersample=2)
    fine = scene.radiance_on_grid(2019, grid.scaled(2), supersample=1)
    assert np.allclose(syn.block_mean(fine, 2), coarse, rtol=1e-5, atol=1e-12)


def test_dem_is_lower_at_city_centres(world):
    rec, grid = world["record"], world["grid"]
    tiles = sorted((world["root"] / "raw" / "dem").glob("*.tif"))
    to_grid = Transformer.from_crs("EPSG:4326", grid.crs, always_xy=True)
    far_heights, centre_heights = [], []
    for t in tiles:
        h, g, _ = read(t)
        rows, cols = np.mgrid[0:g.height:10, 0:g.width:10]
        lon, lat = g.transform @ (cols + 0.5, rows + 0.5)
        x, y = to_grid.transform(lon, lat)
        dist = np.min([np.hypot(np.asarray(x) - c["x"], np.asarray(y) - c["y"]) for c in rec["cities"]], axis=0)
        far_heights.append(h[rows, cols][dist > 20000])
        for c in rec["cities"]:
            col, row = ~g.transform @ (c["lon"], c["lat"])
            if 0 <= row < g.height and 0 <= col < g.width:
                centre_heights.append(h[int(row), int(col)])
    assert centre_heights
    assert max(centre_heights) + 200 < np.mean(np.concatenate(far_heights))


# ------------------------------------------------------------------------------------------
# pure helpers
# ------------------------------------------------------------------------------------------

def test_pixel_centres_match_exact_projection(world):
    grid = world["grid"]
    lg = obs.landsat_grid(grid, 30.0)
    x, y = syn.pixel_centres(lg, grid.crs, step=16)
    rows = np.array([0, 5, lg.height // 2, lg.height - 1])
    cols = np.array([0, 7, lg.width // 3, lg.width - 1])
    ex, ey = Transformer.from_crs(lg.crs, grid.crs, always_xy=True).transform(
        *(lg.transform @ (cols + 0.5, rows + 0.5)))
    assert np.allclose(x[rows, cols], ex, atol=0.01) and np.allclose(y[rows, cols], ey, atol=0.01)
    # the UTM grid covers the working grid
    l, b, r, t = grid.bounds
    corners = Transformer.from_crs(grid.crs, lg.crs, always_xy=True).transform([l, r, l, r], [b, b, t, t])
    L, B, R, T = lg.bounds
    assert min(corners[0]) > L and max(corners[0]) < R and min(corners[1]) > B and max(corners[1]) < T


def test_frame_layout_and_quad():
    assert obs.frame_layout(4, 1.0, 1.0) == [2, 2]
    assert sum(obs.frame_layout(5, 2.0, 1.0)) == 5 and obs.frame_layout(1, 1.0, 1.0) == [1]
    quad = [(0.0, 1.0), (1.0, 1.0), (1.0, 0.0), (0.0, 0.0)]
    inside = obs.points_in_quad(np.array([0.5, 1.5, 0.99]), np.array([0.5, 0.5, 0.01]), quad)
    assert inside.tolist() == [True, False, True]


def test_scene_json_records_the_hidden_parameters(world):
    rec = world["record"]
    cfg = world["cfg"]
    assert rec["seed"] == cfg["synthetic"]["seed"] and len(rec["cities"]) == cfg["synthetic"]["n_cities"]
    assert all(c["r2020"] > c["r1984"] > 0 for c in rec["cities"])
    assert set(rec["luojia"]) == {str(y) for y in cfg["run"]["target_years"]}
    assert {"1984", "2018", "2019", "2020"} <= set(rec["panda"]) and set(rec["panda"]) <= set(rec["landsat"])
    ids = [s["scene_id"] for s in rec["landsat"]["2019"]]
    assert sorted(ids) == [p.name for p in scenes(world, "landsat", 2019)]
    assert sha256_file(world["root"] / "synthetic" / "scene.json") == hashes(world["manifests"]["truth"])["scene.json"]
