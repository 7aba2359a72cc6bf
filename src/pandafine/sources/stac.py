"""The ``stac`` source: Landsat Collection-2 Level-2 scenes found in a STAC API and read in place, per block.

Landsat is not downloaded as a layer. Each ``pandafine landsat-block`` job (one
year, one block of the working grid) calls :func:`stac_block_source`, which

1. searches the STAC API at ``sources.landsat.api`` (pystac-client, POST
   ``/search``) for items of ``sources.landsat.collection`` (default
   ``landsat-c2-l2``) of that year whose footprint *intersects* the block's
   footprint (:func:`footprint_lonlat`: the block's outline in EPSG:4326, its
   edges densified), asking for ``eo:cloud_cover`` at most
   ``sources.landsat.max_cloud`` percent (the limit is applied again to what
   the server answers);
2. keeps at most ``sources.landsat.max_scenes`` scenes per WRS-2 path/row,
   least cloudy first (:func:`pandafine.sensors.landsat.cap_per_path_row`), so
   that a block on the overlap of two path/rows gets scenes of both;
3. maps every item's assets to the SR bands of its sensor and ``QA_PIXEL``
   (:func:`resolve_assets`) and returns them as
   :class:`~pandafine.sensors.landsat.SceneAssets` with *unsigned* hrefs, the
   signer and GDAL's HTTP settings (:class:`BlockSource`).

The block job (:func:`pandafine.preprocess.landsat_composite.composite_block`)
then opens each asset with GDAL through ``sign(href)`` at read time (so a token
is fresh when used), reads only the block's window of every file (optionally
from the COG's internal overview nearest the working pixel), masks and
calibrates it in memory and warps it onto the working grid. Nothing is written
at the scenes' resolution; the only files are the block composite, its JSON
record and the block's journal of finished scenes (on the working grid).

Providers
---------
* Microsoft Planetary Computer (default API): asset hrefs are signed with a SAS
  token from ``https://planetarycomputer.microsoft.com/api/sas/v1/token/{collection}``
  (a plain HTTP GET; tokens are cached and renewed before they expire,
  :class:`SasSigner`).
* Earth Search (``api: https://earth-search.aws.element84.com/v1``): no signing.
  Asset keys are resolved per provider (:data:`ASSET_KEYS`), and checked against,
  or else found by, the Collection-2 file name in the href (``..._SR_B4.TIF``).
  Its Landsat hrefs may point to the requester-pays ``usgs-landsat`` bucket
  (``s3://``); GDAL then needs AWS credentials and ``AWS_REQUEST_PAYER=requester``
  in the environment.
* Any other signing: pass ``sign=`` to :func:`stac_block_source` (href -> what GDAL opens).
"""

from __future__ import annotations

import json
import logging
import math
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Callable, Mapping, Sequence

from pandafine.core.grid import Grid
from pandafine.sensors.landsat import MISSION_SENSOR, SceneAssets, band_numbers, cap_per_path_row
from pandafine.sources.fetch import DownloadError, HttpPolicy, check_url
from pandafine.sources.http import policy_from_config

log = logging.getLogger(__name__)

PLANETARY_COMPUTER_API = "https://planetarycomputer.microsoft.com/api/stac/v1"
PLANETARY_COMPUTER_SAS = "https://planetarycomputer.microsoft.com/api/sas/v1/token"
EARTH_SEARCH_API = "https://earth-search.aws.element84.com/v1"
DEFAULT_COLLECTION = "landsat-c2-l2"
DEFAULT_MAX_CLOUD = 60.0
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
        Keep at most this many scenes per WRS-2 path/row for each (year, block), least cloudy first
        (None: all).
    """

    api: str = PLANETARY_COMPUTER_API
    collection: str = DEFAULT_COLLECTION
    max_cloud: float = DEFAULT_MAX_CLOUD
    sign: str = "planetary-computer"
    sas_url: str = PLANETARY_COMPUTER_SAS
    max_scenes: int | None = None

    @property
    def provider(self) -> str:
        """``'pc'`` for the Planetary Computer host, else ``'earth-search'`` (its key table also covers others)."""
        host = (urllib.parse.urlsplit(self.api).hostname or "").lower()
        return "pc" if host.endswith("planetarycomputer.microsoft.com") else "earth-search"

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> "StacParams":
        """Settings from a config's ``sources.landsat``; ``ValueError`` names the key."""
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
                   max_scenes=src.get("max_scenes"))


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
    """``href`` without its query string (what block records and error messages show; no token in them)."""
    return urllib.parse.urlunsplit(urllib.parse.urlsplit(href)._replace(query=""))


