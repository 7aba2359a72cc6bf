"""Seamless tiled sampling and ensembles, with closed-form denoisers and a briefly trained model.

Closed-form case (spatially correlated): the data are ``x0 = mu(cond) + f`` with
``f`` a stationary Gaussian field (white noise smoothed by a Gaussian of std
ELL px, scaled to std S). Its exact denoiser in the sigma scale is the Wiener
filter ``E[x0 | x] = mu + IFFT(P / (P + sigma^2) * FFT(x - mu))``; we apply its
kernel truncated to a (2R+1)^2 window with zero padding, so (like a network) a
pixel's value depends on a bounded neighbourhood and tile edges matter.

Closed-form case (per pixel): x0 ~ N(MU, S^2) independently; the exact denoiser
gives samples of exactly that law, so the ensemble mean converges to MU at the
rate S / sqrt(N).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from fake_tiles import make_scene, stage_config, write_fake_train_zarr
from pandafine.inference import sampling as TS
from pandafine.models.noise import DiffusionSchedule, karras_sigmas, make_torch_noise_fn
from pandafine.models.registry import load_trained_model
from pandafine.models.samplers import sample_ddim, sample_dpmpp_2m
from repo_paths import REPO

S, ELL, R, GRID = 1.0, 2.0, 8, 64
SCHED = DiffusionSchedule.linear(1000)


def _wiener_kernel(sigma: float) -> torch.Tensor:
    g1 = np.exp(-0.5 * (np.minimum(np.arange(GRID), GRID - np.arange(GRID)) / ELL) ** 2)
    g = np.outer(g1, g1)
    power = np.abs(np.fft.fft2(g)) ** 2
    power *= S ** 2 / power.mean()  # field variance = mean(power) = S^2
    h = np.real(np.fft.ifft2(power / (power + sigma ** 2)))
    h = np.fft.fftshift(h)
    c = GRID // 2
    return torch.from_numpy(h[c - R:c + R + 1, c - R:c + R + 1].astype(np.float32))[None, None]


def wiener_denoiser(x, sigma, cond):
    """E[x0 | x] for x0 = cond + f (truncated Wiener filter), sigma scale."""
    return cond + F.conv2d(x - cond, _wiener_kernel(float(sigma)), padding=R)


def wiener_sampler(kind="ddim", steps=10):
    """Tile sampler: inputs channel 0 is mu; 'radiance' is the sampled x0 itself."""
    def sample(inputs, noise_fn):
        mu = torch.from_numpy(np.ascontiguousarray(inputs[:, :1]))
        z = noise_fn(0, mu)
        if kind == "ddim":
            x = sample_ddim(wiener_denoiser, z, SCHED, steps, eta=0.0, cond=mu)
        else:
            sig = karras_sigmas(steps, SCHED.sigma_min, SCHED.sigma_max)
            x = sample_dpmpp_2m(wiener_denoiser, z * float(sig[0]), sig, cond=mu)
        return x[:, 0].numpy()
    return sample


def _mu(h, w):
    yy, xx = np.mgrid[0:h, 0:w]
    return (3 * np.exp(-((yy - h / 3) ** 2 + (xx - w / 2) ** 2) / (2 * 12 ** 2))).astype(np.float32)[None]


def torch_tile_noise(seed, origins):
    """Control: noise that does not depend on the grid position (a fresh generator per tile batch)."""
    return make_torch_noise_fn(seed * 100_003 + origins[0][0] * 1009 + origins[0][1])


@pytest.mark.parametrize("kind", ["ddim", "dpmpp_2m"])
def test_wiener_tiled_sampling_matches_one_pass_without_seams(kind):
    mu = _mu(96, 96)
    sample = wiener_sampler(kind)
    one = TS.sample_one_pass(sample, mu, seed=9, row0=512, col0=-40)
    # the closed form is meaningful: the sample's field has about the data's std S
    assert np.std(one - mu[0]) == pytest.approx(S, rel=0.2)
    tiled = TS.sample_region(sample, mu, tile=32, overlap=8, seed=9, row0=512, col0=-40, batch_size=2)
    rel = TS.relative_rmse(tiled, one)
    seams = TS.seam_statistics(tiled, 32, 8)
    print(f"wiener {kind}: tiled vs one-pass relative RMSE {rel:.4f}; seam ratio {seams['ratio']:.3f} "
          f"(border {seams['border']:.4f}, inside {seams['inside']:.4f})")
    assert rel <= 0.02
    assert seams["ratio"] <= 1.1
    # the noise really is positional: the same region at another grid position is another sample
    moved = TS.sample_region(sample, mu, tile=32, overlap=8, seed=9, row0=0, col0=0)
    assert TS.relative_rmse(moved, one) > 0.2


def test_seam_measure_detects_unblended_tiles():
    """Without overlap the tile edges show (zero-padding edge effects, or other noise): blending is needed."""
    mu = _mu(96, 96)
    sample = wiener_sampler("ddim")
    ratios = {}
    for name, make_noise in (("grid", TS.make_batch_grid_noise_fn), ("per-tile", torch_tile_noise)):
        img = TS.sample_region(sample, mu, tile=32, overlap=0, window="constant", seed=3, make_noise=make_noise)
        ratios[name] = TS.seam_statistics(img, 32, 0.0)["ratio"]
    print(f"no overlap: seam ratio with grid noise {ratios['grid']:.3f}, with per-tile noise {ratios['per-tile']:.3f}")
    assert ratios["grid"] > 1.5 and ratios["per-tile"] > 1.5


def test_position_independent_noise_breaks_tile_agreement():
    """Blended tiles with their own noise are not the one-pass sample (grid noise: <= 2 %, test above)."""
    mu = _mu(96, 96)
    sample = wiener_sampler("ddim")
    one = TS.sample_one_pass(sample, mu, seed=3)
    own = TS.sample_region(sample, mu, tile=32, overlap=8, seed=3, make_noise=torch_tile_noise)
    rel = TS.relative_rmse(own, one)
    print(f"per-tile noise: tiled vs one-pass relative RMSE {rel:.3f}")
    assert rel > 0.2


def test_batch_grid_noise_is_the_grid_window():
    from pandafine.models.noise import grid_noise

    fn = TS.make_batch_grid_noise_fn(4, [(10, 20), (10, 36)])
    z = fn(3, torch.zeros(2, 1, 8, 16)).numpy()
    big = grid_noise(4, 10, 20, 8, 32, step=3)
    assert np.array_equal(z[0, 0], big[0, :, :16]) and np.array_equal(z[1, 0], big[0, :, 16:])
    with pytest.raises(ValueError, match="2 tile origins"):
        fn(0, torch.zeros(3, 1, 8, 8))


def test_tile_border_pairs():
    # tiles at 0, 24, 48, 64 (last snapped) of size 32 over 96: edges at 24, 32, 48, 56, 64, 80
    assert TS.tile_border_pairs(96, 32, 8).tolist() == [23, 31, 47, 55, 63, 79]


# --------------------------------------------------------------------------- ensembles (per-pixel Gaussian)

MU, SP = 0.7, 0.5


def _gauss_sampler(steps=25):
    def den(x, sigma, cond=None):
        return MU + SP ** 2 / (SP ** 2 + sigma ** 2) * (x - MU)

    def sample(inputs, noise_fn):
        like = torch.zeros((inputs.shape[0], 1) + inputs.shape[2:])
        return sample_ddim(den, noise_fn(0, like), SCHED, steps)[:, 0].numpy()
    return sample


def test_ensemble_spread_and_convergence():
    x = np.zeros((1, 32, 32), np.float32)
    sample = _gauss_sampler()
    tiling = dict(tile=16, overlap=4)
    # identical noise, deterministic sampler: identical members, zero spread
    mean, spread = TS.sample_region_ensemble(sample, x, 4, seeds=[5, 5, 5, 5], **tiling)
    single = TS.sample_region(sample, x, seed=5, **tiling)
    assert np.allclose(mean, single, atol=1e-6) and np.max(spread) < 1e-6
    # different seeds: the spread is the samples' std (s, measured across the pixels of one member; about
    # S, a little less with 25 first-order DDIM steps) and the mean converges to MU like s / sqrt(N)
    s = float(np.std(single))
    assert s == pytest.approx(SP, rel=0.2)
    errs = {}
    for n in (4, 64):
        mean, spread = TS.sample_region_ensemble(sample, x, n, seed=100, **tiling)
        errs[n] = float(np.sqrt(np.mean((mean - MU) ** 2)))
        assert errs[n] == pytest.approx(s / np.sqrt(n), rel=0.25)
        assert float(np.mean(spread)) == pytest.approx(s * np.sqrt(1 - 1 / n), rel=0.15)
    print(f"ensemble: sample std {s:.4f}; RMS(mean - MU) {errs[4]:.4f} (N=4), {errs[64]:.4f} (N=64); "
          f"s/sqrt(N) = {s / 2:.4f}, {s / 8:.4f}")
    assert errs[64] < errs[4] / 2.5


def test_ensemble_members_accumulate_exactly():
    rng = np.random.default_rng(0)
    members = {s: rng.normal(size=(5, 7)) for s in range(6)}
    mean, spread = TS.ensemble(lambda s: members[s], 6, seed=0)
    stack = np.stack([members[s] for s in range(6)])
    assert np.allclose(mean, stack.mean(0), atol=1e-6) and np.allclose(spread, stack.std(0), atol=1e-6)
    with pytest.raises(ValueError, match="3 members got 2 seeds"):
        TS.ensemble(lambda s: members[s], 3, seeds=[0, 1])


# --------------------------------------------------------------------------- a briefly trained model

@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Diffusion and flow models trained for a few epochs on the fake tiles."""
    from pandafine.training import train as T

    d = tmp_path_factory.mktemp("gen")
    zarr = write_fake_train_zarr(d / "train.zarr")
    out = {}
    for name in ("diffusion", "flow"):
        cfg = stage_config(epochs=3)
        cfg["model"] = {"name": name, "width": 8, "depth": 2, "sampler": {"kind": "ddim" if name == "diffusion"
                                                                         else "euler", "steps": 6}}
        T.train_model(cfg, zarr, d / name, progress=False)
        out[name] = load_trained_model(d / name)[0]
    out["dir"] = d  # checkpoints in dir/<name>/checkpoint.pt
    return out


