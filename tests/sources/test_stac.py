"""The ``stac`` Landsat source against a small STAC API answered on 127.0.0.1.

The responder answers the landing page, ``/collections/landsat-c2-l2``,
``/search`` (POST and GET), a fake Planetary Computer SAS token endpoint, and
serves tiny Collection-2-like COGs (with HTTP Range) that it refuses (403)
without the token when signing is required. Scenes: one TM 1990 (constant SR
bands, a ramp in the NIR band, a cloud rectangle in QA_PIXEL), one OLI 2018 and
one cloudy OLI 2018 (85 %) that the cloud filter must drop.
"""

from __future__ import annotations

import copy
import json
import re
import socket
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from pyproj import Transformer

from pandafine.config import ConfigError, validate_config
from pandafine.core.grid import grid_from_config
from pandafine.preprocess.calibrate import calibrate_landsat_scene
from pandafine.sensors.landsat import ROY2016_OLS, SR_OFFSET, SR_SCALE, band_numbers
from pandafine.sources.fetch import DownloadError
from pandafine.sources.manifest import read_manifest, sha256_file
from pandafine.sources.stac import (
    ASSET_KEYS,
    StacParams,
    download_stac,
    keep_scenes,
    plan_scene,
    resolve_assets,
    scene_grid,
    scene_id_of,
    subpixels_for,
)

# odc-geo 0.5.3 still calls shapely.ops.transform, deprecated in shapely 2.2
pytestmark = pytest.mark.filterwarnings("ignore:The 'shapely.ops.transform:DeprecationWarning")

UTM = "EPSG:32649"
RES = 30.0
TOKEN = "st=2024-01-01&se=2099-01-01&sp=rl&sig=FAKE%2Bsig"
CLEAR_QA = 21824  # clear + low confidences, as in real Collection-2 files
CLOUD_QA = 22280  # cloud + dilated cloud + high confidence
TM_ID = "LT05_L2SP_127036_19900712_20200916_02_T1"
OLI_ID = "LC08_L2SP_127036_20180801_20200831_02_T1"
CLOUDY_ID = "LC08_L2SP_127036_20180817_20200831_02_T1"
# surface reflectance of the constant bands
RHO = {"coastal": 0.04, "blue": 0.05, "green": 0.08, "red": 0.10, "nir": 0.30, "swir1": 0.20, "swir2": 0.12}
PC_KEYS = {"coastal": "coastal", "blue": "blue", "green": "green", "red": "red", "nir": "nir08",
           "swir1": "swir16", "swir2": "swir22"}


def dn_of(rho: float) -> int:
    return int(round((rho - SR_OFFSET) / SR_SCALE))


# --------------------------------------------------------------------------------------------- fixtures


def _scene_extent(bbox):
    """A UTM 49N 30 m grid covering bbox (degrees) plus ~1 km."""
    to_utm = Transformer.from_crs("EPSG:4326", UTM, always_xy=True)
    xs, ys = to_utm.transform([bbox[0], bbox[2], bbox[0], bbox[2]], [bbox[1], bbox[1], bbox[3], bbox[3]])
    x0 = np.floor((min(xs) - 1000) / RES) * RES
    y1 = np.ceil((max(ys) + 1000) / RES) * RES
    w = int(np.ceil((max(xs) + 1000 - x0) / RES))
    h = int(np.ceil((y1 - (min(ys) - 1000)) / RES))
    return Affine(RES, 0, x0, 0, -RES, y1), w, h


def _write_cog(path: Path, arr: np.ndarray, transform, nodata):
    with rasterio.open(path, "w", driver="COG", width=arr.shape[1], height=arr.shape[0], count=1,
                       dtype="uint16", crs=UTM, transform=transform, nodata=nodata, blocksize=256) as dst:
        dst.write(arr[None])


RAMP = (8000.0, 1.0)  # NIR DN of the TM scene = RAMP[0] + RAMP[1] * (easting - x0)


def _make_scene(root: Path, scene_id: str, sensor: str, transform, w, h, cloud_rect):
    """Write the COGs of one scene; return {band name or 'qa_pixel': file path}."""
    files = {}
    x0 = transform.c
    east = x0 + (np.arange(w) + 0.5) * RES
    for name, n in band_numbers(sensor).items():
        if sensor == "TM" and name == "nir":
            arr = np.broadcast_to(RAMP[0] + RAMP[1] * (east - x0), (h, w)).round().astype(np.uint16)
        else:
            arr = np.full((h, w), dn_of(RHO[name]), np.uint16)
        arr = arr.copy()
        arr[:, :3] = 0  # a fill strip at the western edge
        p = root / f"{scene_id}_SR_B{n}.TIF"
        _write_cog(p, arr, transform, 0)
        files[name] = p
    qa = np.full((h, w), CLEAR_QA, np.uint16)
    qa[:, :3] = 1
    if cloud_rect is not None:
        r0, r1, c0, c1 = cloud_rect
        qa[r0:r1, c0:c1] = CLOUD_QA
    p = root / f"{scene_id}_QA_PIXEL.TIF"
    _write_cog(p, qa, transform, 1)
    files["qa_pixel"] = p
    return files


