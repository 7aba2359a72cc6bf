"""Reduced-precision copies of the exported ONNX model: fp16 and int8 (static QDQ).

Both start from the fp32 ``model.onnx`` of :mod:`pandafine.training.export` and keep its
contract: input ``inputs`` and output ``radiance`` stay float32 (NaN = nodata in,
radiance in W m-2 sr-1 um-1 out), so :mod:`pandafine.inference.infer` runs any of them
unchanged.

Which nodes keep fp32 (:func:`fp32_nodes`):

* the **head**: nodes with no model layer (Conv, ConvTranspose, Gemm, MatMul)
  upstream, i.e. the normalization of the raw channels (``(x - mean) / std``,
  NaN -> 0) and shape arithmetic such as the base grid of ``affine_grid``.
  Raw inputs contain NaN and are not quantizable;
* the **tail**: nodes with no model layer downstream, i.e. the map from z to
  radiance (``expm1(max(z, 0)) * RADIANCE_REF``). Radiance is about 1e-7 to
  1e-3, below float16's smallest normal number (6.1e-5) for most pixels, and
  a uniform 8-bit scale over that range would erase the dark pixels;
* every node of an op in :data:`FP32_OPS` (``GridSample``: the alignment
  warps of MMNTLSR; onnxruntime's CUDA GridSample is float32-only) and the
  arithmetic of its sampling grid (sub-pixel coordinates).

int8 also keeps the first layers (:func:`input_layers`, reading the normalized
inputs) and the output layers (:func:`output_layers`, producing z) in float32.

fp16 is :func:`float16_graph`, a small converter written here because
onnxruntime's ``convert_float_to_float16`` routes the values between two
float32 nodes through float16 casts (the output radiance included). int8 uses
``onnxruntime.quantization.quantize_static`` in QDQ format with per-channel
int8 weights and uint8 activations, calibrated (MinMax) on training-split
patches of ``train.zarr``. Each file is written to a
temporary name and renamed after ``onnx.checker`` passed and onnxruntime ran it;
a JSON record (:func:`record_path`) says what was done.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from pandafine.core.atomic import atomic_path, write_text_atomic
from pandafine.core.checksums import sha256_file
from pandafine.core.runtime import ort_session_options
from pandafine.core.scaling import radiance_to_log
from pandafine.models import check_precision, precision_path
from pandafine.tiles.store import PatchStore
from pandafine.training.export import INPUT_NAME, OUTPUT_NAME

log = logging.getLogger(__name__)

#: Ops kept in float32 in every reduced-precision model.
FP32_OPS = ("GridSample",)
#: Ops that count as model layers when the head and tail are found.
LAYER_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
#: Training-split patches used to calibrate the int8 activations (evenly spread over the split).
CALIBRATION_TILES = 64
#: Patches per calibration batch.
CALIBRATION_BATCH = 8


def record_path(model_path) -> Path:
    """The JSON record written beside a converted model (``model.int8.onnx`` -> ``model.int8.json``)."""
    p = Path(model_path)
    return p.with_suffix(".json")


# --------------------------------------------------------------------------- graph analysis (pure)

def _name_nodes(graph) -> None:
    """Give unnamed nodes unique names (block and exclude lists go by name)."""
    used = {n.name for n in graph.node if n.name}
    for i, node in enumerate(graph.node):
        if not node.name:
            name = f"pandafine_node_{i}"
            while name in used:
                name += "_"
            node.name = name
            used.add(name)


@dataclass(frozen=True)
class _LayerReach:
    """A graph's nodes (topological order), their links, and where the model layers are.

    ``up[i]``: node ``i`` is a layer or has one among its ancestors; ``down[i]``:
    among itself and its descendants.
    """

    nodes: list
    producer: dict[str, int]
    consumers: dict[str, list[int]]
    up: list[bool]
    down: list[bool]


def _layer_reach(graph, layer_ops: Sequence[str]) -> _LayerReach:
    nodes = list(graph.node)
    producer = {out: i for i, n in enumerate(nodes) for out in n.output if out}
    consumers: dict[str, list[int]] = {}
    for i, n in enumerate(nodes):
        for inp in n.input:
            if inp:
                consumers.setdefault(inp, []).append(i)
    is_layer = [n.op_type in layer_ops for n in nodes]
    up = [False] * len(nodes)
    for i, n in enumerate(nodes):
        up[i] = is_layer[i] or any(up[producer[x]] for x in n.input if x in producer)
    down = [False] * len(nodes)
    for i in range(len(nodes) - 1, -1, -1):
        down[i] = is_layer[i] or any(down[j] for out in nodes[i].output for j in consumers.get(out, ()))
    return _LayerReach(nodes, producer, consumers, up, down)


def head_and_tail(graph, layer_ops: Sequence[str] = LAYER_OPS) -> tuple[list[str], list[str]]:
    """Names of the nodes before the first and after the last model layer.

    Parameters
    ----------
    graph : onnx.GraphProto
        A topologically sorted graph (as ONNX requires); subgraphs are not searched.
    layer_ops : sequence of str
        Op types that count as model layers.

    Returns
    -------
    head, tail : list of str
        ``head``: nodes with no layer among themselves and their ancestors;
        ``tail``: nodes with a layer upstream but none among themselves and their
        descendants. Every other node lies between two layers.
    """
    r = _layer_reach(graph, layer_ops)
    head = [n.name for i, n in enumerate(r.nodes) if not r.up[i]]
    tail = [n.name for i, n in enumerate(r.nodes) if r.up[i] and not r.down[i]]
    return head, tail


def output_layers(graph, layer_ops: Sequence[str] = LAYER_OPS) -> list[str]:
    """Names of the model layers with no other layer downstream (the layers producing z).

    int8 keeps them in float32: an 8-bit output would put z on a grid of 1/255 of its
    range, which shows as blockiness in dark, flat areas (SSIM on z of the demo UNet
    fell from 0.880 to 0.813 with it quantized, 0.905 without; PSNR barely moved).
    """
    r = _layer_reach(graph, layer_ops)
    return [n.name for n in r.nodes if n.op_type in layer_ops
            and not any(r.down[j] for out in n.output for j in r.consumers.get(out, ()))]


def input_layers(graph, layer_ops: Sequence[str] = LAYER_OPS) -> list[str]:
    """Names of the model layers with no other layer upstream (the layers reading the normalized inputs).

    int8 keeps them in float32: an 8-bit input puts every normalized channel on a
    grid of 1/255 of its calibrated range, too coarse for the small band
    differences the first layers read (calibrating the range on the 99.99th
    percentile instead of min/max did not help). On the benchmark tiles (``workflow/configs/benchmark_headline.yaml``,
    seed 42) quantizing them cost the UNet 1.80 dB PSNR(log) and the full MMNTLSR
    0.76 dB; kept in float32, 0.01 and 0.06 dB.
    """
    r = _layer_reach(graph, layer_ops)
    return [n.name for n in r.nodes if n.op_type in layer_ops
            and not any(r.up[r.producer[x]] for x in n.input if x in r.producer)]


def grid_nodes(graph, ops: Sequence[str] = FP32_OPS, layer_ops: Sequence[str] = LAYER_OPS) -> list[str]:
    """Names of the nodes computing the sampling grid of each ``GridSample`` (its second input).

    The search walks up from the grid input and stops at model layers (not
    included): the coordinate arithmetic of ``affine_grid``, of the deformable
    offsets and of the deformation field. Sub-pixel coordinates need float32.
    """
    nodes = list(graph.node)
    producer = {out: i for i, n in enumerate(nodes) for out in n.output if out}
    seen: set[int] = set()
    stack = [n.input[1] for n in nodes if n.op_type in ops and len(n.input) > 1]
    while stack:
        i = producer.get(stack.pop())
        if i is None or i in seen or nodes[i].op_type in layer_ops:
            continue
        seen.add(i)
        stack.extend(x for x in nodes[i].input if x)
    return [nodes[i].name for i in sorted(seen)]


def fp32_nodes(graph, ops: Sequence[str] = FP32_OPS) -> dict[str, list[str]]:
    """Nodes that keep float32 (names; see the module doc).

    Returns
    -------
    dict
        ``head`` and ``tail`` (:func:`head_and_tail`), ``ops`` (nodes of ``ops``)
        and ``grid`` (:func:`grid_nodes`), each name in one list only.
    """
    head, tail = head_and_tail(graph)
    taken = set(head) | set(tail)
    op_nodes = [n.name for n in graph.node if n.op_type in ops and n.name not in taken]
    taken |= set(op_nodes)
    grid = [name for name in grid_nodes(graph, ops) if name not in taken]
    return {"head": head, "tail": tail, "ops": op_nodes, "grid": grid}


def node_dtypes(model) -> dict[str, str]:
    """numpy dtype name of each node's first typed output after shape inference (``"float32"``, ``"float16"``, ``"int64"`` ...)."""
    import onnx

    inferred = onnx.shape_inference.infer_shapes(model)
    types = {v.name: v.type.tensor_type.elem_type for v in
             list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output)}
    out = {}
    for node in model.graph.node:
        for name in node.output:
            if name in types:
                out[node.name] = onnx.helper.tensor_dtype_to_np_dtype(types[name]).name
                break
    return out


