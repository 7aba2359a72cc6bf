"""`pandafine design-space`: one command trains, evaluates and tabulates a small design space; reruns reuse."""

from __future__ import annotations

import csv
import math

import pytest
import yaml

from fake_tiles import stage_config, write_fake_train_zarr
from pandafine.studies import design_space as D

SPEC = {
    "epochs": 1,
    "models": [{"name": "unet", "width": 4, "depth": 1}, {"name": "diffusion", "width": 4, "depth": 1,
                                                           "timesteps": 50, "base": "unet"}, {"name": "flow", "width": 4, "depth": 1}],
    "samplers": {"diffusion": [{"kind": "ddim", "steps": [2, 3]},
                               {"kind": "staged", "switch_t": 10, "fast_steps": 1, "slow_steps": 1, "eta": 1.0}],
                 "flow": [{"kind": "heun", "steps": [1, 2]}]},
    "precisions": ["fp32", "int8"],
}
METRICS = ("psnr_log_db", "psnr_radiance_db", "ssim_log", "brightest_1pct_error", "seconds_per_mpx")


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("dscli")
    zarr = write_fake_train_zarr(d / "train.zarr")
    cfg = stage_config()
    cfg["infer"]["batch_size"] = 4
    spec = d / "spec.yaml"
    spec.write_text(yaml.safe_dump({"design_space": SPEC}))
    return d, zarr, cfg, spec


def _run(cfg, zarr, out, spec):
    return D.run_design_space(cfg, zarr, out, spec_path=spec)


def test_table_has_every_point_with_finite_metrics(first_run):
    d, zarr, cfg, spec = first_run
    csv_path = _run(cfg, zarr, d / "out", spec)
    rows = _rows(csv_path)
    got = [(r["label"], r["sampler"], r["precision"], r["runtime"]) for r in rows]
    assert got == [("unet", "-", "fp32", "torch"), ("unet", "-", "fp32", "onnxruntime"),
                   ("unet", "-", "int8", "onnxruntime"),
                   ("diffusion", "ddim(eta=0) x2", "fp32", "torch"), ("diffusion", "ddim(eta=0) x3", "fp32", "torch"),
                   ("diffusion", "staged(1+1 @ t=10, eta=1)", "fp32", "torch"),
                   ("flow", "heun x1", "fp32", "torch"), ("flow", "heun x2", "fp32", "torch"),
                   ("interpolation", "-", "fp64", "numpy")]
    assert [r["network_calls"] for r in rows[3:8]] == ["2", "3", "2", "2", "4"]
    diff = D.load_spec(cfg, spec)[0].models[1]
    assert diff.base == "unet"  # residual diffusion: trained on the unet row's model
    key = yaml.safe_load((d / "out" / "models" / "diffusion" / D.MODEL_KEY_FILE).read_text())
    assert key["model_config"]["base_model"] == str(d / "out" / "models" / "unet")
    assert [r["steps"] for r in rows[3:8]] == ["2", "3", "2", "1", "2"]
    for r in rows[:-1]:
        for k in METRICS:
            assert math.isfinite(float(r[k])), (r["label"], r["sampler"], k)
        assert float(r["size_mb"]) > 0 and int(r["n_params"]) > 0 and r["epochs_run"] == "1"
        assert int(r["threads"]) >= 1  # the thread budget of the timing
    # the ONNX fp32 row reproduces the PyTorch row (same pixels, parity-checked export)
    assert float(rows[1]["psnr_log_db"]) == pytest.approx(float(rows[0]["psnr_log_db"]), abs=1e-3)
    assert float(rows[1]["psnr_log_vs_fp32_db"]) == 0.0 and float(rows[1]["speed_vs_fp32"]) == 1.0
    assert float(rows[2]["psnr_log_vs_fp32_db"]) == pytest.approx(
        float(rows[2]["psnr_log_db"]) - float(rows[1]["psnr_log_db"]), abs=1e-5)
    assert rows[2]["n_params"] == rows[0]["n_params"]
    # the interpolation row is the baseline of evaluate_sampling on the same pixels
    res = D.evaluate_sampling(cfg, zarr, d / "out" / "models" / "unet")
    assert float(rows[-1]["psnr_log_db"]) == pytest.approx(res["interpolation"]["psnr_log_db"], rel=1e-5)
    assert float(rows[0]["psnr_log_db"]) == pytest.approx(res["model"]["psnr_log_db"], rel=1e-5)
    md = (d / "out" / D.MD_NAME).read_text()
    assert md.count("\n|") == len(rows) + 1 and "staged(1+1 @ t=10, eta=1)" in md


