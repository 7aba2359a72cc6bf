"""Level calibration: the scale that gives the products the target years' total light (pandafine.inference.level)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio

from fake_cubes import CHANNELS, identity_model, infer_test_config, smooth_model, write_cube
from pandafine.core.raster_io import write_raster
from pandafine.inference.infer import LEVEL_TAG, infer_year
from pandafine.inference.level import (
    LightSums,
    calibrate_level,
    choose_blocks,
    light_sums,
    merge_sums,
    patch_pixels_in,
    pooled_scale,
    read_level,
    split_masks,
)
from pandafine.tiles.cube import open_cube

PATCH = 16


def test_split_masks_cover_each_split_patch_inside_the_area():
    rows, cols, splits = np.array([0, 0, 16, 40]), np.array([0, 16, 0, 40]), np.array([0, 1, 2, 0])
    whole = split_masks(rows, cols, splits, PATCH, (0, 0, 64, 64))
    assert [int(whole[s].sum()) for s in ("train", "val", "test")] == [2 * 256, 256, 256]
    assert whole["val"][0:16, 16:32].all() and not whole["val"][16:, :].any()
    # an area starting inside the last patch keeps only that patch's part in it
    part = split_masks(rows, cols, splits, PATCH, (48, 48, 16, 16))
    assert int(part["train"].sum()) == 8 * 8 and part["train"][:8, :8].all()
    assert not part["val"].any() and not part["test"].any()


def test_pooled_scale_is_target_over_prediction_of_train_and_val_only():
    sums = [LightSums(2018, "train", 10, 4.0, 6.0), LightSums(2018, "val", 5, 1.0, 2.0),
            LightSums(2018, "test", 5, 1.0, 100.0), LightSums(2019, "train", 10, 5.0, 7.0)]
    assert pooled_scale(sums) == pytest.approx((6 + 2 + 7) / (4 + 1 + 5), rel=1e-15)
    assert sums[0].ratio == pytest.approx(4 / 6)
    with pytest.raises(ValueError, match="predicted light 0 and target light 6"):
        pooled_scale([LightSums(2018, "train", 10, 0.0, 6.0)])


def test_light_sums_skip_nonfinite_pixels_and_merge_adds_blocks():
    pred = np.array([[1.0, 2.0], [np.nan, 4.0]])
    target = np.array([[2.0, np.nan], [1.0, 8.0]])
    masks = {"train": np.array([[True, True], [True, False]]), "val": np.array([[False, False], [False, True]]),
             "test": np.zeros((2, 2), bool)}
    got = {s.split: s for s in light_sums(2018, pred, target, masks)}
    assert (got["train"].n_pixels, got["train"].predicted, got["train"].target) == (1, 1.0, 2.0)
    assert (got["val"].n_pixels, got["val"].predicted, got["val"].target) == (1, 4.0, 8.0)
    merged = merge_sums(list(got.values()) * 2)
    assert [(s.split, s.n_pixels, s.predicted) for s in merged] == [("train", 2, 2.0), ("val", 2, 8.0), ("test", 0, 0.0)]


def field(shape, seed=0):
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    return np.stack([np.exp(gaussian_filter(rng.normal(size=shape[1:]), 3.0)) for _ in range(shape[0])]
                    ).astype(np.float32)


def write_patches(path, origins, halo: int = 0):
    """A minimal train.zarr: patches at (year, row, col, split) ``origins`` (only their positions matter here).

    With ``halo``, the arrays are ``halo`` px wider on every side, as ``tiles.halo`` makes them.
    """
    import zarr

    n, q = len(origins), PATCH + 2 * halo
    g = zarr.open_group(str(path), mode="w")
    g.create_array("inputs", shape=(n, len(CHANNELS), q, q), dtype="float32")[:] = 0
    g.create_array("target", shape=(n, 1, q, q), dtype="float32")[:] = 0
    for key, col in (("year", 0), ("row", 1), ("col", 2), ("split", 3)):
        g.create_array(key, shape=(n,), dtype="int32" if key != "split" else "int8")[:] = [o[col] for o in origins]
    g.attrs.update(channels=CHANNELS, patch=PATCH, halo=halo,
                   normalization={"mean": [0.0] * len(CHANNELS), "std": [1.0] * len(CHANNELS)})
    return path


@pytest.fixture
def world(tmp_path):
    """Two target years; the identity model predicts the panda channel; the target is 2x it, 5x on test patches."""
    origins, cubes, targets = [], [], []
    for k, year in enumerate((2018, 2019)):
        data = field((3, 120, 136), seed=k)
        cube = write_cube(tmp_path / f"{year}.zarr", data, year=year, chunk=32)
        target = 2.0 * data[0].astype(np.float64)
        for i, (r, c) in enumerate((r, c) for r in range(0, 120 - PATCH + 1, PATCH) for c in range(0, 136, PATCH)
                                   if c + PATCH <= 136):
            split = (0, 0, 1, 2)[i % 4]
            origins.append((year, r, c, split))
            if split == 2:
                target[r:r + PATCH, c:c + PATCH] *= 2.5
        target[100:, :20] = np.nan  # no target there (outside the frames)
        cubes.append(cube)
        targets.append(write_raster(tmp_path / f"target_{year}.tif", target.astype(np.float32), open_cube(cube).grid,
                                    nodata=np.nan))
    return {"tiles": write_patches(tmp_path / "train.zarr", origins), "cubes": cubes, "targets": targets,
            "model": identity_model(tmp_path / "identity.onnx")}


def test_calibrate_level_recovers_the_known_scale_from_train_and_val(tmp_path, world):
    cfg = infer_test_config()
    rec = calibrate_level(cfg, world["model"], world["tiles"], world["cubes"], world["targets"], tmp_path / "level.json")
    assert rec["scale"] == pytest.approx(2.0, rel=1e-6)
    assert read_level(tmp_path / "level.json") == pytest.approx(2.0, rel=1e-6)
    on_disk = json.loads((tmp_path / "level.json").read_text())
    assert on_disk["method"] == "pooled" and on_disk["fit_splits"] == ["train", "val"]
    test = on_disk["pooled"]["test"]
    assert test["ratio_scaled"] == pytest.approx(1 / 2.5, rel=1e-6)  # the test patches' 5x target is not fitted
    # the brightest test pixels, like all test pixels, are predicted at 1/5 of their target: -0.8, and -0.6 after x2
    assert on_disk["test_brightest_1pct_error"]["before"] == pytest.approx(-0.8, rel=1e-6)
    assert on_disk["test_brightest_1pct_error"]["after"] == pytest.approx(-0.6, rel=1e-6)
    assert {(s["year"], s["split"]) for s in on_disk["sums"]} == {(y, s) for y in (2018, 2019)
                                                                  for s in ("train", "val", "test")}


def test_patches_with_a_halo_are_measured_on_their_centre(tmp_path, world):
    """The same patches stored with a halo: the splits' pixels are the patches', not their halos'."""
    import zarr

    plain = zarr.open_group(str(world["tiles"]), mode="r")
    origins = list(zip(*(plain[k][:].tolist() for k in ("year", "row", "col", "split"))))
    wide = write_patches(tmp_path / "wide.zarr", origins, halo=8)
    rec = calibrate_level(infer_test_config(), world["model"], wide, world["cubes"], world["targets"],
                          tmp_path / "level.json")
    assert rec["scale"] == pytest.approx(2.0, rel=1e-6)
    on_disk = json.loads((tmp_path / "level.json").read_text())
    assert on_disk["pooled"]["test"]["ratio_scaled"] == pytest.approx(1 / 2.5, rel=1e-6)
    assert on_disk["test_brightest_1pct_error"]["after"] == pytest.approx(-0.6, rel=1e-6)


