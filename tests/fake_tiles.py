"""A small fake ``train.zarr`` (contract: docs/contracts.md, section tile) for model tests.

The scene has a learnable relation: an urban-intensity field ``u`` sets the
true radiance at full resolution (``L = 1e-5 * expm1(3 u)``), Landsat bands are
linear in ``u`` (plus noise), and PANDA is the 8x8 block mean of the radiance
mapped to a saturating DN, nearest-upsampled (blocky) as the resample stage does.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy import ndimage

from pandafine.core.channels import CHANNELS


def make_scene(size: int, *, factor: int = 8, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``(inputs (C, size, size), target (size, size))`` of one synthetic year."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    u = np.zeros((size, size))
    for _ in range(max(2, size * size // 1200)):
        cy, cx = rng.uniform(0, size, 2)
        sigma = rng.uniform(2.0, 7.0)
        u += rng.uniform(0.4, 1.0) * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * sigma**2))
    streets = ndimage.gaussian_filter(rng.random((size, size)), 0.7)
    texture = (streets - streets.min()) / (streets.max() - streets.min())
    u = np.clip(u * (0.5 + texture), 0, 1)
    radiance = 1e-5 * np.expm1(3.0 * u)

    coarse = radiance.reshape(size // factor, factor, size // factor, factor).mean(axis=(1, 3))
    coarse = ndimage.gaussian_filter(coarse, 0.6, mode="nearest")  # DMSP-like blooming
    dn = np.minimum(63.0, np.round(63.0 * (coarse / 6e-5) ** 0.7))
    panda = np.kron(dn, np.ones((factor, factor)))

    coef = [(0.06, 0.04), (0.07, 0.05), (0.09, 0.06), (0.10, 0.10), (0.35, -0.20), (0.20, 0.08), (0.12, 0.10)]
    bands = [a + b * u + rng.normal(0, 0.004, u.shape) for a, b in coef]
    dem = 400 + 80 * ndimage.gaussian_filter(rng.random((size, size)), 6)
    clear = np.full((size, size), 3.0)
    inputs = np.stack([panda, (panda >= 63).astype(float), *bands, clear, dem]).astype(np.float32)
    cloud = (slice(2, 7), slice(size // 2, size // 2 + 6))
    inputs[2:9][(slice(None),) + cloud] = np.nan  # a cloud hole in Landsat
    inputs[9][cloud] = 0.0
    return inputs, radiance.astype(np.float32)


def write_fake_train_zarr(path, *, patch: int = 16, size: int = 64, years=(2018, 2019), factor: int = 8,
                          seed: int = 0, chunk_patches: int = 1, halo: int = 0) -> Path:
    """Write a fake ``train.zarr``: patches of ``len(years)`` scenes of ``size x size`` pixels.

    Every split (0 train, 1 val, 2 test) gets at least one patch; patches are
    cut on a regular ``patch`` lattice; some target pixels are NaN. With ``halo``
    > 0 the inputs carry ``halo`` px of the scene (reflected beyond its edge) on
    every side and the target is NaN there, as ``tiles.halo`` makes them.
    """
    import zarr

    xs, ts, ys, rows, cols = [], [], [], [], []
    for k, year in enumerate(years):
        inputs, radiance = make_scene(size, factor=factor, seed=seed + k)
        radiance[:3, :] = np.nan  # no target there (outside the Luojia footprints)
        wide = np.pad(inputs, ((0, 0), (halo, halo), (halo, halo)), mode="reflect")
        for r in range(0, size, patch):
            for c in range(0, size, patch):
                xs.append(wide[:, r:r + patch + 2 * halo, c:c + patch + 2 * halo])
                ts.append(np.pad(radiance[None, r:r + patch, c:c + patch], ((0, 0), (halo, halo), (halo, halo)),
                                 constant_values=np.nan))
                ys.append(year), rows.append(r), cols.append(c)
    n = len(xs)
    rng = np.random.default_rng(seed)
    split = np.zeros(n, np.int8)
    order = rng.permutation(n)
    n_val = max(1, round(0.15 * n))
    n_test = max(1, round(0.2 * n))
    split[order[:n_val]] = 1
    split[order[n_val:n_val + n_test]] = 2
    x = np.stack(xs).astype(np.float32)
    train = x[split == 0][..., halo:halo + patch, halo:halo + patch]
    mean = [float(np.nanmean(train[:, c])) for c in range(x.shape[1])]
    std = [float(np.nanstd(train[:, c])) for c in range(x.shape[1])]

    path = Path(path)
    group = zarr.open_group(str(path), mode="w")
    c, q = x.shape[1], patch + 2 * halo
    group.create_array("inputs", shape=x.shape, dtype="float32", chunks=(chunk_patches, c, q, q),
                       fill_value=np.nan)[:] = x
    group.create_array("target", shape=(n, 1, q, q), dtype="float32",
                       chunks=(chunk_patches, 1, q, q), fill_value=np.nan)[:] = np.stack(ts)
    group.create_array("split", shape=(n,), dtype="int8", chunks=(n,))[:] = split
    for name, values in (("year", ys), ("row", rows), ("col", cols)):
        group.create_array(name, shape=(n,), dtype="int32", chunks=(n,))[:] = np.asarray(values, np.int32)
    group.attrs.update({"channels": list(CHANNELS), "patch": patch, "halo": halo, "grid": {"factor": factor},
                        "normalization": {"mean": mean, "std": std}})
    return path


def stage_config(**train) -> dict:
    """The config keys the model stages read (run, grid, model, train, infer), sized for fast tests.

    Not a workflow config: the ``tiny_config`` fixture (tests/data/tiny.yaml) is the smallest one.
    """
    cfg = {
        "run": {"seed": 3},
        "grid": {"factor": 8},
        "model": {"name": "unet", "width": 6, "depth": 2},
        "train": {"epochs": 4, "batch_size": 4, "learning_rate": 3e-3, "patience": 10},
        "infer": {"tile": 32, "batch_size": 2},
    }
    cfg["train"].update(train)
    return cfg
