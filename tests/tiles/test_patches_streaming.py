"""build_training_set streams: bands of rows in, patches out as it goes, the same train.zarr as in memory."""

import numpy as np
import pytest
import rasterio
import zarr
from affine import Affine
from rasterio.windows import Window

from pandafine.core.channels import CHANNELS
from pandafine.core.grid import CHINA_ALBERS, Grid
from pandafine.core.raster_io import write_raster
from pandafine.tiles import patches as PT
from pandafine.tiles.cube import build_cube, open_cube
from pandafine.tiles.patches import SplitParams, build_training_set

P = 8
#: 84 x 72 px: not a multiple of the patch (a 4 px strip is never cut) nor of the cube chunk (16 px).
GRID = Grid(CHINA_ALBERS, Affine(125.0, 0, -1_000_000.0, 0, -125.0, 4_000_000.0), 84, 72, 4)


def _pieces(values: np.ndarray, rng) -> list[np.ndarray]:
    cuts = np.sort(rng.integers(0, values.size + 1, rng.integers(0, 12)))
    return np.split(values, cuts)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", [0, 1, 7, 8, 128, 129, 1000, 40_001])
def test_streamed_sum_is_numpys_pairwise_sum_to_the_bit(n, dtype):
    rng = np.random.default_rng(n)
    values = (rng.standard_normal(n) * 1e3 + 7.0).astype(dtype)
    for block in (128, 1000, 1 << 20):
        acc = PT.StreamedSum(n, dtype, block)
        for piece in _pieces(values, rng):
            acc.add(piece)
        total = acc.total()
        assert total.dtype == dtype and total.tobytes() == np.add.reduce(values).tobytes(), block


def test_streamed_sum_refuses_a_wrong_count():
    acc = PT.StreamedSum(3)
    acc.add(np.ones(2, np.float32))
    with pytest.raises(ValueError, match="2 values fed to a sum of 3"):
        acc.total()
    with pytest.raises(ValueError, match="5 values fed to a sum of 3"):
        acc.add(np.ones(3, np.float32))


def test_streamed_moments_equal_channel_moments_exactly():
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((300, 4, 8, 8)) * 30 + 100).astype(np.float32)
    x[rng.random(x.shape) < 0.2] = np.nan  # NaN ignored
    x[:, 1] = 63.0                         # constant
    x[:, 2] = np.nan                       # empty
    expect = PT.channel_moments(x)
    batches = np.split(x, [1, 2, 50, 51, 200])
    for block in (128, 4096, None):
        got = PT.streamed_channel_moments(lambda: iter(batches), dtype=np.float32, block=block)
        assert got == expect, block
    counts = np.isfinite(x).sum(axis=(0, 2, 3))
    assert PT.streamed_channel_moments(lambda: iter(batches), counts, block=128) == expect
    acc = PT.StreamedMoments(counts)
    acc.add_values(x)
    acc.means()
    with pytest.raises(RuntimeError, match="add_values after means"):
        acc.add_values(x)


def test_band_height_is_chunk_rows_of_whole_patches_within_the_budget():
    assert PT.band_height(256, 32, row_bytes=1000, band_bytes=10**9) == 256
    assert PT.band_height(100, 32, row_bytes=1000, band_bytes=10**9) == 96     # whole patch rows
    assert PT.band_height(256, 32, row_bytes=1000, band_bytes=64_000) == 64   # the budget caps it
    assert PT.band_height(256, 32, row_bytes=1000, band_bytes=1) == 32        # at least one row of patches
    assert PT.band_height(16, 32, row_bytes=1000, band_bytes=10**9) == 32


