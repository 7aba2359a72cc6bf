"""STAC metadata of the yearly products: one Collection, one Item per year, next to the COGs.

Layout (a *self-contained* STAC catalog: every href is relative)::

    results/panda_fine/catalog.json                      the Collection
    results/panda_fine/items/PANDA-FINE_{year}.json      one Item per product year
    results/panda_fine/PANDA-FINE_{year}.tif             the COG (asset ``radiance``, href ``../PANDA-FINE_{year}.tif``)

Items follow STAC 1.1.0 with the projection (v2.0.0), raster (v1.1.0) and file
(v2.1.0) extensions. Everything is read from the COGs themselves (CRS, transform,
shape, tags, sha256), so the catalog describes exactly the files it sits beside.
The documents are plain dicts written as JSON (no pystac dependency); footprints
are the grid outline densified along its edges and projected to WGS84.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from pandafine.core.atomic import write_text_atomic
from pandafine.core.checksums import sha256_file
from pandafine.core.grid import Grid
from pandafine.product.cog import PRODUCT_BANDS

STAC_VERSION = "1.1.0"
PROJECTION_EXT = "https://stac-extensions.github.io/projection/v2.0.0/schema.json"
RASTER_EXT = "https://stac-extensions.github.io/raster/v1.1.0/schema.json"
FILE_EXT = "https://stac-extensions.github.io/file/v2.1.0/schema.json"
ITEM_EXTENSIONS = (PROJECTION_EXT, RASTER_EXT, FILE_EXT)
COG_MEDIA_TYPE = "image/tiff; application=geotiff; profile=cloud-optimized"
COLLECTION_ID = "PANDA-FINE"
ASSET_KEY = "radiance"
ITEMS_DIR = "items"
#: Product file names: ``PANDA-FINE_{year}.tif``.
PRODUCT_NAME = re.compile(r"^PANDA-FINE_(\d{4})\.tif$")
#: Points per footprint edge when projecting the grid outline to WGS84.
DENSIFY = 21
#: Decimal places of WGS84 coordinates (~1 cm).
LONLAT_DIGITS = 7


@dataclass(frozen=True)
class ProductInfo:
    """What the catalog needs to know about one product COG (read by :func:`read_product`)."""

    path: Path
    year: int
    crs_wkt: str
    epsg: int | None
    transform: tuple[float, float, float, float, float, float]
    width: int
    height: int
    dtype: str
    nodata: float | None
    units: str | None
    tags: Mapping[str, str]
    size: int
    sha256: str
    #: Band names (descriptions): ``("radiance",)``, or ``("radiance", "radiance_spread")`` for an ensemble.
    bands: tuple[str, ...] = PRODUCT_BANDS[:1]


# --------------------------------------------------------------------------- pure helpers

def year_interval(year: int) -> tuple[str, str]:
    """RFC 3339 UTC start and end of a calendar year: ``('YYYY-01-01T00:00:00Z', 'YYYY-12-31T23:59:59Z')``."""
    year = int(year)
    if not 1 <= year <= 9999:
        raise ValueError(f"year {year} is outside 1..9999")
    return f"{year:04d}-01-01T00:00:00Z", f"{year:04d}-12-31T23:59:59Z"


def sha256_multihash(hex_digest: str) -> str:
    """The ``file:checksum`` multihash of a sha2-256 digest: ``'1220' + hex``."""
    if not re.fullmatch(r"[0-9a-f]{64}", hex_digest):
        raise ValueError(f"sha256 digest must be 64 lowercase hex characters, got {hex_digest!r}")
    return "1220" + hex_digest


def native_bbox(transform: Sequence[float], width: int, height: int) -> list[float]:
    """(left, bottom, right, top) of a north-up grid in its own CRS units."""
    a, b, c, d, e, f = transform[:6]
    if b != 0 or d != 0 or a <= 0 or e >= 0:
        raise ValueError(f"transform {tuple(transform[:6])} is not north-up with positive pixel size")
    return [c, f + height * e, c + width * a, f]


def outline(bbox: Sequence[float], n: int = DENSIFY) -> list[tuple[float, float]]:
    """Closed, counter-clockwise ring of ``4 * (n - 1) + 1`` points along a box's edges (x, y)."""
    if n < 2:
        raise ValueError(f"densify count must be >= 2, got {n}")
    left, bottom, right, top = bbox
    steps = [i / (n - 1) for i in range(n - 1)]
    ring = [(left + s * (right - left), bottom) for s in steps]          # bottom, west -> east
    ring += [(right, bottom + s * (top - bottom)) for s in steps]        # right, south -> north
    ring += [(right - s * (right - left), top) for s in steps]           # top, east -> west
    ring += [(left, top - s * (top - bottom)) for s in steps]            # left, north -> south
    return ring + [ring[0]]


