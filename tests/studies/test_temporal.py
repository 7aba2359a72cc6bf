"""Temporal generalization against the synthetic truth: known answers on tiny rasters."""

import json

import numpy as np
import pytest
from affine import Affine

from pandafine.core.grid import Grid
from pandafine.core.raster_io import write_raster
from pandafine.core.scaling import log_to_radiance
from pandafine.studies.temporal import baseline_radiance, evaluate_temporal, files_by_year
from pandafine.training.evaluate import apply_poly


def _truth(small_grid, year):
    rng = np.random.default_rng(year)
    z = rng.uniform(0.0, 3.0, small_grid.shape)
    return log_to_radiance(z).astype(np.float32)


@pytest.fixture
def layout(tmp_path, small_grid):
    coef = [0.1, 2.0, 0.5]
    metrics = tmp_path / "metrics.json"
    metrics.write_text(json.dumps({"methods": {"interpolation": {"coefficients": coef}}}))
    products, truths, panda = {}, {}, {}
    for year, gain in ((1990, 1.1), (2018, 1.0)):
        t = _truth(small_grid, year)
        truths[year] = write_raster(tmp_path / "truth" / f"radiance_{year}.tif", t, small_grid, nodata=float("nan"))
        p = t * np.float32(gain)
        p[0, 0] = np.nan  # one nodata pixel: excluded
        products[year] = write_raster(tmp_path / f"PANDA-FINE_{year}.tif", p, small_grid, nodata=float("nan"))
        dn = np.full(small_grid.shape, 30.0, np.float32)
        panda[year] = write_raster(tmp_path / "panda" / f"{year}.tif", dn, small_grid, nodata=float("nan"))
    return products, truths, panda, metrics, coef


def test_known_errors_per_year(layout, tmp_path, small_grid):
    products, truths, panda, metrics, coef = layout
    out = evaluate_temporal(products, truths, metrics, tmp_path / "temporal.json", panda=panda, factor=8,
                            train_years=[2018])
    res = json.loads(out.read_text())["temporal"]
    assert set(res) == {"1990", "2018"}
    assert res["1990"]["n_pixels"] == 64 * 48 - 1
    # a product 10 % too bright everywhere: total light +10 %, brightest 1 % +10 %
    assert res["1990"]["model"]["total_light_error"] == pytest.approx(0.1, rel=1e-5)
    assert res["1990"]["model"]["total_light_ratio"] == pytest.approx(1.1, rel=1e-5)
    assert res["1990"]["model"]["brightest_1pct_error"] == pytest.approx(0.1, rel=1e-5)
    # a perfect product: zero error, PSNR infinite (written as null)
    assert res["2018"]["model"]["rmse_radiance"] == pytest.approx(0.0, abs=1e-12)
    assert res["2018"]["model"]["psnr_log_db"] is None
    assert res["2018"]["trained_on"] is True and res["1990"]["trained_on"] is False
    # a constant DN: the baseline is the constant radiance of the polynomial at DN 30
    const = float(log_to_radiance(apply_poly(np.array([30.0]), np.array(coef)))[0])
    t = _truth(small_grid, 1990).astype(np.float64).ravel()[1:]  # pixel (0, 0) is nodata in the product
    expected = abs(const * t.size - t.sum()) / t.sum()
    assert res["1990"]["interpolation"]["total_light_error"] == pytest.approx(expected, rel=1e-4)
    assert res["1990"]["gain_db"]["psnr_log"] == pytest.approx(
        res["1990"]["model"]["psnr_log_db"] - res["1990"]["interpolation"]["psnr_log_db"])


def test_baseline_of_constant_dn_is_constant(small_grid):
    coef = np.array([0.2, 1.0])
    out = baseline_radiance(np.full(small_grid.shape, 63.0), coef, 8)
    np.testing.assert_allclose(out, log_to_radiance(np.array(1.2)), rtol=1e-12)


def test_products_off_the_truth_grid_are_an_error(layout, tmp_path, small_grid):
    products, truths, _, metrics, _ = layout
    shifted = Grid(small_grid.crs, Affine(125.0, 0, -999_000.0, 0, -125.0, 4_000_000.0), 64, 48, 8)
    products[1990] = write_raster(tmp_path / "moved" / "PANDA-FINE_1990.tif", np.ones(small_grid.shape, np.float32),
                                  shifted)
    with pytest.raises(ValueError, match="is not on the grid of"):
        evaluate_temporal(products, truths, metrics, tmp_path / "t.json")
    assert not (tmp_path / "t.json").exists()


def test_files_by_year(tmp_path):
    assert files_by_year(["a/PANDA-FINE_2010.tif", "b/radiance_1990.tif"]) == {
        2010: tmp_path.__class__("a/PANDA-FINE_2010.tif"), 1990: tmp_path.__class__("b/radiance_1990.tif")}
    with pytest.raises(ValueError, match="4-digit year"):
        files_by_year(["x/model.tif"], "--products")
    with pytest.raises(ValueError, match="two files for 2010"):
        files_by_year(["a/2010.tif", "b/2010.tif"])
