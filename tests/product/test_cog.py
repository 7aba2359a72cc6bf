"""Product COG writing and tags."""

from __future__ import annotations

import copy
import hashlib
from pathlib import Path

import numpy as np
import pytest
import yaml
from affine import Affine

from pandafine import __version__
from pandafine.config import config_hash
from pandafine.config_keys import product_config
from pandafine.product.cog import overview_levels, product_tags, validate_cog, write_cog
from repo_paths import REPO

CRS = "EPSG:32649"
TRANSFORM = Affine(125.0, 0.0, 300000.0, 0.0, -125.0, 3800000.0)


def tiled_tif(path: Path, arr: np.ndarray, *, tiled: bool = True, crs: str | None = CRS) -> Path:
    import rasterio

    profile = dict(driver="GTiff", width=arr.shape[1], height=arr.shape[0], count=1, dtype=arr.dtype.name,
                   crs=crs, transform=TRANSFORM, nodata=float("nan"), tiled=tiled)
    if tiled:
        profile.update(blockxsize=256, blockysize=256)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(arr, 1)
        dst.set_band_description(1, "radiance")
        dst.update_tags(1, units="W m-2 sr-1 um-1")
    return path


@pytest.fixture
def checker():
    """1100 x 900 checkerboard of 0 and 4 (average overview: 2 everywhere) with a NaN block."""
    yy, xx = np.mgrid[0:900, 0:1100]
    arr = np.where((yy + xx) % 2 == 0, 0.0, 4.0).astype(np.float32)
    arr[100:300, 200:500] = np.nan
    return arr


@pytest.mark.parametrize("compress,blocksize", [("zstd", 512), ("deflate", 256)])
def test_write_cog_is_valid_tiled_compressed_with_overviews(tmp_path, checker, compress, blocksize):
    import rasterio

    src = tiled_tif(tmp_path / "src.tif", checker)
    out = tmp_path / "out" / "PANDA-FINE_2018.tif"
    tags = {"year": 2018, "units": "W m-2 sr-1 um-1", "model_sha256": "ab" * 32}
    assert write_cog(src, out, compress=compress, blocksize=blocksize, tags=tags) == out
    ok, errors, warns = validate_cog(out)
    assert ok and errors == [], errors
    with rasterio.open(out) as cog:
        assert cog.block_shapes[0] == (blocksize, blocksize)
        assert cog.compression.name == compress
        image = cog.tags(ns="IMAGE_STRUCTURE")
        assert image["PREDICTOR"] == "3" and image["LAYOUT"] == "COG"
        assert cog.overviews(1) == [2, 4, 8]  # 1100 px halved until it fits in 256 px: 550, 275, 138
        assert cog.crs == rasterio.crs.CRS.from_user_input(CRS)
        assert cog.transform == TRANSFORM
        assert np.isnan(cog.nodata) and cog.dtypes[0] == "float32"
        # lossless, NaN preserved
        np.testing.assert_array_equal(cog.read(1), checker)
        assert cog.tags()["year"] == "2018" and cog.tags()["model_sha256"] == "ab" * 32
        assert cog.tags()["OVERVIEW_RESAMPLING"] == "AVERAGE"
        assert cog.descriptions == ("radiance",) and cog.tags(1)["units"] == "W m-2 sr-1 um-1"
    # average overviews: a 0/4 checkerboard averages to 2 (nearest would give 0 or 4)
    with rasterio.open(out, overview_level=0) as ovr:
        o = ovr.read(1)
    assert o.shape == (450, 550)
    valid = np.isfinite(o)
    assert valid.mean() > 0.9
    np.testing.assert_allclose(o[valid], 2.0)
    assert np.all(np.isnan(o[60:140, 110:240]))  # the NaN block stays nodata


