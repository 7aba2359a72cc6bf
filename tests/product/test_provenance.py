"""pandafine.verify: provenance recorded next to the products, drift found and named."""

from __future__ import annotations

import hashlib
import io
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from affine import Affine

from pandafine.core.checksums import tree_digest, tree_sha256
from pandafine.product.provenance import (
    PROVENANCE_NAME,
    Drift,
    default_inputs,
    read_provenance,
    record_provenance,
    run_verify,
    verify_products,
)

YEARS = (2018, 2019)


def _write_cube(path: Path, year: int) -> None:
    import zarr

    root = zarr.open_group(str(path), mode="w")
    arr = root.create_array("inputs", shape=(2, 32, 32), chunks=(2, 16, 16), dtype="float32")
    arr[:] = np.arange(2 * 32 * 32, dtype="float32").reshape(2, 32, 32) + year
    root.attrs["year"] = year


@pytest.fixture()
def results(tmp_path, tiny_config_path):
    """A results/ tree laid out as the workflow leaves it: config, model, cubes, two COGs."""
    import rasterio

    from pandafine.config import load_config
    from pandafine.product.cog import product_tags, write_cog

    res = tmp_path / "results"
    (res / "models" / "unet").mkdir(parents=True)
    shutil.copy(tiny_config_path, res / "config.yaml")
    model = res / "models" / "unet" / "model.onnx"
    model.write_bytes(b"onnx model bytes v1" * 10)
    cfg = load_config(res / "config.yaml")
    out = res / "panda_fine"
    out.mkdir()
    for year in YEARS:
        cube = res / "tiles" / "cube" / f"{year}.zarr"
        _write_cube(cube, year)
        tiled = tmp_path / f"tiled_{year}.tif"
        data = np.linspace(0, 1e-8 * year, 32 * 32, dtype="float32").reshape(32, 32)
        with rasterio.open(tiled, "w", driver="GTiff", width=32, height=32, count=1, dtype="float32",
                           crs="EPSG:3857", transform=Affine(125, 0, 0, 0, -125, 0), nodata=float("nan"),
                           tiled=True, blockxsize=16, blockysize=16) as ds:
            ds.write(data, 1)
        tags = product_tags(cfg, year, model)
        tags["input_sha256"] = tree_sha256(cube)      # what infer records once the cube is tagged
        write_cog(tiled, out / f"PANDA-FINE_{year}.tif", blocksize=16, tags=tags)
    return res


def _check(res: Path) -> tuple[int, str]:
    buf = io.StringIO()
    rc = run_verify(res / "panda_fine", out=buf)
    return rc, buf.getvalue()


