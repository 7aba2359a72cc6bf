"""Level calibration: one scale that gives the product the total light of its targets.

The models are trained on log radiance. A log-scale loss makes a prediction close to the
conditional median (or a geometric mean) of the radiance its inputs allow, and for skewed
radiance that lies below the mean, so summed radiance (what users add up over a city) is lost.
The textbook fix for a log-scale regression is a retransformation ("smearing") factor
(Duan, 1983, JASA 78: 605-610): the ratio of observed to predicted totals where both are known.

:func:`calibrate_level` measures it where the model was trained and nowhere else:

* the target years' (Luojia-01) targets over the **train and val** split patches of
  ``train.zarr`` (the test split is kept out, so its figures stay an honest check);
* the model's predictions **in context**, made as the products are made (the grid's tile
  lattice, blended; :func:`pandafine.inference.infer.predict_area` per spatial block that
  holds patches), not on isolated patches: an isolated 32 px patch sees no neighbours, and its
  total light differs from the same pixels in the product.

With ``grid.block`` set, at most ``infer.level_max_blocks`` blocks per target year are predicted
(:func:`choose_blocks`: those holding the most train and val patch pixels), so the job costs at
most that many blocks' inference per target year however large the region.

The scale is ``s = sum(target) / sum(prediction)`` over those pixels, pooled over the target
years (:func:`pooled_scale`); ``pandafine infer --level`` multiplies every product by it.
``level.json`` records ``s`` and, per target year and split, the totals behind it, so the
effect on the test split is measured in the same file, with the test split's brightest-1 %
error in context (streamed in two passes, :class:`pandafine.core.metrics.BrightestError`:
memory does not grow with the region). ``infer.level: none`` writes ``s = 1``.

Pure functions first (:func:`split_masks`, :func:`light_sums`, :func:`pooled_scale`);
:func:`calibrate_level` does the I/O.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from pandafine.config import level_max_blocks
from pandafine.core import metrics as M
from pandafine.core.atomic import write_text_atomic
from pandafine.core.blocks import grid_blocks
from pandafine.core.json_records import json_safe
from pandafine.core.raster_io import open_raster
from pandafine.inference.blending import TileLayout, grid_tiling
from pandafine.inference.infer import (
    MASK_CHANNEL,
    MODEL_MULTIPLE,
    InferParams,
    check_level_scale,
    open_predictor,
    predict_area,
)
from pandafine.tiles.cube import open_cube
from pandafine.tiles.store import SPLIT_NAMES, PatchStore

log = logging.getLogger(__name__)

LEVEL_NAME = "level.json"
#: ``infer.level`` values: ``pooled`` (the scale of this module), ``none`` (scale 1).
LEVEL_METHODS = ("pooled", "none")
#: Splits whose pixels set the scale (the test split stays out of it).
FIT_SPLITS = ("train", "val")
#: Quantile of the target above which test pixels count as brightest (as in ``metrics.json``).
BRIGHTEST_Q = 0.99


@dataclass(frozen=True)
class LightSums:
    """Summed prediction and target radiance over one split's pixels of one year."""

    year: int
    split: str
    n_pixels: int
    predicted: float
    target: float

    @property
    def ratio(self) -> float:
        """``predicted / target`` (NaN without target light)."""
        return self.predicted / self.target if self.target > 0 else math.nan


# --------------------------------------------------------------------------- pure

def split_masks(rows: np.ndarray, cols: np.ndarray, splits: np.ndarray, patch: int,
                area: tuple[int, int, int, int]) -> dict[str, np.ndarray]:
    """Boolean masks of ``area`` (row, col, rows, cols) covered by each split's patches.

    ``rows``, ``cols`` are the patches' grid offsets and ``splits`` their codes (0 train,
    1 val, 2 test; :data:`pandafine.tiles.store.SPLIT_NAMES`), all of one year. Patches
    reaching outside the area count with their part inside it.
    """
    r0, c0, h, w = (int(v) for v in area)
    masks = {name: np.zeros((h, w), dtype=bool) for name in SPLIT_NAMES}
    for r, c, s in zip(np.asarray(rows), np.asarray(cols), np.asarray(splits)):
        top, left = max(int(r) - r0, 0), max(int(c) - c0, 0)
        bottom, right = min(int(r) + patch - r0, h), min(int(c) + patch - c0, w)
        if top < bottom and left < right:
            masks[SPLIT_NAMES[int(s)]][top:bottom, left:right] = True
    return masks


