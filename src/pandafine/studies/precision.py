"""What each inference precision costs and gains on the test split: ``precision.json`` / ``.md``.

For the fp32 ``model.onnx`` and its fp16 and int8 versions (:mod:`pandafine.training.quantize`,
built into the output directory), every test-split patch of ``train.zarr`` goes
through onnxruntime (CPU provider, the job's thread budget) and is scored against
the target with the metrics of :mod:`pandafine.training.evaluate` (PSNR on log radiance and
on radiance, SSIM on log radiance, brightest-1 % error), over the pixels where the
target and every prediction are finite, with one data range for all rows.

Speed: seconds per megapixel of model input, timed in the same process on the same
inference-shaped batches (``infer.tile`` squares mosaicked from the test patches,
``infer.batch_size`` per batch), after one warm-up batch per model; the precisions take turns in each of
``repeats`` rounds and the median round counts. ``speed_ratio`` is fp32 time / this
precision's time (> 1: faster than fp32).

onnxruntime's CPU provider has float16 kernels for few ops: it computes the other
float16 nodes in float32 and drops the casts between them, so the fp16 row's
accuracy on CPU reflects little more than float16 weights. The row
``fp16-rounded`` runs :func:`pandafine.training.quantize.write_fp16_emulation` (every
float16 tensor rounded to float16, float32 arithmetic: float16 storage with
float32 accumulation, as GPU tensor cores do) to state the accuracy float16
activations would cost; it has no timing.
"""

from __future__ import annotations

import json
import logging
import platform
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from pandafine.core.atomic import write_text_atomic
from pandafine.core.json_records import json_safe
from pandafine.core.runtime import ort_session_options, threads
from pandafine.models import model_filename
from pandafine.studies import tables
from pandafine.tiles.store import PatchStore
from pandafine.training import quantize as Q
from pandafine.training.evaluate import data_ranges, method_metrics
from pandafine.training.export import INPUT_NAME, OUTPUT_NAME

log = logging.getLogger(__name__)

PRECISION_JSON, PRECISION_MD = "precision.json", "precision.md"
#: The accuracy-only row that rounds fp16 tensors in a float32 graph.
FP16_ROUNDED = "fp16-rounded"
#: Acceptance of the design study: largest PSNR loss against fp32.
MAX_LOSS_DB = 0.3


def _batches(x: np.ndarray, batch_size: int) -> list[np.ndarray]:
    return [np.ascontiguousarray(x[s:s + batch_size]) for s in range(0, len(x), batch_size)]