def test_calibrate_level_by_blocks_equals_the_whole_grid(tmp_path, world):
    model = smooth_model(tmp_path / "smooth.onnx")
    cfg = infer_test_config()
    whole = calibrate_level(cfg, model, world["tiles"], world["cubes"], world["targets"], tmp_path / "a.json")
    cfg["grid"]["block"] = 64
    blocked = calibrate_level(cfg, model, world["tiles"], world["cubes"], world["targets"], tmp_path / "b.json")
    assert blocked["scale"] == pytest.approx(whole["scale"], rel=1e-9)
    assert blocked["test_brightest_1pct_error"]["before"] == pytest.approx(whole["test_brightest_1pct_error"]["before"],
                                                                          rel=1e-9)
    assert [s["n_pixels"] for s in blocked["sums"]] == [s["n_pixels"] for s in whole["sums"]]
    assert whole["scale"] != pytest.approx(1.0, rel=1e-2)


def test_level_none_writes_scale_one_and_bad_values_are_refused(tmp_path, world):
    cfg = infer_test_config()
    cfg["infer"]["level"] = "none"
    rec = calibrate_level(cfg, world["model"], world["tiles"], world["cubes"], world["targets"], tmp_path / "l.json")
    assert rec["scale"] == 1.0 and "sums" not in rec and read_level(tmp_path / "l.json") == 1.0
    with pytest.raises(ValueError, match="infer.level: value 'mean' must be one of pooled, none"):
        calibrate_level(cfg, world["model"], world["tiles"], world["cubes"], world["targets"], tmp_path / "x.json",
                        method="mean")
    (tmp_path / "bad.json").write_text(json.dumps({"scale": -1}))
    with pytest.raises(ValueError, match="bad.json: level scale -1.0 must be a finite number > 0"):
        read_level(tmp_path / "bad.json")
    with pytest.raises(ValueError, match="1 cube\\(s\\) and 2 target\\(s\\)"):
        calibrate_level(cfg, world["model"], world["tiles"], world["cubes"][:1], world["targets"], tmp_path / "y.json")
    assert not (tmp_path / "x.json").exists() and not (tmp_path / "y.json").exists()


