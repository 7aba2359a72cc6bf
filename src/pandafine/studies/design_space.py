"""Design-space measurements: a trained model x sampler x steps x precision -> test-split metrics and speed.

:func:`run_design_space` (``pandafine design-space``) is the one command: for the
points of the config's ``design_space`` section (or a spec file; defaults
:data:`DEFAULT_SPEC`) it trains each model (or reuses it), evaluates every model x
sampler x steps x precision and writes ``design_space.csv`` / ``design_space.md``.

:func:`evaluate_sampling` samples (or, for a deterministic model, predicts) the
test-split patches of ``train.zarr`` and returns the metrics of
:func:`pandafine.training.evaluate.method_metrics` (PSNR on log and linear radiance,
SSIM, brightest-1 % error, ...) over the same pixels and data ranges as
``pandafine evaluate``, beside the interpolation baseline, plus seconds per
megapixel and the model size. Generative models draw the noise of a patch
pixel from :func:`pandafine.models.noise.grid_noise` at its grid position
(seeded), so a result does not depend on the batch size.

:func:`table_csv` / :func:`table_markdown` turn such records into the design-space table.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import json
import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from pandafine.config import schema
from pandafine.core.atomic import write_text_atomic
from pandafine.core.checksums import sha256_file
from pandafine.core.json_records import canonical_json, json_safe
from pandafine.core.runtime import configure_torch, ort_session_options, threads
from pandafine.core.scaling import log_to_radiance
from pandafine.inference.sampling import make_batch_grid_noise_fn, model_tile_sampler
from pandafine.models.checkpoint import CHECKPOINT_NAME, read_checkpoint
from pandafine.models.conditional_unet import DIFFUSION_SAMPLERS, FLOW_SAMPLERS, SamplerSpec
from pandafine.models.registry import load_trained_model
from pandafine.studies.ablation import row_model_config
from pandafine.studies.tables import csv_text, markdown_table, num
from pandafine.tiles.store import PatchStore
from pandafine.training.evaluate import (
    data_ranges,
    interpolation_baseline,
    method_metrics,
    patch_offsets,
    test_split_setup,
)
from pandafine.training.export import INPUT_NAME, OUTPUT_NAME, export_onnx
from pandafine.training.quantize import build_precision
from pandafine.training.train import TrainSpec, predict_log, train_model

log = logging.getLogger(__name__)

#: Columns of the design-space table.
COLUMNS = ("model", "label", "model_dir", "sampler", "steps", "network_calls", "precision", "runtime", "psnr_log_db",
           "psnr_radiance_db", "ssim_log", "brightest_1pct_error", "seconds_per_mpx", "threads",
           "psnr_log_vs_fp32_db", "speed_vs_fp32", "n_params", "size_mb", "n_pixels", "train_seconds", "epochs_run")


def model_size(model) -> tuple[int, float]:
    """(number of parameters, megabytes of the fp32 state: parameters and buffers) of a torch module."""
    n = sum(int(p.numel()) for p in model.parameters())
    nbytes = sum(int(t.numel()) * t.element_size() for t in model.state_dict().values())
    return n, nbytes / 1e6


def _test_split(cfg: Mapping[str, Any], train_zarr):
    """(store, test indices, true radiance (N, P, P), interpolation baseline (N, P, P)) of ``train_zarr``."""
    store = PatchStore(train_zarr)
    panda_ch, factor, test_idx = test_split_setup(cfg, store)
    true = store.read_target(test_idx)[:, 0].astype(np.float64)
    pred_interp, _, _ = interpolation_baseline(store, test_idx, factor, panda_ch)
    return store, test_idx, true, pred_interp


def _score(store, test_idx, true, pred_interp, pred, seconds: float) -> dict[str, Any]:
    """Metrics of ``pred`` and of the baseline over the pixels where the target and both are finite."""
    mask = np.isfinite(true) & np.isfinite(pred) & np.isfinite(pred_interp)
    if not mask.any():
        raise ValueError(f"{store.path}: no test pixel has a finite target and finite predictions")
    range_log, range_rad = data_ranges(true, mask, store.path)
    n_pix = int(test_idx.size) * store.patch * store.patch
    return {"model": method_metrics(pred, true, mask, range_log, range_rad),
            "interpolation": method_metrics(pred_interp, true, mask, range_log, range_rad),
            "seconds_per_mpx": seconds / (n_pix / 1e6), "n_patches": int(test_idx.size),
            "n_pixels": int(mask.sum())}


def evaluate_sampling(cfg: Mapping[str, Any], train_zarr, model_dir, *, sampler: Mapping[str, Any] | None = None,
                      seed: int = 0, batch_size: int = 8) -> dict[str, Any]:
    """Metrics of one trained model (and sampler) on the test split, with its speed.

    Parameters
    ----------
    cfg : mapping
        Validated config (``grid.factor``).
    train_zarr : path-like
        ``results/tiles/train.zarr``.
    model_dir : path-like
        A trained model directory (``checkpoint.pt``).
    sampler : mapping, optional
        Generative models: the sampler (``kind``, ``steps``, ...); default the model's
        configured one. Must be None for deterministic models (unet, mmntlsr).
    seed : int
        Noise seed of the generative samples.
    batch_size : int
        Patches per network call.

    Returns
    -------
    dict
        ``model`` and ``interpolation``: metric dicts of :func:`pandafine.training.evaluate.method_metrics`;
        ``seconds_per_mpx`` (prediction / sampling wall time per 10^6 test pixels, one
        process, after one untimed warm-up batch), ``sampler`` (label or None), ``steps``, ``network_calls``,
        ``n_params``, ``size_mb``, ``n_patches``, ``n_pixels``, ``model_config``.
    """
    import torch

    configure_torch()
    store, test_idx, true, pred_interp = _test_split(cfg, train_zarr)
    model, ck = load_trained_model(model_dir)
    if list(ck["channels"]) != store.channels:
        raise ValueError(f"{Path(model_dir) / 'checkpoint.pt'}: model channels {ck['channels']} differ from "
                         f"{store.path} channels {store.channels}")
    generative = hasattr(model.net, "sample")
    if sampler is not None and not generative:
        raise ValueError(f"{model_dir}: a {ck['model_config'].get('name')} model is deterministic; "
                         "it takes no sampler")
    rows, cols = patch_offsets(store, np.arange(len(store)))  # grid noise sits where each array lies
    first = test_idx[:batch_size]
    if generative:
        spec = model.net.sampler if sampler is None else model.net.check_sampler(model.net.sampler_spec(sampler))
        # warm-up, not timed: one step of the same sampler on the first batch
        short = dataclasses.replace(spec, steps=1, fast_steps=1, slow_steps=1)
        model_tile_sampler(model, short)(store.read(first)[0], make_batch_grid_noise_fn(
            seed, list(zip(rows[first], cols[first]))))
    else:
        with torch.no_grad():
            predict_log(model, store, first, batch_size)  # warm-up, not timed
    t0 = time.perf_counter()
    if generative:
        sample = model_tile_sampler(model, spec)
        parts = []
        for sel, x, _ in store.iter_batches(test_idx, batch_size):
            parts.append(sample(x, make_batch_grid_noise_fn(seed, list(zip(rows[sel], cols[sel])))))
        pred = np.concatenate(parts).astype(np.float64)
    else:
        spec = None
        with torch.no_grad():
            pred = log_to_radiance(predict_log(model, store, test_idx, batch_size).astype(np.float64))
    seconds = time.perf_counter() - t0
    n_params, size_mb = model_size(model)
    return {
        **_score(store, test_idx, true, pred_interp, pred, seconds),
        "sampler": None if spec is None else spec.label(),
        "steps": None if spec is None else (spec.fast_steps + spec.slow_steps if spec.kind == "staged"
                                            else spec.steps),
        "network_calls": 1 if spec is None else spec.network_calls,
        "n_params": n_params,
        "size_mb": size_mb,
        "model_config": ck["model_config"],
    }


def evaluate_onnx(cfg: Mapping[str, Any], train_zarr, onnx_path, *, batch_size: int = 8) -> dict[str, Any]:
    """Metrics of an ONNX model (fp32, fp16 or int8) on the test split, as :func:`evaluate_sampling`.

    The raw test patches go through onnxruntime (CPU provider, the process's thread
    budget) in batches of ``batch_size``; one warm-up batch is not timed. Pixels,
    data ranges and metrics are those of :func:`evaluate_sampling`.

    Returns
    -------
    dict
        ``model``, ``interpolation``, ``seconds_per_mpx``, ``n_patches``, ``n_pixels``,
        ``size_mb`` (the ONNX file).
    """
    import onnxruntime as ort

    onnx_path = Path(onnx_path)
    if not onnx_path.is_file():
        raise FileNotFoundError(f"{onnx_path}: ONNX model not found")
    store, test_idx, true, pred_interp = _test_split(cfg, train_zarr)
    x, _ = store.read(test_idx)
    x = np.ascontiguousarray(x, dtype=np.float32)
    session = ort.InferenceSession(str(onnx_path), sess_options=ort_session_options(),
                                   providers=["CPUExecutionProvider"])
    session.run([OUTPUT_NAME], {INPUT_NAME: x[:batch_size]})  # warm-up, not timed
    parts = []
    t0 = time.perf_counter()
    for s in range(0, len(x), batch_size):
        parts.append(session.run([OUTPUT_NAME], {INPUT_NAME: x[s:s + batch_size]})[0][:, 0])
    seconds = time.perf_counter() - t0
    pred = np.concatenate(parts).astype(np.float64)
    return {**_score(store, test_idx, true, pred_interp, pred, seconds), "size_mb": onnx_path.stat().st_size / 1e6}


def table_record(result: Mapping[str, Any], model_dir, precision: str = "fp32") -> dict[str, Any]:
    """One row of the design-space table from an :func:`evaluate_sampling` result."""
    m = result["model"]
    return {"model": result["model_config"].get("name"), "model_dir": str(model_dir),
            "sampler": result["sampler"] or "-", "steps": result["steps"], "network_calls": result["network_calls"],
            "precision": precision, "runtime": "torch", "psnr_log_db": m["psnr_log_db"],
            "psnr_radiance_db": m["psnr_radiance_db"],
            "ssim_log": m["ssim_log"], "brightest_1pct_error": m["brightest_1pct_error"],
            "seconds_per_mpx": result["seconds_per_mpx"], "n_params": result["n_params"],
            "size_mb": result["size_mb"], "n_pixels": result.get("n_pixels")}


def table_csv(records: Sequence[Mapping[str, Any]]) -> str:
    """The records as CSV with the :data:`COLUMNS` header (empty cells where a value does not apply)."""
    return csv_text(records, COLUMNS)


def table_markdown(records: Sequence[Mapping[str, Any]], notes: Sequence[str] = ()) -> str:
    """The records as a Markdown table (metrics rounded for reading; the CSV keeps 6 digits), then ``notes``."""
    head = ["model", "sampler", "calls", "precision", "runtime", "PSNR log (dB)", "PSNR radiance (dB)", "SSIM log",
            "brightest 1% error", "s/Mpx", "Δ PSNR log vs fp32 (dB)", "speed vs fp32", "params", "MB", "train s"]
    rows = []
    for r in records:
        rows.append([
            str(r["model"]) if r.get("label") in (None, r["model"]) else f"{r['label']} ({r['model']})",
            str(r.get("sampler", "-")), num(r.get("network_calls"), "d"),
            str(r.get("precision", "")), str(r.get("runtime", "")),
            num(r["psnr_log_db"], ".2f"), num(r["psnr_radiance_db"], ".2f"), num(r["ssim_log"], ".3f"),
            num(r["brightest_1pct_error"], "+.3f"), num(r.get("seconds_per_mpx"), ".2f"),
            num(r.get("psnr_log_vs_fp32_db"), "+.3f"),
            num(r.get("speed_vs_fp32"), ".2f") + ("×" if r.get("speed_vs_fp32") is not None else ""),
            num(r.get("n_params"), "d"), num(r.get("size_mb"), ".3f"), num(r.get("train_seconds"), ".0f")])
    lines = markdown_table(head, rows)
    return "\n".join(lines + ([""] + list(notes) if notes else [])) + "\n"


# --------------------------------------------------------------------------- the spec (pure)

MODEL_DIR = "models"
CSV_NAME, MD_NAME = "design_space.csv", "design_space.md"
MODEL_KEY_FILE = "design_space_model.json"
ONNX_KEY_FILE = "design_space_onnx.json"
EVAL_DIR = "evals"
#: Bumped when the way a row is timed changes, so that cached rows are measured again.
TIMING_VERSION = 2  # 2: one untimed warm-up batch before PyTorch rows, as before onnxruntime rows
DETERMINISTIC_MODELS = ("unet", "mmntlsr")
GENERATIVE_MODELS = ("diffusion", "flow")
PRECISIONS = ("fp32", "fp16", "int8")

#: The spec used where the config has no ``design_space`` section (or leaves a key out).
DEFAULT_SPEC: dict[str, Any] = {
    "models": ["unet", "mmntlsr", "diffusion", "flow"],
    "samplers": {
        "diffusion": [{"kind": "ddpm", "steps": [25, 50]}, {"kind": "ddim", "steps": [10, 25]},
                      {"kind": "dpmpp_2m", "steps": [10, 25]}, {"kind": "euler", "steps": [10, 25]},
                      {"kind": "staged", "switch_t": 100, "fast_steps": [6, 12], "slow_steps": 4, "eta": 1.0}],
        "flow": [{"kind": "euler", "steps": [10, 25]}, {"kind": "heun", "steps": [5, 12]}],
    },
    "precisions": ["fp32", "fp16", "int8"],
    "seed": 0,
}


@dataclass(frozen=True)
class ModelPoint:
    """One trained model of the design space.

    Attributes
    ----------
    label : str
        Unique name; its directory is ``out/models/<label>``.
    config : mapping
        The model section it is trained with.
    base : str or None
        Label of an earlier deterministic point whose trained directory becomes
        ``model.base_model`` (residual learning); generative models only.
    """

    label: str
    config: Mapping[str, Any]
    base: str | None = None


@dataclass(frozen=True)
class DesignSpec:
    """What :func:`run_design_space` trains and evaluates (config ``design_space``)."""

    models: tuple[ModelPoint, ...]
    samplers: Mapping[str, tuple[Mapping[str, Any], ...]]
    precisions: tuple[str, ...]
    epochs: int | None
    seed: int


def expand_sampler(entry: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The samplers of one spec entry: every key given as a list is expanded (cartesian product, in order).

    ``{"kind": "ddim", "steps": [10, 25], "eta": 0}`` -> two DDIM samplers.
    """
    keys = list(entry)
    choices = [v if isinstance(v, (list, tuple)) else [v] for v in entry.values()]
    return [dict(zip(keys, combo)) for combo in itertools.product(*choices)]