def test_write_cog_small_raster_and_atomicity(tmp_path):
    src = tiled_tif(tmp_path / "small.tif", np.ones((100, 120), np.float32), tiled=False)
    out = tmp_path / "small_cog.tif"
    write_cog(src, out, blocksize=512)
    assert validate_cog(out)[0]
    # a failing conversion (no CRS) leaves neither the final file nor a temporary
    bad = tiled_tif(tmp_path / "nocrs.tif", np.ones((64, 64), np.float32), tiled=False, crs=None)
    target = tmp_path / "fail" / "x.tif"
    target.parent.mkdir()
    with pytest.raises(ValueError, match="nocrs.tif: raster has no CRS"):
        write_cog(bad, target)
    assert list(target.parent.iterdir()) == []
    with pytest.raises(ValueError, match="compression 'lzma'"):
        write_cog(src, target, compress="lzma")
    with pytest.raises(FileNotFoundError, match="missing.tif"):
        write_cog(tmp_path / "missing.tif", target)


def test_overview_levels():
    assert overview_levels(352, 352) == 1
    assert overview_levels(256, 100) == 0
    assert overview_levels(1100, 900) == 3
    assert overview_levels(40000, 40000) == 8
    assert overview_levels(40000, 30000, min_size=512) == 7


def test_demo_sized_product_has_overviews(tmp_path):
    import rasterio

    src = tiled_tif(tmp_path / "demo.tif", np.ones((352, 352), np.float32), tiled=False)
    out = write_cog(src, tmp_path / "demo_cog.tif", blocksize=512)
    assert validate_cog(out)[0]
    with rasterio.open(out) as cog:
        assert cog.overviews(1) == [2] and cog.block_shapes[0] == (512, 512)


def test_validate_cog_rejects_plain_striped_geotiff(tmp_path, checker):
    plain = tiled_tif(tmp_path / "plain.tif", checker, tiled=False)
    ok, errors, _ = validate_cog(plain)
    assert not ok and errors


def test_product_tags(tmp_path):
    cfg = yaml.safe_load((REPO / "config.yaml").read_text())
    model = tmp_path / "model.onnx"
    model.write_bytes(b"not really a model, but bytes to hash")
    tags = product_tags(cfg, 2005, model)
    assert tags["units"] == "W m-2 sr-1 um-1"
    assert tags["quantity"] == "radiance" and tags["scale"] == "radiance"
    assert tags["year"] == "2005"
    assert tags["model_sha256"] == hashlib.sha256(model.read_bytes()).hexdigest()
    assert tags["config_sha256"] == config_hash(product_config(cfg))
    assert tags["pandafine_version"] == __version__ and __version__ in tags["software"]
    changed = copy.deepcopy(cfg)
    changed["infer"]["overlap"] = 8
    assert product_tags(changed, 2005, model)["config_sha256"] != tags["config_sha256"]
    study = copy.deepcopy(cfg)
    study["ablation"]["epochs"] = 9  # a study setting does not change what a product is
    assert product_tags(study, 2005, model)["config_sha256"] == tags["config_sha256"]
    with pytest.raises(FileNotFoundError, match="nope.onnx"):
        product_tags(cfg, 2005, tmp_path / "nope.onnx")


def test_cog_written_on_disk_leaves_nothing_beside_the_product(tmp_path, checker, monkeypatch):
    """Large products are assembled on disk by rio-cogeo, whose intermediate file goes in a private
    directory; what a killed run left there is removed by the next write."""
    import pandafine.product.cog as cog

    src = tiled_tif(tmp_path / "src.tif", checker)
    out_dir = tmp_path / "products"
    out_dir.mkdir()
    stale = out_dir / ".PANDA-FINE_2000.a1b2c3d4.cog.part.tif"  # a killed run's staging directory
    stale.mkdir()
    (stale / "tmpabc123.tif").write_bytes(b"partial")
    other = out_dir / "PANDA-FINE_2001.tif"
    other.write_bytes(b"another year")
    monkeypatch.setattr(cog, "IN_MEMORY_BYTES", 0)  # the on-disk path, as for a China-wide product
    out = write_cog(src, out_dir / "PANDA-FINE_2000.tif")
    assert validate_cog(out)[0]
    assert sorted(p.name for p in out_dir.iterdir()) == ["PANDA-FINE_2000.tif", "PANDA-FINE_2001.tif"]
    assert other.read_bytes() == b"another year"
