"""The ``stac`` source: Landsat Collection-2 Level-2 scenes from a STAC API, read onto the working grid.

For every year of the run, the STAC API at ``sources.landsat.api`` is searched
(pystac-client) for items of ``sources.landsat.collection`` (default
``landsat-c2-l2``) intersecting ``region.bbox`` with ``eo:cloud_cover`` at most
``sources.landsat.max_cloud`` percent. Each scene's surface-reflectance bands
and ``QA_PIXEL`` are read with odc-stac (dask, chunk by chunk) onto a grid
aligned with the working grid, in its CRS, with pixels ``pixel_size / k``
(``sources.landsat.resolution``, default the divisor of the working pixel
closest to Landsat's 30 m: 31.25 m for 125 m), cropped to the scene's footprint;
SR bands use ``average`` resampling (fill excluded), ``QA_PIXEL`` ``nearest``.

The files are written in the layout of the ``local`` source (docs/contracts.md)::

    {year}/{scene_id}/{scene_id}_SR_B{n}.TIF    uint16, nodata 0
    {year}/{scene_id}/{scene_id}_QA_PIXEL.TIF   uint16, nodata 1 (fill bit)

with the band numbers of the scene's sensor (TM/ETM+: 1,2,3,4,5,7; OLI: 1..7),
so calibration and compositing are the same code as for local scenes. A scene
directory appears only when all its files are complete (it is written under a
temporary name and renamed); every file's sha256 and its asset href (unsigned)
go into the layer's ``manifest.json``.

Providers
---------
* Microsoft Planetary Computer (default API): asset hrefs are signed with a SAS
  token from ``https://planetarycomputer.microsoft.com/api/sas/v1/token/{collection}``
  (a plain HTTP GET; tokens are cached and renewed before they expire).
* Earth Search (``api: https://earth-search.aws.element84.com/v1``): no signing.
  Asset keys are resolved per provider (:data:`ASSET_KEYS`), and checked against,
  or else found by, the Collection-2 file name in the href (``..._SR_B4.TIF``).
  Its Landsat hrefs may point to the requester-pays ``usgs-landsat`` bucket
  (``s3://``); GDAL then needs AWS credentials and ``AWS_REQUEST_PAYER=requester``
  in the environment.
"""

from __future__ import annotations

import json
import logging
import math
import re
import shutil
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from pandafine.core.faults import gdal_write_errors
from pandafine.core.grid import Grid, grid_from_config
from pandafine.core.windows import grid_window_of
from pandafine.sensors.landsat import MISSION_SENSOR, band_numbers
from pandafine.sources.fetch import DownloadError, HttpPolicy, check_url, safe_join
from pandafine.sources.http import policy_from_config
from pandafine.sources.manifest import write_manifest

log = logging.getLogger(__name__)

PLANETARY_COMPUTER_API = "https://planetarycomputer.microsoft.com/api/stac/v1"
PLANETARY_COMPUTER_SAS = "https://planetarycomputer.microsoft.com/api/sas/v1/token"
EARTH_SEARCH_API = "https://earth-search.aws.element84.com/v1"
DEFAULT_COLLECTION = "landsat-c2-l2"
DEFAULT_MAX_CLOUD = 60.0
#: Landsat's native pixel size (m): the default fine resolution is the divisor of the working pixel closest to it.
LANDSAT_PIXEL = 30.0
SIGN_MODES = ("auto", "planetary-computer", "none")
#: Renew a SAS token this many seconds before it expires.
TOKEN_MARGIN_S = 300.0

#: Candidate asset keys of every band name, per provider ("pc", "earth-search"); first present wins.
#: The SR band *number* behind a key depends on the sensor (TM "blue" is SR_B1, OLI "blue" SR_B2);
#: the href's Collection-2 file name is checked against the number expected.
ASSET_KEYS: dict[str, dict[str, tuple[str, ...]]] = {
    "pc": {"coastal": ("coastal",), "blue": ("blue",), "green": ("green",), "red": ("red",),
           "nir": ("nir08",), "swir1": ("swir16",), "swir2": ("swir22",), "qa_pixel": ("qa_pixel",)},
    "earth-search": {"coastal": ("coastal", "SR_B1"), "blue": ("blue",), "green": ("green",), "red": ("red",),
                     "nir": ("nir08", "nir"), "swir1": ("swir16", "swir1"), "swir2": ("swir22", "swir2"),
                     "qa_pixel": ("qa_pixel", "QA_PIXEL")},
}