def test_infer_with_a_level_multiplies_the_product_and_tags_it(tmp_path, world):
    cfg = infer_test_config()
    plain = infer_year(cfg, world["cubes"][0], world["model"], tmp_path / "plain.tif", progress=False)
    scaled = infer_year(cfg, world["cubes"][0], world["model"], tmp_path / "scaled.tif", progress=False, level=2.0)
    with rasterio.open(plain) as a, rasterio.open(scaled) as b:
        np.testing.assert_array_equal(b.read(1), a.read(1) * np.float32(2.0))
        assert b.tags()[LEVEL_TAG] == "2" and LEVEL_TAG not in a.tags()
    with pytest.raises(ValueError, match="level scale 0.0 must be a finite number > 0"):
        infer_year(cfg, world["cubes"][0], world["model"], tmp_path / "zero.tif", progress=False, level=0.0)
    assert not (tmp_path / "zero.tif").exists()


def test_choose_blocks_keeps_those_with_the_most_train_and_val_pixels_in_grid_order():
    from pandafine.core.blocks import Block

    blocks = [Block(0, j, 0, 32 * j, 32, 32) for j in range(4)]
    # block 0: one train patch; block 1: none; block 2: two val patches; block 3: one test patch only
    rows, cols, splits = np.array([0, 0, 16, 0]), np.array([0, 64, 64, 96]), np.array([0, 1, 1, 2])
    assert [b.col for b in choose_blocks(blocks, rows, cols, splits, PATCH, None)] == [0, 2, 3]
    assert [b.col for b in choose_blocks(blocks, rows, cols, splits, PATCH, 2)] == [0, 2]
    assert [b.col for b in choose_blocks(blocks, rows, cols, splits, PATCH, 1)] == [2]
    # a patch straddling two blocks counts with its part in each
    assert patch_pixels_in((0, 0, 32, 40), np.array([0]), np.array([32]), PATCH) == 16 * 8


def test_level_on_fewer_blocks_predicts_only_those(tmp_path, world):
    cfg = infer_test_config()
    cfg["grid"]["block"] = 64
    every = calibrate_level(cfg, world["model"], world["tiles"], world["cubes"], world["targets"], tmp_path / "a.json")
    cfg["infer"]["level_max_blocks"] = 1
    one = calibrate_level(cfg, world["model"], world["tiles"], world["cubes"], world["targets"], tmp_path / "b.json")
    assert one["scale"] == pytest.approx(2.0, rel=1e-6) == every["scale"]  # the known answer holds on any block
    n = lambda rec: sum(s["n_pixels"] for s in rec["sums"])  # noqa: E731
    assert n(one) < n(every) and n(one) <= 2 * 64 * 64


def test_a_target_year_without_patches_is_skipped_and_none_at_all_is_an_error(tmp_path, world, caplog):
    import logging

    import zarr

    cfg = infer_test_config()
    both = calibrate_level(cfg, world["model"], world["tiles"], world["cubes"], world["targets"], tmp_path / "a.json")
    g = zarr.open_group(str(world["tiles"]), mode="r+")
    years = np.asarray(g["year"][:])
    g["year"][:] = np.where(years == 2019, 2017, years)  # no patch of 2019 any more
    with caplog.at_level(logging.WARNING, logger="pandafine.inference.level"):
        only = calibrate_level(cfg, world["model"], world["tiles"], world["cubes"], world["targets"],
                               tmp_path / "b.json")
    assert "no patches of target year 2019" in caplog.text
    assert {s["year"] for s in only["sums"]} == {2018} and only["scale"] == pytest.approx(2.0, rel=1e-6)
    assert len(both["sums"]) == 2 * len(only["sums"])
    g["year"][:] = 2017
    with pytest.raises(ValueError, match="no patches of any target year"):
        calibrate_level(cfg, world["model"], world["tiles"], world["cubes"], world["targets"], tmp_path / "c.json")
    assert not (tmp_path / "c.json").exists()


def test_predict_area_of_a_two_band_predictor_keeps_both_bands(tmp_path):
    """Ensemble predictors give (mean, spread): predict_area blends both, as infer_year does."""
    from pandafine.inference.blending import TileLayout
    from pandafine.inference.infer import InferParams, predict_area

    data = field((3, 100, 90))
    params = InferParams(32, 8, "hann", 2, ("CPUExecutionProvider",))

    def predictor(row, cols, batch):
        return np.stack([batch[:, 0], 3 * batch[:, 0]], axis=1)

    layout = TileLayout(100, 90, 32, 8, "hann", area=(10, 20, 60, 50))
    out = predict_area(predictor, data, layout, params, bands=2)
    assert out.shape == (2, 60, 50)
    np.testing.assert_allclose(out[0], data[0, 10:70, 20:70], rtol=1e-5)
    np.testing.assert_allclose(out[1], 3 * out[0], rtol=1e-5)