@pytest.mark.parametrize("name,sampler", [("diffusion", {"kind": "ddim", "steps": 6}),
                                          ("diffusion", {"kind": "dpmpp_2m", "steps": 6}),
                                          ("flow", {"kind": "euler", "steps": 6}),
                                          ("flow", {"kind": "heun", "steps": 3})])
def test_trained_model_tiled_sampling(trained, name, sampler):
    inputs, _ = make_scene(96, seed=11)
    sample = TS.model_tile_sampler(trained[name], sampler)
    one = TS.sample_one_pass(sample, inputs, seed=5, row0=64, col0=128, multiple=4)
    tiled = TS.sample_region(sample, inputs, tile=32, overlap=8, seed=5, row0=64, col0=128, batch_size=4)
    rel = TS.relative_rmse(tiled, one)
    seams = TS.seam_statistics(tiled, 32, 8)
    other = TS.sample_one_pass(sample, inputs, seed=6, row0=64, col0=128, multiple=4)
    seed_rel = TS.relative_rmse(other, one)
    print(f"{name} {sampler}: tiled vs one-pass relative RMSE {rel:.4f}, seam ratio {seams['ratio']:.3f}, "
          f"another seed differs by {seed_rel:.3f}")
    assert np.isfinite(tiled).all()
    assert rel <= 0.02 and seams["ratio"] <= 1.1
    assert seed_rel > 10 * rel  # the agreement is not because the sample ignores its noise