class StacWorld:
    """The responder's state: items, files, and a log of requests."""

    def __init__(self, root: Path, bbox):
        self.root = root
        self.require_token = True
        self.requests: list[tuple[str, str, str]] = []  # (method, path, query)
        self.search_bodies: list[dict] = []
        self.transform, self.w, self.h = _scene_extent(bbox)
        self.cloud_rect = (self.h // 3, self.h // 2, self.w // 3, self.w // 2)
        self.base = ""
        self.scenes = {}
        for sid, sensor, date, cloud, rect in ((TM_ID, "TM", "1990-07-12", 10.0, self.cloud_rect),
                                               (OLI_ID, "OLI", "2018-08-01", 20.0, None),
                                               (CLOUDY_ID, "OLI", "2018-08-17", 85.0, None)):
            self.scenes[sid] = dict(sensor=sensor, date=date, cloud=cloud,
                                    files=_make_scene(root, sid, sensor, self.transform, self.w, self.h, rect))
        to_ll = Transformer.from_crs(UTM, "EPSG:4326", always_xy=True)
        t = self.transform
        xs = [t.c, t.c + self.w * RES]
        ys = [t.f - self.h * RES, t.f]
        lon, lat = to_ll.transform([xs[0], xs[1], xs[1], xs[0]], [ys[0], ys[0], ys[1], ys[1]])
        self.footprint = list(zip(lon, lat))

    def item(self, sid: str) -> dict:
        s = self.scenes[sid]
        pc_id = sid[:25] + sid[34:]  # Planetary Computer ids drop the processing date
        lons = [p[0] for p in self.footprint]
        lats = [p[1] for p in self.footprint]
        assets = {}
        for name, p in s["files"].items():
            key = "qa_pixel" if name == "qa_pixel" else PC_KEYS[name]
            assets[key] = {"href": f"{self.base}/cogs/{p.name}",
                           "type": "image/tiff; application=geotiff; profile=cloud-optimized", "roles": ["data"]}
        return {"type": "Feature", "stac_version": "1.0.0", "id": pc_id, "collection": "landsat-c2-l2",
                "bbox": [min(lons), min(lats), max(lons), max(lats)],
                "geometry": {"type": "Polygon", "coordinates": [[list(p) for p in self.footprint + self.footprint[:1]]]},
                "properties": {"datetime": f"{s['date']}T03:00:00Z", "eo:cloud_cover": s["cloud"],
                               "platform": "landsat-5" if s["sensor"] == "TM" else "landsat-8"},
                "assets": assets, "links": []}


class Responder(BaseHTTPRequestHandler):
    world: StacWorld

    def log_message(self, *a):  # quiet
        pass

    def _json(self, obj, code=200):
        body = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _route(self, method: str, body: dict | None = None):
        world = self.server.world
        parts = urllib.parse.urlsplit(self.path)
        world.requests.append((method, parts.path, parts.query))
        base = world.base
        if parts.path in ("/", ""):
            return self._json({
                "type": "Catalog", "id": "fake-stac", "stac_version": "1.0.0", "description": "test responder",
                "conformsTo": ["https://api.stacspec.org/v1.0.0/core", "https://api.stacspec.org/v1.0.0/item-search",
                               "https://api.stacspec.org/v1.0.0/item-search#query",
                               "https://api.stacspec.org/v1.0.0/collections"],
                "links": [{"rel": "self", "href": base + "/", "type": "application/json"},
                          {"rel": "root", "href": base + "/", "type": "application/json"},
                          {"rel": "data", "href": base + "/collections", "type": "application/json"},
                          {"rel": "search", "href": base + "/search", "type": "application/geo+json", "method": "GET"},
                          {"rel": "search", "href": base + "/search", "type": "application/geo+json",
                           "method": "POST"}]})
        if parts.path == "/collections/landsat-c2-l2":
            return self._json({"type": "Collection", "id": "landsat-c2-l2", "stac_version": "1.0.0",
                               "description": "fake", "license": "proprietary",
                               "extent": {"spatial": {"bbox": [[-180, -90, 180, 90]]},
                                          "temporal": {"interval": [["1982-08-22T00:00:00Z", None]]}},
                               "links": [{"rel": "self", "href": base + "/collections/landsat-c2-l2"},
                                         {"rel": "root", "href": base + "/"}]})
        if parts.path == "/search":
            if body is None:
                q = urllib.parse.parse_qs(parts.query)
                body = {k: v[0] for k, v in q.items()}
            world.search_bodies.append(body)
            dt = str(body.get("datetime", ""))
            year = int(dt[:4]) if dt[:4].isdigit() else None
            # the server ignores `query` on purpose: the client-side cloud filter must still apply
            feats = [world.item(sid) for sid, s in world.scenes.items() if year is None or s["date"].startswith(str(year))]
            return self._json({"type": "FeatureCollection", "features": feats,
                               "links": [{"rel": "root", "href": base + "/"}]})
        if parts.path == "/sas/landsat-c2-l2":
            return self._json({"msft:expiry": "2099-01-01T00:00:00Z", "token": TOKEN})
        if parts.path.startswith("/cogs/"):
            return self._file(method, parts)
        return self._json({"code": "NotFound"}, 404)

    def _file(self, method, parts):
        world = self.server.world
        if world.require_token and "sig=FAKE" not in parts.query:
            return self._json({"code": "AuthenticationFailed"}, 403)
        name = Path(urllib.parse.unquote(parts.path)).name
        p = world.root / name
        if not p.is_file():
            return self._json({"code": "NotFound"}, 404)
        data = p.read_bytes()
        start, end, code = 0, len(data) - 1, 200
        rng = self.headers.get("Range")
        if rng:
            m = re.fullmatch(r"bytes=(\d+)-(\d*)", rng.strip())
            start = int(m.group(1))
            end = min(int(m.group(2)) if m.group(2) else len(data) - 1, len(data) - 1)
            code = 206
        self.send_response(code)
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(end - start + 1))
        if code == 206:
            self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
        self.end_headers()
        if method == "GET":
            self.wfile.write(data[start:end + 1])

    def do_GET(self):
        try:
            self._route("GET")
        except Exception as exc:  # answer instead of leaving the client waiting
            self._json({"code": "ServerError", "description": repr(exc)}, 500)

    def do_HEAD(self):
        parts = urllib.parse.urlsplit(self.path)
        if parts.path.startswith("/cogs/"):
            return self._file("HEAD", parts)
        self._route("GET")

    def do_POST(self):
        n = int(self.headers.get("Content-Length", 0))
        self._route("POST", json.loads(self.rfile.read(n) or b"{}"))


