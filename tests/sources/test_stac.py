"""The ``stac`` Landsat source per (year, block), offline against a STAC API answered on 127.0.0.1.

The responder (tests/stac_server.py, a child process) answers the landing page, the collection, ``/search``
(filtering by ``intersects`` and ``datetime``, ignoring ``query``), a Planetary-Computer-like SAS token
endpoint, and serves 1024 x 1024 px, 30 m COGs with internal overviews 2 and 4 (HTTP Range; 403 without the
token while it requires one). The working grid is a ~25 km square (208 x 208 px of 125 m) inside the scenes.

Scenes (path/row 127036 unless said): TM 1990 with a cloud rectangle in QA_PIXEL; OLI 2018-08-01 clear,
OLI 2018-09-02 with the cloud rectangle, OLI 2018-08-17 at 85 % cloud (served too, but the client's cloud
filter must drop it); a 2018 scene of path/row 131040 elsewhere; and, for the per-path/row cap, virtual
2016 scenes of 127036 and 127037.
"""

from __future__ import annotations

import copy
import json
import socket
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import rasterio
import yaml
from pyproj import Transformer
from shapely.geometry import Point, shape

from pandafine.config import ConfigError, validate_config
from pandafine.core.blocks import grid_blocks
from pandafine.core.faults import RasterFileError
from pandafine.core.grid import grid_from_config
from pandafine.preprocess.landsat_composite import CompositeParams, composite_block, write_block_record
from pandafine.sensors.landsat import ROY2016_OLS, SR_OFFSET, SR_SCALE
from pandafine.sources.fetch import DownloadError
from pandafine.sources.http import policy_from_config
from pandafine.sources.registry import download_layer
from pandafine.sources.stac import (
    ASSET_KEYS,
    StacParams,
    footprint_lonlat,
    keep_scenes,
    open_client,
    plan_scene,
    resolve_assets,
    scene_assets,
    scene_id_of,
    search_block,
    stac_block_source,
)
from stac_server import (
    CLOUD_QA,
    PC_KEYS,
    RAMP,
    RES,
    RHO,
    TOKEN,
    UTM,
    SceneSpec,
    StacWorld,
    dn_of,
    serve,
    write_scene_files,
)

#: A ~25 km square around the tiny config's region: big enough that reading a block at full resolution
#: costs many COG tiles, and the factor-4 overview one.
BBOX = [108.83, 34.17, 109.09, 34.38]
TM_ID = "LT05_L2SP_127036_19900712_20200916_02_T1"
OLI_ID = "LC08_L2SP_127036_20180801_20200831_02_T1"
OLI_CLOUD_ID = "LC08_L2SP_127036_20180902_20200831_02_T1"
CLOUDY_ID = "LC08_L2SP_127036_20180817_20200831_02_T1"
ELSEWHERE_ID = "LC08_L2SP_131040_20180805_20200831_02_T1"
ELSEWHERE = ((103.0, 30.0), (105.0, 30.0), (105.0, 31.8), (103.0, 31.8))
#: WRS-2 127036 and 127037 scenes of 2016 (virtual: searched, never read): id -> cloud %.
CAP_SCENES = {"LC08_L2SP_127036_20160310_20200906_02_T1": 40.0, "LC08_L2SP_127036_20160613_20200906_02_T1": 12.0,
              "LC08_L2SP_127036_20160917_20200906_02_T1": 15.0, "LC08_L2SP_127037_20160326_20200906_02_T1": 33.0,
              "LC08_L2SP_127037_20160629_20200906_02_T1": 25.0, "LC08_L2SP_127037_20161002_20200906_02_T1": 85.0}
SEARCH_2018 = "2018-01-01T00:00:00Z/2018-12-31T23:59:59Z"


def world_scenes(files) -> list[SceneSpec]:
    south = tuple((lon, lat - 0.15) for lon, lat in files.footprint)  # the next row south, overlapping
    return ([SceneSpec(TM_ID, "1990-07-12", 10.0, "cloud"), SceneSpec(OLI_ID, "2018-08-01", 20.0, "clear"),
             SceneSpec(OLI_CLOUD_ID, "2018-09-02", 30.0, "cloud"), SceneSpec(CLOUDY_ID, "2018-08-17", 85.0, "clear"),
             SceneSpec(ELSEWHERE_ID, "2018-08-05", 5.0, None, ELSEWHERE)]
            + [SceneSpec(sid, f"2016-{sid[21:23]}-{sid[23:25]}", cloud, None, south if "127037" in sid else None)
               for sid, cloud in CAP_SCENES.items()])


