"""Ablation study of MMNTLSR: one command trains and evaluates every row of the table.

Rows 1-5 reproduce the cumulative rows of the MMNTLSR paper's ablation
(baseline, + deformable convolution, + affine transformation, + auxiliary
supervision, + multi-scale prediction loss); rows 6-11 are our additions
(+ multimodal fusion, + deformation field, a concatenation UNet of the same
depth and about the same parameter count as full MMNTLSR, the interpolation
baseline of :mod:`pandafine.training.evaluate`, which needs no training, + modulation
(global intensity x local pattern) and + local pattern = full MMNTLSR). The
row numbers of rows 1-9 are those of earlier versions of the table. Each trained row is a copy
of the config whose ``model`` section is replaced by the row's model (same
``width``/``depth``), trained with :func:`pandafine.training.train.train_model` and
evaluated with :func:`pandafine.training.evaluate.evaluate_model` in ``out_dir/<slug>/``.

The table (``ablation.csv``, ``ablation.md``) reports our test-split metrics
for every requested row, whatever their sign, and, next to rows 1-5 only, the
PSNR the authors report on their own Luojia-01 2018 test set. Those are the
paper's numbers on other data and another scale, not measurements of ours.

Resumable: a row whose ``metrics.json`` and ``ablation_row.json`` exist and
whose key (model config, training parameters, patches, evaluation parameters)
matches is neither retrained nor re-evaluated; an interrupted training resumes
through :func:`~pandafine.training.train.train_model`'s own checkpoints.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from pandafine.core.atomic import write_text_atomic
from pandafine.core.channels import CHANNELS
from pandafine.core.json_records import canonical_json, json_safe
from pandafine.models import MODEL_DEFAULTS
from pandafine.models.checkpoint import read_checkpoint
from pandafine.models.mmntlsr import MMNTLSR
from pandafine.models.registry import load_trained_model
from pandafine.models.unet import UNet
from pandafine.studies.tables import csv_cell, csv_text, markdown_table, num
from pandafine.tiles.store import PatchStore
from pandafine.training import evaluate as E
from pandafine.training.evaluate import evaluate_model
from pandafine.training.train import TrainSpec, train_model

log = logging.getLogger(__name__)

ROW_FILE = "ablation_row.json"
CSV_NAME = "ablation.csv"
MD_NAME = "ablation.md"
#: Label of the authors' column: their numbers, on their data.
PAPER_LABEL = "paper (Luojia-01 2018)"
PAPER_SOURCE = "MMNTLSR paper, ablation on the Luojia-01 2018 test set (reported by the authors, not measured here)"
#: Test-split metrics collected from ``metrics.json`` (``test_split.model`` / ``test_split.interpolation``).
METRIC_KEYS = ("psnr_log_db", "psnr_radiance_db", "ssim_log", "rmse_radiance", "total_light_error",
               "brightest_1pct_error")
#: Metrics whose spread over seeds is reported (``<key>_sd`` columns).
SPREAD_KEYS = ("psnr_log_db", "psnr_radiance_db", "brightest_1pct_error")
CSV_COLUMNS = ("row", "name", "slug", "model", "modules_on", "paper_luojia01_2018_psnr_db", *METRIC_KEYS,
               "n_params", "train_seconds", "epochs_run", "best_epoch", "n_seeds",
               *(f"{k}_sd" for k in SPREAD_KEYS), "psnr_log_vs_unet_db")

#: The switches rows 1-7 add cumulatively; rows 10 and 11 then add ``modulation`` and ``local_pattern``.
_SWITCHES = ("fusion", "affine", "deformable", "deformation_field", "auxiliary", "multiscale")
#: Every MMNTLSR switch (those of the model's defaults), each spelled out in every row.
_ALL_SWITCHES = tuple(MODEL_DEFAULTS["mmntlsr"]["modules"])


def _modules(*on: str) -> dict[str, bool]:
    """Every switch spelled out (those not named off), so a row does not change when a default does."""
    return {k: k in on for k in _ALL_SWITCHES}


@dataclass(frozen=True)
class AblationRow:
    """One row of the ablation table.

    Attributes
    ----------
    name : str
        Row label.
    slug : str
        Sub-directory of ``out_dir`` holding the row's model and metrics.
    overrides : mapping or None
        Keys replacing the config's ``model`` section (``width``/``depth`` are kept);
        ``None`` for the interpolation baseline (no model).
    paper_psnr_db : float or None
        The authors' reported PSNR for this row (rows 1-5 only).
    """

    name: str
    slug: str
    overrides: Mapping[str, Any] | None
    paper_psnr_db: float | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)


_ROWS = (
    AblationRow("baseline", "01-baseline", {"name": "mmntlsr", "modules": _modules()}, 15.66),
    AblationRow("+ deformable conv", "02-deformable", {"name": "mmntlsr", "modules": _modules("deformable")}, 19.31),
    AblationRow("+ affine", "03-affine", {"name": "mmntlsr", "modules": _modules("deformable", "affine")}, 24.07),
    AblationRow("+ auxiliary supervision", "04-auxiliary",
                {"name": "mmntlsr", "modules": _modules("deformable", "affine", "auxiliary")}, 29.20),
    AblationRow("+ multi-scale loss", "05-multiscale",
                {"name": "mmntlsr", "modules": _modules("deformable", "affine", "auxiliary", "multiscale")}, 32.40),
    AblationRow("+ multimodal fusion", "06-fusion",
                {"name": "mmntlsr", "modules": _modules("deformable", "affine", "auxiliary", "multiscale", "fusion")}),
    AblationRow("+ deformation field", "07-deformation-field", {"name": "mmntlsr", "modules": _modules(*_SWITCHES)}),
    AblationRow("UNet (concatenation)", "08-unet", {"name": "unet"}),
    AblationRow("interpolation", "09-interpolation", None),
    AblationRow("+ modulation", "10-modulation", {"name": "mmntlsr", "modules": _modules(*_SWITCHES, "modulation")}),
    AblationRow("+ local pattern (full MMNTLSR)", "11-full",
                {"name": "mmntlsr", "modules": _modules(*_SWITCHES, "modulation", "local_pattern")}),
)

#: The table's rows in order, as ``(row name, model config overrides)``; row numbers are 1-based positions.
#: Overrides ``None``: the interpolation baseline (no training).
ABLATION_ROWS: list[tuple[str, Mapping[str, Any] | None]] = [(r.name, r.overrides) for r in _ROWS]
#: The authors' reported PSNR (dB) of rows 1-5, by row number (see :data:`PAPER_LABEL`).
PAPER_PSNR_DB: dict[int, float] = {i + 1: r.paper_psnr_db for i, r in enumerate(_ROWS) if r.paper_psnr_db is not None}
_INTERPOLATION = next(r for r in _ROWS if r.overrides is None)
#: Model keys carried over from the config's ``model`` section into each row, by model name.
_CARRIED = {"mmntlsr": ("width", "depth", "loss_weights"), "unet": ("width", "depth", "norm")}


# --------------------------------------------------------------------------- pure helpers

def select_rows(rows: Sequence[int] | None) -> list[int]:
    """Validated, sorted, de-duplicated 1-based row numbers (all rows if ``rows`` is None)."""
    if rows is None:
        return list(range(1, len(_ROWS) + 1))
    bad = [r for r in rows if not (isinstance(r, (int, np.integer)) and 1 <= int(r) <= len(_ROWS))]
    if bad or not len(rows):
        raise ValueError(f"ablation rows {list(rows)!r}: expected a non-empty list of row numbers 1..{len(_ROWS)}")
    return sorted({int(r) for r in rows})


def _int_list(text: str | None, option: str, expected: str) -> list[int] | None:
    """Comma-separated integers of a command-line option (``None`` for ``None``/empty text)."""
    if text is None or not text.strip():
        return None
    try:
        return [int(t) for t in text.split(",") if t.strip()]
    except ValueError as exc:
        raise ValueError(f"{option} {text!r}: expected {expected}") from exc


def parse_rows(text: str | None) -> list[int] | None:
    """``"1,2,5"`` -> ``[1, 2, 5]`` (``None``/empty: all rows); for the command line."""
    rows = _int_list(text, "--rows", f"comma-separated row numbers 1..{len(_ROWS)}")
    return None if rows is None else select_rows(rows)


def select_seeds(seeds: Sequence[int]) -> list[int]:
    """Validated training seeds: a non-empty list of distinct non-negative integers, in the given order."""
    seeds = [int(s) for s in seeds]
    if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise ValueError(f"ablation seeds {seeds!r}: expected a non-empty list of distinct non-negative integers")
    return seeds


def matched_unet_width(width: int, depth: int, in_channels: int | None = None) -> int:
    """The UNet width whose parameter count is closest to a full MMNTLSR of ``width`` and ``depth``.

    The ablation's UNet row uses it, so that the concatenation baseline is
    compared at (about) the same number of parameters, not at a smaller one.
    """
    c = len(CHANNELS) if in_channels is None else int(in_channels)

    def count(m) -> int:
        return sum(p.numel() for p in m.parameters())

    goal = count(MMNTLSR(c, width, depth))
    return min(range(width, 2 * width + 1), key=lambda w: (abs(count(UNet(c, w, depth)) - goal), w))


def row_model_config(base_model: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """The model section of one row: the base's ``width``/``depth`` (and that model's options), then ``overrides``.

    The UNet row's width is :func:`matched_unet_width` of the base width (same parameter count as MMNTLSR).
    """
    name = overrides["name"]
    carried = {k: copy.deepcopy(base_model[k]) for k in _CARRIED.get(name, ("width", "depth")) if k in base_model}
    if name == "unet":
        carried["width"] = matched_unet_width(int(base_model["width"]), int(base_model["depth"]))
    return {**carried, **copy.deepcopy(dict(overrides))}


def row_config(cfg: Mapping[str, Any], row: int, *, epochs: int | None = None,
               seed: int | None = None) -> dict[str, Any]:
    """A deep copy of ``cfg`` for trained row ``row`` (1-based): its model, ``train.epochs`` and ``run.seed`` if given."""
    overrides = _ROWS[row - 1].overrides
    if overrides is None:
        raise ValueError(f"ablation row {row} ({_ROWS[row - 1].name}) has no model to train")
    out = copy.deepcopy(dict(cfg))
    out["model"] = row_model_config(cfg["model"], overrides)
    if epochs is not None:
        if int(epochs) < 1:
            raise ValueError(f"ablation epochs {epochs!r}: expected >= 1")
        out["train"] = {**out["train"], "epochs": int(epochs)}
    if seed is not None:
        out["run"] = {**out["run"], "seed": int(seed)}
    return out


def parse_seeds(text: str | None) -> list[int] | None:
    """``"42,43"`` -> ``[42, 43]`` (``None``/empty: the config's ``run.seed``); for the command line."""
    seeds = _int_list(text, "--seeds", "comma-separated integers")
    return None if seeds is None else select_seeds(seeds)


def aggregate_seeds(recs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """One table row from the records of one row trained with several seeds.

    Metrics and ``train_seconds`` are means over the seeds; ``<key>_sd`` (for
    :data:`SPREAD_KEYS`) the sample standard deviation (``None`` for one seed);
    ``epochs_run``/``best_epoch`` those of the first seed; ``n_seeds`` the count.
    """
    if not recs:
        raise ValueError("aggregate_seeds: no records")

    def mean(vals):
        vals = [v for v in vals if v is not None and math.isfinite(v)]
        return float(np.mean(vals)) if vals else None

    out = {k: recs[0].get(k) for k in ("model_config", "n_params", "epochs_run", "best_epoch", "n_patches",
                                       "n_pixels")}
    out["metrics"] = {k: mean([r["metrics"].get(k) for r in recs]) for k in METRIC_KEYS}
    times = [r.get("train_seconds") for r in recs]
    out["train_seconds"] = mean(times) if all(v is not None for v in times) else None
    out["n_seeds"] = len(recs)
    for k in SPREAD_KEYS:
        vals = [r["metrics"].get(k) for r in recs if r["metrics"].get(k) is not None]
        out[f"{k}_sd"] = float(np.std(vals, ddof=1)) if len(vals) > 1 else None
    return out


def table_csv(records: Sequence[Mapping[str, Any]]) -> str:
    """CSV text of the table (:data:`CSV_COLUMNS`; empty cells where a value does not apply)."""
    return csv_text(records, CSV_COLUMNS)


def table_markdown(records: Sequence[Mapping[str, Any]], *, n_patches: int | None = None,
                   n_pixels: int | None = None) -> str:
    """Markdown table of the ablation with a note on what each column means."""
    def spread(r, key, spec):
        sd = r.get(f"{key}_sd")
        return num(r.get(key), spec) + (f" ± {format(sd, spec)}" if sd is not None else "")

    n_seeds = max((r.get("n_seeds") or 1) for r in records) if records else 1
    head = ["#", "row", f"{PAPER_LABEL} PSNR dB", "PSNR log dB", "vs UNet dB", "PSNR radiance dB", "SSIM log",
            "RMSE radiance", "total light err", "brightest 1% err", "params", "train s", "epochs (best)"]
    align = ["---:" if i != 1 else ":---" for i in range(len(head))]
    rows = []
    for r in records:
        ep = f"{r['epochs_run']} ({r['best_epoch']})" if r.get("epochs_run") is not None else ""
        rows.append([
            str(r["row"]), r["name"], num(r.get("paper_luojia01_2018_psnr_db"), ".2f"),
            spread(r, "psnr_log_db", ".2f"), num(r.get("psnr_log_vs_unet_db"), "+.2f"),
            spread(r, "psnr_radiance_db", ".2f"), num(r.get("ssim_log"), ".3f"),
            num(r.get("rmse_radiance"), ".3g"), num(r.get("total_light_error"), ".3f"),
            spread(r, "brightest_1pct_error", ".3f"), num(r.get("n_params"), ",d"),
            num(r.get("train_seconds"), ".1f"), ep])
    lines = markdown_table(head, rows, align)
    where = "" if n_patches is None else f" ({n_patches} test patches, {n_pixels} pixels)"
    seeds = ("" if n_seeds == 1 else
             f" Trained rows: mean ± sample standard deviation over {n_seeds} training seeds (`run.seed` values "
             "of `ablation.seeds`); `epochs (best)` of the first seed.")
    notes = [
        "",
        f"Our columns: metrics on the test split of the training patches{where}, as in `metrics.json` "
        "(PSNR on z = log1p(L / L_ref) and on radiance, SSIM on z, RMSE of radiance, relative total-light error, "
        "mean relative error of the brightest 1 % of pixels)." + seeds,
        "`vs UNet dB`: PSNR log of the row minus that of the UNet row (when the UNet row was run).",
        f"`{PAPER_LABEL}`: {PAPER_SOURCE}; other data, another PSNR definition; shown for rows 1-5 only "
        "and not comparable in absolute value with our columns.",
        "Rows 1-7, 10 and 11 add MMNTLSR switches cumulatively (row 10 adds modulation, global intensity x local "
        "pattern, to row 7; row 11, full MMNTLSR, adds the local pattern); row 8 is a concatenation UNet of the "
        "same depth, its width chosen for the parameter count of full MMNTLSR; row 9 is the interpolation baseline "
        "(no training).",
    ]
    return "\n".join(lines + notes) + "\n"


# --------------------------------------------------------------------------- I/O

def _read_row(row_dir: Path, key: str) -> dict[str, Any] | None:
    path = row_dir / ROW_FILE
    if not (path.is_file() and (row_dir / "metrics.json").is_file()):
        return None
    try:
        rec = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return rec if rec.get("key") == key else None


def _n_params(model_dir: Path) -> int:
    model, _ = load_trained_model(model_dir)
    return int(sum(p.numel() for p in model.parameters()))


def _trained_row(cfg: Mapping[str, Any], train_zarr: Path, row: int, row_dir: Path, data_fp: Mapping[str, Any],
                 epochs: int | None, seed: int | None = None) -> dict[str, Any]:
    rcfg = row_config(cfg, row, epochs=epochs, seed=seed)
    spec = TrainSpec.from_config(rcfg)
    key = canonical_json({"row": _ROWS[row - 1].slug, "train": spec.as_dict(), "data": data_fp,
                      "factor": int(rcfg["grid"]["factor"]), "eval_batch_size": int(rcfg["train"]["batch_size"])})
    rec = _read_row(row_dir, key)
    if rec is not None:
        log.info("ablation row %d (%s): up to date in %s", row, _ROWS[row - 1].name, row_dir)
        return rec
    log.info("ablation row %d (%s): training %s", row, _ROWS[row - 1].name, spec.model)
    ck_path = train_model(rcfg, train_zarr, row_dir, progress=False)
    ck = read_checkpoint(ck_path)
    if not ck.get("finished"):
        raise ValueError(f"{ck_path}: training did not finish (stop reason {ck.get('stop_reason')!r})")
    metrics_path = evaluate_model(rcfg, train_zarr, row_dir, row_dir)
    m = json.loads(metrics_path.read_text())
    rec = {
        "key": key,
        "model_config": ck["model_config"],
        "metrics": {k: m["test_split"]["model"].get(k) for k in METRIC_KEYS},
        "n_params": _n_params(row_dir),
        "train_seconds": float(sum(h["seconds"] for h in ck["history"])),
        "epochs_run": int(ck["epoch"]),
        "best_epoch": int(ck["best_epoch"]),
        "n_patches": m["test_split"]["n_patches"],
        "n_pixels": m["test_split"]["n_pixels"],
    }
    write_text_atomic(row_dir / ROW_FILE, json.dumps(rec, indent=2) + "\n")
    return rec


def evaluate_interpolation(cfg: Mapping[str, Any], train_zarr) -> dict[str, Any]:
    """Test-split metrics of the interpolation baseline alone (as in :func:`pandafine.training.evaluate.evaluate_model`).

    The evaluated pixels are those with a finite target and a finite baseline,
    which are the pixels ``evaluate_model`` uses when the model's predictions
    are finite everywhere, so the numbers match its ``interpolation`` entry.
    """
    store = PatchStore(train_zarr)
    panda_ch, factor, test_idx = E.test_split_setup(cfg, store)
    true = store.read_target(test_idx)[:, 0].astype(np.float64)
    pred, coef, n_fit = E.interpolation_baseline(store, test_idx, factor, panda_ch)
    mask = np.isfinite(true) & np.isfinite(pred)
    if not mask.any():
        raise ValueError(f"{store.path}: no test pixel has a finite target and a finite baseline")
    range_log, range_rad = E.data_ranges(true, mask, store.path)
    res = E.method_metrics(pred, true, mask, range_log, range_rad)
    return {"test_split": {"n_patches": int(test_idx.size), "n_pixels": int(mask.sum()),
                           "data_range": {"log": range_log, "radiance": range_rad}, "interpolation": res},
            "coefficients": [float(v) for v in coef], "n_fit_pixels": n_fit}


def _interpolation_row(cfg: Mapping[str, Any], train_zarr: Path, row_dir: Path,
                       data_fp: Mapping[str, Any]) -> dict[str, Any]:
    key = canonical_json({"row": _INTERPOLATION.slug, "data": data_fp, "factor": int(cfg["grid"]["factor"])})
    rec = _read_row(row_dir, key)
    if rec is not None:
        return rec
    m = evaluate_interpolation(cfg, train_zarr)
    row_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(row_dir / "metrics.json", json.dumps(json_safe(m), indent=2) + "\n")
    rec = {"key": key, "model_config": None,
           "metrics": {k: m["test_split"]["interpolation"].get(k) for k in METRIC_KEYS},
           "n_params": len(m["coefficients"]), "train_seconds": None, "epochs_run": None, "best_epoch": None,
           "n_patches": m["test_split"]["n_patches"], "n_pixels": m["test_split"]["n_pixels"]}
    write_text_atomic(row_dir / ROW_FILE, json.dumps(json_safe(rec), indent=2) + "\n")
    return rec


def _modules_on(model_config: Mapping[str, Any] | None) -> str:
    if not model_config or model_config.get("name") != "mmntlsr":
        return ""
    on = [k for k in _ALL_SWITCHES if model_config.get("modules", {}).get(k)]
    return "+".join(on) if on else "none"


def run_ablation(cfg: Mapping[str, Any], train_zarr, out_dir, *, rows: Sequence[int] | None = None,
                 epochs: int | None = None, seeds: Sequence[int] | None = None) -> Path:
    """Train and evaluate the ablation rows; write ``ablation.csv`` and ``ablation.md`` into ``out_dir``.

    Parameters
    ----------
    cfg : mapping
        Validated config; ``model.width``/``model.depth`` size every trained row,
        ``run.seed``, ``train`` and ``grid.factor`` are used as in the train/evaluate stages.
    train_zarr : path-like
        ``results/tiles/train.zarr``.
    out_dir : path-like
        ``results/ablation``; row ``k`` lives in ``out_dir/<slug>/`` (see :data:`ABLATION_ROWS`).
    rows : sequence of int, optional
        1-based row numbers to run (default: all of them).
    epochs : int, optional
        Overrides ``train.epochs`` for every trained row.
    seeds : sequence of int, optional
        Train every trained row once per seed (as ``run.seed``) and report the
        mean and spread (:func:`aggregate_seeds`); row ``k`` seed ``s`` lives in
        ``out_dir/<slug>/seed-<s>/``. Default: one run with the config's seed
        in ``out_dir/<slug>/``.

    Returns
    -------
    pathlib.Path
        ``out_dir / "ablation.csv"``.
    """
    selected = select_rows(rows)
    if seeds is not None:
        seeds = select_seeds(seeds)
    train_zarr, out_dir = Path(train_zarr), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    data_fp = PatchStore(train_zarr).fingerprint()
    records = []
    n_patches = n_pixels = None
    for row in selected:
        spec = _ROWS[row - 1]
        row_dir = out_dir / spec.slug
        t0 = time.perf_counter()
        if spec.overrides is None:
            rec = {**_interpolation_row(cfg, train_zarr, row_dir, data_fp), "n_seeds": None}
        elif seeds is None:
            rec = {**_trained_row(cfg, train_zarr, row, row_dir, data_fp, epochs), "n_seeds": 1}
        else:
            rec = aggregate_seeds([_trained_row(cfg, train_zarr, row, row_dir / f"seed-{s}", data_fp, epochs, s)
                                   for s in seeds])
        log.info("ablation row %d (%s): PSNR(log) %s dB (%.1f s)", row, spec.name,
                 csv_cell(rec["metrics"]["psnr_log_db"]), time.perf_counter() - t0)
        n_patches, n_pixels = rec.get("n_patches"), rec.get("n_pixels")
        mc = rec.get("model_config")
        records.append({"row": row, "name": spec.name, "slug": spec.slug,
                        "model": mc["name"] if mc else "interpolation", "modules_on": _modules_on(mc),
                        "paper_luojia01_2018_psnr_db": spec.paper_psnr_db, **rec["metrics"],
                        **{k: rec.get(k) for k in ("n_params", "train_seconds", "epochs_run", "best_epoch", "n_seeds",
                                                   *(f"{s}_sd" for s in SPREAD_KEYS))}})
    unet = next((r["psnr_log_db"] for r in records if r["model"] == "unet" and r["psnr_log_db"] is not None), None)
    for r in records:
        r["psnr_log_vs_unet_db"] = (r["psnr_log_db"] - unet if unet is not None and r["psnr_log_db"] is not None
                                    and r["model"] != "unet" else None)
    csv_path = out_dir / CSV_NAME
    write_text_atomic(out_dir / MD_NAME, table_markdown(records, n_patches=n_patches, n_pixels=n_pixels))
    write_text_atomic(csv_path, table_csv(records))  # last: the workflow's target
    return csv_path


__all__ = ["ABLATION_ROWS", "PAPER_PSNR_DB", "PAPER_LABEL", "AblationRow", "run_ablation", "row_config",
           "row_model_config", "matched_unet_width", "select_rows", "parse_rows", "select_seeds", "parse_seeds",
           "aggregate_seeds",
           "evaluate_interpolation", "table_csv", "table_markdown"]