#: Ops never converted to float16: no float input (their dtype comes from an attribute or
#: from integer inputs) or integer-valued results (Range of grid coordinates).
NO_FP16_OPS = ("Cast", "Constant", "ConstantOfShape", "Range", "EyeLike", "RandomNormal", "RandomUniform")
#: Inputs that must stay float32 whatever the node's precision (``Resize`` roi and scales).
FLOAT32_INPUTS = {"Resize": (1, 2)}


def float16_graph(model, keep: Iterable[str], *, emulate: bool = False):
    """A copy of ``model`` computing in float16 except the nodes named in ``keep``.

    A node is converted when it has a float32 input and is neither in ``keep`` nor
    of an op in :data:`NO_FP16_OPS`. Its float inputs are cast to float16 (float
    initializers used only there are stored as float16), its float outputs become
    float16, and a ``Cast`` back to float32 is inserted before every float32
    consumer and graph output. Graph inputs and outputs keep their float32 type
    and names. Nodes stay in their (topological) order.

    Parameters
    ----------
    model : onnx.ModelProto
        Float32 model with named nodes and no subgraphs.
    keep : iterable of str
        Node names that stay float32.
    emulate : bool
        Build a float32 graph that rounds the same tensors to float16 instead
        (weights, and every input and output of a converted node go through
        ``Cast`` to float16 and back) while computing in float32. It estimates
        what float16 storage with float32 accumulation (GPU tensor cores) does
        to the output, where onnxruntime's CPU provider computes most float16
        nodes in float32 and drops the casts between them.

    Returns
    -------
    onnx.ModelProto
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    FLOAT, HALF = TensorProto.FLOAT, TensorProto.FLOAT16
    src = onnx.shape_inference.infer_shapes(model)
    graph = src.graph
    elem = {v.name: v.type.tensor_type.elem_type for v in list(graph.value_info) + list(graph.input)
            + list(graph.output)}
    inits = {t.name: t for t in graph.initializer}
    elem.update({name: t.data_type for name, t in inits.items()})
    keep = set(keep)
    convert = {n.name for n in graph.node
               if n.name not in keep and n.op_type not in NO_FP16_OPS
               and any(elem.get(x) == FLOAT for x in n.input if x)}

    half: set[str] = set()  # float tensors produced in float16
    casts: dict[tuple[str, int], str] = {}  # (tensor, to) -> cast output
    new_nodes, new_inits = [], []
    out_names = {o.name for o in graph.output}
    renamed: dict[str, str] = {}  # float16 graph outputs renamed before their final cast

    def rounded(src_name: str, out: str) -> None:
        new_nodes.append(helper.make_node("Cast", [src_name], [f"{out}__h"], to=HALF, name=f"{out}__h__cast"))
        new_nodes.append(helper.make_node("Cast", [f"{out}__h"], [out], to=FLOAT, name=f"{out}__cast"))

    def cast(name: str, to: int) -> str:
        if emulate and to == FLOAT:
            return name
        key = (name, to)
        if key not in casts:
            if to == HALF and name in inits:
                w = np.clip(numpy_helper.to_array(inits[name]).astype(np.float32), -65504, 65504).astype(np.float16)
                out = f"{name}__fp16"
                new_inits.append(numpy_helper.from_array(w.astype(np.float32) if emulate else w, out))
            elif emulate:
                out = f"{name}__fp16r"
                rounded(renamed.get(name, name), out)
            else:
                out = f"{name}__{'fp16' if to == HALF else 'fp32'}"
                new_nodes.append(helper.make_node("Cast", [renamed.get(name, name)], [out], to=to,
                                                  name=f"{out}__cast"))
            casts[key] = out
        return casts[key]

    for node in graph.node:
        node = onnx.NodeProto.FromString(node.SerializeToString())
        if node.name in convert:
            fixed = FLOAT32_INPUTS.get(node.op_type, ())
            for k, x in enumerate(node.input):
                if x in renamed:
                    node.input[k] = renamed[x]
                elif x and elem.get(x) == FLOAT and x not in half and k not in fixed:
                    node.input[k] = cast(x, HALF)
            after = []
            for k, y in enumerate(node.output):
                if y and elem.get(y) == FLOAT:
                    half.add(y)
                    if emulate:
                        node.output[k] = f"{y}__raw"
                        after.append((node.output[k], y))
                    elif y in out_names:
                        renamed[y] = node.output[k] = f"{y}__fp16"
            new_nodes.append(node)
            for raw, y in after:
                rounded(raw, y)
            continue
        for k, x in enumerate(node.input):
            if x in half:
                node.input[k] = cast(x, FLOAT)
        new_nodes.append(node)
    for y in (out_names & half) if not emulate else ():
        new_nodes.append(helper.make_node("Cast", [renamed[y]], [y], to=FLOAT, name=f"{y}__output_cast"))

    out = onnx.ModelProto.FromString(model.SerializeToString())
    del out.graph.node[:]
    out.graph.node.extend(new_nodes)
    used = {x for n in new_nodes for x in n.input}
    kept_inits = [t for t in model.graph.initializer if t.name in used]
    del out.graph.initializer[:]
    out.graph.initializer.extend(kept_inits + new_inits)
    del out.graph.value_info[:]  # re-inferred by onnxruntime; the old ones name float32 types
    return out


# --------------------------------------------------------------------------- calibration data

def calibration_indices(n_train: int, n: int) -> np.ndarray:
    """``min(n, n_train)`` positions spread evenly over ``range(n_train)`` (deterministic)."""
    if n < 1:
        raise ValueError(f"calibration tiles: value {n} must be >= 1")
    if n_train < 1:
        raise ValueError("calibration tiles: the training split is empty")
    k = min(n, n_train)
    return np.unique(np.round(np.linspace(0, n_train - 1, k)).astype(np.int64))


def calibration_batches(train_zarr, n_tiles: int = CALIBRATION_TILES,
                        batch_size: int = CALIBRATION_BATCH) -> tuple[list[np.ndarray], dict[str, Any]]:
    """Training-split patches of ``train_zarr`` in batches, and a description of them."""
    store = PatchStore(train_zarr, memory_limit=0)
    train_idx = store.indices("train")
    if train_idx.size == 0:
        raise ValueError(f"{store.path}: the training split (split == 0) is empty; nothing to calibrate on")
    sel = train_idx[calibration_indices(train_idx.size, n_tiles)]
    batches = [np.ascontiguousarray(store.read(sel[s:s + batch_size])[0], dtype=np.float32)
               for s in range(0, sel.size, batch_size)]
    info = {"source": str(store.path), "split": "train", "n_tiles": int(sel.size),
            "tile_shape": [len(store.channels), store.patch, store.patch], "selection": "evenly spaced"}
    return batches, info


class _Reader:
    """A ``CalibrationDataReader`` over a list of input batches."""

    def __init__(self, batches: Iterable[np.ndarray]) -> None:
        self._batches = list(batches)
        self._it = iter(self._batches)

    def get_next(self):
        batch = next(self._it, None)
        return None if batch is None else {INPUT_NAME: batch}

    def rewind(self) -> None:
        self._it = iter(self._batches)


# --------------------------------------------------------------------------- conversion

def _session(path):
    import onnxruntime as ort

    return ort.InferenceSession(str(path), sess_options=ort_session_options(), providers=["CPUExecutionProvider"])


def _check_io(session, source) -> None:
    """Input and output stay float32 with the contract's names."""
    ins = {i.name: i.type for i in session.get_inputs()}
    outs = {o.name: o.type for o in session.get_outputs()}
    if ins.get(INPUT_NAME) != "tensor(float)" or outs.get(OUTPUT_NAME) != "tensor(float)":
        raise RuntimeError(f"{source}: inputs {ins} / outputs {outs}; expected float32 "
                           f"'{INPUT_NAME}' and '{OUTPUT_NAME}'")


