"""End to end: the tiny config (2 years, ~11 x 11 km) through Snakemake, as a user runs it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile")]


def _snakemake(workdir: Path, *args: str, config: Path) -> subprocess.CompletedProcess:
    return subprocess.run(SNAKEMAKE + ["--directory", str(workdir), "--configfile", str(config), *args],
                          capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, tiny_config_path):
    work = tmp_path_factory.mktemp("tiny")
    proc = _snakemake(work, "--cores", "32", config=tiny_config_path)
    if proc.returncode != 0:
        logs = "\n".join(f"== {p}\n{p.read_text()[-3000:]}" for p in sorted((work / "logs").rglob("*.log")))
        pytest.fail(f"snakemake failed:\n{proc.stderr[-6000:]}\n{logs}")
    return work


@pytest.mark.slow
def test_products_are_valid_cogs(tiny_run):
    import rasterio
    from rio_cogeo.cogeo import cog_validate

    from pandafine.grid import Grid

    grid = Grid.read_json(tiny_run / "results" / "grid.json")
    for year in (2018, 2019):
        cog = tiny_run / "results" / "panda_fine" / f"PANDA-FINE_{year}.tif"
        valid, errors, _ = cog_validate(str(cog))
        assert valid, errors
        with rasterio.open(cog) as ds:
            assert ds.crs is not None and ds.transform.almost_equals(grid.transform)
            assert (ds.height, ds.width) == grid.shape
            if max(grid.shape) > 256:  # overviews go down to 256 px; tests/test_product.py checks them
                assert ds.overviews(1), "internal overviews expected"
            assert ds.profile["tiled"] and ds.compression is not None
            data = ds.read(1)
            assert np.isfinite(data).mean() > 0.9 and np.nanmax(data) > 0
            assert ds.tags()["year"] == str(year)


@pytest.mark.slow
def test_metrics_name_both_methods(tiny_run):
    metrics = json.loads((tiny_run / "results" / "models" / "unet" / "metrics.json").read_text())
    split = metrics["test_split"]
    for method in ("model", "interpolation"):
        for key in ("psnr_log_db", "psnr_radiance_db", "ssim_log", "rmse_radiance"):
            assert np.isfinite(split[method][key])
    assert "data_range" in split


@pytest.mark.slow
def test_rerun_is_a_no_op_and_one_deleted_year_is_rebuilt_alone(tiny_run, tiny_config_path):
    proc = _snakemake(tiny_run, "-n", config=tiny_config_path)
    assert proc.returncode == 0, proc.stderr
    assert "Nothing to be done" in proc.stdout + proc.stderr
    (tiny_run / "results" / "panda_fine" / "PANDA-FINE_2019.tif").unlink()
    proc = _snakemake(tiny_run, "-n", config=tiny_config_path)
    out = proc.stdout + proc.stderr
    jobs = [line.split()[0] for line in out.splitlines() if line.strip() and line.split()[0] in (
        "infer", "cube", "train", "download", "calibrate_panda", "export", "all")]
    assert sorted(set(jobs)) == ["all", "infer"], out


def test_bad_config_fails_before_any_job(tmp_path, tiny_config_path):
    import yaml

    cfg = yaml.safe_load(tiny_config_path.read_text())
    cfg["grid"]["pixel_size"] = -5
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(cfg))
    proc = _snakemake(tmp_path, "--cores", "1", config=bad)
    assert proc.returncode != 0
    assert "grid.pixel_size" in proc.stderr
    assert not (tmp_path / "resources").exists() and not (tmp_path / "results" / "grid.json").exists()


def test_dry_run_lists_every_stage(tmp_path, tiny_config_path):
    proc = _snakemake(tmp_path, "-n", config=tiny_config_path)
    assert proc.returncode == 0, proc.stderr
    for rule in ("download", "calibrate_panda", "calibrate_landsat", "calibrate_luojia", "calibrate_dem",
                 "denoise_luojia", "composite_landsat", "mosaic", "resample_panda", "resample_landsat",
                 "resample_dem", "cube", "patches", "train", "evaluate", "export", "infer"):
        assert rule in proc.stdout, rule


@pytest.mark.slow
def test_report_bundles_every_figure(tiny_run, tiny_config_path):
    proc = _snakemake(tiny_run, "--report", str(tiny_run / "report.html"), config=tiny_config_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    html = (tiny_run / "report.html").read_text(errors="ignore")
    for name in ("quicklooks.png", "training_curve.png", "total_light.png", "metrics.csv", "test_panels.png"):
        assert name in html, name