_SCENE_ID = re.compile(r"^L[CEOT]0\d_L2S[PR]_\d{6}_\d{8}_\d{8}_\d{2}_(T1|T2|RT)$")
_FILE_PART = re.compile(r"_(SR_B\d|QA_PIXEL)\.TIF$", re.IGNORECASE)
_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


# --------------------------------------------------------------------------------------------
# parameters
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class StacParams:
    """The ``stac`` source settings of ``sources.landsat``.

    Attributes
    ----------
    api : str
        STAC API root URL.
    collection : str
        Collection id (``landsat-c2-l2`` on both Planetary Computer and Earth Search).
    max_cloud : float
        Largest ``eo:cloud_cover`` (percent) of a scene kept.
    sign : {'planetary-computer', 'none'}
        Asset signing (``auto`` in the config resolves to planetary-computer for
        the Planetary Computer host, else none).
    sas_url : str
        Token endpoint; the collection id is appended.
    max_scenes : int or None
        Keep at most this many scenes per year (least cloudy first).
    subpixels : int
        Working pixel / fine pixel ratio ``k``; scenes are read at ``pixel_size / k``.
    """

    api: str = PLANETARY_COMPUTER_API
    collection: str = DEFAULT_COLLECTION
    max_cloud: float = DEFAULT_MAX_CLOUD
    sign: str = "planetary-computer"
    sas_url: str = PLANETARY_COMPUTER_SAS
    max_scenes: int | None = None
    subpixels: int = 4

    @property
    def provider(self) -> str:
        """``'pc'`` for the Planetary Computer host, else ``'earth-search'`` (its key table also covers others)."""
        host = (urllib.parse.urlsplit(self.api).hostname or "").lower()
        return "pc" if host.endswith("planetarycomputer.microsoft.com") else "earth-search"

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> "StacParams":
        """Settings from a config's ``sources.landsat`` and ``grid.pixel_size``; ``ValueError`` names the key."""
        src = cfg["sources"]["landsat"]
        api = str(src.get("api", PLANETARY_COMPUTER_API)).rstrip("/")
        sign = src.get("sign", "auto")
        if sign not in SIGN_MODES:
            raise ValueError(f"key 'sources.landsat.sign': value {sign!r} is not one of {', '.join(SIGN_MODES)}")
        if sign == "auto":
            host = (urllib.parse.urlsplit(api).hostname or "").lower()
            sign = "planetary-computer" if host.endswith("planetarycomputer.microsoft.com") else "none"
        max_cloud = float(src.get("max_cloud", DEFAULT_MAX_CLOUD))
        if not 0 <= max_cloud <= 100:
            raise ValueError(f"key 'sources.landsat.max_cloud': value {max_cloud:g} must be within 0..100 (percent)")
        return cls(api=api, collection=str(src.get("collection", DEFAULT_COLLECTION)), max_cloud=max_cloud,
                   sign=sign, sas_url=str(src.get("sas_url", PLANETARY_COMPUTER_SAS)).rstrip("/"),
                   max_scenes=src.get("max_scenes"),
                   subpixels=subpixels_for(float(cfg["grid"]["pixel_size"]), src.get("resolution")))


def subpixels_for(pixel_size: float, resolution: float | None = None) -> int:
    """Number ``k`` of fine pixels per working pixel (along each axis) for reading scenes.

    ``resolution`` (metres) must divide ``pixel_size``; without it, the ``k``
    whose ``pixel_size / k`` is closest to Landsat's 30 m.
    """
    if resolution is None:
        return max(1, round(pixel_size / LANDSAT_PIXEL))
    if not resolution > 0:
        raise ValueError(f"key 'sources.landsat.resolution': value {resolution!r} must be > 0 (metres)")
    k = round(pixel_size / resolution)
    if k < 1 or abs(pixel_size / k - resolution) > 1e-6 * resolution:
        raise ValueError(f"key 'sources.landsat.resolution': value {resolution:g} must divide grid.pixel_size="
                         f"{pixel_size:g} a whole number of times (e.g. {pixel_size / max(1, k):g})")
    return k


