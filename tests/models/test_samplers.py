"""Samplers and noise conventions against closed-form Gaussian cases.

Data x0 ~ N(MU, S^2) independently per pixel. In the sigma scale x = x0 + sigma * eps:
    E[x0 | x] = MU + S^2 / (S^2 + sigma^2) * (x - MU)
and the probability-flow ODE dx/dsigma = (x - E[x0|x]) / sigma = sigma (x - MU) / (S^2 + sigma^2)
keeps (x - MU) / sqrt(S^2 + sigma^2) constant, so from x at sigma_max it ends at
    x(0) = MU + S * (x - MU) / sqrt(S^2 + sigma_max^2).
Flow matching x_t = (1 - t) x0 + t eps: E[eps - x0 | x_t] = -MU + (t - (1 - t) S^2) / V_t * (x_t - (1 - t) MU)
with V_t = (1 - t)^2 S^2 + t^2; (x_t - (1 - t) MU) / sqrt(V_t) is constant along the flow, so x1 ends at MU + S * x1.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pandafine.models.noise import (
    DiffusionSchedule,
    alpha_bar_from_sigma,
    cosine_alpha_bar,
    denoiser_from_vp_model,
    diffuse,
    eps_from_v,
    eps_from_x0,
    flow_interpolate,
    flow_velocity,
    grid_noise,
    karras_sigmas,
    linear_alpha_bar,
    loglinear_sigmas,
    make_grid_noise_fn,
    make_torch_noise_fn,
    sigma_from_alpha_bar,
    v_from_x0_eps,
    x0_from_eps,
    x0_from_v,
    x0_from_velocity,
)
from pandafine.models.samplers import (
    sample_ddim,
    sample_ddpm,
    sample_dpmpp_2m,
    sample_euler,
    sample_flow_euler,
    sample_flow_heun,
    sample_staged,
)

MU, S = 0.7, 0.5


def exact_denoiser(x, sigma, cond=None):
    return MU + S ** 2 / (S ** 2 + sigma ** 2) * (x - MU)


def exact_velocity(x, t, cond=None):
    var = (1 - t) ** 2 * S ** 2 + t ** 2
    return -MU + (t - (1 - t) * S ** 2) / var * (x - (1 - t) * MU)


def ode_end(x_sigma, sigma_max):
    return MU + S * (x_sigma - MU) / np.sqrt(S ** 2 + sigma_max ** 2)


class Counter:
    def __init__(self, fn):
        self.fn, self.calls = fn, 0

    def __call__(self, *args):
        self.calls += 1
        return self.fn(*args)


@pytest.fixture(scope="module")
def sched():
    return DiffusionSchedule.linear()


def marginal_xT(z, sched):
    """Exact VP-scale sample of the Gaussian data's marginal at t = T-1, from standard normals z."""
    a = float(sched.alpha_bar[-1])
    return np.sqrt(a) * (MU + np.sqrt(S ** 2 + sched.sigma_max ** 2) * z)


def z_like(shape, seed=0):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def maxerr(a, b):
    return float((a - b).abs().max())


# ------------------------------------------------------------------ conventions


def test_flow_time_convention():
    x0, eps = z_like((1, 1, 4, 4), 1), z_like((1, 1, 4, 4), 2)
    assert torch.equal(flow_interpolate(x0, eps, 0.0), x0)
    assert torch.equal(flow_interpolate(x0, eps, 1.0), eps)
    x_t = flow_interpolate(x0, eps, 0.3)
    # v = dx_t/dt
    assert maxerr((flow_interpolate(x0, eps, 0.3 + 1e-6) - x_t) / 1e-6, flow_velocity(x0, eps)) < 1e-6
    assert maxerr(x0_from_velocity(x_t, flow_velocity(x0, eps), 0.3), x0) < 1e-12