def _schema_errors(instance, subschema: Mapping[str, Any], prefix: str) -> list[str]:
    import jsonschema

    msgs = []
    for err in jsonschema.Draft202012Validator(subschema).iter_errors(instance):
        key = ".".join([prefix, *map(str, err.absolute_path)])
        msgs.append(f"key '{key}': {err.message}")
    return sorted(msgs)


def parse_spec(spec: Mapping[str, Any] | None, base_model: Mapping[str, Any], source: str = "design_space"
               ) -> DesignSpec:
    """Validate a ``design_space`` mapping (missing keys from :data:`DEFAULT_SPEC`) into a :class:`DesignSpec`.

    Parameters
    ----------
    spec : mapping or None
        The ``design_space`` section (``enabled`` is ignored here).
    base_model : mapping
        The config's ``model`` section: its ``width``/``depth`` (and that model's
        options, as in :func:`pandafine.studies.ablation.row_model_config`) size every model
        that does not set them.
    source : str
        Named in error messages (the config or spec file).

    Raises
    ------
    ValueError
        Naming the key, the value and what is allowed.
    """
    spec = dict(spec or {})
    full = schema()
    errors = _schema_errors(spec, full["properties"]["design_space"], "design_space")
    if errors:
        raise ValueError(f"{source}: " + "; ".join(errors))
    merged = {**DEFAULT_SPEC, **{k: v for k, v in spec.items() if k != "enabled"}}
    points, labels = [], {}
    for i, entry in enumerate(merged["models"]):
        entry = {"name": entry} if isinstance(entry, str) else dict(entry)
        label = str(entry.pop("label", entry["name"]))
        base = entry.pop("base", None)
        where = f"{source}: key 'design_space.models[{i}]'"
        if label in labels:
            raise ValueError(f"{where}: label {label!r} is used twice (give one of them a distinct 'label')")
        if base is not None:
            if entry["name"] not in GENERATIVE_MODELS:
                raise ValueError(f"{where}: 'base' is for diffusion/flow models, not {entry['name']!r}")
            if labels.get(base) not in DETERMINISTIC_MODELS:
                raise ValueError(f"{where}: base {base!r} is not the label of an earlier unet/mmntlsr model "
                                 f"(earlier labels: {', '.join(labels) or 'none'})")
        model_cfg = row_model_config(base_model, entry)
        errs = _schema_errors(model_cfg, full["properties"]["model"], f"design_space.models[{i}]")
        if errs:
            raise ValueError(f"{source}: " + "; ".join(errs))
        labels[label] = entry["name"]
        points.append(ModelPoint(label, model_cfg, base))
    samplers = {}
    for name, allowed in (("diffusion", DIFFUSION_SAMPLERS), ("flow", FLOW_SAMPLERS)):
        expanded = []
        for j, entry in enumerate(merged["samplers"].get(name, DEFAULT_SPEC["samplers"][name])):
            for s in expand_sampler(entry):
                if s["kind"] not in allowed:
                    raise ValueError(f"{source}: key 'design_space.samplers.{name}[{j}].kind': {s['kind']!r} is "
                                     f"not a {name} sampler (allowed: {', '.join(allowed)})")
                SamplerSpec.from_mapping(s)  # raises on a bad value
                expanded.append(s)
        samplers[name] = tuple(expanded)
    return DesignSpec(models=tuple(points), samplers=samplers, precisions=tuple(merged["precisions"]),
                      epochs=merged.get("epochs"), seed=int(merged["seed"]))