def _compare(session_ref, session, batches: Sequence[np.ndarray], source) -> dict[str, float]:
    """Largest |z - z_fp32| (z = log1p(L / RADIANCE_REF)) on ``batches``; outputs must be finite."""
    worst = 0.0
    for x in batches:
        ref = session_ref.run([OUTPUT_NAME], {INPUT_NAME: x})[0]
        got = session.run([OUTPUT_NAME], {INPUT_NAME: x})[0]
        if got.shape != ref.shape or got.dtype != np.float32:
            raise RuntimeError(f"{source}: output {got.dtype}{got.shape}; expected float32{ref.shape}")
        ok = np.isfinite(ref)
        if not np.isfinite(got[ok]).all():
            raise RuntimeError(f"{source}: non-finite radiance where the fp32 model's is finite")
        worst = max(worst, float(np.max(np.abs(radiance_to_log(got[ok].astype(np.float64))
                                                - radiance_to_log(ref[ok].astype(np.float64))), initial=0.0)))
    return {"max_abs_diff_log": worst, "n_batches": len(batches)}


def _set_meta(proto, precision: str, kept: Mapping[str, list[str]]) -> None:
    meta = {p.key: p for p in proto.metadata_props}
    values = {"pandafine.precision": precision,
              "pandafine.fp32_nodes": json.dumps({k: len(v) for k, v in kept.items()})}
    for key, value in values.items():
        if key in meta:
            meta[key].value = value
        else:
            entry = proto.metadata_props.add()
            entry.key, entry.value = key, value