@pytest.mark.parametrize("ab", [linear_alpha_bar(1000), cosine_alpha_bar(1000)])
def test_diffusion_schedules(ab):
    assert ab.shape == (1000,) and np.all((ab > 0) & (ab < 1))
    assert np.all(np.diff(ab) < 0)  # larger t = more noise
    assert ab[-1] < 1e-4 and ab[0] > 0.999
    sig = sigma_from_alpha_bar(ab)
    assert np.all(np.diff(sig) > 0)
    np.testing.assert_allclose(alpha_bar_from_sigma(sig), ab, rtol=1e-12)


def test_schedule_known_values_and_errors(sched):
    assert sched.alpha_bar[0] == pytest.approx(1 - 1e-4)
    assert sched.alpha_bar[1] == pytest.approx((1 - 1e-4) * (1 - (1e-4 + 0.0199 / 999)))
    assert sched.t_of_sigma(sched.sigmas[123]) == pytest.approx(123)
    assert sched.alpha_bar_at(123.0) == pytest.approx(sched.alpha_bar[123])
    assert list(sched.timesteps(3)) == [999, 500, 0]  # np.round: half to even
    with pytest.raises(ValueError, match="strictly decreasing"):
        DiffusionSchedule(np.array([0.5, 0.6]))
    with pytest.raises(ValueError, match="steps=1001"):
        sched.timesteps(1001)
    k = karras_sigmas(5, 0.01, 80.0)
    assert k[0] == pytest.approx(80) and k[-2] == pytest.approx(0.01) and k[-1] == 0 and len(k) == 6
    ll = loglinear_sigmas(3, 0.1, 10.0, append_zero=False)
    np.testing.assert_allclose(ll, [10, 1, 0.1])


def test_parameterisation_round_trips():
    x0, eps = z_like((2, 3, 5, 5), 3), z_like((2, 3, 5, 5), 4)
    for a in (0.9, 0.3, 1e-3):
        x_t = diffuse(x0, eps, a)
        assert maxerr(x0_from_eps(x_t, eps, a), x0) < 1e-9
        assert maxerr(eps_from_x0(x_t, x0, a), eps) < 1e-9
        v = v_from_x0_eps(x0, eps, a)
        assert maxerr(x0_from_v(x_t, v, a), x0) < 1e-9
        assert maxerr(eps_from_v(x_t, v, a), eps) < 1e-9
        # VP <-> sigma scale: x_t / sqrt(a) = x0 + sigma * eps
        assert maxerr(x_t / a ** 0.5, x0 + sigma_from_alpha_bar(a) * eps) < 1e-9


@pytest.mark.parametrize("prediction", ["eps", "v", "x0"])
def test_denoiser_from_vp_model(sched, prediction):
    def model(x_t, t, cond):  # the exact VP network of the Gaussian data
        a = sched.alpha_bar_at(t)
        x0 = exact_denoiser(x_t / a ** 0.5, sigma_from_alpha_bar(a))
        eps = eps_from_x0(x_t, x0, a)
        return {"eps": eps, "v": v_from_x0_eps(x0, eps, a), "x0": x0}[prediction]

    den = denoiser_from_vp_model(model, sched, prediction)
    x = z_like((1, 1, 4, 4), 5) * 3
    for sigma in (sched.sigmas[10], 1.0, sched.sigmas[900]):
        assert maxerr(den(x, sigma, None), exact_denoiser(x, sigma)) < 1e-6


# ------------------------------------------------------------------ grid noise


