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
                    "total_light_error", "brightest_1pct_error"):
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
    assert m["test_split"]["interpolation"]["psnr_log_db"] < 60
