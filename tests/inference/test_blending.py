"""Blending windows, tile layout and the row-band accumulator (pure numpy)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from pandafine.inference.blending import (
    WINDOW_KINDS,
    BlendAccumulator,
    TileLayout,
    blend_tiles,
    border_adjusted_window,
    tile_origins,
    window,
)

# --------------------------------------------------------------------------- windows


@pytest.mark.parametrize("kind", WINDOW_KINDS)
@pytest.mark.parametrize("shape", [(64, 64), (48, 80), (7, 7)])
def test_window_is_symmetric_with_maximum_one_and_floor(kind, shape):
    w = window(shape, kind)
    assert w.shape == shape
    assert w.max() == pytest.approx(1.0)
    assert w.min() >= 1e-3 ** 2
    assert w[shape[0] // 2].min() >= 1e-3 * w[shape[0] // 2].max() * (1 - 1e-12)  # floor per axis
    np.testing.assert_allclose(w, w[::-1, :])
    np.testing.assert_allclose(w, w[:, ::-1])


def test_window_kinds_known_values():
    n = 64
    assert np.all(window(n, "constant") == 1.0)
    # Hann (sin^2) and pyramid profiles shifted by half a tile add up to a constant:
    # with 50 % overlap they blend to a flat total weight
    for kind in ("hann", "pyramid"):
        row = window((1, n), kind, floor=0.0)[0]
        total = row[: n // 2] + row[n // 2:]
        np.testing.assert_allclose(total, total[0], rtol=1e-12)
    # the floor shows at the Hann edges (sin^2 of half a pixel is ~6e-4 < 1e-3), per axis
    hann = window(n, "hann")
    assert hann[0, 0] == pytest.approx(1e-6)
    np.testing.assert_allclose(hann[0], 1e-3 * hann[n // 2 - 1])
    # Gaussian: one sigma away from the centre pixel the weight is exp(-1/2)
    g = window((1, 65), "gaussian", floor=0.0, sigma_scale=13 / 65)[0]
    assert g[32] == pytest.approx(1.0)
    assert g[32 + 13] == pytest.approx(np.exp(-0.5), rel=1e-12)
    assert g[32 - 13] == pytest.approx(np.exp(-0.5), rel=1e-12)


def test_window_floor_and_bad_kind():
    assert window(32, "hann", floor=0.2).min() == pytest.approx(0.2 ** 2)
    with pytest.raises(ValueError, match="unknown window kind 'cosine'"):
        window(32, "cosine")


# --------------------------------------------------------------------------- tile layout

def test_tile_origins_known_answers():
    assert tile_origins(200, 64, 16) == [0, 48, 96, 136]
    assert tile_origins(256, 64, 0) == [0, 64, 128, 192]
    assert tile_origins(256, 64, 32) == [0, 32, 64, 96, 128, 160, 192]
    assert tile_origins(50, 64, 16) == [0]  # smaller than a tile: one padded tile
    assert tile_origins(64, 64, 16) == [0]


@pytest.mark.parametrize("length,tile,overlap",
                         list(itertools.product([65, 100, 128, 333, 1024], [16, 64, 128], [0.0, 0.25, 0.5, 0.75])))  # overlap: fraction of the tile
def test_tile_origins_cover_and_end_on_border(length, tile, overlap):
    stride = tile - round(tile * overlap)
    o = tile_origins(length, tile, tile - stride)
    assert o[0] == 0
    assert o[-1] + tile == max(length, tile)  # last tile ends exactly on the border
    assert all(0 < b - a <= stride for a, b in zip(o, o[1:]))
    covered = np.zeros(length, bool)
    for s in o:
        covered[s:s + tile] = True
    assert covered.all()


def test_tile_origins_rejects_bad_overlap():
    with pytest.raises(ValueError, match="overlap"):
        tile_origins(100, 32, 32)  # no stride left
    with pytest.raises(ValueError, match="whole number of pixels"):
        tile_origins(100, 32, 0.25)  # a fraction of the tile, as infer.overlap was before it was in pixels


# --------------------------------------------------------------------------- border adjustment

@pytest.mark.parametrize("kind", ["hann", "gaussian", "pyramid"])
def test_border_adjusted_window_full_weight_on_flagged_sides(kind):
    base = window(32, kind)
    before = base.copy()
    top = border_adjusted_window(base, True, False, False, False)
    np.testing.assert_array_equal(base, before)  # input untouched
    # top half rows all equal the centre row; bottom half unchanged
    np.testing.assert_allclose(top[:16], np.broadcast_to(base[15], (16, 32)))
    np.testing.assert_array_equal(top[16:], base[16:])
    all_sides = border_adjusted_window(base, True, True, True, True)
    np.testing.assert_allclose(all_sides, 1.0)
    corner = border_adjusted_window(base, False, True, False, True)
    assert corner[-1, -1] == pytest.approx(1.0)
    assert corner[0, 0] == pytest.approx(base[0, 0])


def test_layout_windows_follow_the_border():
    lay = TileLayout(200, 232, 64, 16, "hann")
    first, last = lay.tile_window(0, 0), lay.tile_window(lay.rows[-1], lay.cols[-1])
    inner = lay.tile_window(lay.rows[1], lay.cols[1])
    assert first[0, 0] == pytest.approx(1.0) and last[-1, -1] == pytest.approx(1.0)
    assert inner[0, 0] == pytest.approx(1e-6)


# --------------------------------------------------------------------------- accumulation

def _crop_tiles(image, layout):
    """Predictions of a perfect 'model': each tile sees exactly the image (edge-padded)."""
    pad = np.pad(image, ((0, max(0, layout.tile - image.shape[0])), (0, max(0, layout.tile - image.shape[1]))),
                 mode="edge")
    for r in layout.rows:
        for c in layout.cols:
            yield r, c, pad[r:r + layout.tile, c:c + layout.tile]


@pytest.mark.parametrize("kind", WINDOW_KINDS)
@pytest.mark.parametrize("overlap", [0, 12, 24])
def test_blend_reproduces_consistent_predictions(kind, overlap):
    rng = np.random.default_rng(0)
    image = rng.normal(size=(150, 170)).astype(np.float32)
    lay = TileLayout(150, 170, 48, overlap, kind)
    out = np.full(image.shape, np.nan, np.float32)
    last = 0
    for first, block in blend_tiles(_crop_tiles(image, lay), lay):
        assert first == last  # blocks follow each other without gaps
        out[first:first + len(block)] = block
        last = first + len(block)
    assert last == 150
    np.testing.assert_allclose(out, image, rtol=0, atol=1e-6)


@pytest.mark.parametrize("kind", WINDOW_KINDS)
def test_blend_constant_stays_exactly_constant(kind):
    lay = TileLayout(100, 90, 32, 16, kind)
    c = np.float32(3.7)
    tiles = ((r, col, np.full((32, 32), c, np.float32)) for r in lay.rows for col in lay.cols)
    blocks = list(blend_tiles(tiles, lay))
    out = np.concatenate([b for _, b in blocks])
    assert out.shape == (100, 90)
    assert np.all(out == c)


def test_border_rows_blend_like_interior_rows():
    """With border-adjusted windows row 0 mixes neighbouring tiles exactly like the rows
    below it (which only the first tile row covers): border pixels get full weight."""
    lay = TileLayout(100, 160, 64, 16, "hann")
    values = {c: float(i) for i, c in enumerate(lay.cols)}  # each tile predicts a different constant
    tiles = ((r, c, np.full((64, 64), values[c] + 10 * i, np.float32))
             for i, r in enumerate(lay.rows) for c in lay.cols)
    out = np.concatenate([b for _, b in blend_tiles(tiles, lay)])
    # rows 0..(stride-1) are covered by tile row 0 only
    np.testing.assert_allclose(out[0], out[20], rtol=1e-6)
    # and the corner pixels carry the corner tile's value
    assert out[0, 0] == values[0]
    assert out[-1, -1] == values[lay.cols[-1]] + 10 * (len(lay.rows) - 1)


def test_accumulator_band_is_bounded_and_checked():
    acc = BlendAccumulator(1000, 50, 32)
    assert acc.buffer_rows == 32
    w = np.ones((32, 32))
    acc.add(np.ones((32, 32)), w, 0, 0)
    with pytest.raises(ValueError, match="outside the accumulator band"):
        acc.add(np.ones((32, 32)), w, 16, 0)  # would reach row 48 > 32
    first, rows = acc.flush(16)
    assert first == 0 and rows.shape == (16, 50)
    assert np.all(rows[:, :32] == 1) and np.all(np.isnan(rows[:, 32:]))  # no prediction -> NaN
    acc.add(np.full((32, 32), 3.0), w, 16, 0)  # now fits: band is [16, 48)
    first, rows = acc.flush(48)
    assert first == 16
    np.testing.assert_allclose(rows[:16, :32], 2.0)  # rows 16..31: mean of 1 and 3
    np.testing.assert_allclose(rows[16:, :32], 3.0)
    assert acc.flush(48) is None


def test_accumulator_ignores_non_finite_predictions():
    acc = BlendAccumulator(8, 8, 8)
    p1 = np.full((8, 8), 2.0)
    p1[3, 3] = np.nan
    acc.add(p1, np.ones((8, 8)), 0, 0)
    acc.add(np.full((8, 8), 4.0), np.full((8, 8), 3.0), 0, 0)
    _, out = acc.flush(8)
    assert out[3, 3] == 4.0  # only the finite prediction counts
    assert out[0, 0] == pytest.approx((2 + 12) / 4)


# --------------------------------------------------------------------------- spatial blocks

def _disagreeing_tiles(image, layout):
    """Predictions that differ from tile to tile (the image plus noise seeded by the tile's grid position),
    so the blend weights matter; the tiles of ``layout.rows`` x ``layout.cols`` in row-major order."""
    pad = np.pad(image, ((0, max(0, layout.tile - image.shape[0])), (0, max(0, layout.tile - image.shape[1]))),
                 mode="edge")
    for r in layout.rows:
        for c in layout.cols:
            noise = np.random.default_rng([r, c]).normal(scale=0.1, size=(layout.tile, layout.tile))
            yield r, c, (pad[r:r + layout.tile, c:c + layout.tile] + noise).astype(np.float32)


def _blend(layout, tiles):
    r0, c0, h, w = layout.bounds
    out = np.full((h, w), np.nan, np.float32)
    for first, block in blend_tiles(tiles, layout):
        out[first:first + len(block)] = block
    return out


@pytest.mark.parametrize("kind", ["hann", "gaussian", "pyramid"])
@pytest.mark.parametrize("block", [(64, 80), (48, 48), (100, 33)])
def test_blocks_blended_apart_equal_the_whole_grid_blend(kind, block):
    image = np.random.default_rng(1).normal(size=(150, 170)).astype(np.float32)
    whole_layout = TileLayout(150, 170, 48, 12, kind)
    whole = _blend(whole_layout, _disagreeing_tiles(image, whole_layout))
    bh, bw = block
    assembled = np.full_like(whole, np.nan)
    for r in range(0, 150, bh):
        for c in range(0, 170, bw):
            area = (r, c, min(bh, 150 - r), min(bw, 170 - c))
            lay = TileLayout(150, 170, 48, 12, kind, area=area)
            # the block's tiles: the grid's tiles that touch it, and no others
            assert set(lay.rows) == {o for o in whole_layout.rows if o < r + area[2] and o + 48 > r}
            assembled[r:r + area[2], c:c + area[3]] = _blend(lay, _disagreeing_tiles(image, lay))
    np.testing.assert_array_equal(assembled, whole)  # bit for bit: same tiles, weights and summation order


def test_layout_area_must_lie_in_the_grid():
    with pytest.raises(ValueError, match="not inside the 100x90 grid"):
        TileLayout(100, 90, 32, 8, area=(64, 0, 64, 90))


def test_a_grid_that_fits_in_a_tile_is_one_pass():
    from pandafine.inference.blending import grid_tiling

    assert grid_tiling(352, 352, 576, 64) == (352, 0)      # the demo grid: one tile, nothing blended
    assert grid_tiling(104, 96, 576, 64) == (104, 0)       # rectangular: the longer side
    assert grid_tiling(100, 97, 576, 64, multiple=8) == (104, 0)  # rounded up to the model's multiple
    assert grid_tiling(4096, 352, 576, 64) == (576, 64)    # larger than a tile: as configured
    assert grid_tiling(576, 576, 576, 64) == (576, 0)
