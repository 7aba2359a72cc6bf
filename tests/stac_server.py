"""A small STAC API answered on 127.0.0.1, with Collection-2-like COG assets (for tests and benchmarks).

:func:`write_scene_files` writes the COGs once (UTM 49N, 30 m, internal overviews 2, 4, ...: ``average``
for the SR bands, ``nearest`` for ``QA_PIXEL``; uncompressed, so the bytes served grow with the pixels
read). :func:`serve` answers them from a child process (a server in the reading process would share its
GIL with GDAL, which holds it during some reads: GDAL's request would then wait on a server that cannot
run). The scenes are :class:`SceneSpec`; their items are built like Planetary Computer's ``landsat-c2-l2``
items (ids without the processing date, ``eo:cloud_cover``, WRS-2 path/row, projection and raster
properties, band assets next to non-band ones). Routes:

* ``/`` (landing page, conformance incl. item-search and query), ``/collections/landsat-c2-l2``;
* ``/search`` (POST and GET): items of the collection whose geometry intersects ``intersects`` (or
  ``bbox``) and whose datetime lies in ``datetime``; ``query`` is ignored on purpose, so that the client's
  own cloud filter is what drops cloudy scenes;
* ``/sas/landsat-c2-l2``: a Planetary-Computer-like SAS token endpoint;
* ``/cogs/{nonce}/{file}``: the COGs with HTTP Range; refused (403) without the token while
  ``require_token`` is set. The nonce changes with every :meth:`StacServer.reset`, so GDAL's in-process
  ``/vsicurl/`` cache never answers a request with bytes fetched earlier;
* ``/_control`` (POST) and ``/_log`` (GET): :class:`StacServer`'s own (new scenes, the request log).

The log holds every request (``(method, path, query)``), every search body and every COG answer's body
size (``(path, query, bytes)``). Scenes with ``qa=None`` are *virtual*: items whose assets are not served.
"""

from __future__ import annotations

import json
import re
import threading
import urllib.parse
import uuid
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
from affine import Affine
from pyproj import Transformer

from pandafine.sensors.landsat import SR_OFFSET, SR_SCALE, band_numbers

UTM = "EPSG:32649"
RES = 30.0
TOKEN = "st=2024-01-01&se=2099-01-01&sp=rl&sig=FAKE%2Bsig"
CLEAR_QA = 21824  # clear + low confidences, as in real Collection-2 files
CLOUD_QA = 22280  # cloud + dilated cloud + high confidence
#: Surface reflectance of the constant bands (the NIR band is a ramp in easting, :data:`RAMP`).
RHO = {"coastal": 0.04, "blue": 0.05, "green": 0.08, "red": 0.10, "nir": 0.30, "swir1": 0.20, "swir2": 0.12}
#: NIR DN = RAMP[0] + RAMP[1] * (easting - scene's west edge), metres.
RAMP = (10000.0, 0.4)
#: Planetary Computer asset keys of the band names.
PC_KEYS = {"coastal": "coastal", "blue": "blue", "green": "green", "red": "red", "nir": "nir08",
           "swir1": "swir16", "swir2": "swir22", "qa_pixel": "qa_pixel"}
_TITLES = {"coastal": "Coastal/Aerosol Band (B1)", "blue": "Blue Band", "green": "Green Band", "red": "Red Band",
           "nir": "Near Infrared Band 0.8", "swir1": "Short-wave Infrared Band 1.6",
           "swir2": "Short-wave Infrared Band 2.2", "qa_pixel": "Pixel Quality Assessment Band"}
COG_TYPE = "image/tiff; application=geotiff; profile=cloud-optimized"


def dn_of(rho: float) -> int:
    """Collection-2 SR DN of reflectance ``rho``."""
    return int(round((rho - SR_OFFSET) / SR_SCALE))


# --------------------------------------------------------------------------------------------- the files


@dataclass(frozen=True)
class SceneFiles:
    """The COGs every served scene shares (one grid): a file per band name, a clear and a cloudy QA_PIXEL."""

    root: Path
    transform: Affine
    width: int
    height: int
    bands: dict[str, Path]
    qa: dict[str, Path]  # 'clear', 'cloud'
    cloud_rect: tuple[int, int, int, int]  # rows r0:r1, cols c0:c1 of the cloud in the 'cloud' QA

    @property
    def footprint(self) -> list[tuple[float, float]]:
        """The frame's corners in lon/lat (counter-clockwise from south-west)."""
        to_ll = Transformer.from_crs(UTM, "EPSG:4326", always_xy=True)
        t = self.transform
        xs = [t.c, t.c + self.width * RES]
        ys = [t.f - self.height * RES, t.f]
        lon, lat = to_ll.transform([xs[0], xs[1], xs[1], xs[0]], [ys[0], ys[0], ys[1], ys[1]])
        return list(zip(lon, lat))