def test_rerun_reuses_models_and_evaluations(first_run, monkeypatch):

    d, zarr, cfg, spec = first_run
    out = d / "out"
    if not (out / D.CSV_NAME).exists():
        _run(cfg, zarr, out, spec)
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file() and p.suffix in (".pt", ".json", ".onnx")}
    first = _rows(out / D.CSV_NAME)

    def refuse(*a, **k):
        raise AssertionError("rerun trained or evaluated again")

    monkeypatch.setattr(D, "train_model", refuse)
    monkeypatch.setattr(D, "evaluate_sampling", refuse)
    monkeypatch.setattr(D, "evaluate_onnx", refuse)
    again = _rows(_run(cfg, zarr, out, spec))
    assert again == first
    after = {p: p.stat().st_mtime_ns for p in before}
    assert after == before
    # one more sampler: only that row is new, the models are not retrained
    spec2 = d / "spec2.yaml"
    more = {**SPEC, "samplers": {**SPEC["samplers"], "flow": [{"kind": "heun", "steps": [1, 2]},
                                                              {"kind": "euler", "steps": 2}]}}
    spec2.write_text(yaml.safe_dump(more))
    calls = []
    monkeypatch.undo()
    monkeypatch.setattr(D, "train_model", refuse)
    real = D.evaluate_sampling
    monkeypatch.setattr(D, "evaluate_sampling", lambda *a, **k: calls.append(k["sampler"]) or real(*a, **k))
    rows = _rows(_run(cfg, zarr, out, spec2))
    assert calls == [{"kind": "euler", "steps": 2}]
    assert [r["sampler"] for r in rows if r["label"] == "flow"] == ["heun x1", "heun x2", "euler x2"]


def test_more_epochs_retrains(first_run, tmp_path):
    d, zarr, cfg, spec = first_run
    small = {**SPEC, "models": SPEC["models"][:1], "precisions": ["fp32"]}
    p = tmp_path / "s.yaml"
    p.write_text(yaml.safe_dump(small))
    out = tmp_path / "o"
    rows = _rows(D.run_design_space(cfg, zarr, out, spec_path=p))
    assert [r["runtime"] for r in rows] == ["torch", "numpy"] and rows[0]["epochs_run"] == "1"
    rows = _rows(D.run_design_space(cfg, zarr, out, spec_path=p, epochs=2))
    assert rows[0]["epochs_run"] == "2"


def test_command_reads_the_config_section(first_run, tmp_path, tiny_config):
    from pandafine.cli import main

    _, zarr, _, _ = first_run
    tiny_config["design_space"] = {"epochs": 1, "models": [{"name": "unet", "width": 4, "depth": 1}],
                                   "precisions": ["fp32"]}
    cfg_path = tmp_path / "cfg.yaml"
    cfg_path.write_text(yaml.safe_dump(tiny_config))
    assert main(["design-space", "--config", str(cfg_path), "--tiles", str(zarr), "--out", str(tmp_path / "o")]) in (
        0, None)
    rows = _rows(tmp_path / "o" / D.CSV_NAME)
    assert [(r["model"], r["runtime"]) for r in rows] == [("unet", "torch"), ("interpolation", "numpy")]
    assert "config key 'design_space'" in (tmp_path / "o" / D.MD_NAME).read_text()


def test_spec_errors_name_the_key(tmp_path):
    base = stage_config()["model"]
    with pytest.raises(ValueError, match=r"samplers.flow\[0\].kind.*'ddim' is not a flow sampler"):
        D.parse_spec({"samplers": {"flow": [{"kind": "ddim"}]}}, base)
    with pytest.raises(ValueError, match="label 'unet' is used twice"):
        D.parse_spec({"models": ["unet", "unet"]}, base)
    with pytest.raises(ValueError, match="base 'unet' is not the label of an earlier"):
        D.parse_spec({"models": [{"name": "flow", "base": "unet"}, "unet"]}, base)
    p = tmp_path / "x.yaml"
    p.write_text("- 1\n")
    with pytest.raises(ValueError, match="expected a mapping"):
        D.load_spec(stage_config(), p)


def test_expand_and_plan():
    assert D.expand_sampler({"kind": "ddim", "steps": [2, 5], "eta": [0, 1]}) == [
        {"kind": "ddim", "steps": 2, "eta": 0}, {"kind": "ddim", "steps": 2, "eta": 1},
        {"kind": "ddim", "steps": 5, "eta": 0}, {"kind": "ddim", "steps": 5, "eta": 1}]
    spec = D.parse_spec({"models": ["mmntlsr", {"name": "flow", "base": "mmntlsr", "label": "res"}],
                         "precisions": ["fp32"]}, stage_config()["model"])
    items = D.plan(spec)
    assert [(i["label"], i["runtime"]) for i in items][:1] == [("mmntlsr", "torch")]
    assert len(items) == 1 + 4 and spec.models[1].base == "mmntlsr"  # fp32 only: no onnx rows; flow: 4 samplers
    default = D.parse_spec(None, stage_config()["model"])
    n = {m.config["name"]: m for m in default.models}
    assert set(n) == {"unet", "mmntlsr", "diffusion", "flow"}
    kinds = [s["kind"] for s in default.samplers["diffusion"]]
    assert {k: kinds.count(k) for k in set(kinds)} == {"ddpm": 2, "ddim": 2, "dpmpp_2m": 2, "euler": 2, "staged": 2}
    assert len(default.samplers["flow"]) == 4