def load_spec(cfg: Mapping[str, Any], spec_path=None) -> tuple[DesignSpec, str]:
    """(spec, its source): the YAML file ``spec_path`` (its ``design_space`` key, or the whole file),
    else the config's ``design_space`` section, else :data:`DEFAULT_SPEC`."""
    import yaml

    if spec_path is None:
        return parse_spec(cfg.get("design_space"), cfg["model"], "config"), "config key 'design_space'"
    path = Path(spec_path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: design-space spec file not found") from None
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: not valid YAML: {exc}") from exc
    if data is not None and not isinstance(data, Mapping):
        raise ValueError(f"{path}: expected a mapping (the design_space section), got {type(data).__name__}")
    data = (data or {}).get("design_space", data)
    return parse_spec(data, cfg["model"], str(path)), str(path)


def plan(spec: DesignSpec) -> list[dict[str, Any]]:
    """The evaluations of a spec, in table order (pure).

    Each is ``{"label", "sampler" (mapping or None), "precision", "runtime"}``:
    deterministic models get one PyTorch fp32 row plus one onnxruntime row per
    precision (fp32 first, the reference of the others) when ``precisions`` has
    more than ``fp32``; generative models one PyTorch fp32 row per sampler.
    """
    out = []
    for p in spec.models:
        name = p.config["name"]
        if name in GENERATIVE_MODELS:
            out += [{"label": p.label, "sampler": dict(s), "precision": "fp32", "runtime": "torch"}
                    for s in spec.samplers[name]]
            continue
        out.append({"label": p.label, "sampler": None, "precision": "fp32", "runtime": "torch"})
        if any(q != "fp32" for q in spec.precisions):
            out += [{"label": p.label, "sampler": None, "precision": q, "runtime": "onnxruntime"}
                    for q in ("fp32", *[q for q in spec.precisions if q != "fp32"])]
    return out


def add_relative(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Set ``psnr_log_vs_fp32_db`` (this row minus the same model's onnxruntime fp32 row) and
    ``speed_vs_fp32`` (fp32 s/Mpx / this row's) on onnxruntime rows (pure; returns new dicts)."""
    ref = {r["label"]: r for r in records if r.get("runtime") == "onnxruntime" and r.get("precision") == "fp32"}
    out = []
    for r in records:
        r = dict(r)
        f = ref.get(r.get("label")) if r.get("runtime") == "onnxruntime" else None
        if f is not None:
            r["psnr_log_vs_fp32_db"] = r["psnr_log_db"] - f["psnr_log_db"]
            r["speed_vs_fp32"] = (f["seconds_per_mpx"] / r["seconds_per_mpx"]) if r["seconds_per_mpx"] else None
        out.append(r)
    return out


# --------------------------------------------------------------------------- running it (I/O)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.=+-]+", "_", text).strip("_")


def _train_point(cfg: Mapping[str, Any], train_zarr: Path, point: ModelPoint, model_dir: Path, data_fp,
                 epochs: int | None, base_dir: Path | None, base_key: str | None) -> dict[str, Any]:
    """Train ``point`` into ``model_dir`` unless its key file says it is done; return the key record."""
    return train_or_reuse(cfg, train_zarr, point.label, point.config, model_dir, data_fp, epochs, base_dir,
                          base_key, study="design space")


def train_or_reuse(cfg: Mapping[str, Any], train_zarr: Path, label: str, model_config: Mapping[str, Any],
                   model_dir: Path, data_fp, epochs: int | None, base_dir: Path | None, base_key: str | None,
                   *, study: str) -> dict[str, Any]:
    """Train ``model_config`` into ``model_dir`` unless its key file says it is done; return the key record.

    The key is the training spec (with ``epochs`` if given and ``model.base_model = base_dir``),
    the patches' fingerprint ``data_fp`` and the base checkpoint's hash ``base_key``; the record
    (``design_space_model.json`` in ``model_dir``) adds the checkpoint's hash, training seconds,
    epochs run and the best epoch. ``study`` names the caller in log lines.
    """
    pcfg = copy.deepcopy(dict(cfg))
    pcfg["model"] = dict(model_config)
    if base_dir is not None:
        pcfg["model"]["base_model"] = str(base_dir)
    if epochs is not None:
        pcfg["train"] = {**pcfg["train"], "epochs": int(epochs)}
    key = canonical_json({"train": TrainSpec.from_config(pcfg).as_dict(), "data": data_fp, "base": base_key})
    ck_path = model_dir / CHECKPOINT_NAME
    rec = _read_json(model_dir / MODEL_KEY_FILE)
    if rec is not None and rec.get("key") == key and ck_path.is_file() and rec.get("sha256") == sha256_file(ck_path):
        log.info("%s: %s up to date in %s", study, label, model_dir)
        return rec
    log.info("%s: training %s (%s) in %s", study, label, model_config["name"], model_dir)
    t0 = time.perf_counter()
    path = train_model(pcfg, train_zarr, model_dir, progress=False)
    ck = read_checkpoint(path)
    if not ck.get("finished"):
        raise ValueError(f"{path}: training did not finish (stop reason {ck.get('stop_reason')!r})")
    rec = {"key": key, "sha256": sha256_file(ck_path), "label": label, "model_config": ck["model_config"],
           "train_seconds": float(sum(h["seconds"] for h in ck["history"])), "epochs_run": int(ck["epoch"]),
           "best_epoch": int(ck["best_epoch"]), "wall_seconds": time.perf_counter() - t0}
    write_text_atomic(model_dir / MODEL_KEY_FILE, json.dumps(rec, indent=2) + "\n")
    return rec


def _onnx_model(cfg, train_zarr: Path, model_dir: Path, model_rec: Mapping[str, Any], precision: str) -> Path:
    """The ``precision`` ONNX model of ``model_dir`` for its current checkpoint (exported / converted here)."""
    fp32 = model_dir / "model.onnx"
    marker = _read_json(model_dir / ONNX_KEY_FILE)
    if not (fp32.is_file() and marker is not None and marker.get("checkpoint_sha256") == model_rec["sha256"]):
        export_onnx(cfg, model_dir, train_zarr, fp32)
        write_text_atomic(model_dir / ONNX_KEY_FILE, json.dumps({"checkpoint_sha256": model_rec["sha256"]}) + "\n")
    if precision == "fp32":
        return fp32

    return build_precision(fp32, precision, train_zarr)


def _evaluate_point(cfg, train_zarr: Path, model_dir: Path, model_rec: Mapping[str, Any], item: Mapping[str, Any],
                    seed: int, batch_size: int) -> dict[str, Any]:
    """One evaluation (cached in ``model_dir/evals/<slug>.json`` under its key); returns the stored record."""
    what = {"sampler": item["sampler"], "precision": item["precision"], "runtime": item["runtime"]}
    key = canonical_json({"checkpoint": model_rec["sha256"], **what, "seed": seed, "batch_size": batch_size,
                      "factor": int(cfg["grid"]["factor"]), "timing": TIMING_VERSION})
    name = ("torch" if item["runtime"] == "torch" else f"onnx-{item['precision']}")
    if item["sampler"] is not None:
        name += "-" + _slug("-".join(f"{k}={v}" for k, v in sorted(item["sampler"].items())))
    path = model_dir / EVAL_DIR / f"{name}.json"
    rec = _read_json(path)
    if rec is not None and rec.get("key") == key:
        return rec
    if item["runtime"] == "torch":
        res = evaluate_sampling(cfg, train_zarr, model_dir, sampler=item["sampler"], seed=seed,
                                batch_size=batch_size)
        row = table_record(res, model_dir)
    else:
        onnx_path = _onnx_model(cfg, train_zarr, model_dir, model_rec, item["precision"])
        res = evaluate_onnx(cfg, train_zarr, onnx_path, batch_size=batch_size)
        m = res["model"]
        mc = model_rec["model_config"]
        row = {"model": mc["name"], "model_dir": str(model_dir), "sampler": "-", "steps": None, "network_calls": 1,
               "precision": item["precision"], "runtime": "onnxruntime", "psnr_log_db": m["psnr_log_db"],
               "psnr_radiance_db": m["psnr_radiance_db"], "ssim_log": m["ssim_log"],
               "brightest_1pct_error": m["brightest_1pct_error"], "seconds_per_mpx": res["seconds_per_mpx"],
               "n_params": None, "size_mb": res["size_mb"], "n_pixels": res["n_pixels"], "onnx": onnx_path.name}

    row["threads"] = threads()  # the thread budget the timing was measured with
    rec = {"key": key, "row": row, "interpolation": res["interpolation"], "n_patches": res["n_patches"]}
    write_text_atomic(path, json.dumps(json_safe(rec), indent=2) + "\n")
    return rec


def run_design_space(cfg: Mapping[str, Any], train_zarr, out_dir, *, spec_path=None, epochs: int | None = None
                     ) -> Path:
    """Train (or reuse) every model of the design space, evaluate every point, write the table.

    Parameters
    ----------
    cfg : mapping
        Validated config (``run.seed``, ``model`` width/depth, ``train``, ``grid.factor``).
    train_zarr : path-like
        ``results/tiles/train.zarr``.
    out_dir : path-like
        ``results/design_space``: models in ``models/<label>/`` (each with ``evals/``), then
        ``design_space.md`` and, last, ``design_space.csv``.
    spec_path : path-like, optional
        A YAML spec (see :func:`load_spec`); default the config's ``design_space``.
    epochs : int, optional
        Overrides the spec's ``epochs`` (itself defaulting to ``train.epochs``).

    Returns
    -------
    pathlib.Path
        The CSV.

    Notes
    -----
    Resumable: a model whose key file (training parameters, patches, base model)
    and checkpoint hash match is not trained again, and an evaluation whose JSON
    record has the same key (checkpoint hash, sampler, precision, seed, batch) is
    not run again; its timing is the one measured then. fp16/int8 rows need
    :mod:`pandafine.training.quantize`; if a conversion fails the row is left out and the
    reason is noted under the table.
    """
    spec, source = load_spec(cfg, spec_path)
    if epochs is not None:
        spec = dataclasses.replace(spec, epochs=int(epochs))
    train_zarr, out_dir = Path(train_zarr), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    data_fp = PatchStore(train_zarr).fingerprint()
    batch_size = int(cfg["train"]["batch_size"])
    model_recs, dirs = {}, {}
    notes, records, interp, n_patches = [], [], None, None
    t_start = time.perf_counter()
    for point in spec.models:
        d = out_dir / MODEL_DIR / point.label
        base_dir = dirs.get(point.base) if point.base else None
        base_key = model_recs[point.base]["sha256"] if point.base else None
        model_recs[point.label] = _train_point(cfg, train_zarr, point, d, data_fp, spec.epochs, base_dir, base_key)
        dirs[point.label] = d
    skipped: dict[tuple[str, str], str] = {}
    n_params: dict[str, int] = {}
    for item in plan(spec):
        label = item["label"]
        if item["runtime"] == "onnxruntime" and (label, "fp32") in skipped:
            continue
        try:
            rec = _evaluate_point(cfg, train_zarr, dirs[label], model_recs[label], item, spec.seed, batch_size)
        except Exception as exc:  # noqa: BLE001 - a failed export/conversion leaves its row out, with the reason
            if item["runtime"] != "onnxruntime":
                raise
            log.warning("design space: %s %s (onnxruntime) not evaluated: %s", label, item["precision"], exc)
            skipped[(label, item["precision"])] = f"{type(exc).__name__}: {exc}"
            continue
        mr = model_recs[label]
        row = {**rec["row"], "label": label, "train_seconds": mr["train_seconds"], "epochs_run": mr["epochs_run"]}
        if row["runtime"] == "torch":
            n_params[label] = row["n_params"]
        else:
            row["n_params"] = n_params.get(label)
        records.append(row)
        if interp is None:
            interp, n_patches = rec["interpolation"], rec["n_patches"]
    records = add_relative(records)
    if interp is not None:
        records.append({"model": "interpolation", "label": "interpolation", "sampler": "-", "precision": "fp64",
                        "runtime": "numpy", "psnr_log_db": interp["psnr_log_db"],
                        "psnr_radiance_db": interp["psnr_radiance_db"], "ssim_log": interp["ssim_log"],
                        "brightest_1pct_error": interp["brightest_1pct_error"]})
    for (label, prec), why in skipped.items():
        notes.append(f"- {label} {prec} (onnxruntime): not evaluated: {why}")
    notes = [
        f"Spec: {source}; {len(spec.models)} model(s), {spec.epochs or cfg['train']['epochs']} epochs each "
        f"(early stopping: train.patience {cfg['train']['patience']}); test split of {train_zarr}: "
        f"{n_patches} patches; sample seed {spec.seed}.",
        "PSNR on z = log1p(L / L_ref) and on radiance, SSIM on z, brightest 1% error: mean relative error of the "
        "brightest 1 % of true pixels (as `pandafine evaluate`). s/Mpx: wall seconds of prediction or sampling "
        "per 10^6 test pixels in one process, with the thread budget of column `threads` in the CSV (rows reused "
        f"from an earlier run keep the timing measured then; this run: {threads()} thread(s)). calls: network "
        "evaluations per sample. MB: fp32 parameters and buffers (torch; a residual model's include its frozen "
        "base) or the ONNX file. Δ PSNR and speed vs fp32: against the same model's onnxruntime fp32 row. "
        "train s: summed epoch times.",
        "Generative models (diffusion, flow) are evaluated in PyTorch fp32 only (no ONNX export of samplers). "
        "onnxruntime runs on the CPU provider; its fp16 kernels are few, so fp16 on CPU mostly measures "
        "float16 weights.",
        *notes,
    ]
    write_text_atomic(out_dir / MD_NAME, table_markdown(records, notes))
    csv_path = out_dir / CSV_NAME
    write_text_atomic(csv_path, table_csv(records))  # last: the workflow's target
    log.info("design space: %d rows in %s (%.0f s)", len(records), csv_path, time.perf_counter() - t_start)
    return csv_path


__all__ = ["COLUMNS", "DEFAULT_SPEC", "DesignSpec", "ModelPoint", "train_or_reuse", "model_size", "evaluate_sampling",
           "evaluate_onnx", "table_record", "table_csv", "table_markdown", "expand_sampler", "parse_spec",
           "load_spec", "plan", "add_relative", "run_design_space"]