def scene_frame(bbox_lonlat: Sequence[float], margin: float = 1000.0, size: int | None = None
                ) -> tuple[Affine, int, int]:
    """A UTM 49N 30 m frame covering ``bbox_lonlat`` (degrees) plus ``margin`` metres; with ``size``, a
    ``size`` x ``size`` px frame centred on it (``ValueError`` when that is too small)."""
    to_utm = Transformer.from_crs("EPSG:4326", UTM, always_xy=True)
    w, s, e, n = bbox_lonlat
    xs, ys = to_utm.transform([w, e, w, e], [s, s, n, n])
    x0, x1 = min(xs) - margin, max(xs) + margin
    y0, y1 = min(ys) - margin, max(ys) + margin
    if size is None:
        left, top = np.floor(x0 / RES) * RES, np.ceil(y1 / RES) * RES
        return Affine(RES, 0, left, 0, -RES, top), int(np.ceil((x1 - left) / RES)), int(np.ceil((top - y0) / RES))
    if size * RES < max(x1 - x0, y1 - y0):
        raise ValueError(f"a {size} px frame ({size * RES:g} m) cannot hold {x1 - x0:.0f} x {y1 - y0:.0f} m")
    left = np.floor(((x0 + x1) / 2 - size * RES / 2) / RES) * RES
    top = np.floor(((y0 + y1) / 2 + size * RES / 2) / RES) * RES
    return Affine(RES, 0, left, 0, -RES, top), size, size


def write_cog(path: Path, arr: np.ndarray, transform: Affine, nodata: int, resampling: str,
              blocksize: int = 256) -> Path:
    """An uncompressed uint16 COG with internal overviews (down to one block)."""
    import rasterio

    with rasterio.open(path, "w", driver="COG", width=arr.shape[1], height=arr.shape[0], count=1,
                       dtype="uint16", crs=UTM, transform=transform, nodata=nodata, blocksize=blocksize,
                       compress="NONE", overview_resampling=resampling) as dst:
        dst.write(arr[None])
    return path


