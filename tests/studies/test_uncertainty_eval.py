"""uncertainty.json of a trained model: constant spread, heteroscedastic head and residual ensemble."""

import json

import numpy as np
import pytest
import yaml

from fake_tiles import stage_config, write_fake_train_zarr
from pandafine.core.scaling import log_to_radiance, radiance_to_log
from pandafine.studies import uncertainty as U
from pandafine.studies.uncertainty_eval import evaluate_uncertainty
from pandafine.tiles.store import PatchStore
from pandafine.training import evaluate as E
from pandafine.training import train as T


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("unc")
    zarr_path = write_fake_train_zarr(root / "train.zarr")
    T.train_model(stage_config(epochs=2), zarr_path, root / "model", progress=False)
    metrics = json.loads(E.evaluate_model(stage_config(), zarr_path, root / "model", root / "eval").read_text())
    return zarr_path, root / "model", metrics


#: Companions as small as the fake tiles allow: what is tested is the wiring, not their skill.
SMALL = {"members": 4, "epochs": 1, "hetero": {"name": "hetero", "width": 4, "depth": 2},
         "generative": {"name": "flow", "width": 4, "depth": 2, "data_scale": 0.1,
                        "sampler": {"kind": "heun", "steps": 2}}}


def unc_config(**sections) -> dict:
    return {**stage_config(), "uncertainty": {**SMALL, **sections}}


def _val_rms(zarr_path, model_dir) -> tuple[float, int]:
    """RMS residual in z of the model on the validation split, over metrics.json's kind of pixels."""
    from pandafine.models.registry import load_trained_model

    store = PatchStore(zarr_path)
    idx = store.indices("val")
    model, _ = load_trained_model(model_dir)
    z = radiance_to_log(log_to_radiance(T.predict_log(model, store, idx, 8).astype(np.float64)))
    x, t = store.read(idx)
    rows, cols = np.asarray(store.extra["row"])[idx], np.asarray(store.extra["col"])[idx]
    dn = E.upsample_patches(x[:, store.channels.index("panda")], 8, rows, cols)
    t = t[:, 0].astype(np.float64)
    ok = np.isfinite(t) & np.isfinite(dn) & np.isfinite(z)
    return float(np.sqrt(np.mean((z[ok] - radiance_to_log(t[ok])) ** 2))), int(ok.sum())


def test_uncertainty_json_scores_constant_spread_on_metrics_pixels(trained, tmp_path):
    zarr_path, model_dir, metrics = trained
    path = evaluate_uncertainty(unc_config(hetero=None, generative=None), zarr_path, model_dir, tmp_path / "out")
    assert path == tmp_path / "out" / U.UNCERTAINTY_NAME
    doc = json.loads(path.read_text())
    split = doc["test_split"]
    assert split["methods"] == ["base", "gaussian_constant"]  # companions switched off
    assert doc["models"] == {} and doc["cost"]["network_calls_per_member"] is None
    # sigma_const: the validation RMS residual of the model, computed here independently
    rms, n_val = _val_rms(zarr_path, model_dir)
    assert doc["sigma_const"] > 0 and doc["sigma_const"] == pytest.approx(rms, rel=1e-9)
    assert doc["n_val_pixels"] == n_val
    # the same pixels, log space and data range as metrics.json: base PSNR(log) = the model's psnr_log_db
    ms = metrics["test_split"]
    assert split["n_pixels"] == ms["n_pixels"] and split["n_patches"] == ms["n_patches"]
    assert split["data_range"] == pytest.approx(ms["data_range"]["log"], rel=1e-6)
    overall = split["overall"]
    assert overall["base"]["psnr_log_db"] == pytest.approx(ms["model"]["psnr_log_db"], rel=1e-5)
    assert overall["base"]["rmse_log"] == pytest.approx(ms["model"]["rmse_log"], rel=1e-5)
    g = overall["gaussian_constant"]
    assert g["spread_rms"] == pytest.approx(doc["sigma_const"], rel=1e-5)
    assert g["crps"] > 0 and 0 < g["coverage"]["50"] <= g["coverage"]["90"] <= 1
    assert g["spread_skill"] == pytest.approx(doc["sigma_const"] / overall["base"]["rmse_log"], rel=1e-4)
    # per PANDA class: every class named; the counts add up; an absent class is null
    classes = split["classes"]
    assert set(classes) == set(U.CLASS_NAMES)
    present = {k: v for k, v in classes.items() if v is not None}
    assert sum(v["n_pixels"] for v in present.values()) == split["n_pixels"]  # no pixel without a DN
    for block in present.values():
        assert set(block) >= {"n_pixels", "base", "gaussian_constant"}
    assert doc["source"]["checkpoint"].endswith("checkpoint.pt")


def test_absent_class_is_null(trained, tmp_path, monkeypatch):
    """With every cell's PANDA DN 10 (lit), unlit and saturated have no pixels: null blocks."""
    import pandafine.studies.uncertainty_eval as UE

    zarr_path, model_dir, _ = trained
    monkeypatch.setattr(UE, "cell_dn", lambda x, ch: np.full(x[:, ch].shape, 10.0))
    cfg = unc_config(hetero=None, generative=None)
    split = json.loads(evaluate_uncertainty(cfg, zarr_path, model_dir, tmp_path).read_text())["test_split"]
    assert split["classes"]["unlit"] is None and split["classes"]["saturated"] is None
    assert split["classes"]["lit"]["n_pixels"] == split["n_pixels"]