def test_mask_channel_makes_nodata(trained):
    inputs, _ = make_scene(32, seed=2)
    inputs[0, :5, :7] = np.nan
    sample = TS.model_tile_sampler(trained["flow"])
    out = TS.sample_region(sample, inputs, tile=16, overlap=4, seed=1, mask_channel=0)
    assert np.isnan(out[:5, :7]).all() and np.isfinite(out[5:]).all()


# --------------------------------------------------------------------------- yearly products of a generative model

def _cube(path, inputs, year=2018):
    import zarr
    from affine import Affine

    from pandafine.core.channels import CHANNELS
    from pandafine.core.grid import Grid

    c, h, w = inputs.shape
    grid = Grid("EPSG:32649", Affine(125.0, 0, 300000.0, 0, -125.0, 3800000.0), w, h, 8)
    group = zarr.open_group(str(path), mode="w")
    arr = group.create_array("inputs", shape=inputs.shape, dtype="float32", chunks=(c, 32, 32), fill_value=np.nan)
    arr[:] = inputs
    group.attrs.update(channels=list(CHANNELS), year=year, grid=grid.to_dict())
    return path


@pytest.mark.parametrize("members", [1, 3])
def test_infer_year_samples_a_generative_checkpoint(trained, tmp_path, members):
    """pandafine infer on a diffusion checkpoint: the product is sample_region (ensemble) of the cube."""
    import rasterio
    import yaml

    from pandafine.inference.infer import infer_year
    from pandafine.product.catalog import read_product
    from pandafine.product.cog import validate_cog

    inputs, _ = make_scene(96, seed=4)
    inputs[0, :8, :16] = np.nan  # PANDA nodata
    cube = _cube(tmp_path / "2018.zarr", inputs.astype(np.float32))
    cfg = yaml.safe_load(open(REPO / "config.yaml"))
    cfg["infer"].update(tile=32, overlap=8, window="hann", batch_size=4, ensemble=members)
    cfg["product"]["blocksize"] = 256
    ck = trained["dir"] / "diffusion" / "checkpoint.pt"
    out = infer_year(cfg, cube, ck, tmp_path / "PANDA-FINE_2018.tif", progress=False)
    ok, errors, _ = validate_cog(out)
    assert ok, errors
    sample = TS.model_tile_sampler(trained["diffusion"])
    tiling = dict(tile=32, overlap=8, window="hann", batch_size=4, mask_channel=0)
    with rasterio.open(out) as src:
        arr = src.read()
        assert src.count == (2 if members > 1 else 1) and src.tags()["ensemble_members"] == str(members)
        assert src.descriptions[0] == "radiance" and (members == 1 or src.descriptions[1] == "radiance_spread")
    if members == 1:
        expected = TS.sample_region(sample, inputs, seed=0, **tiling)
        assert np.allclose(arr[0], expected, rtol=1e-5, atol=1e-12, equal_nan=True)
    else:
        mean, spread = TS.sample_region_ensemble(sample, inputs, members, seed=0, **tiling)
        assert np.allclose(arr[0], mean, rtol=1e-4, atol=1e-11, equal_nan=True)
        ok = np.isfinite(spread)
        diff = arr[1][ok].astype(np.float64) - spread[ok]
        scale = float(spread[ok].mean())
        print(f"ensemble product: spread - reference: median {np.median(np.abs(diff)) / scale:.2e}, "
              f"99 % {np.quantile(np.abs(diff), 0.99) / scale:.2e}, min {diff.min() / scale:.2e} (x mean spread)")
        # blended moments, then the spread: the reference where overlapping tiles agree, and never less than it
        # (their disagreement adds to the spread), up to float32 rounding
        assert np.median(np.abs(diff)) <= 1e-3 * scale and np.quantile(np.abs(diff), 0.99) <= 0.05 * scale
        assert diff.min() >= -1e-3 * scale
        assert float(np.nanmean(arr[1])) > 0
        assert read_product(out).bands == ("radiance", "radiance_spread")
    assert np.isnan(arr[:, :8, :16]).all() and np.isfinite(arr[:, 8:]).all()