def _region(tmp_path, year: int):
    """A cube (chunk 16) and a target on GRID with patches rejected for their target or their PANDA."""
    rng = np.random.default_rng(year)
    panda = (rng.random((2,) + GRID.shape, dtype=np.float32) * 60).astype(np.float32)
    panda[:, 8:16, 16:24] = np.nan                 # patch (8, 16): no PANDA -> rejected
    panda[0, 24:32, 0:4] = np.nan                  # half NaN -> kept
    landsat = rng.random((8,) + GRID.shape, dtype=np.float32)
    landsat[:, :, 40:44] = np.nan
    dem = (rng.random((1,) + GRID.shape, dtype=np.float32) * 3000).astype(np.float32)
    layers = [write_raster(tmp_path / f"{name}{year}.tif", a, GRID, nodata=np.nan)
              for name, a in (("p", panda), ("l", landsat), ("d", dem))]
    cube = build_cube(*layers, GRID, tmp_path / f"{year}.zarr", year=year, chunk=16)
    t = (rng.random(GRID.shape, dtype=np.float32) * 50).astype(np.float32)
    t[32:48, :] = np.nan                           # one cube band without any target: its cube is not needed
    t[0:5, 0:8] = np.nan                           # 5/8 invalid -> rejected
    t[0:3, 8:16] = np.nan                          # 3/8 invalid -> kept
    t[56:64, 8 * (year % 5):8 * (year % 5) + 8] = np.nan
    target = write_raster(tmp_path / f"t{year}.tif", t, GRID, nodata=np.nan)
    return cube, target


def _in_memory(cubes, targets, params: SplitParams, min_valid: float = 0.5):
    """The reference: every kept patch read one by one and stacked (the former implementation)."""
    inputs, target, years, rows, cols = [], [], [], [], []
    for year in sorted(cubes):
        cube = open_cube(cubes[year]).inputs
        with rasterio.open(targets[year]) as tgt:
            for r, c in PT.patch_origins(GRID.height, GRID.width, params.patch):
                t = tgt.read(1, window=Window(c, r, params.patch, params.patch)).astype(np.float32)
                if np.isfinite(t).mean() < min_valid:
                    continue
                x = np.asarray(cube[:, r:r + params.patch, c:c + params.patch])
                if not np.isfinite(x[0]).any():
                    continue
                inputs.append(x)
                target.append(t[None])
                years.append(year)
                rows.append(r)
                cols.append(c)
    split = PT.assign_splits(list(zip(rows, cols)), params)
    x = np.stack(inputs)
    mean, std = PT.channel_stats(x[split == 0])
    arrays = {"inputs": x, "target": np.stack(target), "split": split, "year": np.array(years, np.int32),
              "row": np.array(rows, np.int32), "col": np.array(cols, np.int32)}
    return arrays, mean, std


@pytest.mark.parametrize("band_bytes", [1, 2 * len(CHANNELS) * GRID.width * 4 * 16, PT.BAND_BYTES],
                         ids=["one-patch-row", "two-chunk-rows", "default"])