def check_stac_source(layer: str, cfg: Mapping[str, Any], allow_http: bool = False) -> list[str]:
    """Problems of a ``stac`` source config as config-error messages (empty when fine)."""
    key = f"sources.{layer}"
    if layer != "landsat":
        return [f"key '{key}.kind': value 'stac' is available for landsat only"]
    try:
        params = StacParams.from_config(cfg)
    except (ValueError, TypeError) as exc:
        return [str(exc)]
    msgs = []
    policy = HttpPolicy(allow_http=allow_http)
    for name, url in (("api", params.api), ("sas_url", params.sas_url)):
        if name == "sas_url" and params.sign != "planetary-computer":
            continue
        try:
            check_url(url, policy)
        except ValueError as exc:
            msgs.append(f"key '{key}.{name}': {exc}")
    if not re.fullmatch(r"[A-Za-z0-9._-]+", params.collection):
        msgs.append(f"key '{key}.collection': value {params.collection!r} is not a STAC collection id")
    return msgs


# --------------------------------------------------------------------------------------------
# asset signing (Planetary Computer SAS tokens)
# --------------------------------------------------------------------------------------------

class SasSigner:
    """Append a Planetary Computer SAS token to https asset hrefs (tokens cached until near expiry).

    Parameters
    ----------
    token_url : str
        ``{sas_url}/{collection}``; answers ``{"token": "...", "msft:expiry": "...Z"}``.
    policy : HttpPolicy
        Timeout, retries, backoff and the http/https rule.
    """

    def __init__(self, token_url: str, policy: HttpPolicy):
        check_url(token_url, policy)
        self.token_url = token_url
        self.policy = policy
        self._token: str | None = None
        self._expiry = 0.0

    def token(self) -> str:
        """A valid token, fetched when none is cached or the cached one is about to expire."""
        if self._token is None or time.time() > self._expiry - TOKEN_MARGIN_S:
            self._token, self._expiry = self._fetch()
        return self._token

    def _fetch(self) -> tuple[str, float]:
        last = ""
        for attempt in range(self.policy.retries + 1):
            if attempt:
                time.sleep(self.policy.delay(attempt))
            try:
                req = urllib.request.Request(self.token_url, headers={"User-Agent": "pandafine-downloader"})
                with urllib.request.urlopen(req, timeout=self.policy.timeout) as resp:
                    doc = json.loads(resp.read())
                break
            except urllib.error.HTTPError as exc:
                last = f"HTTP {exc.code} {exc.reason}"
                if exc.code < 500 and exc.code not in (408, 429):
                    raise DownloadError(self.token_url, f"SAS token request refused: {last}") from None
            except (urllib.error.URLError, OSError) as exc:
                last = f"connection error: {getattr(exc, 'reason', exc)}"
            except ValueError as exc:
                raise DownloadError(self.token_url, f"SAS token answer is not JSON ({exc})") from None
        else:
            raise DownloadError(self.token_url, f"SAS token request failed after "
                                                f"{self.policy.retries + 1} attempt(s): {last}")
        token = doc.get("token") if isinstance(doc, dict) else None
        if not token or not isinstance(token, str):
            raise DownloadError(self.token_url, f"SAS token answer has no 'token' (keys: {sorted(doc)})")
        expiry = doc.get("msft:expiry")
        try:
            exp = datetime.fromisoformat(expiry.replace("Z", "+00:00")).timestamp() if expiry else math.inf
        except (AttributeError, ValueError):
            exp = time.time() + 600.0
        return token.lstrip("?"), exp

    def __call__(self, href: str) -> str:
        """``href`` with the token as query (hrefs that already carry a signature are left alone)."""
        parts = urllib.parse.urlsplit(href)
        if parts.scheme not in ("http", "https") or "sig=" in parts.query:
            return href
        query = f"{parts.query}&{self.token()}" if parts.query else self.token()
        return urllib.parse.urlunsplit(parts._replace(query=query))


