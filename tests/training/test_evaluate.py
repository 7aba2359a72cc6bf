"""Evaluation: the interpolation baseline and metrics.json."""

import json

import numpy as np
import pytest

from fake_tiles import stage_config, write_fake_train_zarr
from pandafine.tiles.store import PatchStore
from pandafine.training import evaluate as E
from pandafine.training import train as T


def test_upsample_cells_constant_and_ramp():
    f = 4
    const = np.full((8, 12), 7.0)
    np.testing.assert_allclose(E.upsample_cells(const, f), 7.0)
    cells = np.arange(4.0)[None, :].repeat(3, 0)  # value = cell column index
    blocky = np.kron(cells, np.ones((f, f)))
    up = E.upsample_cells(blocky, f)
    centre = (np.arange(blocky.shape[1]) + 0.5) / f - 0.5  # pixel centres in cell units
    np.testing.assert_allclose(up[0], np.clip(centre, 0, 3))  # linear between cell centres, flat beyond


def test_upsample_cells_respects_block_phase():
    f = 4
    cells = np.random.default_rng(0).random((5, 5))
    full = np.kron(cells, np.ones((f, f)))
    # a patch starting inside a cell sees the same cell means as the full grid
    _, pr, pc = E.block_means(full[2:18, 6:18], f, 2, 6)
    assert (pr, pc) == (2, 2)
    whole = E.upsample_cells(full, f)
    part = E.upsample_cells(full[4:16, 8:20], f, 4, 8)
    np.testing.assert_allclose(part[2:-2, 2:-2], whole[4:16, 8:20][2:-2, 2:-2])


def test_normal_equations_recover_quadratic():
    dn = np.linspace(0, 63, 200)
    coef = np.array([0.5, -1.0, 2.0])
    z = E.apply_poly(dn, coef)
    ne = E.NormalEquations()
    ne.add(dn[:120], z[:120])
    ne.add(np.append(dn[120:], np.nan), np.append(z[120:], 1.0))  # NaN pixels are skipped
    np.testing.assert_allclose(ne.solve(), coef, atol=1e-8)
    assert ne.n == 200


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    zarr_path = write_fake_train_zarr(root / "train.zarr")
    T.train_model(stage_config(epochs=2), zarr_path, root / "model", progress=False)
    return zarr_path, root / "model"


def test_evaluate_writes_metrics_for_both_methods(trained, tmp_path):
    zarr_path, model_dir = trained
    path = E.evaluate_model(stage_config(), zarr_path, model_dir, tmp_path)
    m = json.loads(path.read_text())
    split = m["test_split"]
    store = PatchStore(zarr_path)
    assert split["n_patches"] == len(store.indices("test"))
    assert 0 < split["n_pixels"] <= split["n_patches"] * 16 * 16
    assert split["data_range"]["log"] > 0 and split["data_range"]["radiance"] > 0
    for method in ("model", "interpolation"):
        for key in ("psnr_log_db", "psnr_radiance_db", "ssim_log", "rmse_radiance", "mae_radiance", "r2_log",
                    "total_light_error", "total_light_ratio", "brightest_1pct_error"):
            assert np.isfinite(split[method][key]), (method, key)
    assert m["gain_db"]["psnr_log"] == pytest.approx(split["model"]["psnr_log_db"]
                                                     - split["interpolation"]["psnr_log_db"])
    assert (tmp_path / "test_panels.png").stat().st_size > 1000


def test_evaluate_perfect_model_scores_perfectly(trained, tmp_path, monkeypatch):
    zarr_path, model_dir = trained
    monkeypatch.setattr(E, "predict_log", lambda model, store, idx, bs: np.nan_to_num(T.true_log(store, idx)))
    m = json.loads(E.evaluate_model(stage_config(), zarr_path, model_dir, tmp_path).read_text())
    res = m["test_split"]["model"]
    assert res["psnr_log_db"] > 100  # float32 round trip of z only
    assert res["r2_radiance"] == pytest.approx(1.0) and res["ssim_log"] == pytest.approx(1.0)
    assert res["total_light_error"] == pytest.approx(0.0, abs=1e-6)
    assert res["total_light_ratio"] == pytest.approx(1.0, abs=1e-6)
    assert m["test_split"]["interpolation"]["psnr_log_db"] < 60


