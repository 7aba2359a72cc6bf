"""IO binding (pandafine.inference.ort_run): the bound path gives what ``session.run`` gives, and is used on GPUs only.

onnxruntime supports IO binding on the CPU device too, so the bound code path
(device buffers reused across batches, outputs copied back) runs here without a GPU.
"""

from __future__ import annotations

import numpy as np
import pytest
import yaml

import pandafine.inference.ort_run as ort_run
from fake_cubes import CHANNELS, smooth_model, write_cube
from pandafine.inference.infer import InferParams, infer_array, infer_year
from pandafine.inference.ort_run import BoundSession, bind_io, binding_device
from pandafine.inference.providers import make_session
from repo_paths import REPO


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    path = smooth_model(tmp_path_factory.mktemp("iob") / "smooth.onnx", n_channels=len(CHANNELS))
    return make_session(path, ["CPUExecutionProvider"], 1)


def batches(seed: int = 0):
    """Batches of changing shapes and contents, with NaN (nodata) pixels."""
    rng = np.random.default_rng(seed)
    for shape in ((4, 3, 32, 32), (4, 3, 32, 32), (2, 3, 32, 32), (4, 3, 32, 32), (1, 3, 16, 24)):
        x = rng.uniform(0, 5, size=shape).astype(np.float32)
        x[:, 0, :3, :5] = np.nan
        yield x


def test_bound_run_equals_plain_run(session):
    bound = BoundSession(session, "cpu")
    for x in batches():
        ref = session.run(["radiance"], {"inputs": x})[0]
        got = bound.run(["radiance"], {"inputs": x})
        assert len(got) == 1 and got[0].shape == ref.shape == (x.shape[0], 1) + x.shape[2:]
        np.testing.assert_array_equal(got[0], ref)
    # the input buffer is refilled in place, not re-read from the first batch
    x = next(batches(seed=1))
    np.testing.assert_array_equal(bound.run(None, {"inputs": x})[0], session.run(None, {"inputs": x})[0])
    assert [o.name for o in bound.get_outputs()] == [o.name for o in session.get_outputs()]


def test_tiled_inference_through_the_bound_path_is_unchanged(session):
    rng = np.random.default_rng(3)
    data = rng.uniform(0, 5, size=(3, 100, 70)).astype(np.float32)
    params = InferParams(32, 8, "hann", 3, ("CPUExecutionProvider",))
    np.testing.assert_array_equal(infer_array(BoundSession(session, "cpu"), data, params),
                                  infer_array(session, data, params))


class _FakeSession:
    def __init__(self, providers):
        self.providers = providers

    def get_providers(self):
        return self.providers

    def io_binding(self):
        return object()


@pytest.mark.parametrize("providers, device", [
    (["CPUExecutionProvider"], None),
    (["CUDAExecutionProvider", "CPUExecutionProvider"], "cuda"),
    (["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"], "cuda"),
])
def test_binding_only_on_cuda_and_tensorrt(providers, device):
    fake = _FakeSession(providers)
    assert binding_device(fake) == device
    wrapped = bind_io(fake)
    if device is None:
        assert wrapped is fake  # the plain run on the CPU
    else:
        assert isinstance(wrapped, BoundSession) and wrapped.device == device and wrapped.session is fake


def test_infer_year_uses_the_bound_path_when_bound(tmp_path, session, monkeypatch):
    """infer_year goes through bind_io: forcing binding on the CPU device gives the same COG pixels."""
    import rasterio

    cfg = yaml.safe_load((REPO / "config.yaml").read_text())
    cfg["infer"].update(tile=32, overlap=8, window="hann", batch_size=3, providers=["CPUExecutionProvider"])
    model = smooth_model(tmp_path / "smooth.onnx", n_channels=len(CHANNELS))
    data = np.random.default_rng(5).uniform(0, 5, size=(3, 90, 80)).astype(np.float32)
    data[0, 10:20, 10:30] = np.nan
    cube = write_cube(tmp_path / "2018.zarr", data, chunk=32)

    plain = infer_year(cfg, cube, model, tmp_path / "plain" / "PANDA-FINE_2018.tif", progress=False)
    made = []
    real_bound = ort_run.BoundSession

    def recording(sess, device="cuda", device_id=0):
        made.append(device)
        return real_bound(sess, "cpu", device_id)

    monkeypatch.setattr(ort_run, "binding_device", lambda sess: "cpu")
    monkeypatch.setattr(ort_run, "BoundSession", recording)
    bound = infer_year(cfg, cube, model, tmp_path / "bound" / "PANDA-FINE_2018.tif", progress=False)
    assert made == ["cpu"]
    with rasterio.open(plain) as a, rasterio.open(bound) as b:
        np.testing.assert_array_equal(a.read(1), b.read(1))
        assert np.isnan(b.read(1)[10:20, 10:30]).all()