def write_scene_files(root: Path, bbox_lonlat: Sequence[float], margin: float = 1000.0, size: int | None = 1024,
                      blocksize: int = 256) -> SceneFiles:
    """Write the band files: constant reflectance (:data:`RHO`) but a NIR ramp (:data:`RAMP`), fill (DN 0,
    QA 1) in the three westernmost columns; a clear QA and one with a cloud rectangle.

    The default 1024 px frame with 256 px tiles has overviews 2 and 4, the factor-4 one a single tile
    (:func:`scene_frame`: ``size`` None fits the frame to the bbox instead)."""
    root.mkdir(parents=True, exist_ok=True)
    transform, w, h = scene_frame(bbox_lonlat, margin, size)
    east = (np.arange(w) + 0.5) * RES
    bands = {}
    for name, rho in RHO.items():
        if name == "nir":
            arr = np.broadcast_to(RAMP[0] + RAMP[1] * east, (h, w)).round().astype(np.uint16).copy()
        else:
            arr = np.full((h, w), dn_of(rho), np.uint16)
        arr[:, :3] = 0
        bands[name] = write_cog(root / f"band_{name}.TIF", arr, transform, 0, "average", blocksize)
    rect = (h // 3, h // 2, w // 3, w // 2)
    qa = {}
    for kind in ("clear", "cloud"):
        arr = np.full((h, w), CLEAR_QA, np.uint16)
        arr[:, :3] = 1
        if kind == "cloud":
            arr[rect[0]:rect[1], rect[2]:rect[3]] = CLOUD_QA
        qa[kind] = write_cog(root / f"qa_{kind}.TIF", arr, transform, 1, "nearest", blocksize)
    return SceneFiles(root, transform, w, h, bands, qa, rect)


# --------------------------------------------------------------------------------------------- the items


@dataclass(frozen=True)
class SceneSpec:
    """One item of the world.

    ``scene_id`` is the full Collection-2 product id (the asset file names carry it; the item id drops the
    processing date, as on Planetary Computer). ``qa``: 'clear' or 'cloud' (served from
    :class:`SceneFiles`), or None for a virtual scene. ``footprint``: lon/lat ring (default: the files').
    """

    scene_id: str
    date: str  # YYYY-MM-DD
    cloud: float
    qa: str | None = "clear"
    footprint: tuple[tuple[float, float], ...] | None = None

    @property
    def sensor(self) -> str:
        return {"LT04": "TM", "LT05": "TM", "LE07": "ETM+"}.get(self.scene_id[:4], "OLI")

    @property
    def item_id(self) -> str:
        return self.scene_id[:25] + self.scene_id[34:]


@dataclass
class StacWorld:
    """The responder's state: the files, the scenes, and what was asked."""

    files: SceneFiles
    scenes: list[SceneSpec]
    require_token: bool = True
    base: str = ""
    nonce: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    requests: list[tuple[str, str, str]] = field(default_factory=list)
    search_bodies: list[dict] = field(default_factory=list)
    served: list[tuple[str, str, int]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    # ---- files

    def cog_href(self, name: str) -> str:
        return f"{self.base}/cogs/{self.nonce}/{name}"

    def _file_map(self) -> dict[str, Path]:
        out = {}
        for s in self.scenes:
            if s.qa is None:
                continue
            for name, n in band_numbers(s.sensor).items():
                out[f"{s.scene_id}_SR_B{n}.TIF"] = self.files.bands[name]
            out[f"{s.scene_id}_QA_PIXEL.TIF"] = self.files.qa[s.qa]
        return out

    def log(self) -> dict:
        with self.lock:
            return {"requests": list(self.requests), "search_bodies": list(self.search_bodies),
                    "served": list(self.served), "nonce": self.nonce, "base": self.base}

    def reset(self, scenes: Sequence[SceneSpec], require_token: bool) -> None:
        with self.lock:
            self.scenes = list(scenes)
            self.require_token = require_token
            self.nonce = uuid.uuid4().hex[:12]
            self.requests.clear()
            self.search_bodies.clear()
            self.served.clear()

    # ---- items

    def item(self, spec: SceneSpec) -> dict:
        """A Planetary-Computer-like ``landsat-c2-l2`` item."""
        ring = [list(p) for p in (spec.footprint or self.files.footprint)]
        lons, lats = [p[0] for p in ring], [p[1] for p in ring]
        sid, sensor = spec.scene_id, spec.sensor
        prefix = f"{self.base}/cogs/{self.nonce}/{sid}"
        raster = {"scale": 2.75e-05, "offset": -0.2, "nodata": 0, "data_type": "uint16", "spatial_resolution": 30}
        assets = {}
        for name, n in band_numbers(sensor).items():
            assets[PC_KEYS[name]] = {"href": f"{prefix}_SR_B{n}.TIF", "type": COG_TYPE, "title": _TITLES[name],
                                     "roles": ["data", "reflectance"], "raster:bands": [raster],
                                     "eo:bands": [{"name": f"SR_B{n}", "common_name": name}]}
        assets["qa_pixel"] = {"href": f"{prefix}_QA_PIXEL.TIF", "type": COG_TYPE, "title": _TITLES["qa_pixel"],
                              "roles": ["cloud", "cloud-shadow", "snow-ice", "water-mask"],
                              "raster:bands": [{"unit": "bit index", "nodata": 1, "data_type": "uint16"}]}
        # non-band assets the resolver must leave alone
        assets["qa_radsat"] = {"href": f"{prefix}_QA_RADSAT.TIF", "type": COG_TYPE, "roles": ["saturation"]}
        assets["lwir11" if sensor == "OLI" else "lwir"] = {
            "href": f"{prefix}_ST_B{10 if sensor == 'OLI' else 6}.TIF", "type": COG_TYPE, "roles": ["temperature"]}
        assets["mtl.json"] = {"href": f"{prefix}_MTL.json", "type": "application/json", "roles": ["metadata"]}
        assets["tilejson"] = {"href": f"{self.base}/data/item/tilejson.json?collection=landsat-c2-l2&item="
                                      f"{spec.item_id}", "type": "application/json", "roles": ["tiles"]}
        path, row = sid[10:13], sid[13:16]
        platform = {"LT04": "landsat-4", "LT05": "landsat-5", "LE07": "landsat-7", "LC08": "landsat-8",
                    "LC09": "landsat-9"}[sid[:4]]
        t = self.files.transform
        return {
            "type": "Feature", "stac_version": "1.0.0",
            "stac_extensions": ["https://stac-extensions.github.io/eo/v1.0.0/schema.json",
                                "https://stac-extensions.github.io/projection/v1.0.0/schema.json",
                                "https://stac-extensions.github.io/raster/v1.0.0/schema.json",
                                "https://landsat.usgs.gov/stac/landsat-extension/v1.1.1/schema.json"],
            "id": spec.item_id, "collection": "landsat-c2-l2",
            "bbox": [min(lons), min(lats), max(lons), max(lats)],
            "geometry": {"type": "Polygon", "coordinates": [ring + ring[:1]]},
            "properties": {"datetime": f"{spec.date}T03:12:45.123456Z", "platform": platform,
                           "instruments": ["tm"] if sensor == "TM" else ["etm+"] if sensor == "ETM+" else
                           ["oli", "tirs"], "eo:cloud_cover": spec.cloud, "landsat:cloud_cover_land": spec.cloud,
                           "landsat:wrs_type": "2", "landsat:wrs_path": path, "landsat:wrs_row": row,
                           "landsat:collection_category": sid[-2:], "landsat:collection_number": "02",
                           "landsat:correction": "L2SP", "proj:epsg": 32649,
                           "proj:shape": [self.files.height, self.files.width],
                           "proj:transform": [t.a, t.b, t.c, t.d, t.e, t.f], "gsd": 30,
                           "view:sun_elevation": 60.1, "view:sun_azimuth": 110.2, "view:off_nadir": 0},
            "assets": assets,
            "links": [{"rel": "collection", "href": f"{self.base}/collections/landsat-c2-l2",
                       "type": "application/json"},
                      {"rel": "self", "href": f"{self.base}/collections/landsat-c2-l2/items/{spec.item_id}",
                       "type": "application/geo+json"}]}

    def search(self, body: dict) -> list[dict]:
        """Items matching ``collections``, ``intersects`` / ``bbox`` and ``datetime`` (``query`` ignored)."""
        from shapely.geometry import box, shape

        cols = body.get("collections")
        if isinstance(cols, str):
            cols = cols.split(",")
        if cols and "landsat-c2-l2" not in cols:
            return []
        where = None
        if body.get("intersects"):
            g = body["intersects"]
            where = shape(json.loads(g) if isinstance(g, str) else g)
        elif body.get("bbox"):
            b = body["bbox"]
            where = box(*([float(v) for v in b.split(",")] if isinstance(b, str) else b))
        lo = hi = None
        if body.get("datetime"):
            parts = str(body["datetime"]).split("/")
            lo, hi = (_instant(parts[0]), _instant(parts[-1]))
        out = []
        for s in self.scenes:
            it = self.item(s)
            when = _instant(it["properties"]["datetime"])
            if lo is not None and not (lo <= when <= hi):
                continue
            if where is not None and not where.intersects(shape(it["geometry"])):
                continue
            out.append(it)
        return out


def _instant(text: str) -> datetime:
    if text in ("..", ""):
        return datetime.max.replace(tzinfo=timezone.utc)
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


# --------------------------------------------------------------------------------------------- the server


class Responder(BaseHTTPRequestHandler):
    """Answers a :class:`StacWorld` (``self.server.world``)."""

    def log_message(self, *a):  # quiet
        pass

    def _json(self, obj, code=200, ctype="application/json"):
        body = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _route(self, method: str, body: dict | None = None):
        world: StacWorld = self.server.world
        parts = urllib.parse.urlsplit(self.path)
        if not parts.path.startswith("/_"):
            with world.lock:
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
                body = {k: v[0] for k, v in urllib.parse.parse_qs(parts.query).items()}
            with world.lock:
                world.search_bodies.append(body)
            return self._json({"type": "FeatureCollection", "features": world.search(body),
                               "links": [{"rel": "root", "href": base + "/"}]}, ctype="application/geo+json")
        if parts.path == "/_log":
            return self._json(world.log())
        if parts.path == "/_control" and body is not None:
            world.reset([SceneSpec(**{**d, "footprint": tuple(map(tuple, d["footprint"])) if d.get("footprint")
                                      else None}) for d in body["scenes"]], bool(body["require_token"]))
            return self._json(world.log())
        if parts.path == "/sas/landsat-c2-l2":
            return self._json({"msft:expiry": "2099-01-01T00:00:00Z", "token": TOKEN})
        if parts.path.startswith("/cogs/"):
            return self._file(method, parts)
        return self._json({"code": "NotFound"}, 404)

    def _file(self, method, parts):
        world: StacWorld = self.server.world
        if world.require_token and "sig=FAKE" not in parts.query:
            return self._json({"code": "AuthenticationFailed", "description": "Server failed to authenticate "
                                                                            "the request (no SAS token)"}, 403)
        segs = urllib.parse.unquote(parts.path).split("/")
        p = world._file_map().get(segs[-1]) if len(segs) == 4 and segs[2] == world.nonce else None
        if p is None:
            return self._json({"code": "BlobNotFound"}, 404)
        size = p.stat().st_size
        start, end, code = 0, size - 1, 200
        rng = self.headers.get("Range")
        if rng:
            m = re.fullmatch(r"bytes=(\d+)-(\d*)", rng.strip())
            if m is None:  # multi-range: not offered (as on Azure blobs), answer the first range's start onward
                m = re.match(r"bytes=(\d+)-(\d*)", rng.strip())
            start = int(m.group(1))
            end = min(int(m.group(2)) if m.group(2) else size - 1, size - 1)
            code = 206
        self.send_response(code)
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Type", "image/tiff")
        self.send_header("Content-Length", str(end - start + 1))
        if code == 206:
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.end_headers()
        if method == "GET":
            with open(p, "rb") as f:
                f.seek(start)
                data = f.read(end - start + 1)
            self.wfile.write(data)
            with world.lock:
                world.served.append((parts.path, parts.query, len(data)))

    def do_GET(self):
        try:
            self._route("GET")
        except Exception as exc:  # answer instead of leaving the client waiting
            self._json({"code": "ServerError", "description": repr(exc)}, 500)

    def do_HEAD(self):
        parts = urllib.parse.urlsplit(self.path)
        if parts.path.startswith("/cogs/"):
            world: StacWorld = self.server.world
            with world.lock:
                world.requests.append(("HEAD", parts.path, parts.query))
            return self._file("HEAD", parts)
        self._route("GET")

    def do_POST(self):
        n = int(self.headers.get("Content-Length", 0))
        try:
            self._route("POST", json.loads(self.rfile.read(n) or b"{}"))
        except Exception as exc:
            self._json({"code": "ServerError", "description": repr(exc)}, 500)


def _serve_forever(files: SceneFiles, conn) -> None:
    """The child process: answer a :class:`StacWorld` until terminated; send the port first."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), Responder)
    server.daemon_threads = True
    server.request_queue_size = 64
    world = StacWorld(files, [])
    world.base = f"http://127.0.0.1:{server.server_address[1]}"
    server.world = world
    conn.send(world.base)
    conn.close()
    server.serve_forever()


class StacServer:
    """The parent's handle on a responder process: its URL, its scenes and what it was asked."""

    def __init__(self, base: str, process):
        self.base = base
        self.process = process
        self.nonce = ""

    def _call(self, path: str, body: dict | None = None) -> dict:
        import urllib.request

        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base + path, data=data, headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as resp:
            return json.loads(resp.read())

    def reset(self, scenes: Sequence[SceneSpec], require_token: bool = True) -> "StacServer":
        """Serve ``scenes`` from now on, under a new COG nonce; the log starts empty."""
        doc = [asdict(s) for s in scenes]
        self.nonce = self._call("/_control", {"scenes": doc, "require_token": require_token})["nonce"]
        return self

    def cog_href(self, name: str) -> str:
        return f"{self.base}/cogs/{self.nonce}/{name}"

    @property
    def requests(self) -> list[tuple[str, str, str]]:
        return [tuple(r) for r in self._call("/_log")["requests"]]

    @property
    def search_bodies(self) -> list[dict]:
        return self._call("/_log")["search_bodies"]

    @property
    def served(self) -> list[tuple[str, str, int]]:
        return [tuple(r) for r in self._call("/_log")["served"]]

    def cog_bytes(self, marker: str = "") -> int:
        """Body bytes served for COG GETs whose query contains ``marker``."""
        return sum(n for _, q, n in self.served if marker in q)

    def close(self) -> None:
        self.process.terminate()
        self.process.join(10)


@contextmanager
def serve(files: SceneFiles, scenes: Sequence[SceneSpec] = (), require_token: bool = True) -> Iterator[StacServer]:
    """Answer ``scenes`` on 127.0.0.1 (a free port) from a child process while the block runs."""
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_serve_forever, args=(files, child), daemon=True)
    proc.start()
    child.close()
    try:
        if not parent.poll(60):
            raise RuntimeError("the STAC responder process did not start within 60 s")
        server = StacServer(parent.recv(), proc)
        server.reset(scenes, require_token)
        yield server
    finally:
        proc.terminate()
        proc.join(10)
