"""Ablation table: rows, overrides, the paper column, resumability."""

import csv
import json
import math

import pytest

from fake_tiles import stage_config, write_fake_train_zarr
from pandafine.models.checkpoint import CHECKPOINT_NAME, read_checkpoint
from pandafine.studies import ablation as A
from repo_paths import REPO

ROWS = [1, 5, 8, 9]


def _cfg():
    cfg = stage_config(epochs=1)
    cfg["model"] = {"name": "mmntlsr", "width": 4, "depth": 2, "loss_weights": {"bright": 0.25}}
    return cfg


@pytest.fixture(scope="module")
def ablation(tmp_path_factory):
    root = tmp_path_factory.mktemp("ablation")
    zarr_path = write_fake_train_zarr(root / "train.zarr")
    out = root / "out"
    path = A.run_ablation(_cfg(), zarr_path, out, rows=ROWS)
    return zarr_path, out, path


def _read(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_row_list_is_cumulative_and_ordered():
    names = [n for n, _ in A.ABLATION_ROWS]
    assert names[:5] == ["baseline", "+ deformable conv", "+ affine", "+ auxiliary supervision",
                         "+ multi-scale loss"]
    assert len(names) == 11 and names[8] == "interpolation" and A.ABLATION_ROWS[8][1] is None
    assert names[7] == "UNet (concatenation)" and A.ABLATION_ROWS[7][1] == {"name": "unet"}
    assert [o is None for _, o in A.ABLATION_ROWS].count(True) == 1
    mm = [0, 1, 2, 3, 4, 5, 6, 9, 10]  # the MMNTLSR rows, in the order they add switches
    on = [{k for k, v in A.ABLATION_ROWS[i][1]["modules"].items() if v} for i in mm]
    # every row spells out every switch, so a changed default cannot change a row
    assert all(set(o["modules"]) == set(A._ALL_SWITCHES) for _, o in A.ABLATION_ROWS if o and o["name"] == "mmntlsr")
    assert on[0] == set() and on[6] == set(A._SWITCHES)
    assert all(a < b and len(b - a) == 1 for a, b in zip(on, on[1:]))  # one switch added per row
    assert [on[i + 1] - on[i] for i in range(8)] == [{"deformable"}, {"affine"}, {"auxiliary"}, {"multiscale"},
                                                     {"fusion"}, {"deformation_field"}, {"modulation"},
                                                     {"local_pattern"}]
    # the last row is full MMNTLSR: every switch on, i.e. the model's defaults
    from pandafine.models import MODEL_DEFAULTS
    assert on[-1] == set(A._ALL_SWITCHES) and all(MODEL_DEFAULTS["mmntlsr"]["modules"].values())
    assert "full MMNTLSR" in names[10] and not any("full" in n for n in names[:10])
    assert A.PAPER_PSNR_DB == {1: 15.66, 2: 19.31, 3: 24.07, 4: 29.20, 5: 32.40}


def test_row_config_keeps_size_and_overrides_model():
    cfg = _cfg()
    unet = A.row_config(cfg, 8, epochs=3)
    # no mmntlsr-only keys; the width gives about the parameters of full MMNTLSR at width 4
    assert unet["model"] == {"name": "unet", "width": A.matched_unet_width(4, 2), "depth": 2}
    assert unet["train"]["epochs"] == 3 and cfg["train"]["epochs"] == 1  # the input is not modified
    full = A.row_config(cfg, 11)["model"]
    assert full["loss_weights"] == {"bright": 0.25} and full["modules"] == dict.fromkeys(A._ALL_SWITCHES, True)
    with pytest.raises(ValueError, match="no model"):
        A.row_config(cfg, 9)
    assert A.parse_rows("5, 1,5") == [1, 5] and A.parse_rows(None) is None
    for bad in ("0", "12", "a"):
        with pytest.raises(ValueError, match="rows"):
            A.parse_rows(bad)


def test_matched_unet_width_has_the_closest_parameter_count():
    from pandafine.models.mmntlsr import MMNTLSR
    from pandafine.models.unet import UNet

    def count(m):
        return sum(p.numel() for p in m.parameters())

    for width, depth in [(8, 2), (24, 3)]:
        w = A.matched_unet_width(width, depth)
        goal = count(MMNTLSR(11, width, depth))
        gaps = {v: abs(count(UNet(11, v, depth)) - goal) for v in (w - 1, w, w + 1)}
        assert w >= width and gaps[w] == min(gaps.values()) and gaps[w] / goal < 0.1, (width, depth, gaps)


def test_table_has_requested_rows_with_finite_metrics(ablation):
    _, out, path = ablation
    recs = _read(path)
    assert [int(r["row"]) for r in recs] == ROWS
    for r in recs:
        for k in A.METRIC_KEYS:
            assert math.isfinite(float(r[k])), (r["name"], k)
        assert int(r["n_params"]) > 0
        paper = r["paper_luojia01_2018_psnr_db"]
        assert (float(paper) == A.PAPER_PSNR_DB[int(r["row"])]) if int(r["row"]) <= 5 else paper == ""
    trained = [r for r in recs if r["model"] != "interpolation"]
    assert all(float(r["train_seconds"]) > 0 and r["epochs_run"] == "1" for r in trained)
    assert recs[-1]["train_seconds"] == "" and recs[-1]["model"] == "interpolation"
    md = (out / A.MD_NAME).read_text()
    body = [ln for ln in md.splitlines() if ln.startswith("| ")][1:]  # table rows after the header
    assert [ln.split(" | ")[1] for ln in body] == [r["name"] for r in recs]
    assert A.PAPER_LABEL in md and "| 15.66 |" in md


def test_overrides_reach_the_checkpoints(ablation):
    _, out, _ = ablation
    for row in ROWS[:-1]:
        name, overrides = A.ABLATION_ROWS[row - 1]
        ck = read_checkpoint(out / A._ROWS[row - 1].slug / CHECKPOINT_NAME)
        mc = ck["model_config"]
        width = A.matched_unet_width(4, 2) if overrides["name"] == "unet" else 4
        assert mc["name"] == overrides["name"] and (mc["width"], mc["depth"]) == (width, 2)
        if mc["name"] == "mmntlsr":
            assert mc["modules"] == overrides["modules"], name
    base = read_checkpoint(out / "01-baseline" / CHECKPOINT_NAME)["model_config"]["modules"]
    ms = read_checkpoint(out / "05-multiscale" / CHECKPOINT_NAME)["model_config"]["modules"]
    assert not any(base.values())
    assert {k for k, v in ms.items() if v} == {"deformable", "affine", "auxiliary", "multiscale"}


def test_interpolation_row_matches_evaluate(ablation):
    _, out, path = ablation
    recs = {int(r["row"]): r for r in _read(path)}
    m = json.loads((out / "01-baseline" / "metrics.json").read_text())["test_split"]["interpolation"]
    for k in A.METRIC_KEYS:
        assert float(recs[9][k]) == pytest.approx(m[k], rel=1e-5)


def test_rerun_does_not_retrain(ablation):
    zarr_path, out, path = ablation
    cks = {row: out / A._ROWS[row - 1].slug / CHECKPOINT_NAME for row in ROWS[:-1]}
    before = {row: p.stat().st_mtime_ns for row, p in cks.items()}
    metrics_before = (out / "05-multiscale" / "metrics.json").stat().st_mtime_ns
    text = path.read_text()
    again = A.run_ablation(_cfg(), zarr_path, out, rows=ROWS)
    assert {row: p.stat().st_mtime_ns for row, p in cks.items()} == before
    assert (out / "05-multiscale" / "metrics.json").stat().st_mtime_ns == metrics_before
    assert again.read_text() == text
    # a changed config (width) is a different row: retrained
    cfg = _cfg()
    cfg["model"]["width"] = 6
    A.run_ablation(cfg, zarr_path, out, rows=[1])
    assert cks[1].stat().st_mtime_ns != before[1]
    assert read_checkpoint(cks[1])["model_config"]["width"] == 6


def test_seeds_give_mean_and_spread_and_the_unet_difference(ablation, tmp_path):
    zarr_path, _, _ = ablation
    out = tmp_path / "seeds"
    path = A.run_ablation(_cfg(), zarr_path, out, rows=[1, 8, 9], seeds=[3, 4])
    recs = {int(r["row"]): r for r in _read(path)}
    per_seed = {s: json.loads((out / "01-baseline" / f"seed-{s}" / "metrics.json").read_text())
                ["test_split"]["model"] for s in (3, 4)}
    assert read_checkpoint(out / "01-baseline" / "seed-4" / CHECKPOINT_NAME)["fingerprint"]["spec"]["seed"] == 4
    a, b = per_seed[3]["psnr_log_db"], per_seed[4]["psnr_log_db"]
    assert a != b  # the seeds make different runs
    assert float(recs[1]["psnr_log_db"]) == pytest.approx((a + b) / 2, rel=1e-5)
    assert float(recs[1]["psnr_log_db_sd"]) == pytest.approx(abs(a - b) / math.sqrt(2), rel=1e-4)
    assert recs[1]["n_seeds"] == recs[8]["n_seeds"] == "2" and recs[9]["n_seeds"] == ""
    diff = float(recs[1]["psnr_log_db"]) - float(recs[8]["psnr_log_db"])
    assert float(recs[1]["psnr_log_vs_unet_db"]) == pytest.approx(diff, abs=1e-3)  # CSV: 6 significant digits
    assert recs[8]["psnr_log_vs_unet_db"] == ""
    md = (out / A.MD_NAME).read_text()
    assert "±" in md and "2 training seeds" in md
    with pytest.raises(ValueError, match="seeds"):
        A.parse_seeds("3,3")
    assert A.parse_seeds("5, 6") == [5, 6] and A.parse_seeds("") is None


@pytest.mark.parametrize("overlays, rows", [((), list(range(1, 12))), (("holdout_scene.yaml",), list(range(1, 12))),
                                            (("benchmark_headline.yaml",), [8, 9, 11])])
def test_benchmark_configs_merge_and_validate(overlays, rows):
    """benchmark.yaml (over config.yaml) and its overlays, merged key by key as Snakemake merges config files."""

    import yaml
    from snakemake.utils import update_config

    from pandafine.config import validate_config

    configs = REPO / "workflow" / "configs"
    cfg = yaml.safe_load((configs.parents[1] / "config.yaml").read_text())
    for name in ("benchmark.yaml", *overlays):
        update_config(cfg, yaml.safe_load((configs / name).read_text()))
    validate_config(cfg, source="+".join(("benchmark.yaml", *overlays)))
    ab = cfg["ablation"]
    assert ab["rows"] == rows and ab["seeds"] == [42, 43, 44] and ab["epochs"] == cfg["train"]["epochs"] == 30
    assert cfg["model"]["name"] == "mmntlsr" and "modules" not in cfg["model"]  # full MMNTLSR: every default part
    assert A.select_rows(ab["rows"]) == rows