def patch_pixels_in(area: tuple[int, int, int, int], rows: np.ndarray, cols: np.ndarray, patch: int) -> int:
    """Pixels of the ``patch``-sized patches at ``rows``, ``cols`` that lie inside ``area`` (row, col, rows, cols)."""
    r0, c0, h, w = (int(v) for v in area)
    dr = np.clip(np.minimum(np.asarray(rows) + patch, r0 + h) - np.maximum(rows, r0), 0, None)
    dc = np.clip(np.minimum(np.asarray(cols) + patch, c0 + w) - np.maximum(cols, c0), 0, None)
    return int(np.sum(dr * dc))


def choose_blocks(blocks: Sequence, rows: np.ndarray, cols: np.ndarray, splits: np.ndarray, patch: int,
                  max_blocks: int | None) -> list:
    """The spatial blocks the level is measured on, in grid order.

    Blocks holding patches of any split; with more than ``max_blocks`` of them, the ``max_blocks``
    holding the most train and val patch pixels (ties: the first in grid order). Pure.
    """
    rows, cols, splits = np.asarray(rows), np.asarray(cols), np.asarray(splits)
    fit = np.isin(splits, [SPLIT_NAMES.index(s) for s in FIT_SPLITS])
    held = [(patch_pixels_in(b.area, rows[fit], cols[fit], patch), i, b) for i, b in enumerate(blocks)
            if patch_pixels_in(b.area, rows, cols, patch) > 0]
    if max_blocks is not None and len(held) > max_blocks:
        held = sorted(held, key=lambda t: (-t[0], t[1]))[:max_blocks]
    return [b for _, _, b in sorted(held, key=lambda t: t[1])]


def light_sums(year: int, predicted: np.ndarray, target: np.ndarray,
               masks: Mapping[str, np.ndarray]) -> list[LightSums]:
    """Per split: summed ``predicted`` and ``target`` over the masked pixels where both are finite."""
    both = np.isfinite(predicted) & np.isfinite(target)
    out = []
    for split, mask in masks.items():
        ok = mask & both
        out.append(LightSums(int(year), split, int(ok.sum()), float(np.sum(predicted[ok], dtype=np.float64)),
                             float(np.sum(target[ok], dtype=np.float64))))
    return out


def merge_sums(parts: Sequence[LightSums]) -> list[LightSums]:
    """Add up sums of the same (year, split) (e.g. from several spatial blocks), sorted by year and split."""
    acc: dict[tuple[int, str], list[float]] = {}
    for p in parts:
        a = acc.setdefault((p.year, p.split), [0, 0.0, 0.0])
        a[0] += p.n_pixels
        a[1] += p.predicted
        a[2] += p.target
    order = {name: i for i, name in enumerate(SPLIT_NAMES)}
    return [LightSums(y, s, int(n), pr, t) for (y, s), (n, pr, t) in
            sorted(acc.items(), key=lambda kv: (kv[0][0], order.get(kv[0][1], 99)))]


def pooled_scale(sums: Sequence[LightSums], splits: Sequence[str] = FIT_SPLITS) -> float:
    """``sum(target) / sum(predicted)`` over the ``splits`` of every year.

    Raises ValueError when those pixels hold no predicted or no target light: there is
    nothing to calibrate on.
    """
    chosen = [s for s in sums if s.split in splits]
    predicted = sum(s.predicted for s in chosen)
    target = sum(s.target for s in chosen)
    if not (predicted > 0 and target > 0 and math.isfinite(predicted) and math.isfinite(target)):
        raise ValueError(f"level calibration: the {'/'.join(splits)} patches of the target years hold "
                         f"predicted light {predicted:g} and target light {target:g}; both must be > 0")
    return target / predicted


# --------------------------------------------------------------------------- I/O

class NoPatchesError(ValueError):
    """``train.zarr`` holds no patch of a target year (its frames left too few target pixels)."""


