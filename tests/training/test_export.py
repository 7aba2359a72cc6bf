"""ONNX export: dynamic shapes, NaN inputs, parity with PyTorch, export.json, the receptive field check."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from fake_tiles import stage_config, write_fake_train_zarr
from pandafine.models import input_multiple
from pandafine.models.checkpoint import CHECKPOINT_FORMAT, save_checkpoint
from pandafine.models.receptive_field import RF_METADATA_KEY
from pandafine.models.registry import build_wrapper, load_trained_model
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
    # the receptive field measured at export: recorded for infer, and within the config's infer.tile (32)
    rf = json.loads((model_dir / "export.json").read_text())["receptive_field"]
    assert rf["recorded"] and int(meta[RF_METADATA_KEY]) == rf["px"] == 2 * rf["radius"] + 1
    assert 1 <= rf["px"] <= stage_config()["infer"]["tile"]
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


def untrained_checkpoint(model_dir, zarr_path, model_config, seed=0):
    """``model_dir/checkpoint.pt`` of an untrained, seeded network (no training: fast)."""
    store = PatchStore(zarr_path)
    torch.manual_seed(seed)
    model = build_wrapper(model_config, store.channels, store.normalization)
    save_checkpoint(model_dir / "checkpoint.pt", {
        "format": CHECKPOINT_FORMAT, "model_state": model.state_dict(), "model_config": dict(model_config),
        "channels": list(store.channels), "normalization": store.normalization, "best_epoch": 0})
    return model_dir


def test_export_refuses_a_tile_smaller_than_the_receptive_field(tmp_path):
    zarr_path = write_fake_train_zarr(tmp_path / "train.zarr")
    mc = {"name": "mmntlsr", "width": 8, "depth": 2}  # PANDA encoded at 1/8: a wide field
    model_dir = untrained_checkpoint(tmp_path / "model", zarr_path, mc)
    model, ck = load_trained_model(model_dir)
    patches, _ = PatchStore(zarr_path).read(PatchStore(zarr_path).indices("test"))
    rf = X.receptive_field(model, patches, ck["channels"], input_multiple(mc))
    assert rf.px > 16 and rf.complete
    cfg = stage_config()
    cfg["infer"]["tile"] = 16
    with pytest.raises(ValueError) as err:
        X.export_onnx(cfg, model_dir, zarr_path, model_dir / "model.onnx")
    msg = str(err.value)
    assert "infer.tile" in msg and "value 16" in msg and f"receptive field of {model_dir / 'checkpoint.pt'}" in msg
    assert f"{rf.px} px" in msg and f"infer.tile >= {-(-rf.px // 8) * 8}" in msg and "nothing was exported" in msg
    assert sorted(p.name for p in model_dir.iterdir()) == ["checkpoint.pt"]  # no model, no export.json, no temporary


def test_check_tile_against_model_takes_the_tile_multiple():
    from pandafine.models.receptive_field import ReceptiveField

    rf = ReceptiveField(radius=12, fraction=0.99, canvas=128, samples=4, mass=1.0, complete=True)  # 25 px
    X.check_tile_against_model(32, rf, 8, "m")
    X.check_tile_against_model(25, rf, 1, "m")
    with pytest.raises(ValueError, match=r"value 24 is smaller than the receptive field of m, 25 px.*>= 32 "
                                         r"\(a multiple of 8\)"):
        X.check_tile_against_model(24, rf, 8, "m")
    with pytest.raises(ValueError, match=r">= 32 \(a multiple of 16\)"):
        X.check_tile_against_model(16, rf, 16, "m")


def test_export_uses_the_torchscript_exporter_and_is_reproducible(exported, tmp_path):
    zarr_path, model_dir, info = exported
    assert info["exporter"] == "torch.onnx.export(dynamo=False)"
    again = X.export_onnx(stage_config(), model_dir, zarr_path, tmp_path / "model.onnx")
    assert again["sha256"] == info["sha256"]  # same checkpoint, same bytes (the product tags carry this hash)


def test_a_failing_exporter_falls_back_to_the_next(exported, tmp_path, monkeypatch, caplog):
    zarr_path, model_dir, _ = exported

    def broken(model, example, path, opset):
        raise RuntimeError("Exporting the operator 'aten::made_up' is not supported")

    monkeypatch.setattr(X, "_export_torchscript", broken)
    with caplog.at_level("WARNING", logger=X.log.name):
        info = X.export_onnx(stage_config(), model_dir, zarr_path, tmp_path / "model.onnx")
    assert info["exporter"] == "torch.onnx.export(dynamo=True)"
    assert info["parity"]["max_rel_diff"] <= X.PARITY_RTOL
    assert "the torchscript exporter failed (Exporting the operator 'aten::made_up'" in caplog.text


def test_a_graph_failing_parity_falls_back_and_the_last_failure_raises(exported, tmp_path, monkeypatch):
    zarr_path, model_dir, _ = exported
    calls, real_torchscript = [], X._export_torchscript

    class Shifted(torch.nn.Module):
        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, x):
            return self.model(x) + 1.0

    def wrong_graph(model, example, path, opset):  # a valid graph of another function: parity must catch it
        calls.append(opset)
        real_torchscript(Shifted(model), example, path, opset)

    monkeypatch.setattr(X, "_export_torchscript", wrong_graph)
    monkeypatch.setattr(X, "_export_dynamo", wrong_graph)
    with pytest.raises(RuntimeError, match="parity failed"):
        X.export_onnx(stage_config(), model_dir, zarr_path, tmp_path / "model.onnx")
    assert len(calls) == 2 and not (tmp_path / "model.onnx").exists()
