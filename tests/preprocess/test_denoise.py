"""Denoise stage: Luojia spike/background/edge cleaning."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio
from affine import Affine

from pandafine.core.grid import Grid
from pandafine.core.raster_io import write_raster
from pandafine.preprocess import denoise as dn

ANCHOR = (-2643772.86, 5926896.53)
BG = 2.0e-6


def make_cfg(**pre):
    base = {"panda_resampling": "nearest", "panda_out_of_range": "error", "luojia_background": BG,
            "spike_factor": 4.0, "landsat_gapfill_years": 2}
    base.update(pre)
    return {"preprocess": base}


# ----------------------------------------------------------------------------- Luojia (pure)


def test_neighbour_median_matches_brute_force():
    rng = np.random.default_rng(1)
    x = rng.uniform(0, 1, (23, 19)).astype(np.float32)
    x[rng.uniform(size=x.shape) < 0.2] = np.nan
    got = dn.neighbour_median(x, rows=5)  # several row chunks
    p = np.pad(x, 1, constant_values=np.nan)
    for r in range(x.shape[0]):
        for c in range(x.shape[1]):
            nb = np.delete(p[r:r + 3, c:c + 3].ravel(), 4)
            nb = nb[np.isfinite(nb)]
            if nb.size:
                assert got[r, c] == pytest.approx(float(np.median(nb)), rel=1e-6)
            else:
                assert np.isnan(got[r, c])


def smooth_lit_frame(shape=(120, 140)):
    """Smooth city-like radiance (mostly above background), NaN outside an elliptical footprint."""
    rr, cc = np.mgrid[0:shape[0], 0:shape[1]].astype(float)
    truth = 2.0e-7 + 3e-5 * np.exp(-((rr - 60) ** 2 + (cc - 70) ** 2) / (2 * 25.0 ** 2)) \
        + 1e-5 * np.exp(-((rr - 30) ** 2 + (cc - 110) ** 2) / (2 * 12.0 ** 2))
    inside = ((rr - 60) / 57.0) ** 2 + ((cc - 70) / 66.0) ** 2 <= 1
    truth[~inside] = np.nan
    return truth.astype(np.float32), inside


def test_hot_pixels_removed_smooth_light_kept():
    truth, inside = smooth_lit_frame()
    rng = np.random.default_rng(3)
    noisy = truth.copy()
    # isolated hot pixels (at least 3 px apart), 10-200x brighter, inside the eroded footprint
    cand = np.argwhere(inside)
    hot = []
    for r, c in cand[rng.permutation(len(cand))]:
        if all(max(abs(r - a), abs(c - b)) >= 3 for a, b in hot) and 2 <= r < 118 and 2 <= c < 138 \
                and inside[r - 2:r + 3, c - 2:c + 3].all():
            hot.append((r, c))
        if len(hot) == 80:
            break
    hr, hc = np.array(hot).T
    noisy[hr, hc] = truth[hr, hc] * rng.uniform(10, 200, len(hot)) + 5e-5
    clean = dn.denoise_frame(noisy, BG, 4.0, erode=1)

    expected = dn.cut_background(truth, BG)  # a hot pixel is removed if it reads as its clean value
    removed = np.abs(clean[hr, hc] - expected[hr, hc]) <= 0.05 * truth[hr, hc]
    assert removed.mean() >= 0.95
    lit = np.isfinite(clean) & (truth > BG)
    lit[hr, hc] = False
    assert lit.sum() > 5000
    rel = np.abs(clean[lit] - truth[lit]) / truth[lit]
    assert rel.mean() < 0.01
    # below-background pixels are cut to 0, outside stays NaN, the footprint loses exactly its outer ring
    dim = np.isfinite(clean) & (truth < BG)
    assert dim.any() and np.all(clean[dim] == 0)
    from scipy.ndimage import binary_erosion

    np.testing.assert_array_equal(np.isfinite(clean), binary_erosion(inside, np.ones((3, 3), bool), border_value=0))


def test_spike_rule_and_background_cut():
    x = np.full((5, 5), 1e-5, np.float32)
    x[2, 2] = 4.1e-5  # > 4 x max(neighbours) = 4e-5 -> spike
    x[0, 0] = 3.9e-5  # not a spike
    y, spike = dn.remove_spikes(x, 4.0, BG)
    assert spike.sum() == 1 and spike[2, 2] and y[2, 2] == pytest.approx(1e-5)
    assert y[0, 0] == pytest.approx(3.9e-5)
    # an isolated bright pixel on a dark (0) background is a spike if above background, not if below
    z = np.zeros((5, 5), np.float32)
    z[1, 1], z[3, 3] = 5e-6, 1e-6
    y, spike = dn.remove_spikes(z, 4.0, BG)
    assert spike[1, 1] and not spike[3, 3] and y[1, 1] == 0
    # a real light two pixels wide is kept (each pixel has an equally bright neighbour), and so is
    # a bright pixel next to a half-as-bright one, although both far exceed their neighbourhood median
    w = np.full((6, 6), 1e-5, np.float32)
    w[2, 2:4] = 9e-5
    w[4, 1], w[4, 0] = 8e-5, 4e-5
    y, spike = dn.remove_spikes(w, 4.0, BG)
    assert not spike.any() and np.array_equal(y, w)
    np.testing.assert_allclose(dn.neighbour_max(np.array([[1, 5, np.nan], [2, 3, 4]], np.float32)),
                               [[5, 4, 5], [5, 5, 5]])
    np.testing.assert_array_equal(dn.cut_background(np.array([1e-6, 2e-6, 3e-6, np.nan], np.float32), BG),
                                  np.array([0, 2e-6, 3e-6, np.nan], np.float32))


def test_denoise_luojia_year_files(tmp_path):
    rr, cc = np.mgrid[0:40, 0:50]
    truth = (1e-5 + 1e-7 * rr + 2e-7 * cc).astype(np.float32)
    truth[:3], truth[-3:], truth[:, :3], truth[:, -3:] = np.nan, np.nan, np.nan, np.nan
    noisy = truth.copy()
    noisy[20, 25] *= 50
    t = Affine(0.00125, 0, 108.9, 0, -0.00125, 34.3)
    g = Grid("EPSG:4326", t, 50, 40, 1)
    cal_dir = tmp_path / "cal"
    write_raster(cal_dir / "LJ_A.tif", noisy, g, nodata=float("nan"), band_names=["radiance"])
    (cal_dir / "gains.json").write_text(json.dumps({"reference": "LJ_A", "gains": {"LJ_A": 1.0}}))
    outs = dn.denoise_luojia_year(make_cfg(), cal_dir, tmp_path / "den")
    assert [p.name for p in outs] == ["LJ_A.tif"]
    assert (tmp_path / "den" / "gains.json").read_text() == (cal_dir / "gains.json").read_text()
    with rasterio.open(outs[0]) as src:
        assert src.transform == t and src.dtypes[0] == "float32"
        out = src.read(1)
    assert out[20, 25] == pytest.approx(truth[20, 25], rel=0.05)
    assert np.isnan(out[3]).all() and np.isfinite(out[4, 4:-4]).all()  # one ring eroded
    np.testing.assert_allclose(out[5:-5, 5:25], truth[5:-5, 5:25], rtol=1e-6)
