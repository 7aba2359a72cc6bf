"""Design-space evaluation hook: same metrics as `pandafine evaluate`, batch-independent samples, the table."""

from __future__ import annotations

import csv
import io
import json

import pytest

from fake_tiles import stage_config, write_fake_train_zarr
from pandafine.models.registry import load_trained_model
from pandafine.studies import design_space as D
from pandafine.training import train as T


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    d = tmp_path_factory.mktemp("ds")
    zarr = write_fake_train_zarr(d / "train.zarr")
    dirs = {}
    for name, extra in (("unet", {}), ("diffusion", {"timesteps": 200, "sampler": {"kind": "ddim", "steps": 4}}),
                        ("flow", {"sampler": {"kind": "euler", "steps": 4}})):
        cfg = stage_config(epochs=2)
        cfg["model"] = {"name": name, "width": 6, "depth": 2, **extra}
        T.train_model(cfg, zarr, d / name, progress=False)
        dirs[name] = d / name
    return zarr, dirs, stage_config()


def test_deterministic_model_matches_evaluate(trained, tmp_path):
    from pandafine.training.evaluate import evaluate_model

    zarr, dirs, cfg = trained
    res = D.evaluate_sampling(cfg, zarr, dirs["unet"])
    ref = json.loads(evaluate_model(cfg, zarr, dirs["unet"], tmp_path).read_text())["test_split"]
    for key in ("psnr_log_db", "psnr_radiance_db", "ssim_log", "brightest_1pct_error"):
        assert res["model"][key] == pytest.approx(ref["model"][key], rel=1e-6)
        assert res["interpolation"][key] == pytest.approx(ref["interpolation"][key], rel=1e-6)
    assert res["sampler"] is None and res["network_calls"] == 1 and res["seconds_per_mpx"] > 0
    with pytest.raises(ValueError, match="deterministic"):
        D.evaluate_sampling(cfg, zarr, dirs["unet"], sampler={"kind": "ddim"})


@pytest.mark.parametrize("name,sampler,calls", [("diffusion", {"kind": "dpmpp_2m", "steps": 3}, 3),
                                               ("diffusion", {"kind": "staged", "switch_t": 40, "fast_steps": 2,
                                                              "slow_steps": 2, "eta": 1.0}, 4),
                                               ("flow", {"kind": "heun", "steps": 2}, 4)])
def test_generative_samples_do_not_depend_on_the_batch(trained, name, sampler, calls):
    zarr, dirs, cfg = trained
    a = D.evaluate_sampling(cfg, zarr, dirs[name], sampler=sampler, seed=3, batch_size=1)
    b = D.evaluate_sampling(cfg, zarr, dirs[name], sampler=sampler, seed=3, batch_size=5)
    assert a["model"]["psnr_log_db"] == pytest.approx(b["model"]["psnr_log_db"], abs=1e-4)
    assert a["network_calls"] == calls and a["seconds_per_mpx"] > 0
    c = D.evaluate_sampling(cfg, zarr, dirs[name], sampler=sampler, seed=4, batch_size=5)
    assert c["model"]["psnr_log_db"] != pytest.approx(b["model"]["psnr_log_db"], abs=1e-4)  # the seed matters


def test_table(trained):
    zarr, dirs, cfg = trained
    recs = [D.table_record(D.evaluate_sampling(cfg, zarr, dirs["unet"]), dirs["unet"]),
            D.table_record(D.evaluate_sampling(cfg, zarr, dirs["flow"]), dirs["flow"])]
    rows = list(csv.DictReader(io.StringIO(D.table_csv(recs))))
    assert [r["model"] for r in rows] == ["unet", "flow"] and rows[1]["sampler"] == "euler x4"
    assert float(rows[0]["psnr_log_db"]) == pytest.approx(recs[0]["psnr_log_db"], rel=1e-5)
    n, mb = D.model_size(load_trained_model(dirs["unet"])[0])
    assert int(rows[0]["n_params"]) == n and mb > 0
    md = D.table_markdown(recs)
    assert md.count("\n") == 4 and "euler x4" in md