def test_streamed_training_set_equals_the_in_memory_reference(tmp_path, monkeypatch, band_bytes):
    monkeypatch.setattr(PT, "SUM_BLOCK", 128)  # a deep summation tree even for this small train split
    cubes, targets = {}, {}
    for year in (2018, 2019, 2020):
        cubes[year], targets[year] = _region(tmp_path, year)
    params = SplitParams(P, 2, (0.6, 0.2, 0.2), seed=5)
    out = build_training_set(cubes, targets, tmp_path / "train.zarr", params, band_bytes=band_bytes)
    expect, mean, std = _in_memory(cubes, targets, params)
    root = zarr.open_group(str(out), mode="r")
    n_positions = (GRID.height // P) * (GRID.width // P)
    # rejected in every year: 2 (target, PANDA) + 20 (no target rows) + 1 (a NaN patch); some kept in all
    assert len(expect["split"]) == 3 * (n_positions - 23)
    assert set(expect["split"].tolist()) == {0, 1, 2}
    assert sorted(root.array_keys()) == sorted(expect)
    for name, arr in expect.items():
        got = root[name][:]
        assert got.dtype == arr.dtype and got.shape == arr.shape, name
        np.testing.assert_array_equal(got, arr, err_msg=name)
    assert root["inputs"].chunks == (1, len(CHANNELS), P, P) and root["target"].chunks == (1, 1, P, P)
    attrs = dict(root.attrs)
    assert attrs["normalization"] == {"mean": mean, "std": std}  # exactly, not approximately
    assert attrs["n_patches"] == len(expect["split"])
    assert attrs["counts"] == {s: int((expect["split"] == i).sum()) for i, s in enumerate(("train", "val", "test"))}
    assert attrs["channels"] == list(CHANNELS) and attrs["patch"] == P


def test_no_patch_kept_names_the_targets_and_writes_nothing(tmp_path):
    cube, target = _region(tmp_path, 2018)
    with pytest.raises(ValueError, match="t2018.tif"):
        build_training_set({2018: cube}, {2018: target}, tmp_path / "train.zarr", SplitParams(P, 1, (0.6, 0.2, 0.2), 1),
                           min_valid=1.01)
    assert not (tmp_path / "train.zarr").exists()
    assert not list(tmp_path.glob(".train.*"))


@pytest.mark.parametrize("halo", [4, 8])
@pytest.mark.parametrize("band_bytes", [1, PT.BAND_BYTES], ids=["one-patch-row", "default"])
def test_halo_patches_are_the_patches_with_their_surroundings_and_no_target_there(tmp_path, band_bytes, halo):
    from pandafine.tiles.store import PatchStore

    cubes, targets = {}, {}
    for year in (2018, 2019):
        cubes[year], targets[year] = _region(tmp_path, year)
    plain = build_training_set(cubes, targets, tmp_path / "plain.zarr", SplitParams(P, 2, (0.6, 0.2, 0.2), seed=5))
    params = SplitParams(P, 2, (0.6, 0.2, 0.2), seed=5, halo=halo)
    wide = build_training_set(cubes, targets, tmp_path / "wide.zarr", params, band_bytes=band_bytes)
    a, b = zarr.open_group(str(plain), mode="r"), zarr.open_group(str(wide), mode="r")
    Q = P + 2 * halo
    assert b["inputs"].shape[2:] == (Q, Q) and b["target"].shape[2:] == (Q, Q)
    for name in ("split", "year", "row", "col"):
        np.testing.assert_array_equal(a[name][:], b[name][:], err_msg=name)
    # the same normalization: the statistics are the patches', not their halos'
    assert dict(b.attrs)["normalization"] == dict(a.attrs)["normalization"]
    assert dict(b.attrs)["patch"] == P and dict(b.attrs)["halo"] == halo
    centre = np.s_[..., halo:halo + P, halo:halo + P]
    np.testing.assert_array_equal(b["inputs"][:][centre], a["inputs"][:])
    t = b["target"][:]
    np.testing.assert_array_equal(t[centre], a["target"][:])
    ring = np.ones((Q, Q), bool)
    ring[halo:halo + P, halo:halo + P] = False
    assert np.isnan(t[..., ring]).all()                     # never supervised in the halo
    # the halo is the cube around the patch, reflected beyond the grid's edge (as inference pads)
    padded = {y: np.pad(np.asarray(open_cube(cubes[y]).inputs[:]), ((0, 0), (halo, halo), (halo, halo)),
                        mode="reflect") for y in cubes}
    x = b["inputs"][:]
    rows, cols, years = b["row"][:], b["col"][:], b["year"][:]
    edge = 0
    for k in range(len(x)):
        r, c = int(rows[k]), int(cols[k])
        expect = padded[int(years[k])][:, r:r + Q, c:c + Q]
        np.testing.assert_array_equal(x[k], expect, err_msg=f"patch {k} at ({r}, {c})")
        edge += r == 0 or c == 0 or r + P + halo > GRID.height or c + P + halo > GRID.width
    assert edge  # patches at the grid's edge were among those checked
    store = PatchStore(wide)
    assert (store.patch, store.halo, store.core) == (Q, halo, P)


def test_a_halo_too_wide_for_the_grid_is_refused(tmp_path):
    cube, target = _region(tmp_path, 2018)
    with pytest.raises(ValueError, match="tiles.halo=96 px"):
        build_training_set({2018: cube}, {2018: target}, tmp_path / "train.zarr",
                           SplitParams(P, 1, (0.6, 0.2, 0.2), 1, halo=96))
    assert not (tmp_path / "train.zarr").exists()


@pytest.mark.parametrize("halo", [-1, 16, 20])
def test_a_store_whose_halo_leaves_no_patch_is_refused(tmp_path, halo):
    from fake_tiles import write_fake_train_zarr
    from pandafine.tiles.store import PatchStore

    path = write_fake_train_zarr(tmp_path / "train.zarr", patch=16, size=32)  # 16 px arrays
    zarr.open_group(str(path), mode="r+").attrs["halo"] = halo
    with pytest.raises(ValueError, match=f"train.zarr: attribute 'halo' is {halo}; expected 0 <= halo < patch / 2"):
        PatchStore(path)