@pytest.fixture()
def stac_api(tmp_path, tiny_config):
    cogs = tmp_path / "cogs"
    cogs.mkdir()
    world = StacWorld(cogs, tiny_config["region"]["bbox"])
    server = ThreadingHTTPServer(("127.0.0.1", 0), Responder)
    server.daemon_threads = True
    server.world = world
    world.base = f"http://127.0.0.1:{server.server_address[1]}"
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    yield world
    server.shutdown()
    server.server_close()


def stac_config(tiny_config, base: str, **landsat) -> dict:
    cfg = copy.deepcopy(tiny_config)
    cfg["run"].update(first_year=2018, last_year=2019, target_years=[2018])
    cfg["sources"]["landsat"] = {"kind": "stac", "api": base, "sign": "planetary-computer",
                                 "sas_url": base + "/sas", "max_cloud": 60, **landsat}
    cfg["download"] = {"allow_http": True, "retries": 0, "timeout": 10, "backoff": 0, "progress": False}
    return validate_config(cfg)


# --------------------------------------------------------------------------------------------- end to end


def test_stac_download_writes_scenes_on_the_working_grid(stac_api, tiny_config, tmp_path):
    cfg = stac_config(tiny_config, stac_api.base)
    out = tmp_path / "raw" / "landsat"
    manifest = download_stac(cfg, "landsat", out, [1990, 2018])
    grid = grid_from_config(cfg)

    # cloud filter: the 85 % scene is dropped although the server returned it; the query was sent too
    assert sorted(p.name for p in (out / "2018").iterdir()) == [OLI_ID]
    assert sorted(p.name for p in (out / "1990").iterdir()) == [TM_ID]  # full C2 id from the file names
    assert all(b.get("query") in ({"eo:cloud_cover": {"lte": 60.0}}, json.dumps({"eo:cloud_cover": {"lte": 60.0}}))
               for b in stac_api.search_bodies)
    assert not list(out.rglob(".*.part"))

    # every file of each scene, in the local layout, on a 31.25 m grid nested in the working grid
    tm_dir = out / "1990" / TM_ID
    names = sorted(p.name for p in tm_dir.iterdir())
    assert names == sorted([f"{TM_ID}_SR_B{n}.TIF" for n in (1, 2, 3, 4, 5, 7)] + [f"{TM_ID}_QA_PIXEL.TIF"])
    assert len(list((out / "2018" / OLI_ID).iterdir())) == 8
    with rasterio.open(tm_dir / f"{TM_ID}_SR_B1.TIF") as src:
        assert src.dtypes[0] == "uint16" and src.nodata == 0
        assert src.res == pytest.approx((31.25, 31.25))
        col = (src.transform.c - grid.transform.c) / 125.0
        row = (grid.transform.f - src.transform.f) / 125.0
        assert col == pytest.approx(round(col)) and row == pytest.approx(round(row))
        assert rasterio.crs.CRS.from_user_input(grid.crs) == src.crs
        blue = src.read(1)
        fine_t, shape = src.transform, src.shape
    valid = blue != 0
    assert valid.mean() > 0.9
    assert np.all(blue[valid] == dn_of(RHO["blue"]))  # constant reflectance round-trips exactly

    # NIR ramp: each fine pixel is the ramp at its centre (in UTM) within one source pixel
    with rasterio.open(tm_dir / f"{TM_ID}_SR_B4.TIF") as src:
        nir = src.read(1).astype(float)
    rows, cols = np.mgrid[0:shape[0], 0:shape[1]]
    xs, ys = fine_t * (cols + 0.5, rows + 0.5)
    east, _ = Transformer.from_crs(grid.crs, UTM, always_xy=True).transform(xs, ys)
    expect = RAMP[0] + RAMP[1] * (east - stac_api.transform.c)
    inner = (nir != 0) & (east > stac_api.transform.c + 6 * RES)
    assert inner.sum() > 1000
    assert np.abs(nir[inner] - expect[inner]).max() <= RAMP[1] * RES

    # QA: cloud inside the cloud rectangle (well inside it), clear well outside it
    with rasterio.open(tm_dir / f"{TM_ID}_QA_PIXEL.TIF") as src:
        qa = src.read(1)
        assert src.nodata == 1
    to_utm = Transformer.from_crs(grid.crs, UTM, always_xy=True)
    ex, ny = to_utm.transform(xs, ys)
    t = stac_api.transform
    c = (ex - t.c) / RES
    r = (t.f - ny) / RES
    r0, r1, c0, c1 = stac_api.cloud_rect
    inside = (r > r0 + 2) & (r < r1 - 2) & (c > c0 + 2) & (c < c1 - 2)
    outside = ((r < r0 - 2) | (r > r1 + 2) | (c < c0 - 2) | (c > c1 + 2)) & (c > 6) & (qa != 1)
    assert inside.sum() > 100 and outside.sum() > 1000
    assert np.all(qa[inside] == CLOUD_QA)
    assert np.all(qa[outside] == CLEAR_QA)

    # the manifest lists every file with its sha256 and the unsigned href
    doc = read_manifest(manifest)
    assert doc["source"] == "stac" and doc["layer"] == "landsat"
    files = {r["path"]: r for r in doc["files"]}
    assert len(files) == 7 + 8
    for rel, rec in files.items():
        assert rec["sha256"] == sha256_file(out / rel)
        assert rec["origin"].startswith(stac_api.base + "/cogs/") and "sig=" not in rec["origin"]

    # signing: every COG request carried the token; the token endpoint was asked
    cog_reqs = [q for m, p, q in stac_api.requests if p.startswith("/cogs/")]
    assert cog_reqs and all("sig=FAKE" in q for q in cog_reqs)
    assert any(p == "/sas/landsat-c2-l2" for _, p, _ in stac_api.requests)

    # the calibration stage reads the layout unchanged: constant bands give the harmonized reflectance
    cal = calibrate_landsat_scene(tm_dir, tmp_path / "cal.tif")
    with rasterio.open(cal) as src:
        rho = src.read()
    blue_h = RHO["blue"] * ROY2016_OLS["blue"][0] + ROY2016_OLS["blue"][1]
    ok = np.isfinite(rho[1])
    assert np.allclose(rho[1][ok], blue_h, atol=SR_SCALE)
    assert np.all(np.isnan(rho[1][inside]))  # cloud masked
    assert np.array_equal(rho[0], rho[1], equal_nan=True)  # coastal = harmonized blue for TM


