"""fp16 and int8 ONNX models: what stays fp32, float32 I/O, closeness to fp32, the precision table.

Tolerances (max |z - z_fp32|, z = log1p(L / 1e-5), on the fake test patches; measured
when written): UNet fp16 on onnxruntime CPU 2e-5, fp16-rounded 9e-4, int8 4e-3; MMNTLSR
fp16 5e-6, fp16-rounded 1e-3, int8 1.5e-2 with every part (5e-4 without modulation and
the local pattern, whose paths of three layers from input to z are quantized; int8 keeps
the first and the output layers fp32). The asserts allow 1e-3 (fp16 CPU), 5e-3
(fp16-rounded: float16 has 11 significant bits, z ~ 2) and 2e-2 (int8).
"""

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper

from fake_tiles import stage_config, write_fake_train_zarr
from pandafine.config import ConfigError, validate_config
from pandafine.core.scaling import radiance_to_log
from pandafine.models import model_filename, precision_path
from pandafine.models.registry import build_wrapper
from pandafine.studies import precision as P
from pandafine.tiles.store import PatchStore
from pandafine.training import quantize as Q
from pandafine.training.export import _export_graph

TOL = {"fp16": 1e-3, "fp16-rounded": 5e-3, "int8": 2e-2}
MMNTLSR_SMALL = {"name": "mmntlsr", "width": 4, "depth": 1,
                 "modules": {"fusion": False, "auxiliary": False, "multiscale": False,
                             "affine": True, "deformable": True, "deformation_field": True}}


def _export(zarr_path, model_cfg, path: Path) -> Path:
    """An untrained model with z ~ 2 (radiance not clamped to 0) exported like `pandafine export`."""
    import zarr

    store = PatchStore(zarr_path)
    norm = dict(zarr.open_group(str(zarr_path), mode="r").attrs)["normalization"]
    torch.manual_seed(0)
    model = build_wrapper(model_cfg, store.channels, norm).eval()
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in model.net.named_parameters():  # alignment heads start at identity: make them act
            if any(s in name for s in ("affine.head", "conv.offset", "field.flow")):
                p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
        last = model.net.head if hasattr(model.net, "head") else model.net.sr_head[-1]
        last.bias.fill_(2.0)
    x, _ = store.read([0, 1])
    path.parent.mkdir(parents=True, exist_ok=True)
    _export_graph(model, x, path, 18)
    return path


@pytest.fixture(scope="module")
def unet(tmp_path_factory):
    root = tmp_path_factory.mktemp("quantize")
    zarr_path = write_fake_train_zarr(root / "train.zarr")
    fp32 = _export(zarr_path, {"name": "unet", "width": 6, "depth": 2}, root / "unet" / "model.onnx")
    return zarr_path, fp32


@pytest.fixture(scope="module")
def mmntlsr(tmp_path_factory, unet):
    zarr_path, _ = unet
    root = tmp_path_factory.mktemp("quantize_mm")
    return zarr_path, _export(zarr_path, MMNTLSR_SMALL, root / "mm" / "model.onnx")


def _z_diff(zarr_path, ref_path, path) -> float:
    store = PatchStore(zarr_path)
    x, _ = store.read(store.indices("test"))
    outs = []
    for p in (ref_path, path):
        sess = ort.InferenceSession(str(p), providers=["CPUExecutionProvider"])
        assert [(i.name, i.type) for i in sess.get_inputs()] == [("inputs", "tensor(float)")]
        assert [(o.name, o.type) for o in sess.get_outputs()] == [("radiance", "tensor(float)")]
        out = sess.run(["radiance"], {"inputs": x})[0]
        assert out.dtype == np.float32 and np.isfinite(out).all()
        outs.append(radiance_to_log(out.astype(np.float64)))
    assert np.mean(outs[0] > 1) > 0.9  # the comparison is not between clamped zeros
    return float(np.max(np.abs(outs[1] - outs[0])))


def _producers(model):
    return {o: n for n in model.graph.node for o in n.output}


