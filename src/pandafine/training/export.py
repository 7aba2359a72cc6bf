"""Export the trained model to ONNX and check it against PyTorch.

The exported graph is :class:`~pandafine.models.wrapper.PandaFineNet`: input
``inputs`` (B, C, H, W) raw cube channels (NaN allowed), output ``radiance``
(B, 1, H, W) in W m-2 sr-1 um-1, with batch, height and width dynamic (height
and width multiples of the model's :func:`~pandafine.models.input_multiple`).
The file is written to a temporary name and renamed only after
``onnx.checker`` and the onnxruntime-vs-PyTorch parity check have passed.
The TorchScript exporter is tried first (seconds), the dynamo exporter when it
fails or its graph fails a check (:data:`EXPORTERS`).

Before anything is exported, the trained network's effective receptive field is
measured (:mod:`pandafine.models.receptive_field`); the export fails if
``infer.tile`` is smaller, and stores it in the ONNX metadata
(``pandafine.receptive_field_px``), where ``pandafine infer`` checks the tile it
runs with.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from pandafine.core.atomic import atomic_path, write_text_atomic
from pandafine.core.checksums import sha256_file
from pandafine.core.runtime import configure_torch, ort_session_options
from pandafine.core.scaling import RADIANCE_REF, RADIANCE_UNITS
from pandafine.models import input_multiple
from pandafine.models.receptive_field import (
    RF_METADATA_KEY,
    RF_SAMPLES,
    ReceptiveField,
    brightest_samples,
    measure_receptive_field,
    tile_error,
)
from pandafine.models.registry import load_trained_model
from pandafine.tiles.store import PatchStore

log = logging.getLogger(__name__)

INPUT_NAME, OUTPUT_NAME = "inputs", "radiance"
EXPORT_JSON = "export.json"
#: Largest accepted ``max |onnx - torch| / max |torch|``.
PARITY_RTOL = 1e-4
#: At most this many test patches go through the parity check.
PARITY_MAX_PATCHES = 64
#: Node metadata in which the dynamo exporter records the Python source of each op: file paths of this
#: checkout and line numbers of the model code. Dropped, so that ``model.onnx`` (and every product's
#: ``model_sha256`` tag) depends on the weights and the graph only, not on where the repository lives or on
#: an edit to a comment in the model code.
SOURCE_LOCATION_KEYS = frozenset({"pkg.torch.onnx.stack_trace"})


def drop_source_locations(proto) -> int:
    """Remove :data:`SOURCE_LOCATION_KEYS` from the metadata of every node (graph, subgraphs, functions).

    Returns the number of entries removed.
    """
    def graphs(g):
        yield g
        for node in g.node:
            for attr in node.attribute:
                if attr.HasField("g"):
                    yield from graphs(attr.g)
                for sub in attr.graphs:
                    yield from graphs(sub)

    nodes = [n for g in graphs(proto.graph) for n in g.node] + [n for f in proto.functions for n in f.node]
    removed = 0
    for node in nodes:
        keep = [(p.key, p.value) for p in node.metadata_props if p.key not in SOURCE_LOCATION_KEYS]
        removed += len(node.metadata_props) - len(keep)
        if len(keep) != len(node.metadata_props):
            del node.metadata_props[:]
            for key, value in keep:
                entry = node.metadata_props.add()
                entry.key, entry.value = key, value
    return removed


def parity_inputs(patches: np.ndarray, batch_size: int, tile: int, multiple: int) -> list[np.ndarray]:
    """Inputs of the parity check built from test patches ``(N, C, P, P)``.

    The patches in batches of ``batch_size`` (the training shape), plus two
    shapes that exercise the dynamic axes: one batch of ``tile x tile`` inputs
    (the inference tile, patches tiled with reflection) and one non-square
    ``(1, C, P, 2P)`` input (two patches side by side). Shapes are kept
    multiples of ``multiple``.
    """
    n, c, p, _ = patches.shape
    out = [patches[s:s + batch_size] for s in range(0, n, batch_size)]
    tile = max(multiple, tile // multiple * multiple)
    reps = -(-tile // p)
    big = np.tile(patches[: max(1, min(n, batch_size))], (1, 1, reps, reps))[:, :, :tile, :tile]
    out.append(np.ascontiguousarray(big))
    pair = patches[[0, min(1, n - 1)]]
    out.append(np.ascontiguousarray(np.concatenate([pair[0], pair[1]], axis=-1)[None]))
    return out


def receptive_field(model, patches: np.ndarray, channels, multiple: int) -> ReceptiveField:
    """The effective receptive field of a trained :class:`~pandafine.models.wrapper.PandaFineNet`.

    Measured (:func:`~pandafine.models.receptive_field.measure_receptive_field`) on
    the network behind the normalization, from the :data:`RF_SAMPLES` patches
    with the brightest PANDA channel (or channel 0), normalized as the model does
    (nodata -> 0).
    """
    import torch

    channels = list(channels)
    pick = brightest_samples(patches, RF_SAMPLES, channel=channels.index("panda") if "panda" in channels else 0)
    with torch.no_grad():
        x = model.normalize(torch.from_numpy(np.ascontiguousarray(patches[pick], dtype=np.float32))).numpy()
    return measure_receptive_field(model.net, x, multiple=multiple)


def check_tile_against_model(tile: int, rf: ReceptiveField, multiple: int, source: str) -> None:
    """Raise ``ValueError`` if ``infer.tile`` cannot hold the measured receptive field ``rf``."""
    # tiles are multiples of the model's input multiple and of 8 (pandafine.inference.infer.MODEL_MULTIPLE)
    error = tile_error(tile, rf.px, multiple=int(np.lcm(multiple, 8)), source=source)
    if error:
        raise ValueError(f"{error}. Measured at export on the trained network ({rf.samples} test patches on a "
                         f"{rf.canvas} px canvas); nothing was exported")


#: Exporters tried in this order; the first whose graph passes ``onnx.checker`` and the parity check is kept.
#: The TorchScript exporter is first because it is fast: MMNTLSR exports in ~3 s against ~120 s for the
#: dynamo exporter on 2 cores (symbolic-shape tracing of ~3000 ops; docs/results/2026-12-07-demo-time.md).
#: Its trace can bake a shape into the graph where the dynamo exporter would not; the parity check's
#: shapes (training batch, inference tile, non-square) catch that, and the dynamo exporter is tried then.
EXPORTERS = ("torchscript", "dynamo")


def _expm1_symbolic(g, x):
    """ONNX has no Expm1: ``exp(x) - 1`` (what the dynamo exporter emits too)."""
    import torch

    return g.op("Sub", g.op("Exp", x), g.op("Constant", value_t=torch.tensor(1.0, dtype=torch.float32)))


def _export_torchscript(model, example, path: Path, opset: int) -> None:
    import warnings

    import torch
    from torch.onnx import register_custom_op_symbolic

    register_custom_op_symbolic("aten::expm1", _expm1_symbolic, opset)
    axes = {0: "batch", 2: "height", 3: "width"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=DeprecationWarning)  # "legacy TorchScript-based ONNX export"
        warnings.simplefilter("ignore", category=torch.jit.TracerWarning)
        torch.onnx.export(model, (torch.from_numpy(example),), str(path), input_names=[INPUT_NAME],
                          output_names=[OUTPUT_NAME], opset_version=opset, dynamo=False,
                          dynamic_axes={INPUT_NAME: axes, OUTPUT_NAME: axes})


def _export_dynamo(model, example, path: Path, opset: int) -> None:
    import warnings

    import torch

    dims = {0: torch.export.Dim("batch", min=1), 2: torch.export.Dim("height", min=1),
            3: torch.export.Dim("width", min=1)}
    quiet = logging.getLogger("torch.onnx._internal.exporter._registration")  # "torchvision is not installed"
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=FutureWarning, module="copyreg")
            program = torch.onnx.export(model, (torch.from_numpy(example),), input_names=[INPUT_NAME],
                                        output_names=[OUTPUT_NAME], opset_version=opset, dynamo=True,
                                        dynamic_shapes={"x": dims}, external_data=False, verbose=False)
    finally:
        quiet.setLevel(level)
    program.save(str(path), external_data=False)


def _export_graph(model, example, path: Path, opset: int, exporter: str = EXPORTERS[0]) -> str:
    """``torch.onnx.export`` of ``model`` with dynamic batch/height/width; returns the exporter's name.

    ``exporter`` is one of :data:`EXPORTERS`; ``example`` is a batch of at least 2
    (a size-1 dimension would be specialized by the dynamo exporter).
    """
    if exporter == "torchscript":
        _export_torchscript(model, example, path, opset)
        return "torch.onnx.export(dynamo=False)"
    if exporter == "dynamo":
        _export_dynamo(model, example, path, opset)
        return "torch.onnx.export(dynamo=True)"
    raise ValueError(f"unknown ONNX exporter {exporter!r}; expected one of {EXPORTERS}")


def _parity(model, onnx_path: Path, checks: list[np.ndarray], out_path: Path):
    """onnxruntime vs PyTorch on ``checks``: (per-shape records, max abs diff, relative diff).

    Raises ``RuntimeError`` when a shape differs or the relative difference exceeds :data:`PARITY_RTOL`.
    """
    import onnxruntime as ort
    import torch

    session = ort.InferenceSession(str(onnx_path), sess_options=ort_session_options(),
                                   providers=["CPUExecutionProvider"])
    per_shape, max_abs, max_ref = [], 0.0, 0.0
    with torch.no_grad():
        for x in checks:
            ref = model(torch.from_numpy(x)).numpy()
            got = session.run([OUTPUT_NAME], {INPUT_NAME: x})[0]
            if got.shape != ref.shape:
                raise RuntimeError(f"{out_path}: onnxruntime output shape {got.shape} != PyTorch {ref.shape} "
                                   f"for input {x.shape}")
            diff = float(np.max(np.abs(got.astype(np.float64) - ref))) if np.isfinite(got).all() else np.inf
            peak = float(np.max(np.abs(ref)))
            per_shape.append({"shape": list(x.shape), "max_abs_diff": diff, "max_abs_output": peak})
            max_abs, max_ref = max(max_abs, diff), max(max_ref, peak)
    rel = max_abs / max_ref if max_ref > 0 else (0.0 if max_abs == 0 else np.inf)
    if not rel <= PARITY_RTOL:
        raise RuntimeError(f"{out_path}: ONNX/PyTorch parity failed: max |diff| {max_abs:.3g} is "
                           f"{rel:.3g} of the output max {max_ref:.3g} (allowed {PARITY_RTOL:g})")
    return per_shape, max_abs, rel


def export_onnx(cfg: Mapping[str, Any], model_dir, train_zarr, out_path, *, opset: int = 18) -> dict[str, Any]:
    """Export ``model_dir/checkpoint.pt`` to ONNX at ``out_path`` and parity-check it.

    Parameters
    ----------
    cfg : mapping
        Validated config (``train.batch_size``, ``infer.tile``, ``infer.batch_size``).
    model_dir : path-like
        Directory with ``checkpoint.pt``; ``export.json`` is written beside ``out_path``.
    train_zarr : path-like
        ``results/tiles/train.zarr``; its test-split patches feed the parity check.
    out_path : path-like
        Destination of the ONNX file (usually ``model_dir/model.onnx``).
    opset : int
        ONNX opset version.

    Returns
    -------
    dict
        The content of ``export.json``: file, sha256, opset, input/output names,
        receptive field (px, radius, how it was measured), parity (max abs and
        relative differences per shape).

    Raises
    ------
    RuntimeError
        If, for the last of :data:`EXPORTERS`, onnxruntime and PyTorch differ by
        more than ``PARITY_RTOL`` relative to the output's max (nothing is
        written to ``out_path`` then). An earlier exporter that fails is logged
        and the next one tried.
    ValueError
        If ``infer.tile`` is smaller than the network's receptive field
        (:func:`receptive_field`), before anything is exported.
    """
    import onnx
    import onnxruntime as ort
    import torch

    configure_torch()
    out_path = Path(out_path)
    model, ck = load_trained_model(model_dir)
    model = model.to(memory_format=torch.contiguous_format).eval()
    store = PatchStore(train_zarr, memory_limit=0)  # only a few patches are read
    if list(ck["channels"]) != store.channels:
        raise ValueError(f"{Path(model_dir) / 'checkpoint.pt'}: model channels {ck['channels']} differ from "
                         f"{store.path} channels {store.channels}")
    idx = store.indices("test")
    if idx.size == 0:
        idx = np.arange(len(store))
        log.warning("%s: empty test split; parity check uses the first patches", store.path)
    patches, _ = store.read(idx[:PARITY_MAX_PATCHES])
    multiple = input_multiple(ck["model_config"])
    started = time.perf_counter()
    rf = receptive_field(model, patches, ck["channels"], multiple)
    rf_seconds = time.perf_counter() - started
    source = str(Path(model_dir) / "checkpoint.pt")
    if rf.mass > 0:
        log.info("%s: receptive field %d px (radius %d px holds %.0f%% of the gradient mass; %d patches, "
                 "%d px canvas, %.1f s)", source, rf.px, rf.radius, 100 * rf.fraction, rf.samples, rf.canvas,
                 rf_seconds)
        if not rf.complete:
            log.warning("%s: the receptive field reaches the edge of the largest canvas (%d px); %d px is a "
                        "lower bound", source, rf.canvas, rf.px)
        check_tile_against_model(int(cfg["infer"]["tile"]), rf, multiple, source)
    else:
        log.warning("%s: the outputs do not depend on the inputs at the sampled pixels (zero gradient); the "
                    "receptive field is not recorded and infer.tile is not checked", source)
    checks = parity_inputs(patches, int(cfg["infer"]["batch_size"]), int(cfg["infer"]["tile"]), multiple)

    meta = {
        "pandafine.channels": json.dumps(list(ck["channels"])),
        "pandafine.normalization": json.dumps(ck["normalization"]),
        "pandafine.model_config": json.dumps(ck["model_config"], sort_keys=True),
        "pandafine.input_multiple": str(multiple),
        "pandafine.radiance_units": RADIANCE_UNITS,
        "pandafine.radiance_ref": repr(RADIANCE_REF),
    }
    if rf.mass > 0:
        meta[RF_METADATA_KEY] = str(rf.px)
    example = np.concatenate([patches[:2], patches[:2]])[:2]  # batch 2: a size-1 dim would be specialized
    with atomic_path(out_path) as tmp:
        for attempt, name in enumerate(EXPORTERS, start=1):
            try:
                exporter = _export_graph(model, example, tmp, opset, exporter=name)
                proto = onnx.load(str(tmp))
                drop_source_locations(proto)
                for key, value in meta.items():
                    entry = proto.metadata_props.add()
                    entry.key, entry.value = key, value
                onnx.checker.check_model(proto, full_check=True)
                onnx.save(proto, str(tmp))
                per_shape, max_abs, rel = _parity(model, tmp, checks, out_path)
                break
            except Exception as err:  # any failure of one exporter: the next one is tried, the last one raises
                if attempt == len(EXPORTERS):
                    raise
                log.warning("%s: the %s exporter failed (%s); trying the %s exporter", out_path, name,
                            str(err).splitlines()[0] if str(err) else type(err).__name__, EXPORTERS[attempt])

    info = {
        "onnx": out_path.name,
        "sha256": sha256_file(out_path),
        "size_bytes": out_path.stat().st_size,
        "opset": opset,
        "exporter": exporter,
        "input": {"name": INPUT_NAME, "shape": ["batch", len(ck["channels"]), "height", "width"],
                  "channels": list(ck["channels"]), "nodata": "NaN", "height_width_multiple_of": multiple},
        "output": {"name": OUTPUT_NAME, "shape": ["batch", 1, "height", "width"], "units": RADIANCE_UNITS},
        "checkpoint_epoch": ck["best_epoch"],
        "receptive_field": {**rf.to_dict(), "recorded": rf.mass > 0},
        "parity": {
            "source": f"{len(patches)} test-split patches of {store.path}",
            "runtime": f"onnxruntime {ort.__version__} CPUExecutionProvider",
            "max_abs_diff": max_abs,
            "max_rel_diff": rel,
            "rel_tolerance": PARITY_RTOL,
            "shapes": per_shape,
        },
        "torch_version": torch.__version__,
        "onnx_version": onnx.__version__,
    }
    write_text_atomic(out_path.parent / EXPORT_JSON, json.dumps(info, indent=2) + "\n")
    log.info("exported %s (sha256 %s); parity max rel diff %.2e", out_path, info["sha256"][:12], rel)
    return info