def test_unsigned_reads_are_refused_and_leave_no_partial_scene(stac_api, tiny_config, tmp_path):
    cfg = stac_config(tiny_config, stac_api.base, sign="none")
    out = tmp_path / "raw" / "landsat"
    with pytest.raises(DownloadError) as err:
        download_stac(cfg, "landsat", out, [2018])
    msg = str(err.value)
    assert f"{stac_api.base}/cogs/{OLI_ID}_" in msg and "403" in msg
    assert not [p for p in out.rglob("*") if p.is_file()]
    assert not any(p.name.startswith(".") for p in out.rglob("*"))


def test_unreachable_api_names_the_url(tiny_config, tmp_path, capsys):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    base = f"http://127.0.0.1:{port}/api/stac/v1"
    cfg = stac_config(tiny_config, base)
    with pytest.raises(DownloadError) as err:
        download_stac(cfg, "landsat", tmp_path / "landsat", [2018])
    assert base in str(err.value) and "refused" in str(err.value).lower()
    assert not (tmp_path / "landsat").exists() or not any((tmp_path / "landsat").rglob("*"))

    # the same through the CLI: exit status 2 and the URL on stderr
    import yaml

    from pandafine.cli import main

    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    rc = main(["download", "--config", str(path), "--layer", "landsat", "--out", str(tmp_path / "cli")])
    assert rc == 2
    assert base in capsys.readouterr().err


