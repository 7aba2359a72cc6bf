"""Radiometric fidelity: the yearly products' total light against the Luojia-01-scale reference.

The product learns from Luojia-01 frames, so it is on the Luojia-01 radiometric scale as the
pipeline calibrates it. On the synthetic scene the reference of a year ``y`` is therefore the
hidden radiance ``T_y`` as Luojia-01 would have measured it, calibrated as the target years are::

    R_y = c * S(T_y)

* ``S`` is Luojia-01's spatial response on the working grid: ``T_y`` averaged onto a lon/lat grid
  of Luojia-01's pixel size (:data:`LUOJIA_PIXEL_DEG`) and back (``average`` warps, as the
  mosaic does), i.e. what a ~130 m pixel sees of the 125 m truth.
* ``c`` is the calibration scale of the target years, measured where it is defined: the target
  mosaics' total light over their footprint divided by that of ``S(T)`` there, pooled over the
  target years (:func:`reference_scale`). It carries every frame gain the inter-calibration does
  not remove and what denoising removes.

This module compares every year's product with ``R_y`` and with the raw truth ``T_y`` (total
light, the darkest pixels) and the target years' products with their target mosaics, and writes
``fidelity.json``. Pure functions first; :func:`evaluate_fidelity` does the I/O.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from pandafine.core import metrics as M
from pandafine.core.atomic import write_text_atomic
from pandafine.core.grid import Grid
from pandafine.core.json_records import json_safe
from pandafine.core.raster_io import grid_of, read_raster
from pandafine.sensors.landsat import OLI_FIRST_YEAR
from pandafine.studies.temporal import baseline_radiance, check_same_grid

log = logging.getLogger(__name__)

FIDELITY_NAME = "fidelity.json"
#: Luojia-01's pixel size (degrees, ~130 m): the middle of the synthetic frames' range.
LUOJIA_PIXEL_DEG = 0.0013
#: Fraction of the truth's pixels, darkest first, whose mean product radiance is the dark floor.
DARK_FRACTION = 0.2


def era_of(year: int) -> str:
    """Landsat sensor era of a year: ``'TM/ETM+'`` before :data:`OLI_FIRST_YEAR`, ``'OLI'`` from it."""
    return "OLI" if int(year) >= OLI_FIRST_YEAR else "TM/ETM+"


def luojia_response(radiance: np.ndarray, grid: Grid, pixel_deg: float = LUOJIA_PIXEL_DEG) -> np.ndarray:
    """``S``: ``radiance`` (H, W) on ``grid`` as ~``pixel_deg`` pixels see it, back on ``grid`` (NaN kept)."""
    from affine import Affine
    from rasterio.crs import CRS
    from rasterio.enums import Resampling
    from rasterio.warp import reproject, transform_bounds

    west, south, east, north = transform_bounds(CRS.from_user_input(grid.crs), "EPSG:4326", *grid.bounds,
                                                densify_pts=21)
    pad = 2 * pixel_deg
    width = int(np.ceil((east - west + 2 * pad) / pixel_deg))
    height = int(np.ceil((north - south + 2 * pad) / pixel_deg))
    coarse_t = Affine(pixel_deg, 0, west - pad, 0, -pixel_deg, north + pad)
    coarse = np.full((height, width), np.nan, np.float64)
    common = dict(src_nodata=np.nan, dst_nodata=np.nan, resampling=Resampling.average)
    reproject(np.asarray(radiance, np.float64), coarse, src_transform=grid.transform,
              src_crs=CRS.from_user_input(grid.crs), dst_transform=coarse_t, dst_crs="EPSG:4326", **common)
    out = np.full(grid.shape, np.nan, np.float64)
    reproject(coarse, out, src_transform=coarse_t, src_crs="EPSG:4326", dst_transform=grid.transform,
              dst_crs=CRS.from_user_input(grid.crs), **common)
    out[~np.isfinite(radiance)] = np.nan
    return out


def reference_scale(pairs: Sequence[tuple[np.ndarray, np.ndarray]]) -> float:
    """``c``: summed target over summed ``S(T)`` where both are finite, pooled over ``(target, S(T))`` pairs."""
    num = den = 0.0
    for target, response in pairs:
        ok = np.isfinite(target) & np.isfinite(response)
        num += float(np.sum(target[ok], dtype=np.float64))
        den += float(np.sum(response[ok], dtype=np.float64))
    if not den > 0:
        raise ValueError("reference scale: the target mosaics and the truth share no lit pixel")
    return num / den


def dark_floor(product: np.ndarray, truth: np.ndarray, fraction: float = DARK_FRACTION) -> float:
    """Mean product radiance over the ``fraction`` darkest pixels of the truth (both finite)."""
    ok = np.isfinite(product) & np.isfinite(truth)
    if not ok.any():
        return float("nan")
    t, p = truth[ok], product[ok]
    k = max(1, int(round(fraction * t.size)))
    darkest = np.argpartition(t, k - 1)[:k]
    return float(p[darkest].mean())


@dataclass(frozen=True)
class YearLight:
    """Total light of one year's product, its reference, the raw truth and the PANDA baseline."""

    year: int
    era: str
    n_pixels: int
    product: float
    reference: float
    truth: float
    panda_baseline: float | None
    dark_floor: float

    @property
    def total_light_ratio(self) -> float:
        """Product over reference."""
        return self.product / self.reference if self.reference else float("nan")

    @property
    def total_light_ratio_truth(self) -> float:
        """Product over the raw truth."""
        return self.product / self.truth if self.truth else float("nan")

    def record(self) -> dict[str, Any]:
        return dict(asdict(self), total_light_ratio=self.total_light_ratio,
                    total_light_ratio_truth=self.total_light_ratio_truth)


