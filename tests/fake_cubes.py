"""Tiny ONNX models (identity, a small smooth UNet-like net) and inference cubes for the inference tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml

from pandafine.core.grid import Grid
from repo_paths import REPO

#: Channels of the fake cubes (the fake models read channel 0 as PANDA).
CHANNELS = ["panda", "red", "dem"]


def save_model(model, path: Path) -> Path:
    import onnx

    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def model_io(n_channels):
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("inputs", TensorProto.FLOAT, ["b", n_channels, "h", "w"])
    y = helper.make_tensor_value_info("radiance", TensorProto.FLOAT, ["b", 1, "h", "w"])
    return x, y


def identity_model(path: Path, n_channels: int = 3) -> Path:
    """radiance = channel 0 of the inputs, unchanged."""
    from onnx import helper, numpy_helper

    x, y = model_io(n_channels)
    inits = [numpy_helper.from_array(np.array([v], np.int64), n) for v, n in ((0, "s"), (1, "e"), (1, "ax"))]
    node = helper.make_node("Slice", ["inputs", "s", "e", "ax"], ["radiance"])
    graph = helper.make_graph([node], "identity", [x], [y], inits)
    return save_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10), path)


def smooth_model(path: Path, n_channels: int = 3, seed: int = 0) -> Path:
    """A small UNet-like net: NaN->0, conv3x3+relu, avgpool, conv3x3+relu, bilinear up, concat, conv1x1, softplus."""
    from onnx import helper, numpy_helper

    rng = np.random.default_rng(seed)
    x, y = model_io(n_channels)
    w1 = rng.normal(0, 0.4, (4, n_channels, 3, 3)).astype(np.float32)
    w2 = rng.normal(0, 0.4, (4, 4, 3, 3)).astype(np.float32)
    w3 = rng.normal(0, 0.5, (1, 8, 1, 1)).astype(np.float32)
    inits = [numpy_helper.from_array(a, n) for a, n in (
        (w1, "w1"), (rng.normal(0, 0.1, 4).astype(np.float32), "b1"), (w2, "w2"),
        (np.zeros(4, np.float32), "b2"), (w3, "w3"), (np.zeros(1, np.float32), "b3"),
        (np.zeros((), np.float32), "zero"), (np.array([1, 1, 2, 2], np.float32), "scales"))]
    nodes = [
        helper.make_node("IsNaN", ["inputs"], ["isnan"]),
        helper.make_node("Where", ["isnan", "zero", "inputs"], ["x0"]),
        helper.make_node("Conv", ["x0", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["h"]),
        helper.make_node("AveragePool", ["h"], ["d"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Conv", ["d", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c2"], ["d2"]),
        helper.make_node("Resize", ["d2", "", "scales"], ["u"], mode="linear"),
        helper.make_node("Concat", ["h", "u"], ["cat"], axis=1),
        helper.make_node("Conv", ["cat", "w3", "b3"], ["c3"]),
        helper.make_node("Softplus", ["c3"], ["radiance"]),
    ]
    graph = helper.make_graph(nodes, "smooth", [x], [y], inits)
    return save_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10), path)


def with_metadata(src: Path, dst: Path, **props: str) -> Path:
    """A copy of the ONNX model ``src`` at ``dst`` with ``metadata_props`` ``pandafine.<key>`` set to ``props``."""
    import onnx

    model = onnx.load(str(src))
    for key, value in props.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = f"pandafine.{key}", str(value)
    return save_model(model, dst)


def write_cube(path: Path, data: np.ndarray, year: int = 2018, chunk: int = 64,
               channels=CHANNELS) -> Path:
    import zarr
    from affine import Affine

    c, h, w = data.shape
    grid = Grid("EPSG:32649", Affine(125.0, 0, 300000.0, 0, -125.0, 3800000.0), w, h, 8)
    group = zarr.open_group(str(path), mode="w")
    arr = group.create_array("inputs", shape=data.shape, dtype="float32", chunks=(c, chunk, chunk),
                             fill_value=np.nan)
    arr[:] = data.astype(np.float32)
    group.attrs.update(channels=list(channels), year=year, grid=grid.to_dict())
    return path


def infer_test_config() -> dict:
    """The demo config with small tiles (64 px, 16 px overlap), CPU only, 256 px COG blocks."""
    c = yaml.safe_load((REPO / "config.yaml").read_text())
    c["infer"].update(tile=64, overlap=16, window="hann", batch_size=4, providers=["CPUExecutionProvider"])
    c["product"].update(compress="zstd", blocksize=256)
    return c