# --------------------------------------------------------------------------- streamed evaluation


def _synthetic_split(n=7, p=24, seed=0):
    """True radiance (float32 numbers, some NaN) and two predictions (some NaN) of ``n`` patches."""
    rng = np.random.default_rng(seed)
    true = (1e-5 * rng.lognormal(0, 1.5, (n, p, p))).astype(np.float32).astype(np.float64)
    true[1, :3] = np.nan
    true[4] = np.nan  # a patch with no target
    model = true * rng.normal(1, 0.2, true.shape) + 1e-6 * rng.random(true.shape)
    interp = np.where(rng.random(true.shape) < 0.02, np.nan, true * rng.normal(0.9, 0.4, true.shape))
    return true, {"model": model, "interpolation": interp}


def _in_memory(true, preds):
    mask = E.batch_mask(true, preds)
    ranges = E.data_ranges(true, mask, "synthetic")
    return mask, ranges, {k: E.method_metrics(v, true, mask, *ranges) for k, v in preds.items()}


def _split_batches(true, preds, batch, only=None):
    def make():
        for s in range(0, len(true), batch):
            yield true[s:s + batch], {k: v[s:s + batch] for k, v in preds.items() if only is None or k in only}
    return make


@pytest.mark.parametrize("batch", [1, 3, None])
def test_streamed_metrics_equal_whole_split_formulas(batch):
    true, preds = _synthetic_split()
    mask, (range_log, range_rad), expected = _in_memory(true, preds)
    scan, got = E.streamed_metrics(_split_batches(true, preds, batch or len(true)), "synthetic")
    assert scan.n_pixels == mask.sum()
    assert (scan.range_log, scan.range_radiance) == (range_log, range_rad)  # max/min: exact
    np.testing.assert_array_equal(scan.patch_totals, E.patch_totals(true))
    assert list(got) == ["model", "interpolation"]
    for method, metrics in expected.items():
        assert list(got[method]) == list(metrics)
        for key, value in metrics.items():
            assert got[method][key] == pytest.approx(value, rel=1e-12), (method, key)


def test_streamed_metrics_scan_without_model_rescans_when_model_drops_pixels():
    true, preds = _synthetic_split(seed=1)
    _, _, expected = _in_memory(true, preds)
    # every model pixel finite: the cheap first pass (baseline only) is kept
    scan, got = E.streamed_metrics(_split_batches(true, preds, 2), "s",
                                   scan_batches=_split_batches(true, preds, 3, only={"interpolation"}))
    assert got["model"]["ssim_log"] == pytest.approx(expected["model"]["ssim_log"], rel=1e-12)
    # the model is NaN where the first pass evaluated: the split is scanned again, with the model
    preds["model"][0, 5, 5] = np.nan
    mask, _, expected = _in_memory(true, preds)
    scan, got = E.streamed_metrics(_split_batches(true, preds, 2), "s",
                                   scan_batches=_split_batches(true, preds, 3, only={"interpolation"}))
    assert scan.n_pixels == mask.sum()
    for method, metrics in expected.items():
        for key, value in metrics.items():
            assert got[method][key] == pytest.approx(value, rel=1e-12), (method, key)
    # without a fallback the mismatch is an error
    cheap = E.scan_split(_split_batches(true, preds, 3, only={"interpolation"})(), "s")
    with pytest.raises(E.PixelsChanged, match="second pass"):
        E.score_split(_split_batches(true, preds, 2)(), cheap)


