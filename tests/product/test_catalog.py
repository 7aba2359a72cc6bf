"""STAC catalog of the yearly products: schema validity (offline), content, round trip, errors."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from affine import Affine

from pandafine.core.checksums import sha256_file as file_sha256
from pandafine.core.grid import CHINA_ALBERS, Grid
from pandafine.product.catalog import (
    COG_MEDIA_TYPE,
    FILE_EXT,
    build_catalog,
    find_products,
    footprint_wgs84,
    native_bbox,
    outline,
    product_year,
    sha256_multihash,
    year_interval,
)
from pandafine.product.cog import write_cog
from stac_schemas import SCHEMA_WHEEL_ENV, CatalogValidator, extension_schemas, validate_catalog

ALBERS_GRID = Grid(CHINA_ALBERS, Affine(125.0, 0, -300_000.0, 0, -125.0, 3_800_000.0), 64, 48, 8)
UTM_GRID = Grid("EPSG:32649", Affine(125.0, 0, 300_000.0, 0, -125.0, 3_800_000.0), 40, 32, 8)


def make_product(directory: Path, year: int, grid: Grid, *, tag_year: int | None = None, seed: int = 0) -> Path:
    """A tiny product COG: float32 radiance with a NaN patch, product-like tags."""
    import rasterio

    rng = np.random.default_rng(seed + year)
    data = rng.gamma(2.0, 1e-8, size=grid.shape).astype(np.float32)
    data[:5, :7] = np.nan
    tiled = directory / f".{year}.tiled.tif"
    profile = dict(driver="GTiff", width=grid.width, height=grid.height, count=1, dtype="float32",
                   crs=rasterio.crs.CRS.from_user_input(grid.crs), transform=grid.transform, nodata=float("nan"))
    with rasterio.open(tiled, "w", **profile) as dst:
        dst.write(data, 1)
        dst.set_band_unit(1, "W m-2 sr-1 um-1")
    tags = {"year": str(year if tag_year is None else tag_year), "units": "W m-2 sr-1 um-1",
            "model": "model.onnx", "model_sha256": "ab" * 32, "config_sha256": "cd" * 32,
            "pandafine_version": "0.1.0"}
    out = write_cog(tiled, directory / f"PANDA-FINE_{year}.tif", blocksize=256, tags=tags)
    tiled.unlink()
    return out


@pytest.fixture
def cfg():
    return {"region": {"name": "tiny-test"}}


@pytest.fixture
def products(tmp_path):
    d = tmp_path / "panda_fine"
    d.mkdir()
    return [make_product(d, 2019, ALBERS_GRID), make_product(d, 2018, ALBERS_GRID)]


@pytest.fixture
def built(tmp_path, products, cfg):
    out = build_catalog(cfg, products, tmp_path / "panda_fine" / "catalog.json", grid=ALBERS_GRID)
    items = {int(p.stem.split("_")[1]): p for p in (out.parent / "items").glob("*.json")}
    return out, items


def load(path: Path) -> dict:
    return json.loads(path.read_text())


# --------------------------------------------------------------------------- schemas (offline)

def core_validator():
    """Validator of the official STAC 1.1.0 core schemas bundled with pystac (extensions not checked)."""
    pytest.importorskip("pystac", reason="pystac ships the official STAC core JSON schemas")
    return CatalogValidator({})


def official_validator():
    """Validator of the core schemas and the official projection/raster extension schemas.

    Skips when ``PANDAFINE_STAC_SCHEMA_WHEEL`` is unset (``.ci/run`` sets it); fails when it names
    a missing or wrong file."""
    wheel = os.environ.get(SCHEMA_WHEEL_ENV)
    if not wheel:
        pytest.skip(f"{SCHEMA_WHEEL_ENV} unset: the official extension schemas come from the wheel pinned in "
                    "tests/stac/official-schemas.txt (.ci/run downloads it)")
    return CatalogValidator(extension_schemas(wheel))


#: The file extension (v2.1.0) fields we write, checked strictly here: no official copy of that
#: schema is available offline (see tests/stac_schemas.py).
FILE_FIELDS_SCHEMA = {
    "type": "object",
    "required": ["stac_extensions", "assets"],
    "properties": {
        "stac_extensions": {"type": "array", "contains": {"const": FILE_EXT}},
        "assets": {"type": "object", "additionalProperties": {
            "type": "object",
            "required": ["file:checksum", "file:size"],
            "properties": {"file:checksum": {"type": "string", "pattern": "^[0-9a-f]+$"},
                           "file:size": {"type": "integer", "minimum": 0}}}},
    },
}


def test_catalog_validates_against_official_core_schemas(built):
    import jsonschema

    out, items = built
    validator = core_validator()
    assert not validator.errors(load(out))
    for path in items.values():
        item = load(path)
        assert not validator.errors(item), path
        jsonschema.Draft7Validator(FILE_FIELDS_SCHEMA).validate(item)
    # the validators do reject a broken item (the check is not vacuous)
    bad = load(items[2018])
    del bad["properties"]["start_datetime"]
    assert validator.errors(bad)
    bad = load(items[2018])
    bad["assets"]["radiance"]["file:size"] = -1
    assert list(jsonschema.Draft7Validator(FILE_FIELDS_SCHEMA).iter_errors(bad))


def test_catalog_validates_against_official_extension_schemas(built):
    out, items = built
    validator = official_validator()
    problems, unchecked = validate_catalog(out, os.environ[SCHEMA_WHEEL_ENV])
    assert not problems, problems
    assert unchecked == {FILE_EXT}, unchecked  # projection and raster were checked
    # the official extension schemas reject what they should (the check is not vacuous)
    item = load(items[2018])
    for path, value in ((("properties", "proj:shape"), [48]), (("properties", "proj:transform"), [1.0, 2.0]),
                        (("properties", "proj:code"), 4326),
                        (("assets", "radiance", "raster:bands", 0, "data_type"), "float33"),
                        (("assets", "radiance", "raster:bands", 0, "nodata"), None),
                        (("assets", "radiance", "raster:bands", 0, "spatial_resolution"), "125 m")):
        bad = json.loads(json.dumps(item))
        node = bad
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value
        assert validator.errors(bad), path


# --------------------------------------------------------------------------- content

def test_items_describe_the_cogs(built, products):
    import rasterio
    from pyproj import CRS, Transformer

    out, items = built
    assert sorted(items) == [2018, 2019]
    for year, path in items.items():
        item = load(path)
        props = item["properties"]
        assert item["id"] == f"PANDA-FINE_{year}" and item["collection"] == "PANDA-FINE"
        assert props["datetime"] is None
        assert (props["start_datetime"], props["end_datetime"]) == (f"{year}-01-01T00:00:00Z",
                                                                    f"{year}-12-31T23:59:59Z")
        asset = item["assets"]["radiance"]
        cog = (path.parent / asset["href"]).resolve()
        assert asset["href"] == f"../PANDA-FINE_{year}.tif" and cog == (out.parent / f"PANDA-FINE_{year}.tif").resolve()
        assert asset["type"] == COG_MEDIA_TYPE and asset["roles"] == ["data"]
        assert asset["file:checksum"] == "1220" + file_sha256(cog)
        assert asset["file:size"] == cog.stat().st_size
        assert asset["raster:bands"] == [{"name": "radiance", "data_type": "float32", "nodata": "nan",
                                          "unit": "W m-2 sr-1 um-1", "spatial_resolution": 125.0}]
        with rasterio.open(cog) as src:
            assert props["proj:shape"] == [src.height, src.width] == [48, 64]
            assert props["proj:transform"] == list(src.transform)[:6]
            assert props["proj:bbox"] == list(src.bounds)
            assert CRS.from_wkt(props["proj:wkt2"]) == CRS.from_user_input(src.crs.to_wkt())
        assert props["proj:code"] is None  # the Albers grid has no EPSG code
        assert props["pandafine:model_sha256"] == "ab" * 32
        # every pixel centre of the grid lies inside the WGS84 footprint's bbox
        tr = Transformer.from_crs(CRS.from_user_input(CHINA_ALBERS), 4326, always_xy=True)
        rows, cols = np.mgrid[0:48, 0:64]
        t = ALBERS_GRID.transform
        xs, ys = t.c + (cols + 0.5) * t.a, t.f + (rows + 0.5) * t.e
        lon, lat = tr.transform(xs, ys)
        w, s, e, n = item["bbox"]
        assert w <= lon.min() and lon.max() <= e and s <= lat.min() and lat.max() <= n
        ring = item["geometry"]["coordinates"][0]
        assert item["bbox"] == [min(p[0] for p in ring), min(p[1] for p in ring),
                                max(p[0] for p in ring), max(p[1] for p in ring)]
        links = {ln["rel"]: ln["href"] for ln in item["links"]}
        assert links == {"root": "../catalog.json", "parent": "../catalog.json", "collection": "../catalog.json"}

    coll = load(out)
    assert coll["type"] == "Collection" and coll["id"] == "PANDA-FINE" and "tiny-test" in coll["title"]
    assert coll["extent"]["temporal"]["interval"] == [["2018-01-01T00:00:00Z", "2019-12-31T23:59:59Z"]]
    assert coll["extent"]["spatial"]["bbox"] == [load(items[2018])["bbox"]]  # same grid both years
    assert [ln["href"] for ln in coll["links"] if ln["rel"] == "item"] == [
        "./items/PANDA-FINE_2018.json", "./items/PANDA-FINE_2019.json"]
    assert sorted(p.name for p in out.parent.iterdir()) == ["PANDA-FINE_2018.tif", "PANDA-FINE_2019.tif",
                                                           "catalog.json", "items"]  # no temporary left


def test_pystac_reads_the_catalog_offline(built):
    pystac = pytest.importorskip("pystac")
    from pystac.extensions.projection import ProjectionExtension
    from pystac.extensions.raster import RasterExtension

    out, _ = built
    coll = pystac.Collection.from_file(str(out))
    items = sorted(coll.get_items(recursive=True), key=lambda i: i.id)
    assert [i.id for i in items] == ["PANDA-FINE_2018", "PANDA-FINE_2019"]
    for it in items:
        assert it.datetime is None and it.common_metadata.start_datetime.year == int(it.id[-4:])
        asset = it.assets["radiance"]
        assert Path(asset.get_absolute_href()) == out.parent / f"{it.id}.tif"
        assert ProjectionExtension.ext(it).shape == [48, 64]
        assert RasterExtension.ext(asset).bands[0].data_type == "float32"


def test_epsg_grid_gets_proj_code_and_rebuild_is_identical(tmp_path, cfg):
    d = tmp_path / "p"
    d.mkdir()
    prods = [make_product(d, 1984, UTM_GRID)]
    out = build_catalog(cfg, prods, d / "catalog.json")
    item = load(d / "items" / "PANDA-FINE_1984.json")
    assert item["properties"]["proj:code"] == "EPSG:32649"
    first = {p.name: p.read_bytes() for p in [out, d / "items" / "PANDA-FINE_1984.json"]}
    build_catalog(cfg, prods, out)
    assert {p.name: p.read_bytes() for p in [out, d / "items" / "PANDA-FINE_1984.json"]} == first


# --------------------------------------------------------------------------- errors

def test_errors_name_the_file(tmp_path, cfg, products):
    out = tmp_path / "panda_fine" / "catalog.json"
    with pytest.raises(ValueError, match="year 2018 appears twice"):
        build_catalog(cfg, [products[1], products[1]], out)
    with pytest.raises(ValueError, match="PANDA-FINE_2018.tif: raster grid .* differs from the working grid"):
        build_catalog(cfg, products, out, grid=UTM_GRID)
    with pytest.raises(ValueError, match="no product COG"):
        build_catalog(cfg, [], out)
    with pytest.raises(FileNotFoundError, match="PANDA-FINE_2000.tif"):
        build_catalog(cfg, [tmp_path / "PANDA-FINE_2000.tif"], out)
    odd = tmp_path / "odd"
    odd.mkdir()
    bad = make_product(odd, 2001, UTM_GRID, tag_year=2002)
    with pytest.raises(ValueError, match="PANDA-FINE_2001.tif: file name says year 2001 but the 'year' tag says 2002"):
        build_catalog(cfg, [bad], out)
    assert not out.exists()


def test_find_products_expands_directories(tmp_path, products):
    d = products[0].parent
    (d / "PANDA-FINE_2018.tif.aux.xml").write_text("<x/>")  # not a product
    (d / ".PANDA-FINE_2020.abc.part.tif").write_text("")    # a temporary, not a product
    assert find_products([d]) == sorted(products)
    assert find_products([products[0]]) == [products[0]]
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="empty: no product COG"):
        find_products([tmp_path / "empty"])
    with pytest.raises(FileNotFoundError, match="missing.tif"):
        find_products([d / "missing.tif"])


# --------------------------------------------------------------------------- pure helpers

def test_pure_helpers():
    assert year_interval(1984) == ("1984-01-01T00:00:00Z", "1984-12-31T23:59:59Z")
    with pytest.raises(ValueError):
        year_interval(0)
    assert sha256_multihash("0" * 64) == "1220" + "0" * 64
    with pytest.raises(ValueError, match="64 lowercase hex"):
        sha256_multihash("abc")
    assert native_bbox((2.0, 0, 10.0, 0, -3.0, 50.0), 4, 5) == [10.0, 35.0, 18.0, 50.0]
    ring = outline([0, 0, 4, 2], n=5)
    assert len(ring) == 17 and ring[0] == ring[-1] == (0, 0)
    area = sum(x0 * y1 - x1 * y0 for (x0, y0), (x1, y1) in zip(ring, ring[1:])) / 2
    assert area == pytest.approx(8.0)  # positive: counter-clockwise, as RFC 7946 wants
    bbox, geom = footprint_wgs84("EPSG:4326", [100.0, 30.0, 101.0, 31.0], n=3)
    assert bbox == [100.0, 30.0, 101.0, 31.0] and geom["type"] == "Polygon"
    assert product_year("x/PANDA-FINE_1999.tif") == 1999 and product_year("other.tif", {"year": "2005"}) == 2005
    with pytest.raises(ValueError, match="cannot tell the product year"):
        product_year("other.tif")
