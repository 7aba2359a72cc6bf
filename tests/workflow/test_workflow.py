"""End to end: the tiny config (2 years, ~11 x 11 km) through Snakemake, as a user runs it."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest


@pytest.mark.slow
def test_products_are_valid_cogs(tiny_run):
    import rasterio
    from rio_cogeo.cogeo import cog_validate

    from pandafine.core.grid import Grid

    grid = Grid.read_json(tiny_run / "results" / "grid.json")
    for year in (2018, 2019):
        cog = tiny_run / "results" / "panda_fine" / f"PANDA-FINE_{year}.tif"
        valid, errors, _ = cog_validate(str(cog))
        assert valid, errors
        with rasterio.open(cog) as ds:
            assert ds.crs is not None and ds.transform.almost_equals(grid.transform)
            assert (ds.height, ds.width) == grid.shape
            if max(grid.shape) > 256:  # overviews go down to 256 px; tests/product/test_cog.py checks them
                assert ds.overviews(1), "internal overviews expected"
            assert ds.profile["tiled"] and ds.compression is not None
            data = ds.read(1)
            assert np.isfinite(data).mean() > 0.9 and np.nanmax(data) > 0
            assert ds.tags()["year"] == str(year)


@pytest.mark.slow
def test_catalog_of_the_run_validates_against_the_official_stac_schemas(tiny_run):
    """The pipeline's catalog.json and its items: STAC 1.1.0 core, projection v2.0.0, raster v1.1.0."""
    import os

    from pandafine.product.catalog import FILE_EXT
    from stac_schemas import SCHEMA_WHEEL_ENV, validate_catalog

    if not os.environ.get(SCHEMA_WHEEL_ENV):
        pytest.skip(f"{SCHEMA_WHEEL_ENV} unset (.ci/run downloads the pinned schema wheel and sets it)")
    catalog = tiny_run / "results" / "panda_fine" / "catalog.json"
    problems, unchecked = validate_catalog(catalog, os.environ[SCHEMA_WHEEL_ENV])
    assert not problems, problems
    items = [link for link in json.loads(catalog.read_text())["links"] if link["rel"] == "item"]
    assert len(items) == 2  # 2018 and 2019
    assert unchecked == {FILE_EXT}, unchecked


@pytest.mark.slow
def test_metrics_name_both_methods(tiny_run):
    metrics = json.loads((tiny_run / "results" / "models" / "unet" / "metrics.json").read_text())
    split = metrics["test_split"]
    for method in ("model", "interpolation"):
        for key in ("psnr_log_db", "psnr_radiance_db", "ssim_log", "rmse_radiance"):
            assert np.isfinite(split[method][key])
    assert "data_range" in split


@pytest.mark.slow
def test_rerun_is_a_no_op_and_one_deleted_year_is_rebuilt_alone(tiny_run, tiny_config_path, run_snakemake):
    proc = run_snakemake(tiny_run, "-n", config=tiny_config_path)
    assert proc.returncode == 0, proc.stderr
    assert "Nothing to be done" in proc.stdout + proc.stderr
    (tiny_run / "results" / "panda_fine" / "PANDA-FINE_2019.tif").unlink()
    proc = run_snakemake(tiny_run, "-n", config=tiny_config_path)
    out = proc.stdout + proc.stderr
    jobs = [line.split()[0] for line in out.splitlines() if line.strip() and line.split()[0] in (
        "infer", "cube", "train", "download", "calibrate_panda", "export", "all")]
    assert sorted(set(jobs)) == ["all", "infer"], out


def test_bad_config_fails_before_any_job(tmp_path, tiny_config_path, run_snakemake):
    import yaml

    cfg = yaml.safe_load(tiny_config_path.read_text())
    cfg["grid"]["pixel_size"] = -5
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(cfg))
    proc = run_snakemake(tmp_path, "--cores", "1", config=bad)
    assert proc.returncode != 0
    assert "grid.pixel_size" in proc.stderr
    assert not (tmp_path / "resources").exists() and not (tmp_path / "results" / "grid.json").exists()


def test_dry_run_lists_every_stage(tmp_path, tiny_config_path, run_snakemake):
    proc = run_snakemake(tmp_path, "-n", config=tiny_config_path)
    assert proc.returncode == 0, proc.stderr
    for rule in ("download", "calibrate_panda", "landsat_block", "calibrate_luojia", "calibrate_dem",
                 "denoise_luojia", "composite_landsat", "mosaic", "resample_panda", "resample_dem", "cube", "patches",
                 "train", "evaluate", "export", "level", "infer", "fidelity", "report_fidelity"):
        assert rule in proc.stdout, rule


