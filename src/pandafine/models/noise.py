"""Noise schedules, parameterisation conversions and position-seeded noise.

This module is THE one place that pins the time conventions of the generative
models (:mod:`pandafine.models.samplers` follows it).

Diffusion (variance preserving, discrete time)
    Discrete timesteps ``t = 0 .. T-1``; larger ``t`` = more noise.
    ``alpha_bar[t]`` is the signal fraction after ``t + 1`` noising steps
    (``alpha_bar[t] = prod_{k<=t} (1 - beta[k])``), strictly decreasing in ``t``,
    with ``alpha_bar[0] < 1``; "t = -1" means clean data (``alpha_bar = 1``)::

        x_t = sqrt(alpha_bar[t]) * x0 + sqrt(1 - alpha_bar[t]) * eps,   eps ~ N(0, I)

Diffusion (continuous sigma, the ODE samplers' view)
    The same process rescaled: ``x_sigma = x_t / sqrt(alpha_bar) = x0 + sigma * eps``
    with ``sigma = sqrt((1 - alpha_bar) / alpha_bar)`` (so
    ``alpha_bar = 1 / (1 + sigma**2)``); sigma grows with ``t``, ``sigma = 0`` is data.

Parameterisations (VP form, per timestep)
    eps-prediction ``eps``; x0-prediction ``x0``; v-prediction
    ``v = sqrt(alpha_bar) * eps - sqrt(1 - alpha_bar) * x0``.

Flow matching (rectified flow)
    ``t`` in ``[0, 1]``, ``t = 0`` is data and ``t = 1`` is noise::

        x_t = (1 - t) * x0 + t * eps,   velocity v = dx_t/dt = eps - x0

    Sampling integrates ``dx/dt = v`` from ``t = 1`` down to ``t = 0``.

Position-seeded noise
    :func:`grid_noise` gives a standard normal value that depends only on
    ``(seed, step, channel, absolute grid row, absolute grid col)``, so
    overlapping tiles draw identical noise for the pixels they share.

Everything here is plain arithmetic that works on numpy arrays and on torch
tensors (torch is imported lazily, only by :func:`make_grid_noise_fn` and
:func:`make_torch_noise_fn`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

#: Default number of discrete diffusion timesteps.
DEFAULT_T = 1000
#: Step id reserved for the initial noise ``x_T`` / ``x_1``; samplers call ``noise_fn(i + 1, x)`` at step ``i``.
INIT_NOISE_STEP = 0


# --------------------------------------------------------------------------- schedules


def linear_alpha_bar(T: int = DEFAULT_T, beta_start: float = 1e-4, beta_end: float = 0.02) -> np.ndarray:
    """``alpha_bar[t]`` (float64, length ``T``) for betas linear from ``beta_start`` to ``beta_end`` (DDPM)."""
    if T < 1 or not 0 < beta_start <= beta_end < 1:
        raise ValueError(f"linear schedule needs T >= 1 and 0 < beta_start <= beta_end < 1, got "
                         f"T={T}, beta_start={beta_start}, beta_end={beta_end}")
    betas = np.linspace(beta_start, beta_end, T, dtype=np.float64)
    return np.cumprod(1.0 - betas)


def cosine_alpha_bar(T: int = DEFAULT_T, s: float = 0.008, max_beta: float = 0.999) -> np.ndarray:
    """``alpha_bar[t]`` (float64, length ``T``) of the cosine schedule (Nichol & Dhariwal 2021).

    ``f(u) = cos((u + s) / (1 + s) * pi / 2)**2``; ``beta[t] = min(1 - f((t+1)/T) / f(t/T), max_beta)``.
    """
    if T < 1 or s < 0 or not 0 < max_beta < 1:
        raise ValueError(f"cosine schedule needs T >= 1, s >= 0, 0 < max_beta < 1, got T={T}, s={s}, "
                         f"max_beta={max_beta}")
    u = np.arange(T + 1, dtype=np.float64) / T
    f = np.cos((u + s) / (1 + s) * np.pi / 2) ** 2
    betas = np.minimum(1.0 - f[1:] / f[:-1], max_beta)
    return np.cumprod(1.0 - betas)


def sigma_from_alpha_bar(alpha_bar):
    """``sigma = sqrt((1 - alpha_bar) / alpha_bar)`` (numpy or torch)."""
    return ((1 - alpha_bar) / alpha_bar) ** 0.5


def alpha_bar_from_sigma(sigma):
    """``alpha_bar = 1 / (1 + sigma**2)`` (numpy or torch); inverse of :func:`sigma_from_alpha_bar`."""
    return 1 / (1 + sigma ** 2)


@dataclass(frozen=True, eq=False)
class DiffusionSchedule:
    """A discrete VP schedule: ``alpha_bar[t]`` for ``t = 0 .. T-1`` (see the module docstring).

    Parameters
    ----------
    alpha_bar : numpy.ndarray
        Strictly decreasing values in ``(0, 1)``.
    """

    alpha_bar: np.ndarray

    def __post_init__(self) -> None:
        a = np.asarray(self.alpha_bar, dtype=np.float64)
        if a.ndim != 1 or a.size < 1 or not np.all((a > 0) & (a < 1)) or np.any(np.diff(a) >= 0):
            raise ValueError("DiffusionSchedule.alpha_bar must be a 1-D strictly decreasing array in (0, 1), "
                             f"got shape {a.shape}, range [{a.min() if a.size else 'n/a'}, "
                             f"{a.max() if a.size else 'n/a'}]")
        a.setflags(write=False)
        object.__setattr__(self, "alpha_bar", a)

    @classmethod
    def linear(cls, T: int = DEFAULT_T, beta_start: float = 1e-4, beta_end: float = 0.02) -> "DiffusionSchedule":
        return cls(linear_alpha_bar(T, beta_start, beta_end))

    @classmethod
    def cosine(cls, T: int = DEFAULT_T, s: float = 0.008) -> "DiffusionSchedule":
        return cls(cosine_alpha_bar(T, s))

    @property
    def T(self) -> int:
        return int(self.alpha_bar.size)

    @property
    def sigmas(self) -> np.ndarray:
        """``sigma[t]`` (increasing in ``t``)."""
        return sigma_from_alpha_bar(self.alpha_bar)

    @property
    def sigma_min(self) -> float:
        return float(self.sigmas[0])

    @property
    def sigma_max(self) -> float:
        return float(self.sigmas[-1])

    def t_of_sigma(self, sigma: float) -> float:
        """Fractional timestep of ``sigma`` (linear interpolation in log sigma; clipped to ``[0, T-1]``)."""
        return float(np.interp(np.log(float(sigma)), np.log(self.sigmas), np.arange(self.T, dtype=np.float64)))

    def alpha_bar_at(self, t: float) -> float:
        """``alpha_bar`` at a fractional timestep (interpolated in log sigma); ``t < 0`` gives 1 (data)."""
        if t < 0:
            return 1.0
        logs = np.interp(float(t), np.arange(self.T, dtype=np.float64), np.log(self.sigmas))
        return float(alpha_bar_from_sigma(np.exp(logs)))

    def timesteps(self, steps: int, start: int | None = None) -> np.ndarray:
        """``steps`` distinct integer timesteps, descending, evenly spaced from ``start`` (default ``T-1``) to 0."""
        start = self.T - 1 if start is None else int(start)
        if not 0 <= start < self.T:
            raise ValueError(f"start timestep {start} outside 0..{self.T - 1}")
        if not 1 <= steps <= start + 1:
            raise ValueError(f"steps={steps}: need 1 <= steps <= {start + 1} (timesteps {start}..0)")
        if steps == 1:
            return np.array([start], dtype=np.int64)
        return np.round(np.linspace(start, 0, steps)).astype(np.int64)


def karras_sigmas(n: int, sigma_min: float, sigma_max: float, rho: float = 7.0, append_zero: bool = True) -> np.ndarray:
    """``n`` sigmas from ``sigma_max`` down to ``sigma_min``, spaced in ``sigma**(1/rho)`` (Karras et al. 2022).

    With ``append_zero`` a final 0 is added (``n + 1`` values), so a sampler ends on the data.
    """
    if n < 1 or not 0 < sigma_min <= sigma_max:
        raise ValueError(f"karras_sigmas needs n >= 1 and 0 < sigma_min <= sigma_max, got n={n}, "
                         f"sigma_min={sigma_min}, sigma_max={sigma_max}")
    ramp = np.linspace(0, 1, n) if n > 1 else np.zeros(1)
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    sig = (hi + ramp * (lo - hi)) ** rho
    return np.append(sig, 0.0) if append_zero else sig


def loglinear_sigmas(n: int, sigma_min: float, sigma_max: float, append_zero: bool = True) -> np.ndarray:
    """``n`` sigmas from ``sigma_max`` to ``sigma_min`` evenly spaced in ``log sigma`` (DPM-Solver's logSNR spacing).

    With ``append_zero`` a final 0 is added (``n + 1`` values).
    """
    if n < 1 or not 0 < sigma_min <= sigma_max:
        raise ValueError(f"loglinear_sigmas needs n >= 1 and 0 < sigma_min <= sigma_max, got n={n}, "
                         f"sigma_min={sigma_min}, sigma_max={sigma_max}")
    sig = np.exp(np.linspace(np.log(sigma_max), np.log(sigma_min), n)) if n > 1 else np.array([float(sigma_max)])
    return np.append(sig, 0.0) if append_zero else sig


# --------------------------------------------------------------------------- parameterisations (VP form)


def x0_from_eps(x_t, eps, alpha_bar):
    """``x0 = (x_t - sqrt(1 - a) * eps) / sqrt(a)``."""
    return (x_t - (1 - alpha_bar) ** 0.5 * eps) / alpha_bar ** 0.5


def eps_from_x0(x_t, x0, alpha_bar):
    """``eps = (x_t - sqrt(a) * x0) / sqrt(1 - a)``."""
    return (x_t - alpha_bar ** 0.5 * x0) / (1 - alpha_bar) ** 0.5


def v_from_x0_eps(x0, eps, alpha_bar):
    """``v = sqrt(a) * eps - sqrt(1 - a) * x0``."""
    return alpha_bar ** 0.5 * eps - (1 - alpha_bar) ** 0.5 * x0


def x0_from_v(x_t, v, alpha_bar):
    """``x0 = sqrt(a) * x_t - sqrt(1 - a) * v``."""
    return alpha_bar ** 0.5 * x_t - (1 - alpha_bar) ** 0.5 * v


def eps_from_v(x_t, v, alpha_bar):
    """``eps = sqrt(1 - a) * x_t + sqrt(a) * v``."""
    return (1 - alpha_bar) ** 0.5 * x_t + alpha_bar ** 0.5 * v


def diffuse(x0, eps, alpha_bar):
    """``x_t = sqrt(a) * x0 + sqrt(1 - a) * eps`` (the forward process, VP form)."""
    return alpha_bar ** 0.5 * x0 + (1 - alpha_bar) ** 0.5 * eps


def denoiser_from_vp_model(model: Callable, schedule: DiffusionSchedule, prediction: str = "eps") -> Callable:
    """Wrap a VP network ``model(x_t, t, cond)`` as the samplers' denoiser ``D(x, sigma, cond) -> x0``.

    ``x`` is in the sigma scale (``x0 + sigma * eps``); the network is called on
    ``x_t = x * sqrt(alpha_bar)`` at the fractional timestep ``schedule.t_of_sigma(sigma)``.

    Parameters
    ----------
    model : callable
        ``model(x_t, t: float, cond)`` predicting ``eps``, ``v`` or ``x0`` (``prediction``).
    schedule : DiffusionSchedule
    prediction : {"eps", "v", "x0"}
    """
    if prediction not in ("eps", "v", "x0"):
        raise ValueError(f"prediction must be 'eps', 'v' or 'x0', got {prediction!r}")

    def denoiser(x, sigma, cond=None):
        sigma = float(sigma)
        a = float(alpha_bar_from_sigma(sigma))
        x_t = x * a ** 0.5
        out = model(x_t, schedule.t_of_sigma(sigma), cond)
        if prediction == "eps":
            return x - sigma * out
        if prediction == "v":
            return x0_from_v(x_t, out, a)
        return out

    return denoiser


# --------------------------------------------------------------------------- flow matching


def flow_interpolate(x0, eps, t):
    """``x_t = (1 - t) * x0 + t * eps`` (t = 0 data, t = 1 noise)."""
    return (1 - t) * x0 + t * eps


def flow_velocity(x0, eps):
    """Target velocity ``v = eps - x0``."""
    return eps - x0


def x0_from_velocity(x_t, v, t):
    """``x0 = x_t - t * v``."""
    return x_t - t * v


# --------------------------------------------------------------------------- position-seeded noise

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """The splitmix64 finaliser of ``x + golden`` (uint64 arrays, wrapping arithmetic)."""
    z = x + _GOLDEN
    z = (z ^ (z >> np.uint64(30))) * _M1
    z = (z ^ (z >> np.uint64(27))) * _M2
    return z ^ (z >> np.uint64(31))


def _as_u64(v) -> np.ndarray:
    return np.asarray(v, dtype=np.int64).astype(np.uint64)


def grid_noise(seed: int, row0: int, col0: int, h: int, w: int, channels: int = 1, step: int = 0) -> np.ndarray:
    """Standard normal noise ``(channels, h, w)`` (float32) for the grid window at ``(row0, col0)``.

    The value at window pixel ``(c, i, j)`` depends only on ``(seed, step, c, row0 + i, col0 + j)``:
    a counter-based hash (splitmix64 chained over the five integers) gives two
    53-bit uniforms, mapped to a Gaussian by Box-Muller. Negative rows/cols are allowed.
    """
    if h < 0 or w < 0 or channels < 1:
        raise ValueError(f"grid_noise needs h, w >= 0 and channels >= 1, got h={h}, w={w}, channels={channels}")
    with np.errstate(over="ignore"):
        key = _splitmix64(_as_u64(seed).reshape(1, 1, 1))
        key = _splitmix64(key ^ _as_u64(step).reshape(1, 1, 1))
        key = _splitmix64(key ^ _as_u64(np.arange(channels)).reshape(-1, 1, 1))
        key = _splitmix64(key ^ _as_u64(np.arange(row0, row0 + h)).reshape(1, -1, 1))
        key = _splitmix64(key ^ _as_u64(np.arange(col0, col0 + w)).reshape(1, 1, -1))
        b1 = _splitmix64(key)
        b2 = _splitmix64(key ^ _GOLDEN)
    scale = 1.0 / 2.0 ** 53
    u1 = ((b1 >> np.uint64(11)).astype(np.float64) + 0.5) * scale  # (0, 1): log is finite
    u2 = (b2 >> np.uint64(11)).astype(np.float64) * scale
    z = np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2)
    return np.broadcast_to(z, (channels, h, w)).astype(np.float32)


def make_grid_noise_fn(seed: int, row0: int, col0: int) -> Callable:
    """A sampler ``noise_fn(step, like) -> tensor`` drawing :func:`grid_noise` for a tile at ``(row0, col0)``.

    ``like`` is a torch tensor ``(1, C, H, W)`` (or ``(C, H, W)``); the result has its
    shape, dtype and device. A batch of more than one tile needs one call per tile.
    """

    def noise_fn(step: int, like):
        import torch

        if like.ndim == 4 and like.shape[0] != 1:
            raise ValueError(f"grid noise needs batch size 1 (one tile at row {row0}, col {col0}), "
                             f"got shape {tuple(like.shape)}")
        c, h, w = like.shape[-3:]
        z = grid_noise(seed, row0, col0, h, w, channels=c, step=step)
        return torch.from_numpy(z).to(dtype=like.dtype, device=like.device).reshape(like.shape)

    return noise_fn


def make_torch_noise_fn(seed: int) -> Callable:
    """A sampler ``noise_fn(step, like) -> tensor`` from a seeded torch generator (position independent)."""
    import torch

    gen = torch.Generator().manual_seed(int(seed))

    def noise_fn(step: int, like):
        return torch.randn(like.shape, generator=gen, dtype=torch.float64).to(dtype=like.dtype, device=like.device)

    return noise_fn


__all__ = [
    "DEFAULT_T", "INIT_NOISE_STEP", "DiffusionSchedule", "linear_alpha_bar", "cosine_alpha_bar", "karras_sigmas", "loglinear_sigmas",
    "sigma_from_alpha_bar", "alpha_bar_from_sigma", "x0_from_eps", "eps_from_x0", "v_from_x0_eps", "x0_from_v",
    "eps_from_v", "diffuse", "denoiser_from_vp_model", "flow_interpolate", "flow_velocity", "x0_from_velocity",
    "grid_noise", "make_grid_noise_fn", "make_torch_noise_fn",
]
