"""ONNX export: dynamic shapes, NaN inputs, parity with PyTorch, export.json."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from fake_tiles import stage_config, write_fake_train_zarr
from pandafine.models.registry import load_trained_model
from pandafine.tiles.store import PatchStore
from pandafine.training import export as X
from pandafine.training import train as T


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    zarr_path = write_fake_train_zarr(root / "train.zarr")
    model_dir = root / "model"
    T.train_model(stage_config(epochs=2), zarr_path, model_dir, progress=False)
    info = X.export_onnx(stage_config(), model_dir, zarr_path, model_dir / "model.onnx")
    return zarr_path, model_dir, info


def test_export_json_and_parity(exported):
    _, model_dir, info = exported
    onnx_path = model_dir / "model.onnx"
    assert json.loads((model_dir / "export.json").read_text()) == json.loads(json.dumps(info))
    assert info["sha256"] == X.sha256_file(onnx_path)
    assert info["parity"]["max_rel_diff"] <= X.PARITY_RTOL
    shapes = [tuple(s["shape"]) for s in info["parity"]["shapes"]]
    assert (2, 11, 32, 32) in shapes and (1, 11, 16, 32) in shapes  # infer tile and a non-square input
    assert not list(model_dir.glob(".*part*"))  # no temporary file left


def test_onnx_graph_contract(exported):
    import onnx

    _, model_dir, _ = exported
    proto = onnx.load(str(model_dir / "model.onnx"))
    (inp,), (out,) = proto.graph.input, proto.graph.output
    assert (inp.name, out.name) == ("inputs", "radiance")
    dims = [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim]
    assert isinstance(dims[0], str) and dims[1] == 11 and isinstance(dims[2], str) and isinstance(dims[3], str)
    meta = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(meta["pandafine.channels"])[0] == "panda"
    assert meta["pandafine.radiance_units"] == "W m-2 sr-1 um-1"
    # no source locations: the file does not depend on where the checkout lives or on source line numbers
    assert not [p.key for n in proto.graph.node for p in n.metadata_props if p.key in X.SOURCE_LOCATION_KEYS]
    src = str(Path(X.__file__).resolve().parents[2])
    assert src.encode() not in (model_dir / "model.onnx").read_bytes()


def test_drop_source_locations_keeps_other_metadata():
    from onnx import helper

    node = helper.make_node("Relu", ["x"], ["y"])
    for key, value in (("pkg.torch.onnx.stack_trace", 'File "/home/me/src/m.py", line 3'), ("namespace", "m")):
        entry = node.metadata_props.add()
        entry.key, entry.value = key, value
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", 1, [1])],
                              [helper.make_tensor_value_info("y", 1, [1])])
    proto = helper.make_model(graph)
    assert X.drop_source_locations(proto) == 1
    assert [(p.key, p.value) for p in proto.graph.node[0].metadata_props] == [("namespace", "m")]
    assert X.drop_source_locations(proto) == 0


def test_onnxruntime_matches_torch_on_new_shape_with_nan(exported):
    import onnxruntime as ort

    _, model_dir, _ = exported
    model, _ = load_trained_model(model_dir)
    rng = np.random.default_rng(0)
    store = PatchStore(exported[0])
    x, _ = store.read([0, 1, 2])
    x = np.concatenate([x, x[:, :, :8]], axis=2)[:, :, :24]  # (3, 11, 24, 16)
    x[rng.random(x.shape) < 0.1] = np.nan
    sess = ort.InferenceSession(str(model_dir / "model.onnx"), providers=["CPUExecutionProvider"])
    got = sess.run(["radiance"], {"inputs": x})[0]
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    assert got.shape == (3, 1, 24, 16) and np.isfinite(got).all() and (got >= 0).all()
    assert np.max(np.abs(got - ref)) <= 1e-4 * np.max(np.abs(ref))


def test_parity_inputs_shapes():
    p = np.zeros((5, 3, 16, 16), np.float32)
    shapes = [a.shape for a in X.parity_inputs(p, batch_size=2, tile=40, multiple=8)]
    assert shapes == [(2, 3, 16, 16), (2, 3, 16, 16), (1, 3, 16, 16), (2, 3, 40, 40), (1, 3, 16, 32)]