def year_light(year: int, product: np.ndarray, truth: np.ndarray, scale: float, grid: Grid,
               panda_baseline: np.ndarray | None = None, response: np.ndarray | None = None) -> YearLight:
    """:class:`YearLight` of one year over the pixels where product and truth are finite.

    ``response``: ``S(truth)`` when already computed (:func:`luojia_response`).
    """
    reference = scale * (luojia_response(truth, grid) if response is None else response)
    ok = np.isfinite(product) & np.isfinite(truth) & np.isfinite(reference)
    base = None
    if panda_baseline is not None:
        base = float(np.sum(panda_baseline[ok & np.isfinite(panda_baseline)], dtype=np.float64))
    return YearLight(int(year), era_of(year), int(ok.sum()), float(np.sum(product[ok], dtype=np.float64)),
                     float(np.sum(reference[ok], dtype=np.float64)), float(np.sum(truth[ok], dtype=np.float64)),
                     base, dark_floor(product, truth))


def relative_change(series: Mapping[int, float], before: int, after: int) -> float | None:
    """``series[after] / series[before] - 1``, or None when a year is missing."""
    if before not in series or after not in series or not series[before]:
        return None
    return float(series[after] / series[before] - 1.0)


def sensor_step(rows: Sequence[YearLight], before: int = OLI_FIRST_YEAR - 1,
                after: int = OLI_FIRST_YEAR) -> dict[str, Any] | None:
    """The product's and the reference's relative change of total light across the sensor change."""
    product = relative_change({r.year: r.product for r in rows}, before, after)
    reference = relative_change({r.year: r.reference for r in rows}, before, after)
    if product is None or reference is None:
        return None
    return {"from": before, "to": after, "product_change": product, "reference_change": reference,
            "difference": product - reference}


def dark_floor_by_era(rows: Sequence[YearLight]) -> dict[str, Any] | None:
    """Mean dark floor of the TM/ETM+ and of the OLI years, and their ratio."""
    eras = {e: [r.dark_floor for r in rows if r.era == e and np.isfinite(r.dark_floor)] for e in ("TM/ETM+", "OLI")}
    if not all(eras.values()):
        return None
    tm, oli = float(np.mean(eras["TM/ETM+"])), float(np.mean(eras["OLI"]))
    return {"tm_etm_mean": tm, "oli_mean": oli, "ratio": tm / oli if oli else float("nan")}


def _read_band(path: Path) -> tuple[np.ndarray, Grid]:
    arr, grid = read_raster(path)
    return arr[0].astype(np.float64), grid