# --------------------------------------------------------------------------------------------
# pure planning: which assets of an item, which scene id
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ScenePlan:
    """What to read for one item: its Collection-2 file names -> (asset key, href, kind)."""

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
    """The scene id (it names the scene's entry in a block's journal and record): the full Collection-2
    product id from the asset file names when present (Planetary Computer item ids drop the processing
    date), else the item id; refused when unsafe as a file name."""
    sid = _product_id_from_hrefs(hrefs) or item_id
    if not _SAFE_ID.match(sid) or sid in (".", ".."):
        raise ValueError(f"STAC item {item_id!r}: scene id {sid!r} is not a safe file name "
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


# --------------------------------------------------------------------------------------------
# per (year, block): the scenes to read in place
# --------------------------------------------------------------------------------------------

def footprint_lonlat(grid: Grid, area: Sequence[int], densify: int = 21) -> dict[str, Any]:
    """A GeoJSON polygon (EPSG:4326) around ``area`` (row_off, col_off, height, width) of ``grid``: its edges
    densified so that the polygon holds the block after reprojection."""
    from rasterio.crs import CRS
    from rasterio.warp import transform

    r0, c0, h, w = area
    t = grid.window_transform(r0, c0)
    f = [i / densify for i in range(densify)]
    ring = ([(w * a, 0) for a in f] + [(w, h * a) for a in f] + [(w * (1 - a), h) for a in f]
            + [(0, h * (1 - a)) for a in f])
    xs, ys = zip(*(t * p for p in ring))
    lon, lat = transform(CRS.from_user_input(grid.crs), CRS.from_epsg(4326), list(xs), list(ys))
    coords = [[round(x, 7), round(y, 7)] for x, y in zip(lon, lat)]
    return {"type": "Polygon", "coordinates": [coords + coords[:1]]}


def scene_assets(plan: ScenePlan) -> SceneAssets:
    """The :class:`~pandafine.sensors.landsat.SceneAssets` of a planned item (unsigned hrefs)."""
    by_number = {f"SR_B{n}": name for name, n in band_numbers(plan.sensor).items()}
    bands, qa = [], None
    for file_name, _, href, kind in plan.files:
        part = file_name[len(plan.scene_id) + 1:-len(".TIF")]
        if kind == "qa":
            qa = href
        else:
            bands.append((by_number[part], href))
    return SceneAssets(plan.scene_id, plan.sensor, tuple(bands), qa, plan.cloud)


def search_block(client, params: StacParams, footprint: Mapping[str, Any], year: int) -> list[SceneAssets]:
    """Scenes of ``year`` whose footprint intersects ``footprint`` (GeoJSON, EPSG:4326), at most ``max_cloud``
    % cloud, capped at ``params.max_scenes`` per WRS-2 path/row (least cloudy first); sorted by scene id."""
    try:
        search = client.search(collections=[params.collection], intersects=dict(footprint),
                               datetime=f"{year}-01-01T00:00:00Z/{year}-12-31T23:59:59Z",
                               query={"eo:cloud_cover": {"lte": params.max_cloud}}, limit=100)
        items = list(search.items_as_dicts())
    except Exception as exc:
        raise DownloadError(f"{params.api}/search", f"STAC search of {params.collection} {year} failed: "
                                                   f"{_cause(exc)}") from None
    scenes = []
    for item in keep_scenes(items, params.max_cloud, None):
        plan = plan_scene(item, year, params.provider)
        if plan is not None:
            scenes.append(scene_assets(plan))
    return cap_per_path_row(scenes, params.max_scenes)


@dataclass(frozen=True)
class BlockSource:
    """What a block job needs to read STAC scenes in place: the scenes, the href signer, GDAL's settings."""

    scenes: tuple[SceneAssets, ...]
    sign: Callable[[str], str]
    gdal_env: Mapping[str, Any]


def stac_block_source(cfg: Mapping[str, Any], grid: Grid, area: Sequence[int], year: int,
                      sign: Callable[[str], str] | None = None) -> BlockSource:
    """Search the STAC API for the scenes of one (year, block); hrefs are signed when read.

    ``sign`` replaces the provider's signer (a hook for other providers and tests);
    every href is checked against the download policy before it is read.
    """
    params = StacParams.from_config(cfg)
    policy = policy_from_config(cfg)
    client = open_client(params, policy)
    if sign is None:
        sign = (SasSigner(f"{params.sas_url}/{params.collection}", policy)
                if params.sign == "planetary-computer" else (lambda h: h))
    scenes = search_block(client, params, footprint_lonlat(grid, area), int(year))
    for s in scenes:
        for href in [h for _, h in s.bands] + [s.qa]:
            _check_asset_href(href, policy, f"STAC item {s.scene_id!r}")
    if not scenes:
        log.warning("landsat %d: no scene of %s at %s with eo:cloud_cover <= %g over block %s", year,
                    params.collection, params.api, params.max_cloud, list(area))
    return BlockSource(tuple(scenes), sign, _gdal_env(policy))
