"""The radiance scale models work on: z = log1p(L / RADIANCE_REF).

Radiance L is in W·m⁻²·sr⁻¹·µm⁻¹ (Luojia-01 convention). Models predict z;
products are written as L.
"""

from __future__ import annotations

import numpy as np

#: Reference radiance of the log scale (W·m⁻²·sr⁻¹·µm⁻¹).
RADIANCE_REF = 1e-5
RADIANCE_UNITS = "W m-2 sr-1 um-1"


def radiance_to_log(radiance):
    """z = log1p(max(L, 0) / RADIANCE_REF); works on numpy arrays and torch tensors."""
    if isinstance(radiance, np.ndarray) or np.isscalar(radiance):
        return np.log1p(np.maximum(radiance, 0) / RADIANCE_REF)
    return (radiance.clamp(min=0) / RADIANCE_REF).log1p()


def log_to_radiance(z):
    """Inverse of :func:`radiance_to_log` (negative z clamps to 0 radiance)."""
    if isinstance(z, np.ndarray) or np.isscalar(z):
        return np.expm1(np.maximum(z, 0)) * RADIANCE_REF
    return z.clamp(min=0).expm1() * RADIANCE_REF