def test_ensemble_needs_a_generative_model(tmp_path):
    from pandafine.inference.infer import InferParams

    with pytest.raises(ValueError, match="infer.ensemble"):
        InferParams(32, 8, "hann", 4, ("CPUExecutionProvider",), 0)
    sq = np.stack([np.full((2, 3), 2.0), np.full((2, 3), 5.0)]).astype(np.float32)  # E[x]=2, E[x^2]=5 -> sd 1
    assert np.allclose(TS.spread_from_moments(sq), np.stack([np.full((2, 3), 2.0), np.ones((2, 3))]))


def test_ensemble_file_beside_the_checkpoint_sets_the_members_recipe(trained, tmp_path):
    """ensemble.json (from pandafine uncertainty) makes the product's members recentred on the base, antithetic
    and scaled: tile by tile it equals combine_members of the same grid-noise members; one made for another
    checkpoint is refused, naming the file."""
    import json
    import shutil

    from pandafine.core.scaling import log_to_radiance
    from pandafine.inference import ensemble as EN

    d = tmp_path / "res"
    d.mkdir()
    ck = d / "checkpoint.pt"
    shutil.copy(trained["dir"] / "diffusion" / "checkpoint.pt", ck)
    plain = TS.checkpoint_tile_predictor(ck, 4)
    assert "ensemble_recipe" not in plain[3]
    spec = EN.EnsembleSpec(4, seed=5, antithetic=True, recentre=True, scale=1.7)
    EN.write_ensemble_file(d, spec, fitted_on="test")
    predict, bands, finalize, tags = TS.checkpoint_tile_predictor(ck, 4)
    assert json.loads(tags["ensemble_recipe"])["scale"] == 1.7 and tags["sample_seed"] == "5"
    inputs, _ = make_scene(32, seed=2)
    batch = inputs[None].astype(np.float32)
    got = finalize(predict(3, [7], batch)[0])
    model = trained["diffusion"]
    zb, z = EN.sample_members(model, torch.from_numpy(batch),
                              EN.member_noise_fns(spec, lambda s: TS.make_batch_grid_noise_fn(s, [(3, 7)])))
    rad = log_to_radiance(EN.combine_members(z, zb, spec))[:, 0]
    np.testing.assert_allclose(got[0], rad.mean(axis=0), rtol=1e-4, atol=1e-12)
    np.testing.assert_allclose(got[1], rad.std(axis=0), rtol=2e-3, atol=1e-9)
    (d / EN.ENSEMBLE_FILE).write_text(json.dumps({**json.loads((d / EN.ENSEMBLE_FILE).read_text()),
                                                  "checkpoint_sha256": "0" * 64}))
    with pytest.raises(ValueError, match=r"ensemble\.json: made for another checkpoint"):
        TS.checkpoint_tile_predictor(ck, 4)