def test_grid_noise_overlap_and_statistics():
    a = grid_noise(7, 100, 200, 64, 80, channels=2, step=3)
    b = grid_noise(7, 130, 250, 64, 80, channels=2, step=3)
    assert a.shape == (2, 64, 80) and a.dtype == np.float32
    np.testing.assert_array_equal(a[:, 30:, 50:], b[:, :34, :30])  # shared pixels, identical noise
    np.testing.assert_array_equal(grid_noise(7, -5, -5, 10, 10)[:, 5:, 5:], grid_noise(7, 0, 0, 5, 5))
    z = grid_noise(1, 0, 0, 256, 256, channels=1, step=0).astype(np.float64).ravel()
    assert abs(z.mean()) < 0.02 and abs(z.std() - 1) < 0.02
    assert abs(np.mean(z ** 3)) < 0.05 and abs(np.mean(z ** 4) - 3) < 0.1  # Gaussian, not just unit variance
    assert abs(np.corrcoef(z[:-1], z[1:])[0, 1]) < 0.02  # neighbouring pixels independent
    base = grid_noise(1, 0, 0, 64, 64)
    for other in (grid_noise(2, 0, 0, 64, 64), grid_noise(1, 0, 0, 64, 64, step=1)):
        assert abs(np.corrcoef(base.ravel(), other.ravel())[0, 1]) < 0.05
    two = grid_noise(1, 0, 0, 64, 64, channels=2)
    np.testing.assert_array_equal(two[0], base[0])
    assert abs(np.corrcoef(two[0].ravel(), two[1].ravel())[0, 1]) < 0.05


def test_make_grid_noise_fn():
    fn = make_grid_noise_fn(3, 10, 20)
    like = torch.zeros(1, 2, 8, 8, dtype=torch.float64)
    out = fn(4, like)
    assert out.shape == like.shape and out.dtype == torch.float64
    np.testing.assert_allclose(out[0].numpy(), grid_noise(3, 10, 20, 8, 8, channels=2, step=4))
    with pytest.raises(ValueError, match="batch size 1"):
        fn(1, torch.zeros(2, 1, 4, 4))


# ------------------------------------------------------------------ diffusion samplers


def test_ddim_deterministic_first_order(sched):
    x_T = marginal_xT(z_like((1, 1, 16, 16)), sched)
    exact = ode_end(x_T / np.sqrt(sched.alpha_bar[-1]), sched.sigma_max)
    assert torch.equal(sample_ddim(exact_denoiser, x_T, sched, 20), sample_ddim(exact_denoiser, x_T, sched, 20))
    errs = [maxerr(sample_ddim(exact_denoiser, x_T, sched, n), exact) for n in (10, 20, 40, 80)]
    ratios = [e0 / e1 for e0, e1 in zip(errs, errs[1:])]
    assert all(1.7 < r < 2.3 for r in ratios), (errs, ratios)  # first order
    assert errs[-1] < 0.06


def test_dpmpp_2m_deterministic_second_order(sched):
    z = z_like((1, 1, 16, 16))
    x = MU + np.sqrt(S ** 2 + sched.sigma_max ** 2) * z
    exact = ode_end(x, sched.sigma_max)
    sig = loglinear_sigmas(20, sched.sigma_min, sched.sigma_max)
    assert torch.equal(sample_dpmpp_2m(exact_denoiser, x, sig), sample_dpmpp_2m(exact_denoiser, x, sig))
    calls = Counter(exact_denoiser)
    sample_dpmpp_2m(calls, x, sig)
    assert calls.calls == 20
    errs = [maxerr(sample_dpmpp_2m(exact_denoiser, x, loglinear_sigmas(n, sched.sigma_min, sched.sigma_max)), exact)
            for n in (10, 20, 40, 80)]
    assert all(e1 < e0 for e0, e1 in zip(errs, errs[1:])), errs
    assert errs[2] / errs[3] > 3.5, errs  # second order once resolved
    assert maxerr(sample_dpmpp_2m(exact_denoiser, x, loglinear_sigmas(50, sched.sigma_min, sched.sigma_max)),
                  exact) < 5e-3


def test_euler_first_order(sched):
    x = MU + np.sqrt(S ** 2 + sched.sigma_max ** 2) * z_like((1, 1, 16, 16))
    exact = ode_end(x, sched.sigma_max)
    errs = [maxerr(sample_euler(exact_denoiser, x, loglinear_sigmas(n, sched.sigma_min, sched.sigma_max)), exact)
            for n in (20, 40, 80)]
    ratios = [e0 / e1 for e0, e1 in zip(errs, errs[1:])]
    assert all(1.7 < r < 2.3 for r in ratios), (errs, ratios)


