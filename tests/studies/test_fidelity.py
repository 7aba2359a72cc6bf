"""Radiometric fidelity against the Luojia-01-scale reference: known answers on tiny rasters."""

import json

import numpy as np
import pytest

from pandafine.core.raster_io import write_raster
from pandafine.product.report import fidelity_figure
from pandafine.studies import fidelity as F
from pandafine.studies.temporal import evaluate_temporal


def _truth(grid, year):
    """Lit blobs on a dark floor; brighter every year (2 %)."""
    yy, xx = np.mgrid[0:grid.height, 0:grid.width]
    blobs = sum(np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 30.0) for cy, cx in ((12, 15), (30, 44), (20, 30)))
    return ((1e-8 + 5e-5 * blobs) * 1.02 ** (year - 2000)).astype(np.float32)


def test_luojia_response_keeps_a_constant_and_the_total(small_grid):
    const = np.full(small_grid.shape, 3e-6)
    out = F.luojia_response(const, small_grid)
    assert np.nanmax(np.abs(out - 3e-6)) < 1e-12 and np.isfinite(out).all()
    t = _truth(small_grid, 2018).astype(np.float64)
    s = F.luojia_response(t, small_grid)
    assert np.nansum(s) == pytest.approx(t.sum(), rel=0.02)  # a blur, not a gain
    assert np.nanmax(s) < t.max()                               # ~130 m pixels smooth the 125 m peaks
    t[3, 4] = np.nan
    assert np.isnan(F.luojia_response(t, small_grid)[3, 4])


def test_reference_scale_recovers_a_known_gain(small_grid):
    pairs = []
    for year in (2018, 2019):
        s = F.luojia_response(_truth(small_grid, year), small_grid)
        target = 0.9 * s
        target[:10] = np.nan  # outside the footprint
        pairs.append((target, s))
    assert F.reference_scale(pairs) == pytest.approx(0.9, rel=1e-12)
    with pytest.raises(ValueError, match="no lit pixel"):
        F.reference_scale([(np.full((2, 2), np.nan), np.ones((2, 2)))])


def test_sensor_step_dark_floor_and_eras():
    rows = [F.YearLight(2012, F.era_of(2012), 10, 96.0, 100.0, 120.0, None, 2e-7),
            F.YearLight(2013, F.era_of(2013), 10, 84.0, 105.0, 126.0, None, 1e-8),
            F.YearLight(2014, F.era_of(2014), 10, 90.0, 110.0, 130.0, None, 3e-8)]
    assert [r.era for r in rows] == ["TM/ETM+", "OLI", "OLI"]
    step = F.sensor_step(rows)
    assert step["product_change"] == pytest.approx(-0.125) and step["reference_change"] == pytest.approx(0.05)
    assert step["difference"] == pytest.approx(-0.175)
    floors = F.dark_floor_by_era(rows)
    assert floors["oli_mean"] == pytest.approx(2e-8) and floors["ratio"] == pytest.approx(10.0)
    assert rows[0].total_light_ratio == pytest.approx(0.96) and rows[0].total_light_ratio_truth == pytest.approx(0.8)
    assert F.sensor_step(rows[1:]) is None  # no 2012
    assert F.dark_floor(np.array([5.0, 1.0, 9.0, 7.0, 3.0]), np.array([1.0, 2.0, 3.0, 4.0, 5.0]), 0.4) == 3.0


@pytest.fixture
def run(tmp_path, small_grid):
    """Truth for 2012, 2013, 2018; targets 2018 at 0.9 x S(truth); products exact on the reference except
    2012, 10 % too bright with a dark haze (the TM/ETM+ artefact)."""
    nan = float("nan")
    truths, products, targets = {}, {}, {}
    for year in (2012, 2013, 2018):
        t = _truth(small_grid, year)
        truths[year] = write_raster(tmp_path / "truth" / f"radiance_{year}.tif", t, small_grid, nodata=nan)
        ref = (0.9 * F.luojia_response(t, small_grid)).astype(np.float32)
        p = ref * np.float32(1.1) + np.float32(1e-7) if year == 2012 else ref.copy()
        products[year] = write_raster(tmp_path / f"PANDA-FINE_{year}.tif", p, small_grid, nodata=nan)
    t18 = _truth(small_grid, 2018)
    target = (0.9 * F.luojia_response(t18, small_grid)).astype(np.float32)
    target[:, :20] = np.nan  # the frames cover part of the region
    targets[2018] = write_raster(tmp_path / "target" / "2018.tif", target, small_grid, nodata=nan)
    return products, truths, targets


def test_fidelity_json_known_answers(run, tmp_path, small_grid):
    products, truths, targets = run
    out = F.evaluate_fidelity(products, truths, targets, tmp_path / "fidelity.json")
    d = json.loads(out.read_text())
    assert d["reference"]["scale"] == pytest.approx(0.9, rel=1e-6)
    years = d["years"]
    assert years["2018"]["total_light_ratio"] == pytest.approx(1.0, rel=1e-5)
    assert years["2013"]["total_light_ratio"] == pytest.approx(1.0, rel=1e-5)
    assert years["2013"]["total_light_ratio_truth"] == pytest.approx(0.9, rel=0.02)
    haze = 1e-7 * small_grid.width * small_grid.height
    assert years["2012"]["total_light_ratio"] == pytest.approx(1.1 + haze / years["2012"]["reference"], rel=1e-5)
    assert d["target_footprint"]["2018"]["total_light_ratio"] == pytest.approx(1.0, rel=1e-5)
    assert d["target_footprint"]["2018"]["n_pixels"] == small_grid.height * (small_grid.width - 20)
    step = d["sensor_step"]
    assert step["product_change"] < step["reference_change"] - 0.05  # the artefact shows as a step
    assert d["dark_floor"]["ratio"] > 5
    assert years["2012"]["era"] == "TM/ETM+" and years["2018"]["era"] == "OLI"
    png = fidelity_figure(d, tmp_path / "fidelity.png")
    assert png.stat().st_size > 5000


def test_temporal_json_carries_the_reference_ratio(run, tmp_path, small_grid):
    products, truths, targets = run
    fid = F.evaluate_fidelity(products, truths, targets, tmp_path / "fidelity.json")
    metrics = tmp_path / "metrics.json"
    metrics.write_text(json.dumps({"methods": {"interpolation": {"coefficients": [0.1, 2.0, 0.5]}}}))
    out = evaluate_temporal({y: products[y] for y in (2013, 2018)}, {y: truths[y] for y in (2013, 2018)}, metrics,
                            tmp_path / "temporal.json", factor=8, fidelity_json=fid)
    res = json.loads(out.read_text())["temporal"]
    assert res["2013"]["total_light_ratio_reference"] == pytest.approx(1.0, rel=1e-5)
    assert res["2013"]["model"]["total_light_ratio"] == pytest.approx(0.9, rel=0.02)  # against the raw truth


def test_missing_truth_or_target_is_named(run, tmp_path):
    products, truths, targets = run
    with pytest.raises(ValueError, match=r"no hidden truth for year\(s\) \[2013\]"):
        F.evaluate_fidelity(products, {y: truths[y] for y in (2012, 2018)}, targets, tmp_path / "f.json")
    with pytest.raises(ValueError, match="no target year"):
        F.evaluate_fidelity(products, truths, {}, tmp_path / "f.json")
    assert not (tmp_path / "f.json").exists()