# --------------------------------------------------------------------------- pure graph analysis

def _toy_graph(with_grid: bool = False):
    """x -Sub-> a -Conv-> b -Relu-> c [-Add(base)-> g; GridSample(c, g) -> c2] -Conv-> d -Exp-> e -Mul-> y."""
    f = TensorProto.FLOAT
    w = helper.make_tensor("w", f, [1, 1, 1, 1], [1.0])
    nodes = [helper.make_node("Sub", ["x", "m"], ["a"], name="sub"),
             helper.make_node("Conv", ["a", "w"], ["b"], name="conv1"),
             helper.make_node("Relu", ["b"], ["c"], name="relu")]
    last = "c"
    if with_grid:
        nodes += [helper.make_node("Conv", ["c", "w"], ["off"], name="conv_off"),
                  helper.make_node("Reshape", ["off", "shp"], ["off2"], name="reshape"),
                  helper.make_node("Add", ["off2", "base"], ["g"], name="add_base"),
                  helper.make_node("GridSample", ["c", "g"], ["c2"], name="warp")]
        last = "c2"
    nodes += [helper.make_node("Conv", [last, "w"], ["d"], name="conv2"),
              helper.make_node("Exp", ["d"], ["e"], name="exp"),
              helper.make_node("Mul", ["e", "m"], ["y"], name="scale")]
    return helper.make_graph(nodes, "toy", [helper.make_tensor_value_info("x", f, [1, 1, 4, 4])],
                             [helper.make_tensor_value_info("y", f, [1, 1, 4, 4])], initializer=[w])


def test_head_tail_and_grid_nodes_known_graph():
    head, tail = Q.head_and_tail(_toy_graph())
    assert head == ["sub"] and tail == ["exp", "scale"]
    kept = Q.fp32_nodes(_toy_graph(with_grid=True))
    assert kept == {"head": ["sub"], "tail": ["exp", "scale"], "ops": ["warp"], "grid": ["reshape", "add_base"]}
    assert Q.output_layers(_toy_graph(with_grid=True)) == ["conv2"]
    # conv_off reads conv1's features: only conv1 reads the normalized input
    assert Q.input_layers(_toy_graph(with_grid=True)) == ["conv1"] == Q.input_layers(_toy_graph())


def test_names_and_calibration_selection():
    assert model_filename("fp32") == "model.onnx" and model_filename("int8") == "model.int8.onnx"
    assert precision_path("/m/model.onnx", "fp16") == Path("/m/model.fp16.onnx")
    assert precision_path("/m/model.onnx", "fp32") == Path("/m/model.onnx")
    assert Q.record_path("/m/model.int8.onnx") == Path("/m/model.int8.json")
    assert Q.calibration_indices(10, 4).tolist() == [0, 3, 6, 9]
    assert Q.calibration_indices(3, 64).tolist() == [0, 1, 2]
    with pytest.raises(ValueError, match="int4"):
        model_filename("int4")
    with pytest.raises(ValueError, match="training split is empty"):
        Q.calibration_indices(0, 4)


def test_config_precision_key(tiny_config):
    tiny_config["infer"]["precision"] = "int8"
    validate_config(tiny_config)
    tiny_config["infer"]["precision"] = "int4"
    with pytest.raises(ConfigError, match=r"infer.precision.*'int4'"):
        validate_config(tiny_config)


def test_precision_rows_losses_and_ratios():
    m = {"fp32": {"psnr_log_db": 30.0, "psnr_radiance_db": 40.0, "ssim_log": 0.9, "brightest_1pct_error": -0.1},
         "int8": {"psnr_log_db": 29.8, "psnr_radiance_db": 40.1, "ssim_log": 0.89, "brightest_1pct_error": -0.12}}
    rows = P.precision_rows(m, {"fp32": 2.0, "int8": 0.5}, {"fp32": 400, "int8": 100}, megapixels=4.0)
    assert [r["precision"] for r in rows] == ["fp32", "int8"]
    assert rows[0]["psnr_log_loss_db"] == 0 and rows[0]["speed_ratio"] == 1 and rows[0]["sec_per_megapixel"] == 0.5
    assert rows[1]["psnr_log_loss_db"] == pytest.approx(0.2) and rows[1]["psnr_radiance_loss_db"] == pytest.approx(-0.1)
    assert rows[1]["speed_ratio"] == 4 and rows[1]["size_ratio"] == 0.25
    with pytest.raises(ValueError, match="no fp32 row"):
        P.precision_rows({"int8": m["int8"]}, {}, {}, 1.0)