def timing_batches(x: np.ndarray, tile: int, batch_size: int, multiple: int = 1) -> list[np.ndarray]:
    """Batches of ``tile x tile`` inputs (the inference tile) mosaicked from patches ``x`` (N, C, P, P).

    Each tile is ``k x k`` consecutive patches (``k = ceil(tile / P)``, cycling through
    ``x``) cropped to ``tile`` (rounded down to ``multiple``); there are enough tiles
    for every patch to appear once, and at least one full batch.
    """
    n, c, p, _ = x.shape
    tile = max(multiple, tile // multiple * multiple)
    k = -(-tile // p)
    n_tiles = max(batch_size, -(-n // (k * k)))
    tiles = np.empty((n_tiles, c, tile, tile), np.float32)
    for t in range(n_tiles):
        ids = [(t * k * k + j) % n for j in range(k * k)]
        rows = [np.concatenate([x[ids[r * k + q]] for q in range(k)], axis=-1) for r in range(k)]
        tiles[t] = np.concatenate(rows, axis=-2)[:, :tile, :tile]
    return _batches(tiles, batch_size)


def _run(session, batches: Sequence[np.ndarray]) -> tuple[np.ndarray, float]:
    """(radiance (N, H, W) float64, seconds) of one pass over ``batches``."""
    out = []
    t0 = time.perf_counter()
    for b in batches:
        out.append(session.run([OUTPUT_NAME], {INPUT_NAME: b})[0][:, 0])
    dt = time.perf_counter() - t0
    return np.concatenate(out).astype(np.float64), dt


def _model_meta(path) -> dict[str, str]:
    import onnx

    return {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}


def precision_rows(metrics: Mapping[str, Mapping[str, float]], seconds: Mapping[str, float | None],
                   sizes: Mapping[str, int], megapixels: float) -> list[dict[str, Any]]:
    """Table rows with PSNR loss and speed ratio against the ``fp32`` entry (pure).

    Parameters
    ----------
    metrics : mapping
        ``{precision: method_metrics(...)}``; must contain ``"fp32"``.
    seconds : mapping
        ``{precision: seconds per pass or None}``.
    sizes : mapping
        ``{precision: model file size in bytes}``.
    megapixels : float
        Input megapixels per pass.
    """
    if "fp32" not in metrics:
        raise ValueError(f"precision table: no fp32 row to compare with (rows: {', '.join(metrics)})")
    ref = metrics["fp32"]
    s32 = seconds.get("fp32")
    rows = []
    for p, m in metrics.items():
        s = seconds.get(p)
        rows.append({
            "precision": p,
            "psnr_log_db": m["psnr_log_db"],
            "psnr_radiance_db": m["psnr_radiance_db"],
            "ssim_log": m["ssim_log"],
            "brightest_1pct_error": m["brightest_1pct_error"],
            "psnr_log_loss_db": ref["psnr_log_db"] - m["psnr_log_db"],
            "psnr_radiance_loss_db": ref["psnr_radiance_db"] - m["psnr_radiance_db"],
            "sec_per_megapixel": None if s is None else s / megapixels,
            "speed_ratio": None if s is None or s32 is None or s <= 0 else s32 / s,
            "size_bytes": sizes.get(p),
            "size_ratio": (sizes[p] / sizes["fp32"]) if p in sizes and sizes.get("fp32") else None,
        })
    return rows


def _fmt(v, spec: str) -> str:
    return tables.num(v, spec, missing="–")


def markdown_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """The rows as a Markdown table."""
    head = ["precision", "PSNR log (dB)", "loss (dB)", "PSNR radiance (dB)", "loss (dB)", "SSIM log",
            "brightest 1 % error", "s / Mpx", "speed vs fp32", "size (kB)"]
    cells = []
    for r in rows:
        cells.append([
            r["precision"], _fmt(r["psnr_log_db"], ".3f"), _fmt(r["psnr_log_loss_db"], "+.3f"),
            _fmt(r["psnr_radiance_db"], ".3f"), _fmt(r["psnr_radiance_loss_db"], "+.3f"), _fmt(r["ssim_log"], ".4f"),
            _fmt(r["brightest_1pct_error"], "+.4f"), _fmt(r["sec_per_megapixel"], ".3f"),
            _fmt(r["speed_ratio"], ".2f") + ("×" if r["speed_ratio"] is not None else ""),
            _fmt(None if r["size_bytes"] is None else r["size_bytes"] / 1024, ".0f")])
    return "\n".join(tables.markdown_table(head, cells)) + "\n"


def evaluate_precisions(cfg: Mapping[str, Any], train_zarr, model_path, out_dir, *,
                        precisions: Sequence[str] = ("fp32", "fp16", "int8"), repeats: int = 3,
                        n_tiles: int | None = None, emulate_fp16: bool = True) -> Path:
    """Build the fp16/int8 models of ``model_path`` in ``out_dir`` and compare all precisions.

    Parameters
    ----------
    cfg : mapping
        Validated config (``infer.batch_size``).
    train_zarr : path-like
        ``results/tiles/train.zarr``: test split scored, train split calibrates int8.
    model_path : path-like
        The fp32 ``model.onnx``.
    out_dir : path-like
        Receives ``model.fp16.onnx``, ``model.int8.onnx`` (with their JSON records),
        ``precision.json`` and ``precision.md``.
    precisions : sequence of str
        Rows; ``fp32`` is always included.
    repeats : int
        Timed rounds (median counts).
    n_tiles : int, optional
        Calibration patches of int8 (default :data:`pandafine.training.quantize.CALIBRATION_TILES`).
    emulate_fp16 : bool
        Add the ``fp16-rounded`` accuracy row (when fp16 is among ``precisions``).

    Returns
    -------
    pathlib.Path
        Path of ``precision.json``.
    """
    if repeats < 1:
        raise ValueError(f"repeats: value {repeats} must be >= 1")
    precisions = ["fp32"] + [p for p in dict.fromkeys(precisions) if p != "fp32"]
    for p in precisions:
        model_filename(p)  # raises on an unknown precision
    model_path, out_dir = Path(model_path), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths, records = build_precision_models(model_path, precisions, train_zarr, out_dir, n_tiles=n_tiles,
                                            emulate_fp16=emulate_fp16)
    test = PrecisionTestSet.load(train_zarr, cfg, model_path)
    preds, times = run_precisions(paths, test, timed=precisions, repeats=repeats)
    result = precision_result(test, preds, times, paths, records, precisions, repeats)
    write_text_atomic(out_dir / PRECISION_MD, precision_markdown(result, test))
    path = out_dir / PRECISION_JSON
    write_text_atomic(path, json.dumps(json_safe(result), indent=2) + "\n")
    for r in result["rows"]:
        log.info("%s: PSNR(log) %.3f dB (loss %+.3f), %s s/Mpx, speed x%s", r["precision"], r["psnr_log_db"],
                 r["psnr_log_loss_db"], _fmt(r["sec_per_megapixel"], ".3f"), _fmt(r["speed_ratio"], ".2f"))
    return path


def build_precision_models(model_path: Path, precisions: Sequence[str], train_zarr, out_dir: Path, *,
                           n_tiles: int | None, emulate_fp16: bool) -> tuple[dict[str, Path], dict[str, Any]]:
    """The model of every precision (fp32 is ``model_path``) and the JSON record of each converted one."""
    paths: dict[str, Path] = {"fp32": model_path}
    records = {}
    for p in precisions[1:]:
        kw = {} if n_tiles is None else {"n_tiles": n_tiles}
        paths[p] = Q.build_precision(model_path, p, train_zarr, out_dir / model_filename(p), **kw)
        records[p] = json.loads(Q.record_path(paths[p]).read_text())
    if emulate_fp16 and "fp16" in precisions:
        paths[FP16_ROUNDED] = Q.write_fp16_emulation(model_path, out_dir / "model.fp16-rounded.onnx")
    return paths, records


@dataclass(frozen=True)
class PrecisionTestSet:
    """The test split as the precisions see it: batches for accuracy, ``infer.tile`` tiles for speed."""

    source: Path
    n_patches: int
    true: np.ndarray
    batches: list
    timed_batches: list
    batch_size: int

    @property
    def megapixels(self) -> float:
        """Input megapixels of one timed pass."""
        return sum(b.shape[0] * b.shape[2] * b.shape[3] for b in self.timed_batches) / 1e6

    @classmethod
    def load(cls, train_zarr, cfg: Mapping[str, Any], model_path: Path) -> "PrecisionTestSet":
        store = PatchStore(train_zarr)
        test_idx = store.indices("test")
        if test_idx.size == 0:
            raise ValueError(f"{store.path}: the test split (split == 2) is empty")
        x, _ = store.read(test_idx)
        true = store.read_target(test_idx)[:, 0].astype(np.float64)
        batch_size = int(cfg["infer"]["batch_size"])
        multiple = int(_model_meta(model_path).get("pandafine.input_multiple", 1))
        return cls(store.path, int(test_idx.size), true, _batches(x.astype(np.float32), batch_size),
                   timing_batches(x.astype(np.float32), int(cfg["infer"]["tile"]), batch_size, multiple),
                   batch_size)


def run_precisions(paths: Mapping[str, Path], test: PrecisionTestSet, *, timed: Sequence[str], repeats: int
                   ) -> tuple[dict[str, np.ndarray], dict[str, list[float]]]:
    """Predictions of every model on the test batches, and ``repeats`` timed passes of the ``timed`` ones
    (the precisions take turns in each round, after one untimed warm-up batch each)."""
    import onnxruntime as ort

    sessions = {p: ort.InferenceSession(str(path), sess_options=ort_session_options(),
                                        providers=["CPUExecutionProvider"]) for p, path in paths.items()}
    preds, times = {}, {p: [] for p in timed}
    for p, sess in sessions.items():
        sess.run([OUTPUT_NAME], {INPUT_NAME: test.timed_batches[0]})  # warm-up, not timed
        preds[p], _ = _run(sess, test.batches)
    for _ in range(repeats):
        for p in timed:
            times[p].append(_run(sessions[p], test.timed_batches)[1])
    return preds, times


def precision_result(test: PrecisionTestSet, preds: Mapping[str, np.ndarray], times: Mapping[str, list[float]],
                     paths: Mapping[str, Path], records: Mapping[str, Any], precisions: Sequence[str],
                     repeats: int) -> dict[str, Any]:
    """What ``precision.json`` holds: the table rows, the loss limit, the test split, timing and models."""
    import onnxruntime as ort

    seconds: dict[str, float | None] = {p: statistics.median(v) for p, v in times.items()}
    seconds.setdefault(FP16_ROUNDED, None)
    mask = np.isfinite(test.true)
    for pred in preds.values():
        mask &= np.isfinite(pred)
    if not mask.any():
        raise ValueError(f"{test.source}: no test pixel has a finite target and finite predictions")
    range_log, range_rad = data_ranges(test.true, mask, test.source)
    order = [p for p in precisions if p in preds] + ([FP16_ROUNDED] if FP16_ROUNDED in preds else [])
    metrics = {p: method_metrics(preds[p], test.true, mask, range_log, range_rad) for p in order}
    sizes = {p: paths[p].stat().st_size for p in order}
    rows = precision_rows(metrics, seconds, sizes, test.megapixels)
    limit_ok = {r["precision"]: bool(r["psnr_log_loss_db"] <= MAX_LOSS_DB
                                     and r["psnr_radiance_loss_db"] <= MAX_LOSS_DB) for r in rows}
    return {
        "rows": rows,
        "max_loss_db": MAX_LOSS_DB,
        "within_max_loss": limit_ok,
        "test_split": {"source": str(test.source), "n_patches": test.n_patches, "n_pixels": int(mask.sum()),
                       "data_range": {"log": range_log, "radiance": range_rad}},
        "timing": {
            "runtime": f"onnxruntime {ort.__version__} CPUExecutionProvider",
            "threads": threads(),
            "batch_size": test.batch_size,
            "input_shape": list(test.timed_batches[0].shape[1:]),
            "n_tiles": sum(len(b) for b in test.timed_batches),
            "input_megapixels_per_round": test.megapixels,
            "rounds": repeats,
            "seconds_per_round": dict(times),
            "definition": "median over rounds of the time of one pass over the timing tiles (infer.tile "
                          "squares mosaicked from the test patches); one warm-up batch per model before; "
                          "precisions take turns in each round",
            "machine": platform.processor() or platform.machine(),
        },
        "models": {p: {"path": str(paths[p]), "size_bytes": sizes[p]} for p in order},
        "records": dict(records),
        "notes": {
            "fp16": "onnxruntime's CPU provider computes most float16 nodes in float32 (few float16 CPU "
                    "kernels) and drops the casts between them; fp16 is meant for GPU providers",
            FP16_ROUNDED: "float32 graph rounding every float16 tensor of the fp16 model to float16 "
                          "(accuracy of float16 storage with float32 accumulation); not timed",
            "losses": "fp32 PSNR minus this row's PSNR (positive: worse than fp32)",
        },
    }


def precision_markdown(result: Mapping[str, Any], test: PrecisionTestSet) -> str:
    """``precision.md``: what was measured, then the table."""
    timing = result["timing"]
    return (f"Test split of {test.source}: {test.n_patches} patches, {result['test_split']['n_pixels']} pixels. "
            f"Speed: onnxruntime CPU, {timing['threads']} thread(s), {timing['n_tiles']} tiles of "
            f"{test.timed_batches[0].shape[-1]} px in batches of {test.batch_size}, median of "
            f"{timing['rounds']} rounds.\n\n" + markdown_table(result["rows"]))