def test_generative_model_products_come_from_its_checkpoint(tmp_path, tiny_config_path, run_snakemake):
    """model.name: diffusion: infer samples checkpoint.pt (no ONNX export), infer.ensemble reaches the job."""
    import yaml

    cfg = yaml.safe_load(tiny_config_path.read_text())
    cfg["model"] = {"name": "diffusion", "width": 8, "depth": 2}
    cfg["infer"]["ensemble"] = 4
    cfg["ablation"]["enabled"] = False
    path = tmp_path / "diffusion.yaml"
    path.write_text(yaml.safe_dump(cfg))
    proc = run_snakemake(tmp_path, "-n", "-p", "--forceall", config=path)
    assert proc.returncode == 0, proc.stderr
    import re

    assert not re.search(r"^(local)?rule export:", proc.stdout, re.M), "a generative model is not exported"
    infer = [line for line in proc.stdout.splitlines() if "pandafine infer" in line]
    assert infer and all("--model results/models/diffusion/checkpoint.pt" in line for line in infer), infer


@pytest.fixture(scope="module")
def tiny_report(tiny_run, tiny_config_path, run_snakemake) -> Path:
    """``snakemake --report`` of the tiny run (built once for the report tests)."""
    out = tiny_run / "report.html"
    proc = run_snakemake(tiny_run, "--report", str(out), config=tiny_config_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


REPORT_ITEMS = ("quicklooks.png", "training_curve.png", "total_light.png", "metrics.csv", "metrics.html",
                "test_panels.png", "ablation.csv", "ablation.html")


@pytest.mark.slow
def test_report_bundles_every_figure(tiny_report):
    html = tiny_report.read_text(errors="ignore")
    for name in REPORT_ITEMS:
        assert name in html, name


@pytest.mark.slow
def test_ablation_follows_the_config_section(tiny_run, tiny_config_path):
    import csv

    import yaml

    section = yaml.safe_load(tiny_config_path.read_text())["ablation"]
    with open(tiny_run / "results" / "ablation" / "ablation.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["row"]) for r in rows] == sorted(section["rows"])
    trained = [r for r in rows if r["model"] != "interpolation"]
    assert trained and all(int(r["epochs_run"]) == section["epochs"] for r in trained)
    page = (tiny_run / "results" / "report" / "ablation.html").read_text()
    assert all(f"<td>{r['name']}</td>" in page for r in rows)


@pytest.mark.slow
@pytest.mark.browser
def test_report_opens_in_headless_browser(tiny_report):
    """The report loads in headless Chromium with no JavaScript error and no failed or external
    request, its menu lists the categories, and every figure and table can be opened."""
    import os

    from browser import check_snakemake_report, find_chromium

    if find_chromium() is None:
        if os.environ.get("PANDAFINE_BROWSER_TEST") == "1":
            pytest.fail("PANDAFINE_BROWSER_TEST=1 but no chromium: apt-get install chromium")
        pytest.skip("no chromium on PATH (apt-get install chromium, or set PANDAFINE_CHROMIUM)")
    rep = check_snakemake_report(tiny_report)
    assert rep.problems == []
    walk = rep.values["walk"]
    for category in ("Product", "Model", "Evaluation"):
        assert category in walk["menu"]
    assert all(text is not None for text in walk["categories"].values()), walk["categories"].keys()
    shown = {info["name"]: info for info in walk["shown"].values()}
    assert set(REPORT_ITEMS) <= set(shown), sorted(shown)
    for name in ("quicklooks.png", "training_curve.png", "total_light.png", "test_panels.png"):
        assert "error" not in shown[name] and shown[name]["width"] > 100 and shown[name]["height"] > 100, shown[name]
    assert shown["metrics.html"]["rows"] == 3  # header, model, interpolation
    assert "interpolation" in shown["metrics.html"]["text"]
    n_ablation = len((tiny_report.parent / "results" / "ablation" / "ablation.csv").read_text().splitlines())
    assert shown["ablation.html"]["rows"] == n_ablation  # header and one row per ablation row


def _dry_run_jobs(run_snakemake, workdir: Path, config: Path) -> dict[str, int]:
    """Rule -> job count of a dry run (Snakemake's job stats table)."""
    proc = run_snakemake(workdir, "-n", config=config)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout + proc.stderr
    if "Nothing to be done" in out:
        return {}
    stats = out[out.index("Job stats:"):]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"(?m)^(\w+)\s+(\d+)$", stats) if m.group(1) != "total"}


def _complete(workdir: Path, config: Path, run_snakemake) -> None:
    """Finish the tiny run (another test deletes a product and only dry-runs) and check nothing is left."""
    proc = run_snakemake(workdir, "--cores", "2", config=config)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert _dry_run_jobs(run_snakemake, workdir, config) == {}