def footprint_wgs84(crs: str, bbox: Sequence[float], n: int = DENSIFY) -> tuple[list[float], dict[str, Any]]:
    """WGS84 bbox and GeoJSON Polygon of a projected box, densified along its edges.

    Returns
    -------
    (list of float, dict)
        ``[west, south, east, north]`` and ``{"type": "Polygon", "coordinates": [ring]}``.
        The grids of this product never cross the antimeridian (checked).
    """
    from pyproj import CRS, Transformer

    tr = Transformer.from_crs(CRS.from_user_input(crs), CRS.from_epsg(4326), always_xy=True)
    ring = []
    for x, y in outline(bbox, n):
        lon, lat = tr.transform(x, y)
        if not (abs(lon) <= 180 and abs(lat) <= 90):
            raise ValueError(f"grid corner ({x}, {y}) does not project to valid lon/lat (got {lon}, {lat})")
        ring.append([round(lon, LONLAT_DIGITS), round(lat, LONLAT_DIGITS)])
    lons = [p[0] for p in ring]
    lats = [p[1] for p in ring]
    if max(lons) - min(lons) > 180:
        raise ValueError(f"footprint of {list(bbox)} crosses the antimeridian; not supported")
    return [min(lons), min(lats), max(lons), max(lats)], {"type": "Polygon", "coordinates": [ring]}


def union_bbox(bboxes: Sequence[Sequence[float]]) -> list[float]:
    """Smallest [west, south, east, north] containing every box."""
    if not bboxes:
        raise ValueError("no bounding box to merge")
    return [min(b[0] for b in bboxes), min(b[1] for b in bboxes),
            max(b[2] for b in bboxes), max(b[3] for b in bboxes)]


def _relative(target: Path, start_dir: Path) -> str:
    rel = os.path.relpath(Path(target).resolve(), Path(start_dir).resolve())
    rel = rel.replace(os.sep, "/")
    return rel if rel.startswith("../") else f"./{rel}"


def item_id(year: int) -> str:
    return f"PANDA-FINE_{int(year)}"


def make_item(info: ProductInfo, item_path: Path, collection_path: Path) -> dict[str, Any]:
    """The STAC Item (dict) of one product, to be written at ``item_path``.

    Hrefs (asset, root/parent/collection links) are relative to ``item_path``.
    """
    start, end = year_interval(info.year)
    bbox_native = native_bbox(info.transform, info.width, info.height)
    bbox, geometry = footprint_wgs84(info.crs_wkt, bbox_native)
    nodata: Any = info.nodata
    if nodata is not None and nodata != nodata:  # NaN is not JSON; the raster extension spells it "nan"
        nodata = "nan"
    raster_bands = []
    for name in info.bands:
        band: dict[str, Any] = {"name": name, "data_type": info.dtype, "spatial_resolution": abs(info.transform[0])}
        if nodata is not None:
            band["nodata"] = nodata
        if info.units:
            band["unit"] = info.units
        raster_bands.append(band)
    props: dict[str, Any] = {
        "datetime": None,
        "start_datetime": start,
        "end_datetime": end,
        "title": f"PANDA-FINE nighttime-light radiance {info.year}",
        "proj:code": f"EPSG:{info.epsg}" if info.epsg is not None else None,
        "proj:wkt2": info.crs_wkt,
        "proj:shape": [info.height, info.width],
        "proj:transform": [float(v) for v in info.transform],
        "proj:bbox": [float(v) for v in bbox_native],
        "gsd": abs(info.transform[0]),
    }
    for key in ("model", "model_sha256", "config_sha256", "pandafine_version"):
        if key in info.tags:
            props[f"pandafine:{key}"] = info.tags[key]
    item_dir = Path(item_path).parent
    col_href = _relative(collection_path, item_dir)
    return {
        "type": "Feature",
        "stac_version": STAC_VERSION,
        "stac_extensions": list(ITEM_EXTENSIONS),
        "id": item_id(info.year),
        "collection": COLLECTION_ID,
        "bbox": bbox,
        "geometry": geometry,
        "properties": props,
        "links": [
            {"rel": "root", "href": col_href, "type": "application/json"},
            {"rel": "parent", "href": col_href, "type": "application/json"},
            {"rel": "collection", "href": col_href, "type": "application/json"},
        ],
        "assets": {
            ASSET_KEY: {
                "href": _relative(info.path, item_dir),
                "type": COG_MEDIA_TYPE,
                "title": f"Radiance ({info.units})" if info.units else "Radiance",
                "roles": ["data"],
                "raster:bands": raster_bands,
                "file:size": int(info.size),
                "file:checksum": sha256_multihash(info.sha256),
            },
        },
    }