def _record(src: Path, dst: Path, precision: str, kept: Mapping[str, list[str]], extra: Mapping[str, Any]) -> dict:
    import onnx
    import onnxruntime as ort

    info = {
        "precision": precision,
        "onnx": dst.name,
        "sha256": sha256_file(dst),
        "size_bytes": dst.stat().st_size,
        "source": {"onnx": src.name, "sha256": sha256_file(src), "size_bytes": src.stat().st_size},
        "io": {"input": INPUT_NAME, "output": OUTPUT_NAME, "dtype": "float32"},
        "fp32_kept": {
            "ops": list(FP32_OPS),
            "head_nodes": len(kept["head"]),
            "tail_nodes": len(kept["tail"]),
            "op_nodes": len(kept["ops"]),
            "grid_nodes": len(kept["grid"]),
            "why": "head: normalization of raw channels (NaN in); tail: z -> radiance (values below fp16's "
                   "normal range); GridSample and its grid arithmetic: sub-pixel alignment warps",
        },
        **extra,
        "onnx_version": onnx.__version__,
        "onnxruntime_version": ort.__version__,
    }
    write_text_atomic(record_path(dst), json.dumps(info, indent=2) + "\n")
    return info


def convert_fp16(src, dst, *, check_batches: Sequence[np.ndarray] = ()) -> dict[str, Any]:
    """Write the float16 model of the fp32 ONNX model ``src`` to ``dst``.

    Weights and activations between the first and last model layer become float16,
    except the nodes of :func:`fp32_nodes` and onnxruntime's default block list;
    the graph input and output stay float32 (``keep_io_types``).

    Parameters
    ----------
    src, dst : path-like
        fp32 model and destination (``record_path(dst)`` receives the JSON record).
    check_batches : sequence of ndarray
        Inputs run through both models before the rename; the record states the
        largest log-radiance difference.

    Returns
    -------
    dict
        The JSON record.
    """
    import onnx

    src, dst = Path(src), Path(dst)
    model = onnx.load(str(src))
    _name_nodes(model.graph)
    kept = fp32_nodes(model.graph)
    fp16 = float16_graph(model, [name for names in kept.values() for name in names])
    _set_meta(fp16, "fp16", kept)
    onnx.checker.check_model(fp16)
    with atomic_path(dst) as tmp:
        onnx.save(fp16, str(tmp))
        session = _session(tmp)
        _check_io(session, dst)
        check = _compare(_session(src), session, check_batches, dst) if check_batches else None
    info = _record(src, dst, "fp16", kept, {
        "method": "pandafine.quantize.float16_graph: float16 weights and activations, float32 graph I/O",
        "fp32_op_types": sorted(set(FP32_OPS) | set(NO_FP16_OPS)),
        "check": check,
    })
    log.info("fp16 model %s (%d bytes, %s)", dst, info["size_bytes"], check)
    return info