def test_command_scores_all_three_on_test_split_and_holdout(trained, tmp_path, tiny_config):
    """The CLI trains both companions, scores four methods on both scenes; a rerun reuses the companions."""
    from pandafine.cli import main

    zarr_path, model_dir, metrics = trained
    cfg_path = tmp_path / "cfg.yaml"
    cfg_path.write_text(yaml.safe_dump({**tiny_config, "model": stage_config()["model"], "uncertainty": SMALL}))
    out = tmp_path / "cli"
    argv = ["uncertainty", "--config", str(cfg_path), "--tiles", str(zarr_path), "--model-dir", str(model_dir),
            "--out", str(out), "--holdout", str(zarr_path), "--members", "4"]
    assert main(argv) == 0
    doc = json.loads((out / U.UNCERTAINTY_NAME).read_text())
    for name in ("test_split", "holdout_scene"):
        assert doc[name]["methods"] == ["base", "ensemble", "gaussian_constant", "gaussian_hetero"]
        ens = doc[name]["overall"]["ensemble"]
        assert ens["members"] == 4 and ens["crps"] > 0 and ens["spread_rms"] >= 0
        # the recipe keeps the members' mean at the model's prediction: the ensemble mean scores as the base
        assert ens["psnr_log_gain_db"] == pytest.approx(0.0, abs=1e-6)
        h = doc[name]["overall"]["gaussian_hetero"]
        assert h["crps"] > 0 and 0 < h["coverage"]["50"] <= h["coverage"]["90"] <= 1
    # the held-out scene is every patch with a target: here the same store, so more patches than its test split
    assert doc["holdout_scene"]["n_patches"] > doc["test_split"]["n_patches"] == metrics["test_split"]["n_patches"]
    # the base is the same model in both: its test-split PSNR is metrics.json's
    assert doc["test_split"]["overall"]["base"]["psnr_log_db"] == pytest.approx(
        metrics["test_split"]["model"]["psnr_log_db"], rel=1e-5)
    # spreads scaled by factors fitted on the validation split: the head's ratio scales by exactly its factor
    scales = doc["spread_scale"]
    assert scales["fitted_on"] == "validation split" and scales["ensemble"] > 0 and scales["gaussian_hetero"] > 0
    raw = doc["holdout_scene"]["uncalibrated"]["gaussian_hetero"]["spread_skill"]
    assert doc["holdout_scene"]["overall"]["gaussian_hetero"]["spread_skill"] == pytest.approx(
        raw * scales["gaussian_hetero"], rel=1e-4)
    # the ensemble's recipe is written beside the companion's checkpoint, for its ensemble products
    from pandafine.inference.ensemble import read_ensemble_file

    recipe = read_ensemble_file(out / "uncertainty_models" / "generative" / "checkpoint.pt", 8)
    assert recipe.scale == pytest.approx(scales["ensemble"], rel=1e-9) and recipe.recentre and not recipe.antithetic
    assert doc["cost"]["network_calls_per_member"] == 4 and doc["cost"]["members"] == 4
    assert set(doc["models"]) == {"hetero", "generative"}
    assert (out / "uncertainty.png").stat().st_size > 10_000  # spread beside error, reliability curves
    assert doc["models"]["hetero"]["model_config"]["base_model"] == str(model_dir)
    ck = {k: (out / "uncertainty_models" / k / "checkpoint.pt").stat().st_mtime_ns for k in doc["models"]}
    assert main(argv) == 0  # up to date: neither companion is trained again, the same numbers come out
    assert ck == {k: (out / "uncertainty_models" / k / "checkpoint.pt").stat().st_mtime_ns for k in doc["models"]}
    again = json.loads((out / U.UNCERTAINTY_NAME).read_text())
    assert again["holdout_scene"]["overall"] == doc["holdout_scene"]["overall"]


def test_errors_name_the_file_and_the_key(trained, tmp_path):
    zarr_path, model_dir, _ = trained
    # a sampler over the budget of 8 network calls per member
    cfg = unc_config(hetero=None, generative={**SMALL["generative"], "sampler": {"kind": "heun", "steps": 5}})
    with pytest.raises(ValueError, match=r"uncertainty.generative.sampler.*10 network calls"):
        evaluate_uncertainty(cfg, zarr_path, model_dir, tmp_path / "calls")
    with pytest.raises(ValueError, match=r"uncertainty.members.*must be >= 2"):
        evaluate_uncertainty(unc_config(members=1), zarr_path, model_dir, tmp_path / "m1")
    with pytest.raises(ValueError, match=r"uncertainty.members.*must be even"):
        evaluate_uncertainty(unc_config(members=5, antithetic=True), zarr_path, model_dir, tmp_path / "m5")
    # a store without a validation split: the error names it and says what is missing
    import zarr

    no_val = write_fake_train_zarr(tmp_path / "noval.zarr")
    g = zarr.open_group(str(no_val), mode="r+")
    split = np.asarray(g["split"][:])
    g["split"][:] = np.where(split == 1, 0, split).astype(np.int8)
    with pytest.raises(ValueError, match=r"noval\.zarr: the validation split \(split == 1\) is empty"):
        evaluate_uncertainty(stage_config(), no_val, model_dir, tmp_path / "x")