def unsigned(href: str) -> str:
    """``href`` without its query string (what goes into the manifest and error messages)."""
    return urllib.parse.urlunsplit(urllib.parse.urlsplit(href)._replace(query=""))


# --------------------------------------------------------------------------------------------
# pure planning: which assets of an item, which scene id, which grid
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ScenePlan:
    """What to read for one item: file name (in the scene directory) -> (asset key, href, kind)."""

    item_id: str
    scene_id: str
    sensor: str
    year: int
    cloud: float
    files: tuple[tuple[str, str, str, str], ...]  # (file name, asset key, href, 'sr' | 'qa')


def _href_part(href: str) -> str | None:
    m = _FILE_PART.search(urllib.parse.urlsplit(href).path)
    return m.group(1).upper() if m else None


def _product_id_from_hrefs(hrefs: Sequence[str]) -> str | None:
    for h in hrefs:
        name = urllib.parse.unquote(urllib.parse.urlsplit(h).path.rsplit("/", 1)[-1])
        m = _FILE_PART.search(name)
        if m and _SCENE_ID.match(name[:m.start()]):
            return name[:m.start()]
    return None


def scene_id_of(item_id: str, hrefs: Sequence[str]) -> str:
    """The scene directory name: the full Collection-2 product id from the asset file names when present
    (Planetary Computer item ids drop the processing date), else the item id; refused when unsafe."""
    sid = _product_id_from_hrefs(hrefs) or item_id
    if not _SAFE_ID.match(sid) or sid in (".", ".."):
        raise ValueError(f"STAC item {item_id!r}: scene id {sid!r} is not a safe directory name "
                         "(letters, digits, '_', '.', '-' only)")
    return sid


def resolve_assets(assets: Mapping[str, str], sensor: str, provider: str, where: str) -> list[tuple[str, str, str, str]]:
    """Map an item's assets (key -> href) to the scene's files.

    Returns ``[(file suffix, asset key, href, kind)]`` with suffix ``SR_B{n}`` for
    every band of ``sensor`` and ``QA_PIXEL``. A key from :data:`ASSET_KEYS` is
    used when present (and its href's Collection-2 file name, if it has one, must
    name the expected band); otherwise the asset whose href ends in
    ``_SR_B{n}.TIF`` / ``_QA_PIXEL.TIF``. Raises ``ValueError`` naming ``where``
    and the missing band.
    """
    table = ASSET_KEYS[provider]
    wanted = [(f"SR_B{n}", name, "sr") for name, n in band_numbers(sensor).items()]
    wanted.append(("QA_PIXEL", "qa_pixel", "qa"))
    by_part = {}
    for key, href in assets.items():
        part = _href_part(href)
        if part:
            by_part.setdefault(part, (key, href))
    out = []
    for part, name, kind in wanted:
        hit = next(((k, assets[k]) for k in table[name] if k in assets), None)
        if hit is not None:
            found = _href_part(hit[1])
            if found is not None and found != part:
                raise ValueError(f"{where}: asset {hit[0]!r} ({sensor} {name}) points to {unsigned(hit[1])}, "
                                 f"a {found} file; expected {part}")
        else:
            hit = by_part.get(part)
        if hit is None:
            raise ValueError(f"{where}: no asset for {sensor} {name} ({part}); looked for keys "
                             f"{list(table[name])} and an href ending in _{part}.TIF (assets: {sorted(assets)})")
        out.append((part, hit[0], hit[1], kind))
    return out