def write_fp16_emulation(src, dst) -> Path:
    """Write the float32 model that rounds to float16 what :func:`convert_fp16` stores in float16.

    An evaluation aid, not a deliverable (see ``emulate`` in :func:`float16_graph`).
    """
    import onnx

    model = onnx.load(str(src))
    _name_nodes(model.graph)
    kept = fp32_nodes(model.graph)
    emu = float16_graph(model, [name for names in kept.values() for name in names], emulate=True)
    onnx.checker.check_model(emu)
    with atomic_path(dst) as tmp:
        onnx.save(emu, str(tmp))
    return Path(dst)


def quantize_int8(src, dst, train_zarr, *, n_tiles: int = CALIBRATION_TILES,
                  check_batches: Sequence[np.ndarray] = ()) -> dict[str, Any]:
    """Write the int8 static-QDQ model of the fp32 ONNX model ``src`` to ``dst``.

    Per-channel symmetric int8 weights, uint8 activations with MinMax ranges
    calibrated on ``n_tiles`` training-split patches of ``train_zarr``; the
    nodes of :func:`fp32_nodes`, the :func:`input_layers` and the
    :func:`output_layers` are not quantized.

    Returns
    -------
    dict
        The JSON record (``record_path(dst)``).
    """
    import tempfile

    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    src, dst = Path(src), Path(dst)
    model = onnx.load(str(src))
    _name_nodes(model.graph)
    kept = fp32_nodes(model.graph)
    kept_names = [name for names in kept.values() for name in names]
    first = [name for name in input_layers(model.graph) if name not in kept_names]
    last = [name for name in output_layers(model.graph) if name not in kept_names and name not in first]
    exclude = kept_names + first + last
    batches, calib = calibration_batches(train_zarr, n_tiles)
    with tempfile.TemporaryDirectory(prefix="pandafine-int8-") as work, atomic_path(dst) as tmp:
        named = Path(work) / "named.onnx"
        onnx.save(model, str(named))
        quantize_static(str(named), str(tmp), _Reader(batches), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=CalibrationMethod.MinMax, nodes_to_exclude=exclude,
                        extra_options={"CalibTensorRangeSymmetric": False})
        proto = onnx.load(str(tmp))
        _set_meta(proto, "int8", kept)
        onnx.checker.check_model(proto)
        onnx.save(proto, str(tmp))
        session = _session(tmp)
        _check_io(session, dst)
        check = _compare(_session(src), session, check_batches, dst) if check_batches else None
    info = _record(src, dst, "int8", kept, {
        "method": "onnxruntime.quantization.quantize_static(QDQ, per_channel=True, weights QInt8, "
                  "activations QUInt8, MinMax calibration)",
        "fp32_input_layers": first,
        "fp32_output_layers": last,
        "calibration": calib,
        "check": check,
    })
    log.info("int8 model %s (%d bytes, %s)", dst, info["size_bytes"], check)
    return info