# --------------------------------------------------------------------------------------------- pure parts


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
    with pytest.raises(ValueError, match="not a safe directory name"):
        scene_id_of("../../etc", ["https://x/a.tif"])
    with pytest.raises(ValueError, match="not a safe directory name"):
        scene_id_of("LC08/../../x", ["https://x/a.tif"])
    item = {"id": "LC08_../../evil", "properties": {"eo:cloud_cover": 1},
            "assets": {k: {"href": f"https://x/{k}.tif"} for k in list(PC_KEYS.values()) + ["qa_pixel"]}}
    with pytest.raises(ValueError, match="not a safe directory name"):
        plan_scene(item, 2018, "pc")
    assert plan_scene({"id": "LM05_L1TP_x", "assets": {}}, 1990, "pc") is None  # MSS: skipped


def test_keep_scenes_and_subpixels(small_grid):
    items = [{"id": "a", "properties": {"eo:cloud_cover": 70}}, {"id": "b", "properties": {"eo:cloud_cover": 5}},
             {"id": "c", "properties": {"eo:cloud_cover": 60}}, {"id": "d", "properties": {}}]
    assert [i["id"] for i in keep_scenes(items, 60, None)] == ["b", "c", "d"]
    assert [i["id"] for i in keep_scenes(items, 60, 1)] == ["b"]
    assert subpixels_for(125) == 4 and subpixels_for(125, 62.5) == 2 and subpixels_for(30) == 1
    with pytest.raises(ValueError, match="resolution"):
        subpixels_for(125, 30)
    fine = scene_grid((90, 10, 150, 60), small_grid, 4)  # covers the whole small grid
    assert (fine.width, fine.height) == (small_grid.width * 4, small_grid.height * 4)
    assert fine.transform.c == small_grid.transform.c and fine.pixel_size == 31.25
    assert scene_grid((0, 0, 1, 1), small_grid, 4) is None


def test_config_keys_are_validated(tiny_config):
    base = "https://planetarycomputer.microsoft.com/api/stac/v1"
    cfg = copy.deepcopy(tiny_config)
    cfg["sources"]["landsat"] = {"kind": "stac", "max_cloud": 40}
    p = StacParams.from_config(validate_config(cfg))
    assert (p.api, p.collection, p.sign, p.max_cloud, p.subpixels) == (base, "landsat-c2-l2",
                                                                       "planetary-computer", 40.0, 4)
    cfg["sources"]["landsat"] = {"kind": "stac", "api": "https://earth-search.aws.element84.com/v1"}
    assert StacParams.from_config(validate_config(cfg)).sign == "none"
    for bad, pattern in (({"kind": "stac", "api": "http://example.org/stac"}, "sources.landsat.api.*allow_http"),
                         ({"kind": "stac", "max_cloud": 120}, "max_cloud"),
                         ({"kind": "stac", "resolution": 30}, "sources.landsat.resolution"),
                         ({"kind": "stac", "sign": "maybe"}, "sources.landsat.sign"),
                         ({"kind": "stac", "colour": 1}, "unknown key 'sources.landsat.colour'")):
        cfg["sources"]["landsat"] = bad
        with pytest.raises(ConfigError, match=pattern):
            validate_config(cfg)
    cfg["sources"]["landsat"] = {"kind": "synthetic"}
    cfg["sources"]["panda"] = {"kind": "stac"}
    with pytest.raises(ConfigError, match="'stac' is available for landsat only"):
        validate_config(cfg)