def _edited(tiny_config_path: Path, tmp_path: Path, name: str, edit) -> Path:
    import yaml

    cfg = yaml.safe_load(tiny_config_path.read_text())
    edit(cfg)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.mark.slow
@pytest.mark.parametrize("name, edit, expected", [
    # read by infer only: infer and what is made from the products
    ("overlap", lambda c: c["infer"].update(overlap=8),
     {"level", "infer", "catalog", "provenance", "report_figures", "temporal", "fidelity", "report_fidelity", "all"}),
    # read by train: training and everything after it, nothing before
    ("epochs", lambda c: c["train"].update(epochs=2),
     {"train", "evaluate", "export", "level", "infer", "catalog", "provenance", "report_figures", "temporal",
      "fidelity", "report_fidelity", "ablation", "report_ablation", "all"}),
    # a study setting: the study only, never the products
    ("ablation", lambda c: c["ablation"].update(epochs=2), {"ablation", "report_ablation", "all"}),
    # a preprocessing setting: its stage and what follows from it
    ("spike", lambda c: c["preprocess"].update(spike_factor=5.0),
     {"denoise_luojia", "mosaic", "patches", "train", "evaluate", "export", "level", "infer", "catalog", "provenance",
      "report_figures", "temporal", "fidelity", "report_fidelity", "ablation", "report_ablation", "all"}),
])
def test_config_edit_reruns_exactly_the_affected_rules(tiny_run, tiny_config_path, run_snakemake, tmp_path,
                                                       name, edit, expected):
    _complete(tiny_run, tiny_config_path, run_snakemake)
    jobs = _dry_run_jobs(run_snakemake, tiny_run, _edited(tiny_config_path, tmp_path, name, edit))
    assert set(jobs) == expected, jobs


@pytest.mark.slow
def test_a_year_added_to_the_run_is_downloaded(tiny_run, tiny_config_path, run_snakemake, tmp_path):
    _complete(tiny_run, tiny_config_path, run_snakemake)
    jobs = _dry_run_jobs(run_snakemake, tiny_run,
                         _edited(tiny_config_path, tmp_path, "year", lambda c: c["run"].update(first_year=2017)))
    assert {"download", "calibrate_panda", "composite_landsat", "infer"} <= set(jobs), jobs
    assert jobs["calibrate_panda"] >= 1 and jobs["infer"] >= 1


@pytest.mark.slow
def test_another_config_cannot_touch_what_this_run_read(tiny_run, tiny_config_path, run_snakemake, tmp_path):
    """A second Snakemake process (here a dry run) with another config leaves this run's config file and
    products alone, and `pandafine verify` still finds the products as recorded."""
    import subprocess
    import sys

    _complete(tiny_run, tiny_config_path, run_snakemake)
    before = {p.name: p.read_bytes() for p in (tiny_run / "results" / "config").glob("*.yaml")}
    other = _edited(tiny_config_path, tmp_path, "other", lambda c: c["train"].update(epochs=5))
    _dry_run_jobs(run_snakemake, tiny_run, other)
    after = {p.name: p.read_bytes() for p in (tiny_run / "results" / "config").glob("*.yaml")}
    assert all(after[name] == data for name, data in before.items())
    assert len(after) == len(before) + 1
    proc = subprocess.run([sys.executable, "-m", "pandafine", "verify", str(tiny_run / "results" / "panda_fine")],
                          capture_output=True, text=True, cwd=tiny_run)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.slow