def holdout_batches(train_zarr, n: int = 16, batch_size: int = CALIBRATION_BATCH) -> list[np.ndarray]:
    """Up to ``n`` test-split patches in batches (the check of :func:`build_precision`)."""
    store = PatchStore(train_zarr, memory_limit=0)
    idx = store.indices("test")[:n]
    return [store.read(idx[s:s + batch_size])[0] for s in range(0, idx.size, batch_size)]


def build_precision(fp32_path, precision: str, train_zarr, out_path=None, *,
                    n_tiles: int = CALIBRATION_TILES) -> Path:
    """The model of ``precision`` for the fp32 model ``fp32_path``; built if not fp32.

    Parameters
    ----------
    fp32_path : path-like
        The exported ``model.onnx``.
    precision : {"fp32", "fp16", "int8"}
    train_zarr : path-like
        Training patches: calibration (train split) and the check (test split).
    out_path : path-like, optional
        Destination (default :func:`precision_path`).
    n_tiles : int
        Calibration patches (int8).

    Returns
    -------
    pathlib.Path
        ``fp32_path`` itself for fp32, else the written model.
    """
    check_precision(precision)
    fp32_path = Path(fp32_path)
    if not fp32_path.is_file():
        raise FileNotFoundError(f"{fp32_path}: fp32 ONNX model not found (run `pandafine export` first)")
    if precision == "fp32":
        return fp32_path
    out = Path(out_path) if out_path is not None else precision_path(fp32_path, precision)
    checks = holdout_batches(train_zarr)
    if precision == "fp16":
        convert_fp16(fp32_path, out, check_batches=checks)
    else:
        quantize_int8(fp32_path, out, train_zarr, n_tiles=n_tiles, check_batches=checks)
    return out