def make_collection(cfg: Mapping[str, Any], items: Sequence[tuple[Path, Mapping[str, Any]]],
                    collection_path: Path) -> dict[str, Any]:
    """The STAC Collection (dict) linking ``items`` (``(item_path, item)`` pairs), for ``collection_path``."""
    if not items:
        raise ValueError(f"{collection_path}: a collection needs at least one item")
    region = cfg.get("region", {}).get("name", "region")
    starts = sorted(it["properties"]["start_datetime"] for _, it in items)
    ends = sorted(it["properties"]["end_datetime"] for _, it in items)
    years = sorted(int(it["properties"]["start_datetime"][:4]) for _, it in items)
    links = [{"rel": "root", "href": "./" + Path(collection_path).name, "type": "application/json",
              "title": "PANDA-FINE"}]
    links += [{"rel": "item", "href": _relative(p, Path(collection_path).parent), "type": "application/geo+json",
               "title": it["id"]} for p, it in items]
    return {
        "type": "Collection",
        "stac_version": STAC_VERSION,
        "stac_extensions": [PROJECTION_EXT, RASTER_EXT],
        "id": COLLECTION_ID,
        "title": f"PANDA-FINE yearly nighttime-light radiance ({region})",
        "description": ("Yearly ~125 m nighttime-light radiance (W m-2 sr-1 um-1) regenerated by fusing PANDA "
                        "(DMSP-like 1 km), Landsat Collection-2 surface reflectance and a DEM with a model "
                        "supervised by Luojia-01; one Cloud-Optimized GeoTIFF per year."),
        "keywords": ["nighttime light", "radiance", "PANDA", "Luojia-01", "Landsat"],
        "license": "other",
        "extent": {
            "spatial": {"bbox": [union_bbox([it["bbox"] for _, it in items])]},
            "temporal": {"interval": [[starts[0], ends[-1]]]},
        },
        "summaries": {
            "pandafine:year": {"minimum": years[0], "maximum": years[-1]},
            "proj:code": sorted({it["properties"]["proj:code"] for _, it in items}, key=str),
            "gsd": sorted({it["properties"]["gsd"] for _, it in items}),
        },
        "item_assets": {ASSET_KEY: {"type": COG_MEDIA_TYPE, "roles": ["data"],
                                    "raster:bands": items[0][1]["assets"][ASSET_KEY]["raster:bands"]}},
        "links": links,
    }


# --------------------------------------------------------------------------- I/O

def product_year(path: str | os.PathLike, tags: Mapping[str, str] | None = None) -> int:
    """Year of a product from its name ``PANDA-FINE_{year}.tif``, checked against its ``year`` tag if any."""
    path = Path(path)
    m = PRODUCT_NAME.match(path.name)
    tag = (tags or {}).get("year")
    if m is None and tag is None:
        raise ValueError(f"{path}: cannot tell the product year; expected a name PANDA-FINE_{{year}}.tif "
                         "or a 'year' tag")
    if m is not None and tag is not None and int(tag) != int(m.group(1)):
        raise ValueError(f"{path}: file name says year {m.group(1)} but the 'year' tag says {tag}")
    return int(m.group(1)) if m is not None else int(tag)