def stored(band: str) -> float:
    """The reflectance of a constant band as stored (RHO rounded to a whole DN)."""
    return dn_of(RHO[band]) * SR_SCALE + SR_OFFSET


def harmonized(band: str, rho):
    slope, intercept = ROY2016_OLS[band]
    return slope * np.asarray(rho, dtype=np.float64) + intercept


# --------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def land(tmp_path_factory, tiny_config_path):
    """The base config (tiny, on BBOX), its working grid and the COGs (written once)."""
    cfg = yaml.safe_load(Path(tiny_config_path).read_text())
    cfg["region"]["bbox"] = BBOX
    grid = grid_from_config(cfg)
    from rasterio.warp import transform_bounds

    files = write_scene_files(tmp_path_factory.mktemp("cogs"),
                              transform_bounds(grid.crs, "EPSG:4326", *grid.bounds, densify_pts=21))
    return cfg, grid, files


@pytest.fixture(scope="module")
def server(land):
    with serve(land[2]) as srv:
        yield srv


@pytest.fixture()
def stac_api(server, land):
    """The responder with the scenes of this module, a fresh COG nonce and an empty log; requires the token."""
    return server.reset(world_scenes(land[2]), require_token=True)


def stac_config(land, base: str, **landsat) -> dict:
    cfg = copy.deepcopy(land[0])
    cfg["sources"]["landsat"] = {"kind": "stac", "api": base, "sign": "planetary-computer",
                                 "sas_url": base + "/sas", "max_cloud": 60, **landsat}
    cfg["download"] = {"allow_http": True, "retries": 0, "timeout": 20, "backoff": 0, "progress": False}
    return validate_config(cfg)


def pixel_centres_utm(grid, area):
    """UTM easting/northing of the centres of ``area``'s working pixels."""
    r0, c0, h, w = area
    rows, cols = np.mgrid[r0:r0 + h, c0:c0 + w]
    xs, ys = grid.transform * (cols + 0.5, rows + 0.5)
    return Transformer.from_crs(grid.crs, UTM, always_xy=True).transform(xs, ys)


def cloud_masks(files, east, north, margin: float = 8.0):
    """Working pixels well inside the cloud rectangle, and well outside it (inside the frame, off the fill)."""
    t = files.transform
    col = (east - t.c) / RES
    row = (t.f - north) / RES
    r0, r1, c0, c1 = files.cloud_rect
    inside = (row > r0 + margin) & (row < r1 - margin) & (col > c0 + margin) & (col < c1 - margin)
    outside = (((row < r0 - margin) | (row > r1 + margin) | (col < c0 - margin) | (col > c1 + margin))
               & (col > 3 + margin) & (col < files.width - margin) & (row > margin) & (row < files.height - margin))
    return inside, outside


# --------------------------------------------------------------------------------------------- the search