def test_ddpm_statistics_and_seeding(sched):
    x_T = marginal_xT(z_like((1, 1, 96, 96), 11), sched)
    y = sample_ddpm(exact_denoiser, x_T, sched, 1000, make_torch_noise_fn(1))
    assert torch.isfinite(y).all()
    assert abs(float(y.mean()) - MU) < 0.02 and abs(float(y.std()) / S - 1) < 0.03
    small = x_T[..., :8, :8]
    a = sample_ddpm(exact_denoiser, small, sched, 30, make_torch_noise_fn(5))
    assert torch.equal(a, sample_ddpm(exact_denoiser, small, sched, 30, make_torch_noise_fn(5)))
    assert not torch.equal(a, sample_ddpm(exact_denoiser, small, sched, 30, make_torch_noise_fn(6)))
    with pytest.raises(ValueError, match="noise_fn"):
        sample_ddim(exact_denoiser, small, sched, 10, eta=0.5)


def test_ddpm_grid_noise_overlapping_tiles_agree(sched):
    # A pixel-wise denoiser + position-seeded noise: overlapping tiles give identical shared pixels.
    x_a = torch.from_numpy(grid_noise(9, 0, 0, 12, 12, step=0)).double()[None]
    x_b = torch.from_numpy(grid_noise(9, 4, 6, 12, 12, step=0)).double()[None]
    ya = sample_ddpm(exact_denoiser, x_a, sched, 25, make_grid_noise_fn(9, 0, 0))
    yb = sample_ddpm(exact_denoiser, x_b, sched, 25, make_grid_noise_fn(9, 4, 6))
    assert torch.equal(ya[..., 4:, 6:], yb[..., :8, :6])


def test_staged_calls_and_statistics(sched):
    x_T = marginal_xT(z_like((1, 1, 96, 96), 12), sched)
    calls = Counter(exact_denoiser)
    y = sample_staged(calls, x_T, sched, switch_t=50, fast_steps=20, slow_steps=51, eta=1.0,
                      noise_fn=make_torch_noise_fn(2))
    assert calls.calls == 20 + 51
    assert torch.isfinite(y).all()
    assert abs(float(y.mean()) - MU) < 0.02 and abs(float(y.std()) / S - 1) < 0.03
    # deterministic second stage: close to the exact PF-ODE endpoint
    exact = ode_end(x_T / np.sqrt(sched.alpha_bar[-1]), sched.sigma_max)
    y0 = sample_staged(exact_denoiser, x_T, sched, switch_t=50, fast_steps=20, slow_steps=51, eta=0.0)
    assert maxerr(y0, exact) < 5e-3
    with pytest.raises(ValueError, match="switch_t"):
        sample_staged(exact_denoiser, x_T, sched, switch_t=999, fast_steps=2, slow_steps=2)


# ------------------------------------------------------------------ flow samplers


def test_flow_euler_and_heun_orders():
    x1 = z_like((1, 1, 16, 16), 13)
    exact = MU + S * x1
    e_eu = [maxerr(sample_flow_euler(exact_velocity, x1, n), exact) for n in (16, 32, 64)]
    e_he = [maxerr(sample_flow_heun(exact_velocity, x1, n), exact) for n in (16, 32, 64)]
    assert all(1.8 < a / b < 2.2 for a, b in zip(e_eu, e_eu[1:])), e_eu
    assert all(3.3 < a / b < 4.5 for a, b in zip(e_he, e_he[1:])), e_he
    assert e_he[-1] < 5e-4 and e_eu[-1] < 0.05
    calls = Counter(exact_velocity)
    sample_flow_heun(calls, x1, 8)
    assert calls.calls == 16