def test_tree_digest_is_a_known_answer_and_order_free(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.bin").write_bytes(b"xyz")
    (tmp_path / "b.json").write_text("{}")
    sha = {p: hashlib.sha256(b).hexdigest() for p, b in (("a/x.bin", b"xyz"), ("b.json", b"{}"))}
    expected = hashlib.sha256("".join(f"{p}\0{sha[p]}\n" for p in sorted(sha)).encode()).hexdigest()
    assert tree_sha256(tmp_path) == expected
    assert tree_digest(reversed(list(sha.items()))) == expected
    assert tree_sha256(tmp_path / "b.json") == sha["b.json"]
    with pytest.raises(FileNotFoundError, match="nope"):
        tree_sha256(tmp_path / "nope")


def test_default_inputs_follow_the_workflow_layout(results):
    found = default_inputs(results / "panda_fine")
    assert found["config"] == (results / "config.yaml").resolve()
    assert found["model"] == (results / "models" / "unet" / "model.onnx").resolve()
    assert found["cubes"] == (results / "tiles" / "cube").resolve()


def test_default_model_follows_infer_precision(results):
    import yaml

    cfg = yaml.safe_load((results / "config.yaml").read_text())
    cfg["infer"]["precision"] = "int8"
    (results / "config.yaml").write_text(yaml.safe_dump(cfg))
    assert default_inputs(results / "panda_fine")["model"] is None  # no int8 model yet: not the fp32 one
    (results / "models" / "unet" / "model.int8.onnx").write_bytes(b"int8")
    assert default_inputs(results / "panda_fine")["model"] == (results / "models" / "unet" / "model.int8.onnx").resolve()


def test_recorded_products_verify_clean(results):
    assert run_verify(results / "panda_fine", record=True, out=io.StringIO()) == 0
    doc = read_provenance(results / "panda_fine" / PROVENANCE_NAME)
    assert sorted(doc["products"]) == [f"PANDA-FINE_{y}.tif" for y in YEARS]
    for year in YEARS:
        entry = doc["products"][f"PANDA-FINE_{year}.tif"]
        cog = results / "panda_fine" / f"PANDA-FINE_{year}.tif"
        assert entry["sha256"] == hashlib.sha256(cog.read_bytes()).hexdigest()
        assert entry["tags"]["year"] == str(year)
        assert entry["inputs"]["cube"]["sha256"] == entry["tags"]["input_sha256"]
    assert doc["model"]["sha256"] == hashlib.sha256(
        (results / "models" / "unet" / "model.onnx").read_bytes()).hexdigest()
    rc, report = _check(results)
    assert rc == 0 and "2 products match" in report


def test_one_changed_pixel_is_drift_of_that_cog_only(results):
    import rasterio
    from rasterio.windows import Window

    record_provenance(results / "panda_fine", **default_inputs(results / "panda_fine"))
    cog = results / "panda_fine" / "PANDA-FINE_2019.tif"
    with rasterio.open(cog, "r+", IGNORE_COG_LAYOUT_BREAK="YES") as ds:
        px = ds.read(1, window=Window(5, 7, 1, 1))
        ds.write(px + np.float32(1e-9), 1, window=Window(5, 7, 1, 1))
    drifts = verify_products(results / "panda_fine", **default_inputs(results / "panda_fine"))
    assert [(Path(d.path).name, d.what) for d in drifts] == [("PANDA-FINE_2019.tif", "sha256")]
    rc, report = _check(results)
    assert rc == 1
    assert "PANDA-FINE_2019.tif: sha256 changed" in report and "PANDA-FINE_2018.tif" not in report


def test_changed_model_is_drift_of_the_model_and_of_every_product(results):
    record_provenance(results / "panda_fine", **default_inputs(results / "panda_fine"))
    model = results / "models" / "unet" / "model.onnx"
    old = hashlib.sha256(model.read_bytes()).hexdigest()
    model.write_bytes(b"retrained model")
    new = hashlib.sha256(b"retrained model").hexdigest()
    drifts = verify_products(results / "panda_fine", **default_inputs(results / "panda_fine"))
    assert Drift(str(model.resolve()), "model sha256", old, new) in drifts
    tagged = [d for d in drifts if "model_sha256" in d.what]
    assert sorted(Path(d.path).name for d in tagged) == [f"PANDA-FINE_{y}.tif" for y in YEARS]
    assert all(d.recorded == old and d.current == new for d in tagged)
    rc, report = _check(results)
    assert rc == 1 and "model.onnx: model sha256 changed" in report


def test_changed_cube_and_config_are_named(results):
    record_provenance(results / "panda_fine", **default_inputs(results / "panda_fine"))
    import zarr

    arr = zarr.open_array(str(results / "tiles" / "cube" / "2018.zarr" / "inputs"), mode="r+")
    arr[0, 0, 0] = -1.0
    cfg = yaml.safe_load((results / "config.yaml").read_text())
    cfg["run"]["seed"] = 43
    (results / "config.yaml").write_text(yaml.safe_dump(cfg))
    drifts = verify_products(results / "panda_fine", **default_inputs(results / "panda_fine"))
    whats = {(Path(d.path).name, d.what) for d in drifts}
    assert ("2018.zarr", "input cube of PANDA-FINE_2018.tif sha256") in whats
    assert not any(name == "2019.zarr" for name, _ in whats)
    assert ("config.yaml", "config sha256") in whats


def test_missing_and_unrecorded_products(results):
    out = results / "panda_fine"
    record_provenance(out)
    (out / "PANDA-FINE_2018.tif").rename(out / "PANDA-FINE_2017.tif")
    drifts = {(Path(d.path).name, d.what) for d in verify_products(out)}
    assert drifts == {("PANDA-FINE_2018.tif", "missing"),
                      ("PANDA-FINE_2017.tif", f"not recorded in {PROVENANCE_NAME}")}


def test_without_record_the_error_says_how_to_make_one(results):
    with pytest.raises(FileNotFoundError, match="--record"):
        verify_products(results / "panda_fine")