def plan_scene(item: Mapping[str, Any], year: int, provider: str) -> ScenePlan | None:
    """The :class:`ScenePlan` of a STAC item (as a dict), or None for a non-Landsat-4..9 platform."""
    item_id = str(item.get("id", ""))
    where = f"STAC item {item_id!r}"
    prefix = item_id[:4].upper()
    sensor = MISSION_SENSOR.get(prefix)
    if sensor is None:
        log.warning("%s: not a Landsat 4/5/7/8/9 scene id (prefix %r); skipped", where, prefix)
        return None
    assets = {str(k): str(v.get("href", "")) for k, v in (item.get("assets") or {}).items()}
    files = resolve_assets(assets, sensor, provider, where)
    scene_id = scene_id_of(item_id, [h for _, _, h, _ in files])
    if scene_id[:4].upper() != prefix:
        raise ValueError(f"{where}: asset files name scene {scene_id!r} of another mission")
    cloud = float((item.get("properties") or {}).get("eo:cloud_cover", math.nan))
    return ScenePlan(item_id, scene_id, sensor, year, cloud,
                     tuple((f"{scene_id}_{part}.TIF", key, href, kind) for part, key, href, kind in files))


def keep_scenes(items: Sequence[Mapping[str, Any]], max_cloud: float, max_scenes: int | None) -> list[Mapping[str, Any]]:
    """Items with ``eo:cloud_cover <= max_cloud`` (items without it are kept), least cloudy first, capped."""
    def cloud(it):
        v = (it.get("properties") or {}).get("eo:cloud_cover")
        return math.inf if v is None else float(v)

    kept = [it for it in items if cloud(it) == math.inf or cloud(it) <= max_cloud]
    kept.sort(key=lambda it: (cloud(it), str(it.get("id"))))
    return kept[:max_scenes] if max_scenes else kept


def scene_grid(bbox_lonlat: Sequence[float], grid: Grid, subpixels: int) -> Grid | None:
    """The fine grid (``grid`` pixels split ``subpixels`` ways) covering a footprint bbox, or None if disjoint.

    The block is snapped outward to whole working pixels, so the fine pixels of
    a scene nest exactly in working-grid pixels.
    """
    from rasterio.warp import transform_bounds

    w, s, e, n = bbox_lonlat
    bounds = transform_bounds("EPSG:4326", grid.crs, w, s, e, n, densify_pts=21)
    block = grid_window_of(bounds, grid)
    if block is None:
        return None
    r0, c0, h, wd = block
    sub = Grid(grid.crs, grid.window_transform(r0, c0), wd, h, grid.factor)
    return sub.scaled(subpixels)


# --------------------------------------------------------------------------------------------
# I/O
# --------------------------------------------------------------------------------------------

def open_client(params: StacParams, policy: HttpPolicy):
    """A pystac-client ``Client`` for ``params.api``; ``DownloadError`` names the URL and the cause."""
    import pystac_client
    from pystac_client.stac_api_io import StacApiIO

    check_url(params.api, policy)
    io = StacApiIO(timeout=policy.timeout, max_retries=policy.retries)
    try:
        return pystac_client.Client.open(params.api, stac_io=io, timeout=policy.timeout)
    except Exception as exc:  # requests / pystac-client errors of any kind
        raise DownloadError(params.api, f"STAC API not reachable or not a STAC API: {_cause(exc)}") from None


def _cause(exc: BaseException) -> str:
    msg = str(exc)
    for pat in (r"Failed to establish a new connection: \[Errno -?\d+\] [^')\"]+", r"Name or service not known",
                r"Temporary failure in name resolution", r"Connection refused", r"Read timed out"):
        m = re.search(pat, msg)
        if m:
            return f"{type(exc).__name__}: {m.group(0)}"
    return f"{type(exc).__name__}: {msg[:300]}"


def search_year(client, params: StacParams, bbox: Sequence[float], year: int) -> list[dict[str, Any]]:
    """Items (as dicts) of ``year`` over ``bbox`` with at most ``max_cloud`` % cloud, least cloudy first."""
    try:
        search = client.search(collections=[params.collection], bbox=list(bbox),
                               datetime=f"{year}-01-01T00:00:00Z/{year}-12-31T23:59:59Z",
                               query={"eo:cloud_cover": {"lte": params.max_cloud}}, limit=100)
        items = list(search.items_as_dicts())
    except Exception as exc:
        raise DownloadError(f"{params.api}/search", f"STAC search of {params.collection} {year} failed: "
                                                   f"{_cause(exc)}") from None
    return keep_scenes(items, params.max_cloud, params.max_scenes)


