"""Tiled inference: providers, constancy, seams, borders, masking, streaming, COG, tile vs receptive field."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import pandafine.inference.blending as blending
from fake_cubes import identity_model, infer_test_config, model_io, save_model, smooth_model, with_metadata, write_cube
from pandafine.inference.blending import TileLayout
from pandafine.inference.infer import (
    InferParams,
    check_tile_fits_model,
    infer_array,
    infer_year,
    open_cube,
    prefetch,
)
from pandafine.inference.providers import ProviderWarning, make_session, select_providers
from pandafine.inference.tiling import iter_tile_batches

# --------------------------------------------------------------------------- fixtures


@pytest.fixture
def cfg():
    return infer_test_config()


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("models")
    return {"identity": identity_model(d / "identity.onnx"), "smooth": smooth_model(d / "smooth.onnx")}


@pytest.fixture(scope="module")
def sessions(models):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {k: make_session(p, ["CPUExecutionProvider"], 1) for k, p in models.items()}


def smooth_field(shape, seed=0, sigma=2.0):
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    return np.stack([gaussian_filter(rng.normal(size=shape[1:]), sigma) * 3 + 1 for _ in range(shape[0])]
                    ).astype(np.float32)


def params(tile=64, overlap=16, kind="hann", batch=4):
    return InferParams(tile, overlap, kind, batch, ("CPUExecutionProvider",))


# --------------------------------------------------------------------------- providers

@pytest.fixture
def no_gpu(monkeypatch):
    import pandafine.inference.providers as prov

    monkeypatch.setattr(prov, "gpu_available", lambda: False)


def test_cuda_request_falls_back_to_cpu_loudly(no_gpu):
    with pytest.warns(ProviderWarning, match="CUDAExecutionProvider"):
        assert select_providers(["CUDAExecutionProvider"]) == ["CPUExecutionProvider"]
    with pytest.warns(ProviderWarning), pytest.raises(RuntimeError, match="GPU execution provider is required"):
        select_providers(["CUDAExecutionProvider", "CPUExecutionProvider"], require_gpu=True)
    assert select_providers(["CPUExecutionProvider", "CPUExecutionProvider"]) == ["CPUExecutionProvider"]
    with pytest.raises(ValueError, match="unknown onnxruntime execution provider"):
        select_providers(["WarpDriveExecutionProvider"])


def test_make_session_reports_providers_not_in_use(models, no_gpu, monkeypatch):
    import pandafine.inference.providers as prov

    with pytest.warns(ProviderWarning) as record:
        s = make_session(models["identity"], ["CUDAExecutionProvider", "CPUExecutionProvider"], 1)
    assert s.get_providers() == ["CPUExecutionProvider"]
    assert any("requested ['CUDAExecutionProvider', 'CPUExecutionProvider'], session uses ['CPUExecutionProvider']"
               in str(w.message) for w in record)
    with pytest.warns(ProviderWarning), pytest.raises(RuntimeError):
        make_session(models["identity"], ["CUDAExecutionProvider"], 1, require_gpu=True)
    # a silent fallback inside onnxruntime (provider passed but not activated) is caught too
    monkeypatch.setattr(prov, "select_providers", lambda req, require_gpu=False: list(req))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # onnxruntime's own notice
        with pytest.warns(ProviderWarning, match="NOT in use"):
            make_session(models["identity"], ["CUDAExecutionProvider", "CPUExecutionProvider"], 1)
    with pytest.raises(FileNotFoundError, match="missing.onnx"):
        make_session(models["identity"].parent / "missing.onnx", ["CPUExecutionProvider"], 1)


# --------------------------------------------------------------------------- blending through the model

@pytest.mark.parametrize("kind", blending.WINDOW_KINDS)
@pytest.mark.parametrize("overlap", [0, 12, 24])
def test_constant_image_stays_exactly_constant(sessions, kind, overlap):
    data = np.full((3, 104, 136), 7.25, np.float32)
    data[1:] = np.random.default_rng(1).normal(size=(2, 104, 136))  # other channels vary
    out = infer_array(sessions["identity"], data, params(48, overlap, kind))
    assert out.shape == (104, 136)
    assert np.all(out == np.float32(7.25))


def test_region_smaller_than_tile_is_padded(sessions):
    data = smooth_field((3, 40, 50))
    out = infer_array(sessions["identity"], data, params(64, 16))
    np.testing.assert_array_equal(out, data[0])


def _seam_stats(out, layout):
    """Mean |neighbour difference| across tile borders and over all neighbour pairs."""
    dx = np.abs(np.diff(out, axis=1))
    dy = np.abs(np.diff(out, axis=0))
    edges_c = sorted({c for c in layout.cols[1:]} | {c + layout.tile for c in layout.cols[:-1]})
    edges_r = sorted({r for r in layout.rows[1:]} | {r + layout.tile for r in layout.rows[:-1]})
    across = np.concatenate([dx[:, [c - 1 for c in edges_c]].ravel(), dy[[r - 1 for r in edges_r]].ravel()])
    inside = np.concatenate([dx.ravel(), dy.ravel()])
    return across.mean(), inside.mean()


@pytest.mark.parametrize("kind", ["hann", "gaussian", "pyramid"])
@pytest.mark.parametrize("overlap", [16, 32])
def test_no_seams_tiled_equals_one_pass(sessions, kind, overlap):
    data = smooth_field((3, 200, 232))
    sess = sessions["smooth"]
    one_pass = sess.run(["radiance"], {"inputs": data[None]})[0][0, 0]
    tiled = infer_array(sess, data, params(64, overlap, kind))
    rmse = np.sqrt(np.mean((tiled - one_pass) ** 2))
    # the test model zero-pads raw inputs of mean 1, so tile edges are strongly distorted;
    # the pyramid's linear ramps give those edges more weight (measured: 1.5 % at 25 %
    # overlap, 1.0 % at 50 %) than hann (0.35 %, 0.19 %) or gaussian (0.21 %, 0.03 %)
    bound = 0.02 if kind == "pyramid" else 0.01
    assert rmse <= bound * np.sqrt(np.mean(one_pass ** 2))
    across, inside = _seam_stats(tiled, TileLayout(200, 232, 64, overlap, kind))
    assert across <= 1.1 * inside
    # border pixels get full weight: at the four corners the tiled output is the model's output there
    for r, c in [(0, 0), (0, -1), (-1, 0), (-1, -1)]:
        assert tiled[r, c] == pytest.approx(one_pass[r, c], rel=1e-5)


def test_seam_metric_detects_unblended_tiles(sessions):
    """Sanity check of the seam test: abutting tiles without overlap do show seams."""
    data = smooth_field((3, 200, 232))
    tiled = infer_array(sessions["smooth"], data, params(64, 0, "constant"))
    across, inside = _seam_stats(tiled, TileLayout(200, 232, 64, 0.0, "constant"))
    assert across > 1.1 * inside


# --------------------------------------------------------------------------- reading and prefetching

def test_tile_batches_read_the_right_pixels():
    data = np.arange(2 * 70 * 90, dtype=np.float32).reshape(2, 70, 90)
    lay = TileLayout(70, 90, 32, 8)
    seen = []
    for row, cols, batch in iter_tile_batches(data, lay, 3):
        assert batch.shape == (len(cols), 2, 32, 32) and len(cols) <= 3
        for k, col in enumerate(cols):
            np.testing.assert_array_equal(batch[k], data[:, row:row + 32, col:col + 32])
            seen.append((row, col))
    assert seen == [(r, c) for r in lay.rows for c in lay.cols]


def test_prefetch_keeps_order_and_forwards_errors():
    assert list(prefetch(iter(range(50)), depth=2)) == list(range(50))

    def broken():
        yield 1
        raise OSError("disk on fire")

    it = prefetch(broken(), depth=2)
    assert next(it) == 1
    with pytest.raises(OSError, match="disk on fire"):
        next(it)


class _SlowWriter:
    def __init__(self, delay=0.0, fail_at=None):
        import threading

        self.calls, self.closed, self.delay, self.fail_at = [], False, delay, fail_at
        self.threads = set()
        self._threading = threading

    def write(self, first_row, block):
        import time

        self.threads.add(self._threading.current_thread().name)
        if self.fail_at is not None and first_row == self.fail_at:
            raise OSError(f"disk full at row {first_row}")
        time.sleep(self.delay)
        self.calls.append((first_row, block.copy()))

    def close(self):
        self.closed = True


def test_write_behind_keeps_order_overlaps_and_forwards_errors():
    import time

    from pandafine.inference.infer import WriteBehind

    inner = _SlowWriter(delay=0.05)
    blocks = [(8 * i, np.full((8, 4), i, np.float32)) for i in range(6)]
    t0 = time.perf_counter()
    with WriteBehind(inner, depth=8) as w:
        for row, block in blocks:
            w.write(row, block)
        queued = time.perf_counter() - t0
    assert queued < 0.05 * len(blocks) / 2  # the caller did not wait for the slow writes
    assert [r for r, _ in inner.calls] == [r for r, _ in blocks] and inner.closed
    assert all(np.array_equal(a, b) for (_, a), (_, b) in zip(inner.calls, blocks))
    assert inner.threads == {"pandafine-write-behind"}
    # a writer error surfaces in the caller, later rows are not written, the writer is not closed
    inner = _SlowWriter(fail_at=8)
    w = WriteBehind(inner, depth=1)
    with pytest.raises(OSError, match="disk full at row 8"):
        for row, block in blocks:
            w.write(row, block)
            time.sleep(0.01)
        w.close()
    w.abort()  # ends the thread
    assert [r for r, _ in inner.calls] == [0] and not inner.closed
    # leaving the block by an exception aborts: queued rows dropped, no close
    inner = _SlowWriter(delay=0.05)
    with pytest.raises(RuntimeError, match="model failed"):
        with WriteBehind(inner, depth=8) as w:
            for row, block in blocks:
                w.write(row, block)
            raise RuntimeError("model failed")
    assert not inner.closed and len(inner.calls) < len(blocks)


# --------------------------------------------------------------------------- end to end

def test_infer_year_writes_masked_cog(tmp_path, cfg, models, sessions):
    import rasterio

    from pandafine.product.cog import validate_cog

    data = smooth_field((3, 200, 232))
    data[0, 10:30, 40:90] = np.nan          # PANDA nodata -> product nodata
    data[1, 100:120, 100:150] = np.nan      # another channel missing: the model copes (NaN -> 0)
    cube = write_cube(tmp_path / "2018.zarr", data)
    out = tmp_path / "panda_fine" / "PANDA-FINE_2018.tif"
    cfg["infer"]["window"] = "gaussian"
    assert infer_year(cfg, cube, models["smooth"], out, progress=False) == out
    assert sorted(p.name for p in out.parent.iterdir()) == ["PANDA-FINE_2018.tif"]  # no temporary left
    ok, errors, _ = validate_cog(out)
    assert ok, errors
    expected = infer_array(sessions["smooth"], data, params(64, 16, "gaussian"))
    with rasterio.open(out) as src:
        arr = src.read(1)
        grid = open_cube(cube).grid
        assert src.crs == rasterio.crs.CRS.from_user_input(grid.crs)
        assert src.transform.almost_equals(grid.transform)
        assert np.isnan(src.nodata) and src.dtypes[0] == "float32"
        assert src.tags()["year"] == "2018" and src.tags()["units"] == "W m-2 sr-1 um-1"
    assert np.all(np.isnan(arr[10:30, 40:90]))
    valid = ~np.isnan(data[0])
    assert np.all(np.isfinite(arr[valid]))
    np.testing.assert_allclose(arr[valid], expected[valid], rtol=1e-6)


def test_infer_year_constant_identity_file(tmp_path, cfg, models):
    import rasterio

    data = np.full((3, 96, 120), 2.5, np.float32)
    cube = write_cube(tmp_path / "2001.zarr", data, year=2001)
    out = tmp_path / "PANDA-FINE_2001.tif"
    cfg["infer"].update(window="pyramid", overlap=32)
    infer_year(cfg, cube, models["identity"], out, year=2001, progress=False)
    with rasterio.open(out) as src:
        assert np.all(src.read(1) == np.float32(2.5))
    with pytest.raises(ValueError, match="cube is for year 2001, but year 2002"):
        infer_year(cfg, cube, models["identity"], tmp_path / "x.tif", year=2002, progress=False)


def test_infer_year_require_gpu_fails_without_gpu(tmp_path, cfg, models, no_gpu):
    cube = write_cube(tmp_path / "2018.zarr", smooth_field((3, 64, 64)))
    cfg["infer"]["providers"] = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    out = tmp_path / "PANDA-FINE_2018.tif"
    with pytest.warns(ProviderWarning), pytest.raises(RuntimeError, match="GPU"):
        infer_year(cfg, cube, models["identity"], out, progress=False, require_gpu=True)
    assert not out.exists()
    with pytest.warns(ProviderWarning, match="CUDAExecutionProvider"):
        infer_year(cfg, cube, models["identity"], out, progress=False)  # falls back to the CPU, loudly
    assert out.exists()


def test_failed_job_leaves_no_output(tmp_path, cfg, models, monkeypatch):
    from onnx import helper

    data = smooth_field((3, 64, 64))
    cube = write_cube(tmp_path / "c.zarr", data)
    # a model whose output is not called 'radiance' is rejected before anything is written
    x, _ = model_io(3)
    bad = helper.make_graph([helper.make_node("Identity", ["inputs"], ["logits"])], "bad", [x],
                            [helper.make_tensor_value_info("logits", 1, ["b", 3, "h", "w"])])
    bad_path = save_model(helper.make_model(bad, opset_imports=[helper.make_opsetid("", 18)], ir_version=10), tmp_path / "bad.onnx")
    out = tmp_path / "out" / "PANDA-FINE_2018.tif"
    with pytest.raises(ValueError, match="output 'radiance' not found"):
        infer_year(cfg, cube, bad_path, out, progress=False)
    assert not out.exists()
    # a failure in the middle of the run (reading the cube) leaves nothing either
    import pandafine.inference.infer as inf

    def failing_batches(*args, **kwargs):
        yield from list(iter_tile_batches(*args, **kwargs))[:2]
        raise OSError("cube chunk unreadable")

    monkeypatch.setattr(inf, "iter_tile_batches", failing_batches)
    with pytest.raises(OSError, match="cube chunk unreadable"):
        infer_year(cfg, cube, models["identity"], out, progress=False)
    assert not out.exists()
    assert list(out.parent.iterdir()) == []


def test_infer_year_refuses_a_tile_smaller_than_the_receptive_field(tmp_path, cfg, models, caplog):
    model = with_metadata(models["smooth"], tmp_path / "m.onnx", receptive_field_px=41, input_multiple=8)
    cube = write_cube(tmp_path / "2018.zarr", smooth_field((3, 96, 96)))
    out = tmp_path / "out" / "PANDA-FINE_2018.tif"
    cfg["infer"].update(tile=32, overlap=8)  # e.g. overridden after the export checked the config's tile
    with pytest.raises(ValueError, match=r"key 'infer.tile': value 32 is smaller than the receptive field of "
                                         r".*m\.onnx, 41 px .*infer\.tile >= 48 .*pandafine\.receptive_field_px"):
        infer_year(cfg, cube, model, out, progress=False)
    assert not out.exists()
    cfg["infer"].update(tile=64, overlap=48)  # a tile holding the field, 48 px shared >= 2 x radius 20: quiet
    with caplog.at_level("WARNING", logger="pandafine.inference.infer"):
        assert infer_year(cfg, cube, model, out, progress=False) == out
    assert "receptive" not in caplog.text


def test_infer_year_warns_on_a_model_without_receptive_field_or_a_narrow_overlap(tmp_path, cfg, models, caplog):
    cube = write_cube(tmp_path / "2018.zarr", smooth_field((3, 64, 64)))
    cfg["infer"].update(tile=32, overlap=8)
    with caplog.at_level("WARNING", logger="pandafine.inference.infer"):
        infer_year(cfg, cube, models["smooth"], tmp_path / "a.tif", progress=False)  # exported before the key
    assert "no receptive field in the model's metadata" in caplog.text and "infer.tile 32 is not checked" in caplog.text
    caplog.clear()
    model = with_metadata(models["smooth"], tmp_path / "m.onnx", receptive_field_px=21)
    with caplog.at_level("WARNING", logger="pandafine.inference.infer"):
        infer_year(cfg, cube, model, tmp_path / "b.tif", progress=False)  # 32 >= 21, but 8 px shared < 20
    assert "infer.overlap 8 px" in caplog.text and "receptive radius 10 px" in caplog.text


def test_check_tile_fits_model_reads_the_metadata():
    p = params(tile=64, overlap=32)
    assert check_tile_fits_model({"pandafine.receptive_field_px": "63"}, p) == 63
    assert check_tile_fits_model({}, p) is None
    with pytest.raises(ValueError, match=r"infer\.tile >= 80 \(a multiple of 16\)"):
        check_tile_fits_model({"pandafine.receptive_field_px": "65", "pandafine.input_multiple": "16"}, p)
    with pytest.raises(ValueError, match="is not a number of pixels"):
        check_tile_fits_model({"pandafine.receptive_field_px": "wide"}, p, source="m.onnx")


def test_infer_year_streams_in_bounded_bands(tmp_path, cfg, models, monkeypatch):
    """1024 x 1024 region, 128 px tiles: the accumulator holds one tile row, not the region."""
    import rasterio

    import pandafine.inference.infer as inf

    buffers, blocks = [], []

    class Recording(blending.BlendAccumulator):
        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            buffers.append(self)

        def flush(self, upto):
            res = super().flush(upto)
            if res is not None:
                blocks.append(res[1].shape[0])
            return res

    monkeypatch.setattr(blending, "BlendAccumulator", Recording)
    rng = np.random.default_rng(3)
    data = rng.uniform(0, 5, size=(3, 1024, 1024)).astype(np.float32)
    cube = write_cube(tmp_path / "big.zarr", data, chunk=256)
    cfg["infer"].update(tile=128, overlap=32, batch_size=8)
    cfg["product"]["blocksize"] = 512
    out = tmp_path / "PANDA-FINE_2018.tif"
    infer_year(cfg, cube, models["identity"], out, progress=False)
    assert len(buffers) == 1
    assert buffers[0].buffer_rows == 128 and buffers[0]._sum.shape == (128, 1024)
    assert max(blocks) <= 128 and sum(blocks) == 1024 and len(blocks) == len(inf.TileLayout(1024, 1024, 128, 32).rows)
    with rasterio.open(out) as src:
        assert src.block_shapes[0] == (512, 512)
        assert src.overviews(1) == [2, 4]
        np.testing.assert_array_equal(src.read(1), data[0])