class YearPatches:
    """One target year: its cube, its target mosaic and where its patches lie, walked block by block."""

    def __init__(self, cfg: Mapping[str, Any], cube_path, target_path, store: PatchStore) -> None:
        self.cube = open_cube(cube_path)
        if self.cube.year is None:
            raise ValueError(f"{cube_path}: no 'year' attribute; the level calibration needs each cube's year")
        self.year = int(self.cube.year)
        self.target_path = Path(target_path)
        of_year = store.extra["year"] == self.year
        if not of_year.any():
            raise NoPatchesError(f"{store.path}: no patches of target year {self.year} ({cube_path})")
        self.rows, self.cols = store.extra["row"][of_year], store.extra["col"][of_year]
        self.splits, self.patch = store.split[of_year], store.core
        self.mask_index = self.cube.channels.index(MASK_CHANNEL)
        candidates = grid_blocks(self.cube.grid, int(cfg["grid"].get("block", 0) or 0))
        self.chosen = choose_blocks(candidates, self.rows, self.cols, self.splits, self.patch, level_max_blocks(cfg))
        if len(self.chosen) < sum(patch_pixels_in(b.area, self.rows, self.cols, self.patch) > 0 for b in candidates):
            log.info("year %s: the level is measured on the %d blocks with the most train and val patch pixels "
                     "(infer.level_max_blocks)", self.year, len(self.chosen))

    def blocks(self):
        """Yield ``(block, split masks, target window)`` for each chosen block (:func:`choose_blocks`)."""
        height, width = self.cube.grid.shape
        with open_raster(self.target_path) as src:
            if (src.height, src.width) != (height, width):
                raise ValueError(f"{self.target_path}: target of {src.height}x{src.width} px for a cube of "
                                 f"{height}x{width} px ({self.cube.path}); expected the same working grid")
            for block in self.chosen:
                masks = split_masks(self.rows, self.cols, self.splits, self.patch, block.area)
                r0, c0, h, w = block.area
                target = src.read(1, window=((r0, r0 + h), (c0, c0 + w))).astype(np.float64)
                if src.nodata is not None and not np.isnan(src.nodata):
                    target[target == src.nodata] = np.nan
                yield block, masks, target

    def test_pixels(self, block, masks, target) -> np.ndarray:
        """Test-split pixels of a block where the target is finite and the model predicts (its PANDA is finite)."""
        r0, c0, h, w = block.area
        panda = np.asarray(self.cube.inputs[self.mask_index, r0:r0 + h, c0:c0 + w])
        return masks["test"] & np.isfinite(target) & np.isfinite(panda)


def year_light_sums(cfg: Mapping[str, Any], session, bands: int, finalize, year: YearPatches,
                    brightest: "M.BrightestScorer | None" = None) -> list[LightSums]:
    """:func:`light_sums` of one target year, predicted in context block by block (``grid.block``).

    With ``brightest`` (the second pass of a :class:`pandafine.core.metrics.BrightestError` that
    scanned the test split's targets), the test pixels' predictions are added to it.
    """
    params = InferParams.from_config(cfg)
    height, width = year.cube.grid.shape
    tile, overlap = grid_tiling(height, width, params.tile, params.overlap, MODEL_MULTIPLE)
    parts: list[LightSums] = []
    for block, masks, target in year.blocks():
        layout = TileLayout(height, width, tile, overlap, params.window, area=block.area)
        predicted = predict_area(session, year.cube.inputs, layout, params, bands=bands, finalize=finalize,
                                 mask_channel=year.mask_index, source=str(year.cube.path))[0]
        parts.extend(light_sums(year.year, predicted, target, masks))
        if brightest is not None:
            test = year.test_pixels(block, masks, target)
            brightest.add(target[test], {"model": predicted[test]})
        log.info("%s: year %s, block %s: %d patch pixels predicted in context", year.cube.path, year.year,
                 block.name, sum(int(m.sum()) for m in masks.values()))
    return merge_sums(parts)


def scan_test_targets(years: Sequence[YearPatches], q: float = BRIGHTEST_Q) -> "M.BrightestError":
    """First pass of the test split's brightest-pixel error: its targets, read without the model."""
    scan = M.BrightestError(q)
    for year in years:
        for block, masks, target in year.blocks():
            scan.scan(target[year.test_pixels(block, masks, target)])
    return scan