def _gdal_env(policy: HttpPolicy) -> dict[str, Any]:
    return {"GDAL_HTTP_TIMEOUT": str(int(math.ceil(policy.timeout))),
            "GDAL_HTTP_CONNECTTIMEOUT": str(int(math.ceil(policy.timeout))),
            "GDAL_HTTP_MAX_RETRY": str(policy.retries), "GDAL_HTTP_RETRY_DELAY": str(max(policy.backoff, 0.1)),
            "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR", "CPL_VSIL_CURL_ALLOWED_EXTENSIONS": ".TIF,.tif,.tiff",
            "GDAL_HTTP_MERGE_CONSECUTIVE_RANGES": "YES", "GDAL_HTTP_MULTIPLEX": "YES"}


def _check_asset_href(href: str, policy: HttpPolicy, where: str) -> None:
    scheme = urllib.parse.urlsplit(href).scheme.lower()
    if scheme == "s3":
        return
    try:
        check_url(href, policy)
    except ValueError as exc:
        raise ValueError(f"{where}: asset href not allowed: {exc}") from None


def _probe(href: str, sign: Callable[[str], str], where: str, policy: HttpPolicy) -> None:
    """Open an asset once (header only) so that an unreadable one is named with its unsigned href."""
    import rasterio

    try:
        with rasterio.Env(**_gdal_env(policy)), rasterio.open(sign(href)) as src:
            if src.crs is None:
                raise ValueError(f"{where}: asset {unsigned(href)} has no CRS")
    except rasterio.errors.RasterioIOError as exc:
        raise DownloadError(unsigned(href), f"cannot open the asset ({str(exc).replace(sign(href), unsigned(href))[:300]})") from None


def write_scene(plan: ScenePlan, item: Mapping[str, Any], fine: Grid, scene_dir: Path,
                sign: Callable[[str], str], policy: HttpPolicy, chunk: int = 2048) -> list[tuple[Path, str]]:
    """Read one scene's bands onto ``fine`` with odc-stac and write them into ``scene_dir`` (atomically).

    Returns ``[(file, unsigned href)]``. The directory is filled under a
    temporary name and renamed when every file is complete.
    """
    import numpy as np
    import odc.stac
    import pystac
    import rasterio
    from odc.geo.geobox import GeoBox

    where = f"STAC item {plan.item_id!r}"
    for _, _, href, _ in plan.files:
        _check_asset_href(href, policy, where)
    for _, _, href, _ in plan.files:
        _probe(href, sign, where, policy)
    pitem = pystac.Item.from_dict(dict(item), preserve_dict=True)
    geobox = GeoBox((fine.height, fine.width), fine.transform, fine.crs)
    tmp_dir = scene_dir.parent / f".{scene_dir.name}.part"
    if tmp_dir.exists():
        shutil.rmtree(tmp_dir)
    tmp_dir.mkdir(parents=True)
    written = []
    try:
        for kind, nodata, resampling in (("sr", 0, "average"), ("qa", 1, "nearest")):
            entries = [f for f in plan.files if f[3] == kind]
            keys = [key for _, key, _, _ in entries]
            try:
                ds = odc.stac.load([pitem], bands=keys, geobox=geobox, groupby="id", resampling=resampling,
                                   dtype="uint16", nodata=nodata, chunks={"x": chunk, "y": chunk},
                                   patch_url=sign, fail_on_error=True)
            except Exception as exc:
                raise DownloadError(", ".join(unsigned(h) for _, _, h, _ in entries),
                                    f"odc-stac could not load {where}: {_cause(exc)}") from None
            for name, key, href, _ in entries:
                arr = ds[key].isel(time=0)
                profile = dict(driver="GTiff", width=fine.width, height=fine.height, count=1, dtype="uint16",
                               crs=rasterio.crs.CRS.from_user_input(fine.crs), transform=fine.transform,
                               nodata=nodata, compress="deflate", predictor=2, tiled=True,
                               blockxsize=256, blockysize=256)
                dest = safe_join(tmp_dir, name)
                with gdal_write_errors(dest), rasterio.open(dest, "w", **profile) as dst:
                    for r in range(0, fine.height, chunk):
                        block = arr[r:r + chunk].values
                        try:
                            dst.write(np.asarray(block, dtype=np.uint16)[None],
                                      window=rasterio.windows.Window(0, r, fine.width, block.shape[0]))
                        except Exception as exc:
                            raise DownloadError(unsigned(href), f"writing {dest.name} failed: {exc}") from None
                    dst.update_tags(stac_item=plan.item_id, asset=key, href=unsigned(href),
                                    resampling=resampling, source="stac")
                written.append((name, unsigned(href)))
        if scene_dir.exists():
            shutil.rmtree(scene_dir)
        tmp_dir.rename(scene_dir)
    except BaseException:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        raise
    return [(scene_dir / name, href) for name, href in written]