def test_search_sends_the_block_footprint_as_intersects(stac_api, land):
    cfg, grid, files = land
    cfg = stac_config(land, stac_api.base)
    blocks = grid_blocks(grid, 64)
    block = blocks[len(blocks) // 2 + 1]  # an inner block, not the whole grid
    found = stac_block_source(cfg, grid, block.area, 2018)

    # the scene elsewhere is not returned (the responder filters by intersection); 85 % dropped client-side
    assert [s.scene_id for s in found.scenes] == [OLI_ID, OLI_CLOUD_ID]
    assert [(m, p) for m, p, _ in stac_api.requests if p == "/search"] == [("POST", "/search")]
    body = stac_api.search_bodies[-1]
    assert body["collections"] == ["landsat-c2-l2"] and body["datetime"] == SEARCH_2018
    assert body["query"] == {"eo:cloud_cover": {"lte": 60.0}}
    assert "bbox" not in body

    # `intersects` is a polygon holding the block (its corners and edge midpoints) but not the whole grid
    poly = shape(body["intersects"])
    assert body["intersects"]["type"] == "Polygon" and poly.is_valid
    to_ll = Transformer.from_crs(grid.crs, "EPSG:4326", always_xy=True)
    r0, c0, h, w = block.area
    pts = [(c0 + dc * w, r0 + dr * h) for dr in (0, 0.5, 1) for dc in (0, 0.5, 1)]
    for col, row in pts:
        lon, lat = to_ll.transform(*(grid.transform * (col, row)))
        assert poly.buffer(1e-7).covers(Point(lon, lat)), (col, row)
    lon, lat = to_ll.transform(*(grid.transform * (0.5, 0.5)))  # the grid's north-west pixel: another block
    assert not poly.covers(Point(lon, lat))
    assert poly.area < shape(footprint_lonlat(grid, (0, 0, grid.height, grid.width))).area / 5

    # the same responder returns the scene elsewhere for a footprint over it, and nothing for 1995
    params = StacParams.from_config(cfg)
    client = open_client(params, policy_from_config(cfg))
    there = {"type": "Polygon", "coordinates": [[[103.5, 30.5], [104, 30.5], [104, 31], [103.5, 31], [103.5, 30.5]]]}
    assert [s.scene_id for s in search_block(client, params, there, 2018)] == [ELSEWHERE_ID]
    assert search_block(client, params, footprint_lonlat(grid, block.area), 1995) == []


def test_scenes_are_capped_per_wrs2_path_row(stac_api, land):
    grid = land[1]
    area = (0, 0, grid.height, grid.width)

    def ids(**landsat):
        found = stac_block_source(stac_config(land, stac_api.base, **landsat), grid, area, 2016)
        return sorted(s.scene_id for s in found.scenes)

    by_cloud = sorted(CAP_SCENES, key=CAP_SCENES.get)
    # max_scenes 1: the least cloudy scene of EACH path/row (the two least cloudy overall are both 127036)
    assert ids(max_scenes=1) == sorted(["LC08_L2SP_127036_20160613_20200906_02_T1",
                                        "LC08_L2SP_127037_20160629_20200906_02_T1"])
    assert ids(max_scenes=1) != sorted(by_cloud[:2])
    assert ids(max_scenes=2) == sorted(["LC08_L2SP_127036_20160613_20200906_02_T1",
                                        "LC08_L2SP_127036_20160917_20200906_02_T1",
                                        "LC08_L2SP_127037_20160629_20200906_02_T1",
                                        "LC08_L2SP_127037_20160326_20200906_02_T1"])
    # no cap: every scene with at most max_cloud %; the 85 % one is dropped by the client, although the
    # responder (which ignores `query`) answers it
    assert ids() == sorted(sid for sid, c in CAP_SCENES.items() if c <= 60)
    assert ids(max_cloud=30) == sorted(sid for sid, c in CAP_SCENES.items() if c <= 30)
    req = urllib.request.Request(stac_api.base + "/search", data=json.dumps(stac_api.search_bodies[-1]).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        answered = {f["id"] for f in json.loads(resp.read())["features"]}
    assert "LC08_L2SP_127037_20161002_02_T1" in answered


# --------------------------------------------------------------------------------------------- end to end


def test_landsat_block_cli_reads_signed_cogs_onto_the_working_grid(stac_api, land, tmp_path):
    from pandafine.cli import main

    _, grid, files = land
    cfg = copy.deepcopy(stac_config(land, stac_api.base))
    cfg["preprocess"]["landsat_overviews"] = True  # read from the factor-4 overview (the default is full resolution)
    cfg_path = tmp_path / "cfg.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    grid.write_json(tmp_path / "grid.json")
    out = tmp_path / "results" / "landsat"
    for year in (1990, 2018):
        rc = main(["landsat-block", "--config", str(cfg_path), "--year", str(year), "--block", "r000c000",
                   "--grid", str(tmp_path / "grid.json"), "--output", str(out / str(year) / "r000c000.tif")])
        assert rc == 0

    # signing: every COG request carried the SAS token; the token endpoint was asked
    cogs = [q for _, p, q in stac_api.requests if p.startswith("/cogs/")]
    assert cogs and all("sig=FAKE" in q for q in cogs)
    assert ("GET", "/sas/landsat-c2-l2", "") in stac_api.requests

    east, north = pixel_centres_utm(grid, (0, 0, grid.height, grid.width))
    inside, outside = cloud_masks(files, east, north)
    assert inside.sum() > 100 and outside.sum() > 10000
    nir_dn = RAMP[0] + RAMP[1] * (east - files.transform.c)
    nir_rho = nir_dn * SR_SCALE + SR_OFFSET

    # 1990, one TM scene: OLI-equivalent reflectance (Roy et al. 2016), coastal = harmonized blue; cloud masked
    with rasterio.open(out / "1990" / "r000c000.tif") as src:
        tm = src.read()
        assert src.descriptions[-1] == "clear_count" and src.tags()["year"] == "1990"
    count = tm[-1]
    assert np.all(count[inside] == 0) and np.all(np.isnan(tm[:-1][:, inside]))
    assert np.all(count[outside] == 1)
    for i, band in enumerate(("blue", "blue", "green", "red")):
        assert np.allclose(tm[i][outside], harmonized(band, stored(band)), atol=2e-6), band
    for i, band in ((5, "swir1"), (6, "swir2")):
        assert np.allclose(tm[i][outside], harmonized(band, stored(band)), atol=2e-6), band
    assert np.abs(tm[4][outside] - harmonized("nir", nir_rho[outside])).max() < 1.5e-3  # the ramp

    # 2018: two OLI scenes (the cloudy one has the rectangle), the 85 % scene dropped
    with rasterio.open(out / "2018" / "r000c000.tif") as src:
        oli = src.read()
    count = oli[-1]
    assert np.all(count[outside] == 2) and np.all(count[inside] == 1)
    for i, band in enumerate(("blue", "blue", "green", "red")):  # coastal: the blue band (landsat_coastal: blue)
        assert np.allclose(oli[i][count > 0], stored(band), atol=2e-6), band
    assert np.abs(oli[4][outside] - nir_rho[outside]).max() < 1.5e-3

    # the records: the scenes used, read from the factor-4 overview, with unsigned hrefs
    rec = json.loads((out / "2018" / "r000c000.json").read_text())
    assert rec["source"] == "stac" and rec["year"] == 2018 and rec["read"] == 2
    assert [s["scene_id"] for s in rec["scenes"]] == [OLI_ID, OLI_CLOUD_ID]
    assert [s["decimation"] for s in rec["scenes"]] == [4, 4]
    assert all("sig=" not in s["qa"] and s["qa"].startswith(stac_api.base + "/cogs/") for s in rec["scenes"])
    assert [s["scene_id"] for s in json.loads((out / "1990" / "r000c000.json").read_text())["scenes"]] == [TM_ID]

    # nothing at scene resolution: every raster under the output is on the working grid; no journal left
    tifs = sorted(tmp_path.rglob("*.tif"))
    assert [p.relative_to(out).as_posix() for p in tifs] == ["1990/r000c000.tif", "2018/r000c000.tif"]
    for p in tifs:
        with rasterio.open(p) as src:
            assert src.res == pytest.approx((125.0, 125.0)) and src.transform == grid.transform
    assert not [p for p in tmp_path.rglob(".*journal*")]


def test_overview_reads_fetch_far_fewer_bytes_and_agree(stac_api, land, tmp_path):
    """The same block composite read from the factor-4 overview and at full resolution; a custom signer."""
    _, grid, files = land
    cfg = stac_config(land, stac_api.base)  # planetary-computer signing, replaced by the hook below
    block = grid_blocks(grid, 0)[0]
    calls = []

    def signer(tag):
        def sign(href):
            calls.append((tag, href))
            return f"{href}?{TOKEN}&run={tag}"
        return sign

    results, bytes_read = {}, {}
    for tag, overviews in (("ov", True), ("full", False)):
        found = stac_block_source(cfg, grid, block.area, 2018, sign=signer(tag))
        assert found.sign.__name__ == "sign"
        n0 = len(calls)
        out = tmp_path / tag / "r000c000.tif"
        with rasterio.Env(**found.gdal_env):
            stats = composite_block(found.scenes, grid, block, out, CompositeParams(overviews=overviews),
                                    sign=found.sign, year=2018, log=lambda _: None)
        write_block_record(out.with_suffix(".json"), 2018, block, stats, "stac")
        assert len(calls) - n0 >= 2 * 8  # every file of both scenes opened through the hook
        with rasterio.open(out) as src:
            results[tag] = src.read()
        bytes_read[tag] = stac_api.cog_bytes(f"run={tag}")
        assert [s["decimation"] for s in stats.scenes] == ([4, 4] if overviews else [1, 1])
        rec = json.loads(out.with_suffix(".json").read_text())
        assert [s["decimation"] for s in rec["scenes"]] == [s["decimation"] for s in stats.scenes]

    # the hook replaced the SAS signer: no token asked for; every COG request went through it
    assert not any(p.startswith("/sas") for _, p, _ in stac_api.requests)
    cogs = [q for _, p, q in stac_api.requests if p.startswith("/cogs/")]
    assert cogs and all("run=" in q for q in cogs)
    assert {h for _, h in calls} == {h for s in found.scenes for _, h in s.bands} | {s.qa for s in found.scenes}

    ratio = bytes_read["full"] / bytes_read["ov"]
    print(f"COG bytes: overview {bytes_read['ov']}, full {bytes_read['full']}, ratio {ratio:.1f}")
    assert ratio >= 8, bytes_read

    ov, full = results["ov"], results["full"]
    for i, band in enumerate(("blue", "blue", "green", "red", None, "swir1", "swir2")):
        if band is None:
            continue
        for arr in (ov, full):
            assert np.allclose(arr[i][arr[-1] > 0], stored(band), atol=2e-6), band
    both = (ov[-1] > 0) & (full[-1] > 0)
    assert both.mean() > 0.9
    rmse = np.sqrt(np.mean((ov[:-1][:, both] - full[:-1][:, both]) ** 2))
    assert rmse < 5e-4, rmse
    # clear counts differ only along the cloud's edges (QA overview: nearest)
    assert np.mean(ov[-1] != full[-1]) < 0.02


def test_unsigned_reads_fail_naming_the_href_and_leave_nothing_finished(stac_api, land, tmp_path):
    _, grid, _ = land
    cfg = stac_config(land, stac_api.base, sign="none")
    block = grid_blocks(grid, 0)[0]
    found = stac_block_source(cfg, grid, block.area, 2018)
    out = tmp_path / "2018" / "r000c000.tif"
    qa = f"{stac_api.base}/cogs/{stac_api.nonce}/{OLI_ID}_QA_PIXEL.TIF"
    with pytest.raises(RasterFileError) as err, rasterio.Env(**found.gdal_env):
        composite_block(found.scenes, grid, block, out, CompositeParams(), sign=found.sign, year=2018)
    assert qa in str(err.value) and "403" in str(err.value)
    assert not out.exists()
    journal = out.parent / ".r000c000.journal"
    assert not [p.name for p in journal.glob("*") if p.suffix in (".tif", ".none")]
    cogs = [q for _, p, q in stac_api.requests if p.startswith("/cogs/")]
    assert cogs and not any("sig=" in q for q in cogs)



def test_unsigned_reads_fail_in_the_cli_naming_the_href(stac_api, land, tmp_path, capsys):
    from pandafine.cli import main

    _, grid, _ = land
    cfg_path = tmp_path / "cfg.yaml"
    cfg_path.write_text(yaml.safe_dump(stac_config(land, stac_api.base, sign="none")))
    grid.write_json(tmp_path / "grid.json")
    out = tmp_path / "cli" / "r000c000.tif"
    qa = f"{stac_api.base}/cogs/{stac_api.nonce}/{OLI_ID}_QA_PIXEL.TIF"
    capsys.readouterr()
    rc = main(["landsat-block", "--config", str(cfg_path), "--year", "2018", "--block", "r000c000",
               "--grid", str(tmp_path / "grid.json"), "--output", str(out)])
    err = capsys.readouterr().err
    assert rc != 0 and "403" in err
    assert not out.exists() and not out.with_suffix(".json").exists()
    assert qa in err, err


def test_unreachable_api_names_the_url(land, tmp_path, capsys):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    base = f"http://127.0.0.1:{port}/api/stac/v1"
    _, grid, _ = land
    cfg = stac_config(land, base)
    with pytest.raises(DownloadError) as err:
        stac_block_source(cfg, grid, (0, 0, grid.height, grid.width), 2018)
    assert base in str(err.value) and "refused" in str(err.value).lower()

    # the same through the CLI: exit status 2 and the URL on stderr, no output
    from pandafine.cli import main

    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    grid.write_json(tmp_path / "grid.json")
    out = tmp_path / "landsat" / "2018" / "r000c000.tif"
    capsys.readouterr()
    rc = main(["landsat-block", "--config", str(path), "--year", "2018", "--block", "r000c000",
               "--grid", str(tmp_path / "grid.json"), "--output", str(out)])
    assert rc == 2
    assert base in capsys.readouterr().err
    assert not out.exists()


def test_landsat_is_not_downloaded_as_a_layer(land, tmp_path):
    cfg = stac_config(land, "https://planetarycomputer.microsoft.com/api/stac/v1")
    for src in (cfg["sources"]["landsat"], {"kind": "local", "path": str(tmp_path)}):
        c = copy.deepcopy(cfg)
        c["sources"]["landsat"] = src
        with pytest.raises(ValueError, match="not downloaded as a layer.*pandafine landsat-block"):
            download_layer(c, "landsat", tmp_path / "raw", [2018])
    assert not (tmp_path / "raw").exists()


# --------------------------------------------------------------------------------------------- pure parts


def test_recorded_items_map_to_scene_assets(land):
    """A Planetary-Computer-like item: bands by sensor, non-band assets left alone, the full product id."""
    world = StacWorld(land[2], [], base="https://example.org")
    for sid, sensor, numbers in ((TM_ID, "TM", {"blue": 1, "nir": 4, "swir2": 7}),
                                 (OLI_ID, "OLI", {"coastal": 1, "blue": 2, "nir": 5, "swir2": 7})):
        item = world.item(SceneSpec(sid, "2000-01-01", 12.5))
        assert item["id"] != sid and "qa_radsat" in item["assets"] and "tilejson" in item["assets"]
        scene = scene_assets(plan_scene(item, 2000, "pc"))
        assert (scene.scene_id, scene.sensor, scene.cloud) == (sid, sensor, 12.5)
        assert scene.path_row == "127036"
        bands = scene.band_files
        assert set(bands) == set(numbers) | ({"green", "red", "swir1"})
        for name, n in numbers.items():
            assert bands[name].endswith(f"/{sid}_SR_B{n}.TIF")
        assert scene.qa.endswith(f"/{sid}_QA_PIXEL.TIF")
    assert CLOUD_QA & 0b11000  # the cloud rectangle's QA flags cloud


def test_footprint_holds_the_block(small_grid):
    area = (8, 16, 24, 32)
    poly = shape(footprint_lonlat(small_grid, area))
    to_ll = Transformer.from_crs(small_grid.crs, "EPSG:4326", always_xy=True)
    r0, c0, h, w = area
    rows, cols = np.mgrid[r0:r0 + h + 1:4, c0:c0 + w + 1:4]
    lon, lat = to_ll.transform(*(small_grid.transform * (cols.ravel(), rows.ravel())))
    assert all(poly.buffer(1e-7).covers(Point(x, y)) for x, y in zip(lon, lat))
    lon, lat = to_ll.transform(*(small_grid.transform * (c0 - 1, r0 - 1)))
    assert not poly.covers(Point(lon, lat))


def test_asset_resolution_per_provider_and_by_file_name():
    root = "s3://usgs-landsat/collection02/level-2/standard/tm/1990/127/036/" + TM_ID + "/"
    es = {"blue": root + TM_ID + "_SR_B1.TIF", "green": root + TM_ID + "_SR_B2.TIF", "red": root + TM_ID + "_SR_B3.TIF",
          "nir08": root + TM_ID + "_SR_B4.TIF", "swir16": root + TM_ID + "_SR_B5.TIF",
          "swir22": root + TM_ID + "_SR_B7.TIF", "qa_pixel": root + TM_ID + "_QA_PIXEL.TIF"}
    got = {part: key for part, key, _, _ in resolve_assets(es, "TM", "earth-search", "x")}
    assert got == {"SR_B1": "blue", "SR_B2": "green", "SR_B3": "red", "SR_B4": "nir08", "SR_B5": "swir16",
                   "SR_B7": "swir22", "QA_PIXEL": "qa_pixel"}
    # unknown keys: found by the Collection-2 file name in the href
    odd = {f"band{i}": h for i, h in enumerate(es.values())}
    got = {part: key for part, key, _, _ in resolve_assets(odd, "TM", "pc", "x")}
    assert got["SR_B4"] == "band3" and got["QA_PIXEL"] == "band6"
    # a key pointing to the wrong band's file is an error
    bad = dict(es, nir08=es["red"])
    with pytest.raises(ValueError, match="nir08.*SR_B3 file; expected SR_B4"):
        resolve_assets(bad, "TM", "earth-search", "x")
    # a missing band is an error naming it
    with pytest.raises(ValueError, match="no asset for TM swir2"):
        resolve_assets({k: v for k, v in es.items() if k != "swir22"}, "TM", "earth-search", "x")
    assert set(ASSET_KEYS["pc"]) == set(ASSET_KEYS["earth-search"])


def test_scene_ids_are_sanitized():
    href = f"https://x/{OLI_ID}_SR_B2.TIF?sig=1"
    assert scene_id_of("LC08_L2SP_127036_20180801_02_T1", [href]) == OLI_ID
    with pytest.raises(ValueError, match="not a safe file name"):
        scene_id_of("../../etc", ["https://x/a.tif"])
    with pytest.raises(ValueError, match="not a safe file name"):
        scene_id_of("LC08/../../x", ["https://x/a.tif"])
    item = {"id": "LC08_../../evil", "properties": {"eo:cloud_cover": 1},
            "assets": {k: {"href": f"https://x/{k}.tif"} for k in PC_KEYS.values()}}
    with pytest.raises(ValueError, match="not a safe file name"):
        plan_scene(item, 2018, "pc")
    assert plan_scene({"id": "LM05_L1TP_x", "assets": {}}, 1990, "pc") is None  # MSS: skipped


def test_keep_scenes():
    items = [{"id": "a", "properties": {"eo:cloud_cover": 70}}, {"id": "b", "properties": {"eo:cloud_cover": 5}},
             {"id": "c", "properties": {"eo:cloud_cover": 60}}, {"id": "d", "properties": {}}]
    assert [i["id"] for i in keep_scenes(items, 60, None)] == ["b", "c", "d"]
    assert [i["id"] for i in keep_scenes(items, 60, 1)] == ["b"]


def test_config_keys_are_validated(tiny_config):
    base = "https://planetarycomputer.microsoft.com/api/stac/v1"
    cfg = copy.deepcopy(tiny_config)
    cfg["sources"]["landsat"] = {"kind": "stac", "max_cloud": 40, "max_scenes": 3}
    p = StacParams.from_config(validate_config(cfg))
    assert (p.api, p.collection, p.sign, p.max_cloud, p.max_scenes) == (base, "landsat-c2-l2",
                                                                        "planetary-computer", 40.0, 3)
    assert p.provider == "pc"
    cfg["sources"]["landsat"] = {"kind": "stac", "api": "https://earth-search.aws.element84.com/v1"}
    p = StacParams.from_config(validate_config(cfg))
    assert (p.sign, p.provider, p.max_scenes) == ("none", "earth-search", None)
    for bad, pattern in (({"kind": "stac", "api": "http://example.org/stac"}, "sources.landsat.api.*allow_http"),
                         ({"kind": "stac", "max_cloud": 120}, "max_cloud"),
                         ({"kind": "stac", "max_scenes": 0}, "max_scenes"),
                         ({"kind": "stac", "resolution": 30}, "unknown key 'sources.landsat.resolution'"),
                         ({"kind": "stac", "sign": "maybe"}, "sources.landsat.sign"),
                         ({"kind": "stac", "colour": 1}, "unknown key 'sources.landsat.colour'")):
        cfg["sources"]["landsat"] = bad
        with pytest.raises(ConfigError, match=pattern):
            validate_config(cfg)
    cfg["sources"]["landsat"] = {"kind": "synthetic"}
    cfg["sources"]["panda"] = {"kind": "stac"}
    with pytest.raises(ConfigError, match="'stac' is available for landsat only"):
        validate_config(cfg)