def calibrate_level(cfg: Mapping[str, Any], model_path, tiles_path, cubes: Sequence, targets: Sequence,
                    out_path, *, method: str | None = None) -> dict[str, Any]:
    """Measure the level scale of ``model_path`` and write ``level.json`` (see the module docstring).

    Parameters
    ----------
    cfg : mapping
        Validated config (``infer``: tiling, providers, ``level``; ``grid.block``; ``run.target_years``).
    model_path : path
        The model the products are made with (``model.onnx``, a variant, or a generative checkpoint).
    tiles_path : path
        ``results/tiles/train.zarr`` (patch positions, years and splits).
    cubes, targets : sequences of paths
        ``results/tiles/cube/{year}.zarr`` and ``results/target/{year}.tif`` of the target years, in
        the same order.
    out_path : path
        ``level.json``, written atomically.
    method : str, optional
        ``pooled`` or ``none``; default ``infer.level`` (``pooled``).
    """
    method = method or str(cfg["infer"].get("level", "pooled"))
    if method not in LEVEL_METHODS:
        raise ValueError(f"infer.level: value {method!r} must be one of {', '.join(LEVEL_METHODS)}")
    if len(cubes) != len(targets) or not cubes:
        raise ValueError(f"level calibration: {len(cubes)} cube(s) and {len(targets)} target(s) given; "
                         "expected one cube per target and at least one")
    record: dict[str, Any] = {"method": method, "model": str(model_path), "scale": 1.0}
    if method == "pooled":
        store = PatchStore(tiles_path)
        for key in ("year", "row", "col"):
            if key not in store.extra:
                raise ValueError(f"{store.path}: array '{key}' missing; the level calibration needs the patches' "
                                 "years and grid offsets (rebuild train.zarr with `pandafine patches`)")
        years = []
        for cube, target in zip(cubes, targets):
            try:
                years.append(YearPatches(cfg, cube, target, store))
            except NoPatchesError as exc:  # a target year whose frames left no patch: the others set the level
                log.warning("%s; the level is measured on the other target years", exc)
        if not years:
            raise ValueError(f"{store.path}: no patches of any target year ({', '.join(str(c) for c in cubes)}); "
                             "the level calibration has nothing to measure")
        brightest = scan_test_targets(years).scorer()
        params = InferParams.from_config(cfg)
        session, bands, finalize, _ = open_predictor(model_path, params, store.n_channels,
                                                     require_gpu=bool(cfg["infer"].get("require_gpu", False)))
        sums: list[LightSums] = []
        for year in years:
            sums.extend(year_light_sums(cfg, session, len(bands), finalize, year, brightest))
        scale = pooled_scale(sums)
        record.update(scale=scale, fit_splits=list(FIT_SPLITS), sums=[
            {**asdict(s), "ratio": s.ratio, "ratio_scaled": s.ratio * scale} for s in sums])
        record["pooled"] = {s.split: {"ratio": s.ratio, "ratio_scaled": s.ratio * scale, "n_pixels": s.n_pixels}
                            for s in merge_sums([replace(s, year=0) for s in sums])}  # per split, years added
        error = brightest.result().get("model", math.nan)
        # mean of (s p - t) / t over the brightest = s (1 + mean of (p - t) / t) - 1
        record["test_brightest_1pct_error"] = {"before": error, "after": scale * (1.0 + error) - 1.0,
                                               "quantile": BRIGHTEST_Q}
        log.info("level scale %.4f (predicted/target before: %s)", scale,
                 ", ".join(f"{s.year} {s.split} {s.ratio:.3f}" for s in sums))
    record["definition"] = ("scale = sum(target) / sum(prediction) over the train and val patches of the target "
                            "years, predicted in context; the products are multiplied by it. ratio = "
                            "prediction / target before it, ratio_scaled after it. test_brightest_1pct_error: "
                            "mean (prediction - target) / target over the test split's pixels at or above the "
                            "0.99 quantile of the target, predicted in context, before and after the scale.")
    write_text_atomic(Path(out_path), json.dumps(json_safe(record), indent=2) + "\n")
    return record


def read_level(path) -> float:
    """The scale of a ``level.json``; ValueError naming the file when it has none or not a number > 0."""
    path = Path(path)
    try:
        value = json.loads(path.read_text())["scale"]
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{path}: no usable 'scale' ({exc}); expected a level.json from `pandafine level`") from exc
    return check_level_scale(value, source=str(path))


__all__ = ("LEVEL_NAME", "LEVEL_METHODS", "LightSums", "split_masks", "patch_pixels_in", "choose_blocks",
           "light_sums", "merge_sums", "pooled_scale", "NoPatchesError", "YearPatches", "year_light_sums",
           "scan_test_targets", "calibrate_level", "read_level")
