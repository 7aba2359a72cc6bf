import numpy as np
import pytest
import zarr

from pandafine.core.channels import CHANNELS
from pandafine.core.raster_io import write_raster
from pandafine.tiles.cube import build_cube, open_cube
from pandafine.tiles.patches import SplitParams, assign_splits, build_training_set, patch_origins


def _layers(tmp_path, grid, seed=0):
    rng = np.random.default_rng(seed)
    panda = rng.random((2,) + grid.shape, dtype=np.float32)
    panda[0, :, :3] = np.nan
    landsat = rng.random((8,) + grid.shape, dtype=np.float32)
    dem = rng.random((1,) + grid.shape, dtype=np.float32)
    paths = (write_raster(tmp_path / f"p{seed}.tif", panda, grid, nodata=np.nan),
             write_raster(tmp_path / f"l{seed}.tif", landsat, grid, nodata=np.nan),
             write_raster(tmp_path / f"d{seed}.tif", dem, grid, nodata=np.nan))
    return paths, np.concatenate([panda, landsat, dem])


def test_blocked_split_never_mixes_a_block():
    origins = patch_origins(256, 256, 16)
    params = SplitParams(16, 4, (0.6, 0.2, 0.2), seed=3)
    split = assign_splits(origins, params)
    assert set(split) == {0, 1, 2}
    by_block = {}
    for (r, c), s in zip(origins, split):
        by_block.setdefault((r // 64, c // 64), set()).add(int(s))
    assert all(len(v) == 1 for v in by_block.values())
    # seeded: same seed same split, other seed other split
    assert (assign_splits(origins, params) == split).all()
    assert not (assign_splits(origins, SplitParams(16, 4, (0.6, 0.2, 0.2), seed=4)) == split).all()
    counts = np.bincount(split, minlength=3) / len(split)
    assert counts == pytest.approx([0.625, 0.1875, 0.1875])


@pytest.mark.parametrize("window", [16, 40, 1024])
def test_cube_round_trip(tmp_path, small_grid, window):
    """Any window (rounded down to whole 16 px chunks: 16, 32, the grid) writes the same cube."""
    paths, expect = _layers(tmp_path, small_grid)
    out = build_cube(*paths, small_grid, tmp_path / "2018.zarr", year=2018, chunk=16, window=window)
    cube = open_cube(out)
    assert cube.grid.same_as(small_grid) and cube.year == 2018 and cube.channels == CHANNELS
    assert cube.inputs.chunks == (len(CHANNELS), 16, 16)
    np.testing.assert_array_equal(np.asarray(cube.inputs[:]), expect)


def test_corrupt_cube_names_the_file(tmp_path):
    bad = tmp_path / "1999.zarr"
    bad.mkdir()
    (bad / "zarr.json").write_text("{not json")
    with pytest.raises(ValueError, match="1999.zarr"):
        open_cube(bad)


def test_training_set_patches_targets_and_train_only_stats(tmp_path, small_grid):
    cubes, targets = {}, {}
    for year in (2018, 2019):
        paths, _ = _layers(tmp_path, small_grid, seed=year)
        cubes[year] = build_cube(*paths, small_grid, tmp_path / f"{year}.zarr", year=year, chunk=16)
        t = np.full(small_grid.shape, 1e-4, np.float32)
        t[:16, :16] = np.nan  # one patch position has no target: dropped
        targets[year] = write_raster(tmp_path / f"t{year}.tif", t, small_grid, nodata=np.nan)
    params = SplitParams(16, 1, (0.5, 0.25, 0.25), seed=1)
    out = build_training_set(cubes, targets, tmp_path / "train.zarr", params)
    root = zarr.open_group(str(out), mode="r")
    n_pos = (small_grid.height // 16) * (small_grid.width // 16) - 1
    assert root["inputs"].shape == (2 * n_pos, len(CHANNELS), 16, 16)
    split, rows, cols = root["split"][:], root["row"][:], root["col"][:]
    # the same location is in the same split in both years
    loc_split = {}
    for r, c, s in zip(rows, cols, split):
        loc_split.setdefault((r, c), set()).add(int(s))
    assert all(len(v) == 1 for v in loc_split.values())
    x = root["inputs"][:]
    train = x[split == 0]
    mean = root.attrs["normalization"]["mean"]
    assert mean[3] == pytest.approx(float(np.nanmean(train[:, 3])), rel=1e-5)
    assert mean[3] != pytest.approx(float(np.nanmean(x[:, 3])), rel=1e-7)
    # patch content equals the cube at its offset
    cube = open_cube(cubes[int(root["year"][0])]).inputs
    r, c = int(rows[0]), int(cols[0])
    np.testing.assert_array_equal(x[0], np.asarray(cube[:, r:r + 16, c:c + 16]))