def test_timing_batches_mosaic_known_answer():
    x = np.arange(5, dtype=np.float32)[:, None, None, None] * np.ones((1, 1, 2, 2), np.float32)  # patch i == i
    (batch,) = P.timing_batches(x, tile=4, batch_size=2)
    assert batch.shape == (2, 1, 4, 4)  # ceil(5 / 4) = 2 tiles of 2 x 2 patches
    assert batch[0, 0, ::2, ::2].tolist() == [[0, 1], [2, 3]] and batch[1, 0, ::2, ::2].tolist() == [[4, 0], [1, 2]]
    assert P.timing_batches(x, tile=6, batch_size=4, multiple=4)[0].shape == (4, 1, 4, 4)  # cropped to a multiple


# --------------------------------------------------------------------------- exported models

def test_fp16_unet(unet, tmp_path):
    zarr_path, fp32 = unet
    info = Q.convert_fp16(fp32, tmp_path / "model.fp16.onnx")
    model = onnx.load(str(tmp_path / "model.fp16.onnx"))
    dtypes = Q.node_dtypes(model)
    convs = [n.name for n in model.graph.node if n.op_type == "Conv"]
    assert convs and all(dtypes[c] == "float16" for c in convs)
    kept = Q.fp32_nodes(onnx.load(str(fp32)).graph)
    assert kept["head"] and kept["tail"]
    assert all(dtypes[n] in ("float32", "int64", "bool") for n in kept["head"] + kept["tail"])
    weights = {t.name: t.data_type for t in model.graph.initializer}
    assert sum(v == TensorProto.FLOAT16 for v in weights.values()) >= len(convs)
    assert info["sha256"] == Q.sha256_file(tmp_path / "model.fp16.onnx")
    assert json.loads((tmp_path / "model.fp16.json").read_text())["precision"] == "fp16"
    assert _z_diff(zarr_path, fp32, tmp_path / "model.fp16.onnx") <= TOL["fp16"]
    Q.write_fp16_emulation(fp32, tmp_path / "rounded.onnx")
    d = _z_diff(zarr_path, fp32, tmp_path / "rounded.onnx")
    assert 0 < d <= TOL["fp16-rounded"]  # the rounding acts, and stays within float16's precision
    assert not list(tmp_path.glob(".*part*"))


def test_int8_unet(unet, tmp_path):
    zarr_path, fp32 = unet
    info = Q.quantize_int8(fp32, tmp_path / "model.int8.onnx", zarr_path, n_tiles=10)
    n_train = PatchStore(zarr_path).indices("train").size
    assert info["calibration"]["n_tiles"] == min(10, n_train) and info["calibration"]["split"] == "train"
    model = onnx.load(str(tmp_path / "model.int8.onnx"))
    ops = [n.op_type for n in model.graph.node]
    assert "QuantizeLinear" in ops and "DequantizeLinear" in ops
    prod = _producers(model)
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    first, last = Q.input_layers(model.graph), Q.output_layers(model.graph)
    assert info["fp32_output_layers"] == last and len(last) == 1
    assert info["fp32_input_layers"] == first and len(first) >= 1 and not set(first) & set(last)
    kept = set(first) | set(last)
    assert len(convs) > len(kept)
    assert all(prod[c.input[1]].op_type == "DequantizeLinear" for c in convs if c.name not in kept)  # int8 weights
    assert all(c.input[1] not in prod for c in convs if c.name in kept)  # the float32 initializer itself
    # the raw input (NaN = nodata) and the radiance output are not quantized
    assert all(n.op_type != "QuantizeLinear" for n in model.graph.node if "inputs" in n.input)
    assert prod["radiance"].op_type != "DequantizeLinear"
    assert _z_diff(zarr_path, fp32, tmp_path / "model.int8.onnx") <= TOL["int8"]


