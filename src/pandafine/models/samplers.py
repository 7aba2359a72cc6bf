"""Samplers as plain functions over a denoiser (k-diffusion style), torch on CPU.

Conventions are those of :mod:`pandafine.models.noise`. Interfaces:

Denoiser
    ``denoiser(x, sigma, cond) -> x0_hat`` where ``x`` is a tensor in the sigma
    scale (``x = x0 + sigma * eps``), ``sigma`` a Python float > 0 and ``cond``
    whatever conditioning the model takes (passed through untouched, may be None).
    It returns the estimate of ``E[x0 | x]``, same shape as ``x``. A VP network
    predicting eps/v/x0 at discrete timesteps is wrapped by
    :func:`pandafine.models.noise.denoiser_from_vp_model`.

Velocity (flow matching)
    ``velocity_fn(x, t, cond) -> v`` with ``t`` a Python float in ``[0, 1]``
    (``t = 1`` noise, ``t = 0`` data) and ``v`` the estimate of ``E[eps - x0 | x_t]``.

Noise
    ``noise_fn(step, like) -> tensor`` of standard normals shaped like ``like``;
    the samplers call it with ``step = i + 1`` at their ``i``-th step (step 0 is
    reserved for the initial noise, see :data:`pandafine.models.noise.INIT_NOISE_STEP`).
    :func:`pandafine.models.noise.make_grid_noise_fn` makes tile-consistent noise.

Scale of the input
    The schedule-based samplers (:func:`sample_ddpm`, :func:`sample_ddim`,
    :func:`sample_staged`) take ``x_T`` in the VP scale (``x_T ~ N(0, I)``
    approximately). The sigma samplers (:func:`sample_euler`,
    :func:`sample_dpmpp_2m`) take ``x`` in the sigma scale at ``sigmas[0]``
    (``x = sigmas[0] * noise`` approximately). All return the sample at the end
    (the data when the last sigma / timestep is 0 / clean).
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from pandafine.models.noise import DiffusionSchedule, loglinear_sigmas


def _check_sigmas(sigmas) -> list[float]:
    s = [float(v) for v in np.asarray(sigmas, dtype=np.float64).ravel()]
    if len(s) < 2 or any(b >= a for a, b in zip(s, s[1:])) or s[-1] < 0:
        raise ValueError(f"sigmas must be strictly decreasing, >= 0, at least 2 values; got {s[:4]}...{s[-2:]}")
    return s


def sample_euler(denoiser: Callable, x, sigmas: Sequence[float], cond: Any = None):
    """Euler on the probability-flow ODE ``dx/dsigma = (x - D(x, sigma)) / sigma``.

    One denoiser call per step (``len(sigmas) - 1`` calls); first order.
    """
    s = _check_sigmas(sigmas)
    for i in range(len(s) - 1):
        d = (x - denoiser(x, s[i], cond)) / s[i]
        x = x + d * (s[i + 1] - s[i])
    return x


def sample_dpmpp_2m(denoiser: Callable, x, sigmas: Sequence[float], cond: Any = None):
    """DPM-Solver++(2M) (Lu et al. 2022; k-diffusion's ``sample_dpmpp_2m``).

    Multistep second order in ``lambda = -log sigma``; the first step and a step
    to ``sigma = 0`` are first order. One denoiser call per step.
    """
    s = _check_sigmas(sigmas)
    old = None
    h_last = None
    for i in range(len(s) - 1):
        den = denoiser(x, s[i], cond)
        ratio = s[i + 1] / s[i]  # = exp(-h)
        if old is None or s[i + 1] == 0:
            d = den
        else:
            h = np.log(s[i] / s[i + 1])
            r = h_last / h
            d = (1 + 1 / (2 * r)) * den - (1 / (2 * r)) * old
        x = ratio * x + (1 - ratio) * d
        if s[i + 1] > 0:
            h_last = np.log(s[i] / s[i + 1])
        old = den
    return x


def _vp_loop(denoiser: Callable, x, schedule: DiffusionSchedule, timesteps: np.ndarray, eta: float,
             noise_fn: Callable | None, cond: Any):
    """DDIM(eta) over descending integer ``timesteps`` (VP scale), ending on clean data."""
    if eta < 0:
        raise ValueError(f"eta must be >= 0, got {eta}")
    if eta > 0 and noise_fn is None:
        raise ValueError(f"eta={eta} > 0 needs a noise_fn")
    ab = schedule.alpha_bar
    for i, t in enumerate(timesteps):
        a = float(ab[t])
        ap = float(ab[timesteps[i + 1]]) if i + 1 < len(timesteps) else 1.0
        sigma = float(np.sqrt((1 - a) / a))
        x0 = denoiser(x / np.sqrt(a), sigma, cond)
        eps = (x - np.sqrt(a) * x0) / np.sqrt(1 - a)
        var = eta ** 2 * (1 - ap) / (1 - a) * (1 - a / ap)
        x = np.sqrt(ap) * x0 + np.sqrt(max(1 - ap - var, 0.0)) * eps
        if var > 0:
            x = x + np.sqrt(var) * noise_fn(i + 1, x)
    return x


def sample_ddim(denoiser: Callable, x_T, schedule: DiffusionSchedule, steps: int, eta: float = 0.0,
                noise_fn: Callable | None = None, cond: Any = None, start_t: int | None = None):
    """DDIM (Song et al. 2021) from ``x_T`` (VP scale at ``start_t``, default ``T-1``) to data.

    ``steps`` evenly spaced integer timesteps (one denoiser call each); the last
    step goes to clean data. ``eta = 0`` is deterministic (first order PF-ODE solver),
    ``eta = 1`` is ancestral DDPM sampling on the strided schedule.
    """
    return _vp_loop(denoiser, x_T, schedule, schedule.timesteps(steps, start_t), eta, noise_fn, cond)


def sample_ddpm(denoiser: Callable, x_T, schedule: DiffusionSchedule, steps: int, noise_fn: Callable,
                cond: Any = None, start_t: int | None = None):
    """Ancestral DDPM sampling: the posterior ``q(x_prev | x_t, x0_hat)`` at each of ``steps`` timesteps.

    With ``steps = T`` it is the original DDPM sampler (variance ``beta_tilde``);
    fewer steps use the strided posterior (``beta = 1 - a_t / a_prev``).
    """
    return _vp_loop(denoiser, x_T, schedule, schedule.timesteps(steps, start_t), 1.0, noise_fn, cond)


def sample_staged(denoiser: Callable, x_T, schedule: DiffusionSchedule, switch_t: int, fast_steps: int,
                  slow_steps: int, eta: float = 1.0, noise_fn: Callable | None = None, cond: Any = None):
    """DPM-Solver++(2M) through the high-noise stage, then a discrete DDPM/DDIM stage.

    Stage 1: ``fast_steps`` DPM-Solver++(2M) steps on log-uniform sigmas from
    ``sigma[T-1]`` down to exactly ``sigma[switch_t]``. Stage 2: ``slow_steps``
    DDIM(``eta``) steps (``eta = 1``: DDPM, needs ``noise_fn``) on integer
    timesteps from ``switch_t`` to clean data. Exactly ``fast_steps + slow_steps``
    denoiser calls.

    Parameters
    ----------
    x_T : tensor
        Initial noise in the VP scale at ``t = T-1``.
    switch_t : int
        Timestep where stage 2 starts, ``0 <= switch_t < T-1``.
    """
    T = schedule.T
    if not 0 <= switch_t < T - 1:
        raise ValueError(f"switch_t={switch_t}: need 0 <= switch_t < {T - 1}")
    if fast_steps < 1 or slow_steps < 1:
        raise ValueError(f"fast_steps and slow_steps must be >= 1, got {fast_steps} and {slow_steps}")
    sig = schedule.sigmas
    a_T = float(schedule.alpha_bar[-1])
    sigmas = loglinear_sigmas(fast_steps + 1, float(sig[switch_t]), float(sig[-1]), append_zero=False)
    x = sample_dpmpp_2m(denoiser, x_T / np.sqrt(a_T), sigmas, cond)
    x = x * np.sqrt(float(schedule.alpha_bar[switch_t]))
    return sample_ddim(denoiser, x, schedule, slow_steps, eta=eta, noise_fn=noise_fn, cond=cond, start_t=switch_t)


def sample_flow_euler(velocity_fn: Callable, x1, steps: int, cond: Any = None):
    """Euler on ``dx/dt = v(x, t)`` from ``t = 1`` (noise ``x1``) to ``t = 0`` in ``steps`` equal steps."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    ts = np.linspace(1.0, 0.0, steps + 1)
    x = x1
    for i in range(steps):
        x = x + (ts[i + 1] - ts[i]) * velocity_fn(x, float(ts[i]), cond)
    return x


def sample_flow_heun(velocity_fn: Callable, x1, steps: int, cond: Any = None):
    """Heun (explicit trapezoid, second order) from ``t = 1`` to ``t = 0``: 2 velocity calls per step."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    ts = np.linspace(1.0, 0.0, steps + 1)
    x = x1
    for i in range(steps):
        dt = ts[i + 1] - ts[i]
        v1 = velocity_fn(x, float(ts[i]), cond)
        x_pred = x + dt * v1
        v2 = velocity_fn(x_pred, float(ts[i + 1]), cond)
        x = x + dt * 0.5 * (v1 + v2)
    return x


__all__ = ["sample_euler", "sample_dpmpp_2m", "sample_ddim", "sample_ddpm", "sample_staged",
           "sample_flow_euler", "sample_flow_heun"]