def test_two_concurrent_runs_with_different_configs(tiny_run, tiny_config_path, run_snakemake, tmp_path):
    """Two real Snakemake processes with different configs in one directory, at the same time: the second
    is refused by the lock, a dry run with yet another config changes nothing the first reads, and the
    first run's model and training tiles equal those of a solo run (``tiny_run``)."""
    import subprocess
    import time

    from conftest import SNAKEMAKE
    from pandafine.core.checksums import sha256_file, tree_sha256

    (model,) = [p.relative_to(tiny_run) for p in (tiny_run / "results" / "models").glob("*/model.onnx")]
    work = tmp_path / "work"
    work.mkdir()
    first = subprocess.Popen(SNAKEMAKE + ["--directory", str(work), "--configfile", str(tiny_config_path),
                                          "--cores", "2", str(model)],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 300
        while not any((work / ".snakemake" / "locks").glob("*")) or not (work / "results" / "config").is_dir():
            assert first.poll() is None, f"the first run ended before taking its lock:\n{first.stdout.read()[-3000:]}"
            assert time.monotonic() < deadline, "the first run took no lock within 300 s"
            time.sleep(0.2)
        ours = {p.name: p.read_bytes() for p in (work / "results" / "config").glob("*.yaml")}
        other = _edited(tiny_config_path, tmp_path, "other", lambda c: c["train"].update(epochs=1, learning_rate=0.01))
        dry = run_snakemake(work, "-n", str(model), config=other)
        assert dry.returncode == 0, dry.stderr[-3000:]
        second = run_snakemake(work, "--cores", "1", str(model), config=other)
        assert first.poll() is None, "the first run ended before the second started: nothing was concurrent"
        assert second.returncode != 0 and "cannot be locked" in (second.stdout + second.stderr)
        out, _ = first.communicate(timeout=900)
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == 0, out[-3000:]
    for name, data in ours.items():
        assert (work / "results" / "config" / name).read_bytes() == data
    assert sha256_file(work / model) == sha256_file(tiny_run / model)
    assert tree_sha256(work / "results" / "tiles" / "train.zarr") == \
        tree_sha256(tiny_run / "results" / "tiles" / "train.zarr")



@pytest.mark.slow
def test_blocked_run_equals_the_single_block_run(tiny_run, tiny_config_path, run_snakemake, tmp_path):
    """grid.block = 64 cuts the tiny grid (104 x 96 px) into 2 x 2 blocks: inference runs per block and year
    and `assemble` joins them; the products equal a single-block run's with the same product.blocksize."""
    import shutil

    import rasterio

    work = tmp_path / "work"
    shutil.copytree(tiny_run, work, symlinks=True)
    single = _edited(tiny_config_path, tmp_path, "single", lambda c: c["product"].update(blocksize=64))
    blocked = _edited(tiny_config_path, tmp_path, "blocked",
                      lambda c: (c["product"].update(blocksize=64), c["grid"].update(block=64)))
    proc = run_snakemake(work, "--cores", "2", config=single)
    assert proc.returncode == 0, proc.stderr[-3000:]
    products = sorted((work / "results" / "panda_fine").glob("PANDA-FINE_*.tif"))
    assert len(products) == 2
    reference = {p.name: rasterio.open(p).read() for p in products}
    # only inference and what follows it rerun: grid.block changes no pixel before inference
    jobs = _dry_run_jobs(run_snakemake, work, blocked)
    assert jobs["infer"] == 2 * 4 and jobs["assemble"] == 2
    assert not {"grid", "download", "resample_panda", "cube", "patches", "train", "export"} & set(jobs)
    proc = run_snakemake(work, "--cores", "2", config=blocked)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(p.name for p in (work / "results" / "blocks" / "2018").glob("*.tif")) == [
        "r000c000.tif", "r000c001.tif", "r001c000.tif", "r001c001.tif"]
    for name, ref in reference.items():
        with rasterio.open(work / "results" / "panda_fine" / name) as src:
            out = src.read()
            assert src.tags()["config_sha256"]  # tagged with the blocked run's config
        np.testing.assert_array_equal(np.isnan(out), np.isnan(ref))
        ok = np.isfinite(ref)
        assert np.max(np.abs(out[ok] - ref[ok])) <= 1e-6 * np.max(np.abs(ref[ok])), name
    # region.mask: only the blocks touching the outline are planned (3 of the 4), from results/blocks/blocks.csv,
    # and nothing before inference reruns
    import json

    from rasterio.warp import transform

    from pandafine.core.grid import Grid

    grid = Grid.from_dict(json.loads((work / "results" / "grid.json").read_text()))
    assert grid.shape == (104, 96)
    ring = [grid.transform * (c, r) for c, r in [(2, 2), (94, 2), (94, 60), (40, 60), (40, 100), (2, 100), (2, 2)]]
    lon, lat = transform(grid.crs, "EPSG:4326", [x for x, _ in ring], [y for _, y in ring])
    outline = tmp_path / "outline.geojson"
    outline.write_text(json.dumps({"type": "Feature", "properties": {}, "geometry": {
        "type": "Polygon", "coordinates": [[[a, b] for a, b in zip(lon, lat)]]}}))
    masked = _edited(tiny_config_path, tmp_path, "masked", lambda c: (
        c["product"].update(blocksize=64), c["grid"].update(block=64), c["region"].update(mask=str(outline))))
    jobs = _dry_run_jobs(run_snakemake, work, masked)
    assert jobs["infer"] == 2 * 3 and jobs["assemble"] == 2, jobs
    assert not {"grid", "download", "resample_panda", "cube", "patches", "train", "export"} & set(jobs)
    listed = (work / "results" / "blocks" / "blocks.csv").read_text().splitlines()
    assert [line.split(",")[0] for line in listed[1:]] == ["r000c000", "r000c001", "r001c000"]