def test_streamed_metrics_errors_name_the_source():
    true, preds = _synthetic_split()
    with pytest.raises(ValueError, match="src: no test pixel"):
        E.scan_split(_split_batches(np.full_like(true, np.nan), preds, 3)(), "src")
    with pytest.raises(ValueError, match="src: test-split target is constant"):
        E.scan_split(_split_batches(np.full_like(true, np.float32(1e-5)), preds, 3)(), "src")
    with pytest.raises(ValueError, match="src: test-split target: .*float32"):
        E.scan_split(_split_batches(true + 1e-9, preds, 3)(), "src")


def test_eval_batch_patches_whole_model_batches():
    assert E.eval_batch_patches(32, 16) == 1024
    assert E.eval_batch_patches(256, 16) == 16
    assert E.eval_batch_patches(256, 16, batch_pixels=1) == 16
    assert E.eval_batch_patches(16, 3, batch_pixels=16 * 16 * 7) == 6
    with pytest.raises(ValueError, match="must be >= 1"):
        E.eval_batch_patches(16, 0)


def test_evaluate_streamed_equals_in_memory(trained, tmp_path):
    """evaluate_model in batches of 2 patches == the whole-split formulas on the same predictions."""
    zarr_path, model_dir = trained
    cfg = stage_config(batch_size=1)  # model batches of 2 patches
    path = E.evaluate_model(cfg, zarr_path, model_dir, tmp_path, batch_pixels=1)  # 2 patches per batch
    got = json.loads(path.read_text())["test_split"]
    store = PatchStore(zarr_path)
    panda_ch, factor, test_idx = E.test_split_setup(cfg, store)
    assert test_idx.size > 2  # several batches
    true = store.read_target(test_idx)[:, 0].astype(np.float64)
    interp, _, _ = E.interpolation_baseline(store, test_idx, factor, panda_ch)
    from pandafine.models.registry import load_trained_model
    model, _ = load_trained_model(model_dir)
    pred = np.expm1(np.maximum(T.predict_log(model, store, test_idx, 2).astype(np.float64), 0)) * 1e-5
    mask = np.isfinite(true) & np.isfinite(pred) & np.isfinite(interp)
    ranges = E.data_ranges(true, mask, "ref")
    assert got["n_pixels"] == mask.sum()
    assert (got["data_range"]["log"], got["data_range"]["radiance"]) == ranges
    for method, p in (("model", pred), ("interpolation", interp)):
        for key, value in E.method_metrics(p, true, mask, *ranges).items():
            assert got[method][key] == pytest.approx(value, rel=1e-9), (method, key)


def test_patches_with_a_halo_train_and_are_scored_on_their_centre_only(tmp_path, monkeypatch):
    zarr_path = write_fake_train_zarr(tmp_path / "train.zarr", halo=8)
    store = PatchStore(zarr_path)
    assert (store.patch, store.halo, store.core) == (32, 8, 16)
    T.train_model(stage_config(epochs=1), zarr_path, tmp_path / "model", progress=False)
    test_idx = store.indices("test")
    centre_pixels = int(np.isfinite(store.read_target(test_idx)).sum())
    m = json.loads(E.evaluate_model(stage_config(), zarr_path, tmp_path / "model", tmp_path / "e1").read_text())
    assert m["test_split"]["n_pixels"] == centre_pixels > 0   # the halo (NaN target) never counts
    assert centre_pixels <= len(test_idx) * 16 * 16
    # a model exact on the centre and wrong everywhere in the halo scores perfectly: the halo is not scored
    def exact_centre(model, store, idx, bs):
        z = np.nan_to_num(T.true_log(store, idx))
        ring = np.ones(z.shape[1:], bool)
        ring[8:24, 8:24] = False
        z[:, ring] = 99.0
        return z
    monkeypatch.setattr(E, "predict_log", exact_centre)
    m = json.loads(E.evaluate_model(stage_config(), zarr_path, tmp_path / "model", tmp_path / "e2").read_text())
    assert m["test_split"]["model"]["psnr_log_db"] > 100
    assert m["test_split"]["model"]["total_light_ratio"] == pytest.approx(1.0, abs=1e-6)