def download_stac(cfg: Mapping[str, Any], layer: str, out_dir: str | Path, years: Sequence[int],
                  grid: Grid | None = None) -> Path:
    """Search, read and write every Landsat scene of ``years``; write the manifest and return its path.

    Parameters
    ----------
    cfg : mapping
        The validated config (``sources.landsat``, ``region.bbox``, ``grid``, ``download``).
    layer : {'landsat'}
    out_dir : path
        ``resources/raw/landsat``; one directory per year (empty when no scene matched).
    years : sequence of int
    grid : Grid, optional
        The working grid (default: from the config).

    Raises
    ------
    pandafine.sources.fetch.DownloadError
        The API, the token endpoint or an asset cannot be reached or read (the
        message names the URL and the cause); no partial scene is left.
    ValueError
        A layer other than landsat, an unsafe scene id, an item lacking a band.
    """
    import odc.stac

    if layer != "landsat":
        raise ValueError(f"key 'sources.{layer}.kind': value 'stac' is available for landsat only")
    params = StacParams.from_config(cfg)
    policy = policy_from_config(cfg)
    grid = grid or grid_from_config(cfg)
    out_dir = Path(out_dir)
    client = open_client(params, policy)
    sign: Callable[[str], str] = (SasSigner(f"{params.sas_url}/{params.collection}", policy)
                                  if params.sign == "planetary-computer" else (lambda h: h))
    odc.stac.configure_rio(cloud_defaults=True, **_gdal_env(policy))
    bbox = list(cfg["region"]["bbox"])
    records: list[tuple[Path, str]] = []
    for year in years:
        year_dir = out_dir / str(int(year))
        year_dir.mkdir(parents=True, exist_ok=True)
        items = search_year(client, params, bbox, int(year))
        n = 0
        for item in items:
            plan = plan_scene(item, int(year), params.provider)
            if plan is None:
                continue
            fine = scene_grid(item.get("bbox") or _geometry_bbox(item), grid, params.subpixels)
            if fine is None:
                log.info("%s: footprint outside the working grid; skipped", plan.item_id)
                continue
            records += write_scene(plan, item, fine, safe_join(year_dir, plan.scene_id), sign, policy)
            n += 1
            log.info("landsat %d: %s (%s, %.1f %% cloud) -> %s", year, plan.scene_id, plan.sensor, plan.cloud,
                     year_dir / plan.scene_id)
        if not n:
            log.warning("landsat %d: no scene of %s at %s with eo:cloud_cover <= %g over %s", year,
                        params.collection, params.api, params.max_cloud, bbox)
    return write_manifest(out_dir, layer, "stac", records)


def _geometry_bbox(item: Mapping[str, Any]) -> list[float]:
    coords = []

    def walk(c):
        if isinstance(c, (list, tuple)) and c and isinstance(c[0], (int, float)):
            coords.append(c)
        elif isinstance(c, (list, tuple)):
            for x in c:
                walk(x)

    walk((item.get("geometry") or {}).get("coordinates"))
    if not coords:
        raise ValueError(f"STAC item {item.get('id')!r}: no bbox and no geometry")
    xs, ys = [c[0] for c in coords], [c[1] for c in coords]
    return [min(xs), min(ys), max(xs), max(ys)]
