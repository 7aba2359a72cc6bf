"""Landsat straight to the working grid (preprocess.landsat_composite, sources.local.landsat_scenes).

A local-source world in the ``{root}/{year}/{scene_id}/`` layout: overlapping OLI and ETM+ scenes in UTM 49N,
30 m, uint16 SR counts with spatially varying values, clouds, shadows and fill in ``QA_PIXEL``, each covering
only part of a 125 m Albers working grid. The per-(year, block) streaming composite is checked against a
compact copy of the path it replaces (commit 4985208: calibrate every scene to a float32 raster at its own
resolution, then per 512 px window of the grid warp it with ``average`` and take the median), against itself
over blocks, for what it writes, and for resuming after a kill.
"""

from __future__ import annotations

import math
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.enums import Resampling

from pandafine.core.blocks import grid_blocks
from pandafine.core.grid import CHINA_ALBERS, Grid, grid_from_bbox
from pandafine.core.raster_io import float_profile, grid_of, iter_windows
from pandafine.core.windows import frame_bounds_on, grid_window_of, intersect_blocks
from pandafine.preprocess import landsat_composite as lc
from pandafine.preprocess.landsat_composite import (
    BlockJournal,
    CompositeParams,
    composite_block,
    composite_year,
    fill_gaps,
    median_composite,
    overview_factor,
    window_lattice,
)
from pandafine.sensors import landsat as ls
from pandafine.sensors.landsat import SceneAssets, scene_reflectance
from pandafine.sources.local import landsat_scenes

UTM49 = "EPSG:32649"
ANCHOR = (-2643772.86, 5926896.53)  # tests/data/tiny.yaml
CLEAR, CLOUD = 21824, 22280  # QA_PIXEL: clear land; cloud (bit 3)
SHADOW, DILATED, FILL = CLEAR | 1 << 4, CLEAR | 1 << 1, 1
SCENE_SHAPE = (400, 420)  # rows, cols at 30 m: 12 x 12.6 km, about 60 % of the grid's edge
YEAR = 2018

#: year -> (scene id, upper-left x, upper-left y in UTM 49N). The 125 m grid spans about x 303650..325170,
#: y 3786760..3807570 there. 2018 leaves the south-east corner uncovered; 2016/2017/2019 cover it (gap filling);
#: LC08 130036 lies far from the grid.
SCENES = {
    2016: [("LC08_L2SP_127036_20160709_20200906_02_T1", 313000, 3797000)],
    2017: [("LC08_L2SP_127036_20170714_20200903_02_T1", 313000, 3798000)],
    2018: [("LC08_L2SP_127036_20180801_20200831_02_T1", 302000, 3809000),
           ("LE07_L2SP_127036_20180809_20200829_02_T1", 312000, 3809500),
           ("LC08_L2SP_128036_20180824_20200831_02_T1", 306000, 3802000),
           ("LE07_L2SP_128036_20180917_20200828_02_T1", 301000, 3799000),
           ("LC08_L2SP_126036_20181003_20200830_02_T1", 309000, 3805000),
           ("LC08_L2SP_130036_20180705_20200831_02_T1", 500000, 3900000)],
    2019: [("LE07_L2SP_127036_20190612_20200825_02_T1", 315000, 3796000)],
}
OUTSIDE = "LC08_L2SP_130036_20180705_20200831_02_T1"


def quiet(_line: str) -> None:
    pass


# ----------------------------------------------------------------------------- the world


def surface(x: np.ndarray, y: np.ndarray, band: int, seed: int) -> np.ndarray:
    """OLI-equivalent reflectance of ``band`` (index into LANDSAT_BANDS) at UTM x, y on one date: smooth
    fields that differ per band and per date, plus noise."""
    rng = np.random.default_rng(seed * 31 + band)
    base = 0.06 + 0.045 * band
    field = (0.05 * np.sin(2 * np.pi * x / (6000 + 500 * band) + band)
             * np.cos(2 * np.pi * y / (4500 + 300 * band) + 0.3 * seed)
             + 0.02 * np.sin(2 * np.pi * (x + y) / 9000 + seed))
    return np.clip(base + field + 0.01 * (seed % 5) + rng.normal(0, 0.01, x.shape), 0.01, 0.7)


