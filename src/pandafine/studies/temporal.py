"""Temporal generalization: the yearly products against the synthetic scene's hidden truth.

The model is trained on the target years (Luojia-01 supervision, 2018/2019);
whether it generalizes to other years can only be measured where the truth of
those years is known: on the synthetic scene, whose hidden radiance
(``resources/synthetic/truth/radiance_{year}.tif``) is written on the working
grid. For each requested year this module compares, over every pixel of the
region where product and truth are finite,

* the product ``PANDA-FINE_{year}.tif`` and
* the interpolation baseline of :mod:`pandafine.training.evaluate` (calibrated PANDA
  DN interpolated from 1 km cell centres, z = polynomial of DN fitted on the
  train split; coefficients read from ``metrics.json``),

with the metrics of :func:`pandafine.training.evaluate.method_metrics`, PSNR data
ranges taken from the year's truth. The result is the ``temporal`` section
written to ``temporal.json`` next to ``metrics.json``.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from pandafine.core.atomic import write_text_atomic
from pandafine.core.json_records import json_safe
from pandafine.core.raster_io import read_raster
from pandafine.core.scaling import log_to_radiance
from pandafine.training.evaluate import apply_poly, data_ranges, method_metrics, upsample_cells

log = logging.getLogger(__name__)

TEMPORAL_NAME = "temporal.json"


def baseline_radiance(panda_dn: np.ndarray, coef, factor: int) -> np.ndarray:
    """Interpolation baseline (radiance) of a whole-region PANDA DN raster on the working grid.

    The region's top-left pixel is a 1 km cell corner (the working grid is
    anchored on the PANDA grid), so cells start at row/col 0.
    """
    dn_up = upsample_cells(np.asarray(panda_dn, np.float64), factor, 0, 0)
    return np.where(np.isfinite(dn_up), log_to_radiance(apply_poly(dn_up, np.asarray(coef, np.float64))), np.nan)


def files_by_year(paths, what: str = "files") -> dict[int, Path]:
    """``{year: path}`` from file names ending in a 4-digit year (``PANDA-FINE_2010.tif``, ``radiance_2010.tif``)."""
    out: dict[int, Path] = {}
    for p in map(Path, paths):
        m = re.search(r"(\d{4})$", p.stem)
        if m is None:
            raise ValueError(f"{what}: {p} does not end in a 4-digit year (expected e.g. PANDA-FINE_2010.tif)")
        if int(m.group(1)) in out:
            raise ValueError(f"{what}: two files for {m.group(1)}: {out[int(m.group(1))]} and {p}")
        out[int(m.group(1))] = p
    return out


def check_same_grid(a_path: Path, a_grid, b_path: Path, b_grid) -> None:
    """ValueError naming both files unless ``a_grid`` has the size and transform of ``b_grid``."""
    if (a_grid.width, a_grid.height) != (b_grid.width, b_grid.height) or \
            not np.allclose(tuple(a_grid.transform)[:6], tuple(b_grid.transform)[:6]):
        raise ValueError(f"{a_path} ({a_grid.width}x{a_grid.height}, {tuple(a_grid.transform)[:6]}) is not on the "
                         f"grid of {b_path} ({b_grid.width}x{b_grid.height}, {tuple(b_grid.transform)[:6]})")


def year_metrics(product: Path, truth: Path, panda: Path | None, coef, factor: int) -> dict[str, Any]:
    """Metrics of one year's product (and of the baseline when ``panda`` is given) against its truth."""
    pred, pgrid = read_raster(product)
    true, tgrid = read_raster(truth)
    check_same_grid(product, pgrid, truth, tgrid)
    pred, true = pred[0].astype(np.float64), true[0].astype(np.float64)
    mask = np.isfinite(pred) & np.isfinite(true)
    base = None
    if panda is not None:
        dn, dgrid = read_raster(panda)
        check_same_grid(panda, dgrid, truth, tgrid)
        base = baseline_radiance(dn[0], coef, factor)
        mask &= np.isfinite(base)
    if not mask.any():
        raise ValueError(f"{product} and {truth}: no pixel where both are finite")
    range_log, range_rad = data_ranges(true, mask, truth)
    out: dict[str, Any] = {"n_pixels": int(mask.sum()), "data_range": {"log": range_log, "radiance": range_rad},
                           "model": method_metrics(pred, true, mask, range_log, range_rad)}
    if base is not None:
        out["interpolation"] = method_metrics(base, true, mask, range_log, range_rad)
        out["gain_db"] = {"psnr_log": out["model"]["psnr_log_db"] - out["interpolation"]["psnr_log_db"],
                          "psnr_radiance": out["model"]["psnr_radiance_db"] - out["interpolation"]["psnr_radiance_db"]}
    return out


def evaluate_temporal(products: Mapping[int, Path], truths: Mapping[int, Path], metrics_json, out_path, *,
                      panda: Mapping[int, Path] | None = None, factor: int = 8,
                      train_years=(), fidelity_json=None) -> Path:
    """Write ``temporal.json``: :func:`year_metrics` for every year of ``products``.

    Parameters
    ----------
    products, truths : mapping of year to path
        Yearly products and the hidden truth rasters (same years, same grid).
    metrics_json : path-like
        The model's ``metrics.json`` (the baseline's polynomial coefficients).
    out_path : path-like
        Output JSON (written atomically).
    panda : mapping of year to path, optional
        Calibrated PANDA DN on the working grid (``results/resampled/panda/{year}.tif``); the baseline is
        skipped without it.
    factor : int
        Working pixels per 1 km PANDA cell.
    train_years : iterable of int
        Years with supervision (flagged in the output; their truth was seen only through Luojia-01).
    fidelity_json : path-like, optional
        ``fidelity.json`` (:mod:`pandafine.studies.fidelity`): each year's product / reference total light
        is copied into ``total_light_ratio_reference``.
    """
    missing = sorted(set(products) ^ set(truths))
    if missing:
        raise ValueError(f"temporal evaluation: years {missing} have a product but no truth or the reverse")
    coef = json.loads(Path(metrics_json).read_text())["methods"]["interpolation"]["coefficients"]
    fidelity = json.loads(Path(fidelity_json).read_text())["years"] if fidelity_json is not None else {}
    years = {}
    for year in sorted(products):
        res = year_metrics(Path(products[year]), Path(truths[year]),
                           None if panda is None else Path(panda[year]), coef, factor)
        res["trained_on"] = int(year) in {int(y) for y in train_years}
        if str(year) in fidelity:
            res["total_light_ratio_reference"] = fidelity[str(year)]["total_light_ratio"]
        years[str(year)] = res
        log.info("%s: product PSNR(log) %.2f dB%s", year, res["model"]["psnr_log_db"],
                 "" if "interpolation" not in res else
                 f" vs interpolation {res['interpolation']['psnr_log_db']:.2f} dB")
    out = {
        "temporal": years,
        "definitions": {
            "pixels": "every pixel of the region where the product, the truth (and the baseline) are finite",
            "truth": "the synthetic scene's hidden radiance of that year (resources/synthetic/truth)",
            "data_range": "per year, from that year's truth, as in metrics.json",
            "trained_on": "true for the years with Luojia-01 supervision (run.target_years)",
            "total_light_ratio_reference": "product / Luojia-01-scale reference total light (fidelity.json)",
        },
    }
    write_text_atomic(Path(out_path), json.dumps(json_safe(out), indent=2) + "\n")
    return Path(out_path)
