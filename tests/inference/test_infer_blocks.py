"""Blocked inference: each spatial block inferred apart (reading its halo), then assembled, equals one run."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio

from fake_cubes import infer_test_config, smooth_model, write_cube
from pandafine.core.blocks import block_named, block_size_errors, grid_blocks
from pandafine.inference.infer import infer_year
from pandafine.product.assemble import assemble_product
from pandafine.product.cog import validate_cog
from pandafine.tiles.cube import open_cube


@pytest.fixture
def cfg():
    return infer_test_config()


def field(shape, seed=0):
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    data = np.stack([gaussian_filter(rng.normal(size=shape[1:]), 2.0) * 3 + 1 for _ in range(shape[0])])
    data[0, 150:, :40] = np.nan  # a nodata corner (sea): NaN in the product
    return data.astype(np.float32)


def test_grid_blocks_cover_the_grid_once(tmp_path):
    cube = open_cube(write_cube(tmp_path / "c.zarr", field((3, 200, 232))))
    blocks = grid_blocks(cube.grid, 96)
    assert [b.name for b in blocks[:4]] == ["r000c000", "r000c001", "r000c002", "r001c000"]
    cover = np.zeros(cube.grid.shape, int)
    for b in blocks:
        cover[b.row_off:b.row_off + b.height, b.col_off:b.col_off + b.width] += 1
    assert (cover == 1).all() and len(blocks) == 3 * 3
    assert grid_blocks(cube.grid, 0) == grid_blocks(cube.grid, None) == [block_named(cube.grid, 0, "r000c000")]
    assert block_named(cube.grid, 96, "r002c001").area == (192, 96, 8, 96)
    with pytest.raises(ValueError, match="rows 0..2, columns 0..2"):
        block_named(cube.grid, 96, "r003c000")
    assert block_size_errors(96, 8, 256) == ["key 'grid.block': value 96 must be a multiple of product.blocksize=256"]
    assert block_size_errors(512, 8, 256) == [] and block_size_errors(0, 8, 512) == []


@pytest.mark.parametrize("block", [96, 128])
def test_blocks_inferred_apart_and_assembled_equal_one_run(tmp_path, cfg, block):
    model = smooth_model(tmp_path / "m.onnx")
    cube_path = write_cube(tmp_path / "2018.zarr", field((3, 200, 232)))
    grid = open_cube(cube_path).grid
    whole = infer_year(cfg, cube_path, model, tmp_path / "whole.tif", progress=False)
    parts = []
    for b in grid_blocks(grid, block):
        parts.append(infer_year(cfg, cube_path, model, tmp_path / "blocks" / f"{b.name}.tif", progress=False,
                                area=b.area))
        with rasterio.open(parts[-1]) as src:
            assert (src.height, src.width) == (b.height, b.width)
    assert len(parts) >= 4
    out = assemble_product(parts[::-1], grid, tmp_path / "assembled.tif", compress="zstd", blocksize=256)
    assert validate_cog(out)[0]
    with rasterio.open(whole) as a, rasterio.open(out) as b:
        one, blocked = a.read(1), b.read(1)
        assert b.tags() == a.tags() and b.descriptions == a.descriptions and b.tags(1) == a.tags(1)
        assert b.transform == a.transform and b.crs == a.crs
    assert np.isnan(one[150:, :40]).all()
    np.testing.assert_array_equal(np.isnan(blocked), np.isnan(one))
    ok = np.isfinite(one)
    # the same tiles, windows and summation order per pixel: equal up to the model's batch composition
    assert np.max(np.abs(blocked[ok] - one[ok])) <= 1e-6 * np.max(np.abs(one[ok]))


def test_demo_inference_settings_in_blocks_equal_one_run(tmp_path):
    """The demo config's own tiling (config.yaml: 384 px tiles, 40 px overlap) on a grid of several tiles,
    in 4 x 4 blocks of 256 px with 128 px product blocks, equals the single-block run (the tiny config's
    workflow run in blocks is tests/workflow/test_workflow.py::test_blocked_run_equals_the_single_block_run)."""
    import yaml

    from repo_paths import REPO

    cfg = yaml.safe_load((REPO / "config.yaml").read_text())
    cfg["product"]["blocksize"] = 128
    assert (cfg["infer"]["tile"], cfg["infer"]["overlap"]) == (384, 40)
    model = smooth_model(tmp_path / "m.onnx")
    cube_path = write_cube(tmp_path / "2018.zarr", field((3, 1000, 1000)), chunk=256)
    grid = open_cube(cube_path).grid
    whole = infer_year(cfg, cube_path, model, tmp_path / "whole.tif", progress=False)
    blocks = grid_blocks(grid, 256)
    assert len(blocks) == 16
    parts = [infer_year(cfg, cube_path, model, tmp_path / "blocks" / f"{b.name}.tif", progress=False, area=b.area)
             for b in blocks]
    out = assemble_product(parts, grid, tmp_path / "assembled.tif", compress="zstd", blocksize=128)
    with rasterio.open(whole) as a, rasterio.open(out) as b:
        one, blocked = a.read(1), b.read(1)
    np.testing.assert_array_equal(np.isnan(blocked), np.isnan(one))
    ok = np.isfinite(one)
    assert np.max(np.abs(blocked[ok] - one[ok])) <= 1e-6 * np.max(np.abs(one[ok]))


def test_assembly_refuses_blocks_of_another_run(tmp_path, cfg):
    model = smooth_model(tmp_path / "m.onnx")
    cube_path = write_cube(tmp_path / "2018.zarr", field((3, 200, 232)))
    grid = open_cube(cube_path).grid
    a, b = grid_blocks(grid, 128)[:2]
    pa = infer_year(cfg, cube_path, model, tmp_path / "a.tif", progress=False, area=a.area)
    other = smooth_model(tmp_path / "other.onnx", seed=1)
    pb = infer_year(cfg, cube_path, other, tmp_path / "b.tif", progress=False, area=b.area)
    with pytest.raises(ValueError, match=r"b\.tif: does not belong with .*a\.tif .*model_sha256"):
        assemble_product([pa, pb], grid, tmp_path / "out.tif")
    with pytest.raises(ValueError, match="overlaps another block"):
        assemble_product([pa, pa], grid, tmp_path / "out.tif")
    assert not (tmp_path / "out.tif").exists()


def test_region_mask_leaves_pixels_outside_the_outline_nodata(tmp_path, cfg):
    """region.mask: pixels whose centre is outside the outline are NaN, inside they are the unmasked run's;
    blocks inferred apart with the mask equal the masked whole-grid run, and only blocks touching it are planned."""
    import json

    from rasterio.warp import transform

    from pandafine.core.region import blocks_touching, read_outline

    model = smooth_model(tmp_path / "m.onnx")
    cube_path = write_cube(tmp_path / "2018.zarr", field((3, 200, 232)))
    grid = open_cube(cube_path).grid
    # a triangle in lon/lat over the grid's upper left (pixel rows 0..150, columns 0..150)
    corners = [grid.transform * (c, r) for c, r in [(0, 0), (150, 0), (0, 150), (0, 0)]]
    lon, lat = transform(grid.crs, "EPSG:4326", [x for x, _ in corners], [y for _, y in corners])
    mask = tmp_path / "outline.geojson"
    mask.write_text(json.dumps({"type": "Feature", "properties": {}, "geometry": {
        "type": "Polygon", "coordinates": [[[a, b] for a, b in zip(lon, lat)]]}}))
    masked_cfg = {**cfg, "region": {**cfg["region"], "mask": str(mask)}}
    plain = rasterio.open(infer_year(cfg, cube_path, model, tmp_path / "plain.tif", progress=False)).read(1)
    whole = rasterio.open(infer_year(masked_cfg, cube_path, model, tmp_path / "whole.tif", progress=False)).read(1)
    rows, cols = np.mgrid[0:200, 0:232] + 0.5
    inside, outside = rows + cols < 149, rows + cols > 151  # away from the diagonal's pixel centres
    np.testing.assert_array_equal(whole[inside], plain[inside])
    assert np.isnan(whole[outside]).all() and np.isfinite(plain[outside]).any()

    touching = blocks_touching(grid_blocks(grid, 64), grid, read_outline(mask, grid.crs))
    assert [b.name for b in touching] == ["r000c000", "r000c001", "r000c002", "r001c000", "r001c001",
                                          "r002c000"]
    parts = [infer_year(masked_cfg, cube_path, model, tmp_path / "blocks" / f"{b.name}.tif", progress=False,
                        area=b.area) for b in touching]
    out = rasterio.open(assemble_product(parts, grid, tmp_path / "assembled.tif", blocksize=64)).read(1)
    np.testing.assert_array_equal(np.isnan(out), np.isnan(whole))
    ok = np.isfinite(whole)
    assert np.max(np.abs(out[ok] - whole[ok])) <= 1e-6 * np.max(np.abs(whole[ok]))


def test_infer_job_resources_follow_the_block():
    from pandafine.core.blocks import INFER_MINUTES_PER_MPX, MIN_JOB_MINUTES, infer_job_resources

    mem, minutes = infer_job_resources(4096, 4096, 128, 12)
    assert infer_job_resources(4 * 4096, 4096, 128, 12)[0] == mem  # taller: same buffers
    assert infer_job_resources(4096, 4 * 4096, 128, 12)[0] > mem   # wider: wider row bands
    assert infer_job_resources(4 * 4096, 4096, 128, 12)[1] == pytest.approx(4 * minutes, abs=1)
    assert minutes == int(np.ceil(4096 * 4096 / 1e6 * INFER_MINUTES_PER_MPX))
    assert infer_job_resources(64, 64, 64, 12)[1] == MIN_JOB_MINUTES
    with pytest.raises(ValueError, match="positive"):
        infer_job_resources(0, 64, 64, 12)


def test_streaming_job_minutes_follow_the_grid():
    """A per-year job that streams the whole grid asks for its measured cost per megapixel times the grid's."""
    from affine import Affine

    from pandafine.core.blocks import (
        MIN_JOB_MINUTES,
        RUNTIME_SAFETY,
        STREAMING_SECONDS_PER_MPX,
        streaming_job_minutes,
    )
    from pandafine.core.grid import CHINA_ALBERS, Grid

    def grid(side):
        return Grid(CHINA_ALBERS, Affine(125.0, 0, 0, 0, -125.0, 0), side, side, 8)

    china = streaming_job_minutes("cube", grid(43_000))  # ~1.85 Gpx, China's bbox
    assert china == int(np.ceil(STREAMING_SECONDS_PER_MPX["cube"] * 43_000 ** 2 / 1e6 * RUNTIME_SAFETY / 60))
    assert streaming_job_minutes("cube", grid(2 * 43_000)) == pytest.approx(4 * china, abs=4)  # rounded up
    assert streaming_job_minutes("mosaic", grid(352)) == MIN_JOB_MINUTES  # the demo
    with pytest.raises(ValueError, match="no measured cost for stage 'infer'"):
        streaming_job_minutes("infer", grid(352))