def find_products(paths: Sequence[str | os.PathLike]) -> list[Path]:
    """Product COGs named by ``paths``: files as given, directories expanded to their ``PANDA-FINE_{year}.tif``.

    Raises
    ------
    FileNotFoundError
        If a path does not exist, or a directory holds no product.
    """
    found: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            hits = sorted(q for q in p.iterdir() if PRODUCT_NAME.match(q.name) and q.is_file())
            if not hits:
                raise FileNotFoundError(f"{p}: no product COG named PANDA-FINE_{{year}}.tif in this directory")
            found += hits
        elif p.is_file():
            found.append(p)
        else:
            raise FileNotFoundError(f"product COG or directory not found: {p}")
    return found


def read_product(path: str | os.PathLike) -> ProductInfo:
    """Read the georeferencing, tags, size and sha256 of a product COG."""
    import rasterio
    from pyproj import CRS

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"product COG not found: {path}")
    with rasterio.open(path) as src:
        if src.crs is None:
            raise ValueError(f"{path}: product has no CRS; cannot describe it in STAC")
        names = tuple(d or "" for d in src.descriptions)
        if src.count == 2 and names != PRODUCT_BANDS:
            raise ValueError(f"{path}: product has 2 bands named {names}; expected {PRODUCT_BANDS}")
        if src.count not in (1, 2):
            raise ValueError(f"{path}: product has {src.count} bands; expected 1 (radiance) or 2 "
                             "(radiance, radiance_spread of an ensemble)")
        crs = CRS.from_user_input(src.crs.to_wkt())
        tags = dict(src.tags())
        units = src.units[0] or src.tags(1).get("units") or tags.get("units")
        info = dict(crs_wkt=crs.to_wkt(), epsg=crs.to_epsg(), transform=tuple(src.transform)[:6],
                    width=src.width, height=src.height, dtype=src.dtypes[0], nodata=src.nodata,
                    units=units or None, tags=tags,
                    bands=PRODUCT_BANDS[:src.count])
    return ProductInfo(path=path, year=product_year(path, tags), size=path.stat().st_size,
                       sha256=sha256_file(path), **info)


def _dump(doc: Mapping[str, Any]) -> str:
    return json.dumps(doc, indent=2, allow_nan=False) + "\n"


def build_catalog(cfg: Mapping[str, Any], product_paths: Sequence[str | os.PathLike],
                  out_path: str | os.PathLike, *, grid=None) -> Path:
    """Write the STAC Collection ``out_path`` and one Item per product under ``items/`` beside it.

    Parameters
    ----------
    cfg : mapping
        Validated config (``region.name`` goes into the collection title).
    product_paths : sequence of path
        ``PANDA-FINE_{year}.tif`` COGs; one per year (duplicate years are an error).
    out_path : path
        ``results/panda_fine/catalog.json``; items go to ``items/PANDA-FINE_{year}.json`` in its directory.
    grid : pandafine.core.grid.Grid, optional
        When given, every product must lie on this grid (same CRS, transform and size).

    Returns
    -------
    pathlib.Path
        ``out_path``. Every file is written through a temporary file and a rename;
        the items are written before the collection, so a complete ``catalog.json``
        never links a missing item.
    """
    out_path = Path(out_path)
    if not product_paths:
        raise ValueError(f"{out_path}: no product COG to catalog")
    infos = sorted((read_product(p) for p in product_paths), key=lambda i: i.year)
    seen: dict[int, Path] = {}
    for info in infos:
        if info.year in seen:
            raise ValueError(f"year {info.year} appears twice: {seen[info.year]} and {info.path}")
        seen[info.year] = info.path
        if grid is not None:
            from affine import Affine

            on = Grid(info.crs_wkt, Affine(*info.transform), info.width, info.height, grid.factor)
            if not on.same_as(grid):
                raise ValueError(f"{info.path}: raster grid ({info.width}x{info.height}, {info.transform}) "
                                 f"differs from the working grid ({grid.width}x{grid.height}, "
                                 f"{tuple(grid.transform)[:6]})")
    items_dir = out_path.parent / ITEMS_DIR
    items = []
    for info in infos:
        item_path = items_dir / f"{item_id(info.year)}.json"
        item = make_item(info, item_path, out_path)
        write_text_atomic(item_path, _dump(item))
        items.append((item_path, item))
    write_text_atomic(out_path, _dump(make_collection(cfg, items, out_path)))
    return out_path


__all__ = ("ProductInfo", "year_interval", "sha256_multihash", "native_bbox", "outline", "footprint_wgs84",
           "union_bbox", "item_id", "make_item", "make_collection", "product_year", "find_products", "read_product",
           "build_catalog")