@pytest.mark.slow
def test_mmntlsr_gridsample_stays_fp32(mmntlsr, tmp_path):
    """MMNTLSR with affine, deformable and deformation-field alignment, modulation and the local pattern
    (dynamo export: 1-3 minutes)."""
    zarr_path, fp32 = mmntlsr
    fp16_path, int8_path = tmp_path / "model.fp16.onnx", tmp_path / "model.int8.onnx"
    Q.convert_fp16(fp32, fp16_path)
    Q.quantize_int8(fp32, int8_path, zarr_path, n_tiles=8)
    src = onnx.load(str(fp32))
    n_grid = sum(n.op_type == "GridSample" for n in src.graph.node)
    assert n_grid >= 3
    fp16 = onnx.load(str(fp16_path))
    dtypes, prod = Q.node_dtypes(fp16), _producers(fp16)
    samplers = [n for n in fp16.graph.node if n.op_type == "GridSample"]
    assert len(samplers) == n_grid and all(dtypes[n.name] == "float32" for n in samplers)
    for n in samplers:  # the grid is computed in float32: no cast from float16 feeds it
        assert prod[n.input[1]].op_type != "Cast" or dict(
            (a.name, a.i) for a in prod[n.input[1]].attribute)["to"] == TensorProto.FLOAT
        assert dtypes[prod[n.input[1]].name] == "float32"
    assert any(dtypes[n.name] == "float16" for n in fp16.graph.node if n.op_type == "Conv")
    int8 = onnx.load(str(int8_path))
    prod8 = _producers(int8)
    samplers8 = [n for n in int8.graph.node if n.op_type == "GridSample"]
    assert len(samplers8) == n_grid  # not replaced by a quantized op
    for n in samplers8:  # the features may arrive dequantized; the sampling grid is never quantized
        assert prod8[n.input[1]].op_type not in ("DequantizeLinear", "QuantizeLinear"), n.name
    assert _z_diff(zarr_path, fp32, fp16_path) <= TOL["fp16"]
    assert _z_diff(zarr_path, fp32, int8_path) <= TOL["int8"]


def test_precision_table(unet, tmp_path):
    zarr_path, fp32 = unet
    path = P.evaluate_precisions(stage_config(), zarr_path, fp32, tmp_path / "precision", repeats=2, n_tiles=8)
    out = json.loads(path.read_text())
    rows = {r["precision"]: r for r in out["rows"]}
    assert list(rows) == ["fp32", "fp16", "int8", "fp16-rounded"]
    assert rows["fp32"]["psnr_log_loss_db"] == 0 and rows["fp32"]["speed_ratio"] == 1
    for p in ("fp16", "int8"):
        r = rows[p]
        assert r["psnr_log_loss_db"] == pytest.approx(rows["fp32"]["psnr_log_db"] - r["psnr_log_db"])
        assert r["sec_per_megapixel"] > 0 and r["speed_ratio"] == pytest.approx(
            rows["fp32"]["sec_per_megapixel"] / r["sec_per_megapixel"])
        assert abs(r["psnr_log_loss_db"]) <= 0.3  # the acceptance bound holds on this toy model too
        assert (tmp_path / "precision" / model_filename(p)).is_file()
    assert rows["fp16-rounded"]["sec_per_megapixel"] is None
    assert len(out["timing"]["seconds_per_round"]["fp32"]) == 2
    assert out["records"]["int8"]["calibration"]["n_tiles"] >= 1
    md = (tmp_path / "precision" / "precision.md").read_text()
    assert all(f"| {p} |" in md for p in rows)