def write_band(path: Path, arr: np.ndarray, transform: Affine, nodata: int, resampling: Resampling) -> None:
    profile = {"driver": "GTiff", "width": arr.shape[1], "height": arr.shape[0], "count": 1, "dtype": "uint16",
               "crs": UTM49, "transform": transform, "nodata": nodata, "tiled": True, "blockxsize": 256,
               "blockysize": 256, "compress": "deflate"}
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(arr.astype(np.uint16), 1)
    with rasterio.open(path, "r+") as dst:  # internal overviews, as the COGs of a STAC catalogue have
        dst.build_overviews([2, 4, 8], resampling)


def write_scene(year_dir: Path, scene_id: str, ulx: float, uly: float, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    sensor = ls.sensor_of(scene_id)
    h, w = SCENE_SHAPE
    transform = Affine(30.0, 0, ulx, 0, -30.0, uly)
    cols, rows = np.meshgrid(np.arange(w), np.arange(h))
    x, y = ulx + 30.0 * (cols + 0.5), uly - 30.0 * (rows + 0.5)
    qa = np.full((h, w), CLEAR, np.uint16)
    for _ in range(3):  # clouds with a dilated ring and a shadow to the south-east
        r0, c0, rad = rng.integers(0, h), rng.integers(0, w), rng.integers(15, 45)
        d = np.hypot(rows - r0, cols - c0)
        ds = np.hypot(rows - r0 - 30, cols - c0 - 25)
        qa[(ds < rad) & (qa == CLEAR)] = SHADOW
        qa[(d < rad + 6) & (d >= rad)] = DILATED
        qa[d < rad] = CLOUD
    fill = rows + cols < 60  # the slanted corner of a scene's footprint
    qa[fill] = FILL
    d = year_dir / scene_id
    d.mkdir(parents=True)
    for name, n in ls.band_numbers(sensor).items():
        rho = surface(x, y, ls.LANDSAT_BANDS.index(name), seed)
        dn = ls.reflectance_to_dn(rho if sensor == "OLI" else ls.oli_to_tm(rho, name))
        dn[fill] = 0
        dn[rng.uniform(size=dn.shape) < 0.001] = 0  # fill in one band only: the pixel is not clear
        write_band(d / f"{scene_id}_SR_B{n}.TIF", dn, transform, 0, Resampling.average)
    write_band(d / f"{scene_id}_QA_PIXEL.TIF", qa, transform, 1, Resampling.nearest)
    return d


@dataclass(frozen=True)
class World:
    root: Path
    grid: Grid

    def scenes(self, year: int) -> list[SceneAssets]:
        return landsat_scenes(self.root, year)


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> World:
    root = tmp_path_factory.mktemp("landsat")
    seed = 0
    for year, scenes in SCENES.items():
        for scene_id, ulx, uly in scenes:
            seed += 1
            write_scene(root / str(year), scene_id, ulx, uly, seed)
    grid = grid_from_bbox((108.88, 34.22, 109.08, 34.38), CHINA_ALBERS, 125.0, 8, ANCHOR)
    assert grid.shape == (160, 160)
    return World(root, grid)


def read(path: Path) -> np.ndarray:
    with rasterio.open(path) as src:
        return src.read()


def tags(path: Path) -> dict:
    with rasterio.open(path) as src:
        return src.tags()


# ----------------------------------------------------------------------------- the path it replaces


def reference_composite(scenes: list[SceneAssets], grid: Grid, tmp: Path, coastal: str = "blue",
                        window: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """Median and clear count as commit 4985208 made them: every scene calibrated whole at its own resolution
    to a float32 file (calibrate_landsat_scene), then per ``window`` px window of the grid each calibrated scene
    over it warped with ``average`` from the source window under the window's bounds + 2 px
    (denoise._warp_block) and the median taken (denoise._composite_block)."""
    from rasterio.crs import CRS
    from rasterio.warp import reproject, transform_bounds
    from rasterio.windows import Window, from_bounds

    tmp.mkdir(parents=True, exist_ok=True)
    calibrated = []
    for s in scenes:
        with rasterio.open(s.qa) as q:
            qa, profile = q.read(1), float_profile(q.crs, q.transform, q.width, q.height, 7)
        dn = {}
        for name, href in s.bands:
            with rasterio.open(href) as b:
                dn[name] = b.read(1)
        path = tmp / f"{s.scene_id}.tif"
        with rasterio.open(path, "w", **profile) as dst:
            dst.write(scene_reflectance(dn, qa, s.sensor, coastal))
        on_grid = grid_window_of(frame_bounds_on(grid_of(path), grid), grid)
        if on_grid is not None:
            calibrated.append((path, on_grid))

    def warp(path, block, pad=2):
        r0, c0, h, w = block
        dst_t = grid.window_transform(r0, c0)
        dst_crs = CRS.from_user_input(grid.crs)
        with rasterio.open(path) as src:
            out = np.full((src.count, h, w), np.nan, np.float32)
            (left, right), (top, bottom) = zip(dst_t * (0, 0), dst_t * (w, h))
            bounds = transform_bounds(dst_crs, src.crs, min(left, right), min(top, bottom), max(left, right),
                                      max(top, bottom), densify_pts=21)
            win = from_bounds(*bounds, transform=src.transform)
            col0 = max(0, int(np.floor(win.col_off)) - pad)
            row0 = max(0, int(np.floor(win.row_off)) - pad)
            col1 = min(src.width, int(np.ceil(win.col_off + win.width)) + pad)
            row1 = min(src.height, int(np.ceil(win.row_off + win.height)) + pad)
            if col1 <= col0 or row1 <= row0:
                return out
            win = Window(col0, row0, col1 - col0, row1 - row0)
            data = src.read(window=win).astype(np.float32)
            reproject(data, out, src_transform=src.window_transform(win), src_crs=src.crs, src_nodata=np.nan,
                      dst_transform=dst_t, dst_crs=dst_crs, dst_nodata=np.nan, resampling=Resampling.average)
        return out

    med = np.full((7,) + grid.shape, np.nan, np.float32)
    count = np.zeros(grid.shape, np.int64)
    for w in iter_windows(grid.width, grid.height, window):
        block = (w.row_off, w.col_off, w.height, w.width)
        obs = [warp(p, block) for p, on_grid in calibrated if intersect_blocks(on_grid, block) is not None]
        stack = np.stack(obs) if obs else np.empty((0, 7, w.height, w.width), np.float32)
        m, c = median_composite(stack)
        med[:, w.row_off:w.row_off + w.height, w.col_off:w.col_off + w.width] = m
        count[w.row_off:w.row_off + w.height, w.col_off:w.col_off + w.width] = c
    return med, count


def whole(grid: Grid):
    return grid_blocks(grid, 0)[0]


# ----------------------------------------------------------------------------- 1. same as the old path


@pytest.mark.parametrize("coastal", ["blue", "native"])
def test_block_composite_equals_the_calibrate_then_warp_path(world, tmp_path, coastal):
    scenes = world.scenes(YEAR)
    assert {s.sensor for s in scenes} == {"OLI", "ETM+"}
    out = tmp_path / "out" / "r000c000.tif"
    stats = composite_block(scenes, world.grid, whole(world.grid), out,
                            CompositeParams(coastal=coastal, overviews=False), year=YEAR, log=quiet)
    ref_med, ref_count = reference_composite(scenes, world.grid, tmp_path / "calibrated", coastal)

    got = read(out)
    assert got.shape == (8,) + world.grid.shape
    # a composite worth comparing: several observations in places, clouds and the uncovered corner in others
    assert ref_count.max() >= 3 and (ref_count == 0).any() and 0.5 < (ref_count > 0).mean() < 0.98
    np.testing.assert_array_equal(got[7], ref_count.astype(np.float32))
    np.testing.assert_array_equal(np.isnan(got[:7]), np.isnan(ref_med))
    np.testing.assert_allclose(got[:7], ref_med, rtol=1e-6, atol=0, equal_nan=True)
    assert np.array_equal(got[:7], ref_med, equal_nan=True)  # the same warp of the same values: exact
    assert (stats.read, stats.outside, stats.resumed) == (5, 1, 0)
    assert float(tags(out)["clear_coverage"]) == pytest.approx((ref_count > 0).mean(), abs=1e-6)


# ----------------------------------------------------------------------------- 2. blocks = whole


@pytest.fixture(scope="module")
def whole_composite(world, tmp_path_factory):
    """window -> the 2018 composite of one block, the whole grid (full resolution), made once per window."""
    made: dict[int, Path] = {}

    def get(window: int) -> Path:
        if window not in made:
            made[window] = tmp_path_factory.mktemp(f"whole{window}") / "r000c000.tif"
            composite_block(world.scenes(YEAR), world.grid, whole(world.grid), made[window],
                            CompositeParams(overviews=False, window=window), year=YEAR, log=quiet)
        return made[window]

    return get


@pytest.mark.parametrize("size", [64, 128])
def test_blocks_assembled_equal_one_whole_block(world, whole_composite, tmp_path, size):
    """Blocks a multiple of the window (64 px here, as grid.block a multiple of 512 would be with the default
    window), assembled by composite_year: the same own-year pixels and counts as one whole-grid block."""
    grid, scenes, window = world.grid, world.scenes(YEAR), 64
    one = whole_composite(window)
    blocks = grid_blocks(grid, size)
    assert len(blocks) >= 4
    paths = {}
    for b in blocks:
        paths[b.name] = tmp_path / "blocks" / f"{b.name}.tif"
        stats = composite_block(scenes, grid, b, paths[b.name], CompositeParams(overviews=False, window=window),
                                year=YEAR, log=quiet)
        assert stats.read + stats.outside == len(scenes)
    cfg = {"preprocess": {"landsat_gapfill_years": 0, "min_landsat_coverage": 0.0}}
    with pytest.warns(UserWarning, match="no clear observation"):
        composite_year(cfg, YEAR, {YEAR: paths}, grid, blocks, tmp_path / "year.tif", size, window)
    with pytest.warns(UserWarning, match="no clear observation"):
        composite_year(cfg, YEAR, {YEAR: {"r000c000": one}}, grid, [whole(grid)], tmp_path / "year1.tif", 0,
                       window)
    blocked, single, ref = read(tmp_path / "year.tif"), read(tmp_path / "year1.tif"), read(one)
    np.testing.assert_array_equal(single, ref)
    np.testing.assert_array_equal(blocked[7], ref[7])
    own = ref[7] > 0
    np.testing.assert_allclose(blocked[:7][:, own], ref[:7][:, own], rtol=1e-6, atol=0)
    assert np.array_equal(blocked[:7], ref[:7], equal_nan=True)


def test_block_smaller_than_the_window_equals_the_whole_grid(world, whole_composite, tmp_path):
    """grid.block 64 (valid with product.blocksize 64) and the default 512 px window: block r000c000's pixels
    are those of one whole-grid block (the block warps the whole lattice cell it cuts and keeps its part: GDAL's
    average warp depends on the destination extent)."""
    grid = world.grid
    block = grid_blocks(grid, 64)[0]
    out = tmp_path / f"{block.name}.tif"
    composite_block(world.scenes(YEAR), grid, block, out, CompositeParams(overviews=False), log=quiet)
    got, ref = read(out), read(whole_composite(512))[:, :64, :64]
    np.testing.assert_array_equal(got[7], ref[7])
    assert np.array_equal(got[:7], ref[:7], equal_nan=True)


def test_block_reads_only_under_the_block(world, tmp_path):
    grid, scenes = world.grid, world.scenes(YEAR)
    params = CompositeParams(overviews=False, window=32)  # a window the block size is a multiple of
    full = composite_block(scenes, grid, whole(grid), tmp_path / "a.tif", params, log=quiet)
    corner = grid_blocks(grid, 32)[0]  # 32 x 32 px in the north-west: 1/25 of the grid
    part = composite_block(scenes, grid, corner, tmp_path / "b.tif", params, log=quiet)
    assert part.read < full.read and part.outside > full.outside
    assert 0 < part.pixels_read < full.pixels_read / 10


# ----------------------------------------------------------------------------- 3. nothing at scene resolution


def on_working_grid(path: Path, grid: Grid) -> bool:
    with rasterio.open(path) as src:
        t = src.transform
    g = grid.transform
    col, row = (t.c - g.c) / g.a, (t.f - g.f) / g.e
    return (t.a, t.e) == (g.a, g.e) and t.b == t.d == 0 and col == round(col) and row == round(row)


def test_nothing_written_at_scene_resolution(world, tmp_path, monkeypatch):
    grid = world.grid
    out = tmp_path / "out" / "r000c000.tif"
    written, seen = [], set()
    real_open = rasterio.open

    def checked_open(path, mode="r", *args, **kwargs):  # every raster written in the process, temporaries too
        if mode != "r":
            written.append((Path(path), kwargs["transform"].a, kwargs["width"], kwargs["height"]))
        return real_open(path, mode, *args, **kwargs)

    def scan(_line):  # after every scene: every raster under the output directory, the journal included
        for p in out.parent.rglob("*"):
            if p.is_file() and p.suffix.lower() in (".tif", ".tiff"):
                assert on_working_grid(p, grid), p
                seen.add(p.name)

    monkeypatch.setattr(rasterio, "open", checked_open)
    composite_block(world.scenes(YEAR), grid, whole(grid), out, CompositeParams(overviews=False), log=scan)
    monkeypatch.undo()
    # written through temporaries: .{scene_id}.XXXXXXXX.part.tif in the journal, .r000c000.XXXXXXXX.part.tif
    assert sorted(p.name.split(".")[1] for p, *_ in written) == \
        sorted([s for s, *_ in SCENES[YEAR] if s != OUTSIDE] + [out.stem])
    assert all(p.is_relative_to(out.parent) for p, *_ in written)
    assert all(a == grid.pixel_size for _, a, _, _ in written)
    assert all(w <= grid.width and h <= grid.height for _, _, w, h in written)
    assert len(seen) == 5  # the journal was looked at while it held the scenes
    assert sorted(p.name for p in out.parent.iterdir()) == [out.name]
    assert on_working_grid(out, grid)


# ----------------------------------------------------------------------------- 4. resume after a kill


class Opens:
    """Counts the files of each scene opened (headers through ``open_raster``, overviews through ``sign``) and
    kills the run (``KeyboardInterrupt``) when the ``kill_at``-th distinct scene is first touched."""

    def __init__(self, root: Path, kill_at: int | None = None):
        self.root, self.kill_at = str(root), kill_at
        self.files, self.signed, self.order = Counter(), Counter(), []

    def touch(self, path, counter) -> None:
        path = str(path)
        if not path.startswith(self.root):
            return
        scene = Path(path).parent.name
        if scene not in self.order:
            self.order.append(scene)
            if self.kill_at is not None and len(self.order) == self.kill_at:
                raise KeyboardInterrupt(f"killed while opening {scene}")
        counter[scene] += 1

    def sign(self, href: str) -> str:
        self.touch(href, self.signed)
        return href

    def patch(self, monkeypatch) -> None:
        real = lc.open_raster

        def counting_open(path):
            self.touch(path, self.files)
            return real(path)

        monkeypatch.setattr(lc, "open_raster", counting_open)

    def opened(self, scene: str) -> int:
        return self.files[scene] + self.signed[scene]


def test_resume_after_a_kill_reads_only_the_unfinished_scenes(world, tmp_path, monkeypatch):
    grid, scenes = world.grid, world.scenes(YEAR)
    ids = sorted(s.scene_id for s in scenes)
    assert len(ids) >= 4
    params = CompositeParams(overviews=True)  # the scenes are read from their 120 m overview (through sign)
    clean = tmp_path / "clean" / "r000c000.tif"
    composite_block(scenes, grid, whole(grid), clean, params, year=YEAR, log=quiet)

    out = tmp_path / "run" / "r000c000.tif"
    journal = out.parent / ".r000c000.journal"
    kill = Opens(world.root, kill_at=3)
    with monkeypatch.context() as m:
        kill.patch(m)
        with pytest.raises(KeyboardInterrupt):
            composite_block(scenes, grid, whole(grid), out, params, sign=kill.sign, year=YEAR, log=quiet)
    assert kill.order == ids[:3]
    assert not out.exists()
    assert [p.name for p in out.parent.iterdir()] == [journal.name]
    assert sorted(p.name for p in journal.iterdir()) == sorted(["key.json"] + [f"{s}.tif" for s in ids[:2]])
    for s in ids[:2]:
        assert on_working_grid(journal / f"{s}.tif", grid)

    again = Opens(world.root)
    lines = []
    with monkeypatch.context() as m:
        again.patch(m)
        stats = composite_block(scenes, grid, whole(grid), out, params, sign=again.sign, year=YEAR,
                                log=lines.append)
    assert [again.opened(s) for s in ids[:2]] == [0, 0]
    for s in ids[2:]:
        assert again.opened(s) > 0, s
    read_ids = [s for s in ids[2:] if s != OUTSIDE]
    assert all(again.signed[s] == 8 if s.startswith("LC08") else again.signed[s] == 7 for s in read_ids)
    assert (stats.resumed, stats.read, stats.outside) == (2, len(ids) - 3, 1)
    assert sum("journal" in line for line in lines) == 2
    # the journal keeps the decimation each scene was read at
    assert {r["scene_id"]: r.get("decimation") for r in stats.scenes} == {s: 4 for s in ids[:2] + read_ids}
    assert not journal.exists()
    assert [p.name for p in out.parent.iterdir()] == [out.name]
    assert np.array_equal(read(out), read(clean), equal_nan=True)
    assert tags(out) == tags(clean)
    assert out.read_bytes() == clean.read_bytes()


def test_journal_of_another_key_is_wiped(world, tmp_path, monkeypatch):
    grid, scenes = world.grid, world.scenes(YEAR)
    ids = sorted(s.scene_id for s in scenes)
    out = tmp_path / "run" / "r000c000.tif"
    journal = out.parent / ".r000c000.journal"
    kill = Opens(world.root, kill_at=3)
    with monkeypatch.context() as m:
        kill.patch(m)
        with pytest.raises(KeyboardInterrupt):
            composite_block(scenes, grid, whole(grid), out, CompositeParams(coastal="blue"), sign=kill.sign,
                            log=quiet)
    assert (journal / f"{ids[0]}.tif").exists()

    native = CompositeParams(coastal="native")
    again = Opens(world.root)
    with monkeypatch.context() as m:
        again.patch(m)
        stats = composite_block(scenes, grid, whole(grid), out, native, sign=again.sign, log=quiet)
    assert all(again.opened(s) > 0 for s in ids)
    assert stats.resumed == 0
    clean = tmp_path / "clean" / "r000c000.tif"
    composite_block(scenes, grid, whole(grid), clean, native, log=quiet)
    assert np.array_equal(read(out), read(clean), equal_nan=True)
    blue = tmp_path / "blue" / "r000c000.tif"
    composite_block(scenes, grid, whole(grid), blue, CompositeParams(coastal="blue"), log=quiet)
    got, other = read(out), read(blue)
    assert not np.allclose(got[0], other[0], equal_nan=True)  # the coastal channel depends on the key


def test_block_journal_key(tmp_path):
    d = tmp_path / ".b.journal"
    j = BlockJournal(d, "k1")
    j.mark_outside("A")
    j.observations("B").write_bytes(b"x")
    assert BlockJournal(d, "k1").done("A") and BlockJournal(d, "k1").done("B")
    j2 = BlockJournal(d, "k2")
    assert not j2.done("A") and not j2.done("B")
    assert sorted(p.name for p in d.iterdir()) == ["key.json"]
    (d / "key.json").write_text("{not json")
    assert not BlockJournal(d, "k2").done("A")
    assert lc.journal_key(Grid(CHINA_ALBERS, Affine(125, 0, 0, 0, -125, 0), 10, 10), (0, 0, 10, 10),
                          CompositeParams(overviews=True)) != \
        lc.journal_key(Grid(CHINA_ALBERS, Affine(125, 0, 0, 0, -125, 0), 10, 10), (0, 0, 10, 10),
                       CompositeParams(overviews=False))


# ----------------------------------------------------------------------------- 5. gap filling


def comp(values, counts):
    """A (bands + 1, 1, n) block composite: one band of ``values``, then ``counts``."""
    return np.array([[values], [counts]], np.float32)


def test_fill_gaps_known_answers():
    nan = np.nan
    med = np.array([[[5.0, nan, nan, nan, nan]]], np.float32)
    count = np.array([[3, 0, 0, 0, 0]])
    a = comp([1.0, 2.0, 3.0, 4.0, 9.0], [1, 1, 0, 2, 0])
    b = comp([7.0, 4.0, 8.0, nan, 9.0], [2, 1, 1, 0, 0])
    far = comp([100.0, 100.0, 100.0, 100.0, 100.0], [1, 1, 1, 1, 1])
    gap = fill_gaps(med, count, [[a, b], [far]])
    # own value kept; mean of both at distance 1; only b (a has clear_count 0); only a; neither at 1: distance 2
    np.testing.assert_array_equal(med[0, 0], [5.0, 3.0, 8.0, 4.0, 100.0])
    assert not gap.any()

    med = np.array([[[nan, nan]]], np.float32)
    gap = fill_gaps(med, np.array([[0, 0]]), [[comp([1.0, 2.0], [1, 0])]])  # one neighbour; pixel 1 not clear
    np.testing.assert_array_equal(med[0, 0], [1.0, nan])
    np.testing.assert_array_equal(gap, [[False, True]])

    med = np.array([[[nan]]], np.float32)
    gap = fill_gaps(med, np.array([[0]]), [[], [comp([6.0], [2]), comp([2.0], [1])]])  # nothing at 1
    assert med[0, 0, 0] == 4.0 and not gap.any()


def test_composite_year_fills_gaps_and_reports_coverage(world, tmp_path):
    grid = world.grid
    blocks = grid_blocks(grid, 80)
    params = CompositeParams(overviews=False)
    paths: dict[int, dict[str, Path]] = {}
    for year in SCENES:
        scenes = world.scenes(year)
        for b in blocks:
            p = tmp_path / "blocks" / str(year) / f"{b.name}.tif"
            composite_block(scenes, grid, b, p, params, year=year, log=quiet)
            paths.setdefault(year, {})[b.name] = p

    def assembled(year):
        out = np.full((8,) + grid.shape, np.nan, np.float32)
        for b in blocks:
            out[:, b.row_off:b.row_off + b.height, b.col_off:b.col_off + b.width] = read(paths[year][b.name])
        return out

    own, y17, y19, y16 = assembled(2018), assembled(2017), assembled(2019), assembled(2016)
    clear = own[7] > 0
    d1 = np.stack([np.where(y[7] > 0, y[:7], np.nan) for y in (y17, y19)])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN pixels
        mean1 = np.nanmean(d1, axis=0)
    has1 = np.isfinite(mean1).all(axis=0) & ~clear
    has2 = (y16[7] > 0) & ~clear & ~has1
    both = (y17[7] > 0) & (y19[7] > 0) & ~clear
    assert both.sum() > 100 and has2.sum() > 0 and (has1 & ~both).sum() > 0  # every case occurs

    cfg = {"preprocess": {"landsat_gapfill_years": 2, "min_landsat_coverage": 0.5}}
    out = tmp_path / "2018.tif"
    with pytest.warns(UserWarning, match="no clear observation within"):
        cov = composite_year(cfg, YEAR, paths, grid, blocks, out, 80)
    got = read(out)
    np.testing.assert_array_equal(got[:7][:, clear], own[:7][:, clear])
    np.testing.assert_allclose(got[:7][:, has1], mean1[:, has1], rtol=1e-6)
    np.testing.assert_array_equal(got[:7][:, has2], y16[:7][:, has2])
    np.testing.assert_array_equal(got[7], np.where(clear, own[7], 0))  # clear_count 0 where filled
    valid = clear | has1 | has2
    assert np.isnan(got[:7][:, ~valid]).all()
    t = tags(out)
    assert float(t["clear_coverage"]) == pytest.approx(clear.mean(), abs=1e-6) == pytest.approx(cov.clear)
    assert float(t["valid_coverage"]) == pytest.approx(valid.mean(), abs=1e-6) == pytest.approx(cov.valid)
    assert t["year"] == str(YEAR)
    assert cov.valid > cov.clear

    # without gap filling the year is too poorly covered: the message names it and its poor blocks
    poor = [b.name for b in blocks if float(tags(paths[YEAR][b.name])["clear_coverage"]) < 0.5]
    good = [b.name for b in blocks if b.name not in poor]
    assert poor and good
    cfg = {"preprocess": {"landsat_gapfill_years": 0, "min_landsat_coverage": 0.95}}
    with pytest.raises(ValueError, match="Landsat 2018") as err:
        composite_year(cfg, YEAR, paths, grid, blocks, tmp_path / "bad.tif", 80)
    msg = str(err.value)
    assert "min_landsat_coverage" in msg
    assert all(name in msg for name in poor[:5]) and not any(name in msg for name in good), msg
    assert not (tmp_path / "bad.tif").exists()

    with pytest.raises(ValueError, match="no block composite for block"):
        composite_year(cfg, YEAR, {YEAR: {"r000c000": paths[YEAR]["r000c000"]}}, grid, blocks,
                       tmp_path / "missing.tif", 80)


# ----------------------------------------------------------------------------- 6. pure helpers


def test_overview_factor_known_answers():
    assert overview_factor(30.0, [2, 4, 8], 125.0) == 4
    assert overview_factor(30.0, [2, 4, 8], 60.0) == 2
    assert overview_factor(30.0, [2, 4, 8], 240.0) == 8
    assert overview_factor(30.0, [2, 4, 8], 30.0) == 1
    assert overview_factor(30.0, [2, 4, 8], 59.0) == 1
    assert overview_factor(30.0, [], 125.0) == 1
    assert overview_factor(30.0, [8, 2], 125.0) == 2


def test_window_lattice_anchored_at_the_grid_origin():
    area = (100, 700, 1000, 600)
    wins = list(window_lattice(area, 512))
    assert wins == [(100, 700, 412, 324), (100, 1024, 412, 276), (512, 700, 512, 324), (512, 1024, 512, 276),
                    (1024, 700, 76, 324), (1024, 1024, 76, 276)]
    cover = np.zeros((1200, 1400), int)
    for r, c, h, w in wins:
        assert r // 512 == (r + h - 1) // 512 and c // 512 == (c + w - 1) // 512  # inside one lattice cell
        cover[r:r + h, c:c + w] += 1
    expected = np.zeros_like(cover)
    expected[100:1100, 700:1300] = 1
    np.testing.assert_array_equal(cover, expected)
    # the same lattice whatever the area: windows of a block are the whole grid's windows cut to it
    grid_wins = list(window_lattice((0, 0, 1200, 1400), 512))
    for r, c, h, w in wins:
        assert any(intersect_blocks(g, area) == (r, c, h, w) for g in grid_wins)
    assert list(window_lattice((0, 0, 100, 50), 512)) == [(0, 0, 100, 50)]


# ----------------------------------------------------------------------------- 7. the local source


def touch_scene(year_dir: Path, scene_id: str, skip: str | None = None) -> Path:
    d = year_dir / scene_id
    d.mkdir(parents=True)
    for n in ls.band_numbers(ls.sensor_of(scene_id)).values():
        if f"SR_B{n}" != skip:
            (d / f"{scene_id}_SR_B{n}.TIF").write_bytes(b"")
    (d / f"{scene_id}_QA_PIXEL.TIF").write_bytes(b"")
    return d


def test_landsat_scenes_layout(tmp_path):
    root = tmp_path / "landsat"
    y = root / "2018"
    ids = ["LC08_L2SP_127036_20180801_20200831_02_T1", "LC08_L2SP_127036_20180817_20200831_02_T1",
           "LE07_L2SP_127036_20180809_20200829_02_T1", "LE07_L2SP_128036_20180917_20200828_02_T1"]
    for s in ids:
        touch_scene(y, s)
    (y / ".partial").mkdir()  # a hidden directory is no scene
    got = landsat_scenes(root, 2018)
    assert [s.scene_id for s in got] == ids
    le7 = got[2]
    assert le7.sensor == "ETM+" and [b for b, _ in le7.bands] == ["blue", "green", "red", "nir", "swir1", "swir2"]
    assert le7.band_files["swir2"] == str(y / ids[2] / f"{ids[2]}_SR_B7.TIF")
    assert le7.qa == str(y / ids[2] / f"{ids[2]}_QA_PIXEL.TIF") and math.isnan(le7.cloud)
    assert len(got[0].bands) == 7

    # at most 2 per path/row: the first by id of 127036 (no cloud cover locally), the one of 128036
    assert [s.scene_id for s in landsat_scenes(root, 2018, 2)] == ids[:2] + ids[3:]
    assert [s.scene_id for s in landsat_scenes(root, 2018, 1)] == [ids[0], ids[3]]

    assert landsat_scenes(root, 2017) == []
    with pytest.raises(FileNotFoundError, match="no such directory"):
        landsat_scenes(tmp_path / "nowhere", 2018)

    bad = "LE07_L2SP_129036_20180710_20200828_02_T1"
    scene_dir = touch_scene(y, bad, skip="SR_B5")
    with pytest.raises(FileNotFoundError) as err:
        landsat_scenes(root, 2018)
    assert str(scene_dir) in str(err.value) and f"{bad}_SR_B5.TIF" in str(err.value)