def evaluate_fidelity(products: Mapping[int, Path], truths: Mapping[int, Path], targets: Mapping[int, Path],
                      out_path, *, panda: Mapping[int, Path] | None = None, metrics_json=None,
                      factor: int = 8) -> Path:
    """Write ``fidelity.json``: total light of every product against its reference, truth and PANDA.

    Parameters
    ----------
    products, truths : mapping of year to path
        Yearly products and the synthetic scene's hidden truth (every product's year needs a truth).
    targets : mapping of year to path
        The target mosaics (``results/target/{year}.tif``) of the target years; they set the scale.
    out_path : path-like
        Output JSON (written atomically).
    panda, metrics_json : optional
        Resampled PANDA DN per year and the model's ``metrics.json``: with both, the PANDA
        interpolation baseline's total light is reported too.
    factor : int
        Working pixels per 1 km PANDA cell.
    """
    missing = sorted(set(products) - set(truths)) + sorted(set(targets) - set(truths))
    if missing:
        raise ValueError(f"fidelity: no hidden truth for year(s) {missing}")
    if not targets:
        raise ValueError("fidelity: no target year (run.target_years) to take the Luojia-01 scale from")
    coef = None
    if panda is not None and metrics_json is not None:
        coef = json.loads(Path(metrics_json).read_text())["methods"]["interpolation"]["coefficients"]
    ref_path = Path(truths[min(truths)])
    grid = grid_of(ref_path)

    def read(path) -> np.ndarray:
        arr, g = _read_band(Path(path))
        check_same_grid(Path(path), g, ref_path, grid)
        return arr

    # the target years' mosaics and S(truth), read and computed once: they set the scale and are compared below
    target_arrays = {year: read(targets[year]) for year in sorted(targets)}
    responses = {year: luojia_response(read(truths[year]), grid) for year in sorted(targets)}
    scale = reference_scale([(target_arrays[y], responses[y]) for y in sorted(targets)])
    rows, footprint = [], {}
    for year in sorted(products):
        product, truth = read(products[year]), read(truths[year])
        base = None
        if coef is not None and year in panda:
            base = baseline_radiance(read(panda[year]), coef, factor)
        rows.append(year_light(year, product, truth, scale, grid, base, responses.get(year)))
        if year in targets:
            target = target_arrays[year]
            footprint[str(year)] = {"n_pixels": int(M.valid_mask(product, target).sum()),
                                    "total_light_ratio": M.total_light_ratio(product, target)}
        log.info("%s: product / reference total light %.3f (/ truth %.3f)", year, rows[-1].total_light_ratio,
                 rows[-1].total_light_ratio_truth)
    out = {
        "reference": {"scale": scale, "luojia_pixel_deg": LUOJIA_PIXEL_DEG, "target_years": sorted(targets)},
        "years": {str(r.year): r.record() for r in rows},
        "target_footprint": footprint,
        "sensor_step": sensor_step(rows),
        "dark_floor": dark_floor_by_era(rows),
        "definitions": {
            "reference": "c * S(truth): the hidden radiance averaged onto ~130 m lon/lat pixels and back "
                         "(Luojia-01's spatial response), times c",
            "scale": "c = sum of the target mosaics / sum of S(truth) over their footprint, pooled over the "
                     "target years",
            "pixels": "every pixel where the product and the truth are finite",
            "total_light_ratio": "sum product / sum reference (1 = total light kept)",
            "total_light_ratio_truth": "sum product / sum truth",
            "panda_baseline": "total light of the PANDA interpolation baseline (metrics.json's polynomial)",
            "target_footprint": "target years: sum product / sum target mosaic where both are finite",
            "sensor_step": f"relative change of total light {OLI_FIRST_YEAR - 1} -> {OLI_FIRST_YEAR} (TM/ETM+ "
                           "to OLI) of the product and the reference, and their difference",
            "dark_floor": f"mean product radiance over the {DARK_FRACTION:.0%} darkest pixels of the truth; "
                          "by era: the mean over the era's years and TM/ETM+ over OLI",
        },
    }
    write_text_atomic(Path(out_path), json.dumps(json_safe(out), indent=2) + "\n")
    return Path(out_path)
